//! Clients below the WebSocket library: a hand-written upgrade request (to see the server's
//! HTTP answer to a refused upgrade, from a chosen source address) and hand-built frames (to
//! send what a well-behaved library never would).

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{Client, patiently};

/// The server's HTTP answer to an upgrade request it refused.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl HttpAnswer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the server answered an upgrade request.
pub enum Upgrade {
    /// `101 Switching Protocols`: a live WebSocket client.
    Accepted(Box<Client>),
    /// Any other status.
    Refused(HttpAnswer),
    /// The connection ended without an answer.
    Dropped,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upgrade::Accepted(_) => f.write_str("Accepted"),
            Upgrade::Refused(answer) => write!(f, "Refused({answer:?})"),
            Upgrade::Dropped => f.write_str("Dropped"),
        }
    }
}

impl Upgrade {
    /// The client; panics if the upgrade was refused.
    pub fn accepted(self) -> Client {
        match self {
            Upgrade::Accepted(c) => *c,
            other => panic!("expected the upgrade to be accepted, got {other:?}"),
        }
    }

    /// The answer; panics if the upgrade was accepted or dropped.
    pub fn refused(self) -> HttpAnswer {
        match self {
            Upgrade::Refused(answer) => answer,
            other => panic!("expected the upgrade to be refused, got {other:?}"),
        }
    }
}

/// An upgrade request for `url` (`ws://host:port/path?query`) with extra headers, from
/// `source` (a loopback address such as 127.0.0.2; `None`: the default).
pub async fn upgrade(url: &str, headers: &[(&str, &str)], source: Option<IpAddr>) -> Upgrade {
    let answer = request(url, &upgrade_head(url, headers), source).await;
    read_answer(answer).await
}

/// The request head [`upgrade`] sends: a valid upgrade request for `url`, then `headers`.
pub fn upgrade_head(url: &str, headers: &[(&str, &str)]) -> String {
    let (addr, target) = split_url(url);
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Sends `head` (a whole request head, as written) to `url`'s host and reads the answer.
pub async fn send_head(url: &str, head: &str) -> Upgrade {
    read_answer(request(url, head, None).await).await
}

async fn read_answer(answer: Option<(TcpStream, String, Vec<u8>)>) -> Upgrade {
    let Some((mut tcp, head, tail)) = answer else {
        return Upgrade::Dropped;
    };
    let (status, response_headers) = parse_head(&head);
    if status == 101 {
        let ws = WebSocketStream::from_partially_read(
            MaybeTlsStream::Plain(tcp),
            tail,
            Role::Client,
            None,
        )
        .await;
        return Upgrade::Accepted(Box::new(Client { ws }));
    }
    // The body: Content-Length bytes, or what comes until the server closes.
    let length = response_headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = tail;
    patiently("the refusal's body", async {
        let mut chunk = [0u8; 1024];
        while length.is_none_or(|len| body.len() < len) {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    Upgrade::Refused(HttpAnswer {
        status,
        headers: response_headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// An accepted upgrade's bare TCP stream, for hand-built frames; panics if refused.
pub async fn upgraded_tcp(url: &str) -> TcpStream {
    let (tcp, head, tail) = request(url, &upgrade_head(url, &[]), None)
        .await
        .expect("an answer to the upgrade");
    assert_eq!(parse_head(&head).0, 101, "upgrade refused: {head}");
    assert!(tail.is_empty(), "the server spoke first");
    tcp
}

/// A TCP connection to `url`'s host, from `source` when given.
pub async fn tcp_connect(url: &str, source: Option<IpAddr>) -> TcpStream {
    let (addr, _) = split_url(url);
    patiently("tcp connect", async {
        match source {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await
            }
        }
    })
    .await
    .expect("tcp connect")
}

/// Whether this machine lets a socket bind `ip` (127.0.0.2 works on Linux, not everywhere).
pub fn can_bind(ip: IpAddr) -> bool {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Sends the request; the response head and the bytes read after it, or `None` when the
/// connection ended first.
async fn request(
    url: &str,
    request: &str,
    source: Option<IpAddr>,
) -> Option<(TcpStream, String, Vec<u8>)> {
    let mut tcp = tcp_connect(url, source).await;
    patiently("send the request", tcp.write_all(request.as_bytes()))
        .await
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    patiently("the response head", async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let tail = buf.split_off(end + 4);
                let head = String::from_utf8_lossy(&buf).into_owned();
                return Some((tcp, head, tail));
            }
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

/// `ws://127.0.0.1:1234/a/b?c` → (`127.0.0.1:1234`, `/a/b?c`); `wss://` too (these clients
/// then speak plain TCP to a TLS port, as the TLS scenarios want).
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .expect("a ws:// or wss:// url");
    let (host, target) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let target = if target.starts_with('?') {
        format!("/{target}")
    } else {
        target
    };
    (host.parse().expect("an ip:port host"), target)
}

/// The status and the headers (lowercase names) of a response head.
fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// One WebSocket frame with FIN set; masked as a client must, or not.
pub fn frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    assert!(payload.len() < 126, "short frames only");
    let mut out = vec![0x80 | opcode];
    let len = u8::try_from(payload.len()).expect("short");
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.push(0x80 | len);
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.push(len);
        out.extend_from_slice(payload);
    }
    out
}

/// Reads until the server ends the connection (what comes before is ignored).
pub async fn expect_hang_up(tcp: &mut TcpStream) {
    patiently("the server to end the connection", async {
        let mut chunk = [0u8; 1024];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}
