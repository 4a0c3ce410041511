//! Deciding on a WebSocket upgrade before it happens: the origin allowlist, the connection
//! caps and the [`Authenticator`](super::auth::Authenticator). Adapters build an
//! [`UpgradeRequest`] from the HTTP request, call [`Hub::admit`](super::Hub::admit), and either
//! answer with the [`Refusal`]'s HTTP status or upgrade and hand the socket and the
//! [`Admission`] to [`Hub::serve_admitted`](super::Hub::serve_admitted).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Config, ConnectionInfo};
use crate::protocol::Username;

// ---------------------------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------------------------

/// What the server knows about a WebSocket upgrade request when it decides whether to accept
/// it: the request target, its headers and the TCP peer's address.
///
/// Adapters build it from their HTTP library's request (so that no `http` crate version
/// appears in this crate's API); an [`Authenticator`](super::auth::Authenticator) reads it.
///
/// ```
/// use signaling_core::driver::UpgradeRequest;
///
/// let request = UpgradeRequest::new("/ws")
///     .with_query(Some("token=alice%3A1700000000%3Aab12&x=1"))
///     .with_header("Origin", "https://app.example.com")
///     .with_header("Authorization", "Bearer abc");
/// assert_eq!(request.query_param("token").as_deref(), Some("alice:1700000000:ab12"));
/// assert_eq!(request.origin(), Some("https://app.example.com"));
/// assert_eq!(request.bearer_token(), Some("abc"));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct UpgradeRequest {
    /// The request path, e.g. `/ws`.
    pub path: String,
    /// The raw query string after `?`, still percent-encoded; `None` without one.
    pub query: Option<String>,
    /// Every header in request order, names in lowercase. A value that is not UTF-8 is
    /// converted lossily.
    pub headers: Vec<(String, String)>,
    /// The TCP peer's address, when the transport knows it (behind a proxy: the proxy's).
    pub remote_addr: Option<SocketAddr>,
    /// The request's HTTP version as `(major, minor)`, e.g. `(1, 1)`; `None` when the
    /// adapter does not know it (it is then not checked by
    /// [`check_handshake`](Self::check_handshake)).
    pub http_version: Option<(u8, u8)>,
}

impl fmt::Debug for UpgradeRequest {
    /// Header values and the query are left out: they may hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("UpgradeRequest")
            .field("path", &self.path)
            .field("query_len", &self.query.as_ref().map(String::len))
            .field("header_names", &names)
            .field("remote_addr", &self.remote_addr)
            .field("http_version", &self.http_version)
            .finish()
    }
}

impl UpgradeRequest {
    /// A request for `path` with no query, no headers and no known peer.
    pub fn new(path: impl Into<String>) -> Self {
        UpgradeRequest {
            path: path.into(),
            ..UpgradeRequest::default()
        }
    }

    /// Sets the raw (percent-encoded) query string, without the `?`.
    pub fn with_query(mut self, query: Option<impl Into<String>>) -> Self {
        self.query = query.map(Into::into);
        self
    }

    /// Appends a header (the name is lowercased).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the TCP peer's address.
    pub fn with_remote_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.remote_addr = addr;
        self
    }

    /// Sets the HTTP version, `(major, minor)`.
    pub fn with_http_version(mut self, version: Option<(u8, u8)>) -> Self {
        self.http_version = version;
        self
    }

    /// Whether the request is a well-formed WebSocket opening handshake (RFC 6455 §4.2.1), so
    /// that answering `101 Switching Protocols` is right. Adapters call it before
    /// [`Hub::admit`](super::Hub::admit) and answer an `Err` like any [`Refusal`]. It refuses:
    ///
    /// - an HTTP version below 1.1, when [`http_version`](Self::http_version) is known;
    /// - no `Upgrade: websocket` or no `upgrade` token in `Connection`;
    /// - no `Sec-WebSocket-Version` header: [`Refusal::BadHandshake`] (400); one other than
    ///   `13`: [`Refusal::UnsupportedWebSocketVersion`] (426, naming version 13);
    /// - a `Sec-WebSocket-Key` that is missing, repeated, or not the base64 of exactly 16
    ///   bytes.
    ///
    /// The method (`GET`) is left to the adapter's HTTP parser.
    ///
    /// ```
    /// use signaling_core::driver::{Refusal, UpgradeRequest};
    ///
    /// let request = UpgradeRequest::new("/ws")
    ///     .with_http_version(Some((1, 1)))
    ///     .with_header("Connection", "keep-alive, Upgrade")
    ///     .with_header("Upgrade", "websocket")
    ///     .with_header("Sec-WebSocket-Version", "13")
    ///     .with_header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    /// assert_eq!(request.check_handshake(), Ok(()));
    /// let old = request.clone().with_http_version(Some((1, 0)));
    /// assert_eq!(old.check_handshake().unwrap_err().status(), 400);
    /// ```
    pub fn check_handshake(&self) -> Result<(), Refusal> {
        if self.http_version.is_some_and(|v| v < (1, 1)) {
            return Err(Refusal::BadHandshake("HTTP/1.1 or later required"));
        }
        let has_token = |name: &str, token: &str| {
            self.header_values(name)
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if !has_token("upgrade", "websocket") {
            return Err(Refusal::BadHandshake("no `Upgrade: websocket` header"));
        }
        if !has_token("connection", "upgrade") {
            return Err(Refusal::BadHandshake("no `Connection: Upgrade` header"));
        }
        let mut versions = self.header_values("sec-websocket-version");
        match (versions.next(), versions.next()) {
            (None, _) => {
                return Err(Refusal::BadHandshake("no Sec-WebSocket-Version header"));
            }
            (Some(v), None) if v.trim() == "13" => {}
            _ => return Err(Refusal::UnsupportedWebSocketVersion),
        }
        let mut keys = self.header_values("sec-websocket-key");
        match (keys.next(), keys.next()) {
            (Some(key), None) if is_websocket_key(key.trim()) => Ok(()),
            _ => Err(Refusal::BadHandshake(
                "Sec-WebSocket-Key must be one base64-encoded 16-byte value",
            )),
        }
    }

    /// Every value of header `name` (case-insensitive), in request order.
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of query parameter `name`, percent-decoded (`+` is a space, as in
    /// HTML forms; a client that means `+` sends `%2B`, which `encodeURIComponent` does).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query
            .as_deref()?
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| percent_decode(key) == name)
            .map(|(_, value)| percent_decode(value))
    }

    /// The `Origin` header: what a browser says about the page that opened the socket.
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }
}

