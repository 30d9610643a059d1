//! The storage engine: a sharded in-memory map of key → object, with etcd-style revisions,
//! conditional writes, TTLs, a memory cap with eviction, and a change feed.
//!
//! # Layout
//!
//! Objects are byte-packed records in 64 KiB segments, found through a hash index of 8-byte
//! slots; there is no allocation per object (see `store.rs`). A 16-byte key with a 100-byte
//! value costs about 125 bytes of record and 10–16 bytes of index, against ~208 bytes in
//! redis-server. Reads hand out values as `Bytes` that point into the segment (no copy).
//!
//! # Concurrency
//!
//! Keys hash to one of N shards (a power of two, default 64), each behind its own
//! reader-writer lock: chosen by measurement over an epoch-reclaimed lock-free map (the
//! `objstore_engine` bench, `scheme/…`, both around ordered maps of 100,000 keys: sharded
//! locks did gets 1.4× faster on one thread and 1.7× on two, puts 3.1× and 2.8×, on the
//! 2-core machine of 2026-12-01; the skiplist pays for epoch pins and node allocation on
//! every operation, and sharded locks are uncontended when keys spread over 64 shards).
//! Reads take one shard's read lock for a lookup and an `Arc` of a
//! segment; writers of different shards never meet. The one global step of a write is
//! assigning its revision and appending to the change feed (a short mutex), which is what
//! makes revisions a total order that watchers can resume from. An index grows by half when
//! 80% full, incrementally: later writes to the shard each move a few of its old slots, so
//! there is no stop-the-world rehash.
//!
//! # Memory
//!
//! Every object is charged its record plus `RECORD_OVERHEAD` against `max-memory`. A
//! background sampler compares the process's resident memory with the charges and lowers the
//! data budget by the difference (allocator, runtime, segment slack), so the cap holds for
//! the real resident memory. When a write would exceed the budget, `noeviction` refuses it
//! (RESOURCE_EXHAUSTED) and `sampled-lru` evicts the least recently read of 5 sampled
//! segments — all of its objects at once, which frees its memory at once (object-by-object
//! eviction would leave holes that free nothing until compaction). An object is replaced as a
//! whole: readers see the old or the new record, never a mix.
//!
//! # Expiry
//!
//! Lazy (an expired object is invisible and removed on access) plus active: a background task
//! sweeps shards that hold objects with a TTL.

mod feed;

mod store;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use self::feed::{Body, Feed};
pub use self::feed::{Event, EventKind, WatchError, Watcher};
pub(crate) use self::store::RecordRef;
use self::store::{Header, INLINE_MAX, MAX_HEADER, Pos, SegMeta, Segment, Segments, Table};

/// Bytes charged per object beyond its record: its index slot at the table's average load
/// and its share of segment slack. Resident-memory sampling corrects the rest.
pub const RECORD_OVERHEAD: usize = 16;

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

/// The latest expiry an object can have: milliseconds since the epoch as a signed 64-bit
/// number (what Redis accepts, and what a client reading it back as `i64` can hold).
pub const MAX_EXPIRY_MS: u64 = i64::MAX as u64;

/// The expiry `ttl` after `now_ms` (at least 1 ms later), if it is at most [`MAX_EXPIRY_MS`].
pub fn expiry_at(now_ms: u64, ttl: Duration) -> Option<u64> {
    let ms = u64::try_from(ttl.as_millis()).ok()?.max(1);
    now_ms.checked_add(ms).filter(|&at| at <= MAX_EXPIRY_MS)
}

/// One object in a listing.
#[derive(Clone, Debug)]
pub struct Listed {
    /// The key.
    pub key: Bytes,
    /// The object.
    pub object: Object,
}

#[derive(Default)]
struct Shard {
    table: Table,
    segs: Segments,
    /// Objects with an expiry (the sweeper skips shards without).
    with_ttl: usize,
}

impl Shard {
    /// Position and slot of `key`.
    fn find(&self, key: &[u8], hash: u64) -> Option<(Pos, u64)> {
        let segs = &self.segs;
        let i = self.table.find(store::tag(hash), |s| segs.key(s) == key)?;
        Some((i, self.table.get(i)))
    }

