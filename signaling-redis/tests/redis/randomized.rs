//! A seeded random run over three real nodes on one `redis-server`: clients connect to random
//! nodes, log in with names from a small pool, relay offers, answers and candidates to random
//! names, hang up and drop. One operation at a time, each waited for, and checked against the
//! invariants of a single server:
//!
//! - a name is logged in on at most one node at any time, and a login succeeds only for a name
//!   no other live client holds;
//! - every relay is either delivered once to the user it names, or answered to its sender
//!   with an `error` — never both, never neither (nothing lost silently);
//! - relays from one user to another arrive in the order sent, none twice;
//! - a call ends with exactly one `close` to the other side (a hang-up or a dropped
//!   connection), never a `close` for a call that is not there.
//!
//! Seeds: `SIGNALING_CLUSTER_SEEDS` (comma-separated; default three fixed ones), operations per
//! seed: `SIGNALING_CLUSTER_OPS` (default 250).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use signaling_core::RouterConfig;
use signaling_redis::testing::RedisServer;
use signaling_test_support::quiet_config;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::nodes::Node;

const NODES: usize = 3;
const SLOTS: usize = 6;
const NAMES: &[&str] = &["alice", "bob", "carol", "dave", "eve"];
/// How long an expected outcome may take (only a failure waits this long).
const WAIT: Duration = Duration::from_secs(3);

/// xorshift64*: a seeded run is the same run every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

struct Slot {
    sink: Sink,
    inbox: mpsc::UnboundedReceiver<Value>,
    /// The task reading the socket (it holds the socket's other half).
    reader: tokio::task::AbortHandle,
    node: usize,
    name: Option<String>,
}

/// What a run did, so that a run that tested nothing shows.
#[derive(Debug, Default)]
struct Tally {
    delivered: usize,
    delivered_across_nodes: usize,
    refused: usize,
    closes: usize,
    logins: usize,
}

struct World {
    nodes: Vec<Node>,
    slots: Vec<Option<Slot>>,
    /// Calls as the clients saw them open: name → partner.
    calls: HashMap<String, String>,
    /// The last relay id each receiver got from each sender.
    last_relay: HashMap<(String, String), u64>,
    next_id: u64,
    log: Vec<String>,
    tally: Tally,
}

impl World {
    fn fail(&self, what: String) -> ! {
        panic!("{what}\nops so far:\n{}", self.log.join("\n"));
    }

