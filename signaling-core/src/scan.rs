//! The fast path of decoding a client message: one pass over the frame that finds the top-level
//! fields and checks that every value is valid JSON, finding the ends of strings eight bytes at
//! a time. The relayed payload (an SDP or an ICE candidate: a few
//! hundred bytes to tens of KB, mostly string content) is most of every frame, and scanning it
//! was most of the router's time per relay (callgrind: 3,900 of the 5,800 instructions a relay
//! cost over a bare forwarder went to serde_json's validation of the payload).
//!
//! It only says yes to what it is sure of: a well-formed object whose keys have no escapes and
//! whose known keys appear once (and are not `null`), strings with no `\u` escapes, nesting up
//! to [`MAX_DEPTH`]. Anything else — invalid JSON included — is `None`, and the caller decodes
//! with serde_json, which then gives the error. So where this answers, it answers as serde_json
//! would: the property tests below (`fast_scan_agrees_with_serde_json`, on generated frames
//! and on broken ones) hold it to that, and the router's fuzzing and property tests run
//! through it.
//!
//! Measured (a 5 KB offer; the load generator's ~270-byte candidate frame, `ClientMessage::decode`
//! in a loop): the candidate 390–440 ns against 455–560 ns with serde_json alone; the offer,
//! whose SDP has a `\r\n` escape every 70 bytes, the same as before (2.3–3.2 µs).

/// Deeper nesting is left to serde_json (whose own limit is 128).
pub(crate) const MAX_DEPTH: usize = 64;

/// The top-level fields of a frame (each value's JSON text, as it appears in the frame), in
/// the shape of the serde path's `RawFrame`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields<'a> {
    pub(crate) kind: Option<&'a str>,
    pub(crate) username: Option<&'a str>,
    pub(crate) other_username: Option<&'a str>,
    pub(crate) offer: Option<&'a str>,
    pub(crate) answer: Option<&'a str>,
    pub(crate) candidate: Option<&'a str>,
    pub(crate) resumable: Option<&'a str>,
    pub(crate) token: Option<&'a str>,
    pub(crate) last_seq: Option<&'a str>,
}

/// The fields of `text` if it is an object this scanner is sure of; `None` otherwise (decode
/// with serde_json then).
pub(crate) fn fields(text: &str) -> Option<Fields<'_>> {
    let bytes = text.as_bytes();
    let mut at = skip_ws(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(bytes, at + 1);
    let mut fields = Fields::default();
    if bytes.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            if bytes.get(at) != Some(&b'"') {
                return None;
            }
            let key_end = plain_key_end(bytes, at + 1)?;
            let key = text.get(at + 1..key_end)?;
            at = skip_ws(bytes, key_end + 1);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            let start = skip_ws(bytes, at + 1);
            let end = value_end(bytes, start, 0)?;
            let value = text.get(start..end)?;
            let slot = match key {
                "type" => &mut fields.kind,
                "username" => &mut fields.username,
                "otherUsername" => &mut fields.other_username,
                "offer" => &mut fields.offer,
                "answer" => &mut fields.answer,
                "candidate" => &mut fields.candidate,
                "resumable" => &mut fields.resumable,
                "token" => &mut fields.token,
                "lastSeq" => &mut fields.last_seq,
                _ => {
                    at = skip_ws(bytes, end);
                    match next_member(bytes, at)? {
                        Some(next) => {
                            at = next;
                            continue;
                        }
                        None => {
                            at += 1;
                            break;
                        }
                    }
                }
            };
            // A duplicate field (serde says which), or a `null`, which serde reads as absent
            // (and then still counts for duplicates): both left to serde.
            if slot.is_some() || value == "null" {
                return None;
            }
            *slot = Some(value);
            at = skip_ws(bytes, end);
            match next_member(bytes, at)? {
                Some(next) => at = next,
                None => {
                    at += 1;
                    break;
                }
            }
        }
    }
    (skip_ws(bytes, at) == bytes.len()).then_some(fields)
}

/// After a member, at `at`: `Some(Some(start of the next key))` after a `,`, `Some(None)` at
/// the closing `}`, `None` for anything else.
fn next_member(bytes: &[u8], at: usize) -> Option<Option<usize>> {
    match bytes.get(at)? {
        b',' => Some(Some(skip_ws(bytes, at + 1))),
        b'}' => Some(None),
        _ => None,
    }
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(at) {
        at += 1;
    }
    at
}

/// The index of the closing quote of a key that starts at `at` (after its opening quote) and
/// holds no escape and no control character.
fn plain_key_end(bytes: &[u8], at: usize) -> Option<usize> {
    let end = stop(bytes, at)?;
    (bytes.get(end) == Some(&b'"')).then_some(end)
}

