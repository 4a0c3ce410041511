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

use super::{Config, Peer};
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
        }
    }

    /// Extra response headers (a 401 must name an authentication scheme).
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Refusal::Unauthorized(_) => &[("www-authenticate", "Bearer")],
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
    pub(super) peer: Peer,
    pub(super) permits: ConnectionPermits,
}

impl Admission {
    /// What the connection will start with.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The username the authenticator bound the connection to, if any.
    pub fn verified_username(&self) -> Option<&Username> {
        self.peer.verified_username.as_ref()
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

/// The client's address for the per-address cap: the last entry of
/// [`Config::client_ip_header`] when it is set and parses, else the TCP peer's.
pub(super) fn client_ip(config: &Config, request: &UpgradeRequest) -> Option<IpAddr> {
    let forwarded = config.client_ip_header.as_deref().and_then(|name| {
        // Several headers of the name act as one comma-separated list; the last entry is the
        // one the nearest proxy added.
        let last = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .next_back()?;
        parse_ip(last.trim())
    });
    forwarded.or(request.remote_addr.map(|a| a.ip()))
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]:443` or
/// `192.0.2.1:443`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
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
