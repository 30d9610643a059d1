//! The crate's one error type.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::ConfigError;

/// A boxed error from user code (a component, a hook).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors returned by jupiter-core.
///
/// Each variant prints only its own level; the cause is available through
/// [`std::error::Error::source`]. Binaries print the whole chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration file, environment override or dynamic value is invalid.
    #[error(transparent)]
    Config(ConfigError),

    /// A call to etcd failed.
    #[error("etcd {op} at {endpoints}")]
    Etcd {
        /// What we were doing ("connect", "get prefix", "watch", ...).
        op: &'static str,
        /// The endpoints the client was configured with.
        endpoints: String,
        /// The client's error.
        #[source]
        source: Box<etcd_client::Error>,
    },

    /// A call did not complete in time.
    #[error("{what} did not complete within {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The deadline that passed.
        after: Duration,
    },

    /// A listener could not be bound.
    #[error("cannot bind {what} to {addr}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address from the configuration.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// An I/O error outside configuration loading.
    #[error("{what}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Logging or tracing could not be installed or changed.
    #[error("logging: {0}")]
    Logging(String),

    /// A component of the application failed.
    #[error("component {name:?} failed")]
    Component {
        /// The component's name.
        name: String,
        /// Its error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether this error is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// Whether retrying the same operation may succeed (transient network and server errors).
    /// Invalid configuration is never retryable.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Etcd { .. } | Error::Timeout { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ),
            _ => false,
        }
    }

    /// The configuration error inside, if this is one.
    pub fn as_config(&self) -> Option<&ConfigError> {
        match self {
            Error::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}
