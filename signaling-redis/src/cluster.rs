//! The cluster backend on Redis: [`RedisCluster`] implements the driver's [`ClusterBackend`]
//! with the name leases of [`lease`](crate::lease) and the per-node channels of
//! [`bus`](crate::bus).
//!
//! ```no_run
//! use std::sync::Arc;
//! use signaling_core::driver::{Config, Hub};
//! use signaling_redis::cluster::{ClusterConfig, RedisCluster};
//!
//! # async fn run() -> Result<(), signaling_redis::lease::LeaseError> {
//! let cluster = RedisCluster::connect(ClusterConfig::new("redis://127.0.0.1:6379")).await?;
//! let hub = Hub::new(Config::default().with_cluster(Arc::new(cluster)));
//! // serve `hub` with signaling-ws or signaling-warp, as a single server
//! # drop(hub); Ok(()) }
//! ```
//!
//! # What it does
//!
//! - **Logins**: [`claim`](RedisCluster::claim) takes the name and its skeleton in Redis (both or
//!   neither). The names this node holds are refreshed every [`LeaseConfig::refresh_interval`]
//!   (a third of the TTL) in one script call per 1,000 names; a refresh that finds keys missing
//!   (Redis restarted empty) sets them again.
//! - **Messages**: an envelope for a user of another node goes into a bounded queue (full:
//!   the sender gets `unavailable`); one task takes the queue in batches, looks up the owners it
//!   does not know (one `MGET` per batch, cached), and publishes the whole batch in one
//!   pipelined round trip, the envelopes for one node coalesced into as few `PUBLISH`es as
//!   fit in 64 KiB (`docs/cluster.md`, "Bus payloads"). One task and one connection keep the
//!   order of the envelopes. An
//!   owner nobody holds is `unknown_user`; a publish nobody received (the owner's node is dead
//!   or cut off) or a Redis that cannot be reached is `unavailable`: the sender is told, never
//!   left waiting.
//! - **A stale cache**: a node that gets an envelope for a name it does not hold (the user
//!   logged out here and in on another node) looks the owner up and passes it on, once.
//! - **Dead partners**: every refresh interval the node checks the owners of the users of
//!   other nodes its users are in calls with; a name nobody has held at two checks in a row
//!   (its node died, and its lease ran out) ends those calls (`close`).
//! - **Cut off**: a node whose last successful refresh started more than a TTL ago may have
//!   lost its names: it refuses relays (`unavailable`) until a refresh succeeds again, and ends
//!   the sessions whose names another node took meanwhile.
//! - **Resume on another node**: session tokens start with the id of the node that issued them.
//!   A `resume` with another node's token first looks for the session among those parked by
//!   nodes that shut down ([`Leases::parked`], taken with [`Leases::unpark`]); otherwise it asks
//!   the issuing node over the bus (a request and a reply on the nodes' channels, answered
//!   within [`ClusterConfig::fetch_timeout`] or refused with `unavailable`). The issuing node
//!   checks the resume as its own, takes the session out of its router, moves the lease to the
//!   asking node ([`Leases::transfer`]) and only then replies with the session.
//! - **Graceful shutdown**: the resumable sessions are parked in Redis for the rest of their
//!   grace, their leases with them ([`Leases::park`]), before their clients are told 1012.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use signaling_core::cluster::{Envelope, Remote, SessionExport, Unroutable};
use signaling_core::driver::cluster::{ClusterBackend, ClusterLink};
use signaling_core::driver::token_node;
use signaling_core::{ClaimOutcome, ConnectionId, ErrorCode, Evacuated, SessionToken, Username};
use tokio::sync::{mpsc, oneshot};

use crate::bus::{Bus, BusConfig, BusEvent, BusReceiver};
use crate::lease::{Claim, LeaseConfig, LeaseError, Leases, NodeId, Parking};

/// How a [`RedisCluster`] node works. [`ClusterConfig::new`] with the Redis URL; the other
/// fields have defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The Redis to use (`redis://host:port/db`).
    pub url: String,
    /// This node's id, unique in the cluster. Default: random.
    pub node: NodeId,
    /// The leases: TTL (default 10 s: a dead node's names come free within it), key prefix,
    /// command timeout.
    pub lease: LeaseConfig,
    /// The channels: prefix (keep it equal to the lease's), receive queue, pings.
    pub bus: BusConfig,
    /// How many envelopes may wait to be published; beyond, relays to other nodes are refused
    /// with `unavailable`. Default 65,536.
    pub queue: usize,
    /// How many bytes of envelopes may wait to be published (payloads and names): the memory
    /// the queue may hold, whatever the envelopes' sizes; beyond, relays to other nodes are
    /// refused with `unavailable`. Default 32 MiB.
    pub queue_bytes: usize,
    /// How many name → node entries the owner cache keeps before it starts afresh. Default
    /// 100,000.
    pub cache: usize,
    /// How long a `resume` with another node's token waits for that node to hand the session
    /// over before it is refused with `unavailable`. Default 3 s.
    pub fetch_timeout: Duration,
}

impl ClusterConfig {
    /// The defaults, on the Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ClusterConfig {
            url: url.into(),
            node: NodeId::random(),
            lease: LeaseConfig::default(),
            // 1,024 messages of at most 64 KiB: at most 64 MiB waiting for the hub.
            bus: BusConfig {
                capacity: 1024,
                ..BusConfig::default()
            },
            queue: 65_536,
            queue_bytes: 32 * 1024 * 1024,
            cache: 100_000,
            fetch_timeout: Duration::from_secs(3),
        }
    }

    /// Sets the lease TTL (and nothing else).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.lease.ttl = ttl;
        self
    }

    /// Sets the key and channel prefix of both the leases and the bus.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.lease.prefix.clone_from(&prefix);
        self.bus.prefix = prefix;
        self
    }

    /// Sets this node's id.
    pub fn with_node(mut self, node: NodeId) -> Self {
        self.node = node;
        self
    }
}

