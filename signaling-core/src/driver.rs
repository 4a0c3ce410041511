//! The transport-agnostic connection driver (feature `driver`): the one place that binds the
//! pure [`Router`] to live WebSocket connections.
//!
//! Every adapter (`signaling-ws` for tokio-tungstenite, `signaling-warp` for warp, an
//! in-memory channel in tests) hands its upgraded socket to [`Hub::serve_connection`]; the only
//! code an adapter writes is a [`Transport`]: how its message type maps to the driver's
//! [`Inbound`] and [`Outbound`] frames (a page of code).
//!
//! Before a socket is upgraded, adapters ask [`Hub::admit`] with an [`UpgradeRequest`] (the
//! request's path, query, headers and peer address). It refuses with an HTTP status — never
//! by accepting and dropping — when the server is shutting down (503), the `Origin` is not in
//! [`Config::allowed_origins`] (403), [`Config::max_connections`] (503) or
//! [`Config::max_connections_per_ip`] (429) is reached, or the [`auth::Authenticator`] says no
//! (401/403). An accepted request holds a connection slot, given back by a guard when the
//! connection ends however it ends (a failed handshake, a panic, a cancelled task), and may
//! carry a verified username that the connection can only log in as.
//!
//! Per connection the driver runs, in one task:
//!
//! - a **read loop** that feeds text and binary frames to the router (under the [`Hub`]'s lock,
//!   held only for the synchronous call) and closes with **1009** when a message is larger
//!   than [`Config::max_message_size`]. While the connection's own queue is half full it
//!   stops reading, so a client that pipelines requests without reading the replies gets TCP
//!   backpressure rather than a disconnect;
//! - a **write loop** that drains a **bounded** outbound queue: the router's messages are
//!   queued with a non-blocking push, encoded with [`ServerMessage::to_json`] outside every
//!   lock, fed to the socket in batches and flushed once per batch. The queue's bounds count
//!   the batch being written. **The sender pays for its traffic**: once a queue is three
//!   quarters full the router is told ([`Router::handle_backpressure`]) and refuses relays to
//!   that client to their senders (`recipient_overloaded`) until it drains to a quarter; the
//!   slow client keeps its connection. Only a write that makes no progress for
//!   [`Config::write_stall_timeout`] drops it (its partner is told, its name freed);
//! - a **global budget** ([`Config::max_total_queued_bytes`]) over all queues: from 90 % of it
//!   the router refuses every relay (`server_overloaded`, [`Router::handle_overload`]); over
//!   it the connections with the largest queues are dropped, largest first;
//! - a **heartbeat**: a ping with an unpredictable payload every [`Config::ping_interval`]; a
//!   connection that has not echoed it within [`Config::pong_timeout`] is dropped (an
//!   unsolicited pong does not prove that a client reads). Pings and pongs from the client
//!   count against the rate limit ([`Router::handle_control`]);
//! - a **login deadline**: a connection not logged in after [`Config::login_timeout`] is closed
//!   with 1008. Until it logs in it holds one of the [`Config::max_not_logged_in`] slots.
//!
//! Close codes the driver sends: 1001 on shutdown and on a heartbeat timeout, 1008 on the login
//! deadline and when the router asks (rate limit), 1009 for an oversize message, 1013 for a
//! socket handed to [`Hub::serve_connection`] over the caps (see [`Close`]). A client dropped
//! for a stalled write or over the budget gets no close frame: it is not reading.
//!
//! Teardown calls [`Router::handle_disconnect`] exactly once per connection, from a drop guard,
//! so a connection task that panics or is cancelled still frees its name and tells its
//! partner; one connection's panic never reaches another. [`Hub::shutdown`] stops accepting,
//! lets queued messages drain, sends every client a 1001 close frame and returns once they are
//! gone (bounded by [`Config::shutdown_timeout`]).
//!
//! # Who owns the router
//!
//! A `std::sync::Mutex<Router>` inside the [`Hub`], locked by each connection's own task only
//! around the synchronous `handle_*` call and the non-blocking dispatch of its outputs (no
//! `await` while locked). The alternative, a router task that connections message through a
//! channel, measured about half as fast: 100 pairs relaying 200,000 candidates through the
//! router into bounded per-connection queues (release build, multi-thread runtime with 2
//! workers, the 2-core reference machine while other builds ran; medians of 5 interleaved
//! runs, two sessions): lock 432k and 424k messages/s, router task 202k and 184k messages/s
//! (`cargo run --release --example router_ownership` in the repository). The lock saves a
//! task hand-off (a channel hop and a wake-up) per message; its critical section is the parse
//! and route of one message, a few microseconds.
//!
//! # Example: an in-memory transport
//!
//! ```
//! use signaling_core::driver::{Inbound, Outbound, Transport};
//!
//! /// Every frame is a plain string: incoming ones are all text; outgoing pings and closes
//! /// become `"ping"` and `"close:1001"`.
//! struct Strings;
//!
//! impl Transport for Strings {
//!     type Message = String;
//!     type Error = std::io::Error;
//!     fn inbound(message: &String) -> Inbound<'_> {
//!         Inbound::Text(message)
//!     }
//!     fn outbound(frame: Outbound) -> String {
//!         match frame {
//!             Outbound::Text(text) => text,
//!             Outbound::Ping(_) => "ping".to_string(),
//!             Outbound::Close(close) => format!("close:{}", close.code),
//!             _ => String::new(), // the enum is non-exhaustive
//!         }
//!     }
//! }
//! ```
//!
//! A socket is any `Stream<Item = Result<Message, Error>> + Sink<Message, Error = Error>`;
//! `hub.serve_connection::<Strings, _>(socket, Peer::new()).await` runs it to its end.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::protocol::{ServerMessage, Username};
use crate::router::{ConnectionId, Output, Router, RouterConfig, Transmit};

mod admission;
pub mod auth;

