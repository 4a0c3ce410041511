//! `loadgen`: drives a signaling server on a loopback address and prints one
//! JSON line of results.
//!
//! ```text
//! loadgen [--url ws://127.0.0.1:18080/] [--server-pid PID] logins   --count 10000
//! loadgen --url ws://127.0.0.1:18081/ --url ws://127.0.0.1:18082/ --spread cross relay ...
//! loadgen ... relay    --pairs 100 --window 16 --duration 5 [--offered-rate 20000] [--idle 19000]
//! loadgen ... pingpong --pairs 1 --duration 5
//! loadgen ... hoard    --victims 1000 --size 16384 --duration 10 --settle 5
//! ```
//!
//! Every run is bounded: connection set-up has a per-connection timeout, the
//! measured phase lasts `--duration` seconds, draining is capped, and a
//! watchdog thread ends the process (printing a JSON line with `"error"`) at
//! the hard deadline whatever the server does. Only `ws://` URLs that resolve
//! to loopback addresses are accepted.
//!
//! Several servers (cluster nodes, issue 11): `--url` more than once (or a
//! comma list) spreads the clients over them. `--spread same` puts both users
//! of pair i on URL i mod n; `--spread cross` puts the caller on URL i mod n
//! and the callee on URL (i+1) mod n, so that every pair crosses nodes.
//! Connections that are not in pairs (logins, idle) go round-robin.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Map, Value};
use signaling_benches::loopback::{self, LoopbackTarget, SourceAddrs};
use signaling_benches::procfs::{self, CpuMark, HostMark};
use signaling_benches::summary::{latency_histogram, latency_json, record};
use signaling_benches::wire;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, TryAcquireError};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

type Ws = WebSocketStream<TcpStream>;
type WsTx = SplitSink<Ws, Message>;
type WsRx = SplitStream<Ws>;

#[derive(Parser, Debug)]
#[command(about = "Load generator for WebRTC signaling servers (loopback only)")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Args, Debug)]
struct Common {
    /// Server URL; must be ws:// and resolve to loopback addresses only. Repeat it (or give a
    /// comma list) to spread the clients over several servers (see --spread).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:18080/"
    )]
    url: Vec<String>,
    /// With several URLs: where the two users of a pair connect. `same`: both on URL i mod n
    /// (pairs round-robin over the URLs); `cross`: the caller on URL i mod n, the callee on
    /// URL (i+1) mod n (every pair crosses servers). Unpaired connections go round-robin.
    #[arg(long, global = true, value_enum, default_value_t = Spread::Same)]
    spread: Spread,
    /// Name of the server under test, echoed in the output.
    #[arg(long, global = true, default_value = "")]
    label: String,
    /// Name of this measurement, echoed in the output.
    #[arg(long, global = true, default_value = "")]
    case: String,
    /// Server process id: its VmRSS and CPU use are read from /proc. Repeat it (or give a comma
    /// list) for several servers: RSS and CPU are then summed (`server_cpu_pct_each` lists
    /// each).
    #[arg(long, global = true, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Process id of a shared backend the servers use (Redis in cluster mode): its CPU share is
    /// reported as `redis_cpu_pct` and not counted in `other_cpu_pct`.
    #[arg(long, global = true)]
    redis_pid: Option<u32>,
    /// Runtime worker threads (1 = current-thread runtime).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Hard deadline in seconds (0 = derived from the workload).
    #[arg(long, global = true, default_value_t = 0.0)]
    deadline: f64,
    /// Connections per client source address (127.0.0.2 upwards).
    #[arg(long, global = true, default_value_t = 4000)]
    per_source_ip: usize,
    /// Timeout for one connection's TCP connect, handshake and login.
    #[arg(long, global = true, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Connections being opened at once.
    #[arg(long, global = true, default_value_t = 256)]
    concurrency: usize,
    /// Log in with `"resumable":true` (resumable sessions, issue 10; other servers ignore the
    /// field).
    #[arg(long, global = true)]
    resumable: bool,
}

/// Placement of the two users of a pair over several servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Spread {
    /// Both users of pair i on server i mod n.
    Same,
    /// Caller on server i mod n, callee on server (i+1) mod n.
    Cross,
}

impl Spread {
    fn as_str(self) -> &'static str {
        match self {
            Spread::Same => "same",
            Spread::Cross => "cross",
        }
    }
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// N connections each log in with a unique name, then idle.
    Logins(LoginArgs),
    /// Pairs call each other, then A streams candidates to B.
    Relay(RelayArgs),
    /// Pairs call each other, then B echoes every candidate back to A.
    Pingpong(PingArgs),
    /// Victims answer their flooder's offer and stop reading; the flooders
    /// send large candidates as fast as they can. Samples the server's RSS:
    /// peak, end of the flood, and after everyone left (issue 9).
    Hoard(HoardArgs),
}

#[derive(Args, Debug)]
struct LoginArgs {
    /// Connections to open and log in.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Seconds to hold the logged-in connections idle before reading RSS.
    #[arg(long, default_value_t = 1.0)]
    hold: f64,
}

#[derive(Args, Debug)]
struct RelayArgs {
    /// Caller/callee pairs.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Candidates in flight per pair (sent, not yet received by B).
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unmeasured seconds of load before the measured phase.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Total offered load in messages/s, paced over the pairs (0 = as fast as
    /// the window allows).
    #[arg(long, default_value_t = 0.0)]
    offered_rate: f64,
    /// Extra logged-in connections held idle during the run.
    #[arg(long, default_value_t = 0)]
    idle: usize,
}

#[derive(Args, Debug)]
struct PingArgs {
    /// Caller/callee pairs, each with one message in flight.
    #[arg(long, default_value_t = 1)]
    pairs: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unmeasured seconds before the measured phase.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Extra logged-in connections held idle during the run.
    #[arg(long, default_value_t = 0)]
    idle: usize,
}

#[derive(Args, Debug)]
struct HoardArgs {
    /// Victims, each with its own flooder.
    #[arg(long, default_value_t = 1000)]
    victims: usize,
    /// Size in bytes of each candidate message a flooder sends.
    #[arg(long, default_value_t = 16384)]
    size: usize,
    /// Seconds of flooding.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds between the moment every client has disconnected and the last
    /// RSS reading (what the server gave back).
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// SO_RCVBUF of the victims' sockets in bytes, so that the kernel's
    /// buffers fill fast (Linux doubles it and has a floor); 0 = the default.
    #[arg(long, default_value_t = 4096)]
    victim_rcvbuf: u32,
    /// SO_SNDBUF of the flooders' sockets in bytes, so that what waits in the
    /// kernel for a busy server stays small (1,000 flooders with the default
    /// autotuning held 2 GB of the machine's TCP memory); 0 = the default.
    #[arg(long, default_value_t = 65536)]
    flooder_sndbuf: u32,
}

/// What every task needs to know about the run.
struct Ctx {
    /// The servers (at least one); a connection goes to `targets[node % len]`.
    targets: Vec<LoopbackTarget>,
    spread: Spread,
    src: SourceAddrs,
    connect_timeout: Duration,
    concurrency: usize,
    prefix: String,
    epoch: Instant,
    server_pids: Vec<String>,
    redis_pid: Option<String>,
    resumable: bool,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn target(&self, node: usize) -> &LoopbackTarget {
        &self.targets[node % self.targets.len()]
    }

