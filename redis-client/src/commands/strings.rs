//! String commands.

use std::time::Duration;

use super::{Expiry, Millis, SetOptions, commands, known};
use crate::cmd::ToArg;

commands! {
    /// `GET key` — `Option<T>` for a key that may be missing.
    fn get<T>(key: impl ToArg) -> T {
        known!("GET", 32).arg(key)
    }

    /// `SET key value`
    fn set(key: impl ToArg, value: impl ToArg) -> () {
        known!("SET", 96).arg(key).arg(value)
    }

    /// `SET key value [NX|XX] [GET] [PX|PXAT|KEEPTTL]`: with `NX`/`XX` the reply is null
    /// when not set, with `GET` the old value.
    fn set_with<T>(key: impl ToArg, value: impl ToArg, options: SetOptions) -> T {
        let mut c = known!("SET", 112).arg(key).arg(value);
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

    /// `SETNX key value`: whether it was set.
    fn setnx(key: impl ToArg, value: impl ToArg) -> bool {
        known!("SETNX", 96).arg(key).arg(value)
    }

    /// `PSETEX key milliseconds value`: sets the value with a time to live (rounded up to
    /// whole milliseconds).
    fn setex(key: impl ToArg, ttl: Duration, value: impl ToArg) -> () {
        known!("PSETEX", 96).arg(key).arg(Millis(ttl)).arg(value)
    }

    /// `MGET key [key ...]` — e.g. `Vec<Option<String>>`. In cluster mode the keys may span
    /// slots: one `MGET` per slot, in parallel, replies in the caller's order.
    fn mget<T>(keys: &[impl ToArg]) -> T {
        known!("MGET", 32 * keys.len()).arg(keys)
    }

    /// `MSET key value [key value ...]`. In cluster mode the keys may span slots (one `MSET`
    /// per slot: atomic per slot only).
    fn mset(pairs: &[(impl ToArg, impl ToArg)]) -> () {
        known!("MSET", 64 * pairs.len()).arg(pairs)
    }

    /// `MSETNX key value [key value ...]`: whether all were set (none are if any exists).
    /// Atomic, so in cluster mode every key must be in one slot.
    fn msetnx(pairs: &[(impl ToArg, impl ToArg)]) -> bool {
        known!("MSETNX", 64 * pairs.len()).arg(pairs)
    }

    /// `INCR key`
    fn incr(key: impl ToArg) -> i64 {
        known!("INCR", 32).arg(key)
    }

    /// `INCRBY key increment`
    fn incr_by(key: impl ToArg, by: i64) -> i64 {
        known!("INCRBY", 40).arg(key).arg(by)
    }

    /// `INCRBYFLOAT key increment`
    fn incr_by_float(key: impl ToArg, by: f64) -> f64 {
        known!("INCRBYFLOAT", 48).arg(key).arg(by)
    }

    /// `DECR key`
    fn decr(key: impl ToArg) -> i64 {
        known!("DECR", 32).arg(key)
    }

    /// `DECRBY key decrement`
    fn decr_by(key: impl ToArg, by: i64) -> i64 {
        known!("DECRBY", 40).arg(key).arg(by)
    }

    /// `APPEND key value`: the new length.
    fn append(key: impl ToArg, value: impl ToArg) -> u64 {
        known!("APPEND", 64).arg(key).arg(value)
    }

    /// `STRLEN key`
    fn strlen(key: impl ToArg) -> u64 {
        known!("STRLEN", 32).arg(key)
    }

    /// `GETRANGE key start end`
    fn getrange<T>(key: impl ToArg, start: i64, end: i64) -> T {
        known!("GETRANGE", 48).arg(key).arg(start).arg(end)
    }

    /// `SETRANGE key offset value`: the new length.
    fn setrange(key: impl ToArg, offset: u64, value: impl ToArg) -> u64 {
        known!("SETRANGE", 64).arg(key).arg(offset).arg(value)
    }

    /// `GETDEL key`
    fn getdel<T>(key: impl ToArg) -> T {
        known!("GETDEL", 32).arg(key)
    }

    /// `GETEX key [PX|PXAT|PERSIST]`: the value, its expiry changed (`Expiry::Keep` removes it).
    fn getex<T>(key: impl ToArg, expiry: Option<Expiry>) -> T {
        let mut c = known!("GETEX", 48).arg(key);
        if let Some(e) = expiry {
            e.push(&mut c, "PERSIST");
        }
        c
    }
}
