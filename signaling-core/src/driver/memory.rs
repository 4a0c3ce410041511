//! An in-memory transport (feature `memory`): a [`Hub`] connection with no socket and no
//! WebSocket library, for tests and benchmarks — the driver's own, and yours.
//!
//! [`connect`] spawns [`Hub::serve_connection`] on the current tokio runtime with one end of an
//! in-memory socket and gives you the other, a [`MemoryClient`] that sends and receives
//! [`Frame`]s as a WebSocket client would. Client-to-server frames are never refused (the
//! server's read loop applies its own backpressure by not reading); server-to-client frames
//! wait in a buffer of `capacity` frames, like a socket's buffers: once it is full, the
//! server's writes block until the client reads, so a client made with a small capacity that
//! does not read is a slow client as far as the driver can tell.
//!
//! ```
//! use signaling_core::driver::{CloseFrame, Config, Hub, memory};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), memory::Disconnected> {
//! let hub = Hub::new(Config::default());
//! let alice = memory::connect(&hub);
//! alice.send_text(r#"{"type":"login","username":"alice"}"#)?;
//! let reply = alice.next_text().await;
//! assert!(reply.starts_with(r#"{"type":"login""#), "{reply}");
//! assert!(hub.with_router(|router| router.connection_of("alice").is_some()));
//!
//! // A graceful shutdown sends every client a close frame and waits for it to go.
//! let client = async {
//!     assert_eq!(alice.next_close().await, CloseFrame::GOING_AWAY);
//!     alice.disconnect();
//! };
//! tokio::join!(hub.shutdown(), client);
//! assert_eq!(hub.connection_count(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! To serve the socket yourself (with [`Hub::serve_admitted`], a [`ConnectionInfo`] of your
//! own, or a [`Transport`] that wraps [`Memory`]), take both ends from [`pair`].

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, Sink, Stream};
use tokio::sync::{Notify, mpsc};

use super::{CloseFrame, ConnectionInfo, Hub, Inbound, Outbound, Transport};

/// How many server-to-client frames [`connect`] lets wait unread.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// How long a [`MemoryClient`] waits for the server by default (see
/// [`MemoryClient::with_timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A WebSocket message of the in-memory transport.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A ping with its payload.
    Ping(Vec<u8>),
    /// A pong with its payload.
    Pong(Vec<u8>),
    /// A close frame.
    Close(CloseFrame),
}

/// The other end of the in-memory socket is gone: the error of a send to a connection that
/// ended, and the transport's error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

impl fmt::Display for Disconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the other end of the in-memory connection is gone")
    }
}

impl std::error::Error for Disconnected {}

/// The [`Transport`] of [`MemorySocket`]: every [`Frame`] maps to the driver's frame of the
/// same kind. An incoming close frame is not answered (the client sees the server's own close
/// frame, if any, then the end of the connection).
#[derive(Debug, Clone, Copy)]
pub struct Memory;

impl Transport for Memory {
    type Message = Frame;
    type Error = Disconnected;

    fn inbound(message: &Frame) -> Inbound<'_> {
        match message {
            Frame::Text(text) => Inbound::Text(text),
            Frame::Binary(bytes) => Inbound::Binary(bytes.len()),
            Frame::Ping(_) => Inbound::Ping,
            Frame::Pong(payload) => Inbound::Pong(payload),
            Frame::Close(_) => Inbound::Close,
        }
    }

    fn outbound(frame: Outbound) -> Frame {
        match frame {
            Outbound::Text(text) => Frame::Text(text),
            Outbound::Ping(payload) => Frame::Ping(payload.to_vec()),
            Outbound::Close(close) => Frame::Close(close),
        }
    }
}

/// Server-to-client frames, bounded like a socket's buffers.
#[derive(Debug)]
struct Pipe {
    frames: Mutex<VecDeque<Frame>>,
    capacity: usize,
    /// The server's writer, waiting for room.
    writer: AtomicWaker,
    /// A frame arrived, or the server dropped its end (one permit; the client reads from one
    /// task at a time).
    readable: Notify,
    /// The server dropped its end (every waiter).
    gone: Notify,
    /// The server dropped its end.
    server_gone: AtomicBool,
    /// The client dropped its end.
    client_gone: AtomicBool,
}