use admission::{AddressKey, ConnectionPermits, Permit, Slots};
pub use admission::{Admission, PendingRequest, Refusal, UpgradeRequest};
use auth::Authenticator;
/// The CIDR type of [`Config::trusted_proxies`], re-exported so that users need not match its
/// version.
pub use ipnet;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Everything a server built on the driver can tune, with safe defaults.
///
/// Build it from [`Config::default`] with the `with_*` setters:
///
/// ```
/// use std::time::Duration;
/// use signaling_core::driver::Config;
/// use signaling_core::RouterConfig;
///
/// let config = Config::default()
///     .with_max_message_size(128 * 1024)
///     .with_ping_interval(Some(Duration::from_secs(15)))
///     .with_router(RouterConfig::default().with_rate_limit(None));
/// assert_eq!(config.max_frame_size, 128 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The router's own configuration (the per-connection rate limit).
    pub router: RouterConfig,
    /// Largest message a client may send, in bytes; a larger one closes the connection with
    /// 1009. Default 64 KiB (a real SDP offer is 2–20 KB).
    pub max_message_size: usize,
    /// Largest single WebSocket frame, in bytes. Default: the same as `max_message_size`
    /// (setting the message size also sets this).
    pub max_frame_size: usize,
    /// Most messages queued for one client, counting those its writer is sending. Once three
    /// quarters of this (or of [`max_queued_bytes`](Self::max_queued_bytes)) is taken, relays
    /// to the client are refused *to their senders* (`recipient_overloaded`) until its queue
    /// drains to a quarter: the sender pays for its traffic, the slow reader keeps its
    /// connection. Default 1,024.
    pub max_queued_messages: usize,
    /// Most bytes (approximate encoded size) queued for one client, counting those its writer
    /// is sending. Default 1 MiB. With `max_queued_messages` it bounds what one client that
    /// does not read can hold.
    pub max_queued_bytes: usize,
    /// Most bytes queued for all clients together (the global memory budget for outbound
    /// messages). From 90 % of it every relay is refused to its sender (`server_overloaded`)
    /// until the total is back under 70 %; over it, the connections with the largest queues
    /// (clients that do not read) are dropped, largest first, until it is under 80 %. `None`
    /// turns it off. Default 256 MiB: with the default cap of 10,000 connections, 26 KB each
    /// on average, where a reading client holds next to nothing.
    pub max_total_queued_bytes: Option<usize>,
    /// The kernel send and receive buffers of each accepted TCP socket, in bytes (`SO_SNDBUF`
    /// and `SO_RCVBUF`; Linux doubles the value for bookkeeping), set by the adapters' accept
    /// loops. Without a cap Linux grows the send buffer up to 4 MiB towards a client that does
    /// not read, and the receive buffer up to 6 MiB from a client that sends faster than the
    /// server reads: memory outside the queued-bytes budget and the process's RSS (measured
    /// under a flood of 1,000 non-reading clients and their 1,000 flooders: 1.5 GB of socket
    /// buffers without a cap). `None` leaves them to the kernel's autotuning. Default 64 KiB:
    /// a signaling message is a few KB.
    pub tcp_buffer_size: Option<usize>,
    /// How long a write to a client may make no progress (its TCP window stays shut: it does
    /// not read) before the client is dropped, as nginx's `send_timeout`. Default 30 s.
    pub write_stall_timeout: Duration,
    /// How often the server pings each connection; `None` turns heartbeats off. Default 20 s.
    pub ping_interval: Option<Duration>,
    /// How long after a ping the connection must have sent something (a pong or any frame)
    /// before it is dropped. Default 20 s.
    pub pong_timeout: Duration,
    /// How long a connection may stay without logging in before it is closed (1008);
    /// `None` lets it stay. Default 5 minutes: a tutorial page opens its socket when it loads,
    /// before its user has typed a name. [`max_not_logged_in`](Self::max_not_logged_in) bounds
    /// how many wait meanwhile.
    pub login_timeout: Option<Duration>,
    /// The time a new TCP connection has to send its whole HTTP request head (and, for
    /// `signaling-ws`, to finish the handshake, authenticator included). Default 10 s.
    pub handshake_timeout: Duration,
    /// After the server sends a close frame, how long it waits for the client's reply (and
    /// for queued messages to go out) before it drops the connection. Default 2 s.
    pub close_timeout: Duration,
    /// How long [`Hub::shutdown`] lets connections drain and close before it drops those
    /// left. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Transport read buffer per connection, in bytes (tungstenite's `read_buffer_size`; it
    /// is zero-filled, so every byte of it is resident even while the connection idles).
    /// Small keeps idle connections cheap; larger messages still arrive whole, over several
    /// reads. Default 1 KiB: measured with the load generator, 10,000 idle logged-in
    /// connections cost about 6.1 KB each at 1 KiB against 9.1 KB at 4 KiB, while closed-loop
    /// relay throughput dropped by about 4 % (512 B: 5.5 KB, but up to 15–35 % slower).
    pub read_buffer_size: usize,
    /// Bytes the transport gathers before it writes to the socket (tungstenite's
    /// `write_buffer_size`); each batch is flushed anyway. Default 4 KiB.
    pub write_buffer_size: usize,
    /// Most connections open at once; an upgrade over it is refused with HTTP 503. `None`
    /// turns the cap off. Default 10,000 (keep it under the process's open-file limit, which
    /// each connection uses one of).
    pub max_connections: Option<usize>,
    /// Most connections open at once from one client address (an IPv4 address, or an IPv6
    /// /64); an upgrade over it is refused with HTTP 429. `None` turns the cap off. Default
    /// 256: a whole office behind one NAT fits, one host cannot take the server. Behind a
    /// reverse proxy every client has the proxy's address: set
    /// [`client_ip_header`](Self::client_ip_header), or turn this off.
    pub max_connections_per_ip: Option<usize>,
    /// Most TCP connections whose HTTP request is still being read (not yet upgraded or
    /// answered), so that idle or dribbling sockets cannot use up the file descriptors; over
    /// it a new TCP connection is closed at once. `None` turns the cap off. Default 1,024.
    pub max_pending_requests: Option<usize>,
    /// The same, per TCP peer address (IPv6 per /64; a reverse proxy's requests, see
    /// [`client_ip_header`](Self::client_ip_header), count in the total only). Default 64.
    pub max_pending_requests_per_ip: Option<usize>,
    /// Most upgraded connections that have not logged in yet; an upgrade over it is refused
    /// with HTTP 503. `None` turns the cap off. Default 1,000.
    pub max_not_logged_in: Option<usize>,
    /// The same, per client address; an upgrade over it is refused with HTTP 429. Default 64.
    pub max_not_logged_in_per_ip: Option<usize>,
    /// Most connections open at once for one username verified by the
    /// [`authenticator`](Self::authenticator) (one token cannot take every slot); an upgrade
    /// over it is refused with HTTP 429. `None` turns the cap off. Default 4 (a name logs in
    /// on one connection at a time; the others are reconnects and extra tabs).
    pub max_connections_per_user: Option<usize>,
    /// A header your reverse proxy sets to the client's address (e.g. `X-Forwarded-For` or
    /// `X-Real-IP`), for the per-address cap. `None` (default) uses the TCP peer's address.
    /// Which entry of the header is the client is decided by
    /// [`trusted_proxies`](Self::trusted_proxies); without any, the **last** entry is used
    /// (the one the nearest proxy added), so set the header alone only when every request
    /// comes through exactly one proxy that sets it: a client reaching the server directly
    /// could forge it.
    pub client_ip_header: Option<String>,
    /// The address ranges of your reverse proxies (nginx, a CDN's edges), used with
    /// [`client_ip_header`](Self::client_ip_header): the client is the first address, from
    /// the right of `[header entries…, TCP peer]`, that is **not** in these ranges, so each
    /// client behind a chain of proxies gets its own bucket and a client cannot forge
    /// entries to the left of the real ones. The header is only read when the TCP peer is
    /// itself in these ranges (a client that reaches the server directly is counted by its own
    /// address); when every hop is trusted, the leftmost entry counts. Empty (default): the
    /// header's last entry is trusted, whoever sent the request. IPv4-mapped IPv6 addresses
    /// match IPv4 ranges.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The page origins (`https://app.example.com`) allowed to open a WebSocket, against
    /// cross-site WebSocket hijacking; an upgrade without an `Origin` header or with another
    /// one is refused with HTTP 403. Compared without case and trailing `/`. `None` (default)
    /// allows any origin and none: set it in production.
    pub allowed_origins: Option<Vec<String>>,
    /// Consulted at every upgrade, after the origin check and the caps: may refuse (HTTP 401
    /// or 403) or bind the connection to a verified username. `None` (default) lets everyone
    /// in. See [`auth`].
    pub authenticator: Option<Arc<dyn Authenticator>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            router: RouterConfig::default(),
            max_message_size: 64 * 1024,
            max_frame_size: 64 * 1024,
            max_queued_messages: 1024,
            max_queued_bytes: 1024 * 1024,
            max_total_queued_bytes: Some(256 * 1024 * 1024),
            tcp_buffer_size: Some(64 * 1024),
            write_stall_timeout: Duration::from_secs(30),
            ping_interval: Some(Duration::from_secs(20)),
            pong_timeout: Duration::from_secs(20),
            login_timeout: Some(Duration::from_secs(300)),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(5),
            read_buffer_size: 1024,
            write_buffer_size: 4 * 1024,
            max_connections: Some(10_000),
            max_connections_per_ip: Some(256),
            max_pending_requests: Some(1024),
            max_pending_requests_per_ip: Some(64),
            max_not_logged_in: Some(1000),
            max_not_logged_in_per_ip: Some(64),
            max_connections_per_user: Some(4),
            client_ip_header: None,
            trusted_proxies: Vec::new(),
            allowed_origins: None,
            authenticator: None,
        }
    }
}

