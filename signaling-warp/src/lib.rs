//! # signaling-warp
//!
//! The `signaling` WebRTC signaling server as [warp] filters that you `.or()` into your own
//! app ("compose, don't own the server"). Every connection runs on the shared driver of
//! `signaling-core` ([`Hub`]).
//!
//! ## Embedding
//!
//! Signaling at `/ws` next to your own routes, shut down gracefully on Ctrl-C:
//!
//! ```no_run
//! use signaling_warp::{warp, Config, Hub};
//! use warp::Filter;
//!
//! # async fn run() -> std::io::Result<()> {
//! let config = Config::default()
//!     .with_allowed_origins(Some(vec!["https://app.example.com".into()]));
//! let hub = Hub::new(config);
//! let app = warp::path("health")
//!     .map(|| "ok")
//!     .or(signaling_warp::routes(hub.clone()));
//!
//! // A listener whose connections have TCP_NODELAY (see `bind`), served by `serve`, which
//! // bounds every phase of a connection (warp's own server leaves request heads unbounded).
//! let listener = signaling_warp::bind("127.0.0.1:8080".parse().unwrap()).await?;
//! let server = tokio::spawn(signaling_warp::serve(app, listener, hub.clone()));
//! tokio::signal::ctrl_c().await?;
//! hub.shutdown().await; // drain and close every WebSocket with 1001
//! let _ = server.await; // the HTTP side ends within the shutdown timeout
//! # Ok(()) }
//! ```
//!
//! At another path, use the bare [`ws`] filter: `warp::path!("api" / "signal").and(ws(hub))`.
//! [`health`] adds `GET /healthz` and `GET /readyz` for a load balancer.
//!
//! ## TLS
//!
//! warp 0.4 has no TLS of its own. With the `tls` feature (on by default) [`serve_tls`] puts
//! tokio-rustls in front of the same bounded HTTP/1.1 connections as [`serve`]: your routes over
//! `https://`, signaling over `wss://`. The [`tls`] module (`signaling_ws::tls`, re-exported
//! with `rustls` and `tokio-rustls`) builds the configuration from PEM files or a development
//! certificate made at start.
//!
//! ## How the upgrade is done
//!
//! [`ws`] takes every `GET` with `Upgrade: websocket` (other requests are left to your other
//! routes), checks that it is a well-formed WebSocket handshake
//! ([`UpgradeRequest::check_handshake`]: a 16-byte `Sec-WebSocket-Key`, version 13, a
//! connection hyper can upgrade, which means HTTP/1.1), then asks [`Hub::admit`]: the origin
//! allowlist, the connection caps and the authenticator of the [`Config`]. A refused request
//! gets its HTTP status (400, 426, 403, 503, 429, 401) and a one-line plain-text body, and is
//! never upgraded. An admitted one is upgraded on tokio-tungstenite
//! with [`signaling_ws::websocket_config`]: the hub's size limits **and** small read/write
//! buffers, over [`signaling_ws::ReadAhead`] (large socket reads, no buffer kept while idle).
//! (warp's `Ws` can set the size limits but not the buffers: its connections carry a 128 KiB
//! read buffer each, about 140 KB of memory per idle connection against about 4 KB this way.)
//!
//! If you already hold a [`warp::ws::WebSocket`] from your own `warp::ws()` route,
//! [`serve_websocket`] runs it on the hub through the [`Warp`] transport; apply the limits
//! with [`configure`]. That path skips the origin check and the authenticator (see its docs).

use std::error::Error as _;
use std::io;
use std::net::SocketAddr;

