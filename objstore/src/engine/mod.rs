//! The storage engine: a sharded, ordered in-memory map of key → object, with etcd-style
//! revisions, conditional writes, TTLs, a memory cap with eviction, and a change feed.
//!
//! # Concurrency
//!
//! Keys hash to one of N shards (a power of two, default 64), each an ordered map behind its
//! own reader-writer lock. Reads take one shard's read lock for a lookup and clone an `Arc`;
//! writers of different shards never meet. The one global step of a write is assigning its
//! revision and appending to the change feed (a short mutex), which is what makes revisions a
//! total order that watchers can resume from. Growth is per shard and small (an ordered map
//! grows node by node), so there is no stop-the-world rehash.
//!
//! # Memory
//!
//! Every object is charged `key + value + metadata + OBJECT_OVERHEAD` bytes against
//! `max-memory`. The charge is an estimate; a background sampler compares the process's
//! resident memory with it and lowers the data budget by the difference, so the cap holds for
//! the real resident memory. When a write would exceed the budget, `noeviction` refuses it
//! (RESOURCE_EXHAUSTED) and `sampled-lru` evicts the least recently read of a few sampled
//! objects until it fits. An object is replaced as a whole: readers see the old or the new
//! one, never a mix.
//!
//! # Expiry
//!
//! Lazy (an expired object is invisible and removed on access) plus active: a background task
//! sweeps shards that hold objects with a TTL.

mod feed;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use self::feed::Feed;
pub use self::feed::{Event, EventKind, WatchError, Watcher};

/// Bytes charged per object beyond its key, value and metadata: the map node, the `Arc`, the
/// object header. Measured against resident memory, see the memory benchmark.
pub const OBJECT_OVERHEAD: usize = 160;

/// What to do when a write would exceed the memory budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Eviction {
    /// Refuse the write (RESOURCE_EXHAUSTED).
    #[default]
    Noeviction,
    /// Evict the least recently read among a few sampled objects, until the write fits.
    SampledLru,
}

/// Engine limits.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Shards (rounded up to a power of two).
    pub shards: usize,
    /// Memory cap in bytes for the process; 0: none.
    pub max_memory: u64,
    /// What to do at the cap.
    pub eviction: Eviction,
    /// Longest key.
    pub max_key: usize,
    /// Largest value.
    pub max_value: usize,
    /// Change-feed events kept for watchers resuming from an older revision.
    pub feed_history: usize,
    /// Events buffered per live watcher before it is cut off (told where to resume).
    pub watch_buffer: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 64,
            max_memory: 0,
            eviction: Eviction::Noeviction,
            max_key: 1024,
            max_value: 64 * 1024 * 1024,
            feed_history: 100_000,
            watch_buffer: 4096,
        }
    }
}

/// One stored object. Immutable: a write replaces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The value.
    pub value: Bytes,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: u64,
    /// Revision of the last write.
    pub mod_revision: u64,
    /// Writes since creation (1 for a new key).
    pub version: u64,
    /// Expiry, Unix milliseconds.
    pub expires_at_ms: Option<u64>,
    /// MIME type, if given.
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: Vec<(String, String)>,
}

impl Object {
    /// The entity tag: changes with every write.
    pub fn etag(&self) -> String {
        format!("\"{:x}-{:x}\"", self.mod_revision, self.version)
    }

    fn charge(
        key: &[u8],
        value_len: usize,
        content_type: Option<&str>,
        metadata: &[(String, String)],
    ) -> usize {
        key.len()
            + value_len
            + content_type.map_or(0, str::len)
            + metadata
                .iter()
                .map(|(k, v)| k.len() + v.len() + 48)
                .sum::<usize>()
            + OBJECT_OVERHEAD
    }

    fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }
}

/// A precondition on a write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// None.
    #[default]
    Always,
    /// Only if the key does not exist.
    IfAbsent,
    /// Only if the key exists with this mod revision.
    IfRevision(u64),
    /// Only if the key exists with this ETag.
    IfEtag(String),
}

/// A write.
#[derive(Clone, Debug, Default)]
pub struct Put {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Time to live.
    pub ttl: Option<Duration>,
    /// MIME type.
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: Vec<(String, String)>,
    /// Precondition.
    pub condition: Condition,
}

