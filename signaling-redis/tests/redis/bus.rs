//! Messages between nodes over Redis pub/sub: delivery, order, a full receiver, and Redis
//! restarted, down, frozen or killed.

use std::time::{Duration, Instant};

use signaling_redis::bus::{Bus, BusConfig, BusEvent, BusReceiver};
use signaling_redis::lease::{Claim, LeaseConfig, LeaseError, NodeId};
use signaling_redis::testing::RedisServer;

use crate::until_available;

/// Hang protection only: every wait here ends by itself well within this (about the command
/// timeout, 1 s, or a ping interval, 1 s); this turns a hang into a failure.
const HANG: Duration = Duration::from_secs(15);

/// A bus for node `node` on `redis`, with a receiver of `capacity` events.
async fn bus(redis: &RedisServer, node: &str, capacity: usize) -> (Bus, BusReceiver) {
    let mut config = BusConfig::default();
    config.capacity = capacity;
    Bus::connect(&redis.url(), NodeId::new(node), config)
        .await
        .expect("connect the bus to the test redis-server")
}

/// A bus whose receiver's first event (the subscription confirmed) has been checked and taken.
async fn subscribed(redis: &RedisServer, node: &str, capacity: usize) -> (Bus, BusReceiver) {
    let (bus, mut rx) = bus(redis, node, capacity).await;
    assert_eq!(next(&mut rx).await, BusEvent::Subscribed);
    assert!(bus.is_subscribed());
    (bus, rx)
}

/// The next event, within [`HANG`].
async fn next(rx: &mut BusReceiver) -> BusEvent {
    tokio::time::timeout(HANG, rx.recv())
        .await
        .expect("no event within the hang limit")
        .expect("the receiver ended")
}

fn msg(payload: impl AsRef<[u8]>) -> BusEvent {
    BusEvent::Message(payload.as_ref().to_vec())
}

/// Publishes `marker` to `to` and checks that it is `rx`'s next event: nothing else arrived
/// before it.
async fn nothing_else_before(from: &Bus, to: &NodeId, rx: &mut BusReceiver, marker: &str) {
    assert_eq!(from.publish(&[(to.clone(), marker)]).await.unwrap(), [1]);
    assert_eq!(next(rx).await, msg(marker));
}

#[tokio::test]
async fn a_message_arrives_with_its_exact_bytes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, mut a_rx) = subscribed(&redis, "node-a", 16).await;
    let (_b, mut b_rx) = subscribed(&redis, "node-b", 16).await;
    let b = NodeId::new("node-b");

    // Binary, not UTF-8, NUL and CR LF included; and an empty payload.
    let payload: Vec<u8> = vec![0, 255, b'\r', b'\n', 0xc3, 0x28, b'x'];
    let counts = a
        .publish(&[(b.clone(), payload.clone()), (b.clone(), Vec::new())])
        .await
        .unwrap();
    assert_eq!(counts, [1, 1]);
    assert_eq!(next(&mut b_rx).await, BusEvent::Message(payload));
    assert_eq!(next(&mut b_rx).await, BusEvent::Message(Vec::new()));
    // a got nothing of it: the next thing it gets is what it sends itself.
    let a_id = a.node().clone();
    nothing_else_before(&a, &a_id, &mut a_rx, "to myself").await;
    assert_eq!(a.channel(&b), b"signaling:node:node-b");
}

#[tokio::test]
async fn ten_thousand_messages_arrive_complete_and_in_order() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    const N: usize = 10_000;
    let (a, _a_rx) = subscribed(&redis, "node-a", 16).await;
    // Room for all of them: this test is about order and completeness, not a slow receiver.
    let (_b, mut b_rx) = subscribed(&redis, "node-b", N + 1).await;
    let b = NodeId::new("node-b");

    let batch: Vec<(NodeId, String)> = (0..N).map(|i| (b.clone(), format!("m{i}"))).collect();
    let started = Instant::now();
    let counts = a.publish(&batch).await.unwrap();
    eprintln!(
        "{N} messages published in one round trip in {:?}",
        started.elapsed()
    );
    assert_eq!(counts, vec![1; N]);
    for (i, (_, payload)) in batch.iter().enumerate() {
        assert_eq!(next(&mut b_rx).await, msg(payload), "message {i}");
    }
    eprintln!("... and received in {:?}", started.elapsed());
    assert_eq!(b_rx.dropped(), 0);
    nothing_else_before(&a, &b, &mut b_rx, "end").await;
}

