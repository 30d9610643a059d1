//! Rate accuracy: constant-arrival-rate 2,000/s for 10 s delivers 20,000 ± 1% requests, as
//! counted by the server.

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
        duration = "10s"

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
    println!(
        "served {served}, reported {} in {:.2} s, dropped {}, failed {}",
        s.summary.requests, s.duration_s, s.dropped_iterations, s.summary.failed
    );
    assert_eq!(outcome, loadtest::Outcome::Passed);
    // The shadow probe is one request more.
    assert!(
        (19_800..=20_200).contains(&s.summary.requests),
        "{}",
        s.summary.requests
    );
    assert_eq!(s.summary.requests + 1, served);
    assert_eq!(s.summary.failed, 0, "{:?}", s.summary.errors);
    assert_eq!(s.dropped_iterations, 0);
    // Every request carried the shadow tag (the probe is one more).
    assert_eq!(server.shadow_hits.load(Ordering::Relaxed), served);
    // Per-second series: about 2,000 a second.
    let full: Vec<u64> = report.series.iter().take(9).map(|p| p.requests).collect();
    assert!(full.iter().all(|n| (1_900..=2_100).contains(n)), "{full:?}");
}