/// What the publishing task does, in order.
enum Work {
    Forward(Envelope),
    /// An envelope that arrived here for a name this node does not hold: pass it on (once).
    Reroute(Envelope),
    Release(Username, Arc<str>),
    /// A session this node handed over for the fetch `id` of node `to`: move its lease to
    /// `to`, then send it there. In the queue's order, so that what arrived here for the user
    /// after the hand-over (rerouted behind it) reaches `to` after the session.
    HandOver {
        id: u64,
        to: NodeId,
        export: SessionExport,
    },
    /// A refusal of the fetch `id` of node `to`.
    Refuse {
        id: u64,
        to: NodeId,
        code: ErrorCode,
        message: String,
    },
}

/// A fetch of this node waiting for the issuing node's reply.
struct Pending {
    conn: ConnectionId,
    last_seq: u64,
    done: oneshot::Sender<Result<(), (ErrorCode, String)>>,
}

/// The first byte of a bus payload: an envelope (with its hops, 0 or 1), [`FORGET`], or one
/// of these.
const FETCH_REQUEST: u8 = 3;
const FETCH_REPLY: u8 = 4;

/// A fetch request (`FETCH_REQUEST`): node `n` asks for the session of token `t`.
#[derive(Serialize, Deserialize)]
struct FetchRequest {
    /// The request id, for the reply.
    i: u64,
    /// The asking node (where to reply).
    n: String,
    t: String,
    l: u64,
    /// The verified name of the resuming connection, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<String>,
}

/// The reply (`FETCH_REPLY`): the session (`e`), or a refusal (`c`, `m`).
#[derive(Serialize, Deserialize)]
struct FetchReply {
    i: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<String>,
}

fn payload(kind: u8, body: &impl Serialize) -> Vec<u8> {
    let mut bytes = vec![kind];
    // Strings, numbers and raw JSON: cannot fail.
    let _ = serde_json::to_writer(&mut bytes, body);
    bytes
}

fn reply_refused(id: u64, code: ErrorCode, message: String) -> Vec<u8> {
    let reply = FetchReply {
        i: id,
        e: None,
        c: Some(code.as_str().to_owned()),
        m: Some(message),
    };
    payload(FETCH_REPLY, &reply)
}

fn reply_export(id: u64, export: &SessionExport) -> Vec<u8> {
    let raw = String::from_utf8(export.encode())
        .ok()
        .and_then(|json| RawValue::from_string(json).ok());
    let reply = FetchReply {
        i: id,
        e: raw,
        c: None,
        m: None,
    };
    payload(FETCH_REPLY, &reply)
}

const INVALID_TOKEN: &str = "unknown, spent or expired session token; log in afresh";

fn invalid_token() -> (ErrorCode, String) {
    (ErrorCode::InvalidToken, INVALID_TOKEN.to_owned())
}

fn fetch_unavailable() -> (ErrorCode, String) {
    let message = "the server that holds the session could not be reached; retry later";
    (ErrorCode::Unavailable, message.to_owned())
}

/// A parked session's value: how long it was parked for (milliseconds), a newline, the export.
/// With the key's remaining TTL that says how long it waited, on Redis's clock alone.
fn parked_value(export: &SessionExport, ttl: Duration) -> Vec<u8> {
    let mut value = format!("{}\n", ttl.as_millis()).into_bytes();
    value.extend_from_slice(&export.encode());
    value
}

/// One node's membership of a cluster on Redis. Cheap to clone; hand it to
/// [`Config::with_cluster`](signaling_core::driver::Config::with_cluster).
#[derive(Clone)]
pub struct RedisCluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    leases: Leases,
    bus: Bus,
    tx: mpsc::Sender<Work>,
    /// Taken by `start`.
    parts: Mutex<Option<(mpsc::Receiver<Work>, BusReceiver)>>,
    /// The names this node holds, with their skeletons.
    held: Mutex<HashMap<Username, Arc<str>>>,
    /// Where names live, as last seen.
    owners: Mutex<HashMap<Username, NodeId>>,
    /// This node's fetches waiting for a reply, by request id.
    pending: Mutex<HashMap<u64, Pending>>,
    next_request: AtomicU64,
    link: OnceLock<ClusterLink>,
    available: AtomicBool,
    stopped: AtomicBool,
    /// `park` has started: this node's sessions are on their way into Redis.
    parking: AtomicBool,
    /// Envelopes that arrived here for a name held elsewhere and were passed on.
    passed_on: AtomicU64,
    /// Bytes of the envelopes in the queue (what [`ClusterConfig::queue_bytes`] bounds).
    queued_bytes: AtomicUsize,
}

