use std::fmt;

use super::tree::Location;

/// A configuration error: where (file and line, environment variable or dynamic key), which key
/// (dotted path), and what is wrong.
///
/// Displays as `app.toml:12:5: redis.main.pool-size: invalid type: string "x", expected usize`.
///
/// One pointer wide: the details are boxed, so `Result<_, ConfigError>` stays small.
#[derive(Debug)]
pub struct ConfigError(Box<Details>);

#[derive(Debug)]
struct Details {
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
        ConfigError(Box::new(Details {
            location,
            key,
            kind,
        }))
    }

    /// Where the offending value came from, if known.
    pub fn location(&self) -> Option<&Location> {
        self.0.location.as_ref()
    }

    /// The dotted key path, e.g. `redis.main.pool-size` (empty for document-level errors).
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// What is wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    pub(crate) fn with_key_prefix(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            let key = &mut self.0.key;
            *key = if key.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{key}")
            };
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.location {
            None | Some(Location::Default) => {}
            Some(loc) => write!(f, "{loc}: ")?,
        }
        if !self.0.key.is_empty() {
            write!(f, "{}: ", self.0.key)?;
        }
        match &self.0.kind {
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
        match &self.0.kind {
            ErrorKind::Read(e) => Some(e),
            _ => None,
        }
    }
}
