//! The change feed: every write gets the next revision and becomes an event, kept in a
//! bounded history that watchers read (live, or resuming from an older revision).
//!
//! # No global lock on the write path
//!
//! A write takes its revision from one atomic counter while it holds its shard's lock, builds
//! its record, and stores its event in the history slot its revision names (`revision %
//! capacity`: a ring indexed by revision, one small lock per slot, so writers of different
//! revisions never meet). Revisions are therefore a total order, but shards publish them out
//! of order: revision 8 (shard A) may be stored before revision 7 (shard B). Watchers only
//! read up to the *watermark*, the newest revision below which every revision is stored; each
//! shard announces the revision it is publishing (a lower bound of it, written before the
//! counter is bumped) and clears it when done, so the watermark is the counter or, if lower,
//! the oldest announcement minus one. A shard publishes one revision at a time (under its
//! lock), so an announcement is never overwritten before it is cleared.
//!
//! Watchers wait on a `Notify` that a writer touches only when somebody waits (a counter of
//! waiting watchers, checked after publishing), so a write without a parked watcher takes no
//! lock but its shard's and its slot's.
//!
//! Measured against the former design (one mutex around the counter, the history `VecDeque`
//! and a tokio broadcast send, held while the record was written) with the `objstore_engine`
//! bench: the table is in the engine's module docs.
//!
//! A slow watcher never blocks writers: it reads the shared history at its own pace, and one
//! that falls behind by more than the history holds is told the revision to resume from.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use super::store::RecordRef;
use super::{Error, Object};

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or replaced.
    Put,
    /// Deleted by a client.
    Delete,
    /// Its TTL ran out.
    Expire,
    /// Evicted at the memory cap.
    Evict,
}

/// One change, as delivered to a watcher.
#[derive(Clone, Debug)]
pub struct Event {
    /// Its revision.
    pub revision: u64,
    /// The key.
    pub key: Bytes,
    /// What happened.
    pub kind: EventKind,
    /// The new object, for puts.
    pub object: Option<Object>,
}

/// What a change carries, as kept: a put points at its record (no copy; the history pins
/// only recent segments), a removal carries a copy of the key (its record may sit in any old
/// segment, which it must not pin).
#[derive(Clone)]
pub(super) enum Body {
    Record(RecordRef),
    Key(Bytes),
}

/// One change, as kept in the history.
#[derive(Clone)]
pub(super) struct Stored {
    revision: u64,
    kind: EventKind,
    body: Body,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("revision", &self.revision)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Stored {
    fn key(&self) -> &[u8] {
        match &self.body {
            Body::Record(r) => r.key(),
            Body::Key(k) => k,
        }
    }

    fn event(&self) -> Event {
        match &self.body {
            Body::Record(r) => {
                let (key, object) = super::materialize(r);
                Event {
                    revision: self.revision,
                    key,
                    kind: self.kind,
                    object: Some(object),
                }
            }
            Body::Key(k) => Event {
                revision: self.revision,
                key: k.clone(),
                kind: self.kind,
                object: None,
            },
        }
    }
}

fn event_bytes(e: &Stored) -> usize {
    std::mem::size_of::<Stored>()
        + match &e.body {
            Body::Record(r) => r.len as usize,
            Body::Key(k) => k.len(),
        }
}

/// A value on a cache line of its own: the counter and the shards' announcements are written
/// by different cores.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// A history slot: the event of the newest revision that maps to it. Aligned so that the
/// slots of consecutive revisions (written by different cores) share no cache line.
#[repr(align(64))]
#[derive(Default)]
struct Slot(Mutex<Option<Stored>>);

struct Shared {
    /// The last revision handed out.
    last: Padded<AtomicU64>,
    /// Per shard: 0, or a lower bound of the revision it is publishing.
    publishing: Box<[Padded<AtomicU64>]>,
    ring: Box<[Slot]>,
    /// Revisions a new watcher may start back from.
    history: u64,
    /// The oldest revision kept (older ones were dropped for the byte budget).
    tail: Padded<AtomicU64>,
    bytes: AtomicUsize,
    max_bytes: usize,
    /// The newest events kept whatever their bytes while there are watchers (at least 1).
    live: u64,
    /// Watchers in existence.
    watchers: AtomicUsize,
    /// Watchers parked in `next`.
    waiting: AtomicUsize,
    notify: Notify,
    closed: AtomicBool,
}

impl Shared {
    /// The newest revision at and below which every revision is in the history.
    fn watermark(&self) -> u64 {
        let mut w = self.last.0.load(SeqCst);
        for p in self.publishing.iter() {
            let at = p.0.load(SeqCst);
            if at != 0 {
                w = w.min(at - 1);
            }
        }
        w
    }

