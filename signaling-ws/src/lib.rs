//! # signaling-ws
//!
//! The `signaling` WebRTC signaling server over raw
//! [tokio-tungstenite](tokio_tungstenite): accept TCP connections yourself, or hand in a
//! `WebSocketStream` your own hyper/axum server already upgraded. Every connection runs on the
//! shared driver of `signaling-core` ([`Hub`]); this crate only maps tungstenite messages to
//! the driver's frames ([`Tungstenite`]) and runs the handshake.
//!
//! ## Embedding
//!
//! A complete server on a `TcpListener` (any request path is accepted), shut down gracefully
//! on Ctrl-C:
//!
//! ```no_run
//! use signaling_ws::{Config, Hub};
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! let config = Config::default()
//!     .with_allowed_origins(Some(vec!["https://app.example.com".into()]));
//! let hub = Hub::new(config);
//! let server = tokio::spawn(signaling_ws::serve(listener, hub.clone()));
//! tokio::signal::ctrl_c().await?;
//! hub.shutdown().await; // stop accepting, drain, close every client with 1001
//! server.await??;
//! # Ok(()) }
//! ```
//!
//! ## TLS
//!
//! With the `tls` feature (on by default) [`serve_tls`] serves `wss://` on rustls: the TLS
//! handshake runs inside the handshake timeout below, holding a pending-request slot, so a
//! client that stalls it or speaks plain HTTP to the port is dropped without delaying others.
//! The [`tls`] module builds the rustls configuration from PEM files
//! ([`tls::server_config_from_pem`]) or from a development certificate made at start
//! ([`tls::SelfSigned`]), and re-exports `rustls` and `tokio-rustls`. Anything else that must
//! run before the HTTP request (another TLS library, a PROXY protocol header) is a
//! [`Handshake`] for [`serve_with`] and [`serve_io_with`].
//!
//! ## The handshake
//!
//! [`serve_io`] reads the HTTP request itself (at most [`MAX_REQUEST_HEAD`] bytes, within
//! [`Config::handshake_timeout`]) and asks [`Hub::admit`] before it upgrades: the origin
//! allowlist, the connection caps and the authenticator of the [`Config`]. A refused request
//! gets its HTTP status (403, 503, 429, 401) and a one-line plain-text body, and the
//! connection is closed; a request that is not a well-formed WebSocket upgrade
//! ([`UpgradeRequest::check_handshake`]: HTTP/1.1, a 16-byte `Sec-WebSocket-Key`, version 13)
//! gets 400, or 426 for another WebSocket version. Only then is the `101 Switching Protocols`
//! sent.
//!
//! ## Health checks
//!
//! A plain `GET /healthz` (no `Upgrade` header) is answered `200 ok` while the process runs,
//! and `GET /readyz` `200 ready` while the hub takes new connections, `503` otherwise
//! ([`Hub::is_ready`]: not once a shutdown has started, not while a cluster backend is
//! unreachable). The accept loop of [`serve`] keeps going through the shutdown's drain, so a
//! load balancer sees `/readyz` fail (and new upgrades get 503) rather than refused
//! connections, and stops once [`Hub::shutdown`] has returned.
//!
//! If you upgrade sockets yourself, do the same: build an [`UpgradeRequest`] from your HTTP
//! request, call [`UpgradeRequest::check_handshake`] and [`Hub::admit`], answer a [`Refusal`]
//! with its status and headers, or upgrade with
//! [`websocket_config`] and run the socket with [`serve_admitted`] (which keeps the verified
//! username and the connection slot of the [`Admission`]). A stream handed to
//! [`serve_stream`] without that only counts against the caps (and is closed with 1013 when
//! they are full).
//!
//! ```no_run
//! use signaling_ws::{tokio_tungstenite, Hub, UpgradeRequest};
//!
//! # async fn run(tcp: tokio::net::TcpStream, hub: Hub, request: UpgradeRequest) -> Result<(), tokio_tungstenite::tungstenite::Error> {
//! // `request` describes the HTTP request your server read.
//! match hub.admit(&request).await {
//!     Err(refusal) => { /* answer with refusal.status() and refusal.to_string() */ }
//!     Ok(admission) => {
//!         let config = signaling_ws::websocket_config(hub.config());
//!         let ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
//!         tokio::spawn(signaling_ws::serve_admitted(ws, hub, admission));
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The protocol, limits and defaults are those of [`Config`].

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, create_response, write_response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

