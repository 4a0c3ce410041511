//! Cluster-wide unique names: each logged-in name is a lease in Redis held by one node, together
//! with its confusable skeleton, so that no two look-alike names are logged in at once anywhere.
//!
//! # Keys
//!
//! | key | value | TTL |
//! |---|---|---|
//! | `<prefix>:name:<username>` | the owning node's [`NodeId`] | [`LeaseConfig::ttl`] |
//! | `<prefix>:skeleton:<skeleton>` | `<node id>\n<username>`: the node, a newline, the name that holds it | [`LeaseConfig::ttl`] |
//! | `<prefix>:session:<token>` | a resumable session a node that shut down left for another ([`Leases::park`]) | what was left of its grace |
//!
//! `<prefix>` is [`LeaseConfig::prefix`] (default `signaling`, so `signaling:name:alice` and
//! `signaling:skeleton:alice`). The username and the skeleton are put into the keys as their
//! UTF-8 bytes, unchanged (the router has NFC-normalized the name and computed its skeleton, TR39,
//! already: this crate never computes a skeleton); Redis keys are binary-safe, so any name is a
//! valid key, `:` included. The skeleton key names the *name* that holds it, not only the node, so
//! that a node can tell its own lease of `alice` from its own lease of a look-alike of `alice`
//! (node ids never contain a newline, so the value splits unambiguously at the first one).
//!
//! # The lease
//!
//! A name and its skeleton are claimed, refreshed and released together, in one script call.
//!
//! - [`Leases::claim`] takes a name only if no node holds it and no *other* name holds its
//!   skeleton (atomically, on the Redis side): both keys are set, or neither. A look-alike held by
//!   this very node is taken too (the caller gets [`Claim::Taken`] with its own id).
//! - [`Leases::refresh`] extends the (name, skeleton) pairs this node still holds, all in one
//!   script call per batch of [`REFRESH_BATCH`] pairs. Call it every
//!   [`LeaseConfig::refresh_interval`] (a third of the TTL) with every pair the node holds: a live
//!   node that reaches Redis never loses a name. A key that is missing (Redis restarted empty, or
//!   the lease ran out and nobody took it) is set again for this node ("re-assert"); only names
//!   whose name key or skeleton key is now held by *another* node (or, for the skeleton, another
//!   name) are reported lost, and neither of their keys is touched.
//! - [`Leases::release`] deletes each of the two keys only if this node still holds it (for this
//!   name).
//! - A node that dies without releasing (`kill -9`) stops refreshing: its names and skeletons come
//!   free at most one TTL (default 10 s) after its last successful refresh.
//! - [`Leases::owner`] and [`Leases::owners`] read which node holds names (a node's cache of where
//!   names live; a plain read, not a lease).
//! - [`Leases::transfer`] moves a name and its skeleton from one node to another (a resumable
//!   session resumed on another node), only if `from` holds them or nobody does.
//! - [`Leases::park`] keeps the sessions of a node that shuts down, with their leases, for the
//!   rest of their grace; [`Leases::parked`] reads one, [`Leases::unpark`] takes it (and its
//!   lease) for the node that resumes it, atomically, so that only one node ever does.
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

/// The most (name, skeleton) pairs [`Leases::refresh`] sends in one script call: a script
/// blocks Redis while it runs, so a node holding many names refreshes them in several short calls
/// (about a millisecond each) rather than one long one.
pub const REFRESH_BATCH: usize = 1000;

/// Claim a name and its skeleton, both or neither. `KEYS[1]` the name's key, `KEYS[2]` the
/// skeleton's key, `ARGV[1]` the node id, `ARGV[2]` the TTL in milliseconds, `ARGV[3]` the
/// skeleton key's value for this claim (`<node>\n<name>`).
/// Returns `{1, node}` when won (both keys set or extended), `{0, holder}` when taken: the node
/// holding the name key if another node does, else the node holding the skeleton key for another
/// name (possibly this node: a look-alike of its own).
const CLAIM: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return {0, owner}
end
local skeleton = redis.call('GET', KEYS[2])
if skeleton and skeleton ~= ARGV[3] then
  local newline = string.find(skeleton, '\n', 1, true)
  if newline then
    return {0, string.sub(skeleton, 1, newline - 1)}
  end
  return {0, skeleton}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return {1, ARGV[1]}
