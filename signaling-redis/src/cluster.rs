//! The cluster backend on Redis: [`RedisCluster`] implements the driver's
//! [`ClusterBackend`](signaling_core::driver::cluster::ClusterBackend) with the name leases of
//! [`lease`](crate::lease) and the per-node channels of [`bus`](crate::bus).
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
//!   pipelined round trip. One task and one connection keep the order of the envelopes. An
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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use signaling_core::cluster::{Envelope, Remote, Unroutable};
use signaling_core::driver::cluster::{ClusterBackend, ClusterLink};
use signaling_core::{ClaimOutcome, ErrorCode, Username};
use tokio::sync::mpsc;

use crate::bus::{Bus, BusConfig, BusEvent, BusReceiver};
use crate::lease::{Claim, LeaseConfig, LeaseError, Leases, NodeId};

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
    link: OnceLock<ClusterLink>,
    available: AtomicBool,
    stopped: AtomicBool,
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

/// The bus payload of an envelope: one byte of hops (0 from the sender's node, 1 passed on
/// once), then the envelope. (A first byte of [`FORGET`] is a cache invalidation instead.)
fn frame(hops: u8, envelope: &Envelope) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(128);
    bytes.push(hops);
    bytes.extend_from_slice(&envelope.encode());
    bytes
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
                link: OnceLock::new(),
                available: AtomicBool::new(true),
                stopped: AtomicBool::new(false),
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
            }
        }
        if !envelopes.is_empty() {
            publish(&inner, &link, envelopes).await;
        }
    }
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
    let mut batch = Vec::with_capacity(envelopes.len());
    // The envelope of each entry of the batch (`None` for a cache invalidation).
    let mut sent = Vec::with_capacity(envelopes.len());
    {
        let owners = lock(&inner.owners);
        for (hops, envelope) in envelopes {
            match owners.get(&envelope.to) {
                Some(node) => {
                    batch.push((node.clone(), frame(hops, &envelope)));
                    let stale_at = owners.get(&envelope.from).filter(|_| hops > 0);
                    if let Some(sender_node) = stale_at.filter(|n| **n != inner.config.node) {
                        // After the envelope, so that what the sender's node sends next,
                        // straight to the new owner, cannot overtake it.
                        let mut forget = vec![FORGET];
                        forget.extend_from_slice(envelope.to.as_str().as_bytes());
                        batch.push((sender_node.clone(), forget));
                        sent.push(Some(envelope));
                        sent.push(None);
                    } else {
                        sent.push(Some(envelope));
                    }
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
    if batch.is_empty() {
        return;
    }
    match inner.bus.publish(&batch).await {
        Ok(received) => {
            inner.available.store(true, Ordering::Relaxed);
            for (envelope, count) in sent.into_iter().zip(received) {
                let Some(envelope) = envelope else { continue };
                if count == 0 {
                    // Its node is not subscribed (dead or cut off): look again next time.
                    lock(&inner.owners).remove(&envelope.to);
                    link.unroutable(envelope, Unroutable::Unavailable);
                }
            }
        }
        Err(e) => {
            let envelopes = sent.into_iter().flatten().map(|e| (0, e)).collect();
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
                BusEvent::Message(bytes) => accept(&inner, &bytes, &mut batch),
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

fn accept(inner: &Inner, bytes: &[u8], batch: &mut Vec<Envelope>) {
    let Some((&hops, body)) = bytes.split_first() else {
        return;
    };
    if hops == FORGET {
        if let Ok(name) = std::str::from_utf8(body) {
            tracing::debug!(name, "cached owner is stale");
            lock(&inner.owners).remove(name);
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