    fn slot(&self, revision: u64) -> &Slot {
        &self.ring[(revision % self.ring.len() as u64) as usize]
    }

    /// The event of `revision` (at or below the watermark), unless the history dropped it.
    fn get(&self, revision: u64) -> Option<Stored> {
        let slot = self
            .slot(revision)
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        slot.as_ref().filter(|e| e.revision == revision).cloned()
    }

    fn store(&self, event: Stored) {
        let revision = event.revision;
        if revision < self.tail.0.load(SeqCst) {
            return; // Dropped for the byte budget before it was stored.
        }
        let bytes = event_bytes(&event);
        let old = self
            .slot(revision)
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(event);
        // One update for the event stored and the one it replaced.
        let gone = old.as_ref().map_or(0, event_bytes);
        let held = if bytes >= gone {
            self.bytes.fetch_add(bytes - gone, SeqCst) + (bytes - gone)
        } else {
            self.bytes.fetch_sub(gone - bytes, SeqCst) - (gone - bytes)
        };
        drop(old);
        if held <= self.max_bytes {
            return;
        }
        // Over the byte budget: drop the oldest events, never this one, nor, while anybody
        // watches, the newest `live` (what a live watcher may fall behind by, budget or not).
        let keep = if self.watchers.load(SeqCst) > 0 {
            self.live
        } else {
            1
        };
        while self.bytes.load(SeqCst) > self.max_bytes {
            let t = self.tail.0.load(SeqCst);
            if t.saturating_add(keep) > revision {
                break;
            }
            if self
                .tail
                .0
                .compare_exchange(t, t + 1, SeqCst, SeqCst)
                .is_err()
            {
                continue;
            }
            let taken = {
                let mut slot = self.slot(t).0.lock().unwrap_or_else(|e| e.into_inner());
                match &*slot {
                    Some(e) if e.revision == t => slot.take(),
                    _ => None,
                }
            };
            if let Some(e) = taken {
                self.bytes.fetch_sub(event_bytes(&e), SeqCst);
            }
        }
    }

