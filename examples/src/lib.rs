//! What the example servers in `examples/examples/` share: their command line and logging,
//! and the routes of `basic_server` ([`demo`]).
//!
//! Run them from the repository root:
//!
//! ```text
//! cargo run --example basic_server   # warp: demo page at /, signaling at /ws (127.0.0.1:8080)
//! cargo run --example ws_server      # raw tokio-tungstenite, any path (127.0.0.1:8081)
//! cargo run --example embed_warp     # signaling beside other routes of a warp app (127.0.0.1:8082)
//! cargo run --example auth_server     # HMAC-token authentication at the upgrade (127.0.0.1:8083)
//! ```
//!
//! Every server takes the limit flags of [`ServerArgs`] and its TLS flags ([`TlsArgs`]:
//! `--tls-cert PATH --tls-key PATH`, or `--tls-self-signed` for a development certificate);
//! `docs/configuration.md` explains each, with its default and what it protects against.

pub mod demo;

/// The allocator of every example server (and of this crate's tests): jemalloc, with the
/// default `jemalloc` cargo feature; `--no-default-features` keeps the system allocator. After
/// a burst of queued messages (a flood of clients that do not read, issue 9) glibc's malloc
/// kept much of the freed memory in the process, jemalloc with its background thread
/// ([`init_allocator`]) gives it back within seconds: the figures are in
/// `docs/performance.md`. The library crates never set an allocator: that is the
/// application's choice.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Has the allocator give freed memory back to the system while the server is idle: with the
/// `jemalloc` feature, starts jemalloc's background purging thread. Without it jemalloc
/// returns memory only while the program allocates, so a server left idle after a flood kept
/// it all. Call once at start-up, after [`init_tracing`]; without the feature it does nothing.
pub fn init_allocator() {
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc: cannot start the background purging thread");
    }
}

use clap::Args;
use signaling_core::driver::Config;
use signaling_core::driver::auth::MIN_SECRET_BYTES;
use signaling_core::driver::ice::{IceServers, TurnRest};
use signaling_core::driver::ipnet::IpNet;
use signaling_core::driver::metrics::{CONTENT_TYPE, Metrics};
use signaling_ws::tls::{SelfSigned, TlsAcceptor};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use signaling_redis::cluster::{ClusterConfig, RedisCluster};
use signaling_redis::lease::NodeId;

use signaling_core::{RateLimit, RedialBackoff, RouterConfig, SessionConfig};

