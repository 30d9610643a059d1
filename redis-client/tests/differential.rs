//! Differential test: the same random command sequence sent through our client and through
//! fred, each against its own fresh redis-server (or, in cluster mode, one after the other on
//! the same fresh 6-node cluster), must give identical replies.
//!
//! Commands are drawn over a small key space so types collide (WRONGTYPE errors, missing keys,
//! overwritten values) and every reply shape shows up: simple and bulk strings, integers,
//! nulls, nested arrays, errors, and in RESP3 maps, sets and doubles. Only deterministic
//! commands are drawn (no SPOP, SRANDMEMBER, RANDOMKEY, TTL readings), so two servers given the
//! same sequence must answer the same.

use bytes::Bytes;
use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Resp3Frame, RespVersion, Value};
use redis_client::resp::Frame;
use redis_client::{Client, Error, Protocol, cmd};
use testkit::{RedisCluster, RedisServer};

const COMMANDS: usize = 10_000;
const SEED: u64 = 0x5eed_2026;

/// A reply in a shape both clients' frames map onto.
#[derive(Clone, Debug, PartialEq)]
enum Norm {
    Simple(Bytes),
    Bulk(Bytes),
    Int(i64),
    Double(String),
    Bool(bool),
    Nil,
    Error(String),
    Array(Vec<Norm>),
    /// Maps and sets, sorted: fred keeps them in hash containers, so order is not comparable.
    Unordered(Vec<Norm>),
}

fn sort_key(n: &Norm) -> String {
    format!("{n:?}")
}

fn unordered(mut v: Vec<Norm>) -> Norm {
    v.sort_by_key(sort_key);
    Norm::Unordered(v)
}

fn ours(reply: Result<Frame, Error>) -> Norm {
    match reply {
        Ok(f) => ours_frame(f),
        Err(Error::Server(msg)) => Norm::Error(String::from_utf8_lossy(&msg).into_owned()),
        Err(e) => panic!("our client failed: {e}"),
    }
}

fn ours_frame(f: Frame) -> Norm {
    match f {
        Frame::Simple(b) => Norm::Simple(b),
        Frame::Bulk(b) => Norm::Bulk(b),
        Frame::Verbatim { data, .. } => Norm::Bulk(data),
        Frame::BigNumber(b) => Norm::Bulk(b),
        Frame::Integer(i) => Norm::Int(i),
        Frame::Double(d) => Norm::Double(d.to_string()),
        Frame::Boolean(b) => Norm::Bool(b),
        Frame::Null => Norm::Nil,
        Frame::Error(e) => Norm::Error(String::from_utf8_lossy(&e).into_owned()),
        Frame::Array(v) | Frame::Push(v) => Norm::Array(v.into_iter().map(ours_frame).collect()),
        Frame::Set(v) => unordered(v.into_iter().map(ours_frame).collect()),
        Frame::Map(kv) => unordered(
            kv.into_iter()
                .map(|(k, v)| Norm::Array(vec![ours_frame(k), ours_frame(v)]))
                .collect(),
        ),
    }
}

fn fred_reply(reply: Result<Resp3Frame, fred::error::Error>) -> Norm {
    match reply {
        Ok(f) => fred_frame(f),
        Err(e) => Norm::Error(e.details().to_owned()),
    }
}

fn fred_frame(f: Resp3Frame) -> Norm {
    match f {
        Resp3Frame::SimpleString { data, .. } => Norm::Simple(data),
        Resp3Frame::BlobString { data, .. }
        | Resp3Frame::VerbatimString { data, .. }
        | Resp3Frame::BigNumber { data, .. } => Norm::Bulk(data),
        Resp3Frame::Number { data, .. } => Norm::Int(data),
        Resp3Frame::Double { data, .. } => Norm::Double(data.to_string()),
        Resp3Frame::Boolean { data, .. } => Norm::Bool(data),
        Resp3Frame::Null => Norm::Nil,
        Resp3Frame::SimpleError { data, .. } => Norm::Error(data.to_string()),
        Resp3Frame::BlobError { data, .. } => {
            Norm::Error(String::from_utf8_lossy(&data).into_owned())
        }
        Resp3Frame::Array { data, .. } | Resp3Frame::Push { data, .. } => {
            Norm::Array(data.into_iter().map(fred_frame).collect())
        }
        Resp3Frame::Set { data, .. } => unordered(data.into_iter().map(fred_frame).collect()),
        Resp3Frame::Map { data, .. } => unordered(
            data.into_iter()
                .map(|(k, v)| Norm::Array(vec![fred_frame(k), fred_frame(v)]))
                .collect(),
        ),
        other => panic!("unexpected fred frame {other:?}"),
    }
}