/// About what an envelope holds in memory.
fn envelope_bytes(envelope: &Envelope) -> usize {
    let body = match &envelope.body {
        Remote::Relay { payload, .. } => payload.get().len(),
        Remote::Probe { message, .. }
        | Remote::Echo { message, .. }
        | Remote::Refused { message, .. } => message.len(),
        _ => 0,
    };
    body + envelope.from.as_str().len() + envelope.to.as_str().len() + 64
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("node", &self.inner.config.node)
            .field("available", &self.inner.available.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A bus payload that tells a node its cached owner of a name is stale (the name follows).
const FORGET: u8 = 2;

/// A bus payload that holds several payloads for one node, in order: after this byte, each as
/// a 4-byte big-endian length and its bytes. A payload inside is never one of these.
const BATCH_OF: u8 = 5;

/// The most bytes a bus payload of [`BATCH_OF`] grows to (a single payload may be larger): what
/// the receiver's queue holds stays what it was for single envelopes ([`ClusterConfig::new`]).
const MAX_COALESCED: usize = 64 * 1024;

/// The bus payloads of one publish round trip: what goes to one node is coalesced into as few
/// payloads as fit (one `PUBLISH`, one reply and one push message for many envelopes, instead
/// of one each). Payloads to one node keep their order; across nodes the order is that of the
/// first item of each payload, unless [`seal`](Self::seal) says otherwise.
///
/// An item is one ordinary payload: one byte of hops (0 from the sender's node, 1 passed on
/// once) then the envelope, or a [`FORGET`]. A payload of one item is sent as that item alone
/// (as before coalescing); one of several is a [`BATCH_OF`].
#[derive(Default)]
struct Outgoing {
    /// The payloads, each with its node and how many items it holds.
    payloads: Vec<(NodeId, Vec<u8>, usize)>,
    /// The payload each node's next item may join (index into `payloads`).
    open: Vec<(NodeId, usize)>,
}

impl Outgoing {
    /// Appends the item `write` writes for `node`; returns the index of its payload.
    fn push(&mut self, node: &NodeId, write: impl FnOnce(&mut Vec<u8>)) -> usize {
        let at = match self.open.iter().find(|(n, _)| n == node) {
            Some(&(_, at)) => at,
            None => {
                let mut bytes = Vec::with_capacity(4096);
                bytes.push(BATCH_OF);
                self.payloads.push((node.clone(), bytes, 0));
                let at = self.payloads.len() - 1;
                self.open.push((node.clone(), at));
                at
            }
        };
        let (_, bytes, items) = &mut self.payloads[at];
        let start = bytes.len();
        bytes.extend_from_slice(&[0; 4]);
        write(bytes);
        let len = bytes.len() - start - 4;
        // An envelope is far below 4 GiB (the hub's frames are bounded).
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        bytes[start..start + 4].copy_from_slice(&len32.to_be_bytes());
        *items += 1;
        if *items > 1 && bytes.len() > MAX_COALESCED {
            // Too big with it: the item starts a payload of its own.
            let item = bytes.split_off(start);
            *items -= 1;
            self.payloads.push((node.clone(), item, 1));
            let fresh = self.payloads.len() - 1;
            self.payloads[fresh].1.insert(0, BATCH_OF);
            if let Some(open) = self.open.iter_mut().find(|(n, _)| n == node) {
                open.1 = fresh;
            }
            return fresh;
        }
        at
    }

    /// What is pushed from now on is published after everything pushed so far.
    fn seal(&mut self) {
        self.open.clear();
    }

    /// The payloads, in publishing order.
    fn finish(self) -> Vec<(NodeId, Vec<u8>)> {
        self.payloads
            .into_iter()
            .map(|(node, mut bytes, items)| {
                if items == 1 {
                    // One item: itself, without the batch byte and length.
                    bytes.drain(..5);
                }
                (node, bytes)
            })
            .collect()
    }
}

/// Writes the item of an envelope: its hops, then the envelope.
fn write_envelope(bytes: &mut Vec<u8>, hops: u8, envelope: &Envelope) {
    bytes.push(hops);
    envelope.encode_into(bytes);
}

impl RedisCluster {
    /// Connects to Redis (bounded by the command timeout) and subscribes this node's channel.
    ///
    /// # Errors
    ///
    /// [`LeaseError`] if Redis cannot be reached or the URL is not accepted.
    pub async fn connect(config: ClusterConfig) -> Result<RedisCluster, LeaseError> {
        let (bus, receiver) =
            Bus::connect(&config.url, config.node.clone(), config.bus.clone()).await?;
        let leases = bus.leases(config.lease.clone());
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        Ok(RedisCluster {
            inner: Arc::new(Inner {
                config,
                leases,
                bus,
                tx,
                parts: Mutex::new(Some((rx, receiver))),
                held: Mutex::new(HashMap::new()),
                owners: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                next_request: AtomicU64::new(1),
                link: OnceLock::new(),
                available: AtomicBool::new(true),
                stopped: AtomicBool::new(false),
                parking: AtomicBool::new(false),
                passed_on: AtomicU64::new(0),
                queued_bytes: AtomicUsize::new(0),
            }),
        })
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.inner.config.node
    }

    /// The leases (for tests and tools: who holds a name).
    pub fn leases(&self) -> &Leases {
        &self.inner.leases
    }

    /// How many envelopes arrived here for a user of another node (sent on a stale cached
    /// owner) and were passed on.
    pub fn passed_on(&self) -> u64 {
        self.inner.passed_on.load(Ordering::Relaxed)
    }

    /// How many names this node holds.
    pub fn held_names(&self) -> usize {
        lock(&self.inner.held).len()
    }
}

#[async_trait::async_trait]
impl ClusterBackend for RedisCluster {
    fn start(&self, link: ClusterLink) {
        let Some((queue, receiver)) = lock(&self.inner.parts).take() else {
            tracing::error!("RedisCluster started twice: give each hub its own");
            return;
        };
        let _ = self.inner.link.set(link);
        tokio::spawn(publish_task(Arc::clone(&self.inner), queue));
        tokio::spawn(receive_task(Arc::clone(&self.inner), receiver));
        tokio::spawn(refresh_task(Arc::clone(&self.inner)));
    }

    async fn claim(&self, name: &Username, skeleton: &str) -> ClaimOutcome {
        let leases = &self.inner.leases;
        match leases.claim(name.as_str(), skeleton).await {
            Ok(Claim::Won) => {
                lock(&self.inner.held).insert(name.clone(), Arc::from(skeleton));
                self.inner.available.store(true, Ordering::Relaxed);
                ClaimOutcome::Won
            }
            Ok(Claim::Taken(_)) => match leases.owner(name.as_str()).await {
                // Someone holds the name itself; otherwise a look-alike holds its skeleton.
                Ok(Some(owner)) if owner != self.inner.config.node => ClaimOutcome::Taken,
                Ok(_) => ClaimOutcome::LookAlike,
                Err(_) => ClaimOutcome::Taken,
            },
            Err(e) => {
                tracing::warn!(error = %e, name = name.as_str(), "claim failed");
                if e.is_unavailable() {
                    self.inner.available.store(false, Ordering::Relaxed);
                }
                ClaimOutcome::Unavailable
            }
        }
    }

    fn release(&self, name: Username, skeleton: Arc<str>) {
        lock(&self.inner.held).remove(&name);
        // Full queue: the lease is no longer refreshed and lapses within its TTL.
        let _ = self.inner.tx.try_send(Work::Release(name, skeleton));
    }

    fn forward(&self, envelope: Envelope) -> Result<(), Envelope> {
        let inner = &self.inner;
        let bytes = envelope_bytes(&envelope);
        if inner.queued_bytes.load(Ordering::Relaxed) + bytes > inner.config.queue_bytes {
            return Err(envelope);
        }
        match inner.tx.try_reserve() {
            Ok(permit) => {
                inner.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
                permit.send(Work::Forward(envelope));
                Ok(())
            }
            Err(_) => Err(envelope),
        }
    }

    fn is_available(&self) -> bool {
        self.inner.available.load(Ordering::Relaxed)
    }

    fn node_id(&self) -> &str {
        self.inner.config.node.as_str()
    }

    async fn fetch(
        &self,
        conn: ConnectionId,
        token: &SessionToken,
        last_seq: u64,
        verified: Option<&Username>,
    ) -> Result<(), (ErrorCode, String)> {
        let inner = &self.inner;
        // A token from a client: anything may be in it.
        let Some(node) = token_node(token.as_str()).filter(|n| !n.contains('\n')) else {
            return Err(invalid_token());
        };
        let node = NodeId::new(node);
        // Parked by a node that shut down?
        match inner.leases.parked(token.as_str()).await {
            Ok(Some((value, left))) => {
                return unpark(inner, conn, token, &node, &value, left, last_seq, verified).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for a parked session");
                return Err(fetch_unavailable());
            }
        }
        if node == inner.config.node {
            // Ours, and not here: spent, expired or ended.
            return Err(invalid_token());
        }
        let id = inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (done, mut reply) = oneshot::channel();
        lock(&inner.pending).insert(
            id,
            Pending {
                conn,
                last_seq,
                done,
            },
        );
        let request = FetchRequest {
            i: id,
            n: inner.config.node.as_str().to_owned(),
            t: token.as_str().to_owned(),
            l: last_seq,
            v: verified.map(|v| v.as_str().to_owned()),
        };
        let sent = inner
            .bus
            .publish(&[(node.clone(), payload(FETCH_REQUEST, &request))])
            .await;
        if !matches!(sent.as_deref(), Ok([1])) {
            // Not subscribed (dead, or cut off), or Redis unreachable.
            tracing::debug!(node = %node, "the node that issued a token cannot be asked");
            lock(&inner.pending).remove(&id);
            return Err(fetch_unavailable());
        }
        match tokio::time::timeout(inner.config.fetch_timeout, &mut reply).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(fetch_unavailable()),
            Err(_) => {
                if lock(&inner.pending).remove(&id).is_some() {
                    tracing::warn!(node = %node, "no answer to a session fetch in time");
                    return Err(fetch_unavailable());
                }
                // The reply is being handled this very moment: it says how it ended.
                reply.await.unwrap_or_else(|_| Err(fetch_unavailable()))
            }
        }
    }

    async fn park(&self, sessions: &[Evacuated]) -> Vec<bool> {
        let inner = &self.inner;
        inner.parking.store(true, Ordering::Release);
        // Not refreshed from now on (a refresh would cut their leases back to the TTL).
        {
            let mut held = lock(&inner.held);
            for s in sessions {
                held.remove(s.export.name());
            }
        }
        let values: Vec<Vec<u8>> = sessions
            .iter()
            .map(|s| parked_value(&s.export, s.grace_left))
            .collect();
        let parking: Vec<Parking<'_>> = sessions
            .iter()
            .zip(&values)
            .map(|(s, value)| Parking {
                token: s.export.token().as_str(),
                name: s.export.name().as_str(),
                skeleton: s.export.skeleton(),
                value,
                ttl: s.grace_left,
            })
            .collect();
        let kept = match inner.leases.park(&parking).await {
            Ok(kept) => kept,
            Err(e) => {
                tracing::warn!(error = %e, "cannot park the sessions: they end here");
                vec![false; sessions.len()]
            }
        };
        let mut held = lock(&inner.held);
        for (s, kept) in sessions.iter().zip(&kept) {
            if !kept {
                // Released at shutdown: their partners' nodes see them gone.
                held.insert(s.export.name().clone(), Arc::from(s.export.skeleton()));
            }
        }
        kept
    }

    async fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        let held: Vec<(Username, Arc<str>)> = lock(&self.inner.held).drain().collect();
        for (name, skeleton) in held {
            if let Err(e) = self.inner.leases.release(name.as_str(), &skeleton).await {
                tracing::warn!(error = %e, "release at shutdown failed: the lease lapses by itself");
                break;
            }
        }
    }
}

