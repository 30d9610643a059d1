//! The engine's memory layout: records packed into segments, found through a compact hash
//! index.
//!
//! # Records
//!
//! An object is one record, byte-packed, with no per-object allocation:
//!
//! ```text
//! flags (u8)              bit 0: an expiry follows; bit 1: extra (content type, metadata)
//! key length              varint
//! value length            varint
//! mod revision            varint
//! mod - create revision   varint
//! version                 varint
//! expires at (ms)         u64 LE, if flagged
//! extra length, extra     varint + bytes, if flagged: varint content-type length, content
//!                         type, varint pair count, then per pair varint length + bytes twice
//! key, value
//! ```
//!
//! A 16-byte key with a 100-byte value takes 125 bytes. The same encoding is the snapshot's
//! (see `snapshot.rs`), so a loaded snapshot's segments are the mapped file itself.
//!
//! # Segments
//!
//! Records are appended to a shard's active segment (64 KiB); a record larger than 16 KiB
//! gets a segment of its own. A record is written once and never changed; replacing or
//! deleting an object only marks its bytes dead. A sealed segment that is more than half
//! dead is compacted at once: its live records are copied to the active segment and it is
//! freed. The work is bounded (one segment) and happens inside the write that triggered it,
//! so there is no background collector and no pause. Readers hold an `Arc` of the segment
//! their value lives in, so a segment freed by the shard lives on until its last reader is
//! done.
//!
//! # Index
//!
//! Per shard, an open-addressing table with linear probing of 8-byte slots: 24 bits of the
//! key's hash (the tag, which is also where the slot's home is computed from, so growing
//! never reads a key), 24 bits of segment id, 16 bits of offset. A lookup compares tags and
//! reads a record's key only on a tag match. Deletion shifts the following slots back, so
//! there are no tombstones. The table grows by half when 80% full, incrementally: each later
//! write moves a few clusters of the old table to the new one (reading slots only, never a
//! key), and lookups check both meanwhile, so no write pays for a whole rehash.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use bytes::Bytes;

/// Bytes of a shared segment.
pub(super) const SEGMENT: usize = 64 * 1024;
/// Records larger than this get a segment of their own.
pub(super) const INLINE_MAX: usize = 16 * 1024;
/// The longest record header (flags, six varints, the expiry).
pub(super) const MAX_HEADER: usize = 1 + 6 * 10 + 8;
/// Segment ids fit in 24 bits; 0 means none.
const MAX_SEGMENTS: usize = 1 << 24;

const HAS_EXPIRY: u8 = 1;
const HAS_EXTRA: u8 = 2;

enum Buf {
    /// Written in place: bytes below the shard's `used` mark are immutable.
    Heap { ptr: NonNull<u8>, cap: usize },
    /// Part of a loaded snapshot.
    Mapped(Bytes),
}

/// A block of records.
pub(crate) struct Segment {
    buf: Buf,
    /// Engine tick (seconds) of the last read of any of its records, for eviction.
    pub(super) last_read: AtomicU32,
}

// SAFETY: the heap buffer is owned by the segment; bytes are written once, under the owning
// shard's write lock, before any reader can learn their offset (publication goes through the
// shard lock), and never written again.
unsafe impl Send for Segment {}
// SAFETY: as above: shared access only ever reads bytes that are no longer written.
unsafe impl Sync for Segment {}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Buf::Heap { ptr, cap } = self.buf {
            // SAFETY: allocated in `Segment::heap` with this layout.
            unsafe { std::alloc::dealloc(ptr.as_ptr(), Layout::array::<u8>(cap).expect("fits")) }
        }
    }
}

impl Segment {
    /// An empty heap segment of `cap` bytes (uninitialised; only written bytes are read).
    pub(super) fn heap(cap: usize, tick: u32) -> Segment {
        let layout = Layout::array::<u8>(cap.max(1)).expect("segment size fits");
        // SAFETY: the layout is non-zero.
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Segment {
            buf: Buf::Heap {
                ptr,
                cap: cap.max(1),
            },
            last_read: AtomicU32::new(tick),
        }
    }

