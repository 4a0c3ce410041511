//! Cluster mode in the pure router: three routers joined by a simulated shared registry and
//! message carrier behave, seen from every client, exactly like one router.
//!
//! The same random operations (connects on random nodes, logins and look-alike logins,
//! offers, answers, candidates, closes with and without a name, clean and abnormal drops,
//! resumes on any node with the latest or an older token, time passing over ring timeouts,
//! grace periods and redial back-offs) are fed to one single-node router and to a cluster of
//! three; the cluster carries every `Output::Forward` at once (the registry says which node
//! holds the name), answers every `Output::Claim` from one shared map of names and skeletons,
//! keeps `Output::Release`, and answers every `Output::Fetch` (a resume with another node's
//! token) by handing the session over from the node that issued the token
//! (`handle_handover`, the export encoded and decoded, the registry entry moved) to the
//! resuming node (`handle_imported`).
//! Every connection must receive the same frames, in the same order, from both (session
//! tokens aside, which differ by source). This is what `docs/cluster.md` promises for a
//! cluster whose messages are in flight for no time; the driver and Redis tests cover delays
//! and faults.

// Tests play the driver's part: they read the clock the router may not.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::common::cases;
use signaling_core::cluster::{Envelope, Remote, SessionExport, Unroutable};
use signaling_core::{
    CallEnd, ClaimOutcome, ConnectionId, ErrorCode, Output, Payload, RedialBackoff, RelayKind,
    Router, RouterConfig, SessionConfig, SessionToken, Username,
};

const NODES: usize = 3;
/// Each node's token prefix (tokens are `<node>.<n>`, as the driver's name their node).
const NODE_IDS: [&str; NODES] = ["a", "b", "c"];
const SLOTS: usize = 6;
/// Names by index: plain, look-alikes (a Cyrillic `а`; one NFC name in two spellings), and one
/// nobody logs in with.
const NAMES: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "\u{430}lice",
    "zo\u{eb}",
    "zoe\u{308}",
    "nobody",
];

