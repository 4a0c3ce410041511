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
    /// The hub's timers ask for a heartbeat ping (its payload is the liveness's
    /// `expected_pong`).
    ping: bool,
    /// The connection's timers (run by the hub's timer task).
    heartbeat: Heartbeat,
    /// A deadline passed (heartbeat or login): the connection's task closes with this frame.
    expired: Option<Deadline>,
    /// The router was told this queue is full (relays to it are refused); cleared once the
    /// queue drains to a quarter.
    congested: bool,
    /// Someone is writing the socket: the connection's writer, or a sender writing its
    /// messages straight into it ([`Outbox::write_now`]). One at a time, so that messages go
    /// out in the order they were queued.
    writing: bool,
    /// A sender wrote into the socket and could not finish (the socket was full, or failed):
    /// the writer must flush even with nothing new to send.
    unflushed: bool,
    /// The `seq` of the last session message handed to the socket (0: none yet).
    fed_seq: u64,
    /// The connection's socket, for a sender to write into when the writer is idle (set while
    /// the connection's task runs).
    direct: Option<Arc<dyn Direct>>,
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
                ping: false,
                heartbeat,
                expired: None,
                congested: false,
                writing: false,
                unflushed: false,
                fed_seq: 0,
                direct: None,
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
        let (pushed, woken) = self.push_deferred(message, config)?;
        if woken {
            self.wake.notify_one();
        }
        Ok(pushed)
    }

    /// [`push`](Self::push) without waking the writer: the second value says whether the
    /// caller owes it a wake (the queue was empty), to give with [`write_now`](Self::write_now)
    /// or [`wake`](Self::wake) before it waits for anything.
    pub(super) fn push_deferred(
        &self,
        message: Transmit,
        config: &Config,
    ) -> Result<(Pushed, bool), Full> {
        let len = message.message.size_hint();
        let mut q = self.lock();
        if q.end.is_some() {
            return Ok((Pushed::Queued, false)); // closing: late messages are dropped
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
        let pushed = if congested {
            Pushed::Congested
        } else {
            Pushed::Queued
        };
        Ok((pushed, was_empty))
    }

    /// Wakes the writer (a wake [`push_deferred`](Self::push_deferred) left to the caller).
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// The connection's socket, for senders to write into ([`write_now`](Self::write_now));
    /// `None` when the connection's task ends.
    pub(super) fn set_direct(&self, direct: Option<Arc<dyn Direct>>) {
        let old = std::mem::replace(&mut self.lock().direct, direct);
        drop(old); // outside the lock
    }

    /// Writes what is queued straight into the connection's socket, from the task of the
    /// sender that queued it, when the writer is idle and the socket takes it all at once
    /// (flushed); otherwise (the writer is busy, a ping or an end is due, the socket is full
    /// or failed) wakes the writer to do it. Either way nothing queued waits for another
    /// wake: call it for the wake a [`push_deferred`](Self::push_deferred) left to the caller.
    ///
    /// It saves the writer's task a wake-up and a turn per message (what the ceiling pays
    /// too), with the same order and bounds: the queue's exclusive writing turn, its counts.
    pub(super) fn write_now(&self) {
        let (direct, mut batch, fed_before) = {
            let mut q = self.lock();
            if q.messages.is_empty() {
                // The writer took them already, or nothing was queued (closing).
                return;
            }
            let direct = match &q.direct {
                Some(direct)
                    if !q.writing && !q.unflushed && q.end.is_none() && !q.ping && !q.congested =>
                {
                    Arc::clone(direct)
                }
                _ => {
                    drop(q);
                    self.wake.notify_one();
                    return;
                }
            };
            q.writing = true;
            let batch = std::mem::take(&mut q.messages);
            q.in_flight = batch.len();
            q.in_flight_bytes = std::mem::take(&mut q.queued_bytes);
            (direct, batch, q.fed_seq)
        };
        let (flushed, fed_seq) = direct.write_now(&mut batch);
        drop(direct);
        let mut q = self.lock();
        q.writing = false;
        if q.end == Some(End::Abort) {
            // Aborted meanwhile: the counts were given back, nothing more is written.
            return;
        }
        // What was not fed goes back in front of what came meanwhile.
        let mut unsent = 0;
        if !batch.is_empty() {
            unsent = batch.iter().map(|m| m.message.size_hint()).sum();
            batch.append(&mut q.messages);
            q.messages = batch;
        }
        let written = q.in_flight_bytes.saturating_sub(unsent);
        q.queued_bytes += q.in_flight_bytes - written;
        q.in_flight = 0;
        q.in_flight_bytes = 0;
        q.fed_seq = fed_seq.unwrap_or(fed_before);
        q.unflushed = !flushed;
        let more = !q.messages.is_empty() || q.unflushed || q.ping || q.end.is_some();
        if q.messages.is_empty() && q.messages.capacity() != 0 {
            q.messages = VecDeque::new(); // an idle queue keeps no buffer
        }
        drop(q);
        if written > 0 {
            self.total.fetch_sub(written, Ordering::Relaxed);
            self.drained.notify_waiters();
        }
        if more {
            self.wake.notify_one();
        }
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
        owed: &mut Owed,
    ) -> impl Future<Output = (bool, bool)> + Send + 'a {
        let q = self.lock();
        if q.end.is_some() || q.within(2, config) {
            return Either::Left(std::future::ready((q.end.is_some(), false)));
        }
        drop(q);
        // About to wait: what this reader queued for others goes now.
        owed.settle();
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

    /// Asks the writer for a ping whose payload is the liveness's `expected_pong` (stored
    /// first).
    pub(super) fn request_ping(&self) {
        self.lock().ping = true;
        self.wake.notify_one();
    }

    /// Called by the writer when everything it took before is written (one lock per batch):
    /// gives that back, then moves every queued message into `batch` (which must be empty;
    /// they count as in flight until the next call).
    ///
    /// The writer holds the socket's writing turn (`holding`) from the first call that finds
    /// something to do until a call finds nothing (it then goes idle) or an end. `None`: a
    /// sender has the turn ([`write_now`](Self::write_now)), which wakes the writer again
    /// when it is done if anything is left.
    pub(super) fn take(
        &self,
        batch: &mut VecDeque<Transmit>,
        config: &Config,
        holding: &mut bool,
    ) -> Option<Taken> {
        let mut q = self.lock();
        if !*holding {
            if q.writing {
                return None;
            }
            q.writing = true;
            *holding = true;
        }
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
        let fed_before = q.fed_seq;
        if let Some(seq) = batch.iter().rev().find_map(|m| m.seq) {
            q.fed_seq = seq;
        }
        let taken = Taken {
            end: q.end,
            ping: std::mem::take(&mut q.ping).then(|| {
                self.liveness
                    .expected_pong
                    .load(Ordering::Relaxed)
                    .to_be_bytes()
            }),
            relieved,
            flush: std::mem::take(&mut q.unflushed),
            fed_before,
        };
        if batch.is_empty() && taken.ping.is_none() && taken.end.is_none() && !taken.flush {
            // Idle: the turn goes back (senders may write now).
            q.writing = false;
            *holding = false;
        }
        drop(q);
        if written > 0 {
            self.drained.notify_waiters();
        }
        Some(taken)
    }
}

