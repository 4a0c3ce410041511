//! What the nodes of a cluster tell each other about their users.
//!
//! In cluster mode ([`RouterConfig::claim_names`](crate::RouterConfig::claim_names)) a user may
//! live on another node. The router keeps the state of its own users only, and splits each rule
//! between the sender's node and the receiver's node (`docs/cluster.md`):
//!
//! - the sender's node checks the sender's side (`not_logged_in`, `self_addressed`, `in_call`,
//!   `not_in_call`, the bounds before the answer, the redial back-off) and, when the addressee is
//!   not one of its users, emits [`Output::Forward`](crate::Output::Forward) with an
//!   [`Envelope`];
//! - the cluster backend carries the envelope to the node that holds the addressee's name and
//!   hands it to that node's router ([`Router::handle_remote`](crate::Router::handle_remote));
//! - the receiver's node checks the receiver's side (`unknown_user`, `busy`, `not_in_call`,
//!   `recipient_overloaded`) and either delivers the message or sends a
//!   [`Remote::Refused`] back, which the sender's node turns into the `error` reply the sender
//!   would have got from a single node, byte for byte.
//!
//! An envelope the backend cannot deliver comes back to its router through
//! [`Router::handle_unroutable`](crate::Router::handle_unroutable): nobody holds the name
//! (`unknown_user`), or the shared component is down (`unavailable`). Nothing is dropped without
//! a word.
//!
//! Envelopes are encoded as small JSON objects ([`Envelope::encode`], [`Envelope::decode`]);
//! a relayed payload is spliced in as the sender wrote it.
//!
//! A resumable session moves between nodes as a [`SessionExport`]: a `resume` on a node that
//! does not know the token asks for the session
//! ([`Output::Fetch`](crate::Output::Fetch)); the node that issued the token validates the
//! resume as it would its own and hands the session over
//! ([`Router::handle_handover`](crate::Router::handle_handover)); the asking node installs it
//! ([`Router::handle_imported`](crate::Router::handle_imported)). A node that shuts down
//! exports all its resumable sessions at once
//! ([`Router::handle_evacuate`](crate::Router::handle_evacuate)) for the backend to keep until
//! their clients resume elsewhere.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ErrorCode;
use crate::protocol::{Payload, RelayKind, ServerMessage, SessionToken, Username};
use crate::router::{CallEnd, resume_refusal};

/// A message from a user of one node to a user of another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The user it comes from (a user of the sending node).
    pub from: Username,
    /// The user it is for (a user of the receiving node, as far as the sender knows).
    pub to: Username,
    /// What it says.
    pub body: Remote,
}

/// What an [`Envelope`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Remote {
    /// An offer, answer or candidate `from` relays to `to`, checked on `from`'s side already.
    Relay {
        /// Which of the three.
        kind: RelayKind,
        /// The payload, as the sender wrote it.
        payload: Payload,
        /// An offer that opens a call: the receiver's node refuses it with `busy` if `to` is
        /// in a call.
        opens_call: bool,
    },
    /// `from` ended its side of the call with `to` (`close`, a disconnect, or a ring-out on the
    /// caller's node): `to` is told `close` (with `"reason":"no_answer"` after a ring-out) if its
    /// call is still with `from`.
    HangUp {
        /// How the call ended: a caller's node starts its redial back-off on `Declined`.
        end: CallEnd,
    },
    /// `from` sent `to` a relay that broke a rule of `from`'s side (`not_in_call`, `in_call`,
    /// `redial_too_soon`): `to`'s node answers with [`Remote::Refused`] carrying this error,
    /// or the error a single node would have given first: `unknown_user` if `to` is not
    /// there, `busy` for an offer (`busy_first`) if `to` is in a call.
    Probe {
        /// The refused message's kind.
        kind: RelayKind,
        /// A single node checks that the addressee is free before this rule.
        busy_first: bool,
        /// The sender's node's error code.
        code: ErrorCode,
        /// The sender's node's error message.
        message: String,
    },
    /// An error reply to `from` that must not overtake the refusals `to`'s node may still
    /// send `from` (one connection's replies keep the order of its messages): `to`'s node
    /// sends it straight back (`back`), and `from`'s node then delivers it.
    Echo {
        /// On its way back.
        back: bool,
        /// The error code.
        code: ErrorCode,
        /// The error message.
        message: String,
    },
    /// `from`'s session moved to another node ([`SessionExport`]) with a call with `to`: if
    /// `to` is no longer in a call with `from` (its hang-up was lost while the session was on
    /// its way: its node was shutting down), `to`'s node answers with a [`Remote::HangUp`], so
    /// that `from` is told `close` rather than left in a call that is over.
    CallCheck,
    /// The receiver's node refused a relay `to` sent to `from`: `to` gets this `error`.
    Refused {
        /// The refused message's kind.
        kind: RelayKind,
        /// The refused message opened a call: `to`'s side of it is cleared.
        opened: bool,
        /// The error code.
        code: ErrorCode,
        /// The error message, as a single node would have written it.
        message: String,
    },
}