pub use read_ahead::{READ_AHEAD, ReadAhead};
pub use signaling_core::driver::auth;
/// STUN and TURN servers for the login replies ([`Config::ice_servers`]): TURN REST credentials.
pub use signaling_core::driver::ice;
pub use signaling_core::driver::{Admission, Config, ConnectionInfo, Hub, Refusal, UpgradeRequest};
pub use tokio_tungstenite;
/// tungstenite's WebSocket settings (buffer sizes, message and frame limits).
pub use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use signaling_core::driver::{Inbound, Outbound, Transport};

mod read_ahead;
#[cfg(feature = "tls")]
pub mod tls;

/// The [`Transport`] for tungstenite messages: how `tungstenite::Message` maps to the driver's
/// frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tungstenite;

impl Transport for Tungstenite {
    type Message = Message;
    type Error = tungstenite::Error;

    fn inbound(message: &Message) -> Inbound<'_> {
        match message {
            Message::Text(text) => Inbound::Text(text.as_str()),
            Message::Binary(bytes) => Inbound::Binary(bytes.len()),
            Message::Ping(_) | Message::Frame(_) => Inbound::Ping,
            Message::Pong(payload) => Inbound::Pong(payload),
            Message::Close(_) => Inbound::Close,
        }
    }

    fn outbound(frame: Outbound) -> Message {
        match frame {
            Outbound::Text(text) => Message::Text(text.into()),
            Outbound::Ping(payload) => Message::Ping(payload.to_vec().into()),
            Outbound::Close(close) => Message::Close(Some(CloseFrame {
                code: CloseCode::from(close.code),
                reason: Utf8Bytes::from_static(close.reason),
            })),
            // Unknown future frames: a harmless empty pong.
            _ => Message::Pong(Default::default()),
        }
    }

    fn is_too_large(error: &tungstenite::Error) -> bool {
        matches!(error, tungstenite::Error::Capacity(_))
    }
}

/// tungstenite settings from the driver's [`Config`]: message and frame limits, small read
/// and write buffers. Use it when you upgrade sockets yourself.
pub fn websocket_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_frame_size))
}

/// Accepts connections on `listener` until [`Hub::shutdown`] starts, each in its own task:
/// the WebSocket handshake (any request path; see [`serve_io`]), then the driver. Returns `Ok`
/// when shutdown starts; the hub's `shutdown` waits for the connections.
///
/// Accept errors (such as running out of file descriptors) are logged and retried after a
/// short pause; they never end the loop.
pub async fn serve(listener: TcpListener, hub: Hub) -> io::Result<()> {
    serve_with(listener, Plain, hub).await
}

/// [`serve`] over TLS (`wss://`): each connection's TLS handshake runs inside
/// [`Config::handshake_timeout`] while it holds a pending-request slot, then the WebSocket
/// handshake as in [`serve_io`]. A client that stalls its TLS handshake, or speaks plain HTTP
/// or anything else to this port, is dropped (logged at debug level) without delaying others.
///
/// Build the acceptor from a [`tls::server_config`] (or [`tls::server_config_from_pem`],
/// [`tls::SelfSigned`]): `tls::TlsAcceptor::from(config)`.
///
/// ```no_run
/// use signaling_ws::{tls, Hub};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = tls::server_config_from_pem("fullchain.pem", "privkey.pem")?;
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
/// let hub = Hub::default();
/// let server = tokio::spawn(signaling_ws::serve_tls(listener, config.into(), hub.clone()));
/// tokio::signal::ctrl_c().await?;
/// hub.shutdown().await;
/// server.await??;
/// # Ok(()) }
/// ```
#[cfg(feature = "tls")]
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: tls::TlsAcceptor,
    hub: Hub,
) -> io::Result<()> {
    serve_with(listener, acceptor, hub).await
}

