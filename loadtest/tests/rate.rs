//! Rate: constant-arrival-rate 2,000/s for 1 s delivers exactly 2,000 requests, as counted by
//! the server, every one tagged, none dropped and none failed.
//!
//! Only counts are asserted. When each arrival is due, and how many fall in each interval, is
//! the pacer's schedule, tested exactly on a virtual clock (`run.rs`); how closely a real
//! machine keeps to it per second is a benchmark's figure (`compare loadtest`, "accuracy").

mod common;

use std::sync::atomic::Ordering;

use common::{Behavior, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_arrival_rate_delivers_the_planned_count() {
    let server = Server::start(Behavior::Fast, true);
    let (report, outcome) = common::run(&format!(
        r#"
        [targets.api]
        kind = "http"
        url = "{}"
        connections = 64

        [[scenarios]]
        name = "steady"
        executor = "constant-arrival-rate"
        rate = 2000
        duration = "1s"

        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/r/{{{{seq}}}}" }}
        checks = {{ status = [200], body-contains = "ok", headers = {{ content-type = "text/plain" }} }}
        "#,
        server.url()
    ))
    .await;
    let served = server.hits.load(Ordering::Relaxed);
    let s = &report.scenarios[0];
    assert_eq!(outcome, loadtest::Outcome::Passed);
    // 2,000/s × 1 s. None can be dropped: the 1,000 workers and the queue of 1,000 hold all
    // 2,000 at once, however slow the machine.
    assert_eq!(s.summary.requests, 2000);
    assert_eq!(s.dropped_iterations, 0);
    assert_eq!(s.summary.failed, 0, "{:?}", s.summary.errors);
    // The shadow probe is one request more, and every request carried the tag.
    assert_eq!(served, 2001);
    assert_eq!(server.shadow_hits.load(Ordering::Relaxed), served);
    // Each arrival went out once, with its own sequence number.
    let mut seqs: Vec<u64> = server
        .paths()
        .iter()
        .filter_map(|p| p.strip_prefix("/r/")?.parse().ok())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..2000).collect::<Vec<u64>>());
    // The per-second series counts every request once.
    let in_series: u64 = report.series.iter().map(|p| p.requests).sum();
    assert_eq!(in_series, 2000, "{:?}", report.series);
}
