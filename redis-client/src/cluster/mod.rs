//! Redis Cluster: routing commands by slot over one pool per node, following the cluster
//! through resharding and failover.
//!
//! # How a command finds its node
//!
//! The slot map (from `CLUSTER SHARDS`, or `CLUSTER SLOTS` on Redis 6) is a table from each of
//! the 16384 slots to a shard (a primary, its replicas); a command's slot is its first key's
//! (all its keys must share it). The hot path reads the table without a lock (an `ArcSwap`
//! load and an atomic read) and sends on the node's auto-pipelined connections.
//!
//! # When the cluster changes
//!
//! - `MOVED slot addr`: the slot has a new owner. The table is patched in place when the
//!   owner is a known primary, the command goes there, and a refresh is asked for.
//! - `ASK slot addr`: the slot is migrating and this key is already on `addr`: the command
//!   goes there once, after `ASKING`, in the same write; the table does not change.
//! - `TRYAGAIN` (a multi-key command during migration), `CLUSTERDOWN`, `LOADING`: retried
//!   after a jittered, growing pause, inside the command's timeout.
//! - A node that cannot be reached: nothing was sent, so the command waits for a refresh
//!   and tries where the new map says, until the deadline. A command whose connection broke
//!   after it was written is retried only if read-only (a write may have run).
//!
//! Refreshes are asked for by redirections, unreachable nodes and timeouts, and run on one
//! background task: at most one at a time, coalesced, at least `refresh-min-interval` apart
//! (jittered), plus one every `refresh-interval`. A storm of errors is one refresh.
//!
//! # What needs one slot
//!
//! `MGET`, `MSET`, `DEL`, `EXISTS`, `UNLINK` and `TOUCH` are split by slot, sent in
//! parallel and put back in order. Other multi-key commands, transactions, scripts and
//! dedicated connections need one slot and fail with [`Error::CrossSlot`] before anything is
//! sent. Whole-cluster commands go to every primary: `FLUSHALL`, `FLUSHDB`, `SCRIPT LOAD`,
//! `SCRIPT FLUSH`, `FUNCTION LOAD|DELETE|FLUSH` (the first reply), `DBSIZE` (the sum), `KEYS`
//! (every node's keys), `RANDOMKEY` (a key of a node that has one). Other keyless commands go
//! to any primary.

mod slot;
mod topology;

pub(crate) use self::slot::cmd_slot;
pub use self::slot::key_slot;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use jupiter_core::backoff::Backoff;
use jupiter_core::prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use self::topology::{NodeAddr, ShardDesc, Topology};
use crate::Error;
use crate::cmd::Cmd;
use crate::cmd::spec::Spec;
use crate::config::Settings;
use crate::conn::Deadline;
use crate::pool::{Pool, PoolOptions};
use crate::resp::{Frame, encode_command};

/// The encoded `ASKING` command.
pub(crate) const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// How long one node may take to answer a slot-map query before the next is asked.
const REFRESH_QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// Attempts of a command without a deadline (`command-timeout = "0s"`) against unreachable
/// nodes before its error is returned.
const MAX_ATTEMPTS_WITHOUT_DEADLINE: u32 = 64;

/// What the router did, for tests and dashboards (also exported as `client_events_total`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Slot-map reads that succeeded.
    pub refreshes: u64,
    /// Slot-map reads that failed on every node asked.
    pub failed_refreshes: u64,
    /// `MOVED` redirections followed.
    pub moved: u64,
    /// `ASK` redirections followed.
    pub ask: u64,
    /// `TRYAGAIN`/`CLUSTERDOWN`/`LOADING` replies retried.
    pub retried: u64,
    /// Commands sent again because their node could not be reached.
    pub unreachable: u64,
}

/// A cluster client's routing: the slot map, the pools, the refresh task.
pub(crate) struct Router {
    shared: Arc<Shared>,
    task: AbortHandle,
}

impl Drop for Router {
    fn drop(&mut self) {
        // The refresh task holds the shared state; the client handle owns the task. Stopping
        // it here is what frees the pools (no cycle between handle and task).
        self.task.abort();
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("primaries", &self.shared.topology.load())
            .finish()
    }
}

struct Shared {
    base: Arc<Settings>,
    options: PoolOptions,
    topology: ArcSwap<Topology>,
    /// Every pool by `host:port`: the table's, and those made for redirections to nodes the
    /// table does not know yet. Rebuilt at each refresh.
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// Asks the refresh task for a refresh (a stored permit coalesces requests).
    wake: Notify,
    /// Bumped after every refresh attempt, success or not: what waiters wait on.
    generation: watch::Sender<u64>,
    /// Whether a slot map was ever read.
    known: watch::Sender<bool>,
    /// Why the last refresh failed (each node's answer), for errors while no map is known.
    last_failure: Mutex<Option<String>>,
    stats: Stats,
}

struct Stats {
    refreshes: AtomicU64,
    failed_refreshes: AtomicU64,
    moved: AtomicU64,
    ask: AtomicU64,
    retried: AtomicU64,
    unreachable: AtomicU64,
    counters: Option<Counters>,
}

struct Counters {
    refresh: Counter,
    refresh_failed: Counter,
    moved: Counter,
    ask: Counter,
    tryagain: Counter,
    clusterdown: Counter,
}