#[derive(Debug, Clone)]
enum Op {
    /// Opens a connection in the slot (closing what was there cleanly), on node `node`.
    Connect {
        slot: usize,
        node: usize,
    },
    Login {
        slot: usize,
        name: usize,
        resumable: bool,
    },
    Relay {
        slot: usize,
        kind: usize,
        to: Option<usize>,
    },
    Close {
        slot: usize,
        to: Option<usize>,
    },
    Drop {
        slot: usize,
        clean: bool,
    },
    /// A new connection on node `node` resumes `name`'s session with the last token its
    /// client got (or, `stale`, the one before: spent).
    Resume {
        slot: usize,
        name: usize,
        last: u8,
        node: usize,
        stale: bool,
    },
    Wait {
        secs: u64,
    },
    Garbage {
        slot: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let name = 0..NAMES.len();
    prop_oneof![
        2 => (slot.clone(), 0..NODES).prop_map(|(slot, node)| Op::Connect { slot, node }),
        3 => (slot.clone(), 0..NAMES.len() - 1, any::<bool>())
            .prop_map(|(slot, name, resumable)| Op::Login { slot, name, resumable }),
        6 => (slot.clone(), 0..3usize, proptest::option::weighted(0.8, name.clone()))
            .prop_map(|(slot, kind, to)| Op::Relay { slot, kind, to }),
        2 => (slot.clone(), proptest::option::weighted(0.5, name.clone()))
            .prop_map(|(slot, to)| Op::Close { slot, to }),
        1 => (slot.clone(), any::<bool>()).prop_map(|(slot, clean)| Op::Drop { slot, clean }),
        2 => (slot.clone(), name, 0..3u8, 0..NODES, proptest::bool::weighted(0.2))
            .prop_map(|(slot, name, last, node, stale)| Op::Resume { slot, name, last, node, stale }),
        1 => (0..50u64).prop_map(|secs| Op::Wait { secs }),
        1 => slot.prop_map(|slot| Op::Garbage { slot }),
    ]
}

fn config() -> RouterConfig {
    RouterConfig::default()
        .with_rate_limit(None)
        .with_ring_timeout(Some(Duration::from_secs(30)))
        .with_redial_backoff(Some(RedialBackoff {
            initial: Duration::from_secs(20),
            max: Duration::from_secs(60),
        }))
        .with_sessions(
            SessionConfig::default()
                // Half a second off the whole seconds of `Wait`, so that a grace period never
                // ends at the very instant a call rings out (two timers of two nodes at one
                // instant have no order).
                .with_grace(Duration::from_millis(40_500))
                .with_history(8, 4096),
        )
}

fn tokens(prefix: &'static str) -> impl FnMut() -> SessionToken + Send + 'static {
    let mut n = 0u64;
    move || {
        n += 1;
        SessionToken::new(format!("{prefix}.{n}"))
    }
}

/// The node that issued `token` (what comes before its last `.`).
fn issuer(token: &str) -> Option<usize> {
    let (node, _) = token.rsplit_once('.')?;
    NODE_IDS.iter().position(|id| *id == node)
}

/// A frame as a client sees it, with the session token (which differs by source) masked.
fn seen(t: &signaling_core::Transmit) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
    if let Some(token) = v.get_mut("token") {
        *token = "<token>".into();
    }
    v.to_string()
}

/// What a system tells its clients, per connection, plus the tokens per name (latest last).
#[derive(Default)]
struct Seen {
    frames: HashMap<ConnectionId, Vec<String>>,
    tokens: HashMap<String, Vec<String>>,
}

impl Seen {
    fn transmit(&mut self, t: &signaling_core::Transmit, name_of: Option<&Username>) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t.to_json()) {
            let name = v["username"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| name_of.map(|n| n.to_string()));
            if let (Some(token), Some(name)) = (v["token"].as_str(), name) {
                self.tokens.entry(name).or_default().push(token.to_owned());
            }
        }
        self.frames.entry(t.to).or_default().push(seen(t));
    }

    fn disconnect(&mut self, conn: ConnectionId, code: u16) {
        self.frames
            .entry(conn)
            .or_default()
            .push(format!("<close {code}>"));
    }
}

/// One router: the reference.
struct Single {
    router: Router,
    seen: Seen,
    /// The name each login was for, to note its token.
    login_of: HashMap<ConnectionId, Username>,
}

impl Single {
    fn pump(&mut self) {
        while let Some(out) = self.router.poll_output() {
            match out {
                Output::Transmit(t) => {
                    let name = self
                        .router
                        .username(t.to)
                        .cloned()
                        .or_else(|| self.login_of.get(&t.to).cloned());
                    self.seen.transmit(&t, name.as_ref());
                }
                Output::Disconnect { conn, reason } => self.seen.disconnect(conn, reason.code()),
                Output::Event(_) => {}
                other => panic!("a single router in single mode asked for {other:?}"),
            }
        }
    }
}

/// Three routers, a registry of names and skeletons, and instant delivery.
struct Cluster {
    routers: Vec<Router>,
    node_of: HashMap<ConnectionId, usize>,
    names: HashMap<Username, usize>,
    skeletons: HashMap<String, (usize, Username)>,
    seen: Seen,
    login_of: HashMap<ConnectionId, Username>,
    now: Instant,
    forwarded: usize,
    /// Sessions handed from one node to another.
    handed_over: usize,
}

impl Cluster {
    fn pump(&mut self) {
        loop {
            let mut quiet = true;
            for i in 0..NODES {
                while let Some(out) = self.routers[i].poll_output() {
                    quiet = false;
                    self.carry(i, out);
                }
            }
            if quiet {
                return;
            }
        }
    }

