//! The Redis backend of a cluster of signaling nodes (issue 11; design in `docs/cluster.md`).
//!
//! Several signaling servers share one user namespace through one Redis 7. This crate holds the
//! Redis side of that; the routing rules stay in `signaling-core`, which never talks to Redis.
//! What is here so far:
//!
//! - [`lease`]: cluster-wide unique names as leases in Redis. A node claims a name *and its
//!   confusable skeleton* at login (both or neither, so that no two look-alike names are logged
//!   in anywhere at once), refreshes every pair it holds in one script call, and releases them at
//!   logout; a crashed node's names come free within the lease's TTL. [`Leases::owners`] reads
//!   where many names live in one round trip.
//! - [`bus`]: messages between nodes over Redis pub/sub. Each node subscribes to its own channel
//!   and publishes batches to the others' in one pipelined round trip, in order; its
//!   [`BusReceiver`] is bounded and says when messages may have been missed (the subscription
//!   dropped, or the receiver was full), never losing one silently. The subscription comes back
//!   by itself after Redis does.
//! - `testing` (feature `testing`): a throwaway `redis-server` for tests.
//!
//! # Keys and channels
//!
//! | Redis name | kind | value | TTL |
//! |---|---|---|---|
//! | `<prefix>:name:<username>` | key | the owning node's id | lease TTL (10 s) |
//! | `<prefix>:skeleton:<skeleton>` | key | `<node id>\n<username>` | lease TTL (10 s) |
//! | `<prefix>:node:<node id>` | pub/sub channel | the node's messages | — |
//! | `<prefix>:session:<token>` | key | a resumable session a node that shut down left for another | what was left of its grace |
//!
//! `<prefix>` is `signaling` by default ([`LeaseConfig::prefix`], [`BusConfig::prefix`]).
//!
//! What it does *not* do yet: it is not wired into the connection driver (there is no `--redis`
//! flag); what the messages between nodes say is the next step.
//!
//! Every command is bounded by a command timeout ([`LeaseConfig::command_timeout`],
//! [`BusConfig::command_timeout`]): a dead or unreachable Redis is
//! [`LeaseError::Timeout`] or [`LeaseError::Unreachable`] within about that time, never a hang.
//!
//! ```no_run
//! use signaling_redis::bus::{Bus, BusConfig, BusEvent};
//! use signaling_redis::lease::{Claim, LeaseConfig, NodeId};
//!
//! # async fn run() -> Result<(), signaling_redis::lease::LeaseError> {
//! let url = "redis://127.0.0.1:6379/";
//! let (bus, mut events) = Bus::connect(url, NodeId::random(), BusConfig::default()).await?;
//! // The leases may share the bus's publishing connection (or `Leases::connect` their own).
//! let leases = bus.leases(LeaseConfig::default());
//!
//! // The name and its confusable skeleton (computed by the caller, TR39), both or neither:
//! match leases.claim("alice", "alice").await? {
//!     Claim::Won => { /* the login goes on */ }
//!     Claim::Taken(owner) => println!("alice, or a look-alike, is logged in on node {owner}"),
//!     _ => {}
//! }
//! // Every `refresh_interval()`, with every (name, skeleton) this node holds:
//! let lost = leases.refresh(&[("alice", "alice")]).await?;
//! assert!(lost.is_empty(), "names now held by another node: end their sessions");
//!
//! // A message for bob, on whichever node holds him:
//! if let [Some(node)] = leases.owners(&["bob"]).await?.as_slice() {
//!     let delivered = bus.publish(&[(node.clone(), b"hello bob".to_vec())]).await?;
//!     assert_eq!(delivered, [1], "0: bob's node is not subscribed (dead or cut off)");
//! }
//! // This node's own messages, and what happened to its subscription:
//! while let Some(event) = events.recv().await {
//!     match event {
//!         BusEvent::Message(payload) => { /* hand it to the router */ }
//!         BusEvent::Disconnected | BusEvent::Lost(_) => { /* maybe missed some: re-check */ }
//!         BusEvent::Subscribed => {}
//!         _ => {}
//!     }
//! }
//! leases.release("alice", "alice").await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Leases::owners`]: lease::Leases::owners
//! [`BusReceiver`]: bus::BusReceiver
//! [`LeaseConfig::prefix`]: lease::LeaseConfig::prefix
//! [`BusConfig::prefix`]: bus::BusConfig::prefix
//! [`LeaseConfig::command_timeout`]: lease::LeaseConfig::command_timeout
//! [`BusConfig::command_timeout`]: bus::BusConfig::command_timeout
//! [`LeaseError::Timeout`]: lease::LeaseError::Timeout
//! [`LeaseError::Unreachable`]: lease::LeaseError::Unreachable

pub mod bus;
pub mod cluster;
pub mod lease;
#[cfg(feature = "testing")]
pub mod testing;

/// The Redis client this crate is built on (redis-rs), so that users build a
/// [`redis::aio::ConnectionManager`] with the very same version.
pub use redis;