#[tokio::test]
async fn two_publishers_each_keep_their_order() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    const BATCHES: usize = 20;
    const PER_BATCH: usize = 100;
    let (a, _a_rx) = subscribed(&redis, "node-a", 16).await;
    let (c, _c_rx) = subscribed(&redis, "node-c", 16).await;
    let (_b, mut b_rx) = subscribed(&redis, "node-b", 2 * BATCHES * PER_BATCH + 1).await;
    let b = NodeId::new("node-b");

    // a and c publish to b at the same time, each in batches one after the other.
    let publishers = [a, c].map(|publisher| {
        let b = b.clone();
        tokio::spawn(async move {
            let me = publisher.node().clone();
            for batch in 0..BATCHES {
                let batch: Vec<(NodeId, String)> = (0..PER_BATCH)
                    .map(|i| (b.clone(), format!("{me}/{}", batch * PER_BATCH + i)))
                    .collect();
                assert_eq!(publisher.publish(&batch).await.unwrap(), vec![1; PER_BATCH]);
            }
        })
    });
    for publisher in publishers {
        publisher.await.unwrap();
    }

    let mut seen = [0usize; 2];
    for _ in 0..2 * BATCHES * PER_BATCH {
        let BusEvent::Message(payload) = next(&mut b_rx).await else {
            panic!("not a message");
        };
        let payload = String::from_utf8(payload).unwrap();
        let (from, i) = payload.split_once('/').unwrap();
        let from = ["node-a", "node-c"]
            .iter()
            .position(|n| *n == from)
            .unwrap();
        assert_eq!(i.parse::<usize>().unwrap(), seen[from], "from {payload}");
        seen[from] += 1;
    }
    assert_eq!(seen, [BATCHES * PER_BATCH; 2]);
}

#[tokio::test]
async fn publish_to_a_node_nobody_subscribed_returns_zero() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, _a_rx) = subscribed(&redis, "node-a", 16).await;
    let (_b, mut b_rx) = subscribed(&redis, "node-b", 16).await;
    let b = NodeId::new("node-b");
    let nobody = NodeId::new("node-nobody");

    let counts = a
        .publish(&[(b.clone(), "x"), (nobody.clone(), "y"), (b.clone(), "z")])
        .await
        .unwrap();
    assert_eq!(counts, [1, 0, 1]);
    assert_eq!(next(&mut b_rx).await, msg("x"));
    assert_eq!(next(&mut b_rx).await, msg("z"));
    assert_eq!(a.publish::<&str>(&[]).await.unwrap(), Vec::<u64>::new());
    nothing_else_before(&a, &b, &mut b_rx, "end").await;
}

