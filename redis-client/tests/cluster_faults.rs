//! The cluster changing under load: live resharding, a manual failover and a killed primary,
//! against testkit's real 6-node cluster, with mixed GET/SET/MGET running through the client
//! the whole time.
//!
//! Each worker task owns its keys (one hash tag, so its `MGET` is one slot), writes
//! increasing values and remembers the last one acknowledged: every read must return it.
//! The scenarios run one at a time (a static lock): each drives six servers and the load on
//! a 2-core machine.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis_client::{Client, ClientConfig, ClusterStats, key_slot};
use testkit::RedisCluster;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WORKERS: usize = 16;
const KEYS_PER_WORKER: usize = 8;
/// Most operations one worker runs (load loops are bounded in count as well as time).
const MAX_OPS: u64 = 5_000_000;

async fn connect(cluster: &RedisCluster, timeout: Duration) -> Client {
    common::connect(ClientConfig {
        command_timeout: timeout,
        ..common::cluster_config(cluster)
    })
    .await
    .unwrap()
}

/// Hash tags whose slots are in `range`, one per worker, each in a different slot.
fn tags_in(range: std::ops::Range<u16>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    (0u64..)
        .map(|i| format!("w{i}"))
        .filter(|t| {
            let s = key_slot(t.as_bytes());
            range.contains(&s) && seen.insert(s)
        })
        .take(WORKERS)
        .collect()
}

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
    /// Set once the event (resharding, failover) is over: operations after it count here.
    after: AtomicU64,
}

/// The workers running, and what they counted.
struct Load {
    stop: Arc<AtomicBool>,
    over: Arc<AtomicBool>,
    tally: Arc<Tally>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    started: std::time::Instant,
}

impl Load {
    /// Starts a worker per tag and lets 2,000 operations run before the event.
    async fn start(client: &Client, tags: &[String], op_timeout: Duration) -> Load {
        let (stop, over, tally) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(Tally::default()),
        );
        let started = std::time::Instant::now();
        let workers = spawn_load(client, tags, &stop, &over, &tally, op_timeout);
        run_ops_until(&tally, 2_000).await;
        Load {
            stop,
            over,
            tally,
            workers,
            started,
        }
    }

    fn ops(&self) -> u64 {
        self.tally.ops.load(Ordering::Relaxed)
    }

    fn errors(&self) -> Vec<String> {
        self.tally.errors.lock().unwrap().clone()
    }

    /// Marks the event over and lets `more` operations run after it; then stops the workers
    /// and reports.
    async fn finish(self, what: &str, client: &Client, more: u64) -> (Vec<String>, ClusterStats) {
        self.over.store(true, Ordering::Relaxed);
        run_ops_until(&self.tally, more).await;
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let stats = client.cluster_stats().unwrap();
        report(what, &self.tally, self.started.elapsed(), stats);
        assert!(self.tally.after.load(Ordering::Relaxed) >= more);
        (self.tally.errors.lock().unwrap().clone(), stats)
    }
}

