//! Cost of one latency observation: the two Prometheus libraries side by side (the measurement
//! that chose `prometheus` for jupiter-core), and jupiter-core's recorder guard on top of it.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;

use criterion::{Criterion, criterion_group, criterion_main};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram as PcHistogram;

const BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    r#type: &'static str,
    method: &'static str,
    peer: &'static str,
}

fn tikv_histogram() -> prometheus::Histogram {
    let vec = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new("server_handle_seconds", "help").buckets(BUCKETS.to_vec()),
        &["type", "method", "peer"],
    )
    .unwrap();
    vec.with_label_values(&["http", "GET /", "127.0.0.1"])
}

fn pc_histogram() -> PcHistogram {
    let family = Family::<Labels, PcHistogram>::new_with_constructor(|| {
        PcHistogram::new(BUCKETS.iter().copied())
    });
    family
        .get_or_create(&Labels {
            r#type: "http",
            method: "GET /",
            peer: "127.0.0.1",
        })
        .clone()
}

fn observe(c: &mut Criterion) {
    let mut g = c.benchmark_group("observe_1_thread");
    let h = tikv_histogram();
    g.bench_function("prometheus", |b| b.iter(|| h.observe(black_box(0.000_42))));
    let h = pc_histogram();
    g.bench_function("prometheus_client", |b| {
        b.iter(|| h.observe(black_box(0.000_42)))
    });
    g.finish();

    // Contended: a second thread hammers the same child while we measure.
    let mut g = c.benchmark_group("observe_contended");
    let h = tikv_histogram();
    with_contender(
        {
            let h = h.clone();
            move || h.observe(0.001)
        },
        || g.bench_function("prometheus", |b| b.iter(|| h.observe(black_box(0.000_42)))),
    );
    let h = pc_histogram();
    with_contender(
        {
            let h = h.clone();
            move || h.observe(0.001)
        },
        || {
            g.bench_function("prometheus_client", |b| {
                b.iter(|| h.observe(black_box(0.000_42)))
            })
        },
    );
    g.finish();
}

fn with_contender<R>(work: impl Fn() + Send + 'static, measure: impl FnOnce() -> R) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handle = thread::spawn({
        let stop = stop.clone();
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..1000 {
                    work();
                }
            }
        }
    });
    let _ = measure();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    handle.join().unwrap();
}

fn clocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    g.bench_function("std_instant_now", |b| b.iter(std::time::Instant::now));
    let clock = quanta::Clock::new();
    g.bench_function("quanta_now", |b| b.iter(|| clock.now()));
    g.bench_function("quanta_raw", |b| b.iter(|| clock.raw()));
    g.finish();
}

fn recorder_guard(c: &mut Criterion) {
    let metrics = jupiter_core::Metrics::new();
    let handle = metrics.client("redis", "main", "GET", "127.0.0.1:6379");
    let mut g = c.benchmark_group("recorder_guard");
    g.bench_function("start_finish_ok", |b| {
        b.iter(|| handle.start().finish(jupiter_core::metrics::Code::OK))
    });
    g.bench_function("observe_ok", |b| {
        b.iter(|| {
            handle.observe(
                black_box(std::time::Duration::from_micros(420)),
                jupiter_core::metrics::Code::OK,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, observe, clocks, recorder_guard);
criterion_main!(benches);
