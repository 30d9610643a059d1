//! Expiry: when an object's TTL ends, removing it on access (lazily) and by a sweeper over
//! the shards that hold objects with a TTL (actively), and the background tasks that sweep
//! and sample resident memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::feed::Body;
use super::memory::resident_bytes;
use super::store;
use super::{Engine, EventKind};

/// The latest expiry an object can have: milliseconds since the epoch as a signed 64-bit
/// number (what Redis accepts, and what a client reading it back as `i64` can hold).
pub const MAX_EXPIRY_MS: u64 = i64::MAX as u64;

/// The expiry `ttl` after `now_ms` (at least 1 ms later), if it is at most [`MAX_EXPIRY_MS`].
pub fn expiry_at(now_ms: u64, ttl: Duration) -> Option<u64> {
    let ms = u64::try_from(ttl.as_millis()).ok()?.max(1);
    now_ms.checked_add(ms).filter(|&at| at <= MAX_EXPIRY_MS)
}

impl Engine {
    pub(super) fn remove_expired(&self, key: &[u8], h: u64, now: u64) {
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
                    .append(shard.index, EventKind::Expire, |_| (Body::Key(key), ()));
            }
        }
    }

    /// Removes expired objects from up to `max_shards` shards that hold objects with a TTL,
    /// starting at `cursor`. Returns the next cursor and how many were removed.
    pub fn sweep_expired(&self, cursor: usize, max_shards: usize) -> (usize, usize) {
        let n = self.inner.shards.len();
        let now = self.now_ms();
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
                    .append(shard.index, EventKind::Expire, |_| (Body::Key(key), ()));
                removed += 1;
            }
        }
        (next, removed)
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
