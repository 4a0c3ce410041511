//! The fast path of decoding a client message: one pass over the frame that finds the top-level
//! fields and checks that every value is valid JSON, finding the ends of strings sixteen bytes
//! at a time. The relayed payload (an SDP or an ICE candidate: a few
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
//! Nested values are skipped by one loop with the open containers as a stack of bits, not by
//! recursion; white space is one more arm of the `match` on the next byte rather than a call
//! before every token; and the top-level strings tell the decoder whether they hold escapes
//! ([`Fields::plain`]), so it need not look again. Measured (callgrind, `Decoded::decode` of
//! the load generator's ~260-byte candidate frame in a loop): 1,889 instructions, down from
//! 2,604 with the recursive scanner this replaced; 1,592 since the ends of strings are found
//! with SSE2 on x86-64 (1,857 with the portable search just before); 1,479 since the usual
//! relay frame's head (`{"type":"candidate","candidate":`) is recognised at once; 1,237 (from
//! 1,493 in the same build) since the ICE candidate a browser writes is checked against its
//! known shape ([`ice_candidate_end`]); 1,148 (with the name checked a word at a time,
//! 1,227 before) since the frame's usual end, `,"otherUsername":"bob"}`, is recognised at
//! once too; 1,116 since the head's key goes to its field without being compared with every
//! key (1,072 with the decoder's plain string fields taken inline).

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
    /// One bit per field ([`Fields::KIND`], …) whose value is a string without escapes, whose
    /// text between the quotes is then its value as it is.
    pub(crate) plain: u8,
}

impl Fields<'_> {
    /// `type`'s bit in [`Fields::plain`].
    pub(crate) const KIND: u8 = 1;
    /// `username`'s bit in [`Fields::plain`].
    pub(crate) const USERNAME: u8 = 2;
    /// `otherUsername`'s bit in [`Fields::plain`].
    pub(crate) const OTHER_USERNAME: u8 = 4;
    /// `token`'s bit in [`Fields::plain`].
    pub(crate) const TOKEN: u8 = 8;

    /// Whether `raw`, a valid JSON value, is a string without escapes (its text between the
    /// quotes is then its value).
    pub(crate) fn is_plain(raw: &str) -> bool {
        raw.len() >= 2 && raw.starts_with('"') && !raw.contains('\\')
    }

    /// Whether the field whose bit is `bit` ([`Fields::KIND`], …) holds a string without
    /// escapes.
    pub(crate) fn holds_plain(&self, bit: u8) -> bool {
        self.plain & bit != 0
    }
}

/// The fields of `text` if it is an object this scanner is sure of; `None` otherwise (decode
/// with serde_json then).
#[cfg(test)]
pub(crate) fn fields(text: &str) -> Option<Fields<'_>> {
    let mut fields = Fields::default();
    fill(text, &mut fields).map(|()| fields)
}

