//! Benchmarks for the Jupiter workspace.
//!
//! # Layout
//!
//! - `benches/*.rs`: criterion micro-benchmarks (`cargo bench -p benches`).
//!   - `metrics`: one histogram observation in `prometheus` vs `prometheus-client` (1 thread and
//!     contended), the clock, and jupiter-core's recorder guard.
//! - `src/bin/compare.rs`: the comparison runner (`cargo run -p benches --release --bin compare
//!   -- <suite>`): our code and a peer measured side by side in one run, printed as ratios,
//!   because absolute times on shared machines are not comparable across runs.
//! - this library: the runner's measuring and reporting helpers, and the suites' workloads
//!   ([`redis_suite`]).
//!
//! # Example
//!
//! ```
//! use benches::{Report, measure_ns};
//!
//! let mut report = Report::new("example", "ns/op");
//! let ours = measure_ns(10_000, 3, || { std::hint::black_box(1 + 1); });
//! let peer = measure_ns(10_000, 3, || { std::hint::black_box(2 * 2); });
//! report.row("add", ours, peer, true);
//! assert!(report.render().contains("add"));
//! ```

pub mod loadtest_suite;
pub mod objstore_suite;
pub mod redis_suite;

use std::fmt::Write as _;
use std::time::Instant;

/// `n` scaled by `BENCH_SCALE` (a fraction, default 1; at least 1): the smoke test runs every
/// suite on tiny sizes with `BENCH_SCALE=0.01`.
pub fn scaled(n: usize) -> usize {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    ((n as f64 * scale) as usize).max(1)
}

/// CPU seconds (user + system) another process has used so far, from `/proc/<pid>/stat`; 0
/// when it cannot be read.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime, in clock ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

/// Binds a loopback port and runs `serve` on its listener, on a one-thread runtime of its own
/// (a server for a bench, apart from the runtime under test); returns the address.
pub fn serve_on_thread<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            serve(tokio::net::TcpListener::from_std(listener).expect("listener")).await
        });
    });
    addr
}

/// Puts a server process on the last CPU and this thread (and every thread it starts later)
/// on the others, so a client and its server do not share a core; `BENCH_PIN=0` turns it
/// off. Returns what it did, for the report's heading. On a 2-core machine the scheduler
/// otherwise moves both now and then onto one core, and a run's ratio swings by 2× with it.
pub fn pin_apart(server_pid: u32) -> String {
    if std::env::var("BENCH_PIN").is_ok_and(|v| v == "0") {
        return "not pinned".into();
    }
    // SAFETY: the sets are plain bit arrays initialised by CPU_ZERO/CPU_SET, and
    // sched_{get,set}affinity read or fill one of the size passed.
    unsafe {
        let mut mine: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut mine) != 0 {
            return "not pinned (sched_getaffinity failed)".into();
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &mine))
            .collect();
        let Some((&last, rest)) = cpus.split_last() else {
            return "not pinned".into();
        };
        if rest.is_empty() {
            return "not pinned (one CPU)".into();
        }
        let mut server: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(last, &mut server);
        let mut client: libc::cpu_set_t = std::mem::zeroed();
        for &c in rest {
            libc::CPU_SET(c, &mut client);
        }
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_setaffinity(server_pid as libc::pid_t, size, &server) != 0
            || libc::sched_setaffinity(0, size, &client) != 0
        {
            return "not pinned (sched_setaffinity failed)".into();
        }
        format!("server on CPU {last}, clients on CPUs {rest:?}")
    }
}

/// Runs `f` `iters` times per round, `rounds` rounds, and returns the best round's mean in
/// nanoseconds per call (the least disturbed by other work on a noisy machine).
pub fn measure_ns(iters: u64, rounds: u32, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let ns = start.elapsed().as_nanos() as f64 / iters as f64;
        best = best.min(ns);
    }
    best
}

/// A side-by-side table: one row per case, our figure, the peer's, and the ratio.
#[derive(Debug)]
pub struct Report {
    title: String,
    unit: String,
    rows: Vec<Row>,
}

#[derive(Debug)]
struct Row {
    case: String,
    ours: f64,
    peer: f64,
    lower_is_better: bool,
}

impl Report {
    /// A report titled `title`, figures in `unit`.
    pub fn new(title: &str, unit: &str) -> Self {
        Report {
            title: title.to_owned(),
            unit: unit.to_owned(),
            rows: Vec::new(),
        }
    }

    /// Adds a row. `lower_is_better` for times and costs, not for throughput.
    pub fn row(&mut self, case: &str, ours: f64, peer: f64, lower_is_better: bool) {
        self.rows.push(Row {
            case: case.to_owned(),
            ours,
            peer,
            lower_is_better,
        });
    }

    /// How many times better ours is than the peer (>1 is better), per row.
    pub fn advantages(&self) -> Vec<(String, f64)> {
        self.rows
            .iter()
            .map(|r| {
                let adv = if r.lower_is_better {
                    r.peer / r.ours
                } else {
                    r.ours / r.peer
                };
                (r.case.clone(), adv)
            })
            .collect()
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "## {}\n\n| case | ours ({u}) | peer ({u}) | ours vs peer |\n|---|---:|---:|---:|\n",
            self.title,
            u = self.unit
        );
        for (r, (_, adv)) in self.rows.iter().zip(self.advantages()) {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:.2}x {} |",
                r.case,
                r.ours,
                r.peer,
                adv,
                if adv >= 1.0 { "better" } else { "worse" }
            );
        }
        out
    }
}
