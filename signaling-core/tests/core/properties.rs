//! Property tests: random sequences of connect / login / offer / answer / candidate / close /
//! disconnect / garbage, checked at every step against a small reference model and against the
//! invariants of issue 2. Cases: `PROPTEST_CASES` (default 1,000 per property here).

// Tests play the driver's part: they read the clock the router may not.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use proptest::prelude::*;

use crate::common::cases;
use serde_json::Value;
use signaling_core::{ConnectionId, Output, Router, RouterConfig, UnansweredLimits};
use unicode_normalization::UnicodeNormalization;

/// Connection slots: a slot holds at most one live connection at a time.
const SLOTS: usize = 6;
/// Names drawn by index: ASCII names, then look-alikes of them (issue 9) — one NFC name in two
/// spellings, a Cyrillic `а`, a fullwidth spelling and the TR39 pair `rn` / `m`.
const NAMES: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "__proto__",
    "constructor",
    "toString",
    "\u{430}lice",
    "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}",
    "zo\u{eb}",
    "zoe\u{308}",
    "rn",
    "m",
];
const INVALID_NAMES: &[&str] = &[
    "",
    "a\u{0}b",
    "tab\tname",
    "alice\u{200d}",
    " bob",
    "\u{202e}carol",
];

/// The bounds before the answer, small enough for 80 ops to reach them.
const LIMITS: UnansweredLimits = UnansweredLimits {
    max_offers: 2,
    max_candidates: 3,
    max_candidate_bytes: 64,
};

/// The NFC form, computed here rather than by the crate under test.
fn nfc(name: &str) -> String {
    name.nfc().collect()
}

/// The TR39 skeleton, computed here rather than by the crate under test.
fn skeleton(name: &str) -> String {
    unicode_security::confusable_detection::skeleton(name).collect()
}

/// `name` as a JSON string literal.
fn json_str(name: &str) -> String {
    serde_json::to_string(name).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Offer,
    Answer,
    Candidate,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Offer => "offer",
            Kind::Answer => "answer",
            Kind::Candidate => "candidate",
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    Login(usize, usize),
    LoginInvalid(usize, usize),
    /// slot, kind, target name index (None = leave `otherUsername` out), payload style.
    Relay(usize, Kind, Option<usize>, usize),
    Close(usize, Option<usize>),
    Disconnect(usize),
    Garbage(usize, String),
    /// Issue 9: the driver says a slot's queue is full (true) or drained (false).
    Backpressure(usize, bool),
    /// Issue 9: the driver says the global budget is nearly used up (true) or not.
    Overload(bool),
}

fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("42".to_string()),
        Just("\"x\"".to_string()),
        Just("{".to_string()),
        Just("{}".to_string()),
        Just(r#"{"type":"dance"}"#.to_string()),
        Just(r#"{"type":"login"}"#.to_string()),
        Just(r#"{"type":"login","username":7}"#.to_string()),
        Just(r#"{"type":"offer","otherUsername":"bob"}"#.to_string()),
        Just(r#"{"type":"candidate","candidate":{},"otherUsername":[]}"#.to_string()),
        Just(r#"{"type":"close","otherUsername":{}}"#.to_string()),
        ".{0,40}",
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let name = 0..NAMES.len();
    let kind = prop_oneof![Just(Kind::Offer), Just(Kind::Answer), Just(Kind::Candidate)];
    prop_oneof![
        3 => slot.clone().prop_map(Op::Connect),
        3 => (slot.clone(), name.clone()).prop_map(|(s, n)| Op::Login(s, n)),
        1 => (slot.clone(), 0..INVALID_NAMES.len()).prop_map(|(s, n)| Op::LoginInvalid(s, n)),
        8 => (slot.clone(), kind, proptest::option::weighted(0.85, name.clone()), 0..4usize)
            .prop_map(|(s, k, t, p)| Op::Relay(s, k, t, p)),
        2 => (slot.clone(), proptest::option::of(name)).prop_map(|(s, t)| Op::Close(s, t)),
        2 => slot.clone().prop_map(Op::Disconnect),
        1 => (slot.clone(), garbage()).prop_map(|(s, g)| Op::Garbage(s, g)),
        1 => (slot, any::<bool>()).prop_map(|(s, c)| Op::Backpressure(s, c)),
        1 => prop_oneof![4 => Just(false), 1 => Just(true)].prop_map(Op::Overload),
    ]
}

/// The payload of the `seq`-th relayed message, in one of several textual styles that must all
/// survive byte for byte.
fn payload(style: usize, seq: u64) -> String {
    match style {
        0 => format!(r#"{{"seq":{seq},"sdp":"v=0\r\n"}}"#),
        1 => format!(r#"{{ "seq" : {seq} , "x" : "\u00e9\/\"" }}"#),
        2 => format!(r#"[{seq}, 1.50, true, null]"#),
        _ => format!(
            r#"{{"seq":{seq},"candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host","sdpMid":"0"}}"#
        ),
    }
}

/// Outputs as (addressee id, observation).
type Observed = Vec<(u64, Obs)>;

/// What a client observes, normalised (error texts are the router's business).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Obs {
    LoginOk,
    LoginFailed(String),
    Relay {
        kind: String,
        payload: String,
        from: String,
    },
    Close {
        from: String,
    },
    Error(String),
}

fn observe(text: &str, kind_hint: Option<&str>) -> Obs {
    let v: Value = serde_json::from_str(text).expect("output is JSON");
    match v["type"].as_str().expect("type") {
        "login" if v["success"] == true => Obs::LoginOk,
        "login" => Obs::LoginFailed(v["code"].as_str().expect("code").to_string()),
        "close" => Obs::Close {
            from: v["username"].as_str().expect("username").to_string(),
        },
        "error" => Obs::Error(v["code"].as_str().expect("code").to_string()),
        kind => {
            // Extract the payload's exact text by locating it in the frame: the frame is
            // `{"type":"K","K":<payload>,"username":"…"}`.
            let start = format!(r#"{{"type":"{kind}","{kind}":"#);
            assert!(text.starts_with(&start), "{text}");
            let rest = &text[start.len()..];
            let from = v["username"].as_str().expect("username").to_string();
            let tail = format!(r#","username":{}}}"#, serde_json::to_string(&from).unwrap());
            assert!(rest.ends_with(&tail), "{text}");
            let _ = kind_hint;
            Obs::Relay {
                kind: kind.to_string(),
                payload: rest[..rest.len() - tail.len()].to_string(),
                from,
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct ModelConn {
    id: u64,
    name: Option<String>,
    /// Partner's connection id.
    partner: Option<u64>,
    /// The call has been answered.
    answered: bool,
    /// Offers and candidates this side sent into the call before the answer.
    offers: u32,
    candidates: u32,
    /// The driver said this connection's queue is full.
    congested: bool,
}

/// The reference model: a deliberately naive restatement of docs/protocol.md.
#[derive(Debug, Default)]
struct Model {
    slots: [Option<ModelConn>; SLOTS],
    next_id: u64,
    /// The driver said the global budget is nearly used up.
    overloaded: bool,
}

impl Model {
    fn conn(&self, id: u64) -> Option<&ModelConn> {
        self.slots.iter().flatten().find(|c| c.id == id)
    }
    fn conn_mut(&mut self, id: u64) -> Option<&mut ModelConn> {
        self.slots.iter_mut().flatten().find(|c| c.id == id)
    }
    /// The holder of `name` (in any normalization form).
    fn by_name(&self, name: &str) -> Option<u64> {
        let name = nfc(name);
        self.slots
            .iter()
            .flatten()
            .find(|c| c.name.as_deref() == Some(name.as_str()))
            .map(|c| c.id)
    }
    /// The holder of a name that looks like `name`.
    fn by_skeleton(&self, name: &str) -> Option<u64> {
        let wanted = skeleton(name);
        self.slots
            .iter()
            .flatten()
            .find(|c| c.name.as_deref().is_some_and(|n| skeleton(n) == wanted))
            .map(|c| c.id)
    }
    /// `id` joins a call with `peer` (or its call ends, with `None`): fresh counters.
    fn set_call(&mut self, id: u64, peer: Option<u64>, answered: bool) {
        let c = self.conn_mut(id).unwrap();
        c.partner = peer;
        c.answered = answered;
        c.offers = 0;
        c.candidates = 0;
    }
    fn name(&self, id: u64) -> String {
        self.conn(id)
            .and_then(|c| c.name.clone())
            .unwrap_or_default()
    }
}

struct World {
    router: Router,
    model: Model,
    now: Instant,
    seq: u64,
    /// Per ordered (sender, receiver) name pair: the seq numbers delivered, in order.
    delivered: HashMap<(String, String), Vec<u64>>,
}

impl World {
    fn new() -> Self {
        World {
            router: Router::new(
                RouterConfig::default()
                    .with_rate_limit(None)
                    .with_unanswered_limits(Some(LIMITS))
                    .with_redial_backoff(None),
            ),
            model: Model::default(),
            now: Instant::now(),
            seq: 0,
            delivered: HashMap::new(),
        }
    }

    fn drain(&mut self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Some(o) = self.router.poll_output() {
            match o {
                Output::Transmit(t) => {
                    // What a driver sends (the frame the router built, or the encoding) is
                    // the message's encoding.
                    let text = t.to_json();
                    out.push((t.to.0, t.into_frame()));
                    assert_eq!(out.last().map(|(_, frame)| frame), Some(&text));
                }
                Output::Event(_) => {}
                other => panic!("no close instructions without rate limits: {other:?}"),
            }
        }
        out
    }

    /// Applies `op` to both router and model; returns (actual, expected) observations.
    fn step(&mut self, op: &Op) -> (Observed, Observed) {
        let mut expected: Observed = Vec::new();
        match op {
            Op::Connect(s) => {
                if self.model.slots[*s].is_none() {
                    self.model.next_id += 1;
                    let id = self.model.next_id;
                    self.router
                        .handle_connect(ConnectionId(id))
                        .expect("fresh id");
                    self.model.slots[*s] = Some(ModelConn {
                        id,
                        ..Default::default()
                    });
                }
            }
            Op::Login(s, n) | Op::LoginInvalid(s, n) => {
                let Some(c) = self.model.slots[*s].clone() else {
                    return (vec![], vec![]);
                };
                let valid = matches!(op, Op::Login(..));
                let name = if valid { NAMES[*n] } else { INVALID_NAMES[*n] };
                let text = format!(r#"{{"type":"login","username":{}}}"#, json_str(name));
                self.router
                    .handle_text(ConnectionId(c.id), &text, self.now)
                    .expect("live");
                let obs = if !valid {
                    Obs::LoginFailed("invalid_username".into())
                } else if c.name.is_some() {
                    Obs::LoginFailed("already_logged_in".into())
                } else if self.model.by_name(name).is_some()
                    || self.model.by_skeleton(name).is_some()
                {
                    Obs::LoginFailed("name_taken".into())
                } else {
                    self.model.conn_mut(c.id).unwrap().name = Some(nfc(name));
                    Obs::LoginOk
                };
                expected.push((c.id, obs));
            }
            Op::Relay(s, kind, target, style) => {
                let Some(c) = self.model.slots[*s].clone() else {
                    return (vec![], vec![]);
                };
                self.seq += 1;
                let body = payload(*style, self.seq);
                let mut text = format!(r#"{{"type":"{0}","{0}":{body}"#, kind.tag());
                if let Some(t) = target {
                    text.push_str(&format!(r#","otherUsername":{}"#, json_str(NAMES[*t])));
                }
                text.push('}');
                self.router
                    .handle_text(ConnectionId(c.id), &text, self.now)
                    .expect("live");
                let err = |code: &str| Obs::Error(code.to_string());
                let obs = (|| {
                    let Some(me) = c.name.clone() else {
                        return Err(err("not_logged_in"));
                    };
                    let to = match (target, c.partner) {
                        (Some(t), _) => {
                            if nfc(NAMES[*t]) == me {
                                return Err(err("self_addressed"));
                            }
                            self.model
                                .by_name(NAMES[*t])
                                .ok_or_else(|| err("unknown_user"))?
                        }
                        (None, Some(p)) => p,
                        (None, None) => return Err(err("missing_field")),
                    };
                    let with_target = c.partner == Some(to);
                    // The rules first (no state changes) …
                    let opens = match kind {
                        Kind::Offer if !with_target => {
                            if c.partner.is_some() {
                                return Err(err("in_call"));
                            }
                            if self.model.conn(to).unwrap().partner.is_some() {
                                return Err(err("busy"));
                            }
                            true
                        }
                        _ if !with_target => return Err(err("not_in_call")),
                        Kind::Offer | Kind::Candidate if !c.answered => {
                            // Issue 9: bounded before the answer.
                            let over = match kind {
                                Kind::Offer => c.offers >= LIMITS.max_offers,
                                _ => {
                                    body.len() > LIMITS.max_candidate_bytes
                                        || c.candidates >= LIMITS.max_candidates
                                }
                            };
                            if over {
                                return Err(err("unanswered_limit"));
                            }
                            false
                        }
                        _ => false,
                    };
                    // … then whether it can be delivered (issue 9: the sender pays) …
                    if self.model.overloaded {
                        return Err(err("server_overloaded"));
                    }
                    if self.model.conn(to).unwrap().congested {
                        return Err(err("recipient_overloaded"));
                    }
                    // … then the state changes.
                    match kind {
                        _ if opens => {
                            self.model.set_call(c.id, Some(to), false);
                            self.model.set_call(to, Some(c.id), false);
                            self.model.conn_mut(c.id).unwrap().offers = 1;
                        }
                        Kind::Answer => {
                            self.model.set_call(c.id, Some(to), true);
                            self.model.set_call(to, Some(c.id), true);
                        }
                        Kind::Offer if !c.answered => {
                            self.model.conn_mut(c.id).unwrap().offers += 1
                        }
                        Kind::Candidate if !c.answered => {
                            self.model.conn_mut(c.id).unwrap().candidates += 1;
                        }
                        _ => {}
                    }
                    Ok((
                        to,
                        Obs::Relay {
                            kind: kind.tag().into(),
                            payload: body.clone(),
                            from: me,
                        },
                    ))
                })();
                match obs {
                    Ok(delivery) => expected.push(delivery),
                    Err(e) => expected.push((c.id, e)),
                }
            }
            Op::Close(s, target) => {
                let Some(c) = self.model.slots[*s].clone() else {
                    return (vec![], vec![]);
                };
                let mut text = r#"{"type":"close""#.to_string();
                if let Some(t) = target {
                    text.push_str(&format!(r#","otherUsername":{}"#, json_str(NAMES[*t])));
                }
                text.push('}');
                self.router
                    .handle_text(ConnectionId(c.id), &text, self.now)
                    .expect("live");
                match (&c.name, c.partner) {
                    (None, _) => expected.push((c.id, Obs::Error("not_logged_in".into()))),
                    (Some(_), None) => expected.push((c.id, Obs::Error("not_in_call".into()))),
                    (Some(me), Some(p)) => {
                        if target.is_some_and(|t| self.model.by_name(NAMES[t]) != Some(p)) {
                            expected.push((c.id, Obs::Error("not_in_call".into())));
                        } else {
                            self.model.set_call(c.id, None, false);
                            self.model.set_call(p, None, false);
                            expected.push((p, Obs::Close { from: me.clone() }));
                        }
                    }
                }
            }
            Op::Disconnect(s) => {
                let Some(c) = self.model.slots[*s].take() else {
                    return (vec![], vec![]);
                };
                self.router
                    .handle_disconnect(ConnectionId(c.id))
                    .expect("live");
                if let (Some(me), Some(p)) = (c.name, c.partner) {
                    self.model.set_call(p, None, false);
                    expected.push((p, Obs::Close { from: me }));
                }
            }
            Op::Backpressure(s, congested) => {
                let Some(c) = self.model.slots[*s].as_mut() else {
                    return (vec![], vec![]);
                };
                c.congested = *congested;
                self.router
                    .handle_backpressure(ConnectionId(c.id), *congested)
                    .expect("live");
                assert_eq!(self.router.is_congested(ConnectionId(c.id)), *congested);
            }
            Op::Overload(overloaded) => {
                self.model.overloaded = *overloaded;
                self.router.handle_overload(*overloaded);
            }
            Op::Garbage(s, text) => {
                let Some(c) = self.model.slots[*s].clone() else {
                    return (vec![], vec![]);
                };
                self.router
                    .handle_text(ConnectionId(c.id), text, self.now)
                    .expect("live");
                // The model does not re-derive decode rules; it only requires exactly one reply
                // to the sender, checked below, unless the garbage happens to be a valid message.
                return (self.observe_all(), vec![]);
            }
        }
        (self.observe_all(), expected)
    }

    fn observe_all(&mut self) -> Vec<(u64, Obs)> {
        self.drain()
            .into_iter()
            .map(|(to, text)| (to, observe(&text, None)))
            .collect()
    }

    /// The invariants of issue 2, checked against router and model after every step.
    fn check_invariants(&self) -> Result<(), TestCaseError> {
        let live: Vec<&ModelConn> = self.model.slots.iter().flatten().collect();
        // 5. memory holds only live connections.
        prop_assert_eq!(self.router.connection_count(), live.len());
        prop_assert_eq!(
            self.router.user_count(),
            live.iter().filter(|c| c.name.is_some()).count()
        );
        for c in &live {
            let id = ConnectionId(c.id);
            prop_assert!(self.router.is_connected(id));
            // 1. a live logged-in connection has exactly one name, and the name maps back to it.
            prop_assert_eq!(
                self.router.username(id).map(|n| n.as_str().to_string()),
                c.name.clone()
            );
            if let Some(name) = &c.name {
                prop_assert_eq!(self.router.connection_of(name), Some(id));
            }
            prop_assert_eq!(self.router.partner(id).map(|p| p.0), c.partner);
            prop_assert_eq!(self.router.is_answered(id), c.answered);
            if let Some(p) = c.partner {
                prop_assert_eq!(self.model.conn(p).and_then(|pc| pc.partner), Some(c.id));
            }
        }
        // 1. every name maps to at most one live connection (and 4: a gone name is free).
        for name in NAMES {
            let holders = live
                .iter()
                .filter(|c| c.name.as_deref() == Some(nfc(name).as_str()))
                .count();
            prop_assert!(holders <= 1);
            if holders == 0 {
                prop_assert_eq!(self.router.connection_of(name), None);
            }
        }
        // Issue 9: no two logged-in users have the same skeleton, and the router's skeleton
        // map holds exactly the live ones.
        let mut skeletons: Vec<String> = live
            .iter()
            .filter_map(|c| c.name.as_deref().map(skeleton))
            .collect();
        for c in &live {
            if let Some(name) = &c.name {
                let id = self.router.connection_of_skeleton(&skeleton(name));
                prop_assert_eq!(id, Some(ConnectionId(c.id)));
            }
        }
        let count = skeletons.len();
        skeletons.sort();
        skeletons.dedup();
        prop_assert_eq!(skeletons.len(), count, "two live names look alike");
        for name in NAMES {
            if self.model.by_skeleton(name).is_none() {
                prop_assert_eq!(self.router.connection_of_skeleton(&skeleton(name)), None);
            }
        }
        Ok(())
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut w = World::new();
    for op in ops {
        let (actual, expected) = w.step(op);
        let live_after: Vec<u64> = w.model.slots.iter().flatten().map(|c| c.id).collect();
        // 2. no output is addressed to a connection that is not live.
        for (to, _) in &actual {
            prop_assert!(live_after.contains(to), "{op:?}: output to dead #{to}");
        }
        if let Op::Garbage(s, _) = op {
            if let Some(id) = w.model.slots[*s].as_ref().map(|c| c.id) {
                // Exactly one answer, to the sender, whatever the garbage was — unless the
                // random text happened to be a valid protocol message, which it never is here.
                prop_assert_eq!(actual.len(), 1, "{:?}", actual);
                prop_assert_eq!(actual[0].0, id);
                prop_assert!(
                    matches!(actual[0].1, Obs::Error(_) | Obs::LoginFailed(_)),
                    "{:?}",
                    actual
                );
            }
        } else {
            // The reference model predicts every output exactly (3: a relay reaches exactly the
            // named user, once, payload unchanged, true sender; 4: partner gets one close).
            prop_assert_eq!(&actual, &expected, "after {:?}", op);
        }
        for (to, obs) in &actual {
            if let Obs::Relay { payload, from, .. } = obs {
                let seq: u64 = payload
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse().ok())
                    .expect("seq in payload");
                let key = (from.clone(), w.model.name(*to));
                w.delivered.entry(key).or_default().push(seq);
            }
        }
        w.check_invariants()?;
    }
    // 6. per-pair ordering: what A sent B arrives in the order A sent it.
    for (pair, seqs) in &w.delivered {
        prop_assert!(seqs.windows(2).all(|p| p[0] < p[1]), "{pair:?}: {seqs:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn router_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops)?;
    }

    /// Everyone logged in first, so that calls open, get answered and reach the bounds before
    /// the answer (from a cold start most relays meet `not_logged_in`).
    #[test]
    fn logged_in_users_call_each_other(ops in proptest::collection::vec(op(), 1..120)) {
        let mut all: Vec<Op> =
            (0..SLOTS).flat_map(|s| [Op::Connect(s), Op::Login(s, s)]).collect();
        all.extend(ops);
        run(&all)?;
    }

    #[test]
    fn disconnect_storms_leave_nothing_behind(ops in proptest::collection::vec(op(), 1..80)) {
        let mut ops = ops;
        ops.extend((0..SLOTS).map(Op::Disconnect));
        run(&ops)?;
    }
}

/// Arbitrary JSON values, to feed the decoder shapes no handwritten list covers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("type"),
            Just("login"),
            Just("offer"),
            Just("answer"),
            Just("candidate"),
            Just("close"),
            Just("username"),
            Just("otherUsername")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("username".to_string()),
                    Just("otherUsername".to_string()),
                    Just("offer".to_string()),
                    Just("answer".to_string()),
                    Just("candidate".to_string()),
                    ".{0,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Arbitrary bytes (as text, lossily) and arbitrary JSON values from several connections:
    /// the router never panics, every frame gets at most one reply to its sender or a relay to
    /// a live user, and no state outlives the connections.
    #[test]
    fn arbitrary_input_never_panics_and_leaks_nothing(
        frames in proptest::collection::vec(
            (0..3usize, prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
                json_value().prop_map(|v| v.to_string()),
            ]),
            1..60,
        )
    ) {
        let mut router = Router::new(RouterConfig::default());
        let now = Instant::now();
        let conns = [ConnectionId(1), ConnectionId(2), ConnectionId(3)];
        for (i, c) in conns.iter().enumerate() {
            router.handle_connect(*c).unwrap();
            let login = format!(r#"{{"type":"login","username":"{}"}}"#, NAMES[i]);
            router.handle_text(*c, &login, now).unwrap();
        }
        while router.poll_output().is_some() {}
        for (from, text) in &frames {
            router.handle_text(conns[*from], text, now).unwrap();
            let mut outputs = 0;
            while let Some(o) = router.poll_output() {
                let t = match o {
                    Output::Transmit(t) => t,
                    Output::Event(_) => continue,
                    o => panic!("unexpected {o:?}"),
                };
                outputs += 1;
                prop_assert!(conns.contains(&t.to));
                let v: Value = serde_json::from_str(&t.message.to_json()).expect("valid JSON out");
                prop_assert!(v["type"].is_string());
            }
            prop_assert!(outputs <= 1, "one frame, at most one output; got {outputs} for {text:?}");
        }
        for c in conns {
            router.handle_disconnect(c).unwrap();
        }
        while router.poll_output().is_some() {}
        prop_assert_eq!(router.connection_count(), 0);
        prop_assert_eq!(router.user_count(), 0);
    }
}