impl Pipe {
    fn frames(&self) -> MutexGuard<'_, VecDeque<Frame>> {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Both ends of a new in-memory socket: the server's, to hand to [`Hub::serve_connection`]
/// (or [`Hub::serve_admitted`]) with the [`Memory`] transport, and the client's. At most
/// `capacity` server-to-client frames wait unread (at least one).
pub fn pair(capacity: usize) -> (MemorySocket, MemoryClient) {
    let (outgoing, incoming) = mpsc::unbounded_channel();
    let pipe = Arc::new(Pipe {
        frames: Mutex::new(VecDeque::new()),
        capacity: capacity.max(1),
        writer: AtomicWaker::new(),
        readable: Notify::new(),
        gone: Notify::new(),
        server_gone: AtomicBool::new(false),
        client_gone: AtomicBool::new(false),
    });
    let socket = MemorySocket {
        incoming,
        pipe: Arc::clone(&pipe),
    };
    let client = MemoryClient {
        outgoing,
        pipe,
        timeout: Some(DEFAULT_TIMEOUT),
    };
    (socket, client)
}

/// Opens a connection to `hub`: spawns [`Hub::serve_connection`] with the server's end of a
/// new in-memory socket (and [`ConnectionInfo::new`]) on the current tokio runtime, and returns
/// the client's end. Up to [`DEFAULT_CAPACITY`] server-to-client frames wait unread.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn connect(hub: &Hub) -> MemoryClient {
    connect_with_capacity(hub, DEFAULT_CAPACITY)
}

/// [`connect`], with at most `capacity` server-to-client frames waiting unread (at least one):
/// beyond that the server's writes wait for the client to read, as they would for a client
/// that does not read its socket.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn connect_with_capacity(hub: &Hub, capacity: usize) -> MemoryClient {
    let (socket, client) = pair(capacity);
    let hub = hub.clone();
    tokio::spawn(async move {
        hub.serve_connection::<Memory, _>(socket, ConnectionInfo::new())
            .await;
    });
    client
}

/// The server's end of an in-memory socket: a `Stream` of the client's frames and a `Sink`
/// for frames to the client, served with the [`Memory`] transport. Made by [`pair`].
#[derive(Debug)]
pub struct MemorySocket {
    incoming: mpsc::UnboundedReceiver<Frame>,
    pipe: Arc<Pipe>,
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        self.pipe.server_gone.store(true, Ordering::SeqCst);
        self.pipe.readable.notify_one();
        self.pipe.gone.notify_waiters();
    }
}

impl Stream for MemorySocket {
    type Item = Result<Frame, Disconnected>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

impl Sink<Frame> for MemorySocket {
    type Error = Disconnected;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Disconnected>> {
        let ready = || {
            if self.pipe.client_gone.load(Ordering::SeqCst) {
                Some(Err(Disconnected))
            } else {
                (self.pipe.frames().len() < self.pipe.capacity).then_some(Ok(()))
            }
        };
        if let Some(ready) = ready() {
            return Poll::Ready(ready);
        }
        self.pipe.writer.register(cx.waker());
        // Checked again: the client may have read (or gone) before the waker was registered.
        match ready() {
            Some(ready) => Poll::Ready(ready),
            None => Poll::Pending,
        }
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), Disconnected> {
        if self.pipe.client_gone.load(Ordering::SeqCst) {
            return Err(Disconnected);
        }
        self.pipe.frames().push_back(frame);
        self.pipe.readable.notify_one();
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Disconnected>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Disconnected>> {
        Poll::Ready(Ok(()))
    }
}

/// The client's end of an in-memory connection, made by [`connect`] (or [`pair`]).
///
/// Its sends never wait. Read it from one task at a time. Every method that waits for the server gives up with a panic after
/// the client's timeout ([`DEFAULT_TIMEOUT`] unless set with
/// [`with_timeout`](Self::with_timeout)), so that a test waiting for something that never
/// comes fails instead of hanging. Dropping the client (or [`disconnect`](Self::disconnect))
/// drops the connection abruptly, as a reset socket would: the server's reads end and its
/// writes fail.
#[derive(Debug)]
pub struct MemoryClient {
    outgoing: mpsc::UnboundedSender<Frame>,
    pipe: Arc<Pipe>,
    timeout: Option<Duration>,
}

impl Drop for MemoryClient {
    fn drop(&mut self) {
        self.pipe.client_gone.store(true, Ordering::SeqCst);
        self.pipe.writer.wake();
    }
}

impl MemoryClient {
    /// Sets how long the waiting methods wait before they panic; `None` waits for ever.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends a text frame.
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), Disconnected> {
        self.send_frame(Frame::Text(text.into()))
    }

