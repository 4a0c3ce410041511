//! Sessions that move between nodes (issue 11): the lease scripts that carry a name along
//! (`Leases::transfer`, `park`, `parked`, `unpark`), and a rolling restart — a node shut down
//! gracefully hands its resumable sessions over, and a call with a user of another node goes on.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use signaling_redis::cluster::{ClusterConfig, RedisCluster};
use signaling_redis::lease::{NodeId, Parking};
use signaling_redis::testing::RedisServer;
use signaling_test_support::{Client, patiently, quiet_config};
use signaling_ws::{Config, Hub};
use tokio_tungstenite::tungstenite::Message;

use crate::leases;

const TTL: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_transfer_moves_a_name_only_from_its_holder() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = leases(&redis, "node-a", TTL).await;
    let b = leases(&redis, "node-b", TTL).await;
    let c = leases(&redis, "node-c", TTL).await;
    let (na, nb, nc) = (
        NodeId::new("node-a"),
        NodeId::new("node-b"),
        NodeId::new("node-c"),
    );
    a.claim("alice", "alice").await.unwrap();
    // Not from a node that does not hold it.
    assert!(!c.transfer("alice", "alice", &nc, &nb).await.unwrap());
    assert_eq!(a.owner("alice").await.unwrap(), Some(na.clone()));
    // From its holder: both keys move.
    assert!(a.transfer("alice", "alice", &na, &nb).await.unwrap());
    assert_eq!(a.owner("alice").await.unwrap(), Some(nb.clone()));
    assert!(b.refresh(&[("alice", "alice")]).await.unwrap().is_empty());
    assert!(!a.refresh(&[("alice", "alice")]).await.unwrap().is_empty());
    // Again (a retry): still b's.
    assert!(a.transfer("alice", "alice", &na, &nb).await.unwrap());
    // A name nobody holds is taken.
    assert!(c.transfer("carol", "carol", &na, &nc).await.unwrap());
    assert_eq!(a.owner("carol").await.unwrap(), Some(nc));
    // A skeleton held by another name stops it, and nothing is touched.
    b.claim("bob", "bob").await.unwrap();
    assert!(!a.transfer("b0b", "bob", &na, &nb).await.unwrap());
    assert_eq!(a.owner("b0b").await.unwrap(), None);
}

#[tokio::test]
async fn a_parked_session_is_taken_once_with_its_lease() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = leases(&redis, "node-a", TTL).await;
    let b = leases(&redis, "node-b", TTL).await;
    let c = leases(&redis, "node-c", TTL).await;
    let na = NodeId::new("node-a");
    a.claim("alice", "alice").await.unwrap();
    a.claim("carol", "carol").await.unwrap();
    // dave was taken by another node meanwhile: not parked.
    b.claim("dave", "dave").await.unwrap();
    let grace = Duration::from_secs(30);
    let parking = [
        Parking {
            token: "node-a.t1",
            name: "alice",
            skeleton: "alice",
            value: b"alice's session",
            ttl: grace,
        },
        Parking {
            token: "node-a.t2",
            name: "dave",
            skeleton: "dave",
            value: b"dave's",
            ttl: grace,
        },
        Parking {
            token: "node-a.t3",
            name: "carol",
            skeleton: "carol",
            value: b"carol's",
            ttl: Duration::from_millis(200),
        },
    ];
    assert_eq!(a.park(&parking).await.unwrap(), vec![true, false, true]);
    // The lease lasts as long as the session now (longer than its TTL of 10 s).
    let (value, left) = b.parked("node-a.t1").await.unwrap().unwrap();
    assert_eq!(value, b"alice's session");
    assert!(left > TTL && left <= grace, "{left:?}");
    assert_eq!(b.parked("node-a.t2").await.unwrap(), None);
    // Taken once, by one node, with its name.
    assert!(b.unpark("node-a.t1", "alice", "alice", &na).await.unwrap());
    assert!(!c.unpark("node-a.t1", "alice", "alice", &na).await.unwrap());
    assert_eq!(b.parked("node-a.t1").await.unwrap(), None);
    assert_eq!(a.owner("alice").await.unwrap(), Some(NodeId::new("node-b")));
    // A session not resumed within its grace is gone, and so is its name.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.parked("node-a.t3").await.unwrap(), None);
    assert_eq!(a.owner("carol").await.unwrap(), None);
}

