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

/// A test per group: `$name` runs group `$group` under both protocols, each on a fresh
/// database (the group's place in `groups::GROUPS` picks the two). `HERE` lists the groups
/// as given.
macro_rules! both_protocols {
    ($($name:ident => $group:literal,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let redis = RedisServer::start();
                let db = first_db($group);
                for (i, protocol) in [Protocol::Resp2, Protocol::Resp3].into_iter().enumerate() {
                    let c = client(&redis, protocol, db + i as u32).await;
                    groups::run($group, &c, protocol).await;
                }
            }
        )*

        const HERE: &[&str] = &[$($group),*];
    };
}

/// The first of group `group`'s two databases (of the server's 16).
fn first_db(group: &str) -> u32 {
    let at = groups::GROUPS
        .iter()
        .position(|g| *g == group)
        .unwrap_or_else(|| panic!("no group {group}"));
    (2 * at as u32) % 16
}

both_protocols! {
    strings => "strings",
    keys_and_expiry => "keys",
    hashes => "hashes",
    lists => "lists",
    sets => "sets",
    sorted_sets => "zsets",
    streams => "streams",
    scripting => "scripting",
    pipelines_and_transactions => "pipelines",
    scans => "scans",
    conversions => "conversions",
    pubsub => "pubsub",
    blocking_and_watch => "blocking",
}

#[test]
fn every_group_runs_here() {
    // The list above names each group once; a group added to `groups` must be added here.
    assert_eq!(HERE, groups::GROUPS);
}
