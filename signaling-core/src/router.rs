//! The routing state machine: sessions, the name registry, call state and timers, with no IO.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{
    Envelope, ExportedCall, ExportedRedial, Remote, SessionExport, Unroutable, instant_at,
    offset_from,
};
use crate::error::{ErrorCode, RouterError};
use std::borrow::Cow;

use foldhash::fast::RandomState;

use crate::protocol::{
    AsciiSkeletons, ClientMessage, Decoded, HangUpReason, Payload, RawPayload, RelayKind,
    ReplyType, ServerMessage, SessionToken, Username, nfc,
};

/// Identifies one live connection. Allocated by the driver, never by the router; an id must not
/// be reused while it is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A per-connection token bucket: `per_second` messages a second on average, bursts of up to
/// `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: u32,
    /// Bucket size: how many messages may arrive at once after a quiet period.
    pub burst: u32,
    /// After this many rejected messages in a row the connection is closed
    /// ([`DisconnectReason::RateLimited`], WebSocket code 1008). `0` never closes.
    pub max_strikes: u32,
}

impl Default for RateLimit {
    /// 200 messages/s sustained, bursts of 2,000 (a browser's whole ICE gathering, or a burst of
    /// 1,000 candidates, passes), close after 200 rejected messages in a row.
    fn default() -> Self {
        RateLimit {
            per_second: 200,
            burst: 2_000,
            max_strikes: 200,
        }
    }
}

/// Bounds on what each side of a call may send before the callee answers, so that a caller
/// cannot fill the queue of a user who never picks up (issue 9: 100 candidates of 64 KB each
/// into a callee's queue). Each side of the call has its own counters; they stop applying once
/// the call is answered. A message over a bound is dropped and its sender gets `error`
/// `unanswered_limit`; nothing reaches the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnansweredLimits {
    /// Offers one side may send before the answer, counting the offer that opens the call
    /// (which is always let through): the default 4 is the offer plus 3 renegotiations.
    pub max_offers: u32,
    /// ICE candidates one side may send before the answer. Default 100 (a browser gathers tens
    /// of them).
    pub max_candidates: u32,
    /// Largest candidate payload before the answer, in bytes of the `candidate` field's raw
    /// JSON text. Default 2,048 (a real candidate is well under 1 KB).
    pub max_candidate_bytes: usize,
}

impl Default for UnansweredLimits {
    /// 4 offers (the offer and 3 renegotiations), 100 candidates of at most 2,048 bytes.
    fn default() -> Self {
        UnansweredLimits {
            max_offers: 4,
            max_candidates: 100,
            max_candidate_bytes: 2_048,
        }
    }
}

/// Resumable sessions: how long one outlives an abnormal drop of its connection, and how much
/// it keeps so that a resume can repair what the drop lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// How long a resumable session whose connection ended abnormally (no close frame) keeps
    /// its name and call, waiting for a `resume`. Default 30 s.
    pub grace: Duration,
    /// Most messages a session keeps for a resume. Default 256.
    pub max_history_messages: usize,
    /// Most bytes (encoded size, approximately) a session keeps for a resume. Default 128 KiB.
    /// While a session is suspended, messages it has not been sent yet may not be dropped:
    /// when they alone exceed a bound the session ends as if its grace had expired.
    pub max_history_bytes: usize,
}

impl Default for SessionConfig {
    /// 30 s of grace, a history of 256 messages and 128 KiB.
    fn default() -> Self {
        SessionConfig {
            grace: Duration::from_secs(30),
            max_history_messages: 256,
            max_history_bytes: 128 * 1024,
        }
    }
}

impl SessionConfig {
    /// Sets the grace period.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets the history bounds (messages and bytes).
    pub fn with_history(mut self, messages: usize, bytes: usize) -> Self {
        self.max_history_messages = messages;
        self.max_history_bytes = bytes;
        self
    }
}

/// How long a caller whose offer was declined or rang out must wait before offering the same
/// callee again: `initial`, doubled for each further decline or ring-out of that callee, at
/// most `max`; forgotten once `max` has passed after the last back-off ended. Without it a
/// caller re-offering at every hang-up keeps its victim busy for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedialBackoff {
    /// The first back-off. Default 30 s.
    pub initial: Duration,
    /// The longest back-off. Default 10 minutes.
    pub max: Duration,
}

impl Default for RedialBackoff {
    /// 30 s, doubling up to 10 minutes.
    fn default() -> Self {
        RedialBackoff {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(600),
        }
    }
}

/// How the router behaves. Transport limits (sizes, timeouts) live in the driver's config.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RouterConfig {
    /// Per-connection rate limit; `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    /// What each side of a call may send before the callee answers; `None` turns the bounds
    /// off.
    pub unanswered: Option<UnansweredLimits>,
    /// Resumable sessions: grace period and history bounds.
    pub sessions: SessionConfig,
    /// An offer not answered within this time ends the pending call: both sides get `close`
    /// with `"reason":"no_answer"`. Default 45 s; `None` lets calls ring forever.
    pub ring_timeout: Option<Duration>,
    /// The back-off after a declined or rung-out offer; `None` turns it off.
    pub redial_backoff: Option<RedialBackoff>,
    /// Names are shared with other nodes (cluster mode, `docs/cluster.md`): a login that passes
    /// the local checks is not granted at once but asked of the shared registry
    /// ([`Output::Claim`], answered with [`Router::handle_claimed`]), and an ended session gives
    /// its name back ([`Output::Release`]). Off by default: a single node's registry is its own.
    pub claim_names: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            rate_limit: Some(RateLimit::default()),
            unanswered: Some(UnansweredLimits::default()),
            sessions: SessionConfig::default(),
            ring_timeout: Some(Duration::from_secs(45)),
            redial_backoff: Some(RedialBackoff::default()),
            claim_names: false,
        }
    }
}

impl RouterConfig {
    /// Sets (or with `None`, turns off) the per-connection rate limit.
    pub fn with_rate_limit(mut self, rate_limit: Option<RateLimit>) -> Self {
        self.rate_limit = rate_limit;
        self
    }

    /// Sets (or with `None`, turns off) the bounds on a call that is not answered yet.
    pub fn with_unanswered_limits(mut self, limits: Option<UnansweredLimits>) -> Self {
        self.unanswered = limits;
        self
    }

    /// Sets the resumable sessions' grace period and history bounds.
    pub fn with_sessions(mut self, sessions: SessionConfig) -> Self {
        self.sessions = sessions;
        self
    }

    /// Sets (or with `None`, turns off) the ring timeout.
    pub fn with_ring_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.ring_timeout = timeout;
        self
    }

    /// Sets (or with `None`, turns off) the back-off after a declined or rung-out offer.
    pub fn with_redial_backoff(mut self, backoff: Option<RedialBackoff>) -> Self {
        self.redial_backoff = backoff;
        self
    }

    /// Shares names with other nodes through claims ([`RouterConfig::claim_names`]).
    pub fn with_claim_names(mut self, claim: bool) -> Self {
        self.claim_names = claim;
        self
    }
}

/// Why the router asks the driver to end a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client kept sending over its rate limit (WebSocket close code 1008).
    RateLimited,
    /// Its session was resumed on another connection (close code 4000).
    ResumedElsewhere,
    /// Its session ended while it was open: a resume from another connection asked for
    /// messages no longer kept (`history_lost`), which ends the session (close code 4001).
    SessionEnded,
    /// Cluster mode: the shared registry says another node holds its name now (this node was
    /// cut off from it for longer than a lease): the session ended here (close code 4001).
    NameLost,
}

impl DisconnectReason {
    /// The WebSocket close code to send (RFC 6455 §7.4.1; 4000–4999 are the application's).
    pub fn code(self) -> u16 {
        match self {
            DisconnectReason::RateLimited => 1008,
            DisconnectReason::ResumedElsewhere => 4000,
            DisconnectReason::SessionEnded | DisconnectReason::NameLost => 4001,
        }
    }

    /// The close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            DisconnectReason::RateLimited => "rate limit exceeded",
            DisconnectReason::ResumedElsewhere => "session resumed on another connection",
            DisconnectReason::SessionEnded => "session ended: its messages could not be repaired",
            DisconnectReason::NameLost => "session ended: another node holds its name now",
        }
    }
}

/// A message for one connection.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The live connection to send it on.
    pub to: ConnectionId,
    /// What to send; [`ServerMessage::to_json_with_seq`] gives the frame text.
    pub message: ServerMessage,
    /// The message's sequence number in a resumable session (`"seq"` on the wire).
    pub seq: Option<u64>,
}

impl Transmit {
    /// The frame text: the message with its `seq`, if any.
    pub fn to_json(&self) -> String {
        self.message.to_json_with_seq(self.seq)
    }

    /// [`to_json`](Self::to_json), taking the frame the router already built where it did
    /// (a relay to a session that keeps nothing for a resume: its payload was copied once,
    /// into the frame), instead of encoding the message again.
    pub fn into_frame(self) -> String {
        match self.message {
            ServerMessage::Relay {
                kind,
                payload,
                from,
            } if self.seq.is_none() => match payload.into_frame_for(kind, &from) {
                Ok(frame) => frame,
                Err(payload) => ServerMessage::Relay {
                    kind,
                    payload,
                    from,
                }
                .to_json(),
            },
            message => message.to_json_with_seq(self.seq),
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallEnd {
    /// A side sent `close` after the answer.
    HungUp,
    /// The caller sent `close` before the answer.
    Cancelled,
    /// The callee sent `close` before answering.
    Declined,
    /// Nobody answered within the ring timeout.
    NoAnswer,
    /// A side's session ended (disconnect, grace expiry, …).
    Disconnected,
}

/// Why a session (a logged-in name) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// Its connection closed cleanly, or was closed by the router (rate limit).
    Closed,
    /// The connection of a session that is not resumable was lost.
    ConnectionLost,
    /// A suspended session was not resumed within its grace period.
    GraceExpired,
    /// A suspended session was sent more than its history holds.
    HistoryOverflow,
    /// A resume asked for messages the history no longer had.
    HistoryLost,
    /// Cluster mode: another node holds the name now (see [`Router::handle_names_lost`]).
    NameLost,
}

/// What happened, for whoever watches the router (logs, metrics, a cluster backend). Events
/// never need an answer; a driver may ignore them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A login succeeded.
    LoggedIn {
        /// The connection.
        conn: ConnectionId,
        /// The name it holds now.
        username: Username,
        /// Whether the session is resumable.
        resumable: bool,
    },
    /// A login was refused with `code`.
    LoginRefused {
        /// The connection.
        conn: ConnectionId,
        /// Why.
        code: ErrorCode,
    },
    /// An offer opened a call: the callee's side rings until it answers.
    CallRinging {
        /// Who offered.
        caller: Username,
        /// Who was offered.
        callee: Username,
    },
    /// The call was answered.
    CallAnswered {
        /// Who offered.
        caller: Username,
        /// Who answered.
        callee: Username,
    },
    /// A call (ringing or answered) ended.
    CallEnded {
        /// Who offered.
        caller: Username,
        /// Who was offered.
        callee: Username,
        /// How.
        reason: CallEnd,
    },
    /// An `error` reply with `code` went to `conn`.
    ErrorReplied {
        /// The connection.
        conn: ConnectionId,
        /// The code.
        code: ErrorCode,
    },
    /// A message over the rate limit was refused.
    RateLimited {
        /// The connection.
        conn: ConnectionId,
        /// Refused messages in a row, this one included.
        strikes: u32,
    },
    /// A resumable session lost its connection abnormally and waits for a resume.
    SessionSuspended {
        /// The session's name.
        username: Username,
    },
    /// A session moved to a new connection.
    SessionResumed {
        /// The session's name.
        username: Username,
        /// The new connection.
        conn: ConnectionId,
        /// The old connection was still open (it is being closed with 4000).
        takeover: bool,
    },
    /// Cluster mode: a session left this node for another one (a `resume` there took it:
    /// [`Router::handle_handover`]; or this node is shutting down: [`Router::handle_evacuate`]).
    /// Its name and call go on over there; nothing ended.
    SessionMoved {
        /// The session's name.
        username: Username,
    },
    /// A `resume` was refused with `code`.
    ResumeRefused {
        /// The connection.
        conn: ConnectionId,
        /// Why.
        code: ErrorCode,
    },
    /// A session ended: its name is free again.
    SessionEnded {
        /// The name it held.
        username: Username,
        /// Why.
        reason: SessionEnd,
    },
}

/// What the router asks of its driver, and what it says happened. Drain with
/// [`Router::poll_output`] after every `handle_*`.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send a message on a connection.
    Transmit(Transmit),
    /// End a connection with a WebSocket close frame (code and reason from `reason`), then
    /// call [`Router::handle_disconnect`] for it once the transport is gone. The router
    /// ignores further input from it meanwhile.
    Disconnect {
        /// The connection to close.
        conn: ConnectionId,
        /// Why; gives the close code and reason.
        reason: DisconnectReason,
    },
    /// Something happened (nothing to send).
    Event(Event),
    /// Cluster mode ([`RouterConfig::claim_names`]): ask the shared registry for `name` (and
    /// its confusable `skeleton`) for the login on `conn`, then report with
    /// [`Router::handle_claimed`]. Hold `conn`'s further input until then, so that its
    /// messages keep their order.
    Claim {
        /// The connection logging in.
        conn: ConnectionId,
        /// The name it asks for (NFC).
        name: Username,
        /// The name's TR39 skeleton: one name per look, cluster-wide.
        skeleton: Arc<str>,
    },
    /// Cluster mode: `name` (and its skeleton) is no longer held here; give it back to the
    /// shared registry.
    Release {
        /// The name.
        name: Username,
        /// Its skeleton.
        skeleton: Arc<str>,
    },
    /// Cluster mode: a message for a user who is not on this node. Carry it to the node that
    /// holds `envelope.to` and hand it to that node's [`Router::handle_remote`]; if it cannot
    /// be carried, tell this router with [`Router::handle_unroutable`]. Envelopes for the same
    /// addressee must arrive in the order they come out.
    Forward(Envelope),
    /// Cluster mode: a `resume` on `conn` named a token this node does not know; it may be
    /// another node's. Get the session from the node that issued the token (its
    /// [`Router::handle_handover`]) or from wherever a node that shut down left it, and hand
    /// it in with [`Router::handle_imported`]; or hand in the refusal with
    /// [`Router::handle_fetch_refused`] (`invalid_token` when nobody has it, `unavailable`
    /// when it cannot be asked). Hold `conn`'s further input until then, as for a claim.
    Fetch {
        /// The resuming connection.
        conn: ConnectionId,
        /// The token it sent.
        token: SessionToken,
        /// The `lastSeq` it sent.
        last_seq: u64,
        /// The name an authenticator verified for `conn`, if any: only that user's session
        /// may be handed over (`unauthorized`).
        verified: Option<Username>,
    },
}