/// [`fields`] into `fields` (the decoder's own, which then need not be moved): `Some` if this
/// scanner is sure of `text`, and `fields` then holds its fields; `None` otherwise (`fields`
/// may then hold some of them: decode with serde_json, and replace them).
pub(crate) fn fill<'a>(text: &'a str, fields: &mut Fields<'a>) -> Option<()> {
    let bytes = text.as_bytes();
    let mut at = skip_ws(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(bytes, at + 1);
    if bytes.get(at) == Some(&b'}') {
        return (skip_ws(bytes, at + 1) == bytes.len()).then_some(());
    }
    // The usual relay frame starts `{"type":"candidate","candidate":` (a page's
    // `JSON.stringify({ type, candidate, … })`): its first member, and the second one's key,
    // recognised at once.
    let mut known = relay_head(bytes).and_then(|(key_start, key_end)| {
        // The type's value, quotes included: from the quote `HEAD_TYPE` ends with up to the
        // `,"` before the key.
        fields.kind = Some(text.get(HEAD_TYPE.len() - 1..key_start - 2)?);
        fields.plain |= Fields::KIND;
        Some((key_start, key_end))
    });
    // The frame's end after the relay head's member, where the usual frame has it:
    // `,"otherUsername":"bob"}` (checked in the loop, the first time round).
    let mut tail = known.is_some();
    loop {
        let from_head = known.is_some();
        let (key_start, key_end) = match known.take() {
            Some(key) => key,
            None => {
                if bytes.get(at) != Some(&b'"') {
                    return None;
                }
                let key_start = at + 1;
                let key_end = next_special(bytes, key_start);
                if bytes.get(key_end) != Some(&b'"') {
                    // An escape in a key (or no key at all): serde's to judge.
                    return None;
                }
                (key_start, key_end)
            }
        };
        at = key_end + 1;
        if bytes.get(at) != Some(&b':') {
            at = skip_ws(bytes, at);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
        }
        let start = skip_ws(bytes, at + 1);
        // A string (most top-level values) is scanned here, to learn whether it is plain.
        let (end, plain) = if bytes.get(start) == Some(&b'"') {
            let stop = next_special(bytes, start + 1);
            if bytes.get(stop) == Some(&b'"') {
                (stop + 1, true)
            } else {
                (string_end_escaped(bytes, stop)?, false)
            }
        } else {
            // The ICE candidate a browser sends is checked against its known shape; anything
            // else (and a candidate that is not exactly that) as any value.
            let end = match ice_candidate_end(bytes, start) {
                Some(end) => end,
                None => value_end(bytes, start)?,
            };
            (end, false)
        };
        let key = bytes.get(key_start..key_end)?;
        let slot = if from_head {
            fields.relay_slot(key)
        } else {
            fields.slot(key)
        };
        if let Some((slot, bit)) = slot {
            // A duplicate field (serde says which), or a `null`, which serde reads as absent
            // (and then still counts for duplicates): both left to serde.
            let value = text.get(start..end)?;
            if slot.is_some() || value == "null" {
                return None;
            }
            *slot = Some(value);
            if plain {
                fields.plain |= bit;
            }
        }
        at = end;
        if std::mem::take(&mut tail) {
            if let Some(name) = other_username_tail(bytes, at) {
                // What the member-by-member scan finds there: the name, quotes included, a
                // string without escapes.
                fields.other_username = Some(text.get(name)?);
                fields.plain |= Fields::OTHER_USERNAME;
                return Some(());
            }
        }
        loop {
            match bytes.get(at)? {
                b',' => break,
                b'}' => return (skip_ws(bytes, at + 1) == bytes.len()).then_some(()),
                b' ' | b'\n' | b'\r' | b'\t' => at += 1,
                _ => return None,
            }
        }
        at = skip_ws(bytes, at + 1);
    }
}