/// Why the backend could not deliver an [`Envelope`] (see
/// [`Router::handle_unroutable`](crate::Router::handle_unroutable)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unroutable {
    /// No node holds the addressee's name.
    UnknownUser,
    /// The shared component (Redis) or the addressee's node cannot be reached.
    Unavailable,
}

/// An envelope that could not be decoded (a bug, or something else writing to our channels).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable cluster envelope: {0}")]
pub struct EnvelopeError(String);

/// The wire form: short keys, one object.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    f: Cow<'a, str>,
    #[serde(borrow)]
    t: Cow<'a, str>,
    /// `r` relay, `h` hang-up, `p` probe, `e` echo, `c` call check, `x` refused.
    b: char,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<&'a str>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    o: bool,
    /// A present `null` is a payload too (an `Option<&RawValue>` alone would read it as
    /// absent).
    #[serde(
        default,
        borrow,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    p: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    h: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<&'a str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    m: Option<Cow<'a, str>>,
}

fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

const ENDS: [(CallEnd, &str); 5] = [
    (CallEnd::HungUp, "hung_up"),
    (CallEnd::Cancelled, "cancelled"),
    (CallEnd::Declined, "declined"),
    (CallEnd::NoAnswer, "no_answer"),
    (CallEnd::Disconnected, "disconnected"),
];

fn end_str(end: CallEnd) -> &'static str {
    ENDS.iter()
        .find(|(e, _)| *e == end)
        .map_or("disconnected", |(_, s)| s)
}

fn end_from(s: &str) -> Option<CallEnd> {
    ENDS.iter().find(|(_, e)| *e == s).map(|(end, _)| *end)
}

fn kind_from(s: &str) -> Option<RelayKind> {
    [RelayKind::Offer, RelayKind::Answer, RelayKind::Candidate]
        .into_iter()
        .find(|k| k.as_str() == s)
}

