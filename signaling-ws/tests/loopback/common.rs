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

/// A [`signaling_test_support::Start`] for this adapter over TLS: `signaling_ws::serve_tls` with
/// a fresh self-signed certificate for 127.0.0.1, which the scenarios' clients are told to
/// trust; the URL is `wss://…`.
pub fn start_tls(
    config: Config,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = TestServer> + Send>> {
    signaling_test_support::init_tracing();
    Box::pin(async move {
        let certificate = signaling_ws::tls::SelfSigned::generate(["localhost", "127.0.0.1"])
            .expect("certificate");
        signaling_test_support::trust(certificate.certificate().clone());
        let acceptor = certificate.server_config().expect("TLS config").into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hub = Hub::new(config);
        let serve = signaling_ws::serve_tls(listener, acceptor, hub.clone());
        let task = tokio::spawn(async move { serve.await.expect("serve") });
        TestServer::single(format!("wss://{addr}/any/path"), hub, task)
    })
}
