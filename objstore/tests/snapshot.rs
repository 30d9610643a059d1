//! Snapshots: round trip of 1M objects, corrupt and truncated files refused, writers never
//! stopped, expired objects dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use objstore::Error;
use objstore::engine::{Engine, EngineConfig, Put};
use objstore::snapshot;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir() -> Dir {
    let d = std::env::temp_dir().join(format!(
        "objstore-snap-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Put {
    Put {
        key: key.into(),
        value: value.into(),
        ..Put::default()
    }
}

#[test]
fn one_million_objects_round_trip() {
    let d = dir();
    let path = d.0.join("store.snap");
    let engine = Engine::new(EngineConfig::default());
    let mut rng = fastrand::Rng::with_seed(1);
    for i in 0..1_000_000u64 {
        let key = format!("key:{i:012}");
        let value: Vec<u8> = (0..100).map(|_| rng.u8(..)).collect();
        engine.put(put(key, value)).unwrap();
    }
    // Some with metadata, content type and versions > 1.
    for i in 0..1000u64 {
        let mut p = put(format!("key:{i:012}"), format!("v2-{i}"));
        p.content_type = Some("text/plain".into());
        p.metadata = vec![("owner".into(), format!("team-{i}"))];
        engine.put(p).unwrap();
    }
    let stats = snapshot::write(&engine, &path, 0).unwrap();
    assert_eq!(stats.objects, 1_000_000);
    assert_eq!(stats.revision, 1_001_000);
    assert_eq!(stats.bytes, std::fs::metadata(&path).unwrap().len());

    let (loaded, lstats) = snapshot::load(&path, EngineConfig::default()).unwrap();
    assert_eq!(lstats.objects, 1_000_000);
    assert_eq!(loaded.len(), 1_000_000);
    assert_eq!(loaded.revision(), 1_001_000);
    for i in (0..1_000_000u64).step_by(997) {
        let key = format!("key:{i:012}");
        let a = engine.get(key.as_bytes()).unwrap();
        let b = loaded.get(key.as_bytes()).unwrap();
        assert_eq!(a, b, "{key}");
    }
    let o = loaded.get(b"key:000000000007").unwrap();
    assert_eq!(
        (o.version, o.content_type.as_deref(), &o.metadata[..]),
        (
            2,
            Some("text/plain"),
            &[("owner".to_owned(), "team-7".to_owned())][..]
        )
    );
    // The next write continues the revision sequence.
    let next = loaded.put(put("new", "v")).unwrap();
    assert_eq!(next.mod_revision, 1_001_001);
    // Listing works on the loaded data (index rebuilt).
    let (page, more) = loaded.list(b"key:00000000000", None, 5);
    assert_eq!(page.len(), 5);
    assert_eq!(page[0].key, "key:000000000000");
    assert!(more);
    // Overwrites and deletes on loaded (mapped) data: mapped segments are compacted like
    // any other, and old values read before stay valid.
    let held = loaded.get(b"key:000000000500").unwrap().value;
    for i in 0..200_000u64 {
        let key = format!("key:{i:012}");
        if i % 2 == 0 {
            loaded.put(put(key, "rewritten")).unwrap();
        } else {
            loaded
                .delete(key.as_bytes(), &objstore::engine::Condition::Always)
                .unwrap();
        }
    }
    assert_eq!(held, engine.get(b"key:000000000500").unwrap().value);
    assert_eq!(loaded.get(b"key:000000000500").unwrap().value, "rewritten");
    assert!(loaded.get(b"key:000000000501").is_none());
    assert_eq!(loaded.len(), 1_000_001 - 100_000);

    // Another shard count: records are copied to their new shards.
    let (resharded, rstats) = snapshot::load(
        &path,
        EngineConfig {
            shards: 8,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    assert_eq!((rstats.objects, resharded.len()), (1_000_000, 1_000_000));
    for i in (0..1_000_000u64).step_by(991) {
        let key = format!("key:{i:012}");
        assert_eq!(
            engine.get(key.as_bytes()),
            resharded.get(key.as_bytes()),
            "{key}"
        );
    }
}

#[test]
fn corrupt_and_truncated_files_are_refused() {
    let d = dir();
    let path = d.0.join("store.snap");
    let engine = Engine::new(EngineConfig::default());
    for i in 0..1000 {
        engine
            .put(put(format!("k{i}"), vec![i as u8; 200]))
            .unwrap();
    }
    snapshot::write(&engine, &path, 0).unwrap();
    let good = std::fs::read(&path).unwrap();
    let check = |bytes: &[u8], needle: &str| {
        let p = d.0.join("bad.snap");
        std::fs::write(&p, bytes).unwrap();
        match snapshot::load(&p, EngineConfig::default()) {
            Err(Error::Corrupt { path, reason }) => {
                assert_eq!(path, p);
                assert!(reason.contains(needle), "{reason}");
                let msg = Error::Corrupt { path, reason }.to_string();
                assert!(msg.contains("bad.snap") && msg.contains("corrupt"), "{msg}");
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a damaged snapshot was loaded ({needle})"),
        }
    };
    // One flipped bit in the body.
    let mut flipped = good.clone();
    let at = good.len() / 2;
    flipped[at] ^= 0x10;
    check(&flipped, "body checksum");
    // Truncated anywhere.
    check(&good[..good.len() - 1], "truncated");
    check(&good[..good.len() / 3], "truncated");
    check(&good[..30], "shorter than the header");
    check(b"", "shorter than the header");
    // A damaged header, another file, trailing bytes.
    let mut h = good.clone();
    h[20] ^= 1;
    check(&h, "header checksum");
    check(&vec![b'x'; 4096], "bad magic");
    // A header that is whole but names a revision no later write could follow.
    let mut huge = good.clone();
    huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let crc = crc32fast::hash(&huge[0..44]);
    huge[44..48].copy_from_slice(&crc.to_le_bytes());
    check(&huge, "past the largest revision");
    let mut longer = good;
    longer.extend_from_slice(b"more");
    check(&longer, "appended");
    // A missing file is an I/O error naming it.
    let missing = d.0.join("nope.snap");
    let e = snapshot::load(&missing, EngineConfig::default()).unwrap_err();
    assert!(matches!(e, Error::Snapshot { .. }));
    assert!(e.to_string().contains("nope.snap"), "{e}");
    // The good one still loads.
    assert_eq!(
        snapshot::load(&path, EngineConfig::default())
            .unwrap()
            .1
            .objects,
        1000
    );
}

#[test]
fn writers_go_on_during_a_snapshot() {
    let d = dir();
    let path = d.0.join("store.snap");
    let engine = Engine::new(EngineConfig::default());
    for i in 0..50_000 {
        engine.put(put(format!("k{i}"), vec![1u8; 256])).unwrap();
    }
    // A burst of writes of a fixed size, started once the snapshot has begun (its temporary
    // file exists), must finish while the snapshot still runs: writers are not held for the
    // snapshot's duration. The snapshot is rate-limited to 20 MB/s (about 0.75 s); the burst
    // takes milliseconds unless it is blocked. An ordering with that margin, not a rate.
    const BURST: u64 = 2_000;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (engine, done, dir) = (engine.clone(), done.clone(), d.0.clone());
        std::thread::spawn(move || {
            let started = || {
                std::fs::read_dir(&dir)
                    .unwrap()
                    .any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp-"))
            };
            // Bounded by a count of looks (seconds of them), not by the clock.
            let mut looks = 0u32;
            while !started() {
                looks += 1;
                assert!(looks < 2_000_000, "no snapshot began");
                std::thread::yield_now();
            }
            for n in 0..BURST {
                engine
                    .put(put(format!("k{}", n % 50_000), vec![2u8; 256]))
                    .unwrap();
            }
            // Whether the snapshot was still running when the burst ended.
            !done.load(Ordering::SeqCst)
        })
    };
    let stats = snapshot::write(&engine, &path, 20_000_000).unwrap();
    done.store(true, Ordering::SeqCst);
    let during = writer.join().unwrap();
    assert!(during, "{BURST} writes waited for the snapshot to end");
    assert_eq!(stats.objects, 50_000);
    let (loaded, _) = snapshot::load(&path, EngineConfig::default()).unwrap();
    assert_eq!(loaded.len(), 50_000);
    // Every object is whole: one version or the other, never a mix.
    for i in 0..50_000 {
        let v = loaded.get(format!("k{i}").as_bytes()).unwrap();
        assert!(v.value.iter().all(|&b| b == v.value[0]), "k{i}");
    }
}

#[test]
fn expired_objects_are_not_loaded_and_ttls_survive() {
    let d = dir();
    let path = d.0.join("store.snap");
    let clock = objstore::engine::Clock::manual(1_700_000_000_000);
    let engine = Engine::new(EngineConfig {
        clock: clock.clone(),
        ..EngineConfig::default()
    });
    let mut short = put("short", "v");
    short.ttl = Some(Duration::from_millis(100));
    engine.put(short).unwrap();
    let mut long = put("long", "v");
    long.ttl = Some(Duration::from_secs(3600));
    engine.put(long).unwrap();
    engine.put(put("forever", "v")).unwrap();
    snapshot::write(&engine, &path, 0).unwrap();
    // Loaded by an engine whose clock is 150 ms on: `short` has expired, `long` has not.
    clock.advance(Duration::from_millis(150));
    let later = EngineConfig {
        clock,
        ..EngineConfig::default()
    };
    let (loaded, stats) = snapshot::load(&path, later).unwrap();
    assert_eq!(stats.objects, 2);
    assert!(loaded.get(b"short").is_none());
    assert!(loaded.get(b"long").unwrap().expires_at_ms.is_some());
    assert!(loaded.get(b"forever").unwrap().expires_at_ms.is_none());
}

#[test]
fn a_failed_write_leaves_the_previous_snapshot() {
    let d = dir();
    let path = d.0.join("store.snap");
    let engine = Engine::new(EngineConfig::default());
    engine.put(put("a", "1")).unwrap();
    snapshot::write(&engine, &path, 0).unwrap();
    // A snapshot into a directory that does not exist fails cleanly.
    let e = snapshot::write(&engine, &d.0.join("missing/dir/store.snap"), 0).unwrap_err();
    assert!(e.to_string().contains("missing/dir"), "{e}");
    assert_eq!(
        snapshot::load(&path, EngineConfig::default())
            .unwrap()
            .1
            .objects,
        1
    );
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(&d.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["store.snap"]);
}

/// The address ranges where this process maps `path` (from `/proc/self/maps`).
fn mapped_ranges(path: &std::path::Path) -> Vec<(usize, usize)> {
    let canonical = std::fs::canonicalize(path).unwrap();
    let name = canonical.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(name.as_str()))
        .filter_map(|l| {
            let (lo, hi) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                usize::from_str_radix(lo, 16).ok()?,
                usize::from_str_radix(hi, 16).ok()?,
            ))
        })
        .collect()
}

/// Loading maps the file and hands out values that point into the mapping: no value is
/// copied, and writes after loading leave the file untouched.
#[test]
fn loaded_values_point_into_the_mapped_file() {
    let d = dir();
    let path = d.0.join("mapped.snap");
    let engine = Engine::new(EngineConfig::default());
    for i in 0..10_000u32 {
        engine
            .put(put(format!("k{i:06}"), vec![(i % 251) as u8; 200]))
            .unwrap();
    }
    snapshot::write(&engine, &path, 0).unwrap();
    drop(engine);
    let before = std::fs::read(&path).unwrap();

    let (loaded, stats) = snapshot::load(&path, EngineConfig::default()).unwrap();
    assert_eq!(stats.objects, 10_000);
    let ranges = mapped_ranges(&path);
    assert!(!ranges.is_empty(), "the snapshot file is not mapped");
    for i in (0..10_000u32).step_by(97) {
        let o = loaded.get(format!("k{i:06}").as_bytes()).unwrap();
        assert_eq!(&o.value[..], &[(i % 251) as u8; 200][..]);
        let at = o.value.as_ptr() as usize;
        assert!(
            ranges
                .iter()
                .any(|&(lo, hi)| lo <= at && at + o.value.len() <= hi),
            "value of k{i:06} at {at:#x} is a copy, not in the mapping {ranges:x?}"
        );
    }
    // New writes go to new segments; the mapped file is never written.
    loaded.put(put("k000001", "changed")).unwrap();
    loaded.put(put("new", "value")).unwrap();
    assert_eq!(&loaded.get(b"k000001").unwrap().value[..], b"changed");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
