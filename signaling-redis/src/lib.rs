//! The Redis backend of a cluster of signaling nodes (issue 11; design in `docs/cluster.md`).
//!
//! Several signaling servers share one user namespace through one Redis 7. This crate holds the
//! Redis side of that; the routing rules stay in `signaling-core`, which never talks to Redis.
//! What is here so far:
//!
//! - [`lease`]: cluster-wide unique names as leases in Redis. A node claims a name at login,
//!   refreshes every name it holds in one script call, and releases it at logout; a crashed node's
//!   names come free within the lease's TTL.
//! - `testing` (feature `testing`): a throwaway `redis-server` for tests.
//!
//! What it does *not* do yet: it is not wired into the connection driver (there is no `--redis`
//! flag), and messages between nodes (pub/sub) are the next step.
//!
//! Every command is bounded by [`LeaseConfig::command_timeout`](lease::LeaseConfig::command_timeout):
//! a dead or unreachable Redis is [`LeaseError::Timeout`](lease::LeaseError::Timeout) or
//! [`LeaseError::Unreachable`](lease::LeaseError::Unreachable) within about that time, never a
//! hang.
//!
//! ```no_run
//! use signaling_redis::lease::{Claim, LeaseConfig, Leases, NodeId};
//!
//! # async fn run() -> Result<(), signaling_redis::lease::LeaseError> {
//! let leases = Leases::connect("redis://127.0.0.1:6379/", NodeId::random(), LeaseConfig::default()).await?;
//! // The name and its confusable skeleton (computed by the caller, TR39), both or neither:
//! match leases.claim("alice", "alice").await? {
//!     Claim::Won => { /* the login goes on */ }
//!     Claim::Taken(owner) => println!("alice is logged in on node {owner}"),
//!     _ => {}
//! }
//! // Every `refresh_interval()`, with every (name, skeleton) this node holds:
//! let lost = leases.refresh(&[("alice", "alice")]).await?;
//! assert!(lost.is_empty(), "names now held by another node: end their sessions");
//! leases.release("alice", "alice").await?;
//! # Ok(())
//! # }
//! ```

pub mod bus;
pub mod lease;
#[cfg(feature = "testing")]
pub mod testing;

/// The Redis client this crate is built on (redis-rs), so that users build a
/// [`redis::aio::ConnectionManager`] with the very same version.
pub use redis;