#[tokio::test]
async fn a_full_receiver_drops_messages_and_says_where() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, _a_rx) = subscribed(&redis, "node-a", 16).await;
    // b has room for 4 events and does not read while a publishes.
    let (_b, mut b_rx) = subscribed(&redis, "node-b", 4).await;
    let b = NodeId::new("node-b");

    let batch: Vec<(NodeId, String)> = (0..10).map(|i| (b.clone(), format!("m{i}"))).collect();
    assert_eq!(a.publish(&batch).await.unwrap(), vec![1; 10]);
    // Redis has sent all ten; wait until b's connection has handed them over: 4 queued, 6
    // dropped.
    until(|| b_rx.dropped() == 6).await;
    // One more while the receiver is still full: dropped too, behind the 6.
    assert_eq!(a.publish(&[(b.clone(), "m10")]).await.unwrap(), [1]);
    until(|| b_rx.dropped() == 7).await;

    for i in 0..4 {
        assert_eq!(next(&mut b_rx).await, msg(format!("m{i}")));
    }
    assert_eq!(next(&mut b_rx).await, BusEvent::Lost(7));
    // Room again: the next message arrives.
    nothing_else_before(&a, &b, &mut b_rx, "m11").await;
    assert_eq!(b_rx.dropped(), 7);

    // Full again, then a message that fits once the receiver has read one: the report of the
    // loss comes before it, where the loss was.
    let batch: Vec<(NodeId, String)> = (12..17).map(|i| (b.clone(), format!("m{i}"))).collect();
    assert_eq!(a.publish(&batch).await.unwrap(), vec![1; 5]);
    until(|| b_rx.dropped() == 8).await;
    assert_eq!(next(&mut b_rx).await, msg("m12"));
    assert_eq!(next(&mut b_rx).await, msg("m13"));
    // Two free places: the report and m17 fit.
    assert_eq!(a.publish(&[(b.clone(), "m17")]).await.unwrap(), [1]);
    assert_eq!(next(&mut b_rx).await, msg("m14"));
    assert_eq!(next(&mut b_rx).await, msg("m15"));
    assert_eq!(next(&mut b_rx).await, BusEvent::Lost(1));
    assert_eq!(next(&mut b_rx).await, msg("m17"));
    nothing_else_before(&a, &b, &mut b_rx, "end").await;
}

/// Waits (polling, within [`HANG`]) until `done`.
async fn until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !done() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn redis_restarted_empty_the_subscription_comes_back_by_itself() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, _a_rx) = subscribed(&redis, "node-a", 16).await;
    let (b_bus, mut b_rx) = subscribed(&redis, "node-b", 16).await;
    let b = NodeId::new("node-b");
    assert_eq!(a.publish(&[(b.clone(), "before")]).await.unwrap(), [1]);
    assert_eq!(next(&mut b_rx).await, msg("before"));

    redis.restart();
    let started = Instant::now();
    assert_eq!(next(&mut b_rx).await, BusEvent::Disconnected);
    assert_eq!(next(&mut b_rx).await, BusEvent::Subscribed);
    eprintln!("resubscribed {:?} after the restart", started.elapsed());
    assert!(b_bus.is_subscribed());

    let after = [(b.clone(), "after")];
    let counts = until_available(|| a.publish(&after)).await;
    assert_eq!(counts, [1]);
    assert_eq!(next(&mut b_rx).await, msg("after"));
    nothing_else_before(&a, &b, &mut b_rx, "end").await;
}

#[tokio::test]
async fn redis_down_for_seconds_the_subscription_comes_back_by_itself() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, _a_rx) = subscribed(&redis, "node-a", 16).await;
    let (b_bus, mut b_rx) = subscribed(&redis, "node-b", 16).await;
    let b = NodeId::new("node-b");

    redis.kill();
    assert_eq!(next(&mut b_rx).await, BusEvent::Disconnected);
    assert!(!b_bus.is_subscribed());
    // Down for longer than redis-rs's reconnection attempts (~300 ms): after them only the
    // bus's pings start a new reconnection.
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    let started = Instant::now();
    assert_eq!(next(&mut b_rx).await, BusEvent::Subscribed);
    eprintln!("resubscribed {:?} after Redis came back", started.elapsed());

    let after = [(b.clone(), "after")];
    let counts = until_available(|| a.publish(&after)).await;
    assert_eq!(counts, [1]);
    assert_eq!(next(&mut b_rx).await, msg("after"));
    nothing_else_before(&a, &b, &mut b_rx, "end").await;
}

