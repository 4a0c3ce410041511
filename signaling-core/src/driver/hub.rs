//! The hub: owns the router, admits, registers and dispatches to connections, shuts them down.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use foldhash::fast::RandomState;
use futures_util::{Sink, Stream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::admission::{self, ConnectionPermits, Slots};
use super::connection::SharedSocket;
use super::guards::{ActiveGuard, Registration};
use super::heartbeat::{Heartbeat, Liveness};
use super::ice::IceServers;
use super::observe::HubEvent;
use super::outbox::{Direct, Full, Outbox, Owed, Pushed};
use super::tokens::OsTokens;
use super::{
    Admission, CloseFrame, Config, ConnectionInfo, Outbound, PendingRequest, Refusal, Transport,
    UpgradeRequest, auth,
};
use crate::ErrorCode;
use crate::cluster::Unroutable;
use crate::protocol::{ServerMessage, SessionToken, Username};
use crate::router::{ClaimOutcome, ConnectionId, DisconnectReason, Output, Router, Transmit};

use super::cluster::ClusterLink;

/// Lifecycle of the hub, watched by accept loops and connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// `shutdown` started: no new connections (accept loops still answer health checks and
    /// refuse upgrades with 503), live ones drain and close.
    Draining,
    /// The shutdown timeout passed: drop what is left.
    Killed,
    /// `shutdown` returned: accept loops stop.
    Stopped,
}

pub(super) struct State {
    pub(super) router: Router,
    /// Keyed by ids the hub hands out itself (no attacker picks them): foldhash, not SipHash.
    pub(super) connections: HashMap<ConnectionId, Arc<Outbox>, RandomState>,
    next_id: u64,
    shutting_down: bool,
    /// The router was told the global budget is nearly used up.
    overloaded: bool,
    /// The deadline the hub's timer task sleeps until (the router's `poll_timeout` or the
    /// connections' next timer when it last looked).
    timer_armed: Option<std::time::Instant>,
    /// The connections' timers (heartbeat, login deadline): when each connection's next one is
    /// due. One entry per running connection; an ended one's entry goes when it comes due.
    pub(super) heartbeats: BinaryHeap<Reverse<(Instant, ConnectionId)>>,
    /// Claims the router asked for (cluster mode), for the logging-in connection's task to
    /// carry out (`run_claims`).
    claims: Vec<(ConnectionId, Username, Arc<str>)>,
    /// Sessions the router asked for (cluster mode: a `resume` with another node's token),
    /// for the resuming connection's task to fetch (`run_fetches`).
    fetches: Vec<Fetch>,
    /// While a reader's input is dispatched ([`Hub::input`] with an [`Owed`]): messages for
    /// other connections are queued without waking their writers; the last queue that needs
    /// a wake is here, for the reader to settle (earlier ones are woken at once).
    defer: bool,
    owed: Option<Arc<Outbox>>,
}

/// An [`Output::Fetch`] waiting for its connection's task.
struct Fetch {
    conn: ConnectionId,
    token: SessionToken,
    last_seq: u64,
    verified: Option<Username>,
}

pub(super) struct Inner {
    pub(super) config: Config,
    state: Mutex<State>,
    phase: watch::Sender<Phase>,
    /// Connection tasks still running (including their closing handshakes).
    pub(super) active: AtomicUsize,
    pub(super) idle: Notify,
    /// Base of the millisecond clock kept per connection for the heartbeat.
    pub(super) epoch: Instant,
    /// Slots taken, for the caps.
    slots: Slots,
    /// Bytes queued for all connections (what `max_total_queued_bytes` bounds).
    queued: Arc<AtomicUsize>,
    /// Keys the heartbeat's ping payloads, so a client cannot answer a ping it never read.
    pub(super) ping_keys: std::collections::hash_map::RandomState,
    /// Wakes the hub's timer task: the router has a sooner deadline, or the hub is gone.
    timer_wake: Arc<Notify>,
    /// The timer task was spawned (at the first connection, inside the runtime).
    timer_started: AtomicBool,
    /// Claims waiting in [`State::claims`] (so that a connection's task looks under the lock
    /// only when there are some: a relay in cluster mode costs no extra lock).
    claims_waiting: AtomicUsize,
    /// Fetches waiting in [`State::fetches`], likewise.
    fetches_waiting: AtomicUsize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the timer task see that the hub is gone and end.
        self.timer_wake.notify_one();
    }
}

/// The server: owns the [`Router`], allocates [`ConnectionId`]s, runs connections and shuts
/// them down. Cheap to clone (an `Arc` inside); every clone is the same server.
///
/// Create one per server and hand clones to the adapters (`signaling_ws::serve`,
/// `signaling_warp::routes`). See the [module docs](super) for what each connection does.
#[derive(Clone)]
pub struct Hub {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("phase", &*self.inner.phase.borrow())
            .field("active", &self.inner.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(Config::default())
    }
}

