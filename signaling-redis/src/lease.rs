//! Cluster-wide unique names: each logged-in name is a lease in Redis held by one node.
//!
//! # Keys
//!
//! | key | value | TTL |
//! |---|---|---|
//! | `<prefix>:name:<username>` | the owning node's [`NodeId`] | [`LeaseConfig::ttl`] |
//!
//! `<prefix>` is [`LeaseConfig::prefix`] (default `signaling`, so `signaling:name:alice`). The
//! username is put into the key as its UTF-8 bytes, unchanged (the router has NFC-normalized it
//! already); Redis keys are binary-safe, so any name is a valid key, `:` included.
//!
//! # The lease
//!
//! - [`Leases::claim`] takes a name only if no node holds it (atomically, on the Redis side).
//! - [`Leases::refresh`] extends the names this node still holds, all in one script call per
//!   batch of [`REFRESH_BATCH`] names. Call it every [`LeaseConfig::refresh_interval`] (a third
//!   of the TTL) with every name the node holds: a live node that reaches Redis never loses a
//!   name. A name whose key is missing (Redis restarted empty, or the lease ran out and nobody
//!   took it) is set again for this node ("re-assert"); only names now held by *another* node are
//!   reported lost.
//! - [`Leases::release`] deletes a name only if this node still holds it.
//! - A node that dies without releasing (`kill -9`) stops refreshing: its names come free at most
//!   one TTL (default 10 s) after its last successful refresh.
//!
//! A node cut off from Redis for longer than the TTL may have lost names without being told
//! (another node could have claimed one and logged out again meanwhile): what to do about
//! sessions then is the caller's decision, and [`LeaseError::is_unavailable`] tells it that
//! Redis could not be reached.
//!
//! # Timeouts
//!
//! Every call is one or more Redis round trips, each bounded by
//! [`LeaseConfig::command_timeout`] (default 1 s) with [`tokio::time::timeout`], on top of the
//! response and connection timeouts of the connection itself. This matters because redis-rs's
//! [`ConnectionManager`] makes a command wait for the background reconnection (with its
//! exponential back-off, several seconds in all) once it has seen the connection drop: without the
//! outer bound a claim against a dead Redis would hang for as long as the reconnection tries.
//! [`Leases::connect`] also shortens that reconnection
//! ([`LeaseConfig::connection_manager_config`]), so that against a dead Redis (connection
//! refused) a call fails with [`LeaseError::Unreachable`] in a few hundred milliseconds rather
//! than using up its timeout; an unreachable host (no answer at all) takes the timeout.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};

/// The most names [`Leases::refresh`] sends in one script call: a script blocks Redis while it
/// runs, so a node holding many names refreshes them in several short calls (about a millisecond
/// each) rather than one long one.
pub const REFRESH_BATCH: usize = 1000;

/// Claim a name: set it for this node if absent, extend it if this node holds it already.
/// `KEYS[1]` the name's key, `ARGV[1]` the node id, `ARGV[2]` the TTL in milliseconds.
/// Returns the owner after the call.
const CLAIM: &str = r"
local owner = redis.call('GET', KEYS[1])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
  return ARGV[1]
end
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return owner
";

/// Refresh: for each key, extend it if still ours, set it again if missing (re-assert), and
/// report it if another node holds it. `ARGV[1]` the node id, `ARGV[2]` the TTL in milliseconds.
/// Returns the 1-based indexes in `KEYS` of the names held by another node.
const REFRESH: &str = r"
local lost = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif not owner then
    redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2])
  else
    lost[#lost + 1] = i
  end
end
return lost
";

/// Release: delete the key only if this node holds it. `ARGV[1]` the node id. Returns 1 if
/// deleted, 0 if not ours (or absent).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Which node holds a lease: unique per process. A process that restarts takes a new one
/// ([`NodeId::random`]), so that it never mistakes the leases of its previous life for its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// A node id given by the caller (for example from configuration, or a test). It is stored
    /// in Redis as its UTF-8 bytes; two live nodes must never share one.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// 128 random bits from the operating system's CSPRNG, as 32 lowercase hex digits. Should the
    /// OS source fail (it does not on any supported platform once booted), the bits come from the
    /// standard library's randomly keyed SipHash of the process id and the time instead.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            use std::hash::{BuildHasher, Hasher};
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            for (i, half) in bytes.chunks_exact_mut(8).enumerate() {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u32(std::process::id());
                h.write_u128(nanos);
                h.write_usize(i);
                half.copy_from_slice(&h.finish().to_be_bytes());
            }
        }
        let mut hex = String::with_capacity(32);
        for b in bytes {
            use fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
        }
        Self(hex.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How leases are kept. Build it with [`LeaseConfig::default`] and set the fields you need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeaseConfig {
    /// How long a lease lasts without a refresh: the longest a dead node's names stay taken.
    /// Default 10 s. Shorter frees names faster after a crash but refreshes more often and
    /// tolerates shorter stalls (of the node or of Redis) before a live node's names lapse.
    /// Rounded to whole milliseconds, at least 1 ms.
    pub ttl: Duration,
    /// The first part of every key (`<prefix>:name:<username>`), so that several clusters, or
    /// tests, can share one Redis. Default `signaling`.
    pub prefix: String,
    /// The longest one Redis round trip may take before the call fails with
    /// [`LeaseError::Timeout`]. Default 1 s. Keep it well under [`refresh_interval`]
    /// (a third of the TTL).
    ///
    /// [`refresh_interval`]: LeaseConfig::refresh_interval
    pub command_timeout: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            prefix: "signaling".to_owned(),
            command_timeout: Duration::from_secs(1),
        }
    }
}

