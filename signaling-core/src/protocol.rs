//! The wire protocol: the JSON messages of the WebRTC tutorial, plus additive fields.
//!
//! Every message is one WebSocket text frame holding one JSON object tagged by `"type"`.
//! [`ClientMessage`] is what a browser sends, [`ServerMessage`] what the server sends back.
//! SDP offers/answers and ICE candidates are opaque to the server: they are carried as
//! [`Payload`]s, the exact JSON text the sender wrote, and relayed byte-for-byte.
//!
//! The full description, with an example of every message and every error code, is in
//! `docs/protocol.md` at the root of the repository.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::error::ErrorCode;
use crate::scan::{self, Fields};

/// Longest username accepted, in Unicode scalar values of its NFC form.
pub const MAX_USERNAME_CHARS: usize = 64;

/// Longest string looked at before normalization: NFC composes at most 4 scalar values into one
/// (the longest canonical decomposition), so a longer input cannot be a valid name. Bounds the
/// work spent on a hostile name before it is refused.
const MAX_RAW_USERNAME_CHARS: usize = 4 * MAX_USERNAME_CHARS;

/// A validated username in Unicode Normalization Form C: 1 to [`MAX_USERNAME_CHARS`] characters
/// (counted after normalization), no control, format (invisible: zero-width, bidi, tag),
/// private-use or unassigned characters, and no white space at either end.
///
/// [`Username::new`] normalizes to NFC, so the NFD spelling `"zoe\u{308}"` and the NFC spelling
/// `"zoë"` are the same `Username`. Case is significant (`"Alice"` and `"alice"` are two
/// names). Names that merely *look* alike (Unicode TR39 confusables, see
/// [`Username::skeleton`]) are different `Username`s; the router refuses a login whose skeleton
/// is already in use.
///
/// Cheap to clone (reference counted). Names such as `__proto__` or `constructor` are
/// ordinary names here.
#[derive(Clone, PartialOrd, Ord)]
pub struct Username(Arc<str>);

/// Equal names are equal strings. The router's copies of one user's name share one allocation
/// (the key of its session, its connection's, its partner's call), so most comparisons —
/// and the maps' key comparisons on every relay — end at the pointer, before the bytes.
impl PartialEq for Username {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for Username {}

/// As the string's own hash, which `Borrow<str>` lookups rely on.
impl std::hash::Hash for Username {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Whether every byte of `bytes` is printable ASCII (`' '..='~'`), eight bytes at a time: the
/// first check of every relay's addressee and every login's name.
fn all_printable_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES << 7;
    // A byte below 0x20 sets its high bit in the first term, one above 0x7e in the second or
    // the third. A borrow or a carry between bytes comes only from such a byte, so whether any
    // high bit is set is exact (which byte is not, and is not needed).
    let outside = |w: u64| (w.wrapping_sub(ONES * 0x20) & !w | w.wrapping_add(ONES) | w) & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    let mut found = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        found |= outside(u64::from_le_bytes(word));
    }
    // The rest, padded with a printable byte.
    let mut last = [b'a'; 8];
    let rest = chunks.remainder();
    if let Some(head) = last.get_mut(..rest.len()) {
        head.copy_from_slice(rest);
    }
    found |= outside(u64::from_le_bytes(last));
    found == 0
}

/// Why a string is not a valid [`Username`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsernameError {
    /// The name is the empty string.
    #[error("username must not be empty")]
    Empty,
    /// The name is longer than [`MAX_USERNAME_CHARS`] once normalized to NFC.
    #[error("username must be at most {MAX_USERNAME_CHARS} characters (counted in NFC)")]
    TooLong,
    /// The name holds a control character (U+0000–U+001F, U+007F–U+009F).
    #[error("username must not contain control characters")]
    ControlCharacter,
    /// The name holds an invisible format character (general category Cf): zero-width
    /// joiners and spaces, bidirectional controls such as U+202E, tag characters, U+FEFF.
    #[error(
        "username must not contain invisible or formatting characters (found U+{:04X}: zero-width, bidi control or tag)",
        u32::from(*.0)
    )]
    FormatCharacter(char),
    /// The name holds a private-use character (general category Co), which has no agreed
    /// glyph.
    #[error("username must not contain private-use characters (found U+{:04X})", u32::from(*.0))]
    PrivateUse(char),
    /// The name holds a code point that Unicode has not assigned (general category Cn,
    /// including noncharacters such as U+FFFF).
    #[error("username must not contain unassigned code points (found U+{:04X})", u32::from(*.0))]
    Unassigned(char),
    /// The name starts with white space ([`char::is_whitespace`], which includes U+00A0).
    #[error("username must not start with white space")]
    LeadingWhitespace,
    /// The name ends with white space ([`char::is_whitespace`], which includes U+00A0).
    #[error("username must not end with white space")]
    TrailingWhitespace,
}

impl Username {
    /// Validates `name` and wraps its NFC form.
    pub fn new(name: &str) -> Result<Self, UsernameError> {
        normalized(name).map(|nfc| Username(Arc::from(nfc.as_ref())))
    }

    /// Checks the rules without allocating (the length is that of the NFC form).
    pub fn validate(name: &str) -> Result<(), UsernameError> {
        if name.is_empty() {
            return Err(UsernameError::Empty);
        }
        let bytes = name.as_bytes();
        if all_printable_ascii(bytes) {
            // The usual name, printable ASCII, in one pass: only the length and the spaces at
            // either end are left to check (in the order of the ASCII path below).
            return if bytes.len() > MAX_USERNAME_CHARS {
                Err(UsernameError::TooLong)
            } else if bytes.first() == Some(&b' ') {
                Err(UsernameError::LeadingWhitespace)
            } else if bytes.last() == Some(&b' ') {
                Err(UsernameError::TrailingWhitespace)
            } else {
                Ok(())
            };
        }
        Self::validate_other(name)
    }

