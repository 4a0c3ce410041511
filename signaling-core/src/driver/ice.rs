//! ICE servers for the users the server logs in: STUN URLs, and TURN URLs with short-lived
//! credentials in the **TURN REST** scheme (draft-uberti-behave-turn-rest), which coturn checks
//! with `use-auth-secret`.
//!
//! A TURN server relays media for anyone who holds credentials to it, so it must not hand them
//! to everyone. With the REST scheme the signaling server and the TURN server share a secret
//! and nothing else: for each logged-in user the signaling server mints
//!
//! - `username` = `"<unix expiry>:<login name>"`, expiry = now + [`TurnRest::ttl`];
//! - `credential` = base64(HMAC-SHA1(secret, username)),
//!
//! and the TURN server recomputes the HMAC and checks the expiry. Only logged-in users get
//! them: the driver attaches them to successful `login` and `resume` replies
//! (`"iceServers"`, see [`IceServerList`]), never to anything an anonymous client can fetch.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use signaling_core::driver::Config;
//! use signaling_core::driver::ice::{IceServers, TurnRest};
//!
//! let turn = TurnRest::new(["turn:turn.example.org:3478"], "a long random secret shared with coturn")?
//!     .with_ttl(Duration::from_secs(3600));
//! let ice = IceServers::new(["stun:stun.example.org:3478"]).with_turn(turn);
//! let list = ice.for_user("alice", UNIX_EPOCH + Duration::from_secs(1_700_000_000)).unwrap();
//! assert!(list.get().contains(r#""username":"1700003600:alice""#));
//!
//! let config = Config::default().with_ice_servers(ice);
//! # Ok::<(), signaling_core::driver::auth::WeakSecret>(())
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha1::Sha1;

use super::auth::{MIN_SECRET_BYTES, WeakSecret};
use crate::protocol::IceServerList;

type HmacSha1 = Hmac<Sha1>;

/// The ICE servers handed to each logged-in user ([`Config::ice_servers`](super::Config::ice_servers)):
/// STUN URLs as they are, and TURN URLs with credentials minted per user.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct IceServers {
    /// STUN URLs (`stun:host:port`), handed out as one `{"urls":[…]}` entry.
    pub stun: Vec<String>,
    /// TURN URLs and the secret their credentials are minted with.
    pub turn: Option<TurnRest>,
}

impl IceServers {
    /// These STUN URLs, no TURN.
    pub fn new<S: Into<String>>(stun: impl IntoIterator<Item = S>) -> Self {
        IceServers {
            stun: stun.into_iter().map(Into::into).collect(),
            turn: None,
        }
    }

    /// Adds TURN with REST credentials.
    pub fn with_turn(mut self, turn: TurnRest) -> Self {
        self.turn = Some(turn);
        self
    }

    /// Whether there is nothing to hand out (no STUN URL, no TURN URL).
    pub fn is_empty(&self) -> bool {
        self.stun.is_empty() && self.turn.as_ref().is_none_or(|t| t.urls.is_empty())
    }

    /// The `"iceServers"` array for `username` logging in (or resuming) at `now`: the STUN URLs
    /// as one `RTCIceServer`, then the TURN URLs with `username` and `credential` valid until
    /// `now` + [`TurnRest::ttl`]. `None` when [`is_empty`](Self::is_empty).
    pub fn for_user(&self, username: &str, now: SystemTime) -> Option<IceServerList> {
        if self.is_empty() {
            return None;
        }
        let credentials = self
            .turn
            .as_ref()
            .filter(|t| !t.urls.is_empty())
            .map(|turn| (turn, turn.credentials(username, now)));
        let mut servers = Vec::with_capacity(2);
        if !self.stun.is_empty() {
            servers.push(RtcIceServer {
                urls: &self.stun,
                username: None,
                credential: None,
            });
        }
        if let Some((turn, credentials)) = &credentials {
            servers.push(RtcIceServer {
                urls: &turn.urls,
                username: Some(&credentials.username),
                credential: Some(&credentials.credential),
            });
        }
        // A list of strings always serializes, and to an array.
        let json = serde_json::to_string(&servers).ok()?;
        IceServerList::from_json(json).ok()
    }
}

/// The browser's `RTCIceServer` dictionary, fields in the order the WebRTC spec lists them.
#[derive(Serialize)]
struct RtcIceServer<'a> {
    urls: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<&'a str>,
}

/// TURN URLs whose credentials are minted with a secret shared with the TURN server (the TURN
/// REST scheme; coturn: `use-auth-secret` and `static-auth-secret=<the same secret>`).
///
/// Its `Debug` form hides the secret.
#[derive(Clone)]
pub struct TurnRest {
    /// TURN URLs (`turn:host:port`, `turn:host:port?transport=tcp`, `turns:host:443`).
    pub urls: Vec<String>,
    /// How long minted credentials stay valid. Default 1 hour. The TURN server checks the
    /// expiry when it authenticates a request, and a call whose credentials expired may lose its
    /// relay at the allocation's next refresh (servers differ): keep it longer than most calls,
    /// and short enough that a credential copied out of a page is soon worthless.
    pub ttl: Duration,
    /// Keyed with the shared secret (the key schedule runs once).
    mac: HmacSha1,
}

impl fmt::Debug for TurnRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnRest")
            .field("urls", &self.urls)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A TURN `username` and `credential` pair ([`TurnRest::credentials`]).
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// `"<unix expiry>:<login name>"`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)): the TURN password.
    pub credential: String,
}

impl fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl TurnRest {
    /// The default [`ttl`](Self::ttl): 1 hour.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