/// A node in a runtime of its own, so that the test can end it as a process ends.
struct Node {
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
    hub: Hub,
}

impl Node {
    async fn start(redis: &RedisServer, id: &str, config: Config) -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a node's runtime");
        let cluster = ClusterConfig::new(redis.url()).with_node(NodeId::new(id));
        let started = runtime.spawn(async move {
            let backend = RedisCluster::connect(cluster).await.expect("join");
            let hub = Hub::new(config.with_cluster(Arc::new(backend)));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(signaling_ws::serve(listener, hub.clone()));
            (hub, addr)
        });
        let (hub, addr) = started.await.expect("node started");
        Node {
            runtime: Some(runtime),
            url: format!("ws://{addr}/"),
            hub,
        }
    }

    /// The node's process ends (after a graceful shutdown, say): its sockets close.
    fn exit(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.exit();
    }
}

async fn login_resumable(url: &str, name: &str) -> (Client, String) {
    let mut c = Client::connect(url).await;
    c.send(json!({"type": "login", "username": name, "resumable": true}))
        .await;
    let reply = c.recv().await;
    assert_eq!(reply["success"], true, "{reply}");
    (c, reply["token"].as_str().expect("a token").to_string())
}

fn candidate(to: &str, n: u32) -> Value {
    json!({"type": "candidate", "candidate": {"candidate": format!("c{n}")}, "otherUsername": to})
}

/// Text frames until the close frame; returns them and the close code.
async fn until_close(client: &mut Client) -> (Vec<Value>, u16) {
    let mut frames = Vec::new();
    loop {
        match patiently("a close frame", client.ws.next()).await {
            Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).expect("JSON")),
            Some(Ok(Message::Close(Some(frame)))) => return (frames, u16::from(frame.code)),
            Some(Ok(_)) => {}
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
}

/// How many subscribers node `id`'s channel has, as Redis sees it.
async fn subscribers(redis: &RedisServer, id: &str) -> u64 {
    let client = signaling_redis::redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let (_, count): (String, u64) = signaling_redis::redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("signaling:node:{id}"))
        .query_async::<Vec<(String, u64)>>(&mut conn)
        .await
        .expect("PUBSUB NUMSUB")
        .pop()
        .expect("one channel");
    count
}

