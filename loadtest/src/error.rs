//! The crate's one error type: a scenario that is not valid, or a run that could not start.
//!
//! Each variant prints only its own level; the error behind it, if any, is its
//! [`source`](std::error::Error::source), and the binary prints the whole chain.

use std::fmt;
use std::path::{Path, PathBuf};

use jupiter_core::BoxError;
use jupiter_core::config::{ErrorKind as ConfigErrorKind, Location};

/// Why a scenario could not be loaded, or a run could not start.
///
/// A run that started always ends with a report: failed requests are figures in it, not
/// errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The scenario file is not valid. Displays as `FILE:LINE:COLUMN: KEY: MESSAGE`, leaving
    /// out what is not known (`scenario.toml:14:1: scenarios[0].steps[0].target: no target
    /// named "db"`).
    #[error("{}{message}", located(.file, .line, .column, .key))]
    Scenario {
        /// The scenario file.
        file: PathBuf,
        /// 1-based line of the offending value, when known.
        line: Option<usize>,
        /// 1-based column of the offending value, when known (and `line` is).
        column: Option<usize>,
        /// The key path as written, `scenarios[0].steps[1].target`; empty when the problem is
        /// the file as a whole.
        key: String,
        /// What is wrong.
        message: String,
        /// The error behind it: the file could not be read, a feeder's CSV is broken.
        #[source]
        source: Option<BoxError>,
    },
    /// A command-line override names what the scenario does not have.
    #[error("{option}: {message}")]
    Override {
        /// The option as given, `--target db=redis://…`.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// A live target did not acknowledge shadow traffic; no load was sent.
    #[error(
        "shadow probe: target {target:?} {reason}; refusing to send shadow traffic to a live \
         target that may not keep it apart. Fix the target, or set live = false on it if it \
         holds no live data, or [run] shadow = false"
    )]
    Probe {
        /// The target's name.
        target: String,
        /// What the target did, following its name: `did not answer the probe`.
        reason: String,
        /// The error behind it, if the probe request failed.
        #[source]
        source: Option<BoxError>,
    },
    /// A target could not be set up; no load was sent.
    #[error("target {target:?} could not be set up")]
    Target {
        /// The target's name.
        target: String,
        /// Why: the protocol client's own error.
        #[source]
        source: BoxError,
    },
    /// `[output] prometheus` (or `--prometheus`) could not listen.
    #[error("cannot serve prometheus metrics on {addr}")]
    Prometheus {
        /// The address as given.
        addr: String,
        /// The listener's error.
        #[source]
        source: std::io::Error,
    },
    /// The JSON report could not be encoded.
    #[error("cannot encode the JSON report")]
    Report(#[source] serde_json::Error),
    /// A distributed run could not find, start or hear from its workers.
    #[error("distributed run: {0}")]
    Distributed(String),
    /// A report given to `loadtest merge` cannot be read or does not fit with the others.
    #[error("{}: {message}", .file.display())]
    Merge {
        /// The report file (the first one, for a problem of the set as a whole).
        file: std::path::PathBuf,
        /// What is wrong, naming the key where there is one.
        message: String,
    },
    /// The thread that paces an open-model scenario could not be started; the run stopped.
    #[error("cannot start the pacer thread of scenario {scenario:?}")]
    Pacer {
        /// The scenario's name.
        scenario: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the scenario (file or command line, or a report given to `merge`) is at fault,
    /// rather than the systems under test or this machine: the binary exits with 2 for these,
    /// 3 for the others.
    pub fn is_invalid_scenario(&self) -> bool {
        matches!(
            self,
            Error::Scenario { .. } | Error::Override { .. } | Error::Merge { .. }
        )
    }

    /// A scenario error at `location` (or in `file` as a whole when not known).
    pub(crate) fn scenario(
        file: &Path,
        location: Option<&Location>,
        key: String,
        problem: Problem,
    ) -> Error {
        let (file, line, column) = match location {
            // Line 0: the file as a whole.
            Some(Location::File { path, line, column }) if *line > 0 => {
                (path.to_path_buf(), Some(*line), Some(*column))
            }
            Some(Location::File { path, .. }) => (path.to_path_buf(), None, None),
            _ => (file.to_owned(), None, None),
        };
        Error::Scenario {
            file,
            line,
            column,
            key,
            message: problem.message,
            source: problem.source,
        }
    }

    /// The scenario error for what the configuration reader refused in `file`.
    ///
    /// The reader's error is taken apart into the fields (location, key, message) rather than
    /// kept as the source: its text repeats the location and key, so the chain would print
    /// them twice. The error behind it (an unreadable file) stays the source.
    pub(crate) fn from_config(file: &Path, e: jupiter_core::Error) -> Error {
        let whole = |p: Problem| Error::scenario(file, None, String::new(), p);
        let Some(c) = e.as_config() else {
            return whole(Problem::caused_by("cannot be read as a scenario", e));
        };
        let message = match c.kind() {
            // Kept whole: the I/O error is its source.
            ConfigErrorKind::Read(_) => {
                return whole(Problem::caused_by("cannot read the scenario file", e));
            }
            ConfigErrorKind::Syntax(m) => format!("invalid TOML: {m}"),
            ConfigErrorKind::UnknownKey {
                suggestion: Some(s),
            } => format!("unknown key; did you mean \"{s}\"?"),
            ConfigErrorKind::UnknownKey { suggestion: None } => "unknown key".into(),
            ConfigErrorKind::Invalid(m) => m.clone(),
            ConfigErrorKind::Validation(m) => format!("rejected: {m}"),
            // A kind this crate does not know yet: its own text, location and all.
            _ => return whole(e.to_string().into()),
        };
        Error::scenario(file, c.location(), c.key().to_owned(), message.into())
    }
}

fn located<'a>(
    file: &'a Path,
    line: &Option<usize>,
    column: &Option<usize>,
    key: &'a str,
) -> Located<'a> {
    Located {
        file,
        line: *line,
        column: *column,
        key,
    }
}

