//! Error codes sent to clients, and the errors a caller of the router can cause.

use std::fmt;

use crate::ConnectionId;

/// A stable, machine-readable reason carried in `{"type":"error","code":…}` (and in a failed
/// login's `code`). The string forms are part of the wire protocol and never change; new codes
/// may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not valid JSON (this includes an empty frame).
    InvalidJson,
    /// The frame is valid JSON but not an object (`null`, `[]`, `42`, `"x"`).
    NotAnObject,
    /// The object is malformed in a way no single field explains (e.g. a duplicate key).
    InvalidMessage,
    /// A required field is missing; the message names it.
    MissingField,
    /// A field has the wrong JSON type; the message names it.
    InvalidField,
    /// The `type` is not one this server knows.
    UnknownType,
    /// A binary frame arrived; the protocol is text only.
    BinaryNotSupported,
    /// The `username` (or `otherUsername`) is empty, too long, holds control, invisible
    /// (format), private-use or unassigned characters, or starts or ends with white space.
    InvalidUsername,
    /// Login refused: the name, or a name that looks like it (Unicode TR39 confusables),
    /// belongs to another live connection.
    NameTaken,
    /// Login refused: this connection is already logged in.
    AlreadyLoggedIn,
    /// Login refused: the connection is bound to a verified name and asked for another.
    Unauthorized,
    /// Anything but `login` from a connection that has not logged in.
    NotLoggedIn,
    /// The addressee is not logged in (unknown, or gone).
    UnknownUser,
    /// The message is addressed to the sender itself.
    SelfAddressed,
    /// The offer's addressee is in a call (or being called) with someone else.
    Busy,
    /// The sender is already in a call with someone else; it must `close` first.
    InCall,
    /// An answer, candidate or close outside a call with the named user.
    NotInCall,
    /// The connection sends faster than the configured rate limit allows.
    RateLimited,
    /// The message is larger than the server accepts.
    MessageTooLarge,
    /// The addressee is not reading fast enough: its queue is full, so this relay was
    /// refused to its sender (the addressee is not disconnected for it). Retry later.
    RecipientOverloaded,
    /// The server's memory budget for queued messages is nearly used up: relays are refused
    /// to their senders until it drains. Retry later.
    ServerOverloaded,
    /// The server hit an internal fault while handling the message.
    Internal,
    /// Before the callee answers, the sender went over a bound on what may be sent into the
    /// call (offers, candidates, candidate size); the message was dropped. The bounds lift once
    /// the call is answered.
    UnansweredLimit,
    /// An offer to a callee who declined or did not answer this caller's last offers, before
    /// the back-off is over (it doubles with each further decline or ring-out); the message
    /// says when to retry.
    RedialTooSoon,
    /// `resume` refused: the token is unknown, already spent (tokens rotate on every resume)
    /// or its session has expired. Nothing changed; log in afresh.
    InvalidToken,
    /// `resume` refused: the messages after `lastSeq` are no longer kept, so they cannot be
    /// repaired. The session has been ended (its name freed, its partner told `close`); log
    /// in afresh.
    HistoryLost,
    /// `resume` refused: `lastSeq` is higher than any sequence number the session sent.
    /// Nothing changed.
    InvalidLastSeq,
    /// A shared component the request needs cannot be reached (cluster mode: Redis): the
    /// login or message was not handled; retry later. Nothing else changed.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidJson,
        ErrorCode::NotAnObject,
        ErrorCode::InvalidMessage,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::UnknownType,
        ErrorCode::BinaryNotSupported,
        ErrorCode::InvalidUsername,
        ErrorCode::NameTaken,
        ErrorCode::AlreadyLoggedIn,
        ErrorCode::Unauthorized,
        ErrorCode::NotLoggedIn,
        ErrorCode::UnknownUser,
        ErrorCode::SelfAddressed,
        ErrorCode::Busy,
        ErrorCode::InCall,
        ErrorCode::NotInCall,
        ErrorCode::RateLimited,
        ErrorCode::MessageTooLarge,
        ErrorCode::RecipientOverloaded,
        ErrorCode::ServerOverloaded,
        ErrorCode::Internal,
        ErrorCode::UnansweredLimit,
        ErrorCode::RedialTooSoon,
        ErrorCode::InvalidToken,
        ErrorCode::HistoryLost,
        ErrorCode::InvalidLastSeq,
        ErrorCode::Unavailable,
    ];

    /// The wire string, e.g. `"unknown_user"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::NotAnObject => "not_an_object",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::InvalidUsername => "invalid_username",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::AlreadyLoggedIn => "already_logged_in",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotLoggedIn => "not_logged_in",
            ErrorCode::UnknownUser => "unknown_user",
            ErrorCode::SelfAddressed => "self_addressed",
            ErrorCode::Busy => "busy",
            ErrorCode::InCall => "in_call",
            ErrorCode::NotInCall => "not_in_call",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::RecipientOverloaded => "recipient_overloaded",
            ErrorCode::ServerOverloaded => "server_overloaded",
            ErrorCode::Internal => "internal",
            ErrorCode::UnansweredLimit => "unanswered_limit",
            ErrorCode::RedialTooSoon => "redial_too_soon",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::HistoryLost => "history_lost",
            ErrorCode::InvalidLastSeq => "invalid_last_seq",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// Parses a wire string back into a code.
    pub fn from_wire(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mistake by the code driving the [`Router`](crate::Router) (never by a client: client
/// mistakes become `error` replies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// `handle_connect` with an id that is already live.
    #[error("connection {0} is already connected")]
    AlreadyConnected(ConnectionId),
    /// An input for an id that is not live (never connected, or already disconnected).
    #[error("connection {0} is not connected")]
    UnknownConnection(ConnectionId),
}