/// The wake a connection's reader owes the writer of the connection it last queued a message
/// for ([`Outbox::push_deferred`]): held while the reader has more frames at hand, settled
/// ([`Outbox::write_now`]) before it waits for anything; dropping it wakes that writer.
///
/// So a burst of frames from one sender to one receiver reaches the receiver's socket in one
/// write, from the sender's task, without a turn of the receiver's task in between.
#[derive(Default)]
pub(super) struct Owed(Option<Arc<Outbox>>);

impl Owed {
    /// Owes `outbox`'s writer a wake; settles what was owed to another one first.
    pub(super) fn owe(&mut self, outbox: Arc<Outbox>) {
        if let Some(owed) = &self.0 {
            if Arc::ptr_eq(owed, &outbox) {
                return;
            }
            self.settle();
        }
        self.0 = Some(outbox);
    }

    /// Pays what is owed: the messages go into the socket now, or its writer is woken.
    pub(super) fn settle(&mut self) {
        if let Some(outbox) = self.0.take() {
            outbox.write_now();
        }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        if let Some(outbox) = self.0.take() {
            outbox.wake();
        }
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
    /// A sender left the socket unflushed: flush it.
    pub(super) flush: bool,
    /// The `seq` of the last session message handed to the socket before this batch (what a
    /// ping sent now follows).
    pub(super) fed_before: u64,
}

/// A connection's socket as senders see it ([`Outbox::write_now`]).
pub(super) trait Direct: Send + Sync + std::fmt::Debug {
    /// Feeds the front of `batch` into the socket while it takes frames without waiting,
    /// then flushes; `true` when all of it went and the flush completed. Never waits, never
    /// registers a waker anyone depends on (what is left is the writer's, which it wakes).
    /// Also returns the `seq` of the last session message fed.
    fn write_now(&self, batch: &mut VecDeque<Transmit>) -> (bool, Option<u64>);
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
            let mut holding = false;
            push(burst);
            let _ = outbox.take(&mut batch, &config, &mut holding);
            assert_eq!(batch.len(), burst);
            batch.clear();
            push(2);
            let _ = outbox.take(&mut batch, &config, &mut holding);
            assert_eq!(batch.len(), 2);
            batch.clear();
            let _ = outbox.take(&mut batch, &config, &mut holding);
            assert!(batch.is_empty());
            let queue = outbox.lock();
            assert_eq!((queue.messages.len(), queue.messages.capacity()), (0, 0));
        }
    }

    /// A socket that takes `room` frames, then is full; it records what it took, and (once)
    /// what the writer's `take` says while a sender is writing.
    #[derive(Debug)]
    struct Socket {
        room: Mutex<usize>,
        took: Mutex<Vec<Option<u64>>>,
        outbox: Mutex<Option<Arc<Outbox>>>,
        take_during_write: Mutex<Option<bool>>,
    }

    impl Direct for Socket {
        fn write_now(&self, batch: &mut VecDeque<Transmit>) -> (bool, Option<u64>) {
            if let Some(outbox) = self.outbox.lock().unwrap().take() {
                let mut holding = false;
                let taken = outbox.take(&mut VecDeque::new(), &Config::default(), &mut holding);
                *self.take_during_write.lock().unwrap() = Some(taken.is_some() || holding);
            }
            let mut room = self.room.lock().unwrap();
            let mut fed = None;
            while *room > 0 {
                let Some(message) = batch.pop_front() else {
                    break;
                };
                *room -= 1;
                fed = message.seq.or(fed);
                self.took.lock().unwrap().push(message.seq);
            }
            (batch.is_empty(), fed)
        }
    }

    fn message(seq: u64) -> Transmit {
        Transmit {
            to: ConnectionId(1),
            message: ServerMessage::Error {
                code: ErrorCode::InvalidJson,
                message: "x".into(),
            },
            seq: Some(seq),
        }
    }

    fn woken(outbox: &Outbox) -> bool {
        let notified = outbox.wake.notified();
        futures_util::FutureExt::now_or_never(notified).is_some()
    }

    /// A sender writes a receiver's queue straight into its socket only in the writer's
    /// place: in order, never beside the writer, and what the socket does not take stays for
    /// the writer, in front, with a wake and a flush owed; the counts follow.
    #[test]
    fn a_sender_writes_in_the_writers_place() {
        let config = Config::default();
        let heartbeat = Heartbeat::new(tokio::time::Instant::now(), &config);
        let total = Arc::new(AtomicUsize::new(0));
        let outbox = Arc::new(Outbox::new(total.clone(), heartbeat, Liveness::default()));
        let socket = Arc::new(Socket {
            room: Mutex::new(2),
            took: Mutex::default(),
            outbox: Mutex::new(Some(outbox.clone())),
            take_during_write: Mutex::default(),
        });
        outbox.set_direct(Some(socket.clone()));
        let size = message(1).message.size_hint();

        // Queued without a wake (the sender owes it), then written by the sender: two of
        // three fit; the writer's turn is the sender's meanwhile.
        for seq in 1..=3 {
            let (_, owe) = outbox.push_deferred(message(seq), &config).ok().unwrap();
            assert_eq!(owe, seq == 1);
        }
        assert!(!woken(&outbox));
        outbox.write_now();
        assert_eq!(*socket.take_during_write.lock().unwrap(), Some(false));
        assert_eq!(*socket.took.lock().unwrap(), [Some(1), Some(2)]);
        assert_eq!(
            total.load(Ordering::Relaxed),
            size,
            "only the unsent one counts"
        );
        assert!(woken(&outbox), "the writer must finish");

        // The writer: the one left first, then what came since, and a flush.
        outbox.push(message(4), &config).ok().unwrap();
        let mut batch = VecDeque::new();
        let mut holding = false;
        let taken = outbox.take(&mut batch, &config, &mut holding).unwrap();
        assert!(holding && taken.flush);
        assert_eq!(taken.fed_before, 2);
        let seqs: Vec<_> = batch.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [Some(3), Some(4)]);

        // While the writer holds its turn, a sender does not write: it wakes the writer.
        outbox.push_deferred(message(5), &config).ok().unwrap();
        *socket.room.lock().unwrap() = 10;
        outbox.write_now();
        assert_eq!(socket.took.lock().unwrap().len(), 2);
        assert!(woken(&outbox));
        batch.clear();
        let taken = outbox.take(&mut batch, &config, &mut holding).unwrap();
        assert_eq!(taken.fed_before, 4);
        assert_eq!(batch.len(), 1);
        batch.clear();
        // Nothing left: the writer goes idle and gives the turn back; a sender writes again.
        assert!(outbox.take(&mut batch, &config, &mut holding).is_some());
        assert!(!holding);
        assert_eq!(total.load(Ordering::Relaxed), 0);
        outbox.push_deferred(message(6), &config).ok().unwrap();
        outbox.write_now();
        assert_eq!(socket.took.lock().unwrap().last(), Some(&Some(6)));
        assert!(!woken(&outbox), "all of it went: no wake");
        assert_eq!(total.load(Ordering::Relaxed), 0);
        let queue = outbox.lock();
        assert_eq!((queue.messages.len(), queue.messages.capacity()), (0, 0));
        assert_eq!(queue.fed_seq, 6);
    }
}
