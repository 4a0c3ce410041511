//! The connection's timers: heartbeat pings, the pong deadline and the login deadline.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::outbox::Outbox;
use super::{CloseFrame, Config, Hub};
use crate::router::ConnectionId;

impl Hub {
    /// The connection's timers: asks the writer for pings, and returns the close frame to send
    /// when the client stopped answering or did not log in in time. Runs beside the writer,
    /// so a write blocked on a dead client cannot stop it.
    pub(super) async fn watchdog(
        &self,
        conn: ConnectionId,
        outbox: &Outbox,
        liveness: &Liveness,
    ) -> CloseFrame {
        let config = &self.inner.config;
        let start = Instant::now();
        let mut heartbeat = Heartbeat {
            next_ping: config.ping_interval.map(|i| start + i),
            ping_sent: None,
            login_deadline: config.login_timeout.map(|t| start + t),
        };
        loop {
            match heartbeat.deadline(config) {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
            let seen = liveness.last_seen.load(Ordering::Relaxed);
            let now_ms = self.millis();
            match heartbeat.on_timer(Instant::now(), now_ms, seen, config) {
                Tick::Nothing => {}
                Tick::Ping => {
                    // Unpredictable, so that a client that does not read cannot answer it.
                    let payload = self.inner.ping_keys.hash_one((conn.0, now_ms));
                    liveness.expected_pong.store(payload, Ordering::Relaxed);
                    outbox.request_ping(payload.to_be_bytes());
                }
                Tick::DeadPeer => {
                    tracing::debug!(%conn, "heartbeat timeout");
                    return CloseFrame::HEARTBEAT_TIMEOUT;
                }
                Tick::LoginCheck => {
                    if !self.is_logged_in(conn) {
                        tracing::debug!(%conn, "login deadline passed");
                        return CloseFrame::LOGIN_TIMEOUT;
                    }
                }
            }
        }
    }
}

/// What the read loop and the watchdog share about the client's liveness.
pub(super) struct Liveness {
    /// When (on the hub's millisecond clock) the client last answered a ping.
    pub(super) last_seen: AtomicU64,
    /// The payload of the last ping sent; a pong must echo it.
    pub(super) expected_pong: AtomicU64,
    /// The `seq` of the last session message written before the last ping (0: none): the
    /// echo of that ping proves the client received it and all before it.
    pub(super) seq_before_ping: AtomicU64,
}

enum Tick {
    Nothing,
    Ping,
    DeadPeer,
    LoginCheck,
}

/// The connection's timers: next ping, the pending pong deadline and the login deadline.
struct Heartbeat {
    next_ping: Option<Instant>,
    /// When the unanswered ping went out, and the same moment on the hub's millisecond clock
    /// (the clock `last_seen` is kept on; a pong in the same millisecond counts).
    ping_sent: Option<(Instant, u64)>,
    login_deadline: Option<Instant>,
}

impl Heartbeat {
    fn deadline(&self, config: &Config) -> Option<Instant> {
        let pong = self.ping_sent.map(|(sent, _)| sent + config.pong_timeout);
        [self.next_ping, pong, self.login_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// `now_ms` and `last_seen_ms` are on the hub's millisecond clock.
    fn on_timer(&mut self, now: Instant, now_ms: u64, last_seen_ms: u64, config: &Config) -> Tick {
        if let Some((sent, sent_ms)) = self.ping_sent {
            if last_seen_ms >= sent_ms {
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
                    self.ping_sent = Some((now, now_ms));
                }
                return Tick::Ping;
            }
        }
        Tick::Nothing
    }
}
