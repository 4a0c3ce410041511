//! The connection driver over an in-memory transport: no sockets, no WebSocket library.
//!
//! Runs with the `driver` feature, which `cargo test --workspace` enables through the
//! adapters (feature unification); alone: `cargo test -p signaling-core --features driver`.
#![cfg(feature = "driver")]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::{Sink, Stream};
use signaling_core::driver::{Config, ConnectionInfo, Hub, Inbound, Outbound, Transport};
use signaling_core::{RateLimit, RouterConfig};
use tokio::sync::{Notify, mpsc};

const PATIENCE: Duration = Duration::from_secs(30);

/// A WebSocket message of the in-memory transport.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16),
}

#[derive(Debug)]
struct Gone;

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the other side is gone")
    }
}

struct Mem;

impl Transport for Mem {
    type Message = Frame;
    type Error = Gone;

    fn inbound(message: &Frame) -> Inbound<'_> {
        match message {
            Frame::Text(t) if t == "panic" => panic!("a bug in one connection's handling"),
            Frame::Text(t) => Inbound::Text(t),
            Frame::Binary(b) => Inbound::Binary(b.len()),
            Frame::Ping(_) => Inbound::Ping,
            Frame::Pong(p) => Inbound::Pong(p),
            Frame::Close(_) => Inbound::Close,
        }
    }

    fn outbound(frame: Outbound) -> Frame {
        match frame {
            Outbound::Text(t) => Frame::Text(t),
            Outbound::Ping(p) => Frame::Ping(p.to_vec()),
            Outbound::Close(c) => Frame::Close(c.code),
            _ => Frame::Pong(Vec::new()),
        }
    }
}

/// Server-to-client frames, bounded like a socket buffer: a client that does not read blocks
/// the server's writes once `capacity` frames wait.
struct Pipe {
    frames: Mutex<VecDeque<Frame>>,
    capacity: usize,
    writer: Mutex<Option<Waker>>,
    readable: Notify,
    closed: AtomicBool,
}

/// The server's end: a `Stream + Sink` of frames.
struct ServerEnd {
    incoming: mpsc::UnboundedReceiver<Frame>,
    pipe: Arc<Pipe>,
}

impl Drop for ServerEnd {
    fn drop(&mut self) {
        self.pipe.closed.store(true, Ordering::SeqCst);
        self.pipe.readable.notify_one();
    }
}

impl Stream for ServerEnd {
    type Item = Result<Frame, Gone>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx).map(|f| f.map(Ok))
    }
}

impl Sink<Frame> for ServerEnd {
    type Error = Gone;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        let frames = self.pipe.frames.lock().unwrap();
        if frames.len() < self.pipe.capacity {
            Poll::Ready(Ok(()))
        } else {
            *self.pipe.writer.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }
    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), Gone> {
        self.pipe.frames.lock().unwrap().push_back(frame);
        self.pipe.readable.notify_one();
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Poll::Ready(Ok(()))
    }
}

/// The client's end.
struct Client {
    outgoing: mpsc::UnboundedSender<Frame>,
    pipe: Arc<Pipe>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn connect(hub: &Hub) -> Client {
        Client::connect_with_capacity(hub, 1 << 20)
    }