impl Hub {
    /// A hub with no connections.
    ///
    /// With a [`Config::cluster`] backend the router runs in cluster mode and the backend is
    /// started (call this inside the Tokio runtime then).
    pub fn new(config: Config) -> Hub {
        let mut router_config = config.router.clone();
        if config.cluster.is_some() {
            router_config = router_config.with_claim_names(true);
        }
        // Cluster mode: tokens name this node, so that a resume elsewhere finds the session.
        let tokens = match config.cluster.as_deref().map(|backend| backend.node_id()) {
            Some(node) if node.len() + 1 + 22 <= SessionToken::MAX_LEN => OsTokens::with_node(node),
            Some(node) => {
                tracing::warn!(
                    node,
                    "node id too long for session tokens: sessions cannot move to other nodes"
                );
                OsTokens::default()
            }
            None => OsTokens::default(),
        };
        let router = Router::new(router_config).with_token_source(tokens);
        let hub = Hub {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State {
                    router,
                    connections: HashMap::default(),
                    next_id: 1,
                    shutting_down: false,
                    overloaded: false,
                    timer_armed: None,
                    heartbeats: BinaryHeap::new(),
                    claims: Vec::new(),
                    fetches: Vec::new(),
                    defer: false,
                    owed: None,
                }),
                phase: watch::Sender::new(Phase::Running),
                active: AtomicUsize::new(0),
                idle: Notify::new(),
                epoch: Instant::now(),
                slots: Slots::default(),
                queued: Arc::default(),
                ping_keys: std::collections::hash_map::RandomState::new(),
                timer_wake: Arc::new(Notify::new()),
                timer_started: AtomicBool::new(false),
                claims_waiting: AtomicUsize::new(0),
                fetches_waiting: AtomicUsize::new(0),
            }),
        };
        if let Some(backend) = &hub.inner.config.cluster {
            backend.start(ClusterLink {
                hub: Arc::downgrade(&hub.inner),
            });
        }
        hub
    }

    /// Input from the cluster backend (not from a connection), handled under the lock at the
    /// current time, and what comes out dispatched.
    pub(super) fn cluster_input(&self, f: impl FnOnce(&mut Router, std::time::Instant)) {
        let now = Instant::now().into_std();
        let mut state = self.lock();
        self.refresh_overload(&mut state);
        f(&mut state.router, now);
        self.dispatch(&mut state, None);
    }

    /// [`cluster_input`](Self::cluster_input) for each item, under one lock.
    pub(super) fn cluster_input_each<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        mut f: impl FnMut(&mut Router, T, std::time::Instant),
    ) {
        let now = Instant::now().into_std();
        let mut state = self.lock();
        for item in items {
            self.refresh_overload(&mut state);
            f(&mut state.router, item, now);
            self.dispatch(&mut state, None);
        }
    }

    /// Carries out the claims the last input of `conn` asked for (cluster mode: a login), one
    /// at a time, and hands each outcome to the router. The connection's task awaits this
    /// before it reads its next frame, so its messages keep their order.
    pub(super) async fn run_claims(&self, conn: ConnectionId) {
        let Some(backend) = &self.inner.config.cluster else {
            return;
        };
        while self.inner.claims_waiting.load(Ordering::Acquire) > 0 {
            let claim = {
                let mut state = self.lock();
                let at = state.claims.iter().position(|(c, ..)| *c == conn);
                at.map(|i| state.claims.swap_remove(i))
            };
            if claim.is_some() {
                self.inner.claims_waiting.fetch_sub(1, Ordering::AcqRel);
            }
            let Some((_, name, skeleton)) = claim else {
                return;
            };
            let outcome = backend.claim(&name, &skeleton).await;
            tracing::debug!(%conn, name = name.as_str(), ?outcome, "claim");
            self.cluster_input(|router, _| {
                let _ = router.handle_claimed(conn, &name, outcome);
            });
        }
    }

    /// Whether a connection's task may have claims or fetches to carry out (cluster mode).
    pub(super) fn has_cluster_work(&self) -> bool {
        self.inner.config.cluster.is_some()
            && (self.inner.claims_waiting.load(Ordering::Acquire) > 0
                || self.inner.fetches_waiting.load(Ordering::Acquire) > 0)
    }

    /// Fetches the sessions the last input of `conn` asked for (cluster mode: a `resume` with
    /// another node's token), as [`run_claims`](Self::run_claims) does for logins: the
    /// connection's task awaits this before it reads its next frame. The backend hands a
    /// fetched session in itself ([`ClusterLink::import`]); a refusal is handed in here.
    pub(super) async fn run_fetches(&self, conn: ConnectionId) {
        let Some(backend) = &self.inner.config.cluster else {
            return;
        };
        while self.inner.fetches_waiting.load(Ordering::Acquire) > 0 {
            let fetch = {
                let mut state = self.lock();
                let at = state.fetches.iter().position(|f| f.conn == conn);
                at.map(|i| state.fetches.swap_remove(i))
            };
            if fetch.is_some() {
                self.inner.fetches_waiting.fetch_sub(1, Ordering::AcqRel);
            }
            let Some(fetch) = fetch else {
                return;
            };
            let fetched = backend
                .fetch(conn, &fetch.token, fetch.last_seq, fetch.verified.as_ref())
                .await;
            tracing::debug!(%conn, ok = fetched.is_ok(), "session fetched from the cluster");
            if let Err((code, message)) = fetched {
                self.cluster_input(|router, _| router.handle_fetch_refused(conn, code, message));
            }
        }
    }

    /// Starts the hub's one timer task (once, from inside the runtime): it sleeps until the
    /// router's next deadline — a resumable session's grace, a call's ring timeout — and
    /// feeds it the time. One timer per hub, not one per connection.
    fn start_timer(&self) {
        if !self.inner.timer_started.swap(true, Ordering::AcqRel) {
            let wake = Arc::clone(&self.inner.timer_wake);
            tokio::spawn(run_timer(Arc::downgrade(&self.inner), wake));
        }
    }

    /// Runs the router's and the connections' due timers now, then says when the next is due.
    fn fire_timers(&self) -> Option<std::time::Instant> {
        let mut state = self.lock();
        let now = Instant::now();
        if state
            .router
            .poll_timeout()
            .is_some_and(|at| at <= now.into_std())
        {
            self.refresh_overload(&mut state);
            state.router.handle_timeout(now.into_std());
            self.dispatch(&mut state, None);
        }
        self.fire_heartbeats(&mut state, now);
        let heartbeat = state
            .heartbeats
            .peek()
            .map(|Reverse((at, _))| at.into_std());
        let next = match (state.router.poll_timeout(), heartbeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        state.timer_armed = next;
        next
    }

    /// Wakes the timer task if `at` is sooner than what it sleeps until.
    pub(super) fn wake_timer_for(&self, state: &mut State, at: std::time::Instant) {
        if state.timer_armed.is_none_or(|armed| at < armed) {
            state.timer_armed = Some(at);
            self.inner.timer_wake.notify_one();
        }
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Runs `f` on the router, read-only, under the hub's lock (for metrics and tests). Keep
    /// it short: every connection waits for the lock meanwhile.
    pub fn with_router<R>(&self, f: impl FnOnce(&Router) -> R) -> R {
        f(&self.lock().router)
    }

    /// How many connections are registered with the router.
    pub fn connection_count(&self) -> usize {
        self.lock().connections.len()
    }

    /// Whether [`shutdown`](Self::shutdown) has started.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.phase.borrow() != Phase::Running
    }

    /// Resolves once [`shutdown`](Self::shutdown) starts; it fits warp's `graceful` signal.
    pub fn shutdown_started(&self) -> impl Future<Output = ()> + Send + 'static {
        self.phase_reached(Phase::Draining)
    }

    /// Resolves once [`shutdown`](Self::shutdown) has returned (every connection gone). The
    /// adapters' accept loops keep accepting until then, so that health checks see
    /// [`is_ready`](Self::is_ready) turn false during the drain and upgrades get a 503.
    pub fn shutdown_finished(&self) -> impl Future<Output = ()> + Send + 'static {
        self.phase_reached(Phase::Stopped)
    }

    /// Whether the shutdown's deadline has passed (connections are being dropped).
    pub(super) fn is_killed(&self) -> bool {
        *self.inner.phase.borrow() >= Phase::Killed
    }

    /// Resolves once the shutdown's deadline has passed: what is left is dropped.
    pub(super) fn killed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.phase_reached(Phase::Killed)
    }

    fn phase_reached(&self, phase: Phase) -> impl Future<Output = ()> + Send + 'static {
        let mut watched = self.inner.phase.subscribe();
        async move {
            let _ = watched.wait_for(|p| *p >= phase).await;
        }
    }

    /// Readiness (`/readyz`): whether the hub takes new connections — not once
    /// [`shutdown`](Self::shutdown) has started, and in cluster mode not while the backend
    /// is unreachable ([`ClusterBackend::is_available`](super::cluster::ClusterBackend::is_available):
    /// logins would fail).
    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down()
            && self
                .inner
                .config
                .cluster
                .as_ref()
                .is_none_or(|backend| backend.is_available())
    }

    /// The answer to a health check at `path`, for adapters that serve them on their main
    /// port: `GET /healthz` is liveness (200 whenever the process answers), `GET /readyz` is
    /// [`is_ready`](Self::is_ready) (200, or 503 saying why not). `None` for any other path.
    pub fn health_check(&self, path: &str) -> Option<(u16, &'static str)> {
        match path {
            "/healthz" => Some((200, "ok")),
            "/readyz" if self.is_shutting_down() => Some((503, "not ready: shutting down")),
            "/readyz" if !self.is_ready() => {
                Some((503, "not ready: the cluster backend is unreachable"))
            }
            "/readyz" => Some((200, "ready")),
            _ => None,
        }
    }

    /// Graceful shutdown: refuses new connections, lets each live one send what is queued for
    /// it, sends it a 1001 close frame and waits for it to close. Returns when every
    /// connection is gone, or after [`Config::shutdown_timeout`] when those left are dropped.
    /// Calling it again (or from several clones) is harmless.
    ///
    /// In cluster mode a rolling restart hangs up no call: the resumable sessions are handed
    /// to the backend to keep ([`Router::handle_evacuate`], `ClusterBackend::park`) and their
    /// connections closed with **1012** once they are kept, so that their clients resume on
    /// another node and their partners never hear of it; plain sessions end as above (their
    /// partners are told `close`).
    pub async fn shutdown(&self) {
        let (closing, evacuated) = {
            let mut state = self.lock();
            let first = !state.shutting_down;
            state.shutting_down = true;
            let evacuated = match &self.inner.config.cluster {
                Some(_) if first => {
                    let now = Instant::now().into_std();
                    let evacuated = state.router.handle_evacuate(now);
                    self.dispatch(&mut state, None);
                    evacuated
                }
                _ => Vec::new(),
            };
            let closing: Vec<Arc<Outbox>> = state.connections.values().cloned().collect();
            (closing, evacuated)
        };
        self.inner.phase.send_if_modified(|p| {
            let first = *p == Phase::Running;
            if first {
                *p = Phase::Draining;
            }
            first
        });
        if let Some(backend) = self
            .inner
            .config
            .cluster
            .as_ref()
            .filter(|_| !evacuated.is_empty())
        {
            // Kept first, closed after: a client that resumes the moment it sees 1012 finds
            // its session.
            let kept = backend.park(&evacuated).await;
            tracing::info!(
                sessions = evacuated.len(),
                kept = kept.iter().filter(|k| **k).count(),
                "shutdown: resumable sessions handed to the cluster"
            );
            let state = self.lock();
            for (i, session) in evacuated.iter().enumerate() {
                let outbox = session.conn.and_then(|conn| state.connections.get(&conn));
                if let (Some(outbox), true) = (outbox, kept.get(i).copied().unwrap_or(false)) {
                    outbox.close(CloseFrame::SERVICE_RESTART);
                }
            }
        }
        for outbox in &closing {
            outbox.close(CloseFrame::GOING_AWAY);
        }
        drop(closing);
        let drained = tokio::time::timeout(self.inner.config.shutdown_timeout, self.wait_idle());
        if drained.await.is_err() {
            tracing::warn!(
                left = self.inner.active.load(Ordering::Relaxed),
                "shutdown timeout: dropping the connections left"
            );
            self.inner.phase.send_replace(Phase::Killed);
            // Registered connections end at once; those already closing watch the phase.
            let left: Vec<Arc<Outbox>> = self.lock().connections.values().cloned().collect();
            for outbox in left {
                outbox.abort();
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wait_idle()).await;
        }
        if let Some(backend) = &self.inner.config.cluster {
            backend.shutdown().await;
        }
        self.inner.phase.send_replace(Phase::Stopped);
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held (a bug) must not take the whole server down.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many connection slots are taken: connections admitted by [`admit`](Self::admit)
    /// or handed to [`serve_connection`](Self::serve_connection) that have not ended yet
    /// (what [`Config::max_connections`] caps).
    pub fn admitted_connections(&self) -> usize {
        self.inner.slots.connections_in_use()
    }

    /// How many admitted connections have not logged in yet (what
    /// [`Config::max_not_logged_in`] caps).
    pub fn not_logged_in_connections(&self) -> usize {
        self.inner.slots.not_logged_in_in_use()
    }

    /// How many TCP connections hold a [`PendingRequest`] (what
    /// [`Config::max_pending_requests`] caps).
    pub fn pending_requests(&self) -> usize {
        self.inner.slots.pending_in_use()
    }

    /// Bytes queued for all connections together, including those being written (what
    /// [`Config::max_total_queued_bytes`] bounds).
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Takes a pending-request slot for a TCP connection just accepted from `remote_ip`, to
    /// hold until its request is upgraded or answered; refused (close the connection at once)
    /// when [`Config::max_pending_requests`] (or its per-address twin) is reached, or once
    /// the shutdown's deadline has passed. (During the shutdown's drain requests are still
    /// read: health checks are answered, upgrades refused with 503.) Adapters that read requests themselves call it after `accept`.
    pub fn pending_request(&self, remote_ip: Option<IpAddr>) -> Result<PendingRequest, Refusal> {
        if self.is_killed() {
            return Err(Refusal::ShuttingDown);
        }
        let config = &self.inner.config;
        let permit = self
            .inner
            .slots
            .pending(admission::pending_ip(config, remote_ip), config)?;
        Ok(PendingRequest { _permit: permit })
    }

    /// Decides on a WebSocket upgrade request before the upgrade: refuses it while shutting
    /// down (503), when its `Origin` is not in [`Config::allowed_origins`] (403), when the
    /// connection caps are full (503 in all, 429 for its address), or when the
    /// [`Config::authenticator`] says so (401/403). Otherwise it takes a connection slot and
    /// returns it with what is known of the client, for
    /// [`serve_admitted`](Self::serve_admitted) once the socket is upgraded.
    ///
    /// Adapters call it with the request in hand and answer a [`Refusal`] with its HTTP
    /// status; if you upgrade sockets yourself, call it the same way.
    pub async fn admit(&self, request: &UpgradeRequest) -> Result<Admission, Refusal> {
        let decided = self.decide(request).await;
        if let Err(refusal) = &decided {
            tracing::debug!(addr = ?request.remote_addr, status = refusal.status(), %refusal, "upgrade refused");
            self.observe(&HubEvent::Refused(refusal));
        }
        decided
    }

    /// Tells the [`Config::observer`] of an upgrade refused before [`admit`](Self::admit)
    /// was asked (adapters call it for a request that is not a well-formed WebSocket upgrade,
    /// [`UpgradeRequest::check_handshake`]), so that every refused upgrade is counted once.
    pub fn note_refusal(&self, refusal: &Refusal) {
        self.observe(&HubEvent::Refused(refusal));
    }

    /// Tells the [`Config::observer`], if there is one.
    pub(super) fn observe(&self, event: &HubEvent<'_>) {
        if let Some(observer) = &self.inner.config.observer {
            observer.observe(event);
        }
    }

    async fn decide(&self, request: &UpgradeRequest) -> Result<Admission, Refusal> {
        let config = &self.inner.config;
        if self.is_shutting_down() {
            return Err(Refusal::ShuttingDown);
        }
        if let Some(allowed) = &config.allowed_origins {
            let origin = request.origin().ok_or(Refusal::MissingOrigin)?;
            if !admission::origin_allowed(allowed, origin) {
                return Err(Refusal::OriginNotAllowed);
            }
        }
        let ip = admission::client_ip(config, request);
        // Taken before the authenticator runs: a slow one holds a slot meanwhile, and a
        // panicking one gives it back as it unwinds.
        let mut permits = self.inner.slots.connection(ip, config)?;
        let mut info = ConnectionInfo::new();
        info.remote_addr = request.remote_addr;
        if let Some(authenticator) = &config.authenticator {
            match authenticator.authenticate(request).await {
                auth::AuthDecision::Accept => {}
                auth::AuthDecision::AcceptAs(name) => {
                    permits.user = Some(self.inner.slots.user(&name, config)?);
                    info.verified_username = Some(name);
                }
                auth::AuthDecision::Unauthorized(reason) => {
                    return Err(Refusal::Unauthorized(reason));
                }
                auth::AuthDecision::Forbidden(reason) => return Err(Refusal::Forbidden(reason)),
            }
        }
        Ok(Admission { info, permits })
    }

    /// Runs a WebSocket upgraded after [`admit`](Self::admit) accepted its request to its
    /// end, as [`serve_connection`](Self::serve_connection) does, and gives the connection
    /// slot back when it ends (however it ends).
    ///
    /// The socket is moved to the heap before the future is made, so the future — what every
    /// connection's task holds while idle — does not carry it inline; the future holds a clone
    /// of the hub, not a borrow.
    pub fn serve_admitted<T, S>(
        &self,
        socket: S,
        admission: Admission,
    ) -> impl Future<Output = ()> + Send + use<T, S>
    where
        T: Transport,
        S: Stream<Item = Result<T::Message, T::Error>>
            + Sink<T::Message, Error = T::Error>
            + Unpin
            + Send
            + 'static,
        T::Message: Send,
    {
        let Admission { info, permits } = admission;
        let socket = Arc::new(SharedSocket::<T, S>::new(socket));
        self.clone().run_connection::<T, S>(socket, info, permits)
    }

    /// Runs one upgraded WebSocket connection to its end: registers it with the router, reads,
    /// writes, pings and enforces the deadlines, then tears it down. It never returns an
    /// error, a transport failure just ends the connection.
    ///
    /// For a socket upgraded without [`admit`](Self::admit): it takes a connection slot for
    /// `info.remote_addr` itself, and when the caps are full closes the WebSocket at once with
    /// 1013 ([`CloseFrame::TRY_AGAIN_LATER`]). The origin allowlist and the authenticator are not
    /// consulted (there is no request); adapters use `admit` and
    /// [`serve_admitted`](Self::serve_admitted) instead.
    ///
    /// `T` says how the socket's messages map to frames; see [`Transport`]. Like
    /// [`serve_admitted`](Self::serve_admitted), the returned future owns a clone of the hub
    /// and the socket (on the heap).
    pub fn serve_connection<T, S>(
        &self,
        socket: S,
        info: ConnectionInfo,
    ) -> impl Future<Output = ()> + Send + use<T, S>
    where
        T: Transport,
        S: Stream<Item = Result<T::Message, T::Error>>
            + Sink<T::Message, Error = T::Error>
            + Unpin
            + Send
            + 'static,
        T::Message: Send,
    {
        let ip = info.remote_addr.map(|a| a.ip());
        let permits = self.inner.slots.connection(ip, &self.inner.config);
        let socket = Arc::new(SharedSocket::<T, S>::new(socket));
        match permits {
            Ok(permits) => futures_util::future::Either::Left(
                self.clone().run_connection::<T, S>(socket, info, permits),
            ),
            Err(refusal) => {
                tracing::debug!(addr = ?info.remote_addr, %refusal, "connection refused");
                let close_timeout = self.inner.config.close_timeout;
                futures_util::future::Either::Right(async move {
                    let close =
                        socket.send(T::outbound(Outbound::Close(CloseFrame::TRY_AGAIN_LATER)));
                    let _ = tokio::time::timeout(close_timeout, close).await;
                })
            }
        }
    }

    /// Runs the connection holding `permits` (given back when it ends, however it ends).
    async fn run_connection<T, S>(
        self,
        socket: Arc<SharedSocket<T, S>>,
        info: ConnectionInfo,
        mut permits: ConnectionPermits,
    ) where
        T: Transport,
        S: Stream<Item = Result<T::Message, T::Error>>
            + Sink<T::Message, Error = T::Error>
            + Unpin
            + Send
            + 'static,
    {
        let active = ActiveGuard::new(&self);
        let Some(registration) = self.register(&info) else {
            // Shutting down: refuse politely (boxed: not in every connection's future).
            let close = socket.send(T::outbound(Outbound::Close(CloseFrame::GOING_AWAY)));
            let _ = Box::pin(tokio::time::timeout(self.inner.config.close_timeout, close)).await;
            return;
        };
        tracing::debug!(conn = %registration.id, addr = ?info.remote_addr, "connected");
        drop(info);
        // The socket and the permits stay here; the loops borrow them (held once in the
        // future, not again in each nested one). The socket is shared with the senders that
        // write into it from their own tasks (`Outbox::write_now`).
        registration
            .outbox
            .set_direct(Some(Arc::clone(&socket) as Arc<dyn Direct>));
        let body = self.run::<T, S>(&socket, &registration, &mut permits.not_logged_in);
        // The shutdown's deadline aborts the connection's outbox (a watch of the phase here
        // would be polled at every wake-up of every connection: measurable per relay).
        body.await;
        registration.outbox.set_direct(None);
        drop(registration);
        let ConnectionPermits {
            connection, user, ..
        } = permits;
        drop((connection, user));
        drop(active);
    }

    /// Registers a connection with the router; `None` while shutting down.
    pub(super) fn register(&self, info: &ConnectionInfo) -> Option<Registration> {
        let mut state = self.lock();
        if state.shutting_down {
            return None;
        }
        let id = ConnectionId(state.next_id);
        state.next_id += 1;
        let connected = match &info.verified_username {
            Some(name) => state.router.handle_connect_verified(id, name.clone()),
            None => state.router.handle_connect(id),
        };
        if let Err(e) = connected {
            // Ids are never reused, so this cannot happen; refuse rather than panic.
            tracing::error!(error = %e, "router refused a fresh connection id");
            return None;
        }
        let now = Instant::now();
        let heartbeat = Heartbeat::new(now, &self.inner.config);
        self.arm_heartbeat(&mut state, id, &heartbeat);
        let liveness = Liveness {
            last_seen: AtomicU64::new(self.millis_at(now)),
            ..Liveness::default()
        };
        let outbox = Arc::new(Outbox::new(
            Arc::clone(&self.inner.queued),
            heartbeat,
            liveness,
        ));
        state.connections.insert(id, Arc::clone(&outbox));
        drop(state);
        self.start_timer();
        self.observe(&HubEvent::Opened);
        Some(Registration {
            hub: self.clone(),
            id,
            outbox,
            cause: OnceLock::new(),
        })
    }

    /// Feeds one input from `from` to the router under the lock and dispatches what comes
    /// out. `false` when the router no longer knows the connection (it was disconnected
    /// meanwhile).
    ///
    /// With `owed` (a reader's text frames): messages for other connections are queued
    /// without waking their writers, and the wake the last of them needs is added to `owed`,
    /// for the reader to settle outside the lock (writing into that socket itself, or waking
    /// its writer). Without it every writer is woken at once, as before.
    pub(super) fn input(
        &self,
        now: Instant,
        from: ConnectionId,
        owed: Option<&mut Owed>,
        f: impl FnOnce(&mut Router, std::time::Instant) -> Result<(), crate::RouterError>,
    ) -> bool {
        let now = now.into_std();
        let mut state = self.lock();
        self.refresh_overload(&mut state);
        let ok = f(&mut state.router, now).is_ok();
        state.defer = owed.is_some();
        self.dispatch(&mut state, Some(from));
        state.defer = false;
        let new = state.owed.take();
        drop(state);
        if let (Some(owed), Some(new)) = (owed, new) {
            owed.owe(new);
        }
        ok
    }

    /// Tells the router when the queued total crosses the budget's marks: relays are refused
    /// from 90 % of [`Config::max_total_queued_bytes`] until it is back under 70 %.
    fn refresh_overload(&self, state: &mut State) {
        let Some(budget) = self.inner.config.max_total_queued_bytes else {
            return;
        };
        // What the sessions keep for resumes counts too.
        let total = self.queued_bytes() + state.router.retained_bytes();
        let overloaded = if state.overloaded {
            total >= budget / 10 * 7
        } else {
            total >= budget / 10 * 9
        };
        if overloaded != state.overloaded {
            state.overloaded = overloaded;
            state.router.handle_overload(overloaded);
            if overloaded {
                tracing::warn!(
                    total,
                    budget,
                    "queued bytes near the budget: refusing relays"
                );
            } else {
                tracing::info!(total, budget, "queued bytes back under the budget");
            }
        }
    }

    /// The writer of `conn` drained its congested queue: relays to it are accepted again.
    pub(super) fn relieve(&self, conn: ConnectionId) {
        let _ = self.lock().router.handle_backpressure(conn, false);
    }

    /// Drains the router's outputs into the connections' queues, without blocking, while
    /// handling input from `sender` (if any).
    ///
    /// A queue that reaches three quarters of its bounds is reported to the router, which then
    /// refuses relays to it to their senders. A message that still does not fit (a relay
    /// racing that report, or traffic the router does not refuse) is answered to its sender
    /// with `recipient_overloaded` if it is a relay; anything else that does not fit means the
    /// client has not read for a long time, and it is disconnected (which may produce more
    /// outputs: its partner's `close`). Over the global budget the connections holding the
    /// most queued bytes are disconnected, largest first.
    pub(super) fn dispatch(&self, state: &mut State, sender: Option<ConnectionId>) {
        let config = &self.inner.config;
        loop {
            let mut deferred = Deferred::default();
            while let Some(output) = state.router.poll_output() {
                // A relay's message is nearly every output under load: its path stays short
                // and together; everything else is out of line (the code a relay runs must
                // fit the instruction cache beside the transport's).
                match output {
                    Output::Transmit(t) => self.transmit(state, t, sender, &mut deferred),
                    // Cluster mode: every relay to another node's user (not cold there).
                    Output::Forward(envelope) => self.forward(envelope, &mut deferred),
                    other => self.other_output(state, other, sender, &mut deferred),
                }
            }
            if let Some(budget) = config.max_total_queued_bytes {
                if self.queued_bytes() > budget {
                    self.shed(state, budget, &mut deferred.dropped);
                }
                self.refresh_overload(state);
            }
            if deferred.is_empty() {
                break;
            }
            if !self.settle_deferred(state, deferred) {
                break;
            }
        }
        // A sooner deadline than the timer task sleeps until: wake it.
        if let Some(next) = state.router.poll_timeout() {
            self.wake_timer_for(state, next);
        }
    }

    /// Queues one message for its connection (see [`dispatch`](Self::dispatch)).
    #[inline]
    fn transmit(
        &self,
        state: &mut State,
        mut t: Transmit,
        sender: Option<ConnectionId>,
        deferred: &mut Deferred,
    ) {
        let config = &self.inner.config;
        let Some(outbox) = state.connections.get(&t.to) else {
            return;
        };
        let relayed = match &t.message {
            ServerMessage::Relay { kind, .. } => Some(*kind),
            _ => None,
        };
        let relay = relayed.is_some();
        if !relay {
            if let Some(ice) = &config.ice_servers {
                attach_ice_servers(&mut t, &state.router, ice);
            }
        }
        let to = t.to;
        let pushed = if state.defer && sender.is_some_and(|s| s != to) {
            // The reader that sent it wakes the writer, or writes for it (`Owed`).
            outbox.push_deferred(t, config).map(|(pushed, owe)| {
                if owe {
                    if let Some(earlier) = state.owed.replace(Arc::clone(outbox)) {
                        if !Arc::ptr_eq(&earlier, outbox) {
                            earlier.wake();
                        }
                    }
                }
                pushed
            })
        } else {
            outbox.push(t, config)
        };
        if let (Some(observer), Some(kind), Ok(_)) = (&config.observer, relayed, &pushed) {
            observer.observe(&HubEvent::Relayed { kind });
        }
        match pushed {
            Ok(Pushed::Queued) => {}
            Ok(Pushed::Congested) => congested(state, to),
            Err(Full) => full(state, deferred, sender.filter(|&s| relay && s != to), to),
        }
    }

    /// Every output but a transmit or a forward, which [`dispatch`](Self::dispatch) handles
    /// itself.
    #[cold]
    #[inline(never)]
    fn other_output(
        &self,
        state: &mut State,
        output: Output,
        sender: Option<ConnectionId>,
        deferred: &mut Deferred,
    ) {
        let cluster = self.inner.config.cluster.as_ref();
        match output {
            Output::Transmit(t) => self.transmit(state, t, sender, deferred),
            Output::Disconnect { conn, reason } => {
                if let Some(outbox) = state.connections.get(&conn) {
                    let close = CloseFrame {
                        code: reason.code(),
                        reason: reason.reason(),
                    };
                    if reason == DisconnectReason::ResumedElsewhere {
                        // Its messages are replayed on the connection that resumed.
                        outbox.close_discarding(close);
                    } else {
                        outbox.close(close);
                    }
                }
            }
            Output::Event(event) => {
                tracing::debug!(?event, "router event");
                self.observe(&HubEvent::Router(&event));
            }
            Output::Claim {
                conn,
                name,
                skeleton,
            } => match cluster {
                // The logging-in connection's task asks the backend (`run_claims`).
                Some(_) => {
                    state.claims.push((conn, name, skeleton));
                    self.inner.claims_waiting.fetch_add(1, Ordering::AcqRel);
                }
                // No shared registry: this hub is the only node, its router already
                // checked the name locally, so every claim wins and a release has
                // nobody to tell.
                None => deferred.claims.push((conn, name)),
            },
            Output::Release { name, skeleton } => {
                if let Some(backend) = cluster {
                    backend.release(name, skeleton);
                }
            }
            Output::Fetch {
                conn,
                token,
                last_seq,
                verified,
            } => match cluster {
                // The resuming connection's task asks the backend (`run_fetches`).
                Some(_) => {
                    state.fetches.push(Fetch {
                        conn,
                        token,
                        last_seq,
                        verified,
                    });
                    self.inner.fetches_waiting.fetch_add(1, Ordering::AcqRel);
                }
                // No other node: nobody else issued the token.
                None => deferred.unknown_tokens.push(conn),
            },
            Output::Forward(envelope) => self.forward(envelope, deferred),
        }
    }

    /// Hands an envelope for another node's user to the cluster backend.
    #[inline(never)]
    fn forward(&self, envelope: crate::cluster::Envelope, deferred: &mut Deferred) {
        match self.inner.config.cluster.as_ref() {
            Some(backend) => match backend.forward(envelope) {
                Ok(()) => self.observe(&HubEvent::Forwarded),
                Err(envelope) => deferred
                    .unroutable
                    .push((envelope, Unroutable::Unavailable)),
            },
            // No other node: nobody else can hold the name.
            None => deferred
                .unroutable
                .push((envelope, Unroutable::UnknownUser)),
        }
    }

    /// What a round of outputs left for the router (claims won, tokens unknown, envelopes
    /// unroutable) and the connections to drop. Returns whether the router may have new
    /// outputs.
    #[cold]
    #[inline(never)]
    fn settle_deferred(&self, state: &mut State, deferred: Deferred) -> bool {
        let Deferred {
            dropped,
            claims,
            unroutable,
            unknown_tokens,
        } = deferred;
        for (conn, name) in &claims {
            let _ = state.router.handle_claimed(*conn, name, ClaimOutcome::Won);
        }
        for conn in &unknown_tokens {
            let message = "unknown, spent or expired session token; log in afresh";
            let code = ErrorCode::InvalidToken;
            state
                .router
                .handle_fetch_refused(*conn, code, message.to_string());
        }
        let more = !claims.is_empty() || !unroutable.is_empty() || !unknown_tokens.is_empty();
        for (envelope, why) in unroutable {
            state.router.handle_unroutable(envelope, why);
        }
        if dropped.is_empty() {
            return more;
        }
        let now = Instant::now().into_std();
        for conn in dropped {
            if let Some(outbox) = state.connections.remove(&conn) {
                tracing::info!(%conn, "outbound queue full (client not reading): disconnecting");
                outbox.abort();
                // Lost, not closed: a resumable session waits for a resume meanwhile.
                let _ = state.router.handle_connection_lost(conn, now);
            }
        }
        true
    }

    /// Over the global budget: picks the connections with the largest queues (clients that
    /// do not read), largest first, until what they hold brings the total under 80 %.
    fn shed(&self, state: &State, budget: usize, dropped: &mut Vec<ConnectionId>) {
        let mut excess = self.queued_bytes().saturating_sub(budget / 10 * 8);
        let mut sizes: Vec<(usize, ConnectionId)> = state
            .connections
            .iter()
            .map(|(&conn, outbox)| (outbox.bytes(), conn))
            .filter(|&(bytes, conn)| bytes > 0 && !dropped.contains(&conn))
            .collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        for (bytes, conn) in sizes {
            if excess == 0 {
                break;
            }
            tracing::warn!(%conn, bytes, budget, "over the queued-bytes budget: dropping the largest queue");
            dropped.push(conn);
            excess = excess.saturating_sub(bytes);
        }
    }

    pub(super) fn is_logged_in(&self, conn: ConnectionId) -> bool {
        self.lock().router.username(conn).is_some()
    }

    /// `at` on the hub's millisecond clock (what `last_seen` is kept on).
    pub(super) fn millis_at(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.inner.epoch);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The hub's timer task: holds the hub only while it fires timers, so it ends once the hub is
/// dropped.
async fn run_timer(hub: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        let next = match hub.upgrade() {
            Some(inner) => Hub { inner }.fire_timers(),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(Instant::from_std(at)) => {}
                    () = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

/// Fills in `"iceServers"` on a successful `login` or `resume` reply, minted for the user it
/// goes to, now (the router, which has no clock and no secret, leaves them out). Every other
/// message is left alone.
/// What [`Hub::dispatch`] leaves for after a round of outputs.
#[derive(Default)]
struct Deferred {
    /// Connections whose queue overflowed (or over the global budget): dropped.
    dropped: Vec<ConnectionId>,
    /// Names won (no cluster: every claim wins).
    claims: Vec<(ConnectionId, Username)>,
    /// Envelopes no node can take.
    unroutable: Vec<(crate::cluster::Envelope, Unroutable)>,
    /// Resumes with a token nobody issued (no cluster).
    unknown_tokens: Vec<ConnectionId>,
}

impl Deferred {
    fn is_empty(&self) -> bool {
        self.dropped.is_empty()
            && self.claims.is_empty()
            && self.unroutable.is_empty()
            && self.unknown_tokens.is_empty()
    }
}

/// A queue reached three quarters: relays to it are refused from now on.
#[cold]
#[inline(never)]
fn congested(state: &mut State, to: ConnectionId) {
    tracing::debug!(conn = %to, "outbound queue congested: refusing relays to it");
    let _ = state.router.handle_backpressure(to, true);
}

/// A queue is full: a relay's sender is told (in its session's numbering), anything else
/// drops the connection.
#[cold]
#[inline(never)]
fn full(
    state: &mut State,
    deferred: &mut Deferred,
    sender: Option<ConnectionId>,
    to: ConnectionId,
) {
    match sender {
        Some(sender) => {
            let _ = state.router.handle_undeliverable(sender, to);
        }
        None => deferred.dropped.push(to),
    }
}

#[cold]
fn attach_ice_servers(t: &mut Transmit, router: &Router, ice: &IceServers) {
    match &mut t.message {
        ServerMessage::Resumed {
            username,
            ice_servers,
            ..
        } => *ice_servers = ice.for_user(username.as_str(), system_now()),
        ServerMessage::Login {
            success: true,
            ice_servers,
            ..
        }
        | ServerMessage::SessionStarted { ice_servers, .. } => {
            if let Some(name) = router.username(t.to) {
                *ice_servers = ice.for_user(name.as_str(), system_now());
            }
        }
        _ => {}
    }
}

#[allow(clippy::disallowed_methods)] // the driver reads the clock; credentials expire in Unix time
fn system_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}