";

/// Refresh: `KEYS` are pairs (name key, skeleton key), `ARGV[1]` the node id, `ARGV[2]` the TTL
/// in milliseconds, `ARGV[2 + i]` the skeleton value of pair `i`. For each pair: if each key is
/// missing or ours (for this name), set both again for a full TTL (extends them, and re-asserts a
/// missing one); otherwise leave both alone and report the pair. Returns the 1-based indexes of
/// the pairs reported (held by another node, or the skeleton by another name).
const REFRESH: &str = r"
local lost = {}
for i = 1, #KEYS / 2 do
  local name_key, skeleton_key, value = KEYS[2 * i - 1], KEYS[2 * i], ARGV[2 + i]
  local owner = redis.call('GET', name_key)
  local skeleton = redis.call('GET', skeleton_key)
  if (not owner or owner == ARGV[1]) and (not skeleton or skeleton == value) then
    redis.call('SET', name_key, ARGV[1], 'PX', ARGV[2])
    redis.call('SET', skeleton_key, value, 'PX', ARGV[2])
  else
    lost[#lost + 1] = i
  end
end
return lost
";

/// Release: delete each key only if it is still ours. `KEYS[1]` the name key, `KEYS[2]` the
/// skeleton key, `ARGV[1]` the node id, `ARGV[2]` the skeleton value. Returns how many keys were
/// deleted (0 to 2).
const RELEASE: &str = r"
local deleted = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  deleted = deleted + redis.call('DEL', KEYS[1])
end
if redis.call('GET', KEYS[2]) == ARGV[2] then
  deleted = deleted + redis.call('DEL', KEYS[2])
end
return deleted
";

/// Transfer: `KEYS[1]` the name key, `KEYS[2]` the skeleton key; `ARGV[1]` the node giving it,
/// `ARGV[2]` the node taking it, `ARGV[3]` the TTL in milliseconds, `ARGV[4]` and `ARGV[5]` the
/// skeleton key's value for each (`<node>\n<name>`). Sets both keys to the taker if each is held
/// by the giver, or by the taker already (a retry), or by nobody; otherwise touches neither.
/// Returns 1 when moved, 0 when not.
const TRANSFER: &str = r"
local owner = redis.call('GET', KEYS[1])
local skeleton = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] and owner ~= ARGV[2] then
  return 0
end
if skeleton and skeleton ~= ARGV[4] and skeleton ~= ARGV[5] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[3])
return 1
";

/// Park: `KEYS` are triples (name key, skeleton key, session key), `ARGV[1]` the node id, then
/// per triple `i` the skeleton value (`ARGV[3i - 1]`), the TTL in milliseconds (`ARGV[3i]`) and
/// the session (`ARGV[3i + 1]`). For each triple whose name and skeleton keys are this node's
/// (for this name) or missing: sets both for the TTL, and the session key. Returns the 1-based
/// indexes of the triples kept.
const PARK: &str = r"
local kept = {}
for i = 1, #KEYS / 3 do
  local name_key, skeleton_key, session_key = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local value, ttl, session = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local owner = redis.call('GET', name_key)
  local skeleton = redis.call('GET', skeleton_key)
  if (not owner or owner == ARGV[1]) and (not skeleton or skeleton == value) then
    redis.call('SET', name_key, ARGV[1], 'PX', ttl)
    redis.call('SET', skeleton_key, value, 'PX', ttl)
    redis.call('SET', session_key, session, 'PX', ttl)
    kept[#kept + 1] = i
  end
end
return kept
";

/// Unpark: `KEYS[1]` the session key, `KEYS[2]` the name key, `KEYS[3]` the skeleton key;
/// `ARGV` as for [`TRANSFER`]. Deletes the session key if it exists and moves the lease as
/// [`TRANSFER`] does. Returns 1 when the session was there and the lease moved, 0 when the
/// session was gone (another node took it, or it expired), -1 when it was there but another
/// node holds its name (it is deleted: it cannot be resumed).
const UNPARK: &str = r"
if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
local owner = redis.call('GET', KEYS[2])
local skeleton = redis.call('GET', KEYS[3])
if owner and owner ~= ARGV[1] and owner ~= ARGV[2] then
  return -1
end
if skeleton and skeleton ~= ARGV[4] and skeleton ~= ARGV[5] then
  return -1
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[3])
return 1
";

