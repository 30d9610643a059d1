//! Redis clients side by side: ours, fred, redis-rs (multiplexed connection), on the same
//! redis-server in one run; and the same three in cluster mode on one 6-node Redis Cluster
//! (redis-rs through `cluster-async`).
//!
//! Workload: 50/50 GET/SET of 64-byte values over 10k keys (100k on the cluster), N concurrent
//! tasks on a one-worker tokio runtime. Figures: operations per second and client CPU per
//! operation (`getrusage` of this process: user + system; the servers are other processes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One client's result at one concurrency.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Client CPU time per operation, microseconds.
    pub cpu_us_per_op: f64,
}

const KEYS: usize = 10_000;
/// Keys of the cluster workload, spread over every slot.
pub const CLUSTER_KEYS: usize = 100_000;

fn keys() -> Arc<Vec<String>> {
    keys_n(KEYS)
}

fn keys_n(n: usize) -> Arc<Vec<String>> {
    Arc::new((0..n).map(|i| format!("bench:key:{i}")).collect())
}

fn value() -> Bytes {
    Bytes::from(vec![b'v'; 64])
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `tasks` copies of `op` on a one-worker runtime for `duration`. Each task gets its own
/// state from `make` once; `op` borrows it, so the harness adds no per-operation clones.
fn measure<S, M, F>(
    rt: &tokio::runtime::Runtime,
    tasks: usize,
    duration: Duration,
    make: M,
    op: F,
) -> Sample
where
    S: Send + 'static,
    M: Fn() -> S,
    F: for<'a> AsyncOp<'a, S> + Clone + Send + 'static,
{
    let ops = Arc::new(AtomicU64::new(0));
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let deadline = tokio::time::Instant::now() + duration;
    rt.block_on(async {
        let mut handles = Vec::with_capacity(tasks);
        for t in 0..tasks {
            let (op, ops, mut state) = (op.clone(), ops.clone(), make());
            handles.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(t as u64 + 1);
                let mut n = 0u64;
                // The clock is read every 16 operations: the harness must not dominate.
                while !n.is_multiple_of(16) || tokio::time::Instant::now() < deadline {
                    op.call(&mut state, rng.u64(..)).await;
                    n += 1;
                }
                ops.fetch_add(n, Ordering::Relaxed);
            }));
        }
        for h in handles {
            h.await.expect("bench task");
        }
    });
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    let n = ops.load(Ordering::Relaxed) as f64;
    Sample {
        ops_per_sec: n / wall.as_secs_f64(),
        cpu_us_per_op: cpu.as_secs_f64() * 1e6 / n,
    }
}

/// [`measure`] with each task's state a clone of `client`, the key list and the value.
fn per_task<C, F>(
    rt: &tokio::runtime::Runtime,
    client: C,
    keys: Arc<Vec<String>>,
    tasks: usize,
    duration: Duration,
    op: F,
) -> Sample
where
    C: Clone + Send + 'static,
    F: for<'a> AsyncOp<'a, (C, Arc<Vec<String>>, Bytes)> + Clone + Send + 'static,
{
    let value = value();
    measure(
        rt,
        tasks,
        duration,
        move || (client.clone(), keys.clone(), value.clone()),
        op,
    )
}