    /// [`validate`](Self::validate) of a name that is not all printable ASCII (out of line:
    /// the name of every relay is checked, and nearly all are).
    #[cold]
    #[inline(never)]
    fn validate_other(name: &str) -> Result<(), UsernameError> {
        let bytes = name.as_bytes();
        if name.is_ascii() {
            // Fast path: no category lookups, and NFC of ASCII is itself.
            if bytes.len() > MAX_USERNAME_CHARS {
                return Err(UsernameError::TooLong);
            }
            if bytes.iter().any(u8::is_ascii_control) {
                return Err(UsernameError::ControlCharacter);
            }
            // Only the space is left of ASCII white space once controls are refused.
            if bytes.first() == Some(&b' ') {
                return Err(UsernameError::LeadingWhitespace);
            }
            if bytes.last() == Some(&b' ') {
                return Err(UsernameError::TrailingWhitespace);
            }
            return Ok(());
        }
        if name.chars().nth(MAX_RAW_USERNAME_CHARS).is_some() {
            return Err(UsernameError::TooLong);
        }
        for c in name.chars() {
            if c.is_ascii() {
                if c.is_ascii_control() {
                    return Err(UsernameError::ControlCharacter);
                }
                continue;
            }
            match c.general_category() {
                GeneralCategory::Control => return Err(UsernameError::ControlCharacter),
                GeneralCategory::Format => return Err(UsernameError::FormatCharacter(c)),
                GeneralCategory::PrivateUse => return Err(UsernameError::PrivateUse(c)),
                GeneralCategory::Unassigned => return Err(UsernameError::Unassigned(c)),
                _ => {}
            }
        }
        // Canonical decomposition maps white space to white space (U+2000 to U+2002, …), so the
        // ends of the raw string stand for the ends of its NFC form.
        if name.chars().next().is_some_and(char::is_whitespace) {
            return Err(UsernameError::LeadingWhitespace);
        }
        if name.chars().next_back().is_some_and(char::is_whitespace) {
            return Err(UsernameError::TrailingWhitespace);
        }
        if name.chars().nfc().nth(MAX_USERNAME_CHARS).is_some() {
            return Err(UsernameError::TooLong);
        }
        Ok(())
    }

    /// The least value in the order of names (no valid name is empty): a lower bound for
    /// range queries.
    pub(crate) fn min() -> Self {
        Username(Arc::from(""))
    }

    /// The name as a string slice (in NFC).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, so that a map keyed by the skeleton can share it when the two are
    /// equal.
    pub(crate) fn shared(&self) -> &Arc<str> {
        &self.0
    }

    /// The name's confusable skeleton (Unicode TR39 §4, `skeleton(X)`): two names with equal
    /// skeletons look alike (`"alice"` and `"аlice"` with a Cyrillic `а`, `"rn"` and `"m"`,
    /// `"l"` and `"I"`), and the router lets only one of them be logged in at a time. Computed
    /// on each call; the router computes it once per login.
    pub fn skeleton(&self) -> String {
        unicode_security::confusable_detection::skeleton(&self.0).collect()
    }
}

/// The skeletons of the 128 ASCII characters, taken from `unicode-security` once per router:
/// the skeleton of an ASCII name is then the concatenation of its characters' (ASCII has no
/// normalization and no default-ignorables), which is several times faster than the general
/// algorithm. A character whose skeleton is not ASCII (a few punctuation marks, e.g. `` ` ``)
/// has no entry, and a name holding one takes the general path.
#[derive(Debug)]
pub(crate) struct AsciiSkeletons(Vec<Option<Box<str>>>);

impl AsciiSkeletons {
    pub(crate) fn new() -> Self {
        AsciiSkeletons(
            (0u8..128)
                .map(|b| {
                    let c = char::from(b).to_string();
                    let skeleton: String =
                        unicode_security::confusable_detection::skeleton(&c).collect();
                    skeleton.is_ascii().then(|| skeleton.into_boxed_str())
                })
                .collect(),
        )
    }

    /// Writes `name`'s skeleton ([`Username::skeleton`]) into `out`, replacing its contents.
    pub(crate) fn skeleton_into(&self, name: &str, out: &mut String) {
        out.clear();
        if name.is_ascii() {
            let mut complete = true;
            for b in name.bytes() {
                match self.0.get(usize::from(b)).and_then(Option::as_deref) {
                    Some(s) => out.push_str(s),
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                return;
            }
            out.clear();
        }
        out.extend(unicode_security::confusable_detection::skeleton(name));
    }
}

/// Validates `name` and returns its NFC form, borrowed when `name` already is NFC (always for
/// ASCII).
pub(crate) fn normalized(name: &str) -> Result<Cow<'_, str>, UsernameError> {
    Username::validate(name)?;
    Ok(nfc(name))
}