    fn carry(&mut self, i: usize, out: Output) {
        match out {
            Output::Transmit(t) => {
                let name = self.routers[i]
                    .username(t.to)
                    .cloned()
                    .or_else(|| self.login_of.get(&t.to).cloned());
                self.seen.transmit(&t, name.as_ref());
            }
            Output::Disconnect { conn, reason } => self.seen.disconnect(conn, reason.code()),
            Output::Event(_) => {}
            Output::Claim {
                conn,
                name,
                skeleton,
            } => {
                let name_free = self.names.get(&name).is_none_or(|&n| n == i);
                let skeleton_free = self
                    .skeletons
                    .get(&*skeleton)
                    .is_none_or(|(n, held)| *n == i && *held == name);
                let outcome = if !name_free {
                    ClaimOutcome::Taken
                } else if !skeleton_free {
                    ClaimOutcome::LookAlike
                } else {
                    self.names.insert(name.clone(), i);
                    self.skeletons
                        .insert(skeleton.to_string(), (i, name.clone()));
                    ClaimOutcome::Won
                };
                self.routers[i]
                    .handle_claimed(conn, &name, outcome)
                    .unwrap();
            }
            Output::Release { name, skeleton } => {
                if self.names.get(&name) == Some(&i) {
                    self.names.remove(&name);
                }
                if self.skeletons.get(&*skeleton).is_some_and(|(n, _)| *n == i) {
                    self.skeletons.remove(&*skeleton);
                }
            }
            Output::Fetch {
                conn,
                token,
                last_seq,
                verified,
            } => {
                let now = self.now;
                let Some(j) = issuer(token.as_str()).filter(|&j| j != i) else {
                    // Ours and unknown, or nobody's: what the backend answers.
                    let message = "unknown, spent or expired session token; log in afresh";
                    let code = ErrorCode::InvalidToken;
                    self.routers[i].handle_fetch_refused(conn, code, message.to_string());
                    return;
                };
                let handed = self.routers[j].handle_handover(
                    token.as_str(),
                    last_seq,
                    verified.as_ref(),
                    now,
                );
                match handed {
                    Ok(export) => {
                        self.handed_over += 1;
                        // What goes over the wire: encode and decode it.
                        let export = SessionExport::decode(&export.encode()).unwrap();
                        // The lease moves before the session does.
                        let name = export.name().clone();
                        self.names.insert(name.clone(), i);
                        self.skeletons
                            .insert(export.skeleton().to_string(), (i, name));
                        self.routers[i].handle_imported(Some(conn), export, last_seq, now);
                    }
                    Err((code, message)) => {
                        self.routers[i].handle_fetch_refused(conn, code, message);
                    }
                }
            }
            Output::Forward(envelope) => {
                self.forwarded += 1;
                // Envelopes are what goes over the wire: encode and decode each one.
                let envelope = Envelope::decode(&envelope.encode()).unwrap();
                match self.names.get(&envelope.to) {
                    Some(&j) => self.routers[j].handle_remote(envelope, self.now),
                    None => self.routers[i].handle_unroutable(envelope, Unroutable::UnknownUser),
                }
            }
            other => panic!("unexpected output {other:?}"),
        }
    }
}

struct World {
    single: Single,
    cluster: Cluster,
    slots: [Option<ConnectionId>; SLOTS],
    next: u64,
    now: Instant,
}

impl World {
    fn new() -> World {
        let now = Instant::now();
        World {
            single: Single {
                router: Router::new(config()).with_token_source(tokens("s")),
                seen: Seen::default(),
                login_of: HashMap::new(),
            },
            cluster: Cluster {
                routers: (0..NODES)
                    .map(|i| {
                        let prefix: &'static str = NODE_IDS[i];
                        Router::new(config().with_claim_names(true))
                            .with_token_source(tokens(prefix))
                    })
                    .collect(),
                node_of: HashMap::new(),
                names: HashMap::new(),
                skeletons: HashMap::new(),
                seen: Seen::default(),
                login_of: HashMap::new(),
                now,
                forwarded: 0,
                handed_over: 0,
            },
            slots: [None; SLOTS],
            next: 1,
            now,
        }
    }

    /// Feeds `text` from `conn` to both systems.
    fn text(&mut self, conn: ConnectionId, text: &str) {
        let now = self.now;
        self.single.router.handle_text(conn, text, now).unwrap();
        let node = self.cluster.node_of[&conn];
        self.cluster.routers[node]
            .handle_text(conn, text, now)
            .unwrap();
    }