    /// A segment over loaded bytes.
    pub(super) fn mapped(bytes: Bytes, tick: u32) -> Segment {
        Segment {
            buf: Buf::Mapped(bytes),
            last_read: AtomicU32::new(tick),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        match &self.buf {
            Buf::Heap { cap, .. } => *cap,
            Buf::Mapped(b) => b.len(),
        }
    }

    /// Bytes `[start, end)`.
    ///
    /// The range must have been written (it is, whenever it comes from the index or from a
    /// walk below the `used` mark).
    pub(super) fn slice(&self, start: usize, end: usize) -> &[u8] {
        match &self.buf {
            Buf::Heap { ptr, cap } => {
                assert!(start <= end && end <= *cap, "segment range out of bounds");
                // SAFETY: in bounds (checked); written before it was published, never again.
                unsafe { std::slice::from_raw_parts(ptr.as_ptr().add(start), end - start) }
            }
            Buf::Mapped(b) => &b[start..end],
        }
    }

    /// Bytes `[start, end)` as `Bytes` that keep the segment alive (no copy).
    pub(super) fn bytes(self: &Arc<Segment>, start: usize, end: usize) -> Bytes {
        match &self.buf {
            Buf::Mapped(b) => b.slice(start..end),
            Buf::Heap { .. } => {
                if start == end {
                    return Bytes::new();
                }
                Bytes::from_owner(View {
                    segment: self.clone(),
                    start,
                    end,
                })
            }
        }
    }

    /// Writes `parts` one after another at `at`.
    ///
    /// # Safety
    ///
    /// Heap segment only; `[at, at + total)` must be in bounds and never written before, and
    /// no reader may know of it yet (the caller holds the shard's write lock and has not
    /// published the offset).
    pub(super) unsafe fn write(&self, mut at: usize, parts: &[&[u8]]) {
        let Buf::Heap { ptr, cap } = self.buf else {
            unreachable!("only heap segments are written");
        };
        for p in parts {
            assert!(at + p.len() <= cap, "segment write out of bounds");
            // SAFETY: in bounds (checked), unaliased (the caller's contract).
            unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), ptr.as_ptr().add(at), p.len()) };
            at += p.len();
        }
    }
}

struct View {
    segment: Arc<Segment>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        self.segment.slice(self.start, self.end)
    }
}

fn put_varint(out: &mut [u8], at: &mut usize, mut v: u64) {
    while v >= 0x80 {
        out[*at] = (v as u8) | 0x80;
        *at += 1;
        v >>= 7;
    }
    out[*at] = v as u8;
    *at += 1;
}

#[inline]
fn get_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    // Lengths and versions are mostly below 128: one byte, no loop.
    let b = *buf.get(*at)?;
    if b < 0x80 {
        *at += 1;
        return Some(u64::from(b));
    }
    get_varint_long(buf, at)
}

/// Moves past a varint without computing it.
#[inline]
fn skip_varint(buf: &[u8], at: &mut usize) -> Option<()> {
    let n = buf.get(*at..)?.iter().take(10).position(|&b| b < 0x80)?;
    *at += n + 1;
    Some(())
}