/// If the frame ends at `at` with `,"otherUsername":"NAME"}` (a name without escapes; white
/// space after the `}` only): where the name's value is, quotes included.
#[inline]
fn other_username_tail(bytes: &[u8], at: usize) -> Option<std::ops::Range<usize>> {
    let start = after(bytes, at, br#","otherUsername":"#)?;
    let stop = next_special(bytes, start + 1);
    if bytes.get(start) != Some(&b'"')
        || bytes.get(stop) != Some(&b'"')
        || bytes.get(stop + 1) != Some(&b'}')
        || skip_ws(bytes, stop + 2) != bytes.len()
    {
        return None;
    }
    Some(start..stop + 1)
}

/// `{"type":"` — how the usual frame starts.
const HEAD_TYPE: &[u8] = br#"{"type":""#;

/// If `bytes` starts `{"type":"K","K"` for a relayed kind `K` (`offer`, `answer`,
/// `candidate`; no white space): where the second key starts and ends (its quotes excluded).
#[inline]
fn relay_head(bytes: &[u8]) -> Option<(usize, usize)> {
    let rest = bytes.strip_prefix(HEAD_TYPE)?;
    let kind = match rest.first()? {
        b'c' => "candidate",
        b'o' => "offer",
        b'a' => "answer",
        _ => return None,
    };
    let rest = rest.strip_prefix(kind.as_bytes())?;
    let rest = rest.strip_prefix(br#"",""#)?;
    rest.strip_prefix(kind.as_bytes())?.strip_prefix(b"\"")?;
    let key_start = HEAD_TYPE.len() + kind.len() + r#"",""#.len();
    Some((key_start, key_start + kind.len()))
}

impl<'a> Fields<'a> {
    /// [`slot`](Self::slot) of the key [`relay_head`] found: `offer`, `answer` or
    /// `candidate`, told apart by their first letter.
    #[inline(always)]
    fn relay_slot(&mut self, key: &[u8]) -> Option<(&mut Option<&'a str>, u8)> {
        Some(match key.first()? {
            b'o' => (&mut self.offer, 0),
            b'a' => (&mut self.answer, 0),
            _ => (&mut self.candidate, 0),
        })
    }

    /// Where the value of the top-level key `key` goes, and its bit in [`Fields::plain`];
    /// `None` for a key the protocol ignores.
    #[inline]
    fn slot(&mut self, key: &[u8]) -> Option<(&mut Option<&'a str>, u8)> {
        Some(match key {
            b"type" => (&mut self.kind, Fields::KIND),
            b"username" => (&mut self.username, Fields::USERNAME),
            b"otherUsername" => (&mut self.other_username, Fields::OTHER_USERNAME),
            b"offer" => (&mut self.offer, 0),
            b"answer" => (&mut self.answer, 0),
            b"candidate" => (&mut self.candidate, 0),
            b"resumable" => (&mut self.resumable, 0),
            b"token" => (&mut self.token, Fields::TOKEN),
            b"lastSeq" => (&mut self.last_seq, 0),
            _ => return None,
        })
    }
}

#[inline(always)]
fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(at) {
        at += 1;
    }
    at
}

/// Inside a string, from `at`: the index of the first `"`, `\\` or control character, or the
/// length of the text if there is none. On x86-64, sixteen bytes at a time with SSE2 (part of
/// the architecture's baseline, so always there), through `safe_arch`'s safe wrappers of the
/// intrinsics; elsewhere with [`next_special_swar`].
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn next_special(bytes: &[u8], at: usize) -> usize {
    next_special_sse2(bytes, at)
}

/// [`next_special`] where SSE2 is not there.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn next_special(bytes: &[u8], at: usize) -> usize {
    next_special_swar(bytes, at)
}

/// The bytes of `chunk` that end a string's plain run (`"`, `\\`, U+0000 to U+001F), one bit
/// each, byte `i` at bit `i`: three byte-wise compares and one `pmovmskb`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn specials16(chunk: [u8; 16]) -> u32 {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, m128i, max_u8_m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let v = m128i::from(chunk);
    let splat = |b: u8| set_splat_i8_m128i(b as i8);
    let quote = cmp_eq_mask_i8_m128i(v, splat(b'"'));
    let backslash = cmp_eq_mask_i8_m128i(v, splat(b'\\'));
    // `max(b, 0x1f) == 0x1f` exactly when `b <= 0x1f`.
    let control = cmp_eq_mask_i8_m128i(max_u8_m128i(v, splat(0x1f)), splat(0x1f));
    move_mask_i8_m128i(quote | backslash | control) as u32
}

/// [`next_special`] with SSE2: whole chunks of sixteen, then the rest copied into a chunk
/// padded with NULs (specials themselves, so the search stops at the text's end).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn next_special_sse2(bytes: &[u8], mut at: usize) -> usize {
    let Some(mut rest) = bytes.get(at..) else {
        return at;
    };
    while let Some((chunk, after)) = rest.split_first_chunk::<16>() {
        let hits = specials16(*chunk);
        if hits != 0 {
            return at + hits.trailing_zeros() as usize;
        }
        at += 16;
        rest = after;
    }
    let mut last = [0u8; 16];
    if let Some(head) = last.get_mut(..rest.len()) {
        head.copy_from_slice(rest);
    }
    at + specials16(last).trailing_zeros() as usize
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = ONES << 7;

