//! Prometheus metrics for a [`Hub`] (feature `metrics`), on
//! [`prometheus-client`](prometheus_client): an [`Observer`] that counts what the hub tells it,
//! and gauges read from the hub when scraped.
//!
//! ```
//! use std::sync::Arc;
//! use signaling_core::driver::metrics::Metrics;
//! use signaling_core::driver::{Config, Hub};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let metrics = Arc::new(Metrics::new());
//! let hub = Hub::new(Config::default().with_observer(Some(metrics.clone())));
//! // Serve this as `GET /metrics` with `Content-Type: text/plain; version=0.0.4`
//! // (`metrics::CONTENT_TYPE`), on a listener that is not public.
//! let text = metrics.render(&hub);
//! assert!(text.contains("signaling_connections_open 0"));
//! # }
//! ```
//!
//! Every metric, its type and labels (also in `docs/configuration.md`):
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `signaling_connections_open` | gauge | | WebSocket connections registered now |
//! | `signaling_connections_opened_total` | counter | | WebSocket connections registered |
//! | `signaling_disconnects_total` | counter | `cause` | connections ended, by [`DisconnectCause`](super::observe::DisconnectCause) |
//! | `signaling_upgrades_refused_total` | counter | `reason` | upgrade requests refused with an HTTP status |
//! | `signaling_users_logged_in` | gauge | | names held on this node now (suspended sessions included) |
//! | `signaling_logins_total` | counter | `result` | logins: `success`, or the error code |
//! | `signaling_calls_ringing_total` | counter | | offers that opened a call |
//! | `signaling_calls_answered_total` | counter | | calls answered |
//! | `signaling_calls_ended_total` | counter | `reason` | calls ended: `hung_up`, `cancelled`, `declined`, `no_answer`, `disconnected` |
//! | `signaling_messages_relayed_total` | counter | `kind` | offers, answers, candidates queued for their addressee |
//! | `signaling_error_replies_total` | counter | `code` | `error` replies sent, by code |
//! | `signaling_rate_limited_total` | counter | | messages refused over the rate limit |
//! | `signaling_sessions_suspended_total` | counter | | resumable sessions whose connection was lost |
//! | `signaling_sessions_resumed_total` | counter | `takeover` | sessions resumed (`true`: the old connection was still open) |
//! | `signaling_sessions_expired_total` | counter | | suspended sessions not resumed within their grace |
//! | `signaling_sessions_ended_total` | counter | `reason` | sessions ended (names freed), by reason |
//! | `signaling_resumes_refused_total` | counter | `code` | `resume` requests refused |
//! | `signaling_queued_bytes` | gauge | | bytes queued for all clients (the global budget's use) |
//! | `signaling_cluster_up` | gauge | | cluster mode only: 1 while the backend (Redis) is reachable |
//! | `signaling_cluster_envelopes_total` | counter | `direction` | cluster mode only: envelopes sent to (`out`) and received from (`in`) other nodes |
//! | `signaling_sessions_moved_total` | counter | | cluster mode only: sessions handed to another node |

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Hub;
use super::admission::Refusal;
use super::observe::{HubEvent, Observer};
use crate::protocol::RelayKind;
use crate::router::{CallEnd, Event, SessionEnd};

/// The `Content-Type` of [`Metrics::render`]'s text: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Label = [(&'static str, &'static str); 1];
type Counters = Family<Label, Counter>;

