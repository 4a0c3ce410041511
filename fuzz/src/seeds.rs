//! The seed corpus: small scenarios written as [`Op`]s and encoded with [`encode`]. The files
//! in `corpus/router/seed-*` are exactly these (`cargo run --example gen_corpus` rewrites them;
//! `cargo test` checks they are up to date).

use crate::{Bytes, LastSeq, Msg, Op, Target, TokenPick, encode};

const OFFER: &str = r#"{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\na=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n"}"#;
const ANSWER: &str = r#"{"type":"answer","sdp":"v=0\r\no=- 8897143540734522338 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=setup:active\r\na=mid:0\r\n"}"#;
const CAND_A: &str = r#"{"candidate":"candidate:1 1 udp 2122260223 192.168.1.2 56143 typ host generation 0","sdpMid":"0","sdpMLineIndex":0}"#;
const CAND_B: &str = r#"{"candidate":"candidate:2 1 udp 1686052607 203.0.113.7 40123 typ srflx raddr 192.168.1.3 rport 40123","sdpMid":"0","sdpMLineIndex":0}"#;

/// Config bytes (see [`crate::rate_limit_for`]).
const NO_LIMIT: u8 = 0x00;
const DEFAULT_LIMIT: u8 = 0x7f;
/// 0 tokens/s, burst 1, close after 3 rejections in a row.
const STARVED_CLOSE_AFTER_3: u8 = 1 | (1 << 3) | (2 << 5);
/// 10 tokens/s, burst 3, never close.
const TEN_PER_SECOND_NEVER_CLOSE: u8 = 1 | (2 << 1) | (2 << 3);

