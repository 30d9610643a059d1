//! Command constructors: each returns a [`Cmd`] for [`Client::query`](crate::Client::query),
//! a [`Pipeline`](crate::Pipeline) or a transaction. The typed methods on
//! [`Client`](crate::Client) are these, sent.

use std::sync::OnceLock;

use crate::cmd::spec::{self, Spec};
use crate::cmd::{Cmd, ToArg};

/// A known command: its spec and encoded name resolved once per call site.
macro_rules! known {
    ($name:literal, $cap:expr) => {{
        static KNOWN: OnceLock<(&'static Spec, Vec<u8>, u32)> = OnceLock::new();
        let (spec, name, words) = KNOWN.get_or_init(|| {
            let spec = spec::by_name($name).expect(concat!($name, " is in the command table"));
            let (name, words) = Cmd::encoded_name(spec);
            (spec, name, words)
        });
        Cmd::known(spec, name, *words, $cap)
    }};
}

/// Expiry of a key set with a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expiry {
    /// `EX seconds`
    Seconds(u64),
    /// `PX milliseconds`
    Millis(u64),
    /// `EXAT unix-seconds`
    AtSeconds(u64),
    /// `PXAT unix-milliseconds`
    AtMillis(u64),
    /// `KEEPTTL` (SET) or `PERSIST` (GETEX).
    Keep,
}

impl Expiry {
    fn push(self, c: &mut Cmd, keep: &'static str) {
        match self {
            Expiry::Seconds(n) => c.push(("EX", n)),
            Expiry::Millis(n) => c.push(("PX", n)),
            Expiry::AtSeconds(n) => c.push(("EXAT", n)),
            Expiry::AtMillis(n) => c.push(("PXAT", n)),
            Expiry::Keep => c.push(keep),
        }
    }
}

/// A condition on whether `SET`/`ZADD` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Only if the key (member) does not exist: `NX`.
    NotExists,
    /// Only if it exists: `XX`.
    Exists,
}

impl Condition {
    fn word(self) -> &'static str {
        match self {
            Condition::NotExists => "NX",
            Condition::Exists => "XX",
        }
    }
}

/// Options of `SET`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SetOptions {
    /// Expiry.
    pub expiry: Option<Expiry>,
    /// Condition.
    pub condition: Option<Condition>,
    /// Return the old value (`GET`).
    pub get: bool,
}

/// An end of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The head.
    Left,
    /// The tail.
    Right,
}

impl Side {
    fn word(self) -> &'static str {
        match self {
            Side::Left => "LEFT",
            Side::Right => "RIGHT",
        }
    }
}

// ---------------------------------------------------------------- server

/// `PING`
pub fn ping() -> Cmd {
    known!("PING", 0)
}

/// `ECHO message`
pub fn echo(message: impl ToArg) -> Cmd {
    known!("ECHO", 32).arg(message)
}

/// `DBSIZE`
pub fn dbsize() -> Cmd {
    known!("DBSIZE", 0)
}

/// `FLUSHDB`
pub fn flushdb() -> Cmd {
    known!("FLUSHDB", 0)
}

/// `INFO [section]`
pub fn info(section: Option<&str>) -> Cmd {
    known!("INFO", 16).arg(section)
}

/// `TIME`
pub fn time() -> Cmd {
    known!("TIME", 0)
}

// ---------------------------------------------------------------- strings

/// `GET key`
pub fn get(key: impl ToArg) -> Cmd {
    known!("GET", 32).arg(key)
}

/// `SET key value`
pub fn set(key: impl ToArg, value: impl ToArg) -> Cmd {
    known!("SET", 96).arg(key).arg(value)
}

/// `SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT|KEEPTTL]`
pub fn set_with(key: impl ToArg, value: impl ToArg, options: SetOptions) -> Cmd {
    let mut c = set(key, value);
    if let Some(cond) = options.condition {
        c.push(cond.word());
    }
    if options.get {
        c.push("GET");
    }
    if let Some(e) = options.expiry {
        e.push(&mut c, "KEEPTTL");
    }
    c
}

/// `SETNX key value`
pub fn setnx(key: impl ToArg, value: impl ToArg) -> Cmd {
    known!("SETNX", 96).arg(key).arg(value)
}

/// `SETEX key seconds value`
pub fn setex(key: impl ToArg, seconds: u64, value: impl ToArg) -> Cmd {
    known!("SETEX", 96).arg(key).arg(seconds).arg(value)
}

