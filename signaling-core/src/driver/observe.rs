//! What the hub tells an observer (metrics, audit logs): the router's [`Event`]s and the
//! driver's own — connections opened and closed (and why), upgrades refused, messages relayed,
//! envelopes carried between nodes.
//!
//! Set an [`Observer`] with [`Config::with_observer`](super::Config::with_observer); the
//! `metrics` feature's [`Metrics`](super::metrics::Metrics) is one, exporting Prometheus
//! metrics. Observers are called synchronously, some of them (the router's events, relays)
//! while the hub's lock is held: keep them to counter increments, never block or lock the
//! hub from inside.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use signaling_core::driver::observe::{HubEvent, Observer};
//! use signaling_core::driver::Config;
//!
//! #[derive(Default)]
//! struct Relays(AtomicU64);
//!
//! impl Observer for Relays {
//!     fn observe(&self, event: &HubEvent<'_>) {
//!         if let HubEvent::Relayed { .. } = event {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//!
//! let relays = Arc::new(Relays::default());
//! let config = Config::default().with_observer(Some(relays.clone()));
//! # let _ = config;
//! ```

use std::fmt;

use super::admission::Refusal;
use super::transport::CloseFrame;
use crate::protocol::RelayKind;
use crate::router::{DisconnectReason, Event};

/// Receives the hub's events. See the [module](self) documentation.
pub trait Observer: Send + Sync + 'static {
    /// One event. Called synchronously, possibly under the hub's lock: be quick, do not block.
    fn observe(&self, event: &HubEvent<'_>);
}

impl fmt::Debug for dyn Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn Observer")
    }
}

/// Something the hub did or saw.
#[derive(Debug)]
#[non_exhaustive]
pub enum HubEvent<'a> {
    /// The router said something happened (a login, a call ringing, answered or ended, an
    /// error reply, a session suspended, resumed or ended…).
    Router(&'a Event),
    /// A WebSocket connection was registered with the router.
    Opened,
    /// A connection ended, for this reason.
    Closed(DisconnectCause),
    /// An upgrade request was refused with an HTTP status, before any WebSocket existed.
    Refused(&'a Refusal),
    /// A relayed message (`offer`, `answer`, `candidate`) was queued for its addressee on
    /// this node (in cluster mode, relays from other nodes included: each relay is counted
    /// once, where it is delivered).
    Relayed {
        /// Which message.
        kind: RelayKind,
    },
    /// Cluster mode: an envelope (a relay, a hang-up, a refusal, …) was handed to the backend
    /// for another node.
    Forwarded,
    /// Cluster mode: an envelope from another node arrived.
    Arrived,
}

/// How a connection ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectCause {
    /// The client sent a close frame.
    Clean,
    /// The connection was lost: the stream ended without a close frame (a reset, a FIN), or
    /// a read or write failed.
    Lost,
    /// A deadline passed: no pong in time, no login in time, or a write that made no progress
    /// for the write-stall timeout (a client that does not read).
    Timeout,
    /// Its outbound queue overflowed, or the global queued-bytes budget dropped it (a client
    /// that does not read).
    QueueOverflow,
    /// It kept sending over its rate limit (1008).
    RateLimit,
    /// The server shut down (1001, or 1012 for a session handed to another node).
    Shutdown,
    /// It sent a message over the size limit (1009).
    TooLarge,
    /// Its session went elsewhere or ended under it: resumed on another connection (4000),
    /// ended by a resume that found its history lost, or its name taken by another node after
    /// a partition (4001).
    Replaced,
}

impl DisconnectCause {
    /// Every cause, in declaration order.
    pub const ALL: [DisconnectCause; 8] = [
        DisconnectCause::Clean,
        DisconnectCause::Lost,
        DisconnectCause::Timeout,
        DisconnectCause::QueueOverflow,
        DisconnectCause::RateLimit,
        DisconnectCause::Shutdown,
        DisconnectCause::TooLarge,
        DisconnectCause::Replaced,
    ];

    /// A short snake-case name (the metrics' label value).
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectCause::Clean => "clean",
            DisconnectCause::Lost => "lost",
            DisconnectCause::Timeout => "timeout",
            DisconnectCause::QueueOverflow => "queue_overflow",
            DisconnectCause::RateLimit => "rate_limit",
            DisconnectCause::Shutdown => "shutdown",
            DisconnectCause::TooLarge => "too_large",
            DisconnectCause::Replaced => "replaced",
        }
    }

    /// The cause of a connection the server closed with `close`.
    pub(super) fn of_close(close: &CloseFrame) -> DisconnectCause {
        let router = |reason: DisconnectReason| {
            close.code == reason.code() && close.reason == reason.reason()
        };
        if *close == CloseFrame::GOING_AWAY || *close == CloseFrame::SERVICE_RESTART {
            DisconnectCause::Shutdown
        } else if *close == CloseFrame::HEARTBEAT_TIMEOUT || *close == CloseFrame::LOGIN_TIMEOUT {
            DisconnectCause::Timeout
        } else if *close == CloseFrame::TOO_LARGE {
            DisconnectCause::TooLarge
        } else if router(DisconnectReason::RateLimited) {
            DisconnectCause::RateLimit
        } else {
            // 4000 and 4001: the session moved or ended under the connection.
            DisconnectCause::Replaced
        }
    }
}

impl fmt::Display for DisconnectCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_the_driver_sends_has_its_cause() {
        let close = |reason: DisconnectReason| CloseFrame {
            code: reason.code(),
            reason: reason.reason(),
        };
        let cases = [
            (CloseFrame::GOING_AWAY, DisconnectCause::Shutdown),
            (CloseFrame::SERVICE_RESTART, DisconnectCause::Shutdown),
            (CloseFrame::HEARTBEAT_TIMEOUT, DisconnectCause::Timeout),
            (CloseFrame::LOGIN_TIMEOUT, DisconnectCause::Timeout),
            (CloseFrame::TOO_LARGE, DisconnectCause::TooLarge),
            (
                close(DisconnectReason::RateLimited),
                DisconnectCause::RateLimit,
            ),
            (
                close(DisconnectReason::ResumedElsewhere),
                DisconnectCause::Replaced,
            ),
            (
                close(DisconnectReason::SessionEnded),
                DisconnectCause::Replaced,
            ),
            (close(DisconnectReason::NameLost), DisconnectCause::Replaced),
        ];
        for (frame, cause) in cases {
            assert_eq!(DisconnectCause::of_close(&frame), cause, "{frame:?}");
        }
        let names: std::collections::HashSet<_> =
            DisconnectCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), DisconnectCause::ALL.len());
    }
}
