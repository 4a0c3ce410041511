//! Starts a `signaling-ws` server on a port-0 loopback listener for the shared scenarios.

use signaling_test_support::TestServer;
use signaling_ws::{Config, Hub};

/// A [`signaling_test_support::Start`] for this adapter.
pub fn start(
    config: Config,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = TestServer> + Send>> {
    signaling_test_support::init_tracing();
    Box::pin(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hub = Hub::new(config);
        let serve = signaling_ws::serve(listener, hub.clone());
        let task = tokio::spawn(async move { serve.await.expect("serve") });
        TestServer::single(format!("ws://{addr}/any/path"), hub, task)
    })
}
