use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;

fn put(key: &str, value: &str) -> Put {
    Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Put::default()
    }
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default())
}

#[test]
fn revisions_versions_and_etags() {
    let e = engine();
    let a = e.put(put("a", "1")).unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 1, 1));
    let b = e.put(put("b", "1")).unwrap();
    assert_eq!(b.mod_revision, 2);
    let a2 = e.put(put("a", "2")).unwrap();
    assert_eq!((a2.create_revision, a2.mod_revision, a2.version), (1, 3, 2));
    assert_ne!(a.etag(), a2.etag());
    assert_eq!(e.revision(), 3);
    assert_eq!(e.get(b"a").unwrap().value, "2");
    assert_eq!(e.delete(b"a", &Condition::Always).unwrap(), 4);
    assert!(e.get(b"a").is_none());
    // Recreated: a new create revision and version 1.
    let a3 = e.put(put("a", "3")).unwrap();
    assert_eq!((a3.create_revision, a3.version), (5, 1));
    assert_eq!(e.len(), 2);
}

#[test]
fn conditional_writes() {
    let e = engine();
    let mut p = put("k", "v1");
    p.condition = Condition::IfAbsent;
    let v1 = e.put(p.clone()).unwrap();
    let current = Some(v1.mod_revision);
    assert!(matches!(
        e.put(p).unwrap_err(),
        Error::Precondition { current: c } if c == current
    ));
    let mut p = put("k", "v2");
    p.condition = Condition::IfRevision(v1.mod_revision);
    let v2 = e.put(p.clone()).unwrap();
    assert!(
        matches!(e.put(p), Err(Error::Precondition { .. })),
        "stale revision"
    );
    let mut p = put("k", "v3");
    p.condition = Condition::IfEtag(v2.etag());
    e.put(p.clone()).unwrap();
    assert!(
        matches!(e.put(p), Err(Error::Precondition { .. })),
        "stale etag"
    );
    let mut p = put("absent", "x");
    p.condition = Condition::IfRevision(1);
    assert!(matches!(
        e.put(p).unwrap_err(),
        Error::Precondition { current: None }
    ));
    let cur = e.get(b"k").unwrap();
    assert!(matches!(
        e.delete(b"k", &Condition::IfRevision(cur.mod_revision - 1)),
        Err(Error::Precondition { .. })
    ));
    e.delete(b"k", &Condition::IfEtag(cur.etag())).unwrap();
    assert!(matches!(
        e.delete(b"k", &Condition::Always),
        Err(Error::NotFound)
    ));
}

#[test]
fn bad_keys_and_values() {
    let e = Engine::new(EngineConfig {
        max_key: 8,
        max_value: 16,
        ..EngineConfig::default()
    });
    assert!(matches!(e.put(put("", "v")), Err(Error::Invalid(m)) if m.contains("empty")));
    assert!(
        matches!(e.put(put("123456789", "v")), Err(Error::Invalid(m)) if m.contains("key of 9 bytes"))
    );
    assert!(
        matches!(e.put(put("k", &"x".repeat(17))), Err(Error::Invalid(m)) if m.contains("value of 17 bytes"))
    );
    assert_eq!(e.revision(), 0, "nothing was written");
}

#[test]
fn listing_is_ordered_and_paginated_across_shards() {
    let e = engine();
    for i in 0..1000 {
        e.put(put(&format!("p/{i:04}"), "v")).unwrap();
    }
    e.put(put("q/1", "v")).unwrap();
    e.put(put("o/1", "v")).unwrap();
    let mut seen = Vec::new();
    let mut after: Option<Bytes> = None;
    loop {
        let (page, more) = e.list(b"p/", after.as_deref(), 64);
        assert!(page.len() <= 64);
        seen.extend(page.iter().map(|l| l.key.clone()));
        after = page.last().map(|l| l.key.clone());
        if !more {
            break;
        }
    }
    let expected: Vec<Bytes> = (0..1000)
        .map(|i| Bytes::from(format!("p/{i:04}")))
        .collect();
    assert_eq!(seen, expected);
    let (all, more) = e.list(b"", None, 10_000);
    assert_eq!((all.len(), more), (1002, false));
    // A token before the prefix starts at the prefix.
    let (page, _) = e.list(b"p/", Some(b"a"), 1);
    assert_eq!(page[0].key, "p/0000");
}

