//! `Cache<K, V>`: the two levels, single-flight loading, expiry, refresh-ahead, invalidation,
//! degradation when L2 is down.
//!
//! Hot path (`get` on an L1 hit): one moka lookup, one clock read, one counter; no lock, no
//! allocation beyond the value's clone.

use std::any::Any;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use jupiter_core::metrics::{Code, HandleMetrics, Metrics};
use jupiter_core::prometheus_client::metrics::counter::Counter;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use crate::codec::{Codec, PostcardCodec, decode_record, encode_record};
use crate::config::CacheConfig;
use crate::l2::{Invalidated, L2, L2Error};
use crate::{Error, Key, LoadError};

/// Keys put or invalidated during an L2 outage, deleted from L2 when it is back (their L2
/// copies may be stale). Past this many, the rest are only logged.
const MAX_DIRTY: usize = 10_000;

/// Events buffered for each [`Cache::events`] subscriber.
const EVENT_BUFFER: usize = 1024;

/// A multi-level cache: L1 in-process (moka: weighted capacity, TTL, TTI) over an optional L2
/// ([`RedisL2`](crate::RedisL2), [`ObjstoreL2`](crate::ObjstoreL2), or your own [`L2`]).
/// Cheap to clone (an `Arc` inside); clones share both levels.
///
/// - **Single-flight**: concurrent [`get_or_load`](Self::get_or_load) calls for one key share
///   one L2 lookup and at most one load.
/// - **Negative caching**: a loader's `None` is cached for `negative-ttl`.
/// - **TTL jitter**: each entry lives `ttl` minus up to `ttl-jitter` of it, so entries
///   loaded together do not expire together.
/// - **Refresh-ahead**: a hit past `refresh-ahead` of its TTL returns the value and starts
///   exactly one background load.
/// - **Cross-instance invalidation**: a `put`/`invalidate` through one instance removes the
///   key from the others' L1 (through the L2 backend's source: Redis client tracking or
///   pub/sub, objstore's watch). An L1 entry never outlives its L2 copy; a lost invalidation
///   source clears L1.
/// - **Degradation**: with L2 down, calls use L1 and the loader (counted, logged once per
///   outage) and L2 is probed every `l2-retry`; in strict mode the error is returned.
/// - **Shadow traffic**: under a jupiter-core shadow context, L1 is a separate partition and
///   L2 keys are the backend's shadow keys; shadow and live entries never mix.
///
/// # Examples
///
/// ```no_run
/// # async fn f(redis: redis_client::Client) -> Result<(), cache::Error> {
/// use std::time::Duration;
/// use cache::{Cache, RedisL2};
///
/// let users: Cache<u64, String> = Cache::builder("users")
///     .ttl(Duration::from_secs(300))
///     .l2(RedisL2::new(redis))
///     .build()?;
/// let name = users
///     .get_or_load(&42, || async { Some("ada".to_owned()) /* from the database */ })
///     .await?;
/// assert_eq!(name.as_deref(), Some("ada"));
/// # Ok(()) }
/// ```
pub struct Cache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .field("l2", &self.inner.l2.is_some())
            .finish_non_exhaustive()
    }
}

/// What a cache tells [`Cache::events`] subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheEvent<K> {
    /// Another instance changed `key`; its L1 entry was removed.
    Invalidated {
        /// The key.
        key: K,
        /// Whether it was the shadow partition's.
        shadow: bool,
    },
    /// L1 was cleared: the invalidation source lost track (a lost connection, a flush).
    Cleared,
}

/// Counts of what the cache did, from its metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// L1 hits.
    pub l1_hits: u64,
    /// L1 misses.
    pub l1_misses: u64,
    /// L2 hits (after an L1 miss).
    pub l2_hits: u64,
    /// L2 misses.
    pub l2_misses: u64,
    /// Loader calls (a batch counts once).
    pub loads: u64,
    /// Loader errors.
    pub load_errors: u64,
    /// L2 calls that failed or timed out.
    pub l2_errors: u64,
    /// L2 records that did not decode (treated as misses).
    pub decode_errors: u64,
    /// L1 entries evicted for capacity.
    pub evictions: u64,
    /// Invalidations received from other instances.
    pub invalidations: u64,
    /// Times L1 was cleared because invalidations may have been lost.
    pub invalidations_lost: u64,
}

struct Inner<K, V> {
    name: Arc<str>,
    live: L1<K, V>,
    /// Made on the first shadow request: services that never see shadow traffic pay nothing.
    shadow: std::sync::OnceLock<L1<K, V>>,
    make_l1: Box<dyn Fn() -> L1<K, V> + Send + Sync>,
    /// Keys being refreshed ahead (shadow?, key): one refresh per entry at a time.
    refreshing: Mutex<std::collections::HashSet<(bool, K)>>,
    l2: Option<Level2<V>>,
    /// `{key-prefix}{name}:`, the front of every L2 key.
    prefix: Bytes,
    ttl: Duration,
    l2_ttl: Duration,
    negative_ttl: Option<Duration>,
    jitter: f64,
    refresh_ahead: Option<f64>,
    l2_timeout: Duration,
    l2_retry: Duration,
    strict: bool,
    cache_errors: Option<Duration>,
    clock: quanta::Clock,
    /// When the cache was built: times are nanoseconds since.
    epoch: quanta::Instant,
    counters: Counters,
    load_timer: HandleMetrics,
    /// Bumped by every invalidation, put and delete: a load that saw it move may hold a
    /// value older than what the invalidation announced, and is not kept in L1.
    changes: AtomicU64,
    outage: Outage,
    events: broadcast::Sender<CacheEvent<K>>,
    listener: Mutex<Option<AbortHandle>>,
}

