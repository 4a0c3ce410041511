//! The connection driver over an in-memory transport (no sockets, no WebSocket framing): what
//! the `Hub` adds around the router — lock, per-connection queue, writer task, encoding.
//! `cargo bench -p signaling-benches --bench driver`.
#![allow(missing_docs)]

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_channel::mpsc;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use signaling_core::RouterConfig;
use signaling_core::driver::{Config, ConnectionInfo, Hub, Inbound, Outbound, Transport};

#[derive(Debug)]
enum Frame {
    Text(String),
    Other,
}

#[derive(Debug)]
struct Gone;

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gone")
    }
}

struct Mem;

impl Transport for Mem {
    type Message = Frame;
    type Error = Gone;
    fn inbound(message: &Frame) -> Inbound<'_> {
        match message {
            Frame::Text(t) => Inbound::Text(t),
            Frame::Other => Inbound::Pong(&[]),
        }
    }
    fn outbound(frame: Outbound) -> Frame {
        match frame {
            Outbound::Text(t) => Frame::Text(t),
            _ => Frame::Other,
        }
    }
}

/// The server's end of an in-memory socket.
struct ServerSide {
    rx: mpsc::Receiver<Frame>,
    tx: mpsc::Sender<Frame>,
}

impl Stream for ServerSide {
    type Item = Result<Frame, Gone>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_next_unpin(cx).map(|f| f.map(Ok))
    }
}

impl Sink<Frame> for ServerSide {
    type Error = Gone;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        self.tx.poll_ready_unpin(cx).map_err(|_| Gone)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Frame) -> Result<(), Gone> {
        self.tx.start_send_unpin(item).map_err(|_| Gone)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        self.tx.poll_flush_unpin(cx).map_err(|_| Gone)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        self.tx.poll_close_unpin(cx).map_err(|_| Gone)
    }
}

struct Client {
    tx: mpsc::Sender<Frame>,
    rx: mpsc::Receiver<Frame>,
}

impl Client {
    async fn send(&mut self, text: &str) {
        self.tx.send(Frame::Text(text.to_string())).await.unwrap();
    }
    async fn recv(&mut self) -> String {
        loop {
            match self.rx.next().await.expect("server closed") {
                Frame::Text(t) => return t,
                Frame::Other => {}
            }
        }
    }
}

fn connect(hub: &Hub) -> Client {
    let (to_server, from_client) = mpsc::channel(1024);
    let (to_client, from_server) = mpsc::channel(1024);
    let hub = hub.clone();
    tokio::spawn(async move {
        let socket = ServerSide {
            rx: from_client,
            tx: to_client,
        };
        hub.serve_connection::<Mem, _>(socket, ConnectionInfo::new())
            .await;
    });
    Client {
        tx: to_server,
        rx: from_server,
    }
}

const CANDIDATE: &str = r#"{"type":"candidate","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 192.168.1.2 56143 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag sXYZ network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"sXYZ"},"otherUsername":"bob"}"#;

async fn call(hub: &Hub) -> (Client, Client) {
    let mut a = connect(hub);
    let mut b = connect(hub);
    a.send(r#"{"type":"login","username":"alice"}"#).await;
    b.send(r#"{"type":"login","username":"bob"}"#).await;
    a.recv().await;
    b.recv().await;
    a.send(r#"{"type":"offer","offer":{},"otherUsername":"bob"}"#)
        .await;
    b.recv().await;
    b.send(r#"{"type":"answer","answer":{},"otherUsername":"alice"}"#)
        .await;
    a.recv().await;
    (a, b)
}

fn driver(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config::default()
        .with_router(RouterConfig::default().with_rate_limit(None))
        .with_ping_interval(None);
    let hub = Hub::new(config);
    let (mut a, mut b) = runtime.block_on(call(&hub));
    let mut group = c.benchmark_group("driver");
    group.throughput(Throughput::Elements(1));
    // A window of 64 in flight, as a real sender's flow control keeps: flooding a client that
    // does not read is what the bounded queue disconnects, by design.
    group.bench_function(
        "candidate A→B through the hub (in-memory, 64 in flight)",
        |bench| {
            bench.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    let (mut sent, mut received) = (0, 0);
                    while received < iters {
                        while sent < iters && sent - received < 64 {
                            a.send(CANDIDATE).await;
                            sent += 1;
                        }
                        b.recv().await;
                        received += 1;
                    }
                    start.elapsed()
                })
            })
        },
    );
    group.bench_function(
        "candidate round trip A→B→A (in-memory transport)",
        |bench| {
            bench.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        a.send(CANDIDATE).await;
                        b.recv().await;
                        b.send(
                            r#"{"type":"candidate","candidate":{"c":1},"otherUsername":"alice"}"#,
                        )
                        .await;
                        a.recv().await;
                    }
                    start.elapsed()
                })
            })
        },
    );
    group.finish();
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), hub.shutdown()).await;
    });
}

criterion_group!(benches, driver);
criterion_main!(benches);
