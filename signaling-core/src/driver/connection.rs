//! One connection's task: the read loop, the write loop, and how the connection ends.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;

use super::admission::{AddressKey, Permit};
use super::guards::Registration;
use super::heartbeat::Liveness;
use super::observe::DisconnectCause;
use super::outbox::{Direct, End, Outbox, Owed, Taken};
use super::{CloseFrame, Hub, Inbound, Outbound, Transport};
use crate::router::ConnectionId;
use crate::router::Transmit;

impl Hub {
    pub(super) async fn run<T, S>(
        &self,
        socket: &SharedSocket<T, S>,
        registration: &Registration,
        not_logged_in: &mut Option<Permit<AddressKey>>,
    ) where
        T: Transport,
        S: Stream<Item = Result<T::Message, T::Error>> + Sink<T::Message, Error = T::Error> + Unpin,
    {
        let conn = registration.id;
        let outbox = &*registration.outbox;
        let liveness = &outbox.liveness;
        let mut reader = std::pin::pin!(self.read_loop::<T, _>(
            Reader(socket),
            conn,
            outbox,
            liveness,
            not_logged_in
        ));
        let mut writer = std::pin::pin!(self.write_loop::<T, S>(socket, conn, outbox, liveness));

        // The reader is polled only when something woke it, not every time the task runs: a
        // task woken to write a partner's message would otherwise try its socket for nothing
        // (tokio-tungstenite's read path down to a readiness check) — once per message relayed
        // to this connection when messages come one at a time.
        let mut reader = WhenWoken::new(reader.as_mut());

        let ending = tokio::select! {
            // The hub's timers (a deadline passed) or an abort.
            () = outbox.stop.notified() => match outbox.expired() {
                Some(close) => Ending::Deadline(close),
                None => Ending::Abort,
            },
            r = &mut reader => Ending::Read(r),
            w = &mut writer => Ending::Write(w),
        };
        tracing::debug!(%conn, ?ending, "disconnecting");
        let _ = registration
            .cause
            .set(ending.cause(outbox, self.is_killed()));
        // Free the name (or suspend a resumable session) and tell the partner now; the close
        // handshake below may take a while.
        registration.teardown(ending.is_clean());
        let closing = async {
            match ending {
                Ending::Read(ReadEnd::TooLarge) => {
                    // The transport's stream is finished after the error: send and go.
                    outbox.close(CloseFrame::TOO_LARGE);
                    writer.await;
                }
                Ending::Deadline(close) => {
                    outbox.close(close);
                    if writer.await == WriteEnd::SentClose {
                        reader.await;
                    }
                }
                // Wait for the client's close reply (the reader ends when the stream does).
                Ending::Write(WriteEnd::SentClose) => {
                    reader.await;
                }
                Ending::Abort | Ending::Read(_) | Ending::Write(_) => {}
            }
        };
        // Boxed: only a closing connection holds the close timeout and the watch of the
        // shutdown's deadline, not every idle one.
        Box::pin(async {
            tokio::select! {
                _ = tokio::time::timeout(self.inner.config.close_timeout, closing) => {}
                () = self.killed() => {}
            }
        })
        .await;
    }

