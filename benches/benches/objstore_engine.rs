//! objstore's engine: get and put throughput at 1 and 2 threads (`engine/…`; `put-watched`
//! with a watcher of every key draining the change feed on a thread of its own), and the
//! concurrency scheme it was chosen by (`scheme/…`): sharded reader-writer locks against
//! epoch-based reclamation, each around the same kind of ordered map — 64 `RwLock<BTreeMap>`
//! shards against one lock-free `crossbeam-skiplist` (crossbeam-epoch) — so the comparison is
//! of the schemes, not of the maps. The engine itself is sharded locks around its own hash
//! index of packed segments (see `objstore::engine`), which `engine/…` measures.
//!
//! Each iteration is one operation; with 2 threads, both run the same number of operations
//! and the time is the wall time of the pair, so a scheme that scales halves its time.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use objstore::engine::{Condition, Engine, EngineConfig, Put};

const KEYS: usize = 100_000;

fn keys() -> Arc<Vec<Bytes>> {
    Arc::new(
        (0..KEYS)
            .map(|i| Bytes::from(format!("key:{i:08}")))
            .collect(),
    )
}

fn put(key: &Bytes, value: &Bytes) -> Put {
    Put {
        key: key.clone(),
        value: value.clone(),
        ttl: None,
        content_type: None,
        metadata: Vec::new(),
        condition: Condition::Always,
    }
}

/// Runs `op(thread, i)` `iters` times on each of `threads` threads; returns the wall time
/// divided by `threads` (time per operation of the whole machine).
fn parallel<F>(threads: usize, iters: u64, op: F) -> Duration
where
    F: Fn(usize, u64) + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (op, barrier) = (op.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                for i in 0..iters {
                    op(t, i);
                }
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    for h in hs {
        h.join().unwrap();
    }
    t0.elapsed() / threads as u32
}

/// The alternative scheme, at its simplest.
struct Sharded {
    shards: Vec<RwLock<BTreeMap<Bytes, Bytes>>>,
}

impl Sharded {
    fn shard(&self, k: &[u8]) -> &RwLock<BTreeMap<Bytes, Bytes>> {
        let h = k.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.shards[(h as usize) & (self.shards.len() - 1)]
    }
}

/// Puts over every key, from `threads` threads.
fn puts(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    threads: usize,
    e: &Engine,
    keys: &Arc<Vec<Bytes>>,
    value: &Bytes,
) {
    let (e2, k2, v2) = (e.clone(), keys.clone(), value.clone());
    g.bench_function(format!("{name}/{threads}t"), |b| {
        b.iter_custom(|iters| {
            let (e, k, v) = (e2.clone(), k2.clone(), v2.clone());
            parallel(threads, iters, move |t, i| {
                let key = &k[(i as usize * 7 + t * 31) % KEYS];
                black_box(e.put(put(key, &v)).unwrap());
            })
        });
    });
}

fn engine(c: &mut Criterion) {
    let value = Bytes::from(vec![1u8; 100]);
    let keys = keys();
    let e = Engine::new(EngineConfig::default());
    for k in keys.iter() {
        e.put(put(k, &value)).unwrap();
    }
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    for threads in [1, 2] {
        let (e2, k2) = (e.clone(), keys.clone());
        g.bench_function(format!("get/{threads}t"), |b| {
            b.iter_custom(|iters| {
                let (e, k) = (e2.clone(), k2.clone());
                parallel(threads, iters, move |t, i| {
                    let key = &k[(i as usize * 7 + t * 31) % KEYS];
                    black_box(e.get(key));
                })
            });
        });
        puts(&mut g, "put", threads, &e, &keys, &value);
    }
    // Puts while a watcher of every key drains the change feed on a thread of its own (the
    // feed's cost to writers when somebody listens).
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let watched = e.clone();
    let mut w = e.watch(Bytes::new(), 0).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let drain = thread::spawn(move || {
        rt.block_on(async move {
            tokio::pin!(stopped);
            let mut seen = 0u64;
            loop {
                tokio::select! {
                    _ = &mut stopped => return seen,
                    ev = w.next() => match ev {
                        Some(Ok(_)) => seen += 1,
                        // Lagged: watch again from where it stood (or from now, if the
                        // history has moved past that too).
                        Some(Err(_)) => {
                            let from = w.next_revision();
                            w = watched
                                .watch(Bytes::new(), from)
                                .or_else(|_| watched.watch(Bytes::new(), 0))
                                .unwrap();
                        }
                        None => return seen,
                    },
                }
            }
        })
    });
    for threads in [1, 2] {
        puts(&mut g, "put-watched", threads, &e, &keys, &value);
    }
    let _ = stop.send(());
    black_box(drain.join().unwrap());
    g.finish();
}

fn schemes(c: &mut Criterion) {
    let value = Bytes::from(vec![1u8; 100]);
    let keys = keys();
    let sharded = Arc::new(Sharded {
        shards: (0..64).map(|_| RwLock::new(BTreeMap::new())).collect(),
    });
    let skip = Arc::new(crossbeam_skiplist::SkipMap::new());
    for k in keys.iter() {
        sharded
            .shard(k)
            .write()
            .unwrap()
            .insert(k.clone(), value.clone());
        skip.insert(k.clone(), value.clone());
    }
    let mut g = c.benchmark_group("scheme");
    g.throughput(Throughput::Elements(1));
    for threads in [1, 2] {
        let (s, k) = (sharded.clone(), keys.clone());
        g.bench_function(format!("sharded-rwlock-btree/get/{threads}t"), |b| {
            b.iter_custom(|iters| {
                let (s, k) = (s.clone(), k.clone());
                parallel(threads, iters, move |t, i| {
                    let key = &k[(i as usize * 7 + t * 31) % KEYS];
                    black_box(s.shard(key).read().unwrap().get(key).cloned());
                })
            });
        });
        let (m, k) = (skip.clone(), keys.clone());
        g.bench_function(format!("epoch-skiplist/get/{threads}t"), |b| {
            b.iter_custom(|iters| {
                let (m, k) = (m.clone(), k.clone());
                parallel(threads, iters, move |t, i| {
                    let key = &k[(i as usize * 7 + t * 31) % KEYS];
                    black_box(m.get(key).map(|e| e.value().clone()));
                })
            });
        });
        let (s, k, v) = (sharded.clone(), keys.clone(), value.clone());
        g.bench_function(format!("sharded-rwlock-btree/put/{threads}t"), |b| {
            b.iter_custom(|iters| {
                let (s, k, v) = (s.clone(), k.clone(), v.clone());
                parallel(threads, iters, move |t, i| {
                    let key = &k[(i as usize * 7 + t * 31) % KEYS];
                    black_box(s.shard(key).write().unwrap().insert(key.clone(), v.clone()));
                })
            });
        });
        let (m, k, v) = (skip.clone(), keys.clone(), value.clone());
        g.bench_function(format!("epoch-skiplist/put/{threads}t"), |b| {
            b.iter_custom(|iters| {
                let (m, k, v) = (m.clone(), k.clone(), v.clone());
                parallel(threads, iters, move |t, i| {
                    let key = &k[(i as usize * 7 + t * 31) % KEYS];
                    black_box(m.insert(key.clone(), v.clone()));
                })
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = engine, schemes
}
criterion_main!(benches);