use hyper::upgrade::OnUpgrade;
pub use signaling_core::driver::auth;
/// STUN and TURN servers for the login replies ([`Config::ice_servers`]): TURN REST credentials.
pub use signaling_core::driver::ice;
pub use signaling_core::driver::{Admission, Config, ConnectionInfo, Hub, Refusal, UpgradeRequest};
use signaling_core::driver::{Inbound, Outbound, Transport};
use signaling_ws::Tungstenite;
/// TLS: server configurations from PEM files or a development certificate, and the rustls
/// crates ([`signaling_ws::tls`], re-exported so that versions match).
#[cfg(feature = "tls")]
pub use signaling_ws::tls;
use signaling_ws::tokio_tungstenite::WebSocketStream;
use signaling_ws::tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use signaling_ws::tokio_tungstenite::tungstenite::protocol::Role;
pub use signaling_ws::{Handshake, Plain};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
pub use warp;
use warp::filters::path::FullPath;
use warp::filters::ws::{Message, WebSocket, Ws};
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// Upgrades a WebSocket request (at whatever path it is mounted) and runs it on `hub`, after
/// [`UpgradeRequest::check_handshake`] and [`Hub::admit`] accepted it; a refused request gets
/// the refusal's HTTP status and a short plain-text body. Rejects requests that are not a
/// `GET` with `Upgrade: websocket` (with warp's rejections), so it composes with `.or()`.
pub fn ws(hub: Hub) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let query = warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    // A GET with `Upgrade: websocket` is a WebSocket request: from here on it is answered
    // (101, or a refusal with its status); anything else is rejected for other routes.
    warp::get()
        .and(warp::header::exact_ignore_case("upgrade", "websocket"))
        .and(warp::ext::optional::<OnUpgrade>())
        .and(remote_addr())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .then(
            move |on_upgrade: Option<OnUpgrade>,
                  addr: Option<SocketAddr>,
                  path: FullPath,
                  query: Option<String>,
                  headers: HeaderMap| {
                let hub = hub.clone();
                async move {
                    let request = upgrade_request(&path, query, &headers, addr);
                    if let Err(refusal) = request.check_handshake() {
                        hub.note_refusal(&refusal);
                        return refuse(&refusal);
                    }
                    // hyper hands out an upgrade handle only for an HTTP/1.1 request with an
                    // `Upgrade` header (or HTTP/2's extended CONNECT): without one (HTTP/1.0, or
                    // a `warp::test` request) a 101 would upgrade nothing.
                    let Some(on_upgrade) = on_upgrade else {
                        let refusal = Refusal::BadHandshake("HTTP/1.1 or later required");
                        hub.note_refusal(&refusal);
                        return refuse(&refusal);
                    };
                    match hub.admit(&request).await {
                        Ok(admission) => accept(on_upgrade, &request, hub, admission),
                        Err(refusal) => refuse(&refusal),
                    }
                }
            },
        )
}

/// The TCP peer's address of a request, under [`serve`] (which records it) or warp's own server
/// (`warp::addr::remote()`, which [`serve`] cannot fill: warp keeps that type private). Use it
/// instead of `warp::addr::remote()` in routes served by [`serve`].
pub fn remote_addr()
-> impl Filter<Extract = (Option<SocketAddr>,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<PeerAddr>()
        .and(warp::addr::remote())
        .map(|ours: Option<PeerAddr>, warps: Option<SocketAddr>| ours.map(|p| p.0).or(warps))
}

/// The TCP peer's address, put in each request's extensions by [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `filter` (your app, with [`routes`] or [`ws`] in it) over HTTP/1.1 on `listener`
/// until `hub` shuts down, with every phase of a connection bounded, which warp's own server
/// does not do:
///
/// - each TCP connection holds a pending-request slot until its request is upgraded or it
///   closes ([`Config::max_pending_requests`] in all and per address; over them a new
///   connection is closed at once), so idle and dribbling sockets cannot use up the file
///   descriptors;
/// - a request head must arrive whole within [`Config::handshake_timeout`] (hyper's header
///   read timeout, which also closes an idle keep-alive connection) and within
///   [`signaling_ws::MAX_REQUEST_HEAD`] bytes (larger: 431);
/// - when [`Hub::shutdown`] starts it stops accepting, asks every HTTP connection to finish
///   its request and close, and returns within [`Config::shutdown_timeout`], dropping those
///   left (upgraded WebSockets are the hub's: `Hub::shutdown` closes them).
///
/// Sockets get `TCP_NODELAY` and [`Config::tcp_buffer_size`]
/// ([`signaling_ws::tune_tcp`]). Routes that need the client's address use
/// [`remote_addr`].
///
/// ```no_run
/// use signaling_warp::{warp, Hub};
/// use warp::Filter;
///
/// # async fn run() -> std::io::Result<()> {
/// let hub = Hub::default();
/// let app = warp::path("health").map(|| "ok").or(signaling_warp::routes(hub.clone()));
/// let listener = signaling_warp::bind("127.0.0.1:8080".parse().unwrap()).await?;
/// let server = tokio::spawn(signaling_warp::serve(app, listener, hub.clone()));
/// tokio::signal::ctrl_c().await?;
/// hub.shutdown().await; // drain and close every WebSocket with 1001
/// let _ = server.await; // the HTTP side is done within the shutdown timeout too
/// # Ok(()) }
/// ```
pub async fn serve<F, R>(filter: F, listener: TcpListener, hub: Hub)
where
    F: Filter<Extract = (R,), Error = Rejection> + Clone + Send + Sync + 'static,
    R: Reply,
{
    serve_with(filter, listener, Plain, hub).await;
}