/// Flags every example server takes.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Messages per second allowed per connection (token bucket, bursts of 10 seconds' worth
    /// and at least 2,000); 0 turns the limit off.
    #[arg(long, env = "SIGNALING_RATE_LIMIT", default_value_t = RateLimit::default().per_second)]
    pub rate_limit: u32,
    /// Most connections open at once; more are refused with HTTP 503. 0 turns the cap off.
    #[arg(long, env = "SIGNALING_MAX_CONNECTIONS", default_value_t = default_cap(Config::default().max_connections))]
    pub max_connections: usize,
    /// Most connections open at once from one client address (IPv6: per /64); more are
    /// refused with HTTP 429. 0 turns the cap off (load tests from one address need that).
    #[arg(long, env = "SIGNALING_MAX_CONNECTIONS_PER_IP", default_value_t = default_cap(Config::default().max_connections_per_ip))]
    pub max_connections_per_ip: usize,
    /// Most TCP connections whose HTTP request is still being read; more are closed at once.
    /// 0 turns the cap off.
    #[arg(long, env = "SIGNALING_MAX_PENDING_REQUESTS", default_value_t = default_cap(Config::default().max_pending_requests))]
    pub max_pending_requests: usize,
    /// The same per client address (a reverse proxy's requests count in the total only).
    /// 0 turns the cap off (load tests from one address need that).
    #[arg(long, env = "SIGNALING_MAX_PENDING_REQUESTS_PER_IP", default_value_t = default_cap(Config::default().max_pending_requests_per_ip))]
    pub max_pending_requests_per_ip: usize,
    /// Most connections that have not logged in yet; more upgrades are refused with HTTP 503.
    /// 0 turns the cap off.
    #[arg(long, env = "SIGNALING_MAX_NOT_LOGGED_IN", default_value_t = default_cap(Config::default().max_not_logged_in))]
    pub max_not_logged_in: usize,
    /// The same per client address (HTTP 429). 0 turns the cap off (load tests from one
    /// address need that).
    #[arg(long, env = "SIGNALING_MAX_NOT_LOGGED_IN_PER_IP", default_value_t = default_cap(Config::default().max_not_logged_in_per_ip))]
    pub max_not_logged_in_per_ip: usize,
    /// Most connections at once for one username verified by the authenticator (HTTP 429).
    /// 0 turns the cap off.
    #[arg(long, env = "SIGNALING_MAX_CONNECTIONS_PER_USER", default_value_t = default_cap(Config::default().max_connections_per_user))]
    pub max_connections_per_user: usize,
    /// The memory budget for messages queued to all clients together, in MiB: near it relays
    /// are refused to their senders, over it the largest queues are dropped. 0 turns it off.
    #[arg(long, env = "SIGNALING_MAX_TOTAL_QUEUED_MIB", default_value_t = Config::default().max_total_queued_bytes.map_or(0, |b| b / (1024 * 1024)))]
    pub max_total_queued_mib: usize,
    /// Seconds a write to a client may make no progress (it does not read) before the client
    /// is dropped.
    #[arg(long, env = "SIGNALING_WRITE_STALL_TIMEOUT", default_value_t = Config::default().write_stall_timeout.as_secs())]
    pub write_stall_timeout: u64,
    /// A page origin (`scheme://host[:port]`, as browsers send it) allowed to open a
    /// WebSocket; repeat for several. Others, and requests without an Origin header, are
    /// refused with HTTP 403. Without this flag any origin may connect (fine on localhost; set
    /// it in production).
    #[arg(
        long = "allowed-origin",
        env = "SIGNALING_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// The header a reverse proxy in front of the server sets to the client's address (e.g.
    /// X-Forwarded-For), for the per-address cap. Only behind such a proxy: clients that
    /// reach the server directly could forge it.
    #[arg(long, env = "SIGNALING_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
    /// The address range (CIDR, or a single address) of a reverse proxy in front of the
    /// server, e.g. nginx's address and a CDN's published ranges; repeat for several. The
    /// client is then the first address from the right of the --client-ip-header list (and
    /// the TCP peer) that is not in these ranges, and the header is only read from a peer in
    /// them. Without it, the header's last entry is trusted whoever sends it.
    #[arg(
        long = "trusted-proxy",
        env = "SIGNALING_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR",
        value_parser = parse_trusted_proxy,
        requires = "client_ip_header"
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Seconds a resumable session (`"resumable":true` at login) outlives an abnormal drop of
    /// its connection, keeping its name and call for a `resume`.
    #[arg(long, env = "SIGNALING_RESUME_GRACE", default_value_t = SessionConfig::default().grace.as_secs())]
    pub resume_grace: u64,
    /// Seconds an offer may ring unanswered before the call ends for both sides
    /// (`"reason":"no_answer"`). 0 lets calls ring forever.
    #[arg(long, env = "SIGNALING_RING_TIMEOUT", default_value_t = RouterConfig::default().ring_timeout.map_or(0, |t| t.as_secs()))]
    pub ring_timeout: u64,
    /// Seconds a caller whose offer was declined or rang out must wait before offering the same
    /// callee again (doubling for each further decline, up to 10 minutes). 0 turns it off.
    #[arg(long, env = "SIGNALING_REDIAL_BACKOFF", default_value_t = RouterConfig::default().redial_backoff.map_or(0, |b| b.initial.as_secs()))]
    pub redial_backoff: u64,
    /// Joins a cluster of nodes sharing one user namespace through this Redis
    /// (`redis://host:port/db`; `docs/cluster.md`). Without it the server is a single node.
    #[arg(long, env = "SIGNALING_REDIS_URL")]
    pub redis: Option<String>,
    /// This node's id in the cluster (unique; default: random).
    #[arg(long, env = "SIGNALING_NODE_ID", requires = "redis")]
    pub node_id: Option<String>,
    /// Seconds a name lease lasts without a refresh: the longest a crashed node's names stay
    /// taken (refreshed every third of it).
    #[arg(long, env = "SIGNALING_LEASE_TTL", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_ttl: u64,
    /// A STUN server URL (`stun:host:port`) handed to logged-in users in their login reply
    /// (`"iceServers"`), and by `basic_server` to the demo page in `/config.json`; repeat for
    /// several. TURN servers go in --turn-url.
    #[arg(
        long = "ice-server",
        env = "SIGNALING_ICE_SERVERS",
        value_delimiter = ',',
        value_name = "URL",
        value_parser = parse_stun_url
    )]
    pub ice_servers: Vec<String>,
    /// A TURN server URL (`turn:host:port`, `turn:host:port?transport=tcp`, `turns:host:443`)
    /// handed to each logged-in user in its login and resume replies, with credentials minted
    /// for that user by the TURN REST scheme (coturn's `use-auth-secret`); repeat for several.
    /// Needs --turn-secret.
    #[arg(
        long = "turn-url",
        env = "SIGNALING_TURN_URLS",
        value_delimiter = ',',
        value_name = "URL",
        value_parser = parse_turn_url,
        requires = "turn_secret"
    )]
    pub turn_urls: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`), at least 16
    /// bytes (`openssl rand -hex 32`): credentials are
    /// `base64(HMAC-SHA1(secret, "<expiry>:<name>"))`. Prefer the environment variable: a flag
    /// shows in `ps`.
    #[arg(
        long,
        env = "SIGNALING_TURN_SECRET",
        hide_env_values = true,
        value_parser = parse_turn_secret,
        requires = "turn_urls"
    )]
    pub turn_secret: Option<TurnSecret>,
    /// Seconds the minted TURN credentials stay valid.
    #[arg(long, env = "SIGNALING_TURN_TTL", default_value_t = TurnRest::DEFAULT_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub turn_ttl: u64,
    /// Threads that run connections: 1 runs everything on one thread (tokio's current-thread
    /// runtime: no work stealing, no cross-thread wake-ups — the fastest for a server given
    /// one core); 0 (default) one worker per core the process may run on, and the
    /// current-thread runtime when that is one core (a container limited to one CPU, or
    /// `taskset -c 0`).
    #[arg(long, env = "SIGNALING_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Serve Prometheus metrics at `http://ADDR/metrics` on this separate address (keep it
    /// private: bind it to loopback or an internal interface). Off by default.
    #[arg(long, env = "SIGNALING_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// `--tls-cert`, `--tls-key`, `--tls-self-signed`, `--tls-name`.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The value of `--turn-secret`; its `Debug` form hides it.