/// Whether `key` is the canonical base64 (with padding) of exactly 16 bytes: 22 characters of
/// the standard alphabet, the last of which carries only 2 bits, then `==`.
fn is_websocket_key(key: &str) -> bool {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = key.as_bytes();
    let (Some(data), Some(b"==")) = (bytes.get(..22), bytes.get(22..)) else {
        return false;
    };
    let value = |c: &u8| ALPHABET.iter().position(|a| a == c);
    data.iter().all(|c| value(c).is_some())
        && data.last().and_then(value).is_some_and(|v| v & 0b1111 == 0)
}

/// Decodes `%XX` escapes and `+`; a malformed escape is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
                if let Some(decoded) = hex {
                    out.push(decoded);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

/// Why an upgrade request was refused. Adapters answer it with [`status`](Self::status), a
/// short plain-text body ([`Display`](fmt::Display)) and [`headers`](Self::headers), and never
/// upgrade: a refused client holds no WebSocket, no task and no slot.
///
/// These are HTTP answers, not protocol messages, so they have no `ErrorCode`. (A browser's
/// `WebSocket` shows every refusal the same way, as an `error` event and close code 1006;
/// the status and body are for native clients, `curl` and logs.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// 503: the server is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
    /// 503: [`Config::max_connections`] connections are open.
    #[error("too many connections")]
    TooManyConnections,
    /// 429: [`Config::max_connections_per_ip`] connections are open from the client's address.
    #[error("too many connections from your address")]
    TooManyFromAddress,
    /// 503: [`Config::max_not_logged_in`] connections have not logged in yet.
    #[error("too many connections waiting to log in")]
    TooManyNotLoggedIn,
    /// 429: [`Config::max_not_logged_in_per_ip`] connections from the client's address have
    /// not logged in yet.
    #[error("too many connections from your address waiting to log in")]
    TooManyNotLoggedInFromAddress,
    /// 429: [`Config::max_connections_per_user`] connections are open for the username the
    /// authenticator verified.
    #[error("too many connections for this user")]
    TooManyForUser,
    /// [`Config::max_pending_requests`] TCP connections are waiting for their request to be
    /// read: the adapters drop a new one without an answer (writing one would cost what the
    /// cap saves); the status is 503 for those that answer.
    #[error("too many pending requests")]
    TooManyPending,
    /// [`Config::max_pending_requests_per_ip`] TCP connections from the client's address are
    /// waiting for their request to be read: dropped like [`TooManyPending`](Self::TooManyPending);
    /// 429 for those that answer.
    #[error("too many pending requests from your address")]
    TooManyPendingFromAddress,
    /// 403: [`Config::allowed_origins`] is set and the request has no `Origin` header.
    #[error("an Origin header is required")]
    MissingOrigin,
    /// 403: the `Origin` header is not in [`Config::allowed_origins`].
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// 401: the [`Authenticator`](super::auth::Authenticator) found no valid credentials;
    /// the reason is sent to the client.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 403: the [`Authenticator`](super::auth::Authenticator) refused valid credentials;
    /// the reason is sent to the client.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 400: the request is not a well-formed WebSocket upgrade (see
    /// [`UpgradeRequest::check_handshake`]); says what is wrong.
    #[error("not a WebSocket upgrade request: {0}")]
    BadHandshake(&'static str),
    /// 426 (with `Sec-WebSocket-Version: 13`): the client asked for a WebSocket version other
    /// than 13, the only one there is (RFC 6455 §4.4).
    #[error("unsupported WebSocket version: only 13 is supported")]
    UnsupportedWebSocketVersion,
}

impl Refusal {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::ShuttingDown
            | Refusal::TooManyConnections
            | Refusal::TooManyNotLoggedIn
            | Refusal::TooManyPending => 503,
            Refusal::TooManyFromAddress
            | Refusal::TooManyNotLoggedInFromAddress
            | Refusal::TooManyForUser
            | Refusal::TooManyPendingFromAddress => 429,
            Refusal::MissingOrigin | Refusal::OriginNotAllowed | Refusal::Forbidden(_) => 403,
            Refusal::Unauthorized(_) => 401,
            Refusal::BadHandshake(_) => 400,
            Refusal::UnsupportedWebSocketVersion => 426,
        }
    }

    /// Extra response headers (a 401 must name an authentication scheme, a 426 the WebSocket
    /// version the server speaks).
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Refusal::Unauthorized(_) => &[("www-authenticate", "Bearer")],
            Refusal::UnsupportedWebSocketVersion => &[("sec-websocket-version", "13")],
            _ => &[],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection slots
