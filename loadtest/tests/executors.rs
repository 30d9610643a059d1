//! The executors, run against a real server: ramping VUs reach their stages' peak, think time
//! spaces a worker's iterations, an open model beyond its workers drops and counts arrivals,
//! and the Prometheus endpoint (`--prometheus`) serves the figures while the run goes on.
//!
//! The curves themselves (workers wanted at t, arrivals due per interval) are tested exactly
//! in `run.rs`; these tests assert counts and orderings only.

mod common;

use std::collections::BTreeSet;
use std::io::{BufReader, Read};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{Behavior, Gate, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramping_vus_reach_the_peak_of_their_stages() {
    // After the probe, the server holds requests until 4 are held at once: only a ramp that
    // reaches its peak of 4 workers gets past it. (The 4th worker starts at 262 ms and may
    // start until the ramp down at 1,037 ms: a wide window, not a timing the test measures.)
    let gate = Gate::opening_at(1, 4);
    let server = Server::start(Behavior::Gate(gate.clone()), true);
    let (report, outcome) = common::run(&format!(
        r#"
        [targets.api]
        kind = "http"
        url = "{}"
        [[scenarios]]
        name = "ramp"
        executor = "ramping-vus"
        start-vus = 0
        stages = [
            {{ duration = "300ms", target = 4 }},
            {{ duration = "700ms", target = 4 }},
            {{ duration = "300ms", target = 0 }},
        ]
        think-time = "10ms"
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/vu/{{{{vu}}}}" }}
        "#,
        server.url()
    ))
    .await;
    let s = &report.scenarios[0];
    assert_eq!(outcome, loadtest::Outcome::Passed);
    assert_eq!(s.model, "closed");
    assert_eq!(gate.parked(), 4, "the barrier opened at the peak");
    assert_eq!(s.summary.failed, 0, "{:?}", s.summary.errors);
    let vus: BTreeSet<String> = server
        .paths()
        .iter()
        .filter_map(|p| p.strip_prefix("/vu/").map(str::to_owned))
        .collect();
    assert_eq!(vus, ["0", "1", "2", "3"].map(String::from).into());
    assert_eq!(s.summary.requests + 1, server.paths().len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn think_time_spaces_a_workers_iterations() {
    // One worker for 1 s, thinking at least 100 ms after each request: at most 10 iterations
    // start (a slow machine makes it fewer, never more). Without the think time it would be
    // thousands.
    let server = Server::start(Behavior::Fast, true);
    let (report, _) = common::run(&format!(
        r#"
        [targets.api]
        kind = "http"
        url = "{}"
        [[scenarios]]
        name = "think"
        executor = "constant-vus"
        vus = 1
        duration = "1s"
        think-time = "100ms..150ms"
        flow = "sequence"
        [[scenarios.steps]]
        name = "a"
        http = {{ path = "/a" }}
        [[scenarios.steps]]
        name = "b"
        http = {{ path = "/b" }}
        "#,
        server.url()
    ))
    .await;
    let s = &report.scenarios[0];
    // In a sequence the worker thinks after each step: ≥ 200 ms per iteration, so at most
    // 5 iterations start in 1 s, and each sends a, then b.
    let (a, b) = (s.steps[0].requests, s.steps[1].requests);
    println!("a {a}, b {b}");
    assert!((1..=5).contains(&a), "{a} iterations in 1 s");
    assert_eq!(a, b, "every iteration that started finished its sequence");
    let paths = server.paths();
    assert_eq!(paths[0], "/", "the probe first");
    for pair in paths[1..].chunks(2) {
        assert_eq!(pair[0], "/a", "{paths:?}");
        if let Some(second) = pair.get(1) {
            assert_eq!(second, "/b", "{paths:?}");
        }
    }
}

/// Remembers where the run serves its metrics, and counts the collections (one a second):
/// the signal that a figure was taken after something the test arranged.
#[derive(Default)]
struct MetricsAt {
    addr: Mutex<Option<SocketAddr>>,
    ticks: Mutex<u64>,
    ticked: std::sync::Condvar,
}

impl MetricsAt {
    /// Blocks until `n` more collections have happened (60 s at most: a liveness bound).
    fn wait_ticks(&self, n: u64) {
        let ticks = self.ticks.lock().unwrap();
        let until = *ticks + n;
        let (ticks, timeout) = self
            .ticked
            .wait_timeout_while(ticks, std::time::Duration::from_secs(60), |t| *t < until)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "no collection for 60 s (at {})",
            *ticks
        );
    }
}

impl loadtest::Reporter for MetricsAt {
    fn serving_metrics(&self, addr: SocketAddr) {
        *self.addr.lock().unwrap() = Some(addr);
    }

    fn progress(&self, _point: &loadtest::stats::Point, _elapsed: std::time::Duration) {
        *self.ticks.lock().unwrap() += 1;
        self.ticked.notify_all();
    }
}

/// A run against a server that holds every request after the probe: starts the server,
/// and returns it with the gate, the metrics address holder and the scenario text (a run
/// section with a long graceful stop and metrics on a free port, the target, then
/// `scenarios`).
fn held_run(scenarios: &str) -> (Server, Arc<Gate>, Arc<MetricsAt>, String) {
    let gate = Gate::closing_after(1);
    let server = Server::start(Behavior::Gate(gate.clone()), true);
    let text = format!(
        "[run]\ngraceful-stop = \"60s\"\n[output]\nprometheus = \"127.0.0.1:0\"\n\
         [targets.api]\nkind = \"http\"\nurl = \"{}\"\n{scenarios}",
        server.url()
    );
    (server, gate, Arc::new(MetricsAt::default()), text)
}

/// Off the runtime: once `parked` requests are held, runs `look` on the run's metrics (the
/// reporter and the address), then opens the gate; resolves to what `look` returned.
fn open_after<T: Send + 'static>(
    gate: &Arc<Gate>,
    at: &Arc<MetricsAt>,
    parked: u64,
    look: impl FnOnce(&MetricsAt, SocketAddr) -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let (gate, at) = (gate.clone(), at.clone());
    tokio::task::spawn_blocking(move || {
        gate.wait_parked(parked);
        let addr = at
            .addr
            .lock()
            .unwrap()
            .expect("metrics served before the load");
        let seen = look(&at, addr);
        gate.open();
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_beyond_the_workers_are_dropped_and_counted() {
    // 2 workers and a queue of 2 in front of a server that holds every request until the
    // test has seen arrivals dropped: of the 400 arrivals, 2 to 4 are taken (the first two
    // always fit in the queue) and every other one is dropped, never waited for.
    let (_server, gate, at, text) = held_run(
        r#"
        [[scenarios]]
        name = "s"
        executor = "constant-arrival-rate"
        rate = 1000
        iterations = 400
        max-in-flight = 2
        thresholds = ["dropped-iterations < 1", "checks > 99%"]
        [[scenarios.steps]]
        name = "get"
        http = { path = "/" }
        thresholds = ["dropped-iterations < 400"]
        "#,
    );
    // The figures are collected once a second: scrape until drops show.
    let opener = open_after(&gate, &at, 2, |_, addr| {
        common::scrape_until_counted(addr, "loadtest_dropped_iterations_total{scenario=\"s\"}");
    });
    let (report, _) = common::run_reporting(&text, at.clone()).await;
    opener.await.unwrap();
    let s = &report.scenarios[0];
    println!(
        "{} requests, {} dropped",
        s.summary.requests, s.dropped_iterations
    );
    assert!(s.dropped_iterations > 0);
    // Over time: every drop is in the run series once, and the second whose collection made
    // them visible had both workers inside their (held) iteration.
    let per_second: u64 = report.series.iter().map(|p| p.dropped.unwrap()).sum();
    assert_eq!(per_second, s.dropped_iterations);
    assert!(
        report.series.iter().any(|p| p.active == Some(2)),
        "{:?}",
        report.series.iter().map(|p| p.active).collect::<Vec<_>>()
    );
    assert!(
        report
            .series
            .iter()
            .all(|p| p.cpu_share.is_some_and(|c| c.is_finite() && c >= 0.0))
    );
    // The generator's own resident memory rides along (read from /proc on Linux).
    assert!(
        report
            .series
            .iter()
            .all(|p| p.rss_bytes.is_some_and(|b| b > 0))
    );
    let html = report.to_html();
    assert!(html.contains("Workers and dropped arrivals over time"));
    assert!(html.contains("Generator CPU over time"));
    assert!(html.contains("Generator memory over time"));
    assert!(
        (2..=4).contains(&s.summary.requests),
        "{}",
        s.summary.requests
    );
    assert_eq!(s.summary.requests + s.dropped_iterations, 400);
    // And the summary says what to raise.
    assert_eq!((s.max_in_flight, s.peak_in_flight), (Some(2), Some(2)));
    assert!(
        report
            .advice
            .iter()
            .any(|a| a.starts_with("scenario s: ") && a.contains("raise max-in-flight")),
        "{:?}",
        report.advice
    );
    assert!(
        report.summary().contains("advice: scenario s: "),
        "{}",
        report.summary()
    );
    let g = report
        .generator
        .as_ref()
        .expect("the generator's CPU is in the report");
    assert!(g.cores >= 1 && g.cpu_s >= 0.0);
    assert!(report.summary().contains("generator: "));
    // The thresholds read the dropped count (a step its scenario's) and the checks.
    let results: Vec<(&str, &str, f64, bool)> = report
        .thresholds
        .iter()
        .map(|t| (t.scope.as_str(), t.threshold.as_str(), t.value, t.passed))
        .collect();
    let dropped = s.dropped_iterations as f64;
    assert_eq!(
        results,
        [
            ("scenario s", "dropped-iterations < 1", dropped, false),
            ("scenario s", "checks > 99%", 1.0, true),
            ("step s/get", "dropped-iterations < 400", dropped, true),
        ]
    );
    assert_eq!(s.summary.failed, 0, "{:?}", s.summary.errors);
    assert!(
        report.summary().contains("dropped iterations"),
        "{}",
        report.summary()
    );
}

#[test]
fn prometheus_metrics_are_served_while_running() {
    // `--prometheus` on the command line, at port 0: the binary prints the bound address
    // before the load starts. The server answers the probe and 10 requests, then holds the
    // rest until the test has read the 10 in the metrics: the run cannot end before.
    let gate = Gate::closing_after(11);
    let server = Server::start(Behavior::Gate(gate.clone()), true);
    let (_dir, path) = common::scenario(&format!(
        r#"
        [targets.api]
        kind = "http"
        url = "{}"
        [[scenarios]]
        name = "s"
        executor = "constant-arrival-rate"
        rate = 100
        iterations = 20
        tags = {{ team = "shop" }}
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}
        tags = {{ kind = "read" }}
        "#,
        server.url()
    ));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "-q", "--prometheus", "127.0.0.1:0"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = common::metrics_address(&mut stderr);
    gate.wait_parked(1);
    // The figures are collected once a second: scrape until the 10 answered requests show.
    // The step's tags are labels: its own, the scenario's, and the two names.
    let ok = "loadtest_requests_total{kind=\"read\",scenario=\"s\",step=\"get\",team=\"shop\",result=\"ok\"}";
    let body = common::scrape_until_counted(addr, ok);
    gate.open();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert_eq!(common::metric(&body, ok), Some(10), "{body}");
    for want in [
        "loadtest_requests_total{kind=\"read\",scenario=\"s\",step=\"get\",team=\"shop\",result=\"timeout\"} 0",
        "loadtest_latency_seconds{kind=\"read\",scenario=\"s\",step=\"get\",team=\"shop\",quantile=\"0.99\"}",
        "loadtest_latency_seconds_count{kind=\"read\",scenario=\"s\",step=\"get\",team=\"shop\"} 10",
        "loadtest_dropped_iterations_total{scenario=\"s\"} 0",
    ] {
        assert!(body.contains(want), "{want} in {body}");
    }
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert_eq!(server.paths().len(), 21, "the probe and 20 requests");
}

#[tokio::test]
async fn a_checks_threshold_reads_the_share_of_answers_that_passed() {
    // 10 answers with status 200, of which the step accepts only 201: 0% pass. Connect
    // failures are not answers, and do not count for or against checks.
    let server = Server::start(Behavior::Fast, true);
    let text = format!(
        r#"
        [targets.api]
        kind = "http"
        url = "{}"
        [targets.gone]
        kind = "http"
        url = "http://127.0.0.1:1"
        live = false
        [[scenarios]]
        name = "s"
        executor = "constant-vus"
        vus = 1
        iterations = 20
        flow = "sequence"
        thresholds = ["checks > 99%", "checks < 1%", "error-rate > 99%"]
        [[scenarios.steps]]
        name = "created"
        target = "api"
        http = {{ path = "/" }}
        checks = {{ status = [201] }}
        [[scenarios.steps]]
        name = "down"
        target = "gone"
        http = {{ path = "/" }}
        thresholds = ["checks < 1%"]
        "#,
        server.url()
    );
    let (report, _) = common::run(&text).await;
    let results: Vec<(&str, &str, f64, bool)> = report
        .thresholds
        .iter()
        .map(|t| (t.scope.as_str(), t.threshold.as_str(), t.value, t.passed))
        .collect();
    assert_eq!(
        results,
        [
            ("scenario s", "checks > 99%", 0.0, false),
            ("scenario s", "checks < 1%", 0.0, true),
            ("scenario s", "error-rate > 99%", 1.0, true),
            ("step s/down", "checks < 1%", 0.0, true),
        ],
        "{:?}",
        report.scenarios[0].summary.errors
    );
    assert_eq!(report.scenarios[0].summary.requests, 40);
}

#[tokio::test]
async fn an_abort_on_fail_threshold_stops_the_run_and_says_which() {
    // Every request fails (nothing listens): error-rate < 1% fails at the first evaluation,
    // one second in, and the 60-second run stops there.
    let scenario = |threshold: &str, delay: &str, duration: &str| {
        format!(
            r#"
            [run]
            graceful-stop = "1s"
            [targets.gone]
            kind = "http"
            url = "http://127.0.0.1:1"
            live = false
            [[scenarios]]
            name = "s"
            executor = "constant-arrival-rate"
            rate = 100
            duration = "{duration}"
            thresholds = ["p99 < 60s", {{ threshold = "{threshold}", abort-on-fail = true{delay} }}]
            [[scenarios.steps]]
            name = "get"
            http = {{ path = "/" }}
            "#
        )
    };
    let (report, outcome) = common::run(&scenario("error-rate < 1%", "", "60s")).await;
    assert!(
        matches!(outcome, loadtest::Outcome::ThresholdsFailed),
        "{outcome:?}"
    );
    assert!(report.aborted);
    let why = report.stopped_by.as_deref().unwrap_or_default();
    assert!(
        why.starts_with("scenario s: error-rate < 1% (measured 100.000%)"),
        "{why}"
    );
    assert!(
        report
            .summary()
            .contains("stopped early by an abort-on-fail threshold: scenario s")
    );
    let requests = report.total.requests;
    assert!(
        requests > 0 && requests < 6000,
        "stopped early: {requests} of 6000"
    );
    let json = report.to_json().unwrap();
    assert!(json.contains("\"stopped_by\""), "{json}");

    // Not before its delay: a 1 s run with a 1 h delay runs to its end, and the threshold
    // then fails the run the ordinary way.
    let (report, outcome) = common::run(&scenario(
        "error-rate < 1%",
        ", delay-abort-eval = \"1h\"",
        "1s",
    ))
    .await;
    assert!(
        matches!(outcome, loadtest::Outcome::ThresholdsFailed),
        "{outcome:?}"
    );
    assert!(!report.aborted && report.stopped_by.is_none());
    assert_eq!(report.total.requests, 100, "every arrival of the 1 s run");

    // Over a sliding window too: the last second's error rate.
    let (report, outcome) = common::run(&scenario("error-rate[1s] < 1%", "", "60s")).await;
    assert!(
        matches!(outcome, loadtest::Outcome::ThresholdsFailed),
        "{outcome:?}"
    );
    let why = report.stopped_by.as_deref().unwrap_or_default();
    assert!(
        why.starts_with("scenario s: error-rate[1s] < 1% (measured 100.000%)"),
        "{why}"
    );
    assert!(report.total.requests < 6000);
}

#[tokio::test]
async fn tags_reach_the_report_and_select_steps_for_thresholds() {
    // Each iteration logs in (answered 200, accepted) and then browses (answered 200, where
    // the step wants 201): half the requests fail, all of them the browsing ones.
    let server = Server::start(Behavior::Fast, true);
    let text = format!(
        r#"
        thresholds = ["error-rate < 60%", "error-rate{{kind=read}} > 99%", "checks{{step=login}} > 99%", "error-rate{{team=shop,kind=auth}} < 1%"]
        [targets.api]
        kind = "http"
        url = "{}"
        [[scenarios]]
        name = "shop"
        executor = "constant-vus"
        vus = 1
        iterations = 10
        flow = "sequence"
        tags = {{ team = "shop" }}
        thresholds = ["error-rate{{step=browse}} > 99%"]
        [[scenarios.steps]]
        name = "login"
        http = {{ path = "/login" }}
        tags = {{ kind = "auth" }}
        [[scenarios.steps]]
        name = "browse"
        http = {{ path = "/items" }}
        checks = {{ status = [201] }}
        tags = {{ kind = "read" }}
        "#,
        server.url()
    );
    let (report, outcome) = common::run(&text).await;
    assert!(
        matches!(outcome, loadtest::Outcome::Passed),
        "{outcome:?}: {}",
        report.summary()
    );
    let results: Vec<(&str, &str, f64)> = report
        .thresholds
        .iter()
        .map(|t| (t.scope.as_str(), t.threshold.as_str(), t.value))
        .collect();
    assert_eq!(
        results,
        [
            ("scenario shop", "error-rate{step=browse} > 99%", 1.0),
            ("run", "error-rate < 60%", 0.5),
            ("run", "error-rate{kind=read} > 99%", 1.0),
            ("run", "checks{step=login} > 99%", 1.0),
            ("run", "error-rate{team=shop,kind=auth} < 1%", 0.0),
        ]
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    let tags = &json["scenarios"][0]["steps"][1]["tags"];
    assert_eq!(
        tags,
        &serde_json::json!({"kind": "read", "scenario": "shop", "step": "browse", "team": "shop"})
    );

    // A selector that picks no step is refused when the scenario loads, naming the key.
    let bad = text.replace("checks{step=login}", "checks{step=logout}");
    let (_dir, path) = common::scenario(&bad);
    let e = loadtest::Plan::load(&path, &loadtest::Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("thresholds[2]") && e.contains("selects no step"),
        "{e}"
    );
}

#[tokio::test]
async fn workers_ramped_down_are_cut_off_after_the_graceful_ramp_down() {
    // Two workers whose requests the server holds; the stages drop to 0 workers at 300 ms.
    // With graceful-ramp-down = 0s both held iterations are cut off then and counted (the
    // 60 s graceful stop would otherwise keep the run waiting for them).
    let gate = Gate::closing_after(1);
    let server = Server::start(Behavior::Gate(gate.clone()), true);
    let text = format!(
        r#"
        [run]
        graceful-stop = "60s"
        [targets.api]
        kind = "http"
        url = "{}"
        [[scenarios]]
        name = "s"
        executor = "ramping-vus"
        start-vus = 2
        stages = [{{ duration = "200ms", target = 2 }}, {{ duration = "100ms", target = 0 }}]
        graceful-ramp-down = "0s"
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}
        "#,
        server.url()
    );
    let (report, _) = common::run(&text).await;
    gate.open();
    let s = &report.scenarios[0];
    assert_eq!(s.interrupted_iterations, 2, "{}", report.summary());
    assert_eq!(
        s.summary.requests, 0,
        "a cut-off iteration records no request"
    );
    assert_eq!(gate.parked(), 2);
}

#[tokio::test]
async fn values_extracted_from_a_response_feed_the_later_steps() {
    // Log in, take the token (JSON path), the session (header) and the second item's id
    // (regex), then call with them; a path that is not in the body fails that step as a check
    // and the iteration stops there (counted), its later step never sent.
    let server = Server::start(Behavior::Login, true);
    let scenario = |token_path: &str| {
        format!(
            r#"
            [targets.api]
            kind = "http"
            url = "{}"
            [[scenarios]]
            name = "s"
            executor = "constant-vus"
            vus = 1
            iterations = 5
            flow = "sequence"
            [[scenarios.steps]]
            name = "login"
            http = {{ path = "/login" }}
            extract = {{ token = {{ json = "{token_path}" }}, session = {{ header = "X-Session" }}, id = {{ regex = '"id":(\d+)\}}\]' }} }}
            [[scenarios.steps]]
            name = "items"
            http = {{ path = "/items?token={{{{var.token}}}}&s={{{{var.session}}}}&id={{{{var.id}}}}", headers = {{ authorization = "Bearer {{{{var.token}}}}" }} }}
            "#,
            server.url()
        )
    };
    let (report, _) = common::run(&scenario("$.data.token")).await;
    let s = &report.scenarios[0];
    assert_eq!(
        (s.steps[0].requests, s.steps[0].failed),
        (5, 0),
        "{:?}",
        s.steps[0].errors
    );
    assert_eq!((s.steps[1].requests, s.steps[1].failed), (5, 0));
    assert_eq!(s.iterations_cut_short, 0);
    let items: Vec<String> = server
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("/items"))
        .collect();
    assert_eq!(items, vec!["/items?token=abc123&s=s-42&id=8".to_owned(); 5]);

    let (report, _) = common::run(&scenario("$.data.items[0].id")).await;
    let s = &report.scenarios[0];
    assert_eq!(s.steps[1].requests, 5, "a number is extracted as its text");
    let (report, _) = common::run(&scenario("$.data.nope")).await;
    let s = &report.scenarios[0];
    assert_eq!(s.steps[0].failed, 5);
    assert_eq!(
        s.steps[0].errors["check"], 5,
        "a failed extraction is a check error"
    );
    assert_eq!(
        s.steps[1].requests, 0,
        "the rest of the iteration is skipped"
    );
    assert_eq!(s.iterations_cut_short, 5);
}

#[test]
fn a_variable_must_come_from_an_earlier_step_of_a_sequence() {
    let load = |text: &str| {
        let (_dir, path) = common::scenario(text);
        loadtest::Plan::load(&path, &loadtest::Overrides::default()).map(|_| ())
    };
    let base = r#"
        [targets.api]
        kind = "http"
        url = "http://127.0.0.1:1"
        [[scenarios]]
        name = "s"
        executor = "constant-vus"
        vus = 1
        iterations = 1
        flow = "sequence"
        [[scenarios.steps]]
        name = "a"
        http = { path = "/a" }
        extract = { t = { json = "$.t" } }
        [[scenarios.steps]]
        name = "b"
        http = { path = "/b/{{var.t}}" }
        "#;
    assert!(load(base).is_ok());
    for (from, to, want) in [
        (
            "/b/{{var.t}}",
            "/b/{{var.u}}",
            "scenarios[0].steps[1]: {{var.u}}: no earlier step of the scenario extracts \"u\"",
        ),
        (
            "flow = \"sequence\"",
            "flow = \"pick\"",
            "scenarios[0].flow: step \"b\" uses {{var.t}}: variables need flow = \"sequence\"",
        ),
        (
            "{ json = \"$.t\" }",
            "{ json = \"$.t\", header = \"x\" }",
            "give exactly one of",
        ),
        (
            "{ json = \"$.t\" }",
            "{ regex = \"(\" }",
            "scenarios[0].steps[0].extract.t.regex: invalid regex",
        ),
        (
            "{ json = \"$.t\" }",
            "{ json = \"$.t[x]\" }",
            "[x] is not an array index",
        ),
        (
            "{ json = \"$.t\" }",
            "{ header = \"bad header\" }",
            "is not a header name",
        ),
    ] {
        let e = load(&base.replace(from, to)).unwrap_err().to_string();
        assert!(e.contains(want), "{want} in {e}");
    }
}

#[tokio::test]
async fn cookies_set_by_a_response_go_back_on_the_later_steps_of_the_iteration() {
    // The server sets sid and theme on every answer: the second step of each iteration sends
    // them back; the first step of the next iteration starts with an empty jar. With
    // `cookies = false` on the target nothing is sent.
    for on in [true, false] {
        let server = Server::start(Behavior::Login, true);
        let text = format!(
            r#"
            [targets.api]
            kind = "http"
            url = "{}"
            cookies = {on}
            [[scenarios]]
            name = "s"
            executor = "constant-vus"
            vus = 1
            iterations = 3
            flow = "sequence"
            [[scenarios.steps]]
            name = "login"
            http = {{ path = "/login" }}
            [[scenarios.steps]]
            name = "items"
            http = {{ path = "/items" }}
            "#,
            server.url()
        );
        let (report, _) = common::run(&text).await;
        assert_eq!(report.total.failed, 0);
        let seen: Vec<(String, Option<String>)> = server
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path != "/")
            .map(|s| (s.path.clone(), s.cookie.clone()))
            .collect();
        let sent = on.then(|| "sid=xyz; theme=dark".to_owned());
        let want: Vec<(String, Option<String>)> = (0..3)
            .flat_map(|_| {
                [
                    ("/login".to_owned(), None),
                    ("/items".to_owned(), sent.clone()),
                ]
            })
            .collect();
        assert_eq!(seen, want, "cookies = {on}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_vus_are_a_gauge_in_the_metrics_and_the_run_series() {
    // Three VUs, each held inside its first iteration by the server: once all three are
    // parked, the next collection counts 3 active, in /metrics and in the report's series.
    let (_server, gate, at, text) = held_run(
        r#"
        [[scenarios]]
        name = "c"
        executor = "constant-vus"
        vus = 3
        duration = "1s"
        [[scenarios.steps]]
        name = "get"
        http = { path = "/" }
        "#,
    );
    // Two collections after the last VU parked: the first counts it, and /metrics (written
    // after the progress report of each collection) shows it by the second.
    let opener = open_after(&gate, &at, 3, |at, addr| {
        at.wait_ticks(2);
        common::metric(
            &common::scrape(addr),
            "loadtest_active_workers{scenario=\"c\"}",
        )
    });
    let (report, _) = common::run_reporting(&text, at.clone()).await;
    assert_eq!(
        opener.await.unwrap(),
        Some(3),
        "the gauge counted the held VUs"
    );
    assert!(
        report.series.iter().any(|p| p.active == Some(3)),
        "{:?}",
        report.series.iter().map(|p| p.active).collect::<Vec<_>>()
    );
    // Every VU has left its iteration by the end.
    assert_eq!(report.series.last().and_then(|p| p.active), Some(0));
    assert_eq!(report.scenarios[0].dropped_iterations, 0);
}
