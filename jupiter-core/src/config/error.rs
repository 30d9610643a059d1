use std::fmt;

use super::tree::Location;

/// A configuration error: where (file and line, environment variable or dynamic key), which key
/// (dotted path), and what is wrong.
///
/// Displays as `app.toml:12:5: redis.main.pool-size: invalid type: string "x", expected usize`.
#[derive(Debug)]
pub struct ConfigError {
    location: Option<Location>,
    key: String,
    kind: ErrorKind,
}

/// What is wrong with a configuration value.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file could not be read.
    Read(std::io::Error),
    /// TOML syntax error.
    Syntax(String),
    /// A key no section knows.
    UnknownKey {
        /// The closest known key, if one is close.
        suggestion: Option<&'static str>,
    },
    /// A value of the wrong type or out of range (serde's message).
    Invalid(String),
    /// A layer replaced a table with a scalar or the reverse.
    TypeChange {
        /// The type before.
        from: &'static str,
        /// The type the new layer gave.
        to: &'static str,
        /// Where the previous value came from.
        previous: Location,
    },
    /// A section's own validation refused the value.
    Validation(String),
    /// An environment variable name that maps to no key.
    BadEnvName(String),
}

impl ConfigError {
    pub(crate) fn new(location: Option<Location>, key: String, kind: ErrorKind) -> Self {
        ConfigError {
            location,
            key,
            kind,
        }
    }

    /// Where the offending value came from, if known.
    pub fn location(&self) -> Option<&Location> {
        self.location.as_ref()
    }

    /// The dotted key path, e.g. `redis.main.pool-size` (empty for document-level errors).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub(crate) fn with_key_prefix(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.key = if self.key.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{}", self.key)
            };
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            None | Some(Location::Default) => {}
            Some(loc) => write!(f, "{loc}: ")?,
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        match &self.kind {
            ErrorKind::Read(_) => f.write_str("cannot read config file"),
            ErrorKind::Syntax(m) => write!(f, "invalid TOML: {m}"),
            ErrorKind::UnknownKey {
                suggestion: Some(s),
            } => {
                write!(f, "unknown key; did you mean \"{s}\"?")
            }
            ErrorKind::UnknownKey { suggestion: None } => f.write_str("unknown key"),
            ErrorKind::Invalid(m) => f.write_str(m),
            ErrorKind::TypeChange { from, to, previous } => {
                write!(f, "cannot replace a {from} (from {previous}) with a {to}")
            }
            ErrorKind::Validation(m) => write!(f, "rejected: {m}"),
            ErrorKind::BadEnvName(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Read(e) => Some(e),
            _ => None,
        }
    }
}
