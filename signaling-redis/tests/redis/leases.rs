//! Claim, refresh, release and expiry between two nodes.

use std::time::Duration;

use signaling_redis::lease::{Claim, NodeId, REFRESH_BATCH};
use signaling_redis::testing::RedisServer;

use crate::leases;

const TTL: Duration = Duration::from_secs(10);

#[tokio::test]
async fn only_one_node_claims_a_name() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = leases(&redis, "node-a", TTL).await;
    let b = leases(&redis, "node-b", TTL).await;

    assert_eq!(a.claim("alice", "alice").await.unwrap(), Claim::Won);
    assert_eq!(
        b.claim("alice", "alice").await.unwrap(),
        Claim::Taken(NodeId::new("node-a"))
    );
    // Claiming a name this node holds already is a win (the lease is extended).
    assert_eq!(a.claim("alice", "alice").await.unwrap(), Claim::Won);
    assert_eq!(a.owner("alice").await.unwrap(), Some(NodeId::new("node-a")));
    assert_eq!(b.owner("bob").await.unwrap(), None);

    // Names are binary-safe keys: any Unicode, separators included.
    let odd = "Zoë:name:🦀 ɑlice";
    assert_eq!(b.claim(odd, odd).await.unwrap(), Claim::Won);
    assert_eq!(
        a.claim(odd, odd).await.unwrap(),
        Claim::Taken(NodeId::new("node-b"))
    );
    assert_eq!(a.owner(odd).await.unwrap(), Some(NodeId::new("node-b")));
}

#[tokio::test]
async fn concurrent_claims_of_one_name_have_one_winner() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut nodes = Vec::new();
    for i in 0..8 {
        nodes.push(leases(&redis, &format!("node-{i}"), TTL).await);
    }
    let claims = nodes.iter().map(|n| {
        let n = n.clone();
        tokio::spawn(async move { n.claim("alice", "alice").await.unwrap() })
    });
    let mut won = 0;
    for claim in claims {
        if claim.await.unwrap() == Claim::Won {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test]
async fn refresh_keeps_ours_and_leaves_another_nodes_alone() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ttl = Duration::from_millis(400);
    let a = leases(&redis, "node-a", ttl).await;
    let b = leases(&redis, "node-b", ttl).await;
    assert_eq!(a.claim("alice", "alice").await.unwrap(), Claim::Won);
    assert_eq!(b.claim("bob", "bob").await.unwrap(), Claim::Won);

    // a refreshes bob too (as if it thought it held him): bob is reported lost ...
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            a.refresh(&[("alice", "alice"), ("bob", "bob")])
                .await
                .unwrap(),
            ["bob"]
        );
    }
    // ... and his lease is not extended: b never refreshes it, so it runs out 400 ms after b's
    // claim, while a keeps alice.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(a.refresh(&[("alice", "alice")]).await.unwrap().is_empty());
    }
    assert_eq!(b.owner("bob").await.unwrap(), None);
    assert_eq!(b.owner("alice").await.unwrap(), Some(NodeId::new("node-a")));
}

