//! Distributed runs with real processes: three `loadtest worker`s registered in a real etcd,
//! a coordinator (`loadtest run --workers 3`) splitting the run over them, an HTTP server on
//! loopback as the target. Counts, never timings.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Behavior, Server};
use loadtest::segment::Segment;
use testkit::{Etcd, Service};

const START: Duration = Duration::from_secs(30);

fn worker(etcd: &Etcd, pool: &str, i: usize) -> Service {
    let registry = format!("etcd://{}", etcd.addr());
    let w = Service::start(
        &format!("worker {i}"),
        Path::new(env!("CARGO_BIN_EXE_loadtest")),
        [
            "worker",
            "--registry",
            &registry,
            "--listen",
            "127.0.0.1:0",
            "--pool",
            pool,
        ],
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    w.wait_for("worker listening on ws://", START).unwrap();
    w
}

fn coordinator(etcd: &Etcd, pool: &str, scenario: &Path, json: &Path) -> Service {
    let registry = format!("etcd://{}", etcd.addr());
    Service::start(
        "coordinator",
        Path::new(env!("CARGO_BIN_EXE_loadtest")),
        [
            "run",
            scenario.to_str().unwrap(),
            "--workers",
            "3",
            "--registry",
            &registry,
            "--pool",
            pool,
            "--wait",
            "20s",
            "--json",
            json.to_str().unwrap(),
        ],
        Vec::<(String, String)>::new(),
    )
    .unwrap()
}

fn scenario(dir: &Path, url: &str, rate: u64, secs: u64) -> std::path::PathBuf {
    let path = dir.join("scenario.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            thresholds = ["error-rate < 1%"]
            [run]
            run-id = "dist-1"
            [targets.api]
            kind = "http"
            url = "{url}"
            [[scenarios]]
            name = "spread"
            executor = "constant-arrival-rate"
            rate = {rate}
            duration = "{secs}s"
            [[scenarios.steps]]
            name = "get"
            http = {{ method = "GET", path = "/x/{{{{seq}}}}" }}
            "#
        ),
    )
    .unwrap();
    path
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn three_workers_run_one_segment_each_and_the_merge_is_the_sum_of_the_parts() {
    let etcd = Etcd::start();
    let server = Server::start(Behavior::Fast, true);
    let workers: Vec<Service> = (0..3).map(|i| worker(&etcd, "even", i)).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), &server.url(), 300, 3);
    let json = dir.path().join("report.json");
    let run = coordinator(&etcd, "even", &file, &json);
    let code = run.wait_exit(Duration::from_secs(120)).unwrap();
    assert_eq!(code, Some(0), "{}", run.output());

    let r = report(&json);
    // The plan: 300 arrivals a second for 3 s. The segments add up to exactly that, so the
    // merged rate over the scenario's 3 s is exactly the scenario's.
    let planned = 300 * 3;
    assert_eq!(r["total"]["requests"], planned, "{}", r["total"]);
    assert_eq!(r["total"]["failed"], 0);
    assert_eq!(r["run_id"], "dist-1");
    assert_eq!(r["segment"], "1/1");
    let shares = r["workers"].as_array().unwrap();
    assert_eq!(shares.len(), 3);
    let mut sum = 0;
    for (k, w) in shares.iter().enumerate() {
        let segment = Segment::new(k as u64 + 1, 3).unwrap();
        assert_eq!(w["segment"], segment.to_string());
        assert_eq!(w["status"], "done", "{w}");
        assert_eq!(w["requests"], segment.share(planned), "{w}");
        sum += w["requests"].as_u64().unwrap();
    }
    assert_eq!(sum, planned);
    assert!(r.get("missing_segments").is_none());
    // Every request reached the server, tagged (the probe of each worker too).
    assert_eq!(
        server
            .shadow_hits
            .load(std::sync::atomic::Ordering::Relaxed),
        planned + 3
    );
    // Each worker ran exactly its own segment.
    let mut seen: Vec<String> = workers
        .iter()
        .map(|w| w.wait_for("segment ", START).unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, ["1/3 started", "2/3 started", "3/3 started"]);
    // The summary's per-worker breakdown.
    let out = run.output();
    assert_eq!(out.matches("  done").count(), 3, "{out}");
}

