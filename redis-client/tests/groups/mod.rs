//! The command groups, each one function run against a standalone server (`commands.rs`)
//! and against a 6-node cluster (`cluster.rs`), under RESP2 and RESP3.
//!
//! Keys that a command needs in one slot share a hash tag (`{t}a`, `{t}b`); everything else
//! is spread over slots, so in cluster mode single-key commands reach every node and
//! `MGET`/`MSET`/`DEL`/`EXISTS`/`UNLINK` are split and reassembled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use redis_client::cmds::{self, Condition, Side, Trim, Ttl, ZaddOptions};
use redis_client::resp::Frame;
use redis_client::{Client, Error, Json, Protocol, Script, cmd};

mod strings;

use strings::{assert_expires_in, secs, strings_body};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Every group, by name, for the runners.
pub(crate) const GROUPS: &[&str] = &[
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

/// Runs group `name` on `c`.
pub(crate) async fn run(name: &str, c: &Client, p: Protocol) {
    match name {
        "strings" => strings_body(c, p).await,
        "keys" => keys_body(c, p).await,
        "hashes" => hashes_body(c, p).await,
        "lists" => lists_body(c, p).await,
        "sets" => sets_body(c, p).await,
        "zsets" => zsets_body(c, p).await,
        "streams" => streams_body(c, p).await,
        "scripting" => scripting_body(c, p).await,
        "pipelines" => pipelines_body(c, p).await,
        "scans" => scans_body(c, p).await,
        "conversions" => conversions_body(c, p).await,
        "pubsub" => pubsub_body(c, p).await,
        "blocking" => blocking_body(c, p).await,
        other => panic!("no group {other}"),
    }
}

async fn keys_body(c: &Client, p: Protocol) {
    c.set("{k}1", "v").await.unwrap();
    c.set("k2", "v").await.unwrap();
    assert_eq!(c.exists(&["{k}1", "k2", "k3"]).await.unwrap(), 2);
    assert_eq!(c.touch(&["{k}1", "k2", "k3"]).await.unwrap(), 2);
    assert_eq!(c.key_type("{k}1").await.unwrap(), "string", "{p:?}");
    c.rpush("l", &["x"]).await.unwrap();
    assert_eq!(c.key_type("l").await.unwrap(), "list");
    assert_eq!(c.key_type("none").await.unwrap(), "none");

    assert_eq!(c.ttl("{k}1").await.unwrap(), Ttl::Persistent);
    assert_eq!(c.ttl("none").await.unwrap(), Ttl::Missing);
    assert!(c.expire("{k}1", secs(100)).await.unwrap());
    assert!(!c.expire("none", secs(100)).await.unwrap());
    assert_expires_in(c, "k2", ms(100_500), async {
        assert!(c.expire("k2", ms(100_500)).await.unwrap());
    })
    .await;
    assert!(c.persist("k2").await.unwrap());
    assert_eq!(c.ttl("k2").await.unwrap(), Ttl::Persistent);
    let past = SystemTime::UNIX_EPOCH + secs(1_000_000_000); // 2001: expires at once
    assert!(c.expire_at("k2", past).await.unwrap());
    assert_eq!(c.exists(&["k2"]).await.unwrap(), 0);
    let e = c.expire("k2", Duration::MAX).await.unwrap_err();
    assert!(matches!(e, Error::Argument { .. }), "{e:?}");

    // A key's expiry is the server's to enforce: a key given 1 ms is gone once the server's
    // clock moved past it (PTTL says so; no sleeping against our own clock).
    c.set("short", "v").await.unwrap();
    assert!(c.expire("short", ms(1)).await.unwrap());
    let mut polls = 0;
    while c.exists(&["short"]).await.unwrap() == 1 {
        polls += 1;
        assert!(polls < 10_000, "a 1 ms expiry never took effect");
        tokio::task::yield_now().await;
    }

    c.rename("{k}1", "{k}9").await.unwrap();
    assert_eq!(c.get::<String>("{k}9").await.unwrap(), "v");
    c.set("{k}8", "w").await.unwrap();
    assert!(!c.renamenx("{k}9", "{k}8").await.unwrap());
    assert!(c.copy("{k}9", "{k}7", false).await.unwrap());
    assert!(!c.copy("{k}9", "{k}8", false).await.unwrap());
    assert!(c.copy("{k}9", "{k}8", true).await.unwrap());
    assert_eq!(c.get::<String>("{k}8").await.unwrap(), "v");
    c.set("elsewhere", "e").await.unwrap();
    assert_eq!(
        c.del(&["{k}7", "{k}8", "nope", "elsewhere"]).await.unwrap(),
        3
    );
    assert_eq!(c.unlink(&["{k}9"]).await.unwrap(), 1);
    assert_eq!(c.dbsize().await.unwrap(), 1, "only the list is left");
    let mut keys: Vec<String> = c.keys("*").await.unwrap();
    keys.sort();
    assert_eq!(keys, ["l"]);
    assert_eq!(
        c.randomkey::<Option<String>>().await.unwrap().as_deref(),
        Some("l")
    );
    let e = c.rename("{k}nope", "{k}x").await.unwrap_err();
    assert!(e.to_string().contains("no such key"), "{e}");
}

async fn hashes_body(c: &Client, p: Protocol) {
    assert_eq!(
        c.hset("h", &[("a", "1"), ("b", "2"), ("c", "3")])
            .await
            .unwrap(),
        3
    );
    assert_eq!(c.hget::<i64>("h", "a").await.unwrap(), 1);
    assert_eq!(c.hget::<Option<i64>>("h", "zz").await.unwrap(), None);
    assert!(!c.hsetnx("h", "a", "9").await.unwrap());
    assert!(c.hsetnx("h", "d", "4").await.unwrap());
    let m: HashMap<String, i64> = c.hgetall("h").await.unwrap();
    assert_eq!(m.len(), 4, "{p:?}");
    assert_eq!(m["d"], 4);
    let m: BTreeMap<String, String> = c.hgetall("h").await.unwrap();
    assert_eq!(m.keys().cloned().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
    let v: Vec<Option<String>> = c.hmget("h", &["a", "x", "c"]).await.unwrap();
    assert_eq!(v, vec![Some("1".into()), None, Some("3".into())]);
    assert!(c.hexists("h", "b").await.unwrap());
    assert_eq!(c.hdel("h", &["b", "x"]).await.unwrap(), 1);
    assert!(!c.hexists("h", "b").await.unwrap());
    assert_eq!(c.hincr_by("h", "a", 10).await.unwrap(), 11);
    assert!((c.hincr_by_float("h", "f", 1.25).await.unwrap() - 1.25).abs() < 1e-9);
    let mut keys: Vec<String> = c.hkeys("h").await.unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "c", "d", "f"]);
    let vals: HashSet<String> = c.hvals("h").await.unwrap();
    assert!(vals.contains("11"));
    assert_eq!(c.hlen("h").await.unwrap(), 4);
    assert_eq!(c.hstrlen("h", "a").await.unwrap(), 2);
    let m: HashMap<String, String> = c.hgetall("missing").await.unwrap();
    assert!(m.is_empty());
    c.set("s", "x").await.unwrap();
    let e = c.hget::<Option<String>>("s", "a").await.unwrap_err();
    assert_eq!(e.server_code(), Some("WRONGTYPE"));
}

