//! Redis killed, and restarted empty.

use std::time::{Duration, Instant};

use signaling_redis::lease::{Claim, LeaseConfig, Leases, NodeId};
use signaling_redis::testing::RedisServer;

use crate::{leases, until_available};

const TTL: Duration = Duration::from_secs(10);

/// Hang protection only: the calls must return by themselves (within about the command timeout,
/// 1 s); this just turns a hang into a failure instead of a stuck test run.
const HANG: Duration = Duration::from_secs(15);

#[tokio::test]
async fn redis_killed_every_call_returns_unavailable() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let a = leases(&redis, "node-a", TTL).await;
    assert_eq!(a.claim("alice", "alice").await.unwrap(), Claim::Won);
    redis.kill();

    // Several rounds: the first call sees the connection drop, the next ones wait on the
    // reconnection, which goes on failing.
    for round in 0..3 {
        let started = Instant::now();
        let claim = tokio::time::timeout(HANG, a.claim("bob", "bob"))
            .await
            .expect("claim hung");
        let refresh = tokio::time::timeout(HANG, a.refresh(&[("alice", "alice")]))
            .await
            .expect("refresh hung");
        let release = tokio::time::timeout(HANG, a.release("alice", "alice"))
            .await
            .expect("release hung");
        let owner = tokio::time::timeout(HANG, a.owner("alice"))
            .await
            .expect("owner hung");
        let mut seen = Vec::new();
        for e in [claim.err(), refresh.err(), release.err(), owner.err()] {
            let e = e.expect("a call succeeded without Redis");
            assert!(e.is_unavailable(), "round {round}: {e:?}");
            seen.push(e.to_string());
        }
        eprintln!(
            "round {round}: four calls failed in {:?}: {seen:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn connect_to_a_dead_redis_returns_unavailable() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    redis.kill();
    let connecting = Leases::connect(&url, NodeId::random(), LeaseConfig::default());
    let e = tokio::time::timeout(HANG, connecting)
        .await
        .expect("connect hung")
        .expect_err("connected to a dead Redis");
    assert!(e.is_unavailable(), "{e:?}");
}

#[tokio::test]
async fn redis_restarted_empty_refresh_reasserts_our_names() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let a = leases(&redis, "node-a", TTL).await;
    let b = leases(&redis, "node-b", TTL).await;
    assert_eq!(a.claim("alice", "alice").await.unwrap(), Claim::Won);
    assert_eq!(a.claim("bob", "bob").await.unwrap(), Claim::Won);

    redis.restart();
    // While a has not refreshed yet, b (reconnected) claims bob, whose key is gone.
    let claim = until_available(|| b.claim("bob", "bob")).await;
    assert_eq!(claim, Claim::Won);
    assert_eq!(
        b.owner("alice").await.unwrap(),
        None,
        "Redis came back empty"
    );

    // a's refresh (the script cache is empty too: EVALSHA answers NOSCRIPT, redis-rs loads it).
    let lost = until_available(|| a.refresh(&[("alice", "alice"), ("bob", "bob")])).await;
    assert_eq!(lost, ["bob"]);
    assert_eq!(b.owner("alice").await.unwrap(), Some(NodeId::new("node-a")));
    assert_eq!(a.owner("bob").await.unwrap(), Some(NodeId::new("node-b")));
    assert_eq!(
        b.claim("alice", "alice").await.unwrap(),
        Claim::Taken(NodeId::new("node-a"))
    );
}

#[tokio::test]
async fn leases_work_again_after_an_outage_without_reconnecting_by_hand() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let a = leases(&redis, "node-a", TTL).await;
    assert_eq!(a.claim("alice", "alice").await.unwrap(), Claim::Won);
    redis.kill();
    assert!(a.claim("bob", "bob").await.unwrap_err().is_unavailable());
    // Down for longer than the reconnection's first attempts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        a.refresh(&[("alice", "alice")])
            .await
            .unwrap_err()
            .is_unavailable()
    );
    redis.restart();

    let started = Instant::now();
    let lost = until_available(|| a.refresh(&[("alice", "alice")])).await;
    eprintln!(
        "refresh succeeded {:?} after the restart",
        started.elapsed()
    );
    assert!(lost.is_empty());
    assert_eq!(a.owner("alice").await.unwrap(), Some(NodeId::new("node-a")));
}

#[tokio::test]
async fn redis_frozen_calls_time_out_and_work_again_after() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let a = leases(&redis, "node-a", TTL).await;
    assert_eq!(a.claim("alice", "alice").await.unwrap(), Claim::Won);
    // The connection stays open but nothing answers: only the timeouts end the calls.
    redis.freeze();
    let started = Instant::now();
    let claim = tokio::time::timeout(HANG, a.claim("bob", "bob"))
        .await
        .expect("claim hung");
    let refresh = tokio::time::timeout(HANG, a.refresh(&[("alice", "alice")]))
        .await
        .expect("refresh hung");
    eprintln!(
        "frozen: two calls failed in {:?}: {claim:?} / {refresh:?}",
        started.elapsed()
    );
    assert!(claim.unwrap_err().is_unavailable());
    assert!(refresh.unwrap_err().is_unavailable());
    redis.thaw();

    let lost = until_available(|| a.refresh(&[("alice", "alice")])).await;
    assert!(lost.is_empty());
    // The claim of bob may have been carried out after all (its reply was lost): claiming again
    // answers Won either way.
    assert_eq!(a.claim("bob", "bob").await.unwrap(), Claim::Won);
}