/// Inside a string, from `at`: the index of the first `"` or `\\`; `None` at a control
/// character (U+0000 to U+001F, which JSON forbids unescaped) or the end of the text. Eight
/// bytes at a time (SWAR, as serde_json's own scan), in one pass for the three.
fn stop(bytes: &[u8], mut at: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES << 7;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        let q = w ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let b = w ^ (ONES * u64::from(b'\\'));
        let backslash = b.wrapping_sub(ONES) & !b;
        let hits = (control | quote | backslash) & HIGH;
        if hits != 0 {
            // The lowest flagged byte is exact (borrows only flag bytes above a hit).
            at += (hits.trailing_zeros() / 8) as usize;
            break;
        }
        at += 8;
    }
    for (i, &b) in bytes.get(at..)?.iter().enumerate() {
        match b {
            b'"' | b'\\' => return Some(at + i),
            0..0x20 => return None,
            _ => {}
        }
    }
    None
}

/// The end (exclusive) of the JSON value that starts at `at`, if it is one this scanner is
/// sure is valid.
fn value_end(bytes: &[u8], at: usize, depth: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => string_end(bytes, at + 1),
        b'{' => object_end(bytes, at + 1, depth + 1),
        b'[' => array_end(bytes, at + 1, depth + 1),
        b't' => literal_end(bytes, at, b"true"),
        b'f' => literal_end(bytes, at, b"false"),
        b'n' => literal_end(bytes, at, b"null"),
        b'-' | b'0'..=b'9' => number_end(bytes, at),
        _ => None,
    }
}

/// After the opening quote at `at - 1`: the index just past the closing quote.
fn string_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let stop = stop(bytes, at)?;
        if bytes.get(stop) == Some(&b'"') {
            return Some(stop + 1);
        }
        // An escape: the simple ones only (`\u` is left to serde_json).
        match bytes.get(stop + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at = stop + 2,
            _ => return None,
        }
    }
}

fn object_end(bytes: &[u8], at: usize, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut at = skip_ws(bytes, at);
    if bytes.get(at) == Some(&b'}') {
        return Some(at + 1);
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        at = skip_ws(bytes, string_end(bytes, at + 1)?);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        at = skip_ws(bytes, at + 1);
        at = skip_ws(bytes, value_end(bytes, at, depth)?);
        match bytes.get(at)? {
            b',' => at = skip_ws(bytes, at + 1),
            b'}' => return Some(at + 1),
            _ => return None,
        }
    }
}

fn array_end(bytes: &[u8], at: usize, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut at = skip_ws(bytes, at);
    if bytes.get(at) == Some(&b']') {
        return Some(at + 1);
    }
    loop {
        at = skip_ws(bytes, value_end(bytes, at, depth)?);
        match bytes.get(at)? {
            b',' => at = skip_ws(bytes, at + 1),
            b']' => return Some(at + 1),
            _ => return None,
        }
    }
}

fn literal_end(bytes: &[u8], at: usize, literal: &[u8]) -> Option<usize> {
    let end = at + literal.len();
    (bytes.get(at..end)? == literal).then_some(end)
}

/// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn number_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    let digits = |mut at: usize| {
        let start = at;
        while let Some(b'0'..=b'9') = bytes.get(at) {
            at += 1;
        }
        (at > start).then_some(at)
    };
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    at = match bytes.get(at)? {
        b'0' => at + 1,
        b'1'..=b'9' => digits(at)?,
        _ => return None,
    };
    if bytes.get(at) == Some(&b'.') {
        at = digits(at + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = bytes.get(at) {
            at += 1;
        }
        at = digits(at)?;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::RawFrame;

    /// What serde_json makes of `text` as a frame: its fields, or `None` for an error.
    fn serde(text: &str) -> Option<Fields<'_>> {
        serde_json::from_str::<RawFrame<'_>>(text)
            .ok()
            .map(RawFrame::fields)
    }

    /// Where the scanner answers, serde_json answers the same.
    fn agree(text: &str) -> Result<bool, TestCaseError> {
        match fields(text) {
            None => Ok(false),
            Some(fast) => {
                prop_assert_eq!(Some(fast), serde(text), "{:?}", text);
                Ok(true)
            }
        }
    }

    const KEYS: &[&str] = &[
        "type",
        "username",
        "otherUsername",
        "offer",
        "answer",
        "candidate",
        "resumable",
        "token",
        "lastSeq",
        "sdp",
        "",
        "typ\\u0065",
        "ty\\\"pe",
    ];

    fn ws() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["", "", "", " ", "\n", "\t ", "\r\n  "]).prop_map(String::from)
    }

    fn string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z0-9 :.=/+-]{0,12}",
            Just("\\r\\n".to_string()),
            Just("\\\"".to_string()),
            Just("\\\\".to_string()),
            Just("\\/\\b\\f\\t".to_string()),
            Just("\\u00e9".to_string()),
            Just("\\ud83d\\ude00".to_string()),
            Just("é日本🎉".to_string()),
            Just("\u{1}".to_string()),
            Just("\u{7f}".to_string()),
            Just("\\x".to_string()),
            Just("\\".to_string()),
        ];
        prop::collection::vec(piece, 0..6).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            prop::sample::select(vec![
                "0", "-0", "01", "1.", ".5", "1e", "1e+", "1E-7", "-", "2.50", "1.5e308",
                "-12.0e+3", "00", "1x",
            ])
            .prop_map(String::from),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            string(),
            number(),
            prop::sample::select(vec!["true", "false", "null", "tru", "nul", "falsey"])
                .prop_map(String::from),
        ];
        leaf.prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                (prop::collection::vec((ws(), inner.clone(), ws()), 0..5)).prop_map(|items| {
                    let items: Vec<String> = items
                        .into_iter()
                        .map(|(a, v, b)| format!("{a}{v}{b}"))
                        .collect();
                    format!("[{}]", items.join(","))
                }),
                prop::collection::vec((string(), ws(), inner), 0..5).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, w, v)| format!("{k}{w}:{w}{v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    fn frame() -> impl Strategy<Value = String> {
        (
            ws(),
            prop::collection::vec((prop::sample::select(KEYS), ws(), value()), 0..6),
            ws(),
        )
            .prop_map(|(lead, members, trail)| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, w, v)| format!("\"{k}\"{w}:{w}{v}"))
                    .collect();
                format!("{lead}{{{}}}{trail}", members.join(","))
            })
    }

    /// `text` with a few characters inserted, removed or replaced.
    fn mutated() -> impl Strategy<Value = String> {
        let edit = (
            any::<prop::sample::Index>(),
            0..3u8,
            prop::sample::select(vec![
                '"', '\\', '{', '}', '[', ']', ',', ':', ' ', '0', '-', 'e', '.', 'n', 't',
                '\u{1}', 'é',
            ]),
        );
        (frame(), prop::collection::vec(edit, 1..4)).prop_map(|(text, edits)| {
            let mut chars: Vec<char> = text.chars().collect();
            for (at, op, c) in edits {
                let i = at.index(chars.len() + 1);
                match op {
                    0 => chars.insert(i, c),
                    1 if i < chars.len() => {
                        chars.remove(i);
                    }
                    _ if i < chars.len() => chars[i] = c,
                    _ => chars.push(c),
                }
            }
            chars.into_iter().collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn fast_scan_agrees_with_serde_json(text in frame()) {
            agree(&text)?;
        }

        #[test]
        fn fast_scan_agrees_with_serde_json_on_broken_frames(text in mutated()) {
            agree(&text)?;
        }
    }

    /// The frames that matter take the fast path (so the properties above test something).
    #[test]
    fn everyday_frames_take_the_fast_path() {
        let frames = [
            r#"{"type":"login","username":"alice"}"#,
            r#"{"type":"login","username":"alice","resumable":true}"#,
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null},"otherUsername":"bob"}"#,
            "{\"type\":\"offer\",\"offer\":{\"type\":\"offer\",\"sdp\":\"v=0\\r\\no=- 1 2 IN IP4 127.0.0.1\\r\\n\"},\"otherUsername\":\"bob\"}",
            r#"{ "type" : "close", "otherUsername" : "bob" }"#,
            r#"{"type":"resume","token":"abc","lastSeq":12}"#,
            r#"{"type":"answer","answer":[1,2.5,-3e2,true,false,null,{},[]],"otherUsername":"bob","extra":{"a":[{"b":"c"}]}}"#,
        ];
        for text in frames {
            assert!(fields(text).is_some(), "{text}");
            assert_eq!(fields(text), serde(text), "{text}");
        }
        for text in [
            r#"{"type":"login","type":"login"}"#,
            r#"{"type":null}"#,
            r#"{"type":"x\u0041"}"#,
            r#"{"type":"candidate","candidate":01}"#,
            "{\"type\":\"a\u{1}\"}",
            r#"{"type":"offer"} x"#,
        ] {
            assert_eq!(fields(text), None, "{text}");
        }
    }
}
