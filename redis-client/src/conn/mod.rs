//! Connections: the handshake, the owner task with its reconnect loop, and the handle callers
//! send requests through.

mod driver;
mod stream;
#[cfg(feature = "tls")]
pub(crate) mod tls;

pub(crate) use self::driver::MIN_HALF;
pub(crate) use self::stream::Stream;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use jupiter_core::backoff::Backoff;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use self::driver::{Driver, Stop};
use crate::Error;
use crate::config::{Protocol, Settings};
use crate::resp::{Decoder, Frame, encode_command};

/// What the owner task sends back for one request.
#[derive(Debug)]
pub(crate) enum Reply {
    One(Frame),
    Many(Vec<Frame>),
}

pub(crate) type ReplyTx = oneshot::Sender<Result<Reply, Error>>;

/// One request: encoded command(s) and how many replies they produce.
pub(crate) struct Request {
    pub(crate) data: Bytes,
    pub(crate) replies: u32,
    pub(crate) tx: ReplyTx,
    /// Safe to send again on a new connection if the old one broke before the reply.
    pub(crate) retry: bool,
    /// When the caller stops waiting: the owner task answers `Timeout` then, wherever the
    /// request is (queued, written, awaiting a reconnect). One timer per connection instead
    /// of one per request.
    pub(crate) deadline: Option<Deadline>,
}

/// A request's deadline and the timeout it came from (for the error).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    pub(crate) at: Instant,
    pub(crate) timeout: Duration,
}

impl Deadline {
    /// `timeout` from now.
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    pub(crate) fn error(self) -> Error {
        Error::Timeout(self.timeout)
    }
}

/// What a connection reports besides replies.
#[derive(Debug)]
pub(crate) enum ConnEvent<'a> {
    /// An out-of-band frame (RESP3 push: a client-tracking invalidation, a server-initiated
    /// unsubscribe), never a reply.
    Push(Frame),
    /// The connection is up (again); what it tracked before it went down is gone, which its
    /// `Down` said.
    Up,
    /// The connection to this server was lost.
    Down(&'a str),
}

/// Where connections report [`ConnEvent`]s: called on the owner task, so it must not block.
pub(crate) type Events = Arc<dyn Fn(ConnEvent<'_>) + Send + Sync>;

/// Answers `Timeout` to the expired requests in `queue` and drops those whose caller left.
/// Returns the earliest deadline left, if any. Deadlines are not in queue order (handles
/// with their own timeout share connections), so the whole queue is looked at: this runs
/// when a deadline passes, not per request.
pub(crate) fn expire_queue(queue: &mut VecDeque<Request>, now: Instant) -> Option<Instant> {
    let mut next: Option<Instant> = None;
    for _ in 0..queue.len() {
        let req = queue.pop_front().expect("counted");
        if !req.tx.is_closed() {
            next = earliest(next, keep_unless_expired(queue, req, now));
        }
    }
    next
}

/// Puts `req` at the back of `queue`, unless its deadline has passed: then it is answered
/// `Timeout`. Returns the deadline it waits under there.
pub(crate) fn keep_unless_expired(
    queue: &mut VecDeque<Request>,
    req: Request,
    now: Instant,
) -> Option<Instant> {
    match req.deadline {
        Some(d) if d.at <= now => {
            let _ = req.tx.send(Err(d.error()));
            None
        }
        d => {
            queue.push_back(req);
            d.map(|d| d.at)
        }
    }
}

/// The earlier of two optional instants.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A handle to one multiplexed connection's owner task. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    tx: mpsc::Sender<Request>,
    pub(crate) addr: Arc<str>,
    state: Arc<ConnState>,
}

/// What the owner task tells the handles: whether it is connected, and how many requests
/// await replies (the pool spreads over fewer connections when few are in flight).
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    connected: AtomicBool,
    in_flight: AtomicUsize,
}

impl Connection {
    /// Starts the owner task for `config`. It connects in the background; requests sent before
    /// it is connected wait in the queue (bounded, under their timeout).
    pub(crate) fn spawn(
        config: Arc<Settings>,
        events: Option<Events>,
    ) -> (Connection, AbortHandle) {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let addr: Arc<str> = Arc::from(config.addr());
        let state = Arc::new(ConnState::default());
        let task = tokio::spawn(run(config, rx, events, addr.clone(), state.clone()));
        (Connection { tx, addr, state }, task.abort_handle())
    }

    /// Whether the owner task currently holds a live connection.
    pub(crate) fn is_connected(&self) -> bool {
        self.state.connected.load(Ordering::Relaxed)
    }

