//! The connections' timers: heartbeat pings, the pong deadline and the login deadline, kept
//! in one queue of the hub and run by its timer task.

use std::cmp::Reverse;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::hub::State;
use super::outbox::Deadline;
use super::{Config, Hub};
use crate::router::ConnectionId;

impl Hub {
    /// Arms the timers of a connection just registered (under the hub's lock): its first ping
    /// and its login deadline, in the hub's one timer queue.
    pub(super) fn arm_heartbeat(
        &self,
        state: &mut State,
        conn: ConnectionId,
        heartbeat: &Heartbeat,
    ) {
        if let Some(at) = heartbeat.deadline(&self.inner.config) {
            state.heartbeats.push(Reverse((at, conn)));
            self.wake_timer_for(state, at.into_std());
        }
    }

    /// Runs the connections' timers that are due (under the hub's lock, from the hub's timer
    /// task): asks writers for pings, and tells the tasks of connections that stopped
    /// answering or did not log in in time to close. One timer queue for all connections, not
    /// a timer in each connection's task.
    pub(super) fn fire_heartbeats(&self, state: &mut State, now: Instant) {
        let config = &self.inner.config;
        let State {
            heartbeats,
            connections,
            router,
            ..
        } = state;
        while let Some(&Reverse((at, conn))) = heartbeats.peek() {
            if at > now {
                break;
            }
            heartbeats.pop();
            // A connection that has ended leaves its entry behind until it comes due.
            let Some(outbox) = connections.get(&conn) else {
                continue;
            };
            let liveness = &outbox.liveness;
            let seen = liveness.last_seen.load(Ordering::Relaxed);
            let (tick, next) = outbox.with_heartbeat(|heartbeat| {
                let tick = heartbeat.on_timer(now, seen, config, |at| self.millis_at(at));
                (tick, heartbeat.deadline(config))
            });
            let close = match tick {
                Tick::Nothing => None,
                Tick::Ping => {
                    // Unpredictable, so that a client that does not read cannot answer it.
                    let payload = self.inner.ping_keys.hash_one((conn.0, self.millis_at(now)));
                    liveness.expected_pong.store(payload, Ordering::Relaxed);
                    outbox.request_ping();
                    None
                }
                Tick::DeadPeer => {
                    tracing::debug!(%conn, "heartbeat timeout");
                    Some(Deadline::Heartbeat)
                }
                Tick::LoginCheck if router.username(conn).is_none() => {
                    tracing::debug!(%conn, "login deadline passed");
                    Some(Deadline::Login)
                }
                Tick::LoginCheck => None,
            };
            match (close, next) {
                // The connection's task ends it; no more timers for it.
                (Some(close), _) => outbox.expire(close),
                (None, Some(next)) => heartbeats.push(Reverse((next, conn))),
                (None, None) => {}
            }
        }
    }
}

/// What the read loop and the hub's timers share about the client's liveness.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    /// When (on the hub's millisecond clock) the client last answered a ping.
    pub(super) last_seen: AtomicU64,
    /// The payload of the last ping sent; a pong must echo it.
    pub(super) expected_pong: AtomicU64,
    /// The `seq` of the last session message written before the last ping (0: none): the
    /// echo of that ping proves the client received it and all before it.
    pub(super) seq_before_ping: AtomicU64,
}

pub(super) enum Tick {
    Nothing,
    Ping,
    DeadPeer,
    LoginCheck,
}

/// The connection's timers: next ping, the pending pong deadline and the login deadline.
#[derive(Debug)]
pub(super) struct Heartbeat {
    next_ping: Option<Instant>,
    /// When the unanswered ping went out (compared with `last_seen` on the hub's millisecond
    /// clock: a pong in the same millisecond counts).
    ping_sent: Option<Instant>,
    login_deadline: Option<Instant>,
}

impl Heartbeat {
    /// The timers of a connection that starts at `start`.
    pub(super) fn new(start: Instant, config: &Config) -> Self {
        Heartbeat {
            next_ping: config.ping_interval.map(|i| start + i),
            ping_sent: None,
            login_deadline: config.login_timeout.map(|t| start + t),
        }
    }

    pub(super) fn deadline(&self, config: &Config) -> Option<Instant> {
        let pong = self.ping_sent.map(|sent| sent + config.pong_timeout);
        [self.next_ping, pong, self.login_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// `last_seen_ms` is on the hub's millisecond clock, `millis` reads an instant on it.
    pub(super) fn on_timer(
        &mut self,
        now: Instant,
        last_seen_ms: u64,
        config: &Config,
        millis: impl Fn(Instant) -> u64,
    ) -> Tick {
        if let Some(sent) = self.ping_sent {
            if last_seen_ms >= millis(sent) {
                self.ping_sent = None;
            } else if now >= sent + config.pong_timeout {
                return Tick::DeadPeer;
            }
        }
        if self.login_deadline.is_some_and(|d| now >= d) {
            self.login_deadline = None;
            return Tick::LoginCheck;
        }
        if let (Some(next), Some(interval)) = (self.next_ping, config.ping_interval) {
            if now >= next {
                self.next_ping = Some(now + interval);
                if self.ping_sent.is_none() {
                    self.ping_sent = Some(now);
                }
                return Tick::Ping;
            }
        }
        Tick::Nothing
    }
}
