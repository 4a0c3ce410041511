//! Signaling added to an existing warp app, next to its own routes.
//!
//! ```text
//! cargo run --example embed_warp
//! curl http://127.0.0.1:8082/hello/world      # the app's own route
//! # signaling clients connect to ws://127.0.0.1:8082/api/signaling
//! ```

use std::net::SocketAddr;

use clap::Parser;
use signaling_examples::{ServerArgs, base_url, ctrl_c, init_allocator, init_tracing, spawn_warp};
use signaling_warp::warp::{self, Filter};

/// An existing warp app that gains a signaling endpoint.
#[derive(Debug, Parser)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "SIGNALING_ADDR", default_value = "127.0.0.1:8082")]
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

    // The app's own routes.
    let hello = warp::path!("hello" / String).map(|name| format!("Hello, {name}!"));

    // Signaling, mounted where the app wants it, with its stats beside it.
    let hub = cli.server.start_hub(|config| config).await?;
    let signaling = warp::path!("api" / "signaling").and(signaling_warp::ws(hub.clone()));
    let stats_hub = hub.clone();
    let stats = warp::path!("api" / "stats").map(move || {
        let (connections, users) =
            stats_hub.with_router(|r| (r.connection_count(), r.user_count()));
        warp::reply::json(&serde_json::json!({ "connections": connections, "users": users }))
    });

    // `/healthz` and `/readyz` for the load balancer (503 once a shutdown starts).
    let health = signaling_warp::health(hub.clone());
    let app = hello.or(health).or(stats).or(signaling);
    let tls = cli.server.tls.load_or_exit(cli.addr);
    // TCP_NODELAY on every connection: warp's server leaves Nagle on, which delays replies.
    let listener = signaling_warp::bind(cli.addr).await?;
    let addr = listener.local_addr()?;
    let page = format!("{}/hello/you", base_url(addr, tls.is_some(), false));
    let signaling = format!("{}/api/signaling", base_url(addr, tls.is_some(), true));
    tracing::info!("app at {page}, signaling at {signaling}");
    // Bounds every phase of a connection (warp's own server leaves request heads unbounded).
    let server = spawn_warp(app, listener, tls, hub.clone(), &page, &signaling);
    ctrl_c().await;
    hub.shutdown().await;
    let _ = server.await;
    Ok(())
}