/// `PSETEX key milliseconds value`
pub fn psetex(key: impl ToArg, millis: u64, value: impl ToArg) -> Cmd {
    known!("PSETEX", 96).arg(key).arg(millis).arg(value)
}

/// `MGET key [key ...]`
pub fn mget<K: ToArg>(keys: &[K]) -> Cmd {
    known!("MGET", 32 * keys.len()).arg(keys)
}

/// `MSET key value [key value ...]`
pub fn mset<K: ToArg, V: ToArg>(pairs: &[(K, V)]) -> Cmd {
    known!("MSET", 64 * pairs.len()).arg(pairs)
}

/// `MSETNX key value [key value ...]`
pub fn msetnx<K: ToArg, V: ToArg>(pairs: &[(K, V)]) -> Cmd {
    known!("MSETNX", 64 * pairs.len()).arg(pairs)
}

/// `INCR key`
pub fn incr(key: impl ToArg) -> Cmd {
    known!("INCR", 32).arg(key)
}

/// `INCRBY key increment`
pub fn incr_by(key: impl ToArg, by: i64) -> Cmd {
    known!("INCRBY", 40).arg(key).arg(by)
}

/// `INCRBYFLOAT key increment`
pub fn incr_by_float(key: impl ToArg, by: f64) -> Cmd {
    known!("INCRBYFLOAT", 48).arg(key).arg(by)
}

/// `DECR key`
pub fn decr(key: impl ToArg) -> Cmd {
    known!("DECR", 32).arg(key)
}

/// `DECRBY key decrement`
pub fn decr_by(key: impl ToArg, by: i64) -> Cmd {
    known!("DECRBY", 40).arg(key).arg(by)
}

/// `APPEND key value`
pub fn append(key: impl ToArg, value: impl ToArg) -> Cmd {
    known!("APPEND", 64).arg(key).arg(value)
}

/// `STRLEN key`
pub fn strlen(key: impl ToArg) -> Cmd {
    known!("STRLEN", 32).arg(key)
}

/// `GETRANGE key start end`
pub fn getrange(key: impl ToArg, start: i64, end: i64) -> Cmd {
    known!("GETRANGE", 48).arg(key).arg(start).arg(end)
}

/// `SETRANGE key offset value`
pub fn setrange(key: impl ToArg, offset: u64, value: impl ToArg) -> Cmd {
    known!("SETRANGE", 64).arg(key).arg(offset).arg(value)
}

/// `GETDEL key`
pub fn getdel(key: impl ToArg) -> Cmd {
    known!("GETDEL", 32).arg(key)
}

/// `GETEX key [EX|PX|EXAT|PXAT|PERSIST]`
pub fn getex(key: impl ToArg, expiry: Option<Expiry>) -> Cmd {
    let mut c = known!("GETEX", 48).arg(key);
    if let Some(e) = expiry {
        e.push(&mut c, "PERSIST");
    }
    c
}

// ---------------------------------------------------------------- keys

/// `DEL key [key ...]`
pub fn del<K: ToArg>(keys: &[K]) -> Cmd {
    known!("DEL", 32 * keys.len()).arg(keys)
}

/// `UNLINK key [key ...]`
pub fn unlink<K: ToArg>(keys: &[K]) -> Cmd {
    known!("UNLINK", 32 * keys.len()).arg(keys)
}

/// `EXISTS key [key ...]`
pub fn exists<K: ToArg>(keys: &[K]) -> Cmd {
    known!("EXISTS", 32 * keys.len()).arg(keys)
}

/// `TOUCH key [key ...]`
pub fn touch<K: ToArg>(keys: &[K]) -> Cmd {
    known!("TOUCH", 32 * keys.len()).arg(keys)
}

/// `EXPIRE key seconds`
pub fn expire(key: impl ToArg, seconds: i64) -> Cmd {
    known!("EXPIRE", 40).arg(key).arg(seconds)
}

/// `PEXPIRE key milliseconds`
pub fn pexpire(key: impl ToArg, millis: i64) -> Cmd {
    known!("PEXPIRE", 40).arg(key).arg(millis)
}

/// `EXPIREAT key unix-seconds`
pub fn expire_at(key: impl ToArg, at: i64) -> Cmd {
    known!("EXPIREAT", 40).arg(key).arg(at)
}

/// `PEXPIREAT key unix-milliseconds`
pub fn pexpire_at(key: impl ToArg, at: i64) -> Cmd {
    known!("PEXPIREAT", 40).arg(key).arg(at)
}