impl LeaseConfig {
    /// How often to call [`Leases::refresh`]: a third of the TTL, so that a refresh may fail
    /// (or be late) once without the node's leases lapsing.
    pub fn refresh_interval(&self) -> Duration {
        self.ttl / 3
    }

    /// The redis-rs settings [`Leases::connect`] uses for its connection: connection and
    /// response timeouts of [`command_timeout`](LeaseConfig::command_timeout), and a short
    /// reconnection (three attempts within about 300 ms, back-off from 50 ms with jitter) instead of redis-rs's default of seven
    /// over several seconds. While the connection reconnects, every command waits for it; with
    /// the default a command against a dead Redis would use up its whole timeout waiting, with
    /// this one it fails fast ([`LeaseError::Unreachable`], `Connection refused`) and the next
    /// command starts a new reconnection, so Redis is found again by the first command after it
    /// is back. A blip shorter than the attempts is not seen at all. For callers that build
    /// their own [`ConnectionManager`] and pass it to [`Leases::new`].
    pub fn connection_manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.command_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_number_of_retries(2)
            .set_max_delay(self.command_timeout)
    }

    fn ttl_millis(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// The outcome of [`Leases::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// This node holds the name now, for a full TTL. Also the answer when this node held it
    /// already (its lease is extended): a node asks again only when it lost track of an earlier
    /// claim, for example one whose reply timed out after Redis had set the key.
    Won,
    /// Another node holds the name (this one).
    Taken(NodeId),
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Redis did not answer within [`LeaseConfig::command_timeout`]. The command may or may not
    /// have been carried out.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection to Redis failed or dropped (refused, reset, closed, still reconnecting,
    /// or Redis loading or failing over). The command may have been carried out if the
    /// connection dropped after sending it.
    #[error("Redis is unreachable: {0}")]
    Unreachable(#[source] RedisError),
    /// Redis answered with an error, or with a reply of the wrong type (a bug, or a key of ours
    /// overwritten by something else).
    #[error("Redis error: {0}")]
    Redis(#[source] RedisError),
}

impl LeaseError {
    /// Whether Redis could not be reached ([`Timeout`](LeaseError::Timeout) or
    /// [`Unreachable`](LeaseError::Unreachable)): a login answers `unavailable`, and the next
    /// refresh tries again.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Unreachable(_))
    }

    fn from_redis(e: RedisError) -> Self {
        let unreachable = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
            || matches!(
                e.kind(),
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::ReadOnly
                )
            );
        if unreachable {
            Self::Unreachable(e)
        } else {
            Self::Redis(e)
        }
    }
}

/// The name leases of one node, over a shared [`ConnectionManager`]. Cheap to clone (one `Arc`);
/// clones share the connection and may be used concurrently.
#[derive(Clone)]
pub struct Leases {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    node: NodeId,
    config: LeaseConfig,
    claim: Script,
    refresh: Script,
    release: Script,
}