/// A resumable session that left this node because the node shuts down
/// ([`Router::handle_evacuate`]): keep the export where other nodes find it for
/// `grace_left`, then close `conn` (if any) with 1012 so that its client resumes elsewhere.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Evacuated {
    /// The session.
    pub export: SessionExport,
    /// Its connection, if it had one open (it is detached: its input is ignored).
    pub conn: Option<ConnectionId>,
    /// How long it may still wait for a resume: the whole grace for a connected session,
    /// what is left of it for a suspended one.
    pub grace_left: Duration,
}

/// What the shared registry said to an [`Output::Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimOutcome {
    /// The name (and its skeleton) is now this node's.
    Won,
    /// Another node holds the name: `name_taken`.
    Taken,
    /// Another node holds a name that looks like it (the same skeleton): `name_taken`.
    LookAlike,
    /// The registry could not be asked (Redis unreachable): `unavailable`.
    Unavailable,
}

impl Output {
    /// The connection this output must be sent on, if it is a transmit or a disconnect.
    pub fn connection(&self) -> Option<ConnectionId> {
        match self {
            Output::Transmit(t) => Some(t.to),
            Output::Disconnect { conn, .. }
            | Output::Claim { conn, .. }
            | Output::Fetch { conn, .. } => Some(*conn),
            Output::Event(_) | Output::Release { .. } | Output::Forward(_) => None,
        }
    }
}

/// Where the router gets session tokens: the driver hands in a cryptographically secure
/// source (the pure router has no randomness of its own). Tokens must be unguessable and
/// never repeat.
pub trait TokenSource: Send + 'static {
    /// A fresh token.
    fn next_token(&mut self) -> SessionToken;
}

impl<F: FnMut() -> SessionToken + Send + 'static> TokenSource for F {
    fn next_token(&mut self) -> SessionToken {
        self()
    }
}

struct Tokens(Option<Box<dyn TokenSource>>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// A timer's place in [`Router::timers`]: when, and a counter that makes the key unique.
type TimerKey = (Instant, u64);

#[derive(Debug, Clone)]
enum Timer {
    /// A suspended session's grace period ends.
    Grace(Username),
    /// A call that nobody answered stops ringing.
    Ring { caller: Username, callee: Username },
}

/// One side of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CallSide {
    /// The other side.
    peer: Username,
    /// This side offered.
    caller: bool,
    /// The call has been answered.
    answered: bool,
    /// Offers this side relayed into the call while it was not answered (the opening one
    /// included).
    offers: u32,
    /// Candidates this side relayed into the call while it was not answered.
    candidates: u32,
    /// The ring timer, while the call is not answered (the same on both sides).
    ring: Option<TimerKey>,
}

/// A message kept for a resume.
#[derive(Debug)]
struct Kept {
    seq: u64,
    message: ServerMessage,
    bytes: usize,
}

/// What a resumable session keeps.
#[derive(Debug)]
struct Resumable {
    token: SessionToken,
    /// The last sequence number given out.
    seq: u64,
    /// The highest sequence number handed to a connection.
    sent: u64,
    history: VecDeque<Kept>,
    history_bytes: usize,
    /// The grace timer, while the session is suspended.
    grace: Option<TimerKey>,
}

/// A caller's back-off before offering `callee` again.
#[derive(Debug, Clone)]
struct Redial {
    callee: Username,
    until: Instant,
    strikes: u32,
}

/// Back-offs kept per caller; the oldest goes first.
const MAX_REDIALS: usize = 16;

/// A login waiting for its claim in the shared registry (cluster mode).
#[derive(Debug)]
struct PendingClaim {
    conn: ConnectionId,
    skeleton: Arc<str>,
    resumable: bool,
    /// The name as the client wrote it, when that is not its NFC form (a refusal quotes it).
    written: Option<Box<str>>,
}

/// A logged-in name: the state that outlives a connection. Kept small (32 bytes): every
/// idle user holds one.
#[derive(Debug)]
struct Session {
    /// `None` while suspended.
    conn: Option<ConnectionId>,
    /// Boxed: an idle user has no call.
    call: Option<Box<CallSide>>,
    /// Boxed: a plain session stays small.
    resume: Option<Box<Resumable>>,
}

/// What a relay needs to know of its addressee's session on this node, read in the same
/// look-up that found the name.
#[derive(Debug, Clone, Copy)]
struct Addressee {
    /// Its connection; `None` while suspended.
    conn: Option<ConnectionId>,
    /// In a call (ringing or answered).
    busy: bool,
    /// Not resumable: a message to it goes straight to `conn` (no sequence, nothing kept).
    plain: bool,
}

impl Addressee {
    fn of(session: &Session) -> Self {
        Addressee {
            conn: session.conn,
            busy: session.call.is_some(),
            plain: session.resume.is_none(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
    strikes: u32,
}

impl TokenBucket {
    fn new(limit: &RateLimit, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(limit.burst),
            last: now,
            strikes: 0,
        }
    }

    /// Takes one token; false when the bucket is empty.
    fn take(&mut self, limit: &RateLimit, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * f64::from(limit.per_second))
            .min(f64::from(limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            true
        } else {
            self.strikes = self.strikes.saturating_add(1);
            false
        }
    }
}

#[derive(Debug)]
struct Connection {
    /// The session (name) this connection holds.
    session: Option<Username>,
    /// A name verified by an authenticator: the only one this connection may log in with.
    bound: Option<Username>,
    /// Created at the first message, when the router first learns the time.
    bucket: Option<TokenBucket>,
    /// The router asked the driver to close it; input is ignored until the disconnect.
    closing: bool,
    /// The driver says its outbound queue is full: relays to it are refused to their senders.
    congested: bool,
    /// Cluster mode: its login waits for a claim (the pending claim is in
    /// [`Router::claims`]), or its `resume` for the session from another node
    /// ([`Output::Fetch`]).
    claiming: bool,
}

/// The pure routing state machine: sessions (logged-in names, which may outlive their
/// connection), who is in a call with whom, the protocol's rules and its timers.
///
/// Inputs go in through `handle_*`; outputs come out of [`poll_output`](Router::poll_output),
/// which must be drained after every input, in order (outputs for the same connection must be
/// sent in the order they come out). Time is an argument: after each input ask
/// [`poll_timeout`](Router::poll_timeout) when to call [`handle_timeout`](Router::handle_timeout).
/// The router does no IO, reads no clock, spawns nothing, takes no locks and draws no random
/// numbers (session tokens come from a [`TokenSource`] the driver hands in).
///
/// `Err` from a `handle_*` means the caller broke the contract (an id that is not live); a
/// client's mistakes never produce `Err`, they produce `error` replies to that client.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    connections: HashMap<ConnectionId, Connection, RandomState>,
    /// The name registry: one session per name. Keys come from clients: foldhash with a
    /// per-process random seed (not a fixed-seed hash an attacker could precompute collisions
    /// for), and several times faster than SipHash.
    sessions: HashMap<Username, Session, RandomState>,
    /// The TR39 skeleton of every logged-in name: one name per look, checked at login only
    /// (relays look names up in `sessions`). Shares the name's string when the two are equal.
    skeletons: HashMap<Arc<str>, Username, RandomState>,
    /// The live token of every resumable session.
    tokens: HashMap<SessionToken, Username, RandomState>,
    /// The back-offs of callers who were declined or not answered, by caller.
    redials: HashMap<Username, Vec<Redial>, RandomState>,
    /// Logins waiting for their claim (cluster mode), by name: the name and its skeleton are
    /// reserved here meanwhile.
    claims: HashMap<Username, PendingClaim, RandomState>,
    token_source: Tokens,
    /// Grace periods and ring timeouts, soonest first.
    timers: BTreeMap<TimerKey, Timer>,
    next_timer: u64,
    ascii_skeletons: AsciiSkeletons,
    /// Where a login's skeleton is computed (kept to save an allocation per login).
    skeleton_buf: String,
    outputs: VecDeque<Output>,
    /// Sessions to end once the current input is handled (a suspended session's history
    /// overflowed).
    overflowed: Vec<Username>,
    /// Bytes kept in all sessions' histories.
    retained_bytes: usize,
    /// The driver says the server's memory budget is nearly used up: relays are refused.
    overloaded: bool,
    /// Cluster mode: (remote user, local user) for every call of a local user with a user of
    /// another node, so that [`Router::handle_peer_gone`] finds the calls a dead node ends.
    remote_peers: BTreeSet<(Username, Username)>,
    /// Cluster mode: this node may have lost its names (cut off from the shared registry for
    /// longer than a lease): relays are refused with `unavailable`.
    detached: bool,
    /// Cluster mode: this node handed its sessions over ([`Router::handle_evacuate`]): relays
    /// to users it does not hold are refused with `unavailable` (they are on their way to
    /// another node), not `unknown_user`.
    evacuated: bool,
    /// Cluster mode: the user of another node each connection last sent a relay to (only
    /// connections that did). Refusals of its relays come back from that node, so the
    /// connection's own error replies go there and back too ([`Remote::Echo`]): its replies
    /// keep the order of its messages. Beside [`Connection`], which every idle user holds.
    remote_tails: HashMap<ConnectionId, Username, RandomState>,
}

impl Default for Router {
    fn default() -> Self {
        Router::new(RouterConfig::default())
    }
}

impl Router {
    /// A router with no connections and no token source (a `resumable` login then gets a
    /// plain session: see [`with_token_source`](Self::with_token_source)).
    pub fn new(config: RouterConfig) -> Self {
        Router {
            config,
            connections: HashMap::default(),
            sessions: HashMap::default(),
            skeletons: HashMap::default(),
            tokens: HashMap::default(),
            redials: HashMap::default(),
            claims: HashMap::default(),
            token_source: Tokens(None),
            timers: BTreeMap::new(),
            next_timer: 0,
            ascii_skeletons: AsciiSkeletons::new(),
            skeleton_buf: String::new(),
            outputs: VecDeque::new(),
            overflowed: Vec::new(),
            retained_bytes: 0,
            overloaded: false,
            remote_peers: BTreeSet::new(),
            detached: false,
            evacuated: false,
            remote_tails: HashMap::default(),
        }
    }

    /// Hands in where session tokens come from: without one, `"resumable":true` logins get a
    /// plain session (the reply has no token). The driver passes a CSPRNG.
    pub fn with_token_source(mut self, source: impl TokenSource) -> Self {
        self.token_source = Tokens(Some(Box::new(source)));
        self
    }

    /// The configuration this router runs with.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// A new transport connection is open. Call before any other input for `conn`.
    pub fn handle_connect(&mut self, conn: ConnectionId) -> Result<(), RouterError> {
        self.connect(conn, None)
    }

    /// A new connection whose user an authenticator has already verified: it may only log in
    /// (or resume) as `username` (any other name gets `unauthorized`).
    pub fn handle_connect_verified(
        &mut self,
        conn: ConnectionId,
        username: Username,
    ) -> Result<(), RouterError> {
        self.connect(conn, Some(username))
    }

    fn connect(&mut self, conn: ConnectionId, bound: Option<Username>) -> Result<(), RouterError> {
        if self.connections.contains_key(&conn) {
            return Err(RouterError::AlreadyConnected(conn));
        }
        self.connections.insert(
            conn,
            Connection {
                session: None,
                bound,
                bucket: None,
                closing: false,
                congested: false,
                claiming: false,
            },
        );
        Ok(())
    }

    /// One text frame arrived on `conn` at `now`. Decode errors and protocol violations become
    /// `error` replies to `conn`.
    pub fn handle_text(
        &mut self,
        conn: ConnectionId,
        text: &str,
        now: Instant,
    ) -> Result<(), RouterError> {
        if !self.admit(conn, now)? {
            return Ok(());
        }
        match Decoded::decode(text) {
            Ok(message) => self.dispatch(conn, message, now),
            Err(e) => self.refuse_input(conn, e),
        }
        self.settle();
        Ok(())
    }

    /// Answers a frame that could not be decoded.
    #[cold]
    #[inline(never)]
    fn refuse_input(&mut self, conn: ConnectionId, e: crate::DecodeError) {
        self.refusal_event(conn, e.reply_type, e.code);
        self.reply(conn, e.reply());
    }

