//! List commands. The blocking ones run on a dedicated connection (never stalling a shared
//! one) and wait as long as asked; a zero timeout waits until served.

use std::time::Duration;

use super::{Seconds, Side, commands, known};
use crate::cmd::ToArg;

commands! {
    /// `LPUSH key element [element ...]`: the new length.
    fn lpush(key: impl ToArg, values: &[impl ToArg]) -> u64 {
        known!("LPUSH", 32 + 64 * values.len()).arg(key).arg(values)
    }

    /// `RPUSH key element [element ...]`: the new length.
    fn rpush(key: impl ToArg, values: &[impl ToArg]) -> u64 {
        known!("RPUSH", 32 + 64 * values.len()).arg(key).arg(values)
    }

    /// `LPUSHX key element [element ...]`: the new length; 0 (nothing pushed) for a missing
    /// key.
    fn lpushx(key: impl ToArg, values: &[impl ToArg]) -> u64 {
        known!("LPUSHX", 32 + 64 * values.len()).arg(key).arg(values)
    }

    /// `RPUSHX key element [element ...]`
    fn rpushx(key: impl ToArg, values: &[impl ToArg]) -> u64 {
        known!("RPUSHX", 32 + 64 * values.len()).arg(key).arg(values)
    }

    /// `LPOP key [count]`
    fn lpop<T>(key: impl ToArg, count: Option<u64>) -> T {
        known!("LPOP", 40).arg(key).arg(count)
    }

    /// `RPOP key [count]`
    fn rpop<T>(key: impl ToArg, count: Option<u64>) -> T {
        known!("RPOP", 40).arg(key).arg(count)
    }

    /// `LRANGE key start stop`
    fn lrange<T>(key: impl ToArg, start: i64, stop: i64) -> T {
        known!("LRANGE", 48).arg(key).arg(start).arg(stop)
    }

    /// `LLEN key`
    fn llen(key: impl ToArg) -> u64 {
        known!("LLEN", 32).arg(key)
    }

    /// `LINDEX key index`
    fn lindex<T>(key: impl ToArg, index: i64) -> T {
        known!("LINDEX", 40).arg(key).arg(index)
    }

    /// `LSET key index element`
    fn lset(key: impl ToArg, index: i64, value: impl ToArg) -> () {
        known!("LSET", 64).arg(key).arg(index).arg(value)
    }

    /// `LREM key count element`: how many were removed.
    fn lrem(key: impl ToArg, count: i64, value: impl ToArg) -> u64 {
        known!("LREM", 64).arg(key).arg(count).arg(value)
    }

    /// `LTRIM key start stop`
    fn ltrim(key: impl ToArg, start: i64, stop: i64) -> () {
        known!("LTRIM", 48).arg(key).arg(start).arg(stop)
    }

    /// `LINSERT key BEFORE|AFTER pivot element`: the new length, -1 without the pivot.
    fn linsert(key: impl ToArg, before: bool, pivot: impl ToArg, value: impl ToArg) -> i64 {
        known!("LINSERT", 96)
            .arg(key)
            .arg(if before { "BEFORE" } else { "AFTER" })
            .arg(pivot)
            .arg(value)
    }

    /// `LPOS key element`: the first index of the element.
    fn lpos(key: impl ToArg, value: impl ToArg) -> Option<u64> {
        known!("LPOS", 64).arg(key).arg(value)
    }

    /// `LMOVE source destination LEFT|RIGHT LEFT|RIGHT`: the element moved.
    fn lmove<T>(source: impl ToArg, destination: impl ToArg, from: Side, to: Side) -> T {
        known!("LMOVE", 64)
            .arg(source)
            .arg(destination)
            .arg(from.word())
            .arg(to.word())
    }

    /// `BLPOP key [key ...] timeout`: `(key, element)`, or `None` once `timeout` passed
    /// (`Duration::ZERO`: wait until served).
    fn blpop<T>(keys: &[impl ToArg], timeout: Duration) -> Option<(String, T)> {
        known!("BLPOP", 32 * keys.len() + 16).arg(keys).arg(Seconds(timeout))
    }

    /// `BRPOP key [key ...] timeout`
    fn brpop<T>(keys: &[impl ToArg], timeout: Duration) -> Option<(String, T)> {
        known!("BRPOP", 32 * keys.len() + 16).arg(keys).arg(Seconds(timeout))
    }

    /// `BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout`: the element, or `None` once
    /// `timeout` passed.
    fn blmove<T>(
        source: impl ToArg,
        destination: impl ToArg,
        from: Side,
        to: Side,
        timeout: Duration,
    ) -> Option<T> {
        known!("BLMOVE", 80)
            .arg(source)
            .arg(destination)
            .arg(from.word())
            .arg(to.word())
            .arg(Seconds(timeout))
    }
}