// ---------------------------------------------------------------------------------------------

/// The per-address counting key: an IPv4 address, or the /64 prefix of an IPv6 one (a single
/// host usually holds a whole /64, so counting single IPv6 addresses would cap nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum AddressKey {
    V4(u32),
    V6Prefix(u64),
}

impl AddressKey {
    fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(u32::from(v4)),
                None => {
                    let [a, b, c, d, ..] = v6.segments();
                    AddressKey::V6Prefix(
                        (u64::from(a) << 48)
                            | (u64::from(b) << 32)
                            | (u64::from(c) << 16)
                            | u64::from(d),
                    )
                }
            },
        }
    }
}

/// Which cap of a [`Pool`] is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// The cap over all keys.
    Total,
    /// The cap of one key (an address, a user).
    PerKey,
}

#[derive(Debug)]
struct Counts<K> {
    total: usize,
    per_key: HashMap<K, usize>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts {
            total: 0,
            per_key: HashMap::new(),
        }
    }
}

/// Counted slots of one kind (connections, pending requests, connections not logged in, the
/// connections of one user): how many are taken, in all and per key. A slot is given back when
/// its [`Permit`] drops, however the holder ends.
#[derive(Debug)]
pub(super) struct Pool<K> {
    counts: Mutex<Counts<K>>,
}

impl<K> Default for Pool<K> {
    fn default() -> Self {
        Pool {
            counts: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash + Clone> Pool<K> {
    fn lock(&self) -> MutexGuard<'_, Counts<K>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for `key` (uncounted per key when `None`), or says which cap is full
    /// (`None` caps never refuse).
    pub(super) fn acquire(
        self: &Arc<Self>,
        key: Option<K>,
        total: Option<usize>,
        per_key: Option<usize>,
    ) -> Result<Permit<K>, Full> {
        let mut counts = self.lock();
        if total.is_some_and(|max| counts.total >= max) {
            return Err(Full::Total);
        }
        if let (Some(key), Some(max)) = (&key, per_key) {
            if counts.per_key.get(key).copied().unwrap_or(0) >= max {
                return Err(Full::PerKey);
            }
        }
        counts.total += 1;
        if let Some(key) = &key {
            *counts.per_key.entry(key.clone()).or_insert(0) += 1;
        }
        Ok(Permit {
            pool: Arc::clone(self),
            key,
        })
    }

    pub(super) fn in_use(&self) -> usize {
        self.lock().total
    }
}

/// A taken slot of a [`Pool`]; dropping it (when the connection ends, its task panics or is
/// cancelled, or the upgrade fails) gives it back.
pub(super) struct Permit<K: Eq + Hash + Clone> {
    pool: Arc<Pool<K>>,
    key: Option<K>,
}

impl<K: Eq + Hash + Clone + fmt::Debug> fmt::Debug for Permit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("key", &self.key).finish()
    }
}

impl<K: Eq + Hash + Clone> Drop for Permit<K> {
    fn drop(&mut self) {
        let mut counts = self.pool.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(key) = &self.key {
            if let Some(n) = counts.per_key.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.per_key.remove(key);
                }
            }
        }
    }
}