/// Random commands over 6 keys of mixed types per key group. A command's keys share its
/// group's hash tag (in cluster mode a group is one slot; groups are on different nodes).
struct Gen {
    rng: fastrand::Rng,
    stream_ms: u64,
    groups: Vec<String>,
    group: usize,
    cluster: bool,
}

impl Gen {
    fn new(groups: Vec<String>, cluster: bool) -> Gen {
        Gen {
            rng: fastrand::Rng::with_seed(SEED),
            stream_ms: 0,
            groups,
            group: 0,
            cluster,
        }
    }

    fn key(&mut self) -> String {
        format!("{}k{}", self.groups[self.group], self.rng.u8(0..6))
    }

    fn value(&mut self) -> Vec<u8> {
        match self.rng.u8(0..10) {
            0 => Vec::new(),
            1 => (0..self.rng.usize(1..2000))
                .map(|_| self.rng.u8(..))
                .collect(),
            2 => b"a\r\nb\0c".to_vec(),
            3 | 4 => self.rng.i64(-1000..1000).to_string().into_bytes(),
            5 => format!("{:.3}", self.rng.f64() * 100.0).into_bytes(),
            _ => format!("v{}", self.rng.u8(0..8)).into_bytes(),
        }
    }

    fn member(&mut self) -> String {
        format!("m{}", self.rng.u8(0..8))
    }

    fn int(&mut self) -> String {
        self.rng.i64(-5..10).to_string()
    }

    /// One command as its words.
    fn command(&mut self) -> Vec<Vec<u8>> {
        if self.groups.len() > 1 {
            self.group = self.rng.usize(0..self.groups.len());
        }
        let k = self.key();
        let nokey = format!("{}nokey", self.groups[self.group]);
        let w = |s: &str| s.as_bytes().to_vec();
        let mut c: Vec<Vec<u8>> = match self.rng.u8(0..58) {
            0 => vec![w("SET"), w(&k), self.value()],
            1 => vec![w("GET"), w(&k)],
            2 => vec![w("APPEND"), w(&k), self.value()],
            3 => vec![w("INCR"), w(&k)],
            4 => vec![w("INCRBY"), w(&k), w(&self.int())],
            5 => vec![w("DEL"), w(&k), w(&self.key())],
            6 => vec![w("EXISTS"), w(&k), w(&self.key())],
            7 => vec![w("MSET"), w(&k), self.value(), w(&self.key()), self.value()],
            8 => vec![w("MGET"), w(&k), w(&self.key()), w(&nokey)],
            9 => vec![w("STRLEN"), w(&k)],
            10 => vec![w("GETRANGE"), w(&k), w(&self.int()), w(&self.int())],
            11 => vec![
                w("SETRANGE"),
                w(&k),
                w(&self.rng.u8(0..20).to_string()),
                self.value(),
            ],
            12 => vec![w("LPUSH"), w(&k), self.value(), self.value()],
            13 => vec![w("RPUSH"), w(&k), self.value()],
            14 => vec![w("LPOP"), w(&k)],
            15 => vec![w("RPOP"), w(&k), w(&self.rng.u8(1..4).to_string())],
            16 => vec![w("LRANGE"), w(&k), w(&self.int()), w(&self.int())],
            17 => vec![w("LLEN"), w(&k)],
            18 => vec![w("LINDEX"), w(&k), w(&self.int())],
            19 => vec![w("LREM"), w(&k), w(&self.int()), self.value()],
            20 => vec![w("HSET"), w(&k), w(&self.member()), self.value()],
            21 => vec![w("HGET"), w(&k), w(&self.member())],
            22 => vec![w("HDEL"), w(&k), w(&self.member())],
            23 => vec![w("HGETALL"), w(&k)],
            24 => vec![w("HINCRBY"), w(&k), w(&self.member()), w(&self.int())],
            25 => vec![w("HKEYS"), w(&k)],
            26 => vec![w("HLEN"), w(&k)],
            27 => vec![w("HMGET"), w(&k), w(&self.member()), w(&self.member())],
            28 => vec![w("SADD"), w(&k), w(&self.member()), w(&self.member())],
            29 => vec![w("SREM"), w(&k), w(&self.member())],
            30 => vec![w("SMEMBERS"), w(&k)],
            31 => vec![w("SISMEMBER"), w(&k), w(&self.member())],
            32 => vec![w("SCARD"), w(&k)],
            33 => vec![w("SINTER"), w(&k), w(&self.key())],
            34 => vec![w("ZADD"), w(&k), w(&self.int()), w(&self.member())],
            35 => vec![w("ZREM"), w(&k), w(&self.member())],
            36 => vec![w("ZRANGE"), w(&k), w("0"), w("-1"), w("WITHSCORES")],
            37 => vec![w("ZSCORE"), w(&k), w(&self.member())],
            38 => vec![w("ZINCRBY"), w(&k), w("1.5"), w(&self.member())],
            39 => vec![w("ZRANK"), w(&k), w(&self.member())],
            40 => vec![w("ZCARD"), w(&k)],
            41 => vec![w("TYPE"), w(&k)],
            42 => vec![w("RENAME"), w(&k), w(&self.key())],
            43 => vec![w("EXPIRE"), w(&k), w("100000")],
            44 => vec![w("PERSIST"), w(&k)],
            45 => vec![w("ECHO"), self.value()],
            46 => vec![w("GETDEL"), w(&k)],
            47 => vec![w("SETNX"), w(&k), self.value()],
            48 => vec![w("LSET"), w(&k), w(&self.int()), self.value()],
            49 => vec![w("ZCOUNT"), w(&k), w("-inf"), w(&self.int())],
            // A cluster's DBSIZE is ours summed over primaries, fred's one node's.
            50 if self.cluster => vec![w("ECHO"), self.value()],
            50 => vec![w("DBSIZE")],
            51 => vec![w("INCRBYFLOAT"), w(&k), w("0.25")],
            52 => vec![w("ZRANGEBYSCORE"), w(&k), w("(0"), w("+inf")],
            53 => {
                self.stream_ms += 1;
                let id = format!("{}-{}", self.stream_ms, self.rng.u8(0..3));
                vec![w("XADD"), w(&k), w(&id), w("f"), self.value()]
            }
            54 => vec![w("XRANGE"), w(&k), w("-"), w("+"), w("COUNT"), w("3")],
            55 => vec![w("XLEN"), w(&k)],
            56 => vec![w("HINCRBYFLOAT"), w(&k), w(&self.member()), w("2.5")],
            _ => vec![w("NOSUCHCMD"), w(&k)],
        };
        // Now and then a wrong argument count.
        if self.rng.u16(0..200) == 0 {
            c.truncate(1);
        }
        c
    }
}