impl Inner {
    fn link(&self) -> Option<&ClusterLink> {
        self.link.get().filter(|l| l.is_alive())
    }

    fn done(&self) -> bool {
        self.stopped.load(Ordering::Relaxed) || self.link().is_none()
    }
}

/// Takes the session parked under `token` by `node` (a node that shut down) for this node,
/// and hands it to the hub for `conn`.
#[allow(clippy::too_many_arguments)]
async fn unpark(
    inner: &Inner,
    conn: ConnectionId,
    token: &SessionToken,
    node: &NodeId,
    value: &[u8],
    left: Duration,
    last_seq: u64,
    verified: Option<&Username>,
) -> Result<(), (ErrorCode, String)> {
    let Some(at) = value.iter().position(|b| *b == b'\n') else {
        return Err(invalid_token());
    };
    let (head, body) = value.split_at(at);
    let parked_for = std::str::from_utf8(head)
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(Duration::from_millis);
    let mut export = match SessionExport::decode(body.get(1..).unwrap_or_default()) {
        Ok(export) => export,
        Err(e) => {
            tracing::warn!(error = %e, "an undecodable parked session");
            return Err(invalid_token());
        }
    };
    // Checked before it is taken, so that a refusal that changes nothing (a wrong `lastSeq`)
    // leaves it parked, as a single node leaves the session; `history_lost` ends it, as
    // there (the router says so once it is installed here).
    if let Err((code, message)) = export.check_resume(last_seq, verified) {
        if code != ErrorCode::HistoryLost {
            return Err((code, message));
        }
    }
    let name = export.name().clone();
    let skeleton: Arc<str> = Arc::from(export.skeleton());
    match inner
        .leases
        .unpark(token.as_str(), name.as_str(), &skeleton, node)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err(invalid_token()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot take a parked session");
            return Err(fetch_unavailable());
        }
    }
    // How long it waited, on Redis's clock: its ring timer and back-offs ran meanwhile.
    if let Some(parked_for) = parked_for {
        export.age(parked_for.saturating_sub(left));
    }
    let Some(link) = inner.link() else {
        return Err(fetch_unavailable());
    };
    // Installed, then held: an envelope for the user that arrives in between is passed on
    // (not held here yet) and comes back once the lookup says this node, by which time the
    // session is in the router.
    link.import(Some(conn), export, last_seq);
    lock(&inner.held).insert(name, skeleton);
    Ok(())
}

