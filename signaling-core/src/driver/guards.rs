//! Drop guards that keep the hub's books right however a connection task ends (normally, by a
//! panic, or by cancellation).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use super::Hub;
use super::hub::Inner;
use super::observe::{DisconnectCause, HubEvent};
use super::outbox::Outbox;
use crate::router::ConnectionId;
#[cfg(doc)]
use crate::router::Router;

/// A connection's place in the router. Dropping it (by a panic, or by cancellation) calls
/// [`Router::handle_connection_lost`] unless the connection was already torn down.
pub(super) struct Registration {
    pub(super) hub: Hub,
    pub(super) id: ConnectionId,
    pub(super) outbox: Arc<Outbox>,
    /// How the connection ended, once its task knows; told to the observer on drop.
    pub(super) cause: OnceLock<DisconnectCause>,
}

impl Registration {
    /// Idempotent: the first call tells the router the connection ended — cleanly
    /// ([`Router::handle_disconnect`]: the session ends) or not
    /// ([`Router::handle_connection_lost`]: a resumable session is suspended) — later ones
    /// find nothing to do.
    pub(super) fn teardown(&self, clean: bool) {
        let mut state = self.hub.lock();
        // Absent when the hub already disconnected it (its queue overflowed).
        if state.connections.remove(&self.id).is_some() {
            let _ = if clean {
                state.router.handle_disconnect(self.id)
            } else {
                state
                    .router
                    .handle_connection_lost(self.id, tokio::time::Instant::now().into_std())
            };
            self.hub.dispatch(&mut state, None);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.teardown(false);
        tracing::debug!(conn = %self.id, "disconnected");
        // A task that ended without saying (a panic, the shutdown's deadline) was either
        // being closed by the server or lost.
        let cause = self
            .cause
            .get()
            .copied()
            .or_else(|| self.outbox.end_cause(self.hub.is_killed()))
            .unwrap_or(DisconnectCause::Lost);
        self.hub.observe(&HubEvent::Closed(cause));
    }
}

/// Counts a running connection task, so that `shutdown` knows when all are gone.
pub(super) struct ActiveGuard {
    inner: Arc<Inner>,
}

impl ActiveGuard {
    pub(super) fn new(hub: &Hub) -> Self {
        hub.inner.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard {
            inner: Arc::clone(&hub.inner),
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
