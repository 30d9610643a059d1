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

    /// A configuration value is invalid: the key and what is wrong with it.
    #[error("redis config: {key}: {message}")]
    Config {
        /// The key (`pool-size`, `url`, `tls.ca-file`).
        key: &'static str,
        /// What is wrong, naming the bad value (never a password).
        message: String,
    },

    /// The `[redis.<name>]` section could not be read; the source names the file, line and
    /// key.
    #[error("redis config section {section}")]
    ConfigSection {
        /// `redis.<name>`.
        section: String,
        /// Where and why (file, line, column, key).
        #[source]
        source: jupiter_core::config::ConfigError,
    },

    /// An argument cannot be sent (a value that does not serialize, a duration Redis cannot
    /// represent); nothing was sent.
    #[error("{command}: {reason}")]
    Argument {
        /// The command.
        command: String,
        /// What is wrong with which argument.
        reason: String,
    },

    /// The command cannot be sent this way (a subscription as a plain command, a blocking
    /// command in a pipeline); the message says what to use instead. Nothing was sent.
    #[error("{command}: {reason}")]
    Unsupported {
        /// The command.
        command: String,
        /// Why, and what to use instead.
        reason: &'static str,
    },

    /// Cluster: the command's keys are in different slots, and it (or a transaction,
    /// a script, a dedicated connection) must run on one. Nothing was sent.
    #[error(
        "{command}: its keys are in slots {first} and {other}, but it must run in one slot; \
         give the keys one hash tag (`{{user1}}:a`, `{{user1}}:b`)"
    )]
    CrossSlot {
        /// The command (or `MULTI` for a transaction).
        command: String,
        /// The first key's slot.
        first: u16,
        /// A slot of another key.
        other: u16,
    },

    /// Cluster: the slot map could not be read from any node, or no node serves the slot.
    #[error("redis cluster: {0}")]
    Cluster(String),

    /// The server refused a step of the connection handshake (`HELLO 3` on Redis 5, a
    /// `SELECT` past the configured databases).
    #[error("{step} refused: {}", String::from_utf8_lossy(.reply))]
    Handshake {
        /// The step (`HELLO 3`, `SELECT`, `CLIENT TRACKING`).
        step: &'static str,
        /// The server's reply.
        reply: Bytes,
    },

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
            Error::Config { key, message } => Error::Config {
                key,
                message: message.clone(),
            },
            // The source is not `Clone`: keep its text under the section's name.
            Error::ConfigSection { section, source } => Error::Config {
                key: "section",
                message: format!("{section}: {source}"),
            },
            Error::Argument { command, reason } => Error::Argument {
                command: command.clone(),
                reason: reason.clone(),
            },
            Error::Unsupported { command, reason } => Error::Unsupported {
                command: command.clone(),
                reason,
            },
            Error::CrossSlot {
                command,
                first,
                other,
            } => Error::CrossSlot {
                command: command.clone(),
                first: *first,
                other: *other,
            },
            Error::Cluster(s) => Error::Cluster(s.clone()),
            Error::Handshake { step, reply } => Error::Handshake {
                step,
                reply: reply.clone(),
            },
            Error::Auth(b) => Error::Auth(b.clone()),
        }
    }

    /// A configuration error for `key`.
    pub(crate) fn config(key: &'static str, message: impl Into<String>) -> Error {
        Error::Config {
            key,
            message: message.into(),
        }
    }

    /// Whether nothing reached the server: the command can be sent again anywhere without
    /// running twice (connect failures, refusals before sending).
    pub(crate) fn not_sent(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::Closed | Error::ShadowRefused(_)
        )
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
            Error::Type { .. }
            | Error::Config { .. }
            | Error::ConfigSection { .. }
            | Error::Argument { .. }
            | Error::Unsupported { .. }
            | Error::CrossSlot { .. } => Code::INVALID,
            Error::Cluster(_) => Code::UNAVAILABLE,
            Error::Protocol { .. } => Code::from_static("ProtocolError"),
            Error::Auth(_) | Error::Handshake { .. } => Code::from_static("AuthError"),
            Error::Server(msg) => server_metric_code(msg),
        }
    }
}

/// The bounded metrics code of an error reply: its first word when it is one of a known
/// few, else `ERR`.
pub(crate) fn server_metric_code(msg: &[u8]) -> jupiter_core::metrics::Code {
    use jupiter_core::metrics::Code;
    let word = msg.split(|b| *b == b' ').next().unwrap_or_default();
    match word {
        b"WRONGTYPE" => Code::from_static("WRONGTYPE"),
        b"NOSCRIPT" => Code::from_static("NOSCRIPT"),
        b"MOVED" => Code::from_static("MOVED"),
        b"ASK" => Code::from_static("ASK"),
        b"TRYAGAIN" => Code::from_static("TRYAGAIN"),
        b"CLUSTERDOWN" => Code::from_static("CLUSTERDOWN"),
        b"CROSSSLOT" => Code::from_static("CROSSSLOT"),
        b"LOADING" => Code::from_static("LOADING"),
        b"BUSY" => Code::from_static("BUSY"),
        b"OOM" => Code::from_static("OOM"),
        _ => Code::from_static("ERR"),
    }
}

/// `e` and its causes, `outer: inner: innermost` (for messages that carry one error into
/// another as text, where `source()` would be lost).
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
