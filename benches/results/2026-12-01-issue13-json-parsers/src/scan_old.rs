#![allow(dead_code)]
pub const MAX_DEPTH: usize = 64;

/// The top-level fields of a frame (each value's JSON text, as it appears in the frame), in
/// the shape of the serde path's `RawFrame`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    pub kind: Option<&'a str>,
    pub username: Option<&'a str>,
    pub other_username: Option<&'a str>,
    pub offer: Option<&'a str>,
    pub answer: Option<&'a str>,
    pub candidate: Option<&'a str>,
    pub resumable: Option<&'a str>,
    pub token: Option<&'a str>,
    pub last_seq: Option<&'a str>,
}

/// The fields of `text` if it is an object this scanner is sure of; `None` otherwise (decode
/// with serde_json then).
pub fn fields(text: &str) -> Option<Fields<'_>> {
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