/// The most sessions [`Leases::park`] puts into one script call (a script blocks Redis while it
/// runs; each session may carry up to its history's bound).
pub const PARK_BATCH: usize = 100;

/// A session for [`Leases::park`]: its token, name and skeleton, the bytes to keep, and for how
/// long.
#[derive(Debug, Clone, Copy)]
pub struct Parking<'a> {
    /// The token a resume will name (the session key is `<prefix>:session:<token>`).
    pub token: &'a str,
    /// The session's name (its lease is kept as long as the session).
    pub name: &'a str,
    /// The name's skeleton.
    pub skeleton: &'a str,
    /// What to keep (opaque to this module).
    pub value: &'a [u8],
    /// How long (rounded to milliseconds, at least 1 ms).
    pub ttl: Duration,
}

/// Which node holds a lease: unique per process. A process that restarts takes a new one
/// ([`NodeId::random`]), so that it never mistakes the leases of its previous life for its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// A node id given by the caller (for example from configuration, or a test). It is stored
    /// in Redis as its UTF-8 bytes; two live nodes must never share one.
    ///
    /// # Panics
    ///
    /// If `id` contains a newline: the value of a skeleton key is `<node id>\n<name>`, which
    /// splits at its first newline.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        let id = id.into();
        assert!(!id.contains('\n'), "a node id contains a newline: {id:?}");
        Self(id)
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
    /// The first part of every key (`<prefix>:name:<username>`,
    /// `<prefix>:skeleton:<skeleton>`), so that several clusters, or tests, can share one Redis.
    /// Default `signaling`.
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
        connection_manager_config(self.command_timeout)
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
    /// This node holds the name and its skeleton now, for a full TTL. Also the answer when this
    /// node held both already for this name (the leases are extended): a node asks again only
    /// when it lost track of an earlier claim, for example one whose reply timed out after Redis
    /// had set the keys.
    Won,
    /// The name is not free: this node holds it, or a look-alike of it. If another node holds
    /// the name itself, that node; otherwise the node holding a different name with the same
    /// skeleton, which may be this very node (a look-alike logged in here).
    Taken(NodeId),
}

