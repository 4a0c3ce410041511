//! A throwaway `redis-server` for tests (feature `testing`).
//!
//! [`RedisServer::start`] runs `redis-server` on a free loopback port with nothing on disk
//! (`--save "" --appendonly no`), so a [`restart`](RedisServer::restart) comes back empty, as a
//! production Redis without persistence does. The server is killed (`SIGKILL`) when the value is
//! dropped.
//!
//! The binary is `redis-server` from `PATH`, or the path in the environment variable
//! `SIGNALING_REDIS_SERVER`. When it cannot be found, [`RedisServer::start`] returns `None` and
//! prints, once per test binary, a line saying the Redis tests were skipped and how to run them;
//! the test then returns without failing. Under `CI=true` a missing binary panics instead: CI
//! must run these tests.
//!
//! ```no_run
//! # async fn test() {
//! use signaling_redis::testing::RedisServer;
//!
//! let Some(mut redis) = RedisServer::start() else { return };
//! let url = redis.url(); // redis://127.0.0.1:<port>/
//! redis.freeze();  // Redis hangs: commands time out
//! redis.thaw();
//! redis.kill();    // Redis is gone: commands fail
//! redis.restart(); // back on the same port, empty
//! # }
//! ```

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The environment variable naming the `redis-server` binary (default: `redis-server` on `PATH`).
pub const SERVER_ENV: &str = "SIGNALING_REDIS_SERVER";

/// How long a starting `redis-server` may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` process on `127.0.0.1`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    binary: String,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers `PING`.
    ///
    /// Returns `None` if the binary is not found (after printing the skip line once), unless
    /// the environment variable `CI` is `true`.
    ///
    /// # Panics
    ///
    /// If the binary is missing under `CI=true`, or the server does not come up.
    pub fn start() -> Option<Self> {
        let binary = std::env::var(SERVER_ENV).unwrap_or_else(|_| "redis-server".to_owned());
        // A port found free may be taken by another test before redis-server binds it: try a
        // few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(&binary, port) {
                Ok(child) => {
                    let mut server = Self {
                        binary: binary.clone(),
                        port,
                        child: Some(child),
                    };
                    match server.wait_ready() {
                        Ok(()) => return Some(server),
                        Err(e) => last_error = e,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    skip(&binary);
                    return None;
                }
                Err(e) => panic!("cannot run {binary}: {e}"),
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// The port it listens on (`127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL to connect to: `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (`SIGKILL`: no shutdown, connections reset) and waits for it to exit.
    /// Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server without closing anything (`SIGSTOP`, through the `kill` command):
    /// connections stay open and nothing answers, as with a hung Redis or a network partition.
    /// [`thaw`](RedisServer::thaw) lets it go on.
    ///
    /// # Panics
    ///
    /// If it is not running, or the signal cannot be sent.
    pub fn freeze(&mut self) {
        self.signal("-STOP");
    }

    /// Lets a [frozen](RedisServer::freeze) server go on (`SIGCONT`).
    ///
    /// # Panics
    ///
    /// If it is not running, or the signal cannot be sent.
    pub fn thaw(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is not running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill {signal}: {e}"));
        assert!(status.success(), "kill {signal} failed: {status}");
    }

    /// Kills the server if it is running and starts it again on the same port, empty (nothing
    /// is kept on disk), waiting until it answers `PING`.
    ///
    /// # Panics
    ///
    /// If the server does not come up again.
    pub fn restart(&mut self) {
        self.kill();
        let child = spawn(&self.binary, self.port)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary));
        self.child = Some(child);
        if let Err(e) = self.wait_ready() {
            panic!("redis-server did not restart on port {}: {e}", self.port);
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().ok().flatten(),
                None => return Err("it is not running".to_owned()),
            };
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "it exited at once ({status}) on port {}",
                    self.port
                ));
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "no PONG on port {} within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(binary: &str, port: u16) -> std::io::Result<Child> {
    Command::new(binary)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(["--loglevel", "warning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free loopback port");
    listener.local_addr().expect("local address").port()
}

fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

fn skip(binary: &str) {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!(
            "{binary} not found, and CI=true: the Redis cluster tests must run in CI \
             (apt-get install redis-server, or set {SERVER_ENV})"
        );
    }
    static LOUD_LINE: Once = Once::new();
    LOUD_LINE.call_once(|| {
        // Straight to the process's stderr: the test harness captures `eprintln!` of a passing
        // test, and this line must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {binary} not found; install it (apt-get install redis-server) or set \
             {SERVER_ENV} to run the Redis cluster tests"
        );
    });
}
