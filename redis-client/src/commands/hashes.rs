//! Hash commands.

use super::{commands, known};
use crate::cmd::ToArg;

commands! {
    /// `HSET key field value [field value ...]`: how many fields were added.
    fn hset(key: impl ToArg, pairs: &[(impl ToArg, impl ToArg)]) -> u64 {
        known!("HSET", 32 + 64 * pairs.len()).arg(key).arg(pairs)
    }

    /// `HSETNX key field value`: whether the field was set.
    fn hsetnx(key: impl ToArg, field: impl ToArg, value: impl ToArg) -> bool {
        known!("HSETNX", 96).arg(key).arg(field).arg(value)
    }

    /// `HGET key field`
    fn hget<T>(key: impl ToArg, field: impl ToArg) -> T {
        known!("HGET", 64).arg(key).arg(field)
    }

    /// `HMGET key field [field ...]`
    fn hmget<T>(key: impl ToArg, fields: &[impl ToArg]) -> T {
        known!("HMGET", 32 + 32 * fields.len()).arg(key).arg(fields)
    }

    /// `HGETALL key` — e.g. `HashMap<String, String>`.
    fn hgetall<T>(key: impl ToArg) -> T {
        known!("HGETALL", 32).arg(key)
    }

    /// `HDEL key field [field ...]`: how many were removed.
    fn hdel(key: impl ToArg, fields: &[impl ToArg]) -> u64 {
        known!("HDEL", 32 + 32 * fields.len()).arg(key).arg(fields)
    }

    /// `HEXISTS key field`
    fn hexists(key: impl ToArg, field: impl ToArg) -> bool {
        known!("HEXISTS", 64).arg(key).arg(field)
    }

    /// `HINCRBY key field increment`
    fn hincr_by(key: impl ToArg, field: impl ToArg, by: i64) -> i64 {
        known!("HINCRBY", 64).arg(key).arg(field).arg(by)
    }

    /// `HINCRBYFLOAT key field increment`
    fn hincr_by_float(key: impl ToArg, field: impl ToArg, by: f64) -> f64 {
        known!("HINCRBYFLOAT", 64).arg(key).arg(field).arg(by)
    }

    /// `HKEYS key`
    fn hkeys<T>(key: impl ToArg) -> T {
        known!("HKEYS", 32).arg(key)
    }

    /// `HVALS key`
    fn hvals<T>(key: impl ToArg) -> T {
        known!("HVALS", 32).arg(key)
    }

    /// `HLEN key`
    fn hlen(key: impl ToArg) -> u64 {
        known!("HLEN", 32).arg(key)
    }

    /// `HSTRLEN key field`
    fn hstrlen(key: impl ToArg, field: impl ToArg) -> u64 {
        known!("HSTRLEN", 64).arg(key).arg(field)
    }
}
