//! Typed commands on [`Client`]. Each is [`Client::query`] with the constructor of the same
//! name in [`cmds`](crate::cmds).
//!
//! All of them are cancel safe: dropping the future never desynchronizes a connection (the
//! command may or may not have run).

use std::collections::VecDeque;

use bytes::Bytes;
use futures::Stream;
use jupiter_core::shadow::{Access, Route, ShadowTarget};

use crate::Error;
use crate::client::Client;
use crate::cmd::ToArg;
use crate::cmds::{self, Expiry, SetOptions, Side, Trim, ZaddOptions};
use crate::stream::{PendingSummary, StreamEntry, StreamRead, stream_reads};
use crate::value::FromReply;

type R<T> = Result<T, Error>;

impl Client {
    // ------------------------------------------------------------ server

    /// `PING`
    pub async fn ping(&self) -> R<()> {
        self.query(cmds::ping()).await
    }

    /// `ECHO`
    pub async fn echo<T: FromReply>(&self, message: impl ToArg) -> R<T> {
        self.query(cmds::echo(message)).await
    }

    /// `DBSIZE`
    pub async fn dbsize(&self) -> R<u64> {
        self.query(cmds::dbsize()).await
    }

    /// `FLUSHDB`
    pub async fn flushdb(&self) -> R<()> {
        self.query(cmds::flushdb()).await
    }

    /// `INFO [section]` as text.
    pub async fn info(&self, section: Option<&str>) -> R<String> {
        self.query(cmds::info(section)).await
    }

    // ------------------------------------------------------------ strings

    /// `GET key` — `Option<T>` for a key that may be missing.
    pub async fn get<T: FromReply>(&self, key: impl ToArg) -> R<T> {
        self.query(cmds::get(key)).await
    }

    /// `SET key value`
    pub async fn set(&self, key: impl ToArg, value: impl ToArg) -> R<()> {
        self.query(cmds::set(key, value)).await
    }

    /// `SET key value` with options; with `NX`/`XX` the reply is null when not set, with `GET`
    /// the old value.
    pub async fn set_with<T: FromReply>(
        &self,
        key: impl ToArg,
        value: impl ToArg,
        options: SetOptions,
    ) -> R<T> {
        self.query(cmds::set_with(key, value, options)).await
    }

    /// `SETNX key value`: whether it was set.
    pub async fn setnx(&self, key: impl ToArg, value: impl ToArg) -> R<bool> {
        self.query(cmds::setnx(key, value)).await
    }

    /// `SETEX key seconds value`
    pub async fn setex(&self, key: impl ToArg, seconds: u64, value: impl ToArg) -> R<()> {
        self.query(cmds::setex(key, seconds, value)).await
    }

    /// `MGET key [key ...]` — e.g. `Vec<Option<String>>`.
    pub async fn mget<T: FromReply, K: ToArg>(&self, keys: &[K]) -> R<T> {
        self.query(cmds::mget(keys)).await
    }

    /// `MSET key value [key value ...]`
    pub async fn mset<K: ToArg, V: ToArg>(&self, pairs: &[(K, V)]) -> R<()> {
        self.query(cmds::mset(pairs)).await
    }

    /// `INCR key`
    pub async fn incr(&self, key: impl ToArg) -> R<i64> {
        self.query(cmds::incr(key)).await
    }

    /// `INCRBY key increment`
    pub async fn incr_by(&self, key: impl ToArg, by: i64) -> R<i64> {
        self.query(cmds::incr_by(key, by)).await
    }

    /// `INCRBYFLOAT key increment`
    pub async fn incr_by_float(&self, key: impl ToArg, by: f64) -> R<f64> {
        self.query(cmds::incr_by_float(key, by)).await
    }

    /// `DECR key`
    pub async fn decr(&self, key: impl ToArg) -> R<i64> {
        self.query(cmds::decr(key)).await
    }

    /// `DECRBY key decrement`
    pub async fn decr_by(&self, key: impl ToArg, by: i64) -> R<i64> {
        self.query(cmds::decr_by(key, by)).await
    }

    /// `APPEND key value`: the new length.
    pub async fn append(&self, key: impl ToArg, value: impl ToArg) -> R<u64> {
        self.query(cmds::append(key, value)).await
    }

    /// `STRLEN key`
    pub async fn strlen(&self, key: impl ToArg) -> R<u64> {
        self.query(cmds::strlen(key)).await
    }