/// [`serve`] over TLS (`https://` and `wss://`): each connection's TLS handshake runs first,
/// within [`Config::handshake_timeout`] and holding the connection's pending-request slot, then
/// HTTP/1.1 as in [`serve`]. A client that stalls its TLS handshake, or speaks plain HTTP or
/// anything else to this port, is dropped (logged at debug level) without delaying others.
///
/// warp 0.4 has no TLS of its own; this is tokio-rustls in front of the same hyper connection.
/// Build the acceptor from a [`tls::server_config`] (or [`tls::server_config_from_pem`],
/// [`tls::SelfSigned`]); a `ServerConfig` of your own must not offer `h2` by ALPN.
///
/// ```no_run
/// use signaling_warp::{tls, warp, Hub};
/// use warp::Filter;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::default();
/// let app = warp::path("health").map(|| "ok").or(signaling_warp::routes(hub.clone()));
/// let config = tls::server_config_from_pem("fullchain.pem", "privkey.pem")?;
/// let listener = signaling_warp::bind("0.0.0.0:443".parse()?).await?;
/// let server = tokio::spawn(signaling_warp::serve_tls(app, listener, config.into(), hub.clone()));
/// tokio::signal::ctrl_c().await?;
/// hub.shutdown().await;
/// let _ = server.await;
/// # Ok(()) }
/// ```
#[cfg(feature = "tls")]
pub async fn serve_tls<F, R>(filter: F, listener: TcpListener, acceptor: tls::TlsAcceptor, hub: Hub)
where
    F: Filter<Extract = (R,), Error = Rejection> + Clone + Send + Sync + 'static,
    R: Reply,
{
    serve_with(filter, listener, acceptor, hub).await;
}

/// [`serve`] with a [`Handshake`] run on every connection before HTTP ([`serve_tls`]: a TLS
/// handshake), within [`Config::handshake_timeout`] and holding the connection's
/// pending-request slot; it is abandoned when [`Hub::shutdown`] starts.
pub async fn serve_with<F, R, H>(filter: F, listener: TcpListener, handshake: H, hub: Hub)
where
    F: Filter<Extract = (R,), Error = Rejection> + Clone + Send + Sync + 'static,
    R: Reply,
    H: Handshake<TcpStream> + Clone + 'static,
    H::Stream: 'static,
{
    let service = warp::service(filter);
    let mut connections = tokio::task::JoinSet::new();
    // Accepting goes on through the shutdown's drain (each connection then serves one request:
    // `/readyz` says 503, upgrades are refused with 503) and stops once it is over.
    let stop = hub.shutdown_finished();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let (tcp, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let pending = match hub.pending_request(Some(addr.ip())) {
            Ok(pending) => pending,
            Err(refusal) => {
                tracing::debug!(%addr, %refusal, "connection closed before its request");
                continue;
            }
        };
        signaling_ws::tune_tcp(&tcp, hub.config());
        connections.spawn(serve_http(
            tcp,
            handshake.clone(),
            addr,
            service.clone(),
            hub.clone(),
            pending,
        ));
    }
    // What is left is a request being answered (the hub's connections are gone).
    let timeout = hub.config().close_timeout;
    let drained = tokio::time::timeout(timeout, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::debug!(
            left = connections.len(),
            "shutdown timeout: dropping HTTP connections"
        );
        connections.shutdown().await;
    }
}

