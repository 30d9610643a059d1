//! One server's connections: a pool of multiplexed connections picked by task, the
//! per-command metrics of that server, and idle dedicated connections for blocking commands.
//!
//! A standalone client has one pool; a cluster client one per node it talks to.
//!
//! Hot path (`call`): no allocation beyond the request's own, no lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use jupiter_core::metrics::{Code, HandleMetrics, Metrics, SeriesTable};
use tokio::task::AbortHandle;

use crate::Error;
use crate::cmd::spec::{self, Spec};
use crate::config::{Settings, TrackingMode};
use crate::conn::{Connection, Deadline, Events, Reply};
use crate::resp::Frame;

/// [`Pool::spread`]: one more connection is used while those in use carry more than this
/// many requests in flight each...
const SPREAD_GROW: usize = 64;
/// ...and one fewer when the others would carry fewer than this many each (the gap keeps the
/// count, and with it the tasks' cohorts, from flapping).
const SPREAD_SHRINK: usize = 32;
/// Never fewer connections than this in use: one connection alone runs client and server in
/// turns.
const MIN_SPREAD: usize = 2;
/// Every connection is used while fewer than this many requests per connection are in flight:
/// the driver does not split cohorts that small in halves, so only separate connections
/// overlap their round trips.
const SPREAD_ALL_BELOW: usize = crate::conn::MIN_HALF;

/// Idle dedicated connections kept per server for blocking commands.
const MAX_IDLE: usize = 8;

/// What a pool needs besides its server's settings; shared by every pool of a client.
#[derive(Clone)]
pub(crate) struct PoolOptions {
    pub(crate) name: Arc<str>,
    pub(crate) metrics: Option<Metrics>,
    /// Where connections report push frames and their state (client tracking).
    pub(crate) events: Option<Events>,
}

pub(crate) struct Pool {
    pub(crate) settings: Arc<Settings>,
    pub(crate) addr: Arc<str>,
    conns: Box<[Connection]>,
    next: AtomicUsize,
    /// See [`Pool::spread`].
    spread: AtomicUsize,
    metrics: Option<CmdMetrics>,
    /// Idle dedicated connections. They hold no handle to the client, so a client that ran
    /// a blocking command is freed like any other (no cycle through this set).
    idle: Mutex<Vec<Link>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.addr)
            .field("size", &self.conns.len())
            .finish()
    }
}