/// The bytes of `word` (eight bytes of text, little-endian) that end a string's plain run —
/// `"`, `\\` or a control character (U+0000 to U+001F, which JSON forbids unescaped) — have
/// their high bit set. Only the lowest flagged byte is exact (a borrow flags only bytes above
/// a hit), which is all [`next_special_swar`] reads. Every flag requires the byte's own high
/// bit clear, so the three tests share one mask.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
#[inline(always)]
fn specials(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    (word.wrapping_sub(ONES * 0x20) | quote.wrapping_sub(ONES) | backslash.wrapping_sub(ONES))
        & !word
        & HIGH
}

#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn word(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    u64::from_le_bytes(word)
}

/// [`next_special`] in portable code: sixteen bytes at a time (SWAR, two words whose tests run
/// side by side), then eight, then one. (Compiled everywhere, so that the tests hold the SSE2
/// path to it.)
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
#[inline(always)]
fn next_special_swar(bytes: &[u8], mut at: usize) -> usize {
    while let Some(chunk) = bytes.get(at..at + 16) {
        let (low, high) = chunk.split_at(8);
        let (low, high) = (specials(word(low)), specials(word(high)));
        if low | high != 0 {
            let hits = if low != 0 { low } else { high };
            let skip = if low != 0 { 0 } else { 8 };
            return at + skip + (hits.trailing_zeros() / 8) as usize;
        }
        at += 16;
    }
    if let Some(chunk) = bytes.get(at..at + 8) {
        let hits = specials(word(chunk));
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        if matches!(b, b'"' | b'\\' | 0..0x20) {
            return at;
        }
        at += 1;
    }
    at
}

/// After the opening quote at `at - 1`: the index just past the closing quote.
#[inline(always)]
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let at = next_special(bytes, at);
    match bytes.get(at) {
        Some(b'"') => Some(at + 1),
        _ => string_end_escaped(bytes, at),
    }
}

/// [`string_end`] from the first special byte that is not the closing quote: escapes (out of
/// line: the strings browsers send rarely have them).
#[cold]
#[inline(never)]
fn string_end_escaped(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        match *bytes.get(at)? {
            b'"' => return Some(at + 1),
            // An escape: the simple ones only (`\u` is left to serde_json).
            b'\\' => match bytes.get(at + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                _ => return None,
            },
            _ => return None,
        }
        at = next_special(bytes, at);
    }
}

/// At a member's key (its opening quote, or white space before it): just past the `:` that
/// ends it.
#[inline(always)]
fn after_key(bytes: &[u8], mut at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        at = skip_ws(bytes, at);
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
    }
    at = string_end(bytes, at + 1)?;
    if bytes.get(at) != Some(&b':') {
        at = skip_ws(bytes, at);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
    }
    Some(at + 1)
}