fn get_varint_long(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn push_varint(out: &mut Vec<u8>, v: u64) {
    let mut tmp = [0u8; 10];
    let mut n = 0;
    put_varint(&mut tmp, &mut n, v);
    out.extend_from_slice(&tmp[..n]);
}

/// Encodes content type and metadata; empty when there are neither.
pub(super) fn encode_extra(content_type: Option<&str>, metadata: &[(String, String)]) -> Vec<u8> {
    if content_type.is_none() && metadata.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let ct = content_type.unwrap_or("");
    push_varint(&mut out, ct.len() as u64);
    out.extend_from_slice(ct.as_bytes());
    push_varint(&mut out, metadata.len() as u64);
    for (k, v) in metadata {
        push_varint(&mut out, k.len() as u64);
        out.extend_from_slice(k.as_bytes());
        push_varint(&mut out, v.len() as u64);
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Content type and metadata decoded from `extra`; `None` if malformed.
pub(super) type Extra = (Option<String>, Vec<(String, String)>);

pub(super) fn decode_extra(extra: &[u8]) -> Option<Extra> {
    if extra.is_empty() {
        return Some((None, Vec::new()));
    }
    let mut at = 0;
    let string = |at: &mut usize| -> Option<String> {
        let n = usize::try_from(get_varint(extra, at)?).ok()?;
        let end = at.checked_add(n).filter(|&e| e <= extra.len())?;
        let s = std::str::from_utf8(&extra[*at..end]).ok()?.to_owned();
        *at = end;
        Some(s)
    };
    let ct = string(&mut at)?;
    let pairs = get_varint(extra, &mut at)?;
    // Each pair takes at least two bytes: a corrupt count cannot make us allocate much.
    if pairs > (extra.len() / 2) as u64 {
        return None;
    }
    let mut metadata = Vec::with_capacity(pairs as usize);
    for _ in 0..pairs {
        let k = string(&mut at)?;
        let v = string(&mut at)?;
        metadata.push((k, v));
    }
    (at == extra.len()).then_some(((!ct.is_empty()).then_some(ct), metadata))
}

/// A record's header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) key_len: usize,
    pub(super) value_len: usize,
    pub(super) mod_revision: u64,
    pub(super) create_revision: u64,
    pub(super) version: u64,
    pub(super) expires_at_ms: Option<u64>,
    pub(super) extra_len: usize,
    /// Bytes of the header itself (filled by `decode`; ignored by `encode`).
    pub(super) len: usize,
}

impl Header {
    /// Encodes into `out`; returns the length.
    pub(super) fn encode(&self, out: &mut [u8; MAX_HEADER]) -> usize {
        let mut at = 1;
        let mut flags = 0;
        put_varint(out, &mut at, self.key_len as u64);
        put_varint(out, &mut at, self.value_len as u64);
        put_varint(out, &mut at, self.mod_revision);
        put_varint(
            out,
            &mut at,
            self.mod_revision.saturating_sub(self.create_revision),
        );
        put_varint(out, &mut at, self.version);
        if let Some(t) = self.expires_at_ms {
            flags |= HAS_EXPIRY;
            out[at..at + 8].copy_from_slice(&t.to_le_bytes());
            at += 8;
        }
        if self.extra_len > 0 {
            flags |= HAS_EXTRA;
            put_varint(out, &mut at, self.extra_len as u64);
        }
        out[0] = flags;
        at
    }

    /// Decodes the record at the start of `buf`, checking that all of it lies within `buf`.
    #[inline]
    pub(super) fn decode(buf: &[u8]) -> Option<Header> {
        let flags = *buf.first()?;
        if flags & !(HAS_EXPIRY | HAS_EXTRA) != 0 {
            return None;
        }
        let mut at = 1;
        let key_len = usize::try_from(get_varint(buf, &mut at)?).ok()?;
        let value_len = usize::try_from(get_varint(buf, &mut at)?).ok()?;
        let mod_revision = get_varint(buf, &mut at)?;
        let create_revision = mod_revision.checked_sub(get_varint(buf, &mut at)?)?;
        let version = get_varint(buf, &mut at)?;
        let expires_at_ms = if flags & HAS_EXPIRY != 0 {
            let t = u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?);
            at += 8;
            Some(t)
        } else {
            None
        };
        let extra_len = if flags & HAS_EXTRA != 0 {
            usize::try_from(get_varint(buf, &mut at)?).ok()?
        } else {
            0
        };
        let h = Header {
            key_len,
            value_len,
            mod_revision,
            create_revision,
            version,
            expires_at_ms,
            extra_len,
            len: at,
        };
        let total = at
            .checked_add(extra_len)?
            .checked_add(key_len)?
            .checked_add(value_len)?;
        (total <= buf.len()).then_some(h)
    }

    /// Where the key of the record at the start of `buf` lies, decoding only what leads to it
    /// (index probes compare keys; most of them need nothing else). Checked as `decode` is.
    #[inline]
    pub(super) fn key_range(buf: &[u8]) -> Option<(usize, usize)> {
        let flags = *buf.first()?;
        if flags & !(HAS_EXPIRY | HAS_EXTRA) != 0 {
            return None;
        }
        let mut at = 1;
        let key_len = usize::try_from(get_varint(buf, &mut at)?).ok()?;
        for _ in 0..4 {
            skip_varint(buf, &mut at)?;
        }
        if flags & HAS_EXPIRY != 0 {
            at += 8;
        }
        let extra_len = if flags & HAS_EXTRA != 0 {
            usize::try_from(get_varint(buf, &mut at)?).ok()?
        } else {
            0
        };
        let start = at.checked_add(extra_len)?;
        let end = start.checked_add(key_len)?;
        (end <= buf.len()).then_some((start, end))
    }

    /// Header, extra, key and value.
    pub(super) fn total(&self) -> usize {
        self.len + self.extra_len + self.key_len + self.value_len
    }

    pub(super) fn extra(&self, off: usize) -> (usize, usize) {
        let s = off + self.len;
        (s, s + self.extra_len)
    }

    pub(super) fn key(&self, off: usize) -> (usize, usize) {
        let s = off + self.len + self.extra_len;
        (s, s + self.key_len)
    }

    pub(super) fn value(&self, off: usize) -> (usize, usize) {
        let s = off + self.len + self.extra_len + self.key_len;
        (s, s + self.value_len)
    }

    pub(super) fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }
}

