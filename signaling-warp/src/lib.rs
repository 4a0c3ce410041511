//! # signaling-warp
//!
//! The `signaling` WebRTC signaling server as [warp] filters that you `.or()` into your own
//! app ("compose, don't own the server"). Every connection runs on the shared driver of
//! `signaling-core` ([`Hub`]); this crate only maps warp's messages to the driver's frames
//! ([`Warp`]) and applies the size limits to warp's upgrade.
//!
//! ## Embedding
//!
//! Signaling at `/ws` next to your own routes, shut down gracefully on Ctrl-C:
//!
//! ```no_run
//! use signaling_warp::{warp, Config, Hub};
//! use warp::Filter;
//!
//! # async fn run() -> std::io::Result<()> {
//! let hub = Hub::new(Config::default());
//! let app = warp::path("health")
//!     .map(|| "ok")
//!     .or(signaling_warp::routes(hub.clone()));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let stop = hub.clone();
//! warp::serve(app)
//!     .incoming(listener)
//!     .graceful(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         stop.shutdown().await; // drain and close every WebSocket with 1001
//!     })
//!     .run()
//!     .await;
//! # Ok(()) }
//! ```
//!
//! At another path, use the bare [`ws`] filter: `warp::path!("api" / "signal").and(ws(hub))`.

use std::error::Error as _;
use std::net::SocketAddr;

pub use signaling_core::driver::{Config, Hub, Peer};
use signaling_core::driver::{Inbound, Outbound, Transport};
pub use warp;
use warp::filters::ws::{Message, Ws};
use warp::{Filter, Rejection, Reply};

/// The [`Transport`] for warp: how `warp::ws::Message` maps to the driver's frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct Warp;

impl Transport for Warp {
    type Message = Message;
    type Error = warp::Error;

    fn inbound(message: &Message) -> Inbound<'_> {
        if let Ok(text) = message.to_str() {
            Inbound::Text(text)
        } else if message.is_binary() {
            Inbound::Binary(message.as_bytes().len())
        } else if message.is_ping() {
            Inbound::Ping
        } else if message.is_close() {
            Inbound::Close
        } else {
            Inbound::Pong
        }
    }

    fn outbound(frame: Outbound) -> Message {
        match frame {
            Outbound::Text(text) => Message::text(text),
            Outbound::Ping => Message::ping(Vec::new()),
            Outbound::Close(close) => Message::close_with(close.code, close.reason),
            // Unknown future frames: a harmless empty pong.
            _ => Message::pong(Vec::new()),
        }
    }

    fn is_too_large(error: &warp::Error) -> bool {
        // warp wraps the tungstenite error it gets; see the `warp-tungstenite` dependency.
        error
            .source()
            .and_then(|source| source.downcast_ref::<warp_tungstenite::Error>())
            .is_some_and(|e| matches!(e, warp_tungstenite::Error::Capacity(_)))
    }
}

/// Applies the hub's size limits to a warp upgrade.
pub fn configure(ws: Ws, config: &Config) -> Ws {
    ws.max_message_size(config.max_message_size)
        .max_frame_size(config.max_frame_size)
}

/// Upgrades a WebSocket request (at whatever path it is mounted) and runs it on `hub`. Rejects
/// requests that are not WebSocket upgrades, so it composes with `.or()`.
pub fn ws(hub: Hub) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::ws()
        .and(warp::addr::remote())
        .map(move |ws: Ws, addr: Option<SocketAddr>| {
            let hub = hub.clone();
            let mut peer = Peer::new();
            if let Some(addr) = addr {
                peer = peer.with_remote_addr(addr);
            }
            configure(ws, hub.config()).on_upgrade(move |socket| async move {
                hub.serve_connection::<Warp, _>(socket, peer).await;
            })
        })
}

/// Signaling at `/ws`: [`ws`] mounted at that path.
pub fn routes(hub: Hub) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path("ws").and(warp::path::end()).and(ws(hub))
}
