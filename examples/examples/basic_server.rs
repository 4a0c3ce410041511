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
use signaling_examples::{ServerArgs, ctrl_c, ice_config_json, init_tracing};
use signaling_warp::Hub;
use signaling_warp::warp::{self, Filter, http::header::CONTENT_TYPE};

const INDEX_HTML: &str = include_str!("../demo/index.html");
const APP_JS: &str = include_str!("../demo/app.js");
const STYLE_CSS: &str = include_str!("../demo/style.css");

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

fn asset(
    path: &'static str,
    body: &'static str,
    content_type: &'static str,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path(path)
        .and(warp::path::end())
        .and(warp::get().or(warp::head()).unify())
        .map(move || warp::reply::with_header(body, CONTENT_TYPE, content_type))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let hub = Hub::new(cli.server.config());

    let ice = ice_config_json(&cli.ice_servers);
    let index = warp::path::end()
        .and(warp::get().or(warp::head()).unify())
        .map(|| warp::reply::html(INDEX_HTML));
    let config_json = warp::path("config.json")
        .and(warp::path::end())
        .map(move || warp::reply::with_header(ice.clone(), CONTENT_TYPE, "application/json"));
    let app = index
        .or(asset("app.js", APP_JS, "text/javascript; charset=utf-8"))
        .or(asset("style.css", STYLE_CSS, "text/css; charset=utf-8"))
        .or(config_json)
        .or(signaling_warp::routes(hub.clone()));

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