impl Pool {
    /// Starts `settings.pool_size()` connections to the server of `settings` (in the
    /// background; requests wait for them under their deadlines).
    pub(crate) fn new(settings: Arc<Settings>, options: PoolOptions) -> Pool {
        let addr: Arc<str> = Arc::from(settings.addr());
        // Broadcast tracking reports every change to every tracking connection: one per
        // server is enough. Default tracking follows each connection's own reads: all of them.
        let bcast = settings.tracking == TrackingMode::Bcast;
        let untracked = bcast.then(|| {
            let mut s = (*settings).clone();
            s.config.tracking = TrackingMode::Off;
            s.config.tracking_prefixes.clear();
            Arc::new(s)
        });
        let size = settings.pool_size();
        let conns = (0..size)
            .map(|i| match (&untracked, i) {
                (Some(plain), 1..) => Connection::spawn(plain.clone(), None).0,
                _ => Connection::spawn(settings.clone(), options.events.clone()).0,
            })
            .collect();
        let metrics = match (&options.metrics, settings.metrics) {
            (Some(registry), true) => Some(CmdMetrics {
                registry: registry.clone(),
                name: options.name.clone(),
                peer: addr.clone(),
                series: SeriesTable::new(spec::COUNT + 1),
            }),
            _ => None,
        };
        Pool {
            settings,
            addr,
            conns,
            next: AtomicUsize::new(0),
            spread: AtomicUsize::new(size),
            metrics,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Whether every connection is currently up.
    pub(crate) fn is_connected(&self) -> bool {
        self.conns.iter().all(Connection::is_connected)
    }

    /// Whether any connection is currently up.
    pub(crate) fn is_any_connected(&self) -> bool {
        self.conns.iter().any(Connection::is_connected)
    }

    pub(crate) fn connections(&self) -> &[Connection] {
        &self.conns
    }

    /// The connection for a command from the current task.
    ///
    /// Each task keeps to one connection (its task id, hashed): the tasks sharing a connection
    /// then wake together when its replies arrive and queue their next commands together, so
    /// each connection writes one large batch per round trip while the server works on
    /// another connection's. Spreading every command round-robin instead splits those cohorts
    /// over all connections: smaller batches, more syscalls per command, and rounds that no
    /// longer overlap (measured in `compare redis`: at 64 tasks on 4 connections, 2.1 against
    /// 1.0 CPU µs per command, and half the throughput). Outside a task (`block_on`),
    /// round-robin. A connection that is down is passed over while another is up.
    ///
    /// The tasks are spread over the first [`spread`](Pool::spread) connections only: as few as
    /// keep each one's batches large, as many as the load needs for the rounds to overlap.
    pub(crate) fn pick(&self) -> &Connection {
        let conns = &self.conns;
        let n = conns.len();
        if n == 1 {
            return &conns[0];
        }
        let start = match tokio::task::try_id() {
            Some(id) => {
                let mut h = TaskHasher(0);
                std::hash::Hash::hash(&id, &mut h);
                (h.0 >> 32) as usize
            }
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        // The first `k` keep their tasks when `k` changes; only the tasks of the others move.
        let (i, k) = (start % n, self.spread());
        let first = &conns[if i < k { i } else { start % k }];
        if first.is_connected() {
            return first;
        }
        (0..n)
            .map(|j| &conns[(start + j) % n])
            .find(|c| c.is_connected())
            .unwrap_or(first)
    }

    /// How many of the connections commands are spread over now (the first that many).
    ///
    /// Few requests in flight over many connections make small batches, and each batch costs
    /// a write and a read on both sides, which a larger one shares among more commands. So
    /// under a moderate load the tasks gather on fewer connections, and spread again as the
    /// load grows (see [`SPREAD_GROW`] and the constants after it). The load is what the
    /// connections' owner tasks last published, read without a lock. Measured in `compare
    /// redis` (one worker thread, 4 connections, 5 interleaved rounds of each, medians):
    ///
    /// | tasks | all 4 connections | spread | CPU µs/op, all 4 → spread |
    /// |---:|---:|---:|---:|
    /// | 16 | 229k ops/s | 265k | 3.21 → 2.90 |
    /// | 64 | 501k | 652k | 1.81 → 1.31 |
    /// | 512 | 1.29M | 1.32M | 0.77 → 0.74 |
    ///
    /// and through the redis-rs API at 64 tasks 547k → 622k ops/s, 1.80 → 1.46 µs/op. Fixed
    /// sizes measured worse somewhere (2 connections: −11 % at 512 tasks), and so did simpler
    /// rules: gathering down to 1 connection lost 29 % at 16 tasks, and without the low-load
    /// rule ([`SPREAD_ALL_BELOW`]) gathering to 2 lost 28 % there.
    fn spread(&self) -> usize {
        let n = self.conns.len();
        if n <= MIN_SPREAD {
            // Nothing to gather: the connections' loads need not be read.
            return n;
        }
        let k = self.spread.load(Ordering::Relaxed).clamp(MIN_SPREAD, n);
        let load: usize = self.conns.iter().map(Connection::in_flight).sum();
        let next = if k < n && load > k * SPREAD_GROW {
            k + 1
        } else if k > MIN_SPREAD && load < (k - 1) * SPREAD_SHRINK {
            k - 1
        } else {
            k
        };
        if next != k {
            self.spread.store(next, Ordering::Relaxed);
        }
        if load < n * SPREAD_ALL_BELOW {
            return n;
        }
        k
    }

    /// Sends one encoded command and returns its reply frame, error replies included (the
    /// caller decides about redirections), recording the command's metrics.
    pub(crate) async fn call(
        &self,
        data: Bytes,
        spec: Option<&'static Spec>,
        retry: bool,
        deadline: Option<Deadline>,
    ) -> Result<Frame, Error> {
        let guard = self
            .metrics
            .as_ref()
            .and_then(|m| m.get(spec))
            .map(HandleMetrics::start);
        let conn = self.pick();
        let name = spec.map_or("?", |s| s.name);
        // The command's name and the server, never its arguments or reply (values may be
        // personal data). Disabled spans cost one check.
        let span = tracing::debug_span!("redis", command = name, peer = %self.addr);
        let fut = conn.request(data, 1, retry, deadline);
        let result = if span.is_disabled() {
            drop(span);
            fut.await
        } else {
            // Boxed: with debug logging on, an allocation is noise; off, the span stays out of
            // the hot future's layout.
            Box::pin(tracing::Instrument::instrument(fut, span)).await
        }
        .map(reply_one);
        if let Some(g) = guard {
            g.finish(match &result {
                Ok(Frame::Error(e)) => crate::error::server_metric_code(e),
                Ok(_) => Code::OK,
                Err(e) => e.metric_code(),
            });
        }
        match &result {
            // Only the error's code: the message may quote a value.
            Ok(Frame::Error(e)) if !e.starts_with(b"MOVED") && !e.starts_with(b"ASK") => {
                let code = crate::error::server_metric_code(e);
                tracing::debug!(command = name, peer = %self.addr, error = code.as_str(), "redis command failed");
            }
            Err(e) => {
                tracing::debug!(command = name, peer = %self.addr, error = %e, "redis command failed");
            }
            _ => {}
        }
        result
    }

    /// Sends several encoded commands as one request on one connection (pipelines,
    /// transactions, `ASKING` + a command): written together, nothing interleaves.
    pub(crate) async fn call_many(
        &self,
        data: Bytes,
        replies: u32,
        retry: bool,
        deadline: Option<Deadline>,
    ) -> Result<Vec<Frame>, Error> {
        match self.pick().request(data, replies, retry, deadline).await? {
            Reply::Many(frames) => Ok(frames),
            Reply::One(frame) => Ok(vec![frame]),
        }
    }

    /// An idle dedicated connection to this server, if one is kept.
    pub(crate) fn take_idle(&self) -> Option<Link> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Keeps a dedicated connection for reuse (up to a few; the rest are closed).
    pub(crate) fn put_idle(&self, link: Link) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(link);
        }
    }
}

/// A dedicated connection: its handle and its owner task, stopped when dropped (a blocked
/// command may never be answered: stop the task rather than wait for it).
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) conn: Connection,
    task: AbortHandle,
}