impl fmt::Debug for Leases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leases")
            .field("node", &self.inner.node)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Leases {
    /// Leases for `node` over an existing connection (built, for example, with
    /// [`LeaseConfig::connection_manager_config`]).
    pub fn new(conn: ConnectionManager, node: NodeId, config: LeaseConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn,
                node,
                config,
                claim: Script::new(CLAIM),
                refresh: Script::new(REFRESH),
                release: Script::new(RELEASE),
            }),
        }
    }

    /// Connects to the Redis at `url` (`redis://host:port/db`, see [`redis::Client::open`]) and
    /// waits for the first connection, at most [`LeaseConfig::command_timeout`]. After that the
    /// connection reconnects by itself whenever it drops.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Redis`] for a URL redis-rs does not accept; [`LeaseError::Timeout`] or
    /// [`LeaseError::Unreachable`] if Redis does not answer.
    pub async fn connect(url: &str, node: NodeId, config: LeaseConfig) -> Result<Self, LeaseError> {
        let client = redis::Client::open(url).map_err(LeaseError::Redis)?;
        let connecting =
            ConnectionManager::new_with_config(client, config.connection_manager_config());
        let conn = bounded(config.command_timeout, connecting).await?;
        Ok(Self::new(conn, node, config))
    }

    /// This node's id: the value of the keys it holds.
    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    /// The configuration these leases were built with.
    pub fn config(&self) -> &LeaseConfig {
        &self.inner.config
    }

    /// The Redis key of `name`: `<prefix>:name:<name>` (as bytes).
    pub fn key(&self, name: &str) -> Vec<u8> {
        let prefix = self.inner.config.prefix.as_bytes();
        let mut key = Vec::with_capacity(prefix.len() + 6 + name.len());
        key.extend_from_slice(prefix);
        key.extend_from_slice(b":name:");
        key.extend_from_slice(name.as_bytes());
        key
    }

    /// Claims `name` for this node, atomically: [`Claim::Won`] if no node held it (or this one
    /// did), [`Claim::Taken`] with the holder otherwise. One Redis round trip.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached; the name may then have been
    /// set for this node even so (the reply was lost): release it, or claim it again, which
    /// answers `Won`.
    pub async fn claim(&self, name: &str) -> Result<Claim, LeaseError> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let mut call = inner.claim.key(self.key(name));
        call.arg(inner.node.as_str()).arg(inner.config.ttl_millis());
        let owner: Vec<u8> =
            bounded(inner.config.command_timeout, call.invoke_async(&mut conn)).await?;
        if owner == inner.node.as_str().as_bytes() {
            Ok(Claim::Won)
        } else {
            Ok(Claim::Taken(NodeId::new(String::from_utf8_lossy(&owner))))
        }
    }

    /// Refreshes the leases of `names` (every name this node holds): extends those still held
    /// by this node, sets again those whose key is missing (re-assert, as after Redis restarted
    /// empty), and returns, in the order given, the names that another node holds now. Those are
    /// lost: end their sessions here. One script call per [`REFRESH_BATCH`] names, each bounded
    /// by the command timeout.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached; the batches before the
    /// failing one were refreshed.
    pub async fn refresh<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<String>, LeaseError> {
        let inner = &self.inner;
        let mut lost = Vec::new();
        for batch in names.chunks(REFRESH_BATCH) {
            let mut conn = inner.conn.clone();
            let mut call = inner.refresh.prepare_invoke();
            for name in batch {
                call.key(self.key(name.as_ref()));
            }
            call.arg(inner.node.as_str()).arg(inner.config.ttl_millis());
            let indexes: Vec<usize> =
                bounded(inner.config.command_timeout, call.invoke_async(&mut conn)).await?;
            for i in indexes {
                // Lua indexes from 1; anything out of range would be a script bug: skip it.
                if let Some(name) = i.checked_sub(1).and_then(|i| batch.get(i)) {
                    lost.push(name.as_ref().to_owned());
                }
            }
        }
        Ok(lost)
    }

    /// Releases `name` if this node holds it: `true` if it did (the key is deleted), `false` if
    /// the name was free or held by another node (left as it is). One Redis round trip.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached: the lease then runs out by
    /// itself within the TTL, since nobody refreshes it.
    pub async fn release(&self, name: &str) -> Result<bool, LeaseError> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let mut call = inner.release.key(self.key(name));
        call.arg(inner.node.as_str());
        let deleted: i64 =
            bounded(inner.config.command_timeout, call.invoke_async(&mut conn)).await?;
        Ok(deleted == 1)
    }

    /// Which node holds `name` now, if any. One Redis round trip.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached.
    pub async fn owner(&self, name: &str) -> Result<Option<NodeId>, LeaseError> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.key(name));
        let owner: Option<Vec<u8>> =
            bounded(inner.config.command_timeout, get.query_async(&mut conn)).await?;
        Ok(owner.map(|owner| NodeId::new(String::from_utf8_lossy(&owner))))
    }
}

/// Runs one Redis call, bounded by `limit`.
async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, LeaseError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(LeaseError::from_redis),
        Err(_elapsed) => Err(LeaseError::Timeout(limit)),
    }
}
