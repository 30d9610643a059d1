//! Stream commands. `XREAD`/`XREADGROUP` with a block time run on a dedicated connection.

use std::time::Duration;

use super::{Millis, Trim, commands, known};
use crate::cmd::ToArg;
use crate::stream::{PendingSummary, StreamEntry, StreamRead, stream_reads};

commands! {
    /// `XADD key [MAXLEN ...] id field value [field value ...]` (`id` is usually `"*"`): the
    /// entry's id.
    fn xadd(
        key: impl ToArg,
        trim: Option<Trim>,
        id: &str,
        fields: &[(impl ToArg, impl ToArg)],
    ) -> String {
        let mut c = known!("XADD", 48 + 64 * fields.len()).arg(key);
        if let Some(t) = trim {
            t.push(&mut c);
        }
        c.arg(id).arg(fields)
    }

    /// `XLEN key`
    fn xlen(key: impl ToArg) -> u64 {
        known!("XLEN", 32).arg(key)
    }

    /// `XRANGE key start end [COUNT count]` (`"-"` and `"+"` for the ends).
    fn xrange(key: impl ToArg, start: &str, end: &str, count: Option<u64>) -> Vec<StreamEntry> {
        let mut c = known!("XRANGE", 64).arg(key).arg(start).arg(end);
        if let Some(n) = count {
            c.push(("COUNT", n));
        }
        c
    }

    /// `XREVRANGE key end start [COUNT count]`
    fn xrevrange(key: impl ToArg, end: &str, start: &str, count: Option<u64>) -> Vec<StreamEntry> {
        let mut c = known!("XREVRANGE", 64).arg(key).arg(end).arg(start);
        if let Some(n) = count {
            c.push(("COUNT", n));
        }
        c
    }

    /// `XREAD [COUNT count] [BLOCK ms] STREAMS key [key ...] id [id ...]`: empty when the
    /// block time passed (`Some(Duration::ZERO)`: block until served).
    fn xread(
        keys: &[impl ToArg],
        ids: &[impl ToArg],
        count: Option<u64>,
        block: Option<Duration>,
    ) -> Vec<StreamRead> => stream_reads {
        let mut c = known!("XREAD", 64 + 48 * keys.len());
        if let Some(n) = count {
            c.push(("COUNT", n));
        }
        if let Some(d) = block {
            c.push(("BLOCK", Millis(d)));
        }
        c.arg("STREAMS").arg(keys).arg(ids)
    }

    /// `XGROUP CREATE key group id [MKSTREAM]`
    fn xgroup_create(key: impl ToArg, group: impl ToArg, id: &str, mkstream: bool) -> () {
        known!("XGROUP CREATE", 64)
            .arg(key)
            .arg(group)
            .arg(id)
            .arg(mkstream.then_some("MKSTREAM"))
    }

    /// `XGROUP DESTROY key group`: whether it existed.
    fn xgroup_destroy(key: impl ToArg, group: impl ToArg) -> bool {
        known!("XGROUP DESTROY", 64).arg(key).arg(group)
    }

    /// `XREADGROUP GROUP group consumer [COUNT count] [BLOCK ms] [NOACK] STREAMS key [key ...]
    /// id [id ...]` (`">"` for new messages).
    #[allow(clippy::too_many_arguments, reason = "mirrors the command's options")]
    fn xreadgroup(
        group: impl ToArg,
        consumer: impl ToArg,
        keys: &[impl ToArg],
        ids: &[impl ToArg],
        count: Option<u64>,
        block: Option<Duration>,
        noack: bool,
    ) -> Vec<StreamRead> => stream_reads {
        let mut c = known!("XREADGROUP", 96 + 48 * keys.len())
            .arg("GROUP")
            .arg(group)
            .arg(consumer);
        if let Some(n) = count {
            c.push(("COUNT", n));
        }
        if let Some(d) = block {
            c.push(("BLOCK", Millis(d)));
        }
        if noack {
            c.push("NOACK");
        }
        c.arg("STREAMS").arg(keys).arg(ids)
    }

    /// `XACK key group id [id ...]`: how many were acknowledged.
    fn xack(key: impl ToArg, group: impl ToArg, ids: &[impl ToArg]) -> u64 {
        known!("XACK", 64 + 24 * ids.len()).arg(key).arg(group).arg(ids)
    }

    /// `XPENDING key group` (the summary form).
    fn xpending(key: impl ToArg, group: impl ToArg) -> PendingSummary {
        known!("XPENDING", 64).arg(key).arg(group)
    }

    /// `XDEL key id [id ...]`: how many were removed.
    fn xdel(key: impl ToArg, ids: &[impl ToArg]) -> u64 {
        known!("XDEL", 32 + 24 * ids.len()).arg(key).arg(ids)
    }

    /// `XTRIM key MAXLEN [=|~] n`: how many entries were removed.
    fn xtrim(key: impl ToArg, trim: Trim) -> u64 {
        let mut c = known!("XTRIM", 48).arg(key);
        trim.push(&mut c);
        c
    }

    /// `XAUTOCLAIM key group consumer min-idle-time start [COUNT count]`: claims entries idle
    /// for at least `min_idle`; the reply is `(next start id, claimed entries, deleted ids)`.
    fn xautoclaim(
        key: impl ToArg,
        group: impl ToArg,
        consumer: impl ToArg,
        min_idle: Duration,
        start: &str,
        count: Option<u64>,
    ) -> (String, Vec<StreamEntry>, Vec<String>) {
        let mut c = known!("XAUTOCLAIM", 96)
            .arg(key)
            .arg(group)
            .arg(consumer)
            .arg(Millis(min_idle))
            .arg(start);
        if let Some(n) = count {
            c.push(("COUNT", n));
        }
        c
    }
}