impl<K, V> Drop for Inner<K, V> {
    fn drop(&mut self) {
        // The listener holds only a `Weak` to this; stop it with the cache.
        if let Some(task) = self
            .listener
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

struct Level2<V> {
    backend: Arc<dyn L2>,
    codec: Arc<dyn Codec<V>>,
    /// The backend answers every call within `l2-timeout` itself ([`L2::bound_calls`]).
    bounded: bool,
}

struct Outage {
    down: AtomicBool,
    /// Time (`now_ns`) before which L2 is not tried again.
    retry_at: AtomicU64,
    dirty: Mutex<Vec<(bool, Bytes)>>,
}

#[derive(Clone)]
struct Counters {
    l1_hit: Counter,
    l1_miss: Counter,
    l2_hit: Counter,
    l2_miss: Counter,
    load: Counter,
    load_error: Counter,
    l2_error: Counter,
    decode_error: Counter,
    eviction: Counter,
    invalidation: Counter,
    invalidation_lost: Counter,
}

impl Counters {
    fn new(metrics: &Metrics, name: &str) -> Counters {
        let c = |event| metrics.event("cache", name, event);
        Counters {
            l1_hit: c("l1_hit"),
            l1_miss: c("l1_miss"),
            l2_hit: c("l2_hit"),
            l2_miss: c("l2_miss"),
            load: c("load"),
            load_error: c("load_error"),
            l2_error: c("l2_error"),
            decode_error: c("decode_error"),
            eviction: c("eviction"),
            invalidation: c("invalidation_received"),
            invalidation_lost: c("invalidation_lost"),
        }
    }
}

/// One level-1 partition.
type L1<K, V> = moka::future::Cache<K, Entry<V>>;

/// An L1 entry: a value, "not found", or (with `cache-load-errors`) a loader's error. moka
/// clones it on every hit: a clone of `V` and a few words, no reference count of its own.
#[derive(Clone)]
struct Entry<V> {
    value: Option<V>,
    failed: Option<Arc<dyn Any + Send + Sync>>,
    born: u64,
    ttl_ns: u64,
    /// Age from which a hit starts a refresh (`u64::MAX`: never).
    refresh_ns: u64,
}

/// Why a shared load ended without an entry.
#[derive(Debug)]
enum FillError {
    /// The loader's error, as `Arc<E>`.
    Load(Arc<dyn Any + Send + Sync>),
    Cache(Error),
}

/// A caller's weigher of L1 entries.
type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;

/// Builds a [`Cache`].
#[must_use]
pub struct CacheBuilder<K, V> {
    name: String,
    config: CacheConfig,
    l2: Option<Level2<V>>,
    metrics: Option<Metrics>,
    clock: Option<quanta::Clock>,
    weigher: Option<Weigher<K, V>>,
}

impl<K, V> std::fmt::Debug for CacheBuilder<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<K: Key, V: Clone + Send + Sync + 'static> CacheBuilder<K, V> {
    /// All settings at once (a `[cache.<name>]` section).
    pub fn config(mut self, config: CacheConfig) -> Self {
        self.config = config;
        self
    }

    /// L1 capacity: entries, or the weigher's units. Default is 10 000.
    pub fn capacity(mut self, n: u64) -> Self {
        self.config.capacity = n;
        self
    }

    /// Time to live of an entry (before jitter). Default is 5 minutes.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// L1 entries unused this long are dropped (moka's time-to-idle). Default: off.
    pub fn tti(mut self, tti: Duration) -> Self {
        self.config.tti = tti;
        self
    }

    /// How long a "not found" is cached; `Duration::ZERO` turns negative caching off.
    /// Default is 30 s.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.config.negative_ttl = ttl;
        self
    }