    fn connect_with_capacity(hub: &Hub, capacity: usize) -> Client {
        let (outgoing, incoming) = mpsc::unbounded_channel();
        let pipe = Arc::new(Pipe {
            frames: Mutex::new(VecDeque::new()),
            capacity,
            writer: Mutex::new(None),
            readable: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let end = ServerEnd {
            incoming,
            pipe: Arc::clone(&pipe),
        };
        let hub = hub.clone();
        let task = tokio::spawn(async move {
            hub.serve_connection::<Mem, _>(end, ConnectionInfo::new())
                .await;
        });
        Client {
            outgoing,
            pipe,
            task,
        }
    }

    fn send(&self, text: &str) {
        let _ = self.outgoing.send(Frame::Text(text.to_string()));
    }

    fn send_frame(&self, frame: Frame) {
        let _ = self.outgoing.send(frame);
    }

    /// The next frame, or `None` once the server dropped the connection.
    async fn next(&self) -> Option<Frame> {
        let next = async {
            loop {
                let notified = self.pipe.readable.notified();
                if let Some(frame) = self.pipe.frames.lock().unwrap().pop_front() {
                    if let Some(w) = self.pipe.writer.lock().unwrap().take() {
                        w.wake();
                    }
                    return Some(frame);
                }
                if self.pipe.closed.load(Ordering::SeqCst) {
                    return None;
                }
                notified.await;
            }
        };
        tokio::time::timeout(PATIENCE, next)
            .await
            .expect("timed out waiting for a frame")
    }

    /// The next text frame (pings answered, pongs skipped).
    async fn text(&self) -> String {
        loop {
            match self.next().await {
                Some(Frame::Text(t)) => return t,
                Some(Frame::Ping(p)) => self.send_frame(Frame::Pong(p)),
                Some(Frame::Pong(_)) => {}
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    /// Reads until a close frame and returns its code.
    async fn close_code(&self) -> u16 {
        loop {
            match self.next().await {
                Some(Frame::Close(code)) => return code,
                Some(_) => {}
                None => panic!("dropped without a close frame"),
            }
        }
    }

    async fn login(hub: &Hub, name: &str) -> Client {
        let c = Client::connect(hub);
        c.send(&format!(r#"{{"type":"login","username":"{name}"}}"#));
        assert_eq!(c.text().await, r#"{"type":"login","success":true}"#);
        c
    }
}

fn quiet() -> Config {
    Config::default()
        .with_ping_interval(None)
        .with_login_timeout(None)
        .with_close_timeout(Duration::from_millis(200))
}

async fn offer(from: &Client, from_name: &str, to: &Client, to_name: &str) {
    from.send(&format!(
        r#"{{"type":"offer","offer":{{"sdp":"v=0"}},"otherUsername":"{to_name}"}}"#
    ));
    assert_eq!(
        to.text().await,
        format!(r#"{{"type":"offer","offer":{{"sdp":"v=0"}},"username":"{from_name}"}}"#)
    );
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn relays_between_connections() {
    let hub = Hub::new(quiet());
    let alice = Client::login(&hub, "alice").await;
    let bob = Client::login(&hub, "bob").await;
    offer(&alice, "alice", &bob, "bob").await;
    bob.send(r#"{"type":"answer","answer":{"sdp":"ok"},"otherUsername":"alice"}"#);
    assert_eq!(
        alice.text().await,
        r#"{"type":"answer","answer":{"sdp":"ok"},"username":"bob"}"#
    );
    assert_eq!(hub.with_router(|r| r.user_count()), 2);
}

#[tokio::test]
async fn binary_frame_gets_an_error_and_the_connection_stays() {
    let hub = Hub::new(quiet());
    let alice = Client::login(&hub, "alice").await;
    alice.send_frame(Frame::Binary(vec![1, 2, 3]));
    let reply: serde_json::Value = serde_json::from_str(&alice.text().await).unwrap();
    assert_eq!(reply["code"], "binary_not_supported");
    let bob = Client::login(&hub, "bob").await;
    offer(&alice, "alice", &bob, "bob").await;
}

#[tokio::test]
async fn oversize_text_closes_with_1009_and_frees_the_name() {
    let hub = Hub::new(quiet().with_max_message_size(1024));
    let alice = Client::login(&hub, "alice").await;
    alice.send(&"x".repeat(2000));
    assert_eq!(alice.close_code().await, 1009);
    eventually("the name to be freed", || {
        hub.with_router(|r| r.connection_of("alice").is_none())
    })
    .await;
}

#[tokio::test]
async fn a_full_queue_refuses_relays_to_their_sender_and_keeps_the_reader() {
    let config = quiet()
        .with_max_queued_messages(16)
        .with_router(RouterConfig::default().with_rate_limit(None));
    let hub = Hub::new(config);
    // `sink`'s socket holds 4 frames, and it does not read for now.
    let sink = Client::connect_with_capacity(&hub, 4);
    sink.send(r#"{"type":"login","username":"sink"}"#);
    assert!(matches!(sink.next().await, Some(Frame::Text(_))));
    let flooder = Client::login(&hub, "flooder").await;
    flooder.send(r#"{"type":"offer","offer":{},"otherUsername":"sink"}"#);
    for i in 0..100 {
        flooder.send(&format!(
            r#"{{"type":"candidate","candidate":{{"n":{i}}},"otherUsername":"sink"}}"#
        ));
    }
    // A reply to the flooder itself marks the end of its flood's replies.
    flooder.send(r#"{"type":"marker"}"#);
    // The flooder pays: most of its candidates come back refused.
    let mut refused = 0;
    loop {
        let reply: serde_json::Value = serde_json::from_str(&flooder.text().await).unwrap();
        if reply["code"] == "unknown_type" {
            break;
        }
        assert_eq!(reply["code"], "recipient_overloaded", "{reply}");
        refused += 1;
    }
    assert!(refused >= 80, "only {refused} of 100 candidates refused");
    // The reader keeps its connection and its name.
    assert!(hub.with_router(|r| r.connection_of("sink").is_some()));
    // It reads at last: the offer, then candidates in order with no gap, then nothing else.
    let text = |frame: Option<Frame>| match frame {
        Some(Frame::Text(t)) => t,
        other => panic!("expected text, got {other:?}"),
    };
    assert_eq!(
        text(sink.next().await),
        r#"{"type":"offer","offer":{},"username":"flooder"}"#
    );
    let mut delivered = 0;
    while delivered + refused < 100 {
        assert_eq!(
            text(sink.next().await),
            format!(
                r#"{{"type":"candidate","candidate":{{"n":{delivered}}},"username":"flooder"}}"#
            )
        );
        delivered += 1;
    }
    assert!(delivered >= 8, "only {delivered} candidates were queued");
    // Drained, the sink takes relays again.
    eventually("relays to the drained sink to be accepted", || {
        !hub.with_router(|r| r.is_congested(r.connection_of("sink").unwrap()))
    })
    .await;
    flooder.send(r#"{"type":"candidate","candidate":"late","otherUsername":"sink"}"#);
    assert_eq!(
        text(sink.next().await),
        r#"{"type":"candidate","candidate":"late","username":"flooder"}"#
    );
}

#[tokio::test]
async fn over_the_budget_the_largest_queues_are_dropped_first() {
    const BUDGET: usize = 40 * 1024;
    let config = quiet()
        .with_max_queued_bytes(64 * 1024)
        .with_max_total_queued_bytes(Some(BUDGET))
        .with_router(RouterConfig::default().with_rate_limit(None));
    let hub = Hub::new(config);
    // A light client: one unread reply.
    let light = Client::connect_with_capacity(&hub, 1);
    light.send(r#"{"type":"login","username":"light"}"#);
    assert!(matches!(light.next().await, Some(Frame::Text(_))));
    light.send("not json");
    // Three hoarders pipeline requests and never read the replies (their sockets hold one
    // frame): each may queue up to half of its 64 KiB of replies, 96 KiB together.
    let hoarders: Vec<Client> = (0..3)
        .map(|i| {
            let c = Client::connect_with_capacity(&hub, 1);
            c.send(&format!(r#"{{"type":"login","username":"hoarder{i}"}}"#));
            for _ in 0..400 {
                c.send("not json");
            }
            c
        })
        .collect();
    eventually("a hoarder to be dropped", || {
        hoarders.iter().any(|h| h.task.is_finished())
    })
    .await;
    eventually("the queues to fit the budget", || {
        hub.queued_bytes() <= BUDGET
    })
    .await;
    // The light client kept its connection: the largest queues went first.
    assert!(!light.task.is_finished());
    assert!(hub.with_router(|r| r.connection_of("light").is_some()));
    assert!(
        hoarders.iter().any(|h| !h.task.is_finished()),
        "not every hoarder had to go"
    );
    drop(hoarders);
}

#[tokio::test]
async fn a_client_whose_writes_stall_is_dropped_after_the_write_stall_timeout() {
    let config = quiet()
        .with_max_queued_messages(16)
        .with_write_stall_timeout(Duration::from_millis(300))
        .with_router(RouterConfig::default().with_rate_limit(None));
    let hub = Hub::new(config);
    // `sink`'s socket holds 2 frames, and it never reads after logging in.
    let sink = Client::connect_with_capacity(&hub, 2);
    sink.send(r#"{"type":"login","username":"sink"}"#);
    assert!(matches!(sink.next().await, Some(Frame::Text(_))));
    let caller = Client::login(&hub, "caller").await;
    caller.send(r#"{"type":"offer","offer":{},"otherUsername":"sink"}"#);
    for i in 0..4 {
        caller.send(&format!(
            r#"{{"type":"candidate","candidate":{{"n":{i}}},"otherUsername":"sink"}}"#
        ));
    }
    // No write progress for the stall timeout: the sink is dropped, the caller told.
    assert_eq!(caller.text().await, r#"{"type":"close","username":"sink"}"#);
    assert!(hub.with_router(|r| r.connection_of("sink").is_none()));
    tokio::time::timeout(PATIENCE, sink.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hub.queued_bytes(),
        0,
        "the dropped queue gave its bytes back"
    );
}

#[tokio::test]
async fn a_panic_in_one_connection_is_cleaned_up_and_others_carry_on() {
    let hub = Hub::new(quiet());
    let alice = Client::login(&hub, "alice").await;
    let bob = Client::login(&hub, "bob").await;
    offer(&alice, "alice", &bob, "bob").await;
    alice.send("panic");
    let result = tokio::time::timeout(PATIENCE, alice.task).await.unwrap();
    assert!(result.unwrap_err().is_panic());
    assert_eq!(bob.text().await, r#"{"type":"close","username":"alice"}"#);
    assert!(hub.with_router(|r| r.connection_of("alice").is_none()));
    let carol = Client::login(&hub, "alice").await;
    offer(&carol, "alice", &bob, "bob").await;
}

#[tokio::test]
async fn heartbeat_drops_a_silent_client_and_keeps_one_that_answers() {
    let config = quiet()
        .with_ping_interval(Some(Duration::from_millis(50)))
        .with_pong_timeout(Duration::from_millis(500));
    let hub = Hub::new(config);
    let silent = Client::login(&hub, "silent").await;
    let alive = Client::login(&hub, "alive").await;
    let liar = Client::login(&hub, "liar").await;
    let answering = async {
        // Answer pings for a while: several intervals and timeouts.
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        while tokio::time::Instant::now() < until {
            if let Ok(Some(frame)) =
                tokio::time::timeout(Duration::from_millis(10), alive.next()).await
            {
                let Frame::Ping(payload) = frame else {
                    panic!("expected a ping, got {frame:?}");
                };
                assert_eq!(payload.len(), 8, "pings carry a payload to echo");
                alive.send_frame(Frame::Pong(payload));
            }
        }
    };
    let lying = async {
        // Unsolicited pongs (not echoing a ping) do not prove the client reads.
        for _ in 0..40 {
            liar.send_frame(Frame::Pong(b"12345678".to_vec()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let dropped = async {
        // The silent client gets pings it never answers, then a close frame; so does the liar.
        assert_eq!(silent.close_code().await, 1001);
        assert_eq!(liar.close_code().await, 1001);
    };
    tokio::join!(answering, lying, dropped);
    eventually("the silent names to be freed", || {
        hub.with_router(|r| {
            r.connection_of("silent").is_none() && r.connection_of("liar").is_none()
        })
    })
    .await;
    assert!(hub.with_router(|r| r.connection_of("alive").is_some()));
}

#[tokio::test]
async fn login_deadline_closes_with_1008() {
    let hub = Hub::new(quiet().with_login_timeout(Some(Duration::from_millis(500))));
    let quick = Client::login(&hub, "quick").await;
    let lazy = Client::connect(&hub);
    assert_eq!(lazy.close_code().await, 1008);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(hub.with_router(|r| r.connection_of("quick").is_some()));
    drop(quick);
}

#[tokio::test]
async fn router_close_sends_1008_after_the_errors() {
    let limit = RateLimit {
        per_second: 1,
        burst: 1,
        max_strikes: 3,
    };
    let hub = Hub::new(quiet().with_router(RouterConfig::default().with_rate_limit(Some(limit))));
    let c = Client::connect(&hub);
    for _ in 0..10 {
        c.send(r#"{"type":"login","username":"spammer"}"#);
    }
    let mut texts = Vec::new();
    let code = loop {
        match c.next().await {
            Some(Frame::Text(t)) => texts.push(t),
            Some(Frame::Close(code)) => break code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, 1008);
    assert!(
        texts.iter().any(|t| t.contains("rate_limited")),
        "{texts:?}"
    );
}

#[tokio::test]
async fn shutdown_drains_closes_with_1001_and_refuses_newcomers() {
    let hub = Hub::new(quiet());
    let alice = Client::login(&hub, "alice").await;
    let bob = Client::login(&hub, "bob").await;
    offer(&alice, "alice", &bob, "bob").await;
    let shutdown = tokio::spawn({
        let hub = hub.clone();
        async move { hub.shutdown().await }
    });
    for c in [&alice, &bob] {
        assert_eq!(c.close_code().await, 1001);
        c.send_frame(Frame::Close(1001)); // the client's reply
    }
    // Dropping the client's sender ends the server's stream, as a socket closing would.
    drop(alice.outgoing);
    drop(bob.outgoing);
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hub.connection_count(), 0);
    assert!(hub.is_shutting_down());
    let late = Client::connect(&hub);
    assert_eq!(late.close_code().await, 1001);
}

#[tokio::test]
async fn over_the_cap_a_handed_in_socket_is_closed_with_1013_and_slots_come_back() {
    let hub = Hub::new(quiet().with_max_connections(Some(2)));
    let alice = Client::login(&hub, "alice").await;
    let bob = Client::login(&hub, "bob").await;
    assert_eq!(hub.admitted_connections(), 2);
    let late = Client::connect(&hub);
    assert_eq!(late.close_code().await, 1013);
    assert_eq!(hub.admitted_connections(), 2);
    // A connection whose task panics gives its slot back as it unwinds.
    alice.send("panic");
    let result = tokio::time::timeout(PATIENCE, alice.task).await.unwrap();
    assert!(result.unwrap_err().is_panic());
    eventually("alice's slot to come back", || {
        hub.admitted_connections() == 1
    })
    .await;
    let carol = Client::login(&hub, "carol").await;
    offer(&carol, "carol", &bob, "bob").await;
}