impl Config {
    /// Sets the router's configuration (rate limit).
    pub fn with_router(mut self, router: RouterConfig) -> Self {
        self.router = router;
        self
    }

    /// Sets the largest message (and frame) a client may send.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self.max_frame_size = bytes;
        self
    }

    /// Sets the largest single frame a client may send (call after
    /// [`with_max_message_size`](Self::with_max_message_size)).
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets how many messages may wait for one client.
    pub fn with_max_queued_messages(mut self, messages: usize) -> Self {
        self.max_queued_messages = messages;
        self
    }

    /// Sets how many bytes may wait for one client.
    pub fn with_max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Sets (or with `None`, turns off) the global budget of queued bytes.
    pub fn with_max_total_queued_bytes(mut self, bytes: Option<usize>) -> Self {
        self.max_total_queued_bytes = bytes;
        self
    }

    /// Sets (or with `None`, leaves to the kernel) the socket buffers of accepted sockets.
    pub fn with_tcp_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.tcp_buffer_size = bytes;
        self
    }

    /// Sets how long a write may make no progress before the client is dropped.
    pub fn with_write_stall_timeout(mut self, timeout: Duration) -> Self {
        self.write_stall_timeout = timeout;
        self
    }

    /// Sets (or with `None`, turns off) the caps on TCP connections whose request is still
    /// being read: in all, and per client address.
    pub fn with_max_pending_requests(
        mut self,
        total: Option<usize>,
        per_ip: Option<usize>,
    ) -> Self {
        self.max_pending_requests = total;
        self.max_pending_requests_per_ip = per_ip;
        self
    }

    /// Sets (or with `None`, turns off) the caps on connections that have not logged in yet:
    /// in all, and per client address.
    pub fn with_max_not_logged_in(mut self, total: Option<usize>, per_ip: Option<usize>) -> Self {
        self.max_not_logged_in = total;
        self.max_not_logged_in_per_ip = per_ip;
        self
    }

    /// Sets (or with `None`, turns off) the cap on connections per verified username.
    pub fn with_max_connections_per_user(mut self, max: Option<usize>) -> Self {
        self.max_connections_per_user = max;
        self
    }

    /// Sets (or with `None`, turns off) the ping interval.
    pub fn with_ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets how long a pinged connection has to show it is alive.
    pub fn with_pong_timeout(mut self, timeout: Duration) -> Self {
        self.pong_timeout = timeout;
        self
    }

    /// Sets (or with `None`, turns off) the login deadline.
    pub fn with_login_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.login_timeout = timeout;
        self
    }

    /// Sets the WebSocket handshake deadline (adapters that accept TCP themselves).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets how long to wait for a client's close reply.
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets how long a graceful shutdown may take.
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sets the transport's per-connection read buffer size.
    pub fn with_read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes;
        self
    }

    /// Sets the transport's write batching threshold.
    pub fn with_write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// Sets (or with `None`, turns off) the cap on open connections.
    pub fn with_max_connections(mut self, max: Option<usize>) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets (or with `None`, turns off) the cap on open connections per client address.
    pub fn with_max_connections_per_ip(mut self, max: Option<usize>) -> Self {
        self.max_connections_per_ip = max;
        self
    }

    /// Sets (or with `None`, stops using) the header that names the client's address.
    pub fn with_client_ip_header(mut self, header: Option<&str>) -> Self {
        self.client_ip_header = header.map(str::to_owned);
        self
    }

    /// Sets the address ranges of the reverse proxies in front of the server (see
    /// [`trusted_proxies`](Self::trusted_proxies)); an empty list trusts the header's last
    /// entry.
    ///
    /// ```
    /// use signaling_core::driver::Config;
    ///
    /// let config = Config::default()
    ///     .with_client_ip_header(Some("X-Forwarded-For"))
    ///     .with_trusted_proxies(["127.0.0.1/32".parse().unwrap(), "2001:db8::/32".parse().unwrap()]);
    /// assert_eq!(config.trusted_proxies.len(), 2);
    /// ```
    pub fn with_trusted_proxies(mut self, proxies: impl IntoIterator<Item = ipnet::IpNet>) -> Self {
        self.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// Sets the allowed page origins (`None`: any).
    pub fn with_allowed_origins(mut self, origins: Option<Vec<String>>) -> Self {
        self.allowed_origins = origins;
        self
    }

    /// Sets the authenticator consulted at every upgrade.
    pub fn with_authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Transport abstraction
// ---------------------------------------------------------------------------------------------

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
pub struct Close {
    /// WebSocket close code (RFC 6455 §7.4.1).
    pub code: u16,
    /// Human-readable reason (short: close reasons are limited to 123 bytes).
    pub reason: &'static str,
}

impl Close {
    /// 1001: the server is shutting down.
    pub const GOING_AWAY: Close = Close {
        code: 1001,
        reason: "server shutting down",
    };
    /// 1009: the client sent a message larger than the limit.
    pub const TOO_LARGE: Close = Close {
        code: 1009,
        reason: "message too large",
    };
    /// 1008: the connection did not log in in time.
    pub const LOGIN_TIMEOUT: Close = Close {
        code: 1008,
        reason: "no login before the deadline",
    };
    /// 1001: the connection did not answer pings.
    pub const HEARTBEAT_TIMEOUT: Close = Close {
        code: 1001,
        reason: "heartbeat timeout",
    };
    /// 1013 (try again later): a socket handed to [`Hub::serve_connection`] found the
    /// connection caps full. (Upgrades through [`Hub::admit`] are refused with an HTTP status
    /// instead, before any WebSocket exists.)
    pub const TRY_AGAIN_LATER: Close = Close {
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
    Close(Close),
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
pub struct Peer {
    /// The client's address, when the transport knows it.
    pub remote_addr: Option<SocketAddr>,
    /// A username already verified (e.g. by an authenticator at upgrade): the connection may
    /// only log in as this name ([`Router::handle_connect_verified`]).
    pub verified_username: Option<Username>,
}

impl Peer {
    /// Nothing known.
    pub fn new() -> Self {
        Peer::default()
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

// ---------------------------------------------------------------------------------------------
// The per-connection outbound queue
// ---------------------------------------------------------------------------------------------

/// What the hub asks of a connection's writer besides sending messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Send what is queued, then this close frame.
    Close(Close),
    /// Drop the connection now, without flushing anything (the client does not read).
    Abort,
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Transmit>,
    /// Encoded size of `messages`.
    queued_bytes: usize,
    /// Messages (and their bytes) the writer took and has not finished writing: they still
    /// count against the bounds.
    in_flight: usize,
    in_flight_bytes: usize,
    end: Option<End>,
    /// The watchdog asks for a heartbeat ping with this payload.
    ping: Option<[u8; 8]>,
    /// The router was told this queue is full (relays to it are refused); cleared once the
    /// queue drains to a quarter.
    congested: bool,
}

impl Queue {
    fn len(&self) -> usize {
        self.messages.len() + self.in_flight
    }

    fn bytes(&self) -> usize {
        self.queued_bytes + self.in_flight_bytes
    }

    /// At most `numerator/4` of both bounds is taken.
    fn within(&self, quarters: usize, config: &Config) -> bool {
        self.len() <= config.max_queued_messages / 4 * quarters
            && self.bytes() <= config.max_queued_bytes / 4 * quarters
    }
}

/// A bounded queue of messages for one connection. Holds no allocation while empty.
#[derive(Debug)]
struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the writer: a message or an end request arrived.
    wake: Notify,
    /// Wakes the connection task to drop everything (`End::Abort`).
    abort: Notify,
    /// Wakes a reader waiting for its own queue to drain.
    drained: Notify,
    /// The hub's count of bytes queued for all connections (the global budget).
    total: Arc<AtomicUsize>,
}

/// The queue is full.
struct Full;

/// What a push changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushed {
    Queued,
    /// Queued, and the queue is now three quarters full: tell the router.
    Congested,
}

impl Outbox {
    fn new(total: Arc<AtomicUsize>) -> Self {
        Outbox {
            queue: Mutex::default(),
            wake: Notify::new(),
            abort: Notify::new(),
            drained: Notify::new(),
            total,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes queued or being written.
    fn bytes(&self) -> usize {
        self.lock().bytes()
    }

    fn push(&self, message: Transmit, config: &Config) -> Result<Pushed, Full> {
        let len = message.message.size_hint();
        let mut q = self.lock();
        if q.end.is_some() {
            return Ok(Pushed::Queued); // closing: late messages are dropped
        }
        if q.len() >= config.max_queued_messages
            || q.bytes().saturating_add(len) > config.max_queued_bytes
        {
            return Err(Full);
        }
        let was_empty = q.messages.is_empty();
        q.messages.push_back(message);
        q.queued_bytes += len;
        self.total.fetch_add(len, Ordering::Relaxed);
        let congested = !q.congested && !q.within(3, config);
        q.congested |= congested;
        drop(q);
        if was_empty {
            self.wake.notify_one();
        }
        Ok(if congested {
            Pushed::Congested
        } else {
            Pushed::Queued
        })
    }

    /// Asks the writer to drain and close. The first request wins.
    fn close(&self, close: Close) {
        let mut q = self.lock();
        if q.end.is_none() {
            q.end = Some(End::Close(close));
            drop(q);
            self.wake.notify_one();
        }
    }

    fn abort(&self) {
        let mut q = self.lock();
        q.end = Some(End::Abort);
        q.messages = VecDeque::new();
        self.release(&mut q);
        drop(q);
        self.abort.notify_one();
        self.wake.notify_one();
    }

    /// Gives every byte the queue holds back to the hub's budget.
    fn release(&self, q: &mut Queue) {
        self.total.fetch_sub(q.bytes(), Ordering::Relaxed);
        q.queued_bytes = 0;
        q.in_flight = 0;
        q.in_flight_bytes = 0;
    }

    /// Waits until the queue is at most half full; returns whether a close was requested
    /// meanwhile (input is then no longer routed) and whether it had to wait. The reader calls
    /// it before routing each frame, so a client that pipelines many requests waits for its
    /// own replies to go out (TCP backpressure) instead of overflowing its queue.
    async fn wait_for_room(&self, config: &Config) -> (bool, bool) {
        {
            // Fast path: one lock, no waiter registration.
            let q = self.lock();
            if q.end.is_some() || q.within(2, config) {
                return (q.end.is_some(), false);
            }
        }
        loop {
            let drained = self.drained.notified();
            let mut drained = std::pin::pin!(drained);
            drained.as_mut().enable();
            {
                let q = self.lock();
                if q.end.is_some() || q.within(2, config) {
                    return (q.end.is_some(), true);
                }
            }
            drained.await;
        }
    }

    fn request_ping(&self, payload: [u8; 8]) {
        self.lock().ping = Some(payload);
        self.wake.notify_one();
    }

    /// Called by the writer when everything it took before is written (one lock per batch):
    /// gives that back, then moves every queued message into `batch` (which must be empty;
    /// they count as in flight until the next call).
    fn take(&self, batch: &mut VecDeque<Transmit>, config: &Config) -> Taken {
        let mut q = self.lock();
        let written = std::mem::take(&mut q.in_flight_bytes);
        q.in_flight = 0;
        if written > 0 {
            self.total.fetch_sub(written, Ordering::Relaxed);
        }
        let relieved = q.congested && q.within(1, config);
        q.congested &= !relieved;
        std::mem::swap(&mut q.messages, batch);
        q.in_flight = batch.len();
        q.in_flight_bytes = std::mem::take(&mut q.queued_bytes);
        let taken = Taken {
            end: q.end,
            ping: q.ping.take(),
            relieved,
        };
        drop(q);
        if written > 0 {
            self.drained.notify_waiters();
        }
        taken
    }
}

/// What [`Outbox::take`] hands the writer besides the batch.
struct Taken {
    /// The pending end request.
    end: Option<End>,
    /// The ping due, with its payload.
    ping: Option<[u8; 8]>,
    /// The queue was congested and has drained to a quarter: the router must be told.
    relieved: bool,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut q = self.lock();
        self.release(&mut q);
    }
}

// ---------------------------------------------------------------------------------------------
// The hub
// ---------------------------------------------------------------------------------------------

/// Lifecycle of the hub, watched by accept loops and connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// `shutdown` started: no new connections, live ones drain and close.
    Draining,
    /// The shutdown timeout passed: drop what is left.
    Killed,
}

struct State {
    router: Router,
    connections: HashMap<ConnectionId, Arc<Outbox>>,
    next_id: u64,
    shutting_down: bool,
    /// The router was told the global budget is nearly used up.
    overloaded: bool,
}

struct Inner {
    config: Config,
    state: Mutex<State>,
    phase: watch::Sender<Phase>,
    /// Connection tasks still running (including their closing handshakes).
    active: AtomicUsize,
    idle: Notify,
    /// Base of the millisecond clock kept per connection for the heartbeat.
    epoch: Instant,
    /// Slots taken, for the caps.
    slots: Slots,
    /// Bytes queued for all connections (what `max_total_queued_bytes` bounds).
    queued: Arc<AtomicUsize>,
    /// Keys the heartbeat's ping payloads, so a client cannot answer a ping it never read.
    ping_keys: std::collections::hash_map::RandomState,
}

/// The server: owns the [`Router`], allocates [`ConnectionId`]s, runs connections and shuts
/// them down. Cheap to clone (an `Arc` inside); every clone is the same server.
///
/// Create one per server and hand clones to the adapters (`signaling_ws::serve`,
/// `signaling_warp::routes`). See the [module docs](self) for what each connection does.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("phase", &*self.inner.phase.borrow())
            .field("active", &self.inner.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(Config::default())
    }
}

impl Hub {
    /// A hub with no connections.
    pub fn new(config: Config) -> Hub {
        let router = Router::new(config.router.clone());
        Hub {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State {
                    router,
                    connections: HashMap::new(),
                    next_id: 1,
                    shutting_down: false,
                    overloaded: false,
                }),
                phase: watch::Sender::new(Phase::Running),
                active: AtomicUsize::new(0),
                idle: Notify::new(),
                epoch: Instant::now(),
                slots: Slots::default(),
                queued: Arc::default(),
                ping_keys: std::collections::hash_map::RandomState::new(),
            }),
        }
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Runs `f` on the router, read-only, under the hub's lock (for metrics and tests). Keep
    /// it short: every connection waits for the lock meanwhile.
    pub fn with_router<R>(&self, f: impl FnOnce(&Router) -> R) -> R {
        f(&self.lock().router)
    }

    /// How many connections are registered with the router.
    pub fn connection_count(&self) -> usize {
        self.lock().connections.len()
    }

    /// Whether [`shutdown`](Self::shutdown) has started.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.phase.borrow() != Phase::Running
    }

    /// Resolves once [`shutdown`](Self::shutdown) starts: accept loops select on it to stop
    /// accepting, and it fits warp's `graceful` signal.
    pub fn shutdown_started(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut phase = self.inner.phase.subscribe();
        async move {
            let _ = phase.wait_for(|p| *p != Phase::Running).await;
        }
    }

    /// Graceful shutdown: refuses new connections, lets each live one send what is queued for
    /// it, sends it a 1001 close frame and waits for it to close. Returns when every
    /// connection is gone, or after [`Config::shutdown_timeout`] when those left are dropped.
    /// Calling it again (or from several clones) is harmless.
    pub async fn shutdown(&self) {
        let closing: Vec<Arc<Outbox>> = {
            let mut state = self.lock();
            state.shutting_down = true;
            state.connections.values().cloned().collect()
        };
        self.inner.phase.send_if_modified(|p| {
            let first = *p == Phase::Running;
            if first {
                *p = Phase::Draining;
            }
            first
        });
        for outbox in &closing {
            outbox.close(Close::GOING_AWAY);
        }
        drop(closing);
        let drained = tokio::time::timeout(self.inner.config.shutdown_timeout, self.wait_idle());
        if drained.await.is_err() {
            tracing::warn!(
                left = self.inner.active.load(Ordering::Relaxed),
                "shutdown timeout: dropping the connections left"
            );
            self.inner.phase.send_replace(Phase::Killed);
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wait_idle()).await;
        }
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held (a bug) must not take the whole server down.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many connection slots are taken: connections admitted by [`admit`](Self::admit)
    /// or handed to [`serve_connection`](Self::serve_connection) that have not ended yet
    /// (what [`Config::max_connections`] caps).
    pub fn admitted_connections(&self) -> usize {
        self.inner.slots.connections_in_use()
    }

    /// How many admitted connections have not logged in yet (what
    /// [`Config::max_not_logged_in`] caps).
    pub fn not_logged_in_connections(&self) -> usize {
        self.inner.slots.not_logged_in_in_use()
    }

    /// How many TCP connections hold a [`PendingRequest`] (what
    /// [`Config::max_pending_requests`] caps).
    pub fn pending_requests(&self) -> usize {
        self.inner.slots.pending_in_use()
    }

    /// Bytes queued for all connections together, including those being written (what
    /// [`Config::max_total_queued_bytes`] bounds).
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Takes a pending-request slot for a TCP connection just accepted from `remote_ip`, to
    /// hold until its request is upgraded or answered; refused (close the connection at once)
    /// while shutting down or when [`Config::max_pending_requests`] (or its per-address
    /// twin) is reached. Adapters that read requests themselves call it after `accept`.
    pub fn pending_request(&self, remote_ip: Option<IpAddr>) -> Result<PendingRequest, Refusal> {
        if self.is_shutting_down() {
            return Err(Refusal::ShuttingDown);
        }
        let config = &self.inner.config;
        let permit = self
            .inner
            .slots
            .pending(admission::pending_ip(config, remote_ip), config)?;
        Ok(PendingRequest { _permit: permit })
    }

    /// Decides on a WebSocket upgrade request before the upgrade: refuses it while shutting
    /// down (503), when its `Origin` is not in [`Config::allowed_origins`] (403), when the
    /// connection caps are full (503 in all, 429 for its address), or when the
    /// [`Config::authenticator`] says so (401/403). Otherwise it takes a connection slot and
    /// returns it with what is known of the client, for
    /// [`serve_admitted`](Self::serve_admitted) once the socket is upgraded.
    ///
    /// Adapters call it with the request in hand and answer a [`Refusal`] with its HTTP
    /// status; if you upgrade sockets yourself, call it the same way.
    pub async fn admit(&self, request: &UpgradeRequest) -> Result<Admission, Refusal> {
        let decided = self.decide(request).await;
        if let Err(refusal) = &decided {
            tracing::debug!(addr = ?request.remote_addr, status = refusal.status(), %refusal, "upgrade refused");
        }
        decided
    }

    async fn decide(&self, request: &UpgradeRequest) -> Result<Admission, Refusal> {
        let config = &self.inner.config;
        if self.is_shutting_down() {
            return Err(Refusal::ShuttingDown);
        }
        if let Some(allowed) = &config.allowed_origins {
            let origin = request.origin().ok_or(Refusal::MissingOrigin)?;
            if !admission::origin_allowed(allowed, origin) {
                return Err(Refusal::OriginNotAllowed);
            }
        }
        let ip = admission::client_ip(config, request);
        // Taken before the authenticator runs: a slow one holds a slot meanwhile, and a
        // panicking one gives it back as it unwinds.
        let mut permits = self.inner.slots.connection(ip, config)?;
        let mut peer = Peer::new();
        peer.remote_addr = request.remote_addr;
        if let Some(authenticator) = &config.authenticator {
            match authenticator.authenticate(request).await {
                auth::AuthDecision::Accept => {}
                auth::AuthDecision::AcceptAs(name) => {
                    permits.user = Some(self.inner.slots.user(&name, config)?);
                    peer.verified_username = Some(name);
                }
                auth::AuthDecision::Unauthorized(reason) => {
                    return Err(Refusal::Unauthorized(reason));
                }
                auth::AuthDecision::Forbidden(reason) => return Err(Refusal::Forbidden(reason)),
            }
        }
        Ok(Admission { peer, permits })
    }

    /// Runs a WebSocket upgraded after [`admit`](Self::admit) accepted its request to its
    /// end, as [`serve_connection`](Self::serve_connection) does, and gives the connection
    /// slot back when it ends (however it ends).
    pub async fn serve_admitted<T, S>(&self, socket: S, admission: Admission)
    where
        T: Transport,
        S: Stream<Item = Result<T::Message, T::Error>> + Sink<T::Message, Error = T::Error> + Send,
        T::Message: Send,
    {
        let Admission { peer, permits } = admission;
        self.run_connection::<T, S>(socket, peer, permits).await;
    }

    /// Runs one upgraded WebSocket connection to its end: registers it with the router, reads,
    /// writes, pings and enforces the deadlines, then tears it down. It never returns an
    /// error, a transport failure just ends the connection.
    ///
    /// For a socket upgraded without [`admit`](Self::admit): it takes a connection slot for
    /// `peer.remote_addr` itself, and when the caps are full closes the WebSocket at once with
    /// 1013 ([`Close::TRY_AGAIN_LATER`]). The origin allowlist and the authenticator are not
    /// consulted (there is no request); adapters use `admit` and
    /// [`serve_admitted`](Self::serve_admitted) instead.
    ///
    /// `T` says how the socket's messages map to frames; see [`Transport`].
    pub async fn serve_connection<T, S>(&self, socket: S, peer: Peer)
    where
        T: Transport,
        S: Stream<Item = Result<T::Message, T::Error>> + Sink<T::Message, Error = T::Error> + Send,
        T::Message: Send,
    {
        let ip = peer.remote_addr.map(|a| a.ip());
        match self.inner.slots.connection(ip, &self.inner.config) {
            Ok(permits) => self.run_connection::<T, S>(socket, peer, permits).await,
            Err(refusal) => {
                tracing::debug!(addr = ?peer.remote_addr, %refusal, "connection refused");
                let mut socket = std::pin::pin!(socket);
                let close = socket.send(T::outbound(Outbound::Close(Close::TRY_AGAIN_LATER)));
                let _ = tokio::time::timeout(self.inner.config.close_timeout, close).await;
            }
        }
    }

    /// Runs the connection holding `permits` (given back when it ends, however it ends).
    async fn run_connection<T, S>(&self, socket: S, peer: Peer, permits: ConnectionPermits)
    where
        T: Transport,
        S: Stream<Item = Result<T::Message, T::Error>> + Sink<T::Message, Error = T::Error> + Send,
        T::Message: Send,
    {
        let active = ActiveGuard::new(self);
        let mut killed = self.inner.phase.subscribe();
        let Some(registration) = self.register(&peer) else {
            // Shutting down: refuse politely.
            let mut socket = std::pin::pin!(socket);
            let close = socket.send(T::outbound(Outbound::Close(Close::GOING_AWAY)));
            let _ = tokio::time::timeout(self.inner.config.close_timeout, close).await;
            return;
        };
        tracing::debug!(conn = %registration.id, addr = ?peer.remote_addr, "connected");
        let ConnectionPermits {
            connection,
            not_logged_in,
            user,
        } = permits;
        let body = self.run::<T, S>(socket, &registration, not_logged_in);
        tokio::select! {
            () = body => {}
            _ = killed.wait_for(|p| *p == Phase::Killed) => {}
        }
        drop(registration);
        drop((connection, user));
        drop(active);
    }

    /// Registers a connection with the router; `None` while shutting down.
    fn register(&self, peer: &Peer) -> Option<Registration> {
        let mut state = self.lock();
        if state.shutting_down {
            return None;
        }
        let id = ConnectionId(state.next_id);
        state.next_id += 1;
        let connected = match &peer.verified_username {
            Some(name) => state.router.handle_connect_verified(id, name.clone()),
            None => state.router.handle_connect(id),
        };
        if let Err(e) = connected {
            // Ids are never reused, so this cannot happen; refuse rather than panic.
            tracing::error!(error = %e, "router refused a fresh connection id");
            return None;
        }
        let outbox = Arc::new(Outbox::new(Arc::clone(&self.inner.queued)));
        state.connections.insert(id, Arc::clone(&outbox));
        Some(Registration {
            hub: self.clone(),
            id,
            outbox,
        })
    }

    /// Feeds one input from `from` to the router under the lock and dispatches what comes
    /// out. `false` when the router no longer knows the connection (it was disconnected
    /// meanwhile).
    fn input(
        &self,
        now: Instant,
        from: ConnectionId,
        f: impl FnOnce(&mut Router, std::time::Instant) -> Result<(), crate::RouterError>,
    ) -> bool {
        let now = now.into_std();
        let mut state = self.lock();
        self.refresh_overload(&mut state);
        let ok = f(&mut state.router, now).is_ok();
        self.dispatch(&mut state, Some(from));
        ok
    }

    /// Tells the router when the queued total crosses the budget's marks: relays are refused
    /// from 90 % of [`Config::max_total_queued_bytes`] until it is back under 70 %.
    fn refresh_overload(&self, state: &mut State) {
        let Some(budget) = self.inner.config.max_total_queued_bytes else {
            return;
        };
        let total = self.queued_bytes();
        let overloaded = if state.overloaded {
            total >= budget / 10 * 7
        } else {
            total >= budget / 10 * 9
        };
        if overloaded != state.overloaded {
            state.overloaded = overloaded;
            state.router.handle_overload(overloaded);
            if overloaded {
                tracing::warn!(
                    total,
                    budget,
                    "queued bytes near the budget: refusing relays"
                );
            } else {
                tracing::info!(total, budget, "queued bytes back under the budget");
            }
        }
    }

    /// The writer of `conn` drained its congested queue: relays to it are accepted again.
    fn relieve(&self, conn: ConnectionId) {
        let _ = self.lock().router.handle_backpressure(conn, false);
    }

    /// Drains the router's outputs into the connections' queues, without blocking, while
    /// handling input from `sender` (if any).
    ///
    /// A queue that reaches three quarters of its bounds is reported to the router, which then
    /// refuses relays to it to their senders. A message that still does not fit (a relay
    /// racing that report, or traffic the router does not refuse) is answered to its sender
    /// with `recipient_overloaded` if it is a relay; anything else that does not fit means the
    /// client has not read for a long time, and it is disconnected (which may produce more
    /// outputs: its partner's `close`). Over the global budget the connections holding the
    /// most queued bytes are disconnected, largest first.
    fn dispatch(&self, state: &mut State, sender: Option<ConnectionId>) {
        let config = &self.inner.config;
        loop {
            let mut dropped = Vec::new();
            while let Some(output) = state.router.poll_output() {
                match output {
                    Output::Transmit(t) => {
                        let Some(outbox) = state.connections.get(&t.to) else {
                            continue;
                        };
                        let relay = matches!(t.message, ServerMessage::Relay { .. });
                        let to = t.to;
                        match outbox.push(t, config) {
                            Ok(Pushed::Queued) => {}
                            Ok(Pushed::Congested) => {
                                tracing::debug!(conn = %to, "outbound queue congested: refusing relays to it");
                                let _ = state.router.handle_backpressure(to, true);
                            }
                            Err(Full) => match sender.filter(|&s| relay && s != to) {
                                Some(sender) => {
                                    let _ = state.router.handle_undeliverable(sender, to);
                                }
                                None => dropped.push(to),
                            },
                        }
                    }
                    Output::Event(event) => tracing::debug!(?event, "router event"),
                    Output::Disconnect { conn, reason } => {
                        if let Some(outbox) = state.connections.get(&conn) {
                            outbox.close(Close {
                                code: reason.code(),
                                reason: reason.reason(),
                            });
                        }
                    }
                }
            }
            if let Some(budget) = config.max_total_queued_bytes {
                if self.queued_bytes() > budget {
                    self.shed(state, budget, &mut dropped);
                }
                self.refresh_overload(state);
            }
            if dropped.is_empty() {
                return;
            }
            for conn in dropped {
                if let Some(outbox) = state.connections.remove(&conn) {
                    tracing::info!(%conn, "outbound queue full (client not reading): disconnecting");
                    outbox.abort();
                    let _ = state.router.handle_disconnect(conn);
                }
            }
        }
    }

    /// Over the global budget: picks the connections with the largest queues (clients that
    /// do not read), largest first, until what they hold brings the total under 80 %.
    fn shed(&self, state: &State, budget: usize, dropped: &mut Vec<ConnectionId>) {
        let mut excess = self.queued_bytes().saturating_sub(budget / 10 * 8);
        let mut sizes: Vec<(usize, ConnectionId)> = state
            .connections
            .iter()
            .map(|(&conn, outbox)| (outbox.bytes(), conn))
            .filter(|&(bytes, conn)| bytes > 0 && !dropped.contains(&conn))
            .collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        for (bytes, conn) in sizes {
            if excess == 0 {
                break;
            }
            tracing::warn!(%conn, bytes, budget, "over the queued-bytes budget: dropping the largest queue");
            dropped.push(conn);
            excess = excess.saturating_sub(bytes);
        }
    }

    fn is_logged_in(&self, conn: ConnectionId) -> bool {
        self.lock().router.username(conn).is_some()
    }

    fn millis(&self) -> u64 {
        self.millis_at(Instant::now())
    }

    /// `at` on the hub's millisecond clock (what `last_seen` is kept on).
    fn millis_at(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.inner.epoch);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    async fn run<T, S>(
        &self,
        socket: S,
        registration: &Registration,
        not_logged_in: Option<Permit<AddressKey>>,
    ) where
        T: Transport,
        S: Stream<Item = Result<T::Message, T::Error>> + Sink<T::Message, Error = T::Error> + Send,
    {
        let (sink, stream) = socket.split();
        let conn = registration.id;
        let outbox = &*registration.outbox;
        let liveness = Liveness {
            last_seen: AtomicU64::new(self.millis()),
            expected_pong: AtomicU64::new(0),
        };
        let mut reader =
            std::pin::pin!(self.read_loop::<T, _>(stream, conn, outbox, &liveness, not_logged_in));
        let mut writer = std::pin::pin!(self.write_loop::<T, _>(sink, conn, outbox));
        let watchdog = std::pin::pin!(self.watchdog(conn, outbox, &liveness));

        let ending = tokio::select! {
            () = outbox.abort.notified() => Ending::Abort,
            r = &mut reader => Ending::Read(r),
            w = &mut writer => Ending::Write(w),
            close = watchdog => Ending::Deadline(close),
        };
        tracing::debug!(%conn, ?ending, "disconnecting");
        // Free the name and tell the partner now; the close handshake below may take a while.
        registration.teardown();
        let closing = async {
            match ending {
                Ending::Read(ReadEnd::TooLarge) => {
                    // The transport's stream is finished after the error: send and go.
                    outbox.close(Close::TOO_LARGE);
                    writer.await;
                }
                Ending::Deadline(close) => {
                    outbox.close(close);
                    if writer.await == WriteEnd::SentClose {
                        reader.await;
                    }
                }
                // Wait for the client's close reply (the reader ends when the stream does).
                Ending::Write(WriteEnd::SentClose) => {
                    reader.await;
                }
                Ending::Abort | Ending::Read(_) | Ending::Write(_) => {}
            }
        };
        let _ = tokio::time::timeout(self.inner.config.close_timeout, closing).await;
    }

    /// Reads frames and feeds them to the router. Holds the connection's not-logged-in slot
    /// until it logs in.
    async fn read_loop<T, R>(
        &self,
        mut stream: R,
        conn: ConnectionId,
        outbox: &Outbox,
        liveness: &Liveness,
        mut not_logged_in: Option<Permit<AddressKey>>,
    ) -> ReadEnd
    where
        T: Transport,
        R: Stream<Item = Result<T::Message, T::Error>> + Unpin,
    {
        let config = &self.inner.config;
        let max = config.max_message_size;
        loop {
            let Some(item) = stream.next().await else {
                break;
            };
            let message = match item {
                Ok(message) => message,
                Err(e) if T::is_too_large(&e) => return ReadEnd::TooLarge,
                Err(e) => {
                    tracing::debug!(%conn, error = %e, "read error");
                    return ReadEnd::Error;
                }
            };
            // One clock read per frame, for the heartbeat and the router (which never reads it).
            let now = Instant::now();
            let accepted = match T::inbound(&message) {
                Inbound::Text(text) if text.len() > max => return ReadEnd::TooLarge,
                Inbound::Text(text) => match outbox.wait_for_room(config).await {
                    // After the server asked for a close, input is no longer routed.
                    (true, _) => true,
                    (false, waited) => {
                        let now = if waited { Instant::now() } else { now };
                        let accepted =
                            self.input(now, conn, |r, now| r.handle_text(conn, text, now));
                        if not_logged_in.is_some() && self.is_logged_in(conn) {
                            not_logged_in = None; // give the slot back
                        }
                        accepted
                    }
                },
                Inbound::Binary(len) => match outbox.wait_for_room(config).await {
                    (true, _) => true,
                    (false, waited) => {
                        let now = if waited { Instant::now() } else { now };
                        self.input(now, conn, |r, now| r.handle_binary(conn, len, now))
                    }
                },
                Inbound::Pong(payload) => {
                    // Only the echo of our last ping proves the client reads.
                    let expected = liveness.expected_pong.load(Ordering::Relaxed).to_be_bytes();
                    if payload == expected {
                        liveness
                            .last_seen
                            .store(self.millis_at(now), Ordering::Relaxed);
                    }
                    self.input(now, conn, |r, now| r.handle_control(conn, now))
                }
                Inbound::Ping => self.input(now, conn, |r, now| r.handle_control(conn, now)),
                Inbound::Close => true,
            };
            if !accepted {
                return ReadEnd::Gone;
            }
        }
        ReadEnd::Closed
    }

    /// The connection's timers: asks the writer for pings, and returns the close frame to send
    /// when the client stopped answering or did not log in in time. Runs beside the writer,
    /// so a write blocked on a dead client cannot stop it.
    async fn watchdog(&self, conn: ConnectionId, outbox: &Outbox, liveness: &Liveness) -> Close {
        let config = &self.inner.config;
        let start = Instant::now();
        let mut heartbeat = Heartbeat {
            next_ping: config.ping_interval.map(|i| start + i),
            ping_sent: None,
            login_deadline: config.login_timeout.map(|t| start + t),
        };
        loop {
            match heartbeat.deadline(config) {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
            let seen = liveness.last_seen.load(Ordering::Relaxed);
            let now_ms = self.millis();
            match heartbeat.on_timer(Instant::now(), now_ms, seen, config) {
                Tick::Nothing => {}
                Tick::Ping => {
                    // Unpredictable, so that a client that does not read cannot answer it.
                    let payload = self.inner.ping_keys.hash_one((conn.0, now_ms));
                    liveness.expected_pong.store(payload, Ordering::Relaxed);
                    outbox.request_ping(payload.to_be_bytes());
                }
                Tick::DeadPeer => {
                    tracing::debug!(%conn, "heartbeat timeout");
                    return Close::HEARTBEAT_TIMEOUT;
                }
                Tick::LoginCheck => {
                    if !self.is_logged_in(conn) {
                        tracing::debug!(%conn, "login deadline passed");
                        return Close::LOGIN_TIMEOUT;
                    }
                }
            }
        }
    }
}