#[test]
fn ttl_lazy_and_active_expiry() {
    let clock = Clock::manual(1_700_000_000_000);
    let e = Engine::new(EngineConfig {
        clock: clock.clone(),
        ..EngineConfig::default()
    });
    let mut p = put("short", "v");
    p.ttl = Some(Duration::from_millis(30));
    e.put(p).unwrap();
    for i in 0..100 {
        let mut p = put(&format!("sweep{i}"), "v");
        p.ttl = Some(Duration::from_millis(30));
        e.put(p).unwrap();
    }
    e.put(put("long", "v")).unwrap();
    // One millisecond before the TTL ends, everything is there; at its end, nothing.
    clock.advance(Duration::from_millis(29));
    assert!(e.get(b"short").is_some());
    assert_eq!(e.sweep_expired(0, usize::MAX).1, 0);
    assert_eq!(e.len(), 102);
    clock.advance(Duration::from_millis(1));
    // Lazy: invisible and removed on access.
    assert!(e.get(b"short").is_none());
    assert_eq!(e.len(), 101);
    // Listing never shows expired objects.
    assert_eq!(e.list(b"sweep", None, 1000).0.len(), 0);
    // Active: the sweeper removes the rest.
    let (_, removed) = e.sweep_expired(0, usize::MAX);
    assert_eq!(removed, 100);
    assert_eq!(e.len(), 1);
    assert_eq!(e.evictions().1, 101);
    // Charges were released: what is left is "long"'s record (a 6-byte header at revision
    // 102, key, value) and its index share.
    assert_eq!(e.charged_bytes(), 6 + 4 + 1 + RECORD_OVERHEAD);
}

#[test]
fn noeviction_refuses_at_the_cap() {
    let e = Engine::new(EngineConfig {
        max_memory: 100_000,
        ..EngineConfig::default()
    });
    let value = "x".repeat(1000);
    let mut stored = 0;
    let err = loop {
        match e.put(put(&format!("k{stored}"), &value)) {
            Ok(_) => stored += 1,
            Err(err) => break err,
        }
    };
    assert!(
        matches!(err, Error::Exhausted(ref m) if m.contains("memory cap")),
        "{err}"
    );
    assert!(e.charged_bytes() <= 100_000);
    // The change feed's history (at most an eighth of the cap) counts too.
    assert!(stored >= 70, "{stored}");
    // Deleting frees room again.
    e.delete(b"k0", &Condition::Always).unwrap();
    e.put(put("again", &value)).unwrap();
}

#[test]
fn sampled_lru_evicts_cold_objects_and_keeps_the_cap() {
    let e = Engine::new(EngineConfig {
        max_memory: 1_000_000,
        eviction: Eviction::SampledLru,
        shards: 8,
        ..EngineConfig::default()
    });
    let value = "x".repeat(1000);
    for i in 0..5000 {
        e.put(put(&format!("k{i}"), &value)).unwrap();
        assert!(e.charged_bytes() <= 1_000_000);
    }
    let (evicted, _) = e.evictions();
    assert!(evicted > 3000, "{evicted}");
    assert!(e.len() < 1000);
    // Every object is whole: a value is never partly visible.
    for (i, l) in e.list(b"", None, 10_000).0.iter().enumerate() {
        assert_eq!(l.object.value.len(), 1000, "object {i}");
    }
}

#[test]
fn resident_memory_lowers_the_budget() {
    let e = Engine::new(EngineConfig {
        max_memory: 1_000_000,
        eviction: Eviction::SampledLru,
        ..EngineConfig::default()
    });
    let value = "x".repeat(1000);
    for i in 0..500 {
        e.put(put(&format!("k{i}"), &value)).unwrap();
    }
    let before = e.charged_bytes();
    // The process holds 400 kB the charges do not explain: data must shrink to fit.
    e.observe_resident(before + 400_000);
    assert!(
        e.charged_bytes() <= 1_000_000 - 400_000,
        "{}",
        e.charged_bytes()
    );
}