/// The NFC form of `name`, borrowed when it already is NFC (always for ASCII).
pub(crate) fn nfc(name: &str) -> Cow<'_, str> {
    if name.is_ascii() || is_nfc_quick(name.chars()) == IsNormalized::Yes {
        Cow::Borrowed(name)
    } else {
        let composed: String = name.chars().nfc().collect();
        if composed == name {
            Cow::Borrowed(name)
        } else {
            Cow::Owned(composed)
        }
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Username {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Username {
    type Error = UsernameError;
    fn try_from(name: &str) -> Result<Self, Self::Error> {
        Username::new(name)
    }
}

/// An opaque JSON value (an SDP description or an ICE candidate), kept as the exact text the
/// sender wrote so that it is relayed byte-for-byte.
///
/// Two payloads are equal when their texts are identical byte for byte. Cheap to clone
/// (reference counted): a resumable session keeps what it relays without copying it. (The
/// router builds the frame of a relay to a session that keeps nothing around its payload;
/// the first clone of such a payload copies it out, and clones of that clone share it.)
pub struct Payload(Repr);

/// Where a payload's text lives.
enum Repr {
    /// Its own shared copy.
    Shared(Arc<str>),
    /// Inside the one frame that relays it (the router's relay to a session that keeps
    /// nothing for a resume): `frame[start..end]`. The frame is handed to the transport as
    /// it is ([`Transmit::into_frame`](crate::router::Transmit::into_frame)), so a relay
    /// copies its payload once.
    Framed {
        frame: Box<str>,
        /// The relay's kind.
        kind: RelayKind,
        /// The sender's name is in the frame as it is, between quotes (nothing escaped).
        plain_name: bool,
        start: u32,
        end: u32,
    },
}

impl Clone for Payload {
    /// A framed payload's clone is a shared copy of the payload alone.
    fn clone(&self) -> Self {
        match &self.0 {
            Repr::Shared(text) => Payload(Repr::Shared(Arc::clone(text))),
            Repr::Framed { .. } => Payload(Repr::Shared(Arc::from(self.get()))),
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Payload {}

impl Payload {
    /// Copies a raw JSON value.
    pub fn from_raw(raw: &RawValue) -> Self {
        Payload(Repr::Shared(Arc::from(raw.get())))
    }

    /// Parses `json` as one JSON value and keeps its text unchanged.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        let raw = RawValue::from_string(json.to_owned())?;
        Ok(Payload::from_raw(&raw))
    }

    /// The JSON text exactly as received.
    pub fn get(&self) -> &str {
        match &self.0 {
            Repr::Shared(text) => text,
            // `start..end` is where `relay_frame` put the payload, on character boundaries.
            Repr::Framed {
                frame, start, end, ..
            } => frame
                .get(*start as usize..*end as usize)
                .unwrap_or_default(),
        }
    }

    /// The relay frame `{"type":kind,kind:payload,"username":from}` around the payload
    /// `raw`, built once: the payload lives in it.
    pub(crate) fn relay_frame(kind: RelayKind, raw: &str, from: &Username) -> Self {
        let Ok(payload_len) = u32::try_from(raw.len()) else {
            return Payload(Repr::Shared(Arc::from(raw)));
        };
        let from_len = json_str_len(from.as_str());
        let mut out = String::with_capacity(relay_frame_len(kind, raw.len(), from_len, None));
        let start = push_relay_head(&mut out, kind);
        out.push_str(raw);
        push_relay_from(&mut out, from, from_len);
        out.push('}');
        // The head is a few dozen bytes: `start` fits as the payload's length does.
        let start = start as u32;
        Payload(Repr::Framed {
            frame: out.into_boxed_str(),
            kind,
            plain_name: from_len == from.as_str().len() + 2,
            start,
            end: start + payload_len,
        })
    }

    /// The frame this payload was built in, if it is exactly what
    /// [`ServerMessage::to_json`] makes of a relay of `kind` from `from`.
    pub(crate) fn into_frame_for(
        self,
        kind: RelayKind,
        from: &Username,
    ) -> Result<String, Payload> {
        let Repr::Framed {
            frame,
            kind: framed,
            plain_name: true,
            end,
            ..
        } = &self.0
        else {
            // Not framed, or the name had to be escaped in the frame: `to_json` is the judge.
            return Err(self);
        };
        // The frame is the head of a relay of `framed`, the payload up to `end`,
        // `,"username":`, the sender's name between quotes as it is, and `}`: what
        // `to_json` makes of this message if the kind and the name are the same.
        let name = from.as_str();
        let tail = r#","username":""#.len();
        let matches = *framed == kind
            && frame.len() == *end as usize + tail + name.len() + r#""}"#.len()
            && frame.as_bytes().get(*end as usize + tail..frame.len() - 2) == Some(name.as_bytes());
        match self.0 {
            Repr::Framed { frame, .. } if matches => Ok(frame.into_string()),
            repr => Err(Payload(repr)),
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

/// The secret that lets a client resume its session on a new connection
/// (`{"type":"resume","token":…}`): URL-safe text, made by the driver's token source (the pure
/// router has no randomness of its own) and replaced by a new one at every resume.
///
/// Its `Debug` form hides the secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionToken(Arc<str>);

impl SessionToken {
    /// The longest token a client may send (longer ones are refused when decoded).
    pub const MAX_LEN: usize = 128;

    /// Wraps token text (from a token source, or read from a client).
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        SessionToken(token.into())
    }

    /// The token text, as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionToken({} chars)", self.0.len())
    }
}

/// The `"iceServers"` of a successful `login` or `resume` reply: a JSON array of the browser's
/// `RTCIceServer` dictionaries (`{"urls":[…],"username":…,"credential":…}`), ready for
/// `new RTCPeerConnection({iceServers})`.
///
/// The pure router never makes one (minting TURN credentials takes a clock and a secret): it
/// leaves the field `None`, and the driver fills it in for the users it logs in when
/// `driver::Config::ice_servers` is set. Its `Debug` form hides the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct IceServerList(Arc<str>);

impl IceServerList {
    /// Wraps the JSON text of an array (of `RTCIceServer` dictionaries), kept unchanged.
    ///
    /// # Errors
    ///
    /// The text is not one JSON array.
    pub fn from_json(json: impl Into<String>) -> Result<Self, serde_json::Error> {
        let json = json.into();
        serde_json::from_str::<Vec<serde::de::IgnoredAny>>(&json)?;
        Ok(IceServerList(Arc::from(json)))
    }

    /// The JSON text, as sent on the wire.
    pub fn get(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IceServerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IceServerList({} bytes)", self.0.len())
    }
}

impl std::borrow::Borrow<str> for SessionToken {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The kinds of relayed message: the three that carry a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RelayKind {
    /// An SDP offer (`"type":"offer"`, payload field `offer`): opens a call or renegotiates it.
    Offer,
    /// An SDP answer (`"type":"answer"`, payload field `answer`).
    Answer,
    /// An ICE candidate (`"type":"candidate"`, payload field `candidate`).
    Candidate,
}

impl RelayKind {
    /// The `"type"` tag, which is also the name of the payload field.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayKind::Offer => "offer",
            RelayKind::Answer => "answer",
            RelayKind::Candidate => "candidate",
        }
    }
}

/// A message a client sends, decoded and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientMessage {
    /// `{"type":"login","username":…,"resumable"?:true}`: claim a name for this connection.
    Login {
        /// The name asked for.
        username: Username,
        /// Asks for a resumable session: the reply carries a token, every later message a
        /// `seq`, and an abnormal drop suspends the session for the grace period instead of
        /// ending it.
        resumable: bool,
    },
    /// `{"type":"resume","token":…,"lastSeq":n}`: as the first message of a new connection,
    /// takes over the session the token belongs to and asks for every message after `n`.
    Resume {
        /// The token from the login reply or the last resume reply.
        token: SessionToken,
        /// The highest `seq` the client's application received (0 for none).
        last_seq: u64,
    },
    /// `{"type":"offer"|"answer"|"candidate", <kind>: …, "otherUsername": …}`.
    Relay {
        /// Which of the three.
        kind: RelayKind,
        /// The SDP or candidate, opaque.
        payload: Payload,
        /// The addressee. `None` when the client left `otherUsername` out: the router then
        /// uses the current call partner.
        to: Option<Username>,
    },
    /// `{"type":"close","otherUsername"?:…}`: hang up (or, before answering, decline).
    HangUp {
        /// The partner named by the client, if it named one.
        to: Option<Username>,
    },
}

/// Why a frame could not be decoded into a [`ClientMessage`]; becomes an `error` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct DecodeError {
    /// The stable machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation naming the offending field.
    pub message: String,
    /// What kind of reply the error earns: a failed `login` for a login frame (what a
    /// tutorial page waits for), a failed `resume` for a resume frame, else an `error`.
    pub reply_type: ReplyType,
}

/// The message type a refusal is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyType {
    /// `{"type":"error",…}`.
    Error,
    /// `{"type":"login","success":false,…}`.
    Login,
    /// `{"type":"resume","success":false,…}`.
    Resume,
}

impl DecodeError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError {
            code,
            message: message.into(),
            reply_type: ReplyType::Error,
        }
    }

    fn replied_as(self, reply_type: ReplyType) -> Self {
        DecodeError { reply_type, ..self }
    }

    /// The reply this error earns.
    pub fn reply(self) -> ServerMessage {
        match self.reply_type {
            ReplyType::Login => ServerMessage::Login {
                success: false,
                error: Some((self.code, self.message)),
                ice_servers: None,
            },
            ReplyType::Resume => ServerMessage::ResumeFailed {
                code: self.code,
                message: self.message,
            },
            ReplyType::Error => ServerMessage::Error {
                code: self.code,
                message: self.message,
            },
        }
    }
}

