//! RESP3 client tracking (client-side caching): invalidation pushes for keys this client
//! read, broadcast invalidations by prefix, flushes and lost connections, standalone and on
//! a real cluster.

use std::time::Duration;

use redis_client::{Client, ClientConfig, Invalidation, Invalidations, Protocol, TrackingMode};
use testkit::{RedisCluster, RedisServer};

async fn next(inv: &mut Invalidations) -> Invalidation {
    tokio::time::timeout(Duration::from_secs(10), inv.next())
        .await
        .expect("an invalidation within 10 s")
        .expect("the stream is open")
}

fn keys(names: &[&str]) -> Invalidation {
    Invalidation::Keys(
        names
            .iter()
            .map(|n| bytes::Bytes::copy_from_slice(n.as_bytes()))
            .collect(),
    )
}

fn metrics() -> jupiter_core::Metrics {
    jupiter_core::Metrics::new()
}

#[tokio::test]
async fn tracked_keys_flushes_and_lost_connections_are_reported() {
    let redis = RedisServer::start();
    let a = Client::builder()
        .url(&redis.url())
        .protocol(Protocol::Resp3)
        .tracking(TrackingMode::Default, &[])
        .metrics(&metrics())
        .connect()
        .await
        .unwrap();
    let b = Client::builder()
        .url(&redis.url())
        .metrics(&metrics())
        .connect()
        .await
        .unwrap();
    let mut inv = a.invalidations().unwrap();
    b.set("k", 1).await.unwrap();
    b.set("untracked", 1).await.unwrap();
    assert_eq!(a.get::<i64>("k").await.unwrap(), 1);
    // Another client's write to a key this one read: an invalidation. The write to a key it
    // never read sends none (the next event is the one for `k`).
    b.set("untracked", 2).await.unwrap();
    b.set("k", 2).await.unwrap();
    assert_eq!(next(&mut inv).await, keys(&["k"]));
    // A flush invalidates everything (each tracking connection hears it).
    assert_eq!(a.get::<i64>("k").await.unwrap(), 2);
    b.flushall().await.unwrap();
    assert_eq!(next(&mut inv).await, Invalidation::Flushed);
    // A lost connection: what it tracked is gone, and the stream says so.
    redis.kill();
    loop {
        match next(&mut inv).await {
            Invalidation::Flushed => continue,
            Invalidation::Lost { addr } => {
                assert_eq!(addr, redis.addr().to_string());
                break;
            }
            other => panic!("expected Lost, got {other:?}"),
        }
    }
    redis.restart();
    // Tracking is on again after the reconnect.
    b.set("k2", 1).await.unwrap();
    let mut tries = 0;
    while a.get::<i64>("k2").await.is_err() {
        tries += 1;
        assert!(tries < 100, "no reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        // Drop the other connections' Lost events.
        b.set("k2", 2).await.unwrap();
        match next(&mut inv).await {
            Invalidation::Lost { .. } => continue,
            ev => {
                assert_eq!(ev, keys(&["k2"]));
                break;
            }
        }
    }
    // Tracking needs RESP3, and a client without it has no stream.
    let e = Client::builder()
        .url(&redis.url())
        .tracking(TrackingMode::Default, &[])
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("resp3"), "{e}");
    assert!(b.invalidations().is_err());
}

#[tokio::test]
async fn broadcast_tracking_reports_every_change_under_its_prefixes() {
    let redis = RedisServer::start();
    let a = Client::builder()
        .url(&redis.url())
        .protocol(Protocol::Resp3)
        .tracking(TrackingMode::Bcast, &["user:"])
        .metrics(&metrics())
        .connect()
        .await
        .unwrap();
    let b = Client::connect_url(&redis.url()).await.unwrap();
    let mut inv = a.invalidations().unwrap();
    // Never read by `a`: reported anyway, under the prefix only, once (one tracking
    // connection per server).
    b.set("order:1", 1).await.unwrap();
    b.set("user:1", 1).await.unwrap();
    assert_eq!(next(&mut inv).await, keys(&["user:1"]));
    b.del(&["user:1"]).await.unwrap();
    assert_eq!(next(&mut inv).await, keys(&["user:1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_in_cluster_mode() {
    let cluster = RedisCluster::start();
    let seeds: Vec<String> = cluster.seed_urls();
    let config = |tracking| ClientConfig {
        cluster: true,
        urls: seeds.clone(),
        protocol: Protocol::Resp3,
        tracking,
        ..ClientConfig::default()
    };
    let a = Client::builder()
        .config(config(TrackingMode::Default))
        .metrics(&metrics())
        .connect()
        .await
        .unwrap();
    let b = Client::builder()
        .config(config(TrackingMode::Off))
        .metrics(&metrics())
        .connect()
        .await
        .unwrap();
    let mut inv = a.invalidations().unwrap();
    // Keys on every primary.
    let names: Vec<String> = (0..30).map(|i| format!("t:{i}")).collect();
    for n in &names {
        b.set(n, 1).await.unwrap();
        assert_eq!(a.get::<i64>(n).await.unwrap(), 1);
    }
    for n in &names {
        b.set(n, 2).await.unwrap();
        assert_eq!(next(&mut inv).await, keys(&[n]));
    }
    // A connection loss on one node is reported with that node.
    let node = &cluster.masters()[0];
    let killed = node
        .command(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        .unwrap();
    assert!(
        matches!(killed, testkit::Reply::Integer(n) if n > 0),
        "{killed:?}"
    );
    match next(&mut inv).await {
        Invalidation::Lost { addr } => assert_eq!(addr, node.addr().to_string()),
        other => panic!("expected Lost, got {other:?}"),
    }
}
