//! The driver's configuration: every limit and timeout, with its default and what it protects
//! against.

use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use super::Hub;
use super::auth::Authenticator;
use super::cluster::ClusterBackend;
use super::ice::IceServers;
use super::observe::Observer;
use crate::router::RouterConfig;

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
    /// is allocated with the connection, zero-filled and kept, so every byte of it is resident
    /// even while the connection idles). Larger messages still arrive whole, over several
    /// reads. Default 256 B: the adapters read the socket through `signaling_ws::ReadAhead`,
    /// which asks the socket for 4 KiB at a time and keeps what the WebSocket has not taken
    /// yet only until it is taken, so a small buffer here no longer costs a system call per
    /// frame (issue 13: 1 KiB before, 4 KiB before issue 6).
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
    /// in. See [`auth`](super::auth).
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Cluster mode: the backend that shares names and carries messages between nodes (see
    /// [`cluster`](super::cluster)). `None` (default): a single server.
    pub cluster: Option<Arc<dyn ClusterBackend>>,
    /// STUN and TURN servers handed to each user in its successful `login` and `resume`
    /// replies (`"iceServers"`), TURN with credentials minted for that user and valid for
    /// [`TurnRest::ttl`](super::ice::TurnRest::ttl) (the TURN REST scheme, see
    /// [`ice`](super::ice)), so that only logged-in users can use the relay. `None` (default):
    /// the replies are the tutorial's, and pages find their ICE servers elsewhere.
    pub ice_servers: Option<IceServers>,
    /// Told what the hub does (see [`observe`](super::observe)): the router's events,
    /// connections opened and closed, upgrades refused, messages relayed. The `metrics`
    /// feature's [`Metrics`](super::metrics::Metrics) exports them to Prometheus. `None`
    /// (default): nobody is told.
    pub observer: Option<Arc<dyn Observer>>,
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
            read_buffer_size: 256,
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
            cluster: None,
            ice_servers: None,
            observer: None,
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

    /// Sets the [`observer`](Self::observer) (metrics), or removes it with `None`.
    pub fn with_observer(mut self, observer: Option<Arc<dyn Observer>>) -> Self {
        self.observer = observer;
        self
    }

    /// Joins a cluster through `backend` (see [`cluster`](super::cluster)).
    pub fn with_cluster(mut self, backend: Arc<dyn ClusterBackend>) -> Self {
        self.cluster = Some(backend);
        self
    }

    /// Sets the ICE servers handed to users at login (see
    /// [`ice_servers`](Self::ice_servers)); an empty [`IceServers`] hands out nothing.
    pub fn with_ice_servers(mut self, ice_servers: IceServers) -> Self {
        self.ice_servers = Some(ice_servers).filter(|ice| !ice.is_empty());
        self
    }

    /// Sets the authenticator consulted at every upgrade.
    pub fn with_authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }
}
