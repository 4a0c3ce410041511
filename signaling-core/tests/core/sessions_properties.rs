//! Property tests for sessions (issue 10): random sequences of connect, plain and resumable
//! login, relays, hang-ups, clean disconnects, abnormal connection losses, resumes (with the
//! right, a spent or a wrong token and various `lastSeq`), takeovers, acknowledgements and
//! clock advances, checked at every step against a reference model written from
//! `notes/issue10-contract.md` and `docs/protocol.md`, and against a model of each session's
//! *client*: the messages it actually received, including the tail a dropped socket lost.
//! Time is an input. Cases: `PROPTEST_CASES` (default 1,000 per property).

// Tests play the driver's part: they read the clock the router may not.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::common::cases;
use serde_json::Value;
use signaling_core::{
    CallEnd, ConnectionId, DisconnectReason, Event, Output, RedialBackoff, Router, RouterConfig,
    SessionConfig, SessionEnd, SessionToken,
};

/// Connection slots: a slot holds at most one live connection at a time.
const SLOTS: usize = 5;
const NAMES: &[&str] = &["alice", "bob", "carol", "dave"];
const GRACE: Duration = Duration::from_secs(10);
const RING: Duration = Duration::from_secs(20);
const BACKOFF: RedialBackoff = RedialBackoff {
    initial: Duration::from_secs(8),
    max: Duration::from_secs(32),
};
/// Messages a session keeps for a resume; the byte bound is out of reach here.
const HISTORY: u64 = 4;
/// Clock advances, in seconds: around the grace period, the ring timeout and the back-offs.
const ADVANCES: &[u64] = &[0, 1, 2, 5, 8, 9, 10, 11, 16, 19, 20, 21, 33, 45];
/// Tokens that were never issued (the source counts from `tok1`).
const WRONG_TOKENS: &[&str] = &["", "tok0", "tok-1", "TOK1", "xyz"];

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

#[derive(Debug, Clone, Copy)]
enum TokenPick {
    /// The current token of the `i`-th resumable session (by name), if there is one.
    Live(usize),
    /// The current token of the `i`-th suspended session, or else as `Live`.
    Suspended(usize),
    /// The `i`-th token that is no longer live (rotated away, or its session ended).
    Spent(usize),
    /// A token that was never issued.
    Wrong(usize),
}

#[derive(Debug, Clone, Copy)]
enum LastPick {
    /// The highest seq the client received.
    True,
    /// That minus `d` (the client re-asks for what it has).
    Lower(u64),
    /// That plus `d` (the client skips messages; accepted while within what was sent).
    Higher(u64),
    /// Beyond anything the session sent.
    Beyond,
}

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    Login {
        slot: usize,
        name: usize,
        resumable: bool,
    },
    Relay {
        slot: usize,
        kind: Kind,
        to: Option<usize>,
    },
    /// `count` candidates to the call partner in a row (trickle ICE).
    Burst {
        slot: usize,
        count: usize,
    },
    /// An offer to the callee that last declined or did not answer this slot's user.
    Redial(usize),
    /// `close`: hang up, cancel or decline.
    HangUp {
        slot: usize,
        to: Option<usize>,
    },
    /// Clean close (close frame).
    Disconnect(usize),
    /// Abnormal end; the client had not read the last `unread` messages written to it.
    Lost {
        slot: usize,
        unread: usize,
    },
    /// `resume` on the slot's connection (connected first if the slot is empty). When it takes
    /// over a live connection, that one had not read its last `unread` messages.
    Resume {
        slot: usize,
        token: TokenPick,
        last: LastPick,
        unread: usize,
    },
    /// The driver saw a pong: the client has everything up to its last seq + `delta`.
    Ack {
        slot: usize,
        delta: i64,
    },
    /// The clock moves on, then `handle_timeout`.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let name = 0..NAMES.len();
    let kind = prop_oneof![
        2 => Just(Kind::Offer),
        2 => Just(Kind::Answer),
        3 => Just(Kind::Candidate)
    ];
    let token = prop_oneof![
        3 => (0..4usize).prop_map(TokenPick::Live),
        4 => (0..4usize).prop_map(TokenPick::Suspended),
        2 => (0..8usize).prop_map(TokenPick::Spent),
        1 => (0..WRONG_TOKENS.len()).prop_map(TokenPick::Wrong),
    ];
    let last = prop_oneof![
        6 => Just(LastPick::True),
        2 => (1..4u64).prop_map(LastPick::Lower),
        2 => (1..4u64).prop_map(LastPick::Higher),
        1 => Just(LastPick::Beyond),
    ];
    prop_oneof![
        3 => slot.clone().prop_map(Op::Connect),
        5 => (slot.clone(), name.clone(), prop_oneof![1 => Just(false), 3 => Just(true)])
            .prop_map(|(slot, name, resumable)| Op::Login { slot, name, resumable }),
        14 => (slot.clone(), kind, proptest::option::weighted(0.7, name.clone()))
            .prop_map(|(slot, kind, to)| Op::Relay { slot, kind, to }),
        2 => (slot.clone(), 1..8usize).prop_map(|(slot, count)| Op::Burst { slot, count }),
        2 => slot.clone().prop_map(Op::Redial),
        2 => (slot.clone(), proptest::option::weighted(0.3, name))
            .prop_map(|(slot, to)| Op::HangUp { slot, to }),
        1 => slot.clone().prop_map(Op::Disconnect),
        3 => (slot.clone(), 0..4usize).prop_map(|(slot, unread)| Op::Lost { slot, unread }),
        5 => (slot.clone(), token, last, 0..4usize)
            .prop_map(|(slot, token, last, unread)| Op::Resume { slot, token, last, unread }),
        2 => (slot, -2..3i64).prop_map(|(slot, delta)| Op::Ack { slot, delta }),
        3 => (0..ADVANCES.len()).prop_map(|i| Op::Advance(ADVANCES[i])),
    ]
}