/// The most envelopes one publish round trip carries.
const BATCH: usize = 1024;

/// Takes the queue in batches: owner lookups for the names not cached, one pipelined publish,
/// releases; tells the hub what could not be carried.
async fn publish_task(inner: Arc<Inner>, mut queue: mpsc::Receiver<Work>) {
    let mut work = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut work, BATCH).await > 0 {
        let Some(link) = inner.link().cloned() else {
            return;
        };
        let mut envelopes: Vec<(u8, Envelope)> = Vec::new();
        for item in work.drain(..) {
            match item {
                Work::Forward(envelope) => {
                    let bytes = envelope_bytes(&envelope);
                    inner.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                    envelopes.push((0, envelope));
                }
                Work::Reroute(envelope) => envelopes.push((1, envelope)),
                Work::Release(name, skeleton) => {
                    // A name released and claimed again meanwhile is ours again: keep it.
                    if lock(&inner.held).contains_key(&name) {
                        continue;
                    }
                    if let Err(e) = inner.leases.release(name.as_str(), &skeleton).await {
                        tracing::debug!(error = %e, "release failed: the lease lapses by itself");
                    }
                }
                Work::HandOver { id, to, export } => {
                    // What was queued before goes first.
                    if !envelopes.is_empty() {
                        publish(&inner, &link, std::mem::take(&mut envelopes)).await;
                    }
                    hand_over(&inner, &link, id, to, export).await;
                }
                Work::Refuse {
                    id,
                    to,
                    code,
                    message,
                } => {
                    let reply = reply_refused(id, code, message);
                    if let Err(e) = inner.bus.publish(&[(to, reply)]).await {
                        tracing::debug!(error = %e, "a fetch refusal was not sent");
                    }
                }
            }
        }
        if !envelopes.is_empty() {
            publish(&inner, &link, envelopes).await;
        }
    }
}