async fn lists_body(c: &Client, p: Protocol) {
    assert_eq!(c.rpush("l", &["b", "c"]).await.unwrap(), 2);
    assert_eq!(c.lpush("l", &["a"]).await.unwrap(), 3);
    assert_eq!(
        c.lrange::<Vec<String>>("l", 0, -1).await.unwrap(),
        ["a", "b", "c"],
        "{p:?}"
    );
    assert_eq!(c.llen("l").await.unwrap(), 3);
    assert_eq!(c.lindex::<String>("l", -1).await.unwrap(), "c");
    assert_eq!(c.lindex::<Option<String>>("l", 10).await.unwrap(), None);
    c.lset("l", 1, "B").await.unwrap();
    assert_eq!(c.linsert("l", true, "B", "a2").await.unwrap(), 4);
    assert_eq!(c.linsert("l", true, "zz", "x").await.unwrap(), -1);
    assert_eq!(c.lpos("l", "B").await.unwrap(), Some(2));
    assert_eq!(c.lpos("l", "zz").await.unwrap(), None);
    c.rpush("l", &["a", "a"]).await.unwrap();
    assert_eq!(c.lrem("l", 0, "a").await.unwrap(), 3);
    assert_eq!(
        c.lrange::<Vec<String>>("l", 0, -1).await.unwrap(),
        ["a2", "B", "c"]
    );
    let m: String = c.lmove("l", "{l}2", Side::Right, Side::Left).await.unwrap();
    assert_eq!(m, "c");
    assert_eq!(c.lpop::<String>("l", None).await.unwrap(), "a2");
    assert_eq!(
        c.rpop::<Option<String>>("l", None).await.unwrap(),
        Some("B".into())
    );
    assert_eq!(c.rpop::<Option<String>>("l", None).await.unwrap(), None);
    c.rpush("l", &[1, 2, 3, 4, 5]).await.unwrap();
    assert_eq!(c.lpop::<Vec<i64>>("l", Some(2)).await.unwrap(), [1, 2]);
    c.ltrim("l", 0, 1).await.unwrap();
    assert_eq!(c.lrange::<Vec<i64>>("l", 0, -1).await.unwrap(), [3, 4]);
    assert_eq!(c.lpushx("nolist", &["x"]).await.unwrap(), 0);
    assert_eq!(c.rpushx("l", &[9]).await.unwrap(), 3);
    assert_eq!(c.rpop::<i64>("l", None).await.unwrap(), 9);
    // Blocking pops on data already there return at once; on an empty list they time out.
    assert_eq!(
        c.blpop::<i64>(&["{l}none", "l"], secs(1)).await.unwrap(),
        Some(("l".into(), 3))
    );
    assert_eq!(c.brpop::<i64>(&["none"], ms(50)).await.unwrap(), None);
    let v: Option<String> = c
        .blmove("{l}2", "l", Side::Left, Side::Right, ms(500))
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("c"));
}

