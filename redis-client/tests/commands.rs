//! Every command group against a real redis-server, under RESP2 and RESP3.
//!
//! Each group is one function (in `groups/`, shared with the cluster suite) run twice, once
//! per protocol, on its own database index, so the groups share one server without seeing
//! each other's keys.

mod groups;

use redis_client::{Client, Protocol};
use testkit::RedisServer;

async fn client(redis: &RedisServer, protocol: Protocol, db: u32) -> Client {
    let client = Client::builder()
        .url(&format!("{}/{db}", redis.url()))
        .protocol(protocol)
        .metrics(&jupiter_core::Metrics::new())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {protocol:?}: {e}"));
    client.flushdb().await.unwrap();
    client
}

/// Runs group `$group` under both protocols, each on a fresh database.
macro_rules! both_protocols {
    ($name:ident, $db:expr, $group:literal) => {
        #[tokio::test]
        async fn $name() {
            let redis = RedisServer::start();
            for (i, protocol) in [Protocol::Resp2, Protocol::Resp3].into_iter().enumerate() {
                let c = client(&redis, protocol, $db + i as u32).await;
                groups::run($group, &c, protocol).await;
            }
        }
    };
}

both_protocols!(strings, 0, "strings");
both_protocols!(keys_and_expiry, 2, "keys");
both_protocols!(hashes, 4, "hashes");
both_protocols!(lists, 6, "lists");
both_protocols!(sets, 8, "sets");
both_protocols!(sorted_sets, 10, "zsets");
both_protocols!(streams, 12, "streams");
both_protocols!(scripting, 14, "scripting");
both_protocols!(pipelines_and_transactions, 0, "pipelines");
both_protocols!(scans, 2, "scans");
both_protocols!(conversions, 4, "conversions");
both_protocols!(pubsub, 6, "pubsub");
both_protocols!(blocking_and_watch, 8, "blocking");

#[test]
fn every_group_runs_here() {
    // The list above names each group once; a group added to `groups` must be added here.
    let here = [
        "strings",
        "keys",
        "hashes",
        "lists",
        "sets",
        "zsets",
        "streams",
        "scripting",
        "pipelines",
        "scans",
        "conversions",
        "pubsub",
        "blocking",
    ];
    assert_eq!(here, groups::GROUPS);
}
