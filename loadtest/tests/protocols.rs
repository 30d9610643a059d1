//! Redis steps against a real redis-server (shadow keys only), HTTP/2 against a hyper server,
//! and objstore steps against the embedded objstore.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_steps_write_only_shadow_keys() {
    let redis = RedisServer::start();
    redis.command(&["SET", "live:1", "untouched"]).unwrap();
    let (report, outcome) = common::run(&format!(
        r#"
        thresholds = ["error-rate < 1%"]
        [targets.cache]
        kind = "redis"
        url = "{}"
        shadow-prefix = "__shadow__:"
        [[scenarios]]
        name = "cache"
        executor = "constant-vus"
        vus = 8
        iterations = 2000
        flow = "sequence"
        [[scenarios.steps]]
        name = "set"
        redis = ["SET", "live:{{{{seq}}}}", "{{{{uuid}}}}"]
        [[scenarios.steps]]
        name = "get"
        redis = ["GET", "live:{{{{seq}}}}"]
        [[scenarios.steps]]
        name = "wrong"
        redis = ["LPUSH", "live:{{{{seq}}}}", "x"]
        checks = {{ status = [0] }}
        "#,
        redis.url()
    ))
    .await;
    let s = &report.scenarios[0];
    assert_eq!(s.steps[0].requests, 2000);
    assert_eq!(s.steps[0].failed, 0, "{:?}", s.steps[0].errors);
    assert_eq!(s.steps[1].failed, 0);
    // LPUSH on a string key: an error reply, classified as a status error.
    assert_eq!(s.steps[2].errors["status"], 2000);
    assert_eq!(outcome, loadtest::Outcome::ThresholdsFailed);
    // Live data untouched; every written key is a shadow key.
    let get = redis.command(&["GET", "live:1"]).unwrap();
    assert_eq!(get, testkit::Reply::Bulk(Some(b"untouched".to_vec())));
    let n = redis.command(&["DBSIZE"]).unwrap();
    assert_eq!(n, testkit::Reply::Integer(2001));
    let shadow = redis.command(&["EXISTS", "__shadow__:live:1999"]).unwrap();
    assert_eq!(shadow, testkit::Reply::Integer(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_redis_target_without_a_shadow_prefix_is_refused() {
    let redis = RedisServer::start();
    let err = common::refused(&format!(
        r#"
        [targets.cache]
        kind = "redis"
        url = "{}"
        [[scenarios]]
        name = "cache"
        executor = "constant-vus"
        vus = 1
        iterations = 10
        [[scenarios.steps]]
        name = "set"
        redis = ["SET", "k{{{{seq}}}}", "v"]
        "#,
        redis.url()
    ))
    .await;
    assert!(err.to_string().contains("has no shadow-prefix"), "{err}");
    assert_eq!(
        redis.command(&["DBSIZE"]).unwrap(),
        testkit::Reply::Integer(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_steps_multiplex_and_carry_the_tag() {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shadow = Arc::new(AtomicU64::new(0));
    let seen = shadow.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let tagged = req
                            .headers()
                            .get("x-jupiter-shadow")
                            .is_some_and(|v| v == "1");
                        if tagged {
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                        let status = if req.uri().path() == "/missing" {
                            404
                        } else {
                            200
                        };
                        async move {
                            hyper::Response::builder()
                                .status(status)
                                .header("x-jupiter-shadow-ack", if tagged { "1" } else { "0" })
                                .body(Full::new(Bytes::from_static(b"hello h2")))
                        }
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
            });
        }
    });
    let (report, _) = common::run(&format!(
        r#"
        [targets.api]
        kind = "http"
        url = "http://{addr}"
        http2 = true
        connections = 2
        [[scenarios]]
        name = "h2"
        executor = "constant-vus"
        vus = 32
        iterations = 3000
        [[scenarios.steps]]
        name = "ok"
        weight = 9
        http = {{ method = "POST", path = "/x/{{{{seq}}}}", body = "b", headers = {{ x-a = "1" }} }}
        checks = {{ body-contains = "h2", headers = {{ x-jupiter-shadow-ack = "1" }} }}
        [[scenarios.steps]]
        name = "missing"
        http = {{ path = "/missing" }}
        "#
    ))
    .await;
    let s = &report.scenarios[0];
    assert_eq!(s.summary.requests, 3000);
    assert_eq!(s.steps[0].failed, 0, "{:?}", s.steps[0].errors);
    assert_eq!(s.steps[1].errors["status"], s.steps[1].requests);
    assert!(s.steps[1].requests > 100);
    assert_eq!(shadow.load(Ordering::Relaxed), 3001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gets_value_feeds_later_steps_and_a_missing_one_fails_the_extraction() {
    let scenario = |next: &str| {
        format!(
            r#"
            [targets.store]
            kind = "objstore"
            embedded = true
            [[scenarios]]
            name = "chain"
            executor = "constant-vus"
            vus = 4
            iterations = 200
            flow = "sequence"
            [[scenarios.steps]]
            name = "put-target"
            objstore = {{ op = "put", key = "target/{{{{seq}}}}", value = "x" }}
            [[scenarios.steps]]
            name = "put-pointer"
            objstore = {{ op = "put", key = "ptr/{{{{seq}}}}", value = '{{"next": "{next}/{{{{seq}}}}", "n": 1}}' }}
            [[scenarios.steps]]
            name = "follow"
            objstore = {{ op = "get", key = "ptr/{{{{seq}}}}" }}
            extract = {{ next = {{ json = "$.next" }}, digits = {{ regex = '/(\d+)"' }} }}
            [[scenarios.steps]]
            name = "target"
            objstore = {{ op = "get", key = "{{{{var.next}}}}" }}
            extract = {{ value = {{ regex = "x" }} }}
            [[scenarios.steps]]
            name = "digits"
            objstore = {{ op = "head", key = "target/{{{{var.digits}}}}" }}
            checks = {{ status = [0] }}
            "#
        )
    };
    // The pointer names a stored object: every step passes.
    let (report, _) = common::run(&scenario("target")).await;
    let s = &report.scenarios[0];
    for st in &s.steps {
        assert_eq!(
            (st.requests, st.failed),
            (200, 0),
            "{}: {:?}",
            st.name,
            st.errors
        );
    }
    // It names nothing: the get finds no value to extract from, a check error, and the rest
    // of each iteration is skipped.
    let (report, _) = common::run(&scenario("nowhere")).await;
    let s = &report.scenarios[0];
    assert_eq!(s.steps[3].errors["check"], 200, "{:?}", s.steps[3].errors);
    assert_eq!(s.steps[4].requests, 0);
    assert_eq!(s.iterations_cut_short, 200);

    // Refused when the scenario loads, naming the key: an objstore value has no headers, and
    // only a get has a value.
    let refusals = [
        (
            scenario("target").replace(r#"{ json = "$.next" }"#, r#"{ header = "etag" }"#),
            "scenarios[0].steps[2].extract.next.header",
            "no headers",
        ),
        (
            scenario("target").replace(
                r#"value = "x" }"#,
                r#"value = "x" }
            extract = { v = { regex = "x" } }"#,
            ),
            "scenarios[0].steps[0].extract",
            "a get's value only",
        ),
    ];
    for (text, key, says) in refusals {
        let (_dir, path) = common::scenario(&text);
        let err = loadtest::scenario::Plan::load(&path, &Default::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(key) && msg.contains(says), "{key}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objstore_steps_against_the_embedded_store() {
    let (report, outcome) = common::run(
        r#"
        thresholds = ["error-rate < 1%"]
        [targets.store]
        kind = "objstore"
        embedded = true
        [[scenarios]]
        name = "objects"
        executor = "constant-vus"
        vus = 8
        iterations = 1000
        flow = "sequence"
        [[scenarios.steps]]
        name = "put"
        objstore = { op = "put", key = "o/{{seq}}", value-size = "4KiB" }
        [[scenarios.steps]]
        name = "get"
        objstore = { op = "get", key = "o/{{seq}}" }
        [[scenarios.steps]]
        name = "head-missing"
        objstore = { op = "head", key = "none/{{seq}}" }
        [[scenarios.steps]]
        name = "delete"
        objstore = { op = "delete", key = "o/{{seq}}" }
        [[scenarios.steps]]
        name = "get-deleted"
        objstore = { op = "get", key = "o/{{seq}}" }
        checks = { status = [0] }
        "#,
    )
    .await;
    let s = &report.scenarios[0];
    for st in &s.steps[..4] {
        assert_eq!(
            (st.requests, st.failed),
            (1000, 0),
            "{}: {:?}",
            st.name,
            st.errors
        );
    }
    // Deleted: NOT_FOUND (5) is not in the accepted list.
    assert_eq!(s.steps[4].errors["check"], 1000);
    assert_eq!(outcome, loadtest::Outcome::ThresholdsFailed);
}

/// An objstore in this process, as a separate server would run: on its own port, wanting the
/// bearer token `token`. Stops when the returned sender is dropped.
async fn start_objstore(token: &str) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    use jupiter_core::shadow::{ShadowLayer, ShadowMode, ShadowSwitch};
    let metrics = jupiter_core::metrics::Metrics::new();
    let engine = objstore::engine::Engine::new(objstore::engine::EngineConfig::default());
    let config = objstore::server::ServiceConfig {
        auth_token: Some(token.to_owned()),
        ..Default::default()
    };
    let service = objstore::server::Service::new(engine, config, &metrics);
    let shadow = ShadowLayer::new("objstore", ShadowSwitch::new(ShadowMode::On), &metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(objstore::server::serve(service, listener, shadow, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_objstore_is_reached_by_url_with_its_token() {
    let (addr, _stop) = start_objstore("s3cret").await;
    let scenario = |token: &str, live: bool| {
        format!(
            r#"
            [targets.store]
            kind = "objstore"
            url = "{addr}"
            token = "{token}"
            live = {live}
            [[scenarios]]
            name = "objects"
            executor = "constant-vus"
            vus = 4
            iterations = 50
            flow = "sequence"
            [[scenarios.steps]]
            name = "put"
            objstore = {{ op = "put", key = "r/{{{{seq}}}}", value = "v{{{{seq}}}}" }}
            [[scenarios.steps]]
            name = "get"
            objstore = {{ op = "get", key = "r/{{{{seq}}}}" }}
            checks = {{ status = [0] }}
            "#
        )
    };
    // The right token: the probe passes, every put lands and every get finds its object.
    let (report, outcome) = common::run(&scenario("s3cret", true)).await;
    assert_eq!(outcome, loadtest::Outcome::Passed);
    let s = &report.scenarios[0];
    for st in &s.steps {
        assert_eq!(
            (st.requests, st.failed),
            (50, 0),
            "{}: {:?}",
            st.name,
            st.errors
        );
    }
    // A wrong token: a live target fails the probe, and sends nothing.
    let err = common::refused(&scenario("wrong", true)).await;
    assert!(
        err.to_string()
            .contains("target \"store\" did not answer the probe"),
        "{err}"
    );
    // Not live, so not probed: every call is refused, a status error (the server's answer).
    let (report, _) = common::run(&scenario("wrong", false)).await;
    let put = &report.scenarios[0].steps[0];
    assert_eq!(put.errors["status"], 50, "{:?}", put.errors);
    assert_eq!(report.total.failed, 100, "{:?}", report.total.errors);
}

/// 6 requests from 2 workers with a 100 ms deadline, each `request` (a step's TOML) to
/// `target` (a target's TOML), under a threshold that any failure fails.
fn past_the_deadline(target: &str, request: &str) -> String {
    format!(
        r#"
        thresholds = ["error-rate < 1%"]
        [run]
        timeout = "100ms"
        {target}
        [[scenarios]]
        name = "slow"
        executor = "constant-vus"
        vus = 2
        iterations = 6
        [[scenarios.steps]]
        name = "get"
        {request}
        "#
    )
}

/// Every one of the 6 requests of [`past_the_deadline`] failed as a timeout.
fn assert_all_timed_out(report: &loadtest::report::Report, outcome: loadtest::Outcome) {
    let t = &report.total;
    assert_eq!((t.requests, t.failed), (6, 6));
    assert_eq!(t.errors["timeout"], 6, "{:?}", t.errors);
    assert_eq!(outcome, loadtest::Outcome::ThresholdsFailed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_deadline_is_a_timeout_error() {
    use common::{Behavior, Gate, Server};
    // The server answers the probe, then holds every request until the test lets it go,
    // after the run: each one outlives the 100 ms deadline.
    let gate = Gate::closing_after(1);
    let server = Server::start(Behavior::Gate(gate.clone()), true);
    let api = format!("[targets.api]\nkind = \"http\"\nurl = \"{}\"", server.url());
    let (report, outcome) = common::run(&past_the_deadline(&api, r#"http = { path = "/" }"#)).await;
    gate.open();
    assert_all_timed_out(&report, outcome);
    // Regression: a connection whose request passed its deadline went back to the pool with
    // the answer still to come, and the next request on it waited for (and would have read)
    // that answer; here the 4 later requests never reached the server. Now each one goes out
    // on a connection of its own, and all 6 were held.
    assert_eq!(gate.parked(), 6);

    // Redis too: a real redis-server stopped by the test (SIGSTOP) answers nothing.
    let redis = RedisServer::start();
    redis.pause();
    let cache = format!(
        "[targets.cache]\nkind = \"redis\"\nurl = \"{}\"\nshadow-prefix = \"__shadow__:\"",
        redis.url()
    );
    let (report, outcome) =
        common::run(&past_the_deadline(&cache, r#"redis = ["GET", "k"]"#)).await;
    redis.resume();
    assert_all_timed_out(&report, outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_extracted_from_redis_replies_feed_the_later_steps() {
    // The steps read shadow keys (the run is shadow traffic): a JSON string and a list.
    let redis = RedisServer::start();
    redis
        .command(&["SET", "__shadow__:user:1", r#"{"name":"ann","id":7}"#])
        .unwrap();
    redis
        .command(&["RPUSH", "__shadow__:list", "a", "b", "c"])
        .unwrap();
    let scenario = |first: &str| {
        format!(
            r#"
            [targets.cache]
            kind = "redis"
            url = "{}"
            shadow-prefix = "__shadow__:"
            [[scenarios]]
            name = "chain"
            executor = "constant-vus"
            vus = 1
            iterations = 3
            flow = "sequence"
            [[scenarios.steps]]
            name = "user"
            redis = ["GET", "{first}"]
            extract = {{ id = {{ json = "$.id" }}, name = {{ regex = '"name":"(\w+)"' }} }}
            [[scenarios.steps]]
            name = "list"
            redis = ["LRANGE", "list", "0", "-1"]
            extract = {{ second = {{ json = "$[1]" }} }}
            [[scenarios.steps]]
            name = "copy"
            redis = ["SET", "copy:{{{{var.name}}}}:{{{{var.id}}}}:{{{{var.second}}}}", "x"]
            "#,
            redis.url()
        )
    };
    let (report, _) = common::run(&scenario("user:1")).await;
    let s = &report.scenarios[0];
    assert_eq!(s.summary.failed, 0, "{:?}", s.summary.errors);
    assert_eq!(s.steps[2].requests, 3);
    assert_eq!(
        redis
            .command(&["EXISTS", "__shadow__:copy:ann:7:b"])
            .unwrap(),
        testkit::Reply::Integer(1),
        "the JSON field, the regex group and the list element reached the key"
    );
    // A nil reply has nothing to take: a check error, and the iteration stops there.
    let (report, _) = common::run(&scenario("user:none")).await;
    let s = &report.scenarios[0];
    assert_eq!(
        s.steps[0].errors.get("check"),
        Some(&3),
        "{:?}",
        s.steps[0].errors
    );
    assert_eq!(s.iterations_cut_short, 3);
    assert_eq!((s.steps[1].requests, s.steps[2].requests), (0, 0));

    // A Redis reply has no headers: refused when the scenario loads, naming the key.
    let (_dir, path) = common::scenario(
        &scenario("user:1").replace(r#"{ json = "$[1]" }"#, r#"{ header = "x" }"#),
    );
    let err = loadtest::scenario::Plan::load(&path, &Default::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("scenario.toml:19:36: scenarios[0].steps[1].extract.second.header")
            && err.to_string().contains("no headers"),
        "{err}"
    );
}

/// objstore's RESP port in this process, following `switch`.
async fn start_objstore_resp(
    switch: jupiter_core::shadow::ShadowSwitch,
) -> (std::net::SocketAddr, objstore::engine::Engine) {
    let metrics = jupiter_core::metrics::Metrics::new();
    let engine = objstore::engine::Engine::new(objstore::engine::EngineConfig::default());
    let mut config = objstore::resp::RespConfig::default();
    config.shadow.switch = switch;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = engine.clone();
    tokio::spawn(async move {
        objstore::resp::serve(served, listener, config, &metrics, std::future::pending()).await
    });
    (addr, engine)
}

fn resp_scenario(url: &str) -> String {
    format!(
        r#"
        [targets.store]
        kind = "redis"
        url = "{url}"
        shadow-name = "loadtest:shadow"
        [[scenarios]]
        name = "resp"
        executor = "constant-vus"
        vus = 2
        iterations = 100
        [[scenarios.steps]]
        name = "set"
        redis = ["SET", "live:{{{{seq}}}}", "v"]
        "#
    )
}

/// Over objstore's RESP port the tag is the connection's name: the server keeps every key in
/// its shadow namespace, and loadtest leaves the keys as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objstore_over_resp_is_tagged_by_its_shadow_name_rule() {
    use jupiter_core::shadow::{ShadowMode, ShadowSwitch};
    let switch = ShadowSwitch::new(ShadowMode::On);
    let (addr, engine) = start_objstore_resp(switch.clone()).await;
    let (report, outcome) = common::run(&resp_scenario(&format!("redis://{addr}"))).await;
    assert_eq!(outcome, loadtest::Outcome::Passed);
    let steps = &report.scenarios[0].steps;
    assert_eq!((steps[0].requests, steps[0].failed), (100, 0));
    assert!(engine.get(b"__shadow__/live:99").is_some());
    assert!(engine.get(b"live:99").is_none(), "a live key was written");

    // Switch off: the probe is refused, nothing is sent.
    switch.set(ShadowMode::Off);
    let e = common::refused(&resp_scenario(&format!("redis://{addr}"))).await;
    assert!(
        common::chain(&e).contains("shadow"),
        "{}",
        common::chain(&e)
    );
}

/// A Redis server takes a client name as a name: the shadow-name rule is refused there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_name_rule_is_refused_on_a_plain_redis() {
    let redis = RedisServer::start();
    let e = common::refused(&resp_scenario(&redis.url())).await;
    assert!(
        common::chain(&e).contains("is not objstore's RESP port"),
        "{}",
        common::chain(&e)
    );
    assert_eq!(
        redis.command(&["DBSIZE"]).unwrap(),
        testkit::Reply::Integer(0)
    );
}