async fn sets_body(c: &Client, p: Protocol) {
    assert_eq!(c.sadd("{s}1", &["a", "b", "c"]).await.unwrap(), 3);
    assert_eq!(c.sadd("{s}1", &["a"]).await.unwrap(), 0);
    c.sadd("{s}2", &["b", "c", "d"]).await.unwrap();
    let m: HashSet<String> = c.smembers("{s}1").await.unwrap();
    assert_eq!(m, ["a", "b", "c"].map(String::from).into(), "{p:?}");
    assert!(c.sismember("{s}1", "a").await.unwrap());
    assert_eq!(
        c.smismember("{s}1", &["a", "z", "c"]).await.unwrap(),
        [true, false, true]
    );
    assert_eq!(c.scard("{s}1").await.unwrap(), 3);
    let i: HashSet<String> = c.sinter(&["{s}1", "{s}2"]).await.unwrap();
    assert_eq!(i, ["b", "c"].map(String::from).into());
    let u: HashSet<String> = c.sunion(&["{s}1", "{s}2"]).await.unwrap();
    assert_eq!(u.len(), 4);
    let d: Vec<String> = c.sdiff(&["{s}1", "{s}2"]).await.unwrap();
    assert_eq!(d, ["a"]);
    assert_eq!(c.sinterstore("{s}3", &["{s}1", "{s}2"]).await.unwrap(), 2);
    assert_eq!(c.sunionstore("{s}4", &["{s}1", "{s}2"]).await.unwrap(), 4);
    assert_eq!(c.sdiffstore("{s}5", &["{s}1", "{s}2"]).await.unwrap(), 1);
    assert!(c.smove("{s}1", "{s}2", "a").await.unwrap());
    assert!(!c.smove("{s}1", "{s}2", "zz").await.unwrap());
    assert_eq!(c.srem("{s}2", &["a", "b", "q"]).await.unwrap(), 2);
    let r: String = c.srandmember("{s}4", None).await.unwrap();
    assert!(["a", "b", "c", "d"].contains(&r.as_str()));
    let r: Vec<String> = c.srandmember("{s}4", Some(-6)).await.unwrap();
    assert_eq!(r.len(), 6, "negative count repeats members");
    let popped: Vec<String> = c.spop("{s}4", Some(4)).await.unwrap();
    assert_eq!(popped.len(), 4);
    assert_eq!(c.scard("{s}4").await.unwrap(), 0);
    let none: Option<String> = c.spop("{s}4", None).await.unwrap();
    assert_eq!(none, None);
}

