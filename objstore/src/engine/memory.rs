//! Memory accounting and eviction: what each record is charged, the budget under the cap
//! (corrected by sampling the process's resident memory), and evicting whole segments of the
//! least recently read objects to stay inside it.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::feed::Body;
use super::store::{self, INLINE_MAX, MAX_HEADER};
use super::{Engine, Error, EventKind, Eviction, RECORD_OVERHEAD, Shard};

/// Bytes charged for a record of `len` bytes: itself plus its share of the index, plus, for
/// a record with a segment of its own, that segment's bookkeeping (its allocation's header,
/// the unused part of the header area, the `Arc`, its entry in the shard's segment table).
pub(super) fn charge(len: usize) -> usize {
    if len + MAX_HEADER > INLINE_MAX {
        len + RECORD_OVERHEAD + DEDICATED_OVERHEAD
    } else {
        len + RECORD_OVERHEAD
    }
}

const DEDICATED_OVERHEAD: usize = 192;

impl Engine {
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
    pub(super) fn reserve(&self, need: usize, protect: &[u8]) -> Result<(), Error> {
        let Some(budget) = self.budget() else {
            return Ok(());
        };
        let mut attempts = 0;
        while self.used() + need > budget {
            if self.inner.config.eviction == Eviction::Noeviction
                || attempts > 10_000
                || !self.evict_one(protect)
            {
                return Err(Error::Exhausted(format!(
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
            self.uncount(shard, &h);
            self.inner.evictions.fetch_add(1, Ordering::Relaxed);
            let key = Bytes::copy_from_slice(key);
            self.inner
                .feed
                .append(shard.index, EventKind::Evict, |_| (Body::Key(key), ()));
            evicted = true;
        }
        shard.segs.remove(id);
        true
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