#[tokio::test]
async fn watch_from_a_revision_then_live() {
    let e = engine();
    e.put(put("a/1", "v")).unwrap(); // 1
    e.put(put("b/1", "v")).unwrap(); // 2
    e.put(put("a/2", "v")).unwrap(); // 3
    let mut w = e.watch(Bytes::from_static(b"a/"), 2).unwrap();
    let first = w.next().await.unwrap().unwrap();
    assert_eq!((first.revision, &first.key[..]), (3, &b"a/2"[..]));
    e.delete(b"a/1", &Condition::Always).unwrap(); // 4
    e.put(put("b/2", "v")).unwrap(); // 5
    e.put(put("a/3", "v")).unwrap(); // 6
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!((ev.revision, ev.kind), (4, EventKind::Delete));
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!((ev.revision, ev.kind), (6, EventKind::Put));
    assert_eq!(ev.object.as_ref().unwrap().mod_revision, 6);
    assert_eq!(w.next_revision(), 7);
    // From "now" and from the future.
    let mut now = e.watch(Bytes::new(), 0).unwrap();
    e.put(put("z", "v")).unwrap();
    assert_eq!(now.next().await.unwrap().unwrap().revision, 7);
    assert!(matches!(
        e.watch(Bytes::new(), 100),
        Err(Error::Future { next: 8, .. })
    ));
}

#[tokio::test]
async fn compacted_history_and_lagging_watchers() {
    let e = Engine::new(EngineConfig {
        feed_history: 10,
        watch_buffer: 16,
        ..EngineConfig::default()
    });
    for i in 0..30 {
        e.put(put(&format!("k{i}"), "v")).unwrap();
    }
    assert!(matches!(
        e.watch(Bytes::new(), 5).unwrap_err(),
        Error::Compacted {
            requested: 5,
            oldest: 21
        }
    ));
    let mut w = e.watch(Bytes::new(), 21).unwrap();
    // The watcher does not read while 100 writes happen: writers are not blocked, and the
    // watcher learns where to resume.
    for i in 0..100 {
        e.put(put(&format!("x{i}"), "v")).unwrap();
    }
    let mut delivered = 0;
    let resume = loop {
        match w.next().await.unwrap() {
            Ok(_) => delivered += 1,
            Err(Error::Lagged { resume_from }) => break resume_from,
            Err(other) => panic!("{other}"),
        }
    };
    assert_eq!(resume, 21 + delivered);
}

#[tokio::test]
async fn regression_a_lagged_watcher_ends_instead_of_skipping_the_gap() {
    // After `Err(Lagged)` the watcher used to go on handing out events from past the gap it
    // had just reported. It ends, as documented, even while writes go on.
    let e = Engine::new(EngineConfig {
        feed_history: 4,
        watch_buffer: 4,
        ..EngineConfig::default()
    });
    let mut w = e.watch(Bytes::new(), 0).unwrap();
    for i in 0..20 {
        e.put(put(&format!("k{i}"), "v")).unwrap();
    }
    let resume = loop {
        match w.next().await.expect("an event or the lag") {
            Ok(_) => {}
            Err(Error::Lagged { resume_from }) => break resume_from,
            Err(other) => panic!("{other}"),
        }
    };
    e.put(put("after", "v")).unwrap();
    assert!(w.next().await.is_none(), "a lagged watcher ends");
    assert!(w.next().await.is_none());
    assert_eq!(w.next_revision(), resume, "where to resume stays put");
    // It lagged because the history moved past it: resuming there is refused, and a watcher
    // from the oldest revision kept starts with no gap.
    let oldest = match e.watch(Bytes::new(), resume).unwrap_err() {
        Error::Compacted { requested, oldest } => {
            assert_eq!(requested, resume);
            oldest
        }
        other => panic!("{other}"),
    };
    assert_eq!(oldest, e.revision() + 1 - 4, "the history holds 4 events");
    let mut again = e.watch(Bytes::new(), oldest).unwrap();
    let first = again.next().await.unwrap().unwrap();
    assert_eq!(first.revision, oldest, "a new watcher resumes with no gap");
}