/// `TTL key`
pub fn ttl(key: impl ToArg) -> Cmd {
    known!("TTL", 32).arg(key)
}

/// `PTTL key`
pub fn pttl(key: impl ToArg) -> Cmd {
    known!("PTTL", 32).arg(key)
}

/// `PERSIST key`
pub fn persist(key: impl ToArg) -> Cmd {
    known!("PERSIST", 32).arg(key)
}

/// `TYPE key`
pub fn key_type(key: impl ToArg) -> Cmd {
    known!("TYPE", 32).arg(key)
}

/// `RENAME key newkey`
pub fn rename(key: impl ToArg, new_key: impl ToArg) -> Cmd {
    known!("RENAME", 64).arg(key).arg(new_key)
}

/// `RENAMENX key newkey`
pub fn renamenx(key: impl ToArg, new_key: impl ToArg) -> Cmd {
    known!("RENAMENX", 64).arg(key).arg(new_key)
}

/// `COPY source destination [REPLACE]`
pub fn copy(source: impl ToArg, destination: impl ToArg, replace: bool) -> Cmd {
    known!("COPY", 64)
        .arg(source)
        .arg(destination)
        .arg(replace.then_some("REPLACE"))
}

/// `KEYS pattern` — scans the whole keyspace; prefer [`Client::scan`](crate::Client::scan).
pub fn keys(pattern: impl ToArg) -> Cmd {
    known!("KEYS", 32).arg(pattern)
}

