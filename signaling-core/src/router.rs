//! The routing state machine: the user registry and call state, with no IO.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{ErrorCode, RouterError};
use std::borrow::Cow;

use foldhash::fast::RandomState;
use serde_json::value::RawValue;

use crate::protocol::{
    AsciiSkeletons, ClientMessage, Decoded, Payload, RelayKind, ServerMessage, Username, nfc,
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
    /// ([`CloseReason::RateLimited`], WebSocket code 1008). `0` never closes.
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

/// How the router behaves. Transport limits (sizes, timeouts) live in the adapters' config.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RouterConfig {
    /// Per-connection rate limit; `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    /// What each side of a call may send before the callee answers; `None` turns the bounds
    /// off.
    pub unanswered: Option<UnansweredLimits>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            rate_limit: Some(RateLimit::default()),
            unanswered: Some(UnansweredLimits::default()),
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
}

/// Why the router asks the driver to close a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client kept sending over its rate limit.
    RateLimited,
}

impl CloseReason {
    /// The WebSocket close code to send (RFC 6455 §7.4.1).
    pub fn code(self) -> u16 {
        match self {
            CloseReason::RateLimited => 1008,
        }
    }

    /// The close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            CloseReason::RateLimited => "rate limit exceeded",
        }
    }
}

/// A message for one connection.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The live connection to send it on.
    pub to: ConnectionId,
    /// What to send; [`ServerMessage::to_json`] gives the frame text.
    pub message: ServerMessage,
}

/// What the router asks of its driver. Drain with [`Router::poll_output`] after every `handle_*`.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send a message on a connection.
    Transmit(Transmit),
    /// Close a connection with a WebSocket close frame, then call
    /// [`Router::handle_disconnect`] for it once the transport is gone. The router ignores
    /// further input from it meanwhile.
    Close {
        /// The connection to close.
        conn: ConnectionId,
        /// Why; gives the close code and reason.
        reason: CloseReason,
    },
}

impl Output {
    /// The connection this output concerns.
    pub fn connection(&self) -> ConnectionId {
        match self {
            Output::Transmit(t) => t.to,
            Output::Close { conn, .. } => *conn,
        }
    }
}

/// One side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CallSide {
    peer: ConnectionId,
    /// The other side has answered (or this side answered).
    answered: bool,
    /// Offers this side relayed into the call while it was not answered (the opening one
    /// included).
    offers: u32,
    /// Candidates this side relayed into the call while it was not answered.
    candidates: u32,
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
    name: Option<Username>,
    /// The confusable skeleton of `name`: its key in [`Router::skeletons`].
    skeleton: Option<Arc<str>>,
    /// A name verified by an authenticator: the only one this connection may log in with.
    bound: Option<Username>,
    call: Option<CallSide>,
    /// Created at the first message, when the router first learns the time.
    bucket: Option<TokenBucket>,
    /// The router asked the driver to close it; input is ignored until the disconnect.
    closing: bool,
    /// The driver says its outbound queue is full: relays to it are refused to their senders.
    congested: bool,
}

/// The pure routing state machine: the registry of logged-in users, who is in a call with whom,
/// and the rules of the protocol.
///
/// Inputs go in through `handle_*`; outputs come out of [`poll_output`](Router::poll_output),
/// which must be drained after every input, in order (outputs for the same connection must be
/// sent in the order they come out). The router does no IO, reads no clock, spawns nothing and
/// takes no locks: time is an argument.
///
/// `Err` from a `handle_*` means the caller broke the contract (an id that is not live); a
/// client's mistakes never produce `Err`, they produce `error` replies to that client.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    connections: HashMap<ConnectionId, Connection, RandomState>,
    /// Keys come from clients: foldhash with a per-process random seed (not a fixed-seed hash
    /// an attacker could precompute collisions for), and several times faster than SipHash.
    names: HashMap<Username, ConnectionId, RandomState>,
    /// The TR39 skeleton of every logged-in name: one name per look, checked at login only
    /// (relays look names up in `names`). Shares the name's string when the two are equal.
    skeletons: HashMap<Arc<str>, ConnectionId, RandomState>,
    ascii_skeletons: AsciiSkeletons,
    /// Where a login's skeleton is computed (kept to save an allocation per login).
    skeleton_buf: String,
    outputs: VecDeque<Output>,
    /// The driver says the server's memory budget is nearly used up: relays are refused.
    overloaded: bool,
}

