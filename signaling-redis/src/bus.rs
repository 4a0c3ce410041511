//! Messages between nodes over Redis pub/sub.
//!
//! # Channels
//!
//! | channel | subscribed by | published to by |
//! |---|---|---|
//! | `<prefix>:node:<id>` | the node `<id>`, and only it | any node with a message for a user of `<id>` |
//!
//! `<prefix>` is [`BusConfig::prefix`] (default `signaling`, so `signaling:node:<id>`). Pub/sub
//! channels are not keys: the channel shares nothing with a key of the same name. A payload is
//! opaque bytes to this module; what is in it is the caller's business.
//!
//! # Delivery
//!
//! Redis pub/sub delivers at most once, to whoever is subscribed at that moment, and keeps
//! nothing: a message published while the target node's subscription is down is gone. So:
//!
//! - [`Bus::publish`] returns, for each message, how many subscribers got it: `0` means the
//!   target node is not subscribed (dead, or cut off from Redis), and the caller answers its user
//!   accordingly. It never fails silently: a Redis that cannot be reached is an error.
//! - The [`BusReceiver`] says when this node may have missed messages: [`BusEvent::Disconnected`]
//!   when the subscription connection dropped, [`BusEvent::Lost`] when messages were dropped
//!   because the receiver did not keep up. In both cases the caller re-checks what it was waiting
//!   for (a partner's call state, say). [`BusEvent::Subscribed`] says the subscription is (back)
//!   in place.
//! - Messages from one publisher to one node arrive in the order they were published: Redis
//!   keeps the order of what one connection publishes, and a [`Bus`] publishes over one
//!   connection (see [`Bus::publish`]).
//!
//! # Connections
//!
//! A [`Bus`] has two connections to Redis, both redis-rs [`ConnectionManager`]s (reconnected in
//! the background, RESP3):
//!
//! - the **subscription**: `SUBSCRIBE <prefix>:node:<id>`, and a `PING` every
//!   [`BusConfig::ping_interval`]; the messages arrive as RESP3 push messages
//!   ([`ConnectionManagerConfig::set_push_sender`]) and after a reconnection redis-rs subscribes
//!   again by itself ([`ConnectionManagerConfig::set_automatic_resubscription`]).
//! - the **publisher**: `PUBLISH` pipelines, and the lease commands if the caller wants
//!   ([`Bus::leases`]).
//!
//! Publishing does not share the subscription connection, for three reasons. One connection
//! carries one stream of replies: a batch's `PUBLISH` replies would queue behind a burst of
//! incoming messages (and the other way round) and could time out for that alone. Redis puts a
//! subscribed connection under the pub/sub output-buffer limit (`client-output-buffer-limit
//! pubsub`, 32 MB by default) and closes it when this node reads too slowly: then only the
//! subscription drops (and comes back, with a [`BusEvent::Disconnected`]), not publishing and
//! the leases with it. And the `PING` on a connection that carries nothing else tells whether
//! the subscription itself is alive. The cost is one more TCP connection per node.
//!
//! # Resubscription
//!
//! redis-rs reconnects a [`ConnectionManager`] only when a command on it fails or its connection
//! reports that it dropped, and gives up after a few attempts ([`BusConfig`] keeps them short,
//! as [`LeaseConfig::connection_manager_config`](crate::lease::LeaseConfig::connection_manager_config)
//! does): a connection that carries only a subscription would then stay down for good once Redis
//! was away for longer than those attempts. The bus's `PING` every [`BusConfig::ping_interval`]
//! is the command that starts the reconnection again, so the subscription comes back at most
//! about a ping interval after Redis does. Should redis-rs's own resubscription have failed (it
//! ignores the errors of that step), the next pings see the subscription missing and subscribe
//! again.
//!
//! A Redis that stops answering without closing the connection (frozen, or a network partition)
//! is not reported as [`BusEvent::Disconnected`]: while the TCP connection lives, nothing is
//! lost, only late; publishing fails with [`LeaseError::Timeout`] meanwhile.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig, SendError};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};
use tokio::task::AbortHandle;

use crate::lease::{LeaseConfig, LeaseError, Leases, NodeId, bounded, connection_manager_config};

