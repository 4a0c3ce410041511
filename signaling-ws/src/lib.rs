//! # signaling-ws
//!
//! The `signaling` WebRTC signaling server over raw
//! [tokio-tungstenite](tokio_tungstenite): accept TCP connections yourself, or hand in a
//! `WebSocketStream` your own hyper/axum server already upgraded. Every connection runs on the
//! shared driver of `signaling-core` ([`Hub`]); this crate only maps tungstenite messages to
//! the driver's frames ([`Tungstenite`]) and runs the handshake.
//!
//! ## Embedding
//!
//! A complete server on a `TcpListener` (any request path is accepted), shut down gracefully
//! on Ctrl-C:
//!
//! ```no_run
//! use signaling_ws::{Config, Hub};
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! let hub = Hub::new(Config::default());
//! let server = tokio::spawn(signaling_ws::serve(listener, hub.clone()));
//! tokio::signal::ctrl_c().await?;
//! hub.shutdown().await; // stop accepting, drain, close every client with 1001
//! server.await??;
//! # Ok(()) }
//! ```
//!
//! Or upgrade the socket yourself (with the same limits) and hand the stream in:
//!
//! ```no_run
//! use signaling_ws::{tokio_tungstenite, Config, Hub, Peer};
//!
//! # async fn run(tcp: tokio::net::TcpStream, hub: Hub) -> Result<(), tokio_tungstenite::tungstenite::Error> {
//! let config = signaling_ws::websocket_config(hub.config());
//! let ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
//! tokio::spawn(signaling_ws::serve_stream(ws, hub, Peer::new()));
//! # Ok(()) }
//! ```
//!
//! The protocol, limits and defaults are those of [`Config`].

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

pub use signaling_core::driver::{Config, Hub, Peer};
pub use tokio_tungstenite;
/// tungstenite's WebSocket settings (buffer sizes, message and frame limits).
pub use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use signaling_core::driver::{Inbound, Outbound, Transport};

/// The [`Transport`] for tungstenite messages: how `tungstenite::Message` maps to the driver's
/// frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tungstenite;

impl Transport for Tungstenite {
    type Message = Message;
    type Error = tungstenite::Error;

    fn inbound(message: &Message) -> Inbound<'_> {
        match message {
            Message::Text(text) => Inbound::Text(text.as_str()),
            Message::Binary(bytes) => Inbound::Binary(bytes.len()),
            Message::Ping(_) => Inbound::Ping,
            Message::Pong(_) | Message::Frame(_) => Inbound::Pong,
            Message::Close(_) => Inbound::Close,
        }
    }

    fn outbound(frame: Outbound) -> Message {
        match frame {
            Outbound::Text(text) => Message::Text(text.into()),
            Outbound::Ping => Message::Ping(Default::default()),
            Outbound::Close(close) => Message::Close(Some(CloseFrame {
                code: CloseCode::from(close.code),
                reason: Utf8Bytes::from_static(close.reason),
            })),
            // Unknown future frames: a harmless empty pong.
            _ => Message::Pong(Default::default()),
        }
    }

    fn is_too_large(error: &tungstenite::Error) -> bool {
        matches!(error, tungstenite::Error::Capacity(_))
    }
}

/// tungstenite settings from the driver's [`Config`]: message and frame limits, small read
/// and write buffers. Use it when you upgrade sockets yourself.
pub fn websocket_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_frame_size))
}

/// Accepts connections on `listener` until [`Hub::shutdown`] starts, each in its own task:
/// WebSocket handshake (any request path, bounded by [`Config::handshake_timeout`]), then the
/// driver. Returns `Ok` when shutdown starts; the hub's `shutdown` waits for the
/// connections.
///
/// Accept errors (such as running out of file descriptors) are logged and retried after a
/// short pause; they never end the loop.
pub async fn serve(listener: TcpListener, hub: Hub) -> io::Result<()> {
    let stop = hub.shutdown_started();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, addr)) => {
                tokio::spawn(serve_tcp(
                    tcp,
                    hub.clone(),
                    Peer::new().with_remote_addr(addr),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs one accepted TCP connection: the WebSocket handshake, then the driver.
pub async fn serve_tcp(tcp: TcpStream, hub: Hub, peer: Peer) {
    // Signaling messages are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    serve_io(tcp, hub, peer).await;
}

/// Runs one connection over any byte stream (TLS, Unix socket, …): the WebSocket handshake
/// (bounded by [`Config::handshake_timeout`]), then the driver.
pub async fn serve_io<S>(io: S, hub: Hub, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let config = websocket_config(hub.config());
    let handshake = tokio_tungstenite::accept_async_with_config(io, Some(config));
    match tokio::time::timeout(hub.config().handshake_timeout, handshake).await {
        Ok(Ok(ws)) => serve_stream(ws, hub, peer).await,
        Ok(Err(e)) => tracing::debug!(addr = ?peer.remote_addr, error = %e, "handshake failed"),
        Err(_) => tracing::debug!(addr = ?peer.remote_addr, "handshake timed out"),
    }
}

/// Runs an already upgraded WebSocket to its end on the driver. Upgrade it with
/// [`websocket_config`] so the size limits hold at the transport too.
pub async fn serve_stream<S>(ws: WebSocketStream<S>, hub: Hub, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    hub.serve_connection::<Tungstenite, _>(ws, peer).await;
}
