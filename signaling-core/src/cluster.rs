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

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ErrorCode;
use crate::protocol::{Payload, RelayKind, Username};
use crate::router::CallEnd;

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
    /// `r` relay, `h` hang-up, `p` probe, `e` echo, `x` refused.
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
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Decodes what [`encode`](Self::encode) made.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] for bytes that are not an envelope (never a panic).
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
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
