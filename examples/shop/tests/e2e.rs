//! The full link, end to end, with real processes on loopback: redis-server, etcd, objstore,
//! the shop's inventory and API services, and loadtest driving the shipped scenario.
//!
//! Shows that every write of a shadow run lands in shadow keys and namespaces while no live
//! key changes (full listings of Redis and objstore compared before and after), that the run
//! id reaches both services' logs, that with the switch `off` shadow requests are refused and
//! counted in `/metrics` (and loadtest's probe stops the run with exit code 3), and that with
//! `watch` reads are served from live data and writes refused. The switch is flipped at run
//! time through etcd, the services' dynamic config source.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use jupiter_core::shadow::ShadowContext;
use testkit::{Etcd, RedisServer, Reply, Service, workspace_bin};

const START: Duration = Duration::from_secs(30);
const RUN_ID: &str = "shop-e2e";
const SWITCH_KEY: &str = "/shop/config/shadow.mode";

/// An HTTP/1.0 exchange (the answer is delimited by the close: no chunked bodies).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn http(addr: &str, method: &str, path: &str, shadow: bool, body: Option<&str>) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nhost: {addr}\r\n");
    if shadow {
        req.push_str(&format!(
            "x-jupiter-shadow: 1\r\nx-jupiter-shadow-run: {RUN_ID}\r\n"
        ));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Every live Redis key (not under the shadow prefix) with its serialized value.
fn redis_live(redis: &RedisServer) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let Reply::Array(Some(keys)) = redis.command(&["KEYS", "*"]).unwrap() else {
        panic!("KEYS answers an array");
    };
    keys.into_iter()
        .filter_map(|k| match k {
            Reply::Bulk(Some(k)) if !k.starts_with(b"shadow:") => Some(k),
            _ => None,
        })
        .map(|k| {
            let Reply::Bulk(Some(v)) = redis.command(&[&b"DUMP"[..], &k]).unwrap() else {
                panic!("DUMP of an existing key");
            };
            (k, v)
        })
        .collect()
}

/// Fails naming the keys that were added, removed or changed between two listings.
fn assert_unchanged<K: Ord + AsRef<[u8]>, V: PartialEq>(
    what: &str,
    before: &BTreeMap<K, V>,
    after: &BTreeMap<K, V>,
) {
    let text = |k: &K| String::from_utf8_lossy(k.as_ref()).into_owned();
    let added: Vec<String> = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .map(text)
        .collect();
    let removed: Vec<String> = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .map(text)
        .collect();
    let changed: Vec<String> = before
        .iter()
        .filter(|(k, v)| after.get(*k).is_some_and(|w| w != *v))
        .map(|(k, _)| text(k))
        .collect();
    assert!(
        added.is_empty() && removed.is_empty() && changed.is_empty(),
        "live {what} data changed: {} added (first: {:?}), removed {removed:?}, changed {changed:?}",
        added.len(),
        added.iter().take(5).collect::<Vec<_>>()
    );
}

fn redis_count(redis: &RedisServer, pattern: &str) -> usize {
    match redis.command(&["KEYS", pattern]).unwrap() {
        Reply::Array(Some(keys)) => keys.len(),
        other => panic!("KEYS answered {other:?}"),
    }
}

/// Every live objstore key with its mod revision (a write changes it).
async fn objstore_live(c: &objstore::client::Client) -> BTreeMap<Bytes, u64> {
    c.list_all(b"")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, info)| (k, info.mod_revision))
        .collect()
}