/// [`serve`] with a [`Handshake`] run on every connection before its HTTP request (TLS:
/// [`serve_tls`]), inside [`Config::handshake_timeout`] and holding a pending-request slot
/// ([`serve_io_with`]).
pub async fn serve_with<H>(listener: TcpListener, handshake: H, hub: Hub) -> io::Result<()>
where
    H: Handshake<TcpStream> + Clone + 'static,
    H::Stream: 'static,
{
    // Accepting goes on through the shutdown's drain: health checks are answered (`/readyz`
    // says 503) and upgrades refused with 503, rather than connections refused.
    let stop = hub.shutdown_finished();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, addr)) => {
                tune_tcp(&tcp, hub.config());
                // Spawned as is, not wrapped in another future that would keep its own copy
                // of the arguments for the connection's life.
                tokio::spawn(serve_io_with(
                    tcp,
                    handshake.clone(),
                    hub.clone(),
                    Some(addr),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A step run on each connection before its HTTP request is read, such as a TLS handshake.
/// [`serve_with`] and [`serve_io_with`] run it inside [`Config::handshake_timeout`] while the
/// connection holds its pending-request slot, so a client that stalls it, or fails it, is
/// dropped like one that stalls its request.
///
/// Implemented by [`Plain`] (nothing: plain `ws://`) and, with the `tls` feature, by
/// [`tls::TlsAcceptor`] (`wss://`). Implement it for anything else that must run first (a
/// PROXY protocol header, another TLS library).
pub trait Handshake<S>: Send + Sync {
    /// The stream the HTTP request is read from afterwards.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Runs the step on the accepted `io`. An error drops the connection (logged at debug
    /// level).
    fn handshake(&self, io: S) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// No step before the HTTP request: plain `ws://` ([`serve`], [`serve_io`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl<S> Handshake<S> for Plain
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = S;

    fn handshake(&self, io: S) -> impl Future<Output = io::Result<S>> + Send {
        std::future::ready(Ok(io))
    }
}

/// The TLS handshake (`wss://`).
#[cfg(feature = "tls")]
impl<S> Handshake<S> for tls::TlsAcceptor
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = tls::tokio_rustls::server::TlsStream<S>;

    fn handshake(&self, io: S) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        self.accept(io)
    }
}

/// Runs one accepted TCP connection from `remote_addr`: the handshake (see [`serve_io`]),
/// then the driver.
pub async fn serve_tcp(tcp: TcpStream, hub: Hub, remote_addr: Option<SocketAddr>) {
    tune_tcp(&tcp, hub.config());
    serve_io(tcp, hub, remote_addr).await;
}

/// Sets what every accepted signaling socket wants: `TCP_NODELAY` (signaling messages are
/// small and latency matters more than packet count) and kernel send and receive buffers of
/// [`Config::tcp_buffer_size`] (Linux otherwise grows them to megabytes for a client that does
/// not read or floods: memory outside the queued-bytes budget). Failures are ignored: the
/// socket works without them.
pub fn tune_tcp(tcp: &TcpStream, config: &Config) {
    let _ = tcp.set_nodelay(true);
    if let Some(bytes) = config.tcp_buffer_size {
        let socket = socket2::SockRef::from(tcp);
        let _ = socket.set_send_buffer_size(bytes);
        let _ = socket.set_recv_buffer_size(bytes);
    }
}

/// Largest HTTP request head (request line and headers) read before the upgrade, in bytes
/// (16 KiB, as Node's HTTP server); a larger one is answered with 431.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Runs one connection over any byte stream (Unix socket, a stream you decrypted yourself, …)
/// from `remote_addr`: reads the HTTP request, asks [`Hub::admit`] (origin, caps,
/// authenticator) and answers a refusal with its HTTP status, or upgrades and runs the driver.
///
/// Until the upgrade the connection holds a pending-request slot
/// ([`Config::max_pending_requests`]; when they are taken it is closed at once, unanswered);
/// the whole handshake, authenticator included, is bounded by [`Config::handshake_timeout`],
/// and it is abandoned when [`Hub::shutdown`] starts.
pub async fn serve_io<S>(io: S, hub: Hub, remote_addr: Option<SocketAddr>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_io_with(io, Plain, hub, remote_addr).await;
}

/// [`serve_io`] with a [`Handshake`] first (for TLS, a [`tls::TlsAcceptor`]): the step, the
/// HTTP request and the admission all within one [`Config::handshake_timeout`], holding one
/// pending-request slot, abandoned when [`Hub::shutdown`] starts.
///
/// Not an `async fn`: everything up to the upgrade (the step, the request's buffers, the
/// timer) is one boxed future, freed once the socket is upgraded, so that the future the
/// connection's task holds for its life keeps none of it, nor its own copy of the arguments.
pub fn serve_io_with<S, H>(
    io: S,
    handshake: H,
    hub: Hub,
    remote_addr: Option<SocketAddr>,
) -> impl Future<Output = ()>
where
    S: Send,
    H: Handshake<S>,
{
    let upgraded = Box::pin(handshake_io(io, handshake, hub, remote_addr));
    async move {
        let Some((io, admission, tail, hub)) = upgraded.await else {
            return;
        };
        let config = websocket_config(hub.config());
        let io = ReadAhead::new(io);
        let ws = WebSocketStream::from_partially_read(io, tail, Role::Server, Some(config)).await;
        serve_admitted(ws, hub, admission).await;
    }
}

/// [`serve_io_with`] up to the upgrade: the upgraded stream, the admission, what the client
/// sent after its request, and the hub; `None` when the connection ends there.
async fn handshake_io<S, H>(
    io: S,
    handshake: H,
    hub: Hub,
    remote_addr: Option<SocketAddr>,
) -> Option<(H::Stream, Admission, Vec<u8>, Hub)>
where
    S: Send,
    H: Handshake<S>,
{
    let pending = match hub.pending_request(remote_addr.map(|a| a.ip())) {
        Ok(pending) => pending,
        Err(refusal) => {
            tracing::debug!(addr = ?remote_addr, %refusal, "connection closed before its request");
            return None;
        }
    };
    let deadline = hub.config().handshake_timeout;
    let handshake = tokio::time::timeout(deadline, async {
        let mut io = handshake
            .handshake(io)
            .await
            .map_err(HandshakeError::BeforeRequest)?;
        let (admission, tail) = upgrade(&mut io, &hub, remote_addr).await?;
        Ok::<_, HandshakeError>((io, admission, tail))
    });
    let upgraded = tokio::select! {
        handshake = handshake => handshake,
        () = hub.shutdown_finished() => return None,
    };
    let (io, admission, tail) = match upgraded {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(e)) => {
            tracing::debug!(addr = ?remote_addr, error = %e, "handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(addr = ?remote_addr, "handshake timed out");
            return None;
        }
    };
    drop(pending);
    Some((io, admission, tail, hub))
}

/// Reads the request, decides, and writes the answer: the 101 and what the client sent after
/// the request (frames it did not wait to send), or an error status.
async fn upgrade<S>(
    io: &mut S,
    hub: &Hub,
    remote_addr: Option<SocketAddr>,
) -> Result<(Admission, Vec<u8>), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (request, tail) = match read_request(io).await {
        Ok(read) => read,
        Err(HandshakeError::TooLarge) => {
            let body = "request header fields too large";
            respond(io, 431, &[], body).await?;
            return Err(HandshakeError::TooLarge);
        }
        Err(HandshakeError::PlainGet(path)) => {
            // An HTTP/1.0 GET (tungstenite's parser takes HTTP/1.1 only): a health check, or 400.
            let (status, body) = hub
                .health_check(&path)
                .unwrap_or((400, "not a WebSocket upgrade request: HTTP/1.1 required"));
            respond(io, status, &[], body).await?;
            return Err(HandshakeError::Answered);
        }
        Err(HandshakeError::Invalid(e)) => {
            respond(
                io,
                400,
                &[],
                &format!("not a WebSocket upgrade request: {e}"),
            )
            .await?;
            return Err(HandshakeError::Invalid(e));
        }
        Err(e) => return Err(e),
    };
    let view = upgrade_request(&request, remote_addr);
    if let Some((status, body)) = health_check(&request, hub) {
        respond(io, status, &[], body).await?;
        return Err(HandshakeError::Answered);
    }
    // RFC 6455's checks with their statuses (426 for a wrong version); tungstenite's own
    // checks below only catch what is left (the method).
    if let Err(refusal) = view.check_handshake() {
        hub.note_refusal(&refusal);
        return Err(refuse(io, refusal).await);
    }
    let response = match create_response(&request) {
        Ok(response) => response,
        Err(e) => {
            hub.note_refusal(&Refusal::BadHandshake("not a GET request"));
            respond(
                io,
                400,
                &[],
                &format!("not a WebSocket upgrade request: {e}"),
            )
            .await?;
            return Err(HandshakeError::Invalid(e));
        }
    };
    let admission = match hub.admit(&view).await {
        Ok(admission) => admission,
        Err(refusal) => return Err(refuse(io, refusal).await),
    };
    let mut head = Vec::with_capacity(160);
    write_response(&mut head, &response).map_err(HandshakeError::Invalid)?;
    io.write_all(&head).await?;
    io.flush().await?;
    Ok((admission, tail))
}

