//! The failures of issue 11, each against real nodes on a real `redis-server`
//! (`docs/cluster.md`, *Failures*): a node killed mid-call, Redis killed and restarted empty,
//! a node cut off from Redis for longer than its lease.

use std::time::{Duration, Instant};

use serde_json::json;
use signaling_redis::lease::NodeId;
use signaling_redis::testing::RedisServer;
use signaling_test_support::{Client, patiently};

use crate::nodes::{Link, Node, next_within, try_login};

fn offer(to: &str) -> serde_json::Value {
    json!({"type": "offer", "offer": {"type": "offer", "sdp": "v=0"}, "otherUsername": to})
}

fn answer(to: &str) -> serde_json::Value {
    json!({"type": "answer", "answer": {"type": "answer", "sdp": "v=0"}, "otherUsername": to})
}

fn candidate(to: &str, n: u32) -> serde_json::Value {
    json!({"type": "candidate", "candidate": {"n": n}, "otherUsername": to})
}

/// `a` (named `a_name`) calls `b` (named `b_name`), `b` answers.
async fn call(a: &mut Client, a_name: &str, b: &mut Client, b_name: &str) {
    a.send(offer(b_name)).await;
    assert_eq!(b.recv().await["type"], "offer");
    b.send(answer(a_name)).await;
    assert_eq!(a.recv().await["type"], "answer");
}