    /// The servers (as indexes into `targets`) of the caller and the callee of pair `i`.
    fn pair_nodes(&self, i: usize) -> (usize, usize) {
        pair_nodes(self.spread, self.targets.len(), i)
    }
}

/// The servers of the caller and the callee of pair `i` over `n` servers.
fn pair_nodes(spread: Spread, n: usize, i: usize) -> (usize, usize) {
    match spread {
        Spread::Same => (i % n, i % n),
        Spread::Cross => (i % n, (i + 1) % n),
    }
}

/// A connection to open: its index (for the source address), user name and server.
struct Want {
    index: usize,
    name: String,
    node: usize,
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Warm-up, measured phase or stop, read by every task on every message.
struct Phase(AtomicU8);

impl Phase {
    fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU8::new(WARMUP)))
    }
    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, p: u8) {
        self.0.store(p, Ordering::Relaxed);
    }
}

/// Small buffers for connections that only log in and idle.
fn idle_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_message_size(Some(1 << 20))
}

/// Larger buffers for the connections that carry the load, so that one read
/// or write system call moves many frames.
fn pair_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(64 * 1024)
        .max_message_size(Some(1 << 20))
}

fn main() {
    let cli = Cli::parse();
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let mut header = Map::new();
    header.insert("workload".into(), workload_name(&cli.workload).into());
    header.insert("label".into(), cli.common.label.clone().into());
    header.insert("case".into(), cli.common.case.clone().into());
    header.insert("url".into(), cli.common.url.join(",").into());
    if cli.common.url.len() > 1 {
        header.insert("nodes".into(), cli.common.url.len().into());
        header.insert("spread".into(), cli.common.spread.as_str().into());
    }
    header.insert("loadgen_threads".into(), cli.common.threads.into());
    header.insert("nofile_limit".into(), nofile.into());

    let deadline = if cli.common.deadline > 0.0 {
        cli.common.deadline
    } else {
        auto_deadline(&cli.workload, cli.common.connect_timeout)
    };
    header.insert("deadline_s".into(), deadline.into());
    start_watchdog(Duration::from_secs_f64(deadline), header.clone());

    let runtime = if cli.common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.common.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");

    let result = runtime.block_on(run(cli));
    let mut out = header;
    let ok = match result {
        Ok(fields) => {
            out.extend(fields);
            !out.contains_key("error")
        }
        Err(e) => {
            out.insert("error".into(), e.into());
            false
        }
    };
    println!("{}", Value::Object(out));
    // Skip dropping thousands of sockets and tasks one by one.
    std::process::exit(if ok { 0 } else { 1 });
}

fn workload_name(w: &Workload) -> &'static str {
    match w {
        Workload::Logins(_) => "logins",
        Workload::Relay(_) => "relay",
        Workload::Pingpong(_) => "pingpong",
        Workload::Hoard(_) => "hoard",
    }
}

/// A deadline generous enough for a slow server: set-up at 200 connections/s
/// at worst, plus the measured phases, plus a fixed margin.
fn auto_deadline(w: &Workload, connect_timeout: f64) -> f64 {
    let (conns, phases) = match w {
        Workload::Logins(a) => (a.count, a.hold),
        Workload::Relay(a) => (a.idle + 2 * a.pairs, a.warmup + a.duration),
        Workload::Pingpong(a) => (a.idle + 2 * a.pairs, a.warmup + a.duration),
        // The flood, the wait for stuck senders, the settling.
        Workload::Hoard(a) => (2 * a.victims, a.duration + 5.0 + a.settle),
    };
    20.0 + 2.0 * connect_timeout + conns as f64 / 200.0 + phases
}

fn start_watchdog(after: Duration, mut header: Map<String, Value>) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        header.insert("error".into(), "hard deadline exceeded".into());
        println!("{}", Value::Object(header));
        std::process::exit(2);
    });
}

async fn run(cli: Cli) -> Result<Map<String, Value>, String> {
    let mut targets = Vec::with_capacity(cli.common.url.len());
    for url in &cli.common.url {
        targets.push(loopback::resolve(url).await?);
    }
    if targets.is_empty() {
        return Err("no --url".into());
    }
    if cli.common.spread == Spread::Cross && targets.len() < 2 {
        return Err("--spread cross needs at least two --url".into());
    }
    let seed = u64::from(std::process::id()) << 20
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let ctx = Arc::new(Ctx {
        targets,
        spread: cli.common.spread,
        src: SourceAddrs::new(cli.common.per_source_ip, seed),
        connect_timeout: Duration::from_secs_f64(cli.common.connect_timeout),
        concurrency: cli.common.concurrency.max(1),
        prefix: format!("lg{:x}", seed % 0xff_ffff),
        epoch: Instant::now(),
        server_pids: cli.common.server_pid.iter().map(u32::to_string).collect(),
        redis_pid: cli.common.redis_pid.map(|p| p.to_string()),
        resumable: cli.common.resumable,
    });
    match cli.workload {
        Workload::Logins(a) => logins(ctx, a).await,
        Workload::Relay(a) => relay(ctx, a).await,
        Workload::Pingpong(a) => pingpong(ctx, a).await,
        Workload::Hoard(a) => hoard(ctx, a).await,
    }
}

/// A connection that logged in successfully.
struct Opened {
    ws: Ws,
}

/// Timings and failures of opening a batch of connections.
struct OpenStats {
    handshake: Histogram<u64>,
    login: Histogram<u64>,
    total: Histogram<u64>,
    ok: usize,
    rejected: usize,
    failed: usize,
    first_error: Option<String>,
    elapsed: Duration,
}

impl OpenStats {
    fn to_json(&self, prefix: &str, out: &mut Map<String, Value>) {
        out.insert(format!("{prefix}ok"), self.ok.into());
        out.insert(format!("{prefix}rejected"), self.rejected.into());
        out.insert(format!("{prefix}failed"), self.failed.into());
        out.insert(
            format!("{prefix}elapsed_s"),
            round3(self.elapsed.as_secs_f64()).into(),
        );
        if let Some(e) = &self.first_error {
            out.insert(format!("{prefix}first_error"), e.clone().into());
        }
    }
}

