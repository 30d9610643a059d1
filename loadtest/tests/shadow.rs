//! Shadow traffic as the server sees it: the probe on the target's `probe` path, the header and
//! the W3C baggage (with the run id) on every request; and with `[run] shadow = false`, no
//! probe, no tag, and Redis keys written where they are named.

mod common;

use common::{Behavior, Server};
use testkit::{RedisServer, Reply};

/// A scenario of `iterations` GETs of `/load` from `vus` workers, at one target, at `url`, that
/// the run probes on `/health`: the same for a target that acknowledges and for one that does not.
fn probing(url: &str, vus: u32, iterations: u32) -> String {
    format!(
        r#"
        [targets.api]
        kind = "http"
        url = "{url}"
        probe = "/health"
        [[scenarios]]
        name = "s"
        executor = "constant-vus"
        vus = {vus}
        iterations = {iterations}
        [[scenarios.steps]]
        name = "get"
        http = {{ path = "/load" }}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_asks_the_probe_path_and_every_request_carries_the_tag() {
    let server = Server::start(Behavior::Fast, true);
    let (report, outcome) = common::run(&format!(
        "[run]\nrun-id = \"r-7\"\n{}",
        probing(&server.url(), 2, 20)
    ))
    .await;
    assert_eq!(outcome, loadtest::Outcome::Passed);
    assert!(report.shadow);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 21);
    assert_eq!(seen[0].path, "/health", "the probe first, on its path");
    assert!(seen[1..].iter().all(|s| s.path == "/load"), "{seen:?}");
    for s in &seen {
        assert!(s.shadow, "{s:?}");
        assert_eq!(
            s.baggage.as_deref(),
            Some("jupiter.shadow=1,jupiter.shadow.run=r-7"),
            "{s:?}"
        );
    }

    // Without a run id, the run makes one: every request carries it, and so does the report.
    let (report, _) = common::run(&probing(&server.url(), 1, 5)).await;
    let id = report.run_id.clone();
    assert!(
        id.len() == 15 && id.starts_with("lt-") && id[3..].chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    let seen = server.seen.lock().unwrap().clone();
    let made = format!("jupiter.shadow=1,jupiter.shadow.run={id}");
    assert_eq!(seen.len(), 21 + 6);
    assert!(
        seen[21..]
            .iter()
            .all(|s| s.baggage.as_deref() == Some(made.as_str())),
        "{seen:?}"
    );

    // The probe's path is in the refusal of a target that does not acknowledge.
    let deaf = Server::start(Behavior::Fast, false);
    let err = common::refused(&probing(&deaf.url(), 1, 5)).await;
    assert!(
        err.to_string()
            .contains("answered GET /health without the x-jupiter-shadow-ack header"),
        "{err}"
    );
    assert_eq!(deaf.paths(), ["/health"], "only the probe was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_false_sends_plain_traffic_without_a_probe() {
    // A live target that would fail the probe (it never acknowledges) and a live Redis with
    // a shadow prefix: with shadow = false neither is probed and nothing is tagged.
    let deaf = Server::start(Behavior::Fast, false);
    let redis = RedisServer::start();
    let (report, outcome) = common::run(&format!(
        r#"
        [run]
        shadow = false
        run-id = "r-8"
        [targets.api]
        kind = "http"
        url = "{}"
        [targets.cache]
        kind = "redis"
        url = "{}"
        shadow-prefix = "__shadow__:"
        [[scenarios]]
        name = "s"
        executor = "constant-vus"
        vus = 2
        iterations = 10
        flow = "sequence"
        [[scenarios.steps]]
        name = "get"
        target = "api"
        http = {{ path = "/plain/{{{{seq}}}}" }}
        [[scenarios.steps]]
        name = "set"
        target = "cache"
        redis = ["SET", "plain:{{{{seq}}}}", "v"]
        "#,
        deaf.url(),
        redis.url()
    ))
    .await;
    assert_eq!(outcome, loadtest::Outcome::Passed);
    assert!(!report.shadow);
    assert_eq!(report.total.failed, 0, "{:?}", report.total.errors);
    let seen = deaf.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 10, "no probe: {seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.path.starts_with("/plain/") && !s.shadow && s.baggage.is_none()),
        "{seen:?}"
    );
    // The keys are where the commands name them, none under the shadow prefix.
    assert_eq!(redis.command(&["DBSIZE"]).unwrap(), Reply::Integer(10));
    assert_eq!(
        redis.command(&["EXISTS", "plain:0", "plain:9"]).unwrap(),
        Reply::Integer(2)
    );
    assert_eq!(
        redis.command(&["KEYS", "__shadow__:*"]).unwrap(),
        Reply::Array(Some(vec![]))
    );
}
