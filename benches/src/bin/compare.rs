//! Comparison runner: our code and a peer, side by side in one run, as ratios.
//!
//! `cargo run -p benches --release --bin compare -- [suite ...]`; no suite runs them all.
//! Suites: `metrics` (jupiter-core's recorder guard vs Go-Jupiter-style per-call label lookup
//! with the `prometheus` crate); `redis` (our client vs fred and redis-rs on one redis-server
//! started here, and redis-rs's API on our engine through the `redis-rs` feature;
//! `BENCH_SECONDS` sets the time per measurement, default 3); `redis-cluster`
//! (the same three in cluster mode on one 6-node cluster started here, redis-rs through
//! `cluster-async`: 64 and 512 tasks, 100k keys); `loadtest` (the
//! load generator vs wrk, oha and redis-benchmark in requests per CPU-second; build it first
//! with `cargo build --release -p loadtest`); `loadtest-memory` (the generator's resident
//! memory at 1 minute and at the end of a 10-minute run at 5,000 requests/s); `objstore` (gRPC vs an empty service of the same
//! API, memory per object and restore time vs redis-server; build `objstore` first).

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use benches::{Report, measure_ns};
use jupiter_core::metrics::{Code, HANDLE_BUCKETS, Metrics};

const SUITES: &[&str] = &[
    "metrics",
    "redis",
    "redis-cluster",
    "loadtest",
    "loadtest-memory",
    "objstore",
    "objstore-resp",
    "objstore-memory",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let chosen: Vec<&str> = if args.is_empty() {
        SUITES.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for suite in chosen {
        match suite {
            "metrics" => println!("{}", metrics_suite().render()),
            "redis" => redis_suite(),
            "redis-cluster" => redis_cluster_suite(),
            "loadtest" => benches::loadtest_suite::loadtest_suite(),
            "loadtest-memory" => benches::loadtest_suite::memory_suite(),
            "objstore" => benches::objstore_suite::objstore_suite(),
            "objstore-resp" => benches::objstore_suite::resp_suite(),
            "objstore-memory" => benches::objstore_suite::memory_suite(),
            other => {
                eprintln!(
                    "compare: unknown suite {other:?}; known: {}",
                    SUITES.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

/// Go Jupiter records each call with `WithLabelValues(...)` on the histogram and the counter;
/// the peer here does the same with the `prometheus` crate. Ours resolves the series once.
fn metrics_suite() -> Report {
    let mut report = Report::new(
        "metrics: one recorded call (histogram + counter)",
        "ns/call",
    );
    let ours_metrics = Metrics::new();
    let ours = ours_metrics.client("redis", "main", "GET", "127.0.0.1:6379");
    let registry = prometheus::Registry::new();
    let hist = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new("client_handle_seconds", "h")
            .buckets(HANDLE_BUCKETS.to_vec()),
        &["type", "name", "method", "peer"],
    )
    .unwrap();
    let total = prometheus::IntCounterVec::new(
        prometheus::Opts::new("client_handle_total", "c"),
        &["type", "name", "method", "peer", "code"],
    )
    .unwrap();
    registry.register(Box::new(hist.clone())).unwrap();
    registry.register(Box::new(total.clone())).unwrap();
    let peer_record = {
        move |secs: f64| {
            hist.with_label_values(&["redis", "main", "GET", "127.0.0.1:6379"])
                .observe(secs);
            total
                .with_label_values(&["redis", "main", "GET", "127.0.0.1:6379", "OK"])
                .inc();
        }
    };

    let n = benches::scaled(2_000_000) as u64;
    let o = measure_ns(n, 5, || ours.start().finish(Code::OK));
    let p = measure_ns(n, 5, || {
        let t = std::time::Instant::now();
        peer_record(black_box(t.elapsed().as_secs_f64()));
    });
    report.row("guard: time + observe + count, 1 thread", o, p, true);

    let o = measure_ns(n, 5, || {
        ours.observe(black_box(Duration::from_micros(420)), Code::OK)
    });
    let p = measure_ns(n, 5, || peer_record(black_box(0.000_42)));
    report.row("observe only, 1 thread", o, p, true);

    // Contended: a second thread records into the same series meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let o = {
        let (ours2, stop2) = (ours.clone(), stop.clone());
        let bg = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                ours2.observe(Duration::from_micros(100), Code::OK);
            }
        });
        let r = measure_ns(n, 5, || {
            ours.observe(black_box(Duration::from_micros(420)), Code::OK)
        });
        stop.store(true, Ordering::Relaxed);
        bg.join().unwrap();
        r
    };
    stop.store(false, Ordering::Relaxed);
    let p = {
        let stop2 = stop.clone();
        let peer2 = peer_record.clone();
        let bg = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                peer2(0.0001);
            }
        });
        let r = measure_ns(n, 5, || peer_record(black_box(0.000_42)));
        stop.store(true, Ordering::Relaxed);
        bg.join().unwrap();
        r
    };
    report.row("observe only, 2 threads on one series", o, p, true);
    report
}

