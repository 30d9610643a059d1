//! The crate's one error type.

use std::time::Duration;

use bytes::Bytes;

use crate::resp::ProtocolError;

/// Errors from the Redis client.
///
/// Each variant prints only its own level; the cause is in [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error reply (`ERR ...`, `WRONGTYPE ...`, `NOSCRIPT ...`).
    #[error("server error: {}", String::from_utf8_lossy(.0))]
    Server(Bytes),

    /// No reply within the command timeout, queueing included.
    #[error("no reply within {0:?}")]
    Timeout(Duration),

    /// The connection broke while the command was in flight; it may or may not have run.
    #[error("connection to {addr} lost")]
    ConnectionLost {
        /// The server.
        addr: String,
        /// Why.
        #[source]
        source: Option<std::io::Error>,
    },

    /// The server could not be reached (or the handshake failed).
    #[error("cannot connect to {addr}")]
    Connect {
        /// The server.
        addr: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },

    /// The server sent malformed or oversized protocol data; the connection was replaced.
    #[error("malformed reply from {addr}")]
    Protocol {
        /// The server.
        addr: String,
        /// What was wrong.
        #[source]
        source: ProtocolError,
    },

    /// An I/O error.
    #[error("i/o error talking to {addr}")]
    Io {
        /// The server.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The reply does not convert into the requested Rust type.
    #[error("cannot convert {found} reply into {into}")]
    Type {
        /// The frame's type (and a short excerpt).
        found: String,
        /// The Rust type.
        into: &'static str,
    },

    /// The client was closed.
    #[error("client closed")]
    Closed,

    /// A shadow request the shadow policy refused; nothing was sent.
    #[error(transparent)]
    ShadowRefused(#[from] jupiter_core::shadow::ShadowRefused),

    /// A shadow request for a command whose keys cannot all be mapped into the shadow key
    /// space (a whole-keyspace command such as `FLUSHDB` or `KEYS`, `SORT … BY`/`STORE`, a
    /// command the server does not know); nothing was sent.
    #[error("shadow traffic refused for {command}: {reason}")]
    ShadowUnmappable {
        /// The command, as named by the caller (upper case).
        command: String,
        /// Why its keys cannot be mapped.
        reason: &'static str,
    },

    /// Invalid configuration or arguments.
    #[error("{0}")]
    Invalid(String),

    /// Authentication failed.
    #[error("authentication failed: {}", String::from_utf8_lossy(.0))]
    Auth(Bytes),
}

impl Error {
    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// Whether the same command may succeed if retried: connection problems and timeouts, and
    /// the server's transient errors (`LOADING`, `BUSY`, `TRYAGAIN`, `CLUSTERDOWN`,
    /// `MASTERDOWN`). Only retry commands that are safe to run twice.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Timeout(_)
            | Error::ConnectionLost { .. }
            | Error::Connect { .. }
            | Error::Io { .. } => true,
            Error::Server(msg) => ["LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN"]
                .iter()
                .any(|p| msg.starts_with(p.as_bytes())),
            _ => false,
        }
    }

    /// The error code of a server error: its first word (`ERR`, `WRONGTYPE`, `NOSCRIPT`).
    pub fn server_code(&self) -> Option<&str> {
        match self {
            Error::Server(msg) => std::str::from_utf8(msg.split(|b| *b == b' ').next()?).ok(),
            _ => None,
        }
    }

    /// A copy for another waiter: the same variant and text (an I/O error keeps its kind and
    /// message). Used to hand one connect failure to every queued request.
    pub(crate) fn clone_lossy(&self) -> Error {
        let io = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        match self {
            Error::Server(b) => Error::Server(b.clone()),
            Error::Timeout(d) => Error::Timeout(*d),
            Error::ConnectionLost { addr, source } => Error::ConnectionLost {
                addr: addr.clone(),
                source: source.as_ref().map(io),
            },
            Error::Connect { addr, source } => Error::Connect {
                addr: addr.clone(),
                source: Box::new(source.clone_lossy()),
            },
            Error::Protocol { addr, source } => Error::Protocol {
                addr: addr.clone(),
                source: source.clone(),
            },
            Error::Io { addr, source } => Error::Io {
                addr: addr.clone(),
                source: io(source),
            },
            Error::Type { found, into } => Error::Type {
                found: found.clone(),
                into,
            },
            Error::Closed => Error::Closed,
            Error::ShadowRefused(r) => Error::ShadowRefused(r.clone()),
            Error::ShadowUnmappable { command, reason } => Error::ShadowUnmappable {
                command: command.clone(),
                reason,
            },
            Error::Invalid(s) => Error::Invalid(s.clone()),
            Error::Auth(b) => Error::Auth(b.clone()),
        }
    }

    /// The bounded result code for metrics.
    pub(crate) fn metric_code(&self) -> jupiter_core::metrics::Code {
        use jupiter_core::metrics::Code;
        match self {
            Error::Timeout(_) => Code::TIMEOUT,
            Error::ConnectionLost { .. }
            | Error::Connect { .. }
            | Error::Io { .. }
            | Error::Closed => Code::UNAVAILABLE,
            Error::ShadowRefused(_) | Error::ShadowUnmappable { .. } => Code::SHADOW_REFUSED,
            Error::Type { .. } | Error::Invalid(_) => Code::INVALID,
            Error::Protocol { .. } => Code::from_static("ProtocolError"),
            Error::Auth(_) => Code::from_static("AuthError"),
            Error::Server(_) => match self.server_code() {
                Some("WRONGTYPE") => Code::from_static("WRONGTYPE"),
                Some("NOSCRIPT") => Code::from_static("NOSCRIPT"),
                Some("MOVED") => Code::from_static("MOVED"),
                Some("ASK") => Code::from_static("ASK"),
                Some("LOADING") => Code::from_static("LOADING"),
                Some("BUSY") => Code::from_static("BUSY"),
                Some("OOM") => Code::from_static("OOM"),
                _ => Code::from_static("ERR"),
            },
        }
    }
}
