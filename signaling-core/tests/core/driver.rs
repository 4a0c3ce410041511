//! The connection driver over its in-memory transport (`driver::memory`): no sockets, no
//! WebSocket library.
//!
//! The `memory` feature is on for this test binary (a dev-dependency of the crate on itself).
#![cfg(feature = "memory")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signaling_core::driver::ice::{IceServers, TurnRest};
use signaling_core::driver::memory::{self, Disconnected, Frame, Memory, MemoryClient};
use signaling_core::driver::{
    CloseFrame, Config, ConnectionInfo, Hub, Inbound, Outbound, Transport,
};
use signaling_core::{RateLimit, RouterConfig};
use tokio::task::JoinHandle;

const PATIENCE: Duration = Duration::from_secs(30);

/// The in-memory transport, except that the text frame `panic` panics the connection's task
/// (a bug in one connection's handling).
struct Panicky;

impl Transport for Panicky {
    type Message = Frame;
    type Error = Disconnected;

    fn inbound(message: &Frame) -> Inbound<'_> {
        if matches!(message, Frame::Text(t) if t == "panic") {
            panic!("a bug in one connection's handling");
        }
        Memory::inbound(message)
    }

    fn outbound(frame: Outbound) -> Frame {
        Memory::outbound(frame)
    }
}

/// A connection served with transport `T` by a task of its own, which the test can join.
fn spawn<T: Transport<Message = Frame, Error = Disconnected>>(
    hub: &Hub,
    capacity: usize,
) -> (MemoryClient, JoinHandle<()>) {
    let (socket, client) = memory::pair(capacity);
    let hub = hub.clone();
    let task = tokio::spawn(async move {
        hub.serve_connection::<T, _>(socket, ConnectionInfo::new())
            .await;
    });
    (client, task)
}

