use redis_client::{Client, Protocol, cmd, cmds};
use testkit::RedisServer;

#[tokio::test]
async fn basic_round_trips_both_protocols() {
    let redis = RedisServer::start();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let client = Client::builder()
            .url(&redis.url())
            .protocol(protocol)
            .metrics(&jupiter_core::Metrics::new())
            .connect()
            .await
            .unwrap();
        // Fresh counters for each protocol's pass.
        let _: i64 = client.query(cmd("DEL").arg("n").arg("t")).await.unwrap();
        client.set("k", "v").await.unwrap();
        let v: Option<String> = client.get("k").await.unwrap();
        assert_eq!(v.as_deref(), Some("v"));
        assert_eq!(client.incr("n").await.unwrap(), 1);
        let mut p = client.pipeline();
        p.add(cmds::set("a", 1))
            .add(cmds::incr("a"))
            .add(cmds::get("a"));
        let (_, n, a): ((), i64, String) = p.query().await.unwrap();
        assert_eq!((n, a.as_str()), (2, "2"));
        let mut tx = client.transaction();
        tx.add(cmds::incr("t")).add(cmds::incr("t"));
        let r: Option<(i64, i64)> = tx.query().await.unwrap();
        assert_eq!(
            r,
            Some((1, 2)),
            "both INCRs ran, in order, inside the transaction"
        );
        let e = client.query::<i64>(cmd("INCR").arg("k")).await.unwrap_err();
        assert!(e.to_string().contains("not an integer"), "{e}");
    }
}

/// Each task keeps to one pooled connection (its batches stay whole) and tasks spread over
/// the pool. Twelve tasks keep fewer than 4 requests per connection in flight, so the pool
/// uses all of its connections throughout (gathering under more load is `pool`'s unit test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_keep_to_one_connection_and_spread_over_the_pool() {
    let redis = RedisServer::start();
    let client = Client::builder()
        .url(&redis.url())
        .pool_size(4)
        .metrics(&jupiter_core::Metrics::new())
        .connect()
        .await
        .unwrap();
    let mut handles = Vec::new();
    for _ in 0..12 {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let mut ids = std::collections::BTreeSet::new();
            for _ in 0..20 {
                let id: i64 = client.query(cmd("CLIENT").arg("ID")).await.unwrap();
                ids.insert(id);
            }
            ids
        }));
    }
    let mut used = std::collections::BTreeSet::new();
    for h in handles {
        let ids = h.await.unwrap();
        assert_eq!(ids.len(), 1, "one task used several connections: {ids:?}");
        used.extend(ids);
    }
    assert!(
        used.len() >= 3,
        "12 tasks should spread over a pool of 4: {used:?}"
    );
}
