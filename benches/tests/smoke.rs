//! Every suite of the comparison runner runs to its end on the shortest settings (one round of
//! one second, sizes scaled to 1%), so a broken benchmark fails the test command instead of surprising the next
//! person who runs it. Debug build: the figures mean nothing here and nothing asserts them;
//! each suite must print its table with a row for ours and for each peer that ran.

use std::process::Command;

fn compare(suite: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .arg(suite)
        .env("BENCH_SECONDS", "1")
        .env("BENCH_ROUNDS", "1")
        .env("BENCH_SCALE", "0.01")
        .output()
        .expect("run compare");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "compare {suite} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// Rows of the markdown tables in `out` that name `client` in a cell.
fn rows<'a>(out: &'a str, client: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.starts_with('|') && l.split('|').any(|c| c.trim() == client))
        .collect()
}

#[test]
fn the_redis_suites_run_with_every_client() {
    for suite in ["redis", "redis-cluster"] {
        let out = compare(suite);
        let clients: &[&str] = if suite == "redis" {
            &["ours", "ours, redis-rs API", "fred", "redis-rs"]
        } else {
            &["ours", "fred", "redis-rs"]
        };
        for client in clients {
            assert!(
                !rows(&out, client).is_empty(),
                "no {client} row in {suite}:\n{out}"
            );
        }
    }
}

#[test]
fn the_metrics_objstore_and_loadtest_suites_run() {
    let out = compare("metrics");
    assert!(out.contains("ns/call"), "{out}");
    let out = compare("objstore");
    assert!(out.contains("objstore"), "{out}");
    let out = compare("loadtest");
    assert!(out.contains("loadtest"), "{out}");
    let out = compare("loadtest-memory");
    assert!(
        out.contains("resident memory") && out.contains("completed"),
        "{out}"
    );
}