    fn wake(&self) {
        if self.waiting.load(SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }
}

pub(super) struct Feed {
    shared: Arc<Shared>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.shared.closed.store(true, SeqCst);
        self.shared.notify.notify_waiters();
    }
}

impl Feed {
    /// A feed whose next revision is `revision + 1`, for `shards` shards, keeping the last
    /// `max_events` events (and at most `max_bytes` of them) for resuming watchers; a live
    /// watcher may fall behind by `max(max_events, watch_buffer)` events.
    pub(super) fn new(
        revision: u64,
        shards: usize,
        max_events: usize,
        max_bytes: usize,
        watch_buffer: usize,
    ) -> Feed {
        let capacity = max_events.max(watch_buffer).max(1);
        Feed {
            shared: Arc::new(Shared {
                last: Padded(AtomicU64::new(revision)),
                publishing: (0..shards).map(|_| Padded::default()).collect(),
                ring: (0..capacity).map(|_| Slot::default()).collect(),
                history: max_events as u64,
                tail: Padded(AtomicU64::new(revision + 1)),
                bytes: AtomicUsize::new(0),
                max_bytes,
                live: watch_buffer.max(1) as u64,
                watchers: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                notify: Notify::new(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Bytes the history holds (old values included), as charged against the memory cap: at
    /// most its budget. While somebody watches, the newest `watch_buffer` events may hold
    /// more (as a broadcast buffer of live events would); resident-memory sampling accounts
    /// for that part.
    pub(super) fn history_bytes(&self) -> usize {
        self.shared.bytes.load(SeqCst).min(self.shared.max_bytes)
    }

    /// The last revision handed out.
    pub(super) fn revision(&self) -> u64 {
        self.shared.last.0.load(SeqCst)
    }

    /// Appends a change from shard `shard`, whose write lock the caller holds; `make` builds
    /// what it carries from its revision and returns it with anything else the caller needs.
    pub(super) fn append<R>(
        &self,
        shard: usize,
        kind: EventKind,
        make: impl FnOnce(u64) -> (Body, R),
    ) -> R {
        let s = &*self.shared;
        let publishing = &s.publishing[shard].0;
        // Announced before the counter moves: a watcher that sees the new count sees this too.
        publishing.store(s.last.0.load(SeqCst) + 1, SeqCst);
        let revision = s.last.0.fetch_add(1, SeqCst) + 1;
        let (body, out) = make(revision);
        s.store(Stored {
            revision,
            kind,
            body,
        });
        publishing.store(0, SeqCst);
        s.wake();
        out
    }

    pub(super) fn watch(&self, prefix: Bytes, from: u64) -> Result<Watcher, Error> {
        let s = &*self.shared;
        let next = s.last.0.load(SeqCst) + 1;
        let from = if from == 0 { next } else { from };
        if from > next {
            return Err(Error::Future {
                requested: from,
                next,
            });
        }
        let oldest = s.tail.0.load(SeqCst).max(next.saturating_sub(s.history));
        if from < oldest {
            return Err(Error::Compacted {
                requested: from,
                oldest,
            });
        }
        s.watchers.fetch_add(1, SeqCst);
        Ok(Watcher {
            shared: self.shared.clone(),
            prefix,
            scanned: from,
            ready: VecDeque::new(),
            gap: None,
            lagged: false,
        })
    }
}

/// Revisions a watcher reads from the history at a time.
const BATCH: u64 = 256;

/// A stream of changes under a prefix, in revision order.
pub struct Watcher {
    shared: Arc<Shared>,
    prefix: Bytes,
    /// The first revision not yet read from the history.
    scanned: u64,
    /// Read, matching the prefix, not yet handed out.
    ready: VecDeque<Stored>,
    /// The first revision the history no longer held when it was read.
    gap: Option<u64>,
    /// Fell behind and said so: the events after the gap are never handed out (the caller
    /// resumes from `next_revision` with a new watcher).
    lagged: bool,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.watchers.fetch_sub(1, SeqCst);
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("prefix", &self.prefix)
            .field("next", &self.next_revision())
            .field("lagged", &self.lagged)
            .finish()
    }
}

/// Counts a watcher as parked while it lives (a cancelled `next` stops counting too).
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(waiting: &'a AtomicUsize) -> Parked<'a> {
        waiting.fetch_add(1, SeqCst);
        Parked(waiting)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl Watcher {
    /// The next change. `None` when the engine is gone; `Err(Lagged)` (then `None`) when this
    /// watcher fell behind by more than the history holds.
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            if self.lagged {
                return None;
            }
            if let Some(e) = self.ready.pop_front() {
                return Some(Ok(e.event()));
            }
            if let Some(resume_from) = self.gap {
                self.lagged = true;
                return Some(Err(Error::Lagged { resume_from }));
            }
            if self.read() {
                continue;
            }
            let shared = self.shared.clone();
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, and counted as parked before it too: a writer that
            // publishes after the check sees the count and wakes this.
            notified.as_mut().enable();
            let _parked = Parked::new(&shared.waiting);
            if shared.watermark() >= self.scanned {
                continue;
            }
            if shared.closed.load(SeqCst) {
                return None;
            }
            notified.await;
        }
    }

    /// Reads what the history has past `scanned`, up to the watermark (a batch at most).
    /// Returns whether it got anywhere.
    fn read(&mut self) -> bool {
        let w = self.shared.watermark();
        if w < self.scanned {
            return false;
        }
        let end = w.min(self.scanned + BATCH - 1);
        for r in self.scanned..=end {
            match self.shared.get(r) {
                Some(e) => {
                    if e.key().starts_with(&self.prefix) {
                        self.ready.push_back(e);
                    }
                }
                None => {
                    self.scanned = r;
                    self.gap = Some(r);
                    return true;
                }
            }
        }
        self.scanned = end + 1;
        true
    }

    /// The first revision not yet delivered (where to resume).
    pub fn next_revision(&self) -> u64 {
        match self.ready.front() {
            Some(e) => e.revision,
            None => self.gap.unwrap_or(self.scanned),
        }
    }
}
