//! A complete signaling server on warp: the demo page at `/`, signaling at `/ws`.
//!
//! ```text
//! cargo run --example basic_server -- --addr 0.0.0.0:8080 --ice-server stun:stun.l.google.com:19302
//! cargo run --example basic_server -- --addr 0.0.0.0:8443 --tls-self-signed   # https:// on the LAN
//! SIGNALING_TURN_SECRET=… cargo run --example basic_server -- --turn-url turn:turn.example.org:3478
//! ```
//!
//! `/config.json` gives the page the STUN servers from `--ice-server` (none by default); a
//! successful login also carries them, with the TURN servers of `--turn-url` and credentials
//! for that user (`--turn-secret`). Ctrl-C shuts down gracefully: every WebSocket gets a 1001
//! close frame.

use std::net::SocketAddr;

use clap::Parser;
use signaling_examples::{
    ServerArgs, base_url, ctrl_c, demo, init_allocator, init_tracing, spawn_warp,
};

/// WebRTC signaling server (warp) with the demo page.
#[derive(Debug, Parser)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "SIGNALING_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    signaling_examples::runtime(cli.server.worker_threads)?.block_on(run(cli))
}

async fn run(cli: Cli) -> std::io::Result<()> {
    init_tracing();
    init_allocator();
    let hub = cli.server.start_hub(|config| config).await?;

    // The STUN servers for anyone who loads the page; TURN credentials only come with a login.
    let app = demo::routes(hub.clone(), cli.server.ice_servers.clone());

    let tls = cli.server.tls.load_or_exit(cli.addr);
    // TCP_NODELAY on every connection: warp's server leaves Nagle on, which delays replies.
    let listener = signaling_warp::bind(cli.addr).await?;
    let addr = listener.local_addr()?;
    let page = format!("{}/", base_url(addr, tls.is_some(), false));
    let signaling = format!("{}/ws", base_url(addr, tls.is_some(), true));
    tracing::info!("demo page at {page}, signaling at {signaling}");
    // Bounds every phase of a connection (warp's own server leaves request heads unbounded).
    let server = spawn_warp(app, listener, tls, hub.clone(), &page, &signaling);
    ctrl_c().await;
    hub.shutdown().await;
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}