#[derive(Clone)]
pub struct TurnSecret(String);

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TurnSecret({} bytes)", self.0.len())
    }
}

fn parse_turn_secret(s: &str) -> Result<TurnSecret, String> {
    if s.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the TURN secret must be at least {MIN_SECRET_BYTES} bytes (openssl rand -hex 32)"
        ));
    }
    Ok(TurnSecret(s.to_owned()))
}

fn parse_stun_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.starts_with("turn:") || s.starts_with("turns:") {
        return Err(format!(
            "{s:?} is a TURN server: browsers refuse TURN without credentials;              give it with --turn-url and --turn-secret"
        ));
    }
    if !s.starts_with("stun:") && !s.starts_with("stuns:") {
        return Err(format!("{s:?} is not a STUN URL (stun:host:port)"));
    }
    Ok(s.to_owned())
}

fn parse_turn_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if !s.starts_with("turn:") && !s.starts_with("turns:") {
        return Err(format!(
            "{s:?} is not a TURN URL (turn:host:port or turns:host:port)"
        ));
    }
    Ok(s.to_owned())
}

/// The TLS flags every example server takes (in [`ServerArgs`]): a certificate of your own, or
/// a development certificate made at start. Without them the server speaks plain HTTP.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Serve https:// and wss:// with the certificate chain in this PEM file: the server's
    /// certificate first, then the intermediates (certbot's fullchain.pem). Needs --tls-key.
    #[arg(
        long,
        env = "SIGNALING_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key, a PEM file: PKCS#8, PKCS#1 or SEC1, unencrypted
    /// (certbot's privkey.pem). Needs --tls-cert.
    #[arg(
        long,
        env = "SIGNALING_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Serve https:// and wss:// with a development certificate made at start (self-signed, for
    /// localhost, 127.0.0.1, ::1, this machine's address and --tls-name), printing its SHA-256
    /// fingerprint: browsers warn once, then the page is a secure context (camera and
    /// microphone work from other computers of the LAN). A new one at every start.
    // Excludes --tls-cert and --tls-key, checked in `load`: clap's `conflicts_with` would also
    // count SIGNALING_TLS_SELF_SIGNED=false as given. The variable takes 1/0, true/false,
    // yes/no, on/off.
    #[arg(
        long,
        env = "SIGNALING_TLS_SELF_SIGNED",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub tls_self_signed: bool,
    /// Another host name or address the development certificate is valid for (how other
    /// computers reach this one, e.g. `laptop.local`); repeat for several.
    #[arg(
        long = "tls-name",
        env = "SIGNALING_TLS_NAMES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub tls_names: Vec<String>,
}

/// The TLS an example server serves with ([`TlsArgs::load`]).
pub struct ServerTls {
    /// For `signaling_ws::serve_tls` / `signaling_warp::serve_tls`.
    pub acceptor: TlsAcceptor,
    /// The development certificate of `--tls-self-signed`.
    pub self_signed: Option<SelfSigned>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

impl TlsArgs {
    /// Whether a TLS flag was given (the server's URLs are `https://` and `wss://`).
    pub fn enabled(&self) -> bool {
        self.tls_self_signed || self.tls_cert.is_some()
    }

    /// The TLS these flags ask for (`None`: plain HTTP). `addr` is where the server listens: a
    /// specific address there is one more name of the development certificate.
    ///
    /// # Errors
    ///
    /// `--tls-self-signed` with `--tls-cert`, or `--tls-name` without `--tls-self-signed`;
    /// what is wrong with the certificate or key file (`signaling_ws::tls::Error`), or why the
    /// development certificate could not be made.
    pub fn load(&self, addr: SocketAddr) -> Result<Option<ServerTls>, String> {
        if self.tls_self_signed && self.tls_cert.is_some() {
            return Err(
                "--tls-self-signed cannot be used with --tls-cert and --tls-key: \
                        choose one certificate"
                    .into(),
            );
        }
        if !self.tls_self_signed && !self.tls_names.is_empty() {
            return Err("--tls-name names the development certificate: it needs \
                        --tls-self-signed"
                .into());
        }
        if self.tls_self_signed {
            let bound = (!addr.ip().is_unspecified()).then(|| addr.ip().to_string());
            let names = bound.into_iter().chain(self.tls_names.iter().cloned());
            let certificate = SelfSigned::for_this_machine(names).map_err(|e| e.to_string())?;
            let config = certificate.server_config().map_err(|e| e.to_string())?;
            return Ok(Some(ServerTls {
                acceptor: TlsAcceptor::from(config),
                self_signed: Some(certificate),
            }));
        }
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let config =
            signaling_ws::tls::server_config_from_pem(cert, key).map_err(|e| e.to_string())?;
        Ok(Some(ServerTls {
            acceptor: TlsAcceptor::from(config),
            self_signed: None,
        }))
    }
}

impl TlsArgs {
    /// [`load`](Self::load), or, when that fails, the reason on stderr as a flag error
    /// (`error: …`, exit status 2), before the server starts.
    pub fn load_or_exit(&self, addr: SocketAddr) -> Option<ServerTls> {
        self.load(addr).unwrap_or_else(|e| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n")).exit()
        })
    }
}

