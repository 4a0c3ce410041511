//! The per-connection outbound queue: bounded in messages and bytes, counted against the hub's
//! global budget, drained by the connection's writer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::future::Either;
use tokio::sync::Notify;

use super::heartbeat::{Heartbeat, Liveness};
use super::observe::DisconnectCause;
use super::{CloseFrame, Config};
use crate::router::Transmit;

/// What the hub asks of a connection's writer besides sending messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Send what is queued, then this close frame.
    Close(CloseFrame),
    /// Drop the connection now, without flushing anything (the client does not read).
    Abort,
}

/// A deadline that passed: one byte in every outbox rather than a whole close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deadline {
    /// The client did not answer a ping in time.
    Heartbeat,
    /// The client did not log in in time.
    Login,
}

impl Deadline {
    fn close_frame(self) -> CloseFrame {
        match self {
            Deadline::Heartbeat => CloseFrame::HEARTBEAT_TIMEOUT,
            Deadline::Login => CloseFrame::LOGIN_TIMEOUT,
        }
    }
}

/// What an empty queue's buffer holds when its first message arrives.
const FIRST_CAPACITY: usize = 16;

#[derive(Debug)]
struct Queue {
    messages: VecDeque<Transmit>,
    /// Encoded size of `messages`.
    queued_bytes: usize,
    /// Messages (and their bytes) the writer took and has not finished writing: they still
    /// count against the bounds.
    in_flight: usize,
    in_flight_bytes: usize,
    end: Option<End>,
    /// The hub's timers ask for a heartbeat ping with this payload.
    ping: Option<[u8; 8]>,
    /// The connection's timers (run by the hub's timer task).
    heartbeat: Heartbeat,
    /// A deadline passed (heartbeat or login): the connection's task closes with this frame.
    expired: Option<Deadline>,
    /// The router was told this queue is full (relays to it are refused); cleared once the
    /// queue drains to a quarter.
    congested: bool,
}

impl Queue {
    fn len(&self) -> usize {
        self.messages.len() + self.in_flight
    }

    fn bytes(&self) -> usize {
        self.queued_bytes + self.in_flight_bytes
    }

    /// At most `numerator/4` of both bounds is taken.
    fn within(&self, quarters: usize, config: &Config) -> bool {
        self.len() <= config.max_queued_messages / 4 * quarters
            && self.bytes() <= config.max_queued_bytes / 4 * quarters
    }
}

/// A bounded queue of messages for one connection. Holds no allocation while empty.
#[derive(Debug)]
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the writer: a message or an end request arrived.
    pub(super) wake: Notify,
    /// Wakes the connection task to end now: to drop everything (`End::Abort`), or to close
    /// because a deadline passed ([`expired`](Self::expired)).
    pub(super) stop: Notify,
    /// What the read loop and the hub's timers know of the client's liveness.
    pub(super) liveness: Liveness,
    /// Wakes a reader waiting for its own queue to drain.
    drained: Notify,
    /// The hub's count of bytes queued for all connections (the global budget).
    total: Arc<AtomicUsize>,
}

/// The queue is full.
pub(super) struct Full;

/// What a push changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    Queued,
    /// Queued, and the queue is now three quarters full: tell the router.
    Congested,
}

