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
        client.set("k", "v").await.unwrap();
        let v: Option<String> = client.get("k").await.unwrap();
        assert_eq!(v.as_deref(), Some("v"));
        assert!(client.incr("n").await.unwrap() > 0);
        let mut p = client.pipeline();
        p.add(cmds::set("a", 1))
            .add(cmds::incr("a"))
            .add(cmds::get("a"));
        let (_, n, a): ((), i64, String) = p.query().await.unwrap();
        assert_eq!((n, a.as_str()), (2, "2"));
        let mut tx = client.transaction();
        tx.add(cmds::incr("t")).add(cmds::incr("t"));
        let r: Option<(i64, i64)> = tx.query().await.unwrap();
        assert!(r.is_some());
        let e = client.query::<i64>(cmd("INCR").arg("k")).await.unwrap_err();
        assert!(e.to_string().contains("not an integer"), "{e}");
    }
}