/// Why a lease operation, or a [`Bus`](crate::bus::Bus) call, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Redis did not answer within the command timeout ([`LeaseConfig::command_timeout`],
    /// [`BusConfig::command_timeout`](crate::bus::BusConfig::command_timeout)). The command may
    /// or may not have been carried out.
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

    pub(crate) fn from_redis(e: RedisError) -> Self {
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
    transfer: Script,
    unpark: Script,
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
                transfer: Script::new(TRANSFER),
                unpark: Script::new(UNPARK),
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
        prefixed(&self.inner.config.prefix, b":name:", name.as_bytes())
    }

    /// The Redis key of a skeleton: `<prefix>:skeleton:<skeleton>` (as bytes).
    pub fn skeleton_key(&self, skeleton: &str) -> Vec<u8> {
        prefixed(
            &self.inner.config.prefix,
            b":skeleton:",
            skeleton.as_bytes(),
        )
    }

    /// The Redis key of a parked session: `<prefix>:session:<token>` (as bytes).
    pub fn session_key(&self, token: &str) -> Vec<u8> {
        prefixed(&self.inner.config.prefix, b":session:", token.as_bytes())
    }

    /// The value of the skeleton key when `name` holds it on this node: `<node id>\n<name>`.
    fn skeleton_value(&self, name: &str) -> Vec<u8> {
        skeleton_value(&self.inner.node, name)
    }

    /// Claims `name` and its confusable `skeleton` (computed by the caller) for this node,
    /// atomically, both or neither: [`Claim::Won`] if no node holds the name (or this one does)
    /// and the skeleton is free or held by this node *for this name*; [`Claim::Taken`] with the
    /// holder otherwise, which is this node itself when it holds a look-alike (another name
    /// with the same skeleton). One Redis round trip.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached; the keys may then have been
    /// set for this node even so (the reply was lost): release them, or claim again, which
    /// answers `Won`.
    pub async fn claim(&self, name: &str, skeleton: &str) -> Result<Claim, LeaseError> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let mut call = inner.claim.key(self.key(name));
        call.key(self.skeleton_key(skeleton))
            .arg(inner.node.as_str())
            .arg(inner.config.ttl_millis())
            .arg(self.skeleton_value(name));
        let (won, holder): (i64, Vec<u8>) =
            bounded(inner.config.command_timeout, call.invoke_async(&mut conn)).await?;
        if won == 1 {
            Ok(Claim::Won)
        } else {
            Ok(Claim::Taken(node_of(&holder)))
        }
    }

    /// Refreshes the leases of `held`, every (name, skeleton) pair this node holds: extends the
    /// keys still held by this node, sets again those that are missing (re-assert, as after Redis
    /// restarted empty), and returns, in the order given, the names of the pairs whose name key
    /// is held by another node or whose skeleton key by another node or another name. Those are
    /// lost (neither of their keys is touched): end their sessions here, and
    /// [`release`](Leases::release) them. One script call per [`REFRESH_BATCH`] pairs, each
    /// bounded by the command timeout.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached; the batches before the
    /// failing one were refreshed.
    pub async fn refresh<N: AsRef<str>, S: AsRef<str>>(
        &self,
        held: &[(N, S)],
    ) -> Result<Vec<String>, LeaseError> {
        let inner = &self.inner;
        let mut lost = Vec::new();
        for batch in held.chunks(REFRESH_BATCH) {
            let mut conn = inner.conn.clone();
            let mut call = inner.refresh.prepare_invoke();
            call.arg(inner.node.as_str()).arg(inner.config.ttl_millis());
            for (name, skeleton) in batch {
                call.key(self.key(name.as_ref()))
                    .key(self.skeleton_key(skeleton.as_ref()))
                    .arg(self.skeleton_value(name.as_ref()));
            }
            let indexes: Vec<usize> =
                bounded(inner.config.command_timeout, call.invoke_async(&mut conn)).await?;
            for i in indexes {
                // Lua indexes from 1; anything out of range would be a script bug: skip it.
                if let Some((name, _)) = i.checked_sub(1).and_then(|i| batch.get(i)) {
                    lost.push(name.as_ref().to_owned());
                }
            }
        }
        Ok(lost)
    }

    /// Releases `name` and its `skeleton`: deletes each key this node still holds (the skeleton
    /// key only if it is held for this name), leaves the others as they are. `true` if at least
    /// one key was deleted, `false` if neither was ours. One Redis round trip.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached: the leases then run out by
    /// themselves within the TTL, since nobody refreshes them.
    pub async fn release(&self, name: &str, skeleton: &str) -> Result<bool, LeaseError> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let mut call = inner.release.key(self.key(name));
        call.key(self.skeleton_key(skeleton))
            .arg(inner.node.as_str())
            .arg(self.skeleton_value(name));
        let deleted: i64 =
            bounded(inner.config.command_timeout, call.invoke_async(&mut conn)).await?;
        Ok(deleted > 0)
    }

    /// Moves `name` and its `skeleton` from node `from` to node `to` for a full TTL, atomically:
    /// only if each key is held by `from` (or already by `to`) or by nobody. `true` when moved,
    /// `false` when another node (or, for the skeleton, another name) holds one of them; then
    /// neither is touched. One Redis round trip. For a session that moves to another node: the
    /// node that had it calls this before it lets go.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached (the keys may or may not
    /// have moved).
    pub async fn transfer(
        &self,
        name: &str,
        skeleton: &str,
        from: &NodeId,
        to: &NodeId,
    ) -> Result<bool, LeaseError> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let mut call = inner.transfer.key(self.key(name));
        call.key(self.skeleton_key(skeleton))
            .arg(from.as_str())
            .arg(to.as_str())
            .arg(inner.config.ttl_millis())
            .arg(skeleton_value(from, name))
            .arg(skeleton_value(to, name));
        let moved: i64 =
            bounded(inner.config.command_timeout, call.invoke_async(&mut conn)).await?;
        Ok(moved == 1)
    }

    /// Keeps `sessions` (a node that shuts down gracefully leaves its resumable sessions for
    /// other nodes): for each whose name and skeleton this node still holds (or nobody does),
    /// sets the session key and extends both lease keys to the session's TTL, so that its name
    /// stays taken while it waits. Returns, in order, whether each was kept. One pipelined round
    /// trip (a script call per [`PARK_BATCH`] sessions), bounded by the command timeout per
    /// batch. Stop refreshing (and do not release) the names kept.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached: none, some or all may have
    /// been kept.
    pub async fn park(&self, sessions: &[Parking<'_>]) -> Result<Vec<bool>, LeaseError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let mut pipe = redis::pipe();
        for batch in sessions.chunks(PARK_BATCH) {
            let eval = pipe.cmd("EVAL").arg(PARK).arg(batch.len() * 3);
            for s in batch {
                eval.arg(self.key(s.name))
                    .arg(self.skeleton_key(s.skeleton))
                    .arg(self.session_key(s.token));
            }
            eval.arg(inner.node.as_str());
            for s in batch {
                let ttl = u64::try_from(s.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                eval.arg(self.skeleton_value(s.name)).arg(ttl).arg(s.value);
            }
        }
        let batches = u32::try_from(sessions.len().div_ceil(PARK_BATCH)).unwrap_or(u32::MAX);
        let limit = inner.config.command_timeout.saturating_mul(batches);
        let mut conn = inner.conn.clone();
        let kept: Vec<Vec<usize>> = bounded(limit, pipe.query_async(&mut conn)).await?;
        let mut out = vec![false; sessions.len()];
        for (b, indexes) in kept.iter().enumerate() {
            for i in indexes {
                // Lua indexes from 1; anything out of range would be a script bug: skip it.
                if let Some(slot) = i
                    .checked_sub(1)
                    .and_then(|i| out.get_mut(b * PARK_BATCH + i))
                {
                    *slot = true;
                }
            }
        }
        Ok(out)
    }

    /// The session parked under `token` ([`park`](Leases::park)), if any: its bytes and how
    /// much longer it would be kept. One Redis round trip.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached.
    pub async fn parked(&self, token: &str) -> Result<Option<(Vec<u8>, Duration)>, LeaseError> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let key = self.session_key(token);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
        let (value, left): (Option<Vec<u8>>, i64) =
            bounded(inner.config.command_timeout, pipe.query_async(&mut conn)).await?;
        let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
        Ok(value.map(|value| (value, left)))
    }

    /// Takes the session parked under `token` for this node, atomically: deletes it and moves
    /// its lease (`name`, `skeleton`) from `from`, the node that parked it, to this one.
    /// `true` when it was there and is this node's now; `false` when it was gone (another
    /// node took it first, or it expired) or another node holds its name (it is deleted then:
    /// it cannot be resumed). One Redis round trip.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached.
    pub async fn unpark(
        &self,
        token: &str,
        name: &str,
        skeleton: &str,
        from: &NodeId,
    ) -> Result<bool, LeaseError> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let mut call = inner.unpark.key(self.session_key(token));
        call.key(self.key(name))
            .key(self.skeleton_key(skeleton))
            .arg(from.as_str())
            .arg(inner.node.as_str())
            .arg(inner.config.ttl_millis())
            .arg(skeleton_value(from, name))
            .arg(self.skeleton_value(name));
        let taken: i64 =
            bounded(inner.config.command_timeout, call.invoke_async(&mut conn)).await?;
        Ok(taken == 1)
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
        Ok(owner.map(|owner| node_of(&owner)))
    }

    /// Which node holds each of `names` now (`None`: nobody), in the order given: one `MGET`
    /// round trip, bounded by the command timeout, for any number of names (none: no round trip).
    /// For a node's cache of where names live; the answer may be stale as soon as it arrives.
    ///
    /// # Errors
    ///
    /// [`LeaseError::is_unavailable`] if Redis could not be reached.
    pub async fn owners<N: AsRef<str>>(
        &self,
        names: &[N],
    ) -> Result<Vec<Option<NodeId>>, LeaseError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let mut mget = redis::cmd("MGET");
        for name in names {
            mget.arg(self.key(name.as_ref()));
        }
        let owners: Vec<Option<Vec<u8>>> =
            bounded(inner.config.command_timeout, mget.query_async(&mut conn)).await?;
        if owners.len() != names.len() {
            return Err(LeaseError::Redis(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "MGET answered a different number of values than keys",
            ))));
        }
        Ok(owners
            .into_iter()
            .map(|owner| owner.map(|owner| node_of(&owner)))
            .collect())
    }
}

