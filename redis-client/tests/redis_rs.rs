//! redis-rs's async API on our engine (feature `redis-rs`), against real redis-server and a
//! real 6-node cluster: a differential run against redis-rs's own `MultiplexedConnection`,
//! a redis-rs program run unchanged on both, faults, shadow traffic and metrics, cluster
//! routing.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionLike;
use redis::{AsyncCommands, RedisResult, Value};
use redis_client::{Client, ClientConfig, Protocol};
use testkit::{RedisCluster, RedisServer};

const COMMANDS: usize = 6_000;

async fn ours(url: &str, protocol: Protocol) -> redis_client::redis_rs::Connection {
    Client::builder()
        .url(url)
        .protocol(protocol)
        .connect()
        .await
        .expect("our client connects")
        .redis_rs()
}

async fn theirs(url: &str, protocol: Protocol) -> redis::aio::MultiplexedConnection {
    let url = match protocol {
        Protocol::Resp2 => url.to_owned(),
        Protocol::Resp3 => format!("{url}?protocol=resp3"),
    };
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis-rs connects")
}

/// A result in a comparable form: the value, or the error's kind, code and detail (redis-rs's
/// `RedisError` has no `PartialEq`).
#[derive(Debug, PartialEq)]
enum Outcome {
    Value(Value),
    Error(String),
}

fn outcome(r: RedisResult<Value>) -> Outcome {
    match r {
        Ok(v) => Outcome::Value(v),
        Err(e) => Outcome::Error(format!("{:?} {:?} {:?}", e.kind(), e.code(), e.detail())),
    }
}

/// One random command through `AsyncCommands` (or a pipeline, or a transaction), drawn from
/// `rng` over a small key space so types collide: the same `rng` state gives the same command
/// on any connection.
async fn step<C: ConnectionLike + Send + Sync>(con: &mut C, rng: &mut fastrand::Rng) -> Outcome {
    let key = |rng: &mut fastrand::Rng| format!("k{}", rng.u8(..12));
    let member = |rng: &mut fastrand::Rng| format!("m{}", rng.u8(..6));
    let int = |rng: &mut fastrand::Rng| i64::from(rng.i8(..));
    let k = key(rng);
    let r: RedisResult<Value> = match rng.u8(..44) {
        0 => con.set(&k, format!("v{}", rng.u16(..))).await,
        1 => con.get(&k).await,
        2 => con.del(&k).await,
        3 => con.exists(&k).await,
        4 => con.incr(&k, int(rng)).await,
        5 => con.decr(&k, int(rng)).await,
        6 => con.append(&k, member(rng)).await,
        7 => con.strlen(&k).await,
        8 => {
            con.getrange(&k, isize::from(rng.i8(-4..4)), isize::from(rng.i8(-4..8)))
                .await
        }
        9 => con.mget(&[key(rng), key(rng), key(rng)]).await,
        10 => con.mset(&[(key(rng), "a"), (key(rng), "b")]).await,
        11 => con.set_nx(&k, "nx").await,
        12 => con.get_del(&k).await,
        // A fixed timestamp in the future: EXPIRETIME then reads the same on both servers.
        13 => {
            con.expire_at(&k, 4_000_000_000 + i64::from(rng.u8(..)))
                .await
        }
        14 => con.expire_time(&k).await,
        15 => con.persist(&k).await,
        16 => con.key_type(&k).await,
        17 => con.hset(&k, member(rng), int(rng)).await,
        18 => con.hget(&k, member(rng)).await,
        19 => con.hdel(&k, member(rng)).await,
        20 => con.hgetall(&k).await,
        21 => con.hincr(&k, member(rng), int(rng)).await,
        22 => {
            con.hset_multiple(&k, &[(member(rng), "x"), (member(rng), "y")])
                .await
        }
        23 => con.hkeys(&k).await,
        24 => con.lpush(&k, member(rng)).await,
        25 => con.rpush(&k, &[member(rng), member(rng)]).await,
        26 => {
            con.lpop(&k, std::num::NonZeroUsize::new(rng.usize(..3)))
                .await
        }
        27 => con.lrange(&k, 0, -1).await,
        28 => con.llen(&k).await,
        29 => con.lrem(&k, isize::from(rng.i8(-2..2)), member(rng)).await,
        30 => con.sadd(&k, &[member(rng), member(rng)]).await,
        31 => con.srem(&k, member(rng)).await,
        // Sets of strings are hash tables on Redis 7.0, ordered by a per-process seed.
        32 => con.smembers(&k).await.map(members_sorted),
        33 => con.sismember(&k, member(rng)).await,
        34 => con.sinter(&[key(rng), key(rng)]).await.map(members_sorted),
        35 => con.zadd(&k, member(rng), int(rng)).await,
        36 => {
            con.zincr(&k, member(rng), f64::from(rng.i8(..)) / 4.0)
                .await
        }
        37 => con.zrange_withscores(&k, 0, -1).await,
        38 => con.zscore(&k, member(rng)).await,
        39 => con.zrank(&k, member(rng)).await,
        40 => con.incr(&k, f64::from(rng.i8(..)) / 8.0).await,
        41 => {
            let mut p = redis::pipe();
            p.set(&k, int(rng))
                .incr(&k, 1)
                .ignore()
                .get(&k)
                .hget(key(rng), "f");
            p.query_async(con).await
        }
        42 => {
            let mut p = redis::pipe();
            p.atomic().lpush(&k, member(rng)).llen(&k).get(key(rng));
            p.query_async(con).await
        }
        _ => {
            redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg(&k)
                .query_async(con)
                .await
        }
    };
    outcome(r)
}

