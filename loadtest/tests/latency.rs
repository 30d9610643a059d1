//! Latency truth: against a server that answers after 5 ms, the reported latencies are never
//! below that delay, and each request's latency is at least its service time, in the closed
//! and in the open model. (No upper band: a loaded CI machine adds its own delay; how close to
//! 5 ms the median comes is a benchmark's figure, not a test's.)

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
        // The server's delay is a floor: a median under it would be a measurement error.
        assert!(
            p50 >= 5.0,
            "{}: p50 {p50} ms under the server's 5 ms",
            s.name
        );
        // Latency counts from the planned start, service time from the send: per request
        // latency ≥ service time, so every quantile keeps that order.
        assert!(
            p50 >= s.summary.service_time_ms.p50 && s.summary.latency_ms.p99 >= p50,
            "{}: p50 {p50} ms, service p50 {} ms, p99 {} ms",
            s.name,
            s.summary.service_time_ms.p50,
            s.summary.latency_ms.p99
        );
    }
}