/// How a [`Bus`] works. Build it with [`BusConfig::default`] and set the fields you need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BusConfig {
    /// The first part of every channel (`<prefix>:node:<id>`), so that several clusters, or
    /// tests, can share one Redis. Default `signaling`, as [`LeaseConfig::prefix`].
    pub prefix: String,
    /// The longest one Redis round trip may take before the call fails with
    /// [`LeaseError::Timeout`]: each step of [`Bus::connect`], each [`Bus::publish`], each
    /// ping. Default 1 s.
    pub command_timeout: Duration,
    /// How many events the [`BusReceiver`] holds at most. When it is full, further messages are
    /// dropped and counted, and the receiver gets a [`BusEvent::Lost`] in their place. Default
    /// 4096. At least 1. It counts events, not bytes: the size of each is what the publishing
    /// nodes put in it.
    pub capacity: usize,
    /// How often the subscription connection is pinged (see the module documentation):
    /// roughly the longest the subscription stays down after Redis is back. Default 1 s.
    pub ping_interval: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            prefix: "signaling".to_owned(),
            command_timeout: Duration::from_secs(1),
            capacity: 4096,
            ping_interval: Duration::from_secs(1),
        }
    }
}

impl BusConfig {
    /// The redis-rs settings of both connections: the same timeouts and short reconnection as
    /// [`LeaseConfig::connection_manager_config`] with this configuration's command timeout.
    fn connection_manager_config(&self) -> ConnectionManagerConfig {
        connection_manager_config(self.command_timeout)
    }
}

/// What a [`BusReceiver`] gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusEvent {
    /// Redis confirmed this node's subscription: the first event, and again each time the
    /// subscription is back after a [`Disconnected`](BusEvent::Disconnected).
    Subscribed,
    /// A payload published to this node, exactly the bytes given to [`Bus::publish`].
    Message(Vec<u8>),
    /// The subscription connection dropped (or was replaced): messages published to this node
    /// from now until the next [`Subscribed`](BusEvent::Subscribed) are missed, and some shortly
    /// before may have been. Re-check what this node was waiting for.
    Disconnected,
    /// This many events (messages, or the status events above) were dropped here because the
    /// receiver was full ([`BusConfig::capacity`]). Reported where they went missing: the events
    /// before it came before them, the events after it after them. Treat it as a
    /// [`Disconnected`](BusEvent::Disconnected) (re-check); [`Bus::is_subscribed`] tells whether
    /// the subscription is in place now.
    Lost(u64),
}

/// What the push sender and the receiver share.
#[derive(Debug, Default)]
struct Shared {
    /// Events dropped since the last [`BusEvent::Lost`] was queued or returned. Also the lock
    /// that makes "queue an event, or count it as lost" and "find the queue empty, take the
    /// count" atomic with respect to each other, so that a count is never left behind an empty
    /// queue unseen.
    pending_lost: Mutex<u64>,
    /// Every event dropped so far.
    dropped: AtomicU64,
    /// Whether the last subscription status seen was "subscribed".
    subscribed: AtomicBool,
}

impl Shared {
    fn pending_lost(&self) -> MutexGuard<'_, u64> {
        self.pending_lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The push sender of the subscription connection: turns redis-rs's push messages into
/// [`BusEvent`]s on the bounded queue of the [`BusReceiver`]. Called by redis-rs from one task,
/// for every push of the connection in order; never blocks.
struct Forward {
    tx: mpsc::Sender<BusEvent>,
    channel: Arc<[u8]>,
    shared: Arc<Shared>,
}

impl Forward {
    fn forward(&self, info: PushInfo) {
        let ours = matches!(info.data.first(), Some(Value::BulkString(c)) if **c == *self.channel);
        let event = match info.kind {
            PushKind::Message if ours => match info.data.into_iter().nth(1) {
                Some(Value::BulkString(payload)) => BusEvent::Message(payload),
                _ => return,
            },
            PushKind::Subscribe if ours => {
                if self.shared.subscribed.swap(true, Ordering::AcqRel) {
                    // Subscribed again without a Disconnection push in between: the connection
                    // was replaced without saying so, or a redundant SUBSCRIBE. Either way, tell
                    // the caller it may have missed messages (a spurious re-check is harmless, a
                    // missed one is not).
                    self.deliver(BusEvent::Disconnected);
                }
                BusEvent::Subscribed
            }
            PushKind::Disconnection => {
                if !self.shared.subscribed.swap(false, Ordering::AcqRel) {
                    return;
                }
                BusEvent::Disconnected
            }
            PushKind::Unsubscribe if ours => {
                if !self.shared.subscribed.swap(false, Ordering::AcqRel) {
                    return;
                }
                BusEvent::Disconnected
            }
            _ => return,
        };
        self.deliver(event);
    }