    /// Up to this fraction of the TTL is taken off each entry's, at random. Default is 0.1.
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.config.ttl_jitter = fraction;
        self
    }

    /// A hit on an entry older than this fraction of its TTL refreshes it in the background
    /// (0: off). Default is off.
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.config.refresh_ahead = fraction;
        self
    }

    /// Deadline of one L2 call. Default is 200 ms.
    pub fn l2_timeout(mut self, d: Duration) -> Self {
        self.config.l2_timeout = d;
        self
    }

    /// While L2 is down, how often one call tries it again. Default is 1 s.
    pub fn l2_retry(mut self, d: Duration) -> Self {
        self.config.l2_retry = d;
        self
    }

    /// Return L2 failures to callers instead of degrading to L1 and the loader. Default is
    /// false.
    pub fn strict(mut self, strict: bool) -> Self {
        self.config.strict = strict;
        self
    }

    /// Cache a loader's error for this long (`try_get_or_load`); `Duration::ZERO`: errors
    /// are not cached. Default is zero.
    pub fn cache_load_errors(mut self, ttl: Duration) -> Self {
        self.config.cache_load_errors = ttl;
        self
    }

    /// L1 entries weigh this much against the capacity. Default: 1 each.
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// The second level, values encoded with postcard.
    pub fn l2(self, backend: impl L2) -> Self
    where
        V: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.l2_with_codec(backend, PostcardCodec)
    }

    /// The second level with another codec ([`JsonCodec`](crate::JsonCodec), your own).
    pub fn l2_with_codec(mut self, backend: impl L2, codec: impl Codec<V>) -> Self {
        self.l2 = Some(Level2 {
            backend: Arc::new(backend),
            codec: Arc::new(codec),
            bounded: false,
        });
        self
    }

    /// Metrics registry. Default is [`Metrics::global`].
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// The clock expiry and refresh-ahead read (a mocked `quanta` clock in tests). Default is
    /// the real one.
    pub fn clock(mut self, clock: quanta::Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Builds the cache; with an L2 that has an invalidation source, starts listening to it
    /// (then it must be called inside a tokio runtime).
    ///
    /// # Errors
    ///
    /// Invalid settings ([`Error::Config`], naming the key).
    pub fn build(self) -> Result<Cache<K, V>, Error> {
        let c = self.config;
        c.validate()?;
        let mut l2 = self.l2;
        if let Some(l2) = &mut l2
            && let Some(backend) = Arc::get_mut(&mut l2.backend)
        {
            l2.bounded = backend.bound_calls(c.l2_timeout);
        }
        let metrics = self.metrics.unwrap_or_else(|| Metrics::global().clone());
        let counters = Counters::new(&metrics, &self.name);
        let weigher = self.weigher.clone();
        let (capacity, tti) = (c.capacity, c.tti);
        let longest = [c.ttl, c.l2_ttl, c.negative_ttl, c.cache_load_errors]
            .into_iter()
            .max()
            .unwrap_or(c.ttl);
        let evictions = counters.eviction.clone();
        let make_l1 = move || -> L1<K, V> {
            // One TTL for the whole partition, the longest any entry gets: it only frees
            // memory. Each entry's own (jittered, capped by L2, negative) is checked on read
            // against the coarse clock; moka's per-entry expiry costs a fifth of every hit.
            let mut b = moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(longest);
            if !tti.is_zero() {
                b = b.time_to_idle(tti);
            }
            if let Some(w) = &weigher {
                let w = w.clone();
                b = b.weigher(move |k: &K, e: &Entry<V>| match &e.value {
                    Some(v) => w(k, v),
                    None => 1,
                });
            }
            let evictions = evictions.clone();
            b.eviction_listener(move |_k, _v, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build()
        };
        if self.clock.is_none() {
            start_upkeep();
        }
        let clock = self.clock.unwrap_or_default();
        let mut prefix = c.key_prefix.as_bytes().to_vec();
        prefix.extend_from_slice(self.name.as_bytes());
        prefix.push(b':');
        let inner = Arc::new(Inner {
            live: make_l1(),
            shadow: std::sync::OnceLock::new(),
            make_l1: Box::new(make_l1),
            refreshing: Mutex::new(std::collections::HashSet::new()),
            l2,
            prefix: Bytes::from(prefix),
            ttl: c.ttl,
            l2_ttl: if c.l2_ttl.is_zero() { c.ttl } else { c.l2_ttl },
            negative_ttl: (!c.negative_ttl.is_zero()).then_some(c.negative_ttl),
            jitter: c.ttl_jitter,
            refresh_ahead: (c.refresh_ahead > 0.0).then_some(c.refresh_ahead),
            l2_timeout: c.l2_timeout,
            l2_retry: c.l2_retry,
            strict: c.strict,
            cache_errors: (!c.cache_load_errors.is_zero()).then_some(c.cache_load_errors),
            epoch: clock.now(),
            clock,
            load_timer: metrics.client("cache", &self.name, "load", "loader"),
            counters,
            changes: AtomicU64::new(0),
            outage: Outage {
                down: AtomicBool::new(false),
                retry_at: AtomicU64::new(0),
                dirty: Mutex::new(Vec::new()),
            },
            events: broadcast::channel(EVENT_BUFFER).0,
            listener: Mutex::new(None),
            name: Arc::from(self.name.as_str()),
        });
        if let Some(source) = inner
            .l2
            .as_ref()
            .and_then(|l2| l2.backend.invalidations(&inner.prefix))
        {
            let weak = Arc::downgrade(&inner);
            let task = tokio::spawn(listen(weak, source));
            *inner.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        }
        Ok(Cache { inner })
    }
}

/// Applies invalidations until the source or the cache ends.
async fn listen<K: Key, V: Clone + Send + Sync + 'static>(
    cache: Weak<Inner<K, V>>,
    mut source: futures::stream::BoxStream<'static, Invalidated>,
) {
    while let Some(event) = source.next().await {
        let Some(inner) = cache.upgrade() else { return };
        inner.changes.fetch_add(1, Ordering::AcqRel);
        match event {
            Invalidated::Keys(keys) => {
                for (shadow, l2_key) in keys {
                    let Some(part) = l2_key.strip_prefix(&inner.prefix[..]) else {
                        continue;
                    };
                    let Some(key) = K::decode(part) else { continue };
                    let l1 = if shadow {
                        inner.shadow.get()
                    } else {
                        Some(&inner.live)
                    };
                    if let Some(l1) = l1 {
                        l1.invalidate(&key).await;
                    }
                    inner.counters.invalidation.inc();
                    let _ = inner.events.send(CacheEvent::Invalidated { key, shadow });
                }
            }
            Invalidated::All => {
                inner.clear();
                inner.counters.invalidation_lost.inc();
                let _ = inner.events.send(CacheEvent::Cleared);
            }
        }
    }
}