async fn zsets_body(c: &Client, p: Protocol) {
    assert_eq!(
        c.zadd("{z}", &[(1.0, "a"), (2.0, "b"), (3.5, "c")])
            .await
            .unwrap(),
        3
    );
    assert_eq!(c.zscore("{z}", "c").await.unwrap(), Some(3.5), "{p:?}");
    assert_eq!(c.zscore("{z}", "q").await.unwrap(), None);
    assert_eq!(
        c.zmscore("{z}", &["a", "q"]).await.unwrap(),
        [Some(1.0), None]
    );
    let gt = ZaddOptions {
        compare_gt: Some(true),
        changed: true,
        ..ZaddOptions::default()
    };
    assert_eq!(
        c.zadd_with("{z}", gt, &[(0.5, "a"), (5.0, "b")])
            .await
            .unwrap(),
        1,
        "GT only raises b"
    );
    let nx = ZaddOptions {
        condition: Some(Condition::NotExists),
        ..ZaddOptions::default()
    };
    assert_eq!(c.zadd_with("{z}", nx, &[(9.0, "a")]).await.unwrap(), 0);
    assert!((c.zincr_by("{z}", 2.0, "a").await.unwrap() - 3.0).abs() < 1e-9);
    assert_eq!(c.zcard("{z}").await.unwrap(), 3);
    assert_eq!(c.zcount("{z}", 3, "+inf").await.unwrap(), 3);
    assert_eq!(c.zcount("{z}", "(3", "+inf").await.unwrap(), 2);
    assert_eq!(
        c.zrange::<Vec<String>>("{z}", 0, -1).await.unwrap(),
        ["a", "c", "b"]
    );
    assert_eq!(
        c.zrevrange::<Vec<String>>("{z}", 0, 0).await.unwrap(),
        ["b"]
    );
    let ws: Vec<(String, f64)> = c.zrange_with_scores("{z}", 0, -1).await.unwrap();
    assert_eq!(
        ws,
        [("a".into(), 3.0), ("c".into(), 3.5), ("b".into(), 5.0)]
    );
    let by: Vec<String> = c.zrange_by_score("{z}", "3.2", "10", None).await.unwrap();
    assert_eq!(by, ["c", "b"]);
    assert_eq!(c.zrank("{z}", "b").await.unwrap(), Some(2));
    assert_eq!(c.zrevrank("{z}", "b").await.unwrap(), Some(0));
    assert_eq!(c.zrank("{z}", "q").await.unwrap(), None);
    c.zadd("{z}2", &[(1.0, "c"), (1.0, "x")]).await.unwrap();
    assert_eq!(c.zunionstore("{z}u", &["{z}", "{z}2"]).await.unwrap(), 4);
    assert_eq!(c.zscore("{z}u", "c").await.unwrap(), Some(4.5));
    assert_eq!(c.zinterstore("{z}i", &["{z}", "{z}2"]).await.unwrap(), 1);
    let min: Vec<(String, f64)> = c.zpopmin("{z}u", Some(1)).await.unwrap();
    assert_eq!(min, [("x".into(), 1.0)]);
    let max: Vec<(String, f64)> = c.zpopmax("{z}u", None).await.unwrap();
    assert_eq!(max, [("b".into(), 5.0)]);
    assert_eq!(c.zremrange_by_score("{z}u", "-inf", "3").await.unwrap(), 1);
    assert_eq!(c.zremrange_by_rank("{z}u", 0, 0).await.unwrap(), 1);
    assert_eq!(c.zrem("{z}", &["a", "q"]).await.unwrap(), 1);
    let b: Option<(String, String, f64)> = c.bzpopmin(&["{z}none", "{z}"], secs(1)).await.unwrap();
    assert_eq!(b, Some(("{z}".into(), "c".into(), 3.5)));
    let b: Option<(String, String, f64)> = c.bzpopmin(&["none"], ms(50)).await.unwrap();
    assert_eq!(b, None);
    c.zadd("{z}", &[(1.0, "lo"), (9.0, "hi")]).await.unwrap();
    let b: Option<(String, String, f64)> = c.bzpopmax(&["{z}"], secs(1)).await.unwrap();
    assert_eq!(b, Some(("{z}".into(), "hi".into(), 9.0)));
}