    async fn connect(&mut self, slot: usize, node: usize) {
        self.drop_slot(slot, true).await;
        let (ws, _) = tokio_tungstenite::connect_async(&self.nodes[node].url)
            .await
            .expect("connect");
        let (sink, mut stream) = ws.split();
        let (tx, inbox) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                let v = match m {
                    Ok(Message::Text(t)) => serde_json::from_str(&t).expect("JSON"),
                    Ok(Message::Close(f)) => json!({"<closed>": f.map(|f| u16::from(f.code))}),
                    Ok(_) => continue,
                    Err(_) => json!({"<closed>": null}),
                };
                if tx.send(v).is_err() {
                    return;
                }
            }
        })
        .abort_handle();
        self.slots[slot] = Some(Slot {
            sink,
            inbox,
            reader,
            node,
            name: None,
        });
    }

    async fn send(&mut self, slot: usize, v: Value) {
        let s = self.slots[slot].as_mut().expect("connected");
        s.sink
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    /// The next message to `slot` within `wait`, checked against the invariants.
    async fn next(&mut self, slot: usize, wait: Duration) -> Option<Value> {
        let s = self.slots[slot].as_mut()?;
        let v = tokio::time::timeout(wait, s.inbox.recv()).await.ok()??;
        let me = s.name.clone();
        self.observe(me.as_deref(), &v);
        Some(v)
    }

    /// Checks a message `me` received: relay order, and `close` only for an open call.
    fn observe(&mut self, me: Option<&str>, v: &Value) {
        let Some(me) = me else { return };
        let from = v["username"].as_str().unwrap_or_default().to_string();
        match v["type"].as_str() {
            Some("offer" | "answer" | "candidate") => {
                let kind = v["type"].as_str().unwrap_or_default();
                let id = v[kind]["id"].as_u64().expect("relay id");
                let last = self.last_relay.insert((from.clone(), me.to_string()), id);
                if last.is_some_and(|last| last >= id) {
                    self.fail(format!(
                        "{me} got relay {id} from {from} after {last:?}: duplicated or reordered"
                    ));
                }
                if kind == "offer" {
                    self.calls.insert(me.to_string(), from.clone());
                    self.calls.insert(from, me.to_string());
                }
            }
            Some("close") => {
                self.tally.closes += 1;
                if self.calls.get(me) != Some(&from) {
                    self.fail(format!("{me} got close from {from} without a call: {v}"));
                }
                self.calls.remove(me);
                if self.calls.get(&from).is_some_and(|p| p == me) {
                    self.calls.remove(&from);
                }
            }
            _ => {}
        }
    }

    fn holder(&self, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
    }

    async fn drop_slot(&mut self, slot: usize, clean: bool) {
        let Some(mut s) = self.slots[slot].take() else {
            return;
        };
        if clean {
            let _ = s.sink.send(Message::Close(None)).await;
        }
        let name = s.name.take();
        // Both halves go: the connection closes (abruptly unless a close frame went first).
        s.reader.abort();
        drop(s);
        let Some(name) = name else { return };
        // Its partner is told `close` once.
        let Some(partner) = self.calls.get(&name).cloned() else {
            return;
        };
        let Some(p) = self.holder(&partner) else {
            return;
        };
        loop {
            match self.next(p, WAIT).await {
                Some(v) if v["type"] == "close" && v["username"] == name.as_str() => return,
                Some(_) => {}
                None => self.fail(format!("{partner} never told that {name} left")),
            }
        }
    }

    fn check_names(&self) {
        for name in NAMES {
            let nodes = self
                .nodes
                .iter()
                .filter(|n| n.hub.with_router(|r| r.is_logged_in(name)))
                .count();
            if nodes > 1 {
                self.fail(format!("{name} is logged in on {nodes} nodes"));
            }
        }
    }

    /// One random operation, waited for and checked.
    async fn step(&mut self, rng: &mut Rng) {
        let slot = rng.below(SLOTS);
        let connected = self.slots[slot].is_some();
        let logged_in = self.slots[slot].as_ref().and_then(|s| s.name.clone());
        match (rng.below(12), connected, logged_in) {
            (0, _, _) | (_, false, _) => {
                let node = rng.below(NODES);
                self.log
                    .push(format!("slot {slot}: connect to node {node}"));
                self.connect(slot, node).await;
            }
            (2..=11, true, None) => {
                let name = NAMES[rng.below(NAMES.len())];
                self.log.push(format!("slot {slot}: login {name}"));
                self.send(slot, json!({"type": "login", "username": name}))
                    .await;
                let Some(reply) = self.next(slot, WAIT).await else {
                    self.fail(format!("no login reply for {name}"));
                };
                if reply["success"] == true {
                    if let Some(other) = self.holder(name) {
                        self.fail(format!(
                            "{name} logged in on slot {slot} while slot {other} holds it"
                        ));
                    }
                    self.slots[slot].as_mut().expect("connected").name = Some(name.to_string());
                    self.tally.logins += 1;
                } else if reply["code"] != "name_taken" {
                    self.fail(format!("login {name}: {reply}"));
                }
            }
            (1 | 2, true, Some(_)) => {
                let clean = rng.below(2) == 0;
                self.log.push(format!("slot {slot}: drop (clean: {clean})"));
                self.drop_slot(slot, clean).await;
            }
            (3 | 4, true, Some(me)) => {
                self.log.push(format!("slot {slot}: {me} closes"));
                self.send(slot, json!({"type": "close"})).await;
                match self.calls.get(&me).cloned() {
                    // The partner is told (and the sender gets nothing).
                    Some(partner) => {
                        let Some(p) = self.holder(&partner) else {
                            self.fail(format!("{me}'s partner {partner} is not connected"));
                        };
                        loop {
                            match self.next(p, WAIT).await {
                                Some(v) if v["type"] == "close" && v["username"] == me.as_str() => {
                                    break;
                                }
                                Some(_) => {}
                                None => {
                                    self.fail(format!("{partner} never told that {me} hung up"))
                                }
                            }
                        }
                    }
                    None => {
                        let reply = self.next(slot, WAIT).await;
                        if reply.as_ref().map(|r| &r["code"]) != Some(&json!("not_in_call")) {
                            self.fail(format!("close outside a call: {reply:?}"));
                        }
                    }
                }
            }
            (_, true, me) => {
                // Mostly to someone there, mostly into a call: refusals need no help.
                let partner = me.as_ref().and_then(|me| self.calls.get(me)).cloned();
                let present: Vec<&str> = NAMES
                    .iter()
                    .copied()
                    .filter(|n| self.holder(n).is_some())
                    .collect();
                let (to, kind) = match (partner, rng.below(10)) {
                    (Some(p), 0..=6) => {
                        let to = NAMES.iter().copied().find(|n| *n == p).unwrap_or("eve");
                        (to, ["answer", "candidate", "candidate"][rng.below(3)])
                    }
                    (_, 0..=7) if !present.is_empty() => (
                        present[rng.below(present.len())],
                        ["offer", "offer", "candidate"][rng.below(3)],
                    ),
                    _ => (
                        NAMES[rng.below(NAMES.len())],
                        ["offer", "answer", "candidate"][rng.below(3)],
                    ),
                };
                self.next_id += 1;
                let id = self.next_id;
                self.log
                    .push(format!("slot {slot}: {me:?} sends {kind} {id} to {to}"));
                self.send(
                    slot,
                    json!({"type": kind, kind: {"id": id}, "otherUsername": to}),
                )
                .await;
                // Delivered to `to`, or refused to the sender: one of the two, once.
                let target = self.holder(to).filter(|&t| t != slot);
                let mut delivered = false;
                let mut refused = None;
                let deadline = tokio::time::Instant::now() + WAIT;
                while !delivered && refused.is_none() && tokio::time::Instant::now() < deadline {
                    if let Some(t) = target {
                        while let Some(v) = self.next(t, Duration::from_millis(5)).await {
                            if v[kind]["id"] == id {
                                delivered = true;
                            }
                        }
                    }
                    if let Some(v) = self.next(slot, Duration::from_millis(5)).await {
                        if v["type"] == "error" {
                            refused = Some(v);
                        }
                    }
                }
                if delivered {
                    self.tally.delivered += 1;
                    let node = |s: usize| self.slots[s].as_ref().map(|s| s.node);
                    if target.is_some_and(|t| node(t) != node(slot)) {
                        self.tally.delivered_across_nodes += 1;
                    }
                } else if refused.is_some() {
                    self.tally.refused += 1;
                }
                if !delivered && refused.is_none() {
                    self.fail(format!(
                        "{kind} {id} to {to}: neither delivered nor refused"
                    ));
                }
                // Neither both: nothing more about it may come.
                let late = self.next(slot, Duration::from_millis(20)).await;
                if delivered && late.as_ref().is_some_and(|v| v["type"] == "error") {
                    self.fail(format!("{kind} {id} delivered and refused: {late:?}"));
                }
            }
        }
        self.check_names();
    }
}

