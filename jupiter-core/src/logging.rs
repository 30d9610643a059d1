//! `tracing` set-up for binaries: human or JSON output, level changeable at run time.
//!
//! Libraries never call this; they only emit events.

use std::fmt;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::Error;

/// Output format of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable, one line per event.
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The `[log]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct LogConfig {
    /// `EnvFilter` directives: `info`, `warn,redis_client=debug`. Default is `info`.
    pub level: String,
    /// Default is `human`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Human,
        }
    }
}

/// The subscriber under the output layers; extra layers ([`init_with`]) are built for it.
pub type LogBase = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// An output layer for [`init_with`] (e.g. OpenTelemetry's).
pub type BoxedLayer = Box<dyn Layer<LogBase> + Send + Sync>;

/// Changes the log level of the installed subscriber. Cheap to clone.
#[derive(Clone)]
pub struct LogHandle {
    reload: reload::Handle<EnvFilter, Registry>,
    current: Arc<Mutex<String>>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("level", &self.level())
            .finish()
    }
}

impl LogHandle {
    /// Replaces the filter directives (`debug`, `info,redis_client=trace`).
    ///
    /// # Errors
    ///
    /// Invalid directives; the previous level stays.
    pub fn set_level(&self, directives: &str) -> Result<(), Error> {
        let filter = parse_filter(directives)?;
        self.reload
            .reload(filter)
            .map_err(|e| Error::Logging(e.to_string()))?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = directives.trim().to_owned();
        tracing::info!(level = directives.trim(), "log level changed");
        Ok(())
    }

    /// The current directives.
    pub fn level(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn parse_filter(directives: &str) -> Result<EnvFilter, Error> {
    EnvFilter::builder()
        .parse(directives.trim())
        .map_err(|e| Error::Logging(format!("invalid log level {:?}: {e}", directives.trim())))
}

/// Whether log lines get colour codes: only on a terminal, and never under `NO_COLOR` (set
/// and not empty, <https://no-color.org>). A file, a pipe, journald or `kubectl logs` gets
/// plain text.
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `config.level`.
///
/// # Errors
///
/// Invalid level directives, or a global subscriber is already installed.
pub fn init(config: &LogConfig) -> Result<LogHandle, Error> {
    init_with(config, Vec::new())
}

/// Like [`init`], with extra output layers.
///
/// # Errors
///
/// As [`init`].
pub fn init_with(config: &LogConfig, extra: Vec<BoxedLayer>) -> Result<LogHandle, Error> {
    let level = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| config.level.clone());
    let (filter, reload) = reload::Layer::new(parse_filter(&level)?);
    let output: BoxedLayer = match config.format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .boxed(),
    };
    let mut layers = vec![output];
    layers.extend(extra);
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .map_err(|e| Error::Logging(format!("cannot install the log subscriber: {e}")))?;
    Ok(LogHandle {
        reload,
        current: Arc::new(Mutex::new(level)),
    })
}