async fn streams_body(c: &Client, p: Protocol) {
    let id1 = c
        .xadd("st", None, "*", &[("f", "1"), ("g", "x")])
        .await
        .unwrap();
    let id2 = c.xadd("st", None, "*", &[("f", "2")]).await.unwrap();
    assert!(id1 < id2 || id1.len() < id2.len(), "{id1} {id2}");
    c.xadd("st", Some(Trim::MaxLen(10)), "*", &[("f", "3")])
        .await
        .unwrap();
    assert_eq!(c.xlen("st").await.unwrap(), 3, "{p:?}");
    let all = c.xrange("st", "-", "+", None).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].id, id1);
    assert_eq!(all[0].get("g").map(|b| &b[..]), Some(&b"x"[..]));
    assert_eq!(all[0].fields.len(), 2);
    let rev = c.xrevrange("st", "+", "-", Some(1)).await.unwrap();
    assert_eq!(rev[0].get("f").map(|b| &b[..]), Some(&b"3"[..]));

    let read = c
        .xread(&["st"], &[id1.as_str()], Some(10), None)
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].key, "st");
    assert_eq!(read[0].entries.len(), 2);
    let empty = c.xread(&["st"], &["$"], None, Some(ms(50))).await.unwrap();
    assert!(empty.is_empty(), "a block timeout reads nothing");

    c.xgroup_create("st", "g", "0", false).await.unwrap();
    let e = c.xgroup_create("st", "g", "0", false).await.unwrap_err();
    assert_eq!(e.server_code(), Some("BUSYGROUP"));
    c.xgroup_create("new", "g", "$", true).await.unwrap();
    let got = c
        .xreadgroup("g", "alice", &["st"], &[">"], Some(2), None, false)
        .await
        .unwrap();
    assert_eq!(got[0].entries.len(), 2);
    let pending = c.xpending("st", "g").await.unwrap();
    assert_eq!(pending.count, 2);
    assert_eq!(pending.first_id.as_deref(), Some(id1.as_str()));
    assert_eq!(pending.consumers, [("alice".to_string(), 2)]);
    assert_eq!(
        c.xack("st", "g", &[id1.as_str(), id2.as_str()])
            .await
            .unwrap(),
        2
    );
    assert_eq!(c.xpending("st", "g").await.unwrap().count, 0);
    let nothing = c
        .xreadgroup("g", "bob", &["new"], &[">"], None, Some(ms(30)), true)
        .await
        .unwrap();
    assert!(nothing.iter().all(|r| r.entries.is_empty()));
    assert_eq!(c.xdel("st", &[id2.as_str()]).await.unwrap(), 1);
    assert_eq!(c.xtrim("st", Trim::MaxLen(1)).await.unwrap(), 1);
    assert_eq!(c.xlen("st").await.unwrap(), 1);
    // Entries pending for longer than the idle time move to another consumer.
    let id4 = c.xadd("st", None, "*", &[("f", "4")]).await.unwrap();
    let _ = c
        .xreadgroup("g", "alice", &["st"], &[">"], None, None, false)
        .await
        .unwrap();
    let (_, claimed, _) = c
        .xautoclaim("st", "g", "bob", Duration::ZERO, "0", None)
        .await
        .unwrap();
    assert!(claimed.iter().any(|e| e.id == id4), "{claimed:?}");
    assert!(c.xgroup_destroy("st", "g").await.unwrap());
}

async fn scripting_body(c: &Client, p: Protocol) {
    let n: i64 = c
        .eval(
            "return redis.call('INCRBY', KEYS[1], ARGV[1])",
            &["ctr"],
            &[5],
        )
        .await
        .unwrap();
    assert_eq!(n, 5, "{p:?}");
    let script = Script::new("return {KEYS[1], ARGV[1], redis.call('GET', KEYS[1])}");
    // The script cache is empty after SCRIPT FLUSH (on every primary): invoke runs it with
    // EVAL on NOSCRIPT, which loads it where its key lives.
    c.script_flush().await.unwrap();
    let r: (String, String, i64) = script.invoke(c, &["ctr"], &["x"]).await.unwrap();
    assert_eq!(r, ("ctr".into(), "x".into(), 5));
    let again: (String, String, i64) = script.invoke(c, &["ctr"], &["y"]).await.unwrap();
    assert_eq!(again.1, "y");
    let sha = c.script_load("return 1").await.unwrap();
    assert_eq!(sha.len(), 40);
    // Loaded on every primary: any node knows it.
    assert_eq!(c.script_exists(&[sha.as_str()]).await.unwrap(), [true]);
    let one: i64 = c
        .evalsha(&sha, &[] as &[&str], &[] as &[&str])
        .await
        .unwrap();
    assert_eq!(one, 1);
    let e = c
        .eval::<()>(
            "return redis.error_reply('BOOM bad')",
            &[] as &[&str],
            &[] as &[&str],
        )
        .await
        .unwrap_err();
    assert_eq!(e.server_code(), Some("BOOM"), "{e}");
}

