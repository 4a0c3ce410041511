//! TLS scenarios (issue 12): a server started by an adapter's TLS `Start` (its URL is
//! `wss://…`, its certificate registered with [`trust`]) is dropped by strangers that do not
//! speak TLS without harm to a call over `wss://`, and a stalled TLS handshake holds a
//! pending-request slot until the handshake timeout cuts it. (The shared scenarios run over
//! TLS too: [`Client::connect`] speaks rustls to a `wss://` URL.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::phases::{answer_then_hang_up, eventually};
use crate::raw::{self, Upgrade};
use crate::{Client, Start, call, patiently, quiet_config};

/// The certificates the scenarios' TLS clients trust (each TLS test server adds its own).
static TRUSTED: Mutex<Vec<CertificateDer<'static>>> = Mutex::new(Vec::new());

/// Makes the scenarios' TLS clients trust `certificate` (a TLS test server's self-signed
/// certificate, or the CA that issued it) from now on, in this test binary.
pub fn trust(certificate: CertificateDer<'static>) {
    TRUSTED.lock().expect("trust store").push(certificate);
}

/// A rustls client configuration (the *ring* provider) that trusts what was given to
/// [`trust`], and nothing else.
pub fn client_config() -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for certificate in TRUSTED.lock().expect("trust store").iter() {
        roots.add(certificate.clone()).expect("a usable root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// The first flight of a rustls client to `127.0.0.1`: one whole TLS ClientHello record.
fn client_hello() -> Vec<u8> {
    let name = ServerName::try_from("127.0.0.1").expect("an address");
    let mut connection = rustls::ClientConnection::new(client_config(), name).expect("client");
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).expect("ClientHello");
    assert_eq!(hello[0], 22, "a handshake record");
    hello
}

fn assert_tls(url: &str) {
    assert!(
        url.starts_with("wss://"),
        "a TLS scenario needs a TLS server: {url}"
    );
}

/// What a stranger on the TLS port sends.
#[derive(Debug, Clone, Copy)]
enum Stranger {
    /// A plain-HTTP WebSocket upgrade, as a `ws://` client would send it.
    PlainUpgrade,
    /// A plain `GET /`, as a browser at `http://` would send it.
    PlainGet,
    /// Bytes that are no TLS record.
    Garbage,
    /// A TLS record header announcing more than a record may hold.
    OversizedRecord,
    /// A ClientHello record whose body is garbage.
    GarbledHello,
}

impl Stranger {
    const ALL: [Stranger; 5] = [
        Stranger::PlainUpgrade,
        Stranger::PlainGet,
        Stranger::Garbage,
        Stranger::OversizedRecord,
        Stranger::GarbledHello,
    ];

    fn bytes(self, url: &str, round: u64) -> Vec<u8> {
        let mut seed = 0x2545_f491_4f6c_dd1d ^ round;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed.to_le_bytes()[0]
                })
                .collect()
        };
        match self {
            Stranger::PlainUpgrade => raw::upgrade_head(url, &[]).into_bytes(),
            Stranger::PlainGet => b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            // 0xff is no TLS content type: refused from the first byte.
            Stranger::Garbage => [vec![0xff], noise(4095)].concat(),
            Stranger::OversizedRecord => [vec![22, 3, 1, 0xff, 0xff], noise(1000)].concat(),
            Stranger::GarbledHello => {
                // A whole handshake record of 64 bytes: a ClientHello type, then noise.
                [vec![22, 3, 1, 0, 64, 1, 0, 0, 60], noise(60)].concat()
            }
        }
    }
}

/// Plain-HTTP and garbage clients on the TLS port are dropped unanswered (never an HTTP answer,
/// never a WebSocket) while a call over `wss://` streams candidates; afterwards no slot is
/// held and the call is still up.
pub async fn tls_strangers_are_dropped(start: Start) {
    let server = start(quiet_config()).await;
    assert_tls(&server.url);
    let mut alice = Client::login(&server.url, "alice").await;
    let mut bob = Client::login(&server.url, "bob").await;
    call(&mut alice, "alice", &mut bob, "bob").await;

    let url = server.url.clone();
    let strangers = async {
        for round in 0..10 {
            for stranger in Stranger::ALL {
                let said = match stranger {
                    Stranger::PlainUpgrade => {
                        let head = String::from_utf8(stranger.bytes(&url, round)).expect("text");
                        match raw::send_head(&url, &head).await {
                            Upgrade::Dropped => Vec::new(),
                            other => panic!("a plain upgrade on the TLS port got {other:?}"),
                        }
                    }
                    _ => {
                        let mut tcp = raw::tcp_connect(&url, None).await;
                        // The server may close before it all went out.
                        let _ = tcp.write_all(&stranger.bytes(&url, round)).await;
                        answer_then_hang_up(&mut tcp).await
                    }
                };
                // At most a TLS alert (content type 21), never an HTTP answer.
                assert!(
                    said.is_empty() || said[0] == 21,
                    "{stranger:?} got {:?}",
                    String::from_utf8_lossy(&said)
                );
            }
        }
    };
    let candidates = async {
        for n in 0..200 {
            alice
                .send(json!({"type": "candidate", "candidate": {"candidate": format!("candidate:{n}")}, "otherUsername": "bob"}))
                .await;
            let got = bob.recv().await;
            assert_eq!(got["candidate"]["candidate"], format!("candidate:{n}"));
        }
    };
    tokio::join!(strangers, candidates);

    eventually("no request pending", || server.hub.pending_requests() == 0).await;
    assert_eq!(server.hub.connection_count(), 2, "a stranger got in");
    alice
        .send(json!({"type": "close", "otherUsername": "bob"}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "close", "username": "alice"})
    );
    call(&mut bob, "bob", &mut alice, "alice").await;
    server.hub.shutdown().await;
}

