//! The governance server over real HTTP on loopback.

mod common;

use std::time::Duration;

use common::{http, http_with};
use jupiter_core::config::Config;
use jupiter_core::governance::{DEFAULT_ADDR, Governance, Health, Token};
use jupiter_core::metrics::{Code, Metrics};
use openmetrics_parser::{OpenMetricsType, OpenMetricsValue};

async fn start(
    metrics: &Metrics,
    health: &Health,
    config: Option<&Config>,
) -> std::net::SocketAddr {
    let mut b = Governance::builder().metrics(metrics).health(health);
    if let Some(c) = config {
        b = b.config(c);
    }
    common::governance(b).await
}

fn sorted(names: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = names.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

#[test]
fn binds_loopback_by_default() {
    assert!(DEFAULT_ADDR.ip().is_loopback());
}

#[tokio::test]
async fn metrics_endpoint_is_valid_openmetrics_with_the_standard_families() {
    let metrics = Metrics::new();
    let health = Health::default();
    let addr = start(&metrics, &health, None).await;

    let get = metrics
        .server("http", "GET /users/{id}", "10.0.0.7")
        .hot_code(Code::http(200));
    get.observe(Duration::from_micros(30), Code::http(200));
    get.observe(Duration::from_micros(700), Code::http(200));
    get.observe(Duration::from_millis(3), Code::http(503));
    let redis = metrics.client("redis", "main", "GET", "127.0.0.1:6379");
    redis.start().finish(Code::OK);
    redis.observe(Duration::from_secs(2), Code::TIMEOUT);

    let resp = http(addr, "GET", "/metrics", "").await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&resp.body)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e:?}\n{}", resp.body));

    let hist = &parsed.families["server_handle_seconds"];
    assert_eq!(hist.family_type, OpenMetricsType::Histogram);
    assert_eq!(sorted(hist.get_label_names()), ["method", "peer", "type"]);
    let sample = hist.iter_samples().next().unwrap();
    let OpenMetricsValue::Histogram(h) = &sample.value else {
        panic!("not a histogram")
    };
    assert_eq!(h.count, Some(3));
    // Buckets resolve tens of microseconds: the 30 µs observation is in the 50 µs bucket
    // and not in the 25 µs one.
    let at = |le: f64| {
        h.buckets
            .iter()
            .find(|b| (b.upper_bound - le).abs() < 1e-12)
            .unwrap()
            .count
            .as_f64()
    };
    assert_eq!(at(0.000_025), 0.0);
    assert_eq!(at(0.000_05), 1.0);
    assert_eq!(at(0.001), 2.0);
    assert_eq!(h.buckets.first().unwrap().upper_bound, 0.000_01);

    let total = &parsed.families["server_handle"];
    assert_eq!(total.family_type, OpenMetricsType::Counter);
    assert_eq!(
        sorted(total.get_label_names()),
        ["code", "method", "peer", "type"]
    );
    let codes: Vec<(String, f64)> = total
        .iter_samples()
        .map(|s| {
            let code = s
                .get_labelset()
                .unwrap()
                .get_label_value("code")
                .unwrap()
                .to_owned();
            let OpenMetricsValue::Counter(c) = &s.value else {
                panic!("not a counter")
            };
            (code, c.value.as_f64())
        })
        .collect();
    assert!(codes.contains(&("200".to_owned(), 2.0)), "{codes:?}");
    assert!(codes.contains(&("503".to_owned(), 1.0)), "{codes:?}");

    let client = &parsed.families["client_handle"];
    assert_eq!(
        sorted(client.get_label_names()),
        ["code", "method", "name", "peer", "type"]
    );
    assert!(parsed.families.contains_key("client_handle_seconds"));
    assert!(resp.body.contains("client_handle_total{type=\"redis\",name=\"main\",method=\"GET\",peer=\"127.0.0.1:6379\",code=\"DeadlineExceeded\"} 1"));

    // The server counts its own requests by known path only.
    http(addr, "GET", "/nope/../../etc", "").await;
    let again = http(addr, "GET", "/metrics", "").await.body;
    assert!(
        again.contains("governance_requests_total{path=\"/metrics\",code=\"200\"} 1"),
        "{again}"
    );
    assert!(
        again.contains("governance_requests_total{path=\"other\",code=\"404\"} 1"),
        "{again}"
    );
}