/// One HTTP connection of [`serve_with`], holding its pending-request slot until it ends (an
/// upgrade ends it: the WebSocket then runs on the hub): the handshake step, then hyper.
async fn serve_http<S, H>(
    tcp: TcpStream,
    handshake: H,
    addr: SocketAddr,
    service: S,
    hub: Hub,
    pending: signaling_core::driver::PendingRequest,
) where
    S: tower_service::Service<
            warp::http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    H: Handshake<TcpStream>,
    H::Stream: 'static,
{
    let deadline = hub.config().handshake_timeout;
    let io = tokio::select! {
        io = tokio::time::timeout(deadline, handshake.handshake(tcp)) => match io {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "handshake failed before the request");
                return;
            }
            Err(_) => {
                tracing::debug!(%addr, "handshake timed out before the request");
                return;
            }
        },
        () = hub.shutdown_finished() => return,
    };
    let service = hyper::service::service_fn(move |mut request| {
        request.extensions_mut().insert(PeerAddr(addr));
        let mut service = service.clone();
        service.call(request)
    });
    // A connection accepted during the shutdown's drain serves one request and closes; one
    // accepted before finishes the request it is on (hyper's graceful shutdown).
    let draining = hub.is_shutting_down();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(hub.config().handshake_timeout)
        .max_buf_size(signaling_ws::MAX_REQUEST_HEAD)
        .keep_alive(!draining);
    let io = hyper_util::rt::TokioIo::new(io);
    let connection = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let shutdown = async {
        if draining {
            hub.shutdown_finished().await;
        } else {
            hub.shutdown_started().await;
        }
    };
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = shutdown => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%addr, error = %e, "HTTP connection ended");
    }
    drop(pending);
}

/// The driver's view of the request.
fn upgrade_request(
    path: &FullPath,
    query: Option<String>,
    headers: &HeaderMap,
    addr: Option<SocketAddr>,
) -> UpgradeRequest {
    let mut request = UpgradeRequest::new(path.as_str())
        .with_query(query)
        .with_remote_addr(addr);
    for (name, value) in headers {
        request = request.with_header(name.as_str(), String::from_utf8_lossy(value.as_bytes()));
    }
    request
}

/// The 101 answer to a request that passed [`UpgradeRequest::check_handshake`]; the
/// connection runs once hyper hands it over.
fn accept(
    on_upgrade: OnUpgrade,
    request: &UpgradeRequest,
    hub: Hub,
    admission: Admission,
) -> Response {
    tokio::spawn(run_upgraded(on_upgrade, hub, admission));
    let key = request
        .header("sec-websocket-key")
        .unwrap_or_default()
        .trim();
    let accept = derive_accept_key(key.as_bytes());
    let reply = warp::reply::with_status(warp::reply(), StatusCode::SWITCHING_PROTOCOLS);
    let reply = warp::reply::with_header(reply, "connection", "upgrade");
    let reply = warp::reply::with_header(reply, "upgrade", "websocket");
    warp::reply::with_header(reply, "sec-websocket-accept", accept).into_response()
}

/// The refusal's status, headers and one-line body.
fn refuse(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = warp::reply::with_status(format!("{refusal}\n"), status).into_response();
    for (name, value) in refusal.headers() {
        response
            .headers_mut()
            .insert(*name, warp::http::HeaderValue::from_static(value));
    }
    response
}

/// A TCP listener on `addr` for `warp::serve(…).incoming(…)` whose connections have
/// `TCP_NODELAY`: signaling messages are small and each one waits for a reply, so Nagle's
/// algorithm (which warp's server leaves on) holds them back for up to a delayed-ACK period
/// (tens of milliseconds). The option is set on the listening socket, which Linux, the BSDs,
/// macOS and Windows copy to every accepted socket; it also sets `SO_REUSEADDR` on Unix and a
/// backlog of 1,024, as [`TcpListener::bind`] does.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Signaling at `/ws`: [`ws`] mounted at that path.
pub fn routes(hub: Hub) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path("ws").and(warp::path::end()).and(ws(hub))
}