/// `RANDOMKEY`
pub fn randomkey() -> Cmd {
    known!("RANDOMKEY", 0)
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`
pub fn scan(cursor: u64, pattern: Option<&str>, count: Option<u64>, key_type: Option<&str>) -> Cmd {
    let mut c = known!("SCAN", 64).arg(cursor);
    if let Some(p) = pattern {
        c.push(("MATCH", p));
    }
    if let Some(n) = count {
        c.push(("COUNT", n));
    }
    if let Some(t) = key_type {
        c.push(("TYPE", t));
    }
    c
}

// ---------------------------------------------------------------- hashes

/// `HSET key field value [field value ...]`
pub fn hset<F: ToArg, V: ToArg>(key: impl ToArg, pairs: &[(F, V)]) -> Cmd {
    known!("HSET", 32 + 64 * pairs.len()).arg(key).arg(pairs)
}

/// `HSETNX key field value`
pub fn hsetnx(key: impl ToArg, field: impl ToArg, value: impl ToArg) -> Cmd {
    known!("HSETNX", 96).arg(key).arg(field).arg(value)
}

/// `HGET key field`
pub fn hget(key: impl ToArg, field: impl ToArg) -> Cmd {
    known!("HGET", 64).arg(key).arg(field)
}

/// `HMGET key field [field ...]`
pub fn hmget<F: ToArg>(key: impl ToArg, fields: &[F]) -> Cmd {
    known!("HMGET", 32 + 32 * fields.len()).arg(key).arg(fields)
}

/// `HGETALL key`
pub fn hgetall(key: impl ToArg) -> Cmd {
    known!("HGETALL", 32).arg(key)
}

/// `HDEL key field [field ...]`
pub fn hdel<F: ToArg>(key: impl ToArg, fields: &[F]) -> Cmd {
    known!("HDEL", 32 + 32 * fields.len()).arg(key).arg(fields)
}

/// `HEXISTS key field`
pub fn hexists(key: impl ToArg, field: impl ToArg) -> Cmd {
    known!("HEXISTS", 64).arg(key).arg(field)
}

/// `HINCRBY key field increment`
pub fn hincr_by(key: impl ToArg, field: impl ToArg, by: i64) -> Cmd {
    known!("HINCRBY", 64).arg(key).arg(field).arg(by)
}

/// `HINCRBYFLOAT key field increment`
pub fn hincr_by_float(key: impl ToArg, field: impl ToArg, by: f64) -> Cmd {
    known!("HINCRBYFLOAT", 64).arg(key).arg(field).arg(by)
}

/// `HKEYS key`
pub fn hkeys(key: impl ToArg) -> Cmd {
    known!("HKEYS", 32).arg(key)
}

/// `HVALS key`
pub fn hvals(key: impl ToArg) -> Cmd {
    known!("HVALS", 32).arg(key)
}

/// `HLEN key`
pub fn hlen(key: impl ToArg) -> Cmd {
    known!("HLEN", 32).arg(key)
}

/// `HSTRLEN key field`
pub fn hstrlen(key: impl ToArg, field: impl ToArg) -> Cmd {
    known!("HSTRLEN", 64).arg(key).arg(field)
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count]`
pub fn hscan(key: impl ToArg, cursor: u64, pattern: Option<&str>, count: Option<u64>) -> Cmd {
    scan_like(known!("HSCAN", 64).arg(key), cursor, pattern, count)
}

fn scan_like(mut c: Cmd, cursor: u64, pattern: Option<&str>, count: Option<u64>) -> Cmd {
    c.push(cursor);
    if let Some(p) = pattern {
        c.push(("MATCH", p));
    }
    if let Some(n) = count {
        c.push(("COUNT", n));
    }
    c
}

// ---------------------------------------------------------------- lists

/// `LPUSH key element [element ...]`
pub fn lpush<V: ToArg>(key: impl ToArg, values: &[V]) -> Cmd {
    known!("LPUSH", 32 + 64 * values.len()).arg(key).arg(values)
}

/// `RPUSH key element [element ...]`
pub fn rpush<V: ToArg>(key: impl ToArg, values: &[V]) -> Cmd {
    known!("RPUSH", 32 + 64 * values.len()).arg(key).arg(values)
}

/// `LPUSHX key element [element ...]`
pub fn lpushx<V: ToArg>(key: impl ToArg, values: &[V]) -> Cmd {
    known!("LPUSHX", 32 + 64 * values.len())
        .arg(key)
        .arg(values)
}

/// `RPUSHX key element [element ...]`
pub fn rpushx<V: ToArg>(key: impl ToArg, values: &[V]) -> Cmd {
    known!("RPUSHX", 32 + 64 * values.len())
        .arg(key)
        .arg(values)
}

/// `LPOP key [count]`
pub fn lpop(key: impl ToArg, count: Option<u64>) -> Cmd {
    known!("LPOP", 40).arg(key).arg(count)
}

/// `RPOP key [count]`
pub fn rpop(key: impl ToArg, count: Option<u64>) -> Cmd {
    known!("RPOP", 40).arg(key).arg(count)
}

/// `LRANGE key start stop`
pub fn lrange(key: impl ToArg, start: i64, stop: i64) -> Cmd {
    known!("LRANGE", 48).arg(key).arg(start).arg(stop)
}

/// `LLEN key`
pub fn llen(key: impl ToArg) -> Cmd {
    known!("LLEN", 32).arg(key)
}

/// `LINDEX key index`
pub fn lindex(key: impl ToArg, index: i64) -> Cmd {
    known!("LINDEX", 40).arg(key).arg(index)
}

/// `LSET key index element`
pub fn lset(key: impl ToArg, index: i64, value: impl ToArg) -> Cmd {
    known!("LSET", 64).arg(key).arg(index).arg(value)
}

/// `LREM key count element`
pub fn lrem(key: impl ToArg, count: i64, value: impl ToArg) -> Cmd {
    known!("LREM", 64).arg(key).arg(count).arg(value)
}

/// `LTRIM key start stop`
pub fn ltrim(key: impl ToArg, start: i64, stop: i64) -> Cmd {
    known!("LTRIM", 48).arg(key).arg(start).arg(stop)
}

/// `LINSERT key BEFORE|AFTER pivot element`
pub fn linsert(key: impl ToArg, before: bool, pivot: impl ToArg, value: impl ToArg) -> Cmd {
    known!("LINSERT", 96)
        .arg(key)
        .arg(if before { "BEFORE" } else { "AFTER" })
        .arg(pivot)
        .arg(value)
}

/// `LPOS key element`
pub fn lpos(key: impl ToArg, value: impl ToArg) -> Cmd {
    known!("LPOS", 64).arg(key).arg(value)
}

/// `LMOVE source destination LEFT|RIGHT LEFT|RIGHT`
pub fn lmove(source: impl ToArg, destination: impl ToArg, from: Side, to: Side) -> Cmd {
    known!("LMOVE", 64)
        .arg(source)
        .arg(destination)
        .arg(from.word())
        .arg(to.word())
}

/// `BLPOP key [key ...] timeout` (seconds; 0 blocks forever). Runs on a dedicated connection.
pub fn blpop<K: ToArg>(keys: &[K], timeout: f64) -> Cmd {
    known!("BLPOP", 32 * keys.len() + 16).arg(keys).arg(timeout)
}

/// `BRPOP key [key ...] timeout`. Runs on a dedicated connection.
pub fn brpop<K: ToArg>(keys: &[K], timeout: f64) -> Cmd {
    known!("BRPOP", 32 * keys.len() + 16).arg(keys).arg(timeout)
}

/// `BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout`. Runs on a dedicated connection.
pub fn blmove(
    source: impl ToArg,
    destination: impl ToArg,
    from: Side,
    to: Side,
    timeout: f64,
) -> Cmd {
    known!("BLMOVE", 80)
        .arg(source)
        .arg(destination)
        .arg(from.word())
        .arg(to.word())
        .arg(timeout)
}

// ---------------------------------------------------------------- sets

/// `SADD key member [member ...]`
pub fn sadd<M: ToArg>(key: impl ToArg, members: &[M]) -> Cmd {
    known!("SADD", 32 + 32 * members.len())
        .arg(key)
        .arg(members)
}

/// `SREM key member [member ...]`
pub fn srem<M: ToArg>(key: impl ToArg, members: &[M]) -> Cmd {
    known!("SREM", 32 + 32 * members.len())
        .arg(key)
        .arg(members)
}

/// `SMEMBERS key`
pub fn smembers(key: impl ToArg) -> Cmd {
    known!("SMEMBERS", 32).arg(key)
}

/// `SISMEMBER key member`
pub fn sismember(key: impl ToArg, member: impl ToArg) -> Cmd {
    known!("SISMEMBER", 64).arg(key).arg(member)
}

/// `SMISMEMBER key member [member ...]`
pub fn smismember<M: ToArg>(key: impl ToArg, members: &[M]) -> Cmd {
    known!("SMISMEMBER", 32 + 32 * members.len())
        .arg(key)
        .arg(members)
}

/// `SCARD key`
pub fn scard(key: impl ToArg) -> Cmd {
    known!("SCARD", 32).arg(key)
}

/// `SPOP key [count]`
pub fn spop(key: impl ToArg, count: Option<u64>) -> Cmd {
    known!("SPOP", 40).arg(key).arg(count)
}

/// `SRANDMEMBER key [count]`
pub fn srandmember(key: impl ToArg, count: Option<i64>) -> Cmd {
    known!("SRANDMEMBER", 40).arg(key).arg(count)
}

/// `SINTER key [key ...]`
pub fn sinter<K: ToArg>(keys: &[K]) -> Cmd {
    known!("SINTER", 32 * keys.len()).arg(keys)
}

/// `SUNION key [key ...]`
pub fn sunion<K: ToArg>(keys: &[K]) -> Cmd {
    known!("SUNION", 32 * keys.len()).arg(keys)
}

/// `SDIFF key [key ...]`
pub fn sdiff<K: ToArg>(keys: &[K]) -> Cmd {
    known!("SDIFF", 32 * keys.len()).arg(keys)
}

/// `SINTERSTORE destination key [key ...]`
pub fn sinterstore<K: ToArg>(destination: impl ToArg, keys: &[K]) -> Cmd {
    known!("SINTERSTORE", 32 + 32 * keys.len())
        .arg(destination)
        .arg(keys)
}

/// `SUNIONSTORE destination key [key ...]`
pub fn sunionstore<K: ToArg>(destination: impl ToArg, keys: &[K]) -> Cmd {
    known!("SUNIONSTORE", 32 + 32 * keys.len())
        .arg(destination)
        .arg(keys)
}

/// `SDIFFSTORE destination key [key ...]`
pub fn sdiffstore<K: ToArg>(destination: impl ToArg, keys: &[K]) -> Cmd {
    known!("SDIFFSTORE", 32 + 32 * keys.len())
        .arg(destination)
        .arg(keys)
}

/// `SMOVE source destination member`
pub fn smove(source: impl ToArg, destination: impl ToArg, member: impl ToArg) -> Cmd {
    known!("SMOVE", 96).arg(source).arg(destination).arg(member)
}

/// `SSCAN key cursor [MATCH pattern] [COUNT count]`
pub fn sscan(key: impl ToArg, cursor: u64, pattern: Option<&str>, count: Option<u64>) -> Cmd {
    scan_like(known!("SSCAN", 64).arg(key), cursor, pattern, count)
}

// ---------------------------------------------------------------- sorted sets

/// Options of `ZADD`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZaddOptions {
    /// `NX` or `XX`.
    pub condition: Option<Condition>,
    /// `GT` (true) or `LT` (false): only update when the new score is greater / less.
    pub compare_gt: Option<bool>,
    /// `CH`: count changed members, not only added ones.
    pub changed: bool,
}