    fn drop_conn(&mut self, conn: ConnectionId, clean: bool) {
        let now = self.now;
        let node = self.cluster.node_of[&conn];
        if clean {
            self.single.router.handle_disconnect(conn).unwrap();
            self.cluster.routers[node].handle_disconnect(conn).unwrap();
        } else {
            self.single
                .router
                .handle_connection_lost(conn, now)
                .unwrap();
            self.cluster.routers[node]
                .handle_connection_lost(conn, now)
                .unwrap();
        }
        // A driver dispatches after every input.
        self.single.pump();
        self.cluster.pump();
    }

    fn connect(&mut self, slot: usize, node: usize) -> ConnectionId {
        if let Some(old) = self.slots[slot].take() {
            self.drop_conn(old, true);
        }
        let conn = ConnectionId(self.next);
        self.next += 1;
        self.single.router.handle_connect(conn).unwrap();
        self.cluster.node_of.insert(conn, node);
        self.cluster.routers[node].handle_connect(conn).unwrap();
        self.slots[slot] = Some(conn);
        conn
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Connect { slot, node } => {
                self.connect(slot, node);
            }
            Op::Login {
                slot,
                name,
                resumable,
            } => {
                let Some(conn) = self.slots[slot] else { return };
                if let Ok(n) = Username::new(NAMES[name]) {
                    self.single.login_of.insert(conn, n.clone());
                    self.cluster.login_of.insert(conn, n);
                }
                let text = serde_json::json!({
                    "type": "login", "username": NAMES[name], "resumable": resumable,
                });
                self.text(conn, &text.to_string());
            }
            Op::Relay { slot, kind, to } => {
                let Some(conn) = self.slots[slot] else { return };
                let tag = ["offer", "answer", "candidate"][kind];
                let mut v = serde_json::json!({
                    "type": tag,
                    tag: {"n": self.next, "sdp": "v=0\r\n"},
                });
                self.next += 1;
                if let Some(to) = to {
                    v["otherUsername"] = NAMES[to].into();
                }
                self.text(conn, &v.to_string());
            }
            Op::Close { slot, to } => {
                let Some(conn) = self.slots[slot] else { return };
                let mut v = serde_json::json!({"type": "close"});
                if let Some(to) = to {
                    v["otherUsername"] = NAMES[to].into();
                }
                self.text(conn, &v.to_string());
            }
            Op::Drop { slot, clean } => {
                if let Some(conn) = self.slots[slot].take() {
                    self.drop_conn(conn, clean);
                }
            }
            Op::Resume {
                slot,
                name,
                last,
                node,
                stale,
            } => {
                let Ok(user) = Username::new(NAMES[name]) else {
                    return;
                };
                let pick = |tokens: Option<&Vec<String>>| {
                    let tokens = tokens?;
                    let back = if stale { 2 } else { 1 };
                    tokens.len().checked_sub(back).map(|i| tokens[i].clone())
                };
                let (Some(single), Some(cluster)) = (
                    pick(self.single.seen.tokens.get(user.as_str())),
                    pick(self.cluster.seen.tokens.get(user.as_str())),
                ) else {
                    return;
                };
                let conn = self.connect(slot, node);
                let last_seq = u64::from(last);
                let resume = |token: &str| {
                    serde_json::json!({"type": "resume", "token": token, "lastSeq": last_seq})
                        .to_string()
                };
                let now = self.now;
                self.single.login_of.insert(conn, user.clone());
                self.cluster.login_of.insert(conn, user);
                self.single
                    .router
                    .handle_text(conn, &resume(&single), now)
                    .unwrap();
                self.cluster.routers[node]
                    .handle_text(conn, &resume(&cluster), now)
                    .unwrap();
            }
            Op::Wait { secs } => {
                // Time runs through every deadline in order, on every node, as it would.
                let until = self.now + Duration::from_secs(secs);
                loop {
                    let next = self
                        .cluster
                        .routers
                        .iter()
                        .filter_map(Router::poll_timeout)
                        .chain(self.single.router.poll_timeout())
                        .min()
                        .filter(|&at| at <= until);
                    let Some(at) = next else { break };
                    self.now = self.now.max(at);
                    self.cluster.now = self.now;
                    self.single.router.handle_timeout(self.now);
                    for r in &mut self.cluster.routers {
                        r.handle_timeout(self.now);
                    }
                    self.single.pump();
                    self.cluster.pump();
                }
                self.now = until;
                self.cluster.now = until;
            }
            Op::Garbage { slot } => {
                let Some(conn) = self.slots[slot] else { return };
                self.text(conn, r#"{"type":"offer","offer":}"#);
            }
        }
        self.single.pump();
        self.cluster.pump();
    }