enum OpenError {
    Rejected,
    Failed(String),
}

/// How the client side of a connection is set up.
#[derive(Debug, Clone, Copy)]
struct ConnConfig {
    ws: WebSocketConfig,
    /// SO_RCVBUF of the socket, set before connecting (`None`: the kernel's).
    rcvbuf: Option<u32>,
    /// SO_SNDBUF of the socket (`None`: the kernel's, which grows up to
    /// `tcp_wmem`'s maximum).
    sndbuf: Option<u32>,
}

impl From<WebSocketConfig> for ConnConfig {
    fn from(ws: WebSocketConfig) -> Self {
        Self {
            ws,
            rcvbuf: None,
            sndbuf: None,
        }
    }
}

/// TCP connect (from a spread source address), WebSocket handshake, login.
/// Returns the connection and the handshake and login durations.
async fn open(
    ctx: &Ctx,
    want: &Want,
    cfg: ConnConfig,
) -> Result<(Opened, Duration, Duration), OpenError> {
    let (index, name, target) = (want.index, want.name.as_str(), ctx.target(want.node));
    let attempt = async {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| OpenError::Failed(format!("{what}: {e}"));
        let t0 = Instant::now();
        let sock = if target.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| fail("socket", &e))?;
        if let Some(size) = cfg.rcvbuf {
            sock.set_recv_buffer_size(size)
                .map_err(|e| fail("SO_RCVBUF", &e))?;
        }
        if let Some(size) = cfg.sndbuf {
            sock.set_send_buffer_size(size)
                .map_err(|e| fail("SO_SNDBUF", &e))?;
        }
        if let Some(src) = ctx.src.for_index(&target.addr, index) {
            sock.bind(src)
                .map_err(|e| fail(&format!("bind {src}"), &e))?;
        }
        let stream = sock
            .connect(target.addr)
            .await
            .map_err(|e| fail("connect", &e))?;
        stream.set_nodelay(true).map_err(|e| fail("nodelay", &e))?;
        let (mut ws, _) = client_async_with_config(target.url.as_str(), stream, Some(cfg.ws))
            .await
            .map_err(|e| fail("handshake", &e))?;
        let t1 = Instant::now();
        let login = if ctx.resumable {
            wire::login_resumable(name)
        } else {
            wire::login(name)
        };
        ws.send(Message::text(login))
            .await
            .map_err(|e| fail("send login", &e))?;
        loop {
            match ws.next().await {
                None => return Err(OpenError::Failed("closed before login reply".into())),
                Some(Err(e)) => return Err(fail("read login reply", &e)),
                Some(Ok(Message::Text(t))) => match wire::parse(&t) {
                    Some((kind, v)) if kind == "login" => {
                        if v.get("success") == Some(&Value::Bool(true)) {
                            return Ok((Opened { ws }, t1 - t0, t1.elapsed()));
                        }
                        return Err(OpenError::Rejected);
                    }
                    Some((kind, _)) if kind == "error" => {
                        return Err(OpenError::Failed(format!("server error: {t}")));
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(ctx.connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(OpenError::Failed("timed out".into())))
}

/// Opens and logs in `names`, `ctx.concurrency` at a time. The result keeps
/// the order of `names`.
async fn open_many(
    ctx: &Arc<Ctx>,
    names: Vec<Want>,
    cfg: impl Into<ConnConfig>,
) -> (Vec<Option<Opened>>, OpenStats) {
    let cfg = cfg.into();
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(ctx.concurrency));
    let mut set = JoinSet::new();
    let n = names.len();
    for (pos, want) in names.into_iter().enumerate() {
        let ctx = ctx.clone();
        let gate = gate.clone();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("gate never closed");
            (pos, open(&ctx, &want, cfg).await)
        });
    }
    let mut stats = OpenStats {
        handshake: latency_histogram(),
        login: latency_histogram(),
        total: latency_histogram(),
        ok: 0,
        rejected: 0,
        failed: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    let mut opened: Vec<Option<Opened>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let Ok((pos, result)) = joined else {
            stats.failed += 1;
            continue;
        };
        match result {
            Ok((conn, handshake, login)) => {
                stats.ok += 1;
                record(&mut stats.handshake, handshake.as_nanos() as u64);
                record(&mut stats.login, login.as_nanos() as u64);
                record(&mut stats.total, (handshake + login).as_nanos() as u64);
                opened[pos] = Some(conn);
            }
            Err(OpenError::Rejected) => stats.rejected += 1,
            Err(OpenError::Failed(e)) => {
                stats.failed += 1;
                stats.first_error.get_or_insert(e);
            }
        }
    }
    stats.elapsed = started.elapsed();
    (opened, stats)
}

/// Keeps idle connections read (so pings are answered) until aborted, and
/// counts those the server closes meanwhile.
fn hold_idle(conns: Vec<Option<Opened>>, dropped: &Arc<AtomicU64>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for conn in conns.into_iter().flatten() {
        let dropped = dropped.clone();
        let mut ws = conn.ws;
        set.spawn(async move {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Some(Ok(_)) => {}
                }
            }
        });
    }
    set
}

/// CPU readings of the server, the load generator and the whole machine at
/// the start of a measured phase.
struct Marks {
    servers: Vec<CpuMark>,
    redis: Option<CpuMark>,
    own: CpuMark,
    host: HostMark,
}

impl Marks {
    fn now(ctx: &Ctx) -> Self {
        Self {
            servers: ctx.server_pids.iter().map(|p| CpuMark::now(p)).collect(),
            redis: ctx.redis_pid.as_deref().map(CpuMark::now),
            own: CpuMark::now("self"),
            host: HostMark::now(),
        }
    }

    /// Writes the CPU shares since `now` (percent of one core), and what the
    /// rest of the machine used meanwhile: a busy neighbour makes a
    /// measurement suspect. Returns the user and system CPU seconds the
    /// servers used, for [`cpu_per_message`].
    fn finish(&self, out: &mut Map<String, Value>) -> Option<(f64, f64)> {
        let used = self
            .servers
            .iter()
            .map(CpuMark::used_since)
            .try_fold((0.0, 0.0), |(u, s), used| {
                used.map(|(user, system)| (u + user, s + system))
            });
        let each: Vec<Option<f64>> = self.servers.iter().map(CpuMark::percent_since).collect();
        let server = each
            .iter()
            .flatten()
            .copied()
            .reduce(|a, b| a + b)
            .map(round1);
        let redis = self.redis.as_ref().and_then(CpuMark::percent_since);
        let own = self.own.percent_since();
        let host = self.host.percent_since();
        if let Some(p) = server {
            out.insert("server_cpu_pct".into(), p.into());
        }
        if each.len() > 1 {
            out.insert("server_cpu_pct_each".into(), each.into());
        }
        if let Some(p) = redis {
            out.insert("redis_cpu_pct".into(), p.into());
        }
        if let Some(p) = own {
            out.insert("loadgen_cpu_pct".into(), p.into());
        }
        if let Some(h) = host {
            out.insert("host_busy_pct".into(), h.into());
            let others = h - server.unwrap_or(0.0) - redis.unwrap_or(0.0) - own.unwrap_or(0.0);
            out.insert("other_cpu_pct".into(), round1(others.max(0.0)).into());
        }
        if let Some(steal) = self.host.steal_since() {
            // The time the hypervisor took from the machine (and from each core: the servers
            // are pinned to one), which no process is charged for.
            out.insert("steal_pct".into(), round1(steal.iter().sum()).into());
            out.insert("steal_pct_each".into(), steal.into());
        }
        used
    }
}

