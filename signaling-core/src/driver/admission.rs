//! Deciding on a WebSocket upgrade before it happens: the origin allowlist, the connection
//! caps and the [`Authenticator`](super::auth::Authenticator). Adapters build an
//! [`UpgradeRequest`] from the HTTP request, call [`Hub::admit`](super::Hub::admit), and either
//! answer with the [`Refusal`]'s HTTP status or upgrade and hand the socket and the
//! [`Admission`] to [`Hub::serve_admitted`](super::Hub::serve_admitted).

use std::collections::HashMap;
use std::fmt;
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
            Refusal::ShuttingDown | Refusal::TooManyConnections => 503,
            Refusal::TooManyFromAddress => 429,
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
enum AddressKey {
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

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<AddressKey, usize>,
}

/// The connection slots of one hub: how many are taken, in all and per address.
#[derive(Debug, Default)]
pub(super) struct Slots {
    counts: Mutex<Counts>,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for a client at `ip` (uncounted per address when unknown), or says which
    /// cap is full. The slot is given back when the [`Permit`] drops.
    pub(super) fn acquire(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        config: &Config,
    ) -> Result<Permit, Refusal> {
        let key = ip.map(AddressKey::of);
        let mut counts = self.lock();
        if config
            .max_connections
            .is_some_and(|max| counts.total >= max)
        {
            return Err(Refusal::TooManyConnections);
        }
        if let (Some(key), Some(max)) = (key, config.max_connections_per_ip) {
            if counts.per_address.get(&key).copied().unwrap_or(0) >= max {
                return Err(Refusal::TooManyFromAddress);
            }
        }
        counts.total += 1;
        if let Some(key) = key {
            *counts.per_address.entry(key).or_insert(0) += 1;
        }
        Ok(Permit {
            slots: Arc::clone(self),
            key,
        })
    }

    pub(super) fn in_use(&self) -> usize {
        self.lock().total
    }
}

/// A taken connection slot; dropping it (when the connection ends, its task panics or is
/// cancelled, or the upgrade fails) gives it back.
pub(super) struct Permit {
    slots: Arc<Slots>,
    key: Option<AddressKey>,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("key", &self.key).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.slots.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(key) = self.key {
            if let Some(n) = counts.per_address.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    counts.per_address.remove(&key);
                }
            }
        }
    }
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
    pub(super) permit: Permit,
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
    fn slots_cap_in_all_and_per_address_and_come_back_on_drop() {
        let config = Config::default()
            .with_max_connections(Some(3))
            .with_max_connections_per_ip(Some(2));
        let slots = Arc::new(Slots::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "::ffff:192.0.2.2".parse().unwrap();
        let a1 = slots.acquire(Some(a), &config).unwrap();
        let _a2 = slots.acquire(Some(a), &config).unwrap();
        assert_eq!(
            slots.acquire(Some(a), &config).unwrap_err(),
            Refusal::TooManyFromAddress
        );
        let _b1 = slots.acquire(Some(b), &config).unwrap();
        assert_eq!(
            slots.acquire(None, &config).unwrap_err(),
            Refusal::TooManyConnections
        );
        drop(a1);
        assert_eq!(slots.in_use(), 2);
        let _a3 = slots.acquire(Some(a), &config).unwrap();
        assert_eq!(slots.in_use(), 3);
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
        let config = Config::default()
            .with_max_connections(None)
            .with_max_connections_per_ip(None);
        let slots = Arc::new(Slots::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let permits: Vec<_> = (0..1000)
            .map(|_| slots.acquire(Some(ip), &config).unwrap())
            .collect();
        assert_eq!(slots.in_use(), 1000);
        drop(permits);
        assert_eq!(slots.in_use(), 0);
        assert!(slots.lock().per_address.is_empty());
    }
}
