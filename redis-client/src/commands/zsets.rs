//! Sorted set commands. Replies with scores come as `(member, score)` pairs under both
//! protocols (RESP2 sends them flat, RESP3 as pairs).

use std::time::Duration;

use super::{Seconds, ZaddOptions, commands, known};
use crate::cmd::ToArg;
use crate::resp::Frame;
use crate::{Error, FromReply};

commands! {
    /// `ZADD key score member [score member ...]`: how many were added.
    fn zadd(key: impl ToArg, members: &[(f64, impl ToArg)]) -> u64 {
        zadd_with(key, ZaddOptions::default(), members)
    }

    /// `ZADD key [NX|XX] [GT|LT] [CH] score member [score member ...]`: how many were added
    /// (or changed, with `CH`).
    fn zadd_with(key: impl ToArg, options: ZaddOptions, members: &[(f64, impl ToArg)]) -> u64 {
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

    /// `ZREM key member [member ...]`: how many were removed.
    fn zrem(key: impl ToArg, members: &[impl ToArg]) -> u64 {
        known!("ZREM", 32 + 32 * members.len()).arg(key).arg(members)
    }

    /// `ZSCORE key member`
    fn zscore(key: impl ToArg, member: impl ToArg) -> Option<f64> {
        known!("ZSCORE", 64).arg(key).arg(member)
    }

    /// `ZMSCORE key member [member ...]`
    fn zmscore(key: impl ToArg, members: &[impl ToArg]) -> Vec<Option<f64>> {
        known!("ZMSCORE", 32 + 32 * members.len()).arg(key).arg(members)
    }

    /// `ZINCRBY key increment member`: the new score.
    fn zincr_by(key: impl ToArg, by: f64, member: impl ToArg) -> f64 {
        known!("ZINCRBY", 64).arg(key).arg(by).arg(member)
    }

    /// `ZCARD key`
    fn zcard(key: impl ToArg) -> u64 {
        known!("ZCARD", 32).arg(key)
    }

    /// `ZCOUNT key min max` (`"-inf"`, `"(1.5"` and the like are accepted as bounds).
    fn zcount(key: impl ToArg, min: impl ToArg, max: impl ToArg) -> u64 {
        known!("ZCOUNT", 64).arg(key).arg(min).arg(max)
    }

    /// `ZRANGE key start stop`: members by rank.
    fn zrange<T>(key: impl ToArg, start: i64, stop: i64) -> T {
        known!("ZRANGE", 64).arg(key).arg(start).arg(stop)
    }

    /// `ZRANGE key start stop WITHSCORES`: `(member, score)` pairs by rank.
    fn zrange_with_scores<T>(key: impl ToArg, start: i64, stop: i64) -> Vec<(T, f64)>
        => with_scores
    {
        zrange(key, start, stop).arg("WITHSCORES")
    }

    /// `ZRANGE key start stop REV`: members by rank, highest first.
    fn zrevrange<T>(key: impl ToArg, start: i64, stop: i64) -> T {
        zrange(key, start, stop).arg("REV")
    }

    /// `ZRANGE key min max BYSCORE [LIMIT offset count]`
    fn zrange_by_score<T>(
        key: impl ToArg,
        min: impl ToArg,
        max: impl ToArg,
        limit: Option<(i64, i64)>,
    ) -> T {
        let mut c = known!("ZRANGE", 80).arg(key).arg(min).arg(max).arg("BYSCORE");
        if let Some((offset, count)) = limit {
            c.push(("LIMIT", (offset, count)));
        }
        c
    }

    /// `ZRANK key member`
    fn zrank(key: impl ToArg, member: impl ToArg) -> Option<u64> {
        known!("ZRANK", 64).arg(key).arg(member)
    }

    /// `ZREVRANK key member`
    fn zrevrank(key: impl ToArg, member: impl ToArg) -> Option<u64> {
        known!("ZREVRANK", 64).arg(key).arg(member)
    }

    /// `ZREMRANGEBYSCORE key min max`: how many were removed.
    fn zremrange_by_score(key: impl ToArg, min: impl ToArg, max: impl ToArg) -> u64 {
        known!("ZREMRANGEBYSCORE", 64).arg(key).arg(min).arg(max)
    }

    /// `ZREMRANGEBYRANK key start stop`: how many were removed.
    fn zremrange_by_rank(key: impl ToArg, start: i64, stop: i64) -> u64 {
        known!("ZREMRANGEBYRANK", 64).arg(key).arg(start).arg(stop)
    }

    /// `ZPOPMIN key [count]`: `(member, score)` pairs.
    fn zpopmin<T>(key: impl ToArg, count: Option<u64>) -> Vec<(T, f64)> => with_scores {
        known!("ZPOPMIN", 40).arg(key).arg(count)
    }

    /// `ZPOPMAX key [count]`: `(member, score)` pairs.
    fn zpopmax<T>(key: impl ToArg, count: Option<u64>) -> Vec<(T, f64)> => with_scores {
        known!("ZPOPMAX", 40).arg(key).arg(count)
    }

    /// `BZPOPMIN key [key ...] timeout`: `(key, member, score)`, or `None` once `timeout`
    /// passed (`Duration::ZERO`: wait until served). Runs on a dedicated connection.
    fn bzpopmin<T>(keys: &[impl ToArg], timeout: Duration) -> Option<(String, T, f64)> {
        known!("BZPOPMIN", 32 * keys.len() + 16).arg(keys).arg(Seconds(timeout))
    }

    /// `BZPOPMAX key [key ...] timeout`
    fn bzpopmax<T>(keys: &[impl ToArg], timeout: Duration) -> Option<(String, T, f64)> {
        known!("BZPOPMAX", 32 * keys.len() + 16).arg(keys).arg(Seconds(timeout))
    }

    /// `ZUNIONSTORE destination numkeys key [key ...]`: the size of the result.
    fn zunionstore(destination: impl ToArg, keys: &[impl ToArg]) -> u64 {
        known!("ZUNIONSTORE", 48 + 32 * keys.len())
            .arg(destination)
            .arg(keys.len())
            .arg(keys)
    }

    /// `ZINTERSTORE destination numkeys key [key ...]`: the size of the result.
    fn zinterstore(destination: impl ToArg, keys: &[impl ToArg]) -> u64 {
        known!("ZINTERSTORE", 48 + 32 * keys.len())
            .arg(destination)
            .arg(keys.len())
            .arg(keys)
    }
}

/// `(member, score)` pairs from a RESP2 flat array or RESP3 nested pairs.
pub(crate) fn with_scores<T: FromReply>(frame: Frame) -> Result<Vec<(T, f64)>, Error> {
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