/// The servers' CPU time per message over the measured phase (`used`, user and
/// system seconds, from [`Marks::finish`]), in µs: unlike a rate, it hardly
/// moves when a neighbour takes the machine's time (a process is not charged
/// for the time it waits), so two servers' costs compare across rounds.
fn cpu_per_message(out: &mut Map<String, Value>, used: Option<(f64, f64)>, messages: u64) {
    let Some((user, system)) = used.filter(|_| messages > 0) else {
        return;
    };
    let us = |seconds: f64| (seconds * 1e6 / messages as f64 * 1000.0).round() / 1000.0;
    out.insert(
        "server_cpu_us_per_msg".into(),
        serde_json::json!({"user": us(user), "system": us(system), "total": us(user + system)}),
    );
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The servers' VmRSS summed, in KiB (`None` if one cannot be read).
fn server_rss(ctx: &Ctx) -> Option<u64> {
    sum_rss(&ctx.server_pids)
}

fn sum_rss(pids: &[String]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| procfs::rss_kib(p)).sum()
}

async fn logins(ctx: Arc<Ctx>, args: LoginArgs) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    out.insert("count".into(), args.count.into());
    out.insert("concurrency".into(), ctx.concurrency.into());
    let rss_before = server_rss(&ctx);
    let marks = Marks::now(&ctx);
    let names = (0..args.count)
        .map(|i| Want {
            index: i,
            name: format!("{}u{i}", ctx.prefix),
            node: i,
        })
        .collect();
    let (conns, stats) = open_many(&ctx, names, idle_config()).await;
    let _ = marks.finish(&mut out);
    stats.to_json("", &mut out);
    out.insert("failures".into(), (stats.failed + stats.rejected).into());
    let secs = stats.elapsed.as_secs_f64();
    out.insert(
        "logins_per_s".into(),
        (stats.ok as f64 / secs).round().into(),
    );
    out.insert("handshake_us".into(), latency_json(&stats.handshake));
    out.insert("login_us".into(), latency_json(&stats.login));
    out.insert("total_us".into(), latency_json(&stats.total));

    let dropped = Arc::new(AtomicU64::new(0));
    let holders = hold_idle(conns, &dropped);
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let rss_after = server_rss(&ctx);
    out.insert(
        "dropped_while_idle".into(),
        dropped.load(Ordering::Relaxed).into(),
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        out.insert("server_rss_before_kib".into(), before.into());
        out.insert("server_rss_after_kib".into(), after.into());
        if stats.ok > 0 {
            let per = (after as f64 - before as f64) * 1024.0 / stats.ok as f64;
            out.insert("server_rss_per_conn_bytes".into(), per.round().into());
        }
    }
    drop(holders);
    if stats.ok == 0 {
        out.insert("error".into(), "no connection logged in".into());
    }
    Ok(out)
}

/// Opens `idle` extra logged-in connections and `pairs` caller/callee pairs,
/// and has every pair complete offer/answer. Returns the pairs, the idle
/// holders and set-up figures.
async fn setup(
    ctx: &Arc<Ctx>,
    pairs: usize,
    idle: usize,
    out: &mut Map<String, Value>,
) -> Result<(Vec<(Ws, Ws)>, JoinSet<()>, Arc<AtomicU64>), String> {
    let setup_started = Instant::now();
    let dropped = Arc::new(AtomicU64::new(0));
    let mut holders = JoinSet::new();
    if idle > 0 {
        let rss_before = server_rss(ctx);
        let names = (0..idle)
            .map(|i| Want {
                index: i,
                name: format!("{}i{i}", ctx.prefix),
                node: i,
            })
            .collect();
        let (conns, stats) = open_many(ctx, names, idle_config()).await;
        stats.to_json("idle_", out);
        out.insert(
            "idle_logins_per_s".into(),
            (stats.ok as f64 / stats.elapsed.as_secs_f64())
                .round()
                .into(),
        );
        holders = hold_idle(conns, &dropped);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let (Some(before), Some(after)) = (rss_before, server_rss(ctx)) {
            out.insert("server_rss_before_idle_kib".into(), before.into());
            out.insert("server_rss_after_idle_kib".into(), after.into());
            if stats.ok > 0 {
                let per = (after as f64 - before as f64) * 1024.0 / stats.ok as f64;
                out.insert("server_rss_per_idle_conn_bytes".into(), per.round().into());
            }
        }
    }
    let names = (0..pairs)
        .flat_map(|i| {
            let (a, b) = ctx.pair_nodes(i);
            [
                Want {
                    index: idle + 2 * i,
                    name: format!("{}a{i}", ctx.prefix),
                    node: a,
                },
                Want {
                    index: idle + 2 * i + 1,
                    name: format!("{}b{i}", ctx.prefix),
                    node: b,
                },
            ]
        })
        .collect();
    let (conns, stats) = open_many(ctx, names, pair_config()).await;
    if stats.ok != 2 * pairs {
        stats.to_json("pair_", out);
        return Err(format!(
            "only {} of {} pair connections logged in",
            stats.ok,
            2 * pairs
        ));
    }
    let mut conns = conns.into_iter().flatten();
    let pairs = (0..pairs).map(|_| (conns.next().unwrap().ws, conns.next().unwrap().ws));
    let ready = call_pairs(ctx, pairs.collect()).await?;
    out.insert(
        "setup_s".into(),
        round3(setup_started.elapsed().as_secs_f64()).into(),
    );
    Ok((ready, holders, dropped))
}