    /// Requests written and awaiting replies, as the owner task last saw them.
    pub(crate) fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn set_in_flight(&self, n: usize) {
        self.state.in_flight.store(n, Ordering::Relaxed);
    }

    /// Queues `data` and waits for its `replies` replies, until `deadline` (time in the
    /// queue included).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future at any point is safe: a request not yet written is skipped, and the
    /// replies of a written one are read and discarded, so later replies still match.
    pub(crate) async fn request(
        &self,
        data: Bytes,
        replies: u32,
        retry: bool,
        deadline: Option<Deadline>,
    ) -> Result<Reply, Error> {
        let (tx, rx) = oneshot::channel();
        let req = Request {
            data,
            replies,
            tx,
            retry,
            deadline,
        };
        match self.tx.try_send(req) {
            Ok(()) => {}
            // Boxed: the wait for room (a channel send and a timer) would triple the size of
            // every request's future, which each layer above moves into place.
            Err(mpsc::error::TrySendError::Full(req)) => {
                Box::pin(self.send_when_room(req, deadline)).await?;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::Closed),
        }
        // The owner task answers by the deadline: a reply, an error, or the timeout.
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(Error::ConnectionLost {
                addr: self.addr.to_string(),
                source: None,
            }),
        }
    }
}

impl Connection {
    /// Backpressure: the queue is full; waits for room, under the deadline (the owner task
    /// cannot see this request yet).
    async fn send_when_room(&self, req: Request, deadline: Option<Deadline>) -> Result<(), Error> {
        let send = self.tx.send(req);
        match deadline {
            Some(d) => match tokio::time::timeout_at(d.at, send).await {
                Ok(sent) => sent.map_err(|_| Error::Closed),
                Err(_) => Err(d.error()),
            },
            None => send.await.map_err(|_| Error::Closed),
        }
    }
}

/// The owner task: connect, drive, and on failure answer or requeue what was in flight, back
/// off, reconnect. Ends when every handle is dropped and nothing is left to answer.
async fn run(
    config: Arc<Settings>,
    mut rx: mpsc::Receiver<Request>,
    events: Option<Events>,
    addr: Arc<str>,
    state: Arc<ConnState>,
) {
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut pending: VecDeque<Request> = VecDeque::new();
    loop {
        let attempt = wait_queued(
            connect(&config),
            &mut rx,
            &mut pending,
            config.queue_capacity,
        );
        let Some(attempt) = attempt.await else { return };
        match attempt {
            Ok(stream) => {
                backoff.reset();
                state.connected.store(true, Ordering::Relaxed);
                tracing::debug!(%addr, "redis connected");
                if let Some(events) = &events {
                    events(ConnEvent::Up);
                }
                let decoder = Decoder::with_limits(
                    config.max_frame.bytes() as usize,
                    crate::resp::DEFAULT_MAX_DEPTH,
                );
                let mut driver = Driver::new(
                    stream,
                    &mut rx,
                    &mut pending,
                    config.max_in_flight,
                    config.queue_capacity,
                    decoder,
                    events.as_ref(),
                );
                driver.split_replies = !config.cluster;
                driver.load = Some(&state.in_flight);
                let stop = (&mut driver).await;
                let in_flight = std::mem::take(&mut driver.in_flight);
                drop(driver);
                state.connected.store(false, Ordering::Relaxed);
                state.in_flight.store(0, Ordering::Relaxed);
                if let Some(events) = &events {
                    events(ConnEvent::Down(&addr));
                }
                let (source, protocol) = match stop {
                    Stop::Closed => return,
                    Stop::Eof => (
                        Some(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
                        None,
                    ),
                    Stop::Io(e) => (Some(e), None),
                    Stop::Protocol(e) => (None, Some(e)),
                    Stop::Unexpected => (None, Some(crate::resp::ProtocolError::unexpected())),
                };
                match &protocol {
                    Some(e) => {
                        tracing::warn!(%addr, error = %e, "malformed data from redis; replacing the connection")
                    }
                    None => tracing::warn!(%addr, error = ?source, "redis connection lost"),
                }
                // Requests that may run twice go again on the next connection, in order; the
                // others get an error now.
                let mut retried = Vec::new();
                for f in in_flight {
                    // Answered already (timed out): nothing to do.
                    let Some(tx) = f.tx else { continue };
                    // Never after malformed data: the same request would likely get the same
                    // reply again, and again.
                    if f.retry && config.retry_reads && protocol.is_none() && !tx.is_closed() {
                        retried.push(Request {
                            data: f.data,
                            replies: f.replies,
                            tx,
                            retry: true,
                            deadline: f.deadline,
                        });
                    } else {
                        let err = match &protocol {
                            Some(e) => Error::Protocol {
                                addr: addr.to_string(),
                                source: e.clone(),
                            },
                            None => Error::ConnectionLost {
                                addr: addr.to_string(),
                                source: source
                                    .as_ref()
                                    .map(|e| std::io::Error::new(e.kind(), e.to_string())),
                            },
                        };
                        let _ = tx.send(Err(err));
                    }
                }
                for req in retried.into_iter().rev() {
                    pending.push_front(req);
                }
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "redis connect failed");
                // The server is down: queued requests fail now instead of waiting for their
                // timeout; new ones wait for the next attempt.
                for req in pending.drain(..) {
                    let _ = req.tx.send(Err(e.clone_lossy()));
                }
                while let Ok(req) = rx.try_recv() {
                    let _ = req.tx.send(Err(e.clone_lossy()));
                }
                if rx.is_closed() {
                    return;
                }
                if config.fail_fast {
                    // A cluster node: the router sends elsewhere once the topology says so, so
                    // requests arriving while this node is down fail now (as never sent).
                    let sleep = tokio::time::sleep(backoff.next_delay());
                    if wait_failing(sleep, &mut rx, &e).await.is_none() {
                        return;
                    }
                    continue;
                }
            }
        }
        // Back off; requests arriving meanwhile wait in `pending` (bounded) for the next attempt.
        let sleep = tokio::time::sleep(backoff.next_delay());
        if wait_queued(sleep, &mut rx, &mut pending, config.queue_capacity)
            .await
            .is_none()
        {
            return;
        }
    }
}