/// Starts quanta's upkeep thread once per process (the coarse clock's millisecond tick).
fn start_upkeep() {
    static UPKEEP: std::sync::OnceLock<Option<quanta::Handle>> = std::sync::OnceLock::new();
    UPKEEP.get_or_init(
        || match quanta::Upkeep::new(Duration::from_millis(1)).start() {
            Ok(handle) => Some(handle),
            // Running already (another library started it): its ticks serve us too.
            Err(quanta::Error::UpkeepRunning) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cache: no coarse clock; reading the precise one");
                None
            }
        },
    );
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<K: Key, V: Clone + Send + Sync + 'static> Cache<K, V> {
    /// A builder named `name` (metrics' `name`, the L2 key prefix) with the defaults.
    pub fn builder(name: &str) -> CacheBuilder<K, V> {
        CacheBuilder {
            name: name.to_owned(),
            config: CacheConfig::default(),
            l2: None,
            metrics: None,
            clock: None,
            weigher: None,
        }
    }

    /// A builder with the `[cache.<name>]` section of `config`.
    ///
    /// # Errors
    ///
    /// The section does not parse ([`Error::ConfigSection`], naming file, line and key).
    pub fn from_config(
        config: &jupiter_core::Config,
        name: &str,
    ) -> Result<CacheBuilder<K, V>, Error> {
        let section = format!("cache.{name}");
        let parsed: CacheConfig = match config.section(&section) {
            Ok(c) => c,
            Err(source) => return Err(Error::ConfigSection { section, source }),
        };
        Ok(Cache::builder(name).config(parsed))
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// What the cache did so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            l1_hits: c.l1_hit.get(),
            l1_misses: c.l1_miss.get(),
            l2_hits: c.l2_hit.get(),
            l2_misses: c.l2_miss.get(),
            loads: c.load.get(),
            load_errors: c.load_error.get(),
            l2_errors: c.l2_error.get(),
            decode_errors: c.decode_error.get(),
            evictions: c.eviction.get(),
            invalidations: c.invalidation.get(),
            invalidations_lost: c.invalidation_lost.get(),
        }
    }

    /// Invalidations applied from now on, as they are applied.
    pub fn events(&self) -> broadcast::Receiver<CacheEvent<K>> {
        self.inner.events.subscribe()
    }

    /// Whether L2 is currently considered down.
    pub fn is_degraded(&self) -> bool {
        self.inner.outage.down.load(Ordering::Relaxed)
    }

    /// The value of `key` if either level has it (`Some(None)`: cached "not found"); nothing
    /// is loaded.
    ///
    /// # Errors
    ///
    /// L2 failed, in strict mode.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn get(&self, key: &K) -> Result<Option<Option<V>>, Error> {
        let inner = &*self.inner;
        let l1 = inner.l1();
        if let Some(e) = l1.get(key).await {
            if inner.is_fresh(&e) {
                inner.counters.l1_hit.inc();
                return Ok(Some(e.value));
            }
            l1.invalidate(key).await;
        }
        if inner.l2.is_none() {
            return Ok(None);
        }
        // Boxed: the hit path's future stays the size of moka's lookup.
        Box::pin(self.get_from_l2(key)).await
    }

    async fn get_from_l2(&self, key: &K) -> Result<Option<Option<V>>, Error> {
        let l1 = self.inner.l1();
        let Some(l2) = &self.inner.l2 else {
            return Ok(None);
        };
        let seen = self.inner.changes.load(Ordering::Acquire);
        match self.inner.l2_lookup(l2, key).await? {
            Some(entry) => {
                let value = entry.value.clone();
                // The caller has its value now; L1 is filled behind it. (A moka miss and
                // insert after a network wait run on cold CPU caches: measured in the `l2_hit`
                // bench at a fifth of a loopback GET when done in line.) A change since the
                // lookup began may be newer than what L2 returned: that is not kept.
                let (inner, l1, key) = (self.inner.clone(), l1.clone(), key.clone());
                tokio::spawn(async move {
                    // Behind whatever is queued now (the connection writing the caller's next
                    // command, say): the insert then runs while that command is in flight.
                    tokio::task::yield_now().await;
                    if inner.changes.load(Ordering::Acquire) == seen {
                        l1.insert(key, entry).await;
                    }
                });
                Ok(Some(value))
            }
            None => Ok(None),
        }
    }

    /// The value of `key`: from L1, else L2, else `loader` (whose result fills both levels;
    /// `None` is cached as "not found" for `negative-ttl`). Concurrent calls for one key
    /// share one lookup and one load.
    ///
    /// # Errors
    ///
    /// L2 failed, in strict mode (in the default mode L2 failures degrade to L1 and the
    /// loader).
    ///
    /// # Cancel safety
    ///
    /// Cancelling one caller does not cancel a load others wait for; a load nobody waits for
    /// any more is dropped.
    pub async fn get_or_load<F, Fut>(&self, key: &K, loader: F) -> Result<Option<V>, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Option<V>> + Send + 'static,
    {
        let loader = move || async move { Ok::<_, std::convert::Infallible>(loader().await) };
        match self.try_get_or_load(key, loader).await {
            Ok(v) => Ok(v),
            Err(LoadError::Cache(e)) => Err(e),
            Err(LoadError::Load(never)) => match *never {},
        }
    }

    /// As [`get_or_load`](Self::get_or_load) with a fallible loader. A loader error is shared
    /// by the callers waiting for that load and not cached (unless `cache-load-errors`).
    ///
    /// # Errors
    ///
    /// [`LoadError::Load`] with the loader's error, [`LoadError::Cache`] as `get_or_load`.
    ///
    /// # Cancel safety
    ///
    /// As [`get_or_load`](Self::get_or_load).
    pub async fn try_get_or_load<F, Fut, E>(
        &self,
        key: &K,
        loader: F,
    ) -> Result<Option<V>, LoadError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let inner = &self.inner;
        let l1 = inner.l1();
        // One moka call for hit and miss alike (its own lookup, then the shared load): a miss
        // is counted once by moka's frequency sketch, as with `get_with`.
        let mut slot = Some(loader);
        let found = l1
            .try_get_with(key.clone(), async {
                let loader = slot.take().expect("moka runs an init once");
                // Boxed when it runs: every waiter builds this future, one polls it, and all
                // of them carry its size (L2 lookup, loader, L2 write).
                Box::pin(inner.fill(key, loader)).await
            })
            .await;
        let entry = match found {
            Ok(e) => e,
            Err(e) => {
                return match &*e {
                    FillError::Load(any) => match any.clone().downcast::<E>() {
                        Ok(e) => Err(LoadError::Load(e)),
                        Err(_) => Err(LoadError::Cache(Error::Config {
                            key: "loader",
                            message: "callers of one key waited for a load whose error is of another type".into(),
                        })),
                    },
                    FillError::Cache(e) => Err(LoadError::Cache(e.clone_shallow())),
                };
            }
        };
        let Some(loader) = slot else {
            // Ours ran: a miss.
            inner.counters.l1_miss.inc();
            return entry_result(entry);
        };
        if inner.is_fresh(&entry) {
            inner.counters.l1_hit.inc();
            if inner.refresh_due(&entry) {
                inner.refresh(key.clone(), loader);
            }
            return entry_result(entry);
        }
        // Stale by the cache's clock before moka's own expiry took it: drop it and load.
        l1.invalidate(key).await;
        Box::pin(self.try_get_or_load(key, loader)).await
    }

    /// The values of `keys`, in order: those cached at either level, and the rest from one
    /// call of `loader` with the missing keys (in order; it returns one value or `None` per
    /// key), which fill both levels. Like Go Jupiter's `GetAndSetCacheMap`.
    ///
    /// A batch coalesces its own keys; two batches loading the same key at once may both
    /// load it.
    ///
    /// # Errors
    ///
    /// As [`get_or_load`](Self::get_or_load).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; what was loaded before the cancellation stays cached.
    pub async fn get_many_or_load<F, Fut>(
        &self,
        keys: &[K],
        loader: F,
    ) -> Result<Vec<Option<V>>, Error>
    where
        F: FnOnce(Vec<K>) -> Fut + Send,
        Fut: Future<Output = Vec<Option<V>>> + Send,
    {
        let inner = &self.inner;
        let l1 = inner.l1();
        let mut out: Vec<Option<Option<V>>> = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match inner.fresh(l1, key).await {
                Some(e) => out.push(Some(e.value)),
                None => {
                    inner.counters.l1_miss.inc();
                    out.push(None);
                    missing.push(i);
                }
            }
        }
        if missing.is_empty() {
            return Ok(out.into_iter().map(Option::flatten).collect());
        }
        let seen = inner.changes.load(Ordering::Acquire);
        if let Some(l2) = &inner.l2
            && inner.l2_usable()
        {
            let l2_keys: Vec<Bytes> = missing.iter().map(|&i| inner.l2_key(&keys[i])).collect();
            let found = inner.l2_call("get", l2.backend.get_many(&l2_keys)).await;
            match found {
                Ok(records) => {
                    let mut still = Vec::new();
                    for (&i, record) in missing.iter().zip(records) {
                        match record.and_then(|b| inner.decode(l2, &b)) {
                            Some(entry) => {
                                inner.counters.l2_hit.inc();
                                let entry = inner.keep_if_unchanged(entry, seen);
                                out[i] = Some(entry.value.clone());
                                l1.insert(keys[i].clone(), entry).await;
                            }
                            None => {
                                inner.counters.l2_miss.inc();
                                still.push(i);
                            }
                        }
                    }
                    missing = still;
                }
                Err(e) if inner.strict => return Err(e),
                Err(_) => {}
            }
        }
        if !missing.is_empty() {
            inner.counters.load.inc();
            let timer = inner.load_timer.start();
            let values = loader(missing.iter().map(|&i| keys[i].clone()).collect()).await;
            timer.finish(Code::OK);
            let mut values = values.into_iter();
            for &i in &missing {
                let value = values.next().flatten();
                let entry = inner.store(&keys[i], value.clone(), seen).await?;
                out[i] = Some(value);
                l1.insert(keys[i].clone(), entry).await;
            }
        }
        Ok(out.into_iter().map(Option::flatten).collect())
    }

    /// Sets `key` to `value` in both levels, and tells other instances.
    ///
    /// # Errors
    ///
    /// The value does not encode; L2 failed, in strict mode.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: L2 may be written and L1 not.
    pub async fn put(&self, key: K, value: V) -> Result<(), Error> {
        let inner = &self.inner;
        inner.changes.fetch_add(1, Ordering::AcqRel);
        let seen = inner.changes.load(Ordering::Acquire);
        let entry = inner.store(&key, Some(value), seen).await?;
        inner.announce(&key).await?;
        inner.l1().insert(key, entry).await;
        Ok(())
    }

    /// Removes `key` from both levels, and from other instances' L1.
    ///
    /// # Errors
    ///
    /// L2 failed, in strict mode.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: L2 may keep the key.
    pub async fn invalidate(&self, key: &K) -> Result<(), Error> {
        let inner = &self.inner;
        inner.changes.fetch_add(1, Ordering::AcqRel);
        inner.l1().invalidate(key).await;
        if let Some(l2) = &inner.l2 {
            let l2_key = inner.l2_key(key);
            if inner.l2_usable() {
                match inner
                    .l2_call("delete", l2.backend.delete(std::slice::from_ref(&l2_key)))
                    .await
                {
                    Ok(()) => {}
                    Err(e) if inner.strict => return Err(e),
                    Err(_) => inner.mark_dirty(l2_key),
                }
            } else {
                inner.mark_dirty(l2_key);
            }
            inner.announce(key).await?;
        }
        Ok(())
    }

    /// Empties this instance's L1 (both partitions); L2 and other instances are untouched.
    pub fn clear_local(&self) {
        self.inner.clear();
    }

    /// L1 entries (after pending maintenance), for tests and dashboards.
    pub async fn l1_len(&self) -> u64 {
        let l1 = self.inner.l1();
        l1.run_pending_tasks().await;
        l1.entry_count()
    }
}