    /// Queues `event`, after the report of earlier losses; counts it as lost if the queue is
    /// full (or if that report does not fit either, so that nothing overtakes it).
    fn deliver(&self, event: BusEvent) {
        let mut pending = self.shared.pending_lost();
        if *pending > 0 {
            match self.tx.try_send(BusEvent::Lost(*pending)) {
                Ok(()) => *pending = 0,
                Err(TrySendError::Full(_)) => {
                    *pending += 1;
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(TrySendError::Closed(_)) => return,
            }
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(event) {
            *pending += 1;
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl AsyncPushSender for Forward {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        if self.tx.is_closed() {
            return Err(SendError);
        }
        self.forward(info);
        Ok(())
    }
}

/// The events of this node's subscription: the messages published to it, and what happened to
/// the subscription. Bounded ([`BusConfig::capacity`]); a full receiver drops messages and says
/// so ([`BusEvent::Lost`]), it never blocks Redis or the connection.
pub struct BusReceiver {
    rx: mpsc::Receiver<BusEvent>,
    shared: Arc<Shared>,
}

impl fmt::Debug for BusReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusReceiver")
            .field("queued", &self.rx.len())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl BusReceiver {
    /// The next event, waiting for one if there is none. `None` once the [`Bus`] (every clone)
    /// is dropped and every event has been returned.
    ///
    /// Cancel-safe: dropping the future loses no event.
    pub async fn recv(&mut self) -> Option<BusEvent> {
        loop {
            {
                let mut pending = self.shared.pending_lost();
                match self.rx.try_recv() {
                    Ok(event) => return Some(event),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) if *pending > 0 => {
                        return Some(BusEvent::Lost(std::mem::take(&mut *pending)));
                    }
                    Err(TryRecvError::Disconnected) => return None,
                    Err(TryRecvError::Empty) => {}
                }
            }
            // Empty, and nothing lost that is not reported: anything dropped from now on is
            // dropped behind a full queue, so this wakes up before it and the loop reports it.
            if let Some(event) = self.rx.recv().await {
                return Some(event);
            }
        }
    }

    /// How many events were dropped so far because the receiver was full (all of them are, or
    /// will be, reported by [`BusEvent::Lost`]). For metrics.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// This node's end of the bus: publishes to other nodes, and keeps its own subscription alive
/// (its messages go to the [`BusReceiver`] returned with it). Cheap to clone (one `Arc`); clones
/// share the connections and may be used concurrently. Dropping the last clone closes both
/// connections and ends the receiver.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeId,
    config: BusConfig,
    publisher: ConnectionManager,
    shared: Arc<Shared>,
    pinger: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.pinger.abort();
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("node", &self.inner.node)
            .field("config", &self.inner.config)
            .field("subscribed", &self.is_subscribed())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Connects to the Redis at `url` (`redis://host:port/db`, see [`redis::Client::open`]; the
    /// connections use RESP3 whatever the URL says, so Redis 6 or later), subscribes to this
    /// node's channel and waits until Redis confirms the subscription, then opens the publishing
    /// connection. Each of the three steps is bounded by [`BusConfig::command_timeout`]. The
    /// receiver's first event is [`BusEvent::Subscribed`].
    ///
    /// Must be called within a tokio runtime: it spawns the task that pings the subscription.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Redis`] for a URL redis-rs does not accept, or a Redis without RESP3;
    /// [`LeaseError::Timeout`] or [`LeaseError::Unreachable`] if Redis does not answer.
    ///
    /// # Panics
    ///
    /// If [`BusConfig::capacity`] is 0.
    pub async fn connect(
        url: &str,
        node: NodeId,
        config: BusConfig,
    ) -> Result<(Bus, BusReceiver), LeaseError> {
        assert!(
            config.capacity > 0,
            "BusConfig::capacity must be at least 1"
        );
        let info = url.into_connection_info().map_err(LeaseError::Redis)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client =
            redis::Client::open(info.set_redis_settings(settings)).map_err(LeaseError::Redis)?;

        let channel: Arc<[u8]> = channel(&config.prefix, &node).into();
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel(config.capacity);
        let forward = Forward {
            tx,
            channel: channel.clone(),
            shared: shared.clone(),
        };
        let subscriber_config = config
            .connection_manager_config()
            .set_push_sender(forward)
            .set_automatic_resubscription();
        let mut subscriber = bounded(
            config.command_timeout,
            ConnectionManager::new_with_config(client.clone(), subscriber_config),
        )
        .await?;
        bounded(config.command_timeout, subscriber.subscribe(&*channel)).await?;
        let publisher = bounded(
            config.command_timeout,
            ConnectionManager::new_with_config(client, config.connection_manager_config()),
        )
        .await?;

        let pinger = tokio::spawn(ping(
            subscriber,
            channel,
            shared.clone(),
            config.ping_interval,
            config.command_timeout,
        ))
        .abort_handle();
        let bus = Bus {
            inner: Arc::new(Inner {
                node,
                config,
                publisher,
                shared: shared.clone(),
                pinger,
            }),
        };
        Ok((bus, BusReceiver { rx, shared }))
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    /// The configuration this bus was built with.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// The channel of `node`: `<prefix>:node:<id>` (as bytes).
    pub fn channel(&self, node: &NodeId) -> Vec<u8> {
        channel(&self.inner.config.prefix, node)
    }

    /// Whether this node's subscription is in place, as far as the subscription connection has
    /// told (it is not while a [`BusEvent::Disconnected`] has not been followed by a
    /// [`BusEvent::Subscribed`]).
    pub fn is_subscribed(&self) -> bool {
        self.inner.shared.subscribed.load(Ordering::Acquire)
    }

    /// Name leases for this node over the bus's publishing connection (no connection of their
    /// own). The connection's timeouts are the bus's; `config` gives the leases' TTL, prefix and
    /// the bound of each lease call.
    pub fn leases(&self, config: LeaseConfig) -> Leases {
        Leases::new(
            self.inner.publisher.clone(),
            self.inner.node.clone(),
            config,
        )
    }

    /// Publishes each payload of `batch` to its node's channel, in order, in one pipelined round
    /// trip bounded by [`BusConfig::command_timeout`], and returns for each how many subscribers
    /// received it: 1 when the node is subscribed, 0 when it is not (dead, or cut off from
    /// Redis). An empty batch makes no round trip.
    ///
    /// Order: Redis carries out one connection's commands in the order they arrive, and delivers
    /// each `PUBLISH` to the subscribers before the next command. All of a bus's publishing goes
    /// over its one publishing connection, and a batch is written to it as one piece (redis-rs
    /// never interleaves two pipelines on one connection), so messages from this node to one
    /// node arrive in the order of the batch, and of the calls when each call is made after the
    /// previous one returned.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached. None, some or all of the
    /// batch may have been delivered then (a timed-out batch may still be carried out later, in
    /// order): the caller treats every message of the batch as possibly lost.
    pub async fn publish<M: AsRef<[u8]>>(
        &self,
        batch: &[(NodeId, M)],
    ) -> Result<Vec<u64>, LeaseError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let mut pipe = redis::pipe();
        for (node, payload) in batch {
            pipe.cmd("PUBLISH")
                .arg(self.channel(node))
                .arg(payload.as_ref());
        }
        let mut conn = inner.publisher.clone();
        let counts: Vec<u64> =
            bounded(inner.config.command_timeout, pipe.query_async(&mut conn)).await?;
        Ok(counts)
    }
}

/// `<prefix>:node:<id>`.
fn channel(prefix: &str, node: &NodeId) -> Vec<u8> {
    let id = node.as_str().as_bytes();
    let mut channel = Vec::with_capacity(prefix.len() + 6 + id.len());
    channel.extend_from_slice(prefix.as_bytes());
    channel.extend_from_slice(b":node:");
    channel.extend_from_slice(id);
    channel
}

/// Pings the subscription connection every `interval`: a failed ping restarts redis-rs's
/// reconnection (which resubscribes), and a subscription still missing after two good pings in a
/// row (redis-rs's resubscription failed) is subscribed again here.
async fn ping(
    mut conn: ConnectionManager,
    channel: Arc<[u8]>,
    shared: Arc<Shared>,
    interval: Duration,
    timeout: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut unsubscribed = 0u32;
    loop {
        ticks.tick().await;
        let pong: Result<(), LeaseError> =
            bounded(timeout, redis::cmd("PING").query_async(&mut conn)).await;
        if pong.is_err() || shared.subscribed.load(Ordering::Acquire) {
            unsubscribed = 0;
            continue;
        }
        unsubscribed += 1;
        if unsubscribed >= 2 {
            let _ = bounded(timeout, conn.subscribe(&*channel)).await;
            unsubscribed = 0;
        }
    }
}