/// What a client observes, normalised (error texts are the router's business).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Obs {
    LoginOk,
    LoginResumable {
        token: String,
    },
    LoginFailed(String),
    Relay {
        kind: String,
        payload: String,
        from: String,
    },
    Close {
        from: String,
        reason: Option<String>,
    },
    Error(String),
    Resumed {
        username: String,
        token: String,
    },
    ResumeFailed(String),
    /// The router asks the driver to close the connection with this code.
    Disconnect(u16),
}

/// One output for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    obs: Obs,
    seq: Option<u64>,
}

fn err(code: &str) -> Obs {
    Obs::Error(code.to_string())
}

/// Parses a frame the router wrote: `seq`, when present, must be its last field.
fn observe(text: &str) -> Out {
    let (base, seq) = match text.rfind(r#","seq":"#) {
        Some(i) if text.ends_with('}') => {
            let digits = &text[i + 7..text.len() - 1];
            let seq: u64 = digits.parse().expect("seq is the last field, an integer");
            (format!("{}}}", &text[..i]), Some(seq))
        }
        _ => (text.to_string(), None),
    };
    let v: Value = serde_json::from_str(&base).expect("output is JSON");
    assert!(v.get("seq").is_none(), "seq not last in {text}");
    let s = |key: &str| v[key].as_str().unwrap_or_else(|| panic!("{key} in {text}"));
    let grace_ok = || assert_eq!(v["graceMs"], GRACE.as_millis() as u64, "{text}");
    let obs = match s("type") {
        "login" if v["success"] == true && v.get("token").is_some() => {
            grace_ok();
            Obs::LoginResumable {
                token: s("token").to_string(),
            }
        }
        "login" if v["success"] == true => Obs::LoginOk,
        "login" => Obs::LoginFailed(s("code").to_string()),
        "resume" if v["success"] == true => {
            grace_ok();
            Obs::Resumed {
                username: s("username").to_string(),
                token: s("token").to_string(),
            }
        }
        "resume" => Obs::ResumeFailed(s("code").to_string()),
        "close" => Obs::Close {
            from: s("username").to_string(),
            reason: v["reason"].as_str().map(str::to_string),
        },
        "error" => Obs::Error(s("code").to_string()),
        kind => {
            // The payload's exact text: the frame is `{"type":"K","K":<payload>,"username":"…"}`.
            let start = format!(r#"{{"type":"{kind}","{kind}":"#);
            assert!(base.starts_with(&start), "{text}");
            let from = s("username").to_string();
            let tail = format!(r#","username":{}}}"#, serde_json::to_string(&from).unwrap());
            assert!(base.ends_with(&tail), "{text}");
            Obs::Relay {
                kind: kind.to_string(),
                payload: base[start.len()..base.len() - tail.len()].to_string(),
                from,
            }
        }
    };
    Out { obs, seq }
}

/// The relayed payload number `n`: a number to check per-pair order by, and escapes that
/// must survive byte for byte.
fn payload(n: u64) -> String {
    format!(r#"{{"n":{n},"sdp":"v=0\r\n\u00e9"}}"#)
}

fn payload_number(payload: &str) -> u64 {
    let v: Value = serde_json::from_str(payload).expect("payload is JSON");
    v["n"].as_u64().expect("n")
}

/// A timer: its deadline (since the start) and its creation order (ties fire in that order).
type Timer = (Duration, u64);

#[derive(Debug, Clone)]
struct MConn {
    id: u64,
    session: Option<String>,
    /// Taken over by a resume: told to close (4000), input ignored until it is gone.
    closing: bool,
}

#[derive(Debug, Clone)]
struct MResume {
    token: String,
    /// Every message of the session; `seq` n is `log[n - 1]`.
    log: Vec<Obs>,
    /// The highest seq handed to a connection.
    sent: u64,
    /// The highest seq the driver acknowledged (at most `sent`).
    acked: u64,
    grace: Option<Timer>,
}

impl MResume {
    fn seq(&self) -> u64 {
        self.log.len() as u64
    }

    /// The oldest seq still kept: the last `HISTORY` messages, minus what was acknowledged.
    fn first_kept(&self) -> u64 {
        (self.acked + 1).max((self.seq() + 1).saturating_sub(HISTORY))
    }
}

#[derive(Debug, Clone)]
struct MCall {
    peer: String,
    caller: bool,
    answered: bool,
    /// The same timer on both sides while ringing.
    ring: Option<Timer>,
}

#[derive(Debug, Clone)]
struct Redial {
    callee: String,
    until: Duration,
    strikes: u32,
}

#[derive(Debug, Clone)]
struct MSession {
    /// Which session this is (a name is reused by later sessions).
    sid: u64,
    /// `None` while suspended.
    conn: Option<u64>,
    resume: Option<MResume>,
    call: Option<MCall>,
    redials: Vec<Redial>,
}

/// The reference model: a deliberately naive restatement of the contract and docs.
#[derive(Debug, Default)]
struct Model {
    slots: [Option<MConn>; SLOTS],
    sessions: BTreeMap<String, MSession>,
    next_conn: u64,
    next_sid: u64,
    next_timer: u64,
    tokens_issued: u64,
    /// Tokens no longer valid (rotated or their session ended).
    spent: Vec<String>,
    now: Duration,
    /// Expected outputs per connection, in order.
    out: BTreeMap<u64, Vec<Out>>,
    /// Expected events (compared as a multiset).
    events: Vec<String>,
}

fn roles(name: &str, call: &MCall) -> (String, String) {
    if call.caller {
        (name.to_string(), call.peer.clone())
    } else {
        (call.peer.clone(), name.to_string())
    }
}

impl Model {
    fn conn(&self, id: u64) -> Option<&MConn> {
        self.slots.iter().flatten().find(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: u64) -> Option<&mut MConn> {
        self.slots.iter_mut().flatten().find(|c| c.id == id)
    }

    fn push(&mut self, to: u64, obs: Obs, seq: Option<u64>) {
        self.out.entry(to).or_default().push(Out { obs, seq });
    }

    fn event(&mut self, e: String) {
        self.events.push(e);
    }

    fn timer(&mut self, after: Duration) -> Timer {
        self.next_timer += 1;
        (self.now + after, self.next_timer)
    }

    fn token(&mut self) -> String {
        self.tokens_issued += 1;
        format!("tok{}", self.tokens_issued)
    }

    /// A message for the session holding `name`: numbered and logged when resumable, sent
    /// when it has a connection.
    fn send(&mut self, name: &str, obs: Obs) {
        let Some(s) = self.sessions.get_mut(name) else {
            return;
        };
        let conn = s.conn;
        let seq = s.resume.as_mut().map(|r| {
            r.log.push(obs.clone());
            if conn.is_some() {
                r.sent = r.seq();
            }
            r.seq()
        });
        if let Some(c) = conn {
            self.push(c, obs, seq);
        }
    }

    /// A reply to whatever holds `conn`: its session, or the bare connection.
    fn reply(&mut self, conn: u64, obs: Obs) {
        match self.conn(conn).and_then(|c| c.session.clone()) {
            Some(name) => self.send(&name, obs),
            None => self.push(conn, obs, None),
        }
    }

    fn clear_call(&mut self, name: &str, peer: &str) {
        if let Some(s) = self.sessions.get_mut(name) {
            if s.call.as_ref().is_some_and(|c| c.peer == peer) {
                s.call = None;
            }
        }
    }

    fn end(&mut self, name: &str, reason: SessionEnd) {
        let Some(s) = self.sessions.remove(name) else {
            return;
        };
        if let Some(r) = s.resume {
            self.spent.push(r.token);
        }
        if let Some(c) = s.conn.and_then(|c| self.conn_mut(c)) {
            c.session = None;
        }
        if let Some(call) = s.call {
            self.clear_call(&call.peer, name);
            self.send(
                &call.peer,
                Obs::Close {
                    from: name.to_string(),
                    reason: None,
                },
            );
            let (caller, callee) = roles(name, &call);
            self.event(format!(
                "CallEnded {caller} {callee} {:?}",
                CallEnd::Disconnected
            ));
        }
        self.event(format!("SessionEnded {name} {reason:?}"));
    }

    /// Suspended sessions holding more unsent messages than the history keeps end.
    fn settle(&mut self) {
        loop {
            let over = self.sessions.iter().find(|(_, s)| {
                s.conn.is_none()
                    && s.resume
                        .as_ref()
                        .is_some_and(|r| r.seq() - r.sent > HISTORY)
            });
            let Some(name) = over.map(|(n, _)| n.clone()) else {
                return;
            };
            self.end(&name, SessionEnd::HistoryOverflow);
        }
    }

    fn redial_wait(&self, caller: &str, callee: &str) -> bool {
        self.sessions[caller]
            .redials
            .iter()
            .any(|r| r.callee == callee && r.until > self.now)
    }

    /// `callee` declined `caller`, or rang out: back-off, doubling per strike, at most `max`;
    /// strikes forgotten once `max` has passed after a back-off ended.
    fn record_redial(&mut self, caller: &str, callee: &str) {
        let now = self.now;
        let Some(s) = self.sessions.get_mut(caller) else {
            return;
        };
        s.redials.retain(|r| now < r.until + BACKOFF.max);
        let strikes = match s.redials.iter().position(|r| r.callee == callee) {
            Some(i) => s.redials.remove(i).strikes + 1,
            None => 1,
        };
        let wait = (BACKOFF.initial * 2u32.pow(strikes.min(20) - 1)).min(BACKOFF.max);
        s.redials.push(Redial {
            callee: callee.to_string(),
            until: now + wait,
            strikes,
        });
    }

    fn login(&mut self, conn: u64, name: &str, resumable: bool) {
        let c = self.conn(conn).unwrap().clone();
        if c.closing {
            return;
        }
        if c.session.is_some() {
            return self.reply(conn, Obs::LoginFailed("already_logged_in".into()));
        }
        if self.sessions.contains_key(name) {
            return self.reply(conn, Obs::LoginFailed("name_taken".into()));
        }
        self.next_sid += 1;
        let resume = resumable.then(|| MResume {
            token: self.token(),
            log: Vec::new(),
            sent: 0,
            acked: 0,
            grace: None,
        });
        let reply = match &resume {
            Some(r) => Obs::LoginResumable {
                token: r.token.clone(),
            },
            None => Obs::LoginOk,
        };
        self.sessions.insert(
            name.to_string(),
            MSession {
                sid: self.next_sid,
                conn: Some(conn),
                resume,
                call: None,
                redials: Vec::new(),
            },
        );
        self.conn_mut(conn).unwrap().session = Some(name.to_string());
        self.push(conn, reply, None);
        self.event(format!("LoggedIn #{conn} {name} {resumable}"));
    }

    fn relay(&mut self, conn: u64, kind: Kind, to: Option<&str>, body: String) {
        let c = self.conn(conn).unwrap().clone();
        if c.closing {
            return;
        }
        let Some(me) = c.session else {
            return self.reply(conn, err("not_logged_in"));
        };
        let call = self.sessions[&me].call.clone();
        let target = match (to, &call) {
            (Some(t), _) if t == me => return self.reply(conn, err("self_addressed")),
            (Some(t), _) if !self.sessions.contains_key(t) => {
                return self.reply(conn, err("unknown_user"));
            }
            (Some(t), _) => t.to_string(),
            (None, Some(call)) => call.peer.clone(),
            (None, None) => return self.reply(conn, err("missing_field")),
        };
        let with_target = call.as_ref().is_some_and(|c| c.peer == target);
        if kind == Kind::Offer && !with_target {
            if call.is_some() {
                return self.reply(conn, err("in_call"));
            }
            if self.sessions[&target].call.is_some() {
                return self.reply(conn, err("busy"));
            }
            if self.redial_wait(&me, &target) {
                return self.reply(conn, err("redial_too_soon"));
            }
            let ring = Some(self.timer(RING));
            for (name, peer, caller) in [(&me, &target, true), (&target, &me, false)] {
                self.sessions.get_mut(name).unwrap().call = Some(MCall {
                    peer: peer.clone(),
                    caller,
                    answered: false,
                    ring,
                });
            }
            self.event(format!("CallRinging {me} {target}"));
        } else if !with_target {
            return self.reply(conn, err("not_in_call"));
        } else if kind == Kind::Answer {
            let side = call.unwrap();
            if !side.answered {
                let (caller, callee) = roles(&me, &side);
                self.event(format!("CallAnswered {caller} {callee}"));
            }
            for name in [&me, &target] {
                let side = self.sessions.get_mut(name).unwrap().call.as_mut().unwrap();
                side.answered = true;
                side.ring = None;
            }
        }
        self.send(
            &target,
            Obs::Relay {
                kind: kind.tag().into(),
                payload: body,
                from: me,
            },
        );
    }

    fn hang_up(&mut self, conn: u64, to: Option<&str>) {
        let c = self.conn(conn).unwrap().clone();
        if c.closing {
            return;
        }
        let Some(me) = c.session else {
            return self.reply(conn, err("not_logged_in"));
        };
        let Some(side) = self.sessions[&me].call.clone() else {
            return self.reply(conn, err("not_in_call"));
        };
        if to.is_some_and(|t| t != side.peer) {
            return self.reply(conn, err("not_in_call"));
        }
        let reason = match (side.answered, side.caller) {
            (true, _) => CallEnd::HungUp,
            (false, true) => CallEnd::Cancelled,
            (false, false) => CallEnd::Declined,
        };
        if reason == CallEnd::Declined {
            self.record_redial(&side.peer, &me);
        }
        self.clear_call(&me, &side.peer);
        self.clear_call(&side.peer, &me);
        self.send(
            &side.peer,
            Obs::Close {
                from: me.clone(),
                reason: None,
            },
        );
        let (caller, callee) = roles(&me, &side);
        self.event(format!("CallEnded {caller} {callee} {reason:?}"));
    }

    /// The connection in `slot` ends: cleanly, or abnormally (`lost`).
    fn gone(&mut self, slot: usize, lost: bool) {
        let c = self.slots[slot].take().unwrap();
        let Some(name) = c.session else {
            return;
        };
        let resumable = self.sessions[&name].resume.is_some();
        if !lost {
            self.end(&name, SessionEnd::Closed);
        } else if !resumable {
            self.end(&name, SessionEnd::ConnectionLost);
        } else {
            let grace = Some(self.timer(GRACE));
            let s = self.sessions.get_mut(&name).unwrap();
            s.conn = None;
            s.resume.as_mut().unwrap().grace = grace;
            self.event(format!("SessionSuspended {name}"));
        }
    }

    fn resume(&mut self, conn: u64, token: &str, last_seq: u64) {
        let c = self.conn(conn).unwrap().clone();
        if c.closing {
            return;
        }
        if c.session.is_some() {
            self.event(format!("ResumeRefused #{conn} already_logged_in"));
            return self.reply(conn, Obs::ResumeFailed("already_logged_in".into()));
        }
        let found = self
            .sessions
            .iter()
            .find(|(_, s)| s.resume.as_ref().is_some_and(|r| r.token == token))
            .map(|(name, s)| (name.clone(), s.resume.clone().unwrap()));
        let refuse = |m: &mut Model, code: &str| {
            m.event(format!("ResumeRefused #{conn} {code}"));
            m.push(conn, Obs::ResumeFailed(code.into()), None);
        };
        let Some((name, r)) = found else {
            return refuse(self, "invalid_token");
        };
        if last_seq > r.seq() {
            return refuse(self, "invalid_last_seq");
        }
        if last_seq + 1 < r.first_kept() {
            refuse(self, "history_lost");
            if let Some(old) = self.sessions[&name].conn {
                // Still open: told its session ended (4001).
                self.conn_mut(old).unwrap().closing = true;
                self.push(
                    old,
                    Obs::Disconnect(DisconnectReason::SessionEnded.code()),
                    None,
                );
            }
            return self.end(&name, SessionEnd::HistoryLost);
        }
        let new_token = self.token();
        self.spent.push(r.token.clone());
        let s = self.sessions.get_mut(&name).unwrap();
        let old = s.conn.replace(conn);
        let r = s.resume.as_mut().unwrap();
        r.token = new_token.clone();
        r.grace = None;
        r.sent = r.seq();
        let replay: Vec<(u64, Obs)> = (last_seq + 1..=r.seq())
            .map(|seq| (seq, r.log[seq as usize - 1].clone()))
            .collect();
        if let Some(old) = old {
            let oc = self.conn_mut(old).unwrap();
            oc.session = None;
            oc.closing = true;
            self.push(
                old,
                Obs::Disconnect(DisconnectReason::ResumedElsewhere.code()),
                None,
            );
        }
        self.conn_mut(conn).unwrap().session = Some(name.clone());
        self.push(
            conn,
            Obs::Resumed {
                username: name.clone(),
                token: new_token,
            },
            None,
        );
        for (seq, obs) in replay {
            self.push(conn, obs, Some(seq));
        }
        self.event(format!(
            "SessionResumed {name} #{conn} takeover={}",
            old.is_some()
        ));
    }

    fn ack(&mut self, conn: u64, seq: u64) {
        let Some(name) = self.conn(conn).and_then(|c| c.session.clone()) else {
            return;
        };
        if let Some(r) = self.sessions.get_mut(&name).unwrap().resume.as_mut() {
            r.acked = r.acked.max(seq.min(r.sent));
        }
    }

    /// The soonest timer: grace periods of suspended sessions, ring timers of calls.
    fn next_timer(&self) -> Option<(Timer, String, Option<String>)> {
        let mut timers = Vec::new();
        for (name, s) in &self.sessions {
            if let Some(t) = s.resume.as_ref().and_then(|r| r.grace) {
                timers.push((t, name.clone(), None));
            }
            if let Some(call) = s.call.as_ref().filter(|c| c.caller) {
                if let Some(t) = call.ring {
                    timers.push((t, name.clone(), Some(call.peer.clone())));
                }
            }
        }
        timers.into_iter().min_by_key(|(t, ..)| *t)
    }

    fn fire_timers(&mut self) {
        while let Some((timer, name, callee)) = self.next_timer() {
            if timer.0 > self.now {
                break;
            }
            match callee {
                None => self.end(&name, SessionEnd::GraceExpired),
                Some(callee) => {
                    let caller = name;
                    self.clear_call(&caller, &callee);
                    self.clear_call(&callee, &caller);
                    let no_answer = Some("no_answer".to_string());
                    for (to, from) in [(&caller, &callee), (&callee, &caller)] {
                        let obs = Obs::Close {
                            from: from.clone(),
                            reason: no_answer.clone(),
                        };
                        self.send(to, obs);
                    }
                    self.record_redial(&caller, &callee);
                    self.event(format!(
                        "CallEnded {caller} {callee} {:?}",
                        CallEnd::NoAnswer
                    ));
                }
            }
        }
    }
}

/// The client of one session: what its application received, in order.
#[derive(Debug, Default)]
struct Client {
    /// (seq, message); for a plain session the seq is just the position.
    got: Vec<(u64, Obs)>,
    /// How many of `got` came on the current connection.
    on_conn: usize,
    /// Seqs the client skipped by resuming with a `lastSeq` higher than what it had.
    skipped: Vec<u64>,
}

impl Client {
    /// The highest seq the client has (or claimed to have, resuming).
    fn last(&self) -> u64 {
        let got = self.got.last().map_or(0, |(seq, _)| *seq);
        got.max(self.skipped.last().copied().unwrap_or(0))
    }

    /// The connection dropped before the client read its last `unread` messages (never one
    /// the driver saw acknowledged).
    fn lose(&mut self, unread: usize, acked: u64) {
        let unacked = self.got.iter().filter(|(seq, _)| *seq > acked).count();
        let n = unread.min(self.on_conn).min(unacked);
        self.got.truncate(self.got.len() - n);
        self.on_conn = 0;
    }
}

/// What the router shows from outside: a refused resume must not change it.
type Snapshot = (Vec<String>, Option<Instant>, usize, usize, usize);

struct World {
    router: Router,
    model: Model,
    start: Instant,
    clients: HashMap<u64, Client>,
    relays: u64,
}

/// What a `resume` op expects of the client.
struct ResumePlan {
    sid: u64,
    last_seq: u64,
    /// The client's real last seq (after its old socket lost `unread`).
    true_last: u64,
    /// A takeover: the old connection's socket lost this many.
    unread: Option<usize>,
    /// The highest seq acknowledged before (never lost).
    acked: u64,
    /// Within the history bound: a resume that must not be refused.
    must_succeed: bool,
}

impl World {
    fn new() -> Self {
        let mut n = 0u64;
        let config = RouterConfig::default()
            .with_rate_limit(None)
            .with_unanswered_limits(None)
            .with_sessions(
                SessionConfig::default()
                    .with_grace(GRACE)
                    .with_history(HISTORY as usize, 1 << 30),
            )
            .with_ring_timeout(Some(RING))
            .with_redial_backoff(Some(BACKOFF));
        World {
            router: Router::new(config).with_token_source(move || {
                n += 1;
                SessionToken::new(format!("tok{n}"))
            }),
            model: Model::default(),
            start: Instant::now(),
            clients: HashMap::new(),
            relays: 0,
        }
    }

    fn now(&self) -> Instant {
        self.start + self.model.now
    }

    fn connect(&mut self, slot: usize) -> u64 {
        if let Some(c) = &self.model.slots[slot] {
            return c.id;
        }
        self.model.next_conn += 1;
        let id = self.model.next_conn;
        self.router.handle_connect(ConnectionId(id)).expect("fresh");
        self.model.slots[slot] = Some(MConn {
            id,
            session: None,
            closing: false,
        });
        id
    }

    fn text(&mut self, conn: u64, text: &str) {
        let now = self.now();
        self.router
            .handle_text(ConnectionId(conn), text, now)
            .expect("live");
    }

    fn session_of(&self, conn: u64) -> Option<&MSession> {
        let name = self.model.conn(conn)?.session.as_ref()?;
        self.model.sessions.get(name)
    }

    fn snapshot(&self) -> Snapshot {
        let mut seen = Vec::new();
        for name in NAMES {
            seen.push(format!(
                "{name} {} {:?} {} {:?}",
                self.router.is_logged_in(name),
                self.router.connection_of(name),
                self.router.is_suspended(name),
                self.router.partner_of(name),
            ));
        }
        for c in self.model.slots.iter().flatten() {
            let id = ConnectionId(c.id);
            seen.push(format!(
                "{id} {:?} {:?}",
                self.router.username(id),
                self.router.partner(id)
            ));
        }
        (
            seen,
            self.router.poll_timeout(),
            self.router.retained_bytes(),
            self.router.user_count(),
            self.router.connection_count(),
        )
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let mut plan: Option<ResumePlan> = None;
        let mut lost: Option<(u64, usize, u64)> = None;
        let mut before: Option<Snapshot> = None;
        match *op {
            Op::Connect(slot) => {
                self.connect(slot);
            }
            Op::Login {
                slot,
                name,
                resumable,
            } => {
                let Some(c) = self.model.slots[slot].as_ref().map(|c| c.id) else {
                    return Ok(());
                };
                let name = NAMES[name];
                let text = if resumable {
                    format!(r#"{{"type":"login","username":"{name}","resumable":true}}"#)
                } else {
                    format!(r#"{{"type":"login","username":"{name}"}}"#)
                };
                self.text(c, &text);
                self.model.login(c, name, resumable);
            }
            Op::Relay { slot, kind, to } => {
                let Some(c) = self.model.slots[slot].as_ref().map(|c| c.id) else {
                    return Ok(());
                };
                self.relays += 1;
                let body = payload(self.relays);
                let mut text = format!(r#"{{"type":"{0}","{0}":{body}"#, kind.tag());
                if let Some(t) = to {
                    text.push_str(&format!(r#","otherUsername":"{}""#, NAMES[t]));
                }
                text.push('}');
                self.text(c, &text);
                self.model.relay(c, kind, to.map(|t| NAMES[t]), body);
            }
            Op::Burst { slot, count } => {
                for _ in 0..count {
                    let kind = Kind::Candidate;
                    self.step(&Op::Relay {
                        slot,
                        kind,
                        to: None,
                    })?;
                }
                return Ok(());
            }
            Op::Redial(slot) => {
                let Some(c) = self.model.slots[slot].as_ref().map(|c| c.id) else {
                    return Ok(());
                };
                let to = self
                    .session_of(c)
                    .and_then(|s| s.redials.last())
                    .and_then(|r| NAMES.iter().position(|n| *n == r.callee));
                let kind = Kind::Offer;
                return self.step(&Op::Relay { slot, kind, to });
            }
            Op::HangUp { slot, to } => {
                let Some(c) = self.model.slots[slot].as_ref().map(|c| c.id) else {
                    return Ok(());
                };
                let text = match to {
                    Some(t) => format!(r#"{{"type":"close","otherUsername":"{}"}}"#, NAMES[t]),
                    None => r#"{"type":"close"}"#.to_string(),
                };
                self.text(c, &text);
                self.model.hang_up(c, to.map(|t| NAMES[t]));
            }
            Op::Disconnect(slot) => {
                let Some(c) = self.model.slots[slot].as_ref().map(|c| c.id) else {
                    return Ok(());
                };
                self.router
                    .handle_disconnect(ConnectionId(c))
                    .expect("live");
                self.model.gone(slot, false);
            }
            Op::Lost { slot, unread } => {
                let Some(c) = self.model.slots[slot].as_ref().map(|c| c.id) else {
                    return Ok(());
                };
                if let Some(s) = self.session_of(c) {
                    if let Some(r) = &s.resume {
                        lost = Some((s.sid, unread, r.acked));
                    }
                }
                let now = self.now();
                self.router
                    .handle_connection_lost(ConnectionId(c), now)
                    .expect("live");
                self.model.gone(slot, true);
            }
            Op::Resume {
                slot,
                token,
                last,
                unread,
            } => {
                let c = self.connect(slot);
                let live: Vec<(&String, &MSession)> = self
                    .model
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.resume.is_some())
                    .collect();
                let suspended: Vec<(&String, &MSession)> = live
                    .iter()
                    .copied()
                    .filter(|(_, s)| s.conn.is_none())
                    .collect();
                let target = match token {
                    TokenPick::Suspended(i) if !suspended.is_empty() => {
                        Some(suspended[i % suspended.len()])
                    }
                    TokenPick::Live(i) | TokenPick::Suspended(i) if !live.is_empty() => {
                        Some(live[i % live.len()])
                    }
                    _ => None,
                };
                let token = match (token, target) {
                    (_, Some((_, s))) => s.resume.as_ref().unwrap().token.clone(),
                    (TokenPick::Spent(i), _) if !self.model.spent.is_empty() => {
                        self.model.spent[i % self.model.spent.len()].clone()
                    }
                    (
                        TokenPick::Spent(i)
                        | TokenPick::Wrong(i)
                        | TokenPick::Live(i)
                        | TokenPick::Suspended(i),
                        _,
                    ) => WRONG_TOKENS[i % WRONG_TOKENS.len()].to_string(),
                };
                // The client's real last seq: on a takeover its old socket may have lost a tail.
                let (true_last, seq, acked) = match target {
                    Some((_, s)) => {
                        let r = s.resume.as_ref().unwrap();
                        let client = &self.clients[&s.sid];
                        let mut last = client.last();
                        if s.conn.is_some() {
                            let mut copy = Client {
                                got: client.got.clone(),
                                on_conn: client.on_conn,
                                skipped: client.skipped.clone(),
                            };
                            copy.lose(unread, r.acked);
                            last = copy.last();
                        }
                        (last, r.seq(), r.acked)
                    }
                    None => (0, 0, 0),
                };
                let last_seq = match last {
                    LastPick::True => true_last,
                    LastPick::Lower(d) => true_last.saturating_sub(d),
                    LastPick::Higher(d) => true_last + d,
                    LastPick::Beyond => seq + 1,
                };
                if let Some((_, s)) = target {
                    plan = Some(ResumePlan {
                        sid: s.sid,
                        last_seq,
                        true_last,
                        unread: s.conn.map(|_| unread),
                        acked,
                        // Fewer than the history holds are missing, none acknowledged.
                        must_succeed: last_seq == true_last
                            && seq - last_seq <= HISTORY
                            && last_seq >= acked
                            && !self.model.conn(c).unwrap().closing
                            && self.model.conn(c).unwrap().session.is_none(),
                    });
                }
                before = Some(self.snapshot());
                let text = format!(
                    r#"{{"type":"resume","token":{},"lastSeq":{last_seq}}}"#,
                    serde_json::to_string(&token).unwrap()
                );
                self.text(c, &text);
                self.model.resume(c, &token, last_seq);
            }
            Op::Ack { slot, delta } => {
                let Some(c) = self.model.slots[slot].as_ref().map(|c| c.id) else {
                    return Ok(());
                };
                let last = self
                    .session_of(c)
                    .and_then(|s| self.clients.get(&s.sid))
                    .map_or(0, Client::last);
                let seq = last.saturating_add_signed(delta);
                self.router
                    .handle_acknowledged(ConnectionId(c), seq)
                    .expect("live");
                self.model.ack(c, seq);
            }
            Op::Advance(secs) => {
                self.model.now += Duration::from_secs(secs);
                let now = self.now();
                self.router.handle_timeout(now);
                self.model.fire_timers();
            }
        }
        self.model.settle();
        let expected = std::mem::take(&mut self.model.out);
        let mut expected_events = std::mem::take(&mut self.model.events);
        expected_events.sort();

        // What the router did.
        let mut actual: Vec<(u64, Out)> = Vec::new();
        let mut events = Vec::new();
        while let Some(o) = self.router.poll_output() {
            match o {
                Output::Transmit(t) => {
                    let out = observe(&t.to_json());
                    prop_assert_eq!(out.seq, t.seq);
                    actual.push((t.to.0, out));
                }
                Output::Disconnect { conn, reason } => {
                    prop_assert!(
                        matches!(
                            reason,
                            DisconnectReason::ResumedElsewhere | DisconnectReason::SessionEnded
                        ),
                        "{:?}: {:?}",
                        op,
                        reason
                    );
                    actual.push((
                        conn.0,
                        Out {
                            obs: Obs::Disconnect(reason.code()),
                            seq: None,
                        },
                    ));
                }
                Output::Event(e) => events.extend(event(&e)),
                other => panic!("unexpected output {other:?}"),
            }
        }
        events.sort();
        let mut per_conn: BTreeMap<u64, Vec<Out>> = BTreeMap::new();
        for (to, out) in &actual {
            per_conn.entry(*to).or_default().push(out.clone());
        }
        prop_assert_eq!(&per_conn, &expected, "outputs after {:?}", op);
        prop_assert_eq!(&events, &expected_events, "events after {:?}", op);

        // Outputs only to live connections; transmits never to one that is being closed.
        for (to, out) in &actual {
            let c = self.model.conn(*to);
            prop_assert!(c.is_some(), "{:?}: output to dead #{}", op, to);
            let closing = c.unwrap().closing;
            prop_assert_eq!(closing, matches!(out.obs, Obs::Disconnect(_)), "{:?}", op);
        }
        // A refused resume with a wrong or spent token, or a lastSeq from the future, changes
        // nothing.
        if let Some(before) = before {
            let refused = actual.iter().any(|(_, o)| {
                matches!(&o.obs, Obs::ResumeFailed(code)
                    if code == "invalid_token" || code == "invalid_last_seq")
            });
            if refused {
                prop_assert_eq!(&before, &self.snapshot(), "{:?} changed state", op);
            }
        }
        self.follow_clients(op, &actual, plan, lost)
    }

    /// Updates each session's client from what the router actually sent, and checks it.
    fn follow_clients(
        &mut self,
        op: &Op,
        actual: &[(u64, Out)],
        plan: Option<ResumePlan>,
        lost: Option<(u64, usize, u64)>,
    ) -> Result<(), TestCaseError> {
        if let Some((sid, unread, acked)) = lost {
            if let Some(client) = self.clients.get_mut(&sid) {
                client.lose(unread, acked);
            }
        }
        let resumed_on = actual
            .iter()
            .find(|(_, o)| matches!(o.obs, Obs::Resumed { .. }))
            .map(|(to, _)| *to);
        if let Some(plan) = &plan {
            if plan.must_succeed {
                prop_assert!(
                    resumed_on.is_some(),
                    "{:?}: a resume within the history bound was refused: {:?}",
                    op,
                    actual
                );
            }
        }
        for (to, out) in actual {
            if matches!(out.obs, Obs::Disconnect(_)) {
                continue;
            }
            let Some(s) = self.session_of(*to) else {
                prop_assert!(out.seq.is_none(), "{:?}: seq outside a session", op);
                continue;
            };
            let (sid, resumable) = (s.sid, s.resume.is_some());
            let last = s.resume.as_ref().map_or(0, MResume::seq);
            let client = self.clients.entry(sid).or_default();
            if matches!(out.obs, Obs::LoginOk | Obs::LoginResumable { .. }) {
                prop_assert!(out.seq.is_none());
                continue;
            }
            if Some(*to) == resumed_on {
                continue;
            }
            match (resumable, out.seq) {
                (false, None) => {
                    let pos = client.got.len() as u64 + 1;
                    client.got.push((pos, out.obs.clone()));
                }
                (true, Some(seq)) => {
                    // A live message: exactly the next one.
                    prop_assert_eq!(seq, client.last() + 1, "{:?}: {:?}", op, out);
                    prop_assert!(seq <= last);
                    client.got.push((seq, out.obs.clone()));
                    client.on_conn += 1;
                }
                (r, seq) => prop_assert!(false, "resumable {} with seq {:?}: {:?}", r, seq, out),
            }
        }
        let Some(to) = resumed_on else {
            return Ok(());
        };
        let plan = plan.expect("a resume op");
        let session = self.session_of(to).expect("resumed");
        prop_assert_eq!(session.sid, plan.sid);
        let last = session.resume.as_ref().unwrap().seq();
        let replay: Vec<(u64, Obs)> = actual
            .iter()
            .filter(|(t, o)| *t == to && !matches!(o.obs, Obs::Resumed { .. }))
            .map(|(_, o)| (o.seq.expect("replayed with its seq"), o.obs.clone()))
            .collect();
        let client = self.clients.get_mut(&plan.sid).unwrap();
        if let Some(unread) = plan.unread {
            client.lose(unread, plan.acked);
        }
        // The replay: every message after lastSeq, in order, each with its original seq.
        let seqs: Vec<u64> = replay.iter().map(|(s, _)| *s).collect();
        let want: Vec<u64> = (plan.last_seq + 1..=last).collect();
        prop_assert_eq!(&seqs, &want, "{:?}: replay", op);
        // What the client already had is replayed unchanged.
        for (seq, obs) in &replay {
            if let Some((_, had)) = client.got.iter().find(|(s, _)| s == seq) {
                prop_assert_eq!(had, obs, "seq {} replayed differently", seq);
            }
        }
        let client = self.clients.get_mut(&plan.sid).unwrap();
        client.got.retain(|(s, _)| *s <= plan.last_seq);
        client.skipped.retain(|s| *s <= plan.last_seq);
        client.skipped.extend(plan.true_last + 1..=plan.last_seq);
        client.got.extend(replay.iter().cloned());
        client.on_conn = replay.len();
        prop_assert!(client.got.windows(2).all(|w| w[0].0 < w[1].0), "duplicates");
        // Received ∪ replayed (∪ what the client chose to skip): every message of the
        // session, exactly once, in order.
        let mut all: Vec<u64> = client.got.iter().map(|(s, _)| *s).collect();
        all.extend(&client.skipped);
        all.sort_unstable();
        prop_assert_eq!(all, (1..=last).collect::<Vec<u64>>(), "{:?}", op);
        Ok(())
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        let m = &self.model;
        let live: Vec<&MConn> = m.slots.iter().flatten().collect();
        prop_assert_eq!(self.router.connection_count(), live.len());
        prop_assert_eq!(self.router.user_count(), m.sessions.len());
        for c in &live {
            let id = ConnectionId(c.id);
            prop_assert!(self.router.is_connected(id));
            prop_assert_eq!(
                self.router.username(id).map(|n| n.to_string()),
                c.session.clone()
            );
            if let Some(name) = &c.session {
                // The session holding a name is on this connection, and nowhere else.
                prop_assert_eq!(self.router.connection_of(name), Some(id));
                prop_assert_eq!(m.sessions[name].conn, Some(c.id));
            }
        }
        for name in NAMES {
            let s = m.sessions.get(*name);
            prop_assert_eq!(self.router.is_logged_in(name), s.is_some());
            prop_assert_eq!(
                self.router.connection_of(name).map(|c| c.0),
                s.and_then(|s| s.conn)
            );
            prop_assert_eq!(
                self.router.is_suspended(name),
                s.is_some_and(|s| s.conn.is_none())
            );
            prop_assert_eq!(
                self.router.partner_of(name).map(|p| p.to_string()),
                s.and_then(|s| s.call.as_ref()).map(|c| c.peer.clone())
            );
            // A name is held by at most one connection; a suspended session by none.
            let holders = live
                .iter()
                .filter(|c| {
                    self.router
                        .username(ConnectionId(c.id))
                        .is_some_and(|n| n.as_str() == *name)
                })
                .count();
            prop_assert!(holders <= 1);
            if s.is_none_or(|s| s.conn.is_none()) {
                prop_assert_eq!(holders, 0);
            }
            if let Some(s) = s {
                // Only resumable sessions are ever suspended.
                prop_assert!(s.conn.is_some() || s.resume.is_some());
            }
        }
        // The router's next deadline is exactly the soonest grace period or ring timeout.
        prop_assert_eq!(
            self.router.poll_timeout(),
            m.next_timer().map(|((at, _), ..)| self.start + at)
        );
        // History is kept only while something is kept.
        let kept = m
            .sessions
            .values()
            .filter_map(|s| s.resume.as_ref())
            .any(|r| r.first_kept() <= r.seq());
        prop_assert_eq!(self.router.retained_bytes() > 0, kept);
        Ok(())
    }

    /// Per-pair order: what A sent B arrives in the order A sent it (as the client sees it).
    fn check_order(&self) -> Result<(), TestCaseError> {
        for client in self.clients.values() {
            let mut last: HashMap<&str, u64> = HashMap::new();
            for (_, obs) in &client.got {
                if let Obs::Relay { payload, from, .. } = obs {
                    let n = payload_number(payload);
                    let prev = last.insert(from, n).unwrap_or(0);
                    prop_assert!(prev < n, "{} sent {} after {}", from, n, prev);
                }
            }
        }
        Ok(())
    }
}

/// The events the model predicts, as text.
fn event(e: &Event) -> Option<String> {
    Some(match e {
        Event::LoggedIn {
            conn,
            username,
            resumable,
        } => format!("LoggedIn #{} {username} {resumable}", conn.0),
        Event::CallRinging { caller, callee } => format!("CallRinging {caller} {callee}"),
        Event::CallAnswered { caller, callee } => format!("CallAnswered {caller} {callee}"),
        Event::CallEnded {
            caller,
            callee,
            reason,
        } => format!("CallEnded {caller} {callee} {reason:?}"),
        Event::SessionSuspended { username } => format!("SessionSuspended {username}"),
        Event::SessionResumed {
            username,
            conn,
            takeover,
        } => format!("SessionResumed {username} #{} takeover={takeover}", conn.0),
        Event::ResumeRefused { conn, code } => {
            format!("ResumeRefused #{} {}", conn.0, code.as_str())
        }
        Event::SessionEnded { username, reason } => format!("SessionEnded {username} {reason:?}"),
        _ => return None,
    })
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut w = World::new();
    for op in ops {
        w.step(op)?;
        w.check_invariants()?;
    }
    w.check_order()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn sessions_agree_with_the_model(ops in proptest::collection::vec(op(), 1..100)) {
        run(&ops)?;
    }

    /// Everyone logged in resumable first, alice in an answered call with bob and carol
    /// calling dave, so that calls, drops and resumes meet.
    #[test]
    fn resumable_users_drop_and_resume(ops in proptest::collection::vec(op(), 1..120)) {
        let mut all: Vec<Op> = (0..NAMES.len())
            .flat_map(|i| [Op::Connect(i), Op::Login { slot: i, name: i, resumable: true }])
            .collect();
        all.extend([
            Op::Relay { slot: 0, kind: Kind::Offer, to: Some(1) },
            Op::Relay { slot: 1, kind: Kind::Answer, to: Some(0) },
            Op::Relay { slot: 2, kind: Kind::Offer, to: Some(3) },
        ]);
        all.extend(ops);
        run(&all)?;
    }

    /// Whatever happened, once every connection is gone and the clock passes every grace
    /// period and ring timeout, nothing is left: no name, no history, no timer.
    #[test]
    fn everything_ends(ops in proptest::collection::vec(op(), 1..80)) {
        let mut all = ops;
        all.extend((0..SLOTS).map(|slot| Op::Lost { slot, unread: 0 }));
        all.push(Op::Advance(35));
        let mut w = World::new();
        for op in &all {
            w.step(op)?;
            w.check_invariants()?;
        }
        prop_assert_eq!(w.router.user_count(), 0);
        prop_assert_eq!(w.router.connection_count(), 0);
        prop_assert_eq!(w.router.retained_bytes(), 0);
        prop_assert_eq!(w.router.poll_timeout(), None);
    }
}
