//! Latency truth: against a server that answers after 5 ms, the reported latencies are never
//! below that delay, and each request's latency is at least its service time, in the closed
//! and in the open model. No upper band: a loaded machine adds its own delay. How close to
//! 5 ms the median comes is a benchmark's figure (`compare loadtest`, "accuracy").

mod common;

use std::time::Duration;

use common::{Behavior, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_never_below_a_fixed_server_delay() {
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
        iterations = 200
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}

        [[scenarios]]
        name = "open"
        executor = "constant-arrival-rate"
        rate = 200
        iterations = 200
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}
        "#,
        url = server.url()
    ))
    .await;
    assert_eq!(outcome, loadtest::Outcome::Passed);
    assert_eq!(report.scenarios[0].model, "closed");
    assert_eq!(report.scenarios[1].model, "open");
    for s in &report.scenarios {
        let (l, st) = (&s.summary.latency_ms, &s.summary.service_time_ms);
        println!(
            "{}: {} requests, latency p50 {:.3} ms p99 {:.3} ms, service p50 {:.3} ms",
            s.name, s.summary.requests, l.p50, l.p99, st.p50
        );
        assert_eq!(s.summary.requests, 200, "{}", s.name);
        assert_eq!(s.summary.failed, 0, "{}: {:?}", s.name, s.summary.errors);
        // The server's delay is a floor: anything under it would be a measurement error.
        assert!(
            l.min >= 5.0,
            "{}: latency min {} ms under 5 ms",
            s.name,
            l.min
        );
        assert!(
            st.min >= 5.0,
            "{}: service min {} ms under 5 ms",
            s.name,
            st.min
        );
        // Latency counts from the planned start, service time from the send: per request
        // latency ≥ service time, so every quantile keeps that order.
        for (q, lat, svc) in [
            ("p50", l.p50, st.p50),
            ("p99", l.p99, st.p99),
            ("max", l.max, st.max),
        ] {
            assert!(
                lat >= svc,
                "{}: {q} latency {lat} ms < service {svc} ms",
                s.name
            );
        }
        assert!(
            l.min <= l.p50 && l.p50 <= l.p99 && l.p99 <= l.max,
            "{}: {l:?}",
            s.name
        );
    }
}
