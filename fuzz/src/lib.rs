//! The `router` fuzz target's decoding and checks, kept in a library so that the same code runs
//! under libFuzzer (`cargo fuzz run router`) and on plain stable (`cargo test` in this folder,
//! which replays the seed corpus).
//!
//! # Input format
//!
//! * Byte 0 picks the [`RouterConfig`]: bit 0 clear turns the rate limit off; bit 0 set turns it
//!   on with `per_second`, `burst` and `max_strikes` chosen by bits 1–2, 3–4 and 5–6 (see
//!   [`rate_limit_for`]). `0x7f` is the default limit, `0x00` no limit. Bit 7 set replaces the
//!   default bounds before the answer with [`SMALL_UNANSWERED_LIMITS`] (see
//!   [`unanswered_limits_for`]), so that inputs reach them quickly.
//! * The rest is a sequence of [`Op`]s decoded with `arbitrary`'s derive (a 4-byte little-endian
//!   variant selector, then the fields in order), until the bytes run out or [`MAX_OPS`] ops.
//!   Frame bodies ([`Bytes`]) are a little-endian `u16` length and that many bytes (fewer if the
//!   input ends first).
//!
//! Raw frames ([`Op::Text`], [`Op::RawStr`]) reach the JSON parser's error paths; structured
//! ones ([`Op::Message`]: tutorial messages, [`Op::Json`]: any JSON value in any field) reach
//! logins and calls and put any string (control characters, surrogates) where the decoder and
//! the error messages must cope with it.
//!
//! [`encode`] is the exact inverse for every op but [`Op::Json`]; it writes the seed corpus.

pub mod seeds;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use serde::Deserialize;
use signaling_core::{
    ConnectionId, DisconnectReason, ErrorCode, Output, RateLimit, RelayKind, Router, RouterConfig,
    RouterError, ServerMessage, SessionToken, UnansweredLimits, Username,
};

/// Connection slots: each holds at most one live connection at a time.
pub const SLOTS: usize = 6;
/// Ops decoded from one input at most (bounds the time one input can take).
pub const MAX_OPS: usize = 2_000;

/// How many of [`NAMES`] (the first ones) are valid usernames.
pub const VALID_NAMES: usize = 5;

/// Names used by [`Msg`], by index modulo the length: 5 valid ASCII names, 2 invalid ones, then
/// look-alikes (issue 9): a Cyrillic `а` and a fullwidth `alice` (same skeleton as `alice`),
/// one name in NFC and NFD, the TR39 pair `rn` / `m`, and three invalid ones (a zero-width
/// joiner, a right-to-left override, a trailing no-break space).
pub const NAMES: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "__proto__",
    "constructor",
    "",
    "a\u{0}b",
    "\u{430}lice",
    "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}",
    "zo\u{eb}",
    "zoe\u{308}",
    "rn",
    "m",
    "alice\u{200d}",
    "\u{202e}bob",
    "carol\u{a0}",
];

/// The bounds before the answer when bit 7 of the config byte is set: small, so that inputs
/// reach them.
pub const SMALL_UNANSWERED_LIMITS: UnansweredLimits = UnansweredLimits {
    max_offers: 2,
    max_candidates: 3,
    max_candidate_bytes: 128,
};

/// Payloads used by [`Msg`] relays, by index modulo the length: the shapes browsers send,
/// and JSON a strict parser may choke on.
pub const PAYLOADS: &[&str] = &[
    r#"{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}"#,
    r#"{"candidate":"candidate:842163049 1 udp 1677729535 10.0.0.1 3478 typ srflx","sdpMid":"0","sdpMLineIndex":0}"#,
    "null",
    r#"[1, 2.5e300, -0, true, false, null, {"a": [[[]]]}]"#,
    r#""\u00e9\/\"\u0000\ud83d\ude00""#,
    // A lone surrogate: legal JSON grammar, but not a Rust or serde_json `String`.
    r#"{"sdp":"\ud800"}"#,
    r#"{"__proto__":{"polluted":true},"constructor":null}"#,
];

/// A frame body: a little-endian `u16` length, then that many bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl<'a> Arbitrary<'a> for Bytes {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = usize::from(u16::arbitrary(u)?);
        let take = len.min(u.len());
        Ok(Bytes(u.bytes(take)?.to_vec()))
    }
}

/// Who a structured relay or close names in `otherUsername`.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `otherUsername` left out (the router uses the current partner).
    Omitted,
    /// `"otherUsername": NAMES[i % len]`.
    Name(u8),
    /// `"otherUsername": null`.
    Null,
}

/// A well-formed tutorial message, so that the fuzzer reaches logins and calls quickly; the
/// raw [`Op::Text`] frames cover everything else.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// `{"type":"login","username":NAMES[name]}`.
    Login {
        /// Index into [`NAMES`].
        name: u8,
    },
    /// `{"type":"offer","offer":PAYLOADS[payload],…}`.
    Offer {
        /// The addressee.
        to: Target,
        /// Index into [`PAYLOADS`].
        payload: u8,
    },
    /// `{"type":"answer","answer":…,…}`.
    Answer {
        /// The addressee.
        to: Target,
        /// Index into [`PAYLOADS`].
        payload: u8,
    },
    /// `{"type":"candidate","candidate":…,…}`.
    Candidate {
        /// The addressee.
        to: Target,
        /// Index into [`PAYLOADS`].
        payload: u8,
    },
    /// `{"type":"close",…}`.
    Close {
        /// The partner named.
        to: Target,
    },
}