/// Every field any client message may carry; unknown fields are ignored (additive protocol).
#[derive(Deserialize)]
pub(crate) struct RawFrame<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    username: Option<&'a RawValue>,
    #[serde(rename = "otherUsername", borrow, default)]
    other_username: Option<&'a RawValue>,
    #[serde(borrow, default)]
    offer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    answer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    candidate: Option<&'a RawValue>,
    #[serde(borrow, default)]
    resumable: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
    #[serde(rename = "lastSeq", borrow, default)]
    last_seq: Option<&'a RawValue>,
}

impl<'a> RawFrame<'a> {
    /// The fields as the fast scanner gives them.
    pub(crate) fn fields(self) -> Fields<'a> {
        let get = |raw: Option<&'a RawValue>| raw.map(RawValue::get);
        let plain = |raw: Option<&'a RawValue>, bit: u8| match raw {
            Some(raw) if Fields::is_plain(raw.get()) => bit,
            _ => 0,
        };
        Fields {
            plain: plain(self.kind, Fields::KIND)
                | plain(self.username, Fields::USERNAME)
                | plain(self.other_username, Fields::OTHER_USERNAME)
                | plain(self.token, Fields::TOKEN),
            kind: get(self.kind),
            username: get(self.username),
            other_username: get(self.other_username),
            offer: get(self.offer),
            answer: get(self.answer),
            candidate: get(self.candidate),
            resumable: get(self.resumable),
            token: get(self.token),
            last_seq: get(self.last_seq),
        }
    }
}

/// Decodes a JSON value expected to be a string, naming `field` in the error. Borrows from the
/// frame unless the string holds escapes. `plain`: the decoder saw a string without escapes
/// ([`Fields::plain`]).
#[inline]
fn string_field<'a>(field: &str, raw: &'a str, plain: bool) -> Result<Cow<'a, str>, DecodeError> {
    if plain {
        // Valid JSON (both decoders checked it) without escapes: the text between the quotes.
        if let Some(inner) = raw.get(1..raw.len().saturating_sub(1)) {
            return Ok(Cow::Borrowed(inner));
        }
    }
    string_field_decoded(field, raw)
}

/// [`string_field`] of a string with escapes, or of what is not a string.
#[inline(never)]
fn string_field_decoded<'a>(field: &str, raw: &'a str) -> Result<Cow<'a, str>, DecodeError> {
    if let Ok(s) = serde_json::from_str::<&'a str>(raw) {
        return Ok(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(raw)
        .map(Cow::Owned)
        .map_err(|_| {
            DecodeError::new(
                ErrorCode::InvalidField,
                format!("field `{field}` must be a string"),
            )
        })
}

/// A string field that must also be a valid username.
#[inline]
fn name_field<'a>(field: &str, raw: &'a str, plain: bool) -> Result<Cow<'a, str>, DecodeError> {
    let name = string_field(field, raw, plain)?;
    Username::validate(&name).map_err(|e| {
        DecodeError::new(ErrorCode::InvalidUsername, format!("field `{field}`: {e}"))
    })?;
    Ok(name)
}

/// Decodes the optional `otherUsername`. A present but malformed name is an error.
fn target_field<'a>(frame: &Fields<'a>) -> Result<Option<Cow<'a, str>>, DecodeError> {
    match frame.other_username {
        None => Ok(None),
        Some("null") => Ok(None),
        Some(raw) => name_field(
            "otherUsername",
            raw,
            frame.holds_plain(Fields::OTHER_USERNAME),
        )
        .map(Some),
    }
}

/// Decodes the optional `resumable` flag: `true`, `false` or `null`.
fn resumable_field(raw: Option<&str>) -> Result<bool, DecodeError> {
    match raw {
        None | Some("null") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(DecodeError::new(
            ErrorCode::InvalidField,
            "field `resumable` must be true or false",
        )),
    }
}

/// Decodes `resume`'s fields.
fn resume_fields<'a>(frame: &Fields<'a>) -> Result<(Cow<'a, str>, u64), DecodeError> {
    let token = frame
        .token
        .ok_or_else(|| DecodeError::new(ErrorCode::MissingField, "missing field `token`"))?;
    let token = string_field("token", token, frame.holds_plain(Fields::TOKEN))?;
    if token.len() > SessionToken::MAX_LEN {
        return Err(DecodeError::new(
            ErrorCode::InvalidField,
            format!(
                "field `token` is longer than {} bytes",
                SessionToken::MAX_LEN
            ),
        ));
    }
    let last_seq = frame
        .last_seq
        .ok_or_else(|| DecodeError::new(ErrorCode::MissingField, "missing field `lastSeq`"))?;
    let last_seq = serde_json::from_str::<u64>(last_seq).map_err(|_| {
        DecodeError::new(
            ErrorCode::InvalidField,
            "field `lastSeq` must be a non-negative integer",
        )
    })?;
    Ok((token, last_seq))
}

/// A relayed payload as decoded: borrowed from the frame, or already shared.
#[derive(Debug)]
pub(crate) enum RawPayload<'a> {
    /// A JSON value's text, validated.
    Frame(&'a str),
    Shared(Payload),
}

impl RawPayload<'_> {
    /// The JSON text.
    pub(crate) fn get(&self) -> &str {
        match self {
            RawPayload::Frame(raw) => raw,
            RawPayload::Shared(payload) => payload.get(),
        }
    }

    /// The payload to relay: one copy of a borrowed one.
    pub(crate) fn into_payload(self) -> Payload {
        match self {
            RawPayload::Frame(raw) => Payload(Repr::Shared(Arc::from(raw))),
            RawPayload::Shared(payload) => payload,
        }
    }

    /// The payload to relay as `kind` from `from` in a frame of its own: a borrowed one is
    /// copied straight into the frame ([`Payload::relay_frame`]).
    pub(crate) fn into_relay_frame(self, kind: RelayKind, from: &Username) -> Payload {
        match self {
            RawPayload::Frame(raw) => Payload::relay_frame(kind, raw, from),
            RawPayload::Shared(payload) => payload,
        }
    }
}

/// A decoded client message that borrows from the frame text: the router's fast path, which
/// copies nothing but the payload it relays.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    Login {
        username: Cow<'a, str>,
        resumable: bool,
    },
    Resume {
        token: Cow<'a, str>,
        last_seq: u64,
    },
    Relay {
        kind: RelayKind,
        payload: RawPayload<'a>,
        to: Option<Cow<'a, str>>,
    },
    HangUp {
        to: Option<Cow<'a, str>>,
    },
}

