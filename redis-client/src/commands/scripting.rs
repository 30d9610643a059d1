//! Scripting and pub/sub publishing. In cluster mode a script's keys must share one slot; it
//! runs on that slot's primary.

use super::{commands, known};
use crate::cmd::ToArg;

commands! {
    /// `EVAL script numkeys key [key ...] arg [arg ...]`
    fn eval<T>(script: &str, keys: &[impl ToArg], args: &[impl ToArg]) -> T {
        known!("EVAL", script.len() + 32 * (keys.len() + args.len()) + 16)
            .arg(script)
            .arg(keys.len())
            .arg(keys)
            .arg(args)
    }

    /// `EVALSHA sha1 numkeys key [key ...] arg [arg ...]`; see [`Script`](crate::Script),
    /// which loads the script when the server does not know it.
    fn evalsha<T>(sha1: &str, keys: &[impl ToArg], args: &[impl ToArg]) -> T {
        known!("EVALSHA", 64 + 32 * (keys.len() + args.len()))
            .arg(sha1)
            .arg(keys.len())
            .arg(keys)
            .arg(args)
    }

    /// `SCRIPT LOAD script`: its SHA1 (in cluster mode, loaded on every primary).
    fn script_load(script: &str) -> String {
        known!("SCRIPT LOAD", script.len() + 16).arg(script)
    }

    /// `SCRIPT EXISTS sha1 [sha1 ...]`: whether each is loaded.
    fn script_exists(sha1s: &[&str]) -> Vec<bool> {
        known!("SCRIPT EXISTS", 48 * sha1s.len()).arg(sha1s)
    }

    /// `SCRIPT FLUSH` (in cluster mode, on every primary).
    fn script_flush() -> () {
        known!("SCRIPT FLUSH", 0)
    }

    /// `PUBLISH channel message`: how many subscribers received it (in cluster mode, those of
    /// the node it went to; the message reaches every node's subscribers).
    fn publish(channel: impl ToArg, message: impl ToArg) -> u64 {
        known!("PUBLISH", 96).arg(channel).arg(message)
    }

    /// `SPUBLISH shardchannel message`: publishes to a sharded channel (Redis 7), routed in
    /// cluster mode by the channel's slot.
    fn spublish(channel: impl ToArg, message: impl ToArg) -> u64 {
        known!("SPUBLISH", 96).arg(channel).arg(message)
    }
}