#[test]
fn concurrent_writers_get_distinct_ordered_revisions() {
    let e = Arc::new(engine());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                let mut revs = Vec::new();
                for i in 0..2000 {
                    revs.push(e.put(put(&format!("t{t}/{i}"), "v")).unwrap().mod_revision);
                }
                revs
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=8000).collect::<Vec<_>>());
    assert_eq!(e.len(), 8000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_revision_of_concurrent_writers_once_in_order() {
    // Writers of different shards publish their events out of revision order; a live
    // watcher (parked most of the time) and one resuming from revision 1 afterwards must
    // both see 1..=N with no gap, no repeat, and each event as its writer made it.
    let e = engine();
    let mut live = e.watch(Bytes::new(), 0).unwrap();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                let mut made = Vec::new();
                for i in 0..1500 {
                    // Every fifth deletes the key the one before it wrote.
                    let n = if i % 5 == 4 { i - 1 } else { i };
                    let key = format!("t{t}/{}", n % 300);
                    if i % 5 == 4 {
                        let r = e.delete(key.as_bytes(), &Condition::Always).unwrap();
                        made.push((r, key, EventKind::Delete));
                    } else {
                        let r = e.put(put(&key, "v")).unwrap().mod_revision;
                        made.push((r, key, EventKind::Put));
                    }
                }
                made
            })
        })
        .collect();
    let mut seen = Vec::new();
    while seen.len() < 6000 {
        let ev = live.next().await.unwrap().unwrap();
        seen.push((
            ev.revision,
            String::from_utf8(ev.key.to_vec()).unwrap(),
            ev.kind,
        ));
    }
    let mut made: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    made.sort_unstable_by_key(|m| m.0);
    assert_eq!(made.first().unwrap().0, 1);
    assert_eq!(seen, made, "the live watcher");
    let mut resumed = e.watch(Bytes::new(), 1).unwrap();
    for m in &made {
        let ev = resumed.next().await.unwrap().unwrap();
        assert_eq!(
            (ev.revision, ev.key.as_ref(), ev.kind),
            (m.0, m.1.as_bytes(), m.2)
        );
    }
    assert_eq!(resumed.next_revision(), 6001);
}

#[tokio::test]
async fn a_parked_watcher_wakes_for_a_write_and_ends_with_the_engine() {
    let e = engine();
    let mut w = e.watch(Bytes::from_static(b"a/"), 0).unwrap();
    let writer = e.clone();
    let (ready, go) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = go.await;
        writer.put(put("b/1", "skipped: other prefix")).unwrap();
        writer.put(put("a/1", "v")).unwrap();
    });
    // Parked before the writes: the writer must wake it.
    let ev = {
        let next = w.next();
        tokio::pin!(next);
        assert!(futures::poll!(next.as_mut()).is_pending());
        ready.send(()).unwrap();
        next.await.unwrap().unwrap()
    };
    assert_eq!((ev.revision, ev.key.as_ref()), (2, &b"a/1"[..]));
    task.await.unwrap();
    drop(e);
    assert!(w.next().await.is_none(), "the engine is gone");
}

/// Segment bytes allocated in all shards, and bytes of live records.
fn segment_bytes(e: &Engine) -> (usize, usize) {
    let mut allocated = 0;
    let mut live = 0;
    for lock in e.inner.shards.iter() {
        let shard = lock.read().unwrap();
        for m in shard.segs.metas.iter().flatten() {
            allocated += m.segment.capacity();
            live += m.live;
        }
    }
    (allocated, live)
}

#[test]
fn overwrites_compact_segments_and_keep_every_value() {
    let e = Engine::new(EngineConfig {
        shards: 4,
        ..EngineConfig::default()
    });
    let value = |i: usize, round: usize| format!("{i}:{round}:{}", "v".repeat(i % 300));
    for round in 0..8 {
        for i in 0..5000 {
            e.put(put(&format!("k{i}"), &value(i, round))).unwrap();
        }
    }
    assert_eq!(e.len(), 5000);
    for i in 0..5000 {
        let o = e.get(format!("k{i}").as_bytes()).unwrap();
        assert_eq!(o.value, value(i, 7), "k{i}");
        assert_eq!(o.version, 8);
    }
    // Eight generations were written; dead ones were compacted away: what is allocated stays
    // within twice the live bytes plus one active segment a shard.
    let (allocated, live) = segment_bytes(&e);
    assert!(
        allocated <= 2 * live + 4 * store::SEGMENT,
        "{allocated} allocated for {live} live"
    );
    // Deleting everything frees every sealed segment.
    for i in 0..5000 {
        e.delete(format!("k{i}").as_bytes(), &Condition::Always)
            .unwrap();
    }
    assert_eq!((e.len(), e.charged_bytes()), (0, 0));
    assert!(segment_bytes(&e).0 <= 4 * store::SEGMENT);
}