/// A TLS handshake that stalls (a client that sends nothing, one that sends half a
/// ClientHello) holds a pending-request slot like a stalled HTTP request: with the cap at 2,
/// a third connection is closed unanswered (the handshake timeout, 120 s here, is longer than
/// any wait of the test: only the cap can have closed it), a slot comes back when a stalled
/// client leaves, and a call over `wss://` goes on throughout. Shutdown abandons the rest.
pub async fn tls_stalled_handshakes_hold_pending_slots(start: Start) {
    let config = quiet_config()
        .with_max_pending_requests(Some(2), None)
        .with_handshake_timeout(Duration::from_secs(120))
        .with_shutdown_timeout(Duration::from_secs(1));
    let server = start(config).await;
    assert_tls(&server.url);
    let mut alice = Client::login(&server.url, "alice").await;
    let mut bob = Client::login(&server.url, "bob").await;
    call(&mut alice, "alice", &mut bob, "bob").await;

    let silent = raw::tcp_connect(&server.url, None).await;
    let mut half = raw::tcp_connect(&server.url, None).await;
    let hello = client_hello();
    half.write_all(&hello[..hello.len() / 2])
        .await
        .expect("half a ClientHello");
    eventually("both stalled handshakes to hold a slot", || {
        server.hub.pending_requests() == 2
    })
    .await;
    let mut third = raw::tcp_connect(&server.url, None).await;
    let _ = third.write_all(&hello).await;
    let said = answer_then_hang_up(&mut third).await;
    assert!(said.is_empty(), "over the cap, got {said:?}");

    drop(silent);
    eventually("the silent client's slot to come back", || {
        server.hub.pending_requests() == 1
    })
    .await;
    let mut carol = Client::login(&server.url, "carol").await;
    alice
        .send(json!({"type": "candidate", "candidate": {"candidate": "still here"}, "otherUsername": "bob"}))
        .await;
    assert_eq!(bob.recv().await["candidate"]["candidate"], "still here");
    carol
        .send(json!({"type": "offer", "offer": {"sdp": "x"}, "otherUsername": "alice"}))
        .await;
    assert_eq!(carol.recv().await["code"], "busy");

    server.hub.shutdown().await;
    let said = answer_then_hang_up(&mut half).await;
    assert!(said.is_empty(), "{said:?}");
    eventually("the stalled handshake to be dropped", || {
        server.hub.pending_requests() == 0
    })
    .await;
}

/// The handshake timeout (1 s here) cuts a TLS handshake that never starts, one that stops
/// halfway through the ClientHello, and a TLS connection that never sends its HTTP request:
/// the server closes each (this asserts that it does, not how fast), and gives their slots back.
pub async fn tls_slow_handshakes_are_cut(start: Start) {
    let server = start(quiet_config().with_handshake_timeout(Duration::from_secs(1))).await;
    assert_tls(&server.url);

    let mut silent = raw::tcp_connect(&server.url, None).await;
    let mut half = raw::tcp_connect(&server.url, None).await;
    let hello = client_hello();
    half.write_all(&hello[..hello.len() / 2])
        .await
        .expect("half a ClientHello");
    let tcp = raw::tcp_connect(&server.url, None).await;
    let connector = tokio_rustls::TlsConnector::from(client_config());
    let name = ServerName::try_from("127.0.0.1").expect("an address");
    let mut no_request = patiently("the TLS handshake", connector.connect(name, tcp))
        .await
        .expect("the TLS handshake");

    assert!(answer_then_hang_up(&mut silent).await.is_empty());
    assert!(answer_then_hang_up(&mut half).await.is_empty());
    // Inside TLS: nothing, or hyper's 408 (warp), then the end.
    let said = patiently("the server to end the TLS connection", async {
        let mut said = Vec::new();
        let _ = no_request.read_to_end(&mut said).await;
        said
    })
    .await;
    assert!(
        said.is_empty() || said.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&said)
    );
    eventually("no request pending", || server.hub.pending_requests() == 0).await;
    server.hub.shutdown().await;
}
