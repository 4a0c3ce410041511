//! # signaling-core
//!
//! The heart of the `signaling` WebRTC signaling server: the wire protocol of the classic
//! WebRTC tutorial (`login`, `offer`, `answer`, `candidate`, `close`), a registry of logged-in
//! users, and a **pure routing state machine**, [`Router`].
//!
//! The router does no network IO, spawns no tasks, takes no locks and never reads the clock
//! (time is an argument). Frames go in through `handle_*`, addressed messages come out of
//! [`Router::poll_output`]. That makes every rule testable with plain `#[test]`s and property
//! tests, and lets any transport drive it: the `signaling-ws` (tokio-tungstenite) and
//! `signaling-warp` adapters both do, through one shared connection driver (the `driver`
//! feature of this crate, which is the only part that depends on tokio).
//!
//! ```
//! use std::time::Instant;
//! use signaling_core::{ConnectionId, Output, Router, RouterConfig};
//!
//! let mut router = Router::new(RouterConfig::default());
//! let (alice, bob) = (ConnectionId(1), ConnectionId(2));
//! let now = Instant::now(); // the caller reads the clock, never the router
//! router.handle_connect(alice)?;
//! router.handle_connect(bob)?;
//! router.handle_text(alice, r#"{"type":"login","username":"alice"}"#, now)?;
//! router.handle_text(bob, r#"{"type":"login","username":"bob"}"#, now)?;
//! router.handle_text(alice, r#"{"type":"offer","offer":{"sdp":"v=0"},"otherUsername":"bob"}"#, now)?;
//!
//! // Drain after every input and hand each output to its connection.
//! let mut frames = Vec::new();
//! while let Some(output) = router.poll_output() {
//!     match output {
//!         Output::Transmit(t) => frames.push((t.to, t.into_frame())),
//!         Output::Disconnect { conn, reason } => println!("close {conn}: {}", reason.code()),
//!         Output::Event(event) => println!("{event:?}"), // what happened: logins, calls…
//!         _ => {} // the enum is non-exhaustive
//!     }
//! }
//! assert_eq!(frames.last().unwrap(), &(
//!     bob,
//!     r#"{"type":"offer","offer":{"sdp":"v=0"},"username":"alice"}"#.to_string(),
//! ));
//! # Ok::<(), signaling_core::RouterError>(())
//! ```
//!
//! The protocol, every error code and the call rules are described in `docs/protocol.md`.
//!
//! Time-driven rules (a resumable session's grace period, a call that rings out) stay pure:
//! after each input ask [`Router::poll_timeout`] when to come back and then call
//! [`Router::handle_timeout`]. Sessions, not connections, hold names and calls, so a
//! resumable session survives a network drop (`handle_connection_lost`) and is taken back
//! with a `resume` message on a new connection.
//!
//! ## What this crate does not do
//!
//! No sockets, no TLS, no timers of its own, no randomness (session tokens come from a
//! [`TokenSource`] the driver hands in), no WebSocket framing. Size limits, heartbeats, connection caps
//! and authentication live in the driver and the adapters.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod cluster;
#[cfg(feature = "driver")]
pub mod driver;
pub mod error;
pub mod protocol;
pub mod router;
mod scan;

pub use error::{ErrorCode, RouterError};
pub use protocol::{
    ClientMessage, DecodeError, HangUpReason, IceServerList, MAX_USERNAME_CHARS, Payload,
    RelayKind, ReplyType, ServerMessage, ServerMessageError, SessionToken, Username, UsernameError,
};
pub use router::{
    CallEnd, ClaimOutcome, ConnectionId, DisconnectReason, Evacuated, Event, Output, RateLimit,
    RedialBackoff, Router, RouterConfig, SessionConfig, SessionEnd, TokenSource, Transmit,
    UnansweredLimits,
};