    /// An already decoded message arrived on `conn` at `now` (for transports that decode
    /// themselves, and for tests).
    pub fn handle_message(
        &mut self,
        conn: ConnectionId,
        message: ClientMessage,
        now: Instant,
    ) -> Result<(), RouterError> {
        if self.admit(conn, now)? {
            self.dispatch(conn, message.into(), now);
            self.settle();
        }
        Ok(())
    }

    /// A binary frame of `len` bytes arrived on `conn`: the protocol is text only, so the client
    /// gets `binary_not_supported` and the connection stays open.
    pub fn handle_binary(
        &mut self,
        conn: ConnectionId,
        len: usize,
        now: Instant,
    ) -> Result<(), RouterError> {
        if self.admit(conn, now)? {
            self.reply_error(
                conn,
                ErrorCode::BinaryNotSupported,
                format!("binary frames are not supported ({len} bytes ignored); send JSON text"),
            );
        }
        Ok(())
    }

    /// A WebSocket ping or pong arrived on `conn`: it counts against the rate limit like any
    /// other frame (a flood of control frames is answered with `rate_limited`, then closed).
    pub fn handle_control(&mut self, conn: ConnectionId, now: Instant) -> Result<(), RouterError> {
        self.admit(conn, now).map(|_| ())
    }

    /// The client on `conn` has provably received every message of its session up to `seq`
    /// (it answered a ping written after them): they leave the history. A later resume with
    /// a lower `lastSeq` is refused with `history_lost`.
    pub fn handle_acknowledged(&mut self, conn: ConnectionId, seq: u64) -> Result<(), RouterError> {
        let c = self
            .connections
            .get(&conn)
            .ok_or(RouterError::UnknownConnection(conn))?;
        let Some(r) = c
            .session
            .as_ref()
            .and_then(|name| self.sessions.get_mut(name))
            .and_then(|s| s.resume.as_deref_mut())
        else {
            return Ok(());
        };
        while let Some(front) = r.history.front() {
            if front.seq > seq.min(r.sent) {
                break;
            }
            r.history_bytes -= front.bytes;
            self.retained_bytes -= front.bytes;
            r.history.pop_front();
        }
        Ok(())
    }

    /// A relay from `sender` to `recipient` did not fit in the recipient's queue (it raced
    /// the [`handle_backpressure`](Self::handle_backpressure) report): the sender is told
    /// `recipient_overloaded`, so the loss is not silent.
    pub fn handle_undeliverable(
        &mut self,
        sender: ConnectionId,
        recipient: ConnectionId,
    ) -> Result<(), RouterError> {
        if !self.connections.contains_key(&sender) {
            return Err(RouterError::UnknownConnection(sender));
        }
        let name = self.username(recipient).map_or("", Username::as_str);
        let message =
            format!("user {name:?} is not reading fast enough; message dropped, retry later");
        self.reply_error(sender, ErrorCode::RecipientOverloaded, message);
        self.settle();
        Ok(())
    }

    /// The driver's outbound queue for `conn` filled up (`true`) or drained again (`false`).
    /// While it is full, relays (offer, answer, candidate) addressed to `conn` are refused to
    /// their senders with `recipient_overloaded` before any call state changes, so the sender
    /// pays for its traffic and `conn` keeps its connection. `close` still reaches it.
    pub fn handle_backpressure(
        &mut self,
        conn: ConnectionId,
        congested: bool,
    ) -> Result<(), RouterError> {
        let c = self
            .connections
            .get_mut(&conn)
            .ok_or(RouterError::UnknownConnection(conn))?;
        c.congested = congested;
        Ok(())
    }

    /// The server's memory budget for queued messages is nearly used up (`true`) or has room
    /// again (`false`). While it is, every relay is refused to its sender with
    /// `server_overloaded`; logins, errors and `close` still go out.
    pub fn handle_overload(&mut self, overloaded: bool) {
        self.overloaded = overloaded;
    }

    /// Whether relays to `conn` are refused because its queue is full.
    pub fn is_congested(&self, conn: ConnectionId) -> bool {
        self.connections.get(&conn).is_some_and(|c| c.congested)
    }

    /// Whether every relay is refused because the server's memory budget is nearly used up.
    pub fn is_overloaded(&self) -> bool {
        self.overloaded
    }

    /// The transport of `conn` is gone after a **clean** close (the client sent a close
    /// frame, or the router asked for the close). Ends its session at once: frees its name
    /// and tells its call partner, if any, `close` exactly once. Outputs still queued for
    /// `conn` are dropped.
    pub fn handle_disconnect(&mut self, conn: ConnectionId) -> Result<(), RouterError> {
        let gone = self.remove_connection(conn)?;
        if let Some(name) = gone.session {
            self.end_session(&name, SessionEnd::Closed);
        }
        self.settle();
        Ok(())
    }

    /// The transport of `conn` ended **abnormally** at `now` (no close frame: a reset, a
    /// heartbeat timeout, a transport error, a client that stopped reading). A resumable
    /// session is suspended for [`SessionConfig::grace`]: its name and call stay, its partner
    /// is told nothing, and messages to it are kept for the resume. Any other session ends as
    /// with [`handle_disconnect`](Self::handle_disconnect).
    pub fn handle_connection_lost(
        &mut self,
        conn: ConnectionId,
        now: Instant,
    ) -> Result<(), RouterError> {
        let gone = self.remove_connection(conn)?;
        let Some(name) = gone.session else {
            return Ok(());
        };
        let resumable = self.sessions.get(&name).is_some_and(|s| s.resume.is_some());
        if !resumable || gone.closing {
            // Not resumable, or closed by the router itself (rate limit): no grace.
            let reason = if gone.closing {
                SessionEnd::Closed
            } else {
                SessionEnd::ConnectionLost
            };
            self.end_session(&name, reason);
        } else {
            self.suspend(&name, now);
        }
        self.settle();
        Ok(())
    }

    fn remove_connection(&mut self, conn: ConnectionId) -> Result<Connection, RouterError> {
        let gone = self
            .connections
            .remove(&conn)
            .ok_or(RouterError::UnknownConnection(conn))?;
        if !self.remote_tails.is_empty() {
            self.remote_tails.remove(&conn);
        }
        if self.outputs.iter().any(|o| o.connection() == Some(conn)) {
            self.outputs.retain(|o| o.connection() != Some(conn));
        }
        if gone.claiming {
            // Its claim may be in flight: a late `Won` is given back (`handle_claimed`).
            if let Some(name) = self
                .claims
                .iter()
                .find(|(_, c)| c.conn == conn)
                .map(|(name, _)| name.clone())
            {
                if let Some(claim) = self.claims.remove(&name) {
                    self.skeletons.remove(&claim.skeleton);
                }
            }
        }
        Ok(gone)
    }

    /// Cluster mode: the shared registry answered the [`Output::Claim`] of `name` for `conn`.
    /// `Won` completes the login (the usual reply); `Taken` and `Unavailable` refuse it
    /// (`name_taken`, `unavailable`). A claim won for a connection that is gone (or for a name
    /// no longer pending here) is given back with [`Output::Release`].
    pub fn handle_claimed(
        &mut self,
        conn: ConnectionId,
        name: &Username,
        outcome: ClaimOutcome,
    ) -> Result<(), RouterError> {
        let pending = self.claims.get(name).is_some_and(|c| c.conn == conn);
        if !pending {
            let unused = !self.claims.contains_key(name) && !self.sessions.contains_key(name);
            if outcome == ClaimOutcome::Won && unused {
                let skeleton = self.skeleton_of(name);
                self.outputs.push_back(Output::Release {
                    name: name.clone(),
                    skeleton,
                });
            }
            return Ok(());
        }
        let Some(claim) = self.claims.remove(name) else {
            return Ok(());
        };
        if let Some(c) = self.connections.get_mut(&conn) {
            c.claiming = false;
        }
        match outcome {
            ClaimOutcome::Won => {
                self.establish(conn, name.clone(), claim.skeleton, claim.resumable);
            }
            ClaimOutcome::Taken => {
                self.skeletons.remove(&claim.skeleton);
                let written = claim.written.as_deref().unwrap_or(name.as_str());
                let message = format!("the name {written:?} is taken");
                self.login_failed(conn, ErrorCode::NameTaken, message);
            }
            ClaimOutcome::LookAlike => {
                self.skeletons.remove(&claim.skeleton);
                self.login_failed(conn, ErrorCode::NameTaken, look_alike_message(name));
            }
            ClaimOutcome::Unavailable => {
                self.skeletons.remove(&claim.skeleton);
                let message = "the shared name registry is unreachable; retry later".to_string();
                self.login_failed(conn, ErrorCode::Unavailable, message);
            }
        }
        self.settle();
        Ok(())
    }

    /// Cluster mode: an [`Envelope`] another node's router sent to a user of this node
    /// arrived at `now`. Checks the receiver's side and delivers it, or answers the sender's
    /// node with [`Remote::Refused`] (an [`Output::Forward`]). Harmless for users this node
    /// does not hold (the envelope was late): a relay is refused with `unknown_user`, the rest
    /// is ignored.
    pub fn handle_remote(&mut self, envelope: Envelope, now: Instant) {
        let Envelope { from, to, body } = envelope;
        match body {
            Remote::Relay {
                kind,
                payload,
                opens_call,
            } => self.remote_relay(from, to, kind, payload, opens_call),
            Remote::HangUp { end } => self.remote_hang_up(from, to, end, now),
            Remote::Probe {
                kind,
                busy_first,
                code,
                message,
            } => {
                let (code, message) = match self.sessions.get(&to) {
                    // On its way to another node: the sender's own rule stands.
                    None if self.evacuated => (code, message),
                    None => (ErrorCode::UnknownUser, unknown_user_message(to.as_str())),
                    Some(s) if busy_first && s.call.is_some() => {
                        (ErrorCode::Busy, busy_message(&to))
                    }
                    Some(_) => (code, message),
                };
                self.refuse(from, to, kind, false, code, message);
            }
            Remote::Echo {
                back: false,
                code,
                message,
            } => {
                let back = Remote::Echo {
                    back: true,
                    code,
                    message,
                };
                self.forward(to, from, back);
            }
            Remote::Echo {
                back: true,
                code,
                message,
            } => self.user_error_quiet(&to, code, message),
            Remote::Refused {
                kind: _,
                opened,
                code,
                message,
            } => {
                // `to` sent something to `from` that `from`'s node refused.
                if opened {
                    self.drop_pending_call(&to, &from);
                }
                self.user_error(&to, code, message);
            }
            Remote::CallCheck => {
                let in_call = self
                    .sessions
                    .get(&to)
                    .and_then(|s| s.call.as_deref())
                    .is_some_and(|c| c.peer == from);
                if self.sessions.contains_key(&to) && !in_call {
                    // Its hang-up was lost while `from`'s session moved: say it again.
                    let end = CallEnd::Disconnected;
                    self.forward(to, from, Remote::HangUp { end });
                }
            }
        }
        self.settle();
    }

    /// Cluster mode: the backend could not carry `envelope` (an [`Output::Forward`] of this
    /// router): nobody holds the addressee's name, or the shared component is unreachable.
    /// The sender of a relay gets the error a single node would give (`unknown_user`) or
    /// `unavailable`; a call it opened is cleared, and a partner nobody holds any more ends
    /// the call (`close`) as if it had left. Hang-ups and refusals that cannot be carried are
    /// dropped (the other side's node ends that call when it finds the user gone).
    pub fn handle_unroutable(&mut self, envelope: Envelope, why: Unroutable) {
        let Envelope { from, to, body } = envelope;
        let (kind, opens_call) = match body {
            Remote::Relay {
                kind, opens_call, ..
            } => (kind, opens_call),
            Remote::Probe { code, message, .. } => {
                let (code, message) = match why {
                    Unroutable::UnknownUser => {
                        (ErrorCode::UnknownUser, unknown_user_message(to.as_str()))
                    }
                    // Whether the user exists cannot be asked: the sender's own rule stands.
                    Unroutable::Unavailable => (code, message),
                };
                self.user_error(&from, code, message);
                return self.settle();
            }
            Remote::Echo {
                back: false,
                code,
                message,
            } => {
                // Nothing can be pending from a node nobody can reach: reply here.
                self.user_error_quiet(&from, code, message);
                return self.settle();
            }
            Remote::HangUp { .. }
            | Remote::Refused { .. }
            | Remote::Echo { .. }
            | Remote::CallCheck => return,
        };
        if opens_call {
            self.drop_pending_call(&from, &to);
        }
        match why {
            Unroutable::UnknownUser => {
                if !opens_call {
                    self.handle_peer_gone(&to);
                }
                self.user_error(
                    &from,
                    ErrorCode::UnknownUser,
                    unknown_user_message(to.as_str()),
                );
            }
            Unroutable::Unavailable => {
                let message = unavailable_message(kind, &to);
                self.user_error(&from, ErrorCode::Unavailable, message);
            }
        }
        self.settle();
    }

    /// Cluster mode: `name`, a user of another node, is gone without a word (its node died,
    /// or its lease lapsed). A local user in a call with it is told `close`, as if `name` had
    /// disconnected. Returns whether a call ended.
    pub fn handle_peer_gone(&mut self, name: &Username) -> bool {
        let locals: Vec<Username> = self
            .remote_peers
            .range((name.clone(), Username::min())..)
            .take_while(|(remote, _)| remote == name)
            .map(|(_, local)| local.clone())
            .collect();
        let mut ended = false;
        for local in locals {
            self.remote_peers.remove(&(name.clone(), local.clone()));
            let side = self
                .sessions
                .get_mut(&local)
                .and_then(|s| s.call.take_if(|c| c.peer == *name));
            let Some(side) = side else {
                continue;
            };
            ended = true;
            self.cancel(side.ring);
            self.send_to_user(
                &local,
                ServerMessage::HangUp {
                    from: name.clone(),
                    reason: None,
                },
            );
            let (caller, callee) = caller_callee(&local, &side);
            self.event(Event::CallEnded {
                caller,
                callee,
                reason: CallEnd::Disconnected,
            });
        }
        self.settle();
        ended
    }

