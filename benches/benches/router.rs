//! The pure router: parse + route + encode of a relayed candidate, a login, a disconnect with a
//! partner; a resume, the timers, and the cluster's encodings (groups `resume`, `timers`,
//! `cluster`). `cargo bench -p signaling-benches --bench router [-- FILTER]`.
#![allow(missing_docs, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use signaling_core::cluster::{Envelope, Remote, SessionExport};
use signaling_core::{
    CallEnd, ConnectionId, DisconnectReason, Event, Output, Payload, RelayKind, Router,
    RouterConfig, SessionEnd, SessionToken, Username,
};

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
    let (a, b) = call_between(&mut router, now);
    (router, a, b)
}

/// alice (connection 1) and bob (connection 2) log in and into an answered call.
fn call_between(router: &mut Router, now: Instant) -> (ConnectionId, ConnectionId) {
    let (a, b) = (ConnectionId(1), ConnectionId(2));
    login(router, a, "alice", now);
    login(router, b, "bob", now);
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
    (a, b)
}

fn drain_encoded(router: &mut Router) -> usize {
    let mut bytes = 0;
    while let Some(o) = router.poll_output() {
        if let Output::Transmit(t) = o {
            // What a driver does (`Transmit::into_frame`): a relay's frame is already built.
            bytes += black_box(t.into_frame()).len();
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

/// Deterministic session tokens as long as the driver's (22 characters): `000…01`, `000…02`, …
fn token(n: u64) -> String {
    format!("{n:022}")
}

fn token_source() -> impl FnMut() -> SessionToken + Send + 'static {
    let mut n = 0u64;
    move || {
        n += 1;
        SessionToken::new(token(n))
    }
}

fn drain_all(router: &mut Router) -> Vec<Output> {
    std::iter::from_fn(|| router.poll_output()).collect()
}

/// How a resume finds its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Before {
    /// Suspended: its connection was lost.
    Lost,
    /// Its connection is still open (half-open, or another tab): a takeover.
    StillOpen,
}

/// alice (resumable, token 1) in an answered call with bob; alice's connection lost (or still
/// open), then bob trickles `kept` candidates to alice (kept for the resume; also written to
/// the old connection if it is open). Returns the router, alice's old connection, her new one
/// (connected) and the resume frame asking for everything after bob's offer (seq 1): the
/// `kept` candidates are replayed.
fn before_resume(
    kept: usize,
    before: Before,
    now: Instant,
) -> (Router, ConnectionId, ConnectionId, String) {
    let mut router = Router::new(RouterConfig::default().with_rate_limit(None))
        .with_token_source(token_source());
    let (a, b, a2) = (ConnectionId(1), ConnectionId(2), ConnectionId(3));
    router.handle_connect(a).unwrap();
    router
        .handle_text(
            a,
            r#"{"type":"login","username":"alice","resumable":true}"#,
            now,
        )
        .unwrap();
    login(&mut router, b, "bob", now);
    router
        .handle_text(
            b,
            r#"{"type":"offer","offer":{"type":"offer","sdp":"v=0"},"otherUsername":"alice"}"#,
            now,
        )
        .unwrap();
    router
        .handle_text(
            a,
            r#"{"type":"answer","answer":{"type":"answer","sdp":"v=0"},"otherUsername":"bob"}"#,
            now,
        )
        .unwrap();
    if before == Before::Lost {
        router.handle_connection_lost(a, now).unwrap();
    }
    let to_alice = CANDIDATE.replace(r#""otherUsername":"bob""#, r#""otherUsername":"alice""#);
    for _ in 0..kept {
        router.handle_text(b, &to_alice, now).unwrap();
    }
    while router.poll_output().is_some() {}
    router.handle_connect(a2).unwrap();
    let frame = format!(r#"{{"type":"resume","token":"{}","lastSeq":1}}"#, token(1));
    (router, a, a2, frame)
}

/// Checks once, before timing, that the resume the bench times succeeds: the `resume` reply
/// and the `kept` candidates (seq 2, 3, …) to the new connection, `4000` to a still open old
/// one, nothing else.
fn check_resume(kept: usize, before: Before, now: Instant) {
    let (mut router, a, a2, frame) = before_resume(kept, before, now);
    assert_eq!(router.is_suspended("alice"), before == Before::Lost);
    router.handle_text(a2, &frame, now).unwrap();
    let mut frames = Vec::new();
    let mut closed = Vec::new();
    for output in drain_all(&mut router) {
        match output {
            Output::Transmit(t) => {
                assert_eq!(t.to, a2);
                frames.push(t.to_json());
            }
            Output::Disconnect { conn, reason } => closed.push((conn, reason)),
            _ => {}
        }
    }
    assert_eq!(frames.len(), 1 + kept, "{frames:?}");
    assert!(
        frames[0].starts_with(r#"{"type":"resume","success":true"#),
        "{}",
        frames[0]
    );
    for (i, frame) in frames[1..].iter().enumerate() {
        let seq = format!(r#","seq":{}}}"#, i + 2);
        assert!(
            frame.starts_with(r#"{"type":"candidate""#) && frame.ends_with(&seq),
            "{frame}"
        );
    }
    let expected = match before {
        Before::Lost => vec![],
        Before::StillOpen => vec![(a, DisconnectReason::ResumedElsewhere)],
    };
    assert_eq!(closed, expected);
    assert_eq!(router.connection_of("alice"), Some(a2));
    assert_eq!(router.partner_of("bob").map(|n| n.as_str()), Some("alice"));
}

fn resume(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("resume");
    group.throughput(Throughput::Elements(1));
    for (kept, before) in [
        (0, Before::Lost),
        (32, Before::Lost),
        (256, Before::Lost),
        (0, Before::StillOpen),
        (32, Before::StillOpen),
    ] {
        check_resume(kept, before, now);
        let what = match before {
            Before::Lost => "after a lost connection",
            Before::StillOpen => "takeover (old connection open)",
        };
        group.bench_function(
            format!("{what}, {kept} replayed (parse+resume+encode)"),
            |bench| {
                bench.iter_batched(
                    || before_resume(kept, before, now),
                    |(mut router, _, a2, frame)| {
                        router.handle_text(a2, black_box(&frame), now).unwrap();
                        let bytes = drain_encoded(&mut router);
                        // Returned, so that the router is dropped outside the timing.
                        (router, bytes)
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

/// Timers armed while one is handled: what a busy node carries.
const PENDING: usize = 10_000;

/// Adds `n` suspended resumable sessions `user0`, `user1`, … whose connections were lost 1 ms
/// apart from `now` (the router needs a token source): the grace of `user{i}` ends at the
/// i-th deadline returned, one at a time.
fn suspend_sessions(router: &mut Router, n: usize, now: Instant) -> Vec<Instant> {
    let grace = router.config().sessions.grace;
    let mut deadlines = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let conn = ConnectionId(1_000_000 + i);
        let at = now + Duration::from_millis(i);
        router.handle_connect(conn).unwrap();
        let frame = format!(r#"{{"type":"login","username":"user{i}","resumable":true}}"#);
        router.handle_text(conn, &frame, at).unwrap();
        router.handle_connection_lost(conn, at).unwrap();
        while router.poll_output().is_some() {}
        deadlines.push(at + grace);
    }
    deadlines
}

/// Adds `n` ringing calls, `caller{i}` → `callee{i}`, offered 1 ms apart from `now`: the i-th
/// deadline returned rings the i-th out.
fn ring_calls(router: &mut Router, n: usize, now: Instant) -> Vec<Instant> {
    let ring = router.config().ring_timeout.unwrap();
    let mut deadlines = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let (caller, callee) = (
            ConnectionId(2_000_000 + 2 * i),
            ConnectionId(2_000_001 + 2 * i),
        );
        let at = now + Duration::from_millis(i);
        login(router, caller, &format!("caller{i}"), at);
        login(router, callee, &format!("callee{i}"), at);
        let offer = format!(
            r#"{{"type":"offer","offer":{{"type":"offer","sdp":"v=0"}},"otherUsername":"callee{i}"}}"#
        );
        router.handle_text(caller, &offer, at).unwrap();
        while router.poll_output().is_some() {}
        deadlines.push(at + ring);
    }
    deadlines
}

fn suspended_sessions(n: usize, now: Instant) -> (Router, Vec<Instant>) {
    let mut router = Router::new(RouterConfig::default().with_rate_limit(None))
        .with_token_source(token_source());
    let deadlines = suspend_sessions(&mut router, n, now);
    (router, deadlines)
}

fn ringing_calls(n: usize, now: Instant) -> (Router, Vec<Instant>) {
    let mut router = Router::new(RouterConfig::default().with_rate_limit(None));
    let deadlines = ring_calls(&mut router, n, now);
    (router, deadlines)
}

/// Times `handle_timeout` (and the encoding of what it sends) at `iters` deadlines that each
/// expire exactly one timer while at least [`PENDING`] more are armed: routers of `PENDING +
/// CHUNK` timers are built untimed, then `CHUNK` of them expire, timed.
fn time_expiries(iters: u64, build: impl Fn(usize) -> (Router, Vec<Instant>)) -> Duration {
    const CHUNK: u64 = 10_000;
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let (mut router, deadlines) = build(PENDING + n as usize);
        let start = Instant::now();
        for at in deadlines.iter().take(n as usize) {
            router.handle_timeout(black_box(*at));
            black_box(drain_encoded(&mut router));
        }
        total += start.elapsed();
        assert_eq!(router.poll_timeout(), deadlines.get(n as usize).copied());
        drop(router);
        left -= n;
    }
    total
}

/// Checks once that a deadline expires exactly one grace period (and that nothing happens a
/// nanosecond before it).
fn check_grace_expiry(now: Instant) {
    let (mut router, deadlines) = suspended_sessions(3, now);
    assert_eq!(router.poll_timeout(), Some(deadlines[0]));
    router.handle_timeout(deadlines[0] - Duration::from_nanos(1));
    assert_eq!(router.pending_outputs(), 0);
    router.handle_timeout(deadlines[0]);
    let outputs = drain_all(&mut router);
    assert!(
        matches!(
            outputs.as_slice(),
            [Output::Event(Event::SessionEnded { username, reason: SessionEnd::GraceExpired })]
                if username.as_str() == "user0"
        ),
        "{outputs:?}"
    );
    assert_eq!(router.user_count(), 2);
    assert_eq!(router.poll_timeout(), Some(deadlines[1]));
}

/// Checks once that a deadline rings exactly one call out: both sides told `close` with
/// `"reason":"no_answer"`.
fn check_ring_out(now: Instant) {
    let (mut router, deadlines) = ringing_calls(3, now);
    assert_eq!(router.poll_timeout(), Some(deadlines[0]));
    router.handle_timeout(deadlines[0]);
    let frames: Vec<String> = drain_all(&mut router)
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(t.to_json()),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(
        frames.iter().all(|f| f.contains(r#""reason":"no_answer""#)),
        "{frames:?}"
    );
    assert!(router.partner_of("caller0").is_none());
    assert!(router.partner_of("caller1").is_some());
    assert_eq!(router.poll_timeout(), Some(deadlines[1]));
}

fn timers(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("timers");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(50);

    check_grace_expiry(now);
    group.bench_function(
        "grace expires: 1 of 10000 suspended sessions (handle_timeout+encode)",
        |bench| bench.iter_custom(|iters| time_expiries(iters, |n| suspended_sessions(n, now))),
    );
    check_ring_out(now);
    group.bench_function(
        "ring timeout: 1 of 10000 ringing calls (handle_timeout+encode)",
        |bench| bench.iter_custom(|iters| time_expiries(iters, |n| ringing_calls(n, now))),
    );

    // Nothing due: what the hub pays after every dispatch (`poll_timeout`), and a
    // `handle_timeout` that finds nothing to do.
    let (mut router, deadlines) = suspended_sessions(PENDING, now);
    let before = deadlines[0] - Duration::from_millis(1);
    group.bench_function("poll_timeout, nothing due, 10000 timers armed", |bench| {
        bench.iter(|| {
            black_box(&router)
                .poll_timeout()
                .is_some_and(|at| at <= black_box(before))
        })
    });
    group.bench_function("handle_timeout, nothing due, 10000 timers armed", |bench| {
        bench.iter(|| router.handle_timeout(black_box(before)))
    });
    assert_eq!(router.user_count(), PENDING);
    assert_eq!(router.pending_outputs(), 0);

    // A relay with 20,000 timers armed around it (10,000 suspended sessions, 10,000 ringing
    // calls): compare with `router/candidate relay (parse+route+encode), 0 idle users`.
    let mut router = Router::new(RouterConfig::default().with_rate_limit(None))
        .with_token_source(token_source());
    suspend_sessions(&mut router, PENDING, now);
    ring_calls(&mut router, PENDING, now);
    let (a, _) = call_between(&mut router, now);
    router.handle_text(a, CANDIDATE, now).unwrap();
    assert!(matches!(
        drain_all(&mut router).as_slice(),
        [Output::Transmit(t)] if t.message.to_json().contains("candidate:842163049")
    ));
    group.bench_function(
        "candidate relay (parse+route+encode), 20000 timers armed",
        |bench| {
            bench.iter(|| {
                router.handle_text(a, black_box(CANDIDATE), now).unwrap();
                drain_encoded(&mut router)
            })
        },
    );

    // A relay to a resumable session: numbered, and kept in its history (full: 256 kept, the
    // oldest dropped at each message).
    let (mut router, _, _, _) = before_resume(300, Before::StillOpen, now);
    let b = router.connection_of("bob").unwrap();
    let to_alice = CANDIDATE.replace(r#""otherUsername":"bob""#, r#""otherUsername":"alice""#);
    router.handle_text(b, &to_alice, now).unwrap();
    assert!(matches!(
        drain_all(&mut router).as_slice(),
        [Output::Transmit(t)] if t.seq == Some(302)
    ));
    group.bench_function(
        "candidate relay to a resumable session (seq, history of 256 kept)",
        |bench| {
            bench.iter(|| {
                router.handle_text(b, black_box(&to_alice), now).unwrap();
                drain_encoded(&mut router)
            })
        },
    );
    group.finish();
}

/// The candidate object of [`CANDIDATE`] (≈ 200 bytes).
const CANDIDATE_OBJECT: &str = r#"{"candidate":"candidate:842163049 1 udp 1677729535 192.168.1.2 56143 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag sXYZ network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"sXYZ"}"#;

/// An offer's payload as a browser sends it, `{"type":"offer","sdp":…}`, with an SDP of about
/// 5 KB (audio and video, a dozen video codecs with their feedback and parameters).
fn sdp_offer() -> String {
    let mut sdp = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS 3fd6a1c2\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:sXYZ\r\na=ice-pwd:Fq2m8cTq3kA0xv7bZq1yHn5W\r\n\
         a=ice-options:trickle\r\na=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC\r\n\
         a=setup:actpass\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
         a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
         a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendrecv\r\n\
         a=msid:3fd6a1c2 6c1f7e0a-5b8e-4d1e-9f53-0b2f3c4d5e6f\r\na=rtcp-mux\r\n\
         a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n\
         a=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\n\
         a=rtpmap:126 telephone-event/8000\r\na=ssrc:1001 cname:Xq3nB7Yf2kLm9PzA\r\n\
         a=ssrc:1001 msid:3fd6a1c2 6c1f7e0a-5b8e-4d1e-9f53-0b2f3c4d5e6f\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 104 105 106 107 108 109 127 125\r\n\
         c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:sXYZ\r\n\
         a=ice-pwd:Fq2m8cTq3kA0xv7bZq1yHn5W\r\na=ice-options:trickle\r\n\
         a=setup:actpass\r\na=mid:1\r\na=sendrecv\r\na=rtcp-mux\r\na=rtcp-rsize\r\n",
    );
    let codecs = ["VP8", "VP9", "H264", "AV1", "H265"];
    let mut pt = 96;
    while sdp.len() < 4_900 {
        let codec = codecs[(pt - 96) / 2 % codecs.len()];
        sdp.push_str(&format!(
            "a=rtpmap:{pt} {codec}/90000\r\na=rtcp-fb:{pt} goog-remb\r\na=rtcp-fb:{pt} transport-cc\r\n\
             a=rtcp-fb:{pt} ccm fir\r\na=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\n\
             a=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
             a=rtpmap:{rtx} rtx/90000\r\na=fmtp:{rtx} apt={pt}\r\n",
            rtx = pt + 1
        ));
        pt += 2;
    }
    serde_json::json!({"type": "offer", "sdp": sdp}).to_string()
}

fn cluster(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("cluster");
    assert!(CANDIDATE.contains(CANDIDATE_OBJECT));
    let offer = sdp_offer();
    assert!((4_800..5_600).contains(&offer.len()), "{}", offer.len());
    let envelope = |body| Envelope {
        from: Username::new("alice").unwrap(),
        to: Username::new("bob").unwrap(),
        body,
    };
    let relay = |kind, payload: &str| Remote::Relay {
        kind,
        payload: Payload::from_json(payload).unwrap(),
        opens_call: kind == RelayKind::Offer,
    };
    let envelopes = [
        (
            "candidate relay (200 B payload)",
            envelope(relay(RelayKind::Candidate, CANDIDATE_OBJECT)),
        ),
        (
            "offer relay (5 KB SDP)",
            envelope(relay(RelayKind::Offer, &offer)),
        ),
        (
            "hang-up",
            envelope(Remote::HangUp {
                end: CallEnd::HungUp,
            }),
        ),
    ];
    // What the relay encoding spends re-validating the payload it splices in
    // (`Envelope::encode` parses it again into a `&RawValue`).
    group.bench_function(
        "floor: serde_json validates the 5 KB offer payload (&RawValue)",
        |bench| {
            bench.iter(|| {
                serde_json::from_str::<&serde_json::value::RawValue>(black_box(&offer))
                    .unwrap()
                    .get()
                    .len()
            })
        },
    );
    for (what, envelope) in envelopes {
        let bytes = envelope.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), envelope);
        group.bench_function(format!("envelope encode: {what}"), |bench| {
            bench.iter(|| black_box(&envelope).encode())
        });
        group.bench_function(format!("envelope decode: {what}"), |bench| {
            bench.iter(|| Envelope::decode(black_box(&bytes)).unwrap())
        });
    }

    // A hand-over: alice's suspended session, in a call with bob, with 32 candidates kept
    // beside bob's offer.
    let (mut router, _, _, _) = before_resume(32, Before::Lost, now);
    let export = router.handle_handover(&token(1), 1, None, now).unwrap();
    assert_eq!((export.name().as_str(), export.seq()), ("alice", 33));
    let bytes = export.encode();
    assert_eq!(SessionExport::decode(&bytes).unwrap(), export);
    group.bench_function(
        format!(
            "session export encode: 33 kept messages ({} B)",
            bytes.len()
        ),
        |bench| bench.iter(|| black_box(&export).encode()),
    );
    group.bench_function(
        format!(
            "session export decode: 33 kept messages ({} B)",
            bytes.len()
        ),
        |bench| bench.iter(|| SessionExport::decode(black_box(&bytes)).unwrap()),
    );
    group.finish();
}

criterion_group!(
    benches,
    relay,
    login_and_disconnect,
    resume,
    timers,
    cluster
);
criterion_main!(benches);
