//! TLS for both adapters (feature `tls`, on by default): rustls server configurations from PEM
//! files or from a development certificate made at start, and the rustls crates themselves,
//! re-exported so that your versions always match ours.
//!
//! [`serve_tls`](crate::serve_tls) and `signaling_warp::serve_tls` take a [`TlsAcceptor`]; the
//! TLS handshake then runs inside [`Config::handshake_timeout`](crate::Config::handshake_timeout)
//! while the connection holds a pending-request slot, like the HTTP request after it.
//!
//! ```no_run
//! use signaling_ws::tls::{self, TlsAcceptor};
//! use signaling_ws::Hub;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // A certificate chain (leaf first) and its key, as Let's Encrypt's certbot writes them.
//! let config = tls::server_config_from_pem(
//!     "/etc/letsencrypt/live/signal.example.com/fullchain.pem",
//!     "/etc/letsencrypt/live/signal.example.com/privkey.pem",
//! )?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
//! let hub = Hub::default();
//! tokio::spawn(signaling_ws::serve_tls(listener, TlsAcceptor::from(config), hub.clone()));
//! # Ok(()) }
//! ```
//!
//! For development on a LAN, where browsers give the camera only to secure pages:
//!
//! ```no_run
//! use signaling_ws::tls::{SelfSigned, TlsAcceptor};
//!
//! # fn run() -> Result<(), signaling_ws::tls::Error> {
//! let certificate = SelfSigned::for_this_machine(["signal.lan"])?;
//! println!("certificate for {:?}", certificate.names());
//! println!("SHA-256 fingerprint {}", certificate.fingerprint());
//! let acceptor = TlsAcceptor::from(certificate.server_config()?);
//! # Ok(()) }
//! ```
//!
//! The configurations built here use the process-wide rustls
//! [`CryptoProvider`] if your application installed one, and
//! *ring*'s otherwise; they offer TLS 1.3 and 1.2, and `http/1.1` by ALPN (both adapters speak
//! HTTP/1.1 only: a WebSocket upgrade is an HTTP/1.1 request). If you build your own
//! `ServerConfig`, do not offer `h2`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

pub use tokio_rustls::{self, TlsAcceptor, rustls};

/// Why a TLS configuration could not be built. The messages name the file and say what was
/// expected in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("{} is not valid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error(
        "{}: no certificate found (expected PEM blocks `-----BEGIN CERTIFICATE-----`, the \
         server's certificate first, then the intermediates)",
        path.display()
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key this crate can read.
    #[error(
        "{}: no private key found (expected one PEM block `-----BEGIN PRIVATE KEY-----` \
         (PKCS#8), `-----BEGIN RSA PRIVATE KEY-----` (PKCS#1) or `-----BEGIN EC PRIVATE \
         KEY-----` (SEC1))",
        path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds only an encrypted private key.
    #[error(
        "{}: the private key is encrypted; decrypt it first (`openssl pkey -in {} -out \
         key.pem`) and keep the result readable by this server only",
        path.display(),
        path.display()
    )]
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the certificate and key: the key does not belong to the certificate, or
    /// its algorithm is not supported.
    #[error("the certificate and key were refused: {0}")]
    Rejected(#[source] rustls::Error),
    /// The development certificate could not be made (a name that is neither a DNS name nor an
    /// IP address, most likely).
    #[error("cannot make the development certificate: {0}")]
    Generate(String),
}

