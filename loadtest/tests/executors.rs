//! The ramping executors follow their stages, and the Prometheus endpoint serves the figures
//! while the run goes on.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Behavior, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramping_vus_follow_the_stages() {
    let server = Server::start(Behavior::Fast, true);
    // 0 → 4 workers over 1 s, 4 → 0 over 1 s: 4 worker-seconds in all. Each worker sends at
    // most one request per 10 ms of think time, so at most ~400 requests (800 if the workers
    // stayed at 4 throughout), and clearly more than none.
    let (report, _) = common::run(&format!(
        r#"
        [targets.api]
        kind = "http"
        url = "{}"
        [[scenarios]]
        name = "ramp"
        executor = "ramping-vus"
        start-vus = 0
        stages = [{{ duration = "1s", target = 4 }}, {{ duration = "1s", target = 0 }}]
        think-time = "10ms"
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}
        "#,
        server.url()
    ))
    .await;
    let n = report.scenarios[0].summary.requests;
    println!("ramping-vus: {n} requests");
    assert!((100..=450).contains(&n), "{n}");
    assert_eq!(report.scenarios[0].model, "closed");
}

#[test]
fn prometheus_metrics_are_served_while_running() {
    let server = Server::start(Behavior::Fast, true);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_dir, path) = common::scenario(&format!(
        r#"
        [output]
        prometheus = "127.0.0.1:{port}"
        [targets.api]
        kind = "http"
        url = "{}"
        [[scenarios]]
        name = "s"
        executor = "constant-arrival-rate"
        rate = 100
        duration = "4s"
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}
        "#,
        server.url()
    ));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "-q", path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        body.clear();
        let _ = tcp.read_to_string(&mut body);
        if body.contains("loadtest_requests_total{scenario=\"s\",step=\"get\",result=\"ok\"} 1") {
            break;
        }
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for want in [
        "loadtest_requests_total{scenario=\"s\",step=\"get\",result=\"ok\"}",
        "loadtest_requests_total{scenario=\"s\",step=\"get\",result=\"timeout\"} 0",
        "loadtest_latency_seconds{scenario=\"s\",step=\"get\",quantile=\"0.99\"}",
        "loadtest_dropped_iterations_total{scenario=\"s\"} 0",
    ] {
        assert!(body.contains(want), "{want} in {body}");
    }
}