    /// Reads frames and feeds them to the router. Holds the connection's not-logged-in slot
    /// until it logs in.
    async fn read_loop<T, R>(
        &self,
        mut stream: R,
        conn: ConnectionId,
        outbox: &Outbox,
        liveness: &Liveness,
        not_logged_in: &mut Option<Permit<AddressKey>>,
    ) -> ReadEnd
    where
        T: Transport,
        R: Stream<Item = Result<T::Message, T::Error>> + Unpin,
    {
        let config = &self.inner.config;
        let max = config.max_message_size;
        let mut client_closed = false;
        // One clock read per wake-up, not per frame: the frames the transport hands over
        // without waiting arrived with the first (they were read from the socket together),
        // and share its time — for at most `SHARED_CLOCK_READS` frames, so a long burst
        // still sees the clock move.
        let mut now = Instant::now();
        let mut shared = 0;
        // What this reader queued for another connection, not yet written or woken: written
        // into that socket from here once this reader has no frame at hand (`Owed`).
        let mut owed = Owed::default();
        loop {
            let mut waited = false;
            let next = std::future::poll_fn(|cx| {
                let next = stream.poll_next_unpin(cx);
                if next.is_pending() {
                    waited = true;
                    owed.settle();
                }
                next
            });
            let Some(item) = next.await else {
                break;
            };
            let message = match item {
                Ok(message) => message,
                Err(e) if T::is_too_large(&e) => return ReadEnd::TooLarge,
                Err(e) => {
                    tracing::debug!(%conn, error = %e, "read error");
                    return ReadEnd::Error;
                }
            };
            // The time for the heartbeat and the router (which never reads the clock).
            if waited || shared == SHARED_CLOCK_READS {
                now = Instant::now();
                shared = 0;
                // A long burst does not hold what it queued for others either.
                owed.settle();
            } else {
                shared += 1;
            }
            let accepted = match T::inbound(&message) {
                Inbound::Text(text) if text.len() > max => return ReadEnd::TooLarge,
                Inbound::Text(text) => match outbox.wait_for_room(config, &mut owed).await {
                    // After the server asked for a close, input is no longer routed.
                    (true, _) => true,
                    (false, waited) => {
                        let now = if waited { Instant::now() } else { now };
                        let accepted = self.input(now, conn, Some(&mut owed), |r, now| {
                            r.handle_text(conn, text, now)
                        });
                        // Cluster mode: a login waits for its claim, a resume with another
                        // node's token for the session, before the next frame (boxed, and
                        // only when there is one: the idle read loop stays small).
                        if self.has_cluster_work() {
                            owed.settle();
                            Box::pin(async {
                                self.run_claims(conn).await;
                                self.run_fetches(conn).await;
                            })
                            .await;
                        }
                        if not_logged_in.is_some() && self.is_logged_in(conn) {
                            *not_logged_in = None; // give the slot back
                        }
                        accepted
                    }
                },
                Inbound::Binary(len) => match outbox.wait_for_room(config, &mut owed).await {
                    (true, _) => true,
                    (false, waited) => {
                        let now = if waited { Instant::now() } else { now };
                        self.input(now, conn, None, |r, now| r.handle_binary(conn, len, now))
                    }
                },
                control => self.control_frame(now, conn, control, liveness, &mut client_closed),
            };
            if !accepted {
                return ReadEnd::Gone;
            }
        }
        ReadEnd::Closed {
            clean: client_closed,
        }
    }

    /// A ping, a pong or a close from the client (out of line: the read loop's code for text
    /// frames stays short). Returns whether the router still knows the connection.
    #[cold]
    #[inline(never)]
    fn control_frame(
        &self,
        now: Instant,
        conn: ConnectionId,
        frame: Inbound<'_>,
        liveness: &Liveness,
        client_closed: &mut bool,
    ) -> bool {
        match frame {
            Inbound::Pong(payload) => {
                // Only the echo of our last ping proves the client reads.
                let expected = liveness.expected_pong.load(Ordering::Relaxed).to_be_bytes();
                let echo = payload == expected;
                if echo {
                    liveness
                        .last_seen
                        .store(self.millis_at(now), Ordering::Relaxed);
                }
                let acked = if echo {
                    liveness.seq_before_ping.swap(0, Ordering::Relaxed)
                } else {
                    0
                };
                self.input(now, conn, None, |r, now| {
                    r.handle_control(conn, now)?;
                    if acked > 0 {
                        // Everything written before the ping has arrived: no need to keep
                        // it for a resume.
                        r.handle_acknowledged(conn, acked)?;
                    }
                    Ok(())
                })
            }
            Inbound::Ping => self.input(now, conn, None, |r, now| r.handle_control(conn, now)),
            Inbound::Close => {
                // Keep reading: the transport answers the close and then ends the stream.
                *client_closed = true;
                true
            }
            // The read loop handles data frames itself.
            Inbound::Text(_) | Inbound::Binary(_) => true,
        }
    }

    /// Sends what the outbox holds: batches of messages (encoded here, outside every lock, fed
    /// one by one and flushed once), pings, and finally a close frame. A write that makes no
    /// progress for [`Config::write_stall_timeout`] ends the connection.
    async fn write_loop<T, W>(
        &self,
        socket: &SharedSocket<T, W>,
        conn: ConnectionId,
        outbox: &Outbox,
        liveness: &Liveness,
    ) -> WriteEnd
    where
        T: Transport,
        W: Sink<T::Message, Error = T::Error> + Unpin,
    {
        loop {
            // Boxed: the batch, the frame being encoded and a write waiting for the socket
            // live only while there is something to send; an idle connection's writer holds
            // only the wait below (most connections, most of the time).
            let written = self.write_pending::<T, W>(socket, conn, outbox, liveness);
            if let Some(end) = Box::pin(written).await {
                return end;
            }
            outbox.wake.notified().await;
        }
    }