impl Outbox {
    pub(super) fn new(total: Arc<AtomicUsize>, heartbeat: Heartbeat, liveness: Liveness) -> Self {
        Outbox {
            queue: Mutex::new(Queue {
                messages: VecDeque::new(),
                queued_bytes: 0,
                in_flight: 0,
                in_flight_bytes: 0,
                end: None,
                ping: None,
                heartbeat,
                expired: None,
                congested: false,
            }),
            wake: Notify::new(),
            stop: Notify::new(),
            liveness,
            drained: Notify::new(),
            total,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes queued or being written.
    pub(super) fn bytes(&self) -> usize {
        self.lock().bytes()
    }

    pub(super) fn push(&self, message: Transmit, config: &Config) -> Result<Pushed, Full> {
        let len = message.message.size_hint();
        let mut q = self.lock();
        if q.end.is_some() {
            return Ok(Pushed::Queued); // closing: late messages are dropped
        }
        if q.len() >= config.max_queued_messages
            || q.bytes().saturating_add(len) > config.max_queued_bytes
        {
            return Err(Full);
        }
        let was_empty = q.messages.is_empty();
        if q.messages.capacity() == 0 {
            // Room for a burst at once: growing from nothing takes three reallocations to
            // reach sixteen (callgrind: ~100 instructions a relay under load).
            q.messages.reserve(FIRST_CAPACITY);
        }
        q.messages.push_back(message);
        q.queued_bytes += len;
        self.total.fetch_add(len, Ordering::Relaxed);
        let congested = !q.congested && !q.within(3, config);
        q.congested |= congested;
        drop(q);
        if was_empty {
            self.wake.notify_one();
        }
        Ok(if congested {
            Pushed::Congested
        } else {
            Pushed::Queued
        })
    }

    /// Asks the writer to drain and close. The first request wins.
    pub(super) fn close(&self, close: CloseFrame) {
        let mut q = self.lock();
        if q.end.is_none() {
            q.end = Some(End::Close(close));
            drop(q);
            self.wake.notify_one();
        }
    }

    /// Drops what is queued and not yet taken by the writer (it is replayed on the
    /// connection that resumed the session) and asks the writer to close. The first request
    /// wins.
    pub(super) fn close_discarding(&self, close: CloseFrame) {
        let mut q = self.lock();
        if q.end.is_none() {
            let dropped = std::mem::take(&mut q.queued_bytes);
            self.total.fetch_sub(dropped, Ordering::Relaxed);
            q.messages = VecDeque::new();
            q.end = Some(End::Close(close));
            drop(q);
            self.wake.notify_one();
        }
    }

    /// What the hub asked of the writer besides messages, if anything.
    pub(super) fn end(&self) -> Option<End> {
        self.lock().end
    }

    /// Why the connection ends, as far as the hub's requests say: the close frame it asked
    /// for, or an abort (the shutdown's deadline when `killed`, an overflowing queue otherwise).
    pub(super) fn end_cause(&self, killed: bool) -> Option<DisconnectCause> {
        match self.end()? {
            End::Close(close) => Some(DisconnectCause::of_close(&close)),
            End::Abort if killed => Some(DisconnectCause::Shutdown),
            End::Abort => Some(DisconnectCause::QueueOverflow),
        }
    }

    pub(super) fn abort(&self) {
        let mut q = self.lock();
        q.end = Some(End::Abort);
        q.messages = VecDeque::new();
        self.release(&mut q);
        drop(q);
        self.stop.notify_one();
        self.wake.notify_one();
    }

    /// A deadline passed: asks the connection's task to close with its close frame (the first
    /// one wins; an abort wins over it).
    pub(super) fn expire(&self, deadline: Deadline) {
        let mut q = self.lock();
        if q.expired.is_none() {
            q.expired = Some(deadline);
            drop(q);
            self.stop.notify_one();
        }
    }

    /// Why the connection's task was stopped: the close frame of a deadline that passed, or
    /// `None` for an abort.
    pub(super) fn expired(&self) -> Option<CloseFrame> {
        let q = self.lock();
        match q.end {
            Some(End::Abort) => None,
            _ => q.expired.map(Deadline::close_frame),
        }
    }

    /// Runs `f` on the connection's timers.
    pub(super) fn with_heartbeat<R>(&self, f: impl FnOnce(&mut Heartbeat) -> R) -> R {
        f(&mut self.lock().heartbeat)
    }

    /// Gives every byte the queue holds back to the hub's budget.
    fn release(&self, q: &mut Queue) {
        self.total.fetch_sub(q.bytes(), Ordering::Relaxed);
        q.queued_bytes = 0;
        q.in_flight = 0;
        q.in_flight_bytes = 0;
    }

    /// Waits until the queue is at most half full; returns whether a close was requested
    /// meanwhile (input is then no longer routed) and whether it had to wait. The reader calls
    /// it before routing each frame, so a client that pipelines many requests waits for its
    /// own replies to go out (TCP backpressure) instead of overflowing its queue.
    ///
    /// Not an `async fn`: the fast path (room, one lock, no waiter registration) is decided
    /// at the call, and only a reader that has to wait gets a (boxed) future with a waiter:
    /// the reader's future, which every idle connection holds, stays small.
    pub(super) fn wait_for_room<'a>(
        &'a self,
        config: &'a Config,
    ) -> impl Future<Output = (bool, bool)> + Send + 'a {
        let q = self.lock();
        if q.end.is_some() || q.within(2, config) {
            return Either::Left(std::future::ready((q.end.is_some(), false)));
        }
        drop(q);
        Either::Right(Box::pin(self.wait_for_drain(config)))
    }