#[tokio::test]
async fn refresh_reports_only_names_held_by_another_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = leases(&redis, "node-a", TTL).await;
    let b = leases(&redis, "node-b", TTL).await;
    assert_eq!(b.claim("bob", "bob").await.unwrap(), Claim::Won);
    assert_eq!(a.claim("alice", "alice").await.unwrap(), Claim::Won);

    let lost = a
        .refresh(&[("alice", "alice"), ("bob", "bob"), ("carol", "carol")])
        .await
        .unwrap();
    assert_eq!(lost, ["bob"]);
    assert_eq!(b.owner("bob").await.unwrap(), Some(NodeId::new("node-b")));
    // carol was missing: re-asserted for a.
    assert_eq!(b.owner("carol").await.unwrap(), Some(NodeId::new("node-a")));
    assert!(a.refresh::<&str, &str>(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn refresh_of_more_names_than_a_batch() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = leases(&redis, "node-a", TTL).await;
    let b = leases(&redis, "node-b", TTL).await;
    let held: Vec<(String, String)> = (0..REFRESH_BATCH * 2 + 10)
        .map(|i| (format!("user{i}"), format!("skeleton{i}")))
        .collect();
    // b holds one name in each batch, and one skeleton in each batch (under a name of its own);
    // a re-asserts all the others by refreshing them.
    let names = [5, REFRESH_BATCH + 7, 2 * REFRESH_BATCH + 9];
    let skeletons = [6, REFRESH_BATCH + 8, 2 * REFRESH_BATCH + 8];
    for &i in &names {
        let (name, skeleton) = &held[i];
        assert_eq!(b.claim(name, skeleton).await.unwrap(), Claim::Won);
    }
    for &i in &skeletons {
        let name = format!("look-alike{i}");
        assert_eq!(b.claim(&name, &held[i].1).await.unwrap(), Claim::Won);
    }
    let lost = a.refresh(&held).await.unwrap();
    let mut expected: Vec<usize> = names.iter().chain(&skeletons).copied().collect();
    expected.sort_unstable();
    let expected: Vec<&str> = expected.iter().map(|&i| held[i].0.as_str()).collect();
    assert_eq!(lost, expected);

    // Where every name lives, in one MGET: b's names, nobody for the names whose skeleton b
    // holds (a's refresh left them alone), a for all the others.
    let all: Vec<&str> = held.iter().map(|(name, _)| name.as_str()).collect();
    let owners = a.owners(&all).await.unwrap();
    assert_eq!(owners.len(), all.len());
    for (i, owner) in owners.iter().enumerate() {
        let want = if names.contains(&i) {
            Some(NodeId::new("node-b"))
        } else if skeletons.contains(&i) {
            None
        } else {
            Some(NodeId::new("node-a"))
        };
        assert_eq!(owner, &want, "owner of {}", all[i]);
    }
}

#[tokio::test]
async fn release_only_if_ours() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = leases(&redis, "node-a", TTL).await;
    let b = leases(&redis, "node-b", TTL).await;
    assert_eq!(a.claim("alice", "alice").await.unwrap(), Claim::Won);

    assert!(!b.release("alice", "alice").await.unwrap());
    assert_eq!(b.owner("alice").await.unwrap(), Some(NodeId::new("node-a")));
    assert!(a.release("alice", "alice").await.unwrap());
    assert_eq!(b.owner("alice").await.unwrap(), None);
    assert!(
        !a.release("alice", "alice").await.unwrap(),
        "released twice"
    );
    assert_eq!(b.claim("alice", "alice").await.unwrap(), Claim::Won);
}

#[tokio::test]
async fn a_lease_not_refreshed_runs_out_and_frees_the_name() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // a: a node that dies after its claim (it never refreshes).
    let a = leases(&redis, "node-a", Duration::from_millis(300)).await;
    let b = leases(&redis, "node-b", TTL).await;
    assert_eq!(a.claim("alice", "alice").await.unwrap(), Claim::Won);
    assert_eq!(
        b.claim("alice", "alice").await.unwrap(),
        Claim::Taken(NodeId::new("node-a"))
    );

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(b.owner("alice").await.unwrap(), None);
    assert_eq!(b.claim("alice", "alice").await.unwrap(), Claim::Won);
    // a comes back to refresh: alice is lost.
    assert_eq!(a.refresh(&[("alice", "alice")]).await.unwrap(), ["alice"]);
}

#[tokio::test]
async fn refreshed_leases_outlive_their_ttl() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = leases(&redis, "node-a", Duration::from_millis(300)).await;
    let b = leases(&redis, "node-b", TTL).await;
    assert_eq!(a.claim("alice", "alice").await.unwrap(), Claim::Won);
    let interval = a.config().refresh_interval();
    for _ in 0..8 {
        tokio::time::sleep(interval).await;
        assert!(a.refresh(&[("alice", "alice")]).await.unwrap().is_empty());
    }
    assert_eq!(
        b.claim("alice", "alice").await.unwrap(),
        Claim::Taken(NodeId::new("node-a"))
    );
}
