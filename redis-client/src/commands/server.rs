//! Server and connection commands.

use super::{commands, known};
use crate::cmd::ToArg;

commands! {
    /// `PING`
    fn ping() -> () {
        known!("PING", 0)
    }

    /// `ECHO message`
    fn echo<T>(message: impl ToArg) -> T {
        known!("ECHO", 32).arg(message)
    }

    /// `DBSIZE`: keys in the database (in cluster mode, summed over every primary).
    fn dbsize() -> u64 {
        known!("DBSIZE", 0)
    }

    /// `FLUSHDB`: removes every key of the database (in cluster mode, on every primary).
    fn flushdb() -> () {
        known!("FLUSHDB", 0)
    }

    /// `FLUSHALL`: removes every key of every database (in cluster mode, on every primary).
    fn flushall() -> () {
        known!("FLUSHALL", 0)
    }

    /// `INFO [section]` as text.
    fn info(section: Option<&str>) -> String {
        known!("INFO", 16).arg(section)
    }

    /// `TIME`: the server's clock as `(unix seconds, microseconds)`.
    fn time() -> (u64, u64) {
        known!("TIME", 0)
    }
}