async fn login(hub: &Hub, name: &str) -> MemoryClient {
    let c = memory::connect(hub);
    c.send_text(format!(r#"{{"type":"login","username":"{name}"}}"#))
        .unwrap();
    assert_eq!(c.next_text().await, r#"{"type":"login","success":true}"#);
    c
}

/// Logs in over the panicking transport.
async fn login_panicky(hub: &Hub, name: &str) -> (MemoryClient, JoinHandle<()>) {
    let (c, task) = spawn::<Panicky>(hub, memory::DEFAULT_CAPACITY);
    c.send_text(format!(r#"{{"type":"login","username":"{name}"}}"#))
        .unwrap();
    assert_eq!(c.next_text().await, r#"{"type":"login","success":true}"#);
    (c, task)
}

fn quiet() -> Config {
    Config::default()
        .with_ping_interval(None)
        .with_login_timeout(None)
        .with_close_timeout(Duration::from_millis(200))
}

async fn offer(from: &MemoryClient, from_name: &str, to: &MemoryClient, to_name: &str) {
    from.send_text(format!(
        r#"{{"type":"offer","offer":{{"sdp":"v=0"}},"otherUsername":"{to_name}"}}"#
    ))
    .unwrap();
    assert_eq!(
        to.next_text().await,
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
    let alice = login(&hub, "alice").await;
    let bob = login(&hub, "bob").await;
    offer(&alice, "alice", &bob, "bob").await;
    bob.send_text(r#"{"type":"answer","answer":{"sdp":"ok"},"otherUsername":"alice"}"#)
        .unwrap();
    assert_eq!(
        alice.next_text().await,
        r#"{"type":"answer","answer":{"sdp":"ok"},"username":"bob"}"#
    );
    assert_eq!(hub.with_router(|r| r.user_count()), 2);
}

#[tokio::test]
async fn binary_frame_gets_an_error_and_the_connection_stays() {
    let hub = Hub::new(quiet());
    let alice = login(&hub, "alice").await;
    alice.send_frame(Frame::Binary(vec![1, 2, 3])).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&alice.next_text().await).unwrap();
    assert_eq!(reply["code"], "binary_not_supported");
    let bob = login(&hub, "bob").await;
    offer(&alice, "alice", &bob, "bob").await;
}

#[tokio::test]
async fn oversize_text_closes_with_1009_and_frees_the_name() {
    let hub = Hub::new(quiet().with_max_message_size(1024));
    let alice = login(&hub, "alice").await;
    alice.send_text("x".repeat(2000)).unwrap();
    assert_eq!(alice.next_close().await.code, 1009);
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
    let sink = memory::connect_with_capacity(&hub, 4);
    sink.send_text(r#"{"type":"login","username":"sink"}"#)
        .unwrap();
    assert!(matches!(sink.next_frame().await, Some(Frame::Text(_))));
    let flooder = login(&hub, "flooder").await;
    flooder
        .send_text(r#"{"type":"offer","offer":{},"otherUsername":"sink"}"#)
        .unwrap();
    for i in 0..100 {
        flooder
            .send_text(format!(
                r#"{{"type":"candidate","candidate":{{"n":{i}}},"otherUsername":"sink"}}"#
            ))
            .unwrap();
    }
    // A reply to the flooder itself marks the end of its flood's replies.
    flooder.send_text(r#"{"type":"marker"}"#).unwrap();
    // The flooder pays: most of its candidates come back refused.
    let mut refused = 0;
    loop {
        let reply: serde_json::Value = serde_json::from_str(&flooder.next_text().await).unwrap();
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
        text(sink.next_frame().await),
        r#"{"type":"offer","offer":{},"username":"flooder"}"#
    );
    let mut delivered = 0;
    while delivered + refused < 100 {
        assert_eq!(
            text(sink.next_frame().await),
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
    flooder
        .send_text(r#"{"type":"candidate","candidate":"late","otherUsername":"sink"}"#)
        .unwrap();
    assert_eq!(
        text(sink.next_frame().await),
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
    let light = memory::connect_with_capacity(&hub, 1);
    light
        .send_text(r#"{"type":"login","username":"light"}"#)
        .unwrap();
    assert!(matches!(light.next_frame().await, Some(Frame::Text(_))));
    light.send_text("not json").unwrap();
    // Three hoarders pipeline requests and never read the replies (their sockets hold one
    // frame): each may queue up to half of its 64 KiB of replies, 96 KiB together.
    let hoarders: Vec<MemoryClient> = (0..3)
        .map(|i| {
            let c = memory::connect_with_capacity(&hub, 1);
            c.send_text(format!(r#"{{"type":"login","username":"hoarder{i}"}}"#))
                .unwrap();
            for _ in 0..400 {
                c.send_text("not json").unwrap();
            }
            c
        })
        .collect();
    eventually("a hoarder to be dropped", || {
        hoarders.iter().any(MemoryClient::is_closed)
    })
    .await;
    eventually("the queues to fit the budget", || {
        hub.queued_bytes() <= BUDGET
    })
    .await;
    // The light client kept its connection: the largest queues went first.
    assert!(!light.is_closed());
    assert!(hub.with_router(|r| r.connection_of("light").is_some()));
    assert!(
        hoarders.iter().any(|h| !h.is_closed()),
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
    let (sink, sink_task) = spawn::<Memory>(&hub, 2);
    sink.send_text(r#"{"type":"login","username":"sink"}"#)
        .unwrap();
    assert!(matches!(sink.next_frame().await, Some(Frame::Text(_))));
    let caller = login(&hub, "caller").await;
    caller
        .send_text(r#"{"type":"offer","offer":{},"otherUsername":"sink"}"#)
        .unwrap();
    for i in 0..4 {
        caller
            .send_text(format!(
                r#"{{"type":"candidate","candidate":{{"n":{i}}},"otherUsername":"sink"}}"#
            ))
            .unwrap();
    }
    // No write progress for the stall timeout: the sink is dropped, the caller told.
    assert_eq!(
        caller.next_text().await,
        r#"{"type":"close","username":"sink"}"#
    );
    assert!(hub.with_router(|r| r.connection_of("sink").is_none()));
    tokio::time::timeout(PATIENCE, sink_task)
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
    let (alice, alice_task) = login_panicky(&hub, "alice").await;
    let bob = login(&hub, "bob").await;
    offer(&alice, "alice", &bob, "bob").await;
    alice.send_text("panic").unwrap();
    let result = tokio::time::timeout(PATIENCE, alice_task).await.unwrap();
    assert!(result.unwrap_err().is_panic());
    assert_eq!(
        bob.next_text().await,
        r#"{"type":"close","username":"alice"}"#
    );
    assert!(hub.with_router(|r| r.connection_of("alice").is_none()));
    let carol = login(&hub, "alice").await;
    offer(&carol, "alice", &bob, "bob").await;
}

#[tokio::test]
async fn heartbeat_drops_a_silent_client_and_keeps_one_that_answers() {
    let config = quiet()
        .with_ping_interval(Some(Duration::from_millis(50)))
        .with_pong_timeout(Duration::from_millis(500));
    let hub = Hub::new(config);
    let silent = login(&hub, "silent").await;
    let alive = login(&hub, "alive").await;
    let liar = login(&hub, "liar").await;
    let answering = async {
        // Answer pings for a while: several intervals and timeouts.
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        while tokio::time::Instant::now() < until {
            if let Ok(Some(frame)) =
                tokio::time::timeout(Duration::from_millis(10), alive.next_frame()).await
            {
                let Frame::Ping(payload) = frame else {
                    panic!("expected a ping, got {frame:?}");
                };
                assert_eq!(payload.len(), 8, "pings carry a payload to echo");
                alive.send_frame(Frame::Pong(payload)).unwrap();
            }
        }
    };
    let lying = async {
        // Unsolicited pongs (not echoing a ping) do not prove the client reads.
        for _ in 0..40 {
            let _ = liar.send_frame(Frame::Pong(b"12345678".to_vec()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let dropped = async {
        // The silent client gets pings it never answers, then a close frame; so does the liar.
        assert_eq!(silent.next_close().await.code, 1001);
        assert_eq!(liar.next_close().await.code, 1001);
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
    let quick = login(&hub, "quick").await;
    let lazy = memory::connect(&hub);
    assert_eq!(lazy.next_close().await.code, 1008);
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
    let c = memory::connect(&hub);
    for _ in 0..10 {
        c.send_text(r#"{"type":"login","username":"spammer"}"#)
            .unwrap();
    }
    let mut texts = Vec::new();
    let code = loop {
        match c.next_frame().await {
            Some(Frame::Text(t)) => texts.push(t),
            Some(Frame::Close(close)) => break close.code,
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
    let alice = login(&hub, "alice").await;
    let bob = login(&hub, "bob").await;
    offer(&alice, "alice", &bob, "bob").await;
    let shutdown = tokio::spawn({
        let hub = hub.clone();
        async move { hub.shutdown().await }
    });
    for c in [&alice, &bob] {
        assert_eq!(c.next_close().await.code, 1001);
        let _ = c.send_frame(Frame::Close(CloseFrame::GOING_AWAY)); // the client's reply
    }
    // Dropping the client ends the server's stream, as a socket closing would.
    alice.disconnect();
    bob.disconnect();
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hub.connection_count(), 0);
    assert!(hub.is_shutting_down());
    let late = memory::connect(&hub);
    assert_eq!(late.next_close().await.code, 1001);
}

#[tokio::test]
async fn over_the_cap_a_handed_in_socket_is_closed_with_1013_and_slots_come_back() {
    let hub = Hub::new(quiet().with_max_connections(Some(2)));
    let (alice, alice_task) = login_panicky(&hub, "alice").await;
    let bob = login(&hub, "bob").await;
    assert_eq!(hub.admitted_connections(), 2);
    let late = memory::connect(&hub);
    assert_eq!(late.next_close().await.code, 1013);
    assert_eq!(hub.admitted_connections(), 2);
    // A connection whose task panics gives its slot back as it unwinds.
    alice.send_text("panic").unwrap();
    let result = tokio::time::timeout(PATIENCE, alice_task).await.unwrap();
    assert!(result.unwrap_err().is_panic());
    eventually("alice's slot to come back", || {
        hub.admitted_connections() == 1
    })
    .await;
    let carol = login(&hub, "carol").await;
    offer(&carol, "carol", &bob, "bob").await;
}

/// A resumable client that answers pings: each echo acknowledges the session messages written
/// before its ping, so the history kept for a resume empties. When it stops answering, the
/// heartbeat timeout is a lost connection: the session is suspended (its partner told
/// nothing) and a resume on a new connection takes it back.
#[tokio::test]
async fn pongs_acknowledge_history_and_a_heartbeat_timeout_suspends_a_resumable_session() {
    let config = quiet()
        .with_ping_interval(Some(Duration::from_millis(50)))
        .with_pong_timeout(Duration::from_millis(400));
    let hub = Hub::new(config);
    let alice = memory::connect(&hub);
    alice
        .send_text(r#"{"type":"login","username":"alice","resumable":true}"#)
        .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&alice.next_text().await).unwrap();
    let token = reply["token"].as_str().unwrap().to_string();
    let bob = login(&hub, "bob").await;
    bob.send_text(r#"{"type":"offer","offer":{"sdp":"v=0"},"otherUsername":"alice"}"#)
        .unwrap();
    let got: serde_json::Value = serde_json::from_str(&alice.next_text().await).unwrap();
    assert_eq!(
        (got["type"].as_str(), got["seq"].as_u64()),
        (Some("offer"), Some(1))
    );
    assert!(
        hub.with_router(|r| r.retained_bytes()) > 0,
        "kept for a resume"
    );

    // Both answer pings until the offer is acknowledged.
    let acknowledged = async {
        while hub.with_router(|r| r.retained_bytes()) > 0 {
            answer_pings(&alice).await;
            answer_pings(&bob).await;
        }
    };
    tokio::time::timeout(PATIENCE, acknowledged)
        .await
        .expect("a pong acknowledges the offer");

    // Now alice is silent: the heartbeat drops her connection, the session waits; bob goes
    // on answering pings meanwhile.
    let alice_dropped = async {
        assert_eq!(alice.next_close().await.code, 1001);
        eventually("alice to be suspended", || {
            hub.with_router(|r| r.is_suspended("alice"))
        })
        .await;
    };
    let bob_alive = async {
        loop {
            answer_pings(&bob).await;
        }
    };
    tokio::select! {
        () = alice_dropped => {}
        () = bob_alive => {}
    }
    assert!(hub.with_router(|r| r.partner_of("bob").is_some_and(|p| p.as_str() == "alice")));
    let back = memory::connect(&hub);
    back.send_text(format!(
        r#"{{"type":"resume","token":"{token}","lastSeq":1}}"#
    ))
    .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&back.next_text().await).unwrap();
    assert_eq!(reply["success"], true, "{reply}");
    assert!(!hub.with_router(|r| r.is_suspended("alice")));
    bob.send_text(r#"{"type":"close"}"#).unwrap();
    let got: serde_json::Value = serde_json::from_str(&back.next_text().await).unwrap();
    assert_eq!(
        (got["type"].as_str(), got["seq"].as_u64()),
        (Some("close"), Some(2))
    );
}

/// Answers the pings that arrive within 10 ms; panics on any other frame.
async fn answer_pings(client: &MemoryClient) {
    while let Ok(Some(frame)) =
        tokio::time::timeout(Duration::from_millis(10), client.next_frame()).await
    {
        match frame {
            Frame::Ping(payload) => client.send_frame(Frame::Pong(payload)).unwrap(),
            other => panic!("expected a ping, got {other:?}"),
        }
    }
}

/// A hub without a cluster backend is the only node: with `claim_names` on, its router's
/// claims all win at once (the name was already checked locally), so logins, duplicate names
/// and calls behave as without it.
#[tokio::test]
async fn without_a_cluster_backend_every_claim_wins_at_once() {
    let config = quiet().with_router(
        RouterConfig::default()
            .with_rate_limit(None)
            .with_claim_names(true),
    );
    let hub = Hub::new(config);
    let alice = login(&hub, "alice").await;
    let bob = login(&hub, "bob").await;
    let again = memory::connect(&hub);
    again
        .send_text(r#"{"type":"login","username":"alice"}"#)
        .unwrap();
    assert!(again.next_text().await.contains(r#""code":"name_taken""#));
    offer(&alice, "alice", &bob, "bob").await;
}

/// With `Config::ice_servers`, the driver adds `"iceServers"` to successful `login` and
/// `resume` replies — TURN credentials minted for the user, valid for the TTL from now — and
/// to nothing else: failed logins and relays are byte for byte what they were.
#[tokio::test]
async fn ice_servers_come_with_successful_logins_and_resumes_only() {
    let turn = TurnRest::new(["turn:127.0.0.1:3478"], "a shared secret of 32 bytes......")
        .unwrap()
        .with_ttl(Duration::from_secs(600));
    let ice = IceServers::new(["stun:127.0.0.1:3478"]).with_turn(turn.clone());
    let hub = Hub::new(quiet().with_ice_servers(ice));
    #[allow(clippy::disallowed_methods)] // the test reads the clock the driver read
    let before = SystemTime::now();

    // The minted credentials are the ones `TurnRest` gives for that name and expiry.
    let check = |reply: &serde_json::Value, name: &str| {
        let servers = reply["iceServers"].as_array().expect("iceServers");
        assert_eq!(
            servers[0],
            serde_json::json!({"urls": ["stun:127.0.0.1:3478"]})
        );
        assert_eq!(
            servers[1]["urls"],
            serde_json::json!(["turn:127.0.0.1:3478"])
        );
        let username = servers[1]["username"].as_str().unwrap();
        let (expiry, rest) = username.split_once(':').unwrap();
        assert_eq!(rest, name);
        let expiry = UNIX_EPOCH + Duration::from_secs(expiry.parse().unwrap());
        let ttl = expiry.duration_since(before).unwrap();
        assert!(
            ttl > Duration::from_secs(590) && ttl <= Duration::from_secs(610),
            "{ttl:?}"
        );
        let minted = turn.credentials(name, expiry - turn.ttl);
        assert_eq!(servers[1]["credential"], minted.credential.as_str());
        assert_eq!(servers.len(), 2);
    };

    let alice = memory::connect(&hub);
    alice
        .send_text(r#"{"type":"login","username":"alice"}"#)
        .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&alice.next_text().await).unwrap();
    assert_eq!(
        (reply["type"].as_str(), reply["success"].as_bool()),
        (Some("login"), Some(true))
    );
    check(&reply, "alice");

    // A failed login gets nothing.
    let impostor = memory::connect(&hub);
    impostor
        .send_text(r#"{"type":"login","username":"alice"}"#)
        .unwrap();
    let refused = impostor.next_text().await;
    assert!(
        refused.starts_with(r#"{"type":"login","success":false,"code":"name_taken""#),
        "{refused}"
    );
    assert!(!refused.contains("iceServers"), "{refused}");

    // A resumable login, then a resume on a new connection: fresh credentials both times.
    let bob = memory::connect(&hub);
    bob.send_text(r#"{"type":"login","username":"bob","resumable":true}"#)
        .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&bob.next_text().await).unwrap();
    check(&reply, "bob");
    let token = reply["token"].as_str().unwrap().to_string();

    // Relays are untouched.
    alice
        .send_text(r#"{"type":"offer","offer":{"sdp":"v=0"},"otherUsername":"bob"}"#)
        .unwrap();
    let offer = r#"{"type":"offer","offer":{"sdp":"v=0"},"username":"alice","seq":1}"#;
    assert_eq!(bob.next_text().await, offer);
    bob.disconnect();
    eventually("bob to be suspended", || {
        hub.with_router(|r| r.is_suspended("bob"))
    })
    .await;
    let back = memory::connect(&hub);
    back.send_text(format!(
        r#"{{"type":"resume","token":"{token}","lastSeq":0}}"#
    ))
    .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&back.next_text().await).unwrap();
    assert_eq!(
        (reply["type"].as_str(), reply["success"].as_bool()),
        (Some("resume"), Some(true))
    );
    check(&reply, "bob");
    // The replayed offer comes after it, as it was.
    assert_eq!(back.next_text().await, offer);
}
