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

use std::fmt;
use std::sync::{Arc, Weak};

use crate::cluster::{Envelope, Unroutable};
use crate::protocol::Username;
use crate::router::ClaimOutcome;

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

    /// Other nodes hold these names now: their sessions end here and their connections are
    /// closed ([`Router::handle_names_lost`](crate::Router::handle_names_lost)).
    pub fn names_lost(&self, names: &[Username]) {
        self.with_hub(|hub| hub.cluster_input(|router, _| router.handle_names_lost(names)));
    }
}