/// What a redirection or transient error reply asks for.
enum Redirect {
    Moved {
        slot: u16,
        addr: NodeAddr,
    },
    Ask {
        addr: NodeAddr,
    },
    /// `TRYAGAIN`, `LOADING`, `MASTERDOWN`: same node, later.
    Later,
    /// `CLUSTERDOWN`: later, after a refresh.
    Down,
}

impl Redirect {
    fn parse(e: &[u8]) -> Option<Redirect> {
        let text = std::str::from_utf8(e).ok()?;
        let mut words = text.split(' ');
        match words.next()? {
            "MOVED" => {
                let slot = words
                    .next()?
                    .parse()
                    .ok()
                    .filter(|s| usize::from(*s) < slot::SLOTS)?;
                let addr = NodeAddr::parse(words.next()?)?;
                Some(Redirect::Moved { slot, addr })
            }
            "ASK" => {
                words.next()?;
                let addr = NodeAddr::parse(words.next()?)?;
                Some(Redirect::Ask { addr })
            }
            "TRYAGAIN" | "LOADING" | "MASTERDOWN" => Some(Redirect::Later),
            "CLUSTERDOWN" => Some(Redirect::Down),
            _ => None,
        }
    }
}

/// Where a command goes.
enum Target {
    Slot(u16),
    Any,
    /// Every primary, the replies combined.
    All(Combine),
    /// Split by slot (`MGET`-like), the replies reassembled.
    Split,
}

#[derive(Clone, Copy)]
enum Combine {
    First,
    /// The first reply that is not null (`RANDOMKEY`: a node with keys).
    FirstNonNull,
    Sum,
    Concat,
}

/// Multi-key commands that are split by slot, and how many arguments go with each key.
fn splittable(name: &str) -> Option<usize> {
    match name {
        "MGET" | "DEL" | "EXISTS" | "UNLINK" | "TOUCH" => Some(1),
        "MSET" => Some(2),
        _ => None,
    }
}

fn classify(cmd: &Cmd, spec: Option<&'static Spec>) -> Result<Target, Error> {
    let Some(spec) = spec else {
        return Ok(Target::Any);
    };
    if let Some(i) = spec.single_key_index() {
        return Ok(match cmd.arg_at(i) {
            Some(key) => Target::Slot(key_slot(key)),
            None => Target::Any,
        });
    }
    match spec.name {
        "FLUSHALL" | "FLUSHDB" | "SCRIPT FLUSH" | "SCRIPT LOAD" | "FUNCTION FLUSH"
        | "FUNCTION LOAD" | "FUNCTION DELETE" | "FUNCTION RESTORE" => {
            return Ok(Target::All(Combine::First));
        }
        "DBSIZE" => return Ok(Target::All(Combine::Sum)),
        "RANDOMKEY" => return Ok(Target::All(Combine::FirstNonNull)),
        "KEYS" => return Ok(Target::All(Combine::Concat)),
        _ => {}
    }
    match cmd_slot(cmd, Some(spec)) {
        Ok(Some(slot)) => Ok(Target::Slot(slot)),
        Ok(None) => Ok(Target::Any),
        Err(Error::CrossSlot { .. }) if splittable(spec.name).is_some() => Ok(Target::Split),
        Err(e) => Err(e),
    }
}

impl Router {
    /// Starts the refresh task; the first slot map is read in the background.
    pub(crate) fn new(base: Arc<Settings>, options: PoolOptions) -> Result<Router, Error> {
        let counters = options.metrics.as_ref().map(|m| {
            let c = |event| m.event("redis", &options.name, event);
            Counters {
                refresh: c("refresh"),
                refresh_failed: c("refresh_failed"),
                moved: c("moved"),
                ask: c("ask"),
                tryagain: c("tryagain"),
                clusterdown: c("clusterdown"),
            }
        });
        let shared = Arc::new(Shared {
            base,
            options,
            topology: ArcSwap::from_pointee(Topology::empty()),
            pools: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            generation: watch::channel(0).0,
            known: watch::channel(false).0,
            last_failure: Mutex::new(None),
            stats: Stats {
                refreshes: AtomicU64::new(0),
                failed_refreshes: AtomicU64::new(0),
                moved: AtomicU64::new(0),
                ask: AtomicU64::new(0),
                retried: AtomicU64::new(0),
                unreachable: AtomicU64::new(0),
                counters,
            },
        });
        let task = tokio::spawn(refresh_task(shared.clone())).abort_handle();
        Ok(Router { shared, task })
    }

    pub(crate) fn stats(&self) -> ClusterStats {
        let s = &self.shared.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterStats {
            refreshes: l(&s.refreshes),
            failed_refreshes: l(&s.failed_refreshes),
            moved: l(&s.moved),
            ask: l(&s.ask),
            retried: l(&s.retried),
            unreachable: l(&s.unreachable),
        }
    }

    /// Whether every primary's connections are up.
    pub(crate) fn is_connected(&self) -> bool {
        let t = self.shared.topology.load();
        !t.is_empty() && t.shards.iter().all(|s| s.primary.is_connected())
    }

    /// The primaries of the current map.
    pub(crate) fn primaries(&self) -> Vec<Arc<Pool>> {
        let t = self.shared.topology.load();
        t.shards.iter().map(|s| s.primary.clone()).collect()
    }

