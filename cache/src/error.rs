//! The crate's error type.

use std::sync::Arc;

/// Errors of the cache. In the default (degraded) mode only shadow refusals and encoding
/// failures of a `put` reach callers; in strict mode L2 failures do too.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// L2 failed (strict mode); the source says why.
    #[error("cache {cache}: L2 {op} failed")]
    L2 {
        /// The cache's name.
        cache: String,
        /// What was being done (`get`, `set`, `delete`).
        op: &'static str,
        /// The backend's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    /// L2 did not answer within `l2-timeout` (strict mode).
    #[error("cache {cache}: L2 {op} timed out after {after:?}")]
    L2Timeout {
        /// The cache's name.
        cache: String,
        /// What was being done.
        op: &'static str,
        /// The timeout.
        after: std::time::Duration,
    },

    /// A value could not be encoded for L2.
    #[error("cache {cache}: cannot encode the value")]
    Encode {
        /// The cache's name.
        cache: String,
        /// Why.
        #[source]
        source: crate::codec::CodecError,
    },

    /// Invalid configuration: the key and what is wrong.
    #[error("cache config: {key}: {message}")]
    Config {
        /// The key (`ttl-jitter`, `refresh-ahead`).
        key: &'static str,
        /// What is wrong.
        message: String,
    },

    /// The `[cache.<name>]` section could not be read; the source names file, line and key.
    #[error("cache config section {section}")]
    ConfigSection {
        /// `cache.<name>`.
        section: String,
        /// Where and why.
        #[source]
        source: jupiter_core::config::ConfigError,
    },
}

impl Error {
    /// Whether the same call may succeed later (L2 failures and timeouts).
    pub fn retryable(&self) -> bool {
        matches!(self, Error::L2 { .. } | Error::L2Timeout { .. })
    }

    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::L2Timeout { .. })
    }
}

/// The error of a fallible load ([`Cache::try_get_or_load`](crate::Cache::try_get_or_load)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError<E> {
    /// The loader failed (shared by every caller that waited for this load).
    #[error("loader failed")]
    Load(#[source] Arc<E>),
    /// The cache failed (strict mode).
    #[error(transparent)]
    Cache(Error),
}
