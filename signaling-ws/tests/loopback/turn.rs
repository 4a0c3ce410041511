//! TURN REST credentials against a real TURN server (issue 12): a `turnserver` (coturn) of its
//! own on a free loopback port with `use-auth-secret`, a signaling server sharing the secret, a
//! login over WebSocket, and real TURN Allocate requests with what the login reply carried.
//!
//! The binary is coturn's `turnserver` from `PATH` (Debian: `apt-get install coturn`; `.ci/run`
//! installs it), or the path in `SIGNALING_TURNSERVER`. Without it the test prints one `SKIPPED:`
//! line and passes, except under `CI=true`, where it fails.
//!
//! The TURN client is `turn-client-proto` (sans-IO, RFC 5766/8656, with the long-term credential
//! mechanism), driven here over a blocking UDP socket.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use signaling_test_support::{Client, quiet_config};
use signaling_ws::ice::{IceServers, TurnRest};
use turn_client_proto::api::{TurnClientApi, TurnConfig, TurnEvent, TurnPollRet};
use turn_client_proto::stun::Instant as StunInstant;
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::stun::types::TransportType;
use turn_client_proto::types::TurnCredentials;
use turn_client_proto::udp::TurnClientUdp;

use super::common;

/// The environment variable naming the `turnserver` binary (default: `turnserver` on `PATH`).
const SERVER_ENV: &str = "SIGNALING_TURNSERVER";
const SECRET: &str = "loopback-turn-secret-0123456789abcdef";
const REALM: &str = "signaling.test";

/// A `turnserver` on 127.0.0.1 with `use-auth-secret`, killed on drop.
struct Coturn {
    port: u16,
    child: Child,
}

impl Coturn {
    /// Starts coturn on a free loopback port (UDP and TCP) and waits until it listens; `None`
    /// (after the skip line) when the binary is missing outside CI.
    fn start(secret: &str) -> Option<Coturn> {
        let binary = std::env::var(SERVER_ENV).unwrap_or_else(|_| "turnserver".to_owned());
        let mut last_error = String::new();
        // A port found free may be taken before coturn binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let pidfile = std::env::temp_dir().join(format!("signaling-turnserver-{port}.pid"));
            let spawned = Command::new(&binary)
                .arg("-n") // no configuration file: only these flags
                .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
                .args(["--listening-port", &port.to_string()])
                .args(["--use-auth-secret", "--static-auth-secret", secret])
                .args(["--realm", REALM])
                .args([
                    "--no-tls",
                    "--no-dtls",
                    "--no-cli",
                    "--allow-loopback-peers",
                ])
                .args(["--log-file", "stdout", "--simple-log"])
                .arg("--pidfile")
                .arg(&pidfile)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    skip(&binary);
                    return None;
                }
                Err(e) => panic!("cannot run {binary}: {e}"),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!("it exited at once ({status}) on port {port}");
                    break;
                }
                // It listens on TCP and UDP at once: a TCP connection says it is up.
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Some(Coturn { port, child });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!("not listening on port {port} within 10 s");
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("turnserver did not start: {last_error}");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    // Free for TCP and for UDP.
    loop {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free loopback port");
        let port = tcp.local_addr().expect("local address").port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

fn skip(binary: &str) {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!(
            "{binary} not found, and CI=true: the TURN test must run in CI \
             (apt-get install coturn, or set {SERVER_ENV})"
        );
    }
    // Straight to the process's stderr: the harness captures a passing test's output.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: the TURN credentials test: {binary} not found (install coturn: apt-get install \
         coturn, or set {SERVER_ENV})"
    );
}

/// What the TURN server made of an Allocate.
#[derive(Debug, PartialEq, Eq)]
enum Allocation {
    /// Allocated: the XOR-RELAYED-ADDRESS.
    Relayed(SocketAddr),
    /// Refused: the ERROR-CODE of the error response to the request with credentials (`401`:
    /// unauthorized), `None` if the client gave up without one.
    Refused(Option<u16>),
}

/// The ERROR-CODE of a STUN error response (class 0b11), if `packet` is one.
fn error_code(packet: &[u8]) -> Option<u16> {
    let kind = u16::from_be_bytes([*packet.first()?, *packet.get(1)?]);
    if kind & 0x0110 != 0x0110 {
        return None;
    }
    let mut attributes = packet.get(20..)?;
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([attributes[0], attributes[1]]);
        let len = usize::from(u16::from_be_bytes([attributes[2], attributes[3]]));
        let value = attributes.get(4..4 + len)?;
        if kind == 0x0009 && len >= 4 {
            return Some(u16::from(value[2] & 0x07) * 100 + u16::from(value[3]));
        }
        attributes = attributes.get(4 + len.div_ceil(4) * 4..)?;
    }
    None
}