    /// The primaries, once a slot map is known (waiting at most `timeout` for the first).
    pub(crate) async fn primaries_when_known(
        &self,
        timeout: Duration,
    ) -> Result<Vec<Arc<Pool>>, Error> {
        self.wait_known(Some(Deadline::after(timeout))).await?;
        Ok(self.primaries())
    }

    /// The primary of `slot`.
    pub(crate) async fn primary_for(&self, slot: u16) -> Result<Arc<Pool>, Error> {
        let deadline = self.shared.base.deadline();
        self.pick(Some(slot), false, deadline).await
    }

    /// Asks for a refresh and waits for it (at most the command timeout).
    pub(crate) async fn refresh_now(&self) {
        let seen = *self.shared.generation.borrow();
        self.shared.wake.notify_one();
        self.wait_generation(seen, self.shared.base.deadline())
            .await;
    }

    /// The settings of the node at `host:port` (made for it if the map does not know it).
    pub(crate) fn settings_of(&self, addr: &str) -> Option<Arc<Settings>> {
        let addr = NodeAddr::parse(addr)?;
        self.shared.pool(&addr).ok().map(|p| p.settings.clone())
    }

    async fn wait_known(&self, deadline: Option<Deadline>) -> Result<(), Error> {
        let mut known = self.shared.known.subscribe();
        let wait = known.wait_for(|k| *k);
        let ok = match deadline {
            Some(d) => tokio::time::timeout_at(d.at, wait)
                .await
                .ok()
                .is_some_and(|r| r.is_ok()),
            None => wait.await.is_ok(),
        };
        if ok {
            Ok(())
        } else {
            let why = self
                .shared
                .last_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Err(Error::Cluster(match why {
                Some(why) => format!("no slot map yet: {why}"),
                None => format!(
                    "no slot map yet: no seed answered CLUSTER SHARDS/SLOTS ({})",
                    self.seed_list()
                ),
            }))
        }
    }