/// Why an operation failed. Each maps to one gRPC status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// INVALID_ARGUMENT
    #[error("{0}")]
    Invalid(String),
    /// FAILED_PRECONDITION: the current mod revision, if the key exists.
    #[error("precondition failed (current revision: {current:?})")]
    Precondition {
        /// The key's mod revision now; `None` if absent.
        current: Option<u64>,
    },
    /// RESOURCE_EXHAUSTED
    #[error("{0}")]
    Exhausted(String),
    /// NOT_FOUND
    #[error("not found")]
    NotFound,
}

/// One object in a listing.
#[derive(Clone, Debug)]
pub struct Listed {
    /// The key.
    pub key: Bytes,
    /// The object.
    pub object: Arc<Object>,
}

struct Entry {
    object: Arc<Object>,
    /// Seconds since the engine started, of the last read (for LRU).
    last_access: AtomicU32,
}

#[derive(Default)]
struct Shard {
    map: BTreeMap<Bytes, Entry>,
    /// Objects with an expiry (the sweeper skips shards without).
    with_ttl: usize,
}

struct Inner {
    shards: Box<[RwLock<Shard>]>,
    mask: usize,
    feed: Feed,
    config: EngineConfig,
    /// Bytes charged for live objects.
    charged: AtomicUsize,
    /// Resident memory the charge does not account for (allocator, runtime), from sampling.
    untracked: AtomicUsize,
    objects: AtomicUsize,
    evictions: AtomicU64,
    expirations: AtomicU64,
    started: Instant,
}

/// The engine. Cheap to clone; all clones share the data.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("objects", &self.len())
            .field("revision", &self.revision())
            .finish()
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hash(key: &[u8]) -> u64 {
    // FNV-1a: keys are short, and the hash only spreads keys over shards.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 29)
}

impl Engine {
    /// An empty engine.
    pub fn new(config: EngineConfig) -> Engine {
        Engine::with_revision(config, 0)
    }

    /// An empty engine whose next write gets `revision + 1` (after loading a snapshot).
    pub fn with_revision(config: EngineConfig, revision: u64) -> Engine {
        let n = config.shards.max(1).next_power_of_two();
        Engine {
            inner: Arc::new(Inner {
                shards: (0..n).map(|_| RwLock::new(Shard::default())).collect(),
                mask: n - 1,
                // Old values kept for resuming watchers count against the cap: at most an
                // eighth of it (64 MiB without a cap).
                feed: Feed::new(
                    revision,
                    config.feed_history,
                    match config.max_memory {
                        0 => 64 * 1024 * 1024,
                        cap => (cap / 8) as usize,
                    },
                    config.watch_buffer,
                ),
                config,
                charged: AtomicUsize::new(0),
                // Set from resident memory by `spawn_maintenance` (a library user embedding the
                // engine without it gets a counter-only cap).
                untracked: AtomicUsize::new(0),
                objects: AtomicUsize::new(0),
                evictions: AtomicU64::new(0),
                expirations: AtomicU64::new(0),
                started: Instant::now(),
            }),
        }
    }

    /// The limits.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The revision of the last write.
    pub fn revision(&self) -> u64 {
        self.inner.feed.revision()
    }