impl Default for Router {
    fn default() -> Self {
        Router::new(RouterConfig::default())
    }
}

impl Router {
    /// A router with no connections.
    pub fn new(config: RouterConfig) -> Self {
        Router {
            config,
            connections: HashMap::default(),
            names: HashMap::default(),
            skeletons: HashMap::default(),
            ascii_skeletons: AsciiSkeletons::new(),
            skeleton_buf: String::new(),
            outputs: VecDeque::new(),
            overloaded: false,
        }
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
    /// as `username` (any other name gets `login` failure `unauthorized`).
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
                name: None,
                skeleton: None,
                bound,
                call: None,
                bucket: None,
                closing: false,
                congested: false,
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
            Ok(message) => self.dispatch(conn, message),
            Err(e) => self.transmit(conn, e.reply()),
        }
        Ok(())
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
            self.dispatch(conn, message.into());
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

    /// The transport of `conn` is gone. Frees its name at once and tells its call partner, if
    /// any, `close` exactly once. Outputs still queued for `conn` are dropped.
    pub fn handle_disconnect(&mut self, conn: ConnectionId) -> Result<(), RouterError> {
        let gone = self
            .connections
            .remove(&conn)
            .ok_or(RouterError::UnknownConnection(conn))?;
        if self.outputs.iter().any(|o| o.connection() == conn) {
            self.outputs.retain(|o| o.connection() != conn);
        }
        if let Some(skeleton) = gone.skeleton {
            self.skeletons.remove(&skeleton);
        }
        if let Some(name) = gone.name {
            self.names.remove(&name);
            if let Some(side) = gone.call {
                self.end_call_for(side.peer, name);
            }
        }
        Ok(())
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

    /// How many connections are logged in.
    pub fn user_count(&self) -> usize {
        self.names.len()
    }

    /// Whether `conn` is live.
    pub fn is_connected(&self, conn: ConnectionId) -> bool {
        self.connections.contains_key(&conn)
    }

    /// The name `conn` logged in with.
    pub fn username(&self, conn: ConnectionId) -> Option<&Username> {
        self.connections.get(&conn)?.name.as_ref()
    }

    /// The connection logged in as `name` (or as its NFC form).
    pub fn connection_of(&self, name: &str) -> Option<ConnectionId> {
        self.lookup(name)
    }

    /// The connection holding a name whose confusable skeleton ([`Username::skeleton`]) is
    /// `skeleton`.
    pub fn connection_of_skeleton(&self, skeleton: &str) -> Option<ConnectionId> {
        self.skeletons.get(skeleton).copied()
    }

    /// The connection logged in as `name`: the exact name first (what clients send back is the
    /// `username` the server stamped, already NFC), then, for non-ASCII names only, its NFC
    /// form.
    fn lookup(&self, name: &str) -> Option<ConnectionId> {
        if let Some(&conn) = self.names.get(name) {
            return Some(conn);
        }
        if name.is_ascii() {
            return None;
        }
        match nfc(name) {
            Cow::Owned(composed) => self.names.get(composed.as_str()).copied(),
            Cow::Borrowed(_) => None,
        }
    }

    /// The connection `conn` is in a call with (offered or answered).
    pub fn partner(&self, conn: ConnectionId) -> Option<ConnectionId> {
        Some(self.connections.get(&conn)?.call?.peer)
    }

    /// Whether the call `conn` is in has been answered.
    pub fn is_answered(&self, conn: ConnectionId) -> bool {
        self.connections
            .get(&conn)
            .and_then(|c| c.call)
            .is_some_and(|s| s.answered)
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
        if limit.max_strikes != 0 && bucket.strikes >= limit.max_strikes {
            c.closing = true;
            self.outputs.push_back(Output::Close {
                conn,
                reason: CloseReason::RateLimited,
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
        }
        Ok(false)
    }

    fn dispatch(&mut self, conn: ConnectionId, message: Decoded<'_>) {
        match message {
            Decoded::Login { username } => self.login(conn, &username),
            Decoded::Relay { kind, payload, to } => self.relay(conn, kind, payload, to.as_deref()),
            Decoded::Close { to } => self.close(conn, to.as_deref()),
        }
    }

    fn transmit(&mut self, to: ConnectionId, message: ServerMessage) {
        self.outputs
            .push_back(Output::Transmit(Transmit { to, message }));
    }

    fn reply_error(&mut self, conn: ConnectionId, code: ErrorCode, message: impl Into<String>) {
        self.transmit(conn, ServerMessage::error(code, message));
    }

    fn login_failed(&mut self, conn: ConnectionId, code: ErrorCode, message: String) {
        self.transmit(
            conn,
            ServerMessage::Login {
                success: false,
                error: Some((code, message)),
            },
        );
    }

    /// `username` has passed [`Username::validate`].
    fn login(&mut self, conn: ConnectionId, username: &str) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        if let Some(current) = &c.name {
            let message = format!("already logged in as {current:?}");
            return self.login_failed(conn, ErrorCode::AlreadyLoggedIn, message);
        }
        if let Some(bound) = &c.bound {
            if bound.as_str() != username {
                let message = format!("this connection may only log in as {bound:?}");
                return self.login_failed(conn, ErrorCode::Unauthorized, message);
            }
        }
        if self.names.contains_key(username) {
            let message = format!("the name {username:?} is taken");
            return self.login_failed(conn, ErrorCode::NameTaken, message);
        }
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
            let message = format!(
                "the name {username:?} looks like a name in use (Unicode confusables); pick another"
            );
            Some((ErrorCode::NameTaken, message))
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
        let skeleton = key;
        self.names.insert(username.clone(), conn);
        self.skeletons.insert(Arc::clone(&skeleton), conn);
        if let Some(c) = self.connections.get_mut(&conn) {
            c.name = Some(username);
            c.skeleton = Some(skeleton);
        }
        self.transmit(
            conn,
            ServerMessage::Login {
                success: true,
                error: None,
            },
        );
    }

    /// The sender's name and call, or an error reply when it has not logged in.
    fn sender(&mut self, conn: ConnectionId) -> Option<(Username, Option<CallSide>)> {
        let c = self.connections.get(&conn)?;
        match &c.name {
            Some(name) => Some((name.clone(), c.call)),
            None => {
                self.reply_error(conn, ErrorCode::NotLoggedIn, "log in first");
                None
            }
        }
    }

    fn relay(
        &mut self,
        conn: ConnectionId,
        kind: RelayKind,
        payload: Cow<'_, RawValue>,
        to: Option<&str>,
    ) {
        let Some((me, call)) = self.sender(conn) else {
            return;
        };
        // Resolve the addressee: the named user, or else the current partner.
        let target = match (to, call) {
            (Some(name), _) => {
                let found = if name == me.as_str() {
                    Some(conn)
                } else {
                    self.lookup(name)
                };
                match found {
                    Some(target) if target == conn => {
                        let message = format!("cannot send {} to yourself", kind.as_str());
                        return self.reply_error(conn, ErrorCode::SelfAddressed, message);
                    }
                    Some(target) => target,
                    None => {
                        let message = format!("user {name:?} is not logged in");
                        return self.reply_error(conn, ErrorCode::UnknownUser, message);
                    }
                }
            }
            (None, Some(side)) => side.peer,
            (None, None) => {
                return self.reply_error(
                    conn,
                    ErrorCode::MissingField,
                    "missing field `otherUsername` (and not in a call)",
                );
            }
        };
        let in_call_with_target = call.is_some_and(|side| side.peer == target);
        // The rules first, then whether the message can be delivered, then the state changes.
        let opens_call = match kind {
            RelayKind::Offer if !in_call_with_target => {
                if let Some(side) = call {
                    let message = format!(
                        "already in a call with {:?}; send close first",
                        self.name_of(side.peer)
                    );
                    return self.reply_error(conn, ErrorCode::InCall, message);
                }
                let target_busy = self
                    .connections
                    .get(&target)
                    .is_none_or(|t| t.call.is_some());
                if target_busy {
                    let message = format!("user {:?} is in another call", self.name_of(target));
                    return self.reply_error(conn, ErrorCode::Busy, message);
                }
                true
            }
            RelayKind::Offer | RelayKind::Candidate | RelayKind::Answer => {
                if !in_call_with_target {
                    return self.not_in_call(conn, kind, target);
                }
                if let Some(side) = call.filter(|side| !side.answered) {
                    if let Some(message) = self.over_unanswered_limit(side, kind, payload.get()) {
                        return self.reply_error(conn, ErrorCode::UnansweredLimit, message);
                    }
                }
                false
            }
        };
        if self.overloaded {
            let message = format!(
                "the server is short of memory for queued messages; {} dropped, retry later",
                kind.as_str()
            );
            return self.reply_error(conn, ErrorCode::ServerOverloaded, message);
        }
        if self.connections.get(&target).is_some_and(|t| t.congested) {
            let message = format!(
                "user {:?} is not reading fast enough; {} dropped, retry later",
                self.name_of(target),
                kind.as_str()
            );
            return self.reply_error(conn, ErrorCode::RecipientOverloaded, message);
        }
        if opens_call {
            self.set_call(conn, target, false);
            self.set_call(target, conn, false);
        } else if kind == RelayKind::Answer {
            self.set_call(conn, target, true);
            self.set_call(target, conn, true);
        }
        if opens_call || call.is_some_and(|side| !side.answered) {
            self.count_unanswered(conn, kind);
        }
        self.transmit(
            target,
            ServerMessage::Relay {
                kind,
                payload: Payload::from_cow(payload),
                from: me,
            },
        );
    }

    fn not_in_call(&mut self, conn: ConnectionId, kind: RelayKind, target: ConnectionId) {
        let message = format!(
            "cannot send {} to {:?}: not in a call with them (send an offer first)",
            kind.as_str(),
            self.name_of(target)
        );
        self.reply_error(conn, ErrorCode::NotInCall, message);
    }

    fn name_of(&self, conn: ConnectionId) -> &str {
        self.connections
            .get(&conn)
            .and_then(|c| c.name.as_ref())
            .map_or("", Username::as_str)
    }

    fn set_call(&mut self, conn: ConnectionId, peer: ConnectionId, answered: bool) {
        if let Some(c) = self.connections.get_mut(&conn) {
            c.call = Some(CallSide {
                peer,
                answered,
                offers: 0,
                candidates: 0,
            });
        }
    }

    /// Why `kind` with `payload` may not be relayed by the side `side` of a call that is not
    /// answered, if it may not.
    fn over_unanswered_limit(
        &self,
        side: CallSide,
        kind: RelayKind,
        payload: &str,
    ) -> Option<String> {
        let limits = self.config.unanswered?;
        let peer = self.name_of(side.peer);
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

    /// Counts an offer or candidate `conn` relays into its unanswered call.
    fn count_unanswered(&mut self, conn: ConnectionId, kind: RelayKind) {
        if let Some(side) = self
            .connections
            .get_mut(&conn)
            .and_then(|c| c.call.as_mut())
        {
            match kind {
                RelayKind::Offer => side.offers = side.offers.saturating_add(1),
                RelayKind::Candidate => side.candidates = side.candidates.saturating_add(1),
                RelayKind::Answer => {}
            }
        }
    }

    fn close(&mut self, conn: ConnectionId, to: Option<&str>) {
        let Some((me, call)) = self.sender(conn) else {
            return;
        };
        let Some(side) = call else {
            return self.reply_error(conn, ErrorCode::NotInCall, "not in a call");
        };
        if let Some(named) = to {
            if self.lookup(named) != Some(side.peer) {
                let message = format!(
                    "not in a call with {named:?} (in a call with {:?})",
                    self.name_of(side.peer)
                );
                return self.reply_error(conn, ErrorCode::NotInCall, message);
            }
        }
        if let Some(c) = self.connections.get_mut(&conn) {
            c.call = None;
        }
        self.end_call_for(side.peer, me);
    }

    /// Ends `peer`'s call and tells it `close` from `from`.
    fn end_call_for(&mut self, peer: ConnectionId, from: Username) {
        if let Some(p) = self.connections.get_mut(&peer) {
            p.call = None;
            self.transmit(peer, ServerMessage::Close { from });
        }
    }
}