/// Waits for `fut` while the server is unreachable, answering every arriving request with
/// `error`. `None`: every handle is gone.
async fn wait_failing<F: std::future::Future>(
    fut: F,
    rx: &mut mpsc::Receiver<Request>,
    error: &Error,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            req = rx.recv() => match req {
                Some(req) => {
                    let _ = req.tx.send(Err(error.clone_lossy()));
                }
                None => return None,
            },
        }
    }
}

/// Waits for `fut` while no connection is up: requests arriving wait in `pending` (at most
/// `capacity`), and those whose deadline passes are answered. `None`: every handle is gone
/// and nothing is left to answer.
async fn wait_queued<F: std::future::Future>(
    fut: F,
    rx: &mut mpsc::Receiver<Request>,
    pending: &mut VecDeque<Request>,
    capacity: usize,
) -> Option<F::Output> {
    tokio::pin!(fut);
    let mut rx_done = false;
    let mut next = expire_queue(pending, Instant::now());
    loop {
        let tick = async move {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = &mut fut => return Some(out),
            req = rx.recv(), if !rx_done && pending.len() < capacity => match req {
                Some(req) => {
                    next = earliest(next, req.deadline.map(|d| d.at));
                    pending.push_back(req);
                }
                None if pending.is_empty() => return None,
                None => rx_done = true,
            },
            () = tick => next = expire_queue(pending, Instant::now()),
        }
    }
}