async fn run(redis: &RedisServer, seed: u64, ops: usize) {
    let config = quiet_config().with_router(
        RouterConfig::default()
            .with_rate_limit(None)
            .with_ring_timeout(None)
            .with_redial_backoff(None),
    );
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let id = format!("n{i}");
        nodes.push(
            Node::start_with(&redis.url(), &id, Duration::from_secs(10), config.clone()).await,
        );
    }
    let mut world = World {
        nodes,
        slots: (0..SLOTS).map(|_| None).collect(),
        calls: HashMap::new(),
        last_relay: HashMap::new(),
        next_id: 0,
        log: vec![format!("seed {seed}")],
        tally: Tally::default(),
    };
    let mut rng = Rng(seed | 1);
    for _ in 0..ops {
        world.step(&mut rng).await;
    }
    eprintln!("seed {seed}: {:?}", world.tally);
    let t = &world.tally;
    assert!(
        t.delivered_across_nodes > 0 && t.refused > 0 && t.logins > 0,
        "seed {seed} tested too little: {t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_the_single_node_invariants() {
    let seeds: Vec<u64> = std::env::var("SIGNALING_CLUSTER_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 0x5eed, 0xc1_0575]);
    let ops = std::env::var("SIGNALING_CLUSTER_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(250);
    for seed in seeds {
        let Some(redis) = RedisServer::start() else {
            return;
        };
        run(&redis, seed, ops).await;
    }
}