impl Envelope {
    /// The bytes to send to the addressee's node.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(128);
        self.encode_into(&mut bytes);
        bytes
    }

    /// [`encode`](Self::encode), appended to `bytes`.
    pub fn encode_into(&self, bytes: &mut Vec<u8>) {
        if let Remote::Relay {
            kind,
            payload,
            opens_call,
        } = &self.body
        {
            // The bulk of what nodes send, written directly: the same bytes as the `Wire`
            // below would give, without parsing the payload again to splice it in (the router
            // checked it is one JSON value).
            bytes.extend_from_slice(b"{\"f\":");
            // Strings into a Vec: cannot fail.
            let _ = serde_json::to_writer(&mut *bytes, self.from.as_str());
            bytes.extend_from_slice(b",\"t\":");
            let _ = serde_json::to_writer(&mut *bytes, self.to.as_str());
            bytes.extend_from_slice(b",\"b\":\"r\",\"k\":\"");
            bytes.extend_from_slice(kind.as_str().as_bytes());
            bytes.extend_from_slice(if *opens_call {
                b"\",\"o\":true,\"p\":"
            } else {
                b"\",\"p\":"
            });
            bytes.extend_from_slice(payload.get().as_bytes());
            bytes.push(b'}');
            return;
        }
        let mut wire = Wire {
            f: Cow::Borrowed(self.from.as_str()),
            t: Cow::Borrowed(self.to.as_str()),
            b: 'r',
            k: None,
            o: false,
            p: None,
            h: None,
            c: None,
            m: None,
        };
        let raw;
        match &self.body {
            Remote::Relay {
                kind,
                payload,
                opens_call,
            } => {
                // A payload is valid JSON (the router decoded it); this cannot fail.
                raw = serde_json::from_str::<&RawValue>(payload.get()).ok();
                wire.k = Some(kind.as_str());
                wire.o = *opens_call;
                wire.p = raw;
            }
            Remote::HangUp { end } => {
                wire.b = 'h';
                wire.h = Some(end_str(*end));
            }
            Remote::Probe {
                kind,
                busy_first,
                code,
                message,
            } => {
                wire.b = 'p';
                wire.k = Some(kind.as_str());
                wire.o = *busy_first;
                wire.c = Some(code.as_str());
                wire.m = Some(Cow::Borrowed(message));
            }
            Remote::Echo {
                back,
                code,
                message,
            } => {
                wire.b = 'e';
                wire.o = *back;
                wire.c = Some(code.as_str());
                wire.m = Some(Cow::Borrowed(message));
            }
            Remote::CallCheck => wire.b = 'c',
            Remote::Refused {
                kind,
                opened,
                code,
                message,
            } => {
                wire.b = 'x';
                wire.k = Some(kind.as_str());
                wire.o = *opened;
                wire.c = Some(code.as_str());
                wire.m = Some(Cow::Borrowed(message));
            }
        }
        // Serializing strings, bools and raw JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(bytes, &wire);
    }

    /// Decodes what [`encode`](Self::encode) made.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] for bytes that are not an envelope (never a panic).
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        match decode_relay(bytes) {
            Some(envelope) => Ok(envelope),
            None => Envelope::decode_wire(bytes),
        }
    }

    /// [`decode`](Self::decode) through the serde `Wire` struct: any envelope.
    fn decode_wire(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let bad = |what: &str| EnvelopeError(what.to_owned());
        let wire: Wire<'_> =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError(e.to_string()))?;
        let from = Username::new(&wire.f).map_err(|_| bad("invalid sender name"))?;
        let to = Username::new(&wire.t).map_err(|_| bad("invalid addressee name"))?;
        let kind = || {
            wire.k
                .and_then(kind_from)
                .ok_or_else(|| bad("missing or unknown kind"))
        };
        let code = || {
            wire.c
                .and_then(ErrorCode::from_wire)
                .ok_or_else(|| bad("missing or unknown error code"))
        };
        let body = match wire.b {
            'r' => Remote::Relay {
                kind: kind()?,
                payload: Payload::from_raw(wire.p.ok_or_else(|| bad("relay without payload"))?),
                opens_call: wire.o,
            },
            'h' => Remote::HangUp {
                end: wire
                    .h
                    .and_then(end_from)
                    .ok_or_else(|| bad("missing or unknown call end"))?,
            },
            'p' => Remote::Probe {
                kind: kind()?,
                busy_first: wire.o,
                code: code()?,
                message: wire.m.clone().map(Cow::into_owned).unwrap_or_default(),
            },
            'e' => Remote::Echo {
                back: wire.o,
                code: code()?,
                message: wire.m.clone().map(Cow::into_owned).unwrap_or_default(),
            },
            'c' => Remote::CallCheck,
            'x' => Remote::Refused {
                kind: kind()?,
                opened: wire.o,
                code: code()?,
                message: wire.m.map(Cow::into_owned).unwrap_or_default(),
            },
            _ => return Err(bad("unknown body")),
        };
        Ok(Envelope { from, to, body })
    }
}

/// A relay exactly as [`Envelope::encode_into`] writes it, with names that need no escape,
/// read without serde: what `decode_wire` would make of the same bytes, or `None` for
/// anything else (which `decode_wire` then reads, or refuses). The payload is still checked to
/// be one JSON value.
fn decode_relay(bytes: &[u8]) -> Option<Envelope> {
    /// A JSON string's contents up to its closing quote, if it holds no escape or control
    /// character; and what follows the quote.
    fn plain(bytes: &[u8]) -> Option<(&str, &[u8])> {
        let end = bytes
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        let (text, rest) = bytes.split_at_checked(end)?;
        let rest = rest.strip_prefix(b"\"")?;
        Some((std::str::from_utf8(text).ok()?, rest))
    }
    let rest = bytes.strip_prefix(b"{\"f\":\"")?;
    let (from, rest) = plain(rest)?;
    let rest = rest.strip_prefix(b",\"t\":\"")?;
    let (to, rest) = plain(rest)?;
    let rest = rest.strip_prefix(b",\"b\":\"r\",\"k\":\"")?;
    let (kind, rest) = plain(rest)?;
    let (opens_call, rest) = match rest.strip_prefix(b",\"o\":true,\"p\":") {
        Some(rest) => (true, rest),
        None => (false, rest.strip_prefix(b",\"p\":")?),
    };
    let payload = std::str::from_utf8(rest.strip_suffix(b"}")?).ok()?;
    let payload: &RawValue = serde_json::from_str(payload).ok()?;
    Some(Envelope {
        from: Username::new(from).ok()?,
        to: Username::new(to).ok()?,
        body: Remote::Relay {
            kind: kind_from(kind)?,
            payload: Payload::from_raw(payload),
            opens_call,
        },
    })
}