impl Link {
    /// Starts a connection of its own to the server of `settings`.
    pub(crate) fn open(settings: &Settings) -> Link {
        // Never tracking: what a dedicated connection reads is not cached.
        let mut settings = settings.clone();
        settings.config.tracking = TrackingMode::Off;
        settings.config.tracking_prefixes.clear();
        let (conn, task) = Connection::spawn(Arc::new(settings), None);
        Link { conn, task }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn reply_one(reply: Reply) -> Frame {
    match reply {
        Reply::One(f) => f,
        Reply::Many(mut v) if v.len() == 1 => v.remove(0),
        Reply::Many(v) => Frame::Array(v),
    }
}

/// Per-command metrics series of one server, resolved once per command: indexed by the
/// command's position in the command table, so the hot path does no hashing and takes no
/// lock.
struct CmdMetrics {
    registry: Metrics,
    name: Arc<str>,
    peer: Arc<str>,
    /// By command (`spec::index_of`), then one for commands outside the table.
    series: SeriesTable,
}

impl CmdMetrics {
    fn get(&self, spec: Option<&'static Spec>) -> Option<&HandleMetrics> {
        let (i, name) = spec
            .and_then(|s| spec::index_of(s).map(|i| (i, s.name)))
            .unwrap_or((spec::COUNT, "?"));
        self.series.get(i, || {
            self.registry.client("redis", &self.name, name, &*self.peer)
        })
    }
}

/// Spreads task ids over the pool: a multiplicative hash of the id's one `u64` (ids are
/// handed out in sequence; the high bits of the product spread them evenly).
struct TaskHasher(u64);

impl std::hash::Hasher for TaskHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientConfig;

    /// A pool of 4 whose connections never connect (nothing listens on port 1): what they
    /// carry is set by hand.
    fn pool() -> Pool {
        let settings = ClientConfig {
            url: "redis://127.0.0.1:1".into(),
            pool_size: Some(4),
            ..ClientConfig::default()
        }
        .resolve()
        .expect("settings");
        let options = PoolOptions {
            name: Arc::from("t"),
            metrics: None,
            events: None,
        };
        Pool::new(Arc::new(settings), options)
    }

    fn load(pool: &Pool, each: [usize; 4]) {
        for (c, n) in pool.conns.iter().zip(each) {
            c.set_in_flight(n);
        }
    }

    /// Which connections `picks` calls from outside a task land on (round-robin there).
    fn used(pool: &Pool, picks: usize) -> Vec<usize> {
        let seen: std::collections::BTreeSet<usize> = (0..picks)
            .map(|_| {
                let c = pool.pick();
                pool.conns
                    .iter()
                    .position(|x| std::ptr::eq(x, c))
                    .expect("one of the pool's")
            })
            .collect();
        seen.into_iter().collect()
    }

    #[tokio::test]
    async fn commands_gather_on_fewer_connections_under_moderate_load_and_spread_under_heavy() {
        let pool = pool();
        // 40 in flight: one fewer per call while the others would carry < 32 each, down to 2.
        load(&pool, [10, 10, 10, 10]);
        let steps: Vec<usize> = (0..4).map(|_| pool.spread()).collect();
        assert_eq!(steps, [4, 3, 2, 2]);
        assert_eq!(used(&pool, 8), [0, 1]);
        // Idle, or a few requests each: every connection (round trips overlap only across
        // connections).
        load(&pool, [0, 0, 0, 0]);
        assert_eq!(pool.spread(), 4);
        load(&pool, [3, 3, 3, 3]);
        assert_eq!(used(&pool, 8), [0, 1, 2, 3]);
        // 70 in flight on 2: within the band, no change (no flapping).
        load(&pool, [35, 35, 0, 0]);
        assert_eq!([pool.spread(), pool.spread()], [2, 2]);
        // 200 on 2, then on 3: one more each time the ones in use carry > 64 each.
        load(&pool, [100, 100, 0, 0]);
        assert_eq!(pool.spread(), 2);
        load(&pool, [70, 70, 70, 0]);
        assert_eq!([pool.spread(), pool.spread(), pool.spread()], [3, 4, 4]);
        assert_eq!(used(&pool, 8), [0, 1, 2, 3]);
    }
}
