//! The binary: exit codes, error messages that name file, line and key, unreachable targets,
//! the shadow probe, Ctrl-C, and the JSON/HTML reports.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use common::{Behavior, Gate, Server, loadtest, text};

const GOOD: &str = r#"
[targets.api]
kind = "http"
url = "http://127.0.0.1:1"

[[scenarios]]
name = "s"
executor = "constant-vus"
vus = 2
duration = "1s"

[[scenarios.steps]]
name = "x"
http = { path = "/" }
"#;

#[test]
fn bad_scenarios_are_refused_naming_file_line_and_key() {
    let cases = [
        (
            "duration = \"1s\"",
            "duration = \"1s\"\nbogus = 1",
            ":11:1: scenarios[0].bogus: unknown key",
        ),
        (
            "vus = 2",
            "vus = \"two\"",
            ":9:1: scenarios[0].vus: invalid type",
        ),
        (
            "duration = \"1s\"",
            "duration = \"soon\"",
            ":10:1: scenarios[0].duration: invalid duration",
        ),
        (
            "http = { path = \"/\" }",
            "target = \"nope\"\nhttp = { path = \"/\" }",
            ":14:1: scenarios[0].steps[0].target: no target named \"nope\"",
        ),
        (
            "http = { path = \"/\" }",
            "http = { path = \"/{{nope}}\" }",
            ":14:10: scenarios[0].steps[0].http.path: unknown template expression",
        ),
        (
            "duration = \"1s\"",
            "duration = \"1s\"\nthresholds = [\"p99 < soon\"]",
            ":11:15: scenarios[0].thresholds[0]: invalid threshold",
        ),
        (
            "duration = \"1s\"",
            "",
            ":6:1: scenarios[0]: needs a duration",
        ),
        (
            "vus = 2",
            "vus = 2\nrate = 5",
            ":10:1: scenarios[0].rate: not used by the constant-vus executor",
        ),
        (
            "kind = \"http\"",
            "kind = \"ftp\"",
            ":3:1: targets.api.kind: unknown variant",
        ),
        (
            "url = \"http://127.0.0.1:1\"",
            "url = \"ftp://x\"",
            "targets.api.url",
        ),
        (
            "http = { path = \"/\" }",
            "http = { path = \"/\" }\nredis = [\"GET\", \"k\"]",
            "exactly one of",
        ),
        // Regression: a tiny rate with iterations panicked in `Duration::from_secs_f64`.
        (
            "executor = \"constant-vus\"\nvus = 2\nduration = \"1s\"",
            "executor = \"constant-arrival-rate\"\nrate = 1e-300\niterations = 1000",
            ":10:1: scenarios[0].iterations: 1000 iterations at 1e-300/s would take longer than",
        ),
        // Absurd sizes are refused, not attempted.
        (
            "vus = 2",
            "vus = 1000000000",
            ":9:1: scenarios[0].vus: at most 100000 workers",
        ),
        (
            "executor = \"constant-vus\"\nvus = 2\nduration = \"1s\"",
            "executor = \"constant-arrival-rate\"\nrate = 1e12\nduration = \"1s\"",
            ":9:1: scenarios[0].rate: at most",
        ),
        (
            "executor = \"constant-vus\"\nvus = 2\nduration = \"1s\"",
            "executor = \"per-vu-iterations\"\nvus = 2",
            "scenarios[0]: per-vu-iterations needs iterations",
        ),
        (
            "duration = \"1s\"",
            "duration = \"1s\"\nmax-duration = \"5s\"",
            ":11:1: scenarios[0].max-duration: not used by the constant-vus executor",
        ),
        (
            "executor = \"constant-vus\"\nvus = 2\nduration = \"1s\"",
            "executor = \"shared-iterations\"\niterations = 5\nmax-duration = \"0s\"",
            "scenarios[0].max-duration: more than 0",
        ),
        (
            "duration = \"1s\"",
            "duration = \"1s\"\nstart-time = \"400days\"",
            ":11:1: scenarios[0].start-time: at most 366 days",
        ),
        (
            "duration = \"1s\"",
            "duration = \"1s\"\ngraceful-ramp-down = \"5s\"",
            ":11:1: scenarios[0].graceful-ramp-down: not used by the constant-vus executor",
        ),
        (
            "duration = \"1s\"",
            "duration = \"1s\"\ntags = { step = \"x\" }",
            "scenarios[0].tags.step: the step tag is the step's name",
        ),
        (
            "duration = \"1s\"",
            "duration = \"1s\"\ntags = { 9lives = \"x\" }",
            "scenarios[0].tags.9lives: a tag name is letters, digits and _",
        ),
    ];
    for (from, to, want) in cases {
        let (_dir, path) = common::scenario(&GOOD.replacen(from, to, 1));
        let p = path.to_str().unwrap();
        for cmd in ["validate", "run"] {
            let o = loadtest(&[cmd, p]);
            let t = text(&o);
            assert_eq!(o.status.code(), Some(2), "{cmd} {to:?}: {t}");
            assert!(
                t.contains(p) && t.contains(want),
                "{cmd} {to:?}: want {want:?} in {t}"
            );
        }
    }
    let (_dir, path) = common::scenario(GOOD);
    let o = loadtest(&["validate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = loadtest(&["validate", "/nonexistent/scenario.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("/nonexistent/scenario.toml: no such scenario file"));
    // Usage errors are exit code 2 too, and --help teaches.
    assert_eq!(loadtest(&["run"]).status.code(), Some(2));
    assert_eq!(
        loadtest(&["run", "x.toml", "--rate", "many"]).status.code(),
        Some(2)
    );
    let help = text(&loadtest(&["--help"]));
    assert!(
        help.contains("Exit codes") && help.contains("quickstart.toml"),
        "{help}"
    );
}

#[test]
fn an_unreachable_target_is_counted_and_the_thresholds_decide() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again when dropped: connections are refused
    let (dir, path) = common::scenario(&format!(
        r#"
        thresholds = ["error-rate < 1%"]
        [targets.api]
        kind = "http"
        url = "http://127.0.0.1:{port}"
        live = false
        [[scenarios]]
        name = "down"
        executor = "constant-arrival-rate"
        rate = 200
        duration = "1s"
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/" }}
        "#
    ));
    let json = dir.path().join("r.json");
    let o = loadtest(&[
        "run",
        path.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let total = &r["total"];
    assert_eq!(total["requests"], 200, "{total}");
    assert_eq!(total["errors"]["connect"], 200, "{total}");
    assert_eq!(total["error_rate"], 1.0);
    assert_eq!(r["passed"], false);
    assert!(
        text(&o).contains("FAIL run: error-rate < 1%"),
        "{}",
        text(&o)
    );
}

#[test]
fn the_shadow_probe_guards_live_targets() {
    let deaf = Server::start(Behavior::Fast, false);
    let scenario = |live: bool| {
        format!(
            r#"
            [targets.api]
            kind = "http"
            url = "{}"
            live = {live}
            [[scenarios]]
            name = "s"
            executor = "constant-vus"
            vus = 1
            iterations = 10
            [[scenarios.steps]]
            name = "get"
            http = {{ path = "/" }}
            "#,
            deaf.url()
        )
    };
    let (_d, path) = common::scenario(&scenario(true));
    let o = loadtest(&["run", path.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains(
            "shadow probe: target \"api\" answered GET / without the x-jupiter-shadow-ack header"
        ),
        "{}",
        text(&o)
    );
    assert_eq!(
        deaf.hits.load(Ordering::Relaxed),
        1,
        "only the probe was sent"
    );
    // Declared not live: the run goes ahead (still tagged).
    let (_d, path) = common::scenario(&scenario(false));
    let o = loadtest(&["run", path.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(deaf.shadow_hits.load(Ordering::Relaxed), 11);
}

#[test]
fn ctrl_c_stops_gracefully_and_writes_the_report() {
    let (dir, path) = common::scenario(
        r#"
        [targets.store]
        kind = "objstore"
        embedded = true
        [[scenarios]]
        name = "long"
        executor = "constant-arrival-rate"
        rate = 200
        duration = "60s"
        [[scenarios.steps]]
        name = "put"
        objstore = { op = "put", key = "k{{seq}}", value = "v" }
        "#,
    );
    let json = dir.path().join("r.json");
    let html = dir.path().join("r.html");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "run",
            path.to_str().unwrap(),
            "-q",
            "--prometheus",
            "127.0.0.1:0",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Ready when the load is flowing: the metrics show answered requests.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let addr = common::metrics_address(&mut stderr);
    let ok = "loadtest_requests_total{scenario=\"long\",step=\"put\",result=\"ok\"}";
    let seen = common::metric(&common::scrape_until_counted(addr, ok), ok).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert_eq!(o.status.code(), Some(3), "{}{rest}", text(&o));
    assert!(
        text(&o).contains("aborted: stopped (Ctrl-C)"),
        "{}",
        text(&o)
    );
    assert!(rest.contains("stopping"), "{rest}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["aborted"], true);
    // Stopped early: what had been answered when it was told to stop, and not the 12,000 of
    // the full 60 s.
    let n = r["total"]["requests"].as_u64().unwrap();
    assert!(
        n >= seen && n < 12_000,
        "{n} requests, {seen} seen before Ctrl-C"
    );
    assert_eq!(r["total"]["failed"], 0);
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg"));
}

/// Every field the README documents is in the JSON report, with sane values.
#[test]
fn the_json_report_follows_its_schema() {
    let server = Server::start(Behavior::Fast, true);
    let (dir, path) = common::scenario(&format!(
        r#"
        # Thresholds that hold on any machine, fast or slow: the exit code reads the figures,
        # not the machine's speed.
        thresholds = ["p99 > 0ms", "rps > 0"]
        [run]
        name = "schema"
        run-id = "r-42"
        [targets.api]
        kind = "http"
        url = "{}"
        [[scenarios]]
        name = "s"
        executor = "ramping-arrival-rate"
        start-rate = 50
        stages = [{{ duration = "1s", target = 150 }}, {{ duration = "1s", target = 150 }}]
        [[scenarios.steps]]
        name = "a"
        weight = 3
        http = {{ method = "POST", path = "/a", body = "{{{{uuid}}}}", headers = {{ x-n = "{{{{seq}}}}" }} }}
        thresholds = ["error-rate < 1%"]
        [[scenarios.steps]]
        name = "b"
        http = {{ path = "/b" }}
        checks = {{ body-contains = "not in the body" }}
        "#,
        server.url()
    ));
    let json = dir.path().join("r.json");
    let o = loadtest(&[
        "run",
        path.to_str().unwrap(),
        "-q",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["schema"], "jupiter-loadtest/1");
    assert_eq!(r["name"], "schema");
    assert_eq!(r["run_id"], "r-42");
    for k in [
        "scenario_file",
        "started_unix_ms",
        "duration_s",
        "aborted",
        "passed",
        "shadow",
        "total",
        "scenarios",
        "thresholds",
        "series",
    ] {
        assert!(!r[k].is_null(), "{k}");
    }
    // 50 → 150/s over 1 s, then 150/s for 1 s: 100 + 150 arrivals.
    let s = &r["scenarios"][0];
    assert_eq!(s["model"], "open");
    assert_eq!(s["summary"]["requests"], 250, "{}", s["summary"]);
    let steps = s["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let (a, b) = (&steps[0], &steps[1]);
    assert_eq!(a["name"], "s/a");
    assert_eq!(a["failed"], 0);
    // Step b's check fails every time: counted as check errors, not as anything else.
    assert_eq!(b["errors"]["check"], b["requests"]);
    assert!(b["requests"].as_u64().unwrap() > 30);
    for k in ["min", "mean", "p50", "p90", "p95", "p99", "p999", "max"] {
        assert!(a["latency_ms"][k].as_f64().unwrap() > 0.0, "{k}");
        assert!(a["service_time_ms"][k].as_f64().unwrap() > 0.0, "{k}");
    }
    assert!(!a["distribution"].as_array().unwrap().is_empty());
    assert!(!a["series"].as_array().unwrap().is_empty());
    let series = r["series"].as_array().unwrap();
    assert!(series.len() >= 2);
    for k in [
        "t",
        "requests",
        "errors",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "service_p99_ms",
    ] {
        assert!(!series[0][k].is_null(), "{k}");
    }
    let th = r["thresholds"].as_array().unwrap();
    assert_eq!(th.len(), 3);
    for t in th {
        for k in ["scope", "threshold", "value", "shown", "passed"] {
            assert!(!t[k].is_null(), "{k}");
        }
    }
    // The template and shadow tags reached the server: one probe + 250 requests, all tagged.
    assert_eq!(server.shadow_hits.load(Ordering::Relaxed), 251);
}

/// The commented example in the README is a valid scenario.
#[test]
fn the_readme_example_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```toml\n")
        .expect("a toml block in the README")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.csv"), "id,name\n1,ann\n2,bob\n").unwrap();
    let path = dir.path().join("example.toml");
    std::fs::write(&path, &readme[start..end]).unwrap();
    let o = loadtest(&["validate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// The README's first command: the committed quick start runs with no server (shortened here).
#[test]
fn the_quickstart_runs_without_a_server() {
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/quickstart.toml");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("q.json");
    let o = loadtest(&[
        "run",
        scenario,
        "--duration",
        "2s",
        "-q",
        "--json",
        json.to_str().unwrap(),
        "--html",
        dir.path().join("q.html").to_str().unwrap(),
    ]);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["total"]["requests"], 4000, "2,000/s for 2 s");
    assert_eq!(r["total"]["failed"], 0);
    // The HTML report: round axis ticks, hover read-outs, and a chart pair per step behind a
    // selector.
    let html = std::fs::read_to_string(dir.path().join("q.html")).unwrap();
    for want in [
        "<select id=\"step\"><option value=\"0\">objects/put</option><option value=\"1\">objects/get</option></select>",
        "<div class=\"step\" data-step=\"1\" style=\"display:none\">",
        "<title>requests/s at 1 seconds: ",
        ">0</text>",
    ] {
        assert!(html.contains(want), "{want} in the HTML report");
    }
    assert_eq!(
        html.matches("<svg").count(),
        6 + 2 * 2,
        "6 run charts (throughput, workers and drops, generator CPU and memory, latency over \
         time and distribution), 2 per step"
    );
    // Its p99 < 250ms is the quick start's own verdict on this machine's speed, not the
    // test's: the test checks that the exit code, the report and the summary agree with it.
    let th = r["thresholds"].as_array().unwrap();
    let p99 = th.iter().find(|t| t["threshold"] == "p99 < 250ms").unwrap();
    assert_eq!(
        p99["passed"],
        p99["value"].as_f64().unwrap() < 0.25,
        "{p99}"
    );
    let errors = th
        .iter()
        .find(|t| t["threshold"] == "error-rate < 1%")
        .unwrap();
    assert_eq!(errors["passed"], true, "{errors}");
    let passed = p99["passed"] == true;
    assert_eq!(r["passed"], passed);
    let line = format!("{} run: p99 < 250ms", if passed { "pass" } else { "FAIL" });
    assert!(text(&o).contains(&line), "{line} in {}", text(&o));
    assert_eq!(
        o.status.code(),
        Some(if passed { 0 } else { 1 }),
        "{}",
        text(&o)
    );
}

/// Three scenarios, each long and pointed at a port where nothing listens: only the
/// command-line overrides make a short run against the test's server.
const OVERRIDDEN: &str = r#"
[targets.api]
kind = "http"
url = "http://127.0.0.1:1"

[[scenarios]]
name = "closed"
executor = "constant-vus"
vus = 1
duration = "60s"
[[scenarios.steps]]
name = "get"
http = { path = "/closed/{{vu}}/{{seq}}" }

[[scenarios]]
name = "open"
executor = "constant-arrival-rate"
rate = 1
duration = "60s"
[[scenarios.steps]]
name = "get"
http = { path = "/open/{{seq}}" }

[[scenarios]]
name = "ramp"
executor = "ramping-vus"
stages = [{ duration = "60s", target = 1 }]
[[scenarios.steps]]
name = "get"
http = { path = "/ramp" }
"#;

/// The JSON report of `loadtest run FILE -q --json … ARGS`, and the output.
fn run_json(path: &std::path::Path, args: &[&str]) -> (serde_json::Value, Output) {
    let json = path.with_extension("json");
    let mut all = vec![
        "run",
        path.to_str().unwrap(),
        "-q",
        "--json",
        json.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let o = loadtest(&all);
    let r = std::fs::read(&json).map_or(serde_json::Value::Null, |b| {
        serde_json::from_slice(&b).unwrap()
    });
    (r, o)
}

#[test]
fn command_line_overrides_target_scenario_vus_iterations_rate_and_duration() {
    // --target, --scenario, --vus and --iterations: 3 workers share 30 iterations. The server
    // holds the first requests until 3 are held at once, which only 3 workers can do.
    let gate = Gate::opening_at(1, 3);
    let server = Server::start(Behavior::Gate(gate.clone()), true);
    let (dir, path) = common::scenario(OVERRIDDEN);
    let target = format!("api={}", server.url());
    let args = [
        "--target",
        &target,
        "--scenario",
        "closed",
        "--vus",
        "3",
        "--iterations",
        "30",
    ];
    let (r, o) = run_json(&path, &args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let names: Vec<&str> = r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["closed"]);
    assert_eq!(r["total"]["requests"], 30);
    assert_eq!(r["total"]["failed"], 0, "{}", r["total"]);
    assert_eq!(gate.parked(), 3);
    let paths = server.paths();
    assert_eq!(paths[0], "/", "the probe");
    let (mut vus, mut seqs) = (BTreeSet::new(), BTreeSet::new());
    for p in &paths[1..] {
        let rest = p.strip_prefix("/closed/").unwrap_or_else(|| panic!("{p}"));
        let (vu, seq) = rest.split_once('/').unwrap();
        vus.insert(vu.parse::<u64>().unwrap());
        seqs.insert(seq.parse::<u64>().unwrap());
    }
    assert_eq!(vus, (0..3).collect(), "workers 0, 1 and 2");
    assert_eq!(seqs, (0..30).collect(), "iterations 0..30");

    // --scenario twice, --rate and --duration: 200/s for 250 ms is 50 arrivals, and the
    // constant-vus scenario stops at 250 ms too (the ramping one has no duration to override).
    let server = Server::start(Behavior::Fast, true);
    let target = format!("api={}", server.url());
    let args = [
        "--target",
        &target,
        "--scenario",
        "open",
        "--scenario",
        "closed",
        "--rate",
        "200",
        "--duration",
        "250ms",
    ];
    let (r, o) = run_json(&path, &args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let scenarios = r["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["closed", "open"], "in the file's order");
    assert_eq!(scenarios[1]["summary"]["requests"], 50);
    let closed = scenarios[0]["summary"]["requests"].as_u64().unwrap();
    assert!(closed > 0);
    let paths = server.paths();
    assert_eq!(paths.len() as u64, 1 + 50 + closed);
    assert!(!paths.iter().any(|p| p == "/ramp"), "ramp was not selected");

    // Overrides that name what the scenario does not have are usage errors, naming the option.
    for (args, want) in [
        (
            &["--target", "db=http://127.0.0.1:2"][..],
            "--target db=http://127.0.0.1:2: the scenario has no target \"db\"",
        ),
        (
            &["--scenario", "nope"][..],
            "--scenario nope: no such scenario in",
        ),
    ] {
        let (_, o) = run_json(&path, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{want} in {}", text(&o));
    }
    drop(dir);
}

#[test]
fn segments_of_a_run_run_every_worker_and_iteration_exactly_once() {
    // Two generators, each with --segment K/2, one after the other against one server: the
    // closed scenario's 3 workers and 30 iterations, and the open scenario's 51 arrivals, are
    // each run once in all, with their global numbers.
    let server = Server::start(Behavior::Fast, true);
    let (dir, path) = common::scenario(OVERRIDDEN);
    let target = format!("api={}", server.url());
    let mut reports = Vec::new();
    for (scenario, extra) in [("closed", ["--vus", "3"]), ("open", ["--rate", "500"])] {
        for segment in ["1/2", "2/2"] {
            let iterations = if scenario == "open" { "51" } else { "30" };
            let mut args = vec![
                "--target",
                &target,
                "--scenario",
                scenario,
                "--iterations",
                iterations,
                "--segment",
                segment,
            ];
            args.extend_from_slice(&extra);
            let (r, o) = run_json(&path, &args);
            assert_eq!(o.status.code(), Some(0), "{segment}: {}", text(&o));
            assert_eq!(r["segment"], segment, "the report says which share it is");
            assert!(
                text(&o).contains(&format!("segment {segment} of the run")),
                "{}",
                text(&o)
            );
            reports.push((scenario, segment, r["total"]["requests"].as_u64().unwrap()));
        }
    }
    assert_eq!(
        reports,
        [
            ("closed", "1/2", 15),
            ("closed", "2/2", 15),
            ("open", "1/2", 26),
            ("open", "2/2", 25),
        ]
    );
    let (mut closed, mut vus, mut open) = (Vec::new(), BTreeSet::new(), Vec::new());
    for p in server.paths() {
        if let Some(rest) = p.strip_prefix("/closed/") {
            let (vu, seq) = rest.split_once('/').unwrap();
            vus.insert(vu.parse::<u64>().unwrap());
            closed.push(seq.parse::<u64>().unwrap());
        } else if let Some(seq) = p.strip_prefix("/open/") {
            open.push(seq.parse::<u64>().unwrap());
        }
    }
    closed.sort_unstable();
    open.sort_unstable();
    assert_eq!(closed, (0..30).collect::<Vec<_>>(), "each iteration once");
    assert_eq!(open, (0..51).collect::<Vec<_>>(), "each arrival once");
    // Which worker runs which shared iteration is a race; that each segment runs its own
    // workers is shown by per-vu-iterations (iteration_executors_… below).
    assert!(vus.iter().all(|&v| v < 3), "{vus:?}");

    for (bad, want) in [
        ("0/2", "segment 0 of 2 does not exist"),
        ("3/2", "segment 3 of 2 does not exist"),
        ("half", "is not a segment: write K/N"),
    ] {
        let (_, o) = run_json(&path, &["--segment", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        assert!(text(&o).contains(want), "{want} in {}", text(&o));
    }
    drop(dir);
}

#[test]
fn init_writes_a_starter_that_validates_and_runs() {
    let server = Server::start(Behavior::Fast, true);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("starter.toml");
    let url = format!("{}/api/items?limit=10", server.url());
    let o = loadtest(&["init", &url, "-o", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("loadtest validate"), "{}", text(&o));
    let o = loadtest(&["validate", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Run as written (only shortened): the probe and the load go to the URL's path.
    let (r, o) = run_json(
        &file,
        &[
            "--iterations",
            "5",
            "--html",
            dir.path().join("r.html").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(r["total"]["requests"], 5);
    let paths = server.paths();
    assert_eq!(paths.len(), 6, "{paths:?}");
    assert!(
        paths.iter().all(|p| p == "/api/items?limit=10"),
        "{paths:?}"
    );
    // To stdout without -o; an existing file is not overwritten; a URL it cannot use is 2.
    let o = loadtest(&["init", "http://127.0.0.1:9/x"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("url = \"http://127.0.0.1:9\""));
    let before = std::fs::read(&file).unwrap();
    let o = loadtest(&["init", "http://127.0.0.1:9/x", "-o", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("never overwritten"), "{}", text(&o));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let o = loadtest(&["init", "ftp://example.test/"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("write an absolute http:// or https:// URL"),
        "{}",
        text(&o)
    );
}

const ITERATIONS: &str = r#"
[targets.api]
kind = "http"
url = "http://127.0.0.1:1"

[[scenarios]]
name = "each"
executor = "per-vu-iterations"
vus = 3
iterations = 4
[[scenarios.steps]]
name = "get"
http = { path = "/each/{{vu}}/{{seq}}" }

# Starts 1 s into the run: by then "each" (12 requests to a local server) is long done.
[[scenarios]]
name = "shared"
executor = "shared-iterations"
vus = 2
iterations = 10
start-time = "1s"
max-duration = "30s"
[[scenarios.steps]]
name = "get"
http = { path = "/shared/{{seq}}" }
"#;

#[test]
fn iteration_executors_run_exact_counts_and_start_time_delays_a_scenario() {
    let server = Server::start(Behavior::Fast, true);
    let (dir, path) = common::scenario(ITERATIONS);
    let target = format!("api={}", server.url());
    let (r, o) = run_json(&path, &["--target", &target]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let requests: Vec<u64> = r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["summary"]["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(requests, [12, 10]);
    let paths = server.paths();
    let mut each: Vec<(u64, u64)> = Vec::new();
    let mut shared = Vec::new();
    let mut order = Vec::new();
    for p in &paths {
        if let Some(rest) = p.strip_prefix("/each/") {
            let (vu, seq) = rest.split_once('/').unwrap();
            each.push((vu.parse().unwrap(), seq.parse().unwrap()));
            order.push('e');
        } else if let Some(seq) = p.strip_prefix("/shared/") {
            shared.push(seq.parse::<u64>().unwrap());
            order.push('s');
        }
    }
    each.sort_unstable();
    // Worker v runs exactly its 4 iterations, numbered v·4 … v·4 + 3.
    let want: Vec<(u64, u64)> = (0..3)
        .flat_map(|v| (0..4).map(move |i| (v, v * 4 + i)))
        .collect();
    assert_eq!(each, want);
    shared.sort_unstable();
    assert_eq!(shared, (0..10).collect::<Vec<_>>());
    let order: String = order.into_iter().collect();
    assert_eq!(
        order,
        format!("{}{}", "e".repeat(12), "s".repeat(10)),
        "start-time: shared after each"
    );
    // Segments split the workers of per-vu-iterations, each running all its iterations.
    let server = Server::start(Behavior::Fast, true);
    let target = format!("api={}", server.url());
    let mut each = Vec::new();
    for segment in ["1/2", "2/2"] {
        let (_, o) = run_json(
            &path,
            &[
                "--target",
                &target,
                "--scenario",
                "each",
                "--segment",
                segment,
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    for p in server.paths() {
        if let Some(rest) = p.strip_prefix("/each/") {
            let (vu, seq) = rest.split_once('/').unwrap();
            each.push((vu.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap()));
        }
    }
    each.sort_unstable();
    assert_eq!(
        each, want,
        "two segments run the same iterations as one run"
    );
    drop(dir);
}

const MERGED: &str = r#"
thresholds = ["p99 < 60s"]

[targets.api]
kind = "http"
url = "http://127.0.0.1:1"

# Each half of 200/s is 100/s: the step's rps threshold fails on a segment, passes merged.
[[scenarios]]
name = "open"
executor = "constant-arrival-rate"
rate = 200
duration = "1s"
[[scenarios.steps]]
name = "get"
http = { path = "/m/{{seq}}" }
thresholds = ["rps > 150"]
"#;

#[test]
fn segment_reports_merge_exactly_and_the_thresholds_are_evaluated_again() {
    let server = Server::start(Behavior::Fast, true);
    let (dir, path) =
        common::scenario(&MERGED.replace("\n[thresholds]\n", "\nthresholds = [\"p99 < 60s\"]\n"));
    let target = format!("api={}", server.url());
    let mut files = Vec::new();
    let mut segments = Vec::new();
    for segment in ["1/2", "2/2"] {
        let json = dir.path().join(format!("seg{}.json", &segment[..1]));
        let o = loadtest(&[
            "run",
            path.to_str().unwrap(),
            "-q",
            "--target",
            &target,
            "--segment",
            segment,
            "--json",
            json.to_str().unwrap(),
        ]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "rps > 150 fails on half the load: {}",
            text(&o)
        );
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(r["total"]["requests"], 100, "{segment}");
        files.push(json);
        segments.push(r);
    }
    let merged_json = dir.path().join("merged.json");
    let html = dir.path().join("merged.html");
    let mut args = vec!["merge"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    args.extend([
        "--json",
        merged_json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    let o = loadtest(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "merged, rps > 150 passes: {}",
        text(&o)
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&merged_json).unwrap()).unwrap();
    assert_eq!(m["segment"], "1/1");
    assert_eq!(m["merged_from"].as_array().unwrap().len(), 2);
    assert_eq!(m["total"]["requests"], 200);
    // The run series keeps its gauges: workers and drops added, the busiest CPU share.
    for (k, p) in m["series"].as_array().unwrap().iter().enumerate() {
        // A segment that ended a second sooner has no point `k`: the merge adds nothing
        // for it there. A point it has must carry the gauge.
        let of = |r: &serde_json::Value, key: &str| match &r["series"][k] {
            serde_json::Value::Null => 0,
            point => point[key].as_u64().unwrap(),
        };
        let (a, b) = (&segments[0], &segments[1]);
        assert_eq!(of(&m, "active"), of(a, "active") + of(b, "active"), "{p}");
        assert_eq!(
            of(&m, "dropped"),
            of(a, "dropped") + of(b, "dropped"),
            "{p}"
        );
        assert!(p["cpu_share"].is_f64(), "{p}");
    }
    let step = &m["scenarios"][0]["steps"][0];
    assert_eq!(step["requests"], 200);
    // Extremes of a sum of histograms are the extremes of the parts: exact, where averaging
    // percentiles would not be.
    let of = |r: &serde_json::Value, k: &str| r["total"]["latency_ms"][k].as_f64().unwrap();
    let (a, b) = (&segments[0], &segments[1]);
    assert_eq!(of(&m, "max"), of(a, "max").max(of(b, "max")));
    assert_eq!(of(&m, "min"), of(a, "min").min(of(b, "min")));
    let p50 = of(&m, "p50");
    assert!(of(a, "p50").min(of(b, "p50")) <= p50 && p50 <= of(a, "p50").max(of(b, "p50")));
    // Every percentile equals that of one histogram fed, sample by sample, with every
    // sample the two segments recorded (read back from their reports' histograms).
    let mut one = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for seg in &segments {
        let part = decode_hdr(
            seg["scenarios"][0]["steps"][0]["hdr"]["latency"]
                .as_str()
                .unwrap(),
        );
        for v in part.iter_recorded() {
            for _ in 0..v.count_at_value() {
                one.record(v.value_iterated_to()).unwrap();
            }
        }
    }
    assert_eq!(one.len(), 200);
    let ms = |v: u64| v as f64 / 1000.0;
    for (key, q) in [
        ("p50", 0.5),
        ("p90", 0.9),
        ("p95", 0.95),
        ("p99", 0.99),
        ("p999", 0.999),
    ] {
        assert_eq!(of(&m, key), ms(one.value_at_quantile(q)), "{key}");
        let in_step = step["latency_ms"][key].as_f64().unwrap();
        assert_eq!(in_step, ms(one.value_at_quantile(q)), "step {key}");
    }
    // The mean is a float sum over buckets: equal up to its last bits.
    let mean = one.mean() / 1000.0;
    assert!((of(&m, "mean") - mean).abs() <= mean * 1e-12, "mean");
    let series: u64 = m["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(series, 200, "the per-second series add up");
    let thresholds: Vec<(&str, bool)> = m["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["threshold"].as_str().unwrap(),
                t["passed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(thresholds, [("rps > 150", true), ("p99 < 60s", true)]);
    assert!(
        std::fs::read_to_string(&html).unwrap().contains("<svg"),
        "the HTML report"
    );
    let seqs: BTreeSet<u64> = server
        .paths()
        .iter()
        .filter_map(|p| p.strip_prefix("/m/")?.parse().ok())
        .collect();
    assert_eq!(
        seqs,
        (0..200).collect(),
        "each arrival once over the two segments"
    );

    // What does not merge is refused, naming the file and why; exit code 2.
    let corrupt = dir.path().join("corrupt.json");
    let mut bad = segments[1].clone();
    bad["scenarios"][0]["steps"][0]["hdr"]["latency"] = "HISTOGRAM".into();
    std::fs::write(&corrupt, bad.to_string()).unwrap();
    let wide = dir.path().join("wide.json");
    let mut other = segments[1].clone();
    // A histogram claiming other bounds (they would size the allocation) is refused unread.
    other["scenarios"][0]["steps"][0]["hdr"]["latency"] = {
        use base64::Engine as _;
        use hdrhistogram::serialization::Serializer as _;
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, u64::MAX / 2, 5).unwrap();
        h.record(7).unwrap();
        let mut bytes = Vec::new();
        hdrhistogram::serialization::V2DeflateSerializer::new()
            .serialize(&h, &mut bytes)
            .unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into()
    };
    std::fs::write(&wide, other.to_string()).unwrap();
    let missing = dir.path().join("missing.json");
    let first = files[0].to_str().unwrap();
    for (args, want) in [
        (vec![first], "segments missing: 2/2"),
        (vec![first, first], "segment: 1/2 again"),
        (
            vec![first, corrupt.to_str().unwrap()],
            "corrupt.json: scenarios[0].steps[0].hdr: a histogram that is not base64",
        ),
        (
            vec![first, wide.to_str().unwrap()],
            "wide.json: scenarios[0].steps[0].hdr: a histogram with bounds 1..9223372036854775807 at 5 digits",
        ),
        (
            vec![first, missing.to_str().unwrap()],
            "missing.json: cannot read it",
        ),
        (vec![path.to_str().unwrap()], "not a loadtest JSON report"),
    ] {
        let mut all = vec!["merge"];
        all.extend(args.iter().copied());
        let o = loadtest(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{want:?} in {}", text(&o));
    }
    drop(dir);
}

#[test]
fn regression_an_absurd_value_size_is_refused_not_allocated() {
    let (_dir, path) = common::scenario(
        r#"
[targets.store]
kind = "objstore"
embedded = true

[[scenarios]]
name = "s"
executor = "constant-vus"
vus = 1
iterations = 1

[[scenarios.steps]]
name = "put"
objstore = { op = "put", key = "k", value-size = "1TiB" }
"#,
    );
    let p = path.to_str().unwrap();
    let o = loadtest(&["validate", p]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains(p) && t.contains("scenarios[0].steps[0].objstore.value-size: at most 64 MiB"),
        "{t}"
    );
}

/// Runs the binary with stdout a pipe whose reader is already gone, as in `loadtest … | head
/// -0`: every write to it fails with a broken pipe.
fn loadtest_into_a_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run loadtest");
    child.wait_with_output().expect("wait for loadtest")
}

/// Regression: `println!` panicked ("failed printing to stdout: Broken pipe", exit code 101)
/// when the reader of stdout had gone, as with `loadtest validate s.toml | head -0`.
#[test]
fn a_closed_stdout_is_not_a_panic_and_keeps_the_exit_code() {
    let (_dir, path) = common::scenario(GOOD);
    let o = loadtest_into_a_closed_pipe(&["validate", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "", "nothing to report: the reader went away");

    // A run prints its summary to the same closed pipe, and still exits with its code: 1,
    // a threshold failed (nothing listens on port 1).
    let failing = GOOD
        .replace(
            "url = \"http://127.0.0.1:1\"",
            "url = \"http://127.0.0.1:1\"\nlive = false",
        )
        .replace("duration = \"1s\"", "iterations = 10")
        .replace(
            "[targets.api]",
            "thresholds = [\"error-rate < 1%\"]\n[targets.api]",
        );
    let (_dir, path) = common::scenario(&failing);
    let o = loadtest_into_a_closed_pipe(&["run", "-q", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_invalid_scenario_is_printed_with_file_line_key_and_causes() {
    let (_dir, path) =
        common::scenario(&GOOD.replacen("duration = \"1s\"", "duration = \"1s\"\nbogus = 1", 1));
    let p = path.to_str().unwrap();
    let o = loadtest(&["validate", p]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!("loadtest: error: {p}:11:1: scenarios[0].bogus: unknown key\n")
    );

    // The error behind it (the CSV reader's) is printed under it, not folded into the line.
    let (dir, path) = common::scenario(&format!("[feeders.users]\ncsv = \"users.csv\"\n{GOOD}"));
    std::fs::write(dir.path().join("users.csv"), "id,name\n1,ann\n2\n").unwrap();
    let p = path.to_str().unwrap();
    let o = loadtest(&["validate", p]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let mut lines = stderr.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("loadtest: error: {p}:2:1: feeders.users.csv: ")),
        "{stderr}"
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("  caused by: CSV error")),
        "{stderr}"
    );
}

const COMPARED: &str = r#"
[targets.api]
kind = "http"
url = "http://127.0.0.1:1"

[[scenarios]]
name = "open"
executor = "shared-iterations"
vus = 2
iterations = 40
max-duration = "30s"
[[scenarios.steps]]
name = "get"
http = { path = "/c/{{seq}}" }
"#;

#[test]
fn compare_passes_a_run_against_itself_and_names_what_got_worse() {
    let server = Server::start(Behavior::Fast, true);
    let target = format!("api={}", server.url());
    let (dir, path) = common::scenario(COMPARED);
    let base_json = dir.path().join("base.json");
    let o = loadtest(&[
        "run",
        path.to_str().unwrap(),
        "-q",
        "--target",
        &target,
        "--json",
        base_json.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The candidate is the same run with every request failed by its checks: the same
    // histograms (so no figure depends on timing), an error rate of 100% against 0.
    let mut report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&base_json).unwrap()).unwrap();
    for step in report["scenarios"][0]["steps"].as_array_mut().unwrap() {
        let requests = step["requests"].clone();
        step["errors"] = serde_json::json!({ "check": requests });
        for point in step["series"].as_array_mut().unwrap() {
            point["errors"] = point["requests"].clone();
        }
    }
    for point in report["series"].as_array_mut().unwrap() {
        point["errors"] = point["requests"].clone();
    }
    let cand_json = dir.path().join("cand.json");
    std::fs::write(&cand_json, serde_json::to_vec(&report).unwrap()).unwrap();
    let files = [
        base_json.to_str().unwrap().to_owned(),
        cand_json.to_str().unwrap().to_owned(),
    ];
    let dirs = [dir];
    let (base, cand) = (&files[0], &files[1]);

    let o = loadtest(&["compare", base, base]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("no regression beyond 10%"), "{out}");
    assert!(out.contains("open/get") && out.contains("+0.0%"), "{out}");

    let html = dirs[0].path().join("diff.html");
    let json = dirs[0].path().join("diff.json");
    let o = loadtest(&[
        "compare",
        base,
        cand,
        "--html",
        html.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("open/get: error rate % 0.000 → 100.000 (from 0)"),
        "{out}"
    );
    assert!(out.contains("REGRESSION"), "{out}");
    let diff: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let names: Vec<&str> = diff["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["open/get", "total"]);
    assert_eq!(diff["steps"][0]["figures"][0]["what"], "requests");
    assert_eq!(diff["steps"][0]["figures"][0]["baseline"], 40.0);
    assert_eq!(diff["steps"][0]["figures"][0]["candidate"], 40.0);
    // The step and the total both regressed on their error rate.
    assert_eq!(diff["regressions"].as_array().unwrap().len(), 2, "{diff}");
    let page = std::fs::read_to_string(&html).unwrap();
    for needle in [
        "open/get",
        "class=\"worse\"",
        "baseline p99",
        "candidate req/s",
    ] {
        assert!(page.contains(needle), "the HTML diff shows {needle}");
    }
    assert!(
        !page.contains("src=") && !page.contains("href="),
        "no external resources"
    );

    // The other way round, the candidate is better: no regression.
    let o = loadtest(&["compare", cand, base]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Not reports, or a bad tolerance: exit 2, naming what is wrong.
    let bogus = dirs[0].path().join("bogus.json");
    std::fs::write(&bogus, "{\"schema\": 3}").unwrap();
    let o = loadtest(&["compare", base, bogus.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("bogus.json"), "{}", text(&o));
    let o = loadtest(&["compare", base, cand, "--tolerance", "lots"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--tolerance"), "{}", text(&o));
}

/// A report's histogram text (base64 of HdrHistogram V2 + DEFLATE), read with the
/// hdrhistogram crate's own deserializer.
fn decode_hdr(text: &str) -> hdrhistogram::Histogram<u64> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut &bytes[..])
        .unwrap()
}