/// Opens a TCP connection (and TLS over it when configured) and runs the handshake:
/// `HELLO 3` (RESP3) or `AUTH` (RESP2), `CLIENT SETNAME`, `SELECT`.
pub(crate) async fn connect(config: &Settings) -> Result<Stream, Error> {
    let addr = config.addr();
    let connect_err = |source: Error| Error::Connect {
        addr: addr.clone(),
        source: Box::new(source),
    };
    let tcp = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(connect_err(Error::Io {
                addr: addr.clone(),
                source: e,
            }));
        }
        Err(_) => return Err(connect_err(Error::Timeout(config.connect_timeout))),
    };
    let _ = tcp.set_nodelay(true);
    #[cfg(feature = "tls")]
    let mut stream = match &config.tls {
        None => Stream::Tcp(tcp),
        Some(tls) => {
            let handshake = tls.connector.connect(tls.server_name.clone(), tcp);
            match tokio::time::timeout(config.connect_timeout, handshake).await {
                Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                Ok(Err(e)) => {
                    return Err(connect_err(Error::Io {
                        addr: addr.clone(),
                        source: e,
                    }));
                }
                Err(_) => return Err(connect_err(Error::Timeout(config.connect_timeout))),
            }
        }
    };
    #[cfg(not(feature = "tls"))]
    let mut stream = Stream::Tcp(tcp);
    let mut hs = Handshake {
        stream: &mut stream,
        rbuf: BytesMut::with_capacity(4096),
        decoder: Decoder::new(),
        addr: &addr,
    };
    let steps = async {
        let password = config.password.as_deref();
        let user = config.username.as_deref();
        match config.protocol {
            Protocol::Resp3 => {
                let mut args: Vec<&[u8]> = vec![b"HELLO", b"3"];
                if let Some(p) = password {
                    args.extend([
                        &b"AUTH"[..],
                        user.unwrap_or("default").as_bytes(),
                        p.as_bytes(),
                    ]);
                }
                if let Some(name) = config.client_name.as_deref() {
                    args.extend([&b"SETNAME"[..], name.as_bytes()]);
                }
                match hs.call(&args).await? {
                    Frame::Error(e) if e.starts_with(b"WRONGPASS") || e.starts_with(b"NOAUTH") => {
                        return Err(Error::Auth(e));
                    }
                    // RESP3 needs Redis 6 or later.
                    Frame::Error(e) => {
                        return Err(Error::Handshake {
                            step: "HELLO 3",
                            reply: e,
                        });
                    }
                    _ => {}
                }
            }
            Protocol::Resp2 => {
                if let Some(p) = password {
                    let args: Vec<&[u8]> = match user {
                        Some(u) => vec![b"AUTH", u.as_bytes(), p.as_bytes()],
                        None => vec![b"AUTH", p.as_bytes()],
                    };
                    if let Frame::Error(e) = hs.call(&args).await? {
                        return Err(Error::Auth(e));
                    }
                }
                if let Some(name) = config.client_name.as_deref()
                    && let Frame::Error(e) = hs
                        .call(&[&b"CLIENT"[..], b"SETNAME", name.as_bytes()])
                        .await?
                {
                    return Err(Error::Handshake {
                        step: "CLIENT SETNAME",
                        reply: e,
                    });
                }
            }
        }
        if config.db != 0
            && let Frame::Error(e) = hs
                .call(&[&b"SELECT"[..], config.db.to_string().as_bytes()])
                .await?
        {
            return Err(Error::Handshake {
                step: "SELECT",
                reply: e,
            });
        }
        if config.readonly
            && let Frame::Error(e) = hs.call(&[&b"READONLY"[..]]).await?
        {
            return Err(Error::Handshake {
                step: "READONLY",
                reply: e,
            });
        }
        if config.tracking != crate::config::TrackingMode::Off {
            let mut args: Vec<&[u8]> = vec![b"CLIENT", b"TRACKING", b"ON"];
            if config.tracking == crate::config::TrackingMode::Bcast {
                args.push(b"BCAST");
                for p in &config.tracking_prefixes {
                    args.extend([&b"PREFIX"[..], p.as_bytes()]);
                }
            }
            if let Frame::Error(e) = hs.call(&args).await? {
                return Err(Error::Handshake {
                    step: "CLIENT TRACKING",
                    reply: e,
                });
            }
        }
        Ok(())
    };
    match tokio::time::timeout(config.connect_timeout, steps).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(connect_err(e)),
        Err(_) => Err(connect_err(Error::Timeout(config.connect_timeout))),
    }
}

/// Connects to the server of `config`, sends one command and returns its reply, within the
/// connect timeout; the connection is closed after (a cluster's slot-map query to a seed).
pub(crate) async fn oneshot(config: &Settings, args: &[&[u8]]) -> Result<Frame, Error> {
    let addr = config.addr();
    let call = async {
        let mut stream = connect(config).await?;
        let mut hs = Handshake {
            stream: &mut stream,
            rbuf: BytesMut::with_capacity(4096),
            decoder: Decoder::with_limits(
                config.max_frame.bytes() as usize,
                crate::resp::DEFAULT_MAX_DEPTH,
            ),
            addr: &addr,
        };
        hs.call(args).await
    };
    match tokio::time::timeout(config.connect_timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(Error::Connect {
            addr: addr.clone(),
            source: Box::new(Error::Timeout(config.connect_timeout)),
        }),
    }
}

struct Handshake<'a> {
    stream: &'a mut Stream,
    rbuf: BytesMut,
    decoder: Decoder,
    addr: &'a str,
}

impl Handshake<'_> {
    async fn call(&mut self, args: &[&[u8]]) -> Result<Frame, Error> {
        let mut out = BytesMut::new();
        encode_command(&mut out, args);
        let io = |e| Error::Io {
            addr: self.addr.to_owned(),
            source: e,
        };
        self.stream.write_all(&out).await.map_err(io)?;
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::Protocol {
                        addr: self.addr.to_owned(),
                        source: e,
                    });
                }
            }
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| Error::Io {
                    addr: self.addr.to_owned(),
                    source: e,
                })?;
            if n == 0 {
                return Err(Error::ConnectionLost {
                    addr: self.addr.to_owned(),
                    source: None,
                });
            }
        }
    }
}
