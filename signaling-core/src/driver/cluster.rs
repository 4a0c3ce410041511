//! Cluster mode: the backend that joins several nodes into one server (`docs/cluster.md`).
//!
//! Without a backend ([`Config::cluster`](super::Config::cluster) `None`, the default) a hub is
//! a single server with its registry in its router. With one, the hub's router runs in cluster
//! mode ([`RouterConfig::claim_names`](crate::RouterConfig::claim_names)): a login is granted
//! once the backend has claimed the name cluster-wide, a message to a user of another node
//! goes out as an [`Envelope`] through the backend, and the backend feeds what other nodes
//! send back in through a [`ClusterLink`]. The rules stay in the router; the backend only
//! carries names and envelopes. `signaling-redis` implements it on Redis; another engine
//! (NATS, …) would implement the same trait.
//!
//! Resumable sessions move between nodes: session tokens name the node that issued them
//! ([`ClusterBackend::node_id`], [`token_node`](super::token_node)); a `resume` with another
//! node's token is awaited by its connection while the backend fetches the session
//! ([`ClusterBackend::fetch`]) from that node, whose backend gets it from its hub with
//! [`ClusterLink::hand_over`]; the fetching backend hands it in with [`ClusterLink::import`].
//! On a graceful shutdown the hub hands every resumable session to the backend to keep
//! ([`ClusterBackend::park`]) and closes their connections with 1012, so that their clients
//! resume on other nodes.

use std::fmt;
use std::sync::{Arc, Weak};

use crate::ErrorCode;
use crate::cluster::{Envelope, SessionExport, Unroutable};
use crate::protocol::{SessionToken, Username};
use crate::router::{ClaimOutcome, ConnectionId, Evacuated};

use super::hub::{Hub, Inner};

/// The shared registry and message carrier of a cluster. The hub calls it under its lock for
/// [`release`](Self::release) and [`forward`](Self::forward), so those must not block: queue
/// the work and do it in a task of the backend's own.
#[async_trait::async_trait]
pub trait ClusterBackend: Send + Sync + 'static {
    /// Called once, as the hub is created (inside the Tokio runtime), with the link through
    /// which the backend hands the hub what arrives from other nodes.
    fn start(&self, link: ClusterLink);

    /// Claims `name` and its confusable `skeleton` for this node, cluster-wide: `Won` if no
    /// other node holds either, `Taken` if one does, `Unavailable` if the registry cannot be
    /// asked. Awaited by the logging-in connection (its next frames wait meanwhile).
    async fn claim(&self, name: &Username, skeleton: &str) -> ClaimOutcome;

    /// `name` (with `skeleton`) is no longer held by this node. Must not block.
    fn release(&self, name: Username, skeleton: Arc<str>);

    /// Carries `envelope` to the node that holds `envelope.to`, which hands it to its hub with
    /// [`ClusterLink::deliver`]. Envelopes for one addressee must arrive in the order given.
    /// If it turns out that it cannot be carried, tell the hub with
    /// [`ClusterLink::unroutable`] (later, from the backend's task: never from inside this
    /// call, which runs under the hub's lock). Must not block: return the envelope when it
    /// cannot even be queued (the sender gets `unavailable`).
    ///
    /// # Errors
    ///
    /// The envelope, when the backend's queue is full or the backend has stopped.
    fn forward(&self, envelope: Envelope) -> Result<(), Envelope>;

    /// This node's id, unique in the cluster: the hub's session tokens start with it
    /// (`<node id>.<22 characters>`), so that a `resume` on another node finds the node that
    /// holds the session. It should be at most 105 bytes (a token is at most 128); a longer
    /// one is not put into tokens, and their sessions cannot move.
    fn node_id(&self) -> &str;

    /// A `resume` on `conn` named `token`, which this node does not know: get the session
    /// from the node that issued it ([`token_node`](super::token_node); that node's backend
    /// calls [`ClusterLink::hand_over`] with `last_seq` and `verified`), or from where a node
    /// that shut down left it ([`park`](Self::park)); take its name's lease for this node,
    /// and hand it in with [`ClusterLink::import`] **before** returning `Ok` (from the task
    /// that delivers what other nodes send, so that messages for the user that arrive after
    /// the session find it). Awaited by the resuming connection (its next frames wait).
    ///
    /// # Errors
    ///
    /// The refusal for the connection: the issuing node's (`invalid_token`,
    /// `invalid_last_seq`, `history_lost`, `unauthorized`), `invalid_token` when no node has
    /// the session, `unavailable` when it could not be asked in time.
    async fn fetch(
        &self,
        conn: ConnectionId,
        token: &SessionToken,
        last_seq: u64,
        verified: Option<&Username>,
    ) -> Result<(), (ErrorCode, String)>;

    /// The hub is shutting down gracefully: keep these sessions (their leases with them) for
    /// other nodes to [`fetch`](Self::fetch), each for its `grace_left`, and stop holding
    /// their names here (no release: the names stay taken while the sessions wait). Returns,
    /// in order, whether each was kept; the hub then closes their connections with 1012
    /// (those not kept with 1001: their clients log in afresh).
    async fn park(&self, sessions: &[Evacuated]) -> Vec<bool>;

    /// Whether the backend reaches the shared component now (for a readiness check).
    fn is_available(&self) -> bool {
        true
    }

    /// The hub is shutting down and its connections are gone: give back what is left and stop.
    async fn shutdown(&self) {}
}