    /// Cluster mode: the users of other nodes that users of this one are in calls with (for
    /// the backend to notice one that is gone: [`handle_peer_gone`](Self::handle_peer_gone)).
    pub fn remote_peers(&self) -> impl Iterator<Item = &Username> + '_ {
        let mut last: Option<&Username> = None;
        self.remote_peers.iter().filter_map(move |(remote, _)| {
            let new = last != Some(remote);
            last = Some(remote);
            new.then_some(remote)
        })
    }

    /// Cluster mode: whether this node may have lost its names (`true` once it has been cut
    /// off from the shared registry for longer than a lease; `false` when it has refreshed them
    /// again). While detached every relay is refused with `unavailable`; hang-ups still work.
    pub fn handle_detached(&mut self, detached: bool) {
        self.detached = detached;
    }

    /// Whether [`handle_detached`](Self::handle_detached) said this node is cut off.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// Cluster mode: the shared registry says other nodes hold these names now (this node
    /// was cut off for longer than a lease). Their sessions end here (partners told `close`)
    /// and their connections are closed with 4001 ([`DisconnectReason::NameLost`]), so that
    /// a name is never served by two nodes.
    pub fn handle_names_lost<'a>(&mut self, names: impl IntoIterator<Item = &'a Username>) {
        for name in names {
            let Some(conn) = self.sessions.get(name).map(|s| s.conn) else {
                continue;
            };
            self.end_session(name, SessionEnd::NameLost);
            if let Some(conn) = conn {
                if let Some(c) = self.connections.get_mut(&conn) {
                    c.closing = true;
                }
                self.outputs.push_back(Output::Disconnect {
                    conn,
                    reason: DisconnectReason::NameLost,
                });
            }
        }
        self.settle();
    }

    /// The receiver's half of a relay from `from` on another node to `to`.
    fn remote_relay(
        &mut self,
        from: Username,
        to: Username,
        kind: RelayKind,
        payload: Payload,
        opens_call: bool,
    ) {
        let Some(s) = self.sessions.get(&to) else {
            if self.evacuated {
                // The session is on its way to another node: the sender may retry.
                let message = unavailable_message(kind, &to);
                let code = ErrorCode::Unavailable;
                return self.refuse(from, to, kind, opens_call, code, message);
            }
            let message = unknown_user_message(to.as_str());
            return self.refuse(from, to, kind, opens_call, ErrorCode::UnknownUser, message);
        };
        let side = s.call.as_deref().filter(|c| c.peer == from).cloned();
        if opens_call && s.call.is_some() {
            let message = busy_message(&to);
            return self.refuse(from, to, kind, opens_call, ErrorCode::Busy, message);
        }
        if !opens_call && side.is_none() {
            let message = not_in_call_message(kind, &to);
            return self.refuse(from, to, kind, opens_call, ErrorCode::NotInCall, message);
        }
        if self.overloaded {
            let message = overloaded_message(kind);
            let code = ErrorCode::ServerOverloaded;
            return self.refuse(from, to, kind, opens_call, code, message);
        }
        if self.is_user_congested(&to) {
            let message = congested_message(&to, kind);
            let code = ErrorCode::RecipientOverloaded;
            return self.refuse(from, to, kind, opens_call, code, message);
        }
        if opens_call {
            self.set_call(&to, &from, false, None);
            self.event(Event::CallRinging {
                caller: from.clone(),
                callee: to.clone(),
            });
        } else if kind == RelayKind::Answer {
            if let Some(side) = side.as_ref().filter(|side| !side.answered) {
                self.cancel(side.ring);
                let (caller, callee) = caller_callee(&to, side);
                self.event(Event::CallAnswered { caller, callee });
            }
            self.mark_answered(&to);
        }
        self.send_to_user(
            &to,
            ServerMessage::Relay {
                kind,
                payload,
                from,
            },
        );
    }

    /// Sends `from`'s node the refusal of what its user `from` sent to `to`.
    fn refuse(
        &mut self,
        from: Username,
        to: Username,
        kind: RelayKind,
        opened: bool,
        code: ErrorCode,
        message: String,
    ) {
        self.forward(
            to,
            from,
            Remote::Refused {
                kind,
                opened,
                code,
                message,
            },
        );
    }

    /// `from` on another node ended its side of the call with `to`.
    fn remote_hang_up(&mut self, from: Username, to: Username, end: CallEnd, now: Instant) {
        let side = self
            .sessions
            .get_mut(&to)
            .and_then(|s| s.call.take_if(|c| c.peer == from));
        // Not (or no longer) in a call with `from`: both hung up at once; nothing to tell.
        let Some(side) = side else {
            return;
        };
        self.forget_remote_peer(&from, &to);
        self.cancel(side.ring);
        if side.caller && end == CallEnd::Declined {
            // The back-off lives with the caller.
            self.record_redial(&to, &from, now);
        }
        let reason = (end == CallEnd::NoAnswer).then_some(HangUpReason::NoAnswer);
        self.send_to_user(&to, ServerMessage::HangUp { from, reason });
    }

    /// Clears `name`'s call with `peer` if it is not answered (an opening offer was refused
    /// or could not be delivered).
    fn drop_pending_call(&mut self, name: &Username, peer: &Username) {
        let side = self
            .sessions
            .get_mut(name)
            .and_then(|s| s.call.take_if(|c| c.peer == *peer && !c.answered));
        if let Some(side) = side {
            self.forget_remote_peer(peer, name);
            self.cancel(side.ring);
        }
    }

    /// An `error` to the session `name` (numbered when resumable), if it is still here.
    fn user_error(&mut self, name: &Username, code: ErrorCode, message: String) {
        let Some(s) = self.sessions.get(name) else {
            return;
        };
        if let Some(conn) = s.conn {
            self.event(Event::ErrorReplied { conn, code });
        }
        self.send_to_user(name, ServerMessage::error(code, message));
    }

    /// [`user_error`](Self::user_error) for a reply whose event went out when it was made.
    fn user_error_quiet(&mut self, name: &Username, code: ErrorCode, message: String) {
        self.send_to_user(name, ServerMessage::error(code, message));
    }

    /// When the router next needs [`handle_timeout`](Self::handle_timeout): the soonest grace
    /// period or ring timeout. Ask again after every input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first_key_value().map(|((at, _), _)| *at)
    }

    /// Time has reached `now`: ends the suspended sessions whose grace is over (name freed,
    /// partner told `close` once) and the calls that rang out (both sides told `close` with
    /// `"reason":"no_answer"`). Harmless to call early or often.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, timer) = entry.remove_entry();
            match timer {
                Timer::Grace(name) => {
                    let due = self
                        .sessions
                        .get(&name)
                        .and_then(|s| s.resume.as_ref())
                        .is_some_and(|r| r.grace == Some(key));
                    if due {
                        self.end_session(&name, SessionEnd::GraceExpired);
                    }
                }
                Timer::Ring { caller, callee } => self.ring_out(key, caller, callee, now),
            }
        }
        self.settle();
    }

    /// The next output, or `None` when all are drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// How many outputs wait to be drained.
    pub fn pending_outputs(&self) -> usize {
        self.outputs.len()
    }

    /// How many connections are live.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// How many names are held (sessions, suspended ones included).
    pub fn user_count(&self) -> usize {
        self.sessions.len()
    }

    /// Whether `conn` is live.
    pub fn is_connected(&self, conn: ConnectionId) -> bool {
        self.connections.contains_key(&conn)
    }

    /// The name `conn` holds.
    pub fn username(&self, conn: ConnectionId) -> Option<&Username> {
        self.connections.get(&conn)?.session.as_ref()
    }

    /// The connection of the session holding `name` (or its NFC form); `None` when nobody
    /// holds it or its session is suspended.
    pub fn connection_of(&self, name: &str) -> Option<ConnectionId> {
        self.sessions.get(self.lookup(name)?)?.conn
    }

    /// Whether a session holds `name` (or its NFC form), suspended or not.
    pub fn is_logged_in(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// Whether the session holding `name` is suspended (waiting for a resume).
    pub fn is_suspended(&self, name: &str) -> bool {
        self.lookup(name)
            .and_then(|n| self.sessions.get(n))
            .is_some_and(|s| s.conn.is_none())
    }

    /// The connection holding a name whose confusable skeleton ([`Username::skeleton`]) is
    /// `skeleton`.
    pub fn connection_of_skeleton(&self, skeleton: &str) -> Option<ConnectionId> {
        self.sessions.get(self.skeletons.get(skeleton)?)?.conn
    }

    /// Bytes kept in all resumable sessions' histories (what a driver counts in its memory
    /// budget beside its queues).
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }

    /// The session holding `name`: the exact name first (what clients send back is the
    /// `username` the server stamped, already NFC), then, for non-ASCII names only, its NFC
    /// form.
    fn lookup(&self, name: &str) -> Option<&Username> {
        self.lookup_session(name).map(|(key, _)| key)
    }

    /// [`lookup`](Self::lookup), with the session.
    fn lookup_session(&self, name: &str) -> Option<(&Username, &Session)> {
        if let Some(found) = self.sessions.get_key_value(name) {
            return Some(found);
        }
        if name.is_ascii() {
            return None;
        }
        self.lookup_composed(name)
    }

    /// [`lookup_session`](Self::lookup_session) of a non-ASCII name not found as it is: its
    /// NFC form.
    #[cold]
    #[inline(never)]
    fn lookup_composed(&self, name: &str) -> Option<(&Username, &Session)> {
        match nfc(name) {
            Cow::Owned(composed) => self.sessions.get_key_value(composed.as_str()),
            Cow::Borrowed(_) => None,
        }
    }

    /// The name `name` is in a call with (ringing or answered).
    pub fn partner_of(&self, name: &str) -> Option<&Username> {
        let name = self.lookup(name)?;
        Some(&self.sessions.get(name)?.call.as_ref()?.peer)
    }

    /// The connection of the user `conn` is in a call with (ringing or answered), if that
    /// user's session has one.
    pub fn partner(&self, conn: ConnectionId) -> Option<ConnectionId> {
        let peer = self.partner_of(self.username(conn)?.as_str())?;
        self.sessions.get(peer)?.conn
    }

    /// Whether the call `conn` is in has been answered.
    pub fn is_answered(&self, conn: ConnectionId) -> bool {
        self.username(conn)
            .and_then(|n| self.sessions.get(n))
            .and_then(|s| s.call.as_ref())
            .is_some_and(|c| c.answered)
    }

    /// Checks liveness and the rate limit; false when the input must be dropped (closing) or
    /// was answered with `rate_limited`.
    fn admit(&mut self, conn: ConnectionId, now: Instant) -> Result<bool, RouterError> {
        let c = self
            .connections
            .get_mut(&conn)
            .ok_or(RouterError::UnknownConnection(conn))?;
        if c.closing {
            return Ok(false);
        }
        let Some(limit) = self.config.rate_limit else {
            return Ok(true);
        };
        let bucket = c
            .bucket
            .get_or_insert_with(|| TokenBucket::new(&limit, now));
        if bucket.take(&limit, now) {
            return Ok(true);
        }
        self.rate_limited(conn, limit);
        Ok(false)
    }

    /// [`admit`](Self::admit) refuses a frame over the rate limit: `rate_limited`, or the
    /// close after too many strikes.
    #[cold]
    #[inline(never)]
    fn rate_limited(&mut self, conn: ConnectionId, limit: RateLimit) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        let strikes = c.bucket.as_ref().map_or(0, |b| b.strikes);
        let close = limit.max_strikes != 0 && strikes >= limit.max_strikes;
        c.closing |= close;
        self.event(Event::RateLimited { conn, strikes });
        if close {
            self.outputs.push_back(Output::Disconnect {
                conn,
                reason: DisconnectReason::RateLimited,
            });
        } else {
            let message = if limit.per_second == 0 {
                format!(
                    "the allowance of {} messages is used up and does not refill; message dropped",
                    limit.burst
                )
            } else {
                let wait = Duration::from_secs_f64(1.0 / f64::from(limit.per_second));
                format!(
                    "more than {} messages per second (burst {}); message dropped, retry after {} ms",
                    limit.per_second,
                    limit.burst,
                    wait.as_millis().max(1)
                )
            };
            self.reply_error(conn, ErrorCode::RateLimited, message);
            self.settle();
        }
    }

    fn dispatch(&mut self, conn: ConnectionId, message: Decoded<'_>, now: Instant) {
        match message {
            Decoded::Relay { kind, payload, to } => {
                self.relay(conn, kind, payload, to.as_deref(), now)
            }
            other => self.dispatch_other(conn, other, now),
        }
    }

    /// Everything but a relay (once or twice a call, where relays are many).
    #[cold]
    #[inline(never)]
    fn dispatch_other(&mut self, conn: ConnectionId, message: Decoded<'_>, now: Instant) {
        match message {
            Decoded::Login {
                username,
                resumable,
            } => self.login(conn, &username, resumable),
            Decoded::Resume { token, last_seq } => self.resume(conn, &token, last_seq),
            Decoded::Relay { kind, payload, to } => {
                self.relay(conn, kind, payload, to.as_deref(), now)
            }
            Decoded::HangUp { to } => self.hang_up(conn, to.as_deref(), now),
        }
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    fn refusal_event(&mut self, conn: ConnectionId, reply_type: ReplyType, code: ErrorCode) {
        self.event(match reply_type {
            ReplyType::Login => Event::LoginRefused { conn, code },
            ReplyType::Resume => Event::ResumeRefused { conn, code },
            _ => Event::ErrorReplied { conn, code },
        });
    }

    /// A message on the bare connection, outside any session (no `seq`).
    fn transmit(&mut self, to: ConnectionId, message: ServerMessage) {
        self.outputs.push_back(Output::Transmit(Transmit {
            to,
            message,
            seq: None,
        }));
    }

    /// A reply to whatever holds `conn`: its session (numbered and kept when resumable) or,
    /// before a login, the bare connection.
    fn reply(&mut self, conn: ConnectionId, message: ServerMessage) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        match (&c.session, self.remote_tails.get(&conn), message) {
            (Some(name), Some(tail), ServerMessage::Error { code, message }) => {
                // Behind the refusals still to come from `tail`'s node.
                let (name, tail) = (name.clone(), tail.clone());
                self.forward(
                    name,
                    tail,
                    Remote::Echo {
                        back: false,
                        code,
                        message,
                    },
                );
            }
            (Some(name), _, message) => {
                let name = name.clone();
                self.send_to_user(&name, message);
            }
            (None, _, message) => self.transmit(conn, message),
        }
    }

    /// Cluster mode: `me`'s connection sent something to `target`, a user of another node.
    fn note_remote_tail(&mut self, me: &Username, target: &Username) {
        let Some(conn) = self.sessions.get(me).and_then(|s| s.conn) else {
            return;
        };
        if self.remote_tails.get(&conn) != Some(target) {
            self.remote_tails.insert(conn, target.clone());
        }
    }

    fn reply_error(&mut self, conn: ConnectionId, code: ErrorCode, message: impl Into<String>) {
        self.event(Event::ErrorReplied { conn, code });
        self.reply(conn, ServerMessage::error(code, message));
    }

    /// Sends `message` to the session holding `name`: on its connection, and for a resumable
    /// session numbered and kept in its history (only kept while it is suspended).
    fn send_to_user(&mut self, name: &Username, message: ServerMessage) {
        let Some(s) = self.sessions.get_mut(name) else {
            return;
        };
        let Some(r) = s.resume.as_deref_mut() else {
            if let Some(to) = s.conn {
                self.outputs.push_back(Output::Transmit(Transmit {
                    to,
                    message,
                    seq: None,
                }));
            }
            return;
        };
        r.seq += 1;
        let seq = r.seq;
        let bytes = message.size_hint();
        let kept = match s.conn {
            Some(to) => {
                r.sent = seq;
                let kept = message.clone();
                self.outputs.push_back(Output::Transmit(Transmit {
                    to,
                    message,
                    seq: Some(seq),
                }));
                kept
            }
            None => message,
        };
        r.history.push_back(Kept {
            seq,
            message: kept,
            bytes,
        });
        r.history_bytes += bytes;
        self.retained_bytes += bytes;
        let limits = self.config.sessions;
        while r.history.len() > limits.max_history_messages
            || r.history_bytes > limits.max_history_bytes
        {
            match r.history.front() {
                // Sent already: if the client missed it, a resume says so (`history_lost`).
                Some(front) if front.seq <= r.sent => {
                    r.history_bytes -= front.bytes;
                    self.retained_bytes -= front.bytes;
                    r.history.pop_front();
                }
                // Never sent (suspended): dropping it would lose it silently.
                _ => {
                    self.overflowed.push(name.clone());
                    break;
                }
            }
        }
    }

    /// Ends the sessions whose history overflowed while suspended.
    fn settle(&mut self) {
        while let Some(name) = self.overflowed.pop() {
            if self.sessions.get(&name).is_some_and(|s| s.conn.is_none()) {
                self.end_session(&name, SessionEnd::HistoryOverflow);
            }
        }
    }

    fn schedule(&mut self, at: Instant, timer: Timer) -> TimerKey {
        let key = (at, self.next_timer);
        self.next_timer += 1;
        self.timers.insert(key, timer);
        key
    }

    fn cancel(&mut self, key: Option<TimerKey>) {
        if let Some(key) = key {
            self.timers.remove(&key);
        }
    }

    /// Ends the session holding `name`: frees the name and its token, detaches its
    /// connection (if any), and ends its call, telling the partner `close` once.
    fn end_session(&mut self, name: &Username, reason: SessionEnd) {
        let Some(s) = self.sessions.remove(name) else {
            return;
        };
        let skeleton = self.forget_skeleton(name);
        self.redials.remove(name);
        if self.config.claim_names {
            self.outputs.push_back(Output::Release {
                name: name.clone(),
                skeleton,
            });
        }
        if let Some(r) = s.resume {
            self.tokens.remove(&r.token);
            self.cancel(r.grace);
            self.retained_bytes -= r.history_bytes;
        }
        if let Some(c) = s.conn.and_then(|conn| self.connections.get_mut(&conn)) {
            c.session = None;
        }
        if let Some(side) = s.call {
            self.cancel(side.ring);
            self.forget_remote_peer(&side.peer, name);
            self.tell_hang_up(name, &side.peer, CallEnd::Disconnected);
            let (caller, callee) = caller_callee(name, &side);
            self.event(Event::CallEnded {
                caller,
                callee,
                reason: CallEnd::Disconnected,
            });
        }
        self.event(Event::SessionEnded {
            username: name.clone(),
            reason,
        });
    }

    /// Removes `name`'s confusable skeleton from the registry (computed again rather than kept
    /// in every session: a logout is rare, a session's bytes are held by every idle user).
    fn forget_skeleton(&mut self, name: &Username) -> Arc<str> {
        let mut skeleton = std::mem::take(&mut self.skeleton_buf);
        self.ascii_skeletons
            .skeleton_into(name.as_str(), &mut skeleton);
        let key = match self.skeletons.remove_entry(skeleton.as_str()) {
            Some((key, holder)) if holder == *name => key,
            Some((key, holder)) => {
                // Not this name's (cannot happen): put it back.
                let shared = Arc::clone(&key);
                self.skeletons.insert(key, holder);
                shared
            }
            None => Arc::from(skeleton.as_str()),
        };
        self.skeleton_buf = skeleton;
        key
    }

    /// `name`'s confusable skeleton.
    fn skeleton_of(&mut self, name: &Username) -> Arc<str> {
        let mut skeleton = std::mem::take(&mut self.skeleton_buf);
        self.ascii_skeletons
            .skeleton_into(name.as_str(), &mut skeleton);
        let key = Arc::from(skeleton.as_str());
        self.skeleton_buf = skeleton;
        key
    }

    /// Clears `name`'s call if it is with `peer`.
    fn clear_call(&mut self, name: &Username, peer: &Username) {
        if let Some(s) = self.sessions.get_mut(name) {
            if s.call.as_ref().is_some_and(|c| c.peer == *peer) {
                s.call = None;
                self.forget_remote_peer(peer, name);
            }
        }
    }

    fn forget_remote_peer(&mut self, peer: &Username, name: &Username) {
        if !self.remote_peers.is_empty() {
            self.remote_peers.remove(&(peer.clone(), name.clone()));
        }
    }

    fn login_failed(&mut self, conn: ConnectionId, code: ErrorCode, message: String) {
        self.event(Event::LoginRefused { conn, code });
        self.reply(
            conn,
            ServerMessage::Login {
                success: false,
                error: Some((code, message)),
                ice_servers: None,
            },
        );
    }

    /// `username` has passed [`Username::validate`].
    fn login(&mut self, conn: ConnectionId, username: &str, resumable: bool) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        if let Some(current) = &c.session {
            let message = format!("already logged in as {current:?}");
            return self.login_failed(conn, ErrorCode::AlreadyLoggedIn, message);
        }
        if c.claiming {
            let message = "a login on this connection is in progress".to_string();
            return self.login_failed(conn, ErrorCode::AlreadyLoggedIn, message);
        }
        if let Some(bound) = &c.bound {
            if bound.as_str() != username {
                let message = format!("this connection may only log in as {bound:?}");
                return self.login_failed(conn, ErrorCode::Unauthorized, message);
            }
        }
        if self.sessions.contains_key(username) || self.claims.contains_key(username) {
            let message = format!("the name {username:?} is taken");
            return self.login_failed(conn, ErrorCode::NameTaken, message);
        }
        let written = username;
        let username = match Username::new(username) {
            Ok(username) => username,
            // Unreachable: the decoder validated the name. Answer rather than panic.
            Err(e) => {
                let message = format!("invalid username {username:?}: {e}");
                return self.login_failed(conn, ErrorCode::InvalidUsername, message);
            }
        };
        let mut skeleton = std::mem::take(&mut self.skeleton_buf);
        self.ascii_skeletons
            .skeleton_into(username.as_str(), &mut skeleton);
        let refusal = if skeleton.is_empty() {
            // Only default-ignorable characters (U+3164 HANGUL FILLER, a lone variation
            // selector…): every such name would look the same, i.e. like nothing.
            let message = format!("invalid username {username:?}: it has no visible characters");
            Some((ErrorCode::InvalidUsername, message))
        } else if self.skeletons.contains_key(skeleton.as_str()) {
            // Which name it resembles is not said: that would help probe who is online.
            Some((ErrorCode::NameTaken, look_alike_message(&username)))
        } else {
            None
        };
        if let Some((code, message)) = refusal {
            self.skeleton_buf = skeleton;
            return self.login_failed(conn, code, message);
        }
        // Shares the name's string when the name is its own skeleton (most ASCII names).
        let key: Arc<str> = if skeleton == username.as_str() {
            Arc::clone(username.shared())
        } else {
            Arc::from(skeleton.as_str())
        };
        self.skeleton_buf = skeleton;
        if self.config.claim_names {
            // Reserved here while the shared registry is asked.
            self.skeletons.insert(Arc::clone(&key), username.clone());
            self.claims.insert(
                username.clone(),
                PendingClaim {
                    conn,
                    skeleton: Arc::clone(&key),
                    resumable,
                    written: (written != username.as_str()).then(|| Box::from(written)),
                },
            );
            if let Some(c) = self.connections.get_mut(&conn) {
                c.claiming = true;
            }
            self.outputs.push_back(Output::Claim {
                conn,
                name: username,
                skeleton: key,
            });
            return;
        }
        self.establish(conn, username, key, resumable);
    }

    /// Grants `username` (whose skeleton is `key`) to the connection `conn`: its session
    /// starts and the login is answered.
    fn establish(
        &mut self,
        conn: ConnectionId,
        username: Username,
        key: Arc<str>,
        resumable: bool,
    ) {
        let token = match (resumable, self.token_source.0.as_mut()) {
            (true, Some(source)) => Some(source.next_token()),
            _ => None,
        };
        let resume = token.as_ref().map(|token| {
            Box::new(Resumable {
                token: token.clone(),
                seq: 0,
                sent: 0,
                history: VecDeque::new(),
                history_bytes: 0,
                grace: None,
            })
        });
        if let Some(token) = &token {
            self.tokens.insert(token.clone(), username.clone());
        }
        self.skeletons.insert(key, username.clone());
        self.sessions.insert(
            username.clone(),
            Session {
                conn: Some(conn),
                call: None,
                resume,
            },
        );
        if let Some(c) = self.connections.get_mut(&conn) {
            c.session = Some(username.clone());
        }
        let reply = match token {
            Some(token) => ServerMessage::SessionStarted {
                token,
                grace_ms: duration_ms(self.config.sessions.grace),
                ice_servers: None,
            },
            None => ServerMessage::Login {
                success: true,
                error: None,
                ice_servers: None,
            },
        };
        self.transmit(conn, reply);
        self.event(Event::LoggedIn {
            conn,
            username,
            resumable: resumable && self.token_source.0.is_some(),
        });
    }

    fn resume_failed(&mut self, conn: ConnectionId, code: ErrorCode, message: String) {
        self.event(Event::ResumeRefused { conn, code });
        self.reply(conn, ServerMessage::ResumeFailed { code, message });
    }

    fn resume(&mut self, conn: ConnectionId, token: &str, last_seq: u64) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        if let Some(current) = &c.session {
            let message = format!("this connection already holds the session of {current:?}");
            return self.resume_failed(conn, ErrorCode::AlreadyLoggedIn, message);
        }
        if c.claiming {
            let message = "a login on this connection is in progress".to_string();
            return self.resume_failed(conn, ErrorCode::AlreadyLoggedIn, message);
        }
        let bound = c.bound.clone();
        if self.config.claim_names && !self.tokens.contains_key(token) {
            // Perhaps another node's session: the backend asks for it.
            if let Some(c) = self.connections.get_mut(&conn) {
                c.claiming = true;
            }
            self.outputs.push_back(Output::Fetch {
                conn,
                token: SessionToken::new(token),
                last_seq,
                verified: bound,
            });
            return;
        }
        match self.check_resume(token, last_seq, bound.as_ref()) {
            ResumeCheck::Refused(code, message) => self.resume_failed(conn, code, message),
            ResumeCheck::HistoryLost(name, message) => {
                self.resume_failed(conn, ErrorCode::HistoryLost, message);
                self.lose_history(&name);
            }
            ResumeCheck::Granted(name) => {
                let Some(source) = self.token_source.0.as_mut() else {
                    let message = INVALID_TOKEN.to_string();
                    return self.resume_failed(conn, ErrorCode::InvalidToken, message);
                };
                let new_token = source.next_token();
                self.attach(conn, &name, last_seq, new_token);
            }
        }
    }

    /// The checks of a `resume` with `token` and `last_seq` from a connection bound to `bound`
    /// (if any), in the order a single node makes them.
    fn check_resume(&self, token: &str, last_seq: u64, bound: Option<&Username>) -> ResumeCheck {
        let invalid = || ResumeCheck::Refused(ErrorCode::InvalidToken, INVALID_TOKEN.to_string());
        let Some(name) = self.tokens.get(token).cloned() else {
            return invalid();
        };
        if bound.is_some_and(|b| *b != name) {
            let (code, message) = unauthorized_resume();
            return ResumeCheck::Refused(code, message);
        }
        let Some(s) = self.sessions.get(&name) else {
            return invalid();
        };
        let Some(r) = s.resume.as_deref() else {
            return invalid();
        };
        let closing = s
            .conn
            .and_then(|old| self.connections.get(&old))
            .is_some_and(|c| c.closing);
        if closing {
            // Its connection is being closed for abuse (rate limit): the session ends with
            // it, and must not escape to another connection (nor be closed twice).
            let message = "the session is being closed; log in afresh".to_string();
            return ResumeCheck::Refused(ErrorCode::InvalidToken, message);
        }
        let first_kept = r.history.front().map_or(r.seq + 1, |k| k.seq);
        match resume_refusal(r.seq, first_kept, last_seq) {
            Some((ErrorCode::HistoryLost, message)) => ResumeCheck::HistoryLost(name, message),
            Some((code, message)) => ResumeCheck::Refused(code, message),
            None => ResumeCheck::Granted(name),
        }
    }

    /// A resume asked `name`'s session for messages it no longer keeps: the session ends
    /// (partner told `close`), and a connection still holding it (another tab) is closed with
    /// 4001 rather than left logged out without a word.
    fn lose_history(&mut self, name: &Username) {
        let still_open = self.sessions.get(name).and_then(|s| s.conn);
        if let Some(old) = still_open {
            if let Some(c) = self.connections.get_mut(&old) {
                c.closing = true;
            }
            self.outputs.push_back(Output::Disconnect {
                conn: old,
                reason: DisconnectReason::SessionEnded,
            });
        }
        self.end_session(name, SessionEnd::HistoryLost);
    }

    /// Moves `name`'s session (resumable, its resume checked) to `conn` with `new_token`:
    /// the reply, then every kept message after `last_seq` with its original `seq`. An old
    /// connection still holding it is closed with 4000 (takeover).
    fn attach(
        &mut self,
        conn: ConnectionId,
        name: &Username,
        last_seq: u64,
        new_token: SessionToken,
    ) {
        let grace_ms = duration_ms(self.config.sessions.grace);
        let Some(s) = self.sessions.get_mut(name) else {
            return;
        };
        let Some(r) = s.resume.as_deref_mut() else {
            return;
        };
        let old_token = std::mem::replace(&mut r.token, new_token.clone());
        let grace = r.grace.take();
        r.sent = r.seq;
        let replay: Vec<Transmit> = r
            .history
            .iter()
            .filter(|k| k.seq > last_seq)
            .map(|k| Transmit {
                to: conn,
                message: k.message.clone(),
                seq: Some(k.seq),
            })
            .collect();
        let old = s.conn.replace(conn);
        self.tokens.remove(&old_token);
        self.tokens.insert(new_token.clone(), name.clone());
        self.cancel(grace);
        if let Some(old) = old {
            self.close_taken_over(old);
        }
        if let Some(c) = self.connections.get_mut(&conn) {
            c.session = Some(name.clone());
        }
        self.transmit(
            conn,
            ServerMessage::Resumed {
                username: name.clone(),
                token: new_token,
                grace_ms,
                ice_servers: None,
            },
        );
        self.outputs
            .extend(replay.into_iter().map(Output::Transmit));
        self.event(Event::SessionResumed {
            username: name.clone(),
            conn,
            takeover: old.is_some(),
        });
    }

    /// Takeover: the old connection of a resumed session (half-open, or another tab) is
    /// closed with 4000; what was queued for it is replayed where the session went instead.
    fn close_taken_over(&mut self, old: ConnectionId) {
        if let Some(c) = self.connections.get_mut(&old) {
            c.session = None;
            c.closing = true;
        }
        self.outputs.retain(|o| o.connection() != Some(old));
        self.outputs.push_back(Output::Disconnect {
            conn: old,
            reason: DisconnectReason::ResumedElsewhere,
        });
    }

    /// Suspends `name`'s session (no connection) for a grace period from `now`.
    fn suspend(&mut self, name: &Username, now: Instant) {
        let at = now.checked_add(self.config.sessions.grace).unwrap_or(now);
        let key = self.schedule(at, Timer::Grace(name.clone()));
        let earlier = self.sessions.get_mut(name).and_then(|s| {
            s.conn = None;
            s.resume.as_deref_mut().and_then(|r| r.grace.replace(key))
        });
        self.cancel(earlier);
        self.event(Event::SessionSuspended {
            username: name.clone(),
        });
    }

    /// Cluster mode: another node's [`Output::Fetch`] for `token` reached this node, which
    /// issued it. The resume is checked exactly as a local one (`invalid_token`,
    /// `unauthorized` against `verified`, `invalid_last_seq`, `history_lost` — which ends the
    /// session here as it would for a local resume, closing a still-open connection with
    /// 4001); if it passes, the session leaves this router and is returned, for the asking
    /// node's [`handle_imported`](Self::handle_imported).
    ///
    /// Leaving is not ending: the partner is told nothing, the name is not released (the
    /// backend moves its lease to the asking node before it answers), and a connection still
    /// holding the session is closed with 4000 as for a takeover (what was queued for it is
    /// replayed over there). A partner on this node stays in the call with a user of another
    /// node now. If the export cannot be carried after all, give it back with
    /// [`handle_imported`](Self::handle_imported)`(None, …)`.
    ///
    /// # Errors
    ///
    /// The refusal for the resuming connection (code and message, as a single node words it).
    pub fn handle_handover(
        &mut self,
        token: &str,
        last_seq: u64,
        verified: Option<&Username>,
        now: Instant,
    ) -> Result<SessionExport, (ErrorCode, String)> {
        let result = match self.check_resume(token, last_seq, verified) {
            ResumeCheck::Refused(code, message) => Err((code, message)),
            ResumeCheck::HistoryLost(name, message) => {
                self.lose_history(&name);
                Err((ErrorCode::HistoryLost, message))
            }
            ResumeCheck::Granted(name) => match self.take_session(&name, now) {
                Some((export, old)) => {
                    if let Some(old) = old {
                        self.close_taken_over(old);
                    }
                    self.event(Event::SessionMoved { username: name });
                    Ok(export)
                }
                None => Err((ErrorCode::InvalidToken, INVALID_TOKEN.to_string())),
            },
        };
        self.settle();
        result
    }

    /// Cluster mode: the session a [`Output::Fetch`] of `conn` asked for arrived (from
    /// another node's [`handle_handover`](Self::handle_handover), or from where a node that
    /// shut down left it). It is installed here — name, skeleton, numbering and history, call
    /// (a partner on this node and the user are now both local), back-offs, a ringing call's
    /// timer with the time it had left — and the resume goes on exactly as a local one: a new
    /// token, the `resume` reply, every kept message after `last_seq` with its original
    /// `seq`. Its checks are made again (`unauthorized`, `invalid_last_seq`, `history_lost`);
    /// a refusal leaves the session here, suspended, except `history_lost`, which ends it.
    ///
    /// With `conn` `None`, or a connection no longer waiting (it left, or was refused
    /// meanwhile): the session is installed suspended for a grace period with the token it
    /// had (a hand-over that failed comes back this way, and a late answer is kept rather
    /// than lost).
    ///
    /// A partner on another node is asked whether the call is still on
    /// ([`Remote::CallCheck`]): a hang-up lost while the session was on its way is said
    /// again. The caller of this method holds the name's lease now (it also releases it when
    /// the session ends, as for any other).
    pub fn handle_imported(
        &mut self,
        conn: Option<ConnectionId>,
        export: SessionExport,
        last_seq: u64,
        now: Instant,
    ) {
        let waiting = conn.filter(|conn| {
            self.connections
                .get(conn)
                .is_some_and(|c| c.claiming && !c.closing && c.session.is_none())
        });
        let bound = waiting
            .and_then(|conn| self.connections.get_mut(&conn))
            .and_then(|c| {
                c.claiming = false;
                c.bound.clone()
            });
        let refusal = waiting.and(export.check_resume(last_seq, bound.as_ref()).err());
        let name = export.name.clone();
        let taken = self.sessions.contains_key(&name)
            || self.claims.contains_key(&name)
            || self.skeletons.contains_key(&*export.skeleton);
        if taken {
            // A session of that name, or of a look-alike, is here already (the lease said
            // otherwise): this one cannot be kept. Its partner is told, as for an end.
            if let Some(call) = &export.call {
                self.tell_hang_up(&name, &call.peer, CallEnd::Disconnected);
            }
            if let Some(conn) = waiting {
                self.resume_failed(conn, ErrorCode::InvalidToken, INVALID_TOKEN.to_string());
            }
            return self.settle();
        }
        self.install(export, now);
        match (waiting, refusal) {
            (Some(conn), Some((ErrorCode::HistoryLost, message))) => {
                self.resume_failed(conn, ErrorCode::HistoryLost, message);
                self.lose_history(&name);
                return self.settle();
            }
            (Some(conn), Some((code, message))) => {
                self.resume_failed(conn, code, message);
                self.suspend(&name, now);
            }
            (Some(conn), None) => match self.token_source.0.as_mut() {
                Some(source) => {
                    let new_token = source.next_token();
                    self.attach(conn, &name, last_seq, new_token);
                }
                None => {
                    let message = INVALID_TOKEN.to_string();
                    self.resume_failed(conn, ErrorCode::InvalidToken, message);
                    self.suspend(&name, now);
                }
            },
            (None, _) => self.suspend(&name, now),
        }
        self.check_imported_call(&name);
        self.settle();
    }

    /// Cluster mode: the session a [`Output::Fetch`] of `conn` asked for cannot be had: the
    /// resume is refused with `code` (`invalid_token`, `unauthorized`, `invalid_last_seq`,
    /// `history_lost` from the issuing node; `unavailable` when it could not be asked).
    pub fn handle_fetch_refused(&mut self, conn: ConnectionId, code: ErrorCode, message: String) {
        let waiting = self
            .connections
            .get_mut(&conn)
            .filter(|c| c.claiming && c.session.is_none());
        if let Some(c) = waiting {
            c.claiming = false;
            self.resume_failed(conn, code, message);
        }
        self.settle();
    }

    /// Cluster mode: this node is shutting down gracefully and hands its sessions over
    /// instead of ending them (a rolling restart hangs up no call). Plain sessions end first,
    /// as when their connections close (partners told `close`: a resumable partner here gets
    /// it before it leaves). Then every resumable session, connected or suspended, leaves
    /// this router without a word to its partner, as for a hand-over, and is returned for the
    /// backend to keep until its client resumes on another node; the driver closes their
    /// connections with 1012 once they are kept. From now on every connection's input is
    /// ignored (the driver is closing them all), and relays from other nodes to the users who
    /// left are refused with `unavailable`.
    pub fn handle_evacuate(&mut self, now: Instant) -> Vec<Evacuated> {
        self.evacuated = true;
        let plain: Vec<Username> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.resume.is_none())
            .map(|(name, _)| name.clone())
            .collect();
        for name in plain {
            self.end_session(&name, SessionEnd::Closed);
        }
        for c in self.connections.values_mut() {
            c.closing = true;
        }
        let mut names: Vec<Username> = self.sessions.keys().cloned().collect();
        names.sort();
        let mut evacuated = Vec::with_capacity(names.len());
        for name in names {
            let grace_left = self
                .sessions
                .get(&name)
                .and_then(|s| s.resume.as_ref())
                .and_then(|r| r.grace)
                .map_or(self.config.sessions.grace, |(at, _)| {
                    at.saturating_duration_since(now)
                });
            if let Some((export, conn)) = self.take_session(&name, now) {
                self.event(Event::SessionMoved { username: name });
                evacuated.push(Evacuated {
                    export,
                    conn,
                    grace_left,
                });
            }
        }
        self.settle();
        evacuated
    }

    /// Takes `name`'s resumable session out of this router without ending it: no word to its
    /// partner, no release of its name. A partner on this node is in a call with a user of
    /// another node from now on (a ring timer of its own keeps running; the user's ring timer
    /// goes with the export). Returns the export and the connection that held it (detached,
    /// its input ignored from now on).
    fn take_session(
        &mut self,
        name: &Username,
        now: Instant,
    ) -> Option<(SessionExport, Option<ConnectionId>)> {
        if self.sessions.get(name).is_none_or(|s| s.resume.is_none()) {
            return None;
        }
        let s = self.sessions.remove(name)?;
        let r = s.resume?;
        let skeleton = self.forget_skeleton(name);
        let backoff_max = self.config.redial_backoff.map(|b| b.max);
        let redials = self
            .redials
            .remove(name)
            .unwrap_or_default()
            .into_iter()
            // Ended more than `max` ago: forgotten at the next back-off anyway.
            .filter(|r| {
                backoff_max
                    .and_then(|max| r.until.checked_add(max))
                    .is_none_or(|end| now < end)
            })
            .map(|r| ExportedRedial {
                callee: r.callee,
                until: offset_from(r.until, now),
                strikes: r.strikes,
            })
            .collect();
        self.tokens.remove(&r.token);
        self.cancel(r.grace);
        self.retained_bytes -= r.history_bytes;
        let call = s.call.map(|side| {
            let local_peer = self.sessions.contains_key(&side.peer);
            if !local_peer {
                self.forget_remote_peer(&side.peer, name);
            } else if self.config.claim_names {
                self.remote_peers.insert((name.clone(), side.peer.clone()));
            }
            let mut ring = None;
            if side.caller {
                // The ring timer runs on the caller's node: it goes with the caller.
                ring = side.ring.map(|(at, _)| at.saturating_duration_since(now));
                self.cancel(side.ring);
                let peer_side = self
                    .sessions
                    .get_mut(&side.peer)
                    .and_then(|p| p.call.as_deref_mut())
                    .filter(|c| c.peer == *name);
                if let Some(peer_side) = peer_side {
                    peer_side.ring = None;
                }
            }
            ExportedCall {
                peer: side.peer,
                caller: side.caller,
                answered: side.answered,
                offers: side.offers,
                candidates: side.candidates,
                ring,
            }
        });
        if let Some(c) = s.conn.and_then(|conn| self.connections.get_mut(&conn)) {
            c.session = None;
            c.closing = true;
        }
        let export = SessionExport {
            name: name.clone(),
            skeleton,
            token: r.token,
            seq: r.seq,
            sent: r.sent,
            history: r.history.into_iter().map(|k| (k.seq, k.message)).collect(),
            call,
            redials,
        };
        Some((export, s.conn))
    }

    /// Installs an exported session here, without a connection (its name and look-alikes are
    /// free here).
    fn install(&mut self, export: SessionExport, now: Instant) {
        let SessionExport {
            name,
            skeleton,
            token,
            seq,
            sent,
            history,
            call,
            redials,
        } = export;
        let key: Arc<str> = if *skeleton == *name.as_str() {
            Arc::clone(name.shared())
        } else {
            skeleton
        };
        self.skeletons.insert(key, name.clone());
        self.tokens.insert(token.clone(), name.clone());
        let history: VecDeque<Kept> = history
            .into_iter()
            .map(|(seq, message)| Kept {
                seq,
                bytes: message.size_hint(),
                message,
            })
            .collect();
        let history_bytes = history.iter().map(|k| k.bytes).sum();
        self.retained_bytes += history_bytes;
        if !redials.is_empty() {
            let redials = redials
                .into_iter()
                .map(|r| Redial {
                    callee: r.callee,
                    until: instant_at(now, r.until),
                    strikes: r.strikes,
                })
                .collect();
            self.redials.insert(name.clone(), redials);
        }
        let call = call.map(|c| {
            let peer_side_ring = self
                .sessions
                .get(&c.peer)
                .and_then(|p| p.call.as_deref())
                .filter(|p| p.peer == name)
                .map(|p| p.ring);
            if peer_side_ring.is_some() {
                // Both sides are on this node now.
                self.forget_remote_peer(&name, &c.peer);
            } else if self.config.claim_names {
                self.remote_peers.insert((c.peer.clone(), name.clone()));
            }
            let ring = match (c.caller, c.ring) {
                (true, Some(left)) if !c.answered => {
                    let at = now.checked_add(left).unwrap_or(now);
                    let timer = Timer::Ring {
                        caller: name.clone(),
                        callee: c.peer.clone(),
                    };
                    let key = self.schedule(at, timer);
                    // A callee on this node shares its caller's timer, as in a local call.
                    let peer_side = self
                        .sessions
                        .get_mut(&c.peer)
                        .and_then(|p| p.call.as_deref_mut())
                        .filter(|p| p.peer == name);
                    if let Some(peer_side) = peer_side {
                        peer_side.ring = Some(key);
                    }
                    Some(key)
                }
                (false, _) => peer_side_ring.flatten(),
                _ => None,
            };
            Box::new(CallSide {
                peer: c.peer,
                caller: c.caller,
                answered: c.answered,
                offers: c.offers,
                candidates: c.candidates,
                ring,
            })
        });
        self.sessions.insert(
            name,
            Session {
                conn: None,
                call,
                resume: Some(Box::new(Resumable {
                    token,
                    seq,
                    sent,
                    history,
                    history_bytes,
                    grace: None,
                })),
            },
        );
    }

    /// After an import: whether `name`'s call is still on. A partner on this node that is no
    /// longer in it (its hang-up was lost on the way) ends it here (`close`); a partner on
    /// another node is asked ([`Remote::CallCheck`]).
    fn check_imported_call(&mut self, name: &Username) {
        let Some(peer) = self
            .sessions
            .get(name)
            .and_then(|s| s.call.as_ref())
            .map(|c| c.peer.clone())
        else {
            return;
        };
        if !self.sessions.contains_key(&peer) {
            if self.config.claim_names {
                self.forward(name.clone(), peer, Remote::CallCheck);
            }
            return;
        }
        let on = self
            .sessions
            .get(&peer)
            .and_then(|s| s.call.as_deref())
            .is_some_and(|c| c.peer == *name);
        if !on {
            let side = self.sessions.get_mut(name).and_then(|s| s.call.take());
            if let Some(side) = side {
                self.cancel(side.ring);
                self.send_to_user(
                    name,
                    ServerMessage::HangUp {
                        from: peer,
                        reason: None,
                    },
                );
            }
        }
    }

    /// The sender's name and call, or an error reply when it has not logged in.
    fn sender(&mut self, conn: ConnectionId) -> Option<(Username, Option<CallSide>)> {
        let c = self.connections.get(&conn)?;
        match &c.session {
            Some(name) => {
                let call = self
                    .sessions
                    .get(name)
                    .and_then(|s| s.call.as_deref().cloned());
                Some((name.clone(), call))
            }
            None => {
                self.reply_error(conn, ErrorCode::NotLoggedIn, "log in first");
                None
            }
        }
    }

    /// For a relay from `conn` addressed to `to` (or to the partner): the sender's name and
    /// the addressee's connection, if the sender is in an answered call with the addressee,
    /// a plain session (nothing kept for a resume) on this node, connected, with room in its
    /// queue, and no relay is refused server-wide. `None`: [`relay`](Self::relay)'s rules
    /// decide.
    fn answered_call_relay(
        &self,
        conn: ConnectionId,
        to: Option<&str>,
    ) -> Option<(Username, ConnectionId)> {
        if self.detached || self.overloaded {
            return None;
        }
        let me = self.connections.get(&conn)?.session.as_ref()?;
        let side = self.sessions.get(me)?.call.as_deref()?;
        if !side.answered {
            return None;
        }
        let (target, session) = match to {
            Some(name) => self.lookup_session(name)?,
            None => self.sessions.get_key_value(&side.peer)?,
        };
        let addressee = Addressee::of(session);
        if *target != side.peer || !addressee.plain {
            return None;
        }
        let to = addressee.conn?;
        if self.is_congested(to) {
            return None;
        }
        Some((me.clone(), to))
    }

    /// Delivers a relay to `to`, the connection of a plain session (nothing kept for a
    /// resume): the frame built here, once, and straight to the connection.
    fn relay_to_plain(
        &mut self,
        to: ConnectionId,
        kind: RelayKind,
        payload: RawPayload<'_>,
        from: Username,
    ) {
        let payload = payload.into_relay_frame(kind, &from);
        self.transmit(
            to,
            ServerMessage::Relay {
                kind,
                payload,
                from,
            },
        );
    }

    fn relay(
        &mut self,
        conn: ConnectionId,
        kind: RelayKind,
        payload: RawPayload<'_>,
        to: Option<&str>,
        now: Instant,
    ) {
        // The usual relay — a candidate or an offer in an answered call, to the partner, a
        // plain session on this node with room in its queue — changes no state (the rules
        // below only deliver it): decided in one pass over the maps that clones nothing but
        // the sender's name, which the message carries. (An answer may end the ringing.)
        if kind != RelayKind::Answer {
            if let Some((me, to)) = self.answered_call_relay(conn, to) {
                return self.relay_to_plain(to, kind, payload, me);
            }
        }
        self.relay_by_the_rules(conn, kind, payload, to, now);
    }

    /// [`relay`](Self::relay) for everything but its usual case: the call rules, refusals,
    /// state changes, the other node. Out of line, so that the usual relay's code stays
    /// short and together. (Not marked cold: every relay of a resumable session comes here.)
    #[inline(never)]
    fn relay_by_the_rules(
        &mut self,
        conn: ConnectionId,
        kind: RelayKind,
        payload: RawPayload<'_>,
        to: Option<&str>,
        now: Instant,
    ) {
        let Some((me, call)) = self.sender(conn) else {
            return;
        };
        // Resolve the addressee: the named user, or else the current partner; and what the
        // rules below need of its session when it is on this node (one look-up).
        let (target, addressee) = match (to, &call) {
            (Some(name), _) => {
                match self.lookup_session(name) {
                    Some((target, _)) if *target == me => {
                        let message = format!("cannot send {} to yourself", kind.as_str());
                        return self.reply_error(conn, ErrorCode::SelfAddressed, message);
                    }
                    Some((target, session)) => (target.clone(), Some(Addressee::of(session))),
                    // Cluster mode: a user of another node, as far as this one knows; that
                    // node says `unknown_user` if nobody holds the name.
                    None => match self.remote_name(name) {
                        Some(target) => (target, None),
                        None => {
                            let message = unknown_user_message(name);
                            return self.reply_error(conn, ErrorCode::UnknownUser, message);
                        }
                    },
                }
            }
            (None, Some(side)) => (
                side.peer.clone(),
                self.sessions.get(&side.peer).map(Addressee::of),
            ),
            (None, None) => {
                return self.reply_error(
                    conn,
                    ErrorCode::MissingField,
                    "missing field `otherUsername` (and not in a call)",
                );
            }
        };
        let in_call_with_target = call.as_ref().is_some_and(|side| side.peer == target);
        // Cluster mode: the receiver's side is checked on its node. (One node holds every
        // user it relays to: no lookup on its hot path.)
        let remote = self.config.claim_names && addressee.is_none();
        // The rules first, then whether the message can be delivered, then the state changes.
        let opens_call = match kind {
            RelayKind::Offer if !in_call_with_target => {
                if let Some(side) = &call {
                    let message = format!(
                        "already in a call with {:?}; send close first",
                        side.peer.as_str()
                    );
                    let code = ErrorCode::InCall;
                    return self.sender_refusal(conn, &me, &target, kind, false, code, message);
                }
                if addressee.is_some_and(|a| a.busy) {
                    return self.reply_error(conn, ErrorCode::Busy, busy_message(&target));
                }
                if let Some(wait) = self.redial_wait(&me, &target, now) {
                    let message = format!(
                        "{:?} declined or did not answer your last call; retry in {} s",
                        target.as_str(),
                        wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
                    );
                    let code = ErrorCode::RedialTooSoon;
                    return self.sender_refusal(conn, &me, &target, kind, true, code, message);
                }
                true
            }
            RelayKind::Offer | RelayKind::Candidate | RelayKind::Answer => {
                let Some(side) = call.as_ref().filter(|_| in_call_with_target) else {
                    let message = not_in_call_message(kind, &target);
                    let code = ErrorCode::NotInCall;
                    return self.sender_refusal(conn, &me, &target, kind, false, code, message);
                };
                if !side.answered {
                    if let Some(message) = self.over_unanswered_limit(side, kind, payload.get()) {
                        return self.reply_error(conn, ErrorCode::UnansweredLimit, message);
                    }
                }
                false
            }
        };
        if self.detached {
            return self.reply_error(conn, ErrorCode::Unavailable, detached_message(kind));
        }
        if self.overloaded {
            return self.reply_error(conn, ErrorCode::ServerOverloaded, overloaded_message(kind));
        }
        if addressee
            .and_then(|a| a.conn)
            .is_some_and(|to| self.is_congested(to))
        {
            let message = congested_message(&target, kind);
            return self.reply_error(conn, ErrorCode::RecipientOverloaded, message);
        }
        if remote {
            return self.relay_remote(me, call, target, kind, payload, opens_call, now);
        }
        if opens_call {
            let ring = self.start_ringing(&me, &target, now);
            self.set_call(&me, &target, true, ring);
            self.set_call(&target, &me, false, ring);
            self.event(Event::CallRinging {
                caller: me.clone(),
                callee: target.clone(),
            });
        } else if kind == RelayKind::Answer {
            if let Some(side) = call.as_ref().filter(|side| !side.answered) {
                self.cancel(side.ring);
                let (caller, callee) = caller_callee(&me, side);
                self.event(Event::CallAnswered { caller, callee });
            }
            self.mark_answered(&me);
            self.mark_answered(&target);
        }
        if opens_call || call.as_ref().is_some_and(|side| !side.answered) {
            self.count_unanswered(&me, kind);
        }
        match addressee {
            // A plain session: straight to its connection.
            Some(Addressee {
                conn: Some(to),
                plain: true,
                ..
            }) => self.relay_to_plain(to, kind, payload, me),
            _ => self.send_to_user(
                &target,
                ServerMessage::Relay {
                    kind,
                    payload: payload.into_payload(),
                    from: me,
                },
            ),
        }
    }

    /// A relay from `me` on `conn` to `target` broke a rule of the sender's side. On one node
    /// the reply is this error; but a single node would first have said `unknown_user` for a
    /// target nobody holds, which only the target's node knows: for a user of another node
    /// the refusal goes there as a [`Remote::Probe`] and comes back as one or the other.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    #[inline(never)]
    fn sender_refusal(
        &mut self,
        conn: ConnectionId,
        me: &Username,
        target: &Username,
        kind: RelayKind,
        busy_first: bool,
        code: ErrorCode,
        message: String,
    ) {
        if self.sessions.contains_key(target) {
            return self.reply_error(conn, code, message);
        }
        self.note_remote_tail(me, target);
        self.forward(
            me.clone(),
            target.clone(),
            Remote::Probe {
                kind,
                busy_first,
                code,
                message,
            },
        );
    }

    /// Whether `name` is a user of this node whose queue is full.
    fn is_user_congested(&self, name: &Username) -> bool {
        self.sessions
            .get(name)
            .and_then(|t| t.conn)
            .is_some_and(|t| self.is_congested(t))
    }

    /// Cluster mode: `name` as the name of a user of another node (NFC), if it is a valid
    /// name; `None` outside cluster mode (an unknown name is then `unknown_user`).
    fn remote_name(&self, name: &str) -> Option<Username> {
        if !self.config.claim_names {
            return None;
        }
        Username::new(name).ok()
    }

    /// Whether `named`, as a client wrote it, is the name `peer`.
    fn names(&self, named: &str, peer: &Username) -> bool {
        match self.lookup(named) {
            Some(found) => found == peer,
            None => !self.sessions.contains_key(peer) && nfc(named) == peer.as_str(),
        }
    }

    /// The sender's half of a relay to a user of another node, its checks passed: the
    /// sender's side of the call changes here, the envelope goes out
    /// ([`Output::Forward`]), and the receiver's node does the rest.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn relay_remote(
        &mut self,
        me: Username,
        call: Option<CallSide>,
        target: Username,
        kind: RelayKind,
        payload: RawPayload<'_>,
        opens_call: bool,
        now: Instant,
    ) {
        if opens_call {
            // The caller's side: the ring timer runs on the caller's node. Until the callee's
            // node accepts the offer (or refuses it: `busy`, …) the call is pending here.
            let ring = self.start_ringing(&me, &target, now);
            self.set_call(&me, &target, true, ring);
        } else if kind == RelayKind::Answer {
            // The answered event comes from the node whose side was still ringing when the
            // answer arrived.
            if let Some(side) = call.as_ref().filter(|side| !side.answered) {
                self.cancel(side.ring);
            }
            self.mark_answered(&me);
        }
        if opens_call || call.as_ref().is_some_and(|side| !side.answered) {
            self.count_unanswered(&me, kind);
        }
        self.note_remote_tail(&me, &target);
        self.forward(
            me,
            target,
            Remote::Relay {
                kind,
                payload: payload.into_payload(),
                opens_call,
            },
        );
    }

    /// The ring timer of a call `caller` opens to `callee` at `now`, if calls ring out.
    fn start_ringing(
        &mut self,
        caller: &Username,
        callee: &Username,
        now: Instant,
    ) -> Option<TimerKey> {
        let timeout = self.config.ring_timeout?;
        let at = now.checked_add(timeout).unwrap_or(now);
        let timer = Timer::Ring {
            caller: caller.clone(),
            callee: callee.clone(),
        };
        Some(self.schedule(at, timer))
    }

    fn forward(&mut self, from: Username, to: Username, body: Remote) {
        self.outputs
            .push_back(Output::Forward(Envelope { from, to, body }));
    }

    /// Tells `peer` that `me` ended their call (`close`): on this node, or on `peer`'s. Clears
    /// `peer`'s side here (the caller clears `me`'s).
    fn tell_hang_up(&mut self, me: &Username, peer: &Username, end: CallEnd) {
        let reason = (end == CallEnd::NoAnswer).then_some(HangUpReason::NoAnswer);
        if self.sessions.contains_key(peer) {
            self.clear_call(peer, me);
            self.send_to_user(
                peer,
                ServerMessage::HangUp {
                    from: me.clone(),
                    reason,
                },
            );
        } else if self.config.claim_names {
            self.forward(me.clone(), peer.clone(), Remote::HangUp { end });
        }
    }

    fn set_call(&mut self, name: &Username, peer: &Username, caller: bool, ring: Option<TimerKey>) {
        if self.config.claim_names && !self.sessions.contains_key(peer) {
            self.remote_peers.insert((peer.clone(), name.clone()));
        }
        if let Some(s) = self.sessions.get_mut(name) {
            s.call = Some(Box::new(CallSide {
                peer: peer.clone(),
                caller,
                answered: false,
                offers: 0,
                candidates: 0,
                ring,
            }));
        }
    }

    fn mark_answered(&mut self, name: &Username) {
        if let Some(side) = self.sessions.get_mut(name).and_then(|s| s.call.as_mut()) {
            side.answered = true;
            side.ring = None;
        }
    }

    /// Why `kind` with `payload` may not be relayed by the side `side` of a call that is not
    /// answered, if it may not.
    fn over_unanswered_limit(
        &self,
        side: &CallSide,
        kind: RelayKind,
        payload: &str,
    ) -> Option<String> {
        let limits = self.config.unanswered?;
        let peer = side.peer.as_str();
        let until = "dropped; the limit lifts once the call is answered";
        match kind {
            RelayKind::Offer if side.offers >= limits.max_offers => Some(format!(
                "the call with {peer:?} is not answered yet: at most {} offers may be sent before \
                 the answer (the offer and {} renegotiations); offer {until}",
                limits.max_offers,
                limits.max_offers.saturating_sub(1)
            )),
            RelayKind::Candidate if payload.len() > limits.max_candidate_bytes => Some(format!(
                "the call with {peer:?} is not answered yet: a candidate may be at most {} bytes \
                 before the answer (this one is {}); candidate {until}",
                limits.max_candidate_bytes,
                payload.len()
            )),
            RelayKind::Candidate if side.candidates >= limits.max_candidates => Some(format!(
                "the call with {peer:?} is not answered yet: at most {} candidates may be sent \
                 before the answer; candidate {until}",
                limits.max_candidates
            )),
            _ => None,
        }
    }

    /// Counts an offer or candidate `name` relays into its unanswered call.
    fn count_unanswered(&mut self, name: &Username, kind: RelayKind) {
        if let Some(side) = self.sessions.get_mut(name).and_then(|s| s.call.as_mut()) {
            match kind {
                RelayKind::Offer => side.offers = side.offers.saturating_add(1),
                RelayKind::Candidate => side.candidates = side.candidates.saturating_add(1),
                RelayKind::Answer => {}
            }
        }
    }

    /// How long `caller` must still wait before offering `callee` again, if at all.
    fn redial_wait(&self, caller: &Username, callee: &Username, now: Instant) -> Option<Duration> {
        self.redials
            .get(caller)?
            .iter()
            .find(|r| r.callee == *callee && r.until > now)
            .map(|r| r.until.saturating_duration_since(now))
    }

    /// `callee` declined `caller`'s offer, or it rang out: starts (or doubles) the back-off.
    fn record_redial(&mut self, caller: &Username, callee: &Username, now: Instant) {
        let Some(backoff) = self.config.redial_backoff else {
            return;
        };
        if !self.sessions.contains_key(caller) {
            return;
        }
        let redials = self.redials.entry(caller.clone()).or_default();
        // Forget back-offs that ended more than `max` ago.
        redials.retain(|r| r.until.checked_add(backoff.max).is_none_or(|end| now < end));
        let strikes = match redials.iter().position(|r| r.callee == *callee) {
            Some(i) => redials.swap_remove(i).strikes.saturating_add(1),
            None => 1,
        };
        let factor = 1u32.checked_shl(strikes - 1).unwrap_or(u32::MAX);
        let wait = backoff.initial.saturating_mul(factor).min(backoff.max);
        if redials.len() >= MAX_REDIALS {
            if let Some(oldest) = redials
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.until)
                .map(|(i, _)| i)
            {
                redials.swap_remove(oldest);
            }
        }
        redials.push(Redial {
            callee: callee.clone(),
            until: now.checked_add(wait).unwrap_or(now),
            strikes,
        });
    }

    /// `close` from `conn`: hangs up (after the answer), cancels (the caller, before it) or
    /// declines (the callee, before answering; the caller then backs off).
    fn hang_up(&mut self, conn: ConnectionId, to: Option<&str>, now: Instant) {
        let Some((me, call)) = self.sender(conn) else {
            return;
        };
        let Some(side) = call else {
            return self.reply_error(conn, ErrorCode::NotInCall, "not in a call");
        };
        if let Some(named) = to {
            if !self.names(named, &side.peer) {
                let message = format!(
                    "not in a call with {named:?} (in a call with {:?})",
                    side.peer.as_str()
                );
                return self.reply_error(conn, ErrorCode::NotInCall, message);
            }
        }
        let reason = match (side.answered, side.caller) {
            (true, _) => CallEnd::HungUp,
            (false, true) => CallEnd::Cancelled,
            (false, false) => CallEnd::Declined,
        };
        if reason == CallEnd::Declined {
            self.record_redial(&side.peer, &me, now);
        }
        self.cancel(side.ring);
        self.clear_call(&me, &side.peer);
        self.tell_hang_up(&me, &side.peer, reason);
        let (caller, callee) = caller_callee(&me, &side);
        self.event(Event::CallEnded {
            caller,
            callee,
            reason,
        });
    }

    /// The ring timer `key` of the call `caller` → `callee` fired.
    fn ring_out(&mut self, key: TimerKey, caller: Username, callee: Username, now: Instant) {
        let ringing = self
            .sessions
            .get(&caller)
            .and_then(|s| s.call.as_ref())
            .is_some_and(|c| c.peer == callee && !c.answered && c.ring == Some(key));
        if !ringing {
            return;
        }
        self.clear_call(&caller, &callee);
        let no_answer = Some(HangUpReason::NoAnswer);
        self.send_to_user(
            &caller,
            ServerMessage::HangUp {
                from: callee.clone(),
                reason: no_answer,
            },
        );
        self.tell_hang_up(&caller, &callee, CallEnd::NoAnswer);
        self.record_redial(&caller, &callee, now);
        self.event(Event::CallEnded {
            caller,
            callee,
            reason: CallEnd::NoAnswer,
        });
    }
}