/// A server configuration for `chain` (the server's certificate first, then the intermediates
/// a client needs to reach its root) and its private `key`: no client certificates, ALPN
/// `http/1.1`, the process-wide rustls crypto provider or *ring*'s.
///
/// # Errors
///
/// [`Error::Rejected`] if the key does not match the certificate or is not supported, or if
/// `chain` is empty.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Rejected)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(Error::Rejected)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// [`server_config`] from PEM files: the certificate chain in `cert` (as certbot's
/// `fullchain.pem`: the server's certificate first, then the intermediates) and the private
/// key in `key` (PKCS#8, PKCS#1 or SEC1, unencrypted; certbot's `privkey.pem`).
///
/// # Errors
///
/// The file that could not be read or parsed and why ([`Error`]), or
/// [`Error::Rejected`] when the key does not belong to the certificate.
pub fn server_config_from_pem(
    cert: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, Error> {
    server_config(load_certificates(cert)?, load_private_key(key)?)
}

/// Every certificate in the PEM file at `path`, in file order.
///
/// # Errors
///
/// [`Error::Read`], [`Error::Pem`], or [`Error::NoCertificate`] when it holds none.
pub fn load_certificates(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, Error> {
    let path = path.as_ref();
    let text = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

/// The first private key in the PEM file at `path`: PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1
/// (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`).
///
/// # Errors
///
/// [`Error::Read`], [`Error::Pem`], [`Error::EncryptedKey`], or [`Error::NoPrivateKey`].
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, Error> {
    let path = path.as_ref();
    let text = read(path)?;
    match PrivateKeyDer::from_pem_slice(&text) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let encrypted = text
                .windows(b"ENCRYPTED PRIVATE KEY".len())
                .any(|w| w == b"ENCRYPTED PRIVATE KEY");
            let path = path.to_owned();
            Err(if encrypted {
                Error::EncryptedKey { path }
            } else {
                Error::NoPrivateKey { path }
            })
        }
        Err(source) => Err(Error::Pem {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// The process-wide provider if the application installed one, *ring*'s otherwise (never
/// `ServerConfig::builder()`, which panics when no provider or two are compiled in).
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The SHA-256 fingerprint of a DER certificate as `openssl x509 -fingerprint -sha256` and
/// browsers' certificate viewers show it: 32 uppercase hex bytes joined by `:`.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{byte:02X}"));
    }
    out
}

/// A self-signed development certificate, made at start with rcgen (ECDSA P-256, valid from a
/// day ago for a year): browsers warn once per certificate, and once the warning is accepted
/// the page is a secure context (the camera works). Every start makes a new one, with a new
/// [`fingerprint`](Self::fingerprint). Not for production: use a certificate from a CA
/// ([`server_config_from_pem`]).
pub struct SelfSigned {
    certificate: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    names: Vec<String>,
    fingerprint: String,
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("names", &self.names)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl SelfSigned {
    /// A certificate for `names`: host names and IP addresses (an entry that parses as an IP
    /// address is one), in that order, duplicates removed.
    ///
    /// # Errors
    ///
    /// [`Error::Generate`] if a name is neither a DNS name nor an IP address, or none is given.
    pub fn generate<I, N>(names: I) -> Result<SelfSigned, Error>
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        let mut unique: Vec<String> = Vec::new();
        for name in names {
            let name = name.into();
            let name = name.trim();
            if !name.is_empty() && !unique.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                unique.push(name.to_string());
            }
        }
        if unique.is_empty() {
            return Err(Error::Generate("no host name or address given".into()));
        }
        let generate = |names: Vec<String>| -> Result<_, rcgen::Error> {
            let mut params = rcgen::CertificateParams::new(names)?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(
                rcgen::DnType::CommonName,
                "signaling development certificate",
            );
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let epoch = rcgen::date_time_ymd(1970, 1, 1);
            params.not_before = epoch + now.saturating_sub(Duration::from_secs(24 * 3600));
            params.not_after = epoch + now + Duration::from_secs(365 * 24 * 3600);
            let key = rcgen::KeyPair::generate()?;
            let certificate = params.self_signed(&key)?;
            Ok((certificate.der().clone(), key.serialize_der()))
        };
        let (certificate, key) =
            generate(unique.clone()).map_err(|e| Error::Generate(e.to_string()))?;
        Ok(SelfSigned {
            fingerprint: sha256_fingerprint(&certificate),
            certificate,
            key: PrivatePkcs8KeyDer::from(key),
            names: unique,
        })
    }

    /// A certificate for `localhost`, `127.0.0.1`, `::1`, this machine's addresses
    /// ([`machine_addresses`]) and `extra` names (host names or addresses under which other
    /// computers reach this one).
    ///
    /// # Errors
    ///
    /// As [`generate`](Self::generate).
    pub fn for_this_machine<I, N>(extra: I) -> Result<SelfSigned, Error>
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        names.extend(machine_addresses().iter().map(IpAddr::to_string));
        names.extend(extra.into_iter().map(Into::into));
        SelfSigned::generate(names)
    }

    /// The certificate (DER): what a client that should trust it adds to its roots.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The names it is valid for (subject alternative names), host names and addresses.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Its SHA-256 fingerprint ([`sha256_fingerprint`]): compare it with what the browser
    /// shows before accepting the certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A [`server_config`] serving it.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] (not expected: the key is the certificate's).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        server_config(
            vec![self.certificate.clone()],
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
    }
}