    /// Position of the slot pointing at the record at `off` of segment `id`.
    fn find_record(&self, key: &[u8], id: u32, off: usize) -> Option<(Pos, u64)> {
        let t = store::tag(hash(key));
        let target = store::slot(t, id, off);
        let i = self.table.find(t, |s| s == target)?;
        Some((i, t))
    }

    /// Room for a segment more (segment ids are 24 bits per shard).
    fn has_room(&self) -> bool {
        self.segs.metas.len() + 2 < (1 << 24) || self.segs.count + 2 < self.segs.metas.len()
    }
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

/// The key's hash: its low bits pick the shard, its top 24 bits are the index tag.
fn hash(key: &[u8]) -> u64 {
    // FNV-1a (keys are short), then a 64-bit finaliser so that both ends of the hash are
    // well mixed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Bytes charged for a record of `len` bytes: itself plus its share of the index, plus, for
/// a record with a segment of its own, that segment's bookkeeping (its allocation's header,
/// the unused part of the header area, the `Arc`, its entry in the shard's segment table).
fn charge(len: usize) -> usize {
    if len + MAX_HEADER > INLINE_MAX {
        len + RECORD_OVERHEAD + DEDICATED_OVERHEAD
    } else {
        len + RECORD_OVERHEAD
    }
}

const DEDICATED_OVERHEAD: usize = 192;

/// The object of the record at `off` of `segment` (the value is not copied).
fn object_of(segment: &Arc<Segment>, off: usize, h: &Header) -> Object {
    let (va, vb) = h.value(off);
    let (ea, eb) = h.extra(off);
    let (content_type, metadata) =
        store::decode_extra(segment.slice(ea, eb)).expect("extra validated when written");
    Object {
        value: segment.bytes(va, vb),
        create_revision: h.create_revision,
        mod_revision: h.mod_revision,
        version: h.version,
        expires_at_ms: h.expires_at_ms,
        content_type,
        metadata,
    }
}

/// Key and object of a record.
fn materialize(r: &RecordRef) -> (Bytes, Object) {
    let h = r.header();
    let off = r.off as usize;
    let (ka, kb) = h.key(off);
    (r.segment.bytes(ka, kb), object_of(&r.segment, off, &h))
}

fn etag(mod_revision: u64, version: u64) -> String {
    format!("\"{mod_revision:x}-{version:x}\"")
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

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.inner.shards[hash as usize & self.inner.mask]
    }

    fn tick(&self) -> u32 {
        self.inner.started.elapsed().as_secs() as u32
    }

    /// Whether `key` may be stored: not empty, at most `max-key` bytes.
    ///
    /// # Errors
    ///
    /// [`EngineError::Invalid`] naming what is wrong.
    pub fn check_key(&self, key: &[u8]) -> Result<(), EngineError> {
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
    pub fn get(&self, key: &[u8]) -> Option<Object> {
        let now = now_ms();
        let h = hash(key);
        let found = {
            let shard = self.shard(h).read().unwrap_or_else(|e| e.into_inner());
            let (_, s) = shard.find(key, h)?;
            let (header, segment, off) = shard.segs.header(s);
            (!header.expired(now)).then(|| {
                // Written only when the tick (seconds) moved on: readers of one segment on
                // several cores would otherwise bounce its cache line on every read.
                let tick = self.tick();
                if segment.last_read.load(Ordering::Relaxed) != tick {
                    segment.last_read.store(tick, Ordering::Relaxed);
                }
                (segment.clone(), off, header)
            })
        };
        match found {
            Some((segment, off, header)) => Some(object_of(&segment, off, &header)),
            None => {
                // Lazy expiry.
                self.remove_expired(key, h, now);
                None
            }
        }
    }

    fn remove_expired(&self, key: &[u8], h: u64, now: u64) {
        let mut guard = self.shard(h).write().unwrap_or_else(|e| e.into_inner());
        let shard = &mut *guard;
        if let Some((i, s)) = shard.find(key, h) {
            let header = shard.segs.header(s).0;
            if header.expired(now) {
                shard.table.remove(i);
                self.dead(shard, s, &header);
                self.inner.expirations.fetch_add(1, Ordering::Relaxed);
                let key = Bytes::copy_from_slice(key);
                self.inner
                    .feed
                    .append(EventKind::Expire, |_| (Body::Key(key), ()));
            }
        }
    }

    /// Accounts for a record that is no longer indexed: counters, charge, and its bytes
    /// dead in its segment (which is compacted if that leaves it mostly dead).
    fn dead(&self, shard: &mut Shard, s: u64, h: &Header) {
        if h.expires_at_ms.is_some() {
            shard.with_ttl -= 1;
        }
        self.inner.objects.fetch_sub(1, Ordering::Relaxed);
        self.inner
            .charged
            .fetch_sub(charge(h.total()), Ordering::Relaxed);
        let id = store::slot_segment(s);
        if shard.segs.kill(id, h.total()) {
            self.compact(shard, id);
        }
    }

    /// Moves the live records of segment `id` to the active segment and frees it.
    fn compact(&self, shard: &mut Shard, id: u32) {
        let segment = shard.segs.meta(id).segment.clone();
        let tick = self.tick();
        for (off, h) in shard.segs.walk(id) {
            let (ka, kb) = h.key(off);
            let Some((i, t)) = shard.find_record(segment.slice(ka, kb), id, off) else {
                continue; // Dead.
            };
            match shard
                .segs
                .append(&[segment.slice(off, off + h.total())], tick)
            {
                Some((nid, noff)) => shard.table.set(i, store::slot(t, nid, noff)),
                // Out of segment ids: the segment stays as it is.
                None => return,
            }
        }
        shard.segs.remove(id);
    }

    /// Bytes counted against the cap: live objects and the change history.
    fn used(&self) -> usize {
        self.inner.charged.load(Ordering::Relaxed) + self.inner.feed.history_bytes()
    }

    /// The data budget: the cap minus what sampling found the charge misses, minus 2% of
    /// headroom for what changes between two samples (allocator free lists, buffers of
    /// requests in flight).
    fn budget(&self) -> Option<usize> {
        let cap = self.inner.config.max_memory as usize;
        (cap > 0)
            .then(|| (cap - cap / 50).saturating_sub(self.inner.untracked.load(Ordering::Relaxed)))
    }

    /// Makes room for `need` more bytes: evicts, or refuses.
    fn reserve(&self, need: usize, protect: &[u8]) -> Result<(), EngineError> {
        let Some(budget) = self.budget() else {
            return Ok(());
        };
        let mut attempts = 0;
        while self.used() + need > budget {
            if self.inner.config.eviction == Eviction::Noeviction
                || attempts > 10_000
                || !self.evict_one(protect)
            {
                return Err(EngineError::Exhausted(format!(
                    "memory cap of {} bytes reached ({} bytes in use, {} more needed)",
                    self.inner.config.max_memory,
                    self.used(),
                    need
                )));
            }
            attempts += 1;
        }
        Ok(())
    }

    /// Evicts the least recently read of up to 5 segments sampled from a random shard: all
    /// of its objects go at once, and so does its memory. Returns false if nothing could be
    /// evicted.
    fn evict_one(&self, protect: &[u8]) -> bool {
        let n = self.inner.shards.len();
        let start = fastrand::usize(..n);
        for d in 0..n {
            let lock = &self.inner.shards[(start + d) % n];
            let mut guard = lock.write().unwrap_or_else(|e| e.into_inner());
            let shard = &mut *guard;
            if shard.table.len() == 0 || shard.segs.count == 0 {
                continue;
            }
            let ids = shard.segs.metas.len();
            let mut best: Option<(u32, u32)> = None;
            let mut sampled = 0;
            for _ in 0..32 {
                let id = fastrand::usize(1..ids) as u32;
                if let Some(m) = &shard.segs.metas[id as usize] {
                    let t = m.segment.last_read.load(Ordering::Relaxed);
                    if best.is_none_or(|(bt, _)| t < bt) {
                        best = Some((t, id));
                    }
                    sampled += 1;
                    if sampled == 5 {
                        break;
                    }
                }
            }
            let id = match best {
                Some((_, id)) => id,
                None => match shard.segs.metas.iter().position(Option::is_some) {
                    Some(id) => id as u32,
                    None => continue,
                },
            };
            if self.evict_segment(shard, id, protect) {
                return true;
            }
        }
        false
    }

    /// Evicts every object of segment `id` (except `protect`, which moves) and frees it.
    fn evict_segment(&self, shard: &mut Shard, id: u32, protect: &[u8]) -> bool {
        if shard.segs.active == id {
            shard.segs.meta_mut(id).sealed = true;
            shard.segs.active = 0;
        }
        let segment = shard.segs.meta(id).segment.clone();
        let tick = self.tick();
        let mut evicted = false;
        for (off, h) in shard.segs.walk(id) {
            let (ka, kb) = h.key(off);
            let key = segment.slice(ka, kb);
            let Some((i, t)) = shard.find_record(key, id, off) else {
                continue;
            };
            if key == protect {
                match shard
                    .segs
                    .append(&[segment.slice(off, off + h.total())], tick)
                {
                    Some((nid, noff)) => {
                        shard.table.set(i, store::slot(t, nid, noff));
                        continue;
                    }
                    None => return evicted,
                }
            }
            shard.table.remove(i);
            if h.expires_at_ms.is_some() {
                shard.with_ttl -= 1;
            }
            self.inner.objects.fetch_sub(1, Ordering::Relaxed);
            self.inner
                .charged
                .fetch_sub(charge(h.total()), Ordering::Relaxed);
            self.inner.evictions.fetch_add(1, Ordering::Relaxed);
            let key = Bytes::copy_from_slice(key);
            self.inner
                .feed
                .append(EventKind::Evict, |_| (Body::Key(key), ()));
            evicted = true;
        }
        shard.segs.remove(id);
        true
    }

    /// Writes an object. Returns it as stored.
    ///
    /// # Errors
    ///
    /// Invalid key or value, a failed condition, or the memory cap.
    pub fn put(&self, put: Put) -> Result<Object, EngineError> {
        self.check_key(&put.key)?;
        if put.value.len() > self.inner.config.max_value {
            return Err(EngineError::Invalid(format!(
                "value of {} bytes exceeds the limit of {} bytes",
                put.value.len(),
                self.inner.config.max_value
            )));
        }
        // Checked before any memory is charged: a TTL past what a millisecond timestamp can
        // hold is refused, not stored as already expired (or overflowed into the past).
        let now = now_ms();
        let expires_at_ms = match put.ttl {
            None => None,
            Some(ttl) => Some(expiry_at(now, ttl).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "invalid expire time: {} ms from now is past the largest expiry",
                    ttl.as_millis()
                ))
            })?),
        };
        let extra = store::encode_extra(put.content_type.as_deref(), &put.metadata);
        let body = extra.len() + put.key.len() + put.value.len();
        if body + MAX_HEADER > u32::MAX as usize {
            return Err(EngineError::Invalid(format!(
                "an object of {body} bytes is larger than 4 GiB"
            )));
        }
        self.reserve(charge(MAX_HEADER / 4 + body), &put.key)?;
        let tick = self.tick();
        // A large object gets a segment of its own, filled before the lock is taken: only
        // its header (which holds the revision) is written under it.
        let own = (MAX_HEADER + body > INLINE_MAX).then(|| {
            let segment = Arc::new(Segment::heap(MAX_HEADER + body, tick));
            // SAFETY: a new segment nobody else knows of.
            unsafe { segment.write(MAX_HEADER, &[&extra, &put.key, &put.value]) };
            segment
        });
        let h = hash(&put.key);
        let mut guard = self.shard(h).write().unwrap_or_else(|e| e.into_inner());
        let shard = &mut *guard;
        if !shard.has_room() {
            return Err(EngineError::Exhausted(
                "the shard has no segment ids left".into(),
            ));
        }
        let found = shard
            .find(&put.key, h)
            .map(|(i, s)| (i, s, shard.segs.header(s).0));
        let current = found.map(|f| f.2).filter(|c| !c.expired(now));
        match (&put.condition, &current) {
            (Condition::Always, _) => {}
            (Condition::IfAbsent, None) => {}
            (Condition::IfRevision(r), Some(c)) if c.mod_revision == *r => {}
            (Condition::IfEtag(t), Some(c)) if etag(c.mod_revision, c.version) == *t => {}
            (_, c) => {
                return Err(EngineError::Precondition {
                    current: c.as_ref().map(|c| c.mod_revision),
                });
            }
        }
        let (id, off, header) = self.inner.feed.append(EventKind::Put, |revision| {
            let header = Header {
                key_len: put.key.len(),
                value_len: put.value.len(),
                mod_revision: revision,
                create_revision: current.map_or(revision, |c| c.create_revision),
                version: current.map_or(1, |c| c.version + 1),
                expires_at_ms,
                extra_len: extra.len(),
                len: 0,
            };
            let mut head = [0u8; MAX_HEADER];
            let n = header.encode(&mut head);
            let header = Header { len: n, ..header };
            let (id, off) = match &own {
                Some(segment) => {
                    let start = MAX_HEADER - n;
                    // SAFETY: the bytes just before what was written, still unpublished.
                    unsafe { segment.write(start, &[&head[..n]]) };
                    let id = shard.segs.add_dedicated(segment.clone(), start);
                    (id.expect("room checked"), start)
                }
                None => shard
                    .segs
                    .append(&[&head[..n], &extra, &put.key, &put.value], tick)
                    .expect("room checked"),
            };
            let record = RecordRef {
                segment: shard.segs.meta(id).segment.clone(),
                off: off as u32,
                len: header.total() as u32,
            };
            (Body::Record(record), (id, off, header))
        });
        let new = store::slot(store::tag(h), id, off);
        match found {
            Some((i, old, old_header)) => {
                shard.table.set(i, new);
                // Replaced (an expired one too): release it.
                self.dead(shard, old, &old_header);
            }
            None => shard.table.insert(new),
        }
        if expires_at_ms.is_some() {
            shard.with_ttl += 1;
        }
        self.inner.objects.fetch_add(1, Ordering::Relaxed);
        self.inner
            .charged
            .fetch_add(charge(header.total()), Ordering::Relaxed);
        drop(guard);
        Ok(Object {
            value: put.value,
            create_revision: header.create_revision,
            mod_revision: header.mod_revision,
            version: header.version,
            expires_at_ms,
            content_type: put.content_type,
            metadata: put.metadata,
        })
    }

    /// Deletes `key`, under an optional condition. Returns the deletion's revision.
    ///
    /// # Errors
    ///
    /// `NotFound` if absent; `Precondition` if the condition fails.
    pub fn delete(&self, key: &[u8], condition: &Condition) -> Result<u64, EngineError> {
        self.check_key(key)?;
        let now = now_ms();
        let h = hash(key);
        let mut guard = self.shard(h).write().unwrap_or_else(|e| e.into_inner());
        let shard = &mut *guard;
        let found = shard
            .find(key, h)
            .map(|(i, s)| (i, s, shard.segs.header(s).0))
            .filter(|f| !f.2.expired(now));
        let Some((i, s, current)) = found else {
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
            Condition::IfEtag(t) => etag(current.mod_revision, current.version) == *t,
        };
        if !ok {
            return Err(EngineError::Precondition {
                current: Some(current.mod_revision),
            });
        }
        shard.table.remove(i);
        self.dead(shard, s, &current);
        let key = Bytes::copy_from_slice(key);
        Ok(self
            .inner
            .feed
            .append(EventKind::Delete, |revision| (Body::Key(key), revision)))
    }

    /// Up to `limit` objects with keys starting with `prefix`, in key order, after
    /// `start_after` (exclusive). The bool says whether more follow.
    ///
    /// The index is a hash table, so a page costs a pass over every key (like Redis's SCAN
    /// with MATCH), holding one shard's read lock at a time.
    pub fn list(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> (Vec<Listed>, bool) {
        self.list_excluding(prefix, start_after, limit, None)
    }

    /// As [`list`](Self::list), passing over keys that start with `exclude` (the shadow
    /// namespace in a live listing) inside the scan, so a page is full whenever more keys
    /// follow, however many excluded keys lie between.
    pub fn list_excluding(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
        exclude: Option<&[u8]>,
    ) -> (Vec<Listed>, bool) {
        let now = now_ms();
        let excluded = |key: &[u8]| exclude.is_some_and(|x| key.starts_with(x));
        let exclusive = start_after.is_some_and(|s| s >= prefix);
        let from: &[u8] = match start_after {
            Some(s) if s >= prefix => s,
            _ => prefix,
        };
        // Per shard, the first `limit + 1` matching keys; merged and cut.
        let mut all: Vec<RecordRef> = Vec::new();
        for lock in self.inner.shards.iter() {
            let shard = lock.read().unwrap_or_else(|e| e.into_inner());
            let mut found: Vec<(&[u8], RecordRef)> = shard
                .table
                .iter()
                .filter_map(|s| {
                    let (h, segment, off) = shard.segs.header(s);
                    let (ka, kb) = h.key(off);
                    let key = segment.slice(ka, kb);
                    let after = if exclusive { key > from } else { key >= from };
                    (after && key.starts_with(prefix) && !excluded(key) && !h.expired(now)).then(
                        || {
                            (
                                key,
                                RecordRef {
                                    segment: segment.clone(),
                                    off: off as u32,
                                    len: h.total() as u32,
                                },
                            )
                        },
                    )
                })
                .collect();
            if found.len() > limit + 1 {
                found.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
                found.truncate(limit + 1);
            }
            all.extend(found.into_iter().map(|(_, r)| r));
        }
        all.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        let more = all.len() > limit;
        all.truncate(limit);
        let listed = all
            .iter()
            .map(|r| {
                let (key, object) = materialize(r);
                Listed { key, object }
            })
            .collect();
        (listed, more)
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
        let mut next = cursor % n;
        for _ in 0..max_shards.min(n) {
            let lock = &self.inner.shards[next];
            next = (next + 1) % n;
            if lock.read().unwrap_or_else(|e| e.into_inner()).with_ttl == 0 {
                continue;
            }
            let mut guard = lock.write().unwrap_or_else(|e| e.into_inner());
            let shard = &mut *guard;
            // Keys copied first: removing one may compact a segment and move the others.
            let expired: Vec<(Bytes, u64)> = shard
                .table
                .iter()
                .filter(|&s| shard.segs.header(s).0.expired(now))
                .map(|s| (Bytes::copy_from_slice(shard.segs.key(s)), s))
                .collect();
            for (key, s) in expired {
                let Some((p, _)) =
                    shard.find_record(&key, store::slot_segment(s), store::slot_offset(s))
                else {
                    continue; // Moved by a compaction: the next sweep gets it.
                };
                let h = shard.segs.header(s).0;
                shard.table.remove(p);
                self.dead(shard, s, &h);
                self.inner.expirations.fetch_add(1, Ordering::Relaxed);
                self.inner
                    .feed
                    .append(EventKind::Expire, |_| (Body::Key(key), ()));
                removed += 1;
            }
        }
        (next, removed)
    }

    /// Records the process's resident memory: the part the charge does not explain lowers the
    /// data budget, so the cap holds for resident memory. Evicts if now over budget.
    pub fn observe_resident(&self, mut resident: usize) {
        let cap = self.inner.config.max_memory as usize;
        if cap > 0 && resident > cap / 20 * 19 {
            // Freed segments may sit in the allocator's free lists, resident but reusable:
            // give them back first, or they would count as overhead and evict live data for
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
            while self.used() > budget && guard < 100_000 && self.evict_one(&[]) {
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

/// Snapshots: records go out as they are stored and come back as segments.
impl Engine {
    /// Shards, for walking the data one shard at a time.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The live records of shard `i`, in segment order: `Arc`s taken under its read lock (no
    /// record is copied), so a snapshot walks the data without stopping writers for long.
    pub(crate) fn shard_records(&self, i: usize) -> Vec<RecordRef> {
        let now = now_ms();
        let shard = self.inner.shards[i]
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<RecordRef> = shard
            .table
            .iter()
            .filter_map(|s| {
                let (h, segment, off) = shard.segs.header(s);
                (!h.expired(now)).then(|| RecordRef {
                    segment: segment.clone(),
                    off: off as u32,
                    len: h.total() as u32,
                })
            })
            .collect();
        drop(shard);
        out.sort_unstable_by_key(|r| (Arc::as_ptr(&r.segment) as usize, r.off));
        out
    }

    /// Loads a block of records written by a snapshot. When every record of it belongs to
    /// shard `hint` (the same shard count as the writer's), the block becomes a segment of
    /// that shard as it is, without a copy; otherwise each record is copied to its shard.
    /// Expired records are skipped. Returns how many records were loaded.
    ///
    /// # Errors
    ///
    /// A malformed record: what and where in the block.
    pub(crate) fn load_block(&self, hint: usize, block: Bytes) -> Result<u64, String> {
        let now = now_ms();
        let tick = self.tick();
        let mut records = Vec::new();
        let mut at = 0;
        let mut in_place = hint < self.inner.shards.len();
        while at < block.len() {
            let h = Header::decode(&block[at..])
                .ok_or_else(|| format!("malformed record at byte {at} of the block"))?;
            let (ea, eb) = h.extra(at);
            if store::decode_extra(&block[ea..eb]).is_none() {
                return Err(format!("malformed metadata at byte {at} of the block"));
            }
            if h.key_len == 0 {
                return Err(format!("empty key at byte {at} of the block"));
            }
            let (ka, kb) = h.key(at);
            let hash = hash(&block[ka..kb]);
            in_place &= hash as usize & self.inner.mask == hint && at < 1 << 16;
            records.push((at, h, hash));
            at += h.total();
        }
        if in_place {
            let mut guard = self.inner.shards[hint]
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let shard = &mut *guard;
            let used = block.len();
            // Unsealed while loading: a key found twice in the block must not get the
            // segment freed or compacted under the loop.
            let id = shard
                .segs
                .add(SegMeta {
                    segment: Arc::new(Segment::mapped(block, tick)),
                    start: 0,
                    used,
                    live: 0,
                    sealed: false,
                })
                .ok_or("the shard has no segment ids left")?;
            let mut loaded = 0;
            for (off, h, hash) in records {
                if h.expired(now) {
                    continue;
                }
                shard.segs.meta_mut(id).live += h.total();
                self.index_loaded(shard, store::slot(store::tag(hash), id, off), &h, hash);
                loaded += 1;
            }
            let meta = shard.segs.meta_mut(id);
            meta.sealed = true;
            if meta.live == 0 {
                shard.segs.remove(id);
            }
            return Ok(loaded);
        }
        let mut loaded = 0;
        for (off, h, hash) in records {
            if h.expired(now) {
                continue;
            }
            let mut guard = self.shard(hash).write().unwrap_or_else(|e| e.into_inner());
            let shard = &mut *guard;
            let (id, noff) = shard
                .segs
                .append(&[&block[off..off + h.total()]], tick)
                .ok_or("the shard has no segment ids left")?;
            self.index_loaded(shard, store::slot(store::tag(hash), id, noff), &h, hash);
            loaded += 1;
        }
        Ok(loaded)
    }

    /// Indexes a loaded record (its bytes already placed and counted live in its segment).
    fn index_loaded(&self, shard: &mut Shard, s: u64, h: &Header, hash: u64) {
        let found = shard.find(shard.segs.key(s), hash);
        match found {
            // A key twice: the later record wins.
            Some((i, old)) => {
                let old_header = shard.segs.header(old).0;
                shard.table.set(i, s);
                self.dead(shard, old, &old_header);
            }
            None => shard.table.insert(s),
        }
        if h.expires_at_ms.is_some() {
            shard.with_ttl += 1;
        }
        self.inner.objects.fetch_add(1, Ordering::Relaxed);
        self.inner
            .charged
            .fetch_add(charge(h.total()), Ordering::Relaxed);
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