#[test]
fn a_value_read_outlives_its_segment() {
    let e = Engine::new(EngineConfig {
        shards: 1,
        ..EngineConfig::default()
    });
    for i in 0..2000 {
        e.put(put(&format!("k{i}"), &format!("first-{i}"))).unwrap();
    }
    let held = e.get(b"k7").unwrap().value;
    // Rewrite everything a few times: the first segments are compacted and freed.
    for round in 0..4 {
        for i in 0..2000 {
            e.put(put(&format!("k{i}"), &format!("round{round}-{i}")))
                .unwrap();
        }
    }
    assert_eq!(held, "first-7");
    assert_eq!(e.get(b"k7").unwrap().value, "round3-7");
}

#[test]
fn large_objects_get_their_own_segment() {
    let e = engine();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut p = put("big", "");
    p.value = Bytes::from(big.clone());
    p.content_type = Some("application/octet-stream".into());
    p.metadata = vec![("k".into(), "v".into())];
    let stored = e.put(p).unwrap();
    let got = e.get(b"big").unwrap();
    assert_eq!(got, stored);
    assert_eq!(got.value, big);
    assert_eq!(
        got.content_type.as_deref(),
        Some("application/octet-stream")
    );
    // Small and large under one key, both ways.
    e.put(put("big", "small now")).unwrap();
    assert_eq!(e.get(b"big").unwrap().value, "small now");
    let mut p = put("big", "");
    p.value = Bytes::from(big.clone());
    e.put(p).unwrap();
    assert_eq!(e.get(b"big").unwrap().value, big);
    assert_eq!(e.get(b"big").unwrap().version, 3);
    e.delete(b"big", &Condition::Always).unwrap();
    assert_eq!((e.len(), e.charged_bytes()), (0, 0));
}

#[tokio::test]
async fn evicted_segments_announce_their_objects() {
    let e = Engine::new(EngineConfig {
        max_memory: 300_000,
        eviction: Eviction::SampledLru,
        shards: 2,
        feed_history: 0,
        ..EngineConfig::default()
    });
    let mut w = e.watch(Bytes::new(), 0).unwrap();
    let value = "x".repeat(1000);
    for i in 0..1000 {
        e.put(put(&format!("k{i}"), &value)).unwrap();
    }
    let (evicted, _) = e.evictions();
    assert!(evicted > 500, "{evicted}");
    let mut seen = 0;
    let mut puts = 0;
    while puts + seen < 1000 + evicted as usize {
        match w.next().await.unwrap() {
            Ok(ev) if ev.kind == EventKind::Evict => {
                // Every key was written once: an evicted one is gone.
                assert!(e.get(&ev.key).is_none(), "{:?}", ev.key);
                seen += 1;
            }
            Ok(_) => puts += 1,
            Err(Error::Lagged { .. }) => break,
            Err(other) => panic!("{other}"),
        }
    }
    assert!(seen > 0, "no eviction event among {puts} puts");
    assert_eq!(e.len() as u64 + evicted, 1000);
}

#[test]
fn the_system_clock_cannot_be_moved_and_a_manual_one_saturates() {
    assert!(!Clock::system().advance(Duration::from_secs(1)));
    let c = Clock::manual(u64::MAX - 5);
    assert!(c.advance(Duration::MAX));
    assert_eq!(c.now_ms(), u64::MAX);
    // A TTL from there has no representable expiry: refused, not wrapped.
    assert_eq!(expiry_at(c.now_ms(), Duration::from_millis(1)), None);
}

/// Every key of a full SCAN pass, page by page with `count`; fails on a duplicate.
fn scan_all(e: &Engine, count: usize) -> (std::collections::BTreeSet<Bytes>, usize) {
    let mut seen = std::collections::BTreeSet::new();
    let (mut cursor, mut pages) = (0, 0);
    loop {
        let (keys, next) = e.scan(cursor, count);
        pages += 1;
        for k in keys {
            assert!(seen.insert(k.clone()), "{k:?} returned twice");
        }
        if next == 0 {
            return (seen, pages);
        }
        assert_ne!(next, cursor, "the cursor moves on");
        cursor = next;
        assert!(pages < 1_000_000, "the pass ends");
    }
}

