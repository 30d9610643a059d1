//! The governance server over real HTTP on loopback.

mod common;

use std::time::Duration;

use common::http;
use jupiter_core::config::Config;
use jupiter_core::governance::{DEFAULT_ADDR, Governance, Health};
use jupiter_core::metrics::{Code, Metrics};
use openmetrics_parser::{OpenMetricsType, OpenMetricsValue};

async fn start(
    metrics: &Metrics,
    health: &Health,
    config: Option<&Config>,
) -> std::net::SocketAddr {
    let mut b = Governance::builder()
        .addr("127.0.0.1:0".parse().unwrap())
        .metrics(metrics)
        .health(health);
    if let Some(c) = config {
        b = b.config(c);
    }
    let server = b.build().bind().await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));
    addr
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