/// A slot: tag, segment id, offset. Never 0 (segment ids start at 1).
pub(super) fn slot(tag: u64, segment: u32, off: usize) -> u64 {
    debug_assert!(tag < 1 << 24 && (segment as usize) < MAX_SEGMENTS && off < 1 << 16);
    tag << 40 | u64::from(segment) << 16 | off as u64
}

pub(super) fn slot_segment(s: u64) -> u32 {
    ((s >> 16) & 0xff_ffff) as u32
}

pub(super) fn slot_offset(s: u64) -> usize {
    (s & 0xffff) as usize
}

/// Tags are 24 bits: every tag is below this.
const TAGS: u64 = 1 << 24;

fn slot_tag(s: u64) -> u64 {
    s >> 40
}

/// The tag of a key's hash.
pub(super) fn tag(hash: u64) -> u64 {
    hash >> 40
}

/// A position in a shard's index: in the table, or in the one it is growing out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pos {
    old: bool,
    i: usize,
}

/// Old slots moved to the new table per write while a table grows.
const MIGRATE: usize = 64;

/// One array of slots.
#[derive(Default)]
struct Slots {
    slots: Box<[u64]>,
}

impl Slots {
    fn home(tag: u64, cap: usize) -> usize {
        ((tag * cap as u64) >> 24) as usize
    }

    /// The smallest tag whose home lies after position `p`.
    fn first_tag_after(p: usize, cap: usize) -> u64 {
        (((p as u64 + 1) << 24).div_ceil(cap as u64)).min(TAGS)
    }

    /// See [`Table::scan`]; `to` (a bound on tags) instead of `count` decides where to stop
    /// when it is given. Returns the bound reached, `None` at the end of the tags.
    fn scan(&self, from: u64, to: Option<u64>, count: usize, out: &mut Vec<u64>) -> Option<u64> {
        let cap = self.slots.len();
        if cap == 0 || from >= TAGS {
            return None;
        }
        let first = out.len();
        // Back to the start of the cluster holding `from`'s home (not across position 0:
        // what sits before it wrapped there from the end of the table and has higher tags).
        let mut start = Slots::home(from, cap);
        while start > 0 && self.slots[start - 1] != 0 {
            start -= 1;
        }
        for p in start..cap {
            let s = self.slots[p];
            if s != 0 {
                if slot_tag(s) >= from {
                    out.push(s);
                }
                continue;
            }
            // Every slot whose home is at or before `p` was seen.
            let bound = Slots::first_tag_after(p, cap);
            let done = match to {
                Some(to) => bound >= to,
                None => {
                    out.len() - first >= count
                        && out[first..]
                            .iter()
                            .filter(|&&s| slot_tag(s) < bound)
                            .count()
                            >= count
                }
            };
            if done && bound < TAGS {
                keep_below(out, first, to.map_or(bound, |to| to.min(bound)));
                return Some(bound);
            }
        }
        // The end of the table: the cluster there may go on at position 0.
        if start > 0 {
            for p in 0..start {
                let s = self.slots[p];
                if s == 0 {
                    break;
                }
                if slot_tag(s) >= from {
                    out.push(s);
                }
            }
        }
        if let Some(to) = to {
            keep_below(out, first, to);
        }
        None
    }