/// The value of a skeleton key when `name` holds it on `node`: `<node id>\n<name>`.
fn skeleton_value(node: &NodeId, name: &str) -> Vec<u8> {
    let node = node.as_str().as_bytes();
    let mut value = Vec::with_capacity(node.len() + 1 + name.len());
    value.extend_from_slice(node);
    value.push(b'\n');
    value.extend_from_slice(name.as_bytes());
    value
}

/// `prefix`, `infix` and `tail`, concatenated.
fn prefixed(prefix: &str, infix: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + infix.len() + tail.len());
    key.extend_from_slice(prefix.as_bytes());
    key.extend_from_slice(infix);
    key.extend_from_slice(tail);
    key
}

/// A node id read from Redis. Lossy, and cut at a newline, so that a foreign value in one of our
/// keys cannot make [`NodeId::new`] panic.
fn node_of(value: &[u8]) -> NodeId {
    let text = String::from_utf8_lossy(value);
    NodeId::new(text.split('\n').next().unwrap_or_default())
}

/// The redis-rs settings of [`LeaseConfig::connection_manager_config`], for a command timeout.
pub(crate) fn connection_manager_config(command_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(command_timeout))
        .set_response_timeout(Some(command_timeout))
        .set_min_delay(Duration::from_millis(50))
        .set_number_of_retries(2)
        .set_max_delay(command_timeout)
}

/// Runs one Redis call, bounded by `limit`. A timeout is [`LeaseError::Timeout`] whichever timer
/// fired: this one, or the connection's own response or connection timeout (redis-rs reports
/// those as an I/O error, `TimedOut`), which is set to the same limit and usually fires first.
pub(crate) async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, LeaseError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.is_timeout() => Err(LeaseError::Timeout(limit)),
        Ok(Err(e)) => Err(LeaseError::from_redis(e)),
        Err(_elapsed) => Err(LeaseError::Timeout(limit)),
    }
}