fn text(slot: u8, s: &str) -> Op {
    Op::Text {
        slot,
        bytes: Bytes(s.as_bytes().to_vec()),
    }
}
fn raw(slot: u8, b: &[u8]) -> Op {
    Op::RawStr {
        slot,
        bytes: Bytes(b.to_vec()),
    }
}
fn connect(slot: u8) -> Op {
    Op::Connect { slot }
}
fn disconnect(slot: u8) -> Op {
    Op::Disconnect { slot }
}
fn login(slot: u8, name: &str) -> Op {
    text(
        slot,
        &format!(r#"{{"type":"login","username":{}}}"#, json(name)),
    )
}
fn relay(slot: u8, kind: &str, payload: &str, to: &str) -> Op {
    text(
        slot,
        &format!(
            r#"{{"type":"{kind}","{kind}":{payload},"otherUsername":{}}}"#,
            json(to)
        ),
    )
}
fn json(s: &str) -> String {
    serde_json::to_string(s).expect("a str serializes")
}

/// The tutorial's whole call: login, offer, answer, candidates both ways, close, leave.
fn tutorial_call() -> Vec<Op> {
    vec![
        connect(0),
        connect(1),
        login(0, "alice"),
        login(1, "bob"),
        relay(0, "offer", OFFER, "bob"),
        relay(1, "answer", ANSWER, "alice"),
        relay(0, "candidate", CAND_A, "bob"),
        relay(1, "candidate", CAND_B, "alice"),
        text(1, r#"{"type":"candidate","candidate":null}"#),
        text(0, r#"{"type":"close","otherUsername":"bob"}"#),
        disconnect(0),
        disconnect(1),
    ]
}

/// Every seed: (file name, config byte, ops).
pub fn seeds() -> Vec<(&'static str, u8, Vec<Op>)> {
    let mut garbage = vec![connect(2)];
    for g in [
        "",
        " ",
        "null",
        "[]",
        "42",
        "\"x\"",
        "{",
        "}",
        "{}",
        "{\"type\":null}",
        r#"{"type":"dance"}"#,
        r#"{"type":"login"}"#,
        r#"{"type":"login","username":7}"#,
        r#"{"type":"login","username":"a","username":"b"}"#,
        r#"{"type":"offer","otherUsername":"bob"}"#,
        r#"{"type":"candidate","candidate":{},"otherUsername":[]}"#,
        r#"{"type":"close","otherUsername":{}}"#,
        r#"{"type":"login","username":"\ud800"}"#,
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        "{\"type\":\"login\",\"username\":\"alice\"",
        "\u{feff}{\"type\":\"login\",\"username\":\"bom\"}",
    ] {
        garbage.push(text(2, g));
    }
    garbage.push(raw(2, b"{\"type\":\"login\",\"username\":\"\xff\xfe\"}"));
    garbage.push(text(2, "{\"type\":\"login\",\"username\":\"\u{fffd}\"}"));
    garbage.push(Op::Text {
        slot: 2,
        bytes: Bytes(b"\xc3\x28\x00\xff{}".to_vec()),
    });
    garbage.push(disconnect(2));

    vec![
        ("seed-01-tutorial-call", NO_LIMIT, tutorial_call()),
        (
            "seed-02-tutorial-call-default-limit",
            DEFAULT_LIMIT,
            tutorial_call(),
        ),
        (
            "seed-03-name-taken-then-freed",
            NO_LIMIT,
            vec![
                connect(0),
                connect(1),
                login(0, "alice"),
                login(1, "alice"),
                login(0, "alice2"),
                disconnect(0),
                login(1, "alice"),
                disconnect(1),
            ],
        ),
        (
            "seed-04-partner-leaves-mid-call",
            NO_LIMIT,
            vec![
                connect(0),
                connect(1),
                login(0, "alice"),
                login(1, "bob"),
                relay(0, "offer", OFFER, "bob"),
                relay(1, "answer", ANSWER, "alice"),
                disconnect(1),
                relay(0, "candidate", CAND_A, "bob"),
                text(0, r#"{"type":"candidate","candidate":{}}"#),
                text(0, r#"{"type":"close"}"#),
                connect(1),
                login(1, "bob"),
                relay(0, "offer", OFFER, "bob"),
            ],
        ),
        (
            "seed-05-busy-and-in-call",
            NO_LIMIT,
            vec![
                connect(0),
                connect(1),
                connect(2),
                login(0, "alice"),
                login(1, "bob"),
                login(2, "carol"),
                relay(0, "offer", OFFER, "bob"),
                relay(2, "offer", OFFER, "bob"),
                relay(0, "offer", OFFER, "carol"),
                relay(2, "candidate", CAND_B, "alice"),
                relay(2, "answer", ANSWER, "bob"),
                relay(1, "answer", ANSWER, "alice"),
                relay(0, "offer", OFFER, "bob"),
                text(1, r#"{"type":"close","otherUsername":"carol"}"#),
                text(1, r#"{"type":"close","otherUsername":null}"#),
                relay(2, "offer", OFFER, "alice"),
            ],
        ),
        ("seed-06-garbage-frames", NO_LIMIT, garbage),
        (
            "seed-07-prototype-names",
            NO_LIMIT,
            vec![
                connect(0),
                connect(1),
                login(0, "__proto__"),
                login(1, "constructor"),
                relay(1, "offer", r#"{"__proto__":{"x":1}}"#, "__proto__"),
                relay(0, "answer", "null", "constructor"),
                relay(0, "candidate", CAND_A, "toString"),
                relay(0, "candidate", CAND_A, "__proto__"),
                text(1, r#"{"type":"close","otherUsername":"__proto__"}"#),
            ],
        ),
        (
            "seed-08-binary-and-dead-connections",
            NO_LIMIT,
            vec![
                Op::Binary { slot: 0, len: 10 },
                text(0, r#"{"type":"login","username":"ghost"}"#),
                disconnect(0),
                connect(0),
                connect(0),
                Op::Binary { slot: 0, len: 0 },
                Op::Binary {
                    slot: 0,
                    len: u32::MAX,
                },
                login(0, "alice"),
                disconnect(0),
                Op::Binary { slot: 0, len: 5 },
                disconnect(0),
            ],
        ),
        (
            "seed-09-rate-limited-then-closed",
            STARVED_CLOSE_AFTER_3,
            vec![
                connect(0),
                connect(1),
                login(1, "bob"),
                login(0, "alice"),
                relay(0, "offer", OFFER, "bob"),
                relay(0, "offer", OFFER, "bob"),
                relay(0, "offer", OFFER, "bob"),
                Op::Binary { slot: 0, len: 1 },
                relay(0, "offer", OFFER, "bob"),
                Op::AdvanceTime { ms: 60_000 },
                relay(0, "offer", OFFER, "bob"),
                disconnect(0),
                connect(0),
                login(0, "alice"),
            ],
        ),
        (
            "seed-10-rate-limit-refill-and-clock-skew",
            TEN_PER_SECOND_NEVER_CLOSE,
            vec![
                connect(0),
                connect(1),
                login(0, "alice"),
                login(1, "bob"),
                relay(0, "offer", OFFER, "bob"),
                relay(0, "candidate", CAND_A, "bob"),
                relay(0, "candidate", CAND_A, "bob"),
                relay(0, "candidate", CAND_A, "bob"),
                Op::AdvanceTime { ms: 100 },
                relay(0, "candidate", CAND_A, "bob"),
                Op::RewindTime { ms: 5_000 },
                relay(0, "candidate", CAND_A, "bob"),
                Op::AdvanceTime { ms: 1_000 },
                relay(1, "answer", ANSWER, "alice"),
                relay(0, "candidate", CAND_A, "bob"),
            ],
        ),
        (
            "seed-11-structured-call",
            NO_LIMIT,
            vec![
                connect(3),
                connect(4),
                Op::Message {
                    slot: 3,
                    msg: Msg::Login { name: 0 },
                },
                Op::Message {
                    slot: 4,
                    msg: Msg::Login { name: 1 },
                },
                Op::Message {
                    slot: 3,
                    msg: Msg::Offer {
                        to: Target::Name(1),
                        payload: 0,
                    },
                },
                Op::Message {
                    slot: 4,
                    msg: Msg::Answer {
                        to: Target::Name(0),
                        payload: 4,
                    },
                },
                Op::Message {
                    slot: 4,
                    msg: Msg::Candidate {
                        to: Target::Omitted,
                        payload: 1,
                    },
                },
                Op::Message {
                    slot: 3,
                    msg: Msg::Candidate {
                        to: Target::Null,
                        payload: 5,
                    },
                },
                Op::Message {
                    slot: 3,
                    msg: Msg::Close {
                        to: Target::Name(1),
                    },
                },
                Op::Message {
                    slot: 4,
                    msg: Msg::Close {
                        to: Target::Omitted,
                    },
                },
            ],
        ),
        (
            "seed-12-unicode-and-invalid-names",
            NO_LIMIT,
            vec![
                connect(0),
                connect(1),
                login(0, ""),
                login(0, &"x".repeat(65)),
                login(0, "tab\tname"),
                login(0, "\u{85}"),
                login(0, &"é".repeat(64)),
                text(
                    1,
                    r#"{"type":"login","username":"\u00e9\ud83d\ude00 \"quoted\" \\ "}"#,
                ),
                relay(1, "offer", r#""\ud800 lone surrogate""#, &"é".repeat(64)),
                relay(
                    0,
                    "answer",
                    r#"{"sdp":"\ud800"}"#,
                    "\u{e9}\u{1f600} \"quoted\" \\ ",
                ),
                relay(
                    0,
                    "candidate",
                    "[1e999, -0.0, 1E+2]",
                    "\u{e9}\u{1f600} \"quoted\" \\ ",
                ),
            ],
        ),
        (
            "seed-13-injection-attempts",
            NO_LIMIT,
            vec![
                connect(0),
                connect(1),
                connect(2),
                login(0, "alice"),
                login(1, "bob"),
                login(2, "mallory"),
                relay(0, "offer", OFFER, "bob"),
                relay(2, "answer", ANSWER, "alice"),
                relay(2, "candidate", CAND_B, "bob"),
                text(2, r#"{"type":"close","otherUsername":"alice"}"#),
                relay(0, "offer", OFFER, "alice"),
                text(
                    2,
                    r#"{"type":"offer","offer":{},"otherUsername":"alice","username":"bob"}"#,
                ),
                relay(1, "answer", ANSWER, "alice"),
            ],
        ),
        (
            "seed-14-verified-connections",
            NO_LIMIT,
            vec![
                // Bound to NAMES[0] = "alice" and NAMES[1] = "bob" by an authenticator.
                Op::ConnectVerified { slot: 0, name: 0 },
                Op::ConnectVerified { slot: 1, name: 1 },
                Op::ConnectVerified { slot: 1, name: 1 },
                connect(2),
                login(2, "alice"),
                login(0, "alice"),
                login(1, "carol"),
                login(1, "bob"),
                relay(0, "offer", OFFER, "bob"),
                relay(1, "answer", ANSWER, "alice"),
                disconnect(2),
                disconnect(0),
            ],
        ),
        (
            "seed-15-look-alike-names",
            NO_LIMIT,
            vec![
                connect(0),
                connect(1),
                connect(2),
                connect(3),
                login(0, "alice"),
                login(1, "\u{430}lice"),
                login(1, "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}"),
                login(1, "alice\u{200d}"),
                login(1, " alice"),
                login(1, "alice\u{a0}"),
                login(1, "\u{202e}alice"),
                login(1, "alice\u{e0061}"),
                login(1, "\u{3164}"),
                login(2, "zoe\u{308}"),
                login(3, "zo\u{eb}"),
                login(3, "rn"),
                login(3, "m"),
                relay(3, "offer", OFFER, "zoe\u{308}"),
                relay(2, "answer", ANSWER, "rn"),
                text(3, r#"{"type":"close","otherUsername":"zo\u00eb"}"#),
                disconnect(0),
                login(1, "\u{430}lice"),
                Op::Message {
                    slot: 0,
                    msg: Msg::Login { name: 8 },
                },
                connect(0),
                Op::Message {
                    slot: 0,
                    msg: Msg::Login { name: 0 },
                },
                Op::Message {
                    slot: 0,
                    msg: Msg::Login { name: 12 },
                },
            ],
        ),
        (
            "seed-16-unanswered-call-bounds",
            // No rate limit; small bounds before the answer (bit 7).
            0x80,
            {
                let mut ops = vec![
                    connect(0),
                    connect(1),
                    login(0, "mallory"),
                    login(1, "carol"),
                    relay(0, "offer", OFFER, "carol"),
                    relay(0, "offer", OFFER, "carol"),
                    relay(0, "offer", OFFER, "carol"),
                    relay(1, "candidate", CAND_B, "mallory"),
                ];
                for _ in 0..5 {
                    ops.push(relay(0, "candidate", CAND_A, "carol"));
                }
                let big = format!(r#"{{"candidate":"{}"}}"#, "x".repeat(200));
                ops.push(relay(0, "candidate", &big, "carol"));
                ops.push(relay(1, "answer", ANSWER, "mallory"));
                ops.push(relay(0, "candidate", &big, "carol"));
                ops.push(relay(0, "offer", OFFER, "carol"));
                ops.push(relay(0, "offer", OFFER, "carol"));
                ops.push(relay(0, "offer", OFFER, "carol"));
                ops.push(text(0, r#"{"type":"close"}"#));
                ops.push(relay(0, "offer", OFFER, "carol"));
                ops.push(relay(0, "candidate", CAND_A, "carol"));
                ops
            },
        ),
        ("seed-17-candidate-flood-default-bounds", NO_LIMIT, {
            let mut ops = vec![
                connect(0),
                connect(1),
                login(0, "mallory"),
                login(1, "carol"),
                relay(0, "offer", OFFER, "carol"),
            ];
            for _ in 0..101 {
                ops.push(relay(0, "candidate", CAND_A, "carol"));
            }
            let big = format!(r#"{{"candidate":"{}"}}"#, "x".repeat(3_000));
            ops.push(relay(1, "candidate", &big, "mallory"));
            ops
        }),
        (
            "seed-18-backpressure-overload-control",
            // Issue 9: the driver's reports (a full queue, the budget) and control frames.
            NO_LIMIT,
            vec![
                connect(0),
                connect(1),
                connect(2),
                login(0, "alice"),
                login(1, "bob"),
                login(2, "carol"),
                Op::Backpressure {
                    slot: 1,
                    congested: true,
                },
                relay(0, "offer", OFFER, "bob"),
                relay(2, "offer", OFFER, "bob"),
                Op::Backpressure {
                    slot: 1,
                    congested: false,
                },
                relay(0, "offer", OFFER, "bob"),
                Op::Overload { on: true },
                relay(1, "answer", ANSWER, "alice"),
                relay(0, "candidate", CAND_A, "bob"),
                text(0, r#"{"type":"close"}"#),
                Op::Overload { on: false },
                relay(2, "offer", OFFER, "alice"),
                Op::Control { slot: 0 },
                Op::Control { slot: 5 },
                Op::Backpressure {
                    slot: 5,
                    congested: true,
                },
                Op::Disconnect { slot: 1 },
            ],
        ),
        (
            "seed-19-resumable-call-drop-resume",
            // Issue 10: a resumable caller drops mid-call, the callee goes on trickling, the
            // caller resumes with what it saw and acknowledges; then a clean close.
            NO_LIMIT,
            vec![
                connect(0),
                connect(1),
                resumable(0, 0),
                login(1, "bob"),
                relay(0, "offer", OFFER, "bob"),
                relay(1, "answer", ANSWER, "alice"),
                relay(1, "candidate", CAND_B, "alice"),
                Op::Acknowledged { slot: 0, back: 1 },
                Op::ConnectionLost { slot: 0 },
                relay(1, "candidate", CAND_B, "alice"),
                relay(1, "candidate", CAND_B, "alice"),
                Op::Tick { secs: 10 },
                connect(2),
                resume(2, TokenPick::Issued(0), LastSeq::Seen(2)),
                relay(2, "candidate", CAND_A, "bob"),
                relay(1, "candidate", CAND_B, "alice"),
                Op::Acknowledged { slot: 2, back: 0 },
                Op::Acknowledged { slot: 2, back: 255 },
                text(2, r#"{"type":"close"}"#),
                Op::Disconnect { slot: 2 },
                Op::Disconnect { slot: 1 },
            ],
        ),
        (
            "seed-20-takeover-and-refused-resumes",
            // Issue 10: a takeover (4000 for the old connection), then spent, garbage and
            // too-long tokens, lastSeq from the future, a resume on a logged-in connection,
            // and history_lost after an acknowledgement.
            NO_LIMIT,
            vec![
                connect(0),
                connect(1),
                resumable(0, 1),
                login(1, "alice"),
                relay(1, "offer", OFFER, "bob"),
                connect(2),
                resume(2, TokenPick::Issued(0), LastSeq::Seen(0)),
                relay(0, "candidate", CAND_A, "alice"),
                Op::Disconnect { slot: 0 },
                connect(3),
                resume(3, TokenPick::Issued(1), LastSeq::Seen(0)),
                resume(3, TokenPick::Garbage(0), LastSeq::Seen(0)),
                resume(3, TokenPick::Garbage(5), LastSeq::Seen(0)),
                resume(3, TokenPick::Garbage(6), LastSeq::Seen(0)),
                resume(3, TokenPick::Issued(0), LastSeq::Ahead(3)),
                resume(3, TokenPick::Issued(0), LastSeq::Raw(u64::MAX)),
                resume(2, TokenPick::Issued(0), LastSeq::Seen(0)),
                relay(1, "candidate", CAND_B, "bob"),
                relay(1, "candidate", CAND_B, "bob"),
                Op::Acknowledged { slot: 2, back: 0 },
                Op::ConnectionLost { slot: 2 },
                resume(3, TokenPick::Issued(0), LastSeq::Seen(2)),
                text(3, r#"{"type":"resume","token":"tok1"}"#),
                text(3, r#"{"type":"resume","token":7,"lastSeq":-1}"#),
                Op::Disconnect { slot: 1 },
            ],
        ),
        (
            "seed-21-ring-out-grace-expiry-overflow",
            // Issue 10: a call rings out (both told no_answer), the redial back-off refuses
            // the next offer, a suspended session's grace expires (partner told close), and a
            // suspended callee's history overflows under a candidate flood.
            NO_LIMIT,
            {
                let mut ops = vec![
                    connect(0),
                    connect(1),
                    connect(2),
                    connect(3),
                    resumable(0, 0),
                    login(1, "bob"),
                    resumable(2, 2),
                    Op::LoginResumable { slot: 3, name: 4 },
                    relay(0, "offer", OFFER, "bob"),
                    Op::Tick { secs: 46 },
                    relay(0, "offer", OFFER, "bob"),
                    relay(2, "offer", OFFER, "alice"),
                    relay(0, "answer", ANSWER, "carol"),
                    Op::ConnectionLost { slot: 2 },
                    Op::Tick { secs: 20 },
                    Op::Tick { secs: 11 },
                    relay(1, "offer", OFFER, "constructor"),
                    relay(3, "answer", ANSWER, "bob"),
                    Op::ConnectionLost { slot: 3 },
                ];
                for _ in 0..300 {
                    ops.push(relay(1, "candidate", CAND_B, "constructor"));
                }
                ops.push(Op::Tick { secs: 255 });
                ops
            },
        ),
        (
            "seed-22-rate-limited-then-taken-over",
            // Issue 10: a resumable session whose connection is being closed for its rate
            // limit is resumed on another connection before the transport is gone.
            STARVED_CLOSE_AFTER_3,
            vec![
                connect(0),
                resumable(0, 0),
                text(0, "x"),
                text(0, "x"),
                text(0, "x"),
                connect(1),
                resume(1, TokenPick::Issued(0), LastSeq::Seen(0)),
                Op::Disconnect { slot: 0 },
                Op::Disconnect { slot: 1 },
            ],
        ),
    ]
}

fn resumable(slot: u8, name: u8) -> Op {
    Op::LoginResumable { slot, name }
}

fn resume(slot: u8, token: TokenPick, last: LastSeq) -> Op {
    Op::Resume { slot, token, last }
}

/// `(file name, bytes)` of every seed.
pub fn seed_files() -> Vec<(&'static str, Vec<u8>)> {
    seeds()
        .into_iter()
        .map(|(name, config, ops)| (name, encode(config, &ops)))
        .collect()
}