/// `ZADD key score member [score member ...]`
pub fn zadd<M: ToArg>(key: impl ToArg, members: &[(f64, M)]) -> Cmd {
    zadd_with(key, ZaddOptions::default(), members)
}

/// `ZADD key [NX|XX] [GT|LT] [CH] score member [score member ...]`
pub fn zadd_with<M: ToArg>(key: impl ToArg, options: ZaddOptions, members: &[(f64, M)]) -> Cmd {
    let mut c = known!("ZADD", 32 + 48 * members.len()).arg(key);
    if let Some(cond) = options.condition {
        c.push(cond.word());
    }
    match options.compare_gt {
        Some(true) => c.push("GT"),
        Some(false) => c.push("LT"),
        None => {}
    }
    if options.changed {
        c.push("CH");
    }
    for (score, member) in members {
        c.push(*score);
        c.push(member);
    }
    c
}

/// `ZREM key member [member ...]`
pub fn zrem<M: ToArg>(key: impl ToArg, members: &[M]) -> Cmd {
    known!("ZREM", 32 + 32 * members.len())
        .arg(key)
        .arg(members)
}

/// `ZSCORE key member`
pub fn zscore(key: impl ToArg, member: impl ToArg) -> Cmd {
    known!("ZSCORE", 64).arg(key).arg(member)
}