/// The refusal of a `resume` whose token is unknown, spent or expired.
const INVALID_TOKEN: &str = "unknown, spent or expired session token; log in afresh";

/// What the checks of a `resume` decided.
enum ResumeCheck {
    /// The session of this name may move to the resuming connection.
    Granted(Username),
    /// Refused; nothing changes.
    Refused(ErrorCode, String),
    /// `history_lost`: refused, and the session of this name ends.
    HistoryLost(Username, String),
}

/// The refusal a resume from `last_seq` gets from a session that gave out `seq` and keeps the
/// messages from `first_kept` on (`seq + 1` when it keeps none), if any.
pub(crate) fn resume_refusal(
    seq: u64,
    first_kept: u64,
    last_seq: u64,
) -> Option<(ErrorCode, String)> {
    if last_seq > seq {
        let message =
            format!("lastSeq {last_seq} is higher than the last message of the session ({seq})");
        return Some((ErrorCode::InvalidLastSeq, message));
    }
    if last_seq + 1 < first_kept {
        let message = format!(
            "the messages after {last_seq} are no longer kept (the oldest kept is {first_kept}); \
             the session has ended, log in afresh"
        );
        return Some((ErrorCode::HistoryLost, message));
    }
    None
}

/// The refusal of a resume from a connection verified as another user.
pub(crate) fn unauthorized_resume() -> (ErrorCode, String) {
    let message = "this connection may not resume another user's session".to_string();
    (ErrorCode::Unauthorized, message)
}