/// A set reply with its members sorted (in whichever container the protocol gives).
fn members_sorted(v: Value) -> Value {
    let sort = |mut items: Vec<Value>| {
        items.sort_by_key(|m| format!("{m:?}"));
        items
    };
    match v {
        Value::Array(items) => Value::Array(sort(items)),
        Value::Set(items) => Value::Set(sort(items)),
        other => other,
    }
}

async fn differential(protocol: Protocol) {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let mut mine = ours(&a.url(), protocol).await;
    let mut peer = theirs(&b.url(), protocol).await;
    let seed = 0x2026_1202;
    let (mut r1, mut r2) = (
        fastrand::Rng::with_seed(seed),
        fastrand::Rng::with_seed(seed),
    );
    let mut errors = 0;
    let mut shapes = std::collections::BTreeSet::new();
    for i in 0..COMMANDS {
        let got = step(&mut mine, &mut r1).await;
        let want = step(&mut peer, &mut r2).await;
        assert_eq!(got, want, "command {i} ({protocol:?})");
        match &want {
            Outcome::Error(_) => errors += 1,
            Outcome::Value(v) => {
                shapes.insert(
                    format!("{v:?}")
                        .split(['(', ' ', '{'])
                        .next()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
    }
    // The run exercised what it claims: error replies and every reply shape of its protocol.
    assert!(errors > 100, "{errors} error replies");
    let expected: &[&str] = match protocol {
        Protocol::Resp2 => &["int", "bulk-string", "array", "nil", "ok", "simple-string"],
        Protocol::Resp3 => &[
            "int",
            "bulk-string",
            "array",
            "nil",
            "ok",
            "simple-string",
            "map",
            "set",
            "double",
        ],
    };
    for s in expected {
        assert!(shapes.contains(*s), "no {s} reply in {shapes:?}");
    }
}

#[tokio::test]
async fn the_same_random_commands_give_the_same_values_as_redis_rs_resp2() {
    differential(Protocol::Resp2).await;
}

#[tokio::test]
async fn the_same_random_commands_give_the_same_values_as_redis_rs_resp3() {
    differential(Protocol::Resp3).await;
}

/// What a redis-rs program computes: written once, against the trait, run on both.
#[derive(Debug, PartialEq)]
struct Results {
    name: Option<String>,
    missing: Option<String>,
    user: HashMap<String, String>,
    counters: (i64, i64),
    piped: (i64,),
    scripted: i64,
    wrongtype: Option<String>,
    scanned: Vec<String>,
    len: usize,
}

async fn program<C: ConnectionLike + Send + Sync>(con: &mut C) -> RedisResult<Results> {
    let () = con.set("user:1:name", "ada").await?;
    let name: Option<String> = con.get("user:1:name").await?;
    let missing = con.get::<_, Option<String>>("user:404:name").await?;
    let () = con
        .hset_multiple("user:1", &[("name", "ada"), ("lang", "rust")])
        .await?;
    let user: HashMap<String, String> = con.hgetall("user:1").await?;
    let counters: (i64, i64) = redis::pipe()
        .atomic()
        .incr("counter", 1)
        .incr("counter", 2)
        .query_async(con)
        .await?;
    let piped: (i64,) = redis::pipe()
        .cmd("SET")
        .arg("p")
        .arg(5)
        .ignore()
        .cmd("GET")
        .arg("p")
        .query_async(con)
        .await?;
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    // The first call meets NOSCRIPT and loads the script: the error's kind must be redis-rs's.
    let scripted: i64 = script.key("counter").arg(10).invoke_async(con).await?;
    let wrongtype = con
        .hget::<_, _, Option<String>>("user:1:name", "f")
        .await
        .err()
        .and_then(|e| e.code().map(str::to_owned));
    let mut scanned: Vec<String> = {
        let mut it = con.scan_match::<_, String>("user:*").await?;
        let mut keys = Vec::new();
        while let Some(k) = it.next().await {
            keys.push(k?);
        }
        keys
    };
    scanned.sort();
    let len: usize = redis::cmd("STRLEN")
        .arg("user:1:name")
        .query_async(con)
        .await?;
    Ok(Results {
        name,
        missing,
        user,
        counters,
        piped,
        scripted,
        wrongtype,
        scanned,
        len,
    })
}

#[tokio::test]
async fn a_redis_rs_program_runs_unchanged() {
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let (a, b) = (RedisServer::start(), RedisServer::start());
        let got = program(&mut ours(&a.url(), protocol).await).await.unwrap();
        let want = program(&mut theirs(&b.url(), protocol).await)
            .await
            .unwrap();
        assert_eq!(got, want, "{protocol:?}");
        assert_eq!(got.name.as_deref(), Some("ada"));
        assert_eq!(got.counters, (1, 3));
        assert_eq!(got.scripted, 13);
        assert_eq!(got.wrongtype.as_deref(), Some("WRONGTYPE"));
        assert_eq!(got.scanned, ["user:1", "user:1:name"]);
        // `Client` itself takes redis-rs's commands too.
        let mut client = Client::connect_url(&a.url()).await.unwrap();
        let v: String = redis::cmd("GET")
            .arg("user:1:name")
            .query_async(&mut client)
            .await
            .unwrap();
        assert_eq!(v, "ada");
        assert_eq!(client.get_db(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_fails_every_call_with_an_io_error_and_a_restarted_one_serves() {
    let redis = RedisServer::start();
    let client = Client::builder()
        .url(&redis.url())
        .command_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let mut con = client.redis_rs();
    let () = con.set("k", "before").await.unwrap();
    // Stopped, the server holds the calls in flight; killed, it drops them.
    redis.pause();
    let calls: Vec<_> = (0..32)
        .map(|i| {
            let mut con = con.clone();
            tokio::spawn(async move {
                let r: RedisResult<Option<String>> = if i % 2 == 0 {
                    con.get("k").await
                } else {
                    con.set("k", i).await.map(|()| None)
                };
                r
            })
        })
        .collect();
    tokio::task::yield_now().await;
    redis.kill();
    for call in calls {
        let r = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("every call resolves")
            .unwrap();
        let e = r.expect_err("the server is gone");
        assert!(e.is_io_error(), "{e:?}");
    }
    // A timeout is an I/O error of kind TimedOut too (redis-rs's `is_timeout`).
    redis.restart();
    let mut served = None;
    for _ in 0..200 {
        match con.get::<_, Option<String>>("k").await {
            Ok(v) => {
                served = Some(v);
                break;
            }
            Err(e) => {
                assert!(e.is_io_error(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // No persistence configured: the restarted server is empty, and it answers.
    assert_eq!(served, Some(None), "the restarted server serves");
    let () = con.set("k", "after").await.unwrap();
    assert_eq!(con.get::<_, String>("k").await.unwrap(), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_an_io_error_of_kind_timed_out() {
    let redis = RedisServer::start();
    let mut con = Client::builder()
        .url(&redis.url())
        .command_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap()
        .redis_rs();
    let () = con.set("k", 1).await.unwrap();
    redis.pause();
    let e = con.get::<_, i64>("k").await.unwrap_err();
    redis.resume();
    assert!(e.is_timeout() && e.is_io_error(), "{e:?}");
}

#[tokio::test]
async fn shadow_traffic_and_metrics_apply_through_the_redis_rs_api() {
    use jupiter_core::shadow::ShadowContext;
    let redis = RedisServer::start();
    let registry = jupiter_core::Metrics::new();
    let client = Client::builder()
        .url(&redis.url())
        .name("compat")
        .shadow_prefix("shadow:")
        .metrics(&registry)
        .connect()
        .await
        .unwrap();
    let mut con = client.redis_rs();
    ShadowContext::scope(Some(ShadowContext::new()), async {
        let () = con.set("order:1", "shadow value").await.unwrap();
        let (n,): (i64,) = redis::pipe()
            .incr("orders", 1)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(n, 1);
        let v: String = con.get("order:1").await.unwrap();
        assert_eq!(v, "shadow value");
    })
    .await;
    let exists = |k: &str| redis.command(&["EXISTS", k]).unwrap();
    assert_eq!(exists("shadow:order:1"), testkit::Reply::Integer(1));
    assert_eq!(exists("shadow:orders"), testkit::Reply::Integer(1));
    assert_eq!(exists("order:1"), testkit::Reply::Integer(0));
    assert_eq!(exists("orders"), testkit::Reply::Integer(0));
    let live: Option<String> = con.get("order:1").await.unwrap();
    assert_eq!(live, None);
    let text = registry.encode();
    let count = |method: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("client_handle_total")
                    && l.contains(&format!("method=\"{method}\""))
                    && l.contains("name=\"compat\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(count("SET"), Some(1.0), "{text}");
    assert_eq!(count("GET"), Some(2.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_mode_commands_route_and_redirections_never_surface() {
    let cluster = RedisCluster::start();
    let client = Client::builder()
        .config(ClientConfig {
            cluster: true,
            urls: cluster.seed_urls(),
            ..ClientConfig::default()
        })
        .connect()
        .await
        .unwrap();
    let mut con = client.redis_rs();
    let keys: Vec<String> = (0..40).map(|i| format!("c:{i}")).collect();
    let pairs: Vec<(String, usize)> = keys.iter().cloned().zip(0..).collect();
    // Multi-key commands over every primary, split and reassembled in order.
    let () = con.mset(&pairs).await.unwrap();
    let got: Vec<usize> = con.mget(&keys).await.unwrap();
    assert_eq!(got, (0..40).collect::<Vec<_>>());
    // A pipeline across slots: each reply where its command stood.
    let mut p = redis::pipe();
    for k in &keys {
        p.incr(k, 100);
    }
    let incremented: Vec<usize> = p.query_async(&mut con).await.unwrap();
    assert_eq!(incremented, (100..140).collect::<Vec<_>>());
    // A transaction needs one slot: said before anything is sent.
    let e = redis::pipe()
        .atomic()
        .incr("c:0", 1)
        .incr("c:1", 1)
        .query_async::<(i64, i64)>(&mut con)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), redis::ErrorKind::Client, "{e:?}");
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("{c}:a", 1)
        .incr("{c}:b", 2)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 2));
    // Move the slot of c:0 to another primary: the next calls follow MOVED silently.
    let slot = redis_client::key_slot(b"c:0");
    let from = cluster.master_of(slot).unwrap();
    let to = cluster
        .masters()
        .into_iter()
        .find(|m| m.port() != from.port())
        .unwrap();
    cluster.move_slots([slot], from, to, 10).unwrap();
    let v: usize = con.get("c:0").await.unwrap();
    assert_eq!(v, 100);
    let () = con.set("c:0", 7).await.unwrap();
    assert_eq!(con.get::<_, usize>("c:0").await.unwrap(), 7);
    assert!(client.cluster_stats().unwrap().moved >= 1);
    // SCAN's cursor belongs to one node: refused with the way to scan every primary, where
    // it would otherwise end after one node's keys.
    let e = match con.scan_match::<_, String>("c:*").await {
        Ok(_) => panic!("SCAN through the redis-rs API on a cluster must be refused"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), redis::ErrorKind::Client, "{e:?}");
    assert!(e.to_string().contains("Client::scan"), "{e}");
    let per_key: Vec<Vec<u8>> = client
        .scan(Some("c:*"), None)
        .map(|k| k.unwrap().to_vec())
        .collect()
        .await;
    assert_eq!(per_key.len(), keys.len());
}
