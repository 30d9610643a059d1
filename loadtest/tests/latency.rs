//! Latency truth: against a server that answers after exactly 5 ms, the reported median is
//! within 10% of 5 ms, in the closed and in the open model.

mod common;

use std::time::Duration;

use common::{Behavior, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn median_matches_a_fixed_server_delay() {
    let server = Server::start(Behavior::Delay(Duration::from_millis(5)), true);
    let (report, outcome) = common::run(&format!(
        r#"
        [targets.api]
        kind = "http"
        url = "{url}"

        [[scenarios]]
        name = "closed"
        executor = "constant-vus"
        vus = 4
        duration = "3s"
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}

        [[scenarios]]
        name = "open"
        executor = "constant-arrival-rate"
        rate = 200
        duration = "3s"
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}
        "#,
        url = server.url()
    ))
    .await;
    assert_eq!(outcome, loadtest::Outcome::Passed);
    for s in &report.scenarios {
        let p50 = s.summary.latency_ms.p50;
        println!(
            "{}: {} requests, p50 {p50:.3} ms, p99 {:.3} ms, service p50 {:.3} ms",
            s.name, s.summary.requests, s.summary.latency_ms.p99, s.summary.service_time_ms.p50
        );
        assert!(s.summary.requests > 300, "{}", s.summary.requests);
        assert!((4.5..=5.5).contains(&p50), "{}: p50 {p50} ms", s.name);
    }
}