/// Has A of every pair (named `<prefix>a<i>`) offer to B (`<prefix>b<i>`) and
/// B answer; returns the pairs in order.
async fn call_pairs(ctx: &Arc<Ctx>, pairs: Vec<(Ws, Ws)>) -> Result<Vec<(Ws, Ws)>, String> {
    let mut calls = JoinSet::new();
    for (i, (mut a, mut b)) in pairs.into_iter().enumerate() {
        let a_name = format!("{}a{i}", ctx.prefix);
        let b_name = format!("{}b{i}", ctx.prefix);
        let limit = ctx.connect_timeout;
        calls.spawn(async move {
            let call = async {
                send_text(&mut a, wire::offer(&b_name)).await?;
                expect(&mut b, "offer").await?;
                send_text(&mut b, wire::answer(&a_name)).await?;
                expect(&mut a, "answer").await?;
                Ok::<_, String>(())
            };
            match tokio::time::timeout(limit, call).await {
                Ok(Ok(())) => Ok((i, a, b)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("offer/answer timed out".to_owned()),
            }
        });
    }
    let mut ready: BTreeMap<usize, (Ws, Ws)> = BTreeMap::new();
    while let Some(joined) = calls.join_next().await {
        let (i, a, b) = joined.map_err(|e| e.to_string())??;
        ready.insert(i, (a, b));
    }
    Ok(ready.into_values().collect())
}

async fn send_text(ws: &mut Ws, text: String) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())
}

/// Reads until a message of type `kind` arrives; a server `error` fails.
async fn expect(ws: &mut Ws, kind: &str) -> Result<(), String> {
    loop {
        match ws.next().await {
            None => return Err(format!("closed while waiting for {kind}")),
            Some(Err(e)) => return Err(format!("waiting for {kind}: {e}")),
            Some(Ok(Message::Text(t))) => match wire::parse(&t) {
                Some((k, _)) if k == kind => return Ok(()),
                Some((k, _)) if k == "error" => {
                    return Err(format!("server error while waiting for {kind}: {t}"));
                }
                _ => {}
            },
            Some(Ok(_)) => {}
        }
    }
}

/// What B has seen of its pair's stream.
struct Received {
    hist: Histogram<u64>,
    total: u64,
    measured: u64,
    order_errors: u64,
    next_seq: u64,
}

/// State shared by the sender (A) and receiver (B) of one pair: the window
/// is in-process flow control, so acknowledgements cost no wire traffic.
struct PairShared {
    window: Semaphore,
    received: Mutex<Received>,
}

/// Frames that are not the relayed candidates a connection expects (server
/// `error` replies among them), seen on any connection.
#[derive(Default)]
struct Surprises {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Surprises {
    fn note(&self, text: &str) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.first
            .lock()
            .expect("not poisoned")
            .get_or_insert_with(|| text.chars().take(300).collect());
    }

    fn to_json(&self, out: &mut Map<String, Value>) {
        out.insert(
            "unexpected_messages".into(),
            self.count.load(Ordering::Relaxed).into(),
        );
        if let Some(e) = self.first.lock().expect("not poisoned").clone() {
            out.insert("first_unexpected".into(), e.into());
        }
    }
}

/// What A did: messages sent, how often it waited on a full window, and (when
/// paced) how late sends were against their schedule.
struct Sent {
    sent: u64,
    stalls: u64,
    lag: Histogram<u64>,
}

async fn relay(ctx: Arc<Ctx>, args: RelayArgs) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    out.insert("pairs".into(), args.pairs.into());
    out.insert("window".into(), args.window.into());
    out.insert("offered_rate".into(), args.offered_rate.into());
    out.insert("duration_s".into(), args.duration.into());
    out.insert("idle".into(), args.idle.into());
    let window = args.window.max(1);
    let (pairs, holders, dropped) = match setup(&ctx, args.pairs, args.idle, &mut out).await {
        Ok(v) => v,
        Err(e) => {
            out.insert("error".into(), e.into());
            return Ok(out);
        }
    };
    let phase = Phase::new();
    let surprises = Arc::new(Surprises::default());
    let mut shared_all = Vec::new();
    let mut senders = JoinSet::new();
    let mut others = JoinSet::new();
    let mut keep = Vec::new();
    let n_pairs = pairs.len();
    let start = Instant::now();
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        let shared = Arc::new(PairShared {
            window: Semaphore::new(window),
            received: Mutex::new(Received {
                hist: latency_histogram(),
                total: 0,
                measured: 0,
                order_errors: 0,
                next_seq: 0,
            }),
        });
        shared_all.push(shared.clone());
        let (a_tx, a_rx) = a.split();
        let (b_tx, b_rx) = b.split();
        keep.push(b_tx);
        let to = format!("{}b{i}", ctx.prefix);
        let pace = (args.offered_rate > 0.0).then(|| {
            let interval = Duration::from_secs_f64(n_pairs as f64 / args.offered_rate);
            // Stagger the pairs evenly over one interval.
            (
                interval,
                start + interval.mul_f64(i as f64 / n_pairs as f64),
            )
        });
        senders.spawn(send_stream(
            ctx.clone(),
            phase.clone(),
            shared.clone(),
            a_tx,
            to,
            pace,
        ));
        others.spawn(receive_stream(
            ctx.clone(),
            phase.clone(),
            shared,
            b_rx,
            surprises.clone(),
        ));
        others.spawn(drain(a_rx, surprises.clone()));
    }

    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let marks = Marks::now(&ctx);
    let measure_start = Instant::now();
    phase.set(MEASURE);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    phase.set(STOP);
    let measured_secs = measure_start.elapsed().as_secs_f64();
    let used = marks.finish(&mut out);
    if let Some(rss) = server_rss(&ctx) {
        out.insert("server_rss_kib".into(), rss.into());
    }
    for s in &shared_all {
        s.window.close();
    }

    // Senders stop at once; one stuck in a write to a server that no longer
    // reads is abandoned after a while.
    let mut sent = 0;
    let mut stalls = 0;
    let mut lag = latency_histogram();
    let mut stuck = 0;
    let collect = async {
        while let Some(joined) = senders.join_next().await {
            if let Ok(s) = joined {
                sent += s.sent;
                stalls += s.stalls;
                lag.add(&s.lag).expect("same bounds");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(3), collect)
        .await
        .is_err()
    {
        stuck = senders.len();
        senders.abort_all();
    }
    // Wait for what is still in flight.
    let drain_deadline = Instant::now() + Duration::from_secs(3);
    let total_received = || {
        shared_all
            .iter()
            .map(|s| s.received.lock().expect("not poisoned").total)
            .sum::<u64>()
    };
    while total_received() < sent && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    others.abort_all();

    let mut hist = latency_histogram();
    let (mut measured, mut received, mut order_errors) = (0, 0, 0);
    for s in &shared_all {
        let r = s.received.lock().expect("not poisoned");
        hist.add(&r.hist).expect("same bounds");
        measured += r.measured;
        received += r.total;
        order_errors += r.order_errors;
    }
    out.insert("sent".into(), sent.into());
    out.insert("received".into(), received.into());
    out.insert("lost".into(), sent.saturating_sub(received).into());
    out.insert("order_errors".into(), order_errors.into());
    out.insert("measured".into(), measured.into());
    out.insert(
        "msgs_per_s".into(),
        (measured as f64 / measured_secs).round().into(),
    );
    cpu_per_message(&mut out, used, measured);
    out.insert("latency_us".into(), latency_json(&hist));
    if args.offered_rate > 0.0 {
        out.insert("window_stalls".into(), stalls.into());
        out.insert("send_lag_us".into(), latency_json(&lag));
    }
    if stuck > 0 {
        out.insert("stuck_senders".into(), stuck.into());
    }
    if args.idle > 0 {
        out.insert(
            "idle_dropped".into(),
            dropped.load(Ordering::Relaxed).into(),
        );
    }
    surprises.to_json(&mut out);
    drop(holders);
    drop(keep);
    Ok(out)
}

/// A's side of a relay pair: sends candidates to `to` while the window has
/// room, feeding as many as it can before one flush; when `pace` is set
/// (interval, first send time) it follows that schedule instead.
async fn send_stream(
    ctx: Arc<Ctx>,
    phase: Arc<Phase>,
    shared: Arc<PairShared>,
    mut tx: WsTx,
    to: String,
    pace: Option<(Duration, Instant)>,
) -> Sent {
    let mut out = Sent {
        sent: 0,
        stalls: 0,
        lag: latency_histogram(),
    };
    let window = &shared.window;
    let feed = async |tx: &mut WsTx, seq: u64| {
        let msg = Message::text(wire::candidate(&to, seq, ctx.now_ns()));
        tx.feed(msg).await
    };
    match pace {
        None => loop {
            let Ok(permit) = window.acquire().await else {
                break;
            };
            permit.forget();
            if feed(&mut tx, out.sent).await.is_err() {
                break;
            }
            out.sent += 1;
            while let Ok(permit) = window.try_acquire() {
                permit.forget();
                if feed(&mut tx, out.sent).await.is_err() {
                    return out;
                }
                out.sent += 1;
            }
            if tx.flush().await.is_err() {
                break;
            }
        },
        Some((interval, mut next)) => 'run: loop {
            if phase.get() == STOP {
                break;
            }
            let now = Instant::now();
            if next > now {
                let wake = next.min(now + Duration::from_millis(50));
                tokio::time::sleep_until(wake.into()).await;
                continue;
            }
            let mut fed = 0;
            while next <= Instant::now() && fed < 64 {
                match window.try_acquire() {
                    Ok(p) => p.forget(),
                    Err(TryAcquireError::Closed) => break 'run,
                    Err(TryAcquireError::NoPermits) => {
                        out.stalls += 1;
                        if fed > 0 && tx.flush().await.is_err() {
                            break 'run;
                        }
                        fed = 0;
                        match window.acquire().await {
                            Ok(p) => p.forget(),
                            Err(_) => break 'run,
                        }
                    }
                }
                if phase.get() == MEASURE {
                    record(&mut out.lag, (Instant::now() - next).as_nanos() as u64);
                }
                if feed(&mut tx, out.sent).await.is_err() {
                    break 'run;
                }
                out.sent += 1;
                fed += 1;
                next += interval;
            }
            if fed > 0 && tx.flush().await.is_err() {
                break;
            }
        },
    }
    out
}

