//! The owner task of one multiplexed connection.
//!
//! Hot path. Forbidden here: per-request allocation beyond what the request brought, locks,
//! `info`-level logging, awaiting anything but the socket and the request queue.
//!
//! One future owns the socket, the request queue and the FIFO of requests awaiting replies.
//! Each poll: read and dispatch every complete reply, take every queued request (while the
//! in-flight bound allows) into the write buffer, yield once to the scheduler so other tasks
//! can queue theirs, then write the batch. Requests that arrive while a write or a read is in
//! progress accumulate and go out together: auto-pipelining with no timer.
//!
//! Left alone, that settles into lockstep: every caller is answered in one read, all queue
//! again, and the batch goes out while the server sat idle, then the client idles while the
//! server works. So a read that answers more than half of what is in flight is dispatched in
//! two halves, and the first half's next commands are written before the second half is
//! dispatched: the server works on one half while the client runs the other.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::{Deadline, Reply, ReplyTx, Request, earliest, expire_queue, keep_unless_expired};
use crate::resp::{Decoder, Frame};

/// Requests up to this size are copied into the shared write buffer; larger ones are written
/// from their own buffer with `writev`, never copied.
const COPY_LIMIT: usize = 16 * 1024;
/// Stop taking requests while this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 1024 * 1024;
/// Trips through the run queue a batch may wait for more requests (a second one brings the
/// tasks woken by another connection's replies meanwhile; measured in `compare` as 4 rounds
/// interleaved: cluster at 64 tasks +8% ops/s and -8% CPU per op, 512 tasks +2%; one server
/// within noise, +3% at 64 tasks and -4% at 512).
const MAX_YIELDS: u8 = 2;
/// A half is never smaller than this (see `poll_read_replies`): measured at 64 tasks over
/// 4 connections, 8 loses the whole gain (0.46M ops/s), 4 and 2 keep it (0.95M).
pub(crate) const MIN_HALF: usize = 4;
/// Read at least this much at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A request whose command was written and whose replies are awaited.
pub(super) struct InFlight {
    /// `None` once answered early (timed out): its replies are read and dropped.
    pub(super) tx: Option<ReplyTx>,
    /// The command, kept only if it may be retried.
    pub(super) data: Bytes,
    pub(super) retry: bool,
    pub(super) replies: u32,
    pub(super) deadline: Option<Deadline>,
    remaining: u32,
    collected: Vec<Frame>,
}

/// Why the driver stopped.
pub(super) enum Stop {
    /// Every handle is gone and everything in flight was answered.
    Closed,
    /// The server closed the connection.
    Eof,
    /// An I/O error.
    Io(std::io::Error),
    /// Malformed data from the server.
    Protocol(crate::resp::ProtocolError),
    /// A reply arrived with no request waiting for it.
    Unexpected,
}

