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
    assert_eq!(
        e.put(p).unwrap_err(),
        EngineError::Precondition {
            current: Some(v1.mod_revision)
        }
    );
    let mut p = put("k", "v2");
    p.condition = Condition::IfRevision(v1.mod_revision);
    let v2 = e.put(p.clone()).unwrap();
    assert!(
        matches!(e.put(p), Err(EngineError::Precondition { .. })),
        "stale revision"
    );
    let mut p = put("k", "v3");
    p.condition = Condition::IfEtag(v2.etag());
    e.put(p.clone()).unwrap();
    assert!(
        matches!(e.put(p), Err(EngineError::Precondition { .. })),
        "stale etag"
    );
    let mut p = put("absent", "x");
    p.condition = Condition::IfRevision(1);
    assert_eq!(
        e.put(p).unwrap_err(),
        EngineError::Precondition { current: None }
    );
    let cur = e.get(b"k").unwrap();
    assert!(matches!(
        e.delete(b"k", &Condition::IfRevision(cur.mod_revision - 1)),
        Err(EngineError::Precondition { .. })
    ));
    e.delete(b"k", &Condition::IfEtag(cur.etag())).unwrap();
    assert_eq!(
        e.delete(b"k", &Condition::Always),
        Err(EngineError::NotFound)
    );
}

#[test]
fn bad_keys_and_values() {
    let e = Engine::new(EngineConfig {
        max_key: 8,
        max_value: 16,
        ..EngineConfig::default()
    });
    assert!(matches!(e.put(put("", "v")), Err(EngineError::Invalid(m)) if m.contains("empty")));
    assert!(
        matches!(e.put(put("123456789", "v")), Err(EngineError::Invalid(m)) if m.contains("key of 9 bytes"))
    );
    assert!(
        matches!(e.put(put("k", &"x".repeat(17))), Err(EngineError::Invalid(m)) if m.contains("value of 17 bytes"))
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
    let e = engine();
    let mut p = put("short", "v");
    p.ttl = Some(Duration::from_millis(30));
    e.put(p).unwrap();
    for i in 0..100 {
        let mut p = put(&format!("sweep{i}"), "v");
        p.ttl = Some(Duration::from_millis(30));
        e.put(p).unwrap();
    }
    e.put(put("long", "v")).unwrap();
    assert!(e.get(b"short").is_some());
    std::thread::sleep(Duration::from_millis(60));
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
        matches!(err, EngineError::Exhausted(ref m) if m.contains("memory cap")),
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
        Err(WatchError::Future { next: 8, .. })
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
    assert_eq!(
        e.watch(Bytes::new(), 5).unwrap_err(),
        WatchError::Compacted {
            requested: 5,
            oldest: 21
        }
    );
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
            Err(WatchError::Lagged { resume_from }) => break resume_from,
            Err(other) => panic!("{other}"),
        }
    };
    assert_eq!(resume, 21 + delivered);
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