/// Sends node `to` the session this node handed over for its fetch `id`, its lease first.
///
/// Between the router letting go of the session (in the receive task, which stopped holding
/// the name at the same moment) and the lease moving here, envelopes for the user that reach
/// this node are passed on (`Work::Reroute`) behind this item: by the time their owner is
/// looked up the lease names `to` (or this node again, if the hand-over failed and the session
/// came back), and they are published after the session, on the same connection, so `to`
/// installs the session before they arrive. Other nodes' stale caches send them here until
/// then, and this node passes them on.
async fn hand_over(inner: &Inner, link: &ClusterLink, id: u64, to: NodeId, export: SessionExport) {
    let me = &inner.config.node;
    let (name, skeleton) = (export.name().clone(), Arc::<str>::from(export.skeleton()));
    let moved = inner
        .leases
        .transfer(name.as_str(), &skeleton, me, &to)
        .await;
    if let Ok(true) = moved {
        let reply = reply_export(id, &export);
        if let Ok([1]) = inner.bus.publish(&[(to.clone(), reply)]).await.as_deref() {
            tracing::debug!(name = name.as_str(), node = %to, "session handed over");
            return;
        }
        // The asking node did not get it: take the lease back (best effort).
        let _ = inner
            .leases
            .transfer(name.as_str(), &skeleton, &to, me)
            .await;
    } else {
        let reply = reply_refused(id, fetch_unavailable().0, fetch_unavailable().1);
        let _ = inner.bus.publish(&[(to, reply)]).await;
    }
    // The session comes back here, suspended, with the token it had: its client may retry.
    tracing::warn!(
        name = name.as_str(),
        "a session hand-over failed: the session stays here"
    );
    lock(&inner.held).insert(name, skeleton);
    link.import(None, export, 0);
}

async fn publish(inner: &Inner, link: &ClusterLink, envelopes: Vec<(u8, Envelope)>) {
    // Owners not cached (a rerouted envelope always looks again: the cache was wrong; and
    // where its sender is, to tell that node so).
    let missing: Vec<Username> = {
        let owners = lock(&inner.owners);
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for (hops, e) in &envelopes {
            if (*hops > 0 || !owners.contains_key(&e.to)) && seen.insert(e.to.clone()) {
                missing.push(e.to.clone());
            }
            if *hops > 0 && seen.insert(e.from.clone()) {
                missing.push(e.from.clone());
            }
        }
        missing
    };
    if !missing.is_empty() {
        match inner.leases.owners(&missing).await {
            Ok(found) => {
                let mut owners = lock(&inner.owners);
                if owners.len() + missing.len() > inner.config.cache {
                    owners.clear();
                }
                for (name, owner) in missing.iter().zip(found) {
                    match owner {
                        Some(node) => owners.insert(name.clone(), node),
                        None => owners.remove(name),
                    };
                }
            }
            Err(e) => return unavailable(inner, link, envelopes, &e),
        }
    }
    let mut outgoing = Outgoing::default();
    // Each envelope with the index of the payload it is in.
    let mut sent = Vec::with_capacity(envelopes.len());
    {
        let owners = lock(&inner.owners);
        for (hops, envelope) in envelopes {
            match owners.get(&envelope.to) {
                Some(node) => {
                    let at = outgoing.push(node, |b| write_envelope(b, hops, &envelope));
                    let stale_at = if hops > 0 {
                        owners.get(&envelope.from)
                    } else {
                        None
                    };
                    if let Some(sender_node) = stale_at.filter(|n| **n != inner.config.node) {
                        // After the envelope, so that what the sender's node sends next,
                        // straight to the new owner, cannot overtake it.
                        outgoing.seal();
                        outgoing.push(sender_node, |b| {
                            b.push(FORGET);
                            b.extend_from_slice(envelope.to.as_str().as_bytes());
                        });
                    }
                    sent.push((at, envelope));
                }
                None if hops > 0 => {
                    // Passed on and nobody holds the name: let this node's router answer
                    // (`unknown_user` back to the sender).
                    link.deliver([envelope]);
                }
                None => link.unroutable(envelope, Unroutable::UnknownUser),
            }
        }
    }
    let payloads = outgoing.finish();
    if payloads.is_empty() {
        return;
    }
    match inner.bus.publish(&payloads).await {
        Ok(received) => {
            inner.available.store(true, Ordering::Relaxed);
            for (at, envelope) in sent {
                if received.get(at).copied().unwrap_or(0) == 0 {
                    // Its node is not subscribed (dead or cut off): look again next time.
                    lock(&inner.owners).remove(&envelope.to);
                    link.unroutable(envelope, Unroutable::Unavailable);
                }
            }
        }
        Err(e) => {
            let envelopes = sent.into_iter().map(|(_, e)| (0, e)).collect();
            unavailable(inner, link, envelopes, &e);
        }
    }
}

fn unavailable(inner: &Inner, link: &ClusterLink, envelopes: Vec<(u8, Envelope)>, e: &LeaseError) {
    tracing::warn!(error = %e, count = envelopes.len(), "cannot reach Redis: messages to other nodes refused");
    if e.is_unavailable() {
        inner.available.store(false, Ordering::Relaxed);
    }
    for (_, envelope) in envelopes {
        link.unroutable(envelope, Unroutable::Unavailable);
    }
}

/// Hands what other nodes publish to the hub, in batches; passes on envelopes for names this
/// node does not hold.
async fn receive_task(inner: Arc<Inner>, mut receiver: BusReceiver) {
    let mut batch = Vec::new();
    while let Some(event) = receiver.recv().await {
        let Some(link) = inner.link().cloned() else {
            return;
        };
        let mut next = Some(event);
        // Everything already there goes in under one lock of the hub.
        while let Some(event) = next.take() {
            match event {
                BusEvent::Message(bytes) => accept(&inner, &link, &bytes, &mut batch),
                BusEvent::Disconnected | BusEvent::Lost(_) => {
                    tracing::warn!(?event, "messages from other nodes may have been missed");
                }
                BusEvent::Subscribed => tracing::info!("subscribed to this node's channel"),
            }
            if batch.len() >= BATCH {
                break;
            }
            next = futures_now(&mut receiver);
        }
        if !batch.is_empty() {
            link.deliver(batch.drain(..));
        }
    }
}

