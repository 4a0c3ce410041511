//! The transport-agnostic connection driver (feature `driver`): the one place that binds the
//! pure [`Router`] to live WebSocket connections.
//!
//! Every adapter (`signaling-ws` for tokio-tungstenite, `signaling-warp` for warp, the
//! in-memory transport `driver::memory` of the `memory` feature, for tests) hands its upgraded
//! socket to [`Hub::serve_connection`]; the only code an adapter writes is a [`Transport`]: how
//! its message type maps to the driver's [`Inbound`] and [`Outbound`] frames (a page of code).
//!
//! Before a socket is upgraded, adapters ask [`Hub::admit`] with an [`UpgradeRequest`] (the
//! request's path, query, headers and peer address). It refuses with an HTTP status — never
//! by accepting and dropping — when the server is shutting down (503), the `Origin` is not in
//! [`Config::allowed_origins`] (403), [`Config::max_connections`] (503) or
//! [`Config::max_connections_per_ip`] (429) is reached, or the [`auth::Authenticator`] says no
//! (401/403). An accepted request holds a connection slot, given back by a guard when the
//! connection ends however it ends (a failed handshake, a panic, a cancelled task), and may
//! carry a verified username that the connection can only log in as.
//!
//! Per connection the driver runs, in one task:
//!
//! - a **read loop** that feeds text and binary frames to the router (under the [`Hub`]'s lock,
//!   held only for the synchronous call) and closes with **1009** when a message is larger
//!   than [`Config::max_message_size`]. While the connection's own queue is half full it
//!   stops reading, so a client that pipelines requests without reading the replies gets TCP
//!   backpressure rather than a disconnect;
//! - a **write loop** that drains a **bounded** outbound queue: the router's messages are
//!   queued with a non-blocking push, encoded with [`ServerMessage::to_json`] outside every
//!   lock, fed to the socket in batches and flushed once per batch. The queue's bounds count
//!   the batch being written. **The sender pays for its traffic**: once a queue is three
//!   quarters full the router is told ([`Router::handle_backpressure`]) and refuses relays to
//!   that client to their senders (`recipient_overloaded`) until it drains to a quarter; the
//!   slow client keeps its connection. Only a write that makes no progress for
//!   [`Config::write_stall_timeout`] drops it (its partner is told, its name freed).
//!   A sender's read loop writes what it queued for another connection **straight into
//!   that connection's socket** once it has no more frames at hand, when that connection's
//!   writer is idle and the socket takes it all without waiting — one write for a burst, and
//!   no wake-up of the receiver's task; otherwise (the writer is busy, a ping or a close is
//!   due, the socket is full) it wakes the writer, which writes the rest in order. The queue's
//!   order and bounds are the same either way: one writer at a time, the outbox decides who;
//! - a **global budget** ([`Config::max_total_queued_bytes`]) over all queues: from 90 % of it
//!   the router refuses every relay (`server_overloaded`, [`Router::handle_overload`]); over
//!   it the connections with the largest queues are dropped, largest first;
//! - a **heartbeat**: a ping with an unpredictable payload every [`Config::ping_interval`]; a
//!   connection that has not echoed it within [`Config::pong_timeout`] is dropped (an
//!   unsolicited pong does not prove that a client reads). Pings and pongs from the client
//!   count against the rate limit ([`Router::handle_control`]);
//! - a **login deadline**: a connection not logged in after [`Config::login_timeout`] is closed
//!   with 1008. Until it logs in it holds one of the [`Config::max_not_logged_in`] slots.
//!
//! - **sessions**: the hub hands the router a CSPRNG token source ([`OsTokens`]) for
//!   resumable logins, and runs **one timer task** for all of the router's deadlines (grace
//!   periods, ring timeouts: [`Router::poll_timeout`], [`Router::handle_timeout`]), not one
//!   per connection. The writer notes the `seq` of the last session message written before
//!   each ping; the echo of that ping acknowledges it ([`Router::handle_acknowledged`]), so
//!   the history kept for a resume holds only what may not have arrived. What sessions keep
//!   counts in the global budget.
//!
//! Close codes the driver sends: 1001 on shutdown and on a heartbeat timeout (1012 on shutdown,
//! in cluster mode, for a connection whose resumable session was kept for another node), 1008
//! on the login
//! deadline and when the router asks (rate limit), 1009 for an oversize message, 4000 when a
//! `resume` took the connection's session elsewhere, 4001 when a `resume` elsewhere ended it
//! (`history_lost`), 1013 for a socket handed to
//! [`Hub::serve_connection`] over the caps (see [`CloseFrame`]). A client dropped for a
//! stalled write or over the budget gets no close frame: it is not reading.
//!
//! Teardown tells the router exactly once per connection how it ended, from a drop guard, so a
//! connection task that panics or is cancelled still frees its name (or suspends its session)
//! and tells its partner; one connection's panic never reaches another. A **clean** end — the
//! client's close frame, a close frame the server sent, an oversize message — is
//! [`Router::handle_disconnect`]: the session ends. A **lost** connection — the stream ends
//! without a close frame (a reset), a read or write error, a stalled write, a heartbeat
//! timeout, a queue dropped over the budget, a panic — is [`Router::handle_connection_lost`]:
//! a resumable session waits for its grace period, any other ends. [`Hub::shutdown`] stops accepting,
//! lets queued messages drain, sends every client a 1001 close frame and returns once they are
//! gone (bounded by [`Config::shutdown_timeout`]).
//!
//! # Who owns the router
//!
//! A `std::sync::Mutex<Router>` inside the [`Hub`], locked by each connection's own task only
//! around the synchronous `handle_*` call and the non-blocking dispatch of its outputs (no
//! `await` while locked). The alternative, a router task that connections message through a
//! channel, measured about half as fast: 100 pairs relaying 200,000 candidates through the
//! router into bounded per-connection queues (release build, multi-thread runtime with 2
//! workers, the 2-core reference machine while other builds ran; medians of 5 interleaved
//! runs, two sessions): lock 432k and 424k messages/s, router task 202k and 184k messages/s
//! (`cargo run --release --example router_ownership` in the repository). The lock saves a
//! task hand-off (a channel hop and a wake-up) per message; its critical section is the parse
//! and route of one message, a few microseconds.
//!
//! # Example: an in-memory transport
//!
//! ```
//! use signaling_core::driver::{Inbound, Outbound, Transport};
//!
//! /// Every frame is a plain string: incoming ones are all text; outgoing pings and closes
//! /// become `"ping"` and `"close:1001"`.
//! struct Strings;
//!
//! impl Transport for Strings {
//!     type Message = String;
//!     type Error = std::io::Error;
//!     fn inbound(message: &String) -> Inbound<'_> {
//!         Inbound::Text(message)
//!     }
//!     fn outbound(frame: Outbound) -> String {
//!         match frame {
//!             Outbound::Text(text) => text,
//!             Outbound::Ping(_) => "ping".to_string(),
//!             Outbound::Close(close) => format!("close:{}", close.code),
//!             _ => String::new(), // the enum is non-exhaustive
//!         }
//!     }
//! }
//! ```
//!
//! A socket is any `Stream<Item = Result<Message, Error>> + Sink<Message, Error = Error>`;
//! `hub.serve_connection::<Strings, _>(socket, ConnectionInfo::new()).await` runs it to its end.

mod admission;
pub mod auth;
pub mod cluster;
mod config;
mod connection;
mod guards;
mod heartbeat;
mod hub;
pub mod ice;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod observe;
mod outbox;
mod tokens;
mod transport;

#[cfg(doc)]
use crate::protocol::ServerMessage;
#[cfg(doc)]
use crate::router::Router;
pub use admission::{Admission, PendingRequest, Refusal, UpgradeRequest};
pub use config::Config;
pub use hub::Hub;
/// The CIDR type of [`Config::trusted_proxies`], re-exported so that users need not match its
/// version.
pub use ipnet;
pub use tokens::{OsTokens, token_node};
pub use transport::{CloseFrame, ConnectionInfo, Inbound, Outbound, Transport};
