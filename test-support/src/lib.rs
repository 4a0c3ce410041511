//! Loopback integration scenarios shared by the adapters' tests: each scenario is written once
//! here and run against every adapter (`signaling-ws/tests/loopback/`, `signaling-warp/tests/loopback/`, one test binary each),
//! with real tokio-tungstenite clients over 127.0.0.1 and servers bound to port 0.
//!
//! Timeouts are generous (they only turn a hang into a failure) and nothing asserts how fast
//! anything happens, so the scenarios hold on a loaded 2-core machine.
#![allow(clippy::missing_panics_doc)]

pub mod balancer;
mod hostile;
pub mod ops;
mod phases;
mod pressure;
pub mod raw;
mod sessions;
mod tls;

pub use hostile::*;
pub use ops::{health_checks, metrics_count_a_scripted_call};
pub use phases::*;
pub use pressure::*;
pub use sessions::*;
pub use tls::*;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use signaling_core::driver::{Config, Hub};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=signaling_core=debug`).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// How long any single wait may take before the test fails (hang protection only).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A server under test: its WebSocket URL, its hub, and the task serving it.
pub struct TestServer {
    /// `ws://127.0.0.1:PORT/path`, or `wss://…` for a TLS server (whose certificate the adapter
    /// registered with [`trust`]).
    pub url: String,
    /// The server's hub.
    pub hub: Hub,
    /// The serving task (the accept loop or the warp server).
    pub task: JoinHandle<()>,
    /// The other nodes of a cluster under test (empty for a single server): `url` reaches
    /// them all, `hub` is the first node's.
    pub other_nodes: Vec<Hub>,
}

impl TestServer {
    /// A single server at `url`.
    pub fn single(url: String, hub: Hub, task: JoinHandle<()>) -> TestServer {
        TestServer {
            url,
            hub,
            task,
            other_nodes: Vec::new(),
        }
    }

    /// Whether `f` holds for the router of some node.
    pub fn on_any_node(&self, f: impl Fn(&signaling_core::Router) -> bool) -> bool {
        std::iter::once(&self.hub)
            .chain(&self.other_nodes)
            .any(|hub| hub.with_router(&f))
    }

    /// Users logged in on every node.
    pub fn user_count(&self) -> usize {
        std::iter::once(&self.hub)
            .chain(&self.other_nodes)
            .map(|hub| hub.with_router(|r| r.user_count()))
            .sum()
    }
}

/// Starts a server with a config; each adapter's `tests/loopback/common.rs` provides one.
pub type Start = fn(Config) -> Pin<Box<dyn Future<Output = TestServer> + Send>>;