impl Msg {
    /// The frame text.
    pub fn to_text(&self) -> String {
        let name = |i: u8| NAMES[usize::from(i) % NAMES.len()];
        let json = |s: &str| serde_json::to_string(s).expect("a str serializes");
        let target = |t: &Target| match t {
            Target::Omitted => String::new(),
            Target::Name(i) => format!(r#","otherUsername":{}"#, json(name(*i))),
            Target::Null => r#","otherUsername":null"#.to_string(),
        };
        let relay = |kind: &str, to: &Target, payload: u8| {
            let body = PAYLOADS[usize::from(payload) % PAYLOADS.len()];
            format!(r#"{{"type":"{kind}","{kind}":{body}{}}}"#, target(to))
        };
        match self {
            Msg::Login { name: n } => {
                format!(r#"{{"type":"login","username":{}}}"#, json(name(*n)))
            }
            Msg::Offer { to, payload } => relay("offer", to, *payload),
            Msg::Answer { to, payload } => relay("answer", to, *payload),
            Msg::Candidate { to, payload } => relay("candidate", to, *payload),
            Msg::Close { to } => format!(r#"{{"type":"close"{}}}"#, target(to)),
        }
    }
}

/// One step of the scenario. Slots are taken modulo [`SLOTS`].
#[derive(Arbitrary, Debug, Clone, PartialEq)]
pub enum Op {
    /// Open a connection in the slot (a fresh id). On a live slot: `handle_connect` with the
    /// live id, which must be refused with `AlreadyConnected`.
    Connect {
        /// The slot.
        slot: u8,
    },
    /// Close the slot's transport. On an empty slot: `handle_disconnect` with a dead id, which
    /// must be refused with `UnknownConnection`.
    Disconnect {
        /// The slot.
        slot: u8,
    },
    /// A text frame: the bytes, invalid UTF-8 replaced (`String::from_utf8_lossy`).
    Text {
        /// The slot.
        slot: u8,
        /// The frame body.
        bytes: Bytes,
    },
    /// A text frame: the longest valid UTF-8 prefix of the bytes, unchanged.
    RawStr {
        /// The slot.
        slot: u8,
        /// The frame body.
        bytes: Bytes,
    },
    /// A binary frame of `len` bytes.
    Binary {
        /// The slot.
        slot: u8,
        /// Its length.
        len: u32,
    },
    /// The clock moves forward.
    AdvanceTime {
        /// By this many milliseconds.
        ms: u16,
    },
    /// The clock moves backwards (never before the start): instants read on different
    /// threads can reach the router out of order.
    RewindTime {
        /// By this many milliseconds.
        ms: u16,
    },
    /// A well-formed tutorial message as a text frame.
    Message {
        /// The slot.
        slot: u8,
        /// The message.
        msg: Msg,
    },
    /// A syntactically valid JSON object with fuzzer-chosen keys and values (any string,
    /// escaped; any JSON type in any field) as a text frame.
    Json {
        /// The slot.
        slot: u8,
        /// The object.
        frame: JsonFrame,
    },
    /// Like [`Op::Connect`], but with `handle_connect_verified`: an authenticator bound the
    /// connection to a valid name (`NAMES[name % 5]`), the only one it may log in with.
    ConnectVerified {
        /// The slot.
        slot: u8,
        /// Index into the valid [`NAMES`].
        name: u8,
    },
    /// Issue 9: the driver says the slot's outbound queue is full (`true`: relays to it must
    /// be refused to their senders) or has drained (`false`).
    Backpressure {
        /// The slot.
        slot: u8,
        /// Full or drained.
        congested: bool,
    },
    /// Issue 9: the driver says the global budget is nearly used up (`true`: every relay must
    /// be refused) or has room again.
    Overload {
        /// Near the budget or not.
        on: bool,
    },
    /// Issue 9: a WebSocket ping or pong: counts against the rate limit, answered only when
    /// refused.
    Control {
        /// The slot.
        slot: u8,
    },
    /// Issue 10: `{"type":"login","username":NAMES[name],"resumable":true}`.
    LoginResumable {
        /// The slot.
        slot: u8,
        /// Index into [`NAMES`].
        name: u8,
    },
    /// Issue 10: `{"type":"resume","token":…,"lastSeq":…}`.
    Resume {
        /// The slot.
        slot: u8,
        /// Which token.
        token: TokenPick,
        /// Which `lastSeq`.
        last: LastSeq,
    },
    /// Issue 10: the transport ends abnormally (`handle_connection_lost`): a resumable
    /// session is suspended. On an empty slot: refused with `UnknownConnection`.
    ConnectionLost {
        /// The slot.
        slot: u8,
    },
    /// Issue 10: the driver saw a pong: `handle_acknowledged` with the last seq the slot was
    /// sent minus `back` (`u64::MAX` for 255).
    Acknowledged {
        /// The slot.
        slot: u8,
        /// How far behind.
        back: u8,
    },
    /// Issue 10: the clock moves forward by `secs` seconds, then `handle_timeout` (grace
    /// periods, ring timeouts).
    Tick {
        /// Seconds.
        secs: u8,
    },
}

/// The token a [`Op::Resume`] sends.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum TokenPick {
    /// The `i`-th most recent token the router issued (live, or spent by a resume, or dead
    /// with its session).
    Issued(u8),
    /// [`GARBAGE_TOKENS`]`[i % len]`: never issued.
    Garbage(u8),
}

/// Tokens no session ever has: empty, look-alikes of issued ones, the longest allowed, one
/// byte too long (`invalid_field`).
pub const GARBAGE_TOKENS: &[&str] = &[
    "",
    "tok0",
    "TOK1",
    "tok1 ",
    "\u{0}",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

/// The `lastSeq` a [`Op::Resume`] sends.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum LastSeq {
    /// The highest seq the token's session was sent, minus `back`.
    Seen(u8),
    /// That plus `ahead`.
    Ahead(u8),
    /// Any number.
    Raw(u64),
}

/// A JSON scalar.
#[derive(Arbitrary, Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float (non-finite ones serialize as `null`).
    Float(f64),
    /// Any string, escaped as JSON.
    Str(String),
    /// `NAMES[i % len]`, so that names line up with logins.
    Name(u8),
}

/// A JSON value for a field.
#[derive(Arbitrary, Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar.
    Scalar(Scalar),
    /// An array of scalars.
    Array(Vec<Scalar>),
    /// An object of scalars (keys may repeat).
    Object(Vec<(String, Scalar)>),
    /// `[[[…]]]`, `n` deep (past serde_json's recursion limit of 128 at 129+).
    Nested(u8),
}

/// The keys the decoder looks at, and any other.
#[derive(Arbitrary, Debug, Clone, PartialEq)]
pub enum Key {
    /// `"type"` (again: a duplicate).
    Type,
    /// `"username"`.
    Username,
    /// `"otherUsername"`.
    OtherUsername,
    /// `"offer"`.
    Offer,
    /// `"answer"`.
    Answer,
    /// `"candidate"`.
    Candidate,
    /// Any other key.
    Other(String),
}

/// The `"type"` of a [`JsonFrame`].
#[derive(Arbitrary, Debug, Clone, PartialEq)]
pub enum Kind {
    /// One of `login`, `offer`, `answer`, `candidate`, `close` (index modulo 5).
    Known(u8),
    /// Any value, string or not.
    Any(Value),
    /// No `"type"` key.
    Missing,
}

/// A JSON object frame: `{"type": kind, key: value, …}`.
#[derive(Arbitrary, Debug, Clone, PartialEq)]
pub struct JsonFrame {
    /// The `"type"`.
    pub kind: Kind,
    /// The other members, in order.
    pub fields: Vec<(Key, Value)>,
}

fn scalar_json(s: &Scalar) -> serde_json::Value {
    use serde_json::Value as J;
    match s {
        Scalar::Null => J::Null,
        Scalar::Bool(b) => J::Bool(*b),
        Scalar::Int(i) => J::from(*i),
        Scalar::Float(f) => J::from(*f),
        Scalar::Str(s) => J::from(s.as_str()),
        Scalar::Name(i) => J::from(NAMES[usize::from(*i) % NAMES.len()]),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Scalar(s) => scalar_json(s).to_string(),
        Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(scalar_json).collect()).to_string()
        }
        Value::Object(members) => {
            // Built by hand: a JSON map would merge repeated keys.
            let members: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::Value::from(k.as_str()), scalar_json(v)))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Nested(n) => {
            let n = usize::from(*n);
            format!("{}{}", "[".repeat(n), "]".repeat(n))
        }
    }
}