    /// Writes what the outbox holds until it is empty (`None`: wait for more) or the
    /// connection's writing ends. `None` at once while a sender is writing into the socket
    /// (it wakes the writer when it is done, if anything is left).
    async fn write_pending<T, W>(
        &self,
        socket: &SharedSocket<T, W>,
        conn: ConnectionId,
        outbox: &Outbox,
        liveness: &Liveness,
    ) -> Option<WriteEnd>
    where
        T: Transport,
        W: Sink<T::Message, Error = T::Error> + Unpin,
    {
        let config = &self.inner.config;
        let stall = config.write_stall_timeout;
        let mut batch = VecDeque::new();
        let mut holding = false;
        loop {
            let Taken {
                end,
                ping,
                relieved,
                flush,
                fed_before,
            } = outbox.take(&mut batch, config, &mut holding)?;
            if relieved {
                self.relieve(conn);
            }
            if end == Some(End::Abort) {
                return Some(WriteEnd::Aborted);
            }
            let fed = ping.is_some() || !batch.is_empty() || flush;
            if let Some(payload) = ping {
                liveness
                    .seq_before_ping
                    .store(fed_before, Ordering::Relaxed);
                if let Err(end) = progress(
                    conn,
                    stall,
                    socket.feed(T::outbound(Outbound::Ping(payload))),
                )
                .await
                {
                    return Some(end);
                }
            }
            while let Some(frame) = batch
                .pop_front()
                .map(|message| T::outbound(Outbound::Text(message.into_frame())))
            {
                if let Err(end) = progress(conn, stall, socket.feed(frame)).await {
                    return Some(end);
                }
            }
            if fed {
                if let Err(end) = progress(conn, stall, socket.flush()).await {
                    return Some(end);
                }
                if batch.capacity() > 64 {
                    batch = VecDeque::new(); // give back what a burst grew
                }
                continue; // more may have arrived while writing
            }
            if let Some(End::Close(close)) = end {
                return Some(
                    match progress(
                        conn,
                        stall,
                        socket.send(T::outbound(Outbound::Close(close))),
                    )
                    .await
                    {
                        Ok(()) => WriteEnd::SentClose,
                        Err(end) => end,
                    },
                );
            }
            // Idle: the batch's buffer goes with this future.
            return None;
        }
    }
}

/// A connection's socket, on the heap, shared by its reader, its writer and the senders that
/// write into it straight from their own tasks ([`Outbox::write_now`]). The lock is taken for
/// one poll at a time, never across a wait; the outbox's writing turn decides who writes. (Not
/// split into halves: the split's own shared allocation and buffered item would come on top.)
pub(super) struct SharedSocket<T, S> {
    socket: Mutex<S>,
    transport: PhantomData<fn() -> T>,
}

impl<T, S> fmt::Debug for SharedSocket<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSocket").finish_non_exhaustive()
    }
}

impl<T, S> SharedSocket<T, S> {
    pub(super) fn new(socket: S) -> Self {
        SharedSocket {
            socket: Mutex::new(socket),
            transport: PhantomData,
        }
    }

    fn lock(&self) -> MutexGuard<'_, S> {
        self.socket.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The reading side of a [`SharedSocket`].
pub(super) struct Reader<'a, T, S>(pub(super) &'a SharedSocket<T, S>);

impl<T, S> Stream for Reader<'_, T, S>
where
    T: Transport,
    S: Stream<Item = Result<T::Message, T::Error>> + Unpin,
{
    type Item = Result<T::Message, T::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.lock().poll_next_unpin(cx)
    }
}

impl<T, S> SharedSocket<T, S>
where
    T: Transport,
    S: Sink<T::Message, Error = T::Error> + Unpin,
{
    /// [`SinkExt::feed`] through the lock.
    fn feed(&self, item: T::Message) -> impl Future<Output = Result<(), T::Error>> + '_ {
        let mut item = Some(item);
        std::future::poll_fn(move |cx| {
            let mut sink = self.lock();
            ready!(sink.poll_ready_unpin(cx))?;
            match item.take() {
                Some(item) => sink.start_send_unpin(item).into(),
                None => Poll::Ready(Ok(())),
            }
        })
    }

    /// [`SinkExt::flush`] through the lock.
    fn flush(&self) -> impl Future<Output = Result<(), T::Error>> + '_ {
        std::future::poll_fn(move |cx| self.lock().poll_flush_unpin(cx))
    }

    /// [`SinkExt::send`] through the lock.
    pub(super) async fn send(&self, item: T::Message) -> Result<(), T::Error> {
        self.feed(item).await?;
        self.flush().await
    }
}

