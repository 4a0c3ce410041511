//! A complete signaling server on warp: the demo page at `/`, signaling at `/ws`.
//!
//! ```text
//! cargo run --example basic_server -- --addr 0.0.0.0:8080 --ice-server stun:stun.l.google.com:19302
//! ```
//!
//! `/config.json` gives the page the ICE servers from `--ice-server` (none by default). Ctrl-C
//! shuts down gracefully: every WebSocket gets a 1001 close frame.

use std::net::SocketAddr;

use clap::Parser;
use signaling_examples::{ServerArgs, ctrl_c, demo, init_allocator, init_tracing};
use signaling_warp::Hub;

/// WebRTC signaling server (warp) with the demo page.
#[derive(Debug, Parser)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "SIGNALING_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// An ICE server URL for the demo page (`stun:…` or `turn:…`); repeat for several.
    #[arg(
        long = "ice-server",
        env = "SIGNALING_ICE_SERVERS",
        value_delimiter = ','
    )]
    ice_servers: Vec<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    init_allocator();
    let hub = Hub::new(
        cli.server
            .server_config()
            .await
            .map_err(std::io::Error::other)?,
    );

    let app = demo::routes(hub.clone(), cli.ice_servers);

    // TCP_NODELAY on every connection: warp's server leaves Nagle on, which delays replies.
    let listener = signaling_warp::bind(cli.addr).await?;
    tracing::info!(
        "demo page at http://{}/, signaling at ws://{}/ws",
        listener.local_addr()?,
        listener.local_addr()?
    );
    // Bounds every phase of a connection (warp's own server leaves request heads unbounded).
    let server = tokio::spawn(signaling_warp::serve(app, listener, hub.clone()));
    ctrl_c().await;
    hub.shutdown().await;
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}