    /// [`wait_for_room`](Self::wait_for_room)'s slow path.
    async fn wait_for_drain(&self, config: &Config) -> (bool, bool) {
        loop {
            let drained = self.drained.notified();
            let mut drained = std::pin::pin!(drained);
            drained.as_mut().enable();
            {
                let q = self.lock();
                if q.end.is_some() || q.within(2, config) {
                    return (q.end.is_some(), true);
                }
            }
            drained.await;
        }
    }

    pub(super) fn request_ping(&self, payload: [u8; 8]) {
        self.lock().ping = Some(payload);
        self.wake.notify_one();
    }

    /// Called by the writer when everything it took before is written (one lock per batch):
    /// gives that back, then moves every queued message into `batch` (which must be empty;
    /// they count as in flight until the next call).
    pub(super) fn take(&self, batch: &mut VecDeque<Transmit>, config: &Config) -> Taken {
        let mut q = self.lock();
        let written = std::mem::take(&mut q.in_flight_bytes);
        q.in_flight = 0;
        if written > 0 {
            self.total.fetch_sub(written, Ordering::Relaxed);
        }
        let relieved = q.congested && q.within(1, config);
        q.congested &= !relieved;
        if !q.messages.is_empty() {
            // The two buffers trade places while messages flow.
            std::mem::swap(&mut q.messages, batch);
        } else if q.messages.capacity() != 0 {
            // An empty queue keeps no buffer (what an idle connection holds): the one it got
            // from the writer at the last trade goes.
            q.messages = VecDeque::new();
        }
        q.in_flight = batch.len();
        q.in_flight_bytes = std::mem::take(&mut q.queued_bytes);
        let taken = Taken {
            end: q.end,
            ping: q.ping.take(),
            relieved,
        };
        drop(q);
        if written > 0 {
            self.drained.notify_waiters();
        }
        taken
    }
}

/// What [`Outbox::take`] hands the writer besides the batch.
pub(super) struct Taken {
    /// The pending end request.
    pub(super) end: Option<End>,
    /// The ping due, with its payload.
    pub(super) ping: Option<[u8; 8]>,
    /// The queue was congested and has drained to a quarter: the router must be told.
    pub(super) relieved: bool,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut q = self.lock();
        self.release(&mut q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::ConnectionId;
    use crate::{ErrorCode, ServerMessage};

    /// However the writer's batches and the queue traded buffers while messages flowed, the
    /// queue of a connection gone idle holds none.
    #[test]
    fn an_idle_queue_keeps_no_buffer() {
        let config = Config::default();
        let heartbeat = Heartbeat::new(tokio::time::Instant::now(), &config);
        let outbox = Outbox::new(Arc::default(), heartbeat, Liveness::default());
        let push = |n: usize| {
            for _ in 0..n {
                let message = ServerMessage::Error {
                    code: ErrorCode::InvalidJson,
                    message: "x".into(),
                };
                let transmit = Transmit {
                    to: ConnectionId(1),
                    message,
                    seq: None,
                };
                assert!(outbox.push(transmit, &config).is_ok());
            }
        };
        for burst in 1..=3 {
            // The writer's loop: take, write (more arrive meanwhile), take again, … until a
            // take finds nothing; then its batch goes with its future.
            let mut batch = VecDeque::new();
            push(burst);
            let _ = outbox.take(&mut batch, &config);
            assert_eq!(batch.len(), burst);
            batch.clear();
            push(2);
            let _ = outbox.take(&mut batch, &config);
            assert_eq!(batch.len(), 2);
            batch.clear();
            let _ = outbox.take(&mut batch, &config);
            assert!(batch.is_empty());
            let queue = outbox.lock();
            assert_eq!((queue.messages.len(), queue.messages.capacity()), (0, 0));
        }
    }
}