    /// These TURN URLs, with credentials minted with `secret` (the TURN server's
    /// `static-auth-secret`), valid for [`DEFAULT_TTL`](Self::DEFAULT_TTL).
    ///
    /// # Errors
    ///
    /// [`WeakSecret`] for a secret shorter than [`MIN_SECRET_BYTES`]: every logged-in user
    /// gets an HMAC of a known text under it, so a short one can be guessed offline. Use 32
    /// random bytes or more (`openssl rand -hex 32`).
    pub fn new<S: Into<String>>(
        urls: impl IntoIterator<Item = S>,
        secret: impl AsRef<[u8]>,
    ) -> Result<Self, WeakSecret> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(WeakSecret);
        }
        let mac = HmacSha1::new_from_slice(secret).map_err(|_| WeakSecret)?;
        Ok(TurnRest {
            urls: urls.into_iter().map(Into::into).collect(),
            ttl: Self::DEFAULT_TTL,
            mac,
        })
    }

    /// Sets how long minted credentials stay valid.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The credentials for `username` minted at `now`: valid until `now` + [`ttl`](Self::ttl),
    /// rounded down to the second.
    pub fn credentials(&self, username: &str, now: SystemTime) -> TurnCredentials {
        let expiry = (now + self.ttl)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let username = format!("{expiry}:{username}");
        let mut mac = self.mac.clone();
        mac.update(username.as_bytes());
        let credential = STANDARD.encode(mac.finalize().into_bytes());
        TurnCredentials {
            username,
            credential,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const SECRET: &str = "turn-rest-test-secret-0123456789";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// The expected credentials were computed outside this code, with OpenSSL and Python:
    ///
    /// ```text
    /// printf '%s' '1700003600:alice' | openssl dgst -sha1 -hmac 'turn-rest-test-secret-0123456789' -binary | base64
    /// python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(
    ///     b'turn-rest-test-secret-0123456789', '1700003600:zoë:x'.encode(), hashlib.sha1).digest()).decode())"
    /// ```
    #[test]
    fn credentials_match_an_independent_hmac() {
        let turn = TurnRest::new(["turn:127.0.0.1:3478"], SECRET).unwrap();
        assert_eq!(
            turn.credentials("alice", at(1_700_000_000)),
            TurnCredentials {
                username: "1700003600:alice".into(),
                credential: "jEh8E1T+q4ZO2JVak0ISSMKfArU=".into(),
            }
        );
        // A name is UTF-8 on the wire and may hold a `:`; the expiry is what comes before the
        // first one.
        assert_eq!(
            turn.credentials("zoë:x", at(1_700_000_000)).credential,
            "dhPIbHkmRsVMo1dhVywoOpnGZVc="
        );
    }

    #[test]
    fn expiry_is_now_plus_the_ttl_in_whole_seconds() {
        let turn = TurnRest::new(["turn:h"], SECRET).unwrap();
        assert_eq!(turn.ttl, Duration::from_secs(3600));
        let now = at(1_000) + Duration::from_millis(999);
        assert_eq!(turn.credentials("a", now).username, "4600:a");
        let turn = turn.with_ttl(Duration::from_secs(60));
        assert_eq!(turn.credentials("a", now).username, "1060:a");
        // A clock before 1970 (or a zero TTL) mints what is already expired, never a panic.
        assert_eq!(
            turn.credentials("a", UNIX_EPOCH - Duration::from_secs(600))
                .username,
            "0:a"
        );
    }

    #[test]
    fn the_list_is_an_array_of_rtc_ice_servers() {
        let turn = TurnRest::new(
            ["turn:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=tcp"],
            SECRET,
        )
        .unwrap();
        let ice = IceServers::new(["stun:127.0.0.1:3478"]).with_turn(turn.clone());
        let list = ice.for_user("alice", at(1_700_000_000)).unwrap();
        let value: Value = serde_json::from_str(list.get()).unwrap();
        assert_eq!(
            value,
            json!([
                { "urls": ["stun:127.0.0.1:3478"] },
                {
                    "urls": ["turn:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=tcp"],
                    "username": "1700003600:alice",
                    "credential": "jEh8E1T+q4ZO2JVak0ISSMKfArU=",
                },
            ])
        );
        // A name that needs escaping stays one JSON string.
        let list = ice.for_user("a\"b\\c", at(0)).unwrap();
        let value: Value = serde_json::from_str(list.get()).unwrap();
        assert_eq!(value[1]["username"], "3600:a\"b\\c");
        // STUN alone, TURN alone, nothing.
        let stun = IceServers::new(["stun:h:3478"])
            .for_user("a", at(0))
            .unwrap();
        assert_eq!(stun.get(), r#"[{"urls":["stun:h:3478"]}]"#);
        let turn_only = IceServers::default()
            .with_turn(turn)
            .for_user("a", at(0))
            .unwrap();
        assert!(
            turn_only.get().starts_with(r#"[{"urls":["turn:"#),
            "{}",
            turn_only.get()
        );
        assert!(IceServers::default().for_user("a", at(0)).is_none());
        let no_urls =
            IceServers::default().with_turn(TurnRest::new(Vec::<String>::new(), SECRET).unwrap());
        assert!(no_urls.is_empty());
    }

    #[test]
    fn the_secret_stays_out_of_debug_and_short_ones_are_refused() {
        let turn = TurnRest::new(["turn:h"], SECRET).unwrap();
        let ice = IceServers::default().with_turn(turn.clone());
        let shown = format!("{ice:?} {turn:?} {:?}", turn.credentials("a", at(0)));
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(
            !shown.contains(&turn.credentials("a", at(0)).credential),
            "{shown}"
        );
        assert!(TurnRest::new(["turn:h"], "short").is_err());
    }
}