#[derive(Debug)]
enum HandshakeError {
    /// The step before the request (the TLS handshake) failed.
    BeforeRequest(io::Error),
    Io(io::Error),
    /// The connection ended before a whole request arrived.
    Eof,
    TooLarge,
    Invalid(tungstenite::Error),
    Refused(Refusal),
    /// A health check, answered.
    Answered,
    /// A complete `GET` without `Upgrade` that tungstenite's parser refused (HTTP/1.0): its
    /// path.
    PlainGet(String),
}

/// The path of a complete `GET` request head without an `Upgrade` header, of any HTTP/1.x.
fn plain_get(buf: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let upgrade = request
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    if request.method != Some("GET") || upgrade {
        return None;
    }
    let path = request.path?;
    Some(
        path.split_once('?')
            .map_or(path, |(path, _)| path)
            .to_string(),
    )
}

/// A `GET` of `/healthz` or `/readyz` without an `Upgrade` header (the request parser only
/// takes GETs): the answer ([`Hub::health_check`]).
fn health_check(request: &Request, hub: &Hub) -> Option<(u16, &'static str)> {
    if request.headers().contains_key("upgrade") {
        return None;
    }
    hub.health_check(request.uri().path())
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::BeforeRequest(e) => write!(f, "before the request: {e}"),
            HandshakeError::Io(e) => write!(f, "{e}"),
            HandshakeError::Eof => f.write_str("connection closed before the request ended"),
            HandshakeError::TooLarge => f.write_str("request head too large"),
            HandshakeError::Invalid(e) => write!(f, "{e}"),
            HandshakeError::Refused(refusal) => {
                write!(f, "refused ({}): {refusal}", refusal.status())
            }
            HandshakeError::Answered => f.write_str("a health check, answered"),
            HandshakeError::PlainGet(path) => write!(f, "a plain GET of {path}"),
        }
    }
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