/// The next event if one is there already.
fn futures_now(receiver: &mut BusReceiver) -> Option<BusEvent> {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    let fut = std::pin::pin!(receiver.recv());
    match fut.poll(&mut cx) {
        Poll::Ready(event) => event,
        Poll::Pending => None,
    }
}

fn accept(inner: &Inner, link: &ClusterLink, bytes: &[u8], batch: &mut Vec<Envelope>) {
    let Some((&hops, body)) = bytes.split_first() else {
        return;
    };
    if hops == BATCH_OF {
        // Several payloads, in order; none of them is a batch again.
        let mut rest = body;
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
            let Some((item, tail)) = tail.split_at_checked(len) else {
                break;
            };
            if item.first() != Some(&BATCH_OF) {
                accept(inner, link, item, batch);
            }
            rest = tail;
        }
        if !rest.is_empty() {
            tracing::warn!("dropped the malformed end of a batch from the cluster channel");
        }
        return;
    }
    if hops == FORGET {
        if let Ok(name) = std::str::from_utf8(body) {
            tracing::debug!(name, "cached owner is stale");
            lock(&inner.owners).remove(name);
        }
        return;
    }
    if hops == FETCH_REQUEST || hops == FETCH_REPLY {
        // What arrived before is handled before: the session is still here for it (a
        // request), or not yet (a reply).
        if !batch.is_empty() {
            link.deliver(batch.drain(..));
        }
        if hops == FETCH_REQUEST {
            answer_fetch(inner, link, body);
        } else {
            fetched(inner, link, body);
        }
        return;
    }
    let envelope = match Envelope::decode(body) {
        Ok(envelope) => envelope,
        Err(e) => {
            tracing::warn!(error = %e, "dropped an undecodable message from the cluster channel");
            return;
        }
    };
    if let Remote::Refused {
        code: ErrorCode::UnknownUser,
        ..
    } = &envelope.body
    {
        // The sender of the refused message is not where we thought.
        lock(&inner.owners).remove(&envelope.from);
    }
    let here = lock(&inner.held).contains_key(&envelope.to);
    if !here && hops == 0 {
        // Sent on a stale cache entry: pass it on once, in order behind what is queued.
        tracing::debug!(
            to = envelope.to.as_str(),
            "not held here: passing the message on"
        );
        inner.passed_on.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = inner.tx.try_send(Work::Reroute(envelope)) {
            if let Work::Reroute(envelope) = e.into_inner() {
                batch.push(envelope);
            }
        }
        return;
    }
    batch.push(envelope);
}

/// Another node asks for the session of a token this node issued: the hub checks the resume
/// and lets go of the session; this node stops holding the name at once (so that envelopes for
/// the user that arrive from now on are passed on, behind the session) and queues the
/// hand-over (`hand_over`: the lease moves, then the session is sent).
fn answer_fetch(inner: &Inner, link: &ClusterLink, body: &[u8]) {
    let request: FetchRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(error = %e, "dropped an undecodable fetch request");
            return;
        }
    };
    if request.n.contains('\n') {
        return;
    }
    let to = NodeId::new(request.n);
    let verified = match request.v.as_deref().map(Username::new) {
        Some(Ok(name)) => Some(name),
        Some(Err(_)) => return,
        None => None,
    };
    let Some(outcome) = link.hand_over(&request.t, request.l, verified.as_ref()) else {
        return;
    };
    let work = match outcome {
        Ok(export) => {
            lock(&inner.held).remove(export.name());
            Work::HandOver {
                id: request.i,
                to,
                export,
            }
        }
        Err((ErrorCode::InvalidToken, _)) if inner.parking.load(Ordering::Acquire) => {
            // Not in the router any more, perhaps on its way into Redis this very moment:
            // the asking node looks there again when its client retries.
            let (code, message) = fetch_unavailable();
            Work::Refuse {
                id: request.i,
                to,
                code,
                message,
            }
        }
        Err((code, message)) => Work::Refuse {
            id: request.i,
            to,
            code,
            message,
        },
    };
    if let Err(e) = inner.tx.try_send(work) {
        // The queue is full: a session goes back to the router; the asking node times out.
        if let Work::HandOver { export, .. } = e.into_inner() {
            let skeleton = Arc::from(export.skeleton());
            lock(&inner.held).insert(export.name().clone(), skeleton);
            link.import(None, export, 0);
        }
    }
}

/// The issuing node's reply to a fetch of this node: the session is installed (here, in the
/// receive task, so that envelopes for the user behind it find it), or the refusal goes to
/// the waiting connection. A session whose connection stopped waiting (timed out) is kept,
/// suspended, rather than lost.
fn fetched(inner: &Inner, link: &ClusterLink, body: &[u8]) {
    let reply: FetchReply = match serde_json::from_slice(body) {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(error = %e, "dropped an undecodable fetch reply");
            return;
        }
    };
    let pending = lock(&inner.pending).remove(&reply.i);
    let outcome = match (&reply.e, reply.c.as_deref().and_then(ErrorCode::from_wire)) {
        (Some(raw), _) => match SessionExport::decode(raw.get().as_bytes()) {
            Ok(export) => {
                lock(&inner.held).insert(export.name().clone(), Arc::from(export.skeleton()));
                let (conn, last_seq) = pending
                    .as_ref()
                    .map_or((None, 0), |p| (Some(p.conn), p.last_seq));
                link.import(conn, export, last_seq);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "an undecodable session from another node");
                Err(fetch_unavailable())
            }
        },
        (None, Some(code)) => Err((code, reply.m.unwrap_or_default())),
        (None, None) => Err(fetch_unavailable()),
    };
    if let Some(pending) = pending {
        let _ = pending.done.send(outcome);
    }
}

