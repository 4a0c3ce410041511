//! The pure router: parse + route + encode of a relayed candidate, a login, a disconnect with a
//! partner. `cargo bench -p signaling-benches --bench router`.
#![allow(missing_docs, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use signaling_core::{ConnectionId, Output, Router, RouterConfig};

/// A realistic ~200-byte trickle-ICE candidate, as a browser sends it.
const CANDIDATE: &str = r#"{"type":"candidate","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 192.168.1.2 56143 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag sXYZ network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"sXYZ"},"otherUsername":"bob"}"#;

fn login(router: &mut Router, conn: ConnectionId, name: &str, now: Instant) {
    router.handle_connect(conn).unwrap();
    let frame = format!(r#"{{"type":"login","username":"{name}"}}"#);
    router.handle_text(conn, &frame, now).unwrap();
}

/// A router holding `idle` idle users plus alice and bob in an answered call.
fn in_call(idle: u64, now: Instant) -> (Router, ConnectionId, ConnectionId) {
    let mut router = Router::new(RouterConfig::default().with_rate_limit(None));
    for i in 0..idle {
        login(
            &mut router,
            ConnectionId(1000 + i),
            &format!("idle{i}"),
            now,
        );
    }
    let (a, b) = (ConnectionId(1), ConnectionId(2));
    login(&mut router, a, "alice", now);
    login(&mut router, b, "bob", now);
    router
        .handle_text(
            a,
            r#"{"type":"offer","offer":{"sdp":"v=0"},"otherUsername":"bob"}"#,
            now,
        )
        .unwrap();
    router
        .handle_text(
            b,
            r#"{"type":"answer","answer":{"sdp":"v=0"},"otherUsername":"alice"}"#,
            now,
        )
        .unwrap();
    while router.poll_output().is_some() {}
    (router, a, b)
}

fn drain_encoded(router: &mut Router) -> usize {
    let mut bytes = 0;
    while let Some(o) = router.poll_output() {
        if let Output::Transmit(t) = o {
            bytes += black_box(t.message.to_json()).len();
        }
    }
    bytes
}

fn relay(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(1));
    for idle in [0, 10_000] {
        let (mut router, a, _) = in_call(idle, now);
        group.bench_function(
            format!("candidate relay (parse+route+encode), {idle} idle users"),
            |bench| {
                bench.iter(|| {
                    router.handle_text(a, black_box(CANDIDATE), now).unwrap();
                    drain_encoded(&mut router)
                })
            },
        );
    }
    group.bench_function(
        "floor: serde_json validates the frame (IgnoredAny), nothing else",
        |bench| {
            bench.iter(|| {
                serde_json::from_str::<serde::de::IgnoredAny>(black_box(CANDIDATE)).unwrap()
            })
        },
    );
    let (mut router, a, _) = in_call(0, now);
    group.bench_function("candidate relay, route only (no encode)", |bench| {
        bench.iter(|| {
            router.handle_text(a, black_box(CANDIDATE), now).unwrap();
            while router.poll_output().is_some() {}
        })
    });
    let mut router = Router::new(RouterConfig::default());
    login(&mut router, ConnectionId(1), "alice", now);
    login(&mut router, ConnectionId(2), "bob", now);
    router
        .handle_text(
            ConnectionId(1),
            r#"{"type":"offer","offer":{},"otherUsername":"bob"}"#,
            now,
        )
        .unwrap();
    while router.poll_output().is_some() {}
    let mut t = now;
    group.bench_function("candidate relay with the default rate limit", |bench| {
        bench.iter(|| {
            // Advance time so the bucket never runs dry: measures the limiter's cost only.
            t += std::time::Duration::from_millis(10);
            router
                .handle_text(ConnectionId(1), black_box(CANDIDATE), t)
                .unwrap();
            drain_encoded(&mut router)
        })
    });
    group.finish();
}

fn login_and_disconnect(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(1));
    let (mut router, _, _) = in_call(10_000, now);
    let mut next = 1_000_000u64;
    // Issue 9: a non-ASCII name takes the slow path (category lookups, NFC check), and every
    // login computes the name's TR39 skeleton.
    for (what, login) in [
        (
            "connect + login + disconnect, 10000 users online",
            r#"{"type":"login","username":"newcomer"}"#,
        ),
        (
            "connect + login + disconnect, non-ASCII name, 10000 users online",
            r#"{"type":"login","username":"zoë-李-🦊"}"#,
        ),
    ] {
        group.bench_function(what, |bench| {
            bench.iter(|| {
                next += 1;
                let conn = ConnectionId(next);
                router.handle_connect(conn).unwrap();
                router.handle_text(conn, black_box(login), now).unwrap();
                drain_encoded(&mut router);
                router.handle_disconnect(conn).unwrap();
            })
        });
    }
    group.bench_function("disconnect with a partner (partner told close)", |bench| {
        bench.iter_batched(
            || in_call(0, now),
            |(mut router, a, _)| {
                router.handle_disconnect(a).unwrap();
                drain_encoded(&mut router)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("garbage frame answered with an error", |bench| {
        let (mut router, a, _) = in_call(0, now);
        bench.iter(|| {
            router
                .handle_text(
                    a,
                    black_box(r#"{"type":"candidate","otherUsername":5}"#),
                    now,
                )
                .unwrap();
            drain_encoded(&mut router)
        })
    });
    group.finish();
}

criterion_group!(benches, relay, login_and_disconnect);
criterion_main!(benches);
