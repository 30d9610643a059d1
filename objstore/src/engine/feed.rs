//! The change feed: every write gets the next revision and becomes an event, kept in a
//! bounded history (for watchers resuming from an older revision) and broadcast live.
//!
//! A slow watcher never blocks writers: live events go through a bounded broadcast buffer per
//! watcher, and a watcher that falls behind by more than that is cut off with the revision to
//! resume from.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::broadcast;

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

/// What a change carries, as kept: a put points at its record (no copy; puts are appended
/// in revision order, so the history pins only the most recent segments), a removal carries
/// a copy of the key (its record may sit in any old segment, which it must not pin).
#[derive(Clone)]
pub(super) enum Body {
    Record(RecordRef),
    Key(Bytes),
}

/// One change, as kept in the history and sent to live watchers.
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

struct State {
    revision: u64,
    history: VecDeque<Stored>,
    history_bytes: usize,
    /// The newest revision dropped from the history.
    compacted: u64,
}

pub(super) struct Feed {
    state: Mutex<State>,
    live: broadcast::Sender<Stored>,
    max_events: usize,
    max_bytes: usize,
}

fn event_bytes(e: &Stored) -> usize {
    std::mem::size_of::<Stored>()
        + match &e.body {
            Body::Record(r) => r.len as usize,
            Body::Key(k) => k.len(),
        }
}

impl Feed {
    pub(super) fn new(
        revision: u64,
        max_events: usize,
        max_bytes: usize,
        watch_buffer: usize,
    ) -> Feed {
        Feed {
            state: Mutex::new(State {
                revision,
                history: VecDeque::new(),
                history_bytes: 0,
                compacted: revision,
            }),
            live: broadcast::channel(watch_buffer.max(1)).0,
            max_events,
            max_bytes,
        }
    }

    /// Bytes the history holds (old values included).
    pub(super) fn history_bytes(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .history_bytes
    }

    pub(super) fn revision(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revision
    }

    /// Appends a change; `make` builds what it carries from its revision (under the feed's
    /// lock, which is what orders revisions) and returns it with anything else the caller
    /// needs.
    pub(super) fn append<R>(&self, kind: EventKind, make: impl FnOnce(u64) -> (Body, R)) -> R {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.revision += 1;
        let revision = state.revision;
        let (body, out) = make(revision);
        self.push(
            &mut state,
            Stored {
                revision,
                kind,
                body,
            },
        );
        out
    }

    fn push(&self, state: &mut State, event: Stored) {
        // Never blocks: a full buffer overwrites the oldest event, and a watcher that had not
        // read it learns that it lagged.
        let _ = self.live.send(event.clone());
        if self.max_events == 0 {
            state.compacted = event.revision;
            return;
        }
        state.history_bytes += event_bytes(&event);
        state.history.push_back(event);
        while state.history.len() > self.max_events
            || (state.history_bytes > self.max_bytes && state.history.len() > 1)
        {
            let old = state.history.pop_front().expect("non-empty");
            state.history_bytes -= event_bytes(&old);
            state.compacted = old.revision;
        }
    }

    pub(super) fn watch(&self, prefix: Bytes, from: u64) -> Result<Watcher, Error> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let next = state.revision + 1;
        let from = if from == 0 { next } else { from };
        if from > next {
            return Err(Error::Future {
                requested: from,
                next,
            });
        }
        if from <= state.compacted {
            return Err(Error::Compacted {
                requested: from,
                oldest: state.compacted + 1,
            });
        }
        // Subscribed under the lock: no event falls between the backlog and the live stream.
        let live = self.live.subscribe();
        let skip = state.history.len() - (next - from) as usize;
        let backlog = state
            .history
            .iter()
            .skip(skip)
            .filter(|e| e.key().starts_with(&prefix))
            .cloned()
            .collect();
        Ok(Watcher {
            backlog,
            live,
            prefix,
            next: from,
            lagged: false,
        })
    }
}

/// A stream of changes under a prefix, in revision order.
#[derive(Debug)]
pub struct Watcher {
    backlog: VecDeque<Stored>,
    live: broadcast::Receiver<Stored>,
    prefix: Bytes,
    /// The first revision not yet delivered.
    next: u64,
    /// Fell behind and said so: the events after the gap are never handed out (the caller
    /// resumes from `next` with a new watcher).
    lagged: bool,
}

impl Watcher {
    /// The next change. `None` when the engine is gone; `Err(Lagged)` (then `None`) when this
    /// watcher fell behind by more than its buffer.
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        if self.lagged {
            return None;
        }
        if let Some(e) = self.backlog.pop_front() {
            self.next = e.revision + 1;
            return Some(Ok(e.event()));
        }
        loop {
            match self.live.recv().await {
                Ok(e) => {
                    if e.revision < self.next {
                        continue; // Already delivered from the backlog.
                    }
                    self.next = e.revision + 1;
                    if e.key().starts_with(&self.prefix) {
                        return Some(Ok(e.event()));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.lagged = true;
                    return Some(Err(Error::Lagged {
                        resume_from: self.next,
                    }));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The first revision not yet delivered (where to resume).
    pub fn next_revision(&self) -> u64 {
        self.next
    }
}
