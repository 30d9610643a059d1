//! Comparison runner: our code and a peer, side by side in one run, as ratios.
//!
//! `cargo run -p benches --release --bin compare -- [suite ...]`; no suite runs them all.
//! Suites: `metrics` (jupiter-core's recorder guard vs Go-Jupiter-style per-call label lookup
//! with the `prometheus` crate).

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use benches::{Report, measure_ns};
use jupiter_core::metrics::{Code, HANDLE_BUCKETS, Metrics};

const SUITES: &[&str] = &["metrics"];

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

    const N: u64 = 2_000_000;
    let o = measure_ns(N, 5, || ours.start().finish(Code::OK));
    let p = measure_ns(N, 5, || {
        let t = std::time::Instant::now();
        peer_record(black_box(t.elapsed().as_secs_f64()));
    });
    report.row("guard: time + observe + count, 1 thread", o, p, true);

    let o = measure_ns(N, 5, || {
        ours.observe(black_box(Duration::from_micros(420)), Code::OK)
    });
    let p = measure_ns(N, 5, || peer_record(black_box(0.000_42)));
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
        let r = measure_ns(N, 5, || {
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
        let r = measure_ns(N, 5, || peer_record(black_box(0.000_42)));
        stop.store(true, Ordering::Relaxed);
        bg.join().unwrap();
        r
    };
    report.row("observe only, 2 threads on one series", o, p, true);
    report
}