/// The hub's Prometheus metrics. Set it as the [`Config::observer`](super::Config::observer)
/// and serve [`render`](Self::render). See the [module](self) documentation for the list.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    cluster: Registry,
    connections_open: Gauge,
    opened: Counter,
    disconnects: Counters,
    refused: Counters,
    users: Gauge,
    logins: Counters,
    ringing: Counter,
    answered: Counter,
    ended: Counters,
    /// One counter per kind (offer, answer, candidate), looked up once: a relay costs one
    /// atomic add.
    relayed: (Counter, Counter, Counter),
    errors: Counters,
    rate_limited: Counter,
    suspended: Counter,
    resumed: Counters,
    expired: Counter,
    sessions_ended: Counters,
    resumes_refused: Counters,
    queued_bytes: Gauge,
    cluster_up: Gauge,
    envelopes: Counters,
    moved: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("signaling");
        let mut cluster = Registry::with_prefix("signaling");
        let m = Metrics {
            registry: Registry::default(),
            cluster: Registry::default(),
            connections_open: Gauge::default(),
            opened: Counter::default(),
            disconnects: Counters::default(),
            refused: Counters::default(),
            users: Gauge::default(),
            logins: Counters::default(),
            ringing: Counter::default(),
            answered: Counter::default(),
            ended: Counters::default(),
            relayed: Default::default(),
            errors: Counters::default(),
            rate_limited: Counter::default(),
            suspended: Counter::default(),
            resumed: Counters::default(),
            expired: Counter::default(),
            sessions_ended: Counters::default(),
            resumes_refused: Counters::default(),
            queued_bytes: Gauge::default(),
            cluster_up: Gauge::default(),
            envelopes: Counters::default(),
            moved: Counter::default(),
        };
        let r = &mut registry;
        r.register(
            "connections_open",
            "WebSocket connections registered now",
            m.connections_open.clone(),
        );
        r.register(
            "connections_opened",
            "WebSocket connections registered",
            m.opened.clone(),
        );
        r.register(
            "disconnects",
            "Connections ended, by cause (clean, lost, timeout, queue_overflow, rate_limit, shutdown, too_large, replaced)",
            m.disconnects.clone(),
        );
        r.register(
            "upgrades_refused",
            "Upgrade requests refused with an HTTP status, by reason",
            m.refused.clone(),
        );
        r.register(
            "users_logged_in",
            "Names held on this node now (suspended sessions included)",
            m.users.clone(),
        );
        r.register(
            "logins",
            "Logins, by result (success or the error code)",
            m.logins.clone(),
        );
        r.register(
            "calls_ringing",
            "Offers that opened a call",
            m.ringing.clone(),
        );
        r.register("calls_answered", "Calls answered", m.answered.clone());
        r.register("calls_ended", "Calls ended, by reason", m.ended.clone());
        let relayed = Counters::default();
        r.register(
            "messages_relayed",
            "Offers, answers and candidates queued for their addressee, by kind",
            relayed.clone(),
        );
        r.register(
            "error_replies",
            "error replies sent, by code",
            m.errors.clone(),
        );
        r.register(
            "rate_limited",
            "Messages refused over the rate limit",
            m.rate_limited.clone(),
        );
        r.register(
            "sessions_suspended",
            "Resumable sessions whose connection was lost",
            m.suspended.clone(),
        );
        r.register(
            "sessions_resumed",
            "Sessions resumed (takeover: the old connection was still open)",
            m.resumed.clone(),
        );
        r.register(
            "sessions_expired",
            "Suspended sessions not resumed within their grace period",
            m.expired.clone(),
        );
        r.register(
            "sessions_ended",
            "Sessions ended (names freed), by reason",
            m.sessions_ended.clone(),
        );
        r.register(
            "resumes_refused",
            "resume requests refused, by code",
            m.resumes_refused.clone(),
        );
        r.register(
            "queued_bytes",
            "Bytes queued for all clients",
            m.queued_bytes.clone(),
        );
        cluster.register(
            "cluster_up",
            "1 while the cluster backend (Redis) is reachable",
            m.cluster_up.clone(),
        );
        cluster.register(
            "cluster_envelopes",
            "Envelopes sent to (out) and received from (in) other nodes",
            m.envelopes.clone(),
        );
        cluster.register(
            "sessions_moved",
            "Sessions handed to another node",
            m.moved.clone(),
        );
        let kind = |kind: RelayKind| relayed.get_or_create(&[("kind", kind.as_str())]).clone();
        let relayed = (
            kind(RelayKind::Offer),
            kind(RelayKind::Answer),
            kind(RelayKind::Candidate),
        );
        Metrics {
            registry,
            cluster,
            relayed,
            ..m
        }
    }

    /// The metrics in the Prometheus text format ([`CONTENT_TYPE`]), the gauges read from
    /// `hub` now; the cluster's only when `hub` is in cluster mode.
    pub fn render(&self, hub: &Hub) -> String {
        self.connections_open.set(gauge(hub.connection_count()));
        self.users.set(gauge(hub.with_router(|r| r.user_count())));
        self.queued_bytes.set(gauge(hub.queued_bytes()));
        let cluster = hub.config().cluster.as_ref();
        if let Some(backend) = cluster {
            self.cluster_up.set(i64::from(backend.is_available()));
        }
        let mut text = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        if cluster.is_some() {
            let _ = prometheus_text::encode(&mut text, &self.cluster);
        }
        text
    }

    fn router(&self, event: &Event) {
        match event {
            Event::LoggedIn { .. } => inc(&self.logins, "result", "success"),
            Event::LoginRefused { code, .. } => inc(&self.logins, "result", code.as_str()),
            Event::CallRinging { .. } => {
                self.ringing.inc();
            }
            Event::CallAnswered { .. } => {
                self.answered.inc();
            }
            Event::CallEnded { reason, .. } => inc(&self.ended, "reason", call_end(*reason)),
            Event::ErrorReplied { code, .. } => inc(&self.errors, "code", code.as_str()),
            Event::RateLimited { .. } => {
                self.rate_limited.inc();
            }
            Event::SessionSuspended { .. } => {
                self.suspended.inc();
            }
            Event::SessionResumed { takeover, .. } => inc(
                &self.resumed,
                "takeover",
                if *takeover { "true" } else { "false" },
            ),
            Event::SessionMoved { .. } => {
                self.moved.inc();
            }
            Event::ResumeRefused { code, .. } => inc(&self.resumes_refused, "code", code.as_str()),
            Event::SessionEnded { reason, .. } => {
                if *reason == SessionEnd::GraceExpired {
                    self.expired.inc();
                }
                inc(&self.sessions_ended, "reason", session_end(*reason));
            }
        }
    }
}

