//! Resident memory: the cap holds for the process's real resident memory under a write flood,
//! and a snapshot does not copy the data set. One test per concern, run one after the other in
//! this binary (resident memory is per process).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use objstore::engine::{Engine, EngineConfig, Put, resident_bytes};

fn rss() -> usize {
    resident_bytes().expect("/proc/self/statm")
}

/// Samples resident memory every 5 ms until stopped; returns the peak.
fn sampler() -> (Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let mut peak = 0;
        while !s.load(Ordering::Relaxed) {
            peak = peak.max(rss());
            std::thread::sleep(Duration::from_millis(5));
        }
        peak.max(rss())
    });
    (stop, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cap_and_snapshot_footprint() {
    flood_stays_under_the_cap().await;
    snapshot_does_not_copy_the_data();
}

/// The resident memory of a running process. Unreadable is a failure, not 0 (a bound checked
/// against 0 passes vacuously).
fn process_rss(pid: u32) -> usize {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/statm of the server under test: {e}"));
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("/proc/{pid}/statm has no resident field: {statm:?}"));
    assert!(pages > 0, "the server under test has no resident memory");
    pages * 4096
}

/// The real server process under a gRPC write flood: its resident memory stays within 5% of
/// `max-memory`, with writes refused (`noeviction`) or evicting (`sampled-lru`).
async fn flood_stays_under_the_cap() {
    for eviction in ["sampled-lru", "noeviction"] {
        let cap: usize = 64 * 1024 * 1024;
        let served = common::serve(
            &format!("mem-{eviction}"),
            &format!("max-memory = \"{cap}\"\neviction = \"{eviction}\"\n"),
            std::process::Stdio::null(),
        );
        let pid = served.child.id();
        let addr = served.addr.clone();
        let client = objstore::client::Client::connect(&addr, Default::default())
            .await
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let peak = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(Ordering::Relaxed) {
                    peak = peak.max(process_rss(pid));
                    std::thread::sleep(Duration::from_millis(5));
                }
                peak
            })
        };
        // 16,000 writes of 16 KiB from 16 concurrent callers: 250 MiB against a 64 MiB cap.
        let refused = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let (client, refused) = (client.clone(), refused.clone());
                tokio::spawn(async move {
                    for i in 0..1000 {
                        let value = Bytes::from(vec![(i % 251) as u8; 16 * 1024]);
                        match client
                            .put(format!("t{t}/{i}").as_bytes(), value, Default::default())
                            .await
                        {
                            Ok(_) => {}
                            Err(objstore::client::Error::Exhausted(_)) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let peak = peak.join().unwrap();
        drop(served);
        let refused = refused.load(Ordering::Relaxed);
        eprintln!(
            "{eviction}: cap {} MiB, server peak resident {:.1} MiB ({:+.1}%), {refused} writes refused",
            cap >> 20,
            peak as f64 / 1048576.0,
            (peak as f64 / cap as f64 - 1.0) * 100.0
        );
        match eviction {
            "noeviction" => assert!(refused > 8000, "{refused}"),
            _ => assert_eq!(refused, 0),
        }
        assert!(
            peak as f64 <= cap as f64 * 1.05,
            "{eviction}: resident memory peaked at {:.1} MiB, cap {} MiB",
            peak as f64 / 1048576.0,
            cap >> 20
        );
    }
}

/// Overwrites of 2,000 hot objects, `n` in all, until `go` is cleared; returns how many ran.
fn overwrite_hot(engine: &Engine, n: u32, go: &AtomicBool) -> u32 {
    let mut done = 0u32;
    while go.load(Ordering::Relaxed) && done < n {
        let i = done.wrapping_mul(2_654_435_761) % 2_000 * 100;
        engine
            .put(Put {
                key: Bytes::from(format!("k{i:08}")),
                value: Bytes::from(vec![(done % 251) as u8; 1024]),
                ..Put::default()
            })
            .unwrap();
        done += 1;
    }
    done
}

/// Peak resident memory while `f` runs, over what it was before.
fn growth_during<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let before = rss();
    let (stop, peak) = sampler();
    let out = f();
    stop.store(true, Ordering::Relaxed);
    (out, before, peak.join().unwrap().saturating_sub(before))
}

fn snapshot_does_not_copy_the_data() {
    let dir = std::env::temp_dir().join(format!("objstore-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store.snap");
    // A short change history: the default keeps 100,000 events for watchers to resume from,
    // and with them the old versions they point at, which would hide what a snapshot costs.
    let engine = Engine::new(EngineConfig {
        feed_history: 1_000,
        ..EngineConfig::default()
    });
    for i in 0..200_000u32 {
        engine
            .put(Put {
                key: Bytes::from(format!("k{i:08}")),
                value: Bytes::from(vec![(i % 251) as u8; 1024]),
                ..Put::default()
            })
            .unwrap();
    }
    let pct = |g: usize, b: usize| g as f64 * 100.0 / b as f64;

    // A snapshot alone.
    let (stats, before, growth) =
        growth_during(|| objstore::snapshot::write(&engine, &path, 0).unwrap());
    eprintln!(
        "snapshot of {} MiB: resident before {} MiB, +{} MiB (+{:.1}%)",
        stats.bytes >> 20,
        before >> 20,
        growth >> 20,
        pct(growth, before)
    );
    assert!(
        (growth as f64) <= before as f64 * 0.10,
        "resident memory grew {} MiB during the snapshot (before: {} MiB)",
        growth >> 20,
        before >> 20
    );

    // Writers alone (what their churn costs, for the report), then the same writers during a
    // snapshot: it pins old versions of one shard at a time, never all of them, and resident
    // memory stays within +10%.
    let go = AtomicBool::new(true);
    let (_, _, churn) = growth_during(|| overwrite_hot(&engine, 50_000, &go));
    let (overwritten, stats, before, growth) = {
        let go = Arc::new(AtomicBool::new(true));
        let ((n, stats), before, growth) = growth_during(|| {
            let writer = {
                let (engine, go) = (engine.clone(), go.clone());
                std::thread::spawn(move || overwrite_hot(&engine, 50_000, &go))
            };
            let stats = objstore::snapshot::write(&engine, &path, 0).unwrap();
            go.store(false, Ordering::Relaxed);
            (writer.join().unwrap(), stats)
        });
        (n, stats, before, growth)
    };
    eprintln!(
        "snapshot with {overwritten} overwrites meanwhile: +{} MiB (+{:.1}%); the overwrites alone: +{} MiB",
        growth >> 20,
        pct(growth, before),
        churn >> 20
    );
    assert!(overwritten > 0, "no write ran during the snapshot");
    assert_eq!(stats.objects, 200_000, "a snapshot holds every object once");
    assert!(
        (growth as f64) <= before as f64 * 0.10,
        "with writers, resident memory grew {} MiB during the snapshot (the same writes alone: \
         {} MiB; before: {} MiB)",
        growth >> 20,
        churn >> 20,
        before >> 20
    );
    let _ = std::fs::remove_dir_all(&dir);
}
