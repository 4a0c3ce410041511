//! Starts a warp server with `signaling_warp::routes` on a port-0 loopback listener for the
//! shared scenarios.

use signaling_test_support::TestServer;
use signaling_warp::warp::Filter;
use signaling_warp::{Config, Hub};

/// A [`signaling_test_support::Start`] for this adapter: `signaling_warp::routes`.
pub fn start(
    config: Config,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = TestServer> + Send>> {
    signaling_test_support::init_tracing();
    Box::pin(async move {
        let listener = signaling_warp::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hub = Hub::new(config);
        let routes = signaling_warp::routes(hub.clone()).or(signaling_warp::health(hub.clone()));
        let server = signaling_warp::serve(routes, listener, hub.clone());
        let task = tokio::spawn(server);
        TestServer::single(format!("ws://{addr}/ws"), hub, task)
    })
}

/// [`start`] over TLS: `signaling_warp::serve_tls` with a fresh self-signed certificate for
/// 127.0.0.1, which the scenarios' clients are told to trust; the URL is `wss://…/ws`.
pub fn start_tls(
    config: Config,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = TestServer> + Send>> {
    signaling_test_support::init_tracing();
    Box::pin(async move {
        let certificate = signaling_warp::tls::SelfSigned::generate(["localhost", "127.0.0.1"])
            .expect("certificate");
        signaling_test_support::trust(certificate.certificate().clone());
        let acceptor = certificate.server_config().expect("TLS config").into();
        let listener = signaling_warp::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hub = Hub::new(config);
        let routes = signaling_warp::routes(hub.clone());
        let server = signaling_warp::serve_tls(routes, listener, acceptor, hub.clone());
        let task = tokio::spawn(server);
        TestServer::single(format!("wss://{addr}/ws"), hub, task)
    })
}

/// Like [`start`], but through warp's own `Ws` upgrade and the [`signaling_warp::Warp`]
/// transport ([`signaling_warp::serve_websocket`]).
pub fn start_warp_ws(
    config: Config,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = TestServer> + Send>> {
    signaling_test_support::init_tracing();
    Box::pin(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hub = Hub::new(config);
        let route_hub = hub.clone();
        let route = signaling_warp::warp::path("ws")
            .and(signaling_warp::warp::ws())
            .map(move |ws: signaling_warp::warp::ws::Ws| {
                let hub = route_hub.clone();
                signaling_warp::configure(ws, hub.config()).on_upgrade(move |socket| {
                    signaling_warp::serve_websocket(
                        socket,
                        hub,
                        signaling_warp::ConnectionInfo::new(),
                    )
                })
            });
        let server = signaling_warp::warp::serve(route)
            .incoming(listener)
            .graceful(hub.shutdown_started())
            .run();
        let task = tokio::spawn(server);
        TestServer::single(format!("ws://{addr}/ws"), hub, task)
    })
}