/// The location part of an [`Error::Scenario`]'s text: `FILE:LINE:COLUMN: KEY: `.
struct Located<'a> {
    file: &'a Path,
    line: Option<usize>,
    column: Option<usize>,
    key: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        Ok(())
    }
}

/// What is wrong, and the error behind it, if any: a scenario error without its location, or
/// why a target failed the shadow probe (a phrase that follows the target's name).
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) message: String,
    pub(crate) source: Option<BoxError>,
}

impl Problem {
    pub(crate) fn new(message: impl Into<String>) -> Problem {
        Problem {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn caused_by(message: impl Into<String>, source: impl Into<BoxError>) -> Problem {
        Problem {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl From<String> for Problem {
    fn from(message: String) -> Problem {
        Problem::new(message)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_scenario_error_names_what_it_knows_of_file_line_column_and_key() {
        let at = |line, column, key: &str| Error::Scenario {
            file: "s.toml".into(),
            line,
            column,
            key: key.into(),
            message: "bad".into(),
            source: None,
        };
        assert_eq!(
            at(Some(3), Some(7), "scenarios[0].vus").to_string(),
            "s.toml:3:7: scenarios[0].vus: bad"
        );
        assert_eq!(at(Some(3), None, "run").to_string(), "s.toml:3: run: bad");
        assert_eq!(at(None, None, "").to_string(), "s.toml: bad");
        assert!(at(None, None, "").is_invalid_scenario());
    }

    #[test]
    fn a_target_error_keeps_the_client_error_as_its_source() {
        let e = Error::Target {
            target: "cache".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(e.to_string(), "target \"cache\" could not be set up");
        let source = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            source.map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        assert!(!e.is_invalid_scenario());
    }
}