/// A resumable session on its way from one node to another: everything its new node needs
/// to go on as if it had always been there — the name and its skeleton, the token it was
/// resumed with, its numbering and the messages it keeps (with their original `seq`), its
/// side of a call and its redial back-offs. Made by
/// [`Router::handle_handover`](crate::Router::handle_handover) or
/// [`Router::handle_evacuate`](crate::Router::handle_evacuate), installed by
/// [`Router::handle_imported`](crate::Router::handle_imported); between nodes it travels as
/// the bytes of [`encode`](Self::encode).
///
/// Times are kept relative to the moment of the export (the nodes' clocks are not compared):
/// a ringing call's ring timeout as the time it had left, a back-off as how long it had to
/// run (or how long ago it ended). A backend that keeps an export for a while tells it how
/// long with [`age`](Self::age).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionExport {
    pub(crate) name: Username,
    pub(crate) skeleton: Arc<str>,
    pub(crate) token: SessionToken,
    pub(crate) seq: u64,
    pub(crate) sent: u64,
    pub(crate) history: Vec<(u64, ServerMessage)>,
    pub(crate) call: Option<ExportedCall>,
    pub(crate) redials: Vec<ExportedRedial>,
}

/// A session's side of a call, in a [`SessionExport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportedCall {
    pub(crate) peer: Username,
    pub(crate) caller: bool,
    pub(crate) answered: bool,
    pub(crate) offers: u32,
    pub(crate) candidates: u32,
    /// The caller's ring timeout, while the call rings: the time it had left.
    pub(crate) ring: Option<Duration>,
}

/// A redial back-off, in a [`SessionExport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportedRedial {
    pub(crate) callee: Username,
    /// When it ends, in nanoseconds from the export: ahead (positive) or past.
    pub(crate) until: i64,
    pub(crate) strikes: u32,
}

/// `at` as nanoseconds from `now` (negative: before), saturating.
pub(crate) fn offset_from(at: Instant, now: Instant) -> i64 {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    if at >= now {
        nanos(at - now)
    } else {
        -nanos(now - at)
    }
}

/// The instant `offset` nanoseconds from `now` (`now` itself if the platform's clock cannot
/// hold it).
pub(crate) fn instant_at(now: Instant, offset: i64) -> Instant {
    let by = Duration::from_nanos(offset.unsigned_abs());
    if offset >= 0 {
        now.checked_add(by)
    } else {
        now.checked_sub(by)
    }
    .unwrap_or(now)
}

/// An export that could not be decoded (a bug, or something else writing to our keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable session export: {0}")]
pub struct ExportError(String);

/// The wire form of a [`SessionExport`]. The history is kept as the frames the session was
/// sent, decoded again with [`ServerMessage::from_json`]: the protocol's own encoding (one
/// writer and one reader to keep in step, tested against each other), rather than a second
/// serde description of every message shape; a relayed payload stays the sender's bytes.
#[derive(Serialize, Deserialize)]
struct ExportWire {
    name: String,
    skeleton: String,
    token: String,
    seq: u64,
    sent: u64,
    history: Vec<(u64, Box<RawValue>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call: Option<CallWire>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    redials: Vec<(String, i64, u32)>,
}

#[derive(Serialize, Deserialize)]
struct CallWire {
    peer: String,
    caller: bool,
    answered: bool,
    offers: u32,
    candidates: u32,
    /// Nanoseconds of ring timeout left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ring: Option<u64>,
}

impl SessionExport {
    /// The session's name.
    pub fn name(&self) -> &Username {
        &self.name
    }

    /// The name's confusable skeleton (what its lease holds beside the name).
    pub fn skeleton(&self) -> &str {
        &self.skeleton
    }

    /// The token the session was issued last (spent once a resume installs the session).
    pub fn token(&self) -> &SessionToken {
        &self.token
    }