impl JsonFrame {
    /// The frame text: always valid JSON (repeated keys aside).
    pub fn to_text(&self) -> String {
        let mut members = Vec::new();
        match &self.kind {
            Kind::Known(i) => {
                let kinds = ["login", "offer", "answer", "candidate", "close"];
                members.push(format!(
                    r#""type":"{}""#,
                    kinds[usize::from(*i) % kinds.len()]
                ));
            }
            Kind::Any(v) => members.push(format!(r#""type":{}"#, value_text(v))),
            Kind::Missing => {}
        }
        for (key, value) in &self.fields {
            let key = match key {
                Key::Type => "type",
                Key::Username => "username",
                Key::OtherUsername => "otherUsername",
                Key::Offer => "offer",
                Key::Answer => "answer",
                Key::Candidate => "candidate",
                Key::Other(k) => k.as_str(),
            };
            members.push(format!(
                "{}:{}",
                serde_json::Value::from(key),
                value_text(value)
            ));
        }
        format!("{{{}}}", members.join(","))
    }
}

/// The rate limit selected by the first input byte.
pub fn rate_limit_for(byte: u8) -> Option<RateLimit> {
    if byte & 1 == 0 {
        return None;
    }
    let pick = |shift: u32, values: [u32; 4]| values[usize::from((byte >> shift) & 3)];
    Some(RateLimit {
        per_second: pick(1, [0, 1, 10, 200]),
        burst: pick(3, [0, 1, 3, 2_000]),
        max_strikes: pick(5, [0, 1, 3, 200]),
    })
}

/// The bounds before the answer selected by the first input byte: the defaults, or with bit 7
/// set [`SMALL_UNANSWERED_LIMITS`].
pub fn unanswered_limits_for(byte: u8) -> UnansweredLimits {
    if byte & 0x80 == 0 {
        UnansweredLimits::default()
    } else {
        SMALL_UNANSWERED_LIMITS
    }
}

/// The TR39 skeleton of a name, computed here rather than by the crate under test.
fn skeleton(name: &str) -> String {
    unicode_security::confusable_detection::skeleton(name).collect()
}

/// Splits an input into its config byte and its ops.
pub fn decode(data: &[u8]) -> (u8, Vec<Op>) {
    let Some((&config, rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut u = Unstructured::new(rest);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    (config, ops)
}

/// The bytes that [`decode`] turns into `(config, ops)`.
pub fn encode(config: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![config];
    for op in ops {
        encode_op(&mut out, op);
    }
    out
}

/// The `u32` that arbitrary's derive maps to variant `index` of `count`:
/// `(u64::from(v) * count) >> 32 == index`.
fn variant(out: &mut Vec<u8>, index: u64, count: u64) {
    let v = u32::try_from((index << 32).div_ceil(count)).expect("index < count");
    out.extend_from_slice(&v.to_le_bytes());
}

fn encode_bytes(out: &mut Vec<u8>, bytes: &Bytes) {
    let len = u16::try_from(bytes.0.len()).expect("frame bodies are at most 65535 bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes.0);
}

fn encode_target(out: &mut Vec<u8>, target: &Target) {
    match target {
        Target::Omitted => variant(out, 0, 3),
        Target::Name(i) => {
            variant(out, 1, 3);
            out.push(*i);
        }
        Target::Null => variant(out, 2, 3),
    }
}

fn encode_op(out: &mut Vec<u8>, op: &Op) {
    const OPS: u64 = 18;
    match op {
        Op::Connect { slot } => {
            variant(out, 0, OPS);
            out.push(*slot);
        }
        Op::Disconnect { slot } => {
            variant(out, 1, OPS);
            out.push(*slot);
        }
        Op::Text { slot, bytes } => {
            variant(out, 2, OPS);
            out.push(*slot);
            encode_bytes(out, bytes);
        }
        Op::RawStr { slot, bytes } => {
            variant(out, 3, OPS);
            out.push(*slot);
            encode_bytes(out, bytes);
        }
        Op::Binary { slot, len } => {
            variant(out, 4, OPS);
            out.push(*slot);
            out.extend_from_slice(&len.to_le_bytes());
        }
        Op::AdvanceTime { ms } => {
            variant(out, 5, OPS);
            out.extend_from_slice(&ms.to_le_bytes());
        }
        Op::RewindTime { ms } => {
            variant(out, 6, OPS);
            out.extend_from_slice(&ms.to_le_bytes());
        }
        Op::Message { slot, msg } => {
            variant(out, 7, OPS);
            out.push(*slot);
            const MSGS: u64 = 5;
            match msg {
                Msg::Login { name } => {
                    variant(out, 0, MSGS);
                    out.push(*name);
                }
                Msg::Offer { to, payload } => {
                    variant(out, 1, MSGS);
                    encode_target(out, to);
                    out.push(*payload);
                }
                Msg::Answer { to, payload } => {
                    variant(out, 2, MSGS);
                    encode_target(out, to);
                    out.push(*payload);
                }
                Msg::Candidate { to, payload } => {
                    variant(out, 3, MSGS);
                    encode_target(out, to);
                    out.push(*payload);
                }
                Msg::Close { to } => {
                    variant(out, 4, MSGS);
                    encode_target(out, to);
                }
            }
        }
        // Its strings and vectors take their lengths from the end of the input, which this
        // simple encoder does not model; seeds use `Text` for JSON.
        Op::Json { .. } => panic!("encode: Op::Json is not supported in seeds"),
        Op::ConnectVerified { slot, name } => {
            variant(out, 9, OPS);
            out.push(*slot);
            out.push(*name);
        }
        Op::Backpressure { slot, congested } => {
            variant(out, 10, OPS);
            out.push(*slot);
            out.push(u8::from(*congested));
        }
        Op::Overload { on } => {
            variant(out, 11, OPS);
            out.push(u8::from(*on));
        }
        Op::Control { slot } => {
            variant(out, 12, OPS);
            out.push(*slot);
        }
        Op::LoginResumable { slot, name } => {
            variant(out, 13, OPS);
            out.push(*slot);
            out.push(*name);
        }
        Op::Resume { slot, token, last } => {
            variant(out, 14, OPS);
            out.push(*slot);
            match token {
                TokenPick::Issued(i) => {
                    variant(out, 0, 2);
                    out.push(*i);
                }
                TokenPick::Garbage(i) => {
                    variant(out, 1, 2);
                    out.push(*i);
                }
            }
            match last {
                LastSeq::Seen(n) => {
                    variant(out, 0, 3);
                    out.push(*n);
                }
                LastSeq::Ahead(n) => {
                    variant(out, 1, 3);
                    out.push(*n);
                }
                LastSeq::Raw(n) => {
                    variant(out, 2, 3);
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
        }
        Op::ConnectionLost { slot } => {
            variant(out, 15, OPS);
            out.push(*slot);
        }
        Op::Acknowledged { slot, back } => {
            variant(out, 16, OPS);
            out.push(*slot);
            out.push(*back);
        }
        Op::Tick { secs } => {
            variant(out, 17, OPS);
            out.push(*secs);
        }
    }
}

/// The fields of a server frame that the server itself writes. Unknown fields (the relayed
/// payload) are skipped by the parser, which checks their JSON syntax but, unlike a
/// `serde_json::Value`, accepts lone `\uD800`-style surrogate escapes (as browsers'
/// `JSON.parse` does). Duplicate fields are an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFrame {
    #[serde(rename = "type")]
    kind: String,
    success: Option<bool>,
    code: Option<String>,
    message: Option<String>,
    username: Option<String>,
    offer: Option<serde::de::IgnoredAny>,
    answer: Option<serde::de::IgnoredAny>,
    candidate: Option<serde::de::IgnoredAny>,
    token: Option<String>,
    #[serde(rename = "graceMs")]
    grace_ms: Option<u64>,
    reason: Option<String>,
    seq: Option<u64>,
}

/// Checks one server frame's text (`seq` is the transmit's: the frame's last field when
/// given); returns its `type`.
fn check_frame(text: &str, seq: Option<u64>) -> String {
    let frame: ServerFrame = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("server frame is not a valid JSON object ({e}): {text}"));
    let code_ok = |code: &Option<String>| {
        let code = code
            .as_deref()
            .unwrap_or_else(|| panic!("no `code`: {text}"));
        assert!(
            ErrorCode::from_wire(code).is_some(),
            "unknown error code {code:?}: {text}"
        );
    };
    let payloads = [&frame.offer, &frame.answer, &frame.candidate]
        .iter()
        .filter(|p| p.is_some())
        .count();
    assert_eq!(frame.seq, seq, "seq: {text}");
    if let Some(seq) = seq {
        assert!(seq > 0, "seq 0: {text}");
        assert!(
            text.ends_with(&format!(r#","seq":{seq}}}"#)),
            "seq not last: {text}"
        );
    }
    // A token and grace only in the replies that start or move a session.
    let session_reply = frame.success == Some(true) && frame.token.is_some();
    assert_eq!(session_reply, frame.grace_ms.is_some(), "{text}");
    if session_reply {
        assert!(seq.is_none(), "a session reply with a seq: {text}");
        assert!(!frame.token.as_deref().unwrap_or("").is_empty(), "{text}");
    } else {
        assert!(frame.token.is_none(), "a token in {text}");
    }
    assert!(frame.reason.is_none() || frame.kind == "close", "{text}");
    match frame.kind.as_str() {
        "login" => {
            let success = frame
                .success
                .unwrap_or_else(|| panic!("login without `success`: {text}"));
            if success {
                assert!(frame.code.is_none() && frame.message.is_none(), "{text}");
            } else {
                code_ok(&frame.code);
                assert!(frame.message.is_some(), "{text}");
            }
            assert!(frame.username.is_none() && payloads == 0, "{text}");
        }
        "resume" => {
            let success = frame
                .success
                .unwrap_or_else(|| panic!("resume without `success`: {text}"));
            if success {
                assert!(frame.code.is_none() && frame.message.is_none(), "{text}");
                assert!(frame.token.is_some(), "{text}");
                let name = frame.username.as_deref().unwrap_or("");
                assert!(!name.is_empty(), "{text}");
            } else {
                code_ok(&frame.code);
                assert!(
                    frame.message.is_some() && frame.username.is_none(),
                    "{text}"
                );
            }
            assert!(payloads == 0, "{text}");
        }
        "error" => {
            code_ok(&frame.code);
            assert!(frame.message.is_some(), "{text}");
            assert!(frame.success.is_none() && frame.username.is_none() && payloads == 0);
        }
        "close" => {
            let from = frame
                .username
                .as_deref()
                .unwrap_or_else(|| panic!("{text}"));
            assert!(!from.is_empty(), "close from an empty name: {text}");
            assert!(payloads == 0 && frame.code.is_none(), "{text}");
            let reason = frame.reason.as_deref();
            assert!(matches!(reason, None | Some("no_answer")), "{text}");
        }
        kind @ ("offer" | "answer" | "candidate") => {
            let from = frame
                .username
                .as_deref()
                .unwrap_or_else(|| panic!("{text}"));
            assert!(!from.is_empty(), "relay from an empty name: {text}");
            let ours = match kind {
                "offer" => &frame.offer,
                "answer" => &frame.answer,
                _ => &frame.candidate,
            };
            assert!(
                ours.is_some() && payloads == 1,
                "relay payload field: {text}"
            );
        }
        other => panic!("unexpected type {other:?}: {text}"),
    }
    frame.kind
}

#[derive(Debug, Clone, Copy)]
struct Live {
    id: ConnectionId,
    /// The router sent `Close` for it; it stays live until `Disconnect`.
    closing: bool,
    /// Connected with `handle_connect_verified`: the only name it may log in with.
    bound: Option<&'static str>,
}

/// What one side of a call that is not answered yet has relayed into it.
#[derive(Debug, Clone, Copy)]
struct Unanswered {
    peer: ConnectionId,
    offers: u32,
    candidates: u32,
}

/// The router under test and what the harness knows about it.
struct World {
    router: Router,
    limit: Option<RateLimit>,
    unanswered_limits: UnansweredLimits,
    /// Per sender, what it relayed into its unanswered call.
    unanswered: HashMap<ConnectionId, Unanswered>,
    /// Relays drained since the last frame: (to, kind, payload bytes).
    relays: Vec<(ConnectionId, RelayKind, usize)>,
    slots: [Option<Live>; SLOTS],
    /// The id last used in each slot (or a never-used one): what a dead-slot input sends.
    stale: [ConnectionId; SLOTS],
    next_id: u64,
    start: Instant,
    offset_ms: u64,
    /// Every id that ever got a `Close`, to check it comes at most once.
    closed: HashSet<ConnectionId>,
    /// Issue 9: connections the driver said are congested, and whether it said the budget is
    /// nearly used up: no relay may reach the former, none at all while the latter holds.
    congested: HashSet<ConnectionId>,
    overloaded: bool,
    /// Issue 10: every token the router issued, oldest first, and whose session it was.
    tokens: Vec<(String, String)>,
    /// The highest seq each session (by name) was sent on any connection.
    seen: HashMap<String, u64>,
    /// Per connection of a resumable session: the seq its next numbered message must have
    /// (`None`: not known yet, after a resume whose `lastSeq` the harness did not choose).
    next_seq: HashMap<ConnectionId, Option<u64>>,
    /// The connection a resume is replaying to, and the `lastSeq` it asked for if known.
    resuming: Option<(ConnectionId, Option<u64>)>,
    /// The `lastSeq` of the [`Op::Resume`] being sent.
    resume_last: Option<u64>,
    /// Only `close` may go out (a timer fired).
    only_closes: bool,
    /// Names of suspended sessions (their connection was lost).
    suspended: HashSet<String>,
    /// Print every op and output to stderr.
    trace: bool,
}

impl World {
    fn new(config_byte: u8) -> Self {
        let limit = rate_limit_for(config_byte);
        let unanswered_limits = unanswered_limits_for(config_byte);
        let mut n = 0u64;
        World {
            router: Router::new(
                RouterConfig::default()
                    .with_rate_limit(limit)
                    .with_unanswered_limits(Some(unanswered_limits)),
            )
            .with_token_source(move || {
                n += 1;
                SessionToken::new(format!("tok{n}"))
            }),
            limit,
            unanswered_limits,
            unanswered: HashMap::new(),
            relays: Vec::new(),
            slots: [None; SLOTS],
            // Ids 1_000_000+ are never handed out, so they are never live.
            stale: std::array::from_fn(|i| ConnectionId(1_000_000 + i as u64)),
            next_id: 0,
            start: Instant::now(),
            offset_ms: 0,
            closed: HashSet::new(),
            congested: HashSet::new(),
            overloaded: false,
            tokens: Vec::new(),
            seen: HashMap::new(),
            next_seq: HashMap::new(),
            resuming: None,
            resume_last: None,
            only_closes: false,
            suspended: HashSet::new(),
            trace: false,
        }
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.offset_ms)
    }

    fn is_live(&self, id: ConnectionId) -> bool {
        self.slots.iter().flatten().any(|l| l.id == id)
    }

    /// Drains the router's outputs, checking each; returns how many there were.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(output) = self.router.poll_output() {
            if matches!(output, Output::Event(_)) {
                continue; // what happened, nothing to send
            }
            n += 1;
            if self.trace {
                match &output {
                    Output::Transmit(t) => eprintln!("    -> {}: {}", t.to, t.message.to_json()),
                    other => eprintln!("    -> {other:?}"),
                }
            }
            let Some(to) = output.connection() else {
                continue; // an event: nothing to send
            };
            assert!(
                self.is_live(to) && self.router.is_connected(to),
                "output for a connection that is not live: {output:?}"
            );
            match output {
                Output::Transmit(t) => {
                    let text = t.to_json();
                    assert_eq!(text, t.message.to_json_with_seq(t.seq));
                    if self.only_closes {
                        let close = matches!(t.message, ServerMessage::HangUp { .. });
                        assert!(close, "a timer sent more than close: {text}");
                    }
                    check_frame(&text, t.seq);
                    self.check_seq(&t.message, t.to, t.seq);
                    // A resume replays what the session was sent before: that is no new relay.
                    let replay = self.resuming.is_some_and(|(c, _)| c == t.to);
                    if let ServerMessage::Relay { kind, payload, .. } = &t.message
                        && !replay
                    {
                        assert!(!self.overloaded, "a relay while overloaded: {}", t.to);
                        assert!(
                            !self.congested.contains(&t.to),
                            "a relay to congested {}",
                            t.to
                        );
                        self.relays.push((t.to, *kind, payload.get().len()));
                    }
                    // What a driver sends: the frame the router built, or the encoding.
                    assert_eq!(t.into_frame(), text);
                }
                Output::Disconnect { conn, reason } => {
                    match reason {
                        DisconnectReason::RateLimited => {
                            let limit = self
                                .limit
                                .unwrap_or_else(|| panic!("Close without a rate limit: {conn}"));
                            assert_ne!(limit.max_strikes, 0, "Close although max_strikes is 0");
                            assert_eq!(reason.code(), 1008);
                        }
                        DisconnectReason::ResumedElsewhere => {
                            let (to, _) = self
                                .resuming
                                .unwrap_or_else(|| panic!("4000 without a resume: {conn}"));
                            assert_ne!(to, conn, "a takeover of itself");
                            assert_eq!(reason.code(), 4000);
                            self.next_seq.remove(&conn);
                        }
                        DisconnectReason::SessionEnded => {
                            let (to, _) = self
                                .resuming
                                .unwrap_or_else(|| panic!("4001 without a resume: {conn}"));
                            assert_ne!(to, conn, "a history_lost of itself");
                            assert_eq!(reason.code(), 4001);
                            self.next_seq.remove(&conn);
                        }
                        other => panic!("unknown disconnect reason {other:?}"),
                    }
                    assert!(self.closed.insert(conn), "second Close for {conn}");
                    for live in self.slots.iter_mut().flatten() {
                        if live.id == conn {
                            live.closing = true;
                        }
                    }
                }
                other => panic!("unknown output {other:?}"),
            }
        }
        assert_eq!(self.router.pending_outputs(), 0);
        n
    }

    /// `handle_connect` (or `handle_connect_verified` with `bound`) on `slot`.
    fn connect(&mut self, slot: u8, bound: Option<&'static str>) {
        let s = usize::from(slot) % SLOTS;
        let connect = |router: &mut Router, id| match bound {
            None => router.handle_connect(id),
            Some(name) => {
                let name = Username::new(name).expect("a valid name");
                router.handle_connect_verified(id, name)
            }
        };
        match self.slots[s] {
            Some(live) => {
                let result = connect(&mut self.router, live.id);
                assert_eq!(result, Err(RouterError::AlreadyConnected(live.id)));
            }
            None => {
                self.next_id += 1;
                let id = ConnectionId(self.next_id);
                assert_eq!(connect(&mut self.router, id), Ok(()));
                self.slots[s] = Some(Live {
                    id,
                    closing: false,
                    bound,
                });
                self.stale[s] = id;
            }
        }
        assert_eq!(self.drain(), 0, "connect produced output");
    }

    /// Feeds one frame from `slot` and checks the outcome.
    fn frame(
        &mut self,
        slot: u8,
        send: impl FnOnce(&mut Router, ConnectionId, Instant) -> Result<(), RouterError>,
    ) {
        let s = usize::from(slot) % SLOTS;
        let now = self.now();
        match self.slots[s] {
            Some(live) => {
                let result = send(&mut self.router, live.id, now);
                assert_eq!(result, Ok(()), "input on live {} refused", live.id);
                self.relays.clear();
                // Any text frame may be a `resume`; the structured op says its `lastSeq`.
                self.resuming = Some((live.id, self.resume_last.take()));
                let outputs = self.drain();
                self.resuming = None;
                self.check_unanswered(live.id);
                if live.closing {
                    assert_eq!(outputs, 0, "closing {} got an answer", live.id);
                } else if self.suspended.is_empty() {
                    // Every frame gets an answer: a reply, a relay, or a close for the partner
                    // (issue 10: unless it went into a suspended session's history).
                    assert!(outputs > 0, "a frame from {} got no answer at all", live.id);
                }
            }
            None => {
                self.resume_last = None;
                let dead = self.stale[s];
                let result = send(&mut self.router, dead, now);
                assert_eq!(result, Err(RouterError::UnknownConnection(dead)));
                assert_eq!(self.drain(), 0, "a refused input produced output");
            }
        }
    }

    /// Issue 10: numbered messages go only to resumable sessions, 1, 2, 3 … per session
    /// without a gap or a repeat on each connection; after a resume they go on from
    /// `lastSeq + 1`.
    fn check_seq(&mut self, message: &ServerMessage, to: ConnectionId, seq: Option<u64>) {
        let name = || {
            self.router
                .username(to)
                .unwrap_or_else(|| panic!("a session reply to {to}, which holds no session"))
                .to_string()
        };
        match message {
            ServerMessage::SessionStarted { token, .. } => {
                let name = name();
                self.tokens.push((token.as_str().to_string(), name.clone()));
                self.seen.insert(name, 0);
                self.next_seq.insert(to, Some(1));
            }
            ServerMessage::Resumed {
                username, token, ..
            } => {
                assert_eq!(username.as_str(), name(), "resumed as another name");
                let (on, last) = self
                    .resuming
                    .unwrap_or_else(|| panic!("a resume reply without a resume: {to}"));
                assert_eq!(on, to, "a resume reply to another connection");
                self.tokens
                    .push((token.as_str().to_string(), username.to_string()));
                self.next_seq.insert(to, last.map(|l| l + 1));
            }
            _ => match (seq, self.next_seq.get_mut(&to)) {
                (None, None) => {}
                (None, Some(_)) => panic!("an unnumbered message to a resumable session: {to}"),
                (Some(s), None) => panic!("seq {s} to {to}, which has no resumable session"),
                (Some(s), Some(next)) => {
                    if let Some(n) = *next {
                        assert_eq!(s, n, "{to}: seq {s}, expected {n}");
                    }
                    *next = Some(s + 1);
                    let seen = self.seen.entry(name()).or_default();
                    *seen = (*seen).max(s);
                }
            },
        }
    }

    /// The last seq `conn` was sent, if it holds a resumable session.
    fn last_sent(&self, conn: ConnectionId) -> u64 {
        match self.next_seq.get(&conn) {
            Some(Some(next)) => next - 1,
            _ => 0,
        }
    }

    fn step(&mut self, op: &Op) {
        if self.trace {
            eprintln!("{op:?}");
        }
        match op {
            Op::Connect { slot } => self.connect(*slot, None),
            Op::ConnectVerified { slot, name } => {
                // The valid names only: an authenticator verifies real usernames.
                let valid = &NAMES[..VALID_NAMES];
                self.connect(*slot, Some(valid[usize::from(*name) % valid.len()]));
            }
            Op::Disconnect { slot } => {
                let s = usize::from(*slot) % SLOTS;
                match self.slots[s].take() {
                    Some(live) => {
                        self.congested.remove(&live.id);
                        self.next_seq.remove(&live.id);
                        let name = self.router.username(live.id).cloned();
                        assert_eq!(self.router.handle_disconnect(live.id), Ok(()));
                        assert!(!self.router.is_connected(live.id));
                        // A clean close ends any session at once.
                        if let Some(name) = name {
                            assert!(!self.router.is_logged_in(name.as_str()), "{name} kept");
                        }
                    }
                    None => {
                        let dead = self.stale[s];
                        let result = self.router.handle_disconnect(dead);
                        assert_eq!(result, Err(RouterError::UnknownConnection(dead)));
                    }
                }
                // At most a `close` for the partner.
                assert!(self.drain() <= 1);
            }
            Op::Text { slot, bytes } => {
                let text = String::from_utf8_lossy(&bytes.0);
                self.frame(*slot, |r, c, now| r.handle_text(c, &text, now));
            }
            Op::RawStr { slot, bytes } => {
                let text = match std::str::from_utf8(&bytes.0) {
                    Ok(s) => s,
                    Err(e) => std::str::from_utf8(&bytes.0[..e.valid_up_to()])
                        .expect("the valid prefix is UTF-8"),
                };
                self.frame(*slot, |r, c, now| r.handle_text(c, text, now));
            }
            Op::Binary { slot, len } => {
                let len = *len as usize;
                self.frame(*slot, |r, c, now| r.handle_binary(c, len, now));
            }
            Op::AdvanceTime { ms } => self.offset_ms += u64::from(*ms),
            Op::RewindTime { ms } => self.offset_ms = self.offset_ms.saturating_sub(u64::from(*ms)),
            Op::Message { slot, msg } => {
                let text = msg.to_text();
                self.frame(*slot, |r, c, now| r.handle_text(c, &text, now));
            }
            Op::Json { slot, frame } => {
                let text = frame.to_text();
                self.frame(*slot, |r, c, now| r.handle_text(c, &text, now));
            }
            Op::Backpressure { slot, congested } => {
                let s = usize::from(*slot) % SLOTS;
                match self.slots[s] {
                    Some(live) => {
                        let result = self.router.handle_backpressure(live.id, *congested);
                        assert_eq!(result, Ok(()));
                        assert_eq!(self.router.is_congested(live.id), *congested);
                        if *congested {
                            self.congested.insert(live.id);
                        } else {
                            self.congested.remove(&live.id);
                        }
                    }
                    None => {
                        let dead = self.stale[s];
                        let result = self.router.handle_backpressure(dead, *congested);
                        assert_eq!(result, Err(RouterError::UnknownConnection(dead)));
                    }
                }
                assert_eq!(self.drain(), 0, "backpressure produced output");
            }
            Op::Overload { on } => {
                self.router.handle_overload(*on);
                self.overloaded = *on;
                assert_eq!(self.router.is_overloaded(), *on);
                assert_eq!(self.drain(), 0, "overload produced output");
            }
            Op::LoginResumable { .. }
            | Op::Resume { .. }
            | Op::ConnectionLost { .. }
            | Op::Acknowledged { .. }
            | Op::Tick { .. } => {}
            Op::Control { slot } => {
                let s = usize::from(*slot) % SLOTS;
                let now = self.now();
                match self.slots[s] {
                    Some(live) => {
                        assert_eq!(self.router.handle_control(live.id, now), Ok(()));
                        // Nothing, or the refusal: a `rate_limited` error or the `Close`.
                        assert!(self.drain() <= 1, "a control frame got several answers");
                    }
                    None => {
                        let dead = self.stale[s];
                        let result = self.router.handle_control(dead, now);
                        assert_eq!(result, Err(RouterError::UnknownConnection(dead)));
                        assert_eq!(self.drain(), 0);
                    }
                }
            }
        }
        self.step_sessions(op);
        // A call that ended or was answered starts afresh.
        let router = &self.router;
        self.unanswered
            .retain(|&c, side| router.partner(c) == Some(side.peer) && !router.is_answered(c));
        self.check_state();
    }

    /// Issue 10's inputs: resumable logins, resumes, abnormal ends, acknowledgements, timers.
    fn step_sessions(&mut self, op: &Op) {
        match op {
            Op::LoginResumable { slot, name } => {
                let name = NAMES[usize::from(*name) % NAMES.len()];
                let text = format!(
                    r#"{{"type":"login","username":{},"resumable":true}}"#,
                    serde_json::to_string(name).expect("a str serializes")
                );
                self.frame(*slot, |r, c, now| r.handle_text(c, &text, now));
            }
            Op::Resume { slot, token, last } => {
                let (token, owner) = match token {
                    TokenPick::Issued(i) if !self.tokens.is_empty() => {
                        let (t, owner) = &self.tokens
                            [self.tokens.len() - 1 - usize::from(*i) % self.tokens.len()];
                        (t.clone(), Some(owner.clone()))
                    }
                    TokenPick::Issued(i) | TokenPick::Garbage(i) => {
                        let t = GARBAGE_TOKENS[usize::from(*i) % GARBAGE_TOKENS.len()];
                        (t.to_string(), None)
                    }
                };
                let seen = owner.and_then(|o| self.seen.get(&o).copied()).unwrap_or(0);
                let last_seq = match last {
                    LastSeq::Seen(back) => seen.saturating_sub(u64::from(*back)),
                    LastSeq::Ahead(n) => seen + u64::from(*n),
                    LastSeq::Raw(n) => *n,
                };
                let text = format!(
                    r#"{{"type":"resume","token":{},"lastSeq":{last_seq}}}"#,
                    serde_json::to_string(&token).expect("a str serializes")
                );
                self.resume_last = Some(last_seq);
                self.frame(*slot, |r, c, now| r.handle_text(c, &text, now));
            }
            Op::ConnectionLost { slot } => {
                let s = usize::from(*slot) % SLOTS;
                let now = self.now();
                match self.slots[s].take() {
                    Some(live) => {
                        self.congested.remove(&live.id);
                        let resumable = self.next_seq.remove(&live.id).is_some();
                        let name = self.router.username(live.id).cloned();
                        let result = self.router.handle_connection_lost(live.id, now);
                        assert_eq!(result, Ok(()));
                        assert!(!self.router.is_connected(live.id));
                        if let Some(name) = name {
                            let name = name.as_str();
                            if resumable && !live.closing {
                                // Suspended: the name and the call stay, the partner hears
                                // nothing.
                                assert!(self.router.is_suspended(name), "{name} not suspended");
                                assert_eq!(self.drain(), 0, "a suspension produced output");
                                self.suspended.insert(name.to_string());
                            } else {
                                assert!(!self.router.is_logged_in(name), "{name} kept");
                            }
                        }
                    }
                    None => {
                        let dead = self.stale[s];
                        let result = self.router.handle_connection_lost(dead, now);
                        assert_eq!(result, Err(RouterError::UnknownConnection(dead)));
                    }
                }
                assert!(self.drain() <= 1);
            }
            Op::Acknowledged { slot, back } => {
                let s = usize::from(*slot) % SLOTS;
                let (id, result) = match self.slots[s] {
                    Some(live) => {
                        let seq = match back {
                            255 => u64::MAX,
                            b => self.last_sent(live.id).saturating_sub(u64::from(*b)),
                        };
                        (live.id, Ok(self.router.handle_acknowledged(live.id, seq)))
                    }
                    None => {
                        let dead = self.stale[s];
                        (dead, Err(self.router.handle_acknowledged(dead, 0)))
                    }
                };
                match result {
                    Ok(r) => assert_eq!(r, Ok(())),
                    Err(r) => assert_eq!(r, Err(RouterError::UnknownConnection(id))),
                }
                assert_eq!(self.drain(), 0, "an acknowledgement produced output");
            }
            Op::Tick { secs } => {
                self.offset_ms += u64::from(*secs) * 1_000;
                let now = self.now();
                self.router.handle_timeout(now);
                self.only_closes = true;
                self.drain();
                self.only_closes = false;
                if let Some(at) = self.router.poll_timeout() {
                    assert!(at > now, "a timer due at {at:?} was not handled");
                }
            }
            _ => {}
        }
    }

    /// Issue 9: what `sender` relayed into a call that is not answered stays within the
    /// bounds, counted per call side.
    fn check_unanswered(&mut self, sender: ConnectionId) {
        let relays = std::mem::take(&mut self.relays);
        if relays.is_empty() {
            return;
        }
        let partner = self.router.partner(sender);
        for &(to, kind, bytes) in &relays {
            assert_eq!(
                Some(to),
                partner,
                "{sender} relayed to {to}, not its partner"
            );
            if self.router.is_answered(sender) || kind == RelayKind::Answer {
                continue;
            }
            let side = self.unanswered.entry(sender).or_insert(Unanswered {
                peer: to,
                offers: 0,
                candidates: 0,
            });
            assert_eq!(side.peer, to, "{sender}: a stale unanswered call");
            let limits = self.unanswered_limits;
            match kind {
                RelayKind::Offer => {
                    side.offers += 1;
                    assert!(
                        side.offers <= limits.max_offers.max(1),
                        "{sender}: {} offers before the answer",
                        side.offers
                    );
                }
                _ => {
                    side.candidates += 1;
                    assert!(
                        side.candidates <= limits.max_candidates,
                        "{sender}: {} candidates before the answer",
                        side.candidates
                    );
                    assert!(
                        bytes <= limits.max_candidate_bytes,
                        "{sender}: a {bytes}-byte candidate before the answer"
                    );
                }
            }
        }
    }

    /// The registry and the calls are consistent with what the harness knows.
    fn check_state(&mut self) {
        let r = &self.router;
        self.suspended.retain(|name| r.is_suspended(name));
        // A connection whose session ended (or was taken over) is no longer numbered.
        self.next_seq.retain(|&c, _| r.username(c).is_some());
        self.check_registry();
    }

    fn check_registry(&self) {
        let r = &self.router;
        let live: Vec<ConnectionId> = self.slots.iter().flatten().map(|l| l.id).collect();
        for l in self.slots.iter().flatten() {
            if let (Some(bound), Some(name)) = (l.bound, r.username(l.id)) {
                assert_eq!(name.as_str(), bound, "{} is bound to {bound:?}", l.id);
            }
        }
        assert_eq!(r.connection_count(), live.len(), "connection_count");
        let mut users = 0;
        for &c in &live {
            assert!(r.is_connected(c));
            if let Some(name) = r.username(c) {
                users += 1;
                assert_eq!(r.connection_of(name.as_str()), Some(c), "name registry");
            }
            if let Some(p) = r.partner(c) {
                assert_ne!(p, c, "{c} in a call with itself");
                assert!(live.contains(&p), "{c} in a call with dead {p}");
                assert_eq!(r.partner(p), Some(c), "call of {c} with {p} is one-sided");
                assert_eq!(r.is_answered(c), r.is_answered(p), "answered differs");
                assert!(r.username(c).is_some() && r.username(p).is_some());
            } else if r.is_answered(c) {
                // An answered call whose other side is suspended.
                let name = r.username(c).expect("in a call").as_str();
                let peer = r.partner_of(name).expect("answered, so in a call");
                assert!(r.is_suspended(peer.as_str()), "answered alone: {c}");
            }
        }
        // Issue 10: suspended sessions hold their names without a connection.
        for name in &self.suspended {
            assert!(
                r.is_logged_in(name) && r.connection_of(name).is_none(),
                "{name}"
            );
        }
        assert_eq!(r.user_count(), users + self.suspended.len(), "user_count");
        if self.suspended.is_empty() && live.iter().all(|&c| r.partner(c).is_none()) {
            assert_eq!(r.poll_timeout(), None, "a timer with nothing to time");
        }
        if !self.suspended.is_empty() {
            assert!(
                r.poll_timeout().is_some(),
                "a suspended session without a grace timer"
            );
        }
        // Issue 9: no two live names share a skeleton, and the router's skeleton map has
        // exactly the live ones.
        let mut skeletons = HashSet::new();
        for &c in &live {
            if let Some(name) = r.username(c) {
                let s = skeleton(name.as_str());
                assert_eq!(r.connection_of_skeleton(&s), Some(c), "skeleton registry");
                assert!(skeletons.insert(s), "two live names look alike: {name:?}");
            }
        }
        for name in NAMES {
            let s = skeleton(name);
            if !skeletons.contains(&s) {
                assert_eq!(
                    r.connection_of_skeleton(&s),
                    None,
                    "stale skeleton of {name:?}"
                );
            }
        }
        for id in self.stale {
            if !live.contains(&id) {
                assert!(!r.is_connected(id));
            }
        }
    }

    /// Everyone leaves: the router must end up empty.
    fn finish(mut self) {
        for s in 0..SLOTS {
            if let Some(live) = self.slots[s].take() {
                assert_eq!(self.router.handle_disconnect(live.id), Ok(()));
                assert!(self.drain() <= 1);
                self.check_state();
            }
        }
        // Suspended sessions end when their grace is over.
        self.offset_ms += 24 * 3_600 * 1_000;
        self.router.handle_timeout(self.now());
        assert_eq!(self.drain(), 0, "output with nobody connected");
        self.check_state();
        assert_eq!(self.router.connection_count(), 0);
        assert_eq!(self.router.user_count(), 0);
        assert_eq!(self.router.retained_bytes(), 0);
        assert_eq!(self.router.poll_timeout(), None);
        assert_eq!(self.router.pending_outputs(), 0);
        assert!(self.router.poll_output().is_none());
    }
}

/// Runs one fuzz input: decodes it, feeds every op to a fresh router checking the invariants
/// after each, then disconnects everyone. Panics on any violation.
pub fn run(data: &[u8]) {
    let (config, ops) = decode(data);
    run_ops(config, &ops);
}

/// [`run`] on already decoded ops.
pub fn run_ops(config: u8, ops: &[Op]) {
    run_ops_inner(config, ops, false);
}

/// [`run`], printing the config, every op and every output to stderr (for reading a crash).
pub fn run_traced(data: &[u8]) {
    let (config, ops) = decode(data);
    eprintln!(
        "config {config:#04x}: rate limit {:?}",
        rate_limit_for(config)
    );
    run_ops_inner(config, &ops, true);
}

fn run_ops_inner(config: u8, ops: &[Op], trace: bool) {
    let mut world = World::new(config);
    world.trace = trace;
    for op in ops {
        world.step(op);
    }
    world.finish();
}