#[test]
fn a_worker_killed_mid_run_leaves_its_share_missing_and_the_run_completes() {
    let etcd = Etcd::start();
    let server = Server::start(Behavior::Fast, true);
    let workers: Vec<Service> = (0..3).map(|i| worker(&etcd, "lossy", i)).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), &server.url(), 200, 6);
    // This time the scenario itself says where its workers are.
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!(
        "\n[distributed]\nworkers = 3\nregistry = \"etcd://{}\"\npool = \"lossy\"\nwait = \"20s\"\n",
        etcd.addr()
    ));
    std::fs::write(&file, text).unwrap();
    let json = dir.path().join("report.json");
    let run = Service::start(
        "coordinator",
        Path::new(env!("CARGO_BIN_EXE_loadtest")),
        [
            "run",
            file.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        Vec::<(String, String)>::new(),
    )
    .unwrap();

    // The first worker: find its segment, let it report two seconds, kill it.
    let started = workers[0].wait_for("segment ", START).unwrap();
    let segment = started.trim_end_matches(" started").to_owned();
    workers[0]
        .wait_for(&format!("segment {segment} t=2s"), START)
        .unwrap();
    workers[0].kill();

    let code = run.wait_exit(Duration::from_secs(120)).unwrap();
    assert_eq!(code, Some(3), "incomplete: {}", run.output());
    assert!(
        run.output()
            .contains(&format!("segments {segment} missing")),
        "{}",
        run.output()
    );
    let r = report(&json);
    assert_eq!(r["missing_segments"], serde_json::json!([segment]));
    let planned = 200 * 6;
    let mut survivors = 0;
    for w in r["workers"].as_array().unwrap() {
        let k: Segment = w["segment"].as_str().unwrap().parse().unwrap();
        if w["segment"] == segment.as_str() {
            let status = w["status"].as_str().unwrap();
            assert!(status.starts_with("lost: "), "{w}");
            // What it reported before it died: at least its first two seconds.
            assert!(w["requests"].as_u64().unwrap() > 0, "{w}");
        } else {
            assert_eq!(w["status"], "done", "{w}");
            assert_eq!(w["requests"], k.share(planned), "{w}");
            survivors += k.share(planned);
        }
    }
    // The merged figures are exactly the surviving workers' shares.
    assert_eq!(r["total"]["requests"], survivors);
}

#[test]
fn too_few_workers_is_a_clear_error_and_nothing_is_sent() {
    let etcd = Etcd::start();
    let server = Server::start(Behavior::Fast, true);
    let _one = worker(&etcd, "small", 0);
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), &server.url(), 100, 1);
    let registry = format!("etcd://{}", etcd.addr());
    let run = common::loadtest(&[
        "run",
        file.to_str().unwrap(),
        "--workers",
        "3",
        "--registry",
        &registry,
        "--pool",
        "small",
        "--wait",
        "1s",
    ]);
    assert_eq!(run.status.code(), Some(3), "{}", common::text(&run));
    assert!(
        common::text(&run).contains("1 of 3 workers registered in pool \"small\""),
        "{}",
        common::text(&run)
    );
    assert_eq!(server.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn a_failing_abort_threshold_stops_every_worker() {
    let etcd = Etcd::start();
    let server = Server::start(Behavior::Fast, true);
    let _workers: Vec<Service> = (0..3).map(|i| worker(&etcd, "abort", i)).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scenario.toml");
    // Every answer fails its check: the threshold fails at its first evaluation, a second in.
    std::fs::write(
        &file,
        format!(
            r#"
            thresholds = [{{ threshold = "error-rate < 1%", abort-on-fail = true }}]
            [targets.api]
            kind = "http"
            url = "{}"
            [[scenarios]]
            name = "doomed"
            executor = "constant-arrival-rate"
            rate = 100
            duration = "60s"
            [[scenarios.steps]]
            name = "get"
            http = {{ method = "GET", path = "/x" }}
            checks = {{ status = [201] }}
            "#,
            server.url()
        ),
    )
    .unwrap();
    let json = dir.path().join("report.json");
    let run = coordinator(&etcd, "abort", &file, &json);
    let code = run.wait_exit(Duration::from_secs(120)).unwrap();
    assert_eq!(code, Some(1), "{}", run.output());
    let r = report(&json);
    assert!(
        r["stopped_by"]
            .as_str()
            .unwrap()
            .contains("error-rate < 1%"),
        "{}",
        r["stopped_by"]
    );
    // Stopped long before the 6,000 planned requests, every worker with it.
    let total = r["total"]["requests"].as_u64().unwrap();
    assert!(total > 0 && total < 3000, "{total}");
    for w in r["workers"].as_array().unwrap() {
        assert_eq!(w["status"], "done", "{w}");
        assert!(w["requests"].as_u64().unwrap() < 1000, "{w}");
    }
}