#[tokio::test]
async fn health_follows_readiness() {
    let metrics = Metrics::new();
    let health = Health::default();
    let addr = start(&metrics, &health, None).await;
    assert_eq!(http(addr, "GET", "/health/live", "").await.status, 200);
    assert_eq!(http(addr, "GET", "/health/ready", "").await.status, 503);
    health.set_ready(true);
    let ready = http(addr, "GET", "/health/ready", "").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    health.set_live(false);
    assert_eq!(http(addr, "GET", "/health/live", "").await.status, 503);
}

#[tokio::test]
async fn config_endpoint_redacts_secrets() {
    let metrics = Metrics::new();
    let config = Config::builder()
        .toml(
            "app.toml",
            "[redis.main]\nurl = \"redis://app:hunter2@10.1.1.1:6379\"\npassword = \"pw-123\"\npool-size = 4\n[objstore]\nauth-token = \"tok-456\"\n",
        )
        .env_vars([("JUPITER_ETCD__CLIENT_SECRET", "sec-789")])
        .metrics(&metrics)
        .build()
        .unwrap();
    let addr = start(&metrics, &Health::default(), Some(&config)).await;
    let resp = http(addr, "GET", "/config", "").await;
    assert_eq!(resp.status, 200);
    for secret in ["hunter2", "pw-123", "tok-456", "sec-789"] {
        assert!(
            !resp.body.contains(secret),
            "{secret} leaked: {}",
            resp.body
        );
    }
    let json: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(json["config"]["redis"]["main"]["pool-size"], 4);
    assert_eq!(
        json["config"]["redis"]["main"]["url"],
        "redis://app:<redacted>@10.1.1.1:6379"
    );
    assert_eq!(json["config"]["etcd"]["client-secret"], "<redacted>");

    let with_sources: serde_json::Value =
        serde_json::from_str(&http(addr, "GET", "/config?sources=true", "").await.body).unwrap();
    assert_eq!(
        with_sources["config"]["redis"]["main"]["pool-size"]["from"],
        "app.toml:4:1"
    );
}

#[tokio::test]
async fn registry_and_log_endpoints_without_attachments() {
    let metrics = Metrics::new();
    let addr = start(&metrics, &Health::default(), None).await;
    let reg = http(addr, "GET", "/registry", "").await;
    assert_eq!(reg.status, 200);
    let json: serde_json::Value = serde_json::from_str(&reg.body).unwrap();
    assert_eq!(json["registered"], serde_json::json!([]));
    assert_eq!(http(addr, "GET", "/config", "").await.status, 404);
    assert_eq!(http(addr, "GET", "/log/level", "").await.status, 404);
}

/// A config with secrets in several shapes, Juno's version key, and an `[app]` section.
fn juno_config(metrics: &Metrics) -> Config {
    Config::builder()
        .toml(
            "app.toml",
            "juno_configuration_version = \"v42\"\n[app]\nname = \"orders\"\nmode = \"prod\"\n[redis.main]\nurl = \"redis://app:hunter2@10.1.1.1:6379\"\npassword = \"pw-123\"\npool-size = 4\nurls = [\"redis://10.0.0.1:7000\"]\n",
        )
        .no_env()
        .metrics(metrics)
        .build()
        .unwrap()
}

/// A governance server over [`juno_config`], with what `more` adds.
async fn juno_server(
    more: impl FnOnce(
        jupiter_core::governance::GovernanceBuilder,
    ) -> jupiter_core::governance::GovernanceBuilder,
) -> std::net::SocketAddr {
    let metrics = Metrics::new();
    let config = juno_config(&metrics);
    common::governance(more(
        Governance::builder().metrics(&metrics).config(&config),
    ))
    .await
}

