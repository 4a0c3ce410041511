//! Target validation (loopback only) and the spreading of client source
//! addresses over `127.0.0.0/8`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio_tungstenite::tungstenite::http::Uri;

/// A `ws://` URL whose host resolved to loopback addresses only.
#[derive(Debug, Clone)]
pub struct LoopbackTarget {
    /// The URL as given, used for the handshake's request line and `Host`.
    pub url: String,
    /// The loopback address the TCP connections go to.
    pub addr: SocketAddr,
}

/// Parses `url`, resolves its host and refuses anything that is not loopback.
///
/// Only `ws://` is accepted (the tools have no TLS). Every address the host
/// resolves to must be loopback (`127.0.0.0/8` or `::1`); a name that resolves
/// to any other address is refused rather than filtered, so that a typo can
/// never send load off the machine.
pub async fn resolve(url: &str) -> Result<LoopbackTarget, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("ws") {
        return Err(format!("only ws:// URLs are supported, got {url:?}"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("url {url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host:?} resolved to no address"));
    }
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "refusing non-loopback target {url:?} ({} resolves to {bad})",
            host
        ));
    }
    // Prefer IPv4 so that source addresses can be spread over 127.0.0.0/8.
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .copied()
        .unwrap_or(addrs[0]);
    Ok(LoopbackTarget {
        url: url.to_owned(),
        addr,
    })
}

/// Hands out client source addresses in `127.0.0.0/8`, `per_ip` connections
/// to each, so that tens of thousands of connections never exhaust the
/// ephemeral ports of one source address (nor collide with `TIME_WAIT`
/// sockets left by the previous run, thanks to a per-run random start).
#[derive(Debug, Clone, Copy)]
pub struct SourceAddrs {
    first: u32,
    per_ip: usize,
}

/// How many addresses of `127.0.0.0/8` the spreading cycles through
/// (127.0.0.2 upwards; `127.0.0.1` is left to the server).
const SOURCE_POOL: u32 = 1 << 20;

impl SourceAddrs {
    /// `per_ip` connections per source address, starting at an offset derived
    /// from `seed` (for example the process id and the time).
    pub fn new(per_ip: usize, seed: u64) -> Self {
        Self {
            first: (seed % u64::from(SOURCE_POOL)) as u32,
            per_ip: per_ip.max(1),
        }
    }

    /// The source address for the connection numbered `index`, or `None` when
    /// the target is not IPv4 (then the kernel chooses).
    pub fn for_index(&self, target: &SocketAddr, index: usize) -> Option<SocketAddr> {
        if !target.is_ipv4() {
            return None;
        }
        let slot = (self.first as u64 + (index / self.per_ip) as u64) % u64::from(SOURCE_POOL);
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + slot as u32);
        Some(SocketAddr::new(IpAddr::V4(ip), 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_non_loopback_and_non_ws() {
        assert!(resolve("ws://10.0.0.1:80/").await.is_err());
        assert!(resolve("ws://192.168.1.2:80/").await.is_err());
        assert!(resolve("wss://127.0.0.1:80/").await.is_err());
        assert!(resolve("http://127.0.0.1:80/").await.is_err());
        let ok = resolve("ws://127.0.0.1:18080/").await.unwrap();
        assert_eq!(ok.addr, "127.0.0.1:18080".parse().unwrap());
        let v6 = resolve("ws://[::1]:18080/").await.unwrap();
        assert!(v6.addr.ip().is_loopback());
    }

    #[test]
    fn source_addresses_stay_in_loopback() {
        let target: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let s = SourceAddrs::new(1000, u64::MAX);
        for i in [0, 999, 1000, 5_000_000] {
            let a = s.for_index(&target, i).unwrap();
            assert!(a.ip().is_loopback(), "{a}");
            assert_ne!(a.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        assert_eq!(s.for_index(&target, 0), s.for_index(&target, 999));
        assert_ne!(s.for_index(&target, 0), s.for_index(&target, 1000));
        assert!(s.for_index(&"[::1]:1".parse().unwrap(), 0).is_none());
    }
}