impl Observer for Metrics {
    fn observe(&self, event: &HubEvent<'_>) {
        match event {
            HubEvent::Router(event) => self.router(event),
            HubEvent::Opened => {
                self.opened.inc();
            }
            HubEvent::Closed(cause) => inc(&self.disconnects, "cause", cause.as_str()),
            HubEvent::Refused(refusal) => inc(&self.refused, "reason", refusal_reason(refusal)),
            HubEvent::Relayed { kind } => {
                let (offer, answer, candidate) = &self.relayed;
                match kind {
                    RelayKind::Offer => offer.inc(),
                    RelayKind::Answer => answer.inc(),
                    RelayKind::Candidate => candidate.inc(),
                };
            }
            HubEvent::Forwarded => inc(&self.envelopes, "direction", "out"),
            HubEvent::Arrived => inc(&self.envelopes, "direction", "in"),
        }
    }
}

fn inc(family: &Counters, key: &'static str, value: &'static str) {
    family.get_or_create(&[(key, value)]).inc();
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn call_end(end: CallEnd) -> &'static str {
    match end {
        CallEnd::HungUp => "hung_up",
        CallEnd::Cancelled => "cancelled",
        CallEnd::Declined => "declined",
        CallEnd::NoAnswer => "no_answer",
        CallEnd::Disconnected => "disconnected",
    }
}

fn session_end(end: SessionEnd) -> &'static str {
    match end {
        SessionEnd::Closed => "closed",
        SessionEnd::ConnectionLost => "connection_lost",
        SessionEnd::GraceExpired => "grace_expired",
        SessionEnd::HistoryOverflow => "history_overflow",
        SessionEnd::HistoryLost => "history_lost",
        SessionEnd::NameLost => "name_lost",
    }
}

fn refusal_reason(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::ShuttingDown => "shutting_down",
        Refusal::TooManyConnections => "too_many_connections",
        Refusal::TooManyFromAddress => "too_many_from_address",
        Refusal::TooManyNotLoggedIn => "too_many_not_logged_in",
        Refusal::TooManyNotLoggedInFromAddress => "too_many_not_logged_in_from_address",
        Refusal::TooManyForUser => "too_many_for_user",
        Refusal::TooManyPending => "too_many_pending",
        Refusal::TooManyPendingFromAddress => "too_many_pending_from_address",
        Refusal::MissingOrigin => "missing_origin",
        Refusal::OriginNotAllowed => "origin_not_allowed",
        Refusal::Unauthorized(_) => "unauthorized",
        Refusal::Forbidden(_) => "forbidden",
        Refusal::BadHandshake(_) => "bad_handshake",
        Refusal::UnsupportedWebSocketVersion => "unsupported_version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::observe::DisconnectCause;

    #[test]
    fn every_disconnect_cause_has_a_distinct_label() {
        let metrics = Metrics::new();
        for cause in DisconnectCause::ALL {
            metrics.observe(&HubEvent::Closed(cause));
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &metrics.registry).expect("encode");
        for cause in DisconnectCause::ALL {
            let line = format!(
                "signaling_disconnects_total{{cause=\"{}\"}} 1",
                cause.as_str()
            );
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }
}