impl<T, S> Direct for SharedSocket<T, S>
where
    T: Transport,
    S: Sink<T::Message, Error = T::Error> + Unpin + Send,
{
    fn write_now(&self, batch: &mut VecDeque<Transmit>) -> (bool, Option<u64>) {
        // Nobody waits on this waker: whatever does not go now is the writer's, and the
        // outbox wakes it (its own polls register its own waker again).
        let mut cx = Context::from_waker(Waker::noop());
        let Ok(mut sink) = self.socket.try_lock() else {
            return (false, None);
        };
        let mut fed = None;
        while !batch.is_empty() {
            if !matches!(sink.poll_ready_unpin(&mut cx), Poll::Ready(Ok(()))) {
                return (false, fed);
            }
            let Some(message) = batch.pop_front() else {
                break;
            };
            if let Some(seq) = message.seq {
                fed = Some(seq);
            }
            let frame = T::outbound(Outbound::Text(message.into_frame()));
            if sink.start_send_unpin(frame).is_err() {
                return (false, fed);
            }
        }
        let flushed = matches!(sink.poll_flush_unpin(&mut cx), Poll::Ready(Ok(())));
        (flushed, fed)
    }
}

/// A future polled only when one of the wakers it registered fired (and on its first poll);
/// otherwise `Pending` at once. Its waker marks it woken, then wakes the task that polled it.
struct WhenWoken<'a, F> {
    inner: Pin<&'a mut F>,
    wake: Arc<Woken>,
}

impl<'a, F: Future> WhenWoken<'a, F> {
    fn new(inner: Pin<&'a mut F>) -> Self {
        let wake = Arc::new(Woken {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        WhenWoken { inner, wake }
    }
}

impl<F: Future> Future for WhenWoken<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.wake.task.register(cx.waker());
        // Cleared before the poll: a wake during it polls again.
        if !self.wake.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(Arc::clone(&self.wake));
        self.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

/// [`WhenWoken`]'s waker.
struct Woken {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// How many frames that were ready at once may share one clock read after the first
/// (see the read loop).
const SHARED_CLOCK_READS: u32 = 32;

/// One write of the writer: an error, or no progress within `stall`, ends the connection.
async fn progress<E: fmt::Display>(
    conn: ConnectionId,
    stall: Duration,
    write: impl Future<Output = Result<(), E>>,
) -> Result<(), WriteEnd> {
    let mut write = std::pin::pin!(write);
    // Most writes complete at once (into the transport's buffer): no timer, no clock read for
    // them; the deadline is armed only for a write that has to wait for the socket.
    let done = match futures_util::FutureExt::now_or_never(write.as_mut()) {
        Some(done) => Ok(done),
        None => tokio::time::timeout(stall, write).await,
    };
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(%conn, error = %e, "write error");
            Err(WriteEnd::Error)
        }
        Err(_) => {
            tracing::info!(%conn, ?stall, "write stalled (client not reading): disconnecting");
            Err(WriteEnd::Stalled)
        }
    }
}

#[derive(Debug)]
enum ReadEnd {
    /// The stream ended: after the client's close frame (`clean`), or without one (the
    /// transport went away: a reset, a FIN).
    Closed { clean: bool },
    /// A read error.
    Error,
    /// A message over the size limit.
    TooLarge,
    /// The router no longer knows the connection.
    Gone,
}

#[derive(Debug, PartialEq, Eq)]
enum WriteEnd {
    /// A close frame went out; wait for the client's reply.
    SentClose,
    /// The hub aborted the connection.
    Aborted,
    /// A write failed.
    Error,
    /// A write made no progress within the write-stall timeout.
    Stalled,
}

#[derive(Debug)]
enum Ending {
    Abort,
    Read(ReadEnd),
    Write(WriteEnd),
    /// A deadline passed (heartbeat or login): send this close frame.
    Deadline(CloseFrame),
}

impl Ending {
    /// Why the connection ended, for the observer.
    fn cause(&self, outbox: &Outbox, killed: bool) -> DisconnectCause {
        match self {
            // The shutdown's deadline aborts what is left.
            Ending::Abort | Ending::Write(WriteEnd::Aborted) if killed => DisconnectCause::Shutdown,
            Ending::Abort | Ending::Write(WriteEnd::Aborted) => DisconnectCause::QueueOverflow,
            Ending::Read(ReadEnd::Closed { clean: true }) => DisconnectCause::Clean,
            Ending::Read(ReadEnd::Closed { clean: false } | ReadEnd::Error)
            | Ending::Write(WriteEnd::Error) => DisconnectCause::Lost,
            Ending::Read(ReadEnd::TooLarge) => DisconnectCause::TooLarge,
            Ending::Write(WriteEnd::Stalled) => DisconnectCause::Timeout,
            Ending::Deadline(close) => DisconnectCause::of_close(close),
            Ending::Write(WriteEnd::SentClose) | Ending::Read(ReadEnd::Gone) => outbox
                .end_cause(killed)
                .unwrap_or(DisconnectCause::Replaced),
        }
    }