fn redis_suite() {
    use benches::redis_suite::{fred, ours, ours_redis_rs, redis_rs};
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let d = std::time::Duration::from_secs(secs);
    let server = testkit::RedisServer::start();
    let url = server.url();
    let pinned = benches::pin_apart(server.pid().unwrap_or(0));
    println!(
        "## redis: 50/50 GET/SET, 64-byte values, 10k keys, 1-worker runtime, {secs}s each, median of BENCH_ROUNDS rounds, {pinned}\n"
    );
    println!("| tasks | client | ops/s | CPU µs/op | ops/s vs redis-rs | ops/s vs fred |");
    println!("|---:|---|---:|---:|---:|---:|");
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        // Profiling aid: one client, one concurrency (BENCH_TASKS, default 64).
        let tasks: usize = std::env::var("BENCH_TASKS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(64);
        let server_cpu = || benches::process_cpu_seconds(server.pid().unwrap_or(0));
        let before = server_cpu();
        let s = match only.as_str() {
            "ours" => ours(&url, tasks, d),
            "ours-redis-rs" => ours_redis_rs(&url, tasks, d),
            "fred" => fred(&url, tasks, d),
            _ => redis_rs(&url, tasks, d),
        };
        let server_us = (server_cpu() - before) * 1e6 / (s.ops_per_sec * d.as_secs_f64());
        println!(
            "{only} at {tasks} tasks: {:.0} ops/s, {:.2} CPU µs/op (server {server_us:.2} µs/op)",
            s.ops_per_sec, s.cpu_us_per_op
        );
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut spreads = Vec::new();
    for tasks in [1usize, 64, 512] {
        // Interleaved rounds, medians: drift in the machine's load hits all three alike.
        let (mut rs, mut fs, mut os, mut ors) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            rs.push(redis_rs(&url, tasks, d));
            fs.push(fred(&url, tasks, d));
            os.push(ours(&url, tasks, d));
            ors.push(ours_redis_rs(&url, tasks, d));
        }
        spreads.push(format!(
            "{tasks} tasks: ours {}; redis-rs API {}",
            round_ratios(&os, &rs),
            round_ratios(&ors, &rs)
        ));
        let (r, f, o, or) = (median(rs), median(fs), median(os), median(ors));
        for (name, s) in [
            ("ours", o),
            ("ours, redis-rs API", or),
            ("fred", f),
            ("redis-rs", r),
        ] {
            println!(
                "| {tasks} | {name} | {:.0} | {:.2} | {:.2}x | {:.2}x |",
                s.ops_per_sec,
                s.cpu_us_per_op,
                s.ops_per_sec / r.ops_per_sec,
                s.ops_per_sec / f.ops_per_sec
            );
        }
    }
    print_spreads(&spreads);
}