    /// The last `seq` the session gave out.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether a `resume` with `last_seq` from a connection verified as `verified` (if any)
    /// may take this session, with the refusal a single node would give (`unauthorized`,
    /// `invalid_last_seq`, `history_lost`). The router checks the same when it installs the
    /// export; a backend that keeps exports checks first so that a refusal that changes
    /// nothing (all but `history_lost`) leaves the export where it is.
    ///
    /// # Errors
    ///
    /// The refusal's code and message.
    pub fn check_resume(
        &self,
        last_seq: u64,
        verified: Option<&Username>,
    ) -> Result<(), (ErrorCode, String)> {
        if verified.is_some_and(|v| *v != self.name) {
            return Err(crate::router::unauthorized_resume());
        }
        let first_kept = self.history.first().map_or(self.seq + 1, |(seq, _)| *seq);
        match resume_refusal(self.seq, first_kept, last_seq) {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// `elapsed` has passed since the export (it waited in a store): a ringing call has that
    /// much less to ring, back-offs that much less to run.
    pub fn age(&mut self, elapsed: Duration) {
        if let Some(ring) = self.call.as_mut().and_then(|c| c.ring.as_mut()) {
            *ring = ring.saturating_sub(elapsed);
        }
        let nanos = i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX);
        for redial in &mut self.redials {
            redial.until = redial.until.saturating_sub(nanos);
        }
    }

    /// The bytes to carry to another node (JSON).
    pub fn encode(&self) -> Vec<u8> {
        let wire = ExportWire {
            name: self.name.as_str().to_owned(),
            skeleton: self.skeleton.to_string(),
            token: self.token.as_str().to_owned(),
            seq: self.seq,
            sent: self.sent,
            history: self
                .history
                .iter()
                .filter_map(|(seq, message)| {
                    // The encoder makes valid JSON: this never skips one.
                    RawValue::from_string(message.to_json())
                        .ok()
                        .map(|raw| (*seq, raw))
                })
                .collect(),
            call: self.call.as_ref().map(|c| CallWire {
                peer: c.peer.as_str().to_owned(),
                caller: c.caller,
                answered: c.answered,
                offers: c.offers,
                candidates: c.candidates,
                ring: c
                    .ring
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            }),
            redials: self
                .redials
                .iter()
                .map(|r| (r.callee.as_str().to_owned(), r.until, r.strikes))
                .collect(),
        };
        // Strings, numbers and raw JSON into a Vec: cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Decodes what [`encode`](Self::encode) made.
    ///
    /// # Errors
    ///
    /// [`ExportError`] for bytes that are not an export (never a panic).
    pub fn decode(bytes: &[u8]) -> Result<SessionExport, ExportError> {
        let bad = |what: &str| ExportError(what.to_owned());
        let wire: ExportWire =
            serde_json::from_slice(bytes).map_err(|e| ExportError(e.to_string()))?;
        let name = |n: &str| Username::new(n).map_err(|_| bad("invalid name"));
        let mut history = Vec::with_capacity(wire.history.len());
        for (seq, raw) in &wire.history {
            let (message, _) =
                ServerMessage::from_json(raw.get()).map_err(|e| ExportError(e.to_string()))?;
            history.push((*seq, message));
        }
        let call = match wire.call {
            Some(c) => Some(ExportedCall {
                peer: name(&c.peer)?,
                caller: c.caller,
                answered: c.answered,
                offers: c.offers,
                candidates: c.candidates,
                ring: c.ring.map(Duration::from_nanos),
            }),
            None => None,
        };
        let mut redials = Vec::with_capacity(wire.redials.len());
        for (callee, until, strikes) in &wire.redials {
            redials.push(ExportedRedial {
                callee: name(callee)?,
                until: *until,
                strikes: *strikes,
            });
        }
        Ok(SessionExport {
            name: name(&wire.name)?,
            skeleton: Arc::from(wire.skeleton),
            token: SessionToken::new(wire.token),
            seq: wire.seq,
            sent: wire.sent,
            history,
            call,
            redials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Username {
        Username::new(s).unwrap()
    }

    #[test]
    fn every_body_survives_encoding() {
        let bodies = [
            Remote::Relay {
                kind: RelayKind::Offer,
                payload: Payload::from_json(r#"{"sdp":"v=0\r\n","type":"offer"}"#).unwrap(),
                opens_call: true,
            },
            Remote::Relay {
                kind: RelayKind::Candidate,
                payload: Payload::from_json("null").unwrap(),
                opens_call: false,
            },
            Remote::HangUp {
                end: CallEnd::Declined,
            },
            Remote::HangUp {
                end: CallEnd::NoAnswer,
            },
            Remote::Probe {
                kind: RelayKind::Candidate,
                busy_first: true,
                code: ErrorCode::RedialTooSoon,
                message: "retry in 3 s".to_owned(),
            },
            Remote::Echo {
                back: true,
                code: ErrorCode::UnknownType,
                message: "unknown type \"x\"".to_owned(),
            },
            Remote::CallCheck,
            Remote::Refused {
                kind: RelayKind::Answer,
                opened: false,
                code: ErrorCode::NotInCall,
                message: "cannot send \"answer\" to \u{e9}\n".to_owned(),
            },
        ];
        for body in bodies {
            let envelope = Envelope {
                from: name("al\"ice\u{301}"),
                to: name("bob"),
                body,
            };
            let bytes = envelope.encode();
            assert_eq!(Envelope::decode(&bytes).unwrap(), envelope);
        }
    }

    #[test]
    fn a_relay_is_written_as_the_wire_struct_would_be() {
        for (kind, opens_call, payload) in [
            (
                RelayKind::Offer,
                true,
                r#"{"sdp":"v=0\r\n","type":"offer"}"#,
            ),
            (RelayKind::Candidate, false, "null"),
            (RelayKind::Answer, false, r#" [1, "\u00e9"] "#),
        ] {
            let envelope = Envelope {
                from: name("al\"ice\u{301}"),
                to: name("b\\ob"),
                body: Remote::Relay {
                    kind,
                    payload: Payload::from_json(payload).unwrap(),
                    opens_call,
                },
            };
            let wire = Wire {
                f: Cow::Borrowed(envelope.from.as_str()),
                t: Cow::Borrowed(envelope.to.as_str()),
                b: 'r',
                k: Some(kind.as_str()),
                o: opens_call,
                p: Some(serde_json::from_str(payload).unwrap()),
                h: None,
                c: None,
                m: None,
            };
            assert_eq!(envelope.encode(), serde_json::to_vec(&wire).unwrap());
        }
    }

    #[test]
    fn the_direct_relay_reading_agrees_with_the_wire_struct() {
        let relay = |from: &str, kind: &str, o: &str, payload: &str| {
            format!(r#"{{"f":"{from}","t":"bob","b":"r","k":"{kind}"{o},"p":{payload}}}"#)
        };
        let mut cases = Vec::new();
        for payload in [
            "null",
            "1",
            r#"{"candidate":"candidate:1 1 udp 2 10.0.0.1 9 typ host","sdpMid":"0"}"#,
            r#" [1, "\u00e9\"}"] "#,
            r#"{"a":1}}"#,
            r#"1,"m":"x""#,
            r#"{"a":1"#,
            "",
        ] {
            for (from, kind, o) in [
                ("alice", "candidate", ""),
                ("z\u{f6}e", "offer", r#","o":true"#),
                ("al\\\"ice", "answer", ""),
                ("alice", "hello", ""),
                ("", "offer", ""),
                ("alice", "offer", r#","o":false"#),
            ] {
                cases.push(relay(from, kind, o, payload));
            }
        }
        cases.push(relay("a\u{1}b", "offer", "", "1"));
        cases.push(relay("alice", "offer", "", "1") + " ");
        let mut direct = 0;
        for text in &cases {
            let bytes = text.as_bytes();
            let wire = Envelope::decode_wire(bytes);
            match decode_relay(bytes) {
                Some(envelope) => {
                    direct += 1;
                    assert_eq!(Ok(envelope), wire, "{text}");
                }
                None => assert_eq!(Envelope::decode(bytes), wire, "{text}"),
            }
        }
        assert!(direct >= 6, "{direct}");
    }

    #[test]
    fn a_payload_is_spliced_in_unchanged() {
        let payload = r#"{ "sdp" : "v=0",  "x":[1,2.50] }"#;
        let envelope = Envelope {
            from: name("alice"),
            to: name("bob"),
            body: Remote::Relay {
                kind: RelayKind::Offer,
                payload: Payload::from_json(payload).unwrap(),
                opens_call: false,
            },
        };
        let text = String::from_utf8(envelope.encode()).unwrap();
        assert!(text.contains(payload), "{text}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"null",
            b"{}",
            br#"{"f":"a","t":"b","b":"r"}"#,
            br#"{"f":"a","t":"b","b":"r","k":"hello","p":1}"#,
            br#"{"f":"","t":"b","b":"h"}"#,
            br#"{"f":"a","t":"b","b":"h","h":"later"}"#,
            br#"{"f":"a","t":"b","b":"h"}"#,
            br#"{"f":"a","t":"b","b":"x","k":"offer","c":"nope"}"#,
            br#"{"f":"a","t":"b","b":"z"}"#,
            b"\xff\xfe",
        ] {
            assert!(Envelope::decode(bytes).is_err(), "{bytes:?}");
        }
    }
}