impl ServerTls {
    /// Prints (to stdout) the development certificate's names and SHA-256 fingerprint, the
    /// `https://` URL to open once in a browser to accept it (`page`) and the `wss://` URL of
    /// signaling; nothing for a certificate of your own.
    pub fn announce(&self, page: &str, signaling: &str) {
        let Some(certificate) = &self.self_signed else {
            return;
        };
        println!(
            "TLS: a development certificate made at start for {}",
            certificate.names().join(", ")
        );
        println!("SHA-256 fingerprint: {}", certificate.fingerprint());
        println!(
            "Open {page} in the browser, check that its certificate has this fingerprint and \
             accept it; signaling is at {signaling}"
        );
    }
}

/// Serves a warp app (signaling routes among others) on `listener` until the hub shuts down:
/// over TLS when `tls` is given (printing a development certificate's fingerprint with the
/// `page` and `signaling` URLs), plain HTTP otherwise. What `basic_server` and `embed_warp`
/// share.
pub fn spawn_warp<F, R>(
    app: F,
    listener: tokio::net::TcpListener,
    tls: Option<ServerTls>,
    hub: signaling_warp::Hub,
    page: &str,
    signaling: &str,
) -> tokio::task::JoinHandle<()>
where
    F: signaling_warp::warp::Filter<Extract = (R,), Error = signaling_warp::warp::Rejection>
        + Clone
        + Send
        + Sync
        + 'static,
    R: signaling_warp::warp::Reply + 'static,
{
    match tls {
        Some(tls) => {
            tls.announce(page, signaling);
            tokio::spawn(signaling_warp::serve_tls(app, listener, tls.acceptor, hub))
        }
        None => tokio::spawn(signaling_warp::serve(app, listener, hub)),
    }
}

/// The tokio runtime `--worker-threads` asks for: current-thread for 1, multi-thread with that
/// many workers otherwise; 0: one worker per core the process may run on
/// ([`std::thread::available_parallelism`], which honours CPU affinity), current-thread
/// when that is one.
///
/// # Errors
///
/// The runtime could not be built (no threads).
pub fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = || std::thread::available_parallelism().ok().map(usize::from);
    let mut builder = if current_thread(worker_threads, cores) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if worker_threads > 1 {
            builder.worker_threads(worker_threads);
        }
        builder
    };
    builder.enable_all().build()
}

/// Whether `--worker-threads` asks for the current-thread runtime: 1, or 0 on a process that
/// may use one core (`cores`, asked only for 0).
fn current_thread(worker_threads: usize, cores: impl FnOnce() -> Option<usize>) -> bool {
    worker_threads == 1 || (worker_threads == 0 && cores() == Some(1))
}

/// Serves `GET /metrics` (the hub's [`Metrics`] in the Prometheus text format) on `listener`
/// until the hub has shut down. Other paths get 404.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    hub: signaling_core::driver::Hub,
    metrics: Arc<Metrics>,
) {
    use signaling_warp::warp::{self, Filter};
    let scraped = hub.clone();
    let route = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(metrics.render(&scraped), "content-type", CONTENT_TYPE)
    });
    signaling_warp::serve(route, listener, hub).await;
}

