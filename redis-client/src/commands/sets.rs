//! Set commands. In cluster mode the multi-key ones need every key in one slot (a hash tag:
//! `{user}:a`, `{user}:b`).

use super::{commands, known};
use crate::cmd::ToArg;

commands! {
    /// `SADD key member [member ...]`: how many were added.
    fn sadd(key: impl ToArg, members: &[impl ToArg]) -> u64 {
        known!("SADD", 32 + 32 * members.len()).arg(key).arg(members)
    }

    /// `SREM key member [member ...]`: how many were removed.
    fn srem(key: impl ToArg, members: &[impl ToArg]) -> u64 {
        known!("SREM", 32 + 32 * members.len()).arg(key).arg(members)
    }

    /// `SMEMBERS key` — e.g. `HashSet<String>`.
    fn smembers<T>(key: impl ToArg) -> T {
        known!("SMEMBERS", 32).arg(key)
    }

    /// `SISMEMBER key member`
    fn sismember(key: impl ToArg, member: impl ToArg) -> bool {
        known!("SISMEMBER", 64).arg(key).arg(member)
    }

    /// `SMISMEMBER key member [member ...]`
    fn smismember(key: impl ToArg, members: &[impl ToArg]) -> Vec<bool> {
        known!("SMISMEMBER", 32 + 32 * members.len()).arg(key).arg(members)
    }

    /// `SCARD key`
    fn scard(key: impl ToArg) -> u64 {
        known!("SCARD", 32).arg(key)
    }

    /// `SPOP key [count]`
    fn spop<T>(key: impl ToArg, count: Option<u64>) -> T {
        known!("SPOP", 40).arg(key).arg(count)
    }

    /// `SRANDMEMBER key [count]`
    fn srandmember<T>(key: impl ToArg, count: Option<i64>) -> T {
        known!("SRANDMEMBER", 40).arg(key).arg(count)
    }

    /// `SINTER key [key ...]`
    fn sinter<T>(keys: &[impl ToArg]) -> T {
        known!("SINTER", 32 * keys.len()).arg(keys)
    }

    /// `SUNION key [key ...]`
    fn sunion<T>(keys: &[impl ToArg]) -> T {
        known!("SUNION", 32 * keys.len()).arg(keys)
    }

    /// `SDIFF key [key ...]`
    fn sdiff<T>(keys: &[impl ToArg]) -> T {
        known!("SDIFF", 32 * keys.len()).arg(keys)
    }

    /// `SINTERSTORE destination key [key ...]`: the size of the result.
    fn sinterstore(destination: impl ToArg, keys: &[impl ToArg]) -> u64 {
        known!("SINTERSTORE", 32 + 32 * keys.len()).arg(destination).arg(keys)
    }

    /// `SUNIONSTORE destination key [key ...]`: the size of the result.
    fn sunionstore(destination: impl ToArg, keys: &[impl ToArg]) -> u64 {
        known!("SUNIONSTORE", 32 + 32 * keys.len()).arg(destination).arg(keys)
    }

    /// `SDIFFSTORE destination key [key ...]`: the size of the result.
    fn sdiffstore(destination: impl ToArg, keys: &[impl ToArg]) -> u64 {
        known!("SDIFFSTORE", 32 + 32 * keys.len()).arg(destination).arg(keys)
    }

    /// `SMOVE source destination member`: whether it moved.
    fn smove(source: impl ToArg, destination: impl ToArg, member: impl ToArg) -> bool {
        known!("SMOVE", 96).arg(source).arg(destination).arg(member)
    }
}