/// B's side of a relay pair: checks order, records one-way latency during
/// the measured phase and reopens the window.
async fn receive_stream(
    ctx: Arc<Ctx>,
    phase: Arc<Phase>,
    shared: Arc<PairShared>,
    mut rx: WsRx,
    surprises: Arc<Surprises>,
) {
    while let Some(msg) = rx.next().await {
        match msg {
            Ok(Message::Text(t)) => {
                let now = ctx.now_ns();
                let Some(p) = wire::probe(&t) else {
                    surprises.note(&t);
                    continue;
                };
                {
                    let mut r = shared.received.lock().expect("not poisoned");
                    r.total += 1;
                    if p.seq != r.next_seq {
                        r.order_errors += 1;
                    }
                    r.next_seq = p.seq + 1;
                    if phase.get() == MEASURE {
                        r.measured += 1;
                        record(&mut r.hist, now.saturating_sub(p.ts_ns));
                    }
                }
                shared.window.add_permits(1);
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Reads a connection that should receive nothing, noting anything it gets.
async fn drain(mut rx: WsRx, surprises: Arc<Surprises>) {
    while let Some(msg) = rx.next().await {
        match msg {
            Ok(Message::Text(t)) => surprises.note(&t),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// What A measured of its round trips.
struct Trips {
    hist: Histogram<u64>,
    measured: u64,
    total: u64,
    error: Option<String>,
}

async fn pingpong(ctx: Arc<Ctx>, args: PingArgs) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    out.insert("pairs".into(), args.pairs.into());
    out.insert("duration_s".into(), args.duration.into());
    out.insert("idle".into(), args.idle.into());
    let (pairs, holders, dropped) = match setup(&ctx, args.pairs, args.idle, &mut out).await {
        Ok(v) => v,
        Err(e) => {
            out.insert("error".into(), e.into());
            return Ok(out);
        }
    };
    let phase = Phase::new();
    let surprises = Arc::new(Surprises::default());
    let mut callers = JoinSet::new();
    let mut echoes = JoinSet::new();
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        let a_name = format!("{}a{i}", ctx.prefix);
        let b_name = format!("{}b{i}", ctx.prefix);
        callers.spawn(ping(ctx.clone(), phase.clone(), a, b_name));
        echoes.spawn(echo(b, a_name, phase.clone(), surprises.clone()));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let marks = Marks::now(&ctx);
    let measure_start = Instant::now();
    phase.set(MEASURE);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    phase.set(STOP);
    let measured_secs = measure_start.elapsed().as_secs_f64();
    let used = marks.finish(&mut out);
    let mut hist = latency_histogram();
    let (mut measured, mut total, mut failed) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    let collect = async {
        while let Some(joined) = callers.join_next().await {
            let Ok(t) = joined else {
                failed += 1;
                continue;
            };
            hist.add(&t.hist).expect("same bounds");
            measured += t.measured;
            total += t.total;
            if let Some(e) = t.error {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(6), collect)
        .await
        .is_err()
    {
        out.insert("stuck_callers".into(), callers.len().into());
        callers.abort_all();
    }
    echoes.abort_all();
    out.insert("round_trips".into(), total.into());
    out.insert("measured".into(), measured.into());
    out.insert(
        "round_trips_per_s".into(),
        (measured as f64 / measured_secs).round().into(),
    );
    // Two relayed messages a round trip.
    cpu_per_message(&mut out, used, 2 * measured);
    out.insert("rtt_us".into(), latency_json(&hist));
    out.insert("failed_pairs".into(), failed.into());
    if let Some(e) = first_error {
        out.insert("first_error".into(), e.into());
    }
    if args.idle > 0 {
        out.insert(
            "idle_dropped".into(),
            dropped.load(Ordering::Relaxed).into(),
        );
    }
    surprises.to_json(&mut out);
    drop(holders);
    Ok(out)
}

/// A's side of a ping-pong pair: one candidate in flight, the next sent when
/// its echo is back.
async fn ping(ctx: Arc<Ctx>, phase: Arc<Phase>, mut ws: Ws, to: String) -> Trips {
    let mut t = Trips {
        hist: latency_histogram(),
        measured: 0,
        total: 0,
        error: None,
    };
    let limit = Duration::from_secs(5);
    while phase.get() != STOP {
        let seq = t.total;
        let trip = async {
            send_text(&mut ws, wire::candidate(&to, seq, ctx.now_ns())).await?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => match wire::probe(&text) {
                        Some(p) if p.seq == seq => return Ok(p.ts_ns),
                        Some(p) => return Err(format!("echo {} while waiting for {seq}", p.seq)),
                        None => return Err(format!("unexpected message: {text}")),
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("closed".to_owned()),
                }
            }
        };
        match tokio::time::timeout(limit, trip).await {
            Ok(Ok(ts)) => {
                t.total += 1;
                if phase.get() == MEASURE {
                    t.measured += 1;
                    record(&mut t.hist, ctx.now_ns().saturating_sub(ts));
                }
            }
            Ok(Err(e)) => {
                t.error = Some(e);
                break;
            }
            Err(_) => {
                t.error = Some(format!("no echo of {seq} within {limit:?}"));
                break;
            }
        }
    }
    t
}

/// B's side of a ping-pong pair: sends every candidate back to `to`. Once
/// the run stops, callers hang up and a server may tell B (`close`): that is
/// not counted.
async fn echo(mut ws: Ws, to: String, phase: Arc<Phase>, surprises: Arc<Surprises>) {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) => match wire::probe(&t) {
                Some(p) => {
                    let back = Message::text(wire::candidate(&to, p.seq, p.ts_ns));
                    if ws.send(back).await.is_err() {
                        break;
                    }
                }
                None if phase.get() != STOP => surprises.note(&t),
                None => {}
            },
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// The server's RSS read every 100 ms on a thread of its own (the runtime is
/// busy with thousands of connections, and a timer task would be late).
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<RssSamples>>,
}

/// What [`RssSampler`] saw.
#[derive(Debug, Default)]
struct RssSamples {
    peak_kib: u64,
    /// Peak of the machine's TCP buffers (all sockets, not only ours).
    tcp_peak_kib: u64,
    /// One reading per second since the start, in KiB.
    per_second_kib: Vec<u64>,
}

impl RssSampler {
    /// Samples the sum of the RSS of `pids` (none: no thread).
    fn start(pids: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (!pids.is_empty()).then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = RssSamples::default();
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = sum_rss(&pids) {
                        s.peak_kib = s.peak_kib.max(rss);
                        let second = started.elapsed().as_secs() as usize;
                        if s.per_second_kib.len() <= second {
                            s.per_second_kib.push(rss);
                        }
                    }
                    if let Some(tcp) = procfs::tcp_buffers_kib() {
                        s.tcp_peak_kib = s.tcp_peak_kib.max(tcp);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                s
            })
        });
        Self { stop, thread }
    }

    fn finish(mut self) -> Option<RssSamples> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

/// What the flooders sent and what came back to them.
#[derive(Default)]
struct HoardCounts {
    sent: AtomicU64,
    recipient_overloaded: AtomicU64,
    server_overloaded: AtomicU64,
    /// `close` messages: the server dropped the flooder's victim.
    victims_closed: AtomicU64,
    /// Flooders whose own connection the server ended.
    flooders_dropped: AtomicU64,
    /// Any other frame, by `type` (and `code` for errors).
    other: Mutex<BTreeMap<String, u64>>,
}

impl HoardCounts {
    fn note(&self, text: &str) {
        let Some((kind, v)) = wire::parse(text) else {
            self.note_other("unparsable".to_owned());
            return;
        };
        let code = v.get("code").and_then(Value::as_str).unwrap_or("");
        match (kind.as_str(), code) {
            ("error", "recipient_overloaded") => &self.recipient_overloaded,
            ("error", "server_overloaded") => &self.server_overloaded,
            ("close", _) => &self.victims_closed,
            ("error", code) => return self.note_other(format!("error:{code}")),
            (kind, _) => return self.note_other(kind.to_owned()),
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    fn note_other(&self, key: String) {
        *self
            .other
            .lock()
            .expect("not poisoned")
            .entry(key)
            .or_default() += 1;
    }
}

async fn hoard(ctx: Arc<Ctx>, args: HoardArgs) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    out.insert("victims".into(), args.victims.into());
    out.insert("size".into(), args.size.into());
    out.insert("duration_s".into(), args.duration.into());
    out.insert("settle_s".into(), args.settle.into());
    out.insert("victim_rcvbuf".into(), args.victim_rcvbuf.into());
    out.insert("flooder_sndbuf".into(), args.flooder_sndbuf.into());
    let n = args.victims;
    let rss_before = server_rss(&ctx);
    if let Some(tcp) = procfs::tcp_buffers_kib() {
        out.insert("tcp_buffers_before_kib".into(), tcp.into());
    }
    let started = Instant::now();
    // Victims are B (`<prefix>b<i>`), flooders A, as `call_pairs` names them.
    let victim_cfg = ConnConfig {
        ws: idle_config(),
        rcvbuf: (args.victim_rcvbuf > 0).then_some(args.victim_rcvbuf),
        sndbuf: None,
    };
    let flooder_cfg = ConnConfig {
        ws: pair_config(),
        rcvbuf: None,
        sndbuf: (args.flooder_sndbuf > 0).then_some(args.flooder_sndbuf),
    };
    let names = (0..n)
        .map(|i| Want {
            index: i,
            name: format!("{}b{i}", ctx.prefix),
            node: ctx.pair_nodes(i).1,
        })
        .collect();
    let (victims, stats) = open_many(&ctx, names, victim_cfg).await;
    stats.to_json("victims_", &mut out);
    let victims_ok = stats.ok;
    let names = (0..n)
        .map(|i| Want {
            index: n + i,
            name: format!("{}a{i}", ctx.prefix),
            node: ctx.pair_nodes(i).0,
        })
        .collect();
    let (flooders, stats) = open_many(&ctx, names, flooder_cfg).await;
    stats.to_json("flooders_", &mut out);
    if victims_ok != n || stats.ok != n {
        out.insert("error".into(), "not every connection logged in".into());
        return Ok(out);
    }
    let pairs = flooders
        .into_iter()
        .flatten()
        .zip(victims.into_iter().flatten())
        .map(|(a, b)| (a.ws, b.ws))
        .collect();
    let pairs = match call_pairs(&ctx, pairs).await {
        Ok(p) => p,
        Err(e) => {
            out.insert("error".into(), e.into());
            return Ok(out);
        }
    };
    out.insert(
        "setup_s".into(),
        round3(started.elapsed().as_secs_f64()).into(),
    );
    let rss_setup = server_rss(&ctx);

    // The victims are kept and never polled again: the server's writes to
    // them stall once the kernel's buffers are full.
    let sampler = RssSampler::start(ctx.server_pids.clone());
    let counts = Arc::new(HoardCounts::default());
    let until = Instant::now() + Duration::from_secs_f64(args.duration);
    let marks = Marks::now(&ctx);
    let mut floods = JoinSet::new();
    let mut readers = JoinSet::new();
    let mut victims = Vec::with_capacity(n);
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        victims.push(b);
        let (tx, rx) = a.split();
        let msg = Message::text(wire::padded_candidate(
            &format!("{}b{i}", ctx.prefix),
            args.size,
        ));
        floods.spawn(flood(tx, msg, until, counts.clone()));
        let counts = counts.clone();
        readers.spawn(async move {
            let mut rx = rx;
            loop {
                match rx.next().await {
                    Some(Ok(Message::Text(t))) => counts.note(&t),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        counts.flooders_dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Some(Ok(_)) => {}
                }
            }
        });
    }
    tokio::time::sleep_until(until.into()).await;
    // Every flooder stops at `until` by itself; this only bounds the wait.
    let stopped = tokio::time::timeout(Duration::from_secs(3), async {
        while floods.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        out.insert("stuck_flooders".into(), floods.len().into());
    }
    floods.abort_all();
    let _ = marks.finish(&mut out);
    let rss_end_of_flood = server_rss(&ctx);
    // Refusals still in flight are counted for a moment more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    readers.abort_all();
    while readers.join_next().await.is_some() {}
    while floods.join_next().await.is_some() {}
    // Everyone leaves: victims with unread data get a reset.
    drop(victims);
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_after_close = server_rss(&ctx);
    let samples = sampler.finish();

    let sent = counts.sent.load(Ordering::Relaxed);
    let recipient = counts.recipient_overloaded.load(Ordering::Relaxed);
    let server = counts.server_overloaded.load(Ordering::Relaxed);
    out.insert("sent".into(), sent.into());
    out.insert(
        "sent_mib".into(),
        round1(sent as f64 * args.size as f64 / (1024.0 * 1024.0)).into(),
    );
    out.insert("refused_recipient_overloaded".into(), recipient.into());
    out.insert("refused_server_overloaded".into(), server.into());
    out.insert(
        "victims_closed".into(),
        counts.victims_closed.load(Ordering::Relaxed).into(),
    );
    out.insert(
        "flooders_dropped".into(),
        counts.flooders_dropped.load(Ordering::Relaxed).into(),
    );
    let other = counts.other.lock().expect("not poisoned").clone();
    out.insert(
        "other_frames".into(),
        Value::Object(other.into_iter().map(|(k, v)| (k, v.into())).collect()),
    );
    let mut rss = |key: &str, kib: Option<u64>| {
        if let Some(kib) = kib {
            out.insert(key.into(), kib.into());
        }
    };
    rss("server_rss_before_kib", rss_before);
    rss("server_rss_setup_kib", rss_setup);
    rss("server_rss_end_of_flood_kib", rss_end_of_flood);
    rss("server_rss_after_close_kib", rss_after_close);
    if let Some(s) = samples {
        let peak = s
            .peak_kib
            .max(rss_end_of_flood.unwrap_or(0))
            .max(rss_after_close.unwrap_or(0));
        out.insert("server_rss_peak_kib".into(), peak.into());
        out.insert("tcp_buffers_peak_kib".into(), s.tcp_peak_kib.into());
        out.insert(
            "server_rss_mib_per_s".into(),
            s.per_second_kib
                .iter()
                .map(|kib| Value::from(kib / 1024))
                .collect(),
        );
    }
    Ok(out)
}

/// A flooder: sends `msg` as fast as the connection takes it until `until`.
async fn flood(mut tx: WsTx, msg: Message, until: Instant, counts: Arc<HoardCounts>) {
    let run = async {
        loop {
            for _ in 0..8 {
                if tx.feed(msg.clone()).await.is_err() {
                    return;
                }
                counts.sent.fetch_add(1, Ordering::Relaxed);
            }
            if tx.flush().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout_at(until.into(), run).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_placed_by_spread() {
        // One server: the single-URL form, whatever the spread.
        assert_eq!(pair_nodes(Spread::Same, 1, 7), (0, 0));
        let same: Vec<_> = (0..4).map(|i| pair_nodes(Spread::Same, 2, i)).collect();
        assert_eq!(same, [(0, 0), (1, 1), (0, 0), (1, 1)]);
        let cross: Vec<_> = (0..4).map(|i| pair_nodes(Spread::Cross, 3, i)).collect();
        assert_eq!(cross, [(0, 1), (1, 2), (2, 0), (0, 1)]);
        assert!((0..100).all(|i| {
            let (a, b) = pair_nodes(Spread::Cross, 2, i);
            a != b
        }));
    }

    #[test]
    fn cpu_per_message_in_microseconds() {
        let mut out = Map::new();
        // 0.3 s of user and 0.45 s of system time over 250,000 messages.
        cpu_per_message(&mut out, Some((0.3, 0.45)), 250_000);
        assert_eq!(
            out["server_cpu_us_per_msg"],
            serde_json::json!({"user": 1.2, "system": 1.8, "total": 3.0})
        );
        // Nothing measured, or the server's CPU unreadable: no figure rather than a wrong one.
        let mut out = Map::new();
        cpu_per_message(&mut out, Some((0.3, 0.45)), 0);
        cpu_per_message(&mut out, None, 250_000);
        assert!(out.is_empty());
    }

    #[test]
    fn url_list_and_repeats() {
        let cli = Cli::parse_from(["loadgen", "logins"]);
        assert_eq!(cli.common.url, ["ws://127.0.0.1:18080/"]);
        let cli = Cli::parse_from([
            "loadgen",
            "--url",
            "ws://127.0.0.1:1/,ws://127.0.0.1:2/",
            "--url",
            "ws://127.0.0.1:3/",
            "--server-pid",
            "10,11",
            "relay",
            "--spread",
            "cross",
        ]);
        assert_eq!(cli.common.url.len(), 3);
        assert_eq!(cli.common.server_pid, [10, 11]);
        assert_eq!(cli.common.spread, Spread::Cross);
    }
}