/// Which name it resembles is not said: that would help probe who is online.
fn look_alike_message(name: &Username) -> String {
    format!("the name {name:?} looks like a name in use (Unicode confusables); pick another")
}

/// The `unknown_user` message for `name`, quoted in NFC (as the target's node of a cluster
/// knows it) when it is a valid name.
fn unknown_user_message(name: &str) -> String {
    match nfc(name) {
        Cow::Owned(composed) if Username::validate(&composed).is_ok() => {
            format!("user {composed:?} is not logged in")
        }
        _ => format!("user {name:?} is not logged in"),
    }
}

fn busy_message(target: &Username) -> String {
    format!("user {:?} is in another call", target.as_str())
}

fn not_in_call_message(kind: RelayKind, target: &Username) -> String {
    format!(
        "cannot send {} to {:?}: not in a call with them (send an offer first)",
        kind.as_str(),
        target.as_str()
    )
}

fn overloaded_message(kind: RelayKind) -> String {
    format!(
        "the server is short of memory for queued messages; {} dropped, retry later",
        kind.as_str()
    )
}

fn congested_message(target: &Username, kind: RelayKind) -> String {
    format!(
        "user {:?} is not reading fast enough; {} dropped, retry later",
        target.as_str(),
        kind.as_str()
    )
}

fn unavailable_message(kind: RelayKind, to: &Username) -> String {
    format!(
        "the cluster could not deliver the {} to {:?}; retry later",
        kind.as_str(),
        to.as_str()
    )
}

fn detached_message(kind: RelayKind) -> String {
    format!(
        "this server lost contact with the cluster's name registry; {} dropped, retry later",
        kind.as_str()
    )
}

/// Who offered and who was offered, seen from `name`'s side of a call.
fn caller_callee(name: &Username, side: &CallSide) -> (Username, Username) {
    if side.caller {
        (name.clone(), side.peer.clone())
    } else {
        (side.peer.clone(), name.clone())
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle user holds a `Session` and a `Connection`: their size is the router's share
    /// of the RSS per idle connection (`docs/performance.md`).
    #[test]
    fn per_user_state_stays_small() {
        assert!(size_of::<Session>() <= 32, "{}", size_of::<Session>());
        assert!(size_of::<Connection>() <= 72, "{}", size_of::<Connection>());
    }
}