/// Runs the workers until `stop`; each checks every read against its own last write.
fn spawn_load(
    client: &Client,
    tags: &[String],
    stop: &Arc<AtomicBool>,
    event_over: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
    op_timeout: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    tags.iter()
        .cloned()
        .map(|tag| {
            let (c, stop, over, tally) = (
                client.clone(),
                stop.clone(),
                event_over.clone(),
                tally.clone(),
            );
            tokio::spawn(async move {
                let keys: Vec<String> = (0..KEYS_PER_WORKER)
                    .map(|j| format!("{{{tag}}}:{j}"))
                    .collect();
                // The last value acknowledged per key; None until written.
                let mut last: Vec<Option<u64>> = vec![None; keys.len()];
                // A write whose outcome is unknown (it failed): the key may hold either value.
                let mut unsure: Vec<Option<u64>> = vec![None; keys.len()];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < MAX_OPS {
                    n += 1;
                    let j = (n as usize * 7) % keys.len();
                    let step = n % 10;
                    let r = tokio::time::timeout(op_timeout, async {
                        if step < 5 {
                            let v = n;
                            match c.set(&keys[j], v).await {
                                Ok(()) => {
                                    last[j] = Some(v);
                                    unsure[j] = None;
                                    Ok(())
                                }
                                Err(e) => {
                                    unsure[j] = Some(v);
                                    Err(e)
                                }
                            }
                        } else if step < 9 {
                            let got: Option<u64> = c.get(&keys[j]).await?;
                            check(&keys[j], got, last[j], unsure[j]);
                            if unsure[j].is_some() {
                                last[j] = got;
                                unsure[j] = None;
                            }
                            Ok(())
                        } else {
                            let got: Vec<Option<u64>> = c.mget(&keys).await?;
                            for (i, g) in got.into_iter().enumerate() {
                                check(&keys[i], g, last[i], unsure[i]);
                            }
                            Ok(())
                        }
                    })
                    .await;
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tally.errors.lock().unwrap().push(format!("{e}")),
                        Err(_) => panic!("an operation did not resolve within {op_timeout:?}"),
                    }
                    tally.ops.fetch_add(1, Ordering::Relaxed);
                    if over.load(Ordering::Relaxed) {
                        tally.after.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

/// A read returns the last acknowledged write (or, after a write whose outcome is unknown,
/// either that one or the one before).
fn check(key: &str, got: Option<u64>, last: Option<u64>, unsure: Option<u64>) {
    assert!(
        got == last || (unsure.is_some() && got == unsure),
        "{key}: read {got:?}, last acknowledged write {last:?} (unsure {unsure:?})"
    );
}

async fn run_ops_until(tally: &Tally, more: u64) {
    let target = tally.ops.load(Ordering::Relaxed) + more;
    while tally.ops.load(Ordering::Relaxed) < target {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn report(what: &str, tally: &Tally, elapsed: Duration, stats: ClusterStats) {
    let ops = tally.ops.load(Ordering::Relaxed);
    eprintln!(
        "{what}: {ops} operations in {elapsed:?} ({:.0}/s), {} errors, {stats:?}",
        ops as f64 / elapsed.as_secs_f64(),
        tally.errors.lock().unwrap().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_resharding_under_load_has_no_caller_errors() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = Arc::new(RedisCluster::start());
    let client = connect(&cluster, Duration::from_secs(10)).await;
    // Keys in slots 0..400, which node 0 serves and which move to node 1.
    let tags = tags_in(0..400);
    let from = cluster.master_of(0).unwrap().port();
    let load = Load::start(&client, &tags, Duration::from_secs(15)).await;
    let before = load.ops();

    // Small batches: slots spend a while half-migrated (ASK, TRYAGAIN).
    common::move_slots(&cluster, 0..400, from, 2).await;
    let during = load.ops() - before;
    let (errors, stats) = load.finish("resharding", &client, 2_000).await;
    assert!(errors.is_empty(), "callers saw errors: {errors:?}");
    assert!(
        during >= 1_000,
        "only {during} operations ran during the resharding"
    );
    assert!(
        stats.moved > 0,
        "the map changed under the client: {stats:?}"
    );
    assert!(
        stats.ask + stats.retried > 0,
        "half-migrated slots were met: {stats:?}"
    );
    // Every slot moved: the new owner serves them.
    let new_owner = cluster.master_of(0).unwrap().port();
    assert_ne!(new_owner, from);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_under_load_has_no_caller_errors() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = Arc::new(RedisCluster::start());
    let client = connect(&cluster, Duration::from_secs(10)).await;
    // Keys on node 0's slots, whose replica is node 3.
    let tags = tags_in(0..5461);
    let load = Load::start(&client, &tags, Duration::from_secs(15)).await;

    let c2 = cluster.clone();
    tokio::task::spawn_blocking(move || {
        let replica = &c2.nodes()[3];
        assert_eq!(replica.role().unwrap(), "slave");
        let r = replica.command(&["CLUSTER", "FAILOVER"]).unwrap();
        assert_eq!(r, testkit::Reply::Simple("OK".into()));
        replica
            .wait_role("master", Duration::from_secs(30))
            .unwrap();
        c2.nodes()[0]
            .wait_role("slave", Duration::from_secs(30))
            .unwrap();
    })
    .await
    .unwrap();
    let (errors, stats) = load.finish("manual failover", &client, 5_000).await;
    assert!(errors.is_empty(), "callers saw errors: {errors:?}");
    assert!(stats.moved > 0, "the old primary redirected: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_under_load_resolves_every_call_and_recovers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = Arc::new(RedisCluster::start());
    let timeout = Duration::from_secs(5);
    let client = connect(&cluster, timeout).await;
    let tags = tags_in(0..5461);
    // Every call resolves within the command timeout: the guard is that plus slack.
    let load = Load::start(&client, &tags, timeout + Duration::from_secs(3)).await;
    let refreshes_before = client.cluster_stats().unwrap().refreshes;

    let c2 = cluster.clone();
    tokio::task::spawn_blocking(move || {
        c2.nodes()[0].kill();
        c2.nodes()[3]
            .wait_role("master", Duration::from_secs(30))
            .unwrap();
        c2.wait_ok(Duration::from_secs(30)).unwrap();
    })
    .await
    .unwrap();
    let errors_at_recovery = load.errors().len();
    let (errors, stats) = load.finish("killed primary", &client, 5_000).await;
    // Errors only of the kinds a killed node causes, and none once the replica took over.
    for e in &errors {
        assert!(
            e.contains("lost") || e.contains("no reply within") || e.contains("connect"),
            "unexpected error: {e}"
        );
    }
    assert_eq!(
        errors.len(),
        errors_at_recovery,
        "errors after the replica was promoted: {:?}",
        &errors[errors_at_recovery..]
    );
    // Writes acknowledged after recovery are readable (every worker checked its reads), and
    // a fresh round of writes and reads on every key succeeds.
    for tag in &tags {
        for j in 0..KEYS_PER_WORKER {
            let key = format!("{{{tag}}}:{j}");
            client.set(&key, 7u64).await.unwrap();
            assert_eq!(client.get::<u64>(&key).await.unwrap(), 7);
        }
    }
    // The event asked for many refreshes; they were coalesced and rate-limited.
    let refreshes = stats.refreshes + stats.failed_refreshes - refreshes_before;
    assert!(refreshes >= 1, "the failover was noticed: {stats:?}");
    assert!(
        refreshes <= 150,
        "a refresh storm: {refreshes} refreshes ({stats:?})"
    );
    assert!(stats.unreachable > 0, "the dead node was met: {stats:?}");
}