/// The slot pools of one hub, one per phase of a connection's life.
#[derive(Debug, Default)]
pub(super) struct Slots {
    /// TCP connections accepted whose request has not been upgraded (or refused) yet.
    pending: Arc<Pool<AddressKey>>,
    /// Upgraded WebSocket connections (what `max_connections` caps).
    connections: Arc<Pool<AddressKey>>,
    /// Upgraded connections that have not logged in yet.
    not_logged_in: Arc<Pool<AddressKey>>,
    /// Connections per verified username (authenticator).
    per_user: Arc<Pool<Username>>,
}

impl Slots {
    /// A pending-request slot for a TCP connection from `ip`.
    pub(super) fn pending(
        &self,
        ip: Option<IpAddr>,
        config: &Config,
    ) -> Result<Permit<AddressKey>, Refusal> {
        self.pending
            .acquire(
                ip.map(AddressKey::of),
                config.max_pending_requests,
                config.max_pending_requests_per_ip,
            )
            .map_err(|full| match full {
                Full::Total => Refusal::TooManyPending,
                Full::PerKey => Refusal::TooManyPendingFromAddress,
            })
    }

    /// A connection slot and a not-logged-in slot for a client at `ip` (uncounted per address
    /// when unknown), or the refusal of the first full cap.
    pub(super) fn connection(
        &self,
        ip: Option<IpAddr>,
        config: &Config,
    ) -> Result<ConnectionPermits, Refusal> {
        let key = ip.map(AddressKey::of);
        let connection = self
            .connections
            .acquire(key, config.max_connections, config.max_connections_per_ip)
            .map_err(|full| match full {
                Full::Total => Refusal::TooManyConnections,
                Full::PerKey => Refusal::TooManyFromAddress,
            })?;
        let not_logged_in = self
            .not_logged_in
            .acquire(
                key,
                config.max_not_logged_in,
                config.max_not_logged_in_per_ip,
            )
            .map_err(|full| match full {
                Full::Total => Refusal::TooManyNotLoggedIn,
                Full::PerKey => Refusal::TooManyNotLoggedInFromAddress,
            })?;
        Ok(ConnectionPermits {
            connection,
            not_logged_in: Some(not_logged_in),
            user: None,
        })
    }

    /// A slot of the verified user `name`.
    pub(super) fn user(
        &self,
        name: &Username,
        config: &Config,
    ) -> Result<Permit<Username>, Refusal> {
        self.per_user
            .acquire(Some(name.clone()), None, config.max_connections_per_user)
            .map_err(|_| Refusal::TooManyForUser)
    }

    /// Connection slots taken (upgraded connections).
    pub(super) fn connections_in_use(&self) -> usize {
        self.connections.in_use()
    }

    /// Pending-request slots taken.
    pub(super) fn pending_in_use(&self) -> usize {
        self.pending.in_use()
    }

    /// Not-logged-in slots taken.
    pub(super) fn not_logged_in_in_use(&self) -> usize {
        self.not_logged_in.in_use()
    }
}

/// What an accepted connection holds for its life: its connection slot, its not-logged-in slot
/// until it logs in, and its user's slot when an authenticator verified it.
#[derive(Debug)]
pub(super) struct ConnectionPermits {
    pub(super) connection: Permit<AddressKey>,
    pub(super) not_logged_in: Option<Permit<AddressKey>>,
    pub(super) user: Option<Permit<Username>>,
}

/// A TCP connection whose HTTP request has not been upgraded or answered yet: it holds a
/// pending-request slot ([`Config::max_pending_requests`]) until it drops. Take one with
/// [`Hub::pending_request`](super::Hub::pending_request) right after `accept`.
#[must_use = "dropping a PendingRequest gives its slot back"]
#[derive(Debug)]
pub struct PendingRequest {
    pub(super) _permit: Permit<AddressKey>,
}

// ---------------------------------------------------------------------------------------------
// Admission
// ---------------------------------------------------------------------------------------------

/// An accepted upgrade request: a connection slot and what is known about the client (its
/// address, and the username an authenticator verified). Upgrade the socket, then hand both
/// to [`Hub::serve_admitted`](super::Hub::serve_admitted); dropping it instead gives the slot
/// back.
#[must_use = "dropping an Admission gives its connection slot back"]
#[derive(Debug)]
pub struct Admission {
    pub(super) info: ConnectionInfo,
    pub(super) permits: ConnectionPermits,
}

impl Admission {
    /// What the connection will start with.
    pub fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The username the authenticator bound the connection to, if any.
    pub fn verified_username(&self) -> Option<&Username> {
        self.info.verified_username.as_ref()
    }
}

/// Whether `origin` is in the allowlist: scheme, host and port compared case-insensitively,
/// a trailing `/` in either ignored.
pub(super) fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    let origin = origin.trim().trim_end_matches('/');
    allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// The client's address for the per-address cap.