    fn find(&self, tag: u64, mut is: impl FnMut(u64) -> bool) -> Option<usize> {
        let cap = self.slots.len();
        if cap == 0 {
            return None;
        }
        let mut i = Slots::home(tag, cap);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if slot_tag(s) == tag && is(s) {
                return Some(i);
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    fn place(&mut self, s: u64) {
        let cap = self.slots.len();
        let mut i = Slots::home(slot_tag(s), cap);
        while self.slots[i] != 0 {
            i += 1;
            if i == cap {
                i = 0;
            }
        }
        self.slots[i] = s;
    }

    /// Empties position `i`, shifting back the slots after it that may move.
    fn remove(&mut self, mut i: usize) {
        let cap = self.slots.len();
        let mut j = i;
        loop {
            j += 1;
            if j == cap {
                j = 0;
            }
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let h = Slots::home(slot_tag(s), cap);
            // `s` stays if its home lies cyclically in (i, j]; otherwise it moves back to `i`.
            let stays = if i <= j {
                i < h && h <= j
            } else {
                i < h || h <= j
            };
            if !stays {
                self.slots[i] = s;
                i = j;
            }
        }
        self.slots[i] = 0;
    }
}

/// Drops the slots from `first` on whose tag is not below `limit`.
fn keep_below(out: &mut Vec<u64>, first: usize, limit: u64) {
    let tail = out.split_off(first);
    out.extend(tail.into_iter().filter(|&s| slot_tag(s) < limit));
}

/// A table being grown out of: slots not yet moved, and where moving goes on.
struct Old {
    slots: Slots,
    /// The next position to move; moving started just after an empty slot and always stops
    /// at one, so whole clusters move together and no probe chain left behind is cut.
    next: usize,
    /// Positions left to visit.
    left: usize,
}

/// A shard's index: open addressing, linear probing, backward-shift deletion (no
/// tombstones).
///
/// Growing is incremental: a new table half as large again is allocated and every later
/// write moves the next few clusters of the old one over, so no write pays for a whole
/// rehash. Lookups look in both tables meanwhile.
#[derive(Default)]
pub(super) struct Table {
    new: Slots,
    old: Option<Old>,
    len: usize,
}

impl Table {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The position of the slot with `tag` for which `is` says yes.
    pub(super) fn find(&self, tag: u64, mut is: impl FnMut(u64) -> bool) -> Option<Pos> {
        if let Some(i) = self.new.find(tag, &mut is) {
            return Some(Pos { old: false, i });
        }
        let old = self.old.as_ref()?;
        old.slots.find(tag, is).map(|i| Pos { old: true, i })
    }

    pub(super) fn get(&self, p: Pos) -> u64 {
        if p.old {
            self.old.as_ref().expect("old table").slots.slots[p.i]
        } else {
            self.new.slots[p.i]
        }
    }

    /// Points an occupied position at a record of the same key.
    pub(super) fn set(&mut self, p: Pos, s: u64) {
        debug_assert_eq!(slot_tag(self.get(p)), slot_tag(s));
        if p.old {
            self.old.as_mut().expect("old table").slots.slots[p.i] = s;
        } else {
            self.new.slots[p.i] = s;
        }
    }

    /// Inserts a slot whose key is in neither table.
    pub(super) fn insert(&mut self, s: u64) {
        self.migrate(MIGRATE);
        if (self.len + 1) * 5 > self.new.slots.len() * 4 {
            self.grow();
        }
        self.new.place(s);
        self.len += 1;
    }

    /// Removes the slot at `p`.
    pub(super) fn remove(&mut self, p: Pos) {
        if p.old {
            self.old.as_mut().expect("old table").slots.remove(p.i);
        } else {
            self.new.remove(p.i);
        }
        self.len -= 1;
        self.migrate(MIGRATE);
    }

    fn grow(&mut self) {
        // Finish a growth still under way first (rare: the new table had room for half
        // again as much as the old held).
        self.migrate(usize::MAX);
        let cap = (self.new.slots.len() + self.new.slots.len() / 2).max(16);
        let old = std::mem::replace(
            &mut self.new,
            Slots {
                slots: vec![0u64; cap].into_boxed_slice(),
            },
        );
        let n = old.slots.len();
        if n == 0 {
            return;
        }
        // Start after an empty slot (there is one: the table is at most 80% full).
        let empty = old
            .slots
            .iter()
            .position(|&s| s == 0)
            .expect("an empty slot");
        self.old = Some(Old {
            slots: old,
            next: (empty + 1) % n,
            left: n,
        });
    }

    /// Moves at least `budget` positions of the old table (finishing the cluster it is in).
    fn migrate(&mut self, budget: usize) {
        let Some(old) = &mut self.old else {
            return;
        };
        let n = old.slots.slots.len();
        let mut visited = 0;
        while old.left > 0 {
            let s = old.slots.slots[old.next];
            if s == 0 && visited >= budget {
                break;
            }
            if s != 0 {
                old.slots.slots[old.next] = 0;
                self.new.place(s);
            }
            old.next = (old.next + 1) % n;
            old.left -= 1;
            visited += 1;
        }
        if old.left == 0 {
            self.old = None;
        }
    }

    /// Slots whose tag lies in `[from, next)`, appended to `out`, for the smallest `next` that
    /// gives at least `count` of them; `None` for `next` when every tag from `from` on is in.
    /// Costs about `count` probes plus a cluster, not a pass over the table: a slot sits at or
    /// after its tag's home, and homes grow with tags (see [`Slots::home`]).
    pub(super) fn scan(&self, from: u64, count: usize, out: &mut Vec<u64>) -> Option<u64> {
        let next = self.new.scan(from, None, count.max(1), out);
        if let Some(old) = &self.old {
            // What the old table still holds of the same tag range, however many.
            old.slots
                .scan(from, Some(next.unwrap_or(TAGS)), usize::MAX, out);
        }
        next
    }

    /// Occupied slots.
    pub(super) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let old = self.old.iter().flat_map(|o| o.slots.slots.iter());
        self.new
            .slots
            .iter()
            .chain(old)
            .copied()
            .filter(|&s| s != 0)
    }
}

/// Per-shard bookkeeping of one segment.
pub(super) struct SegMeta {
    pub(super) segment: Arc<Segment>,
    /// Where the first record starts.
    pub(super) start: usize,
    /// Bytes written (the end of the last record).
    pub(super) used: usize,
    /// Bytes of live records.
    pub(super) live: usize,
    /// No more records will be appended.
    pub(super) sealed: bool,
}

/// A shard's segments, by id (0 unused).
#[derive(Default)]
pub(super) struct Segments {
    pub(super) metas: Vec<Option<SegMeta>>,
    free: Vec<u32>,
    /// The segment appended to; 0: none yet.
    pub(super) active: u32,
    pub(super) count: usize,
}

impl Segments {
    pub(super) fn meta(&self, id: u32) -> &SegMeta {
        self.metas[id as usize].as_ref().expect("live segment")
    }

