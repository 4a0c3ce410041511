//! Authentication at the WebSocket upgrade: the pluggable [`Authenticator`] hook, and
//! [`HmacTokenAuthenticator`], signed `user:expiry:signature` tokens with a shared secret.
//!
//! Set one with [`Config::with_authenticator`](super::Config::with_authenticator). Both
//! adapters consult it (through [`Hub::admit`](super::Hub::admit)) after the origin check
//! and the connection caps and before they upgrade: a rejected client gets HTTP 401 or 403 and
//! never holds a WebSocket. An authenticator can also bind the connection to a verified
//! username; the client must then still send `login`, and only with that name (any other
//! gets the `login` failure `unauthorized`).
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use signaling_core::Username;
//! use signaling_core::driver::Config;
//! use signaling_core::driver::auth::HmacTokenAuthenticator;
//!
//! let secret = b"a long random secret shared with the app server";
//! let auth = HmacTokenAuthenticator::new(secret)?;
//! // The app server, which knows who its user is, mints a token for the page:
//! let alice = Username::new("alice").unwrap();
//! let token = auth.mint(&alice, UNIX_EPOCH + Duration::from_secs(2_000_000_000));
//! // The page connects to `wss://signal.example.com/ws?token=<encodeURIComponent(token)>`.
//! assert_eq!(auth.verify(&token, UNIX_EPOCH + Duration::from_secs(1_900_000_000)), Ok(alice));
//!
//! let config = Config::default().with_authenticator(auth);
//! # Ok::<(), signaling_core::driver::auth::WeakSecret>(())
//! ```

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::UpgradeRequest;
use crate::protocol::Username;

/// Decides, from the upgrade request, whether a client may connect and as whom.
///
/// Called once per upgrade, after the origin check and the connection caps (so a slow
/// authenticator holds a slot while it runs, which bounds how many run at once) and within
/// [`Config::handshake_timeout`](super::Config::handshake_timeout) for adapters that run the
/// handshake themselves. A panic in it ends that request only.
///
/// ```
/// use signaling_core::driver::UpgradeRequest;
/// use signaling_core::driver::auth::{AuthDecision, Authenticator};
///
/// /// Lets in only clients that present the one API key.
/// struct ApiKey(String);
///
/// #[async_trait::async_trait]
/// impl Authenticator for ApiKey {
///     async fn authenticate(&self, request: &UpgradeRequest) -> AuthDecision {
///         match request.bearer_token() {
///             None => AuthDecision::Unauthorized("no API key".into()),
///             // (Compare secrets in constant time in real code.)
///             Some(key) if key == self.0 => AuthDecision::Accept,
///             Some(_) => AuthDecision::Forbidden("wrong API key".into()),
///         }
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Looks at the request (headers, query, remote address) and decides.
    async fn authenticate(&self, request: &UpgradeRequest) -> AuthDecision;
}

impl fmt::Debug for dyn Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn Authenticator")
    }
}

/// What an [`Authenticator`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthDecision {
    /// Let the client in; it logs in with any free name.
    Accept,
    /// Let the client in, bound to this verified name: `login` succeeds only with it.
    AcceptAs(Username),
    /// Refuse with HTTP 401: no credentials, or invalid ones. The reason is sent to the client
    /// (keep it short and free of secrets).
    Unauthorized(String),
    /// Refuse with HTTP 403: the credentials are valid but do not allow this. The reason is
    /// sent to the client.
    Forbidden(String),
}

// ---------------------------------------------------------------------------------------------
// HMAC tokens
// ---------------------------------------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

/// Fewest secret bytes [`HmacTokenAuthenticator::new`] accepts. Use 32 random bytes or more
/// (e.g. `openssl rand -hex 32`).
pub const MIN_SECRET_BYTES: usize = 16;

/// The secret is shorter than [`MIN_SECRET_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared secret must be at least {MIN_SECRET_BYTES} bytes")]
pub struct WeakSecret;

/// Why a token was not accepted; its text is the 401 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The request carries no token.
    #[error("no token: pass ?token=<token> or an Authorization: Bearer header")]
    Missing,
    /// Not `user:expiry:signature` with a decimal expiry and a 64-digit hex signature.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match (forged, altered, or minted with another secret).
    #[error("invalid token signature")]
    BadSignature,
    /// The token's expiry has passed.
    #[error("token expired")]
    Expired,
    /// The signed name is not a valid username.
    #[error("token names an invalid username")]
    InvalidUsername,
}

