//! Cluster nodes for the fault tests: each node runs in a Tokio runtime of its own, so that
//! killing it ([`Node::kill`]: the runtime is shut down at once) is what `kill -9` does to a
//! process — its sockets close, it releases nothing, it stops refreshing its leases and its
//! subscription goes away. And a TCP link to Redis that a test can cut ([`Link`]), for a node
//! partitioned from Redis while the other nodes still reach it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use signaling_redis::cluster::{ClusterConfig, RedisCluster};
use signaling_redis::lease::NodeId;
use signaling_test_support::{Client, quiet_config};
use signaling_ws::{Config, Hub};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Message;

/// One node: a `signaling-ws` server in cluster mode, in its own runtime.
pub struct Node {
    runtime: Option<tokio::runtime::Runtime>,
    /// Where clients connect (`ws://…/`).
    pub url: String,
    /// The node's hub.
    pub hub: Hub,
    /// Its cluster backend.
    pub backend: RedisCluster,
}

impl Node {
    /// Starts node `id` on the Redis at `redis_url` with lease `ttl`.
    pub async fn start(redis_url: &str, id: &str, ttl: Duration) -> Node {
        Node::start_with(redis_url, id, ttl, quiet_config()).await
    }

    /// [`start`](Self::start) with a driver configuration.
    pub async fn start_with(redis_url: &str, id: &str, ttl: Duration, config: Config) -> Node {
        signaling_test_support::init_tracing();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a node's runtime");
        let cluster = ClusterConfig::new(redis_url)
            .with_node(NodeId::new(id))
            .with_ttl(ttl);
        let started = runtime.spawn(async move {
            let backend = RedisCluster::connect(cluster)
                .await
                .expect("join the cluster");
            let hub = Hub::new(config.with_cluster(Arc::new(backend.clone())));
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(signaling_ws::serve(listener, hub.clone()));
            (hub, addr, backend)
        });
        let (hub, addr, backend) = started.await.expect("node started");
        Node {
            runtime: Some(runtime),
            url: format!("ws://{addr}/"),
            hub,
            backend,
        }
    }

    /// The node dies at once, as with `kill -9`.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP link from a node to Redis that the test can cut and restore.
pub struct Link {
    /// The Redis URL to give the node (the link's end).
    pub url: String,
    state: Arc<Mutex<LinkState>>,
    accept: AbortHandle,
}

#[derive(Default)]
struct LinkState {
    cut: bool,
    pipes: Vec<AbortHandle>,
}

impl Link {
    /// A link to the Redis at `port`.
    pub async fn to(port: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(LinkState::default()));
        let shared = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if shared.lock().unwrap().cut {
                    drop(inbound); // refused, as by a partition that resets
                    continue;
                }
                let pipe = tokio::spawn(async move {
                    let to: SocketAddr = ([127, 0, 0, 1], port).into();
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                shared.lock().unwrap().pipes.push(pipe.abort_handle());
            }
        })
        .abort_handle();
        Link {
            url: format!("redis://{addr}/"),
            state,
            accept,
        }
    }

    /// Cuts the link: open connections drop, new ones are refused.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for pipe in state.pipes.drain(..) {
            pipe.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The next text frame within `wait`, parsed; `None` if none came (pings skipped). Panics if
/// the connection ends.
pub async fn next_within(client: &mut Client, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, client.ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(serde_json::from_str(&t).expect("server sent JSON"));
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Logs in as `name` on `url`; the login reply.
pub async fn try_login(url: &str, name: &str) -> (Client, Value) {
    let mut c = Client::connect(url).await;
    c.send(serde_json::json!({"type": "login", "username": name}))
        .await;
    let reply = c.recv().await;
    (c, reply)
}
