//! Option and reply types of the typed commands.

use std::time::{Duration, SystemTime};

use super::{Millis, UnixMillis};
use crate::cmd::Cmd;
use crate::resp::Frame;
use crate::{Error, FromReply};

/// Expiry of a key set with a value (`SET`, `GETEX`).
///
/// Durations go to the server in milliseconds (`PX`), rounded up; a duration or time Redis
/// cannot represent makes the command fail before it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Expires this long from now: `PX`.
    In(Duration),
    /// Expires at this time: `PXAT`.
    At(SystemTime),
    /// `KEEPTTL` (SET) or `PERSIST` (GETEX).
    Keep,
}

impl Expiry {
    pub(crate) fn push(self, c: &mut Cmd, keep: &'static str) {
        match self {
            Expiry::In(d) => c.push(("PX", Millis(d))),
            Expiry::At(t) => c.push(("PXAT", UnixMillis(t))),
            Expiry::Keep => c.push(keep),
        }
    }
}

/// A condition on whether `SET`/`ZADD` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Only if the key (member) does not exist: `NX`.
    NotExists,
    /// Only if it exists: `XX`.
    Exists,
}

impl Condition {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Condition::NotExists => "NX",
            Condition::Exists => "XX",
        }
    }
}

/// Options of `SET`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Expiry.
    pub expiry: Option<Expiry>,
    /// Condition.
    pub condition: Option<Condition>,
    /// Return the old value (`GET`).
    pub get: bool,
}

/// An end of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The head.
    Left,
    /// The tail.
    Right,
}

impl Side {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Side::Left => "LEFT",
            Side::Right => "RIGHT",
        }
    }
}

/// Options of `ZADD`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZaddOptions {
    /// `NX` or `XX`.
    pub condition: Option<Condition>,
    /// `GT` (true) or `LT` (false): only update when the new score is greater / less.
    pub compare_gt: Option<bool>,
    /// `CH`: count changed members, not only added ones.
    pub changed: bool,
}

/// Trimming of a stream on `XADD`/`XTRIM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trim {
    /// `MAXLEN = n`
    MaxLen(u64),
    /// `MAXLEN ~ n`: at least n, trimmed in whole nodes (cheaper).
    MaxLenApprox(u64),
}

impl Trim {
    pub(crate) fn push(self, c: &mut Cmd) {
        match self {
            Trim::MaxLen(n) => c.push(("MAXLEN", ("=", n))),
            Trim::MaxLenApprox(n) => c.push(("MAXLEN", ("~", n))),
        }
    }
}

/// A key's time to live, from `PTTL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist (`-2`).
    Missing,
    /// The key exists and never expires (`-1`).
    Persistent,
    /// The key expires in this long (millisecond precision).
    Expires(Duration),
}

impl FromReply for Ttl {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        match frame {
            Frame::Integer(-2) => Ok(Ttl::Missing),
            Frame::Integer(-1) => Ok(Ttl::Persistent),
            Frame::Integer(ms) if ms >= 0 => Ok(Ttl::Expires(Duration::from_millis(ms as u64))),
            other => Err(crate::value::mismatch::<Ttl>(&other)),
        }
    }
}

impl Ttl {
    /// The remaining time, for a key that expires.
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Ttl::Expires(d) => Some(d),
            _ => None,
        }
    }
}
