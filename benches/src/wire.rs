//! The tutorial's JSON messages as the load generator writes and reads them.
//!
//! Relayed `candidate` messages carry a realistic ICE candidate (about 200
//! bytes) whose candidate string ends with two extension attributes,
//! `x-seq <n> x-ts <ns>`: the sequence number within the pair and the send
//! time. They sit inside the candidate *string* (legal ICE grammar, RFC 8839
//! extension attributes) rather than in extra JSON fields so that they survive
//! a server that re-serializes the candidate object through a typed struct,
//! and so that the receiver finds them with a substring search instead of a
//! full parse.

use serde_json::Value;

/// `{"type":"login","username":NAME}`.
pub fn login(name: &str) -> String {
    format!(r#"{{"type":"login","username":"{name}"}}"#)
}

/// A login asking for a resumable session (issue 10).
pub fn login_resumable(name: &str) -> String {
    format!(r#"{{"type":"login","username":"{name}","resumable":true}}"#)
}

/// A short but realistic session description (browser-like audio offer).
const SDP: &str = r"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:sXYZ\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=ice-options:trickle\r\na=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

/// `{"type":"offer","offer":{...},"otherUsername":TO}`.
pub fn offer(to: &str) -> String {
    format!(r#"{{"type":"offer","offer":{{"type":"offer","sdp":"{SDP}"}},"otherUsername":"{to}"}}"#)
}

/// `{"type":"answer","answer":{...},"otherUsername":TO}`.
pub fn answer(to: &str) -> String {
    format!(
        r#"{{"type":"answer","answer":{{"type":"answer","sdp":"{SDP}"}},"otherUsername":"{to}"}}"#
    )
}

/// `{"type":"close","otherUsername":TO}`.
pub fn close(to: &str) -> String {
    format!(r#"{{"type":"close","otherUsername":"{to}"}}"#)
}

/// A `candidate` message to `to` carrying `seq` and the send time `ts_ns`.
pub fn candidate(to: &str, seq: u64, ts_ns: u64) -> String {
    format!(
        concat!(
            r#"{{"type":"candidate","candidate":{{"candidate":"#,
            r#""candidate:842163049 1 udp 1677729535 192.168.1.2 56143 typ srflx "#,
            r#"raddr 0.0.0.0 rport 0 generation 0 ufrag sXYZ network-cost 999 "#,
            r#"x-seq {seq} x-ts {ts}","sdpMid":"0","sdpMLineIndex":0,"#,
            r#""usernameFragment":"sXYZ"}},"otherUsername":"{to}"}}"#
        ),
        to = to,
        seq = seq,
        ts = ts_ns
    )
}

/// A `candidate` message to `to` of about `size` bytes: a realistic candidate
/// whose string is padded with an `x-pad` extension attribute, as a client
/// that floods a peer with large messages would send.
pub fn padded_candidate(to: &str, size: usize) -> String {
    let bare = format!(
        concat!(
            r#"{{"type":"candidate","candidate":{{"candidate":"#,
            r#""candidate:842163049 1 udp 1677729535 192.168.1.2 56143 typ srflx "#,
            r#"raddr 0.0.0.0 rport 0 generation 0 x-pad ","sdpMid":"0","sdpMLineIndex":0}},"#,
            r#""otherUsername":"{to}"}}"#
        ),
        to = to
    );
    let pad = size.saturating_sub(bare.len());
    let at = bare
        .find(r#"","sdpMid""#)
        .expect("the marker is in the template");
    let mut out = String::with_capacity(bare.len() + pad);
    out.push_str(&bare[..at]);
    out.extend(std::iter::repeat_n('p', pad));
    out.push_str(&bare[at..]);
    out
}

/// The sequence number and send time found in a relayed candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Position of the message in its pair's stream, from 0.
    pub seq: u64,
    /// Send time in nanoseconds since the load generator's epoch.
    pub ts_ns: u64,
}

fn number_after(text: &str, marker: &str) -> Option<u64> {
    let start = text.find(marker)? + marker.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

/// Finds the `x-seq`/`x-ts` pair in a message, whatever the server did to the
/// JSON around the candidate string (key order, `username` added or not).
pub fn probe(text: &str) -> Option<Probe> {
    Some(Probe {
        seq: number_after(text, " x-seq ")?,
        ts_ns: number_after(text, " x-ts ")?,
    })
}

/// The `type` of a server message and the whole parsed value, for the rare
/// messages that are not relayed candidates (login replies, offers, errors).
pub fn parse(text: &str) -> Option<(String, Value)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let kind = v.get("type")?.as_str()?.to_owned();
    Some((kind, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_emit_valid_json() {
        for text in [login("a"), offer("b"), answer("a"), close("b")] {
            assert!(parse(&text).is_some(), "{text}");
        }
        let c = candidate("bob", 7, 123_456_789);
        let (kind, v) = parse(&c).unwrap();
        assert_eq!(kind, "candidate");
        assert_eq!(v["otherUsername"], "bob");
        assert_eq!(v["candidate"]["sdpMLineIndex"], 0);
        let inner = serde_json::to_string(&v["candidate"]).unwrap();
        assert!((180..=260).contains(&inner.len()), "{}", inner.len());
    }

    #[test]
    fn padded_candidate_has_the_size_asked() {
        for size in [16_384, 2_000] {
            let c = padded_candidate("bob", size);
            assert_eq!(c.len(), size);
            let (kind, v) = parse(&c).unwrap();
            assert_eq!(kind, "candidate");
            assert_eq!(v["otherUsername"], "bob");
        }
        // Too small to pad: the bare candidate.
        assert!(parse(&padded_candidate("bob", 10)).is_some());
    }

    #[test]
    fn probe_survives_reserialization() {
        let c = candidate("bob", 42, 9_000_000_001);
        let v: Value = serde_json::from_str(&c).unwrap();
        // A server that rebuilds the message with other keys and order.
        let relayed = serde_json::json!({
            "username": "alice", "candidate": v["candidate"], "type": "candidate"
        })
        .to_string();
        let expected = Some(Probe {
            seq: 42,
            ts_ns: 9_000_000_001,
        });
        assert_eq!(probe(&relayed), expected);
        assert_eq!(probe(&c), expected);
        assert_eq!(probe(r#"{"type":"login","success":true}"#), None);
    }
}