/// Our reply to every command of the sequence.
async fn ours_replies(c: &Client, g: &mut Gen) -> Vec<(Vec<Vec<u8>>, Norm)> {
    let mut out = Vec::with_capacity(COMMANDS);
    for _ in 0..COMMANDS {
        let words = g.command();
        let name = String::from_utf8(words[0].clone()).unwrap();
        let mut c2 = cmd(&name);
        for arg in &words[1..] {
            c2 = c2.arg(arg.as_slice());
        }
        let reply = ours(c.query::<Frame>(c2).await);
        out.push((words, reply));
    }
    out
}

async fn fred_replies(c: &fred::clients::Client, g: &mut Gen) -> Vec<Norm> {
    let mut out = Vec::with_capacity(COMMANDS);
    for _ in 0..COMMANDS {
        let words = g.command();
        let name = String::from_utf8(words[0].clone()).unwrap();
        let args: Vec<Value> = words[1..]
            .iter()
            .map(|w| Value::Bytes(Bytes::copy_from_slice(w)))
            .collect();
        let custom = CustomCommand::new(name, ClusterHash::FirstKey, false);
        out.push(fred_reply(c.custom_raw(custom, args).await));
    }
    out
}

fn compare(protocol: Protocol, ours: Vec<(Vec<Vec<u8>>, Norm)>, theirs: Vec<Norm>) {
    let mut shapes = std::collections::BTreeMap::<&'static str, usize>::new();
    for (i, ((words, mut mine), mut theirs)) in ours.into_iter().zip(theirs).enumerate() {
        let name = String::from_utf8_lossy(&words[0]).into_owned();
        if matches!(name.as_str(), "SMEMBERS" | "SINTER" | "HKEYS") {
            // Set order is unspecified: a hashtable-encoded set iterates in seeded hash order.
            for n in [&mut mine, &mut theirs] {
                if let Norm::Array(v) = n {
                    *n = unordered(std::mem::take(v));
                }
            }
        }
        if name == "HGETALL" {
            // So is a hashtable-encoded hash's (RESP2 sends it as a flat array).
            for n in [&mut mine, &mut theirs] {
                if let Norm::Array(v) = n {
                    let pairs = std::mem::take(v)
                        .chunks(2)
                        .map(|kv| Norm::Array(kv.to_vec()))
                        .collect();
                    *n = unordered(pairs);
                }
            }
        }
        assert_eq!(
            mine,
            theirs,
            "{protocol:?}: command #{i} {:?} differs",
            words
                .iter()
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
        );
        *shapes
            .entry(match &mine {
                Norm::Simple(_) => "simple",
                Norm::Bulk(_) => "bulk",
                Norm::Int(_) => "int",
                Norm::Double(_) => "double",
                Norm::Bool(_) => "bool",
                Norm::Nil => "nil",
                Norm::Error(_) => "error",
                Norm::Array(_) => "array",
                Norm::Unordered(_) => "map/set",
            })
            .or_default() += 1;
    }
    // The sequence exercised every common reply shape (else the comparison proves little).
    for shape in ["simple", "bulk", "int", "nil", "error", "array"] {
        assert!(
            shapes.get(shape).copied().unwrap_or(0) > 50,
            "{protocol:?}: too few {shape} replies: {shapes:?}"
        );
    }
    if protocol == Protocol::Resp3 {
        assert!(
            shapes.get("map/set").copied().unwrap_or(0) > 50,
            "{shapes:?}"
        );
        assert!(
            shapes.get("double").copied().unwrap_or(0) > 30,
            "{shapes:?}"
        );
    }
}

