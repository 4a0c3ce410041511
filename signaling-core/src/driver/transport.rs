//! What an adapter implements: how its WebSocket messages map to the driver's frames, and what
//! it knows about a connection when it hands it in.

use std::fmt;
use std::net::SocketAddr;

#[cfg(doc)]
use super::Hub;
#[cfg(doc)]
use crate::protocol::ServerMessage;
use crate::protocol::Username;
#[cfg(doc)]
use crate::router::Router;

/// A frame as the driver sees it, borrowed from the transport's message (no copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inbound<'a> {
    /// A text frame: one protocol message.
    Text(&'a str),
    /// A binary frame of this many bytes (answered with `binary_not_supported`).
    Binary(usize),
    /// A ping (WebSocket libraries answer pings themselves). Counts against the rate limit.
    Ping,
    /// A pong with its payload. Only a pong that echoes the driver's last ping proves that the
    /// client reads (an unsolicited one does not). Counts against the rate limit.
    Pong(&'a [u8]),
    /// The client sent a close frame; the transport answers it and then ends the stream.
    Close,
}

/// A close frame's code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame {
    /// WebSocket close code (RFC 6455 §7.4.1).
    pub code: u16,
    /// Human-readable reason (short: close reasons are limited to 123 bytes).
    pub reason: &'static str,
}

impl CloseFrame {
    /// 1001: the server is shutting down.
    pub const GOING_AWAY: CloseFrame = CloseFrame {
        code: 1001,
        reason: "server shutting down",
    };
    /// 1012: the server is restarting (cluster mode: its resumable sessions were handed over;
    /// resume on another node with the session's token).
    pub const SERVICE_RESTART: CloseFrame = CloseFrame {
        code: 1012,
        reason: "server restarting: resume the session",
    };
    /// 1009: the client sent a message larger than the limit.
    pub const TOO_LARGE: CloseFrame = CloseFrame {
        code: 1009,
        reason: "message too large",
    };
    /// 1008: the connection did not log in in time.
    pub const LOGIN_TIMEOUT: CloseFrame = CloseFrame {
        code: 1008,
        reason: "no login before the deadline",
    };
    /// 1001: the connection did not answer pings.
    pub const HEARTBEAT_TIMEOUT: CloseFrame = CloseFrame {
        code: 1001,
        reason: "heartbeat timeout",
    };
    /// 1013 (try again later): a socket handed to [`Hub::serve_connection`] found the
    /// connection caps full. (Upgrades through [`Hub::admit`] are refused with an HTTP status
    /// instead, before any WebSocket exists.)
    pub const TRY_AGAIN_LATER: CloseFrame = CloseFrame {
        code: 1013,
        reason: "too many connections",
    };
}

/// A frame the driver asks the transport to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outbound {
    /// A text frame (an encoded [`ServerMessage`]); moving the `String` in costs no copy.
    Text(String),
    /// A heartbeat ping with this payload; the client's pong must echo it.
    Ping([u8; 8]),
    /// A close frame.
    Close(CloseFrame),
}

/// How one WebSocket library's message type maps to the driver's frames.
///
/// Implemented on a marker type by each adapter. The socket itself is any
/// `Stream<Item = Result<Self::Message, Self::Error>> + Sink<Self::Message, Error = Self::Error>`
/// (what `tokio_tungstenite::WebSocketStream` and `warp::ws::WebSocket` both are), passed to
/// [`Hub::serve_connection`].
pub trait Transport: 'static {
    /// The transport's WebSocket message type.
    type Message: Send + 'static;
    /// The transport's error type.
    type Error: fmt::Display + Send + 'static;

    /// Classifies a received message.
    fn inbound(message: &Self::Message) -> Inbound<'_>;

    /// Builds a message to send.
    fn outbound(frame: Outbound) -> Self::Message;

    /// Whether a read error means "message or frame over the configured size" (the driver
    /// then closes with 1009). The default says no.
    fn is_too_large(error: &Self::Error) -> bool {
        let _ = error;
        false
    }
}

/// What the driver knows about a connection when it starts. Adapters fill in what they have.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The client's address, when the transport knows it.
    pub remote_addr: Option<SocketAddr>,
    /// A username already verified (e.g. by an authenticator at upgrade): the connection may
    /// only log in as this name ([`Router::handle_connect_verified`]).
    pub verified_username: Option<Username>,
}

impl ConnectionInfo {
    /// Nothing known.
    pub fn new() -> Self {
        ConnectionInfo::default()
    }

    /// Sets the remote address.
    pub fn with_remote_addr(mut self, addr: SocketAddr) -> Self {
        self.remote_addr = Some(addr);
        self
    }

    /// Binds the connection to a verified username.
    pub fn with_verified_username(mut self, username: Username) -> Self {
        self.verified_username = Some(username);
        self
    }
}