/// Refreshes the leases, notices a cut-off, and checks the partners on other nodes.
async fn refresh_task(inner: Arc<Inner>) {
    let ttl = inner.config.lease.ttl;
    let interval = inner.config.lease.refresh_interval();
    let mut last_ok = Instant::now();
    let mut missing_before: HashSet<Username> = HashSet::new();
    loop {
        tokio::time::sleep(interval).await;
        if inner.done() {
            return;
        }
        let Some(link) = inner.link().cloned() else {
            return;
        };
        let started = Instant::now();
        let held: Vec<(Username, Arc<str>)> = lock(&inner.held)
            .iter()
            .map(|(n, s)| (n.clone(), Arc::clone(s)))
            .collect();
        let pairs: Vec<(&str, &str)> = held.iter().map(|(n, s)| (n.as_str(), &**s)).collect();
        match inner.leases.refresh(&pairs).await {
            Ok(lost) => {
                last_ok = started;
                inner.available.store(true, Ordering::Relaxed);
                link.set_detached(false);
                if !lost.is_empty() {
                    let lost: Vec<Username> =
                        lost.iter().filter_map(|n| Username::new(n).ok()).collect();
                    tracing::warn!(
                        count = lost.len(),
                        "names taken by other nodes: ending their sessions here"
                    );
                    {
                        let mut held = lock(&inner.held);
                        for name in &lost {
                            held.remove(name);
                        }
                    }
                    link.names_lost(&lost);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease refresh failed");
                if e.is_unavailable() {
                    inner.available.store(false, Ordering::Relaxed);
                }
                if started.duration_since(last_ok) >= ttl {
                    link.set_detached(true);
                }
                continue;
            }
        }
        // Partners on other nodes: gone when nobody held their name at two checks in a row
        // (one missing check may be a Redis restarted empty that its owner has not
        // re-asserted yet).
        let peers = link.remote_peers();
        if peers.is_empty() {
            missing_before.clear();
            continue;
        }
        let Ok(owners) = inner.leases.owners(&peers).await else {
            continue;
        };
        let mut missing = HashSet::new();
        let mut gone = Vec::new();
        for (name, owner) in peers.into_iter().zip(owners) {
            if owner.is_none() {
                if missing_before.contains(&name) {
                    gone.push(name);
                } else {
                    missing.insert(name);
                }
            }
        }
        missing_before = missing;
        if !gone.is_empty() {
            {
                let mut owners = lock(&inner.owners);
                for name in &gone {
                    owners.remove(name);
                }
            }
            link.peers_gone(&gone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The items of a payload as `accept` reads them.
    fn items(payload: &[u8]) -> Vec<Vec<u8>> {
        let Some((&BATCH_OF, mut rest)) = payload.split_first() else {
            return vec![payload.to_vec()];
        };
        let mut items = Vec::new();
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let (item, tail) = tail.split_at(u32::from_be_bytes(*len) as usize);
            items.push(item.to_vec());
            rest = tail;
        }
        assert!(rest.is_empty());
        items
    }

    #[test]
    fn items_for_one_node_share_a_payload_in_order() {
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        let mut out = Outgoing::default();
        assert_eq!(out.push(&a, |v| v.extend_from_slice(b"\x001")), 0);
        assert_eq!(out.push(&b, |v| v.extend_from_slice(b"\x002")), 1);
        assert_eq!(out.push(&a, |v| v.extend_from_slice(b"\x003")), 0);
        let payloads = out.finish();
        assert_eq!(payloads.len(), 2);
        assert_eq!(payloads[0].0, a);
        assert_eq!(
            items(&payloads[0].1),
            [b"\x001".to_vec(), b"\x003".to_vec()]
        );
        // One item alone: the item itself, as without coalescing.
        assert_eq!(payloads[1], (b, b"\x002".to_vec()));
    }

    #[test]
    fn a_seal_orders_what_follows_after_everything_before() {
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        let mut out = Outgoing::default();
        out.push(&b, |v| v.push(0));
        out.push(&a, |v| v.push(0));
        out.seal();
        assert_eq!(out.push(&b, |v| v.push(FORGET)), 2);
        assert_eq!(out.push(&a, |v| v.push(1)), 3);
        let nodes: Vec<_> = out.finish().into_iter().map(|(n, _)| n).collect();
        assert_eq!(nodes, [b.clone(), a.clone(), b, a]);
    }

    #[test]
    fn a_payload_stops_growing_at_the_bound() {
        let a = NodeId::new("a");
        let mut out = Outgoing::default();
        let big = vec![0u8; MAX_COALESCED / 2];
        assert_eq!(out.push(&a, |v| v.extend_from_slice(&big)), 0);
        assert_eq!(out.push(&a, |v| v.extend_from_slice(&big)), 1);
        assert_eq!(out.push(&a, |v| v.push(7)), 1);
        // Larger than the bound alone: a payload of its own all the same.
        assert_eq!(
            out.push(&a, |v| v.extend_from_slice(&[1; MAX_COALESCED])),
            2
        );
        let payloads = out.finish();
        assert_eq!(payloads.len(), 3);
        assert_eq!(payloads[0].1, big);
        assert_eq!(items(&payloads[1].1), [big.clone(), vec![7]]);
        assert_eq!(payloads[2].1, vec![1; MAX_COALESCED]);
        assert!(payloads[1].1.len() <= MAX_COALESCED);
    }
}
