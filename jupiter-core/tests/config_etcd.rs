//! The etcd dynamic source against a real etcd: puts reach subscribers, bad values are rejected
//! and counted while the old value stays, deletes fall back to the file, and the watch survives
//! an etcd restart.

use std::time::Duration;

use jupiter_core::config::{Config, EtcdSource};
use jupiter_core::{Error, Metrics};
use serde::Deserialize;
use testkit::Etcd;
use tokio::sync::watch;

#[derive(Debug, Deserialize, PartialEq, Clone)]
#[serde(default, rename_all = "kebab-case")]
struct Redis {
    pool_size: u32,
    url: String,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            pool_size: 4,
            url: "redis://127.0.0.1:6379".into(),
        }
    }
}

const PREFIX: &str = "/jupiter/orders/config/";

async fn changed<T>(rx: &mut watch::Receiver<T>) {
    tokio::time::timeout(Duration::from_secs(15), rx.changed())
        .await
        .expect("subscriber not notified within 15 s")
        .expect("sender alive");
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 15 s");
}

#[tokio::test]
async fn etcd_changes_reach_subscribers_and_bad_values_are_rejected() {
    let etcd = Etcd::start();
    let metrics = Metrics::new();
    let config = Config::builder()
        .toml("app.toml", "[redis.main]\npool-size = 8\n")
        .no_env()
        .metrics(&metrics)
        .build()
        .unwrap();
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    client
        .put(
            format!("{PREFIX}redis.main.url"),
            "redis://10.0.0.9:6379",
            None,
        )
        .await
        .unwrap();

    config
        .attach(
            EtcdSource::new([etcd.endpoint()], PREFIX),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let mut redis = config.subscribe::<Redis>("redis.main").unwrap();
    assert_eq!(
        *redis.borrow_and_update().as_ref(),
        Redis {
            pool_size: 8,
            url: "redis://10.0.0.9:6379".into()
        }
    );
    let mut app = config.subscribe::<toml::Table>("app").unwrap();
    app.mark_unchanged();

    // A put is seen.
    client
        .put(format!("{PREFIX}redis/main/pool-size"), "32", None)
        .await
        .unwrap();
    changed(&mut redis).await;
    assert_eq!(redis.borrow_and_update().pool_size, 32);
    assert!(
        !app.has_changed().unwrap(),
        "only subscribers of changed sections are notified"
    );

    // A bad value is rejected; the old one stays; the rejection is counted and reported.
    client
        .put(format!("{PREFIX}redis/main/pool-size"), "many", None)
        .await
        .unwrap();
    eventually("rejection recorded", || {
        config.last_reload_error().is_some()
    })
    .await;
    let err = config.last_reload_error().unwrap();
    assert!(
        err.contains(&format!("etcd key {PREFIX}redis/main/pool-size")),
        "{err}"
    );
    assert!(err.contains("redis.main.pool-size: invalid value"), "{err}");
    assert_eq!(redis.borrow().pool_size, 32);
    assert!(!redis.has_changed().unwrap());
    assert!(
        metrics
            .encode()
            .contains("config_reload_total{source=\"etcd\",result=\"rejected\"} 1")
    );

    // Deleting the key falls back to the file.
    client
        .delete(format!("{PREFIX}redis/main/pool-size"), None)
        .await
        .unwrap();
    eventually("fallback to the file value", || {
        config.get::<Redis>("redis.main").unwrap().pool_size == 8
    })
    .await;
    assert!(config.last_reload_error().is_none());
    assert_eq!(redis.borrow_and_update().pool_size, 8);

    // etcd killed and restarted: the source reconnects and later changes still arrive.
    // (`kill` returns once the process is gone: the watch's connection is already broken.)
    etcd.kill();
    etcd.restart();
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    client
        .put(format!("{PREFIX}redis.main.pool-size"), "64", None)
        .await
        .unwrap();
    changed(&mut redis).await;
    assert_eq!(redis.borrow_and_update().pool_size, 64);
}

#[tokio::test]
async fn unreachable_etcd_fails_the_first_load_with_a_timeout() {
    let port = testkit::free_port().unwrap();
    let config = Config::builder()
        .no_env()
        .metrics(&Metrics::new())
        .build()
        .unwrap();
    let err = config
        .attach(
            EtcdSource::new([format!("http://127.0.0.1:{port}")], PREFIX),
            Duration::from_millis(1500),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("first load from etcd http://127.0.0.1:{port}")),
        "{err}"
    );
}