    /// `GETRANGE key start end`
    pub async fn getrange<T: FromReply>(&self, key: impl ToArg, start: i64, end: i64) -> R<T> {
        self.query(cmds::getrange(key, start, end)).await
    }

    /// `SETRANGE key offset value`: the new length.
    pub async fn setrange(&self, key: impl ToArg, offset: u64, value: impl ToArg) -> R<u64> {
        self.query(cmds::setrange(key, offset, value)).await
    }

    /// `GETDEL key`
    pub async fn getdel<T: FromReply>(&self, key: impl ToArg) -> R<T> {
        self.query(cmds::getdel(key)).await
    }

    /// `GETEX key [expiry]`
    pub async fn getex<T: FromReply>(&self, key: impl ToArg, expiry: Option<Expiry>) -> R<T> {
        self.query(cmds::getex(key, expiry)).await
    }

    // ------------------------------------------------------------ keys

    /// `DEL key [key ...]`: how many were removed.
    pub async fn del<K: ToArg>(&self, keys: &[K]) -> R<u64> {
        self.query(cmds::del(keys)).await
    }

    /// `UNLINK key [key ...]`
    pub async fn unlink<K: ToArg>(&self, keys: &[K]) -> R<u64> {
        self.query(cmds::unlink(keys)).await
    }

    /// `EXISTS key [key ...]`: how many exist.
    pub async fn exists<K: ToArg>(&self, keys: &[K]) -> R<u64> {
        self.query(cmds::exists(keys)).await
    }

    /// `EXPIRE key seconds`: whether the timeout was set.
    pub async fn expire(&self, key: impl ToArg, seconds: i64) -> R<bool> {
        self.query(cmds::expire(key, seconds)).await
    }

    /// `PEXPIRE key milliseconds`
    pub async fn pexpire(&self, key: impl ToArg, millis: i64) -> R<bool> {
        self.query(cmds::pexpire(key, millis)).await
    }

    /// `EXPIREAT key unix-seconds`
    pub async fn expire_at(&self, key: impl ToArg, at: i64) -> R<bool> {
        self.query(cmds::expire_at(key, at)).await
    }

    /// `TTL key`: seconds left, -1 without expiry, -2 for a missing key.
    pub async fn ttl(&self, key: impl ToArg) -> R<i64> {
        self.query(cmds::ttl(key)).await
    }

    /// `PTTL key`
    pub async fn pttl(&self, key: impl ToArg) -> R<i64> {
        self.query(cmds::pttl(key)).await
    }

    /// `PERSIST key`
    pub async fn persist(&self, key: impl ToArg) -> R<bool> {
        self.query(cmds::persist(key)).await
    }

    /// `TYPE key`: `string`, `list`, `set`, `zset`, `hash`, `stream` or `none`.
    pub async fn key_type(&self, key: impl ToArg) -> R<String> {
        self.query(cmds::key_type(key)).await
    }

    /// `RENAME key newkey`
    pub async fn rename(&self, key: impl ToArg, new_key: impl ToArg) -> R<()> {
        self.query(cmds::rename(key, new_key)).await
    }

    /// `RENAMENX key newkey`
    pub async fn renamenx(&self, key: impl ToArg, new_key: impl ToArg) -> R<bool> {
        self.query(cmds::renamenx(key, new_key)).await
    }

    /// `COPY source destination [REPLACE]`
    pub async fn copy(
        &self,
        source: impl ToArg,
        destination: impl ToArg,
        replace: bool,
    ) -> R<bool> {
        self.query(cmds::copy(source, destination, replace)).await
    }

