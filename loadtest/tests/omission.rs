//! Coordinated omission: a server that stalls for 1 s every 5 s, driven at 1,000 requests/s
//! (open model) over 50 connections. The latency (from the intended send time) shows the
//! stall; the service time (from the actual send) does not, as only the requests already on
//! the 50 connections waited inside the server.

mod common;

use std::time::Duration;

use common::{Behavior, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_latency_not_in_service_time() {
    let server = Server::start(
        Behavior::Stall {
            period: Duration::from_secs(5),
            stall: Duration::from_secs(1),
        },
        true,
    );
    let (report, _) = common::run(&format!(
        r#"
        [targets.api]
        kind = "http"
        url = "{}"
        connections = 50

        [[scenarios]]
        name = "open"
        executor = "constant-arrival-rate"
        rate = 1000
        duration = "10s"
        max-in-flight = 2000

        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}
        "#,
        server.url()
    ))
    .await;
    let s = &report.scenarios[0].summary;
    println!(
        "{} requests: latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms; service p50 {:.2} ms p99 {:.2} ms",
        s.requests,
        s.latency_ms.p50,
        s.latency_ms.p99,
        s.latency_ms.max,
        s.service_time_ms.p50,
        s.service_time_ms.p99
    );
    assert_eq!(s.failed, 0, "{:?}", s.errors);
    assert!((9_900..=10_100).contains(&s.requests), "{}", s.requests);
    assert!(
        s.latency_ms.p99 >= 500.0,
        "latency p99 {} ms",
        s.latency_ms.p99
    );
    assert!(
        s.service_time_ms.p99 < 100.0,
        "service p99 {} ms",
        s.service_time_ms.p99
    );
}