    fn seed_list(&self) -> String {
        self.shared
            .base
            .seeds
            .iter()
            .map(|(h, p)| {
                NodeAddr {
                    host: h.clone(),
                    port: *p,
                }
                .key()
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The pool for a command of `slot` (`None`: any primary), at once when the map has one.
    fn pick_now(&self, slot: Option<u16>, read: bool) -> Option<Arc<Pool>> {
        let t = self.shared.topology.load();
        let shard = t.shard(slot?)?;
        Some(if read {
            shard.for_read(self.shared.base.read_from).clone()
        } else {
            shard.primary.clone()
        })
    }

    /// The pool for a command of `slot` (`None`: any primary).
    async fn pick(
        &self,
        slot: Option<u16>,
        read: bool,
        deadline: Option<Deadline>,
    ) -> Result<Arc<Pool>, Error> {
        if let Some(pool) = self.pick_now(slot, read) {
            return Ok(pool);
        }
        Box::pin(self.pick_slow(slot, read, deadline)).await
    }

    async fn pick_slow(
        &self,
        slot: Option<u16>,
        read: bool,
        deadline: Option<Deadline>,
    ) -> Result<Arc<Pool>, Error> {
        loop {
            {
                let t = self.shared.topology.load();
                if !t.is_empty() {
                    let chosen = match slot {
                        Some(s) => t.shard(s).map(|shard| {
                            if read {
                                shard.for_read(self.shared.base.read_from).clone()
                            } else {
                                shard.primary.clone()
                            }
                        }),
                        None => {
                            // Keyless: any primary, spread by task like the pool spreads.
                            let n = t.shards.len();
                            let i = tokio::task::try_id().map_or(0, |id| {
                                let mut h = std::collections::hash_map::DefaultHasher::new();
                                std::hash::Hash::hash(&id, &mut h);
                                std::hash::Hasher::finish(&h) as usize
                            });
                            Some(t.shards[i % n].primary.clone())
                        }
                    };
                    if let Some(pool) = chosen {
                        return Ok(pool);
                    }
                    // A slot nobody serves (yet): ask the cluster again, once per refresh.
                    let seen = *self.shared.generation.borrow();
                    self.shared.wake.notify_one();
                    if !self.wait_generation(seen, deadline).await {
                        return Err(Error::Cluster(format!(
                            "no node serves slot {}",
                            slot.unwrap_or_default()
                        )));
                    }
                    continue;
                }
            }
            self.shared.wake.notify_one();
            self.wait_known(deadline).await?;
        }
    }

    /// Waits until a refresh after `seen` ended, or the deadline. Whether one did.
    async fn wait_generation(&self, seen: u64, deadline: Option<Deadline>) -> bool {
        let mut rx = self.shared.generation.subscribe();
        let wait = rx.wait_for(|g| *g > seen);
        match deadline {
            Some(d) => tokio::time::timeout_at(d.at, wait)
                .await
                .is_ok_and(|r| r.is_ok()),
            None => wait.await.is_ok(),
        }
    }

    /// A pool for `addr` (a redirection's target), made if the map does not know it.
    fn pool_at(&self, addr: &NodeAddr) -> Result<Arc<Pool>, Error> {
        self.shared.pool(addr)
    }

    /// A `MOVED`: patch the table if the new owner is a known primary, ask for a refresh,
    /// and return where to send the command now.
    fn moved(&self, slot: u16, addr: &NodeAddr) -> Result<Arc<Pool>, Error> {
        self.shared.stats.moved.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &self.shared.stats.counters {
            c.moved.inc();
        }
        self.shared.topology.load().patch(slot, &addr.key());
        self.shared.wake.notify_one();
        self.pool_at(addr)
    }

    /// Sends a command to where it must go: one slot's node, any primary, every primary, or
    /// split by slot. The reply frame (error replies included).
    pub(crate) async fn query(
        &self,
        cmd: Cmd,
        spec: Option<&'static Spec>,
        retry: bool,
        deadline: Option<Deadline>,
    ) -> Result<Frame, Error> {
        let read = spec.is_some_and(|s| s.is_readonly());
        match classify(&cmd, spec)? {
            Target::Slot(slot) => {
                let data = cmd.finish();
                // The hot path: one attempt where the map says. A redirection, a retry or an
                // unreachable node continues in the redirection loop, boxed, so this future
                // stays small (each layer above moves it into place).
                let mut first = None;
                if let Some(pool) = self.pick_now(Some(slot), read) {
                    let result = pool.call(data.clone(), spec, retry, deadline).await;
                    if !worth_another_try(&result, read) {
                        if matches!(
                            result,
                            Err(Error::Timeout(_) | Error::ConnectionLost { .. })
                        ) {
                            // A node that stopped answering may have been failed over.
                            self.shared.wake.notify_one();
                        }
                        return result;
                    }
                    first = Some(result);
                }
                Box::pin(self.redirecting_from(
                    None,
                    first,
                    Some(slot),
                    read,
                    deadline,
                    |pool, asking| attempt(pool, data.clone(), asking, spec, retry, deadline),
                ))
                .await
            }
            Target::Any => {
                let data = cmd.finish();
                Box::pin(async move {
                    let pool = self.pick(None, read, deadline).await?;
                    self.redirecting_from(Some(pool), None, None, read, deadline, |pool, _| {
                        let data = data.clone();
                        async move { pool.call(data, spec, retry, deadline).await }
                    })
                    .await
                })
                .await
            }
            Target::All(combine) => Box::pin(self.fan_out(cmd, spec, combine, deadline)).await,
            Target::Split => Box::pin(self.split(cmd, spec, read, retry, deadline)).await,
        }
    }

    /// A blocking command (on a dedicated connection of its node), following redirections.
    pub(crate) async fn blocking(
        &self,
        cmd: Cmd,
        deadline: Option<Deadline>,
    ) -> Result<Frame, Error> {
        let slot = cmd_slot(&cmd, cmd.spec())?;
        let data = cmd.finish();
        self.redirecting_from(None, None, slot, false, deadline, |pool, asking| {
            let data = if asking {
                with_asking(&data)
            } else {
                data.clone()
            };
            async move { crate::dedicated::blocking_call(&pool, data, deadline).await }
        })
        .await
    }

    /// The redirection loop: sends with `attempt(pool, asking)` where the map (or the last
    /// redirection) says, until a reply that is not a redirection, an error that is not
    /// worth another try, too many redirections, or the deadline.
    async fn redirecting_from<F, Fut>(
        &self,
        first: Option<Arc<Pool>>,
        first_result: Option<Result<Frame, Error>>,
        slot: Option<u16>,
        read: bool,
        deadline: Option<Deadline>,
        attempt: F,
    ) -> Result<Frame, Error>
    where
        F: Fn(Arc<Pool>, bool) -> Fut,
        Fut: Future<Output = Result<Frame, Error>>,
    {
        let mut next: Option<Hop> = first.map(|p| (p, false));
        let mut pending = first_result;
        let mut redirects = 0u32;
        let mut attempts = 0u32;
        let mut pause = None;
        let max = self.shared.base.max_redirects;
        loop {
            attempts += 1;
            let result = match pending.take() {
                Some(result) => result,
                None => {
                    let (pool, asking) = match next.take() {
                        Some(p) => p,
                        None => (self.pick(slot, read, deadline).await?, false),
                    };
                    attempt(pool, asking).await
                }
            };
            match result {
                Ok(Frame::Error(e)) => {
                    let Some(redirect) = Redirect::parse(&e) else {
                        return Ok(Frame::Error(e));
                    };
                    match redirect {
                        Redirect::Moved { slot: s, addr } => {
                            redirects += 1;
                            if redirects > max {
                                return Ok(Frame::Error(e));
                            }
                            next = Some((self.moved(s, &addr)?, false));
                        }
                        Redirect::Ask { addr } => {
                            redirects += 1;
                            if redirects > max {
                                return Ok(Frame::Error(e));
                            }
                            self.shared.stats.ask.fetch_add(1, Ordering::Relaxed);
                            if let Some(c) = &self.shared.stats.counters {
                                c.ask.inc();
                            }
                            next = Some((self.pool_at(&addr)?, true));
                        }
                        Redirect::Later | Redirect::Down => {
                            self.note_retry(matches!(redirect, Redirect::Down));
                            if !Box::pin(self.pause(&mut pause, deadline, attempts)).await {
                                return Ok(Frame::Error(e));
                            }
                        }
                    }
                }
                Ok(frame) => return Ok(frame),
                Err(e) if e.not_sent() || (read && matches!(e, Error::ConnectionLost { .. })) => {
                    // The node is gone (or going): wait for a map that may say where its
                    // slots went, then try again.
                    self.shared
                        .stats
                        .unreachable
                        .fetch_add(1, Ordering::Relaxed);
                    let seen = *self.shared.generation.borrow();
                    self.shared.wake.notify_one();
                    let refreshed = self.wait_generation(seen, deadline).await;
                    if !refreshed || !self.pause(&mut pause, deadline, attempts).await {
                        return Err(e);
                    }
                }
                Err(e) => {
                    if matches!(e, Error::Timeout(_) | Error::ConnectionLost { .. }) {
                        // A node that stopped answering may have been failed over.
                        self.shared.wake.notify_one();
                    }
                    return Err(e);
                }
            }
        }
    }

    fn note_retry(&self, down: bool) {
        self.shared.stats.retried.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &self.shared.stats.counters {
            if down {
                c.clusterdown.inc();
            } else {
                c.tryagain.inc();
            }
        }
        if down {
            self.shared.wake.notify_one();
        }
    }

    /// Sleeps the next backoff step if the deadline allows. Whether to try again. The backoff
    /// is made on the first pause: the command path that needs none pays nothing for it.
    async fn pause(
        &self,
        pause: &mut Option<Backoff>,
        deadline: Option<Deadline>,
        attempts: u32,
    ) -> bool {
        let delay = pause
            .get_or_insert_with(|| {
                Backoff::new(Duration::from_millis(10), Duration::from_millis(500))
            })
            .next_delay();
        match deadline {
            Some(d) if Instant::now() + delay >= d.at => return false,
            None if attempts >= MAX_ATTEMPTS_WITHOUT_DEADLINE => return false,
            _ => {}
        }
        tokio::time::sleep(delay).await;
        true
    }

    /// A whole-cluster command on every primary.
    async fn fan_out(
        &self,
        cmd: Cmd,
        spec: Option<&'static Spec>,
        combine: Combine,
        deadline: Option<Deadline>,
    ) -> Result<Frame, Error> {
        self.wait_known(deadline).await?;
        let data = cmd.finish();
        let calls = self.primaries().into_iter().map(|pool| {
            let data = data.clone();
            async move { pool.call(data, spec, false, deadline).await }
        });
        let replies = futures::future::join_all(calls).await;
        let mut out: Option<Frame> = None;
        for reply in replies {
            let frame = reply?;
            if let Frame::Error(_) = frame {
                return Ok(frame);
            }
            out = Some(match (combine, out) {
                (_, None) => frame,
                (Combine::First, Some(first)) => first,
                (Combine::FirstNonNull, Some(Frame::Null)) => frame,
                (Combine::FirstNonNull, Some(first)) => first,
                (Combine::Sum, Some(Frame::Integer(a))) => match frame {
                    Frame::Integer(b) => Frame::Integer(a.saturating_add(b)),
                    other => return Err(crate::value::mismatch::<i64>(&other)),
                },
                (Combine::Concat, Some(acc)) => {
                    let mut all = crate::value::elements(acc)?;
                    all.extend(crate::value::elements(frame)?);
                    Frame::Array(all)
                }
                (Combine::Sum, Some(other)) => return Err(crate::value::mismatch::<i64>(&other)),
            });
        }
        Ok(out.unwrap_or(Frame::Null))
    }

    /// `MGET`, `MSET`, `DEL`, `EXISTS`, `UNLINK`, `TOUCH` over several slots: one command per
    /// slot, in parallel, the replies put back in the caller's order (`MGET`) or summed.
    async fn split(
        &self,
        cmd: Cmd,
        spec: Option<&'static Spec>,
        read: bool,
        retry: bool,
        deadline: Option<Deadline>,
    ) -> Result<Frame, Error> {
        let spec = spec.expect("only known commands are split");
        let per_key = splittable(spec.name).unwrap_or(1);
        let args = cmd.arg_slices();
        // Groups by slot, in first-seen order: the slot, the encoded command, the positions
        // (in key order) of its keys.
        let mut groups: Vec<(u16, BytesMut, u32, Vec<usize>)> = Vec::new();
        let mut index: HashMap<u16, usize> = HashMap::new();
        for (k, chunk) in args[1..].chunks(per_key).enumerate() {
            let slot = key_slot(chunk[0]);
            let g = *index.entry(slot).or_insert_with(|| {
                groups.push((slot, BytesMut::new(), 0, Vec::new()));
                groups.len() - 1
            });
            let group = &mut groups[g];
            for a in chunk {
                crate::resp::put_bulk(&mut group.1, a);
            }
            group.2 += chunk.len() as u32;
            group.3.push(k);
        }
        let keys = (args.len() - 1) / per_key;
        let name = args[0];
        let calls = groups.into_iter().map(|(slot, body, argc, positions)| {
            let mut data = BytesMut::with_capacity(body.len() + name.len() + 32);
            data.extend_from_slice(format!("*{}\r\n", argc + 1).as_bytes());
            crate::resp::put_bulk(&mut data, name);
            data.extend_from_slice(&body);
            let data = data.freeze();
            async move {
                let reply = self
                    .redirecting_from(None, None, Some(slot), read, deadline, |pool, asking| {
                        attempt(pool, data.clone(), asking, Some(spec), retry, deadline)
                    })
                    .await;
                (positions, reply)
            }
        });
        let replies = futures::future::join_all(calls).await;
        match spec.name {
            "MGET" => {
                let mut values = vec![Frame::Null; keys];
                for (positions, reply) in replies {
                    match reply? {
                        Frame::Array(items) if items.len() == positions.len() => {
                            for (p, v) in positions.into_iter().zip(items) {
                                values[p] = v;
                            }
                        }
                        Frame::Error(e) => return Ok(Frame::Error(e)),
                        other => return Err(crate::value::mismatch::<Vec<Frame>>(&other)),
                    }
                }
                Ok(Frame::Array(values))
            }
            "MSET" => {
                for (_, reply) in replies {
                    if let f @ Frame::Error(_) = reply? {
                        return Ok(f);
                    }
                }
                Ok(Frame::Simple(Bytes::from_static(b"OK")))
            }
            _ => {
                let mut sum = 0i64;
                for (_, reply) in replies {
                    match reply? {
                        Frame::Integer(n) => sum = sum.saturating_add(n),
                        f @ Frame::Error(_) => return Ok(f),
                        other => return Err(crate::value::mismatch::<i64>(&other)),
                    }
                }
                Ok(Frame::Integer(sum))
            }
        }
    }

    /// A pipeline: each command to its slot's node (keyless ones to any primary), one write
    /// per node, replies put back where their commands stood. Commands redirected are sent
    /// again in further rounds, in order per node.
    pub(crate) async fn pipeline(
        &self,
        cmds: Vec<(Bytes, Option<u16>)>,
        retry: bool,
        deadline: Option<Deadline>,
    ) -> Result<Vec<Frame>, Error> {
        self.wait_known(deadline).await?;
        let mut results: Vec<Frame> = vec![Frame::Null; cmds.len()];
        // Per command still to send: where, when redirected (and whether after ASKING).
        let mut todo: Vec<(usize, Option<Hop>)> = (0..cmds.len()).map(|i| (i, None)).collect();
        let mut pause = None;
        let mut round = 0u32;
        while !todo.is_empty() {
            round += 1;
            // Group by node, in order.
            let mut groups: Vec<(Arc<Pool>, Members)> = Vec::new();
            for (i, redirected) in todo.drain(..) {
                let (pool, asking) = match redirected {
                    Some(r) => r,
                    None => (self.pick(cmds[i].1, false, deadline).await?, false),
                };
                match groups.iter_mut().find(|(p, _)| Arc::ptr_eq(p, &pool)) {
                    Some((_, members)) => members.push((i, asking)),
                    None => groups.push((pool, vec![(i, asking)])),
                }
            }
            let calls = groups.into_iter().map(|(pool, members)| {
                let mut data = BytesMut::new();
                let mut replies = 0u32;
                for &(i, asking) in &members {
                    if asking {
                        data.extend_from_slice(ASKING);
                        replies += 1;
                    }
                    data.extend_from_slice(&cmds[i].0);
                    replies += 1;
                }
                let data = data.freeze();
                async move {
                    let frames = pool.call_many(data, replies, retry, deadline).await;
                    (pool, members, frames)
                }
            });
            let mut unreachable = None;
            let mut later = false;
            for (pool, members, frames) in futures::future::join_all(calls).await {
                let frames = match frames {
                    Ok(f) => f,
                    Err(e) if e.not_sent() => {
                        // Nothing of this group was sent: all of it goes again.
                        todo.extend(members.iter().map(|&(i, _)| (i, None)));
                        unreachable = Some(e);
                        continue;
                    }
                    Err(e) => {
                        self.shared.wake.notify_one();
                        return Err(e);
                    }
                };
                let mut it = frames.into_iter();
                for (i, asking) in members {
                    if asking {
                        it.next();
                    }
                    let frame = it.next().unwrap_or(Frame::Null);
                    let redirect = match &frame {
                        Frame::Error(e) if round <= self.shared.base.max_redirects => {
                            Redirect::parse(e)
                        }
                        _ => None,
                    };
                    match redirect {
                        Some(Redirect::Moved { slot, addr }) => {
                            todo.push((i, Some((self.moved(slot, &addr)?, false))));
                        }
                        Some(Redirect::Ask { addr }) => {
                            self.shared.stats.ask.fetch_add(1, Ordering::Relaxed);
                            todo.push((i, Some((self.pool_at(&addr)?, true))));
                        }
                        Some(r @ (Redirect::Later | Redirect::Down)) => {
                            self.note_retry(matches!(r, Redirect::Down));
                            later = true;
                            todo.push((i, Some((pool.clone(), false))));
                        }
                        None => {}
                    }
                    results[i] = frame;
                }
            }
            todo.sort_by_key(|(i, _)| *i);
            if let Some(e) = unreachable {
                self.shared
                    .stats
                    .unreachable
                    .fetch_add(1, Ordering::Relaxed);
                let seen = *self.shared.generation.borrow();
                self.shared.wake.notify_one();
                if !self.wait_generation(seen, deadline).await
                    || !self.pause(&mut pause, deadline, round).await
                {
                    return Err(e);
                }
            } else if later && !self.pause(&mut pause, deadline, round).await {
                break;
            }
        }
        Ok(results)
    }

    /// A `MULTI`/`EXEC` transaction on its slot's node. Redirected queueing (`EXECABORT`
    /// after a `MOVED`/`ASK`: nothing ran) is sent again where the cluster says.
    pub(crate) async fn transaction(
        &self,
        cmds: Vec<(Bytes, Option<u16>)>,
        deadline: Option<Deadline>,
    ) -> Result<Option<Vec<Frame>>, Error> {
        let slot = cmds.iter().find_map(|(_, s)| *s);
        let (body, _) = crate::pipeline::encode(&cmds, true);
        let count = cmds.len() as u32;
        let mut next: Option<Hop> = None;
        let mut pause = None;
        for attempt in 1..=self.shared.base.max_redirects + 1 {
            let (pool, asking) = match next.take() {
                Some(p) => p,
                None => (self.pick(slot, false, deadline).await?, false),
            };
            let data = if asking {
                with_asking(&body)
            } else {
                body.clone()
            };
            let replies = count + 2 + u32::from(asking);
            let mut frames = match pool.call_many(data, replies, false, deadline).await {
                Ok(f) => f,
                Err(e) if e.not_sent() => {
                    let seen = *self.shared.generation.borrow();
                    self.shared.wake.notify_one();
                    if !self.wait_generation(seen, deadline).await
                        || !self.pause(&mut pause, deadline, attempt).await
                    {
                        return Err(e);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if asking && !frames.is_empty() {
                frames.remove(0);
            }
            // A redirection while queueing aborts the whole transaction: nothing ran.
            let redirect = frames
                .iter()
                .skip(1)
                .take(count as usize)
                .find_map(|f| match f {
                    Frame::Error(e) => Redirect::parse(&e[..]),
                    _ => None,
                });
            match redirect {
                Some(Redirect::Moved { slot, addr }) => {
                    next = Some((self.moved(slot, &addr)?, false))
                }
                Some(Redirect::Ask { addr }) => next = Some((self.pool_at(&addr)?, true)),
                Some(r) => {
                    self.note_retry(matches!(r, Redirect::Down));
                    if !self.pause(&mut pause, deadline, attempt).await {
                        return crate::pipeline::exec_reply(frames, count);
                    }
                }
                None => return crate::pipeline::exec_reply(frames, count),
            }
        }
        Err(Error::Cluster(format!(
            "transaction redirected more than {} times",
            self.shared.base.max_redirects
        )))
    }
}

/// Where a redirected command goes next: the node, and whether after `ASKING`.
type Hop = (Arc<Pool>, bool);

/// A pipeline's commands bound for one node: their positions, and whether each goes after
/// `ASKING`.
type Members = Vec<(usize, bool)>;

/// Whether a reply or error is one the redirection loop handles (a redirection, a transient
/// error reply, a node that could not be reached).
fn worth_another_try(result: &Result<Frame, Error>, read: bool) -> bool {
    match result {
        Ok(Frame::Error(e)) => Redirect::parse(e).is_some(),
        Ok(_) => false,
        Err(e) => e.not_sent() || (read && matches!(e, Error::ConnectionLost { .. })),
    }
}

/// One try of a single-slot command on `pool`; after an `ASK`, with `ASKING` in front.
async fn attempt(
    pool: Arc<Pool>,
    data: Bytes,
    asking: bool,
    spec: Option<&'static Spec>,
    retry: bool,
    deadline: Option<Deadline>,
) -> Result<Frame, Error> {
    if asking {
        asking_reply(
            pool.call_many(with_asking(&data), 2, retry, deadline)
                .await?,
        )
    } else {
        pool.call(data, spec, retry, deadline).await
    }
}

/// `ASKING` and the command, as one write.
fn with_asking(data: &Bytes) -> Bytes {
    let mut b = BytesMut::with_capacity(ASKING.len() + data.len());
    b.extend_from_slice(ASKING);
    b.extend_from_slice(data);
    b.freeze()
}

/// The command's reply after `ASKING`'s.
fn asking_reply(mut frames: Vec<Frame>) -> Result<Frame, Error> {
    match frames.len() {
        2 => Ok(frames.pop().unwrap_or(Frame::Null)),
        _ => Err(crate::value::mismatch::<Frame>(&Frame::Array(frames))),
    }
}

impl Shared {
    /// The pool for `addr`, made once.
    fn pool(&self, addr: &NodeAddr) -> Result<Arc<Pool>, Error> {
        let key = addr.key();
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.get(&key) {
            return Ok(p.clone());
        }
        let settings = Arc::new(self.base.for_node(&addr.host, addr.port)?);
        let pool = Arc::new(Pool::new(settings, self.options.clone()));
        pools.insert(key, pool.clone());
        Ok(pool)
    }

    /// Reads the slot map from the first node that answers: the current primaries (in
    /// random order, so clients spread their queries), then the seeds.
    async fn read_map(&self) -> Result<Vec<ShardDesc>, String> {
        let mut candidates: Vec<(NodeAddr, Option<Arc<Pool>>)> = {
            let t = self.topology.load();
            t.shards
                .iter()
                .zip(&t.desc)
                .map(|(s, d)| (d.primary.clone(), Some(s.primary.clone())))
                .collect()
        };
        if candidates.len() > 1 {
            let shift = (Backoff::new(Duration::from_nanos(1), Duration::from_nanos(1000))
                .next_delay()
                .as_nanos() as usize)
                % candidates.len();
            candidates.rotate_left(shift);
        }
        for (host, port) in &self.base.seeds {
            let addr = NodeAddr {
                host: host.clone(),
                port: *port,
            };
            if !candidates.iter().any(|(a, _)| *a == addr) {
                candidates.push((addr, None));
            }
        }
        let mut errors = Vec::new();
        for (addr, pool) in candidates {
            match self.ask_map(&addr, pool.as_deref()).await {
                Ok(map) => return Ok(map),
                Err(e) => errors.push(format!("{}: {e}", addr.key())),
            }
        }
        Err(errors.join("; "))
    }

    /// One node's slot map: `CLUSTER SHARDS`, or `CLUSTER SLOTS` from a Redis 6 node (which
    /// does not know `SHARDS`) or for a user whose ACL allows only `SLOTS`.
    async fn ask_map(
        &self,
        addr: &NodeAddr,
        pool: Option<&Pool>,
    ) -> Result<Vec<ShardDesc>, String> {
        let tls = self.base.config.tls.is_some();
        let shards = self.ask(addr, pool, &[b"CLUSTER", b"SHARDS"]).await?;
        match shards {
            Frame::Error(e) if e.starts_with(b"ERR") || e.starts_with(b"NOPERM") => {
                match self.ask(addr, pool, &[b"CLUSTER", b"SLOTS"]).await? {
                    Frame::Error(e) => Err(String::from_utf8_lossy(&e).into_owned()),
                    reply => topology::parse_slots(&reply, addr),
                }
            }
            Frame::Error(e) => Err(String::from_utf8_lossy(&e).into_owned()),
            reply => topology::parse_shards(&reply, addr, tls),
        }
    }

    async fn ask(
        &self,
        addr: &NodeAddr,
        pool: Option<&Pool>,
        args: &[&[u8]],
    ) -> Result<Frame, String> {
        let mut cmd = BytesMut::new();
        encode_command(&mut cmd, args);
        let timeout = REFRESH_QUERY_TIMEOUT.min(self.base.connect_timeout);
        match pool {
            Some(pool) if pool.is_any_connected() => pool
                .call(cmd.freeze(), None, true, Some(Deadline::after(timeout)))
                .await
                .map_err(|e| crate::error::with_causes(&e)),
            _ => {
                let settings = self
                    .base
                    .for_node(&addr.host, addr.port)
                    .map_err(|e| e.to_string())?;
                crate::conn::oneshot(&settings, args)
                    .await
                    .map_err(|e| crate::error::with_causes(&e))
            }
        }
    }

    /// Reads the map and installs it if it changed. Whether a map was read.
    async fn refresh(&self) -> bool {
        let map = match self.read_map().await {
            Ok(map) => map,
            Err(why) => {
                self.stats.failed_refreshes.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = &self.stats.counters {
                    c.refresh_failed.inc();
                }
                tracing::warn!(error = %why, "redis cluster: slot map refresh failed");
                *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                return false;
            }
        };
        self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &self.stats.counters {
            c.refresh.inc();
        }
        if self.topology.load().same_as(&map) {
            return true;
        }
        tracing::debug!(shards = map.len(), "redis cluster: new slot map");
        let with_replicas = self.base.read_from != crate::ReadFrom::Primary;
        // Every pool the map needs, first: a node whose settings cannot be built (its host
        // is no valid TLS name) makes the whole map unusable.
        let mut pools = HashMap::new();
        for shard in &map {
            let replicas = if with_replicas {
                &shard.replicas[..]
            } else {
                &[]
            };
            for addr in std::iter::once(&shard.primary).chain(replicas) {
                match self.pool(addr) {
                    Ok(p) => {
                        pools.insert(addr.key(), p);
                    }
                    Err(e) => {
                        tracing::warn!(addr = %addr.key(), error = %e, "redis cluster: node unusable");
                        return false;
                    }
                }
            }
        }
        let topology = Topology::build(map, with_replicas, |addr, _| pools[&addr.key()].clone());
        self.topology.store(Arc::new(topology));
        // Pools of nodes the map no longer names are closed once nothing in flight uses them.
        *self.pools.lock().unwrap_or_else(|e| e.into_inner()) = pools;
        true
    }
}

/// The refresh task: one refresh at a time, on request or every `refresh-interval`, never
/// sooner than `refresh-min-interval` (jittered) after the last.
async fn refresh_task(shared: Arc<Shared>) {
    let min = shared.base.refresh_min_interval;
    let every = shared.base.refresh_interval;
    let mut last: Option<Instant> = None;
    let mut jitter = Backoff::new(min, min);
    loop {
        let known = *shared.known.borrow();
        if known {
            let periodic = tokio::time::sleep(every);
            tokio::select! {
                () = shared.wake.notified() => {}
                () = periodic, if !every.is_zero() => {}
            }
        }
        if let Some(at) = last {
            // [min, 1.5 min) after the last one: clients that saw the same failure spread out.
            let gap = min / 2 + jitter.next_delay();
            tokio::time::sleep_until(at + gap).await;
        }
        let ok = shared.refresh().await;
        last = Some(Instant::now());
        if ok && !known {
            shared.known.send_replace(true);
        }
        shared.generation.send_modify(|g| *g += 1);
    }
}