    /// All keys matching `pattern`, by `SCAN` (never `KEYS`, which blocks the server), as a
    /// stream. Under shadow traffic it scans the shadow key space and yields keys without the
    /// shadow prefix.
    pub fn scan(
        &self,
        pattern: Option<&str>,
        count: Option<u64>,
    ) -> impl Stream<Item = R<Bytes>> + Send + 'static {
        let prefix = self.shadow_scan_prefix();
        let pattern = match (&prefix, pattern) {
            (Ok(Some(p)), pat) => Some(format!(
                "{}{}",
                glob_escape(&String::from_utf8_lossy(p)),
                pat.unwrap_or("*")
            )),
            (_, pat) => pat.map(str::to_owned),
        };
        let client = self.clone();
        cursor_stream(move |cursor| {
            let (client, pattern, prefix) = (client.clone(), pattern.clone(), prefix.clone());
            async move {
                let prefix = prefix.map_err(Error::ShadowRefused)?;
                let (next, keys): (u64, Vec<Bytes>) = client
                    .query(cmds::scan(cursor, pattern.as_deref(), count, None).shadow_mapped())
                    .await?;
                let keys = match prefix {
                    Some(p) => keys
                        .into_iter()
                        .map(|k| k.slice(p.len().min(k.len())..))
                        .collect(),
                    None => keys,
                };
                Ok((next, keys))
            }
        })
    }

    /// The shadow key prefix SCAN must stay within (its `MATCH` starts with it), or the
    /// refusal.
    fn shadow_scan_prefix(&self) -> Result<Option<Bytes>, jupiter_core::shadow::ShadowRefused> {
        match self.inner.shadow.route(Access::Read)? {
            Route::Live => Ok(None),
            Route::Shadow => match self.inner.shadow.target() {
                ShadowTarget::KeyPrefix(p) => Ok(Some(Bytes::copy_from_slice(p))),
                _ => Ok(None),
            },
        }
    }

    // ------------------------------------------------------------ hashes

    /// `HSET key field value [field value ...]`: how many fields were added.
    pub async fn hset<F: ToArg, V: ToArg>(&self, key: impl ToArg, pairs: &[(F, V)]) -> R<u64> {
        self.query(cmds::hset(key, pairs)).await
    }

    /// `HSETNX key field value`
    pub async fn hsetnx(&self, key: impl ToArg, field: impl ToArg, value: impl ToArg) -> R<bool> {
        self.query(cmds::hsetnx(key, field, value)).await
    }

    /// `HGET key field`
    pub async fn hget<T: FromReply>(&self, key: impl ToArg, field: impl ToArg) -> R<T> {
        self.query(cmds::hget(key, field)).await
    }

    /// `HMGET key field [field ...]`
    pub async fn hmget<T: FromReply, F: ToArg>(&self, key: impl ToArg, fields: &[F]) -> R<T> {
        self.query(cmds::hmget(key, fields)).await
    }

    /// `HGETALL key` — e.g. `HashMap<String, String>`.
    pub async fn hgetall<T: FromReply>(&self, key: impl ToArg) -> R<T> {
        self.query(cmds::hgetall(key)).await
    }

    /// `HDEL key field [field ...]`
    pub async fn hdel<F: ToArg>(&self, key: impl ToArg, fields: &[F]) -> R<u64> {
        self.query(cmds::hdel(key, fields)).await
    }

    /// `HEXISTS key field`
    pub async fn hexists(&self, key: impl ToArg, field: impl ToArg) -> R<bool> {
        self.query(cmds::hexists(key, field)).await
    }

    /// `HINCRBY key field increment`
    pub async fn hincr_by(&self, key: impl ToArg, field: impl ToArg, by: i64) -> R<i64> {
        self.query(cmds::hincr_by(key, field, by)).await
    }

    /// `HINCRBYFLOAT key field increment`
    pub async fn hincr_by_float(&self, key: impl ToArg, field: impl ToArg, by: f64) -> R<f64> {
        self.query(cmds::hincr_by_float(key, field, by)).await
    }

    /// `HKEYS key`
    pub async fn hkeys<T: FromReply>(&self, key: impl ToArg) -> R<T> {
        self.query(cmds::hkeys(key)).await
    }

    /// `HVALS key`
    pub async fn hvals<T: FromReply>(&self, key: impl ToArg) -> R<T> {
        self.query(cmds::hvals(key)).await
    }

    /// `HLEN key`
    pub async fn hlen(&self, key: impl ToArg) -> R<u64> {
        self.query(cmds::hlen(key)).await
    }

    /// `HSTRLEN key field`
    pub async fn hstrlen(&self, key: impl ToArg, field: impl ToArg) -> R<u64> {
        self.query(cmds::hstrlen(key, field)).await
    }

    /// All field/value pairs of a hash by `HSCAN`, as a stream.
    pub fn hscan(
        &self,
        key: impl ToArg,
        pattern: Option<&str>,
        count: Option<u64>,
    ) -> impl Stream<Item = R<(Bytes, Bytes)>> + Send + 'static {
        let key = arg_bytes(&key);
        let (client, pattern) = (self.clone(), pattern.map(str::to_owned));
        cursor_stream(move |cursor| {
            let (client, key, pattern) = (client.clone(), key.clone(), pattern.clone());
            async move {
                let (next, flat): (u64, Vec<Bytes>) = client
                    .query(cmds::hscan(key, cursor, pattern.as_deref(), count))
                    .await?;
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    pairs.push((f, v));
                }
                Ok((next, pairs))
            }
        })
    }

    // ------------------------------------------------------------ lists

    /// `LPUSH key element [element ...]`: the new length.
    pub async fn lpush<V: ToArg>(&self, key: impl ToArg, values: &[V]) -> R<u64> {
        self.query(cmds::lpush(key, values)).await
    }

    /// `RPUSH key element [element ...]`: the new length.
    pub async fn rpush<V: ToArg>(&self, key: impl ToArg, values: &[V]) -> R<u64> {
        self.query(cmds::rpush(key, values)).await
    }

    /// `LPOP key [count]`
    pub async fn lpop<T: FromReply>(&self, key: impl ToArg, count: Option<u64>) -> R<T> {
        self.query(cmds::lpop(key, count)).await
    }

    /// `RPOP key [count]`
    pub async fn rpop<T: FromReply>(&self, key: impl ToArg, count: Option<u64>) -> R<T> {
        self.query(cmds::rpop(key, count)).await
    }

    /// `LRANGE key start stop`
    pub async fn lrange<T: FromReply>(&self, key: impl ToArg, start: i64, stop: i64) -> R<T> {
        self.query(cmds::lrange(key, start, stop)).await
    }

    /// `LLEN key`
    pub async fn llen(&self, key: impl ToArg) -> R<u64> {
        self.query(cmds::llen(key)).await
    }

    /// `LINDEX key index`
    pub async fn lindex<T: FromReply>(&self, key: impl ToArg, index: i64) -> R<T> {
        self.query(cmds::lindex(key, index)).await
    }

    /// `LSET key index element`
    pub async fn lset(&self, key: impl ToArg, index: i64, value: impl ToArg) -> R<()> {
        self.query(cmds::lset(key, index, value)).await
    }

    /// `LREM key count element`
    pub async fn lrem(&self, key: impl ToArg, count: i64, value: impl ToArg) -> R<u64> {
        self.query(cmds::lrem(key, count, value)).await
    }

    /// `LTRIM key start stop`
    pub async fn ltrim(&self, key: impl ToArg, start: i64, stop: i64) -> R<()> {
        self.query(cmds::ltrim(key, start, stop)).await
    }

    /// `LINSERT key BEFORE|AFTER pivot element`: the new length, -1 without the pivot.
    pub async fn linsert(
        &self,
        key: impl ToArg,
        before: bool,
        pivot: impl ToArg,
        value: impl ToArg,
    ) -> R<i64> {
        self.query(cmds::linsert(key, before, pivot, value)).await
    }

    /// `LPOS key element`
    pub async fn lpos(&self, key: impl ToArg, value: impl ToArg) -> R<Option<u64>> {
        self.query(cmds::lpos(key, value)).await
    }

    /// `LMOVE source destination from to`
    pub async fn lmove<T: FromReply>(
        &self,
        source: impl ToArg,
        destination: impl ToArg,
        from: Side,
        to: Side,
    ) -> R<T> {
        self.query(cmds::lmove(source, destination, from, to)).await
    }

    /// `BLPOP key [key ...] timeout`: `(key, element)`, or `None` on timeout. Runs on a
    /// dedicated connection and waits as long as asked (0: forever).
    pub async fn blpop<T: FromReply, K: ToArg>(
        &self,
        keys: &[K],
        timeout_secs: f64,
    ) -> R<Option<(String, T)>> {
        self.query(cmds::blpop(keys, timeout_secs)).await
    }

    /// `BRPOP key [key ...] timeout`
    pub async fn brpop<T: FromReply, K: ToArg>(
        &self,
        keys: &[K],
        timeout_secs: f64,
    ) -> R<Option<(String, T)>> {
        self.query(cmds::brpop(keys, timeout_secs)).await
    }

    /// `BLMOVE source destination from to timeout`
    pub async fn blmove<T: FromReply>(
        &self,
        source: impl ToArg,
        destination: impl ToArg,
        from: Side,
        to: Side,
        timeout_secs: f64,
    ) -> R<Option<T>> {
        self.query(cmds::blmove(source, destination, from, to, timeout_secs))
            .await
    }

    // ------------------------------------------------------------ sets

    /// `SADD key member [member ...]`: how many were added.
    pub async fn sadd<M: ToArg>(&self, key: impl ToArg, members: &[M]) -> R<u64> {
        self.query(cmds::sadd(key, members)).await
    }

    /// `SREM key member [member ...]`
    pub async fn srem<M: ToArg>(&self, key: impl ToArg, members: &[M]) -> R<u64> {
        self.query(cmds::srem(key, members)).await
    }

    /// `SMEMBERS key` — e.g. `HashSet<String>`.
    pub async fn smembers<T: FromReply>(&self, key: impl ToArg) -> R<T> {
        self.query(cmds::smembers(key)).await
    }

    /// `SISMEMBER key member`
    pub async fn sismember(&self, key: impl ToArg, member: impl ToArg) -> R<bool> {
        self.query(cmds::sismember(key, member)).await
    }

    /// `SMISMEMBER key member [member ...]`
    pub async fn smismember<M: ToArg>(&self, key: impl ToArg, members: &[M]) -> R<Vec<bool>> {
        self.query(cmds::smismember(key, members)).await
    }

    /// `SCARD key`
    pub async fn scard(&self, key: impl ToArg) -> R<u64> {
        self.query(cmds::scard(key)).await
    }

    /// `SPOP key [count]`
    pub async fn spop<T: FromReply>(&self, key: impl ToArg, count: Option<u64>) -> R<T> {
        self.query(cmds::spop(key, count)).await
    }

    /// `SRANDMEMBER key [count]`
    pub async fn srandmember<T: FromReply>(&self, key: impl ToArg, count: Option<i64>) -> R<T> {
        self.query(cmds::srandmember(key, count)).await
    }

    /// `SINTER key [key ...]`
    pub async fn sinter<T: FromReply, K: ToArg>(&self, keys: &[K]) -> R<T> {
        self.query(cmds::sinter(keys)).await
    }

    /// `SUNION key [key ...]`
    pub async fn sunion<T: FromReply, K: ToArg>(&self, keys: &[K]) -> R<T> {
        self.query(cmds::sunion(keys)).await
    }

    /// `SDIFF key [key ...]`
    pub async fn sdiff<T: FromReply, K: ToArg>(&self, keys: &[K]) -> R<T> {
        self.query(cmds::sdiff(keys)).await
    }

    /// `SINTERSTORE destination key [key ...]`: the size of the result.
    pub async fn sinterstore<K: ToArg>(&self, destination: impl ToArg, keys: &[K]) -> R<u64> {
        self.query(cmds::sinterstore(destination, keys)).await
    }

    /// `SUNIONSTORE destination key [key ...]`
    pub async fn sunionstore<K: ToArg>(&self, destination: impl ToArg, keys: &[K]) -> R<u64> {
        self.query(cmds::sunionstore(destination, keys)).await
    }

    /// `SMOVE source destination member`
    pub async fn smove(
        &self,
        source: impl ToArg,
        destination: impl ToArg,
        member: impl ToArg,
    ) -> R<bool> {
        self.query(cmds::smove(source, destination, member)).await
    }

    /// All members of a set by `SSCAN`, as a stream.
    pub fn sscan(
        &self,
        key: impl ToArg,
        pattern: Option<&str>,
        count: Option<u64>,
    ) -> impl Stream<Item = R<Bytes>> + Send + 'static {
        let key = arg_bytes(&key);
        let (client, pattern) = (self.clone(), pattern.map(str::to_owned));
        cursor_stream(move |cursor| {
            let (client, key, pattern) = (client.clone(), key.clone(), pattern.clone());
            async move {
                client
                    .query::<(u64, Vec<Bytes>)>(cmds::sscan(key, cursor, pattern.as_deref(), count))
                    .await
            }
        })
    }

    // ------------------------------------------------------------ sorted sets

    /// `ZADD key score member [score member ...]`: how many were added.
    pub async fn zadd<M: ToArg>(&self, key: impl ToArg, members: &[(f64, M)]) -> R<u64> {
        self.query(cmds::zadd(key, members)).await
    }

    /// `ZADD` with options.
    pub async fn zadd_with<M: ToArg>(
        &self,
        key: impl ToArg,
        options: ZaddOptions,
        members: &[(f64, M)],
    ) -> R<u64> {
        self.query(cmds::zadd_with(key, options, members)).await
    }

    /// `ZREM key member [member ...]`
    pub async fn zrem<M: ToArg>(&self, key: impl ToArg, members: &[M]) -> R<u64> {
        self.query(cmds::zrem(key, members)).await
    }

    /// `ZSCORE key member`
    pub async fn zscore(&self, key: impl ToArg, member: impl ToArg) -> R<Option<f64>> {
        self.query(cmds::zscore(key, member)).await
    }

    /// `ZMSCORE key member [member ...]`
    pub async fn zmscore<M: ToArg>(&self, key: impl ToArg, members: &[M]) -> R<Vec<Option<f64>>> {
        self.query(cmds::zmscore(key, members)).await
    }

    /// `ZINCRBY key increment member`: the new score.
    pub async fn zincr_by(&self, key: impl ToArg, by: f64, member: impl ToArg) -> R<f64> {
        self.query(cmds::zincr_by(key, by, member)).await
    }

    /// `ZCARD key`
    pub async fn zcard(&self, key: impl ToArg) -> R<u64> {
        self.query(cmds::zcard(key)).await
    }

    /// `ZCOUNT key min max`
    pub async fn zcount(&self, key: impl ToArg, min: impl ToArg, max: impl ToArg) -> R<u64> {
        self.query(cmds::zcount(key, min, max)).await
    }

    /// `ZRANGE key start stop` (members by rank).
    pub async fn zrange<T: FromReply>(&self, key: impl ToArg, start: i64, stop: i64) -> R<T> {
        self.query(cmds::zrange(key, start, stop, false)).await
    }

    /// `ZRANGE key start stop WITHSCORES`: `(member, score)` pairs, whichever protocol.
    pub async fn zrange_with_scores<T: FromReply>(
        &self,
        key: impl ToArg,
        start: i64,
        stop: i64,
    ) -> R<Vec<(T, f64)>> {
        with_scores(self.query(cmds::zrange(key, start, stop, true)).await?)
    }

    /// `ZRANGE key start stop REV` (highest first).
    pub async fn zrevrange<T: FromReply>(&self, key: impl ToArg, start: i64, stop: i64) -> R<T> {
        self.query(cmds::zrevrange(key, start, stop, false)).await
    }

    /// `ZRANGE key min max BYSCORE [LIMIT]`
    pub async fn zrange_by_score<T: FromReply>(
        &self,
        key: impl ToArg,
        min: impl ToArg,
        max: impl ToArg,
        limit: Option<(i64, i64)>,
    ) -> R<T> {
        self.query(cmds::zrange_by_score(key, min, max, limit, false))
            .await
    }

    /// `ZRANK key member`
    pub async fn zrank(&self, key: impl ToArg, member: impl ToArg) -> R<Option<u64>> {
        self.query(cmds::zrank(key, member)).await
    }

    /// `ZREVRANK key member`
    pub async fn zrevrank(&self, key: impl ToArg, member: impl ToArg) -> R<Option<u64>> {
        self.query(cmds::zrevrank(key, member)).await
    }

    /// `ZREMRANGEBYSCORE key min max`
    pub async fn zremrange_by_score(
        &self,
        key: impl ToArg,
        min: impl ToArg,
        max: impl ToArg,
    ) -> R<u64> {
        self.query(cmds::zremrange_by_score(key, min, max)).await
    }

    /// `ZREMRANGEBYRANK key start stop`
    pub async fn zremrange_by_rank(&self, key: impl ToArg, start: i64, stop: i64) -> R<u64> {
        self.query(cmds::zremrange_by_rank(key, start, stop)).await
    }

    /// `ZPOPMIN key [count]`: `(member, score)` pairs.
    pub async fn zpopmin<T: FromReply>(
        &self,
        key: impl ToArg,
        count: Option<u64>,
    ) -> R<Vec<(T, f64)>> {
        with_scores(self.query(cmds::zpopmin(key, count)).await?)
    }

    /// `ZPOPMAX key [count]`
    pub async fn zpopmax<T: FromReply>(
        &self,
        key: impl ToArg,
        count: Option<u64>,
    ) -> R<Vec<(T, f64)>> {
        with_scores(self.query(cmds::zpopmax(key, count)).await?)
    }

    /// `BZPOPMIN key [key ...] timeout`: `(key, member, score)` or `None` on timeout.
    pub async fn bzpopmin<T: FromReply, K: ToArg>(
        &self,
        keys: &[K],
        timeout_secs: f64,
    ) -> R<Option<(String, T, f64)>> {
        self.query(cmds::bzpopmin(keys, timeout_secs)).await
    }

    /// `ZUNIONSTORE destination numkeys key [key ...]`
    pub async fn zunionstore<K: ToArg>(&self, destination: impl ToArg, keys: &[K]) -> R<u64> {
        self.query(cmds::zunionstore(destination, keys)).await
    }

    /// `ZINTERSTORE destination numkeys key [key ...]`
    pub async fn zinterstore<K: ToArg>(&self, destination: impl ToArg, keys: &[K]) -> R<u64> {
        self.query(cmds::zinterstore(destination, keys)).await
    }

    /// All `(member, score)` pairs of a sorted set by `ZSCAN`, as a stream.
    pub fn zscan(
        &self,
        key: impl ToArg,
        pattern: Option<&str>,
        count: Option<u64>,
    ) -> impl Stream<Item = R<(Bytes, f64)>> + Send + 'static {
        let key = arg_bytes(&key);
        let (client, pattern) = (self.clone(), pattern.map(str::to_owned));
        cursor_stream(move |cursor| {
            let (client, key, pattern) = (client.clone(), key.clone(), pattern.clone());
            async move {
                let (next, page): (u64, crate::resp::Frame) = client
                    .query(cmds::zscan(key, cursor, pattern.as_deref(), count))
                    .await?;
                Ok((next, with_scores(page)?))
            }
        })
    }

    // ------------------------------------------------------------ streams

    /// `XADD key [trim] id field value ...`: the entry's id.
    pub async fn xadd<F: ToArg, V: ToArg>(
        &self,
        key: impl ToArg,
        trim: Option<Trim>,
        id: &str,
        fields: &[(F, V)],
    ) -> R<String> {
        self.query(cmds::xadd(key, trim, id, fields)).await
    }

    /// `XLEN key`
    pub async fn xlen(&self, key: impl ToArg) -> R<u64> {
        self.query(cmds::xlen(key)).await
    }

    /// `XRANGE key start end [COUNT]`
    pub async fn xrange(
        &self,
        key: impl ToArg,
        start: &str,
        end: &str,
        count: Option<u64>,
    ) -> R<Vec<StreamEntry>> {
        self.query(cmds::xrange(key, start, end, count)).await
    }

    /// `XREVRANGE key end start [COUNT]`
    pub async fn xrevrange(
        &self,
        key: impl ToArg,
        end: &str,
        start: &str,
        count: Option<u64>,
    ) -> R<Vec<StreamEntry>> {
        self.query(cmds::xrevrange(key, end, start, count)).await
    }

    /// `XREAD [COUNT] [BLOCK] STREAMS key ... id ...`; empty on a block timeout.
    pub async fn xread<K: ToArg, I: ToArg>(
        &self,
        keys: &[K],
        ids: &[I],
        count: Option<u64>,
        block_ms: Option<u64>,
    ) -> R<Vec<StreamRead>> {
        stream_reads(self.query(cmds::xread(keys, ids, count, block_ms)).await?)
    }

    /// `XGROUP CREATE key group id [MKSTREAM]`
    pub async fn xgroup_create(
        &self,
        key: impl ToArg,
        group: impl ToArg,
        id: &str,
        mkstream: bool,
    ) -> R<()> {
        self.query(cmds::xgroup_create(key, group, id, mkstream))
            .await
    }

    /// `XGROUP DESTROY key group`
    pub async fn xgroup_destroy(&self, key: impl ToArg, group: impl ToArg) -> R<bool> {
        self.query(cmds::xgroup_destroy(key, group)).await
    }

    /// `XREADGROUP GROUP group consumer [COUNT] [BLOCK] [NOACK] STREAMS key ... id ...`
    #[allow(clippy::too_many_arguments, reason = "mirrors the command's options")]
    pub async fn xreadgroup<K: ToArg, I: ToArg>(
        &self,
        group: impl ToArg,
        consumer: impl ToArg,
        keys: &[K],
        ids: &[I],
        count: Option<u64>,
        block_ms: Option<u64>,
        noack: bool,
    ) -> R<Vec<StreamRead>> {
        stream_reads(
            self.query(cmds::xreadgroup(
                group, consumer, keys, ids, count, block_ms, noack,
            ))
            .await?,
        )
    }

    /// `XACK key group id [id ...]`
    pub async fn xack<I: ToArg>(&self, key: impl ToArg, group: impl ToArg, ids: &[I]) -> R<u64> {
        self.query(cmds::xack(key, group, ids)).await
    }

    /// `XPENDING key group` summary.
    pub async fn xpending(&self, key: impl ToArg, group: impl ToArg) -> R<PendingSummary> {
        self.query(cmds::xpending(key, group)).await
    }

    /// `XDEL key id [id ...]`
    pub async fn xdel<I: ToArg>(&self, key: impl ToArg, ids: &[I]) -> R<u64> {
        self.query(cmds::xdel(key, ids)).await
    }

    /// `XTRIM key MAXLEN ...`: how many entries were removed.
    pub async fn xtrim(&self, key: impl ToArg, trim: Trim) -> R<u64> {
        self.query(cmds::xtrim(key, trim)).await
    }

    // ------------------------------------------------------------ scripting, pub/sub

    /// `EVAL script numkeys key ... arg ...`
    pub async fn eval<T: FromReply, K: ToArg, A: ToArg>(
        &self,
        script: &str,
        keys: &[K],
        args: &[A],
    ) -> R<T> {
        self.query(cmds::eval(script, keys, args)).await
    }

    /// `SCRIPT LOAD script`: its SHA1.
    pub async fn script_load(&self, script: &str) -> R<String> {
        self.query(cmds::script_load(script)).await
    }

    /// `PUBLISH channel message`: how many subscribers received it.
    pub async fn publish(&self, channel: impl ToArg, message: impl ToArg) -> R<u64> {
        self.query(cmds::publish(channel, message)).await
    }
}