/// What the read loop and the watchdog share about the client's liveness.
struct Liveness {
    /// When (on the hub's millisecond clock) the client last answered a ping.
    last_seen: AtomicU64,
    /// The payload of the last ping sent; a pong must echo it.
    expected_pong: AtomicU64,
}

impl Hub {
    /// Sends what the outbox holds: batches of messages (encoded here, outside every lock, fed
    /// one by one and flushed once), pings, and finally a close frame. A write that makes no
    /// progress for [`Config::write_stall_timeout`] ends the connection.
    async fn write_loop<T, W>(&self, mut sink: W, conn: ConnectionId, outbox: &Outbox) -> WriteEnd
    where
        T: Transport,
        W: Sink<T::Message, Error = T::Error> + Unpin,
    {
        let config = &self.inner.config;
        let stall = config.write_stall_timeout;
        let mut batch = VecDeque::new();
        loop {
            let Taken {
                end,
                ping,
                relieved,
            } = outbox.take(&mut batch, config);
            if relieved {
                self.relieve(conn);
            }
            if end == Some(End::Abort) {
                return WriteEnd::Aborted;
            }
            let fed = ping.is_some() || !batch.is_empty();
            if let Some(payload) = ping {
                if let Err(end) =
                    progress(conn, stall, sink.feed(T::outbound(Outbound::Ping(payload)))).await
                {
                    return end;
                }
            }
            for message in batch.drain(..) {
                let frame = T::outbound(Outbound::Text(message.to_json()));
                if let Err(end) = progress(conn, stall, sink.feed(frame)).await {
                    return end;
                }
            }
            if fed {
                if let Err(end) = progress(conn, stall, sink.flush()).await {
                    return end;
                }
                if batch.capacity() > 64 {
                    batch = VecDeque::new(); // give back what a burst grew
                }
                continue; // more may have arrived while writing
            }
            if let Some(End::Close(close)) = end {
                return match progress(conn, stall, sink.send(T::outbound(Outbound::Close(close))))
                    .await
                {
                    Ok(()) => WriteEnd::SentClose,
                    Err(end) => end,
                };
            }
            outbox.wake.notified().await;
        }
    }
}