#[test]
fn scan_returns_every_key_once_across_pages_and_growth() {
    let e = engine();
    assert_eq!(e.scan(0, 10), (Vec::new(), 0), "empty");
    for i in 0..20_000 {
        e.put(put(&format!("k{i}"), "v")).unwrap();
    }
    for count in [1, 10, 1000, 100_000] {
        let (seen, pages) = scan_all(&e, count);
        assert_eq!(seen.len(), 20_000, "count {count}");
        // Pages are `count` keys plus the rest of an index cluster (a few): no page per
        // probe, no one-page dump.
        assert!(
            pages <= 20_000 / count + 64 + 1,
            "count {count}: {pages} pages"
        );
        assert!(
            pages >= 20_000 / (count + 32),
            "count {count}: {pages} pages"
        );
    }
    // Keys present for the whole pass are returned exactly once while others come and go
    // and the index grows (incremental growth leaves some keys in the old table).
    let (mut cursor, mut seen) = (0u64, std::collections::BTreeSet::new());
    let mut added = 20_000;
    loop {
        let (keys, next) = e.scan(cursor, 50);
        for k in keys {
            if k.starts_with(b"k") && !k.starts_with(b"kx") {
                assert!(seen.insert(k), "returned twice");
            }
        }
        for _ in 0..40 {
            e.put(put(&format!("kx{added}"), "v")).unwrap();
            added += 1;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(
        seen.len(),
        20_000,
        "every key present throughout was returned"
    );
    // Expired keys are left out; a cursor the engine cannot have made ends the pass.
    let clock = Clock::manual(1_000);
    let e = Engine::new(EngineConfig {
        clock: clock.clone(),
        ..EngineConfig::default()
    });
    e.put(Put {
        ttl: Some(Duration::from_millis(10)),
        ..put("gone", "v")
    })
    .unwrap();
    e.put(put("kept", "v")).unwrap();
    clock.advance(Duration::from_millis(10));
    assert_eq!(scan_all(&e, 10).0.into_iter().collect::<Vec<_>>(), ["kept"]);
    assert_eq!(e.scan(u64::MAX, 10), (Vec::new(), 0));
}

#[test]
fn put_all_writes_all_or_nothing_atomically() {
    let e = engine();
    let puts = |keys: &[(&str, &str)]| keys.iter().map(|(k, v)| put(k, v)).collect::<Vec<_>>();
    assert!(
        e.put_all(puts(&[("a", "1"), ("b", "1"), ("a", "2")]), true)
            .unwrap()
    );
    assert_eq!(
        e.get(b"a").unwrap().value,
        "2",
        "a key given twice gets its last value"
    );
    assert!(!e.put_all(puts(&[("c", "1"), ("b", "2")]), true).unwrap());
    assert!(e.get(b"c").is_none(), "nothing written when one key exists");
    assert_eq!(e.get(b"b").unwrap().value, "1");
    assert!(e.put_all(puts(&[("b", "3"), ("c", "3")]), false).unwrap());
    assert_eq!(
        e.get(b"b").unwrap().value,
        "3",
        "without the condition, all written"
    );
    // Invalid input: an error, nothing written.
    assert!(e.put_all(puts(&[("d", "1"), ("", "1")]), false).is_err());
    assert!(e.get(b"d").is_none());
    // Racing writers of overlapping key sets: exactly one of each pair wins, and no key
    // ends with a value of the loser (all of one writer's keys or none).
    for round in 0..200 {
        let e = engine();
        let keys: Vec<String> = (0..8).map(|i| format!("r{round}:{i}")).collect();
        let e2 = e.clone();
        let k2 = keys.clone();
        let t = std::thread::spawn(move || {
            e2.put_all(k2.iter().rev().map(|k| put(k, "B")).collect(), true)
                .unwrap()
        });
        let a = e
            .put_all(keys.iter().map(|k| put(k, "A")).collect(), true)
            .unwrap();
        let b = t.join().unwrap();
        assert!(a ^ b, "exactly one wins");
        let want = if a { "A" } else { "B" };
        for k in &keys {
            assert_eq!(e.get(k.as_bytes()).unwrap().value, want);
        }
    }
}
