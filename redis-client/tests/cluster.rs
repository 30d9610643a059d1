//! Redis Cluster mode against testkit's real 6-node cluster (3 primaries, 3 replicas): every
//! command group, routing, redirections, cross-slot refusals.

mod common;
mod groups;

use std::collections::HashSet;
use std::time::Duration;

use redis_client::cmds;
use redis_client::resp::Frame;
use redis_client::{Client, ClientConfig, Error, Protocol, ReadFrom, cmd, key_slot};
use testkit::RedisCluster;

use common::cluster_config;

async fn connect(cluster: &RedisCluster, protocol: Protocol) -> Client {
    common::connect(ClientConfig {
        protocol,
        ..cluster_config(cluster)
    })
    .await
    .unwrap_or_else(|e| panic!("connect {protocol:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_group_routes_in_cluster_mode() {
    let cluster = RedisCluster::start();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let c = connect(&cluster, protocol).await;
        assert!(c.is_cluster());
        for group in groups::GROUPS {
            c.flushall().await.unwrap();
            groups::run(group, &c, protocol).await;
        }
    }
}

#[tokio::test]
async fn commands_reach_the_node_of_their_slot() {
    let cluster = RedisCluster::start();
    let c = connect(&cluster, Protocol::Resp2).await;
    // Keys on every primary: each is on exactly the node that owns its slot.
    let keys: Vec<String> = (0..300).map(|i| format!("spread:{i}")).collect();
    for k in &keys {
        c.set(k, k).await.unwrap();
    }
    let mut nodes_with_keys = 0;
    let mut seen = 0;
    for node in cluster.masters() {
        let n = match node.command(&["DBSIZE"]).unwrap() {
            testkit::Reply::Integer(n) => n,
            other => panic!("{other:?}"),
        };
        if n > 0 {
            nodes_with_keys += 1;
        }
        seen += n;
    }
    assert_eq!(seen, 300, "every key on one primary");
    assert_eq!(nodes_with_keys, 3, "keys spread over all primaries");
    // The slot we compute is the server's.
    for k in keys.iter().take(20) {
        let slot = cluster.nodes()[0]
            .command(&["CLUSTER", "KEYSLOT", k])
            .unwrap();
        assert_eq!(
            slot,
            testkit::Reply::Integer(i64::from(key_slot(k.as_bytes())))
        );
    }
    // Whole-cluster commands: DBSIZE sums, KEYS gathers, FLUSHALL clears every primary.
    assert_eq!(c.dbsize().await.unwrap(), 300);
    let all: HashSet<String> = c.keys("spread:*").await.unwrap();
    assert_eq!(all.len(), 300);
    let mget: Vec<Option<String>> = c.mget(&keys).await.unwrap();
    assert_eq!(mget.iter().flatten().count(), 300);
    assert_eq!(
        mget[7].as_deref(),
        Some("spread:7"),
        "in the caller's order"
    );
    assert_eq!(c.exists(&keys).await.unwrap(), 300);
    assert_eq!(c.del(&keys[..150]).await.unwrap(), 150);
    c.flushall().await.unwrap();
    assert_eq!(c.dbsize().await.unwrap(), 0);
    assert_eq!(
        c.cluster_stats().unwrap().moved,
        0,
        "a fresh map needs no redirection"
    );
}

#[tokio::test]
async fn commands_that_need_one_slot_say_so_before_sending() {
    let cluster = RedisCluster::start();
    let c = connect(&cluster, Protocol::Resp3).await;
    let (a, b) = ("foo", "bar");
    assert_ne!(key_slot(a.as_bytes()), key_slot(b.as_bytes()));
    let cross = |e: Error| match e {
        Error::CrossSlot {
            command,
            first,
            other,
        } => {
            assert_ne!(first, other);
            command
        }
        other => panic!("expected CrossSlot, got {other:?}"),
    };
    assert_eq!(
        cross(c.sinter::<Vec<String>>(&[a, b]).await.unwrap_err()),
        "SINTER"
    );
    assert_eq!(cross(c.rename(a, b).await.unwrap_err()), "RENAME");
    assert_eq!(
        cross(c.msetnx(&[(a, 1), (b, 2)]).await.unwrap_err()),
        "MSETNX"
    );
    let e = c
        .eval::<()>("return 1", &[a, b], &[] as &[&str])
        .await
        .unwrap_err();
    assert_eq!(cross(e), "EVAL");
    let mut tx = c.transaction();
    tx.add(cmds::set(a, 1)).add(cmds::set(b, 2));
    assert_eq!(
        cross(tx.query::<Option<((), ())>>().await.unwrap_err()),
        "MULTI"
    );
    // The message says what to do.
    let e = c.sinter::<Vec<String>>(&[a, b]).await.unwrap_err();
    assert!(e.to_string().contains("hash tag"), "{e}");
    // A dedicated connection serves its key's slot only.
    let d = c.dedicated_for(a).await.unwrap();
    d.query::<()>(cmds::set(a, 1)).await.unwrap();
    assert_eq!(
        cross(d.query::<()>(cmds::set(b, 1)).await.unwrap_err()),
        "SET"
    );
    assert!(matches!(
        c.dedicated().await.unwrap_err(),
        Error::Unsupported { .. }
    ));
    // Nothing was written by the refused commands.
    assert_eq!(c.exists(&[b]).await.unwrap(), 0);
    // The raw escape hatch routes too.
    let v: Option<String> = c.query(cmd("GET").arg(a)).await.unwrap();
    assert_eq!(v.as_deref(), Some("1"));
}

#[tokio::test]
async fn pipelines_split_per_node_and_keep_their_order() {
    let cluster = RedisCluster::start();
    let c = connect(&cluster, Protocol::Resp2).await;
    let mut p = c.pipeline();
    for i in 0..200 {
        p.add(cmds::set(format!("pipe:{i}"), i));
        p.add(cmds::incr(format!("pipe:{i}")));
    }
    p.add(cmds::ping());
    let frames: Vec<Frame> = p.query().await.unwrap();
    assert_eq!(frames.len(), 401);
    for i in 0..200 {
        assert_eq!(
            frames[2 * i + 1],
            Frame::Integer(i as i64 + 1),
            "reply {i} in place"
        );
    }
    let mut p = c.pipeline();
    for i in (0..200).rev() {
        p.add(cmds::get(format!("pipe:{i}")));
    }
    let values: Vec<i64> = p.query().await.unwrap();
    assert_eq!(values, (1..=200).rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn replica_reads_are_served_by_replicas() {
    let cluster = RedisCluster::start();
    let c = common::connect(ClientConfig {
        read_from: ReadFrom::PreferReplica,
        ..cluster_config(&cluster)
    })
    .await
    .unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("rr:{i}")).collect();
    for k in &keys {
        c.set(k, 1).await.unwrap();
    }
    // Replicas lag: wait (bounded) until every write reached them.
    let on_replicas = || -> i64 {
        cluster
            .replicas()
            .iter()
            .map(|n| match n.command(&["DBSIZE"]).unwrap() {
                testkit::Reply::Integer(n) => n,
                other => panic!("{other:?}"),
            })
            .sum()
    };
    let mut polls = 0;
    while on_replicas() < 100 {
        polls += 1;
        assert!(polls < 500, "the replicas never caught up");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let gets_on = |role: &str| -> i64 {
        let nodes = if role == "master" {
            cluster.masters()
        } else {
            cluster.replicas()
        };
        nodes
            .iter()
            .map(|n| {
                let info = n
                    .command(&["INFO", "commandstats"])
                    .unwrap()
                    .text()
                    .unwrap();
                info.lines()
                    .find(|l| l.starts_with("cmdstat_get:"))
                    .and_then(|l| l.split("calls=").nth(1))
                    .and_then(|v| v.split(',').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            })
            .sum()
    };
    let before = (gets_on("master"), gets_on("slave"));
    for k in &keys {
        assert_eq!(c.get::<i64>(k).await.unwrap(), 1);
    }
    let after = (gets_on("master"), gets_on("slave"));
    assert_eq!(
        after.0 - before.0,
        0,
        "no GET reached a primary: {:?}",
        c.cluster_stats()
    );
    assert_eq!(after.1 - before.1, 100, "every GET was served by a replica");
    // Writes still go to primaries (a replica would refuse them with MOVED).
    c.set("rr:w", 2).await.unwrap();
    assert_eq!(c.cluster_stats().unwrap().moved, 0);
    // Round robin: each shard's reads alternate between its primary and its replica.
    let rr = common::connect(ClientConfig {
        read_from: ReadFrom::RoundRobin,
        ..cluster_config(&cluster)
    })
    .await
    .unwrap();
    let before = (gets_on("master"), gets_on("slave"));
    for k in &keys {
        assert_eq!(rr.get::<i64>(k).await.unwrap(), 1);
    }
    let (primary, replica) = (gets_on("master") - before.0, gets_on("slave") - before.1);
    assert_eq!(primary + replica, 100);
    // Three shards, each at most one read off an even split.
    assert!(
        (primary - replica).abs() <= 3,
        "round robin: {primary} on primaries, {replica} on replicas"
    );
    assert_eq!(rr.cluster_stats().unwrap().moved, 0);
}

async fn next(sub: &mut redis_client::Subscriber) -> redis_client::Message {
    tokio::time::timeout(std::time::Duration::from_secs(10), sub.next_message())
        .await
        .expect("a message within 10 s")
        .expect("subscriber open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_and_sharded_pubsub_follow_the_cluster() {
    let cluster = std::sync::Arc::new(RedisCluster::start());
    let c = connect(&cluster, Protocol::Resp3).await;
    let mut sub = c.subscriber();
    sub.subscribe(&["plain"]).await.unwrap();
    sub.ssubscribe(&["{ch}orders", "{other}x"]).await.unwrap();
    // An ordinary PUBLISH reaches the subscriber whichever node it went to.
    for i in 0..3 {
        c.publish("plain", format!("p{i}")).await.unwrap();
        assert_eq!(next(&mut sub).await.payload, format!("p{i}").as_bytes());
    }
    assert_eq!(c.spublish("{ch}orders", "1").await.unwrap(), 1);
    let m = next(&mut sub).await;
    assert_eq!(
        (&m.channel[..], &m.payload[..]),
        (&b"{ch}orders"[..], &b"1"[..])
    );

    // Move the channel's slot: the server unsubscribes the old node's subscribers, and the
    // subscriber follows the slot to its new primary.
    let slot = key_slot(b"ch");
    let from = cluster.master_of(slot).unwrap().port();
    common::move_slots(&cluster, [slot], from, 10).await;
    assert_ne!(cluster.master_of(slot).unwrap().port(), from);
    let mut tries = 0;
    while c.spublish("{ch}orders", "2").await.unwrap() == 0 {
        tries += 1;
        assert!(tries < 1_000, "the subscriber never followed the slot");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let m = next(&mut sub).await;
    assert_eq!(&m.payload[..], b"2");
    // The other shard channel was not disturbed, and unsubscribing works wherever it lives.
    assert_eq!(c.spublish("{other}x", "3").await.unwrap(), 1);
    assert_eq!(&next(&mut sub).await.payload[..], b"3");
    sub.sunsubscribe(&["{ch}orders", "{other}x"]).await.unwrap();
    assert_eq!(c.spublish("{ch}orders", "gone").await.unwrap(), 0);
    assert_eq!(c.spublish("{other}x", "gone").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_per_node_and_for_redirections_and_refreshes() {
    let cluster = std::sync::Arc::new(RedisCluster::start());
    let registry = jupiter_core::Metrics::new();
    let c = Client::builder()
        .config(cluster_config(&cluster))
        .name("sessions")
        .metrics(&registry)
        .connect()
        .await
        .unwrap();
    for i in 0..60 {
        c.set(format!("m:{i}"), i).await.unwrap();
    }
    let text = registry.encode();
    for node in cluster.masters() {
        let series = format!(
            "client_handle_total{{type=\"redis\",name=\"sessions\",method=\"SET\",peer=\"{}\",code=\"OK\"}}",
            node.addr()
        );
        assert!(text.contains(&series), "no {series} in\n{text}");
    }
    // Move the slot of one key: the next command on it is redirected, counted, and a refresh
    // follows.
    let key = "m:7";
    let slot = key_slot(key.as_bytes());
    let from = cluster.master_of(slot).unwrap().port();
    common::move_slots(&cluster, [slot], from, 10).await;
    assert_eq!(c.get::<i64>(key).await.unwrap(), 7);
    c.refresh_cluster_map().await;
    let stats = c.cluster_stats().unwrap();
    assert!(stats.moved >= 1, "{stats:?}");
    let text = registry.encode();
    let count = |event: &str| -> u64 {
        let prefix =
            format!("client_events_total{{type=\"redis\",name=\"sessions\",event=\"{event}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert_eq!(count("moved"), stats.moved);
    assert_eq!(count("refresh"), stats.refreshes);
    assert!(
        stats.refreshes >= 2,
        "the first map and the one after the move: {stats:?}"
    );
}

/// `cmdstat_<name>` of `INFO commandstats`: `(calls, rejected_calls)`.
fn command_stats(node: &testkit::RedisNode, name: &str) -> (u64, u64) {
    let info = match node.command(&["INFO", "commandstats"]).unwrap() {
        testkit::Reply::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        other => panic!("INFO: {other:?}"),
    };
    let line = info
        .lines()
        .find(|l| l.starts_with(&format!("cmdstat_{name}:")))
        .unwrap_or("");
    let field = |k: &str| {
        line.split([':', ','])
            .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
            .map_or(0, |v| v.parse().unwrap())
    };
    (field("calls"), field("rejected_calls"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_authenticate_on_every_node_and_a_slots_only_acl_falls_back_to_cluster_slots() {
    let cluster = RedisCluster::start();
    // A user that may not run CLUSTER SHARDS (as a Redis 6 node would not know it): the slot
    // map must come from CLUSTER SLOTS.
    for node in cluster.nodes() {
        let r = node
            .command(&[
                "ACL",
                "SETUSER",
                "app",
                "on",
                ">s3cret",
                "~*",
                "&*",
                "+@all",
                "-cluster|shards",
            ])
            .unwrap();
        assert!(matches!(r, testkit::Reply::Simple(_)), "{r:?}");
    }
    let urls = |password: &str| -> Vec<String> {
        cluster
            .seed_addrs()
            .iter()
            .map(|a| format!("redis://app:{password}@{a}"))
            .collect()
    };
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let c = common::connect(ClientConfig {
            urls: urls("s3cret"),
            protocol,
            ..cluster_config(&cluster)
        })
        .await
        .unwrap_or_else(|e| panic!("connect as app {protocol:?}: {e}"));
        // Keys on every primary: every node's connection authenticated as `app`.
        let keys: Vec<String> = (0..64).map(|i| format!("acl:{i}")).collect();
        let nodes: HashSet<u16> = keys
            .iter()
            .map(|k| cluster.master_of(key_slot(k.as_bytes())).unwrap().port())
            .collect();
        assert_eq!(nodes.len(), 3, "the keys span every primary");
        for (i, k) in keys.iter().enumerate() {
            c.set(k, i).await.unwrap();
        }
        let got: Vec<Option<usize>> = c.mget(&keys).await.unwrap();
        assert_eq!(got, (0..64).map(Some).collect::<Vec<_>>(), "{protocol:?}");
        let who: String = c.query(cmd("ACL").arg("WHOAMI")).await.unwrap();
        assert_eq!(who, "app");
    }
    let (slots, shards_rejected) = cluster
        .nodes()
        .iter()
        .map(|n| {
            (
                command_stats(n, "cluster|slots").0,
                command_stats(n, "cluster|shards").1,
            )
        })
        .fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
    assert!(shards_rejected >= 1, "CLUSTER SHARDS was tried and refused");
    assert!(slots >= 1, "the slot map came from CLUSTER SLOTS");
    // A wrong password is an authentication error, not a hang or a routing error.
    let e = common::connect(ClientConfig {
        urls: urls("wrong"),
        ..cluster_config(&cluster)
    })
    .await
    .map(|_| ())
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Auth(_) | Error::Handshake { .. } | Error::Cluster(_)
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("WRONGPASS") || e.to_string().to_lowercase().contains("auth"),
        "the error says why: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusterdown_is_retried_inside_the_command_timeout_then_surfaced() {
    let cluster = RedisCluster::start();
    let connect = |timeout_ms: u64| {
        common::connect(ClientConfig {
            command_timeout: std::time::Duration::from_millis(timeout_ms),
            ..cluster_config(&cluster)
        })
    };
    let c = connect(20_000).await.unwrap();
    let key = "down:1";
    c.set(key, "v").await.unwrap();
    let slot = key_slot(key.as_bytes());
    let owner = cluster.master_of(slot).unwrap();
    let slot_arg = slot.to_string();
    let expect_ok = |args: &[&str]| {
        let r = owner.command(args).unwrap();
        assert!(matches!(r, testkit::Reply::Simple(_)), "{args:?}: {r:?}");
    };
    // The owner drops the slot: it answers CLUSTERDOWN for it until it takes it back.
    expect_ok(&["CLUSTER", "DELSLOTS", &slot_arg]);
    let pending = tokio::spawn({
        let c = c.clone();
        async move { c.get::<String>(key).await }
    });
    let mut polls = 0;
    while c.cluster_stats().unwrap().retried == 0 {
        polls += 1;
        assert!(
            polls < 2000,
            "no CLUSTERDOWN retry seen: {:?}",
            c.cluster_stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        !pending.is_finished(),
        "the caller waits while the slot is down"
    );
    expect_ok(&["CLUSTER", "ADDSLOTS", &slot_arg]);
    let v = tokio::time::timeout(std::time::Duration::from_secs(60), pending)
        .await
        .expect("resolves")
        .unwrap();
    assert_eq!(v.unwrap(), "v", "served once the slot is back");
    let retried = c.cluster_stats().unwrap().retried;
    assert!(retried >= 1);
    // Down for longer than the command timeout: an error (which says why), not a hang.
    let short = connect(800).await.unwrap();
    assert_eq!(short.get::<String>(key).await.unwrap(), "v");
    expect_ok(&["CLUSTER", "DELSLOTS", &slot_arg]);
    let e = tokio::time::timeout(std::time::Duration::from_secs(60), short.get::<String>(key))
        .await
        .expect("resolves")
        .unwrap_err();
    // The last answer, not a bare timeout: the caller learns the slot is not served.
    assert!(e.to_string().contains("CLUSTERDOWN"), "{e:?}");
    assert!(
        short.cluster_stats().unwrap().retried >= 1,
        "{:?}",
        short.cluster_stats()
    );
    expect_ok(&["CLUSTER", "ADDSLOTS", &slot_arg]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_traffic_routes_by_the_shadow_keys_slot() {
    use jupiter_core::shadow::ShadowContext;
    let cluster = RedisCluster::start();
    let c = Client::builder()
        .config(cluster_config(&cluster))
        .shadow_prefix("shadow:")
        .metrics(&common::metrics())
        .connect()
        .await
        .unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("sh:{i}")).collect();
    ShadowContext::scope(Some(ShadowContext::new()), async {
        for (i, k) in keys.iter().enumerate() {
            c.set(k, i).await.unwrap();
        }
        let got: Vec<Option<usize>> = c.mget(&keys).await.unwrap();
        assert_eq!(got, (0..60).map(Some).collect::<Vec<_>>());
    })
    .await;
    // Live traffic sees none of it.
    let live: Vec<Option<usize>> = c.mget(&keys).await.unwrap();
    assert!(live.iter().all(Option::is_none), "{live:?}");
    // Each shadow key lives on the primary of its own slot (the prefixed key's), and the
    // client went there directly: no MOVED.
    let mut nodes = HashSet::new();
    for k in &keys {
        let shadow = format!("shadow:{k}");
        let node = cluster.master_of(key_slot(shadow.as_bytes())).unwrap();
        nodes.insert(node.port());
        assert_eq!(
            node.command(&["EXISTS", &shadow]).unwrap(),
            testkit::Reply::Integer(1),
            "{shadow}"
        );
    }
    assert_eq!(nodes.len(), 3, "the shadow keys span every primary");
    assert_eq!(c.cluster_stats().unwrap().moved, 0);
}

/// In cluster mode too, a `with_timeout` handle times out on its own while the original
/// handle's commands wait for the stalled node and then get their replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_with_its_own_timeout_times_out_alone_in_a_cluster() {
    let cluster = RedisCluster::start();
    let long = common::connect(ClientConfig {
        command_timeout: Duration::from_secs(60),
        ..cluster_config(&cluster)
    })
    .await
    .unwrap();
    let short = long.with_timeout(Duration::from_millis(100));
    common::short_deadline_times_out_alone(
        &long,
        &short,
        "{t}k",
        || cluster.nodes().iter().for_each(testkit::RedisNode::pause),
        || cluster.nodes().iter().for_each(testkit::RedisNode::resume),
    )
    .await;
}