    pub(super) fn meta_mut(&mut self, id: u32) -> &mut SegMeta {
        self.metas[id as usize].as_mut().expect("live segment")
    }

    pub(super) fn add(&mut self, meta: SegMeta) -> Option<u32> {
        self.count += 1;
        if let Some(id) = self.free.pop() {
            self.metas[id as usize] = Some(meta);
            return Some(id);
        }
        if self.metas.is_empty() {
            self.metas.push(None);
        }
        if self.metas.len() >= MAX_SEGMENTS {
            self.count -= 1;
            return None;
        }
        self.metas.push(Some(meta));
        Some((self.metas.len() - 1) as u32)
    }

    pub(super) fn remove(&mut self, id: u32) -> Option<SegMeta> {
        let meta = self.metas.get_mut(id as usize)?.take()?;
        self.free.push(id);
        self.count -= 1;
        if self.active == id {
            self.active = 0;
        }
        Some(meta)
    }

    /// The header and offset of the record a slot points to.
    pub(super) fn header(&self, s: u64) -> (Header, &Arc<Segment>, usize) {
        let meta = self.meta(slot_segment(s));
        let off = slot_offset(s);
        let h = Header::decode(meta.segment.slice(off, meta.used)).expect("valid record");
        (h, &meta.segment, off)
    }