    /// Whether the connection ended cleanly — the client sent a close frame, or the server
    /// closed it on purpose (a close frame went out first, an oversize message) — rather than
    /// being lost (reset, no close frame, heartbeat timeout, stalled or failed writes). A
    /// resumable session survives only a lost connection.
    fn is_clean(&self) -> bool {
        match self {
            Ending::Read(ReadEnd::Closed { clean }) => *clean,
            Ending::Read(ReadEnd::TooLarge | ReadEnd::Gone) => true,
            Ending::Write(WriteEnd::SentClose) => true,
            Ending::Read(ReadEnd::Error)
            | Ending::Write(WriteEnd::Aborted | WriteEnd::Error | WriteEnd::Stalled)
            | Ending::Abort
            | Ending::Deadline(_) => false,
        }
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;
    use crate::driver::ConnectionInfo;
    use crate::driver::memory::{Memory, pair};

    /// The parts of a connection's future, printed with `--nocapture`: what every idle
    /// connection holds in its task; the whole bounded near its size.
    #[tokio::test]
    async fn sizes_of_the_connection_future() {
        let hub = Hub::default();
        let registration = hub.register(&ConnectionInfo::new()).unwrap();
        let outbox = &*registration.outbox;
        let liveness = &outbox.liveness;
        let (socket, _client) = pair(4);
        let socket = SharedSocket::<Memory, _>::new(socket);
        let conn = registration.id;
        let mut not_logged_in = None;
        let read =
            hub.read_loop::<Memory, _>(Reader(&socket), conn, outbox, liveness, &mut not_logged_in);
        let write = hub.write_loop::<Memory, _>(&socket, conn, outbox, liveness);
        eprintln!(
            "read loop {} B, write loop {} B, Outbox {} B",
            std::mem::size_of_val(&read),
            std::mem::size_of_val(&write),
            std::mem::size_of::<Outbox>(),
        );
        drop((read, write));
        let mut not_logged_in = None;
        let run = hub.run::<Memory, _>(&socket, &registration, &mut not_logged_in);
        eprintln!("run {} B", std::mem::size_of_val(&run));
        drop(run);
        let (socket, _client) = pair(4);
        let whole = hub.serve_connection::<Memory, _>(socket, ConnectionInfo::new());
        let whole_size = std::mem::size_of_val(&whole);
        eprintln!("serve_connection {whole_size} B");
        // 1,024 B over the in-memory transport when written (the whole connection's future was
        // ≈ 3.9 KB before issue 13); a little room for other compilers.
        assert!(
            whole_size <= 1_088,
            "the connection future grew to {whole_size} B"
        );
        eprintln!(
            "ConnectionPermits {} B, Refusal {} B, Registration {} B, ConnectionInfo {} B, Notified {} B, Frame {} B",
            std::mem::size_of::<super::super::admission::ConnectionPermits>(),
            std::mem::size_of::<super::super::Refusal>(),
            std::mem::size_of::<Registration>(),
            std::mem::size_of::<ConnectionInfo>(),
            std::mem::size_of::<tokio::sync::futures::Notified<'static>>(),
            std::mem::size_of::<crate::driver::memory::Frame>(),
        );
    }
}