/// Tells the time for token expiry; replaceable for tests.
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// An [`Authenticator`] for tokens `user:expiry:signature`, where `expiry` is a Unix time in
/// seconds and `signature` is the lowercase hex HMAC-SHA256 of `user:expiry` under a secret
/// shared with whatever mints the tokens (your app server, or [`mint`](Self::mint)).
///
/// The token is read from the `token` query parameter (what a browser's `WebSocket` can send),
/// else from an `Authorization: Bearer` header (native clients). A valid token binds the
/// connection to its `user` ([`AuthDecision::AcceptAs`]); a missing, malformed, forged or
/// expired one is refused with 401 and the [`TokenError`] as the reason. Signatures are
/// compared in constant time. A token is a bearer credential until it expires: keep
/// lifetimes short (minutes), as query strings end up in proxy logs.
///
/// A username may itself contain `:`; the token is split at its last two.
#[derive(Clone)]
pub struct HmacTokenAuthenticator {
    /// The keyed state, cloned for every signature (the key schedule runs once).
    mac: HmacSha256,
    clock: Clock,
}

impl fmt::Debug for HmacTokenAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacTokenAuthenticator")
            .finish_non_exhaustive()
    }
}

#[allow(clippy::disallowed_methods)] // the driver's default clock; tests inject their own
fn system_clock() -> SystemTime {
    SystemTime::now()
}

impl HmacTokenAuthenticator {
    /// An authenticator with this shared secret, on the system clock.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, WeakSecret> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(WeakSecret);
        }
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| WeakSecret)?;
        Ok(HmacTokenAuthenticator {
            mac,
            clock: Arc::new(system_clock),
        })
    }

    /// Replaces the clock that expiry is checked against (for tests).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn mac_of(&self, user: &str, expiry: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(user.as_bytes());
        mac.update(b":");
        mac.update(expiry.as_bytes());
        mac
    }

    /// A token for `username`, valid until `expires_at` (rounded down to the second).
    pub fn mint(&self, username: &Username, expires_at: SystemTime) -> String {
        let expiry = expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let tag = self
            .mac_of(username.as_str(), &expiry)
            .finalize()
            .into_bytes();
        let mut token = format!("{username}:{expiry}:");
        for byte in tag.iter() {
            let _ = write!(token, "{byte:02x}");
        }
        token
    }

    /// A token for `username`, valid for `lifetime` from now on this authenticator's clock.
    pub fn mint_valid_for(&self, username: &Username, lifetime: Duration) -> String {
        self.mint(username, (self.clock)() + lifetime)
    }

    /// Checks a token at time `now`: the username it was minted for, or why not.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Username, TokenError> {
        let mut parts = token.rsplitn(3, ':');
        let (Some(signature), Some(expiry), Some(user)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::Malformed);
        }
        let expires = expiry.parse::<u64>().map_err(|_| TokenError::Malformed)?;
        let tag = decode_hex_32(signature).ok_or(TokenError::Malformed)?;
        self.mac_of(user, expiry)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Username::new(user).map_err(|_| TokenError::InvalidUsername)
    }
}

#[async_trait::async_trait]
impl Authenticator for HmacTokenAuthenticator {
    async fn authenticate(&self, request: &UpgradeRequest) -> AuthDecision {
        let from_query = request.query_param("token");
        let Some(token) = from_query.as_deref().or_else(|| request.bearer_token()) else {
            return AuthDecision::Unauthorized(TokenError::Missing.to_string());
        };
        match self.verify(token, (self.clock)()) {
            Ok(username) => AuthDecision::AcceptAs(username),
            Err(e) => AuthDecision::Unauthorized(e.to_string()),
        }
    }
}

