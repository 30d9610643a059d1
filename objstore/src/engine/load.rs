//! Snapshots: the live records go out as they are stored, and come back as segments.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::memory::charge;
use super::store::{self, Header, RecordRef, SegMeta, Segment};
use super::{Engine, Shard, hash};

impl Engine {
    /// Shards, for walking the data one shard at a time.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The live records of shard `i`, in segment order: `Arc`s taken under its read lock (no
    /// record is copied), so a snapshot walks the data without stopping writers for long.
    pub(crate) fn shard_records(&self, i: usize) -> Vec<RecordRef> {
        let now = self.now_ms();
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
        let now = self.now_ms();
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
