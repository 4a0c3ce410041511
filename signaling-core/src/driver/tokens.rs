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
#[derive(Debug, Default)]
pub struct OsTokens {
    fallback: u64,
}

impl TokenSource for OsTokens {
    fn next_token(&mut self) -> SessionToken {
        let mut bytes = [0u8; 16];
        if let Err(e) = getrandom::fill(&mut bytes) {
            tracing::warn!(error = %e, "the OS random source failed: session token from a keyed hash");
            bytes = self.fallback_bytes();
        }
        SessionToken::new(URL_SAFE_NO_PAD.encode(bytes))
    }
}

impl OsTokens {
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
}