/// `ZMSCORE key member [member ...]`
pub fn zmscore<M: ToArg>(key: impl ToArg, members: &[M]) -> Cmd {
    known!("ZMSCORE", 32 + 32 * members.len())
        .arg(key)
        .arg(members)
}

/// `ZINCRBY key increment member`
pub fn zincr_by(key: impl ToArg, by: f64, member: impl ToArg) -> Cmd {
    known!("ZINCRBY", 64).arg(key).arg(by).arg(member)
}

/// `ZCARD key`
pub fn zcard(key: impl ToArg) -> Cmd {
    known!("ZCARD", 32).arg(key)
}

/// `ZCOUNT key min max` (`"-inf"`, `"(1.5"` and the like are accepted as bounds).
pub fn zcount(key: impl ToArg, min: impl ToArg, max: impl ToArg) -> Cmd {
    known!("ZCOUNT", 64).arg(key).arg(min).arg(max)
}

/// `ZRANGE key start stop [WITHSCORES]` by rank.
pub fn zrange(key: impl ToArg, start: i64, stop: i64, with_scores: bool) -> Cmd {
    known!("ZRANGE", 64)
        .arg(key)
        .arg(start)
        .arg(stop)
        .arg(with_scores.then_some("WITHSCORES"))
}

/// `ZRANGE key max min REV [WITHSCORES]` by rank, highest first.
pub fn zrevrange(key: impl ToArg, start: i64, stop: i64, with_scores: bool) -> Cmd {
    known!("ZRANGE", 64)
        .arg(key)
        .arg(start)
        .arg(stop)
        .arg("REV")
        .arg(with_scores.then_some("WITHSCORES"))
}

/// `ZRANGE key min max BYSCORE [LIMIT offset count] [WITHSCORES]`
pub fn zrange_by_score(
    key: impl ToArg,
    min: impl ToArg,
    max: impl ToArg,
    limit: Option<(i64, i64)>,
    with_scores: bool,
) -> Cmd {
    let mut c = known!("ZRANGE", 80)
        .arg(key)
        .arg(min)
        .arg(max)
        .arg("BYSCORE");
    if let Some((offset, count)) = limit {
        c.push(("LIMIT", (offset, count)));
    }
    c.arg(with_scores.then_some("WITHSCORES"))
}

/// `ZRANK key member`
pub fn zrank(key: impl ToArg, member: impl ToArg) -> Cmd {
    known!("ZRANK", 64).arg(key).arg(member)
}

/// `ZREVRANK key member`
pub fn zrevrank(key: impl ToArg, member: impl ToArg) -> Cmd {
    known!("ZREVRANK", 64).arg(key).arg(member)
}

/// `ZREMRANGEBYSCORE key min max`
pub fn zremrange_by_score(key: impl ToArg, min: impl ToArg, max: impl ToArg) -> Cmd {
    known!("ZREMRANGEBYSCORE", 64).arg(key).arg(min).arg(max)
}

/// `ZREMRANGEBYRANK key start stop`
pub fn zremrange_by_rank(key: impl ToArg, start: i64, stop: i64) -> Cmd {
    known!("ZREMRANGEBYRANK", 64).arg(key).arg(start).arg(stop)
}

