//! The connection driver over its in-memory transport (`driver::memory`: no sockets, no
//! WebSocket framing): what the `Hub` adds around the router — lock, per-connection queue,
//! writer task, encoding.
//! `cargo bench -p signaling-benches --bench driver`.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use signaling_core::RouterConfig;
use signaling_core::driver::memory::{self, MemoryClient};
use signaling_core::driver::{Config, Hub};

const CANDIDATE: &str = r#"{"type":"candidate","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 192.168.1.2 56143 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag sXYZ network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"sXYZ"},"otherUsername":"bob"}"#;

async fn call(hub: &Hub) -> (MemoryClient, MemoryClient) {
    let a = memory::connect(hub);
    let b = memory::connect(hub);
    a.send_text(r#"{"type":"login","username":"alice"}"#)
        .unwrap();
    b.send_text(r#"{"type":"login","username":"bob"}"#).unwrap();
    a.next_text().await;
    b.next_text().await;
    a.send_text(r#"{"type":"offer","offer":{},"otherUsername":"bob"}"#)
        .unwrap();
    b.next_text().await;
    b.send_text(r#"{"type":"answer","answer":{},"otherUsername":"alice"}"#)
        .unwrap();
    a.next_text().await;
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
    let (a, b) = runtime.block_on(call(&hub));
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
                            a.send_text(CANDIDATE).unwrap();
                            sent += 1;
                        }
                        b.next_text().await;
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
                        a.send_text(CANDIDATE).unwrap();
                        b.next_text().await;
                        b.send_text(
                            r#"{"type":"candidate","candidate":{"c":1},"otherUsername":"alice"}"#,
                        )
                        .unwrap();
                        a.next_text().await;
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
