//! Generic key commands.

use std::time::{Duration, SystemTime};

use super::{Millis, Ttl, UnixMillis, commands, known};
use crate::cmd::ToArg;

commands! {
    /// `DEL key [key ...]`: how many were removed. In cluster mode the keys may span slots.
    fn del(keys: &[impl ToArg]) -> u64 {
        known!("DEL", 32 * keys.len()).arg(keys)
    }

    /// `UNLINK key [key ...]`: how many were removed (freed in the background). In cluster
    /// mode the keys may span slots.
    fn unlink(keys: &[impl ToArg]) -> u64 {
        known!("UNLINK", 32 * keys.len()).arg(keys)
    }

    /// `EXISTS key [key ...]`: how many exist. In cluster mode the keys may span slots.
    fn exists(keys: &[impl ToArg]) -> u64 {
        known!("EXISTS", 32 * keys.len()).arg(keys)
    }

    /// `TOUCH key [key ...]`: how many exist (their access time updated). In cluster mode the
    /// keys may span slots.
    fn touch(keys: &[impl ToArg]) -> u64 {
        known!("TOUCH", 32 * keys.len()).arg(keys)
    }

    /// `PEXPIRE key milliseconds`: whether the time to live was set (rounded up to whole
    /// milliseconds).
    fn expire(key: impl ToArg, ttl: Duration) -> bool {
        known!("PEXPIRE", 40).arg(key).arg(Millis(ttl))
    }

    /// `PEXPIREAT key unix-milliseconds`: whether the expiry was set.
    fn expire_at(key: impl ToArg, at: SystemTime) -> bool {
        known!("PEXPIREAT", 40).arg(key).arg(UnixMillis(at))
    }

    /// `PTTL key`: the time to live, with millisecond precision.
    fn ttl(key: impl ToArg) -> Ttl {
        known!("PTTL", 32).arg(key)
    }

    /// `PERSIST key`: whether an expiry was removed.
    fn persist(key: impl ToArg) -> bool {
        known!("PERSIST", 32).arg(key)
    }

    /// `TYPE key`: `string`, `list`, `set`, `zset`, `hash`, `stream` or `none`.
    fn key_type(key: impl ToArg) -> String {
        known!("TYPE", 32).arg(key)
    }

    /// `RENAME key newkey`
    fn rename(key: impl ToArg, new_key: impl ToArg) -> () {
        known!("RENAME", 64).arg(key).arg(new_key)
    }

    /// `RENAMENX key newkey`: whether it was renamed.
    fn renamenx(key: impl ToArg, new_key: impl ToArg) -> bool {
        known!("RENAMENX", 64).arg(key).arg(new_key)
    }

    /// `COPY source destination [REPLACE]`: whether it was copied.
    fn copy(source: impl ToArg, destination: impl ToArg, replace: bool) -> bool {
        known!("COPY", 64)
            .arg(source)
            .arg(destination)
            .arg(replace.then_some("REPLACE"))
    }

    /// `KEYS pattern`: blocks the server while it walks the whole keyspace; prefer
    /// [`Client::scan`](crate::Client::scan). In cluster mode, the keys of every primary.
    fn keys<T>(pattern: impl ToArg) -> T {
        known!("KEYS", 32).arg(pattern)
    }

    /// `RANDOMKEY`: a random key, or null in an empty database.
    fn randomkey<T>() -> T {
        known!("RANDOMKEY", 0)
    }
}