/// One write of the writer: an error, or no progress within `stall`, ends the connection.
async fn progress<E: fmt::Display>(
    conn: ConnectionId,
    stall: Duration,
    write: impl Future<Output = Result<(), E>>,
) -> Result<(), WriteEnd> {
    let mut write = std::pin::pin!(write);
    // Most writes complete at once (into the transport's buffer): no timer, no clock read for
    // them; the deadline is armed only for a write that has to wait for the socket.
    let done = match futures_util::FutureExt::now_or_never(write.as_mut()) {
        Some(done) => Ok(done),
        None => tokio::time::timeout(stall, write).await,
    };
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(%conn, error = %e, "write error");
            Err(WriteEnd::Error)
        }
        Err(_) => {
            tracing::info!(%conn, ?stall, "write stalled (client not reading): disconnecting");
            Err(WriteEnd::Stalled)
        }
    }
}

#[derive(Debug)]
enum ReadEnd {
    /// The stream ended (the client closed, or the transport went away).
    Closed,
    /// A read error.
    Error,
    /// A message over the size limit.
    TooLarge,
    /// The router no longer knows the connection.
    Gone,
}

#[derive(Debug, PartialEq, Eq)]
enum WriteEnd {
    /// A close frame went out; wait for the client's reply.
    SentClose,
    /// The hub aborted the connection.
    Aborted,
    /// A write failed.
    Error,
    /// A write made no progress within the write-stall timeout.
    Stalled,
}

