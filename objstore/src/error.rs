//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};

/// Everything that can go wrong in objstore, by what the caller can do about it: what the
/// store answers (the same variants on the engine, the server and the client), watches that
/// cannot start or go on, the client's transport, and snapshot files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key does not exist.
    #[error("not found")]
    NotFound,
    /// A condition failed.
    #[error("precondition failed (current revision: {current:?})")]
    Precondition {
        /// The key's current mod revision; `None` if it does not exist.
        current: Option<u64>,
    },
    /// The store is full.
    #[error("store full: {0}")]
    Exhausted(String),
    /// The request was invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server could not be reached (after retries, for reads).
    #[error("objstore unavailable: {0}")]
    Unavailable(String),
    /// Authentication failed or shadow traffic refused.
    #[error("refused: {0}")]
    Refused(String),
    /// A watch fell behind or started outside the kept history: resume from `resume_from`.
    #[error("watch out of range: {message}")]
    OutOfRange {
        /// The server's message.
        message: String,
        /// Where to resume, if the server said.
        resume_from: Option<u64>,
    },
    /// Any other status.
    #[error("objstore error {code:?}: {message}")]
    Other {
        /// The gRPC code.
        code: Code,
        /// Its message.
        message: String,
    },
    /// A watch's start revision is older than the history kept.
    #[error("revision {requested} is compacted; the oldest available is {oldest}")]
    Compacted {
        /// Asked for.
        requested: u64,
        /// Oldest revision still available.
        oldest: u64,
    },
    /// A watch's start revision is in the future.
    #[error("revision {requested} is in the future; the next is {next}")]
    Future {
        /// Asked for.
        requested: u64,
        /// The next revision to be written.
        next: u64,
    },
    /// The watcher fell too far behind and was cut off (in the engine; through the client it
    /// arrives as [`Error::OutOfRange`] with `resume_from`).
    #[error("watcher fell behind; resume from revision {resume_from}")]
    Lagged {
        /// The first revision not delivered.
        resume_from: u64,
    },
    /// Reading or writing a snapshot file failed.
    #[error("snapshot {path}")]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid snapshot (truncated, corrupt, another format).
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Connecting failed; the source says why (a transport error, with its own causes).
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    pub(crate) fn from_status(s: Status, timeout: Duration) -> Error {
        // tonic's own client-side deadline (from `grpc-timeout`) surfaces as CANCELLED; it is
        // the same deadline as ours, so whichever fires first means the same thing.
        // A status the server sent has no source; one with a source was made on this side
        // from what broke beneath gRPC (the connection reset, an HTTP/2 protocol error, TLS
        // bytes where HTTP/2 was expected). tonic gives those UNKNOWN, INTERNAL or CANCELLED
        // by where they surfaced; to a caller they are one thing: the server was not reached.
        if let Some(first) = std::error::Error::source(&s) {
            let mut chain = s.message().to_owned();
            let mut source = Some(first);
            while let Some(e) = source {
                if e.is::<tonic::TimeoutExpired>() {
                    return Error::Timeout(timeout);
                }
                chain.push_str(": ");
                chain.push_str(&e.to_string());
                source = e.source();
            }
            return Error::Unavailable(chain);
        }
        let message = s.message().to_owned();
        // Numbers the server attaches as metadata (never parsed out of its wording).
        let number = |key: &str| {
            s.metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        match s.code() {
            Code::NotFound => Error::NotFound,
            Code::FailedPrecondition => Error::Precondition {
                current: number(crate::protocol::CURRENT_REVISION),
            },
            Code::ResourceExhausted => Error::Exhausted(message),
            Code::InvalidArgument => Error::Invalid(message),
            Code::DeadlineExceeded => Error::Timeout(timeout),
            Code::Unavailable => Error::Unavailable(message),
            Code::Unauthenticated | Code::PermissionDenied => Error::Refused(message),
            Code::OutOfRange => Error::OutOfRange {
                resume_from: number(crate::protocol::RESUME_FROM),
                message,
            },
            code => Error::Other { code, message },
        }
    }

    /// Whether the same call may succeed if made again: the server could not be reached or
    /// did not answer in time. Reads are repeated for [`Error::Unavailable`] already (see the
    /// [client docs](crate::client#retries)); a write that failed this way may or may not have been
    /// applied.
    #[must_use]
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::Timeout(_) | Error::Connect { .. }
        )
    }

    /// Whether the call had no answer within its deadline.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// For [`Error::Precondition`]: the key's current mod revision, as the server reported it;
    /// `None` if the key does not exist (or for any other error).
    #[must_use]
    pub fn current_revision(&self) -> Option<u64> {
        match self {
            Error::Precondition { current, .. } => *current,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_branch_on_kinds_not_text() {
        let timeout = Duration::from_secs(1);
        let precondition = Error::from_status(
            {
                let mut s = Status::failed_precondition("any wording");
                s.metadata_mut()
                    .insert(crate::protocol::CURRENT_REVISION, "42".parse().unwrap());
                s
            },
            timeout,
        );
        assert_eq!(precondition.current_revision(), Some(42));
        assert!(!precondition.retryable());
        let unavailable = Error::from_status(Status::unavailable("down"), timeout);
        assert!(unavailable.retryable() && !unavailable.is_timeout());
        let late = Error::from_status(Status::deadline_exceeded("late"), timeout);
        assert!(late.retryable() && late.is_timeout());
        // A snapshot's OS error stays its source, not part of its text.
        let io = Error::Snapshot {
            path: "/x/store.snap".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(io.to_string(), "snapshot /x/store.snap");
        assert!(std::error::Error::source(&io).is_some());
    }
}