/// The end (exclusive) of the JSON value that starts at `at`, if it is one this scanner is
/// sure is valid. One loop, not a recursion: the open containers are a stack of bits (1 for an
/// object), at most [`MAX_DEPTH`] of them. White space is one more case of each `match` on
/// the next byte, which costs nothing where there is none (the usual frame).
fn value_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    const _: () = assert!(MAX_DEPTH <= u64::BITS as usize);
    let mut objects: u64 = 0;
    let mut depth = 0;
    loop {
        // At the start of a value, or white space before it (not at depth 0: the caller
        // skipped that).
        match *bytes.get(at)? {
            b'"' => at = string_end(bytes, at + 1)?,
            open @ (b'{' | b'[') => {
                if depth == MAX_DEPTH {
                    return None;
                }
                let object = open == b'{';
                at = skip_ws(bytes, at + 1);
                if bytes.get(at) == Some(if object { &b'}' } else { &b']' }) {
                    at += 1;
                } else {
                    depth += 1;
                    objects = objects << 1 | u64::from(object);
                    if object {
                        at = after_key(bytes, at)?;
                    }
                    continue;
                }
            }
            b't' => at = literal_end(bytes, at, b"true")?,
            b'f' => at = literal_end(bytes, at, b"false")?,
            b'n' => at = literal_end(bytes, at, b"null")?,
            b'-' | b'0'..=b'9' => at = number_end(bytes, at)?,
            b' ' | b'\n' | b'\r' | b'\t' if depth > 0 => {
                at += 1;
                continue;
            }
            _ => return None,
        }
        // After a value: the next element, or the end of one or more containers.
        loop {
            if depth == 0 {
                return Some(at);
            }
            let object = objects & 1 == 1;
            match *bytes.get(at)? {
                b',' => {
                    at += 1;
                    if object {
                        at = after_key(bytes, at)?;
                    }
                    break;
                }
                b'}' if object => {}
                b']' if !object => {}
                b' ' | b'\n' | b'\r' | b'\t' => {
                    at += 1;
                    continue;
                }
                _ => return None,
            }
            at += 1;
            depth -= 1;
            objects >>= 1;
        }
    }
}

/// At a value: the end (exclusive) of the ICE candidate that starts there, if it is exactly the
/// object a browser writes for one — `RTCIceCandidate.toJSON()` through `JSON.stringify`, what
/// a page of the tutorial sends —
/// `{"candidate":"…","sdpMid":"…","sdpMLineIndex":0,"usernameFragment":"…"}`, with `sdpMid`,
/// `sdpMLineIndex` and `usernameFragment` possibly `null` and `usernameFragment` possibly
/// missing, no white space — and valid. Its keys are compared where they must be instead of
/// being searched for, and the values are checked as [`value_end`] checks them, so where this
/// says `Some`, `value_end` says the same (`ice_candidates_end_where_any_value_does` holds it
/// to that). `None` says only "not exactly that": the caller scans the value as any other.
#[inline]
fn ice_candidate_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut at = after(bytes, at, br#"{"candidate":""#)?;
    at = string_end(bytes, at)?;
    at = after(bytes, at, br#","sdpMid":"#)?;
    at = string_or_null_end(bytes, at)?;
    at = after(bytes, at, br#","sdpMLineIndex":"#)?;
    at = match bytes.get(at)? {
        b'n' => literal_end(bytes, at, b"null")?,
        _ => number_end(bytes, at)?,
    };
    if let Some(value) = after(bytes, at, br#","usernameFragment":"#) {
        at = string_or_null_end(bytes, value)?;
    }
    (bytes.get(at) == Some(&b'}')).then_some(at + 1)
}

/// Just past `literal` if the text at `at` starts with it.
#[inline(always)]
fn after(bytes: &[u8], at: usize, literal: &[u8]) -> Option<usize> {
    bytes
        .get(at..)?
        .starts_with(literal)
        .then_some(at + literal.len())
}

/// The end of the string or `null` at `at`.
#[inline(always)]
fn string_or_null_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at + 1),
        b'n' => literal_end(bytes, at, b"null"),
        _ => None,
    }
}

#[inline(always)]
fn literal_end(bytes: &[u8], at: usize, literal: &[u8]) -> Option<usize> {
    let end = at + literal.len();
    (bytes.get(at..end)? == literal).then_some(end)
}

/// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
#[inline]
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

    /// ICE candidates in the shape a browser writes, with every kind of string, number and
    /// `null` in their members (and `usernameFragment` missing sometimes).
    fn ice_candidate() -> impl Strategy<Value = String> {
        let string_or_null = || prop_oneof![3 => string(), 1 => Just("null".to_string())];
        (
            string(),
            string_or_null(),
            prop_oneof![3 => number(), 1 => Just("null".to_string())],
            prop::option::of(string_or_null()),
        )
            .prop_map(|(candidate, mid, index, ufrag)| {
                let mut text =
                    format!(r#"{{"candidate":{candidate},"sdpMid":{mid},"sdpMLineIndex":{index}"#);
                if let Some(ufrag) = ufrag {
                    text.push_str(&format!(r#","usernameFragment":{ufrag}"#));
                }
                text.push('}');
                text
            })
    }

    /// Frames that start as the usual relay frame does (`{"type":"candidate","candidate":`,
    /// which `fill` recognises at once), or almost (a type or key a letter off, another
    /// kind's key, white space), then anything.
    fn relay_like() -> impl Strategy<Value = String> {
        let kinds = [
            "offer",
            "answer",
            "candidate",
            "candidat",
            "candidates",
            "login",
            "",
        ];
        let keys = ["offer", "answer", "candidate", "candidatex", "type", "offe"];
        (
            prop::sample::select(kinds.to_vec()),
            prop::sample::select(keys.to_vec()),
            ws(),
            prop_oneof![value(), ice_candidate()],
            prop::collection::vec((prop::sample::select(KEYS), ws(), value()), 0..4),
            // The usual end, `,"otherUsername":"bob"}`, or almost.
            prop::option::of((ws(), string(), ws())),
        )
            .prop_map(|(kind, key, w, v, members, tail)| {
                let mut text = format!(r#"{{"type":"{kind}","{key}"{w}:{w}{v}"#);
                for (k, w, v) in members {
                    text.push_str(&format!(",\"{k}\"{w}:{w}{v}"));
                }
                let mut end = String::new();
                if let Some((w, name, after)) = tail {
                    text.push_str(&format!(r#","otherUsername"{w}:{w}{name}"#));
                    end = after;
                }
                text.push('}');
                text.push_str(&end);
                text
            })
    }

    /// `text` with a few characters inserted, removed or replaced.
    fn mutated() -> impl Strategy<Value = String> {
        mutations_of(frame())
    }

    /// Texts of `frames` with a few characters inserted, removed or replaced.
    fn mutations_of(frames: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        let edit = (
            any::<prop::sample::Index>(),
            0..3u8,
            prop::sample::select(vec![
                '"', '\\', '{', '}', '[', ']', ',', ':', ' ', '0', '-', 'e', '.', 'n', 't',
                '\u{1}', 'é',
            ]),
        );
        (frames, prop::collection::vec(edit, 1..4)).prop_map(|(text, edits)| {
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

        /// The usual relay frame's head, recognised at once, gives what the member-by-member
        /// scan (and serde_json) gives, near misses and broken frames included.
        #[test]
        fn fast_scan_agrees_with_serde_json_on_relay_frames(text in relay_like()) {
            agree(&text)?;
        }

        /// The usual relay frame's end, `,"otherUsername":"bob"}` (taken at once), and its
        /// near misses: another value, white space, more after it.
        #[test]
        fn fast_scan_agrees_with_serde_json_on_relay_frame_ends(
            payload in prop_oneof![ice_candidate(), value()],
            colon in prop::sample::select(vec![":", " :", ": ", ""]),
            name in prop_oneof![
                4 => string(),
                1 => number(),
                1 => prop::sample::select(vec!["null", "5\"", "\"", "\"bob", "bob\"", "{}"])
                    .prop_map(String::from),
            ],
            end in prop::sample::select(vec!["}", "}", "}", "}}", "", ",\"x\":1}", "\"}", ",}"]),
            trail in prop::sample::select(vec!["", "", " ", "\n", "x", "}", "\"", "\u{1}"]),
        ) {
            let text = format!(
                r#"{{"type":"candidate","candidate":{payload},"otherUsername"{colon}{name}{end}{trail}"#
            );
            agree(&text)?;
        }

        #[test]
        fn fast_scan_agrees_with_serde_json_on_broken_relay_frames(
            text in mutations_of(relay_like())
        ) {
            agree(&text)?;
        }

        /// Where the ICE candidate's shape answers, the scan of any value answers the same:
        /// on candidates as browsers write them, and on broken and near-miss ones.
        #[test]
        fn ice_candidates_end_where_any_value_does(
            text in prop_oneof![ice_candidate(), mutations_of(ice_candidate())],
            tail in prop::sample::select(vec!["", ",", "}", " ", "x"]),
        ) {
            let text = format!("{text}{tail}");
            let bytes = text.as_bytes();
            if let Some(end) = ice_candidate_end(bytes, 0) {
                prop_assert_eq!(Some(end), value_end(bytes, 0), "{:?}", text);
            }
        }

        /// The SSE2 string search finds what the portable one finds, from every start, in
        /// texts of every length around the chunk size, with specials anywhere (and none).
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        #[test]
        fn sse2_and_portable_string_searches_agree(
            text in proptest::collection::vec(
                prop_oneof![
                    8 => 0x20u8..0x7f,
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x20,
                    1 => 0x80u8..=0xff,
                ],
                0..80,
            ),
            start in 0usize..90,
        ) {
            prop_assert_eq!(
                next_special_sse2(&text, start),
                next_special_swar(&text, start)
            );
        }
    }

    /// Containers nest up to [`MAX_DEPTH`] on the fast path (the stack of open containers is
    /// one bit each in a `u64`); one more is left to serde_json, which still accepts it.
    #[test]
    fn nesting_up_to_the_limit_takes_the_fast_path() {
        let nested = |depth: usize| {
            let open: String = (0..depth)
                .map(|i| if i % 2 == 0 { "[" } else { "{\"k\" : " })
                .collect();
            let close: String = (0..depth)
                .rev()
                .map(|i| if i % 2 == 0 { " ]" } else { "}" })
                .collect();
            format!(r#"{{"type":"answer","answer":{open}1{close},"otherUsername":"bob"}}"#)
        };
        let deepest = nested(MAX_DEPTH);
        assert!(fields(&deepest).is_some());
        assert_eq!(fields(&deepest), serde(&deepest));
        let deeper = nested(MAX_DEPTH + 1);
        assert_eq!(fields(&deeper), None);
        assert!(serde(&deeper).is_some());
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
            r#"{"type":"candidate","candidate" : "x","otherUsername":"bob"}"#,
            r#"{"type":"candidate","offer":{},"candidate":{}}"#,
            r#"{"type":"candidates","candidate":{}}"#,
            r#"{"type":"candidate","candidates":{}}"#,
        ];
        for text in frames {
            assert!(fields(text).is_some(), "{text}");
            assert_eq!(fields(text), serde(text), "{text}");
        }
        // A browser's candidate takes the shortest way (so the property above tests something).
        for candidate in [
            r#"{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"sXYZ"}"#,
            r#"{"candidate":"","sdpMid":null,"sdpMLineIndex":null,"usernameFragment":null}"#,
            r#"{"candidate":"c","sdpMid":"audio","sdpMLineIndex":1}"#,
        ] {
            let end = ice_candidate_end(candidate.as_bytes(), 0);
            assert_eq!(end, Some(candidate.len()), "{candidate}");
        }
        for text in [
            r#"{"type":"login","type":"login"}"#,
            r#"{"type":null}"#,
            r#"{"type":"x\u0041"}"#,
            r#"{"type":"candidate","candidate":01}"#,
            "{\"type\":\"a\u{1}\"}",
            r#"{"type":"offer"} x"#,
            r#"{"type":"candidate","candidate":{},"type":"offer"}"#,
            r#"{"type":"candidate","candidate":null}"#,
            r#"{"type":"candidate","candidate""#,
            r#"{"type":"candidate","candidate":"#,
        ] {
            assert_eq!(fields(text), None, "{text}");
        }
    }
}