#[tokio::test]
async fn juno_routes_answer_in_go_jupiters_shapes_without_secrets() {
    let addr = juno_server(|b| {
        b.app("orders", "", "prod", "1.2.3").env(|| {
            vec![
                ("HOME".into(), "/home/app".into()),
                ("REDIS_PASSWORD".into(), "pw-env".into()),
                ("API_TOKEN".into(), "tok-env".into()),
                ("CACHE_URL".into(), "redis://u:url-secret@h:6379/0".into()),
            ]
        })
    })
    .await;
    let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();

    // /configs: one flat object of dotted keys, as Juno reads it.
    let configs = http(addr, "GET", "/configs", "").await;
    assert_eq!(configs.status, 200);
    let flat = json(&configs.body);
    assert_eq!(flat["juno_configuration_version"], "v42");
    assert_eq!(flat["app.name"], "orders");
    assert_eq!(flat["redis.main.pool-size"], 4);
    assert_eq!(
        flat["redis.main.url"],
        "redis://app:<redacted>@10.1.1.1:6379"
    );
    assert_eq!(flat["redis.main.password"], "<redacted>");
    assert_eq!(
        flat["redis.main.urls"],
        serde_json::json!(["redis://10.0.0.1:7000"])
    );
    assert!(
        flat.as_object().unwrap().values().all(|v| !v.is_object()),
        "every table is flattened: {flat}"
    );
    // /debug/config: the tree.
    let tree = json(&http(addr, "GET", "/debug/config", "").await.body);
    assert_eq!(tree["redis"]["main"]["pool-size"], 4);
    // /debug/env: names that look secret and URL passwords redacted, the rest as it is.
    let env = http(addr, "GET", "/debug/env", "").await;
    assert_eq!(env.status, 200);
    let env_json = json(&env.body);
    assert_eq!(env_json["HOME"], "/home/app");
    assert_eq!(env_json["REDIS_PASSWORD"], "<redacted>");
    assert_eq!(env_json["API_TOKEN"], "<redacted>");
    assert_eq!(env_json["CACHE_URL"], "redis://u:<redacted>@h:6379/0");
    for (what, body) in [("/configs", &configs.body), ("/debug/env", &env.body)] {
        for secret in ["hunter2", "pw-123", "pw-env", "tok-env", "url-secret"] {
            assert!(!body.contains(secret), "{secret} leaked by {what}: {body}");
        }
    }
    // /build/info: Go Jupiter's keys, and the Rust version.
    let info = json(&http(addr, "GET", "/build/info", "").await.body);
    for key in [
        "name",
        "appID",
        "appMode",
        "appVersion",
        "jupiterVersion",
        "buildUser",
        "buildHost",
        "buildTime",
        "startTime",
        "hostName",
        "rustVersion",
    ] {
        assert!(info[key].is_string(), "{key} in {info}");
    }
    assert_eq!(info["name"], "orders");
    assert_eq!(info["appID"], "orders", "the id defaults to the name");
    assert_eq!(info["appMode"], "prod");
    assert_eq!(info["appVersion"], "1.2.3");
    assert_eq!(info["jupiterVersion"], env!("CARGO_PKG_VERSION"));
    assert!(
        info["rustVersion"].as_str().unwrap().starts_with("rustc "),
        "{info}"
    );
    for key in ["buildTime", "startTime"] {
        let t = info[key].as_str().unwrap();
        humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{key} {t:?}: {e}"));
    }
    // /health on the governance server itself, and /routes listing every route.
    let health = http(addr, "GET", "/health", "").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let routes = json(&http(addr, "GET", "/routes", "").await.body);
    let paths: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    for path in [
        "/metrics",
        "/health",
        "/configs",
        "/debug/config",
        "/debug/env",
        "/build/info",
        "/routes",
        "/log/level",
    ] {
        assert!(paths.contains(&path), "{path} in {paths:?}");
        // (`/log/level` answers 404 while no log handle is attached, as here.)
        if path != "/log/level" {
            let status = http(addr, "GET", path, "").await.status;
            assert_eq!(status, 200, "{path} is served");
        }
    }
}

#[tokio::test]
async fn with_a_token_only_metrics_and_health_answer_without_it() {
    let addr = juno_server(|b| b.token(Token::new("s3cr3t-t0ken"))).await;
    let right = [("authorization", "Bearer s3cr3t-t0ken")];
    for path in ["/metrics", "/health", "/health/live"] {
        assert_eq!(http(addr, "GET", path, "").await.status, 200, "{path}");
    }
    for path in [
        "/configs",
        "/config",
        "/debug/env",
        "/debug/config",
        "/build/info",
        "/routes",
        "/registry",
    ] {
        let none = http(addr, "GET", path, "").await;
        assert_eq!(none.status, 401, "{path} without the token");
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        for wrong in [
            "Bearer s3cr3t-t0keN",
            "Bearer s3cr3t",
            "Basic s3cr3t-t0ken",
            "Bearer",
        ] {
            let r = http_with(addr, "GET", path, &[("authorization", wrong)], "").await;
            assert_eq!(r.status, 401, "{path} with {wrong:?}");
        }
        assert_eq!(
            http_with(addr, "GET", path, &right, "").await.status,
            200,
            "{path}"
        );
    }
    // Changing state needs it too (no log handle attached here: 404 once through the gate).
    assert_eq!(http(addr, "PUT", "/log/level", "debug").await.status, 401);
    assert_eq!(
        http_with(addr, "PUT", "/log/level", &right, "debug")
            .await
            .status,
        404
    );
    // The token never shows: not on /configs, not in Debug.
    let configs = http_with(addr, "GET", "/configs", &right, "").await;
    assert!(!configs.body.contains("s3cr3t"), "{}", configs.body);
    assert!(!format!("{:?}", Token::new("s3cr3t-t0ken")).contains("s3cr3t"));
    assert!(
        Token::new("").is_none(),
        "an empty token would let anything in"
    );
}