#[tokio::test]
async fn redis_frozen_publish_times_out_and_works_after_thaw() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, _a_rx) = subscribed(&redis, "node-a", 16).await;
    let (b_bus, mut b_rx) = subscribed(&redis, "node-b", 16).await;
    let b = NodeId::new("node-b");

    redis.freeze();
    let started = Instant::now();
    let frozen = tokio::time::timeout(HANG, a.publish(&[(b.clone(), "frozen")]))
        .await
        .expect("publish hung");
    eprintln!(
        "frozen: publish failed in {:?}: {frozen:?}",
        started.elapsed()
    );
    let e = frozen.unwrap_err();
    assert!(matches!(e, LeaseError::Timeout(_)), "{e:?}");
    redis.thaw();

    let thawed = [(b.clone(), "thawed")];
    let counts = until_available(|| a.publish(&thawed)).await;
    assert_eq!(counts, [1]);
    // The connections stayed open: the publish that timed out was carried out after all when
    // Redis went on (a timeout means "maybe"), in order, and b's subscription never dropped.
    assert_eq!(next(&mut b_rx).await, msg("frozen"));
    assert_eq!(next(&mut b_rx).await, msg("thawed"));
    assert!(b_bus.is_subscribed());
    nothing_else_before(&a, &b, &mut b_rx, "end").await;
}

#[tokio::test]
async fn redis_killed_publish_fails_unreachable() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, _a_rx) = subscribed(&redis, "node-a", 16).await;
    let b = NodeId::new("node-b");
    redis.kill();
    // Several rounds: the first sees the connection drop, the next ones the reconnection fail.
    // Unreachable (refused), not a timeout: none of them waits out the command timeout.
    for round in 0..3 {
        let started = Instant::now();
        let e = tokio::time::timeout(HANG, a.publish(&[(b.clone(), "x")]))
            .await
            .expect("publish hung")
            .unwrap_err();
        eprintln!(
            "round {round}: publish failed in {:?}: {e}",
            started.elapsed()
        );
        assert!(
            matches!(e, LeaseError::Unreachable(_)),
            "round {round}: {e:?}"
        );
        assert!(e.is_unavailable());
    }
}

#[tokio::test]
async fn connect_to_a_dead_redis_returns_unavailable() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    redis.kill();
    let connecting = Bus::connect(&url, NodeId::new("node-a"), BusConfig::default());
    let e = tokio::time::timeout(HANG, connecting)
        .await
        .expect("connect hung")
        .expect_err("connected to a dead Redis");
    assert!(e.is_unavailable(), "{e:?}");
}

#[tokio::test]
async fn dropping_the_bus_ends_the_receiver() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, _a_rx) = subscribed(&redis, "node-a", 16).await;
    let (b_bus, mut b_rx) = subscribed(&redis, "node-b", 16).await;
    let b = NodeId::new("node-b");
    assert_eq!(a.publish(&[(b.clone(), "last")]).await.unwrap(), [1]);
    assert_eq!(next(&mut b_rx).await, msg("last"));

    drop(b_bus);
    let end = tokio::time::timeout(HANG, b_rx.recv())
        .await
        .expect("the receiver did not end");
    assert_eq!(end, None);
    // Its subscription is gone from Redis too, once Redis has seen the connection close (which
    // happens just after the receiver ends, asynchronously).
    let gone = [(b.clone(), "gone")];
    let deadline = Instant::now() + HANG;
    while a.publish(&gone).await.unwrap() != [0] {
        assert!(Instant::now() < deadline, "b is still subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn leases_share_the_bus_connection() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, _a_rx) = subscribed(&redis, "node-a", 16).await;
    let (b, _b_rx) = subscribed(&redis, "node-b", 16).await;
    let a_leases = a.leases(LeaseConfig::default());
    let b_leases = b.leases(LeaseConfig::default());
    assert_eq!(a_leases.node(), a.node());
    assert_eq!(a_leases.claim("alice", "alice").await.unwrap(), Claim::Won);
    assert_eq!(
        b_leases.claim("ɑlice", "alice").await.unwrap(),
        Claim::Taken(NodeId::new("node-a"))
    );
    assert_eq!(
        b_leases.owners(&["alice"]).await.unwrap(),
        [Some(NodeId::new("node-a"))]
    );
}