/// Reads until a whole request head has arrived; returns it and the bytes after it.
async fn read_request<S>(io: &mut S) -> Result<(Request, Vec<u8>), HandshakeError>
where
    S: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::Eof);
        }
        buf.extend_from_slice(&chunk[..n]);
        match Request::try_parse(&buf) {
            Ok(Some((len, request))) => return Ok((request, buf.split_off(len))),
            Ok(None) if buf.len() >= MAX_REQUEST_HEAD => return Err(HandshakeError::TooLarge),
            Ok(None) => {}
            Err(e) => {
                return Err(match plain_get(&buf) {
                    Some(path) => HandshakeError::PlainGet(path),
                    None => HandshakeError::Invalid(e),
                });
            }
        }
    }
}

/// The driver's view of the request.
fn upgrade_request(request: &Request, remote_addr: Option<SocketAddr>) -> UpgradeRequest {
    use tungstenite::http::Version;
    let version = match request.version() {
        Version::HTTP_09 => Some((0, 9)),
        Version::HTTP_10 => Some((1, 0)),
        Version::HTTP_11 => Some((1, 1)),
        Version::HTTP_2 => Some((2, 0)),
        Version::HTTP_3 => Some((3, 0)),
        _ => None,
    };
    let mut view = UpgradeRequest::new(request.uri().path())
        .with_query(request.uri().query())
        .with_remote_addr(remote_addr)
        .with_http_version(version);
    for (name, value) in request.headers() {
        view = view.with_header(name.as_str(), String::from_utf8_lossy(value.as_bytes()));
    }
    view
}