    #[inline]
    pub(super) fn key(&self, s: u64) -> &[u8] {
        let meta = self.meta(slot_segment(s));
        let off = slot_offset(s);
        let record = meta.segment.slice(off, meta.used);
        let (a, b) = Header::key_range(record).expect("valid record");
        &record[a..b]
    }

    /// Appends a record (its parts, one after another) and returns (segment id, offset), or
    /// `None` when the shard is out of segment ids.
    pub(super) fn append(&mut self, parts: &[&[u8]], tick: u32) -> Option<(u32, usize)> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > INLINE_MAX {
            let segment = Arc::new(Segment::heap(total, tick));
            // SAFETY: a new segment, not yet known to anyone.
            unsafe { segment.write(0, parts) };
            let id = self.add(SegMeta {
                segment,
                start: 0,
                used: total,
                live: total,
                sealed: true,
            })?;
            return Some((id, 0));
        }
        let fits = self.active != 0 && {
            let m = self.meta(self.active);
            m.used + total <= m.segment.capacity()
        };
        if !fits {
            if self.active != 0 {
                let old = self.active;
                self.meta_mut(old).sealed = true;
                self.active = 0;
            }
            let id = self.add(SegMeta {
                segment: Arc::new(Segment::heap(SEGMENT, tick)),
                start: 0,
                used: 0,
                live: 0,
                sealed: false,
            })?;
            self.active = id;
        }
        let id = self.active;
        let m = self.meta_mut(id);
        let at = m.used;
        // SAFETY: past `used`, which nobody has been told of; within capacity (checked).
        unsafe { m.segment.write(at, parts) };
        m.used += total;
        m.live += total;
        Some((id, at))
    }

    /// Appends a record prepared in its own segment (large values copied before the lock).
    pub(super) fn add_dedicated(&mut self, segment: Arc<Segment>, start: usize) -> Option<u32> {
        let used = segment.capacity();
        self.add(SegMeta {
            segment,
            start,
            used,
            live: used - start,
            sealed: true,
        })
    }

    /// Marks `len` bytes of segment `id` dead. Returns whether the segment is now worth
    /// compacting (sealed and more than half dead); frees it if nothing in it lives.
    pub(super) fn kill(&mut self, id: u32, len: usize) -> bool {
        let m = self.meta_mut(id);
        m.live -= len;
        if m.live == 0 && m.sealed {
            self.remove(id);
            return false;
        }
        m.sealed && m.live * 2 < m.used - m.start
    }

    /// Offsets of the records in segment `id`, in order.
    pub(super) fn walk(&self, id: u32) -> Vec<(usize, Header)> {
        let m = self.meta(id);
        let mut out = Vec::new();
        let mut at = m.start;
        while at < m.used {
            let h = Header::decode(m.segment.slice(at, m.used)).expect("valid record");
            out.push((at, h));
            at += h.total();
        }
        out
    }
}

/// A record in a segment, kept alive by the `Arc`.
#[derive(Clone)]
pub(crate) struct RecordRef {
    pub(crate) segment: Arc<Segment>,
    pub(crate) off: u32,
    pub(crate) len: u32,
}