/// 64 hex digits (either case) to 32 bytes.
fn decode_hex_32(s: &str) -> Option<[u8; 32]> {
    let digits = s.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        let value = |d: u8| char::from(d).to_digit(16);
        *byte = u8::try_from(value(*hi)? << 4 | value(*lo)?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn auth() -> HmacTokenAuthenticator {
        HmacTokenAuthenticator::new("0123456789abcdef-test-secret").unwrap()
    }

    fn name(s: &str) -> Username {
        Username::new(s).unwrap()
    }

    #[test]
    fn minted_tokens_verify_until_they_expire() {
        let auth = auth();
        let token = auth.mint(&name("alice"), at(1000));
        assert!(token.starts_with("alice:1000:"), "{token}");
        assert_eq!(token.len(), "alice:1000:".len() + 64);
        assert_eq!(auth.verify(&token, at(999)), Ok(name("alice")));
        assert_eq!(auth.verify(&token, at(1000)), Err(TokenError::Expired));
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256(key = "0123456789abcdef-test-secret", "alice:1000"), computed with
        // `printf 'alice:1000' | openssl dgst -sha256 -hmac 0123456789abcdef-test-secret`.
        let token = auth().mint(&name("alice"), at(1000));
        assert_eq!(
            token,
            "alice:1000:c9f156e9c7a0bf436e4bdbef87a6e79d5593e04fb5cea296db6252315206217a"
        );
    }

    #[test]
    fn names_with_colons_round_trip() {
        let auth = auth();
        let token = auth.mint(&name("a:b:c"), at(50));
        assert_eq!(auth.verify(&token, at(10)), Ok(name("a:b:c")));
    }

    #[test]
    fn forged_altered_and_malformed_tokens_fail() {
        let auth = auth();
        let token = auth.mint(&name("alice"), at(1000));
        let sig = token.rsplit(':').next().unwrap();
        // Another name or a later expiry with alice's signature.
        assert_eq!(
            auth.verify(&format!("mallory:1000:{sig}"), at(1)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            auth.verify(&format!("alice:99999:{sig}"), at(1)),
            Err(TokenError::BadSignature)
        );
        // Another secret.
        let other = HmacTokenAuthenticator::new("another secret of enough bytes").unwrap();
        assert_eq!(other.verify(&token, at(1)), Err(TokenError::BadSignature));
        // Uppercase hex is the same signature.
        let upper = format!("alice:1000:{}", sig.to_uppercase());
        assert_eq!(auth.verify(&upper, at(1)), Ok(name("alice")));
        for bad in [
            "",
            "alice",
            "alice:1000",
            &format!("alice::{sig}"),
            &format!("alice:+1000:{sig}"),
            &format!("alice:-1:{sig}"),
            &format!("alice:1000:{}", &sig[..62]),
            &format!("alice:1000:{sig}00"),
            &format!("alice:1000:{}zz", &sig[..62]),
            &format!("alice:99999999999999999999999:{sig}"),
        ] {
            assert_eq!(auth.verify(bad, at(1)), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert_eq!(
            HmacTokenAuthenticator::new("short").unwrap_err(),
            WeakSecret
        );
        assert!(HmacTokenAuthenticator::new([0u8; MIN_SECRET_BYTES]).is_ok());
    }

    #[tokio::test]
    async fn reads_the_query_then_the_bearer_header_on_the_injected_clock() {
        let auth = auth().with_clock(|| at(500));
        let token = auth.mint(&name("bob"), at(600));
        let stale = auth.mint(&name("bob"), at(400));
        let query = format!("token={}", token.replace(':', "%3A"));
        let by_query = UpgradeRequest::new("/ws").with_query(Some(query));
        assert_eq!(
            auth.authenticate(&by_query).await,
            AuthDecision::AcceptAs(name("bob"))
        );
        let by_header =
            UpgradeRequest::new("/ws").with_header("Authorization", format!("Bearer {token}"));
        assert_eq!(
            auth.authenticate(&by_header).await,
            AuthDecision::AcceptAs(name("bob"))
        );
        let expired = UpgradeRequest::new("/ws").with_query(Some(format!("token={stale}")));
        assert_eq!(
            auth.authenticate(&expired).await,
            AuthDecision::Unauthorized(TokenError::Expired.to_string())
        );
        assert_eq!(
            auth.authenticate(&UpgradeRequest::new("/ws")).await,
            AuthDecision::Unauthorized(TokenError::Missing.to_string())
        );
        assert_eq!(
            auth.mint_valid_for(&name("bob"), Duration::from_secs(100)),
            token
        );
    }
}
