//! A signaling server on raw tokio-tungstenite: WebSocket on any path, nothing else.
//!
//! ```text
//! cargo run --example ws_server -- --addr 127.0.0.1:8081 --rate-limit 0
//! cargo run --example ws_server -- --tls-self-signed   # wss:// with a development certificate
//! ```
//!
//! Ctrl-C shuts down gracefully: every client gets a 1001 close frame.

use std::net::SocketAddr;

use clap::Parser;
use signaling_examples::{ServerArgs, base_url, ctrl_c, init_allocator, init_tracing};

/// WebRTC signaling server (raw tokio-tungstenite).
#[derive(Debug, Parser)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "SIGNALING_ADDR", default_value = "127.0.0.1:8081")]
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
    let tls = cli.server.tls.load_or_exit(cli.addr);
    let listener = tokio::net::TcpListener::bind(cli.addr).await?;
    let addr = listener.local_addr()?;
    let url = format!("{}/", base_url(addr, tls.is_some(), true));
    tracing::info!("signaling at {url}");
    let server = match tls {
        Some(tls) => {
            // Any path answers an https:// GET (with 400): enough to accept the certificate.
            tls.announce(&format!("{}/", base_url(addr, true, false)), &url);
            tokio::spawn(signaling_ws::serve_tls(listener, tls.acceptor, hub.clone()))
        }
        None => tokio::spawn(signaling_ws::serve(listener, hub.clone())),
    };
    ctrl_c().await;
    hub.shutdown().await;
    server.await??;
    tracing::info!("stopped");
    Ok(())
}