impl<'a> Decoded<'a> {
    pub(crate) fn decode(text: &'a str) -> Result<Decoded<'a>, DecodeError> {
        // The usual frame starts with its `{`; anything else is looked at more closely.
        let trimmed = if text.starts_with('{') {
            text
        } else {
            text.trim_start()
        };
        if !trimmed.starts_with('{') {
            return Err(not_an_object(text, trimmed));
        }
        // The fast scanner where it is sure, serde_json (and its errors) where it is not.
        let mut frame = Fields::default();
        if scan::fill(text, &mut frame).is_none() {
            frame = fields_by_serde(text)?;
        }
        let kind_raw = frame
            .kind
            .ok_or_else(|| DecodeError::new(ErrorCode::MissingField, "missing field `type`"))?;
        let kind = string_field("type", kind_raw, frame.holds_plain(Fields::KIND))?;
        let relay = |kind: RelayKind, payload: Option<&'a str>| {
            let payload = payload.ok_or_else(|| {
                DecodeError::new(
                    ErrorCode::MissingField,
                    format!("missing field `{}`", kind.as_str()),
                )
            })?;
            Ok(Decoded::Relay {
                kind,
                payload: RawPayload::Frame(payload),
                to: target_field(&frame)?,
            })
        };
        match &*kind {
            "login" => {
                let username = frame
                    .username
                    .ok_or_else(|| {
                        DecodeError::new(ErrorCode::MissingField, "missing field `username`")
                    })
                    .and_then(|raw| {
                        name_field("username", raw, frame.holds_plain(Fields::USERNAME))
                    })
                    .map(into_nfc)
                    .and_then(|username| Ok((username, resumable_field(frame.resumable)?)))
                    .map_err(|e| e.replied_as(ReplyType::Login))?;
                Ok(Decoded::Login {
                    username: username.0,
                    resumable: username.1,
                })
            }
            "resume" => {
                let (token, last_seq) =
                    resume_fields(&frame).map_err(|e| e.replied_as(ReplyType::Resume))?;
                Ok(Decoded::Resume { token, last_seq })
            }
            "candidate" => relay(RelayKind::Candidate, frame.candidate),
            "offer" => relay(RelayKind::Offer, frame.offer),
            "answer" => relay(RelayKind::Answer, frame.answer),
            "close" => Ok(Decoded::HangUp {
                to: target_field(&frame)?,
            }),
            other => Err(DecodeError::new(
                ErrorCode::UnknownType,
                // The tutorial's own text, so that pages that show it keep working.
                // The type is the client's: echo at most its first 64 characters.
                format!("Command not found: {}", shorten(other, 64)),
            )),
        }
    }
}

/// Why a frame that does not start with `{` (after white space) is refused: empty, valid JSON
/// that is not an object (`null`, `[]`, `42`, `"x"`), or not JSON at all.
#[cold]
#[inline(never)]
fn not_an_object(text: &str, trimmed: &str) -> DecodeError {
    if trimmed.is_empty() {
        return DecodeError::new(ErrorCode::InvalidJson, "empty message");
    }
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => DecodeError::new(
            ErrorCode::NotAnObject,
            "message must be a JSON object with a \"type\" field",
        ),
        Err(e) => DecodeError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")),
    }
}

/// The top-level fields by serde_json, for a frame the scanner is not sure of (and serde's
/// error for one that is not valid).
#[cold]
#[inline(never)]
fn fields_by_serde(text: &str) -> Result<Fields<'_>, DecodeError> {
    Ok(serde_json::from_str::<RawFrame<'_>>(text)
        .map_err(|e| {
            if e.is_data() {
                DecodeError::new(ErrorCode::InvalidMessage, format!("invalid message: {e}"))
            } else {
                DecodeError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}"))
            }
        })?
        .fields())
}

/// `text` cut to at most `max` characters, with `…` when something was cut.
fn shorten(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", text.get(..end).unwrap_or_default())),
    }
}

/// The NFC form of a decoded name, still borrowing from the frame when it can.
fn into_nfc(name: Cow<'_, str>) -> Cow<'_, str> {
    match name {
        Cow::Borrowed(s) => nfc(s),
        Cow::Owned(s) => match nfc(&s) {
            Cow::Borrowed(_) => Cow::Owned(s),
            Cow::Owned(composed) => Cow::Owned(composed),
        },
    }
}

/// Converts a name that already passed [`Username::validate`] (normalizing it to NFC).
fn validated(name: Cow<'_, str>) -> Username {
    Username(Arc::from(nfc(&name).as_ref()))
}

impl From<ClientMessage> for Decoded<'static> {
    fn from(message: ClientMessage) -> Self {
        match message {
            ClientMessage::Login {
                username,
                resumable,
            } => Decoded::Login {
                username: Cow::Owned(username.as_str().to_owned()),
                resumable,
            },
            ClientMessage::Resume { token, last_seq } => Decoded::Resume {
                token: Cow::Owned(token.as_str().to_owned()),
                last_seq,
            },
            ClientMessage::Relay { kind, payload, to } => Decoded::Relay {
                kind,
                payload: RawPayload::Shared(payload),
                to: to.map(|n| Cow::Owned(n.as_str().to_owned())),
            },
            ClientMessage::HangUp { to } => Decoded::HangUp {
                to: to.map(|n| Cow::Owned(n.as_str().to_owned())),
            },
        }
    }
}

impl ClientMessage {
    /// Decodes one text frame. Never panics; every failure says what was wrong.
    pub fn decode(text: &str) -> Result<ClientMessage, DecodeError> {
        Ok(match Decoded::decode(text)? {
            Decoded::Login {
                username,
                resumable,
            } => ClientMessage::Login {
                username: validated(username),
                resumable,
            },
            Decoded::Resume { token, last_seq } => ClientMessage::Resume {
                token: SessionToken::new(token.as_ref()),
                last_seq,
            },
            Decoded::Relay { kind, payload, to } => ClientMessage::Relay {
                kind,
                payload: payload.into_payload(),
                to: to.map(validated),
            },
            Decoded::HangUp { to } => ClientMessage::HangUp {
                to: to.map(validated),
            },
        })
    }