/// The defaults, with heartbeats and the login deadline off (scenarios that test them turn
/// them on) and a short wait for close replies (the scenarios' clients rarely read after the
/// server closes).
///
/// Every scenario client connects from 127.0.0.1, so the per-address caps of requests being read
/// and of connections not logged in yet are off too (`phase_caps` tests them); the per-address
/// connection cap stays at its default (`per_ip_connection_cap` tests it).
pub fn quiet_config() -> Config {
    let defaults = Config::default();
    Config::default()
        .with_ping_interval(None)
        .with_login_timeout(None)
        .with_max_pending_requests(defaults.max_pending_requests, None)
        .with_max_not_logged_in(defaults.max_not_logged_in, None)
        .with_close_timeout(Duration::from_millis(500))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A tutorial-protocol client.
pub struct Client {
    /// The socket.
    pub ws: Ws,
}

/// Fails the test if `fut` takes longer than [`PATIENCE`].
pub async fn patiently<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

impl Client {
    /// Connects to `url`: `ws://`, or `wss://` over rustls trusting the certificates given to
    /// [`trust`].
    pub async fn connect(url: &str) -> Client {
        let connector = url
            .starts_with("wss://")
            .then(|| tokio_tungstenite::Connector::Rustls(tls::client_config()));
        let connect = tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector);
        let (ws, _) = patiently("connect", connect).await.expect("connect");
        Client { ws }
    }

    /// Connects and logs in as `name`, asserting success.
    pub async fn login(url: &str, name: &str) -> Client {
        let mut c = Client::connect(url).await;
        c.send(json!({"type": "login", "username": name})).await;
        let reply = c.recv().await;
        assert_eq!(
            reply,
            json!({"type": "login", "success": true}),
            "login {name}"
        );
        c
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: String) {
        patiently("send", self.ws.send(Message::text(text)))
            .await
            .expect("send");
    }

    /// The next text frame, as text (pings and pongs skipped). Panics on close or error.
    pub async fn recv_text(&mut self) -> String {
        loop {
            let m = patiently("a message", self.ws.next()).await;
            match m {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next text frame, parsed.
    pub async fn recv(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).expect("server sent JSON")
    }

    /// Reads until the server's close frame and returns it (text frames before it are
    /// skipped). Panics if the connection ends without one.
    pub async fn expect_close(&mut self) -> CloseFrame {
        loop {
            match patiently("a close frame", self.ws.next()).await {
                Some(Ok(Message::Close(Some(frame)))) => return frame,
                Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
                Some(Ok(_)) => {}
                other => panic!("connection ended without a close frame: {other:?}"),
            }
        }
    }

    /// Keeps reading (so pings are answered) for `time`, asserting no text arrives.
    pub async fn idle(&mut self, time: Duration) {
        let deadline = tokio::time::Instant::now() + time;
        while let Ok(m) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match m {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }
}

pub(crate) fn offer(to: &str, sdp: &str) -> Value {
    json!({"type": "offer", "offer": {"type": "offer", "sdp": sdp}, "otherUsername": to})
}

fn answer(to: &str, sdp: &str) -> Value {
    json!({"type": "answer", "answer": {"type": "answer", "sdp": sdp}, "otherUsername": to})
}

/// `a` calls `b` and `b` answers; both sides check what they get.
pub(crate) async fn call(a: &mut Client, a_name: &str, b: &mut Client, b_name: &str) {
    a.send(offer(b_name, "v=0 offer")).await;
    let got = b.recv().await;
    assert_eq!(got["type"], "offer");
    assert_eq!(got["username"], a_name);
    assert_eq!(got["offer"]["sdp"], "v=0 offer");
    b.send(answer(a_name, "v=0 answer")).await;
    let got = a.recv().await;
    assert_eq!(got["type"], "answer");
    assert_eq!(got["username"], b_name);
    assert_eq!(got["answer"]["sdp"], "v=0 answer");
}

/// Logs in as `name` on fresh connections until it succeeds (the name is freed asynchronously).
pub(crate) async fn login_when_free(url: &str, name: &str) -> Client {
    patiently("the name to be freed", async {
        loop {
            let mut c = Client::connect(url).await;
            c.send(json!({"type": "login", "username": name})).await;
            if c.recv().await["success"] == true {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Login, offer, answer, candidates both ways, close; then a second call works.
pub async fn full_call(start: Start) {
    let server = start(quiet_config()).await;
    let mut alice = Client::login(&server.url, "alice").await;
    let mut bob = Client::login(&server.url, "bob").await;
    call(&mut alice, "alice", &mut bob, "bob").await;

    alice
        .send(json!({"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host", "sdpMid": "0"}, "otherUsername": "bob"}))
        .await;
    let got = bob.recv().await;
    assert_eq!(got["type"], "candidate");
    assert_eq!(got["username"], "alice");
    assert_eq!(got["candidate"]["sdpMid"], "0");
    bob.send(json!({"type": "candidate", "candidate": {"candidate": "candidate:2"}, "otherUsername": "alice"}))
        .await;
    let got = alice.recv().await;
    assert_eq!(got["candidate"]["candidate"], "candidate:2");
    assert_eq!(got["username"], "bob");

    alice
        .send(json!({"type": "close", "otherUsername": "bob"}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "close", "username": "alice"})
    );

    // Both are free again: bob calls alice.
    call(&mut bob, "bob", &mut alice, "alice").await;
    server.hub.shutdown().await;
}

/// A second login with a taken name is refused; the first owner keeps working.
pub async fn duplicate_login(start: Start) {
    let server = start(quiet_config()).await;
    let mut first = Client::login(&server.url, "alice").await;
    let mut second = Client::connect(&server.url).await;
    second
        .send(json!({"type": "login", "username": "alice"}))
        .await;
    let reply = second.recv().await;
    assert_eq!(reply["type"], "login");
    assert_eq!(reply["success"], false);
    assert_eq!(reply["code"], "name_taken");

    // The refused connection stays usable: it can take another name.
    second
        .send(json!({"type": "login", "username": "carol"}))
        .await;
    assert_eq!(second.recv().await["success"], true);
    // And the first alice still works.
    call(&mut first, "alice", &mut second, "carol").await;
    server.hub.shutdown().await;
}

/// A client that vanishes mid-call: its partner gets `close` and the name is free again.
pub async fn disconnect_mid_call(start: Start) {
    let server = start(quiet_config()).await;
    let mut alice = Client::login(&server.url, "alice").await;
    let mut bob = Client::login(&server.url, "bob").await;
    call(&mut alice, "alice", &mut bob, "bob").await;

    drop(alice); // no close frame: the TCP connection just goes away
    assert_eq!(
        bob.recv().await,
        json!({"type": "close", "username": "alice"})
    );

    let mut alice = login_when_free(&server.url, "alice").await;
    call(&mut bob, "bob", &mut alice, "alice").await;
    server.hub.shutdown().await;
}

/// 100 calls set up at once: every message reaches the right callee from the right caller.
pub async fn hundred_calls(start: Start) {
    let server = start(quiet_config()).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let url = server.url.clone();
        tasks.push(tokio::spawn(async move {
            let (caller_name, callee_name) = (format!("caller-{i}"), format!("callee-{i}"));
            let mut callee = Client::login(&url, &callee_name).await;
            let mut caller = Client::login(&url, &caller_name).await;
            let sdp = format!("v=0 sdp of call {i}");
            caller.send(offer(&callee_name, &sdp)).await;
            let got = callee.recv().await;
            assert_eq!(got["username"], caller_name.as_str());
            assert_eq!(got["offer"]["sdp"], sdp.as_str());
            let reply = format!("v=0 answer of call {i}");
            callee.send(answer(&caller_name, &reply)).await;
            let got = caller.recv().await;
            assert_eq!(got["username"], callee_name.as_str());
            assert_eq!(got["answer"]["sdp"], reply.as_str());
            for n in 0..5 {
                let cand = format!("candidate:{i}:{n}");
                caller
                    .send(json!({"type": "candidate", "candidate": {"candidate": cand}, "otherUsername": callee_name}))
                    .await;
                let got = callee.recv().await;
                assert_eq!(got["candidate"]["candidate"], cand.as_str());
                assert_eq!(got["username"], caller_name.as_str());
            }
            (caller, callee)
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(patiently("a call", t).await.expect("call task"));
    }
    assert_eq!(server.user_count(), 200);
    server.hub.shutdown().await;
}

/// 1,000 candidates in a burst arrive in order and byte for byte as sent, with the default
/// rate limit on (it must never bother a legitimate client). The sender pays for its traffic:
/// a candidate that finds the receiver's queue full is refused to the sender with
/// `recipient_overloaded` (rarely, on a loaded machine); none is lost silently, and those that
/// arrive keep their order.
pub async fn thousand_candidates(start: Start) {
    let server = start(quiet_config()).await;
    assert_eq!(
        server.hub.config().router.rate_limit,
        Some(signaling_core::RateLimit::default())
    );
    let mut alice = Client::login(&server.url, "alice").await;
    let mut bob = Client::login(&server.url, "bob").await;
    call(&mut alice, "alice", &mut bob, "bob").await;

    // Odd spacing, escapes and non-ASCII: the server must relay the payload text untouched.
    let payload = |i: usize| {
        format!(
            r#"{{ "candidate" : "candidate:{i} 1 udp 2122260223 192.0.2.{} 5{i:04} typ host générée \"q\" \u00e9", "sdpMid":"0","sdpMLineIndex" :0 , "n":{i}}}"#,
            i % 250
        )
    };
    let sender = async {
        for i in 0..1000 {
            alice
                .send_text(format!(
                    r#"{{"type":"candidate","candidate":{},"otherUsername":"bob"}}"#,
                    payload(i)
                ))
                .await;
        }
        // Replies to the sender are in order: an unknown type marks the end of the flood's.
        alice.send(json!({"type": "marker"})).await;
        let mut refused = 0;
        loop {
            let reply = alice.recv().await;
            if reply["code"] == "unknown_type" {
                break;
            }
            assert_eq!(reply["code"], "recipient_overloaded", "{reply}");
            refused += 1;
        }
        // `close` is never refused: it tells bob the flood is over.
        alice
            .send(json!({"type": "close", "otherUsername": "bob"}))
            .await;
        refused
    };
    let receiver = async {
        let mut next = 0;
        let mut received = 0;
        loop {
            let text = bob.recv_text().await;
            if text == r#"{"type":"close","username":"alice"}"# {
                return received;
            }
            // Each arrival is a later candidate than the last one, byte for byte.
            let found = (next..1000).find(|&i| {
                text == format!(
                    r#"{{"type":"candidate","candidate":{},"username":"alice"}}"#,
                    payload(i)
                )
            });
            let i = found.unwrap_or_else(|| panic!("candidate out of order or altered: {text}"));
            next = i + 1;
            received += 1;
        }
    };
    let (refused, received) = tokio::join!(sender, receiver);
    assert_eq!(
        received + refused,
        1000,
        "{refused} refused, {received} received"
    );
    server.hub.shutdown().await;
}

/// A 60 KB SDP offer (under the 64 KiB default limit) passes intact.
pub async fn large_sdp(start: Start) {
    let server = start(quiet_config()).await;
    let mut alice = Client::login(&server.url, "alice").await;
    let mut bob = Client::login(&server.url, "bob").await;
    let mut sdp = String::from("v=0\\r\\n");
    let mut line = 0;
    while sdp.len() < 60_000 {
        sdp.push_str(&format!(
            "a=candidate:{line} 1 udp 2122260223 192.0.2.1 {line} typ host\\r\\n"
        ));
        line += 1;
    }
    let payload = format!(r#"{{"type":"offer","sdp":"{sdp}"}}"#);
    alice
        .send_text(format!(
            r#"{{"type":"offer","offer":{payload},"otherUsername":"bob"}}"#
        ))
        .await;
    let text = bob.recv_text().await;
    assert_eq!(
        text,
        format!(r#"{{"type":"offer","offer":{payload},"username":"alice"}}"#)
    );
    assert!(text.len() > 60_000);
    server.hub.shutdown().await;
}

/// Graceful shutdown: every client, in a call, idle or not logged in, gets a 1001 close frame,
/// `shutdown` returns, and the server task ends.
pub async fn graceful_shutdown(start: Start) {
    let server = start(quiet_config()).await;
    let mut alice = Client::login(&server.url, "alice").await;
    let mut bob = Client::login(&server.url, "bob").await;
    call(&mut alice, "alice", &mut bob, "bob").await;
    let mut idle = Vec::new();
    for i in 0..10 {
        idle.push(Client::login(&server.url, &format!("idle-{i}")).await);
    }
    let mut anonymous = Client::connect(&server.url).await;

    alice
        .send(json!({"type": "candidate", "candidate": {"candidate": "last"}, "otherUsername": "bob"}))
        .await;
    // Wait until the router has seen it, so it is queued before the shutdown starts.
    assert_eq!(bob.recv().await["candidate"]["candidate"], "last");

    let hub = server.hub.clone();
    let shutdown = tokio::spawn(async move { hub.shutdown().await });
    for c in [&mut alice, &mut bob, &mut anonymous]
        .into_iter()
        .chain(idle.iter_mut())
    {
        let frame = c.expect_close().await;
        assert_eq!(u16::from(frame.code), 1001);
        // The client answers the close (tungstenite does it on the next read).
        let _ = patiently("the end of the stream", c.ws.next()).await;
    }
    patiently("shutdown", shutdown)
        .await
        .expect("shutdown task");
    assert_eq!(server.hub.connection_count(), 0);
    patiently("the server task", server.task)
        .await
        .expect("server task");
}

/// A message over the limit closes that connection with 1009; others carry on.
pub async fn oversize_message(start: Start) {
    let server = start(quiet_config().with_max_message_size(16 * 1024)).await;
    let mut alice = Client::login(&server.url, "alice").await;
    let mut bob = Client::login(&server.url, "bob").await;
    let mut carol = Client::login(&server.url, "carol").await;
    let big = "x".repeat(20 * 1024);
    alice
        .send(json!({"type": "offer", "offer": {"sdp": big}, "otherUsername": "bob"}))
        .await;
    let frame = alice.expect_close().await;
    assert_eq!(u16::from(frame.code), 1009);
    assert!(!frame.reason.is_empty());
    // The name is freed and the others are fine.
    let _alice = login_when_free(&server.url, "alice").await;
    call(&mut bob, "bob", &mut carol, "carol").await;
    server.hub.shutdown().await;
}

/// A client that stops answering pings is dropped and its name freed; one that reads stays.
pub async fn heartbeat_timeout(start: Start) {
    let config = quiet_config()
        .with_ping_interval(Some(Duration::from_millis(200)))
        .with_pong_timeout(Duration::from_secs(1));
    let server = start(config).await;
    let mut alive = Client::login(&server.url, "alive").await;
    let _silent = Client::login(&server.url, "silent").await; // never polled again

    // `alive` keeps reading (answering pings) while the name is freed.
    let freed = login_when_free(&server.url, "silent");
    tokio::pin!(freed);
    let mut silent2 = loop {
        tokio::select! {
            c = &mut freed => break c,
            () = alive.idle(Duration::from_millis(50)) => {}
        }
    };
    // Both answer pings whenever they read; the call goes through.
    call(&mut alive, "alive", &mut silent2, "silent").await;
    server.hub.shutdown().await;
}

/// A connection that never logs in is closed with 1008 after the deadline; one that logged
/// in stays.
pub async fn login_deadline(start: Start) {
    // Long enough for `quick` to log in on a loaded machine.
    let config = quiet_config().with_login_timeout(Some(Duration::from_secs(2)));
    let server = start(config).await;
    let mut quick = Client::login(&server.url, "quick").await;
    let mut lazy = Client::connect(&server.url).await;
    let frame = lazy.expect_close().await;
    assert_eq!(u16::from(frame.code), 1008);
    quick.idle(Duration::from_millis(500)).await;
    let mut other = Client::login(&server.url, "other").await;
    call(&mut quick, "quick", &mut other, "other").await;
    server.hub.shutdown().await;
}

/// Declares one `#[tokio::test]` per named scenario of this crate, each run against `$start`
/// (a [`Start`]): `scenarios!(common::start: full_call, bad_frames);`. An adapter's whole
/// loopback suite is one test binary this way.
#[macro_export]
macro_rules! scenarios {
    ($start:path: $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::$name($start).await;
            }
        )*
    };
}

/// Declares the TLS suite against `$start` (a [`Start`] that serves `wss://`): the shared
/// scenarios worth repeating over TLS and the TLS ones. Every adapter's loopback suite runs it,
/// so a TLS scenario is added here once.
#[macro_export]
macro_rules! tls_scenarios {
    ($start:path) => {
        $crate::scenarios!($start:
            full_call,
            disconnect_mid_call,
            hundred_calls,
            graceful_shutdown,
            oversize_message,
            tls_strangers_are_dropped,
            tls_stalled_handshakes_hold_pending_slots,
            tls_slow_handshakes_are_cut,
        );
    };
}

/// Declares a `#[tokio::test]` for **every** scenario of this crate, each run against `$start`:
/// what an adapter's loopback suite runs (`all_scenarios!(common::start);`). A new scenario is
/// added here once, and every adapter runs it.
#[macro_export]
macro_rules! all_scenarios {
    ($start:path) => {
        $crate::scenarios!($start:
            bad_frames,
            bad_handshakes,
            custom_authenticator,
            disconnect_mid_call,
            duplicate_login,
            full_call,
            garbage_storm,
            global_connection_cap,
            graceful_shutdown,
            heartbeat_timeout,
            hundred_calls,
            large_sdp,
            login_deadline,
            no_injection,
            origin_allowlist,
            oversize_message,
            panicking_authenticator,
            per_ip_connection_cap,
            rate_limit,
            slow_reader_keeps_its_name,
            non_reader_dropped_after_write_stall,
            queued_bytes_stay_within_the_budget,
            phase_timeouts,
            phase_caps,
            per_user_cap,
            control_frame_flood,
            unanswered_call_is_bounded,
            look_alike_names,
            thousand_candidates,
            token_auth,
            transport_errors_isolated,
            trusted_proxy_chain,
            resume_mid_call,
            takeover_of_a_half_open_connection,
            grace_expiry,
            clean_close_ends_the_session,
            ring_timeout,
            answered_call_never_expires,
            health_checks,
            metrics_count_a_scripted_call,
        );
    };
}
