//! Coordinated omission: an open model at 500 requests/s over 4 connections against a server
//! that stalls when the test says and for as long as the test holds it. The latency (from the
//! intended send time) shows the stall: every arrival due during it waits for its end. The
//! service time (from the actual send) does not: only the requests already on the 4
//! connections waited inside the server.
//!
//! The margins come from counts, not from the machine's speed: a stall of S at 500/s has
//! 500·S/2 arrivals due in its first half, each with a latency of at least S/2, which is 8×
//! the 1% above the p99 of the 1,500 requests; at most 4 requests (one per connection) were
//! inside the server when it stalled.

mod common;

use std::time::{Duration, Instant};

use common::{Behavior, Gate, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_latency_not_in_service_time() {
    // The probe and 50 requests pass (0.1 s into the run), then the server holds everything.
    let gate = Gate::closing_after(51);
    let server = Server::start(Behavior::Gate(gate.clone()), true);
    let holder = std::thread::spawn({
        let gate = gate.clone();
        move || {
            gate.wait_parked(1);
            let stalled = Instant::now();
            // The fault's length; what follows is measured, not assumed.
            std::thread::sleep(Duration::from_millis(500));
            let stall = stalled.elapsed();
            gate.open();
            stall
        }
    });
    let (report, _) = common::run(&format!(
        r#"
        [targets.api]
        kind = "http"
        url = "{}"
        connections = 4

        [[scenarios]]
        name = "open"
        executor = "constant-arrival-rate"
        rate = 500
        duration = "3s"

        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}
        "#,
        server.url()
    ))
    .await;
    let stall_ms = holder.join().unwrap().as_secs_f64() * 1000.0;
    let s = &report.scenarios[0].summary;
    println!(
        "stall {stall_ms:.1} ms, {} requests: latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms; \
         service p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        s.requests,
        s.latency_ms.p50,
        s.latency_ms.p99,
        s.latency_ms.max,
        s.service_time_ms.p50,
        s.service_time_ms.p99,
        s.service_time_ms.max,
    );
    assert_eq!(s.failed, 0, "{:?}", s.errors);
    assert_eq!(s.requests, 1500);
    assert_eq!(report.scenarios[0].dropped_iterations, 0);
    // The request that met the closed gate was due before it, and answered after it opened.
    assert!(
        s.latency_ms.max >= stall_ms,
        "latency max {} ms under the {stall_ms:.1} ms stall",
        s.latency_ms.max
    );
    assert!(
        s.service_time_ms.max >= stall_ms,
        "the held request's service time {} ms",
        s.service_time_ms.max
    );
    // Latency p99 ≥ S/2 > service p99: the stall is in the latency, not in the service time.
    assert!(
        s.latency_ms.p99 >= stall_ms / 2.0,
        "latency p99 {} ms under half the {stall_ms:.1} ms stall",
        s.latency_ms.p99
    );
    assert!(
        s.service_time_ms.p99 < stall_ms / 2.0,
        "service p99 {} ms: the stall leaked into the service time",
        s.service_time_ms.p99
    );
}