/// Logs in as `name` on `url` until it works (a name comes free asynchronously); how long it
/// took.
async fn login_when_free(url: &str, name: &str) -> (Client, Duration) {
    let start = Instant::now();
    patiently("the name to come free", async {
        loop {
            let (c, reply) = try_login(url, name).await;
            if reply["success"] == true {
                return (c, start.elapsed());
            }
            assert_eq!(reply["code"], "name_taken", "{reply}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// A node killed mid-call (`kill -9`): its partner on another node is told `close` once, a
/// relay to it meanwhile is answered (`unavailable`, never silence), and its names come free
/// within the lease time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_call() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let mut a = Node::start(&redis.url(), "a", ttl).await;
    let b = Node::start(&redis.url(), "b", ttl).await;
    let (mut alice, _) = try_login(&a.url, "alice").await;
    let (mut bob, _) = try_login(&b.url, "bob").await;
    call(&mut alice, "alice", &mut bob, "bob").await;

    a.kill();
    let killed = Instant::now();
    // A relay to alice now reaches no subscriber: bob is told, not left waiting.
    bob.send(candidate("alice", 1)).await;
    let reply = bob.recv().await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");
    // Then bob's call ends: alice's lease ran out, and two checks in a row found it gone.
    let close = patiently("bob's close", async {
        loop {
            let m = bob.recv().await;
            if m["type"] == "close" {
                return m;
            }
            assert_eq!(m["code"], "unavailable", "{m}");
        }
    })
    .await;
    assert_eq!(close, json!({"type": "close", "username": "alice"}));
    let told = killed.elapsed();
    // Once only.
    assert_eq!(
        next_within(&mut bob, Duration::from_millis(1500)).await,
        None
    );
    // The name is free again: someone logs in as alice on b.
    let (mut alice2, waited) = login_when_free(&b.url, "alice").await;
    eprintln!("node killed: bob told close after {told:?}; alice free {waited:?} after that");
    assert!(
        told + waited <= ttl * 5,
        "a dead node's names come free within the lease (plus checks): {:?}",
        told + waited
    );
    // And bob can call the new alice (a same-node call now).
    call(&mut bob, "bob", &mut alice2, "alice").await;
}

/// Redis killed: a call between two users of one node goes on; a cross-node relay and a login
/// get `unavailable`. Redis restarted empty: the nodes re-assert their names within a refresh
/// interval and cross-node calls work again, without restarting any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_restarted_empty() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let ttl = Duration::from_secs(3);
    let a = Node::start(&redis.url(), "a", ttl).await;
    let b = Node::start(&redis.url(), "b", ttl).await;
    let (mut alice, _) = try_login(&a.url, "alice").await;
    let (mut carol, _) = try_login(&a.url, "carol").await;
    let (mut bob, _) = try_login(&b.url, "bob").await;
    call(&mut alice, "alice", &mut carol, "carol").await;

    redis.kill();
    // Same node: goes on.
    for n in 0..3 {
        alice.send(candidate("carol", n)).await;
        let got = carol.recv().await;
        assert_eq!(got["candidate"]["n"], n, "{got}");
    }
    // Across nodes: a clear error.
    carol
        .send(json!({"type": "close", "otherUsername": "alice"}))
        .await;
    assert_eq!(alice.recv().await["type"], "close");
    alice.send(offer("bob")).await;
    let reply = alice.recv().await;
    assert_eq!(reply["code"], "unavailable", "{reply}");
    // A login: refused with the same code.
    let (_dave, reply) = try_login(&b.url, "dave").await;
    assert_eq!(reply["success"], false, "{reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");

    redis.restart();
    let restarted = Instant::now();
    // The names come back without any node restarting: the refresh re-asserts them.
    let probe = signaling_redis::lease::Leases::connect(
        &redis.url(),
        NodeId::new("probe"),
        signaling_redis::lease::LeaseConfig::default(),
    )
    .await
    .expect("probe connects");
    patiently("names re-asserted", async {
        loop {
            let owners = probe.owners(&["alice", "bob", "carol"]).await;
            if let Ok(owners) = owners {
                let owners: Vec<_> = owners
                    .iter()
                    .map(|o| o.as_ref().map(NodeId::as_str))
                    .collect();
                if owners == [Some("a"), Some("b"), Some("a")] {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    eprintln!(
        "Redis restarted empty: names re-asserted after {:?}",
        restarted.elapsed()
    );
    // A cross-node call works again (the first tries may still meet a subscription coming
    // back: each is answered).
    patiently("a cross-node call again", async {
        loop {
            alice.send(offer("bob")).await;
            let reply = next_within(&mut bob, Duration::from_millis(500)).await;
            if let Some(got) = reply {
                assert_eq!(got["type"], "offer", "{got}");
                assert_eq!(got["username"], "alice");
                return;
            }
            let refused = alice.recv().await;
            assert_eq!(refused["code"], "unavailable", "{refused}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    bob.send(answer("alice")).await;
    assert_eq!(alice.recv().await["type"], "answer");
    // A taken name is still taken across nodes after the restart.
    let (_, reply) = try_login(&b.url, "alice").await;
    assert_eq!(reply["code"], "name_taken", "{reply}");
}

/// A node cut off from Redis for longer than its lease may have lost its names: it stops
/// relaying (`unavailable`), another node may take the name, and once the link is back the
/// cut-off node ends its own session of that name (close 4001): two "alice"s never both relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_longer_than_its_lease() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let link = Link::to(redis.port()).await;
    let a = Node::start(&link.url, "a", ttl).await;
    let b = Node::start(&redis.url(), "b", ttl).await;
    let (mut alice, _) = try_login(&a.url, "alice").await;
    let (mut carol, _) = try_login(&a.url, "carol").await;
    call(&mut alice, "alice", &mut carol, "carol").await;

    link.cut();
    // Within the lease, a same-node call goes on.
    alice.send(candidate("carol", 1)).await;
    assert_eq!(carol.recv().await["candidate"]["n"], 1);
    // Past the lease (and a refresh interval), node a refuses to relay.
    patiently("node a to stop relaying", async {
        loop {
            alice.send(candidate("carol", 2)).await;
            let got = carol_or_alice(&mut alice, &mut carol).await;
            if got["code"] == "unavailable" {
                return;
            }
            assert_eq!(got["candidate"]["n"], 2, "{got}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // Meanwhile the name lapsed in Redis: another alice logs in on b.
    let (mut other_alice, _) = login_when_free(&b.url, "alice").await;
    let (mut bob, _) = try_login(&b.url, "bob").await;
    call(&mut bob, "bob", &mut other_alice, "alice").await;

    link.restore();
    // Node a finds "alice" held by b: its alice is closed with 4001, and only then may it
    // relay again (carol is still carol: nobody took her name).
    let frame = alice.expect_close().await;
    assert_eq!(u16::from(frame.code), 4001, "{frame:?}");
    // Her session ended: carol's call with her too, with one `close`.
    let close = patiently("carol's close", async {
        loop {
            let m = carol.recv().await;
            if m["type"] == "close" {
                return m;
            }
            assert_eq!(m["code"], "unavailable", "{m}");
        }
    })
    .await;
    assert_eq!(close, json!({"type": "close", "username": "alice"}));
    patiently("node a back", async {
        loop {
            carol
                .send(json!({"type": "candidate", "candidate": {}, "otherUsername": "bob"}))
                .await;
            let got = carol.recv().await;
            if got["code"] == "not_in_call" {
                return; // reached bob's node, which answered for him
            }
            assert_eq!(got["code"], "unavailable", "{got}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // The alice on b is the only one.
    bob.send(candidate("alice", 7)).await;
    assert_eq!(other_alice.recv().await["candidate"]["n"], 7);
}

/// Whichever of alice (a refusal) and carol (the candidate) hears first.
async fn carol_or_alice(alice: &mut Client, carol: &mut Client) -> serde_json::Value {
    loop {
        if let Some(got) = next_within(carol, Duration::from_millis(50)).await {
            return got;
        }
        if let Some(got) = next_within(alice, Duration::from_millis(50)).await {
            return got;
        }
    }
}

/// Name lookups are cached per node, and a cached owner goes stale when its user logs out
/// and in again on another node: the message still reaches the user (the old node passes it
/// on), nothing is refused, and the next ones go straight to the new node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_moved_is_still_reached() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ttl = Duration::from_secs(10);
    let a = Node::start(&redis.url(), "a", ttl).await;
    let b = Node::start(&redis.url(), "b", ttl).await;
    let c = Node::start(&redis.url(), "c", ttl).await;
    let (mut alice, _) = try_login(&a.url, "alice").await;
    let (mut bob, _) = try_login(&b.url, "bob").await;
    call(&mut bob, "bob", &mut alice, "alice").await; // b caches alice → a
    bob.send(json!({"type": "close"})).await;
    assert_eq!(alice.recv().await["type"], "close");
    // alice leaves a and comes back on c (her name released, then claimed by c).
    drop(alice);
    let (mut alice, _) = login_when_free(&c.url, "alice").await;
    for n in 0..3 {
        // The first goes to a on b's stale entry and is passed on; the others go to c.
        call(&mut bob, "bob", &mut alice, "alice").await;
        alice.send(json!({"type": "close"})).await;
        assert_eq!(
            bob.recv().await,
            json!({"type": "close", "username": "alice"}),
            "round {n}"
        );
    }
    assert_eq!(
        next_within(&mut bob, Duration::from_millis(300)).await,
        None
    );
    // Only the first took the detour: node a told node b its entry was stale.
    assert_eq!(a.backend.passed_on(), 1);
    assert_eq!(c.backend.passed_on(), 0);
}

/// What waits to be published is bounded in bytes, not only in envelopes: past the bound an
/// envelope is handed back (the hub answers its sender `unavailable`), nothing grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forward_queue_is_bounded_in_bytes() {
    use signaling_core::cluster::{Envelope, Remote};
    use signaling_core::driver::cluster::ClusterBackend;
    use signaling_core::{Payload, RelayKind, Username};
    use signaling_redis::cluster::{ClusterConfig, RedisCluster};

    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut config = ClusterConfig::new(redis.url());
    config.queue_bytes = 64 * 1024;
    // Not started: nothing drains the queue.
    let backend = RedisCluster::connect(config).await.expect("connect");
    let payload = Payload::from_json(&format!("\"{}\"", "x".repeat(8 * 1024))).unwrap();
    let envelope = Envelope {
        from: Username::new("alice").unwrap(),
        to: Username::new("bob").unwrap(),
        body: Remote::Relay {
            kind: RelayKind::Candidate,
            payload,
            opens_call: false,
        },
    };
    let mut queued = 0;
    let refused = loop {
        match backend.forward(envelope.clone()) {
            Ok(()) => queued += 1,
            Err(back) => break back,
        }
        assert!(queued < 100, "never refused");
    };
    assert_eq!(refused, envelope, "the refused envelope comes back whole");
    assert_eq!(queued, 7, "8 KiB envelopes in a 64 KiB queue");
}
