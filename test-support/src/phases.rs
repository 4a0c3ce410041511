//! Scenarios of issue 9's findings 3, 4 and 7: every phase of a connection is bounded in time
//! (request head, idle keep-alive, shutdown) and in count (requests being read, connections
//! not logged in, connections per verified user), and control frames are rate-limited.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use signaling_core::driver::auth::HmacTokenAuthenticator;
use signaling_core::{RateLimit, RouterConfig, Username};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::{Client, Start, patiently, quiet_config, raw};

/// Reads until the server ends the connection and returns what it sent first.
pub(crate) async fn answer_then_hang_up(tcp: &mut TcpStream) -> Vec<u8> {
    patiently("the server to end the connection", async {
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

/// Polls `check` until it holds (hang protection only).
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    patiently(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Finding 3: a connection that sends nothing, one that dribbles its request head a byte at a
/// time, and an idle keep-alive connection after one request are all closed by the server
/// (the head timeout is 1 s here); a shutdown finishes while a request head is half sent
/// (warp's own server waited for it, 90 s in the campaign).
pub async fn phase_timeouts(start: Start) {
    let server = start(quiet_config().with_handshake_timeout(Duration::from_secs(1))).await;

    let mut idle = raw::tcp_connect(&server.url, None).await;
    let said = answer_then_hang_up(&mut idle).await;
    assert!(
        said.is_empty() || said.starts_with(b"HTTP/1.1 408"),
        "{said:?}"
    );

    // 20 ms a byte: the whole head would take about 8 s.
    let head = raw::upgrade_head(&server.url, &[("X-Padding", &"p".repeat(300))]);
    let mut dribble = raw::tcp_connect(&server.url, None).await;
    let sent = patiently("the dribbled head to be cut", async {
        for (i, byte) in head.as_bytes().iter().enumerate() {
            if dribble.write_all(&[*byte]).await.is_err() {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        head.len()
    })
    .await;
    assert!(
        sent < head.len(),
        "the server waited for the whole dribbled head"
    );

    // One ordinary request, then silence on the kept-alive connection.
    let (addr, _) = server
        .url
        .strip_prefix("ws://")
        .and_then(|r| r.split_once('/'))
        .expect("ws://host:port/path");
    let mut keep_alive = raw::tcp_connect(&server.url, None).await;
    let request = format!("GET /not-here HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    keep_alive
        .write_all(request.as_bytes())
        .await
        .expect("request");
    let said = answer_then_hang_up(&mut keep_alive).await;
    assert!(
        said.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&said)
    );
    eventually("no request pending", || server.hub.pending_requests() == 0).await;
    server.hub.shutdown().await;

    // A long head timeout, a short shutdown timeout: the shutdown does not wait for the head.
    let config = quiet_config()
        .with_handshake_timeout(Duration::from_secs(120))
        .with_shutdown_timeout(Duration::from_secs(1));
    let server = start(config).await;
    let mut half = raw::tcp_connect(&server.url, None).await;
    half.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a head");
    eventually("the request to be pending", || {
        server.hub.pending_requests() == 1
    })
    .await;
    server.hub.shutdown().await;
    patiently("the server task to end", server.task)
        .await
        .expect("server task");
    eventually("the pending request to be dropped", || {
        server.hub.pending_requests() == 0
    })
    .await;
}

/// Findings 3 and 4: TCP connections whose request is still being read are capped (the next
/// one is closed unanswered, so idle sockets cannot use up the descriptors), and so are
/// upgraded connections that have not logged in (503, and 429 per address), each slot coming
/// back when the request is upgraded or the connection logs in.
pub async fn phase_caps(start: Start) {
    let config = quiet_config()
        .with_max_pending_requests(Some(3), None)
        .with_max_not_logged_in(Some(2), None)
        .with_handshake_timeout(Duration::from_secs(60));
    let server = start(config).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(raw::tcp_connect(&server.url, None).await);
    }
    eventually("three pending requests", || {
        server.hub.pending_requests() == 3
    })
    .await;
    let mut fourth = raw::tcp_connect(&server.url, None).await;
    let _ = fourth.write_all(b"GET /ws HTTP/1.1\r\n").await;
    assert!(answer_then_hang_up(&mut fourth).await.is_empty());
    drop(idle.pop());
    eventually("a pending slot to come back", || {
        server.hub.pending_requests() == 2
    })
    .await;

    // Upgraded: no longer pending, but not logged in.
    let mut first = Client::connect(&server.url).await;
    let _second = Client::connect(&server.url).await;
    assert_eq!(server.hub.not_logged_in_connections(), 2);
    assert_eq!(server.hub.pending_requests(), 2);
    let answer = raw::upgrade(&server.url, &[], None).await.refused();
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.body.contains("waiting to log in"), "{answer:?}");
    first
        .send(json!({"type": "login", "username": "first"}))
        .await;
    assert_eq!(first.recv().await["success"], true);
    eventually("the login to give its slot back", || {
        server.hub.not_logged_in_connections() == 1
    })
    .await;
    let _third = Client::connect(&server.url).await;
    drop(idle);
    server.hub.shutdown().await;

    // Per address: one connection waiting to log in from 127.0.0.1.
    let server = start(quiet_config().with_max_not_logged_in(None, Some(1))).await;
    let _waiting = Client::connect(&server.url).await;
    let answer = raw::upgrade(&server.url, &[], None).await.refused();
    assert_eq!(answer.status, 429, "{answer:?}");
    let other: IpAddr = "127.0.0.2".parse().expect("ip");
    if raw::can_bind(other) {
        let _elsewhere = raw::upgrade(&server.url, &[], Some(other)).await.accepted();
    }
    server.hub.shutdown().await;
}

/// Finding 4: one valid token cannot take every slot. With an authenticator, a verified user
/// holds at most `max_connections_per_user` connections (429 beyond); others still get in,
/// and the user's slot comes back when a connection ends.
pub async fn per_user_cap(start: Start) {
    const SECRET: &str = "another test secret, long enough";
    let auth = HmacTokenAuthenticator::new(SECRET).expect("secret");
    let far = std::time::SystemTime::now() + Duration::from_secs(3600);
    let token = |name: &str| auth.mint(&Username::new(name).expect("name"), far);
    let (mallory, alice) = (token("mallory"), token("alice"));
    let server = start(
        quiet_config()
            .with_authenticator(auth)
            .with_max_connections_per_user(Some(2)),
    )
    .await;
    let url = |token: &str| format!("{}?token={}", server.url, token.replace(':', "%3A"));
    let m1 = raw::upgrade(&url(&mallory), &[], None).await.accepted();
    let _m2 = raw::upgrade(&url(&mallory), &[], None).await.accepted();
    let answer = raw::upgrade(&url(&mallory), &[], None).await.refused();
    assert_eq!(answer.status, 429, "{answer:?}");
    assert!(
        answer.body.contains("too many connections for this user"),
        "{answer:?}"
    );
    let mut a = raw::upgrade(&url(&alice), &[], None).await.accepted();
    a.send(json!({"type": "login", "username": "alice"})).await;
    assert_eq!(a.recv().await["success"], true);
    drop(m1);
    patiently("mallory's slot to come back", async {
        loop {
            match raw::upgrade(&url(&mallory), &[], None).await {
                raw::Upgrade::Accepted(c) => return c,
                raw::Upgrade::Refused(answer) => assert_eq!(answer.status, 429),
                raw::Upgrade::Dropped => panic!("dropped"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.hub.shutdown().await;
}

/// Finding 7: pings and pongs count against the rate limit like any frame. A client that
/// floods them (400 here, against 10/s, bursts of 100 and 50 strikes: the default limit
/// refills too fast to be outpaced reliably on a loaded machine) is answered with
/// `rate_limited` and then closed with 1008; before issue 9 they were free.
pub async fn control_frame_flood(start: Start) {
    let limit = RateLimit {
        per_second: 10,
        burst: 100,
        max_strikes: 50,
    };
    // Time for the flooding client to read the close frame and answer it.
    let config = quiet_config()
        .with_close_timeout(Duration::from_secs(5))
        .with_router(RouterConfig::default().with_rate_limit(Some(limit)));
    let server = start(config).await;
    let mut flooder = Client::login(&server.url, "flooder").await;
    let (mut tx, mut rx) = flooder.ws.split();
    let flood = async {
        for n in 0..400u32 {
            let frame = if n % 2 == 0 {
                Message::Ping(n.to_be_bytes().to_vec().into())
            } else {
                Message::Pong(n.to_be_bytes().to_vec().into())
            };
            if tx.send(frame).await.is_err() {
                break; // closed by the server
            }
        }
    };
    let verdict = async {
        let mut rate_limited = 0;
        loop {
            match patiently("the server's verdict", rx.next()).await {
                Some(Ok(Message::Text(t))) => {
                    assert!(t.contains("rate_limited"), "{t}");
                    rate_limited += 1;
                }
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (Some(u16::from(frame.code)), rate_limited);
                }
                // The server closes while the client still floods: a reset can overtake the
                // close frame in the client's receive buffer.
                Some(Err(_)) | None => return (None, rate_limited),
                Some(Ok(_)) => {}
            }
        }
    };
    let ((), (code, rate_limited)) = tokio::join!(flood, verdict);
    // (A reset, rarely, also discards the errors waiting in the client's buffer.)
    if let Some(code) = code {
        assert_eq!(code, 1008);
        assert!(rate_limited > 0);
    }
    // Closed either way: the flooder is gone from the router.
    patiently("the flooder to be gone", async {
        while server
            .hub
            .with_router(|r| r.connection_of("flooder").is_some())
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    flooder.ws = tx.reunite(rx).expect("same socket");
    server.hub.shutdown().await;
}