impl fmt::Debug for dyn ClusterBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn ClusterBackend")
    }
}

/// How a [`ClusterBackend`] talks to its hub. Holds the hub weakly: once the hub is gone every
/// call does nothing (and [`is_alive`](Self::is_alive) says so, for the backend's tasks to end).
#[derive(Clone)]
pub struct ClusterLink {
    pub(super) hub: Weak<Inner>,
}

impl fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterLink")
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl ClusterLink {
    fn with_hub<R>(&self, f: impl FnOnce(&Hub) -> R) -> Option<R> {
        let inner = self.hub.upgrade()?;
        Some(f(&Hub { inner }))
    }

    /// Whether the hub still exists.
    pub fn is_alive(&self) -> bool {
        self.hub.strong_count() > 0
    }

    /// Envelopes other nodes sent to users of this one, in the order they arrived: handed to
    /// the router ([`Router::handle_remote`](crate::Router::handle_remote)) under one lock,
    /// what comes out of each dispatched before the next (so that a receiver's queue filling
    /// up refuses the next relay to it, as for relays from this node).
    pub fn deliver(&self, envelopes: impl IntoIterator<Item = Envelope>) {
        self.with_hub(|hub| {
            let envelopes = envelopes
                .into_iter()
                .inspect(|_| hub.observe(&super::observe::HubEvent::Arrived));
            hub.cluster_input_each(envelopes, |router, envelope, now| {
                router.handle_remote(envelope, now);
            });
        });
    }

    /// An envelope of this node's could not be carried
    /// ([`Router::handle_unroutable`](crate::Router::handle_unroutable)).
    pub fn unroutable(&self, envelope: Envelope, why: Unroutable) {
        self.with_hub(|hub| {
            hub.cluster_input(|router, _| router.handle_unroutable(envelope, why));
        });
    }

    /// The users of other nodes that users of this node are in calls with (to check that
    /// they are still held by someone).
    pub fn remote_peers(&self) -> Vec<Username> {
        self.with_hub(|hub| hub.with_router(|r| r.remote_peers().cloned().collect()))
            .unwrap_or_default()
    }

    /// These users of other nodes are gone (nobody holds their names): local users in calls
    /// with them are told `close`
    /// ([`Router::handle_peer_gone`](crate::Router::handle_peer_gone)).
    pub fn peers_gone(&self, names: &[Username]) {
        self.with_hub(|hub| {
            hub.cluster_input(|router, _| {
                for name in names {
                    router.handle_peer_gone(name);
                }
            });
        });
    }

    /// Whether this node may have lost its names (cut off from the registry for longer than a
    /// lease): relays are refused with `unavailable` meanwhile
    /// ([`Router::handle_detached`](crate::Router::handle_detached)).
    pub fn set_detached(&self, detached: bool) {
        self.with_hub(|hub| {
            hub.cluster_input(|router, _| {
                if router.is_detached() != detached {
                    if detached {
                        tracing::warn!(
                            "cut off from the cluster for longer than a lease: refusing relays"
                        );
                    } else {
                        tracing::info!("back in contact with the cluster");
                    }
                    router.handle_detached(detached);
                }
            });
        });
    }

    /// Another node's [`ClusterBackend::fetch`] asks for the session of `token`, which this
    /// node issued: the resume is checked as a local one and, if it passes, the session leaves
    /// this hub's router ([`Router::handle_handover`](crate::Router::handle_handover)). Move
    /// its lease to the asking node before answering; if the export cannot be delivered,
    /// give it back with [`import`](Self::import)`(None, …)`. `None` when the hub is gone.
    pub fn hand_over(
        &self,
        token: &str,
        last_seq: u64,
        verified: Option<&Username>,
    ) -> Option<Result<SessionExport, (ErrorCode, String)>> {
        self.with_hub(|hub| {
            let mut out = None;
            hub.cluster_input(|router, now| {
                out = Some(router.handle_handover(token, last_seq, verified, now));
            });
            out
        })
        .flatten()
    }

    /// A session fetched for the `resume` of `conn` (or, with `None`, one coming back after
    /// a failed hand-over) is installed here
    /// ([`Router::handle_imported`](crate::Router::handle_imported)); this node holds its
    /// name's lease now.
    pub fn import(&self, conn: Option<ConnectionId>, export: SessionExport, last_seq: u64) {
        self.with_hub(|hub| {
            hub.cluster_input(|router, now| router.handle_imported(conn, export, last_seq, now));
        });
    }

    /// Other nodes hold these names now: their sessions end here and their connections are
    /// closed ([`Router::handle_names_lost`](crate::Router::handle_names_lost)).
    pub fn names_lost(&self, names: &[Username]) {
        self.with_hub(|hub| hub.cluster_input(|router, _| router.handle_names_lost(names)));
    }
}