    /// Live objects (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.inner.objects.load(Ordering::Relaxed)
    }

    /// Whether the engine holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged against the memory cap.
    pub fn charged_bytes(&self) -> usize {
        self.inner.charged.load(Ordering::Relaxed)
    }

    /// Objects evicted and expired so far.
    pub fn evictions(&self) -> (u64, u64) {
        (
            self.inner.evictions.load(Ordering::Relaxed),
            self.inner.expirations.load(Ordering::Relaxed),
        )
    }

    fn shard(&self, key: &[u8]) -> &RwLock<Shard> {
        &self.inner.shards[hash(key) as usize & self.inner.mask]
    }

    fn tick(&self) -> u32 {
        self.inner.started.elapsed().as_secs() as u32
    }

    fn check_key(&self, key: &[u8]) -> Result<(), EngineError> {
        if key.is_empty() {
            return Err(EngineError::Invalid("key is empty".into()));
        }
        if key.len() > self.inner.config.max_key {
            return Err(EngineError::Invalid(format!(
                "key of {} bytes exceeds the limit of {} bytes",
                key.len(),
                self.inner.config.max_key
            )));
        }
        Ok(())
    }

    /// The object under `key`, if present and not expired.
    pub fn get(&self, key: &[u8]) -> Option<Arc<Object>> {
        let now = now_ms();
        {
            let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
            let entry = shard.map.get(key)?;
            if !entry.object.expired(now) {
                entry.last_access.store(self.tick(), Ordering::Relaxed);
                return Some(entry.object.clone());
            }
        }
        // Lazy expiry.
        self.remove_expired(key, now);
        None
    }

    fn remove_expired(&self, key: &[u8], now: u64) {
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        if shard.map.get(key).is_some_and(|e| e.object.expired(now)) {
            let (k, entry) = shard.map.remove_entry(key).expect("present");
            self.removed(&mut shard, &k, &entry.object);
            self.inner.expirations.fetch_add(1, Ordering::Relaxed);
            self.inner.feed.append(k, EventKind::Expire, None);
        }
    }

    fn removed(&self, shard: &mut Shard, key: &[u8], obj: &Object) {
        if obj.expires_at_ms.is_some() {
            shard.with_ttl -= 1;
        }
        self.inner.objects.fetch_sub(1, Ordering::Relaxed);
        self.inner.charged.fetch_sub(
            Object::charge(
                key,
                obj.value.len(),
                obj.content_type.as_deref(),
                &obj.metadata,
            ),
            Ordering::Relaxed,
        );
    }

    /// Bytes counted against the cap: live objects and the change history.
    fn used(&self) -> usize {
        self.inner.charged.load(Ordering::Relaxed) + self.inner.feed.history_bytes()
    }

    /// The data budget: the cap minus what sampling found the charge misses.
    fn budget(&self) -> Option<usize> {
        let cap = self.inner.config.max_memory as usize;
        (cap > 0).then(|| cap.saturating_sub(self.inner.untracked.load(Ordering::Relaxed)))
    }

    /// Makes room for `need` more bytes: evicts, or refuses.
    fn reserve(&self, need: usize, protect: &[u8]) -> Result<(), EngineError> {
        let Some(budget) = self.budget() else {
            return Ok(());
        };
        let mut attempts = 0;
        while self.used() + need > budget {
            if self.inner.config.eviction == Eviction::Noeviction || attempts > 10_000 {
                return Err(EngineError::Exhausted(format!(
                    "memory cap of {} bytes reached ({} bytes in use, {} more needed)",
                    self.inner.config.max_memory,
                    self.used(),
                    need
                )));
            }
            attempts += 1;
            self.evict_one(protect);
        }
        Ok(())
    }

    /// Evicts the least recently read of up to 5 objects sampled from a random shard.
    fn evict_one(&self, protect: &[u8]) {
        let n = self.inner.shards.len();
        let start = fastrand::usize(..n);
        for i in 0..n {
            let lock = &self.inner.shards[(start + i) % n];
            let mut shard = lock.write().unwrap_or_else(|e| e.into_inner());
            if shard.map.is_empty() {
                continue;
            }
            // Sample from a random point of the key space.
            let probe = Bytes::from(fastrand::u64(..).to_be_bytes().to_vec());
            let victim = shard
                .map
                .range::<Bytes, _>((Bound::Included(&probe), Bound::Unbounded))
                .chain(shard.map.iter())
                .filter(|(k, _)| &k[..] != protect)
                .take(5)
                .min_by_key(|(_, e)| e.last_access.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(k) = victim {
                let (k, entry) = shard.map.remove_entry(&k).expect("present");
                self.removed(&mut shard, &k, &entry.object);
                self.inner.evictions.fetch_add(1, Ordering::Relaxed);
                self.inner.feed.append(k, EventKind::Evict, None);
                return;
            }
        }
    }

    /// Writes an object. Returns it as stored.
    ///
    /// # Errors
    ///
    /// Invalid key or value, a failed condition, or the memory cap.
    pub fn put(&self, put: Put) -> Result<Arc<Object>, EngineError> {
        self.check_key(&put.key)?;
        if put.value.len() > self.inner.config.max_value {
            return Err(EngineError::Invalid(format!(
                "value of {} bytes exceeds the limit of {} bytes",
                put.value.len(),
                self.inner.config.max_value
            )));
        }
        let now = now_ms();
        let charge = Object::charge(
            &put.key,
            put.value.len(),
            put.content_type.as_deref(),
            &put.metadata,
        );
        self.reserve(charge, &put.key)?;
        let lock = self.shard(&put.key);
        let mut shard = lock.write().unwrap_or_else(|e| e.into_inner());
        let current = shard
            .map
            .get(&put.key)
            .map(|e| e.object.clone())
            .filter(|o| !o.expired(now));
        match (&put.condition, &current) {
            (Condition::Always, _) => {}
            (Condition::IfAbsent, None) => {}
            (Condition::IfRevision(r), Some(c)) if c.mod_revision == *r => {}
            (Condition::IfEtag(t), Some(c)) if c.etag() == *t => {}
            (_, c) => {
                return Err(EngineError::Precondition {
                    current: c.as_ref().map(|c| c.mod_revision),
                });
            }
        }
        let expires_at_ms = put.ttl.map(|t| now + t.as_millis().max(1) as u64);
        let Put {
            key,
            value,
            content_type,
            metadata,
            ..
        } = put;
        let object = self.inner.feed.append_with(key.clone(), |revision| {
            Arc::new(Object {
                value,
                create_revision: current.as_ref().map_or(revision, |c| c.create_revision),
                mod_revision: revision,
                version: current.as_ref().map_or(1, |c| c.version + 1),
                expires_at_ms,
                content_type,
                metadata,
            })
        });
        let old = shard.map.insert(
            key.clone(),
            Entry {
                object: object.clone(),
                last_access: AtomicU32::new(self.tick()),
            },
        );
        if let Some(old) = old {
            // Replaced (an expired one too): release its charge.
            self.removed(&mut shard, &key, &old.object);
        }
        if expires_at_ms.is_some() {
            shard.with_ttl += 1;
        }
        self.inner.objects.fetch_add(1, Ordering::Relaxed);
        self.inner.charged.fetch_add(charge, Ordering::Relaxed);
        Ok(object)
    }

    /// Deletes `key`, under an optional condition. Returns the deletion's revision.
    ///
    /// # Errors
    ///
    /// `NotFound` if absent; `Precondition` if the condition fails.
    pub fn delete(&self, key: &[u8], condition: &Condition) -> Result<u64, EngineError> {
        self.check_key(key)?;
        let now = now_ms();
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        let current = shard
            .map
            .get(key)
            .map(|e| e.object.clone())
            .filter(|o| !o.expired(now));
        let Some(current) = current else {
            return match condition {
                Condition::IfRevision(_) | Condition::IfEtag(_) => {
                    Err(EngineError::Precondition { current: None })
                }
                _ => Err(EngineError::NotFound),
            };
        };
        let ok = match condition {
            Condition::Always => true,
            Condition::IfAbsent => false,
            Condition::IfRevision(r) => current.mod_revision == *r,
            Condition::IfEtag(t) => current.etag() == *t,
        };
        if !ok {
            return Err(EngineError::Precondition {
                current: Some(current.mod_revision),
            });
        }
        let (k, entry) = shard.map.remove_entry(key).expect("present");
        self.removed(&mut shard, &k, &entry.object);
        Ok(self.inner.feed.append(k, EventKind::Delete, None))
    }

    /// Up to `limit` objects with keys starting with `prefix`, in key order, after
    /// `start_after` (exclusive). The bool says whether more follow.
    pub fn list(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> (Vec<Listed>, bool) {
        let now = now_ms();
        let from: Bytes = match start_after {
            Some(s) if s >= prefix => Bytes::copy_from_slice(s),
            _ => Bytes::copy_from_slice(prefix),
        };
        let exclusive = start_after.is_some_and(|s| s >= prefix);
        // Per shard, the first `limit + 1` matching keys; merged and cut. Each shard's lock is
        // held only while copying its few entries.
        let mut all: Vec<Listed> = Vec::new();
        for lock in self.inner.shards.iter() {
            let shard = lock.read().unwrap_or_else(|e| e.into_inner());
            let lower = if exclusive {
                Bound::Excluded(&from)
            } else {
                Bound::Included(&from)
            };
            all.extend(
                shard
                    .map
                    .range::<Bytes, _>((lower, Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .filter(|(_, e)| !e.object.expired(now))
                    .take(limit + 1)
                    .map(|(k, e)| Listed {
                        key: k.clone(),
                        object: e.object.clone(),
                    }),
            );
        }
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let more = all.len() > limit;
        all.truncate(limit);
        (all, more)
    }

    /// Watches changes to keys starting with `prefix`, from revision `from` (0: from now).
    ///
    /// # Errors
    ///
    /// `from` is older than the oldest event kept (compacted) or newer than the next revision.
    pub fn watch(&self, prefix: Bytes, from: u64) -> Result<Watcher, WatchError> {
        self.inner.feed.watch(prefix, from)
    }

    /// Removes expired objects from up to `max_shards` shards that hold objects with a TTL,
    /// starting at `cursor`. Returns the next cursor and how many were removed.
    pub fn sweep_expired(&self, cursor: usize, max_shards: usize) -> (usize, usize) {
        let n = self.inner.shards.len();
        let now = now_ms();
        let mut removed = 0;
        let mut i = cursor % n;
        for _ in 0..max_shards.min(n) {
            let lock = &self.inner.shards[i];
            i = (i + 1) % n;
            if lock.read().unwrap_or_else(|e| e.into_inner()).with_ttl == 0 {
                continue;
            }
            let mut shard = lock.write().unwrap_or_else(|e| e.into_inner());
            let expired: Vec<Bytes> = shard
                .map
                .iter()
                .filter(|(_, e)| e.object.expired(now))
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                let (k, entry) = shard.map.remove_entry(&k).expect("present");
                self.removed(&mut shard, &k, &entry.object);
                self.inner.expirations.fetch_add(1, Ordering::Relaxed);
                self.inner.feed.append(k, EventKind::Expire, None);
                removed += 1;
            }
        }
        (i, removed)
    }

    /// Records the process's resident memory: the part the charge does not explain lowers the
    /// data budget, so the cap holds for resident memory. Evicts if now over budget.
    pub fn observe_resident(&self, mut resident: usize) {
        let cap = self.inner.config.max_memory as usize;
        if cap > 0 && resident > cap / 20 * 19 {
            // Freed values may sit in the allocator's free lists, resident but reusable: give
            // them back first, or they would count as overhead and evict live data for
            // nothing.
            release_free_memory();
            resident = resident_bytes().unwrap_or(resident);
        }
        self.inner
            .untracked
            .store(resident.saturating_sub(self.used()), Ordering::Relaxed);
        if self.inner.config.eviction == Eviction::SampledLru
            && let Some(budget) = self.budget()
        {
            let mut guard = 0;
            while self.used() > budget && guard < 100_000 {
                self.evict_one(&[]);
                guard += 1;
            }
        }
    }

    /// Starts the background tasks (active expiry, resident-memory sampling) on the current
    /// tokio runtime; they stop when every clone of the engine is dropped.
    pub fn spawn_maintenance(&self) {
        // Before the first write: what the process holds already is not for data.
        if self.inner.config.max_memory > 0
            && let Some(rss) = resident_bytes()
        {
            self.observe_resident(rss);
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut cursor = 0;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let engine = Engine { inner };
                // A 16th of the shards per tick: every shard about every 1.6 s.
                let per_tick = (engine.inner.shards.len() / 16).max(1);
                cursor = engine.sweep_expired(cursor, per_tick).0;
                if engine.inner.config.max_memory > 0
                    && let Some(rss) = resident_bytes()
                {
                    engine.observe_resident(rss);
                }
            }
        });
    }
}

