//! What an operator sees of a cluster (issue 12): `/readyz` false while the node's Redis is
//! unreachable and true again when it is back, and the cluster's metrics (Redis reachability,
//! envelopes between nodes; a relay counted once, on the node that delivers it).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use signaling_core::driver::metrics::Metrics;
use signaling_core::driver::observe::Observer;
use signaling_redis::testing::RedisServer;
use signaling_test_support::ops::{http_get, scrape};
use signaling_test_support::{patiently, quiet_config};

use crate::nodes::{Node, try_login};

fn value(metrics: &Metrics, node: &Node, series: &str) -> f64 {
    scrape(&metrics.render(&node.hub))
        .get(series)
        .copied()
        .unwrap_or(0.0)
}

async fn start(redis: &RedisServer, id: &str) -> (Node, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let observer: Arc<dyn Observer> = metrics.clone();
    let config = quiet_config().with_observer(Some(observer));
    let node = Node::start_with(&redis.url(), id, Duration::from_secs(3), config).await;
    (node, metrics)
}

async fn readyz(node: &Node) -> u16 {
    http_get(&node.url, "/readyz")
        .await
        .expect("an answer")
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_metrics_follow_redis() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, metrics_a) = start(&redis, "a").await;
    let (b, metrics_b) = start(&redis, "b").await;
    assert_eq!(readyz(&a).await, 200);
    assert_eq!(value(&metrics_a, &a, "signaling_cluster_up"), 1.0);

    let (mut alice, _) = try_login(&a.url, "alice").await;
    let (mut bob, _) = try_login(&b.url, "bob").await;
    let out = "signaling_cluster_envelopes_total{direction=\"out\"}";
    let arrived = "signaling_cluster_envelopes_total{direction=\"in\"}";
    let offers = "signaling_messages_relayed_total{kind=\"offer\"}";
    let (out_before, in_before) = (value(&metrics_a, &a, out), value(&metrics_b, &b, arrived));
    alice
        .send(json!({"type": "offer", "offer": {"sdp": "v=0"}, "otherUsername": "bob"}))
        .await;
    assert_eq!(bob.recv().await["type"], "offer");
    // The offer left a and arrived at b; it was relayed (delivered) once, on b.
    assert!(value(&metrics_a, &a, out) > out_before);
    assert!(value(&metrics_b, &b, arrived) > in_before);
    assert_eq!(value(&metrics_b, &b, offers), 1.0);
    assert_eq!(value(&metrics_a, &a, offers), 0.0);

    redis.kill();
    patiently("a to see Redis gone", async {
        while readyz(&a).await != 503 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let answer = http_get(&a.url, "/readyz").await.expect("an answer");
    assert!(answer.body.contains("unreachable"), "{answer:?}");
    assert_eq!(value(&metrics_a, &a, "signaling_cluster_up"), 0.0);
    // Liveness is not readiness: the process still answers.
    assert_eq!(
        http_get(&a.url, "/healthz")
            .await
            .expect("an answer")
            .status,
        200
    );

    redis.restart();
    patiently("a to be ready again", async {
        while readyz(&a).await != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(value(&metrics_a, &a, "signaling_cluster_up"), 1.0);
    drop(alice);
}
