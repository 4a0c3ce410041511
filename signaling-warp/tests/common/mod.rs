//! Starts a warp server with `signaling_warp::routes` on a port-0 loopback listener for the
//! shared scenarios.

use signaling_test_support::TestServer;
use signaling_warp::{Config, Hub};

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
        let server = signaling_warp::warp::serve(signaling_warp::routes(hub.clone()))
            .incoming(listener)
            .graceful(hub.shutdown_started())
            .run();
        let task = tokio::spawn(server);
        TestServer {
            url: format!("ws://{addr}/ws"),
            hub,
            task,
        }
    })
}