impl Engine {
    /// Shards, for walking the data one shard at a time.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The live objects of shard `i`: `Arc` clones taken under its read lock (no value is
    /// copied), so a snapshot walks the data without stopping writers for long.
    pub fn shard_entries(&self, i: usize) -> Vec<(Bytes, Arc<Object>)> {
        let now = now_ms();
        let shard = self.inner.shards[i]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        shard
            .map
            .iter()
            .filter(|(_, e)| !e.object.expired(now))
            .map(|(k, e)| (k.clone(), e.object.clone()))
            .collect()
    }

    /// Inserts an object as it was (revisions included), when loading a snapshot: no change
    /// event, no memory check. Replaces an existing object under the key.
    pub fn restore(&self, key: Bytes, object: Object) {
        let charge = Object::charge(
            &key,
            object.value.len(),
            object.content_type.as_deref(),
            &object.metadata,
        );
        let has_ttl = object.expires_at_ms.is_some();
        let mut shard = self.shard(&key).write().unwrap_or_else(|e| e.into_inner());
        let old = shard.map.insert(
            key.clone(),
            Entry {
                object: Arc::new(object),
                last_access: AtomicU32::new(self.tick()),
            },
        );
        if let Some(old) = old {
            self.removed(&mut shard, &key, &old.object);
        }
        if has_ttl {
            shard.with_ttl += 1;
        }
        self.inner.objects.fetch_add(1, Ordering::Relaxed);
        self.inner.charged.fetch_add(charge, Ordering::Relaxed);
    }
}

/// Returns free heap memory to the operating system (glibc's `malloc_trim`).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it is thread safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The process's resident memory, from `/proc/self/statm` (Linux).
pub fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests;