/// This machine's addresses on its default routes: the local IPv4 and IPv6 address a packet to
/// the Internet would leave from (found by connecting a UDP socket, which sends nothing), when
/// there is such a route. Other interfaces are not listed: name them yourself.
pub fn machine_addresses() -> Vec<IpAddr> {
    let probes = [
        (
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 9),
        ),
        (
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
            SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(), 9),
        ),
    ];
    probes
        .into_iter()
        .filter_map(|(local, remote)| {
            let socket = UdpSocket::bind(local).ok()?;
            socket.connect(remote).ok()?;
            let ip = socket.local_addr().ok()?.ip();
            (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::{ClientConfig, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The fixtures of `tests/data/tls/` (`regenerate.sh` there made them).
    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/tls")
            .join(name)
    }

    fn roots(certificates: &[CertificateDer<'static>]) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for certificate in certificates {
            roots.add(certificate.clone()).expect("a usable root");
        }
        Arc::new(roots)
    }

    /// A TLS handshake between `server` and a client that trusts `roots` and asks for `name`,
    /// over an in-memory pipe; the certificates the client got, or the client's error.
    async fn handshake(
        server: Arc<ServerConfig>,
        roots: Arc<RootCertStore>,
        name: &str,
    ) -> std::io::Result<Vec<CertificateDer<'static>>> {
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut tls = TlsAcceptor::from(server).accept(server_io).await?;
            tls.write_all(b"hello").await?;
            tls.shutdown().await
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from(name.to_string()).expect("a server name");
        let mut tls = connector.connect(name, client_io).await?;
        let mut hello = Vec::new();
        tls.read_to_end(&mut hello).await?;
        assert_eq!(hello, b"hello");
        server.await.expect("server task")?;
        let (_, connection) = tls.get_ref();
        Ok(connection
            .peer_certificates()
            .expect("certificates")
            .to_vec())
    }

    #[test]
    fn a_chain_loads_leaf_first_in_file_order() {
        let chain = load_certificates(data("ec-chain.pem")).expect("chain");
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0], load_certificates(data("ec-cert.pem")).unwrap()[0]);
        assert_eq!(chain[1], load_certificates(data("ca.pem")).unwrap()[0]);
    }

    /// PKCS#8, SEC1 and PKCS#1 keys load as what they are and serve real handshakes, the chain
    /// reaching a client that trusts only the CA.
    #[tokio::test]
    async fn keys_in_pkcs8_sec1_and_pkcs1_serve_handshakes() {
        let ca = roots(&load_certificates(data("ca.pem")).unwrap());
        let cases = [
            ("ec-chain.pem", "ec-pkcs8.pem", "PKCS#8"),
            ("ec-chain.pem", "ec-sec1.pem", "SEC1"),
            ("rsa-cert.pem", "rsa-pkcs1.pem", "PKCS#1"),
        ];
        for (cert, key, format) in cases {
            let loaded = load_private_key(data(key)).expect(format);
            let kind = match loaded {
                PrivateKeyDer::Pkcs8(_) => "PKCS#8",
                PrivateKeyDer::Sec1(_) => "SEC1",
                PrivateKeyDer::Pkcs1(_) => "PKCS#1",
                _ => "other",
            };
            assert_eq!(kind, format, "{key}");
            let config = server_config_from_pem(data(cert), data(key)).expect(format);
            assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
            let served = handshake(config, ca.clone(), "localhost")
                .await
                .expect(format);
            // The whole chain in the file, in its order.
            assert_eq!(served, load_certificates(data(cert)).unwrap());
        }
    }

    #[test]
    fn bad_files_are_errors_that_say_what_is_wrong() {
        let message = |e: Error| e.to_string();

        let missing = data("no-such-file.pem");
        let e = load_certificates(&missing).unwrap_err();
        assert!(matches!(e, Error::Read { .. }), "{e:?}");
        assert!(message(e).contains("no-such-file.pem"));

        // A key where the certificate belongs, and the other way round.
        let e = server_config_from_pem(data("ec-pkcs8.pem"), data("ec-pkcs8.pem")).unwrap_err();
        assert!(matches!(e, Error::NoCertificate { .. }), "{e:?}");
        assert!(message(e).contains("ec-pkcs8.pem: no certificate found"));
        let e = server_config_from_pem(data("ec-chain.pem"), data("ec-chain.pem")).unwrap_err();
        assert!(matches!(e, Error::NoPrivateKey { .. }), "{e:?}");
        assert!(message(e).contains("PKCS#1"));

        let e = load_private_key(data("ec-encrypted.pem")).unwrap_err();
        assert!(matches!(e, Error::EncryptedKey { .. }), "{e:?}");
        assert!(message(e).contains("openssl pkey"));

        // A key that is not the certificate's.
        let e = server_config_from_pem(data("ec-chain.pem"), data("rsa-pkcs1.pem")).unwrap_err();
        assert!(matches!(e, Error::Rejected(_)), "{e:?}");

        // Broken PEM: a block cut short, and a block whose base64 is damaged.
        let dir = std::env::temp_dir().join(format!("signaling-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = std::fs::read_to_string(data("ec-cert.pem")).unwrap();
        let cut = dir.join("cut.pem");
        std::fs::write(&cut, &cert[..cert.len() / 2]).unwrap();
        let e = load_certificates(&cut).unwrap_err();
        assert!(matches!(e, Error::Pem { .. }), "{e:?}");
        assert!(message(e).contains("cut.pem is not valid PEM"));
        let damaged = dir.join("damaged.pem");
        std::fs::write(&damaged, cert.replacen("MII", "M!I", 1)).unwrap();
        let e = load_certificates(&damaged).unwrap_err();
        assert!(matches!(e, Error::Pem { .. }), "{e:?}");
        // Not PEM at all (a DER file, say): nothing found.
        let garbage = dir.join("garbage.der");
        std::fs::write(&garbage, [0x30, 0x82, 0x01, 0x00, 0xff, 0x00]).unwrap();
        assert!(matches!(
            load_certificates(&garbage),
            Err(Error::NoCertificate { .. })
        ));
        assert!(matches!(
            load_private_key(&garbage),
            Err(Error::NoPrivateKey { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprints_are_what_openssl_prints() {
        // `openssl x509 -in tests/data/tls/ca.pem -noout -fingerprint -sha256`
        let ca = &load_certificates(data("ca.pem")).unwrap()[0];
        assert_eq!(
            sha256_fingerprint(ca),
            "E1:68:F7:59:17:77:73:A3:9D:E2:AB:55:2E:8F:7D:DE:E8:A3:3F:D3:9A:5B:27:75:2F:F1:3E:40:2A:75:CD:84"
        );
    }

    /// Whether a client trusting `certificate` accepts it for `name` (its SANs).
    fn valid_for(certificate: &CertificateDer<'static>, name: &str) -> bool {
        let verifier = WebPkiServerVerifier::builder_with_provider(
            roots(std::slice::from_ref(certificate)),
            provider(),
        )
        .build()
        .expect("verifier");
        let name = ServerName::try_from(name.to_string()).expect("a server name");
        verifier
            .verify_server_cert(certificate, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[tokio::test]
    async fn a_self_signed_certificate_has_its_names_and_its_fingerprint() {
        let names = [
            "localhost",
            "127.0.0.1",
            "::1",
            "signal.lan",
            "192.168.1.20",
            "LOCALHOST",
            " ",
        ];
        let certificate = SelfSigned::generate(names).expect("certificate");
        assert_eq!(
            certificate.names(),
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "signal.lan",
                "192.168.1.20"
            ]
        );
        for name in certificate.names() {
            assert!(valid_for(certificate.certificate(), name), "{name}");
        }
        for name in ["example.com", "10.0.0.1", "lan", "other.signal.lan"] {
            assert!(!valid_for(certificate.certificate(), name), "{name}");
        }

        // The fingerprint is the DER's, and the DER is what clients get.
        let der = certificate.certificate().as_ref();
        let expected: String = Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(certificate.fingerprint(), expected);
        assert_eq!(certificate.fingerprint().len(), 32 * 3 - 1);
        let served = handshake(
            certificate.server_config().expect("config"),
            roots(&[certificate.certificate().clone()]),
            "192.168.1.20",
        )
        .await
        .expect("handshake");
        assert_eq!(served.len(), 1);
        assert_eq!(sha256_fingerprint(&served[0]), certificate.fingerprint());

        // Every start makes a new one.
        let again = SelfSigned::generate(["localhost"]).unwrap();
        assert_ne!(again.fingerprint(), certificate.fingerprint());
    }

    #[test]
    fn the_machine_certificate_covers_loopback_its_addresses_and_extra_names() {
        let certificate = SelfSigned::for_this_machine(["signal.test", "10.1.2.3"]).unwrap();
        let names = certificate.names();
        assert_eq!(names[..3], ["localhost", "127.0.0.1", "::1"]);
        assert!(names.ends_with(&["signal.test".to_string(), "10.1.2.3".to_string()]));
        for ip in machine_addresses() {
            assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
            assert!(names.contains(&ip.to_string()), "{ip} in {names:?}");
        }
        for name in names {
            assert!(valid_for(certificate.certificate(), name), "{name}");
        }
    }

    #[test]
    fn names_that_are_neither_host_names_nor_addresses_are_refused() {
        assert!(matches!(
            SelfSigned::generate(Vec::<String>::new()),
            Err(Error::Generate(_))
        ));
        assert!(matches!(
            SelfSigned::generate(["bücher.example"]),
            Err(Error::Generate(_))
        ));
    }
}