    /// Sends any frame (a binary frame, a ping, a pong, a close frame).
    pub fn send_frame(&self, frame: Frame) -> Result<(), Disconnected> {
        self.outgoing.send(frame).map_err(|_| Disconnected)
    }

    /// The next frame from the server, or `None` once the server has dropped the connection
    /// and every frame it sent has been read. Pings are returned, not answered.
    ///
    /// # Panics
    ///
    /// When nothing comes within the client's timeout.
    pub async fn next_frame(&self) -> Option<Frame> {
        let mut next = std::pin::pin!(self.wait_for_frame());
        // A frame already waiting needs no timer.
        if let Some(frame) = next.as_mut().now_or_never() {
            return frame;
        }
        self.patiently("a frame", next).await
    }

    /// The next text frame, answering pings with pongs and skipping pongs on the way, as a
    /// browser's WebSocket does.
    ///
    /// # Panics
    ///
    /// On any other frame, when the connection ends first, or when nothing comes within the
    /// client's timeout.
    #[allow(clippy::panic)] // a test helper: an unexpected frame fails the test
    pub async fn next_text(&self) -> String {
        loop {
            match self.next_frame().await {
                Some(Frame::Text(text)) => return text,
                Some(Frame::Ping(payload)) => {
                    let _ = self.send_frame(Frame::Pong(payload));
                }
                Some(Frame::Pong(_)) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads (and drops) frames up to the server's close frame, and returns it.
    ///
    /// # Panics
    ///
    /// When the connection ends without a close frame, or when nothing comes within the
    /// client's timeout.
    #[allow(clippy::panic)] // a test helper: a missing close frame fails the test
    pub async fn next_close(&self) -> CloseFrame {
        loop {
            match self.next_frame().await {
                Some(Frame::Close(close)) => return close,
                Some(_) => {}
                None => panic!("the connection ended without a close frame"),
            }
        }
    }

    /// Whether the server has dropped its end of the connection (frames it sent before may
    /// still be waiting to be read).
    pub fn is_closed(&self) -> bool {
        self.pipe.server_gone.load(Ordering::SeqCst)
    }

    /// Waits until the server has dropped its end of the connection.
    ///
    /// # Panics
    ///
    /// When that does not happen within the client's timeout.
    pub async fn closed(&self) {
        let closed = async {
            loop {
                let gone = self.pipe.gone.notified();
                let mut gone = std::pin::pin!(gone);
                gone.as_mut().enable();
                if self.is_closed() {
                    return;
                }
                gone.await;
            }
        };
        self.patiently("the server to close the connection", closed)
            .await;
    }

    /// Drops the connection abruptly, without a close frame (the same as dropping the client).
    pub fn disconnect(self) {}

    async fn wait_for_frame(&self) -> Option<Frame> {
        loop {
            // Read before the frames: the server may have sent a frame, then gone. A wake-up
            // that comes meanwhile is kept (as the permit of `readable`), not lost.
            let closed = self.is_closed();
            let frame = self.pipe.frames().pop_front();
            if let Some(frame) = frame {
                self.pipe.writer.wake();
                return Some(frame);
            }
            if closed {
                return None;
            }
            self.pipe.readable.notified().await;
        }
    }

    #[allow(clippy::panic)] // a test helper: a test waiting for ever fails instead
    async fn patiently<T>(&self, what: &str, wait: impl Future<Output = T>) -> T {
        match self.timeout {
            Some(timeout) => match tokio::time::timeout(timeout, wait).await {
                Ok(done) => done,
                Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
            },
            None => wait.await,
        }
    }
}