impl RecordRef {
    /// The record's bytes, as written (the snapshot's encoding).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.segment
            .slice(self.off as usize, (self.off + self.len) as usize)
    }

    pub(super) fn header(&self) -> Header {
        Header::decode(self.bytes()).expect("valid record")
    }

    /// The revision of the write that made it.
    pub(crate) fn mod_revision(&self) -> u64 {
        self.header().mod_revision
    }

    pub(super) fn key(&self) -> &[u8] {
        let h = self.header();
        let (a, b) = h.key(self.off as usize);
        self.segment.slice(a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_refused() {
        let h = Header {
            key_len: 16,
            value_len: 100,
            mod_revision: 1_000_000,
            create_revision: 999_000,
            version: 3,
            expires_at_ms: Some(1_700_000_000_000),
            extra_len: 7,
            len: 0,
        };
        let mut buf = [0u8; MAX_HEADER];
        let n = h.encode(&mut buf);
        let mut rec = buf[..n].to_vec();
        rec.resize(n + 7 + 16 + 100, 0);
        let d = Header::decode(&rec).unwrap();
        assert_eq!(d, Header { len: n, ..h });
        assert_eq!(d.total(), rec.len());
        // Truncated anywhere: refused.
        for cut in 0..rec.len() {
            assert!(Header::decode(&rec[..cut]).is_none(), "cut at {cut}");
        }
        // Unknown flags, create revision after mod revision: refused.
        assert!(Header::decode(&[0x80, 1, 1, 1, 0, 1, 0, 0]).is_none());
        assert!(Header::decode(&[0, 0, 0, 1, 2, 1]).is_none());
        // A small record: 9 bytes of header for a 16 B key and 100 B value at revision 1M.
        let small = Header {
            expires_at_ms: None,
            extra_len: 0,
            ..h
        };
        assert_eq!(small.encode(&mut buf), 1 + 1 + 1 + 3 + 2 + 1);
    }

    #[test]
    fn extra_round_trips() {
        let meta = vec![
            ("a".to_owned(), "1".to_owned()),
            ("bb".to_owned(), "".to_owned()),
        ];
        let e = encode_extra(Some("text/plain"), &meta);
        assert_eq!(
            decode_extra(&e).unwrap(),
            (Some("text/plain".to_owned()), meta)
        );
        assert!(encode_extra(None, &[]).is_empty());
        assert!(decode_extra(&e[..e.len() - 1]).is_none());
        assert!(decode_extra(&[0, 200, 200, 200, 1]).is_none());
    }

    /// Against a model, with tags that collide a lot and with spread ones, checking every key
    /// often (growth is incremental: lookups must work mid-way through moving).
    #[test]
    fn table_insert_find_remove() {
        let spread = |key: u32| (u64::from(key) * 2_654_435_761) % (1 << 24);
        let colliding = |key: u32| u64::from(key % 97);
        for tag_of in [&spread as &dyn Fn(u32) -> u64, &colliding] {
            let mut t = Table::default();
            let mut model = std::collections::HashSet::new();
            let mut rng = fastrand::Rng::with_seed(7);
            for round in 0..40_000u32 {
                // Grow to ~6000 keys, then churn with more removals than inserts.
                let key = rng.u32(..8000);
                let tag = tag_of(key);
                let target = slot(tag, 1 + key, 0);
                let pos = t.find(tag, |s| s == target);
                if let Some(p) = pos {
                    assert_eq!(t.get(p), target);
                }
                let remove = if round < 20_000 {
                    round % 5 == 0
                } else {
                    round % 3 != 0
                };
                match pos {
                    Some(p) if remove => {
                        t.remove(p);
                        model.remove(&key);
                    }
                    None if !remove => {
                        t.insert(target);
                        model.insert(key);
                    }
                    _ => {}
                }
                assert_eq!(t.len(), model.len());
                if round % 1000 == 0 {
                    for &k in &model {
                        let tag = tag_of(k);
                        assert!(t.find(tag, |s| s == slot(tag, 1 + k, 0)).is_some(), "{k}");
                    }
                }
            }
            for key in 0..8000u32 {
                let tag = tag_of(key);
                let found = t.find(tag, |s| s == slot(tag, 1 + key, 0)).is_some();
                assert_eq!(found, model.contains(&key), "key {key}");
            }
            assert_eq!(t.iter().count(), model.len());
        }
    }
}