/// Answers a refusal with its status, headers and one-line body; the error to end with.
async fn refuse<S>(io: &mut S, refusal: Refusal) -> HandshakeError
where
    S: AsyncWrite + Unpin,
{
    let answered = respond(
        io,
        refusal.status(),
        refusal.headers(),
        &refusal.to_string(),
    )
    .await;
    match answered {
        Ok(()) => HandshakeError::Refused(refusal),
        Err(e) => e,
    }
}

/// Writes a plain-text HTTP answer and closes the connection.
async fn respond<S>(
    io: &mut S,
    status: u16,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(), HandshakeError>
where
    S: AsyncWrite + Unpin,
{
    let reason = tungstenite::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len() + 1
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    response.push('\n');
    io.write_all(response.as_bytes()).await?;
    io.flush().await?;
    io.shutdown().await?;
    Ok(())
}

/// Runs a WebSocket you upgraded after [`Hub::admit`] accepted its request to its end on the
/// driver, bound to the admission's verified username (if any) and holding its connection slot
/// until it ends. Upgrade it with [`websocket_config`].
///
/// Not an `async fn`: the socket goes to the driver (which moves it onto the heap) when this
/// is called, so the future, what the connection's task holds, does not carry it inline.
pub fn serve_admitted<S>(
    ws: WebSocketStream<S>,
    hub: Hub,
    admission: Admission,
) -> impl Future<Output = ()> + Send + use<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hub.serve_admitted::<Tungstenite, _>(ws, admission)
}

/// Runs an already upgraded WebSocket to its end on the driver, counting it against the
/// connection caps of `info.remote_addr` (see [`Hub::serve_connection`]). Upgrade it with
/// [`websocket_config`] so the size limits hold at the transport too.
pub fn serve_stream<S>(
    ws: WebSocketStream<S>,
    hub: Hub,
    info: ConnectionInfo,
) -> impl Future<Output = ()> + Send + use<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hub.serve_connection::<Tungstenite, _>(ws, info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every connection's task holds while it is idle: the spawned future (its largest
    /// state), printed with `--nocapture`, and bounded near its size so that it does not grow
    /// back unnoticed.
    #[tokio::test]
    async fn the_connection_task_is_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, remote) = listener.accept().await.unwrap();
        let hub = Hub::default();
        let ws = WebSocketStream::from_raw_socket(accepted, Role::Server, None).await;
        let ws_size = std::mem::size_of_val(&ws);
        let admission = hub.admit(&UpgradeRequest::new("/")).await.unwrap();
        let driver = serve_admitted(ws, hub.clone(), admission);
        let driver_size = std::mem::size_of_val(&driver);
        drop(driver);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, remote2) = listener.accept().await.unwrap();
        let task = serve_io_with(accepted, Plain, hub.clone(), Some(remote2));
        let task_size = std::mem::size_of_val(&task);
        drop(task);
        eprintln!(
            "WebSocketStream<TcpStream>: {ws_size} B, serve_admitted: {driver_size} B, \
             serve_io (the spawned task): {task_size} B ({remote})"
        );
        // 1,136 B when written (4,000 B before issue 13); a little room for other compilers.
        assert!(
            task_size <= 1_200,
            "the spawned connection task grew to {task_size} B"
        );
        assert!(
            driver_size <= 1_200,
            "serve_admitted grew to {driver_size} B"
        );
    }

    #[tokio::test]
    async fn accepted_sockets_get_nodelay_and_the_buffer_caps() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let config = Config::default().with_tcp_buffer_size(Some(48 * 1024));
        tune_tcp(&accepted, &config);
        assert!(accepted.nodelay().unwrap());
        let socket = socket2::SockRef::from(&accepted);
        // Linux reports twice what was set (bookkeeping); others report it as set.
        for size in [socket.send_buffer_size(), socket.recv_buffer_size()] {
            let size = size.unwrap();
            assert!((48 * 1024..=96 * 1024).contains(&size), "buffer {size}");
        }
    }
}