/// `ZPOPMIN key [count]`
pub fn zpopmin(key: impl ToArg, count: Option<u64>) -> Cmd {
    known!("ZPOPMIN", 40).arg(key).arg(count)
}

/// `ZPOPMAX key [count]`
pub fn zpopmax(key: impl ToArg, count: Option<u64>) -> Cmd {
    known!("ZPOPMAX", 40).arg(key).arg(count)
}

/// `BZPOPMIN key [key ...] timeout`. Runs on a dedicated connection.
pub fn bzpopmin<K: ToArg>(keys: &[K], timeout: f64) -> Cmd {
    known!("BZPOPMIN", 32 * keys.len() + 16)
        .arg(keys)
        .arg(timeout)
}

/// `ZUNIONSTORE destination numkeys key [key ...]`
pub fn zunionstore<K: ToArg>(destination: impl ToArg, keys: &[K]) -> Cmd {
    known!("ZUNIONSTORE", 48 + 32 * keys.len())
        .arg(destination)
        .arg(keys.len())
        .arg(keys)
}

/// `ZINTERSTORE destination numkeys key [key ...]`
pub fn zinterstore<K: ToArg>(destination: impl ToArg, keys: &[K]) -> Cmd {
    known!("ZINTERSTORE", 48 + 32 * keys.len())
        .arg(destination)
        .arg(keys.len())
        .arg(keys)
}

/// `ZSCAN key cursor [MATCH pattern] [COUNT count]`
pub fn zscan(key: impl ToArg, cursor: u64, pattern: Option<&str>, count: Option<u64>) -> Cmd {
    scan_like(known!("ZSCAN", 64).arg(key), cursor, pattern, count)
}

// ---------------------------------------------------------------- streams

/// Trimming of a stream on `XADD`/`XTRIM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trim {
    /// `MAXLEN = n`
    MaxLen(u64),
    /// `MAXLEN ~ n`: at least n, trimmed in whole nodes (cheaper).
    MaxLenApprox(u64),
}

impl Trim {
    fn push(self, c: &mut Cmd) {
        match self {
            Trim::MaxLen(n) => c.push(("MAXLEN", ("=", n))),
            Trim::MaxLenApprox(n) => c.push(("MAXLEN", ("~", n))),
        }
    }
}

/// `XADD key [MAXLEN ...] id field value [field value ...]` (`id` is usually `"*"`).
pub fn xadd<F: ToArg, V: ToArg>(
    key: impl ToArg,
    trim: Option<Trim>,
    id: &str,
    fields: &[(F, V)],
) -> Cmd {
    let mut c = known!("XADD", 48 + 64 * fields.len()).arg(key);
    if let Some(t) = trim {
        t.push(&mut c);
    }
    c.arg(id).arg(fields)
}

/// `XLEN key`
pub fn xlen(key: impl ToArg) -> Cmd {
    known!("XLEN", 32).arg(key)
}

/// `XRANGE key start end [COUNT count]` (`"-"` and `"+"` for the ends).
pub fn xrange(key: impl ToArg, start: &str, end: &str, count: Option<u64>) -> Cmd {
    let mut c = known!("XRANGE", 64).arg(key).arg(start).arg(end);
    if let Some(n) = count {
        c.push(("COUNT", n));
    }
    c
}

/// `XREVRANGE key end start [COUNT count]`
pub fn xrevrange(key: impl ToArg, end: &str, start: &str, count: Option<u64>) -> Cmd {
    let mut c = known!("XREVRANGE", 64).arg(key).arg(end).arg(start);
    if let Some(n) = count {
        c.push(("COUNT", n));
    }
    c
}

/// `XREAD [COUNT count] [BLOCK ms] STREAMS key [key ...] id [id ...]`. With `block`, runs on
/// a dedicated connection.
pub fn xread<K: ToArg, I: ToArg>(
    keys: &[K],
    ids: &[I],
    count: Option<u64>,
    block_ms: Option<u64>,
) -> Cmd {
    let mut c = known!("XREAD", 64 + 48 * keys.len());
    if let Some(n) = count {
        c.push(("COUNT", n));
    }
    if let Some(ms) = block_ms {
        c.push(("BLOCK", ms));
    }
    c.arg("STREAMS").arg(keys).arg(ids)
}

/// `XGROUP CREATE key group id [MKSTREAM]`
pub fn xgroup_create(key: impl ToArg, group: impl ToArg, id: &str, mkstream: bool) -> Cmd {
    known!("XGROUP CREATE", 64)
        .arg(key)
        .arg(group)
        .arg(id)
        .arg(mkstream.then_some("MKSTREAM"))
}