/// Health checks for a load balancer or an orchestrator: `GET /healthz` answers `200 ok`
/// while the process runs (liveness); `GET /readyz` answers `200 ready` while the hub takes
/// new connections, `503` with the reason otherwise ([`Hub::is_ready`]: not once a shutdown
/// has started, not while a cluster backend is unreachable). Under [`serve`] the listener
/// keeps answering them through the shutdown's drain.
pub fn health(hub: Hub) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path::full())
        .and_then(move |path: FullPath| {
            let answer = hub.health_check(path.as_str());
            async move {
                match answer {
                    Some((status, body)) => {
                        let status = StatusCode::from_u16(status)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        Ok(warp::reply::with_status(format!("{body}\n"), status))
                    }
                    None => Err(warp::reject::not_found()),
                }
            }
        })
}

/// Waits for hyper to hand over the upgraded connection (after the 101 went out), then runs
/// it. The admission's slot is held throughout and given back however this ends.
async fn run_upgraded(on_upgrade: OnUpgrade, hub: Hub, admission: Admission) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(addr = ?admission.connection_info().remote_addr, error = %e, "upgrade failed");
            return;
        }
    };
    let io = signaling_ws::ReadAhead::new(hyper_util::rt::TokioIo::new(upgraded));
    let config = signaling_ws::websocket_config(hub.config());
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    hub.serve_admitted::<Tungstenite, _>(socket, admission)
        .await;
}

/// The [`Transport`] for warp's own WebSocket: how `warp::ws::Message` maps to the driver's
/// frames. Used by [`serve_websocket`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Warp;

impl Transport for Warp {
    type Message = Message;
    type Error = warp::Error;

    fn inbound(message: &Message) -> Inbound<'_> {
        if let Ok(text) = message.to_str() {
            Inbound::Text(text)
        } else if message.is_binary() {
            Inbound::Binary(message.as_bytes().len())
        } else if message.is_pong() {
            Inbound::Pong(message.as_bytes())
        } else if message.is_close() {
            Inbound::Close
        } else {
            Inbound::Ping
        }
    }

    fn outbound(frame: Outbound) -> Message {
        match frame {
            Outbound::Text(text) => Message::text(text),
            Outbound::Ping(payload) => Message::ping(payload.to_vec()),
            Outbound::Close(close) => Message::close_with(close.code, close.reason),
            // Unknown future frames: a harmless empty pong.
            _ => Message::pong(Vec::new()),
        }
    }

    fn is_too_large(error: &warp::Error) -> bool {
        // warp wraps the tungstenite error it gets; see the `warp-tungstenite` dependency.
        error
            .source()
            .and_then(|source| source.downcast_ref::<warp_tungstenite::Error>())
            .is_some_and(|e| matches!(e, warp_tungstenite::Error::Capacity(_)))
    }
}

/// Applies the hub's size limits to a warp upgrade (for [`serve_websocket`]).
pub fn configure(ws: Ws, config: &Config) -> Ws {
    ws.max_message_size(config.max_message_size)
        .max_frame_size(config.max_frame_size)
}

/// Runs a WebSocket that your own `warp::ws()` route upgraded on `hub`. It counts against the
/// connection caps of `info.remote_addr`, but as the upgrade already happened, a socket over
/// them is closed with 1013 rather than refused with an HTTP status, and neither the origin
/// allowlist nor the authenticator is consulted: prefer [`ws`], or check the request with
/// [`Hub::admit`] in your route and run the socket with `hub.serve_admitted::<Warp, _>`.
///
///
/// ```no_run
/// use signaling_warp::{warp, ConnectionInfo, Hub};
/// use warp::Filter;
///
/// let hub = Hub::default();
/// let route = warp::path("signal").and(warp::ws()).map(move |ws: warp::ws::Ws| {
///     let hub = hub.clone();
///     signaling_warp::configure(ws, hub.config())
///         .on_upgrade(move |socket| signaling_warp::serve_websocket(socket, hub, ConnectionInfo::new()))
/// });
/// ```
pub fn serve_websocket(
    socket: WebSocket,
    hub: Hub,
    info: ConnectionInfo,
) -> impl Future<Output = ()> + Send + 'static {
    hub.serve_connection::<Warp, _>(socket, info)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY not inherited");
        drop(client);
    }
}