/// The URL of a server listening on `addr`: `http://HOST:PORT` (`ws://` with `websocket`), or
/// `https://`/`wss://` with `tls`. An unspecified address (`0.0.0.0`, `::`) is shown as the
/// machine's address on its default route (the one other computers of the LAN use), or as
/// 127.0.0.1.
pub fn base_url(addr: SocketAddr, tls: bool, websocket: bool) -> String {
    let scheme = match (websocket, tls) {
        (false, false) => "http",
        (false, true) => "https",
        (true, false) => "ws",
        (true, true) => "wss",
    };
    let ip = if addr.ip().is_unspecified() {
        signaling_ws::tls::machine_addresses()
            .into_iter()
            .find(|ip| ip.is_ipv4() == addr.is_ipv4())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    } else {
        addr.ip()
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address (`10.0.0.2`: a /32 or /128).
fn parse_trusted_proxy(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither a CIDR range (10.0.0.0/8) nor an IP address"))
}

fn default_cap(cap: Option<usize>) -> usize {
    cap.unwrap_or(0)
}

impl ServerArgs {
    /// [`config`](Self::config), and with `--redis` the cluster backend, connected.
    ///
    /// # Errors
    ///
    /// Redis could not be reached at start-up (or the URL or node id is not valid).
    pub async fn server_config(&self) -> Result<Config, String> {
        let config = self.config();
        let Some(url) = &self.redis else {
            return Ok(config);
        };
        let mut cluster =
            ClusterConfig::new(url.clone()).with_ttl(Duration::from_secs(self.lease_ttl));
        if let Some(id) = &self.node_id {
            if id.is_empty() || id.contains('\n') {
                return Err(format!("invalid node id {id:?}"));
            }
            cluster = cluster.with_node(NodeId::new(id.as_str()));
        }
        let backend = RedisCluster::connect(cluster)
            .await
            .map_err(|e| format!("cannot join the cluster at {url}: {e}"))?;
        tracing::info!(node = %backend.node(), redis = %url, "cluster mode");
        Ok(config.with_cluster(Arc::new(backend)))
    }

    /// The hub these flags ask for ([`server_config`](Self::server_config)), with what `adjust`
    /// adds to its configuration (an authenticator), and its metrics served when
    /// `--metrics-addr` is given ([`serve_metrics`]).
    ///
    /// # Errors
    ///
    /// Redis could not be reached, or the metrics address could not be bound.
    pub async fn start_hub(
        &self,
        adjust: impl FnOnce(Config) -> Config,
    ) -> std::io::Result<signaling_core::driver::Hub> {
        let config = adjust(self.server_config().await.map_err(std::io::Error::other)?);
        let Some(addr) = self.metrics_addr else {
            return Ok(signaling_core::driver::Hub::new(config));
        };
        let metrics = Arc::new(Metrics::new());
        let hub = signaling_core::driver::Hub::new(config.with_observer(Some(metrics.clone())));
        let listener = signaling_warp::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("--metrics-addr {addr}: {e}")))?;
        tracing::info!("metrics at http://{}/metrics", listener.local_addr()?);
        tokio::spawn(serve_metrics(listener, hub.clone(), metrics));
        Ok(hub)
    }

    /// The driver configuration these flags ask for (everything else at its default), without
    /// the cluster backend (see [`server_config`](Self::server_config)).
    pub fn config(&self) -> Config {
        let rate_limit = (self.rate_limit > 0).then(|| {
            let default = RateLimit::default();
            RateLimit {
                per_second: self.rate_limit,
                burst: default.burst.max(self.rate_limit.saturating_mul(10)),
                max_strikes: default.max_strikes,
            }
        });
        let cap = |n: usize| (n > 0).then_some(n);
        let origins = (!self.allowed_origins.is_empty()).then(|| self.allowed_origins.clone());
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let redial_backoff = secs(self.redial_backoff).map(|initial| RedialBackoff {
            initial,
            max: RedialBackoff::default().max.max(initial),
        });
        let router = RouterConfig::default()
            .with_rate_limit(rate_limit)
            .with_sessions(
                SessionConfig::default().with_grace(Duration::from_secs(self.resume_grace)),
            )
            .with_ring_timeout(secs(self.ring_timeout))
            .with_redial_backoff(redial_backoff);
        Config::default()
            .with_router(router)
            .with_max_connections(cap(self.max_connections))
            .with_max_connections_per_ip(cap(self.max_connections_per_ip))
            .with_max_pending_requests(
                cap(self.max_pending_requests),
                cap(self.max_pending_requests_per_ip),
            )
            .with_max_not_logged_in(
                cap(self.max_not_logged_in),
                cap(self.max_not_logged_in_per_ip),
            )
            .with_max_connections_per_user(cap(self.max_connections_per_user))
            .with_max_total_queued_bytes(
                cap(self.max_total_queued_mib).map(|mib| mib.saturating_mul(1024 * 1024)),
            )
            .with_write_stall_timeout(Duration::from_secs(self.write_stall_timeout))
            .with_allowed_origins(origins)
            .with_client_ip_header(self.client_ip_header.as_deref())
            .with_trusted_proxies(self.trusted_proxies.iter().copied())
            .with_ice_servers(self.ice_config())
    }

    /// The ICE servers of `--ice-server` and `--turn-url` (with `--turn-secret` and
    /// `--turn-ttl`), for the login replies.
    pub fn ice_config(&self) -> IceServers {
        let turn = self.turn_secret.as_ref().and_then(|secret| {
            // The secret's length was checked when the flag was parsed.
            TurnRest::new(self.turn_urls.iter().cloned(), &secret.0).ok()
        });
        let ice = IceServers::new(self.ice_servers.iter().cloned());
        match turn {
            Some(turn) => ice.with_turn(turn.with_ttl(Duration::from_secs(self.turn_ttl))),
            None => ice,
        }
    }
}