/// A rolling restart: alice on node A is in an answered call with bob on node B, both
/// resumable. A shuts down gracefully: alice's connection is closed with 1012 and bob is told
/// nothing. What bob sends alice while her session is between nodes is refused to him with
/// `unavailable` (nothing is lost without a word); alice resumes through B with her token and
/// the last `seq` her page processed, gets what she had not processed with its `seq`, and the
/// call goes on both ways. bob never gets `close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_keeps_the_call() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    signaling_test_support::init_tracing();
    let config = quiet_config();
    let mut a = Node::start(&redis, "a", config.clone()).await;
    let b = Node::start(&redis, "b", config).await;

    let (mut alice, token) = login_resumable(&a.url, "alice").await;
    assert!(token.starts_with("a."), "tokens name their node: {token}");
    let (mut bob, _) = login_resumable(&b.url, "bob").await;
    alice
        .send(json!({"type": "offer", "offer": {"sdp": "o"}, "otherUsername": "bob"}))
        .await;
    let got = bob.recv().await;
    assert_eq!(
        (got["type"].as_str(), got["seq"].as_u64()),
        (Some("offer"), Some(1))
    );
    bob.send(json!({"type": "answer", "answer": {"sdp": "a"}, "otherUsername": "alice"}))
        .await;
    let got = alice.recv().await;
    assert_eq!(
        (got["type"].as_str(), got["seq"].as_u64()),
        (Some("answer"), Some(1))
    );
    bob.send(candidate("alice", 1)).await;
    let got = alice.recv().await;
    assert_eq!(
        (got["candidate"]["candidate"].as_str(), got["seq"].as_u64()),
        (Some("c1"), Some(2))
    );
    // Sent to alice's old connection; her page will not have processed it.
    bob.send(candidate("alice", 2)).await;
    bob.idle(Duration::from_millis(200)).await;

    let observer = leases(&redis, "observer", TTL).await;
    // Node A shuts down gracefully (SIGTERM).
    let hub = a.hub.clone();
    let runtime = a.runtime.as_ref().expect("running");
    let shutdown = runtime.spawn(async move { hub.shutdown().await });
    let (frames, code) = until_close(&mut alice).await;
    assert_eq!(code, 1012, "service restart: resume elsewhere");
    // Kept before she was told: a client that resumes at once finds its session.
    assert!(observer.parked(&token).await.unwrap().is_some());
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["seq"], 3, "c2 reached the socket, not the page");
    drop(alice);
    patiently("node A's shutdown", shutdown)
        .await
        .expect("shutdown");

    // While alice's session waits for her, bob's messages to her are refused, not lost: first
    // while node A still runs, then once it is gone.
    bob.send(candidate("alice", 3)).await;
    let got = bob.recv().await;
    assert_eq!(
        (got["type"].as_str(), got["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{got}"
    );
    a.exit();
    patiently("node A's subscription to end", async {
        while subscribers(&redis, "a").await > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    bob.send(candidate("alice", 4)).await;
    let got = bob.recv().await;
    assert_eq!(
        (got["type"].as_str(), got["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{got}"
    );
    let bob_seq = got["seq"]
        .as_u64()
        .expect("bob's session numbers its errors");

    // alice resumes through node B with the last seq her page processed.
    let mut alice = Client::connect(&b.url).await;
    alice
        .send(json!({"type": "resume", "token": token, "lastSeq": 2}))
        .await;
    let reply = alice.recv().await;
    assert_eq!(reply["type"], "resume");
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["username"], "alice");
    let new_token = reply["token"].as_str().expect("a new token");
    assert!(new_token.starts_with("b."), "{new_token}");
    let got = alice.recv().await;
    assert_eq!(
        (got["candidate"]["candidate"].as_str(), got["seq"].as_u64()),
        (Some("c2"), Some(3)),
        "what her page missed, with its seq"
    );
    alice.idle(Duration::from_millis(200)).await;

    // The call goes on, both ways, numbering on.
    bob.send(candidate("alice", 5)).await;
    let got = alice.recv().await;
    assert_eq!(
        (got["candidate"]["candidate"].as_str(), got["seq"].as_u64()),
        (Some("c5"), Some(4))
    );
    alice.send(candidate("bob", 6)).await;
    let got = bob.recv().await;
    assert_eq!(
        (got["type"].as_str(), got["username"].as_str()),
        (Some("candidate"), Some("alice"))
    );
    assert_eq!(
        got["seq"].as_u64(),
        Some(bob_seq + 1),
        "nothing else reached bob: no close"
    );
    assert!(
        b.hub
            .with_router(|r| r.is_answered(r.connection_of("alice").unwrap()))
    );
    bob.idle(Duration::from_millis(200)).await;
    // The parked session was taken: the old token is spent. Its node is gone, so whether it
    // had handed the session to someone cannot be asked: `unavailable`, not a guess.
    let mut late = Client::connect(&b.url).await;
    late.send(json!({"type": "resume", "token": token, "lastSeq": 2}))
        .await;
    assert_eq!(late.recv().await["code"], "unavailable");
    // The new token is B's own.
    let mut again = Client::connect(&b.url).await;
    again
        .send(json!({"type": "resume", "token": new_token, "lastSeq": 4}))
        .await;
    assert_eq!(again.recv().await["success"], true);
}