///
/// Without [`Config::client_ip_header`]: the TCP peer's. With it and no
/// [`Config::trusted_proxies`]: the header's last entry when it parses, else the TCP peer's
/// (exactly one hop trusted). With both: walking `[header entries…, TCP peer]` from the right,
/// the first address outside the trusted ranges; the walk stops at an entry that does not
/// parse, and when it stops (or the list ends) on trusted hops only, the last address it
/// reached counts. Nothing a client sends makes it uncounted: every answer is an address some
/// hop saw, or the TCP peer's.
pub(super) fn client_ip(config: &Config, request: &UpgradeRequest) -> Option<IpAddr> {
    let peer = request.remote_addr.map(|a| a.ip().to_canonical());
    let Some(name) = config.client_ip_header.as_deref() else {
        return peer;
    };
    // Several headers of the name act as one comma-separated list; the last entry is the one
    // the nearest proxy added.
    let mut entries = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .rev();
    if config.trusted_proxies.is_empty() {
        let last = entries.next().and_then(|e| parse_ip(e.trim()));
        return last.or(peer);
    }
    let trusted = |ip: &IpAddr| config.trusted_proxies.iter().any(|net| net.contains(ip));
    // An unknown peer cannot be vouched for: its header is not read.
    let mut client = peer?;
    if !trusted(&client) {
        return Some(client);
    }
    for entry in entries {
        let Some(ip) = parse_ip(entry.trim()) else {
            break; // a trusted hop wrote something else than an address: stop at that hop
        };
        client = ip;
        if !trusted(&client) {
            break;
        }
    }
    Some(client)
}