async fn pipelines_body(c: &Client, p: Protocol) {
    let mut pipe = c.pipeline();
    for i in 0..100 {
        pipe.add(cmds::set(format!("p{i}"), i));
    }
    pipe.add(cmds::get("p42"));
    assert_eq!(pipe.len(), 101);
    let all: Vec<Frame> = pipe.query().await.unwrap();
    assert_eq!(all.len(), 101, "{p:?}");

    // One failing command does not fail the others when asked for each result.
    let mut pipe = c.pipeline();
    pipe.add(cmds::incr("p1"))
        .add(cmds::hget("p1", "x"))
        .add(cmds::get("p1"));
    let each = pipe.query_each().await.unwrap().expect("not a transaction");
    assert!(matches!(each[0], Ok(Frame::Integer(2))));
    assert_eq!(
        each[1].as_ref().unwrap_err().server_code(),
        Some("WRONGTYPE")
    );
    assert!(each[2].is_ok());
    // query() on the same fails with the first error.
    let mut pipe = c.pipeline();
    pipe.add(cmds::incr("p1")).add(cmds::hget("p1", "x"));
    let e = pipe.query::<(i64, ())>().await.unwrap_err();
    assert_eq!(e.server_code(), Some("WRONGTYPE"), "{e}");
    // The first command still ran (INCR 2 -> 3): a pipeline is not a transaction.
    assert_eq!(c.get::<i64>("p1").await.unwrap(), 3);

    let mut tx = c.transaction();
    tx.add(cmds::incr("t"))
        .add(cmds::incr_by("t", 10))
        .add(cmds::get("t"))
        .add(cmds::set("{t}other", 1));
    let r: Option<(i64, i64, String, ())> = tx.query().await.unwrap();
    assert_eq!(r, Some((1, 11, "11".into(), ())));

    // A command the server rejects when queued aborts the whole transaction.
    let mut tx = c.transaction();
    tx.add(cmds::incr("t")).add(cmd("NOSUCHCOMMAND"));
    let e = tx.query::<Option<Vec<Frame>>>().await.unwrap_err();
    assert!(
        e.to_string().contains("EXECABORT") || e.to_string().contains("unknown"),
        "{e}"
    );
    assert_eq!(c.get::<i64>("t").await.unwrap(), 11, "nothing ran");

    // WATCH on a dedicated connection: a change by someone else makes EXEC return null.
    let d = c.dedicated_for("t").await.unwrap();
    let _: () = d.query(cmd("WATCH").arg("t")).await.unwrap();
    c.incr("t").await.unwrap();
    let mut tx = d.transaction();
    tx.add(cmds::set("t", 0));
    let r: Option<Vec<Frame>> = tx.query().await.unwrap();
    assert_eq!(r, None, "the watched key changed");
    assert_eq!(c.get::<i64>("t").await.unwrap(), 12);
    let _: () = d.query(cmd("WATCH").arg("t")).await.unwrap();
    let mut tx = d.transaction();
    tx.add(cmds::set("t", 0));
    let r: Option<Vec<Frame>> = tx.query().await.unwrap();
    assert_eq!(
        r.map(|replies| replies.len()),
        Some(1),
        "unwatched: EXEC ran the SET"
    );
    assert_eq!(c.get::<i64>("t").await.unwrap(), 0);
}