#[tokio::test]
async fn off_loopback_the_server_refuses_to_start_without_a_token() {
    let metrics = Metrics::new();
    let err = Governance::builder()
        .addr("0.0.0.0:0".parse().unwrap())
        .metrics(&metrics)
        .build()
        .bind()
        .await
        .unwrap_err();
    let chain = jupiter_core::cli::render_error("test", &err);
    assert!(chain.contains("governance.token"), "{chain}");
    // With one it starts, and asks for it (reached here over loopback).
    let server = Governance::builder()
        .addr("0.0.0.0:0".parse().unwrap())
        .metrics(&metrics)
        .token(Token::new("t"))
        .build()
        .bind()
        .await
        .unwrap();
    let port = server.local_addr().port();
    tokio::spawn(server.serve(std::future::pending()));
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(http(addr, "GET", "/routes", "").await.status, 401);
    assert_eq!(http(addr, "GET", "/metrics", "").await.status, 200);
}

#[test]
fn the_governance_token_comes_from_config_and_never_reaches_debug() {
    let metrics = Metrics::new();
    let config = Config::builder()
        .toml(
            "app.toml",
            "[governance]\naddr = \"0.0.0.0:9246\"\ntoken = \"from-file\"\n",
        )
        .no_env()
        .metrics(&metrics)
        .build()
        .unwrap();
    let g: jupiter_core::governance::GovernanceConfig = config.get("governance").unwrap();
    assert_eq!(g.token, Token::new("from-file"));
    assert!(!format!("{g:?}").contains("from-file"), "{g:?}");
    let app = jupiter_core::app::App::from_config(&config).unwrap();
    assert!(!format!("{app:?}").contains("from-file"), "{app:?}");
}

/// A GET whose answer is binary: status and body bytes.
#[cfg(feature = "pprof")]
async fn get_bytes(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[end + 4..].to_vec())
}

#[cfg(feature = "pprof")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_profile_is_pprofs_protobuf_with_samples() {
    use pprof::protos::Message;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let metrics = Metrics::new();
    let addr = start(&metrics, &Health::default(), None).await;
    for bad in ["0", "61", "abc"] {
        let (status, _) = get_bytes(addr, &format!("/debug/pprof/profile?seconds={bad}")).await;
        assert_eq!(status, 400, "seconds={bad}");
    }
    // Something to sample: a thread spinning until the profile is back (bounded).
    let stop = Arc::new(AtomicBool::new(false));
    let spin = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            for i in 0..u64::MAX {
                if stop.load(Ordering::Relaxed) || i > 50_000_000_000 {
                    break;
                }
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            x
        })
    };
    // Two at once: one profiles, the other is refused rather than queued behind it (unless
    // they did not overlap at all: then both ran, and the pair is tried again).
    let mut outcome = None;
    for _ in 0..5 {
        let path = "/debug/pprof/profile?seconds=1";
        let (a, b) = tokio::join!(get_bytes(addr, path), get_bytes(addr, path));
        match (a.0, b.0) {
            (200, 409) => outcome = Some(a.1),
            (409, 200) => outcome = Some(b.1),
            (200, 200) => continue,
            other => panic!("statuses {other:?}"),
        }
        break;
    }
    stop.store(true, Ordering::Relaxed);
    spin.join().unwrap();
    let body = outcome.expect("two overlapping profiles: one refused");
    let profile = pprof::protos::Profile::decode(body.as_slice()).expect("pprof protobuf");
    let strings = &profile.string_table;
    assert_eq!(
        strings.first().map(String::as_str),
        Some(""),
        "pprof's string table starts empty"
    );
    let name = |i: i64| strings[usize::try_from(i).unwrap()].as_str();
    let types: Vec<(&str, &str)> = profile
        .sample_type
        .iter()
        .map(|t| (name(t.ty), name(t.unit)))
        .collect();
    assert!(types.contains(&("cpu", "nanoseconds")), "{types:?}");
    assert!(!profile.sample.is_empty(), "a busy second has samples");
    assert!(!profile.function.is_empty() && !profile.location.is_empty());
    assert!(profile.duration_nanos > 0);
}