/// An async operation on borrowed per-task state.
pub trait AsyncOp<'a, S: 'a> {
    /// Its future.
    type Fut: std::future::Future<Output = ()> + Send + 'a;
    /// Runs one operation with the random number `r`.
    fn call(&self, state: &'a mut S, r: u64) -> Self::Fut;
}

impl<'a, S: 'a, F, Fut> AsyncOp<'a, S> for F
where
    F: Fn(&'a mut S, u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'a,
{
    type Fut = Fut;
    fn call(&self, state: &'a mut S, r: u64) -> Fut {
        self(state, r)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Profiling aids for our client: `BENCH_POOL` (connections per server), `BENCH_NO_METRICS`,
/// `BENCH_NO_TIMEOUT`. The comparison runs with none of them set.
fn with_knobs(config: &mut redis_client::ClientConfig) {
    if let Some(pool) = std::env::var("BENCH_POOL")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        config.pool_size = Some(pool);
    }
    config.metrics = std::env::var_os("BENCH_NO_METRICS").is_none();
    if std::env::var_os("BENCH_NO_TIMEOUT").is_some() {
        config.command_timeout = Duration::ZERO;
    }
}

/// Ours, default configuration.
pub fn ours(url: &str, tasks: usize, duration: Duration) -> Sample {
    let rt = runtime();
    let mut config = redis_client::ClientConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    with_knobs(&mut config);
    let client = rt
        .block_on(redis_client::Client::builder().config(config).connect())
        .expect("our client connects");
    per_task(&rt, client, keys(), tasks, duration, ours_op)
}

async fn ours_op(s: &mut (redis_client::Client, Arc<Vec<String>>, Bytes), r: u64) {
    let (client, keys, value) = s;
    let key = keys[(r % keys.len() as u64) as usize].as_str();
    if r & (1 << 40) == 0 {
        let _: Option<Bytes> = client.get(key).await.expect("GET");
    } else {
        client.set(key, &*value).await.expect("SET");
    }
}

/// fred, default configuration (auto-pipelining on), one connection.
pub fn fred(url: &str, tasks: usize, duration: Duration) -> Sample {
    use fred::prelude::*;
    let rt = runtime();
    let client = rt.block_on(async {
        let client = Builder::from_config(Config::from_url(url).expect("url"))
            .build()
            .expect("fred builds");
        client.init().await.expect("fred connects");
        client
    });
    per_task(&rt, client, keys(), tasks, duration, fred_op)
}

async fn fred_op(s: &mut (fred::clients::Client, Arc<Vec<String>>, Bytes), r: u64) {
    use fred::prelude::*;
    let (client, keys, value) = s;
    let key = keys[(r % keys.len() as u64) as usize].as_str();
    if r & (1 << 40) == 0 {
        let _: Option<Bytes> = client.get(key).await.expect("GET");
    } else {
        let _: () = client
            .set(key, value.clone(), None, None, false)
            .await
            .expect("SET");
    }
}

/// redis-rs, one multiplexed connection.
pub fn redis_rs(url: &str, tasks: usize, duration: Duration) -> Sample {
    let rt = runtime();
    let conn = rt.block_on(async {
        redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis-rs connects")
    });
    per_task(&rt, conn, keys(), tasks, duration, redis_rs_op)
}

/// redis-rs's API (`AsyncCommands`, the same calls as [`redis_rs`]) on our engine: the cost of
/// redis-rs's command building and `redis::Value` conversion over ours.
pub fn ours_redis_rs(url: &str, tasks: usize, duration: Duration) -> Sample {
    let rt = runtime();
    let mut config = redis_client::ClientConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    with_knobs(&mut config);
    let conn = rt
        .block_on(redis_client::Client::builder().config(config).connect())
        .expect("our client connects")
        .redis_rs();
    per_task(&rt, conn, keys(), tasks, duration, redis_rs_op)
}

async fn redis_rs_op<C: redis::AsyncCommands + Sync>(s: &mut (C, Arc<Vec<String>>, Bytes), r: u64) {
    let (conn, keys, value) = s;
    let key = keys[(r % keys.len() as u64) as usize].as_str();
    if r & (1 << 40) == 0 {
        let _: Option<Vec<u8>> = conn.get(key).await.expect("GET");
    } else {
        let _: () = conn.set(key, &value[..]).await.expect("SET");
    }
}

/// Ours in cluster mode, default configuration, seeded with every node.
pub fn ours_cluster(seeds: &[String], tasks: usize, duration: Duration) -> Sample {
    let rt = runtime();
    let mut config = redis_client::ClientConfig {
        cluster: true,
        urls: seeds.to_vec(),
        ..Default::default()
    };
    with_knobs(&mut config);
    let client = rt
        .block_on(redis_client::Client::builder().config(config).connect())
        .expect("our cluster client connects");
    per_task(&rt, client, keys_n(CLUSTER_KEYS), tasks, duration, ours_op)
}

/// fred in cluster mode, default configuration.
pub fn fred_cluster(seeds: &[String], tasks: usize, duration: Duration) -> Sample {
    use fred::prelude::*;
    let rt = runtime();
    let client = rt.block_on(async {
        let config = Config::from_url_clustered(&seeds[0]).expect("url");
        let client = Builder::from_config(config).build().expect("fred builds");
        client.init().await.expect("fred connects to the cluster");
        client
    });
    per_task(&rt, client, keys_n(CLUSTER_KEYS), tasks, duration, fred_op)
}

/// redis-rs `cluster-async`, one connection handle (multiplexed per node).
pub fn redis_rs_cluster(seeds: &[String], tasks: usize, duration: Duration) -> Sample {
    let rt = runtime();
    let conn = rt.block_on(async {
        redis::cluster::ClusterClient::new(seeds.to_vec())
            .expect("urls")
            .get_async_connection()
            .await
            .expect("redis-rs connects to the cluster")
    });
    per_task(
        &rt,
        conn,
        keys_n(CLUSTER_KEYS),
        tasks,
        duration,
        redis_rs_op,
    )
}
