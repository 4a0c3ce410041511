//! A round-robin TCP load balancer in front of several servers, for cluster tests: the
//! scenarios connect to one URL, as clients of a real deployment do, and their connections go
//! to the nodes in turn (the first to node A, the second to node B, …), so that a scenario
//! written for one server runs unchanged with its users spread over the nodes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running balancer: where to connect, and its accept loop (abort it to stop accepting).
pub struct Balancer {
    /// The address clients connect to.
    pub addr: SocketAddr,
    /// The accept loop.
    pub task: JoinHandle<()>,
    next: Arc<AtomicUsize>,
}

impl Balancer {
    /// Starts a balancer on a free loopback port in front of `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> Balancer {
        assert!(!backends.is_empty(), "a balancer needs a backend");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let next = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&next);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let i = counter.fetch_add(1, Ordering::Relaxed) % backends.len();
                let backend = backends[i];
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(backend).await else {
                        return; // the node is down: the client sees its connection closed
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let mut client = client;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Balancer { addr, task, next }
    }

    /// Sends the next connection to backend `index` (and the ones after it in turn from there).
    pub fn route_next_to(&self, index: usize) {
        self.next.store(index, Ordering::Relaxed);
    }
}