    /// Encodes the message as a client would send it (for tests, clients and load generators).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64);
        match self {
            ClientMessage::Login {
                username,
                resumable,
            } => {
                out.push_str(r#"{"type":"login","username":"#);
                push_json_str(&mut out, username.as_str());
                if *resumable {
                    out.push_str(r#","resumable":true"#);
                }
            }
            ClientMessage::Resume { token, last_seq } => {
                out.push_str(r#"{"type":"resume","token":"#);
                push_json_str(&mut out, token.as_str());
                let _ = write!(out, r#","lastSeq":{last_seq}"#);
            }
            ClientMessage::Relay { kind, payload, to } => {
                push_tag(&mut out, kind.as_str());
                out.push_str(",\"");
                out.push_str(kind.as_str());
                out.push_str("\":");
                out.push_str(payload.get());
                if let Some(to) = to {
                    out.push_str(r#","otherUsername":"#);
                    push_json_str(&mut out, to.as_str());
                }
            }
            ClientMessage::HangUp { to } => {
                push_tag(&mut out, "close");
                if let Some(to) = to {
                    out.push_str(r#","otherUsername":"#);
                    push_json_str(&mut out, to.as_str());
                }
            }
        }
        out.push('}');
        out
    }
}

/// A message the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMessage {
    /// `{"type":"login","success":true}` on success. On failure the tutorial's
    /// `{"type":"login","success":false}` gains `code` and `message`.
    Login {
        /// Whether the name is now this connection's.
        success: bool,
        /// Why not, when `success` is false.
        error: Option<(ErrorCode, String)>,
        /// On success, `"iceServers"` for the user when the server hands them out (filled in
        /// by the driver; the router leaves it `None`).
        ice_servers: Option<IceServerList>,
    },
    /// `{"type":<kind>,<kind>:<payload>,"username":<sender>}`: a relayed offer, answer or
    /// candidate. `username` is always stamped by the server from the sender's login.
    Relay {
        /// Which of the three.
        kind: RelayKind,
        /// The payload, byte-for-byte as the sender wrote it.
        payload: Payload,
        /// The sender.
        from: Username,
    },
    /// `{"type":"close","username":<partner>}`: the call is over — the partner hung up,
    /// declined or went away; with `"reason":"no_answer"` when nobody answered in time.
    HangUp {
        /// The other side of the call.
        from: Username,
        /// Why, when it is not simply the partner hanging up or leaving.
        reason: Option<HangUpReason>,
    },
    /// `{"type":"login","success":true,"token":…,"graceMs":…}`: a resumable login succeeded.
    SessionStarted {
        /// The secret to resume with.
        token: SessionToken,
        /// How long the session outlives an abnormal drop, in milliseconds.
        grace_ms: u64,
        /// `"iceServers"` for the user when the server hands them out (filled in by the
        /// driver; the router leaves it `None`).
        ice_servers: Option<IceServerList>,
    },
    /// `{"type":"resume","success":true,"username":…,"token":…,"graceMs":…}`: the session
    /// moved to this connection; the messages after `lastSeq` follow.
    Resumed {
        /// The session's name.
        username: Username,
        /// The new token (the one used is spent).
        token: SessionToken,
        /// How long the session outlives an abnormal drop, in milliseconds.
        grace_ms: u64,
        /// Fresh `"iceServers"` for the user when the server hands them out (an ICE restart
        /// after the network change may need new TURN credentials); filled in by the driver,
        /// the router leaves it `None`.
        ice_servers: Option<IceServerList>,
    },
    /// `{"type":"resume","success":false,"code":…,"message":…}`.
    ResumeFailed {
        /// Why: `invalid_token`, `history_lost`, `invalid_last_seq`, … .
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// `{"type":"error","code":…,"message":…}`.
    Error {
        /// Stable machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

/// Why a call ended, when the hang-up message says so (`"reason"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HangUpReason {
    /// `"no_answer"`: the callee did not answer within the ring timeout.
    NoAnswer,
}

impl HangUpReason {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            HangUpReason::NoAnswer => "no_answer",
        }
    }
}

fn push_tag(out: &mut String, tag: &str) {
    out.push_str(r#"{"type":""#);
    out.push_str(tag);
    out.push('"');
}

/// How JSON writes byte `b` of a string: `None` as itself, `Some(Some(e))` as the short escape
/// `e`, `Some(None)` as `\u00XX` (the other control characters). One table for
/// [`push_json_str`] and [`json_str_len`], which must agree.
fn json_escape(b: u8) -> Option<Option<&'static str>> {
    match b {
        b'"' => Some(Some("\\\"")),
        b'\\' => Some(Some("\\\\")),
        b'\n' => Some(Some("\\n")),
        b'\r' => Some(Some("\\r")),
        b'\t' => Some(Some("\\t")),
        0..=0x1f => Some(None),
        _ => None,
    }
}

/// How many bytes [`push_json_str`] appends for `s`.
fn json_str_len(s: &str) -> usize {
    // The usual name has nothing to escape: one cheap test a byte.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        return s.len() + 2;
    }
    s.bytes()
        .map(|b| match json_escape(b) {
            None => 1,
            Some(Some(e)) => e.len(),
            Some(None) => r"\u0000".len(),
        })
        .sum::<usize>()
        + 2
}

/// The exact length of a relay frame: a frame whose length is its capacity becomes the
/// transport's shared bytes without another allocation (`Bytes::from(Vec)`).
fn relay_frame_len(
    kind: RelayKind,
    payload_len: usize,
    from_len: usize,
    seq: Option<u64>,
) -> usize {
    r#"{"type":"",""#.len()
        + 2 * kind.as_str().len()
        + r#"":"#.len()
        + payload_len
        + r#","username":"#.len()
        + from_len
        + seq.map_or(0, |seq| r#","seq":"#.len() + decimal_len(seq))
        + 1
}

/// `{"type":kind,kind:` of a relay frame; returns where the payload starts.
fn push_relay_head(out: &mut String, kind: RelayKind) -> usize {
    out.push_str(match kind {
        RelayKind::Offer => r#"{"type":"offer","offer":"#,
        RelayKind::Answer => r#"{"type":"answer","answer":"#,
        RelayKind::Candidate => r#"{"type":"candidate","candidate":"#,
    });
    out.len()
}

/// `,"username":from` of a relay frame, `from_len` being `json_str_len(from)`.
fn push_relay_from(out: &mut String, from: &Username, from_len: usize) {
    out.push_str(r#","username":"#);
    if from_len == from.as_str().len() + 2 {
        // Nothing to escape (`json_str_len` looked): the name as it is.
        out.push('"');
        out.push_str(from.as_str());
        out.push('"');
    } else {
        push_json_str(out, from.as_str());
    }
}

/// How many digits `n` has in decimal.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Appends `s` as a JSON string literal (quoted and escaped).
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let Some(escape) = json_escape(b) else {
            continue;
        };
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

impl ServerMessage {
    /// Shorthand for an error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }

    /// Encodes the message as one JSON text frame. Relayed payloads are spliced in as the
    /// sender wrote them, never re-serialized.
    pub fn to_json(&self) -> String {
        self.to_json_with_seq(None)
    }

    /// Approximately how many bytes [`to_json`](Self::to_json) makes, without encoding (what
    /// queue and history bounds count).
    pub fn size_hint(&self) -> usize {
        match self {
            ServerMessage::Relay { payload, from, .. } => {
                payload.get().len() + from.as_str().len() + 48
            }
            ServerMessage::Error { message, .. } | ServerMessage::ResumeFailed { message, .. } => {
                message.len() + 48
            }
            ServerMessage::Login {
                error, ice_servers, ..
            } => error.as_ref().map_or(0, |(_, m)| m.len()) + ice_servers_len(ice_servers) + 64,
            ServerMessage::HangUp { from, .. } => from.as_str().len() + 60,
            ServerMessage::SessionStarted {
                token, ice_servers, ..
            } => token.as_str().len() + ice_servers_len(ice_servers) + 80,
            ServerMessage::Resumed {
                username,
                token,
                ice_servers,
                ..
            } => username.as_str().len() + token.as_str().len() + ice_servers_len(ice_servers) + 96,
        }
    }

    /// Encodes the message as [`to_json`](Self::to_json) does, with `"seq":n` as its last
    /// field when `seq` is given (every message of a resumable session after its login).
    pub fn to_json_with_seq(&self, seq: Option<u64>) -> String {
        let mut out;
        match self {
            ServerMessage::Login {
                success,
                error,
                ice_servers,
            } => {
                out = String::with_capacity(96 + ice_servers_len(ice_servers));
                push_tag(&mut out, "login");
                out.push_str(if *success {
                    r#","success":true"#
                } else {
                    r#","success":false"#
                });
                if let Some((code, message)) = error {
                    push_error_fields(&mut out, *code, message);
                }
                push_ice_servers(&mut out, ice_servers);
            }
            ServerMessage::Relay {
                kind,
                payload,
                from,
            } => {
                let payload = payload.get();
                let from_len = json_str_len(from.as_str());
                out = String::with_capacity(relay_frame_len(*kind, payload.len(), from_len, seq));
                push_relay_head(&mut out, *kind);
                out.push_str(payload);
                push_relay_from(&mut out, from, from_len);
            }
            ServerMessage::HangUp { from, reason } => {
                out = String::with_capacity(64 + from.as_str().len());
                push_tag(&mut out, "close");
                out.push_str(r#","username":"#);
                push_json_str(&mut out, from.as_str());
                if let Some(reason) = reason {
                    out.push_str(r#","reason":""#);
                    out.push_str(reason.as_str());
                    out.push('"');
                }
            }
            ServerMessage::Error { code, message } => {
                out = String::with_capacity(48 + message.len());
                push_tag(&mut out, "error");
                push_error_fields(&mut out, *code, message);
            }
            ServerMessage::SessionStarted {
                token,
                grace_ms,
                ice_servers,
            } => {
                out =
                    String::with_capacity(96 + token.as_str().len() + ice_servers_len(ice_servers));
                out.push_str(r#"{"type":"login","success":true,"token":"#);
                push_json_str(&mut out, token.as_str());
                let _ = write!(out, r#","graceMs":{grace_ms}"#);
                push_ice_servers(&mut out, ice_servers);
            }
            ServerMessage::Resumed {
                username,
                token,
                grace_ms,
                ice_servers,
            } => {
                out = String::with_capacity(
                    112 + token.as_str().len()
                        + username.as_str().len()
                        + ice_servers_len(ice_servers),
                );
                out.push_str(r#"{"type":"resume","success":true,"username":"#);
                push_json_str(&mut out, username.as_str());
                out.push_str(r#","token":"#);
                push_json_str(&mut out, token.as_str());
                let _ = write!(out, r#","graceMs":{grace_ms}"#);
                push_ice_servers(&mut out, ice_servers);
            }
            ServerMessage::ResumeFailed { code, message } => {
                out = String::with_capacity(64 + message.len());
                out.push_str(r#"{"type":"resume","success":false"#);
                push_error_fields(&mut out, *code, message);
            }
        }
        if let Some(seq) = seq {
            // Writing to a String cannot fail.
            let _ = write!(out, r#","seq":{seq}"#);
        }
        out.push('}');
        out
    }
}

/// A frame that is not one [`ServerMessage::to_json`] makes ([`ServerMessage::from_json`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a server message: {0}")]
pub struct ServerMessageError(String);

/// The fields of every server message shape, for [`ServerMessage::from_json`].
#[derive(Deserialize)]
struct ServerWire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    success: Option<bool>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    message: Option<String>,
    #[serde(borrow)]
    username: Option<Cow<'a, str>>,
    token: Option<String>,
    #[serde(rename = "graceMs")]
    grace_ms: Option<u64>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    /// A present `null` is a payload too.
    #[serde(default, borrow, deserialize_with = "present_raw")]
    offer: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present_raw")]
    answer: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present_raw")]
    candidate: Option<&'a RawValue>,
    #[serde(
        rename = "iceServers",
        default,
        borrow,
        deserialize_with = "present_raw"
    )]
    ice_servers: Option<&'a RawValue>,
    seq: Option<u64>,
}

fn present_raw<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

impl ServerMessage {
    /// Decodes a frame that [`to_json_with_seq`](Self::to_json_with_seq) made back into the
    /// message and its `seq`: the inverse of the encoder, for every shape the server sends.
    /// A relayed payload comes back byte for byte.
    ///
    /// The server itself never reads its own frames; a cluster node does when it takes over a
    /// resumable session from another node, whose history travels as the frames it holds
    /// ([`SessionExport`](crate::cluster::SessionExport)).
    ///
    /// # Errors
    ///
    /// [`ServerMessageError`] for text that is not such a frame (never a panic).
    pub fn from_json(text: &str) -> Result<(ServerMessage, Option<u64>), ServerMessageError> {
        let bad = |what: &str| ServerMessageError(what.to_owned());
        let wire: ServerWire<'_> =
            serde_json::from_str(text).map_err(|e| ServerMessageError(e.to_string()))?;
        let code = || {
            wire.code
                .as_deref()
                .and_then(ErrorCode::from_wire)
                .ok_or_else(|| bad("missing or unknown code"))
        };
        let text = || wire.message.clone().ok_or_else(|| bad("missing message"));
        let username = || {
            wire.username
                .as_deref()
                .ok_or_else(|| bad("missing username"))
                .and_then(|n| Username::new(n).map_err(|_| bad("invalid username")))
        };
        let token = || {
            wire.token
                .as_deref()
                .map(SessionToken::new)
                .ok_or_else(|| bad("missing token"))
        };
        let grace_ms = || wire.grace_ms.ok_or_else(|| bad("missing graceMs"));
        let ice_servers = || {
            wire.ice_servers
                .map(|raw| IceServerList::from_json(raw.get()))
                .transpose()
                .map_err(|_| bad("iceServers is not an array"))
        };
        let relay = |kind: RelayKind, payload: Option<&RawValue>| {
            Ok::<_, ServerMessageError>(ServerMessage::Relay {
                kind,
                payload: Payload::from_raw(payload.ok_or_else(|| bad("missing payload"))?),
                from: username()?,
            })
        };
        let message = match (&*wire.kind, wire.success) {
            ("login", Some(true)) if wire.token.is_some() => ServerMessage::SessionStarted {
                token: token()?,
                grace_ms: grace_ms()?,
                ice_servers: ice_servers()?,
            },
            ("login", Some(success)) => ServerMessage::Login {
                success,
                error: match wire.code {
                    Some(_) => Some((code()?, text()?)),
                    None => None,
                },
                ice_servers: ice_servers()?,
            },
            ("resume", Some(true)) => ServerMessage::Resumed {
                username: username()?,
                token: token()?,
                grace_ms: grace_ms()?,
                ice_servers: ice_servers()?,
            },
            ("resume", Some(false)) => ServerMessage::ResumeFailed {
                code: code()?,
                message: text()?,
            },
            ("offer", None) => relay(RelayKind::Offer, wire.offer)?,
            ("answer", None) => relay(RelayKind::Answer, wire.answer)?,
            ("candidate", None) => relay(RelayKind::Candidate, wire.candidate)?,
            ("close", None) => ServerMessage::HangUp {
                from: username()?,
                reason: match wire.reason.as_deref() {
                    None => None,
                    Some("no_answer") => Some(HangUpReason::NoAnswer),
                    Some(_) => return Err(bad("unknown reason")),
                },
            },
            ("error", None) => ServerMessage::Error {
                code: code()?,
                message: text()?,
            },
            _ => return Err(bad("unknown type")),
        };
        Ok((message, wire.seq))
    }
}

fn ice_servers_len(ice_servers: &Option<IceServerList>) -> usize {
    ice_servers.as_ref().map_or(0, |l| l.get().len() + 16)
}

/// `,"iceServers":[…]` when there is a list: without one the reply is the tutorial's.
fn push_ice_servers(out: &mut String, ice_servers: &Option<IceServerList>) {
    if let Some(list) = ice_servers {
        out.push_str(r#","iceServers":"#);
        out.push_str(list.get());
    }
}

fn push_error_fields(out: &mut String, code: ErrorCode, message: &str) {
    out.push_str(r#","code":""#);
    out.push_str(code.as_str());
    out.push_str(r#"","message":"#);
    push_json_str(out, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The word-at-a-time check says what the byte-by-byte one says, bytes at and around
        /// both bounds included, at every length around the word size.
        #[test]
        fn printable_ascii_a_word_at_a_time(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => 0x20u8..0x7f,
                    1 => proptest::sample::select(vec![0u8, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xc3, 0xff]),
                    1 => proptest::num::u8::ANY,
                ],
                0..40,
            )
        ) {
            proptest::prop_assert_eq!(
                all_printable_ascii(&bytes),
                bytes.iter().all(|&b| matches!(b, b' '..=b'~'))
            );
        }
    }

    /// A relayed frame is allocated at exactly its length (so the transport takes it over
    /// without another allocation), whatever the sender's name needs escaped and whatever the
    /// `seq`'s number of digits.
    #[test]
    fn relay_frames_are_allocated_at_their_exact_length() {
        let payload =
            Payload::from_json(r#"{"candidate":"candidate:1 1 udp 1 10.0.0.1 5000 typ host"}"#)
                .unwrap();
        for name in [
            "a",
            "alice",
            r#"say "hi"\now"#,
            r#"a "quote""#,
            r"back\slash",
            "zoë 漢字",
            "😀",
        ] {
            for kind in [RelayKind::Offer, RelayKind::Answer, RelayKind::Candidate] {
                let message = ServerMessage::Relay {
                    kind,
                    payload: payload.clone(),
                    from: Username::new(name).unwrap(),
                };
                for seq in [
                    None,
                    Some(0),
                    Some(9),
                    Some(10),
                    Some(99_999),
                    Some(u64::MAX),
                ] {
                    let frame = message.to_json_with_seq(seq);
                    assert_eq!(frame.len(), frame.capacity(), "{frame}");
                    let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
                    assert_eq!(value["username"], name);
                }
            }
        }
    }

    /// A payload the router framed gives the very frame `to_json` makes, without copying,
    /// and only for the message it was framed for: another sender or kind, a name that had
    /// to be escaped, a `seq` all take `to_json`'s encoding instead.
    #[test]
    fn framed_payloads_are_their_own_frame_only_for_their_own_message() {
        use crate::router::{ConnectionId, Transmit};
        let raw = r#"{"candidate":"candidate:1 1 udp 1 10.0.0.1 5000 typ host","sdpMid":"0"}"#;
        // Names of one length too: the length of the frame alone does not tell them apart.
        let names = [
            "a",
            "alice",
            "bobby",
            "alicia",
            r#"say "hi"\now"#,
            r#"a\"b"#,
            r#"a"b"#,
            "zoë 漢字",
        ];
        let kinds = [RelayKind::Offer, RelayKind::Answer, RelayKind::Candidate];
        let mut zero_copy = 0;
        for framed_name in names.map(|n| Username::new(n).unwrap()) {
            for framed_kind in kinds {
                for from in names.map(|n| Username::new(n).unwrap()) {
                    for kind in kinds {
                        for seq in [None, Some(7)] {
                            let payload = Payload::relay_frame(framed_kind, raw, &framed_name);
                            assert_eq!(payload.get(), raw);
                            assert_eq!(payload.clone().get(), raw);
                            let at = payload.get().as_ptr();
                            let expected = ServerMessage::Relay {
                                kind,
                                payload: Payload::from_json(raw).unwrap(),
                                from: from.clone(),
                            }
                            .to_json_with_seq(seq);
                            let transmit = Transmit {
                                to: ConnectionId(1),
                                message: ServerMessage::Relay {
                                    kind,
                                    payload,
                                    from: from.clone(),
                                },
                                seq,
                            };
                            assert_eq!(transmit.to_json(), expected);
                            let frame = transmit.into_frame();
                            assert_eq!(frame, expected, "{framed_name:?} {framed_kind:?}");
                            let own = from == framed_name && kind == framed_kind && seq.is_none();
                            let plain = !from.as_str().contains(['"', '\\']);
                            let copied = frame.find(raw).map(|i| frame[i..].as_ptr()) != Some(at);
                            assert_eq!(!copied, own && plain, "{from:?} {kind:?} {seq:?}");
                            zero_copy += usize::from(!copied);
                        }
                    }
                }
            }
        }
        // Each of the five names with nothing to escape, each kind: the frame itself.
        assert_eq!(zero_copy, 5 * 3);
    }

    /// The ASCII shortcut gives what the general algorithm gives, for every printable ASCII
    /// character alone and in pairs.
    #[test]
    fn ascii_skeletons_match_the_general_algorithm() {
        let table = AsciiSkeletons::new();
        // Letters and digits all have ASCII skeletons: the fast path is taken for them.
        for b in (b'a'..=b'z').chain(b'A'..=b'Z').chain(b'0'..=b'9') {
            assert!(table.0[usize::from(b)].is_some(), "{}", char::from(b));
        }
        let printable: Vec<char> = (0x21u8..0x7f).map(char::from).collect();
        let mut names: Vec<String> = printable.iter().map(|c| c.to_string()).collect();
        for a in &printable {
            for b in &printable {
                names.push(format!("{a}{b}"));
            }
        }
        names.extend(["newcomer", "Jean Dupont", "AIice", "user@example.com"].map(String::from));
        let mut out = String::new();
        for name in names {
            let name = Username::new(&name).unwrap();
            table.skeleton_into(name.as_str(), &mut out);
            assert_eq!(out, name.skeleton(), "{name:?}");
        }
    }
}