fn fred_version(protocol: Protocol) -> RespVersion {
    match protocol {
        Protocol::Resp2 => RespVersion::RESP2,
        Protocol::Resp3 => RespVersion::RESP3,
    }
}

async fn run(protocol: Protocol) {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let ours_client = Client::builder()
        .url(&a.url())
        .protocol(protocol)
        .metrics(&jupiter_core::Metrics::new())
        .connect()
        .await
        .unwrap();
    let mut config = fred::types::config::Config::from_url(&b.url()).unwrap();
    config.version = fred_version(protocol);
    let fred_client = fred::clients::Client::new(config, None, None, None);
    fred_client.init().await.expect("fred connects");

    let mine = ours_replies(&ours_client, &mut Gen::new(vec![String::new()], false)).await;
    let theirs = fred_replies(&fred_client, &mut Gen::new(vec![String::new()], false)).await;
    compare(protocol, mine, theirs);
    // Both servers hold the same data at the end.
    let ours_dbsize = ours_client.dbsize().await.unwrap();
    let fred_dbsize: i64 = fred_client
        .custom(
            CustomCommand::new_static("DBSIZE", ClusterHash::Random, false),
            Vec::<Value>::new(),
        )
        .await
        .unwrap();
    assert_eq!(ours_dbsize as i64, fred_dbsize);
    fred_client.quit().await.unwrap();
}

/// Three key groups, one hash tag each, whose slots are on the three primaries.
fn cluster_groups() -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    let mut ranges = vec![0..5461u16, 5461..10923, 10923..16384];
    for i in 0u32.. {
        let tag = format!("g{i}");
        let slot = redis_client::key_slot(tag.as_bytes());
        if let Some(r) = ranges.iter().position(|r| r.contains(&slot)) {
            ranges.remove(r);
            groups.push(format!("{{{tag}}}"));
        }
        if ranges.is_empty() {
            return groups;
        }
    }
    unreachable!()
}

async fn run_cluster(protocol: Protocol) {
    let cluster = RedisCluster::start();
    let seeds: Vec<String> = cluster.seed_urls();
    let ours_client = Client::builder()
        .config(redis_client::ClientConfig {
            cluster: true,
            urls: seeds,
            protocol,
            ..Default::default()
        })
        .metrics(&jupiter_core::Metrics::new())
        .connect()
        .await
        .unwrap();
    let mine = ours_replies(&ours_client, &mut Gen::new(cluster_groups(), true)).await;
    let ours_keys = ours_client.dbsize().await.unwrap();
    assert!(ours_keys > 0);
    // The same sequence through fred on the same cluster, emptied again.
    ours_client.flushall().await.unwrap();
    let first = cluster.seed_addrs()[0];
    let mut config =
        fred::types::config::Config::from_url_clustered(&format!("redis://{first}")).unwrap();
    config.version = fred_version(protocol);
    let fred_client = fred::clients::Client::new(config, None, None, None);
    fred_client
        .init()
        .await
        .expect("fred connects to the cluster");
    let theirs = fred_replies(&fred_client, &mut Gen::new(cluster_groups(), true)).await;
    compare(protocol, mine, theirs);
    // Both runs left the same number of keys (counted by our client over every primary).
    assert_eq!(ours_client.dbsize().await.unwrap(), ours_keys);
    fred_client.quit().await.unwrap();
}

#[tokio::test]
async fn ten_thousand_random_commands_match_fred_resp2() {
    run(Protocol::Resp2).await;
}

#[tokio::test]
async fn ten_thousand_random_commands_match_fred_resp3() {
    run(Protocol::Resp3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_commands_match_fred_in_cluster_mode() {
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        run_cluster(protocol).await;
    }
}