/// `XGROUP DESTROY key group`
pub fn xgroup_destroy(key: impl ToArg, group: impl ToArg) -> Cmd {
    known!("XGROUP DESTROY", 64).arg(key).arg(group)
}

/// `XREADGROUP GROUP group consumer [COUNT count] [BLOCK ms] [NOACK] STREAMS key [key ...] id
/// [id ...]` (`">"` for new messages). With `block`, runs on a dedicated connection.
#[allow(clippy::too_many_arguments, reason = "mirrors the command's options")]
pub fn xreadgroup<K: ToArg, I: ToArg>(
    group: impl ToArg,
    consumer: impl ToArg,
    keys: &[K],
    ids: &[I],
    count: Option<u64>,
    block_ms: Option<u64>,
    noack: bool,
) -> Cmd {
    let mut c = known!("XREADGROUP", 96 + 48 * keys.len())
        .arg("GROUP")
        .arg(group)
        .arg(consumer);
    if let Some(n) = count {
        c.push(("COUNT", n));
    }
    if let Some(ms) = block_ms {
        c.push(("BLOCK", ms));
    }
    if noack {
        c.push("NOACK");
    }
    c.arg("STREAMS").arg(keys).arg(ids)
}

/// `XACK key group id [id ...]`
pub fn xack<I: ToArg>(key: impl ToArg, group: impl ToArg, ids: &[I]) -> Cmd {
    known!("XACK", 64 + 24 * ids.len())
        .arg(key)
        .arg(group)
        .arg(ids)
}

/// `XPENDING key group` (summary form).
pub fn xpending(key: impl ToArg, group: impl ToArg) -> Cmd {
    known!("XPENDING", 64).arg(key).arg(group)
}

/// `XDEL key id [id ...]`
pub fn xdel<I: ToArg>(key: impl ToArg, ids: &[I]) -> Cmd {
    known!("XDEL", 32 + 24 * ids.len()).arg(key).arg(ids)
}

/// `XTRIM key MAXLEN [=|~] n`
pub fn xtrim(key: impl ToArg, trim: Trim) -> Cmd {
    let mut c = known!("XTRIM", 48).arg(key);
    trim.push(&mut c);
    c
}

/// `XAUTOCLAIM key group consumer min-idle-ms start [COUNT count]`
pub fn xautoclaim(
    key: impl ToArg,
    group: impl ToArg,
    consumer: impl ToArg,
    min_idle_ms: u64,
    start: &str,
    count: Option<u64>,
) -> Cmd {
    let mut c = known!("XAUTOCLAIM", 96)
        .arg(key)
        .arg(group)
        .arg(consumer)
        .arg(min_idle_ms)
        .arg(start);
    if let Some(n) = count {
        c.push(("COUNT", n));
    }
    c
}

// ---------------------------------------------------------------- scripting and pub/sub

/// `EVAL script numkeys key [key ...] arg [arg ...]`
pub fn eval<K: ToArg, A: ToArg>(script: &str, keys: &[K], args: &[A]) -> Cmd {
    known!("EVAL", script.len() + 32 * (keys.len() + args.len()) + 16)
        .arg(script)
        .arg(keys.len())
        .arg(keys)
        .arg(args)
}

/// `EVALSHA sha1 numkeys key [key ...] arg [arg ...]`
pub fn evalsha<K: ToArg, A: ToArg>(sha1: &str, keys: &[K], args: &[A]) -> Cmd {
    known!("EVALSHA", 64 + 32 * (keys.len() + args.len()))
        .arg(sha1)
        .arg(keys.len())
        .arg(keys)
        .arg(args)
}

/// `SCRIPT LOAD script`
pub fn script_load(script: &str) -> Cmd {
    known!("SCRIPT LOAD", script.len() + 16).arg(script)
}

/// `SCRIPT EXISTS sha1 [sha1 ...]`
pub fn script_exists(sha1s: &[&str]) -> Cmd {
    known!("SCRIPT EXISTS", 48 * sha1s.len()).arg(sha1s)
}

/// `SCRIPT FLUSH`
pub fn script_flush() -> Cmd {
    known!("SCRIPT FLUSH", 0)
}

/// `PUBLISH channel message`
pub fn publish(channel: impl ToArg, message: impl ToArg) -> Cmd {
    known!("PUBLISH", 96).arg(channel).arg(message)
}