/// `{"iceServers":[{"urls":"…"},…]}`, the body of `/config.json` that the demo page reads.
pub fn ice_config_json(ice_servers: &[String]) -> String {
    let servers: Vec<_> = ice_servers
        .iter()
        .map(|url| serde_json::json!({ "urls": url }))
        .collect();
    serde_json::json!({ "iceServers": servers }).to_string()
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM — what `kill`, systemd and Kubernetes
/// send to stop a process, so that a rolling restart shuts a node down gracefully (in cluster
/// mode its resumable sessions move to other nodes). A signal whose handler cannot be
/// installed is not waited for.
pub async fn ctrl_c() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        "SIGINT"
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        "SIGTERM"
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<&str>();
    let signal = tokio::select! {
        signal = interrupt => signal,
        signal = terminate => signal,
    };
    tracing::info!(signal, "shutting down gracefully");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--worker-threads 0` runs the current-thread runtime only where the process may use one
    /// core; 1 always does; any other count never does. The runtime built matches.
    #[test]
    fn one_core_gets_the_current_thread_runtime() {
        let unknown = || None;
        assert!(current_thread(0, || Some(1)));
        assert!(!current_thread(0, || Some(2)));
        assert!(!current_thread(0, unknown));
        assert!(current_thread(1, || Some(8)));
        assert!(current_thread(1, unknown));
        assert!(!current_thread(2, || Some(1)));
        use tokio::runtime::RuntimeFlavor;
        let flavor = |n| runtime(n).unwrap().handle().runtime_flavor();
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(2), RuntimeFlavor::MultiThread);
        let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
        let expected = if one_core {
            RuntimeFlavor::CurrentThread
        } else {
            RuntimeFlavor::MultiThread
        };
        assert_eq!(flavor(0), expected);
    }

    /// `--metrics-addr`: `GET /metrics` answers the Prometheus text with its content type, a
    /// relay counted; other paths 404; the listener stops with the hub.
    #[tokio::test]
    async fn metrics_are_served_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        async fn get(addr: SocketAddr, path: &str) -> String {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            tcp.write_all(head.as_bytes()).await.expect("request");
            let mut answer = String::new();
            tcp.read_to_string(&mut answer).await.expect("answer");
            answer
        }
        let metrics = Arc::new(Metrics::new());
        let hub = signaling_core::driver::Hub::new(
            Config::default().with_observer(Some(metrics.clone())),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve_metrics(listener, hub.clone(), metrics));
        let answer = get(addr, "/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains(&format!("content-type: {CONTENT_TYPE}")),
            "{answer}"
        );
        assert!(
            answer.contains("\nsignaling_connections_open 0\n"),
            "{answer}"
        );
        assert!(get(addr, "/").await.starts_with("HTTP/1.1 404"));
        hub.shutdown().await;
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the metrics server stops with the hub")
            .expect("task");
    }

    #[cfg(feature = "jemalloc")]
    #[test]
    fn allocator_purges_in_the_background() {
        init_allocator();
        assert_eq!(
            tikv_jemalloc_ctl::background_thread::read().ok(),
            Some(true)
        );
    }

    #[test]
    fn ice_config() {
        assert_eq!(ice_config_json(&[]), r#"{"iceServers":[]}"#);
        assert_eq!(
            ice_config_json(&["stun:stun.example.org:3478".into()]),
            r#"{"iceServers":[{"urls":"stun:stun.example.org:3478"}]}"#
        );
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    fn config(args: &[&str]) -> Config {
        use clap::Parser;
        let args = std::iter::once("server").chain(args.iter().copied());
        Cli::try_parse_from(args).expect("flags").server.config()
    }

    #[test]
    fn defaults_are_the_library_defaults() {
        let config = config(&[]);
        let default = Config::default();
        assert_eq!(config.router, default.router);
        assert_eq!(config.max_connections, default.max_connections);
        assert_eq!(
            config.max_connections_per_ip,
            default.max_connections_per_ip
        );
        assert_eq!(config.allowed_origins, None);
        assert_eq!(config.client_ip_header, None);
        assert_eq!(config.max_pending_requests, default.max_pending_requests);
        assert_eq!(
            config.max_pending_requests_per_ip,
            default.max_pending_requests_per_ip
        );
        assert_eq!(config.max_not_logged_in, default.max_not_logged_in);
        assert_eq!(
            config.max_not_logged_in_per_ip,
            default.max_not_logged_in_per_ip
        );
        assert_eq!(
            config.max_connections_per_user,
            default.max_connections_per_user
        );
        assert_eq!(
            config.max_total_queued_bytes,
            default.max_total_queued_bytes
        );
        assert_eq!(config.write_stall_timeout, default.write_stall_timeout);
    }

    #[test]
    fn ice_and_turn_flags() {
        use std::time::UNIX_EPOCH;
        assert!(
            config(&[]).ice_servers.is_none(),
            "replies stay the tutorial's"
        );
        let secret = "0123456789abcdef0123456789abcdef";
        let config = config(&[
            "--ice-server",
            "stun:127.0.0.1:3478",
            "--turn-url",
            "turn:127.0.0.1:3478,turn:127.0.0.1:3478?transport=tcp",
            "--turn-url",
            "turns:turn.example.org:443",
            "--turn-secret",
            secret,
            "--turn-ttl",
            "60",
        ]);
        let ice = config.ice_servers.expect("ice servers");
        assert_eq!(ice.stun, ["stun:127.0.0.1:3478"]);
        let turn = ice.turn.as_ref().expect("turn");
        assert_eq!(turn.urls.len(), 3);
        assert_eq!(turn.ttl, Duration::from_secs(60));
        let list = ice.for_user("alice", UNIX_EPOCH).expect("a list");
        assert!(
            list.get().contains(r#""username":"60:alice""#),
            "{}",
            list.get()
        );
        // STUN alone is handed out too.
        let stun = self::config(&["--ice-server", "stun:h:3478"]).ice_servers;
        assert_eq!(stun.expect("stun").stun, ["stun:h:3478"]);

        let refused = |args: &[&str]| {
            use clap::Parser;
            let args = std::iter::once("server").chain(args.iter().copied());
            Cli::try_parse_from(args).expect_err("refused").to_string()
        };
        // TURN without its secret, a secret without TURN, a short secret, TURN in --ice-server.
        assert!(refused(&["--turn-url", "turn:h:3478"]).contains("--turn-secret"));
        assert!(refused(&["--turn-secret", secret]).contains("--turn-url"));
        let short = refused(&["--turn-url", "turn:h", "--turn-secret", "short"]);
        assert!(short.contains("at least 16 bytes"), "{short}");
        assert!(refused(&["--ice-server", "turn:h:3478"]).contains("--turn-url"));
        assert!(refused(&["--turn-url", "stun:h", "--turn-secret", secret]).contains("TURN URL"));
        // The secret stays out of Debug.
        use clap::Parser;
        let cli = Cli::try_parse_from(["server", "--turn-url", "turn:h", "--turn-secret", secret])
            .expect("flags");
        assert!(!format!("{cli:?}").contains(secret));
    }

    #[test]
    fn phase_caps_and_budget_flags() {
        let config = config(&[
            "--max-pending-requests-per-ip",
            "0",
            "--max-not-logged-in",
            "5",
            "--max-not-logged-in-per-ip",
            "0",
            "--max-connections-per-user",
            "2",
            "--max-total-queued-mib",
            "16",
            "--write-stall-timeout",
            "7",
        ]);
        assert_eq!(config.max_pending_requests_per_ip, None);
        assert_eq!(config.max_not_logged_in, Some(5));
        assert_eq!(config.max_not_logged_in_per_ip, None);
        assert_eq!(config.max_connections_per_user, Some(2));
        assert_eq!(config.max_total_queued_bytes, Some(16 * 1024 * 1024));
        assert_eq!(
            config.write_stall_timeout,
            std::time::Duration::from_secs(7)
        );
        let off = self::config(&["--max-total-queued-mib", "0"]);
        assert_eq!(off.max_total_queued_bytes, None);
    }

    #[test]
    fn session_and_ringing_flags() {
        let config = config(&[
            "--resume-grace",
            "5",
            "--ring-timeout",
            "3",
            "--redial-backoff",
            "2",
        ]);
        assert_eq!(config.router.sessions.grace, Duration::from_secs(5));
        assert_eq!(config.router.ring_timeout, Some(Duration::from_secs(3)));
        let backoff = config.router.redial_backoff.expect("back-off on");
        assert_eq!(backoff.initial, Duration::from_secs(2));
        assert_eq!(backoff.max, RedialBackoff::default().max);
        let off = self::config(&["--ring-timeout", "0", "--redial-backoff", "0"]);
        assert_eq!(off.router.ring_timeout, None);
        assert_eq!(off.router.redial_backoff, None);
    }

    #[test]
    fn zero_turns_limits_off() {
        let config = config(&[
            "--rate-limit",
            "0",
            "--max-connections",
            "0",
            "--max-connections-per-ip",
            "0",
        ]);
        assert_eq!(config.router.rate_limit, None);
        assert_eq!(config.max_connections, None);
        assert_eq!(config.max_connections_per_ip, None);
        let config = self::config(&["--rate-limit", "50", "--max-connections-per-ip", "3"]);
        assert_eq!(config.router.rate_limit.map(|r| r.per_second), Some(50));
        assert_eq!(config.max_connections_per_ip, Some(3));
    }

    #[test]
    fn allowed_origins_repeat() {
        let config = config(&[
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "https://b.example",
            "--client-ip-header",
            "X-Forwarded-For",
        ]);
        assert_eq!(
            config.allowed_origins,
            Some(vec![
                "https://a.example".to_string(),
                "https://b.example".to_string()
            ])
        );
        assert_eq!(config.client_ip_header.as_deref(), Some("X-Forwarded-For"));
    }

    #[test]
    fn trusted_proxies_repeat_and_take_single_addresses() {
        let config = config(&[
            "--client-ip-header",
            "X-Forwarded-For",
            "--trusted-proxy",
            "10.0.0.2",
            "--trusted-proxy",
            "203.0.113.0/24,2001:db8::/32",
        ]);
        let nets: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.2/32", "203.0.113.0/24", "2001:db8::/32"]);
        assert!(Config::default().trusted_proxies.is_empty());
        assert!(config_err(&[
            "--client-ip-header",
            "X",
            "--trusted-proxy",
            "nginx"
        ]));
        assert!(config_err(&[
            "--client-ip-header",
            "X",
            "--trusted-proxy",
            "10.0.0.0/33"
        ]));
        // Trusted proxies without the header they write would do nothing.
        assert!(config_err(&["--trusted-proxy", "10.0.0.2"]));
    }

    #[test]
    fn cluster_flags() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let args = std::iter::once("server").chain(args.iter().copied());
            Cli::try_parse_from(args).map(|c| c.server)
        };
        let single = parse(&[]).expect("no flags");
        assert_eq!(single.redis, None);
        assert_eq!(single.lease_ttl, 10);
        let node = parse(&[
            "--redis",
            "redis://127.0.0.1:6379/",
            "--node-id",
            "a",
            "--lease-ttl",
            "4",
        ])
        .expect("cluster flags");
        assert_eq!(node.redis.as_deref(), Some("redis://127.0.0.1:6379/"));
        assert_eq!(node.node_id.as_deref(), Some("a"));
        assert_eq!(node.lease_ttl, 4);
        assert!(config_err(&["--node-id", "a"]), "a node id needs --redis");
        assert!(config_err(&["--redis", "redis://x/", "--lease-ttl", "0"]));
    }

    /// Without `--redis`, `server_config` is `config` and needs no Redis.
    #[tokio::test]
    async fn without_redis_there_is_no_backend() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["server"]).expect("flags");
        let config = cli.server.server_config().await.expect("single node");
        assert!(config.cluster.is_none());
        let mut bad = Cli::try_parse_from(["server", "--redis", "not a url"]).expect("flags");
        bad.server.lease_ttl = 1;
        assert!(
            bad.server.server_config().await.is_err(),
            "a bad URL is an error at start-up"
        );
    }

    fn tls_args(args: &[&str]) -> Result<TlsArgs, clap::Error> {
        use clap::Parser;
        let args = std::iter::once("server").chain(args.iter().copied());
        Cli::try_parse_from(args).map(|c| c.server.tls)
    }

    fn fixture(name: &str) -> String {
        format!(
            "{}/../signaling-ws/tests/data/tls/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    #[test]
    fn tls_flags() {
        let addr: SocketAddr = "10.9.8.7:8443".parse().unwrap();
        let plain = tls_args(&[]).expect("no flags");
        assert!(!plain.enabled());
        assert!(plain.load(addr).expect("plain").is_none());

        let (cert, key) = (fixture("ec-chain.pem"), fixture("ec-sec1.pem"));
        let own = tls_args(&["--tls-cert", &cert, "--tls-key", &key]).expect("flags");
        assert!(own.enabled());
        let loaded = own.load(addr).expect("loads").expect("TLS");
        assert!(loaded.self_signed.is_none());
        // A certificate needs its key and the other way round.
        assert!(tls_args(&["--tls-cert", &cert]).is_err());
        assert!(tls_args(&["--tls-key", &key]).is_err());
        // A bad file is an error that names it, before the server starts.
        let wrong = tls_args(&["--tls-cert", &key, "--tls-key", &key]).unwrap();
        let e = wrong.load(addr).unwrap_err();
        assert!(e.contains("ec-sec1.pem: no certificate found"), "{e}");

        let dev = tls_args(&[
            "--tls-self-signed",
            "--tls-name",
            "laptop.local,192.168.7.9",
        ])
        .expect("flags");
        assert!(dev.enabled());
        let loaded = dev.load(addr).expect("loads").expect("TLS");
        let certificate = loaded.self_signed.expect("a development certificate");
        let names = certificate.names();
        assert_eq!(names[..3], ["localhost", "127.0.0.1", "::1"]);
        for name in ["10.9.8.7", "laptop.local", "192.168.7.9"] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        // An unspecified address is no name.
        let any = dev.load("0.0.0.0:8443".parse().unwrap()).unwrap().unwrap();
        assert!(!any.self_signed.unwrap().names().contains(&"0.0.0.0".into()));

        // One certificate or the other; names only for the development one.
        let both = tls_args(&["--tls-self-signed", "--tls-cert", &cert, "--tls-key", &key]);
        assert!(both.expect("parsed").load(addr).is_err());
        let names_alone = tls_args(&["--tls-name", "laptop.local"]).expect("parsed");
        assert!(names_alone.load(addr).is_err());
    }

    #[test]
    fn urls_say_the_scheme_and_never_an_unspecified_host() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(base_url(addr, false, false), "http://127.0.0.1:8080");
        assert_eq!(base_url(addr, true, false), "https://127.0.0.1:8080");
        assert_eq!(base_url(addr, false, true), "ws://127.0.0.1:8080");
        assert_eq!(base_url(addr, true, true), "wss://127.0.0.1:8080");
        let any = base_url("0.0.0.0:8443".parse().unwrap(), true, false);
        assert!(
            any.starts_with("https://") && any.ends_with(":8443"),
            "{any}"
        );
        assert!(!any.contains("0.0.0.0"), "{any}");
        let v6: SocketAddr = "[::1]:8443".parse().unwrap();
        assert_eq!(base_url(v6, true, true), "wss://[::1]:8443");
    }

    fn config_err(args: &[&str]) -> bool {
        use clap::Parser;
        let args = std::iter::once("server").chain(args.iter().copied());
        Cli::try_parse_from(args).is_err()
    }
}

/// The README's code blocks, compiled and run as doctests so that they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