/// Every key of objstore's shadow namespace (listed as shadow traffic).
async fn objstore_shadow(c: &objstore::client::Client) -> Vec<Bytes> {
    ShadowContext::scope(Some(ShadowContext::new()), c.list_all(b""))
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// `shadow_requests_total{…}` of a service, by outcome and traffic.
fn shadow_count(governance: &str, traffic: &str, outcome: &str) -> u64 {
    let metrics = http(governance, "GET", "/metrics", false, None);
    assert_eq!(metrics.status, 200);
    metrics
        .body
        .lines()
        .filter(|l| {
            l.starts_with("shadow_requests_total{")
                && l.contains(&format!("traffic=\"{traffic}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Flips both services' switch through etcd and waits until the API answers a tagged request
/// with the new mode (the change reaches each process through its etcd watch).
fn switch(etcd: &Etcd, api: &str, mode: &str) {
    etcd.put(SWITCH_KEY, mode).unwrap();
    let deadline = std::time::Instant::now() + START;
    loop {
        let a = http(api, "GET", "/orders/0", true, None);
        if a.header("x-jupiter-shadow-ack") == Some(mode) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the API did not switch to {mode}: it acknowledges {:?}",
            a.header("x-jupiter-shadow-ack")
        );
        std::thread::yield_now();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_run_through_both_services_touches_no_live_data() {
    let (objstore_bin, loadtest_bin) = (
        workspace_bin("objstore").unwrap_or_else(|e| panic!("{e}")),
        workspace_bin("loadtest").unwrap_or_else(|e| panic!("{e}")),
    );
    let shop_bin = PathBuf::from(env!("CARGO_BIN_EXE_shop"));
    let redis = RedisServer::start();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let etcd_url = etcd.endpoint();
    let common = format!(
        r#"
        [governance]
        addr = "127.0.0.1:0"
        [shadow]
        mode = "on"
        [registry]
        kind = "etcd"
        endpoints = ["{etcd_url}"]
        [dynamic-config]
        endpoints = ["{etcd_url}"]
        [redis.main]
        url = "{}"
        "#,
        redis.url()
    );

    let store_config = write(
        dir.path(),
        "objstore.toml",
        r#"
        [governance]
        addr = "127.0.0.1:0"
        [shadow]
        mode = "on"
        [objstore]
        listen = "127.0.0.1:0"
        "#,
    );
    let store = Service::start(
        "objstore",
        &objstore_bin,
        ["serve", "--config", store_config.to_str().unwrap()],
        [("RUST_LOG", "info")],
    )
    .unwrap();
    let store_addr = store
        .wait_for("objstore listening on grpc://", START)
        .unwrap();

    let inventory_config = write(
        dir.path(),
        "inventory.toml",
        &format!("{common}\n[inventory]\nlisten = \"127.0.0.1:0\"\n"),
    );
    let inventory = Service::start(
        "shop inventory",
        &shop_bin,
        ["inventory", "--config", inventory_config.to_str().unwrap()],
        [
            ("JUPITER_APP__NAME", "shop-inventory"),
            ("JUPITER_APP__MODE", "e2e"),
        ],
    )
    .unwrap();
    inventory.wait_for("all components serving", START).unwrap();

    let api_config = write(
        dir.path(),
        "api.toml",
        &format!(
            "{common}\n[api]\nlisten = \"127.0.0.1:0\"\nobjstore = \"{store_addr}\"\ninventory-service = \"shop-inventory\"\ninventory-address = \"\"\n"
        ),
    );
    let api = Service::start(
        "shop api",
        &shop_bin,
        ["api", "--config", api_config.to_str().unwrap()],
        [
            ("JUPITER_APP__NAME", "shop-api"),
            ("JUPITER_APP__MODE", "e2e"),
        ],
    )
    .unwrap();
    let api_addr = api.wait_for("api listening on http://", START).unwrap();
    let api_governance = api
        .wait_for("governance listening on http://", START)
        .unwrap();
    api.wait_for("all components serving", START).unwrap();

    // Live data, made by live traffic through the same services.
    let put = http(
        &api_addr,
        "PUT",
        "/products/live-1",
        false,
        Some(r#"{"name":"teapot","price_cents":2500}"#),
    );
    assert_eq!(put.status, 204, "{}", put.body);
    for _ in 0..2 {
        let order = http(
            &api_addr,
            "POST",
            "/orders",
            false,
            Some(r#"{"sku":"live-1","quantity":1}"#),
        );
        assert_eq!(order.status, 201, "{}", order.body);
    }
    let got = http(&api_addr, "GET", "/products/live-1", false, None);
    assert_eq!(got.status, 200);
    assert!(got.body.contains("teapot"), "{}", got.body);
    let store_client = objstore::client::Client::connect(&store_addr, Default::default())
        .await
        .unwrap();
    let (redis_before, store_before) = (redis_live(&redis), objstore_live(&store_client).await);
    // orders:seq, order:1, order:2, reserved:live-1, the cached product.
    assert_eq!(redis_before.len(), 5, "{:?}", redis_before.keys());
    assert_eq!(store_before.len(), 3, "{:?}", store_before.keys());
    assert!(objstore_shadow(&store_client).await.is_empty());

    // The shadow run: the shipped scenario, 200 journeys.
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenario.toml");
    let report = dir.path().join("report.json");
    let run = Service::start(
        "loadtest",
        &loadtest_bin,
        [
            "run".to_owned(),
            scenario.display().to_string(),
            "--target".to_owned(),
            format!("api=http://{api_addr}"),
            "--json".to_owned(),
            report.display().to_string(),
        ],
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    let code = run.wait_exit(Duration::from_secs(120)).unwrap();
    assert_eq!(code, Some(0), "{}", run.output());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["run_id"], RUN_ID);
    let steps = report["scenarios"][0]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    for step in steps {
        assert_eq!(step["requests"], 200, "{step}");
        assert_eq!(step["failed"], 0, "{step}");
    }

    // Nothing live changed; every write is in shadow storage.
    assert_unchanged("Redis", &redis_before, &redis_live(&redis));
    assert_unchanged(
        "objstore",
        &store_before,
        &objstore_live(&store_client).await,
    );
    assert_eq!(redis_count(&redis, "shadow:order:*"), 200);
    assert_eq!(redis_count(&redis, "shadow:reserved:*"), 200);
    // 200 products, and the probe's product ("not found", cached as such).
    assert_eq!(redis_count(&redis, "shadow:cache:products:p*"), 201);
    assert_eq!(redis_count(&redis, "shadow:cache:products:probe"), 1);
    let shadow_objects = objstore_shadow(&store_client).await;
    let count = |prefix: &[u8]| {
        shadow_objects
            .iter()
            .filter(|k| k.starts_with(prefix))
            .count()
    };
    assert_eq!(count(b"products/"), 200);
    assert_eq!(count(b"orders/"), 200);
    assert_eq!(shadow_objects.len(), 400);
    // The run id reached both services' logs, across the gRPC hop.
    let tagged = format!("shadow{{run={RUN_ID} mode=on}}");
    for (name, service, line) in [
        ("api", &api, "order placed"),
        ("inventory", &inventory, "reserved"),
    ] {
        let out = service.output();
        assert!(
            out.lines().any(|l| l.contains(&tagged) && l.contains(line)),
            "{name}'s log has no {line:?} line tagged {tagged}:\n{out}"
        );
    }

    // Switch off: shadow requests refused, counted; loadtest's probe stops the run.
    switch(&etcd, &api_addr, "off");
    let refused_before = shadow_count(&api_governance, "shadow", "refused");
    for _ in 0..5 {
        let a = http(
            &api_addr,
            "POST",
            "/orders",
            true,
            Some(r#"{"sku":"live-1","quantity":1}"#),
        );
        assert_eq!(a.status, 403, "{}", a.body);
    }
    assert_eq!(
        shadow_count(&api_governance, "shadow", "refused"),
        refused_before + 5
    );
    let refused_run = Service::start(
        "loadtest (switch off)",
        &loadtest_bin,
        [
            "run".to_owned(),
            scenario.display().to_string(),
            "--target".to_owned(),
            format!("api=http://{api_addr}"),
        ],
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    let code = refused_run.wait_exit(Duration::from_secs(60)).unwrap();
    assert_eq!(code, Some(3), "{}", refused_run.output());
    assert!(
        refused_run.output().contains("shadow switch is off"),
        "{}",
        refused_run.output()
    );

    // Watch: reads served from live data, writes refused.
    switch(&etcd, &api_addr, "watch");
    let live_order = http(&api_addr, "GET", "/orders/1", true, None);
    assert_eq!(live_order.status, 200, "{}", live_order.body);
    assert!(
        live_order.body.contains(r#""sku":"live-1""#),
        "{}",
        live_order.body
    );
    for (method, path, body) in [
        ("POST", "/orders", r#"{"sku":"live-1","quantity":1}"#),
        ("PUT", "/products/live-1", r#"{"name":"x","price_cents":1}"#),
    ] {
        let a = http(&api_addr, method, path, true, Some(body));
        assert_eq!(a.status, 403, "{method} {path}: {}", a.body);
    }
    assert_unchanged("Redis", &redis_before, &redis_live(&redis));
    assert_unchanged(
        "objstore",
        &store_before,
        &objstore_live(&store_client).await,
    );
    // Nor did the refused writes reach shadow storage: watch mode writes nothing anywhere.
    assert_eq!(objstore_shadow(&store_client).await.len(), 400);
    assert_eq!(redis_count(&redis, "shadow:order:*"), 200);
}