/// The address a TCP connection's pending request counts against, before its headers are read:
/// the peer's, unless the peer is a reverse proxy (with [`Config::client_ip_header`] set: any
/// peer when no [`Config::trusted_proxies`] are listed, else a trusted one), whose requests
/// speak for many clients and count in the total only.
pub(super) fn pending_ip(config: &Config, peer: Option<IpAddr>) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let proxy = config.client_ip_header.is_some()
        && (config.trusted_proxies.is_empty()
            || config.trusted_proxies.iter().any(|net| net.contains(&peer)));
    (!proxy).then_some(peer)
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]:443` or
/// `192.0.2.1:443`.
/// IPv4-mapped IPv6 addresses come out as IPv4.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_percent_decoded() {
        let r = UpgradeRequest::new("/").with_query(Some("a=1&token=x%3Ay%2Bz+w&b&c=%zz"));
        assert_eq!(r.query_param("token").as_deref(), Some("x:y+z w"));
        assert_eq!(r.query_param("a").as_deref(), Some("1"));
        assert_eq!(r.query_param("b").as_deref(), Some(""));
        assert_eq!(r.query_param("c").as_deref(), Some("%zz"));
        assert_eq!(r.query_param("d"), None);
        assert_eq!(UpgradeRequest::new("/").query_param("a"), None);
    }

    #[test]
    fn bearer_token() {
        let with = |v: &str| UpgradeRequest::new("/").with_header("Authorization", v);
        assert_eq!(with("Bearer abc").bearer_token(), Some("abc"));
        assert_eq!(with("bearer  abc ").bearer_token(), Some("abc"));
        assert_eq!(with("Basic abc").bearer_token(), None);
        assert_eq!(with("Bearer ").bearer_token(), None);
    }

    #[test]
    fn debug_hides_credentials() {
        let r = UpgradeRequest::new("/ws")
            .with_query(Some("token=secret1"))
            .with_header("Authorization", "Bearer secret2");
        let debug = format!("{r:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("authorization"), "{debug}");
    }

    #[test]
    fn origins_compare_without_case_or_trailing_slash() {
        let allowed = vec!["https://App.example.com/".to_string()];
        assert!(origin_allowed(&allowed, "https://app.example.com"));
        assert!(!origin_allowed(&allowed, "http://app.example.com"));
        assert!(!origin_allowed(
            &allowed,
            "https://app.example.com.evil.net"
        ));
        assert!(!origin_allowed(&allowed, "null"));
    }

    #[test]
    fn client_ip_from_the_last_forwarded_entry() {
        let config = Config::default().with_client_ip_header(Some("X-Forwarded-For"));
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let r = UpgradeRequest::new("/")
            .with_remote_addr(Some(peer))
            .with_header("x-forwarded-for", "203.0.113.9, 198.51.100.7");
        assert_eq!(
            client_ip(&config, &r),
            Some("198.51.100.7".parse().unwrap())
        );
        let r = r.with_header("X-Forwarded-For", "[2001:db8::1]:443");
        assert_eq!(client_ip(&config, &r), Some("2001:db8::1".parse().unwrap()));
        // Absent or garbage: the TCP peer.
        let bare = UpgradeRequest::new("/").with_remote_addr(Some(peer));
        assert_eq!(client_ip(&config, &bare), Some(peer.ip()));
        let garbage = bare.clone().with_header("x-forwarded-for", "unknown");
        assert_eq!(client_ip(&config, &garbage), Some(peer.ip()));
        // Not configured: the header is ignored (clients could forge it).
        let r = bare.with_header("x-forwarded-for", "203.0.113.9");
        assert_eq!(client_ip(&Config::default(), &r), Some(peer.ip()));
    }

    /// `X-Forwarded-For` with the given trusted ranges.
    fn behind(proxies: &[&str]) -> Config {
        Config::default()
            .with_client_ip_header(Some("X-Forwarded-For"))
            .with_trusted_proxies(proxies.iter().map(|p| p.parse().unwrap()))
    }

    /// A request from TCP peer `peer` carrying `X-Forwarded-For: xff`.
    fn via(peer: &str, xff: &str) -> UpgradeRequest {
        let peer: IpAddr = peer.parse().unwrap();
        UpgradeRequest::new("/")
            .with_remote_addr(Some(SocketAddr::new(peer, 5000)))
            .with_header("X-Forwarded-For", xff)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    // Client 198.51.100.7 → CDN edge 203.0.113.5 (range 203.0.113.0/24) → nginx 10.0.0.2 →
    // the server. nginx appends the CDN edge, the CDN appended the client.
    const CDN_NGINX: &[&str] = &["203.0.113.0/24", "10.0.0.0/8"];

    #[test]
    fn trusted_chain_picks_the_real_client() {
        let config = behind(CDN_NGINX);
        let r = via("10.0.0.2", "198.51.100.7, 203.0.113.5");
        assert_eq!(client_ip(&config, &r), ip("198.51.100.7"));
        // Two headers act as one list.
        let r = via("10.0.0.2", "198.51.100.7").with_header("x-forwarded-for", "203.0.113.5");
        assert_eq!(client_ip(&config, &r), ip("198.51.100.7"));
        // A nearer client (reaching nginx directly, not through the CDN).
        let r = via("10.0.0.2", "192.0.2.44");
        assert_eq!(client_ip(&config, &r), ip("192.0.2.44"));
    }

    #[test]
    fn forged_left_entries_are_ignored() {
        let config = behind(CDN_NGINX);
        // The client sent `X-Forwarded-For: 1.2.3.4, 10.0.0.9` itself; the proxies appended.
        let r = via("10.0.0.2", "1.2.3.4, 10.0.0.9, 198.51.100.7, 203.0.113.5");
        assert_eq!(client_ip(&config, &r), ip("198.51.100.7"));
    }

    #[test]
    fn a_direct_untrusted_peer_is_counted_by_its_own_address() {
        let config = behind(CDN_NGINX);
        let r = via("198.51.100.7", "192.0.2.1, 10.0.0.2");
        assert_eq!(client_ip(&config, &r), ip("198.51.100.7"));
        // An unknown peer cannot be vouched for: its header is not read.
        let r = UpgradeRequest::new("/").with_header("X-Forwarded-For", "192.0.2.1");
        assert_eq!(client_ip(&config, &r), None);
    }

    #[test]
    fn ipv6_ranges_and_mapped_peers() {
        let config = behind(&["2001:db8:cd::/48", "fd00::/8", "127.0.0.0/8"]);
        let r = via("fd00::2", "2001:db8:1:2::77, [2001:db8:cd::5]:443");
        assert_eq!(client_ip(&config, &r), ip("2001:db8:1:2::77"));
        let r = via("fd00::2", "2001:db8:ce::1");
        assert_eq!(client_ip(&config, &r), ip("2001:db8:ce::1"));
        // A dual-stack listener sees IPv4 peers as mapped IPv6: they match IPv4 ranges, and
        // mapped entries come out as IPv4.
        let r = via("::ffff:127.0.0.1", "::ffff:192.0.2.9");
        assert_eq!(client_ip(&config, &r), ip("192.0.2.9"));
    }

    #[test]
    fn an_all_trusted_chain_counts_its_leftmost_entry() {
        let config = behind(CDN_NGINX);
        let r = via("10.0.0.2", "10.1.1.1, 203.0.113.5");
        assert_eq!(client_ip(&config, &r), ip("10.1.1.1"));
        // No header at all: the (trusted) peer itself.
        let r = UpgradeRequest::new("/").with_remote_addr(Some("10.0.0.2:1".parse().unwrap()));
        assert_eq!(client_ip(&config, &r), ip("10.0.0.2"));
    }

    #[test]
    fn garbage_entries_stop_the_walk_at_the_last_trusted_hop() {
        let config = behind(CDN_NGINX);
        for garbage in [
            "unknown",
            "",
            " ",
            "999.1.1.1",
            "_hidden",
            "1.2.3.4/8",
            "\u{0}",
        ] {
            // Garbage the nearest proxy wrote: the proxy itself counts.
            let r = via("10.0.0.2", garbage);
            assert_eq!(client_ip(&config, &r), ip("10.0.0.2"), "{garbage:?}");
            // Garbage behind the CDN: the CDN edge counts.
            let r = via("10.0.0.2", &format!("198.51.100.7, {garbage}, 203.0.113.5"));
            assert_eq!(client_ip(&config, &r), ip("203.0.113.5"), "{garbage:?}");
            // Garbage left of the real client is never reached.
            let r = via("10.0.0.2", &format!("{garbage}, 198.51.100.7, 203.0.113.5"));
            assert_eq!(client_ip(&config, &r), ip("198.51.100.7"), "{garbage:?}");
        }
        let long = vec!["10.9.9.9"; 2000].join(",");
        assert_eq!(client_ip(&config, &via("10.0.0.2", &long)), ip("10.9.9.9"));
        // A trailing comma is an empty entry written by the nearest proxy.
        let trailing = "198.51.100.7,";
        assert_eq!(
            client_ip(&config, &via("10.0.0.2", trailing)),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn without_trusted_proxies_the_last_entry_is_trusted_whoever_sends_it() {
        let config = behind(&[]);
        let r = via("198.51.100.7", "192.0.2.1, 203.0.113.5");
        assert_eq!(client_ip(&config, &r), ip("203.0.113.5"));
    }

    fn handshake() -> UpgradeRequest {
        UpgradeRequest::new("/ws")
            .with_http_version(Some((1, 1)))
            .with_header("Connection", "Upgrade")
            .with_header("Upgrade", "websocket")
            .with_header("Sec-WebSocket-Version", "13")
    }

    #[test]
    fn handshake_keys_must_be_base64_of_16_bytes() {
        let with_key = |key: &str| handshake().with_header("Sec-WebSocket-Key", key);
        for good in [
            "dGhlIHNhbXBsZSBub25jZQ==",
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "/////////////////////w==",
            " x3JJHMbDL1EzLkh9GBhXDw== ",
        ] {
            assert_eq!(with_key(good).check_handshake(), Ok(()), "{good:?}");
        }
        let four_kb = "A".repeat(4096);
        for bad in [
            "",
            "not base64 not base64!!",
            "dGhlIHNhbXBsZSBub25jZQ",       // no padding
            "dGhlIHNhbXBsZSBub25jZR==",     // non-zero trailing bits
            "AAAAAAAAAAAAAAAAAAAA",         // 15 bytes
            "AAAAAAAAAAAAAAAAAAAAAAA=",     // 17 bytes
            "AAAAAAAAAAAAAAAAAAAAAAAAAA==", // 19 bytes
            "dGhlIHNhbXBsZSBub25jZQ==x",
            "dGhlIHNhbXBsZSBub25jZ-==",
            "d\u{e9}hlIHNhbXBsZSBub25jZQ=",
            &four_kb,
        ] {
            let refusal = with_key(bad).check_handshake().unwrap_err();
            assert_eq!(refusal.status(), 400, "{bad:?}");
        }
        assert_eq!(handshake().check_handshake().unwrap_err().status(), 400);
        let twice = with_key("dGhlIHNhbXBsZSBub25jZQ==")
            .with_header("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(twice.check_handshake().unwrap_err().status(), 400);
    }

    #[test]
    fn handshake_versions() {
        let key =
            |r: UpgradeRequest| r.with_header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        let mut no_version = key(handshake());
        no_version
            .headers
            .retain(|(n, _)| n != "sec-websocket-version");
        let refusal = no_version.check_handshake().unwrap_err();
        assert_eq!((refusal.status(), refusal.headers()), (400, &[][..]));
        for wrong in ["8", "", "13, 8", "thirteen"] {
            let mut r = no_version
                .clone()
                .with_header("Sec-WebSocket-Version", wrong);
            let refusal = r.check_handshake().unwrap_err();
            assert_eq!(refusal, Refusal::UnsupportedWebSocketVersion, "{wrong:?}");
            assert_eq!(refusal.status(), 426);
            assert_eq!(refusal.headers(), &[("sec-websocket-version", "13")]);
            r = r.with_header("Sec-WebSocket-Version", "13");
            assert_eq!(
                r.check_handshake().unwrap_err().status(),
                426,
                "two versions"
            );
        }
        for http in [(1, 0), (0, 9)] {
            let r = key(handshake()).with_http_version(Some(http));
            assert_eq!(r.check_handshake().unwrap_err().status(), 400, "{http:?}");
        }
        for http in [Some((1, 1)), Some((2, 0)), None] {
            let r = key(handshake()).with_http_version(http);
            assert_eq!(r.check_handshake(), Ok(()), "{http:?}");
        }
        let mut no_upgrade = key(handshake());
        no_upgrade.headers.retain(|(n, _)| n != "upgrade");
        assert_eq!(no_upgrade.check_handshake().unwrap_err().status(), 400);
        let mut no_connection = key(handshake());
        no_connection.headers.retain(|(n, _)| n != "connection");
        assert_eq!(no_connection.check_handshake().unwrap_err().status(), 400);
    }

    #[test]
    fn pools_cap_in_all_and_per_key_and_come_back_on_drop() {
        let pool = Arc::new(Pool::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "::ffff:192.0.2.2".parse().unwrap();
        let take = |ip: Option<IpAddr>| pool.acquire(ip.map(AddressKey::of), Some(3), Some(2));
        let a1 = take(Some(a)).unwrap();
        let _a2 = take(Some(a)).unwrap();
        assert_eq!(take(Some(a)).unwrap_err(), Full::PerKey);
        let _b1 = take(Some(b)).unwrap();
        assert_eq!(take(None).unwrap_err(), Full::Total);
        drop(a1);
        assert_eq!(pool.in_use(), 2);
        let _a3 = take(Some(a)).unwrap();
        assert_eq!(pool.in_use(), 3);
    }

    #[test]
    fn a_connection_takes_a_not_logged_in_slot_too() {
        let config = Config::default()
            .with_max_connections(Some(10))
            .with_max_not_logged_in(Some(2), Some(1));
        let slots = Slots::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut first = slots.connection(Some(a), &config).unwrap();
        assert_eq!(
            slots.connection(Some(a), &config).unwrap_err(),
            Refusal::TooManyNotLoggedInFromAddress
        );
        // The refused attempt gave its connection slot back.
        assert_eq!(slots.connections_in_use(), 1);
        let _second = slots.connection(Some(b), &config).unwrap();
        assert_eq!(
            slots.connection(None, &config).unwrap_err(),
            Refusal::TooManyNotLoggedIn
        );
        // Logging in gives the not-logged-in slot back, not the connection slot.
        first.not_logged_in = None;
        assert_eq!(slots.not_logged_in_in_use(), 1);
        assert_eq!(slots.connections_in_use(), 2);
        let _third = slots.connection(Some(a), &config).unwrap();
    }

    #[test]
    fn users_and_pending_requests_are_capped() {
        let config = Config::default()
            .with_max_connections_per_user(Some(2))
            .with_max_pending_requests(Some(3), Some(2));
        let slots = Slots::default();
        let mallory = Username::new("mallory").unwrap();
        let _m1 = slots.user(&mallory, &config).unwrap();
        let _m2 = slots.user(&mallory, &config).unwrap();
        assert_eq!(
            slots.user(&mallory, &config).unwrap_err(),
            Refusal::TooManyForUser
        );
        let _alice = slots
            .user(&Username::new("alice").unwrap(), &config)
            .unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let _p1 = slots.pending(Some(ip), &config).unwrap();
        let p2 = slots.pending(Some(ip), &config).unwrap();
        assert_eq!(
            slots.pending(Some(ip), &config).unwrap_err(),
            Refusal::TooManyPendingFromAddress
        );
        let _p3 = slots.pending(None, &config).unwrap();
        assert_eq!(
            slots.pending(None, &config).unwrap_err(),
            Refusal::TooManyPending
        );
        drop(p2);
        assert_eq!(slots.pending_in_use(), 2);
    }

    #[test]
    fn ipv6_counts_per_64_prefix_and_mapped_v4_as_v4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::of(one), AddressKey::of(two));
        assert_ne!(AddressKey::of(one), AddressKey::of(other));
        assert_eq!(
            AddressKey::of("::ffff:10.0.0.1".parse().unwrap()),
            AddressKey::of("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn pending_requests_from_a_proxy_count_in_the_total_only() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(pending_ip(&Config::default(), Some(peer)), Some(peer));
        let behind_one = Config::default().with_client_ip_header(Some("X-Forwarded-For"));
        assert_eq!(pending_ip(&behind_one, Some(peer)), None);
        let trusting = behind_one.with_trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(pending_ip(&trusting, Some(peer)), None);
        assert_eq!(pending_ip(&trusting, Some(client)), Some(client));
        assert_eq!(pending_ip(&trusting, None), None);
    }

    #[test]
    fn off_caps_count_but_never_refuse() {
        let pool = Arc::new(Pool::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let permits: Vec<_> = (0..1000)
            .map(|_| pool.acquire(Some(AddressKey::of(ip)), None, None).unwrap())
            .collect();
        assert_eq!(pool.in_use(), 1000);
        drop(permits);
        assert_eq!(pool.in_use(), 0);
        assert!(pool.lock().per_key.is_empty());
    }
}