pub(super) struct Driver<'a, S> {
    stream: S,
    rx: &'a mut mpsc::Receiver<Request>,
    /// Requests to send before anything from `rx` (retries after a reconnect).
    pending: &'a mut VecDeque<Request>,
    /// Most requests waiting in `pending` while the bounds keep them out of the FIFO.
    hold_capacity: usize,
    pub(super) in_flight: VecDeque<InFlight>,
    max_in_flight: usize,
    wbuf: BytesMut,
    chunks: VecDeque<Bytes>,
    queued_bytes: usize,
    rbuf: BytesMut,
    decoder: Decoder,
    events: Option<&'a super::Events>,
    /// Bytes were handed to the stream since its last flush. TLS buffers what `poll_write`
    /// accepts; without a flush a batch's tail can sit there until the next request or the
    /// timeout.
    needs_flush: bool,
    rx_closed: bool,
    /// How often this batch yielded to let other tasks queue their requests.
    yields: u8,
    /// Requests taken into the previous batch: a lone caller (1, nothing in flight) is not
    /// kept waiting for company that is not coming.
    last_batch: usize,
    batch: usize,
    /// Replies still to dispatch from what was read: a read that brought more than half of
    /// what is in flight is dispatched in two halves, with a trip through the run queue
    /// between them (see [`Driver::poll_read_replies`]).
    backlog: bool,
    /// Whether replies are dispatched in halves. On for one server: measured in `compare
    /// redis` at 64 tasks (4 connections, 1-worker runtime) 0.46M → 0.95–0.99M ops/s and CPU
    /// per op 1.10 → 0.98 µs, at 512 tasks within noise (1.69M → 1.67M). Off for cluster
    /// nodes, whose servers share the machine's cores and already overlap one another: there
    /// the split only costs client CPU (`compare redis-cluster`, 64 tasks 0.41M → 0.35M ops/s,
    /// 512 tasks 0.65M → 0.57M).
    pub(super) split_replies: bool,
    /// Where this connection's in-flight count is published for the pool (see
    /// [`Pool::pick`](crate::pool::Pool::pick)); stored when it changed, once per poll.
    pub(super) load: Option<&'a std::sync::atomic::AtomicUsize>,
    /// One timer for every deadline on this connection, armed at the earliest pending one.
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Driver<'a, S> {
    pub(super) fn new(
        stream: S,
        rx: &'a mut mpsc::Receiver<Request>,
        pending: &'a mut VecDeque<Request>,
        max_in_flight: usize,
        hold_capacity: usize,
        decoder: Decoder,
        events: Option<&'a super::Events>,
    ) -> Self {
        Driver {
            stream,
            rx,
            pending,
            hold_capacity: hold_capacity.max(1),
            in_flight: VecDeque::with_capacity(256),
            max_in_flight,
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            chunks: VecDeque::new(),
            queued_bytes: 0,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            decoder,
            events,
            needs_flush: false,
            rx_closed: false,
            yields: 0,
            last_batch: 0,
            batch: 0,
            backlog: false,
            split_replies: true,
            load: None,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            timer_at: None,
        }
    }

    /// Arms the timer for `at` unless it is armed for earlier already.
    fn arm(&mut self, at: Instant) {
        if self.timer_at.is_none_or(|t| at < t) {
            self.timer_at = Some(at);
            self.timer.as_mut().reset(at);
        }
    }

    /// When the timer fires: answer `Timeout` to every expired request — written ones stay in
    /// the FIFO to have their replies discarded; queued ones are dropped — and re-arm.
    fn poll_deadlines(&mut self, cx: &mut Context<'_>) {
        // Until the timer is unarmed or pending (its waker registered).
        while self.timer_at.is_some() && self.timer.as_mut().poll(cx).is_ready() {
            self.expire(cx);
        }
    }

    fn expire(&mut self, cx: &mut Context<'_>) {
        self.timer_at = None;
        let now = Instant::now();
        let mut next = None;
        // Deadlines are not in FIFO order (a handle with its own timeout shares the
        // connection): every request awaiting replies is looked at. This runs when the
        // earliest deadline passes, not per request.
        for f in self.in_flight.iter_mut() {
            if let (Some(d), Some(_)) = (f.deadline, &f.tx) {
                if d.at > now {
                    next = earliest(next, Some(d.at));
                } else if let Some(tx) = f.tx.take() {
                    let _ = tx.send(Err(d.error()));
                }
            }
        }
        // Requests the bounds keep out of the FIFO are answered too, so a stalled server
        // never holds a caller past its deadline; up to the hold capacity of them are taken
        // from the channel to be watched.
        let mut queued = expire_queue(self.pending, now);
        while !self.rx_closed && self.pending.len() < self.hold_capacity {
            let Poll::Ready(Some(req)) = self.rx.poll_recv(cx) else {
                break;
            };
            queued = earliest(queued, keep_unless_expired(self.pending, req, now));
        }
        for at in [next, queued].into_iter().flatten() {
            self.arm(at);
        }
    }

    fn enqueue(&mut self, mut req: Request) {
        // A caller that gave up before its command was written: skip it (nothing to desync).
        if req.tx.is_closed() {
            return;
        }
        let len = req.data.len();
        self.queued_bytes += len;
        // Only a retry needs the command again: otherwise release it once it is queued for
        // writing, so requests awaiting replies from a stalled server hold little memory.
        if len <= COPY_LIMIT {
            self.wbuf.extend_from_slice(&req.data);
            if !req.retry {
                req.data = Bytes::new();
            }
        } else {
            if !self.wbuf.is_empty() {
                self.chunks.push_back(self.wbuf.split().freeze());
            }
            let data = if req.retry {
                req.data.clone()
            } else {
                std::mem::take(&mut req.data)
            };
            self.chunks.push_back(data);
        }
        // One comparison when the timer is armed earlier already (the common case: most
        // requests share the connection's timeout); a handle with its own, shorter timeout
        // moves it earlier.
        if let Some(d) = req.deadline {
            self.arm(d.at);
        }
        self.in_flight.push_back(InFlight {
            tx: Some(req.tx),
            data: req.data,
            retry: req.retry,
            replies: req.replies,
            deadline: req.deadline,
            remaining: req.replies,
            collected: Vec::new(),
        });
    }

    /// Takes queued requests while the bounds allow. Returns whether any was taken.
    fn intake(&mut self, cx: &mut Context<'_>) -> bool {
        let mut took = false;
        while self.in_flight.len() < self.max_in_flight && self.queued_bytes < WRITE_HIGH_WATER {
            if let Some(req) = self.pending.pop_front() {
                self.enqueue(req);
                took = true;
                continue;
            }
            if self.rx_closed {
                break;
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(req)) => {
                    self.enqueue(req);
                    took = true;
                }
                Poll::Ready(None) => self.rx_closed = true,
                Poll::Pending => break,
            }
        }
        took
    }

    /// While the bounds keep requests out of the FIFO (a stalled server), moves arrivals into
    /// `pending`, where their deadlines are watched: a request left in the channel would not
    /// wake this task, and its caller would wait past its deadline. Returns whether any moved.
    fn hold(&mut self, cx: &mut Context<'_>) -> bool {
        let blocked =
            self.in_flight.len() >= self.max_in_flight || self.queued_bytes >= WRITE_HIGH_WATER;
        let mut moved = false;
        while blocked && !self.rx_closed && self.pending.len() < self.hold_capacity {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(req)) => {
                    if let Some(d) = req.deadline {
                        self.arm(d.at);
                    }
                    self.pending.push_back(req);
                    moved = true;
                }
                Poll::Ready(None) => self.rx_closed = true,
                Poll::Pending => break,
            }
        }
        moved
    }

    /// Writes what is queued. `Ready(Ok(true))` if anything was written.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        let mut wrote = false;
        loop {
            if self.chunks.is_empty() {
                if self.wbuf.is_empty() {
                    if self.needs_flush {
                        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
                        self.needs_flush = false;
                    }
                    return Poll::Ready(Ok(wrote));
                }
                let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.wbuf))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                self.needs_flush = true;
                self.wbuf.advance(n);
                self.queued_bytes -= n;
                wrote = true;
                continue;
            }
            if !self.wbuf.is_empty() {
                self.chunks.push_back(self.wbuf.split().freeze());
            }
            let slices: Vec<IoSlice<'_>> = self
                .chunks
                .iter()
                .take(64)
                .map(|c| IoSlice::new(c))
                .collect();
            let n = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.needs_flush = true;
            self.queued_bytes -= n;
            wrote = true;
            let mut left = n;
            while left > 0 {
                let front = self
                    .chunks
                    .front_mut()
                    .expect("written bytes came from a chunk");
                if front.len() <= left {
                    left -= front.len();
                    self.chunks.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
    }

    /// Reads and dispatches replies until the socket has nothing more, or until half of what
    /// was in flight has been answered: then the rest waits in the read buffer (`backlog`)
    /// while the callers just answered run and queue their next commands, which go out before
    /// the second half is dispatched. Without the split, every caller is answered at once, all
    /// queue again at once, and client and server take turns idling (one batch in flight);
    /// with it, the server works on one half while the client runs the other.
    fn poll_read_replies(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, Stop>> {
        let mut read = false;
        let budget = if self.split_replies {
            (self.in_flight.len() / 2).max(MIN_HALF)
        } else {
            usize::MAX
        };
        let mut dispatched = 0;
        self.backlog = false;
        loop {
            while dispatched < budget {
                match self.decoder.decode(&mut self.rbuf) {
                    Ok(Some(frame)) => {
                        self.dispatch(frame)?;
                        dispatched += 1;
                        read = true;
                    }
                    Ok(None) => break,
                    Err(e) => return Poll::Ready(Err(Stop::Protocol(e))),
                }
            }
            if dispatched >= budget && !self.rbuf.is_empty() {
                self.backlog = true;
                return Poll::Ready(Ok(read));
            }
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.rbuf) {
                Poll::Pending => return Poll::Ready(Ok(read)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Stop::Io(e))),
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Stop::Eof)),
                Poll::Ready(Ok(_)) => read = true,
            }
        }
    }

    fn dispatch(&mut self, frame: Frame) -> Result<(), Stop> {
        if let Frame::Push(_) = frame {
            // Out-of-band (RESP3): client-tracking invalidations and the like. Never a reply.
            if let Some(events) = self.events {
                events(super::ConnEvent::Push(frame));
            }
            return Ok(());
        }
        let Some(front) = self.in_flight.front_mut() else {
            return Err(Stop::Unexpected);
        };
        if front.remaining == 1 && front.collected.is_empty() {
            let done = self.in_flight.pop_front().expect("front exists");
            // The caller may have gone (timeout, cancellation): the reply is dropped, the FIFO
            // stays in step.
            if let Some(tx) = done.tx {
                let _ = tx.send(Ok(Reply::One(frame)));
            }
        } else {
            front.collected.push(frame);
            front.remaining -= 1;
            if front.remaining == 0 {
                let done = self.in_flight.pop_front().expect("front exists");
                if let Some(tx) = done.tx {
                    let _ = tx.send(Ok(Reply::Many(done.collected)));
                }
            }
        }
        Ok(())
    }

    /// One poll of the connection: read, take, write, as far as the socket and the queue go.
    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Stop> {
        loop {
            let read = match self.poll_read_replies(cx) {
                Poll::Ready(Ok(read)) => read,
                Poll::Ready(Err(stop)) => return Poll::Ready(stop),
                Poll::Pending => false,
            };
            self.poll_deadlines(cx);
            let in_flight_before = self.in_flight.len();
            let took = self.intake(cx);
            if took {
                self.batch += self.in_flight.len() - in_flight_before;
            }
            // A lone caller: the last batch was one request and nothing is in flight; its
            // request goes out now instead of after a trip through the run queue.
            let lone = in_flight_before == 0 && self.last_batch <= 1 && self.batch == 1;
            if took && self.yields < MAX_YIELDS && !lone && !self.backlog {
                // Auto-pipelining on one thread: the task that queued a request woke us, and we
                // would run (LIFO slot) before every other task that is about to queue one.
                // Yield so they do, then write them all in one syscall; yield again while each
                // trip through the run queue brings more.
                self.yields += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.batch > 0 {
                self.last_batch = self.batch;
                self.batch = 0;
            }
            self.yields = 0;
            let held = self.hold(cx);
            let wrote = match self.poll_flush_out(cx) {
                Poll::Ready(Ok(wrote)) => wrote,
                Poll::Ready(Err(e)) => return Poll::Ready(Stop::Io(e)),
                Poll::Pending => false,
            };
            if self.rx_closed
                && self.pending.is_empty()
                && self.in_flight.is_empty()
                && self.queued_bytes == 0
            {
                return Poll::Ready(Stop::Closed);
            }
            if self.backlog {
                // Let the callers just answered queue their next commands; the rest of the
                // read buffer is dispatched on the next poll.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !(read || took || held || wrote) {
                // Every source returned Pending and registered the waker.
                return Poll::Pending;
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Driver<'_, S> {
    type Output = Stop;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Stop> {
        let this = &mut *self;
        let polled = this.poll_batch(cx);
        if let Some(load) = this.load {
            let n = this.in_flight.len();
            if load.load(std::sync::atomic::Ordering::Relaxed) != n {
                load.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    //! The batching itself, seen through a stream that counts the driver's writes; the peer
    //! answers `+OK` to every command it decodes.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadBuf};
    use tokio::sync::oneshot;

    use super::*;
    use crate::resp::encode_command;

    /// Counts the write calls that moved bytes, and notes at each one how many callers had
    /// been answered by then (`answered`, counted by the test's callers).
    struct Counting {
        inner: DuplexStream,
        writes: Arc<AtomicUsize>,
        answered: Arc<AtomicUsize>,
        answered_at_write: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = r
                && n > 0
            {
                self.writes.fetch_add(1, Ordering::Relaxed);
                let answered = self.answered.load(Ordering::Relaxed);
                if let Ok(mut at) = self.answered_at_write.lock() {
                    at.push(answered);
                }
            }
            r
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// A driver on `stream` taking requests from `rx`, until every sender is gone.
    fn spawn_driver(
        stream: Counting,
        mut rx: mpsc::Receiver<Request>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut pending = VecDeque::new();
            Driver::new(
                stream,
                &mut rx,
                &mut pending,
                1000,
                1024,
                Decoder::new(),
                None,
            )
            .await;
        })
    }

    fn request(key: &str) -> (Request, oneshot::Receiver<Result<Reply, crate::Error>>) {
        let mut data = BytesMut::new();
        encode_command(&mut data, &[&b"GET"[..], key.as_bytes()]);
        let (tx, rx) = oneshot::channel();
        let req = Request {
            data: data.freeze(),
            replies: 1,
            tx,
            retry: false,
            deadline: None,
        };
        (req, rx)
    }

    #[tokio::test]
    async fn queued_commands_go_out_in_one_write_and_a_lone_one_at_once() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let stream = Counting {
            inner: ours,
            writes: writes.clone(),
            answered: Default::default(),
            answered_at_write: Default::default(),
        };
        let commands = Arc::new(AtomicUsize::new(0));
        let seen = commands.clone();
        tokio::spawn(async move {
            let (mut buf, mut decoder) = (BytesMut::new(), Decoder::new());
            while peer.read_buf(&mut buf).await.unwrap_or(0) > 0 {
                let mut out = Vec::new();
                while let Ok(Some(_)) = decoder.decode(&mut buf) {
                    seen.fetch_add(1, Ordering::Relaxed);
                    out.extend_from_slice(b"+OK\r\n");
                }
                if peer.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
        let (tx, rx) = mpsc::channel(1024);
        // A hundred callers queue while the owner task is busy elsewhere.
        let mut replies = Vec::new();
        for i in 0..100 {
            let (req, reply) = request(&format!("k{i}"));
            tx.try_send(req).unwrap();
            replies.push(reply);
        }
        let driver = spawn_driver(stream, rx);
        for r in replies {
            assert!(matches!(
                r.await.unwrap().unwrap(),
                Reply::One(Frame::Simple(_))
            ));
        }
        assert_eq!(commands.load(Ordering::Relaxed), 100);
        assert_eq!(
            writes.load(Ordering::Relaxed),
            1,
            "a hundred queued commands are one write"
        );

        // The queue drained: a lone command is written without waiting for company.
        let (req, reply) = request("alone");
        tx.send(req).await.unwrap();
        assert!(matches!(reply.await.unwrap().unwrap(), Reply::One(_)));
        assert_eq!(writes.load(Ordering::Relaxed), 2);
        drop(tx);
        driver.await.unwrap();
    }

    #[tokio::test]
    async fn a_read_answering_every_caller_is_dispatched_in_halves() {
        const CALLERS: usize = 64;
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let answered = Arc::new(AtomicUsize::new(0));
        let answered_at_write = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stream = Counting {
            inner: ours,
            writes: Default::default(),
            answered: answered.clone(),
            answered_at_write: answered_at_write.clone(),
        };
        // The peer holds its replies until all 64 first commands arrived, then answers them
        // in one write (one read for the driver); later commands are answered as they come.
        tokio::spawn(async move {
            let (mut buf, mut decoder, mut held) = (BytesMut::new(), Decoder::new(), 0);
            while peer.read_buf(&mut buf).await.unwrap_or(0) > 0 {
                let mut out = Vec::new();
                while let Ok(Some(_)) = decoder.decode(&mut buf) {
                    held += 1;
                    if held >= CALLERS {
                        out.extend_from_slice(b"+OK\r\n");
                    }
                }
                if held == CALLERS {
                    out = b"+OK\r\n".repeat(CALLERS);
                }
                if peer.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
        let (tx, rx) = mpsc::channel(1024);
        let mut callers = Vec::new();
        for i in 0..CALLERS {
            let (req, reply) = request(&format!("k{i}"));
            tx.try_send(req).unwrap();
            let (tx, answered) = (tx.clone(), answered.clone());
            // Each caller, once answered, sends its next command and awaits that reply.
            callers.push(tokio::spawn(async move {
                assert!(matches!(reply.await.unwrap().unwrap(), Reply::One(_)));
                answered.fetch_add(1, Ordering::Relaxed);
                let (next, reply) = request(&format!("next{i}"));
                tx.send(next).await.unwrap();
                assert!(matches!(reply.await.unwrap().unwrap(), Reply::One(_)));
            }));
        }
        drop(tx);
        let driver = spawn_driver(stream, rx);
        for c in callers {
            c.await.unwrap();
        }
        driver.await.unwrap();
        let at = answered_at_write.lock().unwrap().clone();
        assert_eq!(
            at.first(),
            Some(&0),
            "the first 64 commands went out first: {at:?}"
        );
        // Lockstep would answer all 64 before the first follow-up is written.
        assert_eq!(
            at.get(1),
            Some(&(CALLERS / 2)),
            "the first half's next commands are written before the second half is answered: {at:?}"
        );
    }
}