fn entry_result<V, E: Send + Sync + 'static>(e: Entry<V>) -> Result<Option<V>, LoadError<E>> {
    if let Some(failed) = e.failed
        && let Ok(err) = failed.downcast::<E>()
    {
        return Err(LoadError::Load(err));
    }
    Ok(e.value)
}

impl Error {
    /// A copy for another caller of a shared load (the source of an L2 error is shared).
    fn clone_shallow(&self) -> Error {
        match self {
            Error::L2 { cache, op, source } => Error::L2 {
                cache: cache.clone(),
                op,
                source: source.clone(),
            },
            Error::L2Timeout { cache, op, after } => Error::L2Timeout {
                cache: cache.clone(),
                op,
                after: *after,
            },
            other => Error::Config {
                key: "shared",
                message: other.to_string(),
            },
        }
    }
}

impl<K: Key, V: Clone + Send + Sync + 'static> Inner<K, V> {
    /// The L1 partition of the current traffic.
    fn l1(&self) -> &L1<K, V> {
        if jupiter_core::shadow::is_shadow() {
            self.shadow.get_or_init(|| (self.make_l1)())
        } else {
            &self.live
        }
    }

    /// Empties both partitions.
    fn clear(&self) {
        self.live.invalidate_all();
        if let Some(shadow) = self.shadow.get() {
            shadow.invalidate_all();
        }
    }

    /// The entry of `key` if present and fresh (counted as a hit); a stale one is removed.
    async fn fresh(&self, l1: &L1<K, V>, key: &K) -> Option<Entry<V>> {
        let e = l1.get(key).await?;
        if self.is_fresh(&e) {
            self.counters.l1_hit.inc();
            return Some(e);
        }
        l1.invalidate(key).await;
        None
    }

    fn age(&self, e: &Entry<V>) -> u64 {
        self.now_ns().saturating_sub(e.born)
    }

    /// Whether an entry moka returned is within its own TTL (by the coarse clock: one atomic
    /// load).
    fn is_fresh(&self, e: &Entry<V>) -> bool {
        self.age(e) < e.ttl_ns
    }

    fn refresh_due(&self, e: &Entry<V>) -> bool {
        e.refresh_ns != u64::MAX && e.failed.is_none() && self.age(e) >= e.refresh_ns
    }

    /// Starts the one background refresh of a key (the first caller to see it due).
    fn refresh<F, Fut, E>(self: &Arc<Self>, key: K, loader: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let shadow = jupiter_core::shadow::is_shadow();
        if !self
            .refreshing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((shadow, key.clone()))
        {
            return;
        }
        let inner = self.clone();
        // Under the caller's shadow context, if any: the refresh stays in its partition.
        jupiter_core::shadow::spawn(async move {
            let seen = inner.changes.load(Ordering::Acquire);
            inner.counters.load.inc();
            let timer = inner.load_timer.start();
            match loader().await {
                Ok(value) => {
                    timer.finish(Code::OK);
                    if let Ok(fresh) = inner.store(&key, value, seen).await {
                        inner.l1().insert(key.clone(), fresh).await;
                    }
                }
                Err(_) => {
                    // The current value is served on; the next due hit tries again.
                    timer.finish(Code::from_static("LoadError"));
                    inner.counters.load_error.inc();
                }
            }
            inner
                .refreshing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(shadow, key));
        });
    }

    /// The shared load of one key: L2, then the loader (whose result is written to L2).
    async fn fill<F, Fut, E>(&self, key: &K, loader: F) -> Result<Entry<V>, FillError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let seen = self.changes.load(Ordering::Acquire);
        if let Some(l2) = &self.l2 {
            match self.l2_lookup(l2, key).await {
                Ok(Some(entry)) => return Ok(self.keep_if_unchanged(entry, seen)),
                Ok(None) => {}
                Err(e) => return Err(FillError::Cache(e)),
            }
        }
        self.counters.load.inc();
        let timer = self.load_timer.start();
        match loader().await {
            Ok(value) => {
                timer.finish(Code::OK);
                self.store(key, value, seen).await.map_err(FillError::Cache)
            }
            Err(e) => {
                timer.finish(Code::from_static("LoadError"));
                self.counters.load_error.inc();
                let e: Arc<dyn Any + Send + Sync> = Arc::new(e);
                match self.cache_errors {
                    Some(ttl) => Ok(Entry {
                        value: None,
                        failed: Some(e),
                        born: self.now_ns(),
                        ttl_ns: nanos(ttl),
                        refresh_ns: u64::MAX,
                    }),
                    None => Err(FillError::Load(e)),
                }
            }
        }
    }

    /// `key`'s L2 record as an L1 entry (its TTL capped by the record's), counting the hit or
    /// miss; `Ok(None)` for a miss or an L2 that is down (degraded mode).
    async fn l2_lookup(&self, l2: &Level2<V>, key: &K) -> Result<Option<Entry<V>>, Error> {
        if !self.l2_usable() {
            return Ok(None);
        }
        let l2_key = self.l2_key(key);
        match self.l2_call("get", l2.backend.get(&l2_key)).await {
            Ok(Some(bytes)) => match self.decode(l2, &bytes) {
                Some(entry) => {
                    self.counters.l2_hit.inc();
                    Ok(Some(entry))
                }
                None => {
                    self.counters.l2_miss.inc();
                    Ok(None)
                }
            },
            Ok(None) => {
                self.counters.l2_miss.inc();
                Ok(None)
            }
            Err(e) if self.strict => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// An L2 record as an entry; `None` if it expired or does not decode (counted).
    fn decode(&self, l2: &Level2<V>, bytes: &[u8]) -> Option<Entry<V>> {
        match decode_record(&*l2.codec, bytes, SystemTime::now()) {
            Ok(record) if !record.remaining.is_zero() => {
                let ttl = if record.value.is_some() {
                    self.ttl
                } else {
                    self.negative_ttl?
                };
                Some(self.entry(record.value, self.jittered(ttl).min(record.remaining)))
            }
            Ok(_) => None,
            Err(e) => {
                self.counters.decode_error.inc();
                tracing::debug!(cache = %self.name, error = %e, "cache: an L2 record did not decode; treated as a miss");
                None
            }
        }
    }

    /// Writes a loaded (or put) value to L2 and returns its L1 entry.
    async fn store(&self, key: &K, value: Option<V>, seen: u64) -> Result<Entry<V>, Error> {
        let ttl = match (&value, self.negative_ttl) {
            (Some(_), _) => self.jittered(self.ttl),
            (None, Some(n)) => n,
            // Negative caching off: "not found" is returned and not kept.
            (None, None) => return Ok(self.entry(None, Duration::ZERO)),
        };
        if let Some(l2) = &self.l2 {
            let l2_ttl = match &value {
                Some(_) => self.jittered(self.l2_ttl),
                None => ttl,
            };
            let record = encode_record(&*l2.codec, value.as_ref(), l2_ttl, SystemTime::now())
                .map_err(|source| Error::Encode {
                    cache: self.name.to_string(),
                    source,
                })?;
            let l2_key = self.l2_key(key);
            if self.l2_usable() {
                match self
                    .l2_call("set", l2.backend.set(&l2_key, record, l2_ttl))
                    .await
                {
                    Ok(()) => {}
                    Err(e) if self.strict => return Err(e),
                    Err(_) => self.mark_dirty(l2_key),
                }
            } else {
                self.mark_dirty(l2_key);
            }
        }
        Ok(self.keep_if_unchanged(self.entry(value, ttl), seen))
    }

    fn entry(&self, value: Option<V>, ttl: Duration) -> Entry<V> {
        let ttl_ns = nanos(ttl);
        let refresh_ns = match (self.refresh_ahead, &value) {
            (Some(f), Some(_)) => (ttl_ns as f64 * f) as u64,
            _ => u64::MAX,
        };
        Entry {
            value,
            failed: None,
            born: self.now_ns(),
            ttl_ns,
            refresh_ns,
        }
    }

    /// An entry read or loaded while something changed (an invalidation, a put) may be older
    /// than that change: it is returned to its callers but not kept.
    fn keep_if_unchanged(&self, mut entry: Entry<V>, seen: u64) -> Entry<V> {
        if self.changes.load(Ordering::Acquire) != seen {
            entry.ttl_ns = 0;
            entry.refresh_ns = u64::MAX;
        }
        entry
    }

    /// `ttl` less up to `jitter` of it.
    fn jittered(&self, ttl: Duration) -> Duration {
        if self.jitter <= 0.0 {
            return ttl;
        }
        ttl.mul_f64(1.0 - self.jitter * fastrand::f64())
    }

    fn l2_key(&self, key: &K) -> Bytes {
        let mut b = Vec::with_capacity(self.prefix.len() + 16);
        b.extend_from_slice(&self.prefix);
        key.encode(&mut b);
        Bytes::from(b)
    }

    async fn announce(&self, key: &K) -> Result<(), Error> {
        let Some(l2) = &self.l2 else { return Ok(()) };
        if !self.l2_usable() {
            return Ok(());
        }
        let keys = [self.l2_key(key)];
        match self
            .l2_call("announce", l2.backend.announce(&self.prefix, &keys))
            .await
        {
            Err(e) if self.strict => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether to try L2 now: it is up, or it is time to probe it again.
    fn l2_usable(&self) -> bool {
        // Strict mode asks L2 every time: each caller gets L2's own answer or error.
        if self.strict || !self.outage.down.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.now_ns();
        let at = self.outage.retry_at.load(Ordering::Relaxed);
        // One caller probes; the others keep to L1 and the loader.
        now >= at
            && self
                .outage
                .retry_at
                .compare_exchange(at, self.later(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// The clock's reading `l2-retry` from now.
    fn later(&self) -> u64 {
        self.now_ns().saturating_add(nanos(self.l2_retry))
    }

    /// Nanoseconds since the cache was built, by its clock.
    fn now_ns(&self) -> u64 {
        // The coarse clock (updated every millisecond by quanta's upkeep thread, or the mock's
        // value); before the upkeep's first tick, the precise one.
        let mut now = self.clock.recent();
        if now < self.epoch {
            now = self.clock.now();
        }
        nanos(now.saturating_duration_since(self.epoch))
    }

    /// Runs one L2 call under `l2-timeout`, tracking outages.
    async fn l2_call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, L2Error>>,
    ) -> Result<T, Error> {
        let bounded = self.l2.as_ref().is_some_and(|l2| l2.bounded);
        let answer = if bounded {
            // The backend keeps to `l2-timeout` itself: no timer to arm and cancel here.
            Ok(call.await)
        } else {
            tokio::time::timeout(self.l2_timeout, call).await
        };
        let result = match answer {
            Ok(Err(e)) if is_timeout(&*e) => Error::L2Timeout {
                cache: self.name.to_string(),
                op,
                after: self.l2_timeout,
            },
            Ok(Ok(v)) => {
                self.l2_up().await;
                return Ok(v);
            }
            Ok(Err(e)) if is_shadow_refusal(&*e) => {
                // Shadow traffic with no shadow target in L2: skip L2 for this call; L2 is
                // not down.
                return Err(Error::L2 {
                    cache: self.name.to_string(),
                    op,
                    source: Arc::from(e),
                });
            }
            Ok(Err(e)) => Error::L2 {
                cache: self.name.to_string(),
                op,
                source: Arc::from(e),
            },
            Err(_) => Error::L2Timeout {
                cache: self.name.to_string(),
                op,
                after: self.l2_timeout,
            },
        };
        self.counters.l2_error.inc();
        if !self.outage.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(cache = %self.name, error = %result, "cache: L2 unavailable; serving from L1 and the loader until it is back");
        }
        self.outage.retry_at.store(self.later(), Ordering::Release);
        Err(result)
    }

    /// L2 answered: if it was down, it is back, and what changed meanwhile is removed from
    /// it (its copies may be stale).
    async fn l2_up(&self) {
        if !self.outage.down.swap(false, Ordering::AcqRel) {
            return;
        }
        tracing::info!(cache = %self.name, "cache: L2 is back");
        let dirty =
            std::mem::take(&mut *self.outage.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(l2) = &self.l2 else { return };
        for (shadow, key) in dirty {
            let ctx = shadow.then(jupiter_core::shadow::ShadowContext::new);
            let delete = l2.backend.delete(std::slice::from_ref(&key));
            let _ = tokio::time::timeout(
                self.l2_timeout,
                jupiter_core::shadow::ShadowContext::scope(ctx, delete),
            )
            .await;
        }
    }

    fn mark_dirty(&self, key: Bytes) {
        let mut dirty = self.outage.dirty.lock().unwrap_or_else(|e| e.into_inner());
        if dirty.len() < MAX_DIRTY {
            dirty.push((jupiter_core::shadow::is_shadow(), key));
        } else if dirty.len() == MAX_DIRTY {
            tracing::warn!(cache = %self.name, "cache: more than {MAX_DIRTY} keys changed while L2 was down; L2 may serve stale copies of the others until they expire");
        }
    }
}

/// Whether an L2 error is the backend's own timeout (after [`L2::bound_calls`]).
fn is_timeout(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.downcast_ref::<redis_client::Error>()
        .is_some_and(redis_client::Error::is_timeout)
}

/// Whether an L2 error is a shadow refusal (no shadow target configured), not an outage.
fn is_shadow_refusal(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    matches!(
        e.downcast_ref::<redis_client::Error>(),
        Some(redis_client::Error::ShadowRefused(_) | redis_client::Error::ShadowUnmappable { .. })
    )
}