async fn scans_body(c: &Client, p: Protocol) {
    let mut pipe = c.pipeline();
    for i in 0..500 {
        pipe.add(cmds::set(format!("scan:{i}"), i));
    }
    pipe.add(cmds::set("other", 1));
    let _: Vec<Frame> = pipe.query().await.unwrap();
    let keys: HashSet<Bytes> = c
        .scan(Some("scan:*"), Some(50))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(keys.len(), 500, "{p:?}");
    assert!(!keys.contains(&Bytes::from_static(b"other")));

    let pairs: Vec<(String, usize)> = (0..300).map(|i| (format!("f{i}"), i)).collect();
    c.hset("h", &pairs).await.unwrap();
    let fields: HashMap<Bytes, Bytes> = c.hscan("h", None, Some(40)).try_collect().await.unwrap();
    assert_eq!(fields.len(), 300);
    assert_eq!(&fields[&Bytes::from_static(b"f7")][..], b"7");

    let members: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    c.sadd("s", &members).await.unwrap();
    let got: HashSet<Bytes> = c.sscan("s", Some("m1*"), None).try_collect().await.unwrap();
    assert_eq!(got.len(), 1 + 10 + 100);

    let scored: Vec<(f64, String)> = (0..300).map(|i| (f64::from(i), format!("z{i}"))).collect();
    c.zadd("z", &scored).await.unwrap();
    let zs: Vec<(Bytes, f64)> = c.zscan("z", None, Some(64)).try_collect().await.unwrap();
    assert_eq!(zs.len(), 300);
    assert!(zs.iter().any(|(m, s)| &m[..] == b"z299" && *s == 299.0));

    // An error ends the stream with that error.
    let mut s = Box::pin(c.hscan("scan:1", None, None));
    let first = s.next().await.expect("one item");
    assert_eq!(first.unwrap_err().server_code(), Some("WRONGTYPE"));
    assert!(s.next().await.is_none());
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct User {
    name: String,
    age: u32,
}

async fn conversions_body(c: &Client, p: Protocol) {
    c.set("s", "abc").await.unwrap();
    let e = c.get::<i64>("s").await.unwrap_err();
    assert!(matches!(e, Error::Type { .. }), "{e}");
    assert!(e.to_string().contains("i64"), "{e} ({p:?})");
    let e = c.get::<String>("missing").await.unwrap_err();
    assert!(matches!(e, Error::Type { .. }), "null into String: {e}");
    let e = c.get::<Vec<i64>>("s").await.unwrap_err();
    assert!(
        matches!(e, Error::Type { .. }),
        "a bulk string into Vec<i64>: {e}"
    );

    let user = User {
        name: "ada".into(),
        age: 36,
    };
    c.set("u", Json(&user)).await.unwrap();
    let Json(back): Json<User> = c.get("u").await.unwrap();
    assert_eq!(back, user);
    let e = c.get::<Json<User>>("s").await.unwrap_err();
    assert!(
        e.to_string().contains("User") || e.to_string().contains("JSON"),
        "{e}"
    );
    // A value JSON cannot hold (map keys that are not strings) is refused before anything is
    // sent, with what and why; nothing is written.
    let unserializable: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let e = c.set("bad-json", Json(&unserializable)).await.unwrap_err();
    assert!(matches!(e, Error::Argument { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("SET") && text.contains("argument 2") && text.contains("JSON"),
        "{text}"
    );
    assert_eq!(c.exists(&["bad-json"]).await.unwrap(), 0);

    // The escape hatch: any command, any reply shape.
    let f: Frame = c
        .query(cmd("OBJECT").arg("ENCODING").arg("s"))
        .await
        .unwrap();
    assert!(matches!(f, Frame::Bulk(_) | Frame::Simple(_)), "{f:?}");
    let echoed: String = c.echo("hi").await.unwrap();
    assert_eq!(echoed, "hi");
    c.ping().await.unwrap();
    let info = c.info(Some("server")).await.unwrap();
    assert!(info.contains("redis_version"));
    let hello: HashMap<String, Frame> = c.query(cmd("HELLO")).await.unwrap();
    let proto = match p {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    };
    assert_eq!(hello["proto"], Frame::Integer(proto));
    // Doubles are native in RESP3, strings in RESP2: both convert.
    c.zadd("z", &[(1.5, "m")]).await.unwrap();
    let s: f64 = c.query(cmds::zscore("z", "m")).await.unwrap();
    assert_eq!(s, 1.5);
    let big: bool = c.query(cmd("EXISTS").arg("z")).await.unwrap();
    assert!(big);
}

async fn pubsub_body(c: &Client, p: Protocol) {
    let mut sub = c.subscriber();
    sub.subscribe(&["news", "sport"]).await.unwrap();
    sub.psubscribe(&["alerts.*"]).await.unwrap();
    assert_eq!(c.publish("news", "n1").await.unwrap(), 1, "{p:?}");
    c.publish("alerts.fire", "a1").await.unwrap();
    c.publish("ignored", "x").await.unwrap();
    c.publish("sport", "s1").await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(
        (&m.channel[..], &m.payload[..], m.pattern),
        (&b"news"[..], &b"n1"[..], None)
    );
    let m = next(&mut sub).await;
    assert_eq!(&m.channel[..], b"alerts.fire");
    assert_eq!(m.pattern.as_deref(), Some(&b"alerts.*"[..]));
    let m = next(&mut sub).await;
    assert_eq!(&m.payload[..], b"s1");
    sub.unsubscribe(&["news"]).await.unwrap();
    sub.punsubscribe(&["alerts.*"]).await.unwrap();
    assert_eq!(c.publish("news", "gone").await.unwrap(), 0);
    c.publish("sport", "s2").await.unwrap();
    assert_eq!(&next(&mut sub).await.payload[..], b"s2");
    // The shared connection still works while subscriptions are open: a burst of commands,
    // each answered with its own reply.
    let _: i64 = c.query(cmd("DEL").arg("ps:n")).await.unwrap();
    let replies = futures::future::join_all((0..50).map(|_| c.incr("ps:n"))).await;
    let mut got: Vec<i64> = replies.into_iter().map(Result::unwrap).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=50).collect::<Vec<_>>());
    c.set("k", "v").await.unwrap();
    assert_eq!(c.get::<String>("k").await.unwrap(), "v");
}

/// Waits until a client is blocked on the server that holds `key` (`INFO clients`, read
/// through a script so that in a cluster it runs on that key's node). Bounded: a client that
/// never blocks fails the test instead of hanging it.
async fn wait_blocked(c: &Client, key: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = c
            .query(
                cmd("EVAL")
                    .arg("return redis.call('INFO', 'clients')")
                    .arg(1)
                    .arg(key),
            )
            .await
            .unwrap();
        let blocked = info
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("INFO clients has blocked_clients");
        if blocked > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no client blocked on {key} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn next(sub: &mut redis_client::Subscriber) -> redis_client::Message {
    tokio::time::timeout(Duration::from_secs(5), sub.next_message())
        .await
        .expect("a message within 5 s")
        .expect("subscriber open")
}

async fn blocking_body(c: &Client, p: Protocol) {
    // A blocking pop waits on its own connection: the shared pool keeps serving meanwhile.
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.blpop::<String>(&["q"], secs(5)).await })
    };
    wait_blocked(c, "q").await;
    for _ in 0..100 {
        c.incr("busy").await.unwrap();
    }
    c.rpush("q", &["job"]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("blpop returns")
        .unwrap()
        .unwrap();
    assert_eq!(got, Some(("q".into(), "job".into())), "{p:?}");
    // A zero timeout waits as long as needed, past the command timeout.
    let short = Client::builder()
        .config(c.config().clone())
        .protocol(p)
        .command_timeout(Duration::from_millis(200))
        .metrics(&jupiter_core::Metrics::new())
        .connect()
        .await
        .unwrap();
    let waiter = tokio::spawn(async move { short.blpop::<String>(&["q2"], Duration::ZERO).await });
    wait_blocked(c, "q2").await;
    // Time passes beyond the command timeout (a lower bound: a slow machine only adds to it)
    // and the pop is still waiting, not failed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiter.is_finished(),
        "a zero-timeout BLPOP ended by itself"
    );
    c.rpush("q2", &["late"]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("blpop returns")
        .unwrap()
        .unwrap();
    assert_eq!(got.map(|(_, v)| v).as_deref(), Some("late"));
    // Subscribing through a plain command is refused with a pointer to the subscriber.
    let e = c.query::<()>(cmd("SUBSCRIBE").arg("x")).await.unwrap_err();
    assert!(e.to_string().contains("subscriber"), "{e}");
}