/// One TURN Allocate (UDP) with these credentials, through the long-term credential mechanism:
/// the unauthenticated request is challenged (401 with REALM and NONCE), the client answers with
/// USERNAME, REALM, NONCE and MESSAGE-INTEGRITY keyed with MD5(username:realm:password).
///
/// An error response to the second request carries no valid MESSAGE-INTEGRITY (the server could
/// not key one), so the client does not take it and would wait for its retransmissions to time
/// out: the error responses are read off the wire here instead, and the second one is the
/// server's verdict on the credentials.
fn allocate(server: SocketAddr, username: &str, password: &str) -> Allocation {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let local = socket.local_addr().expect("local address");
    let mut config = TurnConfig::new(TurnCredentials::new(username, password));
    config.set_request_retransmits(
        Duration::from_millis(250),
        Duration::from_secs(1),
        3,
        Duration::from_secs(1),
    );
    let mut client = TurnClientUdp::allocate(local, server, config);
    let base = Instant::now();
    let now = || StunInstant::from_std(base);
    let mut errors = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = base + Duration::from_secs(10);
    loop {
        while let Some(transmit) = client.poll_transmit(now()) {
            socket
                .send_to(transmit.data.as_ref(), transmit.to)
                .expect("send to the TURN server");
        }
        while let Some(event) = client.poll_event() {
            match event {
                TurnEvent::AllocationCreated(_, relayed) => return Allocation::Relayed(relayed),
                TurnEvent::AllocationCreateFailed(_) => {
                    return Allocation::Refused(errors.get(1).copied());
                }
                _ => {}
            }
        }
        let wait = match client.poll(now()) {
            TurnPollRet::WaitUntil(at) => at.saturating_duration_since(now()),
            TurnPollRet::Closed => return Allocation::Refused(errors.get(1).copied()),
            other => panic!("unexpected {other:?}"),
        };
        assert!(Instant::now() < deadline, "no outcome within 10 s");
        let wait = wait.clamp(Duration::from_millis(1), Duration::from_millis(100));
        socket.set_read_timeout(Some(wait)).expect("timeout");
        if let Ok((len, from)) = socket.recv_from(&mut buf) {
            let packet = &buf[..len];
            if let Some(code) = error_code(packet) {
                errors.push(code);
                if errors.len() == 2 {
                    // The challenge, then the verdict on the credentials.
                    assert_eq!(errors[0], 401, "the first request is challenged");
                    return Allocation::Refused(Some(code));
                }
            }
            let transmit = Transmit::new(packet, TransportType::Udp, from, local);
            let _ = client.recv(transmit, now());
        }
    }
}

/// Takes the TURN entry of a reply's `iceServers`: its URL, username and credential.
fn turn_entry(reply: &Value) -> (String, String, String) {
    let servers = reply["iceServers"]
        .as_array()
        .expect("iceServers in the reply");
    let turn = servers
        .iter()
        .find(|s| s.get("credential").is_some())
        .expect("a TURN server with credentials");
    let text = |v: &Value| v.as_str().expect("a string").to_owned();
    (
        text(&turn["urls"][0]),
        text(&turn["username"]),
        text(&turn["credential"]),
    )
}

/// A login reply's TURN credentials get an allocation from coturn; altered, borrowed by another
/// name, or expired (minted by the same code with the clock in the past) they are refused with
/// 401 Unauthorized. Anonymous clients (a failed login) get none.
#[tokio::test(flavor = "multi_thread")]
async fn turn_credentials_from_the_login_reply_allocate_on_coturn() {
    let Some(coturn) = Coturn::start(SECRET) else {
        return;
    };
    let stun = format!("stun:{}", coturn.addr());
    let turn_url = format!("turn:{}", coturn.addr());
    let turn = TurnRest::new([turn_url.as_str()], SECRET)
        .expect("secret")
        .with_ttl(Duration::from_secs(600));
    let ice = IceServers::new([stun.as_str()]).with_turn(turn.clone());
    let server = common::start(quiet_config().with_ice_servers(ice)).await;

    let mut alice = Client::connect(&server.url).await;
    alice
        .send(json!({"type": "login", "username": "alice", "resumable": true}))
        .await;
    let reply = alice.recv().await;
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["iceServers"][0], json!({"urls": [stun]}), "{reply}");
    let (url, username, credential) = turn_entry(&reply);
    assert_eq!(url, turn_url);
    assert!(username.ends_with(":alice"), "{username}");
    let mut intruder = Client::connect(&server.url).await;
    intruder
        .send(json!({"type": "login", "username": "alice"}))
        .await;
    let refused = intruder.recv().await;
    assert_eq!(refused["success"], false, "{refused}");
    assert!(refused.get("iceServers").is_none(), "{refused}");

    let addr = coturn.addr();
    let outcomes = tokio::task::spawn_blocking(move || {
        let issued = allocate(addr, &username, &credential);
        let mut altered = credential.clone().into_bytes();
        altered[0] = if altered[0] == b'A' { b'B' } else { b'A' };
        let altered = allocate(
            addr,
            &username,
            &String::from_utf8(altered).expect("base64"),
        );
        let (expiry, _) = username.split_once(':').expect("expiry:name");
        let borrowed = allocate(addr, &format!("{expiry}:bob"), &credential);
        let past = SystemTime::now() - Duration::from_secs(3600);
        let expired = turn.credentials("alice", past);
        let expired = allocate(addr, &expired.username, &expired.credential);
        (issued, altered, borrowed, expired)
    })
    .await
    .expect("the TURN client");
    let (issued, altered, borrowed, expired) = outcomes;
    match issued {
        Allocation::Relayed(relayed) => assert_eq!(relayed.ip(), Ipv4Addr::LOCALHOST),
        refused => panic!("the issued credentials were refused: {refused:?}"),
    }
    assert_eq!(
        altered,
        Allocation::Refused(Some(401)),
        "altered credential"
    );
    assert_eq!(
        borrowed,
        Allocation::Refused(Some(401)),
        "another name's credential"
    );
    assert_eq!(
        expired,
        Allocation::Refused(Some(401)),
        "expired credential"
    );
}
