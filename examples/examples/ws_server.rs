//! A signaling server on raw tokio-tungstenite: WebSocket on any path, nothing else.
//!
//! ```text
//! cargo run --example ws_server -- --addr 127.0.0.1:8081 --rate-limit 0
//! ```
//!
//! Ctrl-C shuts down gracefully: every client gets a 1001 close frame.

use std::net::SocketAddr;

use clap::Parser;
use signaling_examples::{ServerArgs, ctrl_c, init_allocator, init_tracing};
use signaling_ws::Hub;

/// WebRTC signaling server (raw tokio-tungstenite).
#[derive(Debug, Parser)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "SIGNALING_ADDR", default_value = "127.0.0.1:8081")]
    addr: SocketAddr,
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
    let listener = tokio::net::TcpListener::bind(cli.addr).await?;
    tracing::info!("signaling at ws://{}/", listener.local_addr()?);
    let server = tokio::spawn(signaling_ws::serve(listener, hub.clone()));
    ctrl_c().await;
    hub.shutdown().await;
    server.await??;
    tracing::info!("stopped");
    Ok(())
}