#[derive(Debug)]
enum Ending {
    Abort,
    Read(ReadEnd),
    Write(WriteEnd),
    /// A deadline passed (heartbeat or login): send this close frame.
    Deadline(Close),
}

enum Tick {
    Nothing,
    Ping,
    DeadPeer,
    LoginCheck,
}

/// The connection's timers: next ping, the pending pong deadline and the login deadline.
struct Heartbeat {
    next_ping: Option<Instant>,
    /// When the unanswered ping went out, and the same moment on the hub's millisecond clock
    /// (the clock `last_seen` is kept on; a pong in the same millisecond counts).
    ping_sent: Option<(Instant, u64)>,
    login_deadline: Option<Instant>,
}

impl Heartbeat {
    fn deadline(&self, config: &Config) -> Option<Instant> {
        let pong = self.ping_sent.map(|(sent, _)| sent + config.pong_timeout);
        [self.next_ping, pong, self.login_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// `now_ms` and `last_seen_ms` are on the hub's millisecond clock.
    fn on_timer(&mut self, now: Instant, now_ms: u64, last_seen_ms: u64, config: &Config) -> Tick {
        if let Some((sent, sent_ms)) = self.ping_sent {
            if last_seen_ms >= sent_ms {
                self.ping_sent = None;
            } else if now >= sent + config.pong_timeout {
                return Tick::DeadPeer;
            }
        }
        if self.login_deadline.is_some_and(|d| now >= d) {
            self.login_deadline = None;
            return Tick::LoginCheck;
        }
        if let (Some(next), Some(interval)) = (self.next_ping, config.ping_interval) {
            if now >= next {
                self.next_ping = Some(now + interval);
                if self.ping_sent.is_none() {
                    self.ping_sent = Some((now, now_ms));
                }
                return Tick::Ping;
            }
        }
        Tick::Nothing
    }
}

/// A connection's place in the router. Dropping it (normally, by a panic, or by cancellation)
/// calls [`Router::handle_disconnect`] unless the hub already did.
struct Registration {
    hub: Hub,
    id: ConnectionId,
    outbox: Arc<Outbox>,
}

impl Registration {
    /// Idempotent: the first call disconnects, later ones find nothing to do.
    fn teardown(&self) {
        let mut state = self.hub.lock();
        // Absent when the hub already disconnected it (its queue overflowed).
        if state.connections.remove(&self.id).is_some() {
            let _ = state.router.handle_disconnect(self.id);
            self.hub.dispatch(&mut state, None);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.teardown();
        tracing::debug!(conn = %self.id, "disconnected");
    }
}

/// Counts a running connection task, so that `shutdown` knows when all are gone.
struct ActiveGuard {
    inner: Arc<Inner>,
}

impl ActiveGuard {
    fn new(hub: &Hub) -> Self {
        hub.inner.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard {
            inner: Arc::clone(&hub.inner),
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