fn redis_cluster_suite() {
    use benches::redis_suite::{CLUSTER_KEYS, fred_cluster, ours_cluster, redis_rs_cluster};
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let d = std::time::Duration::from_secs(secs);
    let cluster = testkit::RedisCluster::start();
    let seeds: Vec<String> = cluster.seed_urls();
    println!(
        "## redis-cluster: 6 nodes (3 primaries), 50/50 GET/SET, 64-byte values, {CLUSTER_KEYS} keys, 1-worker runtime, {secs}s each, median of {rounds} rounds\n"
    );
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        // Profiling aid: one client, one concurrency (BENCH_TASKS, default 64).
        let tasks: usize = std::env::var("BENCH_TASKS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(64);
        let (s, per_read, server_us) = on_cluster(&cluster, d, &|| match only.as_str() {
            "ours" => ours_cluster(&seeds, tasks, d),
            "fred" => fred_cluster(&seeds, tasks, d),
            _ => redis_rs_cluster(&seeds, tasks, d),
        });
        println!(
            "{only} at {tasks} tasks: {:.0} ops/s, {:.2} CPU µs/op (servers {server_us:.2} µs/op, {per_read:.1} commands per read)",
            s.ops_per_sec, s.cpu_us_per_op
        );
        return;
    }
    println!(
        "| tasks | client | ops/s | CPU µs/op | ops/s vs redis-rs | ops/s vs fred | CPU/op vs redis-rs | commands per server read | servers' CPU µs/op |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut spreads = Vec::new();
    for tasks in [64usize, 512] {
        let (mut rs, mut fs, mut os) = (Vec::new(), Vec::new(), Vec::new());
        let mut batches = [Vec::new(), Vec::new(), Vec::new()];
        let mut server_cpu = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..rounds {
            let mut run = |i: usize, f: &dyn Fn() -> benches::redis_suite::Sample| {
                let (s, per_read, server_us) = on_cluster(&cluster, d, f);
                batches[i].push(per_read);
                server_cpu[i].push(server_us);
                s
            };
            rs.push(run(2, &|| redis_rs_cluster(&seeds, tasks, d)));
            fs.push(run(1, &|| fred_cluster(&seeds, tasks, d)));
            os.push(run(0, &|| ours_cluster(&seeds, tasks, d)));
        }
        spreads.push(format!("{tasks} tasks: ours {}", round_ratios(&os, &rs)));
        let (r, f, o) = (median(rs), median(fs), median(os));
        for (i, (name, s)) in [("ours", o), ("fred", f), ("redis-rs", r)]
            .into_iter()
            .enumerate()
        {
            batches[i].sort_by(f64::total_cmp);
            server_cpu[i].sort_by(f64::total_cmp);
            println!(
                "| {tasks} | {name} | {:.0} | {:.2} | {:.2}x | {:.2}x | {:.2}x | {:.1} | {:.2} |",
                s.ops_per_sec,
                s.cpu_us_per_op,
                s.ops_per_sec / r.ops_per_sec,
                s.ops_per_sec / f.ops_per_sec,
                s.cpu_us_per_op / r.cpu_us_per_op,
                batches[i][batches[i].len() / 2],
                server_cpu[i][server_cpu[i].len() / 2]
            );
        }
    }
    print_spreads(&spreads);
}

/// Each round's ops/s ratio of `ours` to `peer` (rounds are interleaved, so a pair shares the
/// machine's state): the spread the medians above hide, sorted.
fn round_ratios(
    ours: &[benches::redis_suite::Sample],
    peer: &[benches::redis_suite::Sample],
) -> String {
    let mut r: Vec<f64> = ours
        .iter()
        .zip(peer)
        .map(|(o, p)| o.ops_per_sec / p.ops_per_sec)
        .collect();
    r.sort_by(f64::total_cmp);
    r.iter()
        .map(|x| format!("{x:.2}x"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_spreads(spreads: &[String]) {
    println!("\nops/s vs redis-rs, round by round (sorted):");
    for s in spreads {
        println!("- {s}");
    }
}

/// Runs one client's measurement `f` (of `d`) on `cluster`; with it, the commands per primary
/// read and the servers' CPU µs per operation during it.
fn on_cluster(
    cluster: &testkit::RedisCluster,
    d: std::time::Duration,
    f: &dyn Fn() -> benches::redis_suite::Sample,
) -> (benches::redis_suite::Sample, f64, f64) {
    let (counts, cpu) = (server_counts(cluster), cluster_cpu(cluster));
    let s = f();
    let cpu = cluster_cpu(cluster) - cpu;
    let after = server_counts(cluster);
    let per_read = (after.0 - counts.0) as f64 / (after.1 - counts.1).max(1) as f64;
    (s, per_read, cpu * 1e6 / (s.ops_per_sec * d.as_secs_f64()))
}

/// CPU seconds used so far by every node of the cluster, replicas included (they apply the
/// primaries' writes).
fn cluster_cpu(cluster: &testkit::RedisCluster) -> f64 {
    cluster
        .nodes()
        .iter()
        .map(|n| benches::process_cpu_seconds(n.pid().unwrap_or(0)))
        .sum()
}

/// Commands processed and socket reads done, summed over the cluster's primaries: their
/// ratio is the batch a server got per read (the server's cost per command falls with it).
fn server_counts(cluster: &testkit::RedisCluster) -> (u64, u64) {
    let mut sum = (0, 0);
    for node in cluster.masters() {
        let Ok(testkit::Reply::Bulk(Some(info))) = node.command(&["INFO", "stats"]) else {
            continue;
        };
        for line in String::from_utf8_lossy(&info).lines() {
            let field = |name: &str| -> Option<u64> {
                line.strip_prefix(name).and_then(|v| v.trim().parse().ok())
            };
            if let Some(n) = field("total_commands_processed:") {
                sum.0 += n;
            } else if let Some(n) = field("total_reads_processed:") {
                sum.1 += n;
            }
        }
    }
    sum
}

fn median(mut v: Vec<benches::redis_suite::Sample>) -> benches::redis_suite::Sample {
    v.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    let ops = v[v.len() / 2].ops_per_sec;
    let mut cpu: Vec<f64> = v.iter().map(|s| s.cpu_us_per_op).collect();
    cpu.sort_by(f64::total_cmp);
    benches::redis_suite::Sample {
        ops_per_sec: ops,
        cpu_us_per_op: cpu[cpu.len() / 2],
    }
}
