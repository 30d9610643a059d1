//! Regression tests for defects found in review (the hardening issue), each named after its
//! bug, against real servers.

mod common;

use std::time::Duration;

use redis_client::{Client, ClientConfig, Error, cmd};
use testkit::{RedisCluster, RedisServer};

/// The connections on `node` named `name` (`CLIENT SETNAME`, which the client does on every
/// connection it opens): ours alone, whatever else connects or is still closing.
fn named_clients(node: &testkit::RedisNode, name: &str) -> i64 {
    let list = node.command(&["CLIENT", "LIST"]).unwrap().text().unwrap();
    let needle = format!(" name={name} ");
    list.lines().filter(|l| l.contains(&needle)).count() as i64
}

/// Waits (bounded, by count) until `node` has `want` connections named `name`; the count it
/// settled on.
async fn settle_at(node: &testkit::RedisNode, name: &str, want: i64) -> i64 {
    let mut n = named_clients(node, name);
    for _ in 0..300 {
        if n == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        n = named_clients(node, name);
    }
    n
}

#[tokio::test]
async fn regression_a_client_that_ran_a_blocking_command_is_freed_when_dropped() {
    // The idle set of dedicated connections held `Dedicated`, which held a `Client`: after
    // one BLPOP the pool's owner tasks lived, and reconnected, forever.
    let redis = RedisServer::start();
    let c = common::connect(ClientConfig {
        url: redis.url(),
        client_name: Some("leakcheck".into()),
        pool_size: Some(4),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let popped: Option<(String, String)> =
        c.blpop(&["q"], Duration::from_millis(10)).await.unwrap();
    assert_eq!(popped, None);
    assert_eq!(
        settle_at(&redis, "leakcheck", 5).await,
        5,
        "four pooled connections and the idle dedicated one"
    );
    drop(c);
    assert_eq!(
        settle_at(&redis, "leakcheck", 0).await,
        0,
        "every socket closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_cluster_client_is_freed_when_dropped() {
    let cluster = RedisCluster::start();
    let nodes = cluster.masters();
    let c = common::connect(ClientConfig {
        client_name: Some("leakcheck-cluster".into()),
        ..common::cluster_config(&cluster)
    })
    .await
    .unwrap();
    for i in 0..50 {
        c.set(format!("k{i}"), i).await.unwrap();
    }
    let _: Option<(String, String)> = c.blpop(&["q"], Duration::from_millis(10)).await.unwrap();
    let sub = c.subscriber();
    sub.ssubscribe(&["ch"]).await.unwrap();
    let open: i64 = nodes
        .iter()
        .map(|n| named_clients(n, "leakcheck-cluster"))
        .sum();
    assert!(open >= 3, "a connection per primary at least: {open}");
    drop(sub);
    drop(c);
    for node in &nodes {
        assert_eq!(
            settle_at(node, "leakcheck-cluster", 0).await,
            0,
            "{} still has our sockets",
            node.addr()
        );
    }
}

#[tokio::test]
async fn regression_a_huge_blocking_timeout_is_the_servers_error_not_a_panic() {
    // `Duration::from_secs_f64` on the caller's BLPOP timeout panicked past `Duration::MAX`.
    let redis = RedisServer::start();
    let c = common::connect_url(&redis.url()).await.unwrap();
    for timeout in ["1e300", "inf", "-1", "nan", "18446744073709551616"] {
        let r = c
            .query::<Option<(String, String)>>(cmd("BLPOP").arg("k").arg(timeout))
            .await;
        match r {
            Err(Error::Server(msg)) => {
                assert!(msg.starts_with(b"ERR"), "{timeout}: {msg:?}");
            }
            other => panic!("{timeout}: expected the server's error, got {other:?}"),
        }
    }
    // The connection is fine afterwards.
    c.set("after", 1).await.unwrap();
    assert_eq!(c.get::<i64>("after").await.unwrap(), 1);
}

#[tokio::test]
async fn regression_subscribe_resolves_while_the_server_is_down() {
    // `Subscriber::subscribe` waited forever for a confirmation a down server never sends.
    let redis = RedisServer::start();
    let c = common::connect(ClientConfig {
        url: redis.url(),
        command_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    redis.kill();
    let mut sub = c.subscriber();
    let r = tokio::time::timeout(Duration::from_secs(10), sub.subscribe(&["news"]))
        .await
        .expect("subscribe resolves");
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    // An argument that encodes to nothing (which underflowed `len - 2`) is no channel.
    sub.subscribe(&[None::<&str>]).await.unwrap();
    // The subscription stays wanted: once the server is back, it is made.
    redis.restart();
    let mut delivered = 0;
    for _ in 0..500 {
        match c.publish("news", "hello").await {
            Ok(n) if n > 0 => {
                delivered = n;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert_eq!(delivered, 1, "the subscription was made after the restart");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"hello");
}

#[tokio::test]
async fn regression_secrets_never_reach_debug_output() {
    // `ClientConfig` and `ClientBuilder` derived `Debug`: the password and `:secret@` URLs
    // were printed.
    let config = ClientConfig {
        url: "redis://app:hunter2@10.0.0.1:6379".into(),
        password: Some("s3cr3t-pw".into()),
        ..ClientConfig::default()
    };
    let cluster = ClientConfig {
        cluster: true,
        urls: vec![
            "redis://:pw-in-seed@10.0.0.1:7000".into(),
            "redis://10.0.0.2:7000".into(),
        ],
        ..ClientConfig::default()
    };
    for text in [
        format!("{config:?}"),
        format!("{cluster:?}"),
        format!("{:?}", Client::builder().config(config.clone())),
        format!("{:?}", Client::builder().config(cluster)),
    ] {
        for secret in ["hunter2", "s3cr3t-pw", "pw-in-seed"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("10.0.0."), "still useful: {text}");
    }
    let client = Client::builder().config(config).build().unwrap();
    assert!(!format!("{client:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_subscriber_reports_the_gap_of_a_lost_connection() {
    // A lost subscriber connection was silent: a listener keeping state from messages (the
    // cache's invalidations) could not know it missed some.
    let redis = RedisServer::start();
    let c = common::connect_url(&redis.url()).await.unwrap();
    let mut sub = c.subscriber();
    sub.subscribe(&["ch"]).await.unwrap();
    c.publish("ch", "before").await.unwrap();
    let first = next_event(&mut sub).await;
    assert!(
        matches!(&first, redis_client::SubscriberEvent::Message(m) if &m.payload[..] == b"before"),
        "{first:?}"
    );
    redis
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .unwrap();
    assert_eq!(
        next_event(&mut sub).await,
        redis_client::SubscriberEvent::Gap
    );
    // Resubscribed: messages flow again (published until one arrives, bounded).
    let mut got = None;
    for i in 0..300 {
        c.publish("ch", format!("after {i}")).await.unwrap();
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(50), sub.next_event()).await
        {
            got = Some(e);
            break;
        }
    }
    assert!(
        matches!(&got, Some(redis_client::SubscriberEvent::Message(m)) if m.payload.starts_with(b"after")),
        "{got:?}"
    );
}

/// The subscriber's next event, within a liveness bound.
async fn next_event(sub: &mut redis_client::Subscriber) -> redis_client::SubscriberEvent {
    tokio::time::timeout(Duration::from_secs(30), sub.next_event())
        .await
        .expect("an event")
        .expect("open")
}
