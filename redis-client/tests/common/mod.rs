//! Helpers shared by redis-client's integration tests: connecting, cluster seeds, resharding
//! off the runtime, and the check that a handle's own timeout fires alone.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use redis_client::{Client, ClientConfig, Error, cmds};
use testkit::RedisCluster;

/// A fresh metrics registry: no two clients of a test share series.
pub fn metrics() -> jupiter_core::Metrics {
    jupiter_core::Metrics::new()
}

/// Connects with `config` and a fresh metrics registry.
pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
    Client::builder()
        .config(config)
        .metrics(&metrics())
        .connect()
        .await
}

/// Connects to `url` with the defaults and a fresh metrics registry.
pub async fn connect_url(url: &str) -> Result<Client, Error> {
    Client::builder()
        .url(url)
        .metrics(&metrics())
        .connect()
        .await
}

/// The defaults for a cluster client seeded with every node of `cluster`.
pub fn cluster_config(cluster: &RedisCluster) -> ClientConfig {
    ClientConfig {
        cluster: true,
        urls: cluster.seed_urls(),
        ..ClientConfig::default()
    }
}

/// Moves `slots` from the primary on port `from` to another primary, `batch` keys per
/// `MIGRATE` (testkit's [`RedisCluster::move_slots`]), on a blocking thread: testkit's calls
/// block, and the client under test keeps running on the runtime meanwhile.
pub async fn move_slots(
    cluster: &Arc<RedisCluster>,
    slots: impl IntoIterator<Item = u16> + Send + 'static,
    from: u16,
    batch: usize,
) {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || {
        let from = cluster.nodes().iter().find(|n| n.port() == from).unwrap();
        let to = cluster
            .masters()
            .into_iter()
            .find(|n| n.port() != from.port())
            .unwrap();
        cluster.move_slots(slots, from, to, batch).unwrap();
    })
    .await
    .unwrap();
}

/// A liveness bound: a future that has not resolved by then is hung.
pub const HANG: Duration = Duration::from_secs(30);

/// `short` is `long.with_timeout(…)` with a deadline far below `long`'s. With `key` set to
/// `"v"` and the server stalled by `stall`: `short`'s command and pipeline time out while
/// `long`'s command still waits; after `release`, `long`'s command gets its reply.
pub async fn short_deadline_times_out_alone(
    long: &Client,
    short: &Client,
    key: &'static str,
    stall: impl FnOnce(),
    release: impl FnOnce(),
) {
    long.set(key, "v").await.unwrap();
    stall();
    let waiting = {
        let long = long.clone();
        tokio::spawn(async move { long.get::<String>(key).await })
    };
    let e = tokio::time::timeout(HANG, short.get::<String>(key))
        .await
        .expect("resolves")
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    let mut p = short.pipeline();
    p.add(cmds::get(key)).add(cmds::get(key));
    let e = tokio::time::timeout(HANG, p.query::<(String, String)>())
        .await
        .expect("resolves")
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert!(
        !waiting.is_finished(),
        "the original handle keeps its own (long) deadline"
    );
    release();
    let v = tokio::time::timeout(HANG, waiting)
        .await
        .expect("resolves")
        .unwrap();
    assert_eq!(v.unwrap(), "v");
}