    fn check(&self, op: &Op) -> Result<(), TestCaseError> {
        for conn in (1..self.next).map(ConnectionId) {
            let single = self.single.seen.frames.get(&conn);
            let cluster = self.cluster.seen.frames.get(&conn);
            prop_assert_eq!(single, cluster, "connection {} after {:?}", conn, op);
        }
        // The registry holds exactly the names the routers hold.
        let mut held: Vec<&Username> = self.cluster.names.keys().collect();
        held.sort();
        let mut logged_in: Vec<Username> = NAMES
            .iter()
            .filter_map(|n| Username::new(n).ok())
            .filter(|n| {
                self.cluster
                    .routers
                    .iter()
                    .any(|r| r.is_logged_in(n.as_str()))
            })
            .collect();
        logged_in.sort();
        logged_in.dedup();
        prop_assert_eq!(held, logged_in.iter().collect::<Vec<_>>());
        // The same users are logged in on one node as on three.
        for name in NAMES {
            let one = self.single.router.is_logged_in(name);
            let three = self
                .cluster
                .routers
                .iter()
                .filter(|r| r.is_logged_in(name))
                .count();
            prop_assert_eq!(usize::from(one), three, "{:?}", name);
        }
        Ok(())
    }
}

fn run(ops: &[Op]) -> Result<usize, TestCaseError> {
    Ok(run_world(ops)?.cluster.forwarded)
}

fn run_world(ops: &[Op]) -> Result<World, TestCaseError> {
    let mut w = World::new();
    for op in ops {
        w.step(op);
        w.check(op)?;
    }
    Ok(w)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn three_nodes_behave_as_one(ops in proptest::collection::vec(op(), 1..100)) {
        run(&ops)?;
    }

    /// Everyone logged in first, each on its own node in turn, so that calls cross nodes.
    #[test]
    fn three_nodes_behave_as_one_in_calls(ops in proptest::collection::vec(op(), 1..120)) {
        let mut all: Vec<Op> = (0..SLOTS)
            .flat_map(|slot| {
                [
                    Op::Connect { slot, node: slot % NODES },
                    Op::Login { slot, name: slot, resumable: slot % 2 == 0 },
                ]
            })
            .collect();
        all.extend(ops);
        run(&all)?;
    }
}

/// The property above would pass vacuously if no call ever crossed nodes: a fixed script
/// shows that it does, and what crossing looks like.
#[test]
fn a_call_across_nodes_forwards_and_matches() {
    let ops = [
        Op::Connect { slot: 0, node: 0 },
        Op::Login {
            slot: 0,
            name: 0,
            resumable: false,
        },
        Op::Connect { slot: 1, node: 1 },
        Op::Login {
            slot: 1,
            name: 1,
            resumable: true,
        },
        Op::Relay {
            slot: 0,
            kind: 0,
            to: Some(1),
        },
        Op::Relay {
            slot: 1,
            kind: 1,
            to: Some(0),
        },
        Op::Relay {
            slot: 0,
            kind: 2,
            to: None,
        },
        Op::Close {
            slot: 1,
            to: Some(0),
        },
    ];
    let forwarded = run(&ops).unwrap();
    assert_eq!(forwarded, 4, "offer, answer, candidate and close crossed");
}

