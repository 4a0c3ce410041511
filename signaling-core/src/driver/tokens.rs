//! Session tokens from the operating system's CSPRNG: what the driver hands the pure router
//! (which has no randomness of its own).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::protocol::SessionToken;
use crate::router::TokenSource;

/// 128-bit tokens from the operating system's CSPRNG (`getrandom`), as 22 characters of
/// URL-safe base64 without padding. If the OS source fails (it does not on any supported
/// platform once booted) the token falls back to the standard library's randomly keyed
/// SipHash of a counter, and a warning is logged.
///
/// In cluster mode the tokens say which node issued them: `<node id>.<22 characters>`
/// ([`with_node`](Self::with_node)). Base64url has no `.`, so the node id is what comes before
/// the last `.`.
#[derive(Debug, Default)]
pub struct OsTokens {
    fallback: u64,
    /// `<node id>.`, in cluster mode.
    prefix: String,
}

impl TokenSource for OsTokens {
    fn next_token(&mut self) -> SessionToken {
        let mut bytes = [0u8; 16];
        if let Err(e) = getrandom::fill(&mut bytes) {
            tracing::warn!(error = %e, "the OS random source failed: session token from a keyed hash");
            bytes = self.fallback_bytes();
        }
        let mut token = String::with_capacity(self.prefix.len() + 22);
        token.push_str(&self.prefix);
        URL_SAFE_NO_PAD.encode_string(bytes, &mut token);
        SessionToken::new(token)
    }
}

impl OsTokens {
    /// Tokens that name the node that issued them, `node`: `<node>.<22 characters>`, so that
    /// another node of the cluster knows whom to ask for the session ([`token_node`]).
    pub fn with_node(node: &str) -> Self {
        OsTokens {
            fallback: 0,
            prefix: format!("{node}."),
        }
    }

    fn fallback_bytes(&mut self) -> [u8; 16] {
        use std::hash::{BuildHasher, Hasher};
        let keys = std::collections::hash_map::RandomState::new();
        let mut out = [0u8; 16];
        for half in out.chunks_exact_mut(8) {
            self.fallback = self.fallback.wrapping_add(1);
            let mut h = keys.build_hasher();
            h.write_u64(self.fallback);
            half.copy_from_slice(&h.finish().to_be_bytes());
        }
        out
    }
}

/// The node that issued `token` in cluster mode (see [`OsTokens::with_node`]): what comes
/// before its last `.`; `None` for a token without one, or with nothing before it.
pub fn token_node(token: &str) -> Option<&str> {
    let (node, _) = token.rsplit_once('.')?;
    (!node.is_empty()).then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_22_url_safe_characters_and_differ() {
        let mut source = OsTokens::default();
        let tokens: Vec<SessionToken> = (0..1000).map(|_| source.next_token()).collect();
        for t in &tokens {
            assert_eq!(t.as_str().len(), 22, "{}", t.as_str());
            assert!(
                t.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
        let distinct: std::collections::HashSet<&str> =
            tokens.iter().map(SessionToken::as_str).collect();
        assert_eq!(distinct.len(), tokens.len());
        let fallback = source.fallback_bytes();
        assert_ne!(fallback, source.fallback_bytes());
    }

    #[test]
    fn cluster_tokens_name_their_node() {
        let mut source = OsTokens::with_node("node.a");
        let token = source.next_token();
        let text = token.as_str();
        assert_eq!(text.len(), "node.a.".len() + 22, "{text}");
        assert!(text.starts_with("node.a."), "{text}");
        assert_eq!(token_node(text), Some("node.a"));
        assert_eq!(token_node("Jq3o6ZrLh0vXy0m5m2d1tQ"), None);
        assert_eq!(token_node(".Jq3o6ZrLh0vXy0m5m2d1tQ"), None);
    }
}