/// `(member, score)` pairs from a RESP2 flat array or RESP3 nested pairs.
fn with_scores<T: FromReply>(frame: crate::resp::Frame) -> R<Vec<(T, f64)>> {
    use crate::resp::Frame;
    let items = crate::value::elements(frame)?;
    if items.iter().all(|f| matches!(f, Frame::Array(_))) {
        return items.into_iter().map(<(T, f64)>::from_reply).collect();
    }
    if items.len() % 2 != 0 {
        return Err(Error::Type {
            found: format!("array of {}", items.len()),
            into: "Vec<(member, score)>",
        });
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(m), Some(s)) = (it.next(), it.next()) {
        out.push((T::from_reply(m)?, f64::from_reply(s)?));
    }
    Ok(out)
}

fn arg_bytes(a: &impl ToArg) -> Bytes {
    let mut b = bytes::BytesMut::new();
    a.write_arg(&mut b);
    let start = b.iter().position(|&c| c == b'\n').map_or(0, |i| i + 1);
    Bytes::copy_from_slice(&b[start..b.len().saturating_sub(2)])
}

/// A stream over a cursor-paged command: calls `page(cursor)` until the cursor comes back 0,
/// yielding each page's items in order.
fn cursor_stream<T, F, Fut>(page: F) -> impl Stream<Item = R<T>> + Send + 'static
where
    T: Send + 'static,
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R<(u64, Vec<T>)>> + Send,
{
    struct State<T, F> {
        page: F,
        cursor: Option<u64>,
        buffered: VecDeque<T>,
    }
    futures::stream::unfold(
        State {
            page,
            cursor: Some(0),
            buffered: VecDeque::new(),
        },
        |mut st| async move {
            loop {
                if let Some(item) = st.buffered.pop_front() {
                    return Some((Ok(item), st));
                }
                let cursor = st.cursor?;
                match (st.page)(cursor).await {
                    Ok((next, items)) => {
                        st.buffered.extend(items);
                        st.cursor = (next != 0).then_some(next);
                    }
                    Err(e) => {
                        st.cursor = None;
                        return Some((Err(e), st));
                    }
                }
            }
        },
    )
}

/// `s` as a glob pattern matching itself (for `MATCH`): `*`, `?`, `[`, `]` and `\` escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