#[test]
fn a_remote_offer_to_a_busy_user_is_refused_with_the_single_node_text() {
    let mut w = World::new();
    for op in [
        Op::Connect { slot: 0, node: 0 },
        Op::Login {
            slot: 0,
            name: 0,
            resumable: false,
        },
        Op::Connect { slot: 1, node: 1 },
        Op::Login {
            slot: 1,
            name: 1,
            resumable: false,
        },
        Op::Connect { slot: 2, node: 2 },
        Op::Login {
            slot: 2,
            name: 2,
            resumable: false,
        },
        Op::Relay {
            slot: 0,
            kind: 0,
            to: Some(1),
        },
        Op::Relay {
            slot: 2,
            kind: 0,
            to: Some(1),
        },
    ] {
        w.step(&op);
        w.check(&op).unwrap();
    }
    let carol = w.slots[2].unwrap();
    let frames = &w.cluster.seen.frames[&carol];
    assert_eq!(
        frames.last().unwrap(),
        r#"{"code":"busy","message":"user \"bob\" is in another call","type":"error"}"#
    );
}

/// A partner whose node died: the backend says so (`handle_peer_gone`) and the local side is
/// told `close`, once.
#[test]
fn a_peer_gone_ends_the_call_once() {
    let mut r = Router::new(config().with_claim_names(true));
    let now = Instant::now();
    let a = ConnectionId(1);
    r.handle_connect(a).unwrap();
    r.handle_text(a, r#"{"type":"login","username":"alice"}"#, now)
        .unwrap();
    let alice = Username::new("alice").unwrap();
    let claim = r.poll_output();
    assert!(matches!(claim, Some(Output::Claim { .. })), "{claim:?}");
    r.handle_claimed(a, &alice, ClaimOutcome::Won).unwrap();
    r.handle_text(
        a,
        r#"{"type":"offer","offer":{},"otherUsername":"bob"}"#,
        now,
    )
    .unwrap();
    let bob = Username::new("bob").unwrap();
    // bob's node accepts the offer: he answers.
    r.handle_remote(
        Envelope {
            from: bob.clone(),
            to: alice.clone(),
            body: Remote::Relay {
                kind: RelayKind::Answer,
                payload: Payload::from_json("{}").unwrap(),
                opens_call: false,
            },
        },
        now,
    );
    assert_eq!(r.remote_peers().collect::<Vec<_>>(), vec![&bob]);
    while r.poll_output().is_some() {}
    assert!(r.handle_peer_gone(&bob));
    let mut frames = Vec::new();
    while let Some(o) = r.poll_output() {
        if let Output::Transmit(t) = o {
            frames.push(t.to_json());
        }
    }
    assert_eq!(
        frames,
        vec![r#"{"type":"close","username":"bob"}"#.to_string()]
    );
    assert!(!r.handle_peer_gone(&bob), "once");
    assert_eq!(r.remote_peers().count(), 0);
    // A late hang-up from bob's node changes nothing.
    r.handle_remote(
        Envelope {
            from: bob,
            to: alice,
            body: Remote::HangUp {
                end: CallEnd::NoAnswer,
            },
        },
        now,
    );
    assert!(r.poll_output().is_none());
}

/// A router in cluster mode with alice and carol logged in and in an answered call.
fn two_in_a_call() -> (Router, ConnectionId, ConnectionId, Instant) {
    let mut r = Router::new(config().with_claim_names(true));
    let now = Instant::now();
    let (a, c) = (ConnectionId(1), ConnectionId(2));
    for (conn, name) in [(a, "alice"), (c, "carol")] {
        r.handle_connect(conn).unwrap();
        r.handle_text(
            conn,
            &format!(r#"{{"type":"login","username":"{name}"}}"#),
            now,
        )
        .unwrap();
        r.handle_claimed(conn, &Username::new(name).unwrap(), ClaimOutcome::Won)
            .unwrap();
    }
    r.handle_text(
        a,
        r#"{"type":"offer","offer":{},"otherUsername":"carol"}"#,
        now,
    )
    .unwrap();
    r.handle_text(
        c,
        r#"{"type":"answer","answer":{},"otherUsername":"alice"}"#,
        now,
    )
    .unwrap();
    while r.poll_output().is_some() {}
    (r, a, c, now)
}

fn frames(r: &mut Router) -> Vec<(ConnectionId, String)> {
    let mut out = Vec::new();
    while let Some(o) = r.poll_output() {
        match o {
            Output::Transmit(t) => out.push((t.to, t.to_json())),
            Output::Disconnect { conn, reason } => {
                out.push((conn, format!("<close {}>", reason.code())))
            }
            _ => {}
        }
    }
    out
}

#[test]
fn a_detached_node_refuses_relays_but_lets_calls_end() {
    let (mut r, a, c, now) = two_in_a_call();
    r.handle_detached(true);
    r.handle_text(a, r#"{"type":"candidate","candidate":{}}"#, now)
        .unwrap();
    let out = frames(&mut r);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, a);
    assert!(out[0].1.contains(r#""code":"unavailable""#), "{out:?}");
    r.handle_text(a, r#"{"type":"close"}"#, now).unwrap();
    assert_eq!(
        frames(&mut r),
        vec![(c, r#"{"type":"close","username":"alice"}"#.to_string())]
    );
    r.handle_detached(false);
    r.handle_text(
        c,
        r#"{"type":"offer","offer":{},"otherUsername":"alice"}"#,
        now,
    )
    .unwrap();
    assert_eq!(frames(&mut r)[0].0, a, "relays again");
}

#[test]
fn a_lost_name_ends_its_session_here() {
    let (mut r, a, c, _) = two_in_a_call();
    let alice = Username::new("alice").unwrap();
    r.handle_names_lost([&alice]);
    let out = frames(&mut r);
    assert_eq!(
        out,
        vec![
            (c, r#"{"type":"close","username":"alice"}"#.to_string()),
            (a, "<close 4001>".to_string()),
        ]
    );
    assert!(!r.is_logged_in("alice"));
    assert!(r.is_logged_in("carol"));
    // Unknown names are ignored.
    r.handle_names_lost([&Username::new("nobody").unwrap()]);
    assert!(frames(&mut r).is_empty());
}

/// The property above would pass vacuously if no resume ever crossed nodes: a fixed script
/// hands a session over (and refuses a spent token across nodes) with the frames of one node.
#[test]
fn a_resume_on_another_node_hands_the_session_over_and_matches() {
    let ops = [
        Op::Connect { slot: 0, node: 0 },
        Op::Login {
            slot: 0,
            name: 0,
            resumable: true,
        },
        Op::Connect { slot: 1, node: 1 },
        Op::Login {
            slot: 1,
            name: 1,
            resumable: false,
        },
        Op::Relay {
            slot: 1,
            kind: 0,
            to: Some(0),
        },
        Op::Relay {
            slot: 0,
            kind: 1,
            to: Some(1),
        },
        Op::Drop {
            slot: 0,
            clean: false,
        },
        Op::Relay {
            slot: 1,
            kind: 2,
            to: Some(0),
        },
        Op::Resume {
            slot: 2,
            name: 0,
            last: 1,
            node: 2,
            stale: false,
        },
        Op::Relay {
            slot: 2,
            kind: 2,
            to: None,
        },
        Op::Resume {
            slot: 3,
            name: 0,
            last: 1,
            node: 1,
            stale: true,
        },
        Op::Close { slot: 1, to: None },
    ];
    let w = run_world(&ops).unwrap();
    assert_eq!(w.cluster.handed_over, 1);
    let resumed = w.slots[2].unwrap();
    let frames = &w.cluster.seen.frames[&resumed];
    assert_eq!(
        frames[..2],
        [
            r#"{"graceMs":40500,"success":true,"token":"<token>","type":"resume","username":"alice"}"#,
            r#"{"candidate":{"n":5,"sdp":"v=0\r\n"},"seq":2,"type":"candidate","username":"bob"}"#,
        ]
    );
    let spent = w.slots[3].unwrap();
    assert!(w.cluster.seen.frames[&spent][0].contains("invalid_token"));
}
