//! Configuration: TOML files, then environment overrides, then an optional dynamic source
//! (etcd), read as typed sections through serde, with hot reload.
//!
//! # Layers
//!
//! 1. TOML documents, in the order given: embedded defaults ([`ConfigBuilder::toml`]), then files
//!    ([`ConfigBuilder::file`]). Tables merge key by key; later values win.
//! 2. Environment variables: `JUPITER_` + the key path in capitals, `__` between keys.
//!    `JUPITER_REDIS__MAIN__POOL_SIZE=16` sets `redis.main.pool-size`. A key's `-` is written
//!    `_` (environment names allow no `-`); matching is case-insensitive and treats `-` and `_`
//!    alike, so every key can be overridden. Values are text, typed by the section that reads
//!    them; text starting with `[` or `{` is a TOML array or inline table; a list may also be
//!    written `a,b,c`.
//! 3. A dynamic source ([`DynamicSource`], e.g. [`EtcdSource`]): keys under a prefix, each a
//!    dotted key path with a value written as in the environment, or a whole TOML document when
//!    the key ends in `.toml`.
//!
//! A value that changes a table into a scalar (or the reverse) is an error, never a silent drop.
//!
//! # Errors
//!
//! Every error names where the value came from and its key path:
//! `app.toml:12:5: redis.main.pool-size: invalid type: string "x", expected u32`,
//! `environment variable JUPITER_REDIS__MAIN__POOL_SIZE: redis.main.pool-size: invalid value:
//! expected a non-negative integer, found "x"`. Unknown keys are refused in every struct, with a
//! suggestion when the key looks like a typo.
//!
//! # Reload
//!
//! Each change of the dynamic source builds a whole new tree (file + environment + the source's
//! complete current content) and checks every subscribed section against it. If any section
//! fails to deserialize or validate, the whole reload is rejected: the old tree stays, the error
//! is logged and counted (`config_reload_total{result="rejected"}`) and kept for
//! [`Config::last_reload_error`]. Otherwise the new tree replaces the old one atomically and only
//! subscribers whose section changed are notified. A key deleted from the source disappears from
//! the tree (the file's value, or the default, applies again).
//!
//! # Examples
//!
//! ```
//! use jupiter_core::config::Config;
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize)]
//! #[serde(default, rename_all = "kebab-case")]
//! struct Redis {
//!     url: String,
//!     pool_size: usize,
//! }
//!
//! impl Default for Redis {
//!     fn default() -> Self {
//!         Redis { url: "redis://127.0.0.1:6379".into(), pool_size: 4 }
//!     }
//! }
//!
//! let config = Config::builder()
//!     .toml("defaults", "[redis.main]\npool-size = 8\n")
//!     .env_vars([("JUPITER_REDIS__MAIN__URL".to_string(), "redis://10.0.0.1".to_string())])
//!     .build()?;
//! let redis: Redis = config.get("redis.main")?;
//! assert_eq!(redis.pool_size, 8);
//! assert_eq!(redis.url, "redis://10.0.0.1");
//! # Ok::<(), jupiter_core::Error>(())
//! ```

mod de;
mod error;
mod etcd;
pub(crate) mod redact;
mod tree;
pub mod types;

use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use self::de::NodeDe;
pub use self::error::{ConfigError, ErrorKind};
pub use self::etcd::EtcdSource;
pub use self::redact::redact_url;
pub use self::tree::Location;
use self::tree::{Node, nest, parse_document, raw_value, split_path};
use crate::Error;
use crate::metrics::Metrics;

/// Default prefix of environment overrides.
pub const DEFAULT_ENV_PREFIX: &str = "JUPITER";

/// Default time [`Config::attach`] waits for a dynamic source's first content.
pub const DEFAULT_FIRST_LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a [`Config`]; see the [module docs](self) for the layers.
#[derive(Debug)]
#[must_use]
pub struct ConfigBuilder {
    documents: Vec<DocumentSource>,
    env_prefix: String,
    env: EnvSource,
    metrics: Option<Metrics>,
}

#[derive(Debug)]
enum DocumentSource {
    File { path: PathBuf, required: bool },
    Text { name: String, text: String },
}

#[derive(Debug)]
enum EnvSource {
    Process,
    Given(Vec<(String, String)>),
    None,
}

impl ConfigBuilder {
    /// Adds a TOML file; it must exist.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.documents.push(DocumentSource::File {
            path: path.into(),
            required: true,
        });
        self
    }

    /// Adds a TOML file that is skipped when it does not exist.
    pub fn optional_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.documents.push(DocumentSource::File {
            path: path.into(),
            required: false,
        });
        self
    }

    /// Adds a TOML document given as text (embedded defaults); `name` appears in errors.
    pub fn toml(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.documents.push(DocumentSource::Text {
            name: name.into(),
            text: text.into(),
        });
        self
    }

    /// Sets the prefix of environment overrides. Default is `JUPITER`.
    pub fn env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.env_prefix = prefix.into();
        self
    }

    /// Reads overrides from these variables instead of the process environment.
    pub fn env_vars<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env = EnvSource::Given(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Ignores the environment.
    pub fn no_env(mut self) -> Self {
        self.env = EnvSource::None;
        self
    }

    /// Registry for `config_reload_total`. Default is [`Metrics::global`].
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Reads the documents and the environment.
    ///
    /// # Errors
    ///
    /// A file that cannot be read, invalid TOML, a malformed environment variable name, or a
    /// layer that changes a table into a scalar.
    pub fn build(self) -> Result<Config, Error> {
        let mut root = Node::empty_table(Location::Default);
        for doc in &self.documents {
            let node = match doc {
                DocumentSource::File { path, required } => match std::fs::read_to_string(path) {
                    Ok(text) => parse_document(&text, file_location(path))?,
                    Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(ConfigError::new(
                            Some(file_location(path)),
                            String::new(),
                            ErrorKind::Read(e),
                        )
                        .into());
                    }
                },
                DocumentSource::Text { name, text } => {
                    parse_document(text, file_location(Path::new(name)))?
                }
            };
            root.merge(node, &mut Vec::new())?;
        }
        let vars = match self.env {
            EnvSource::Process => std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            EnvSource::Given(vars) => vars,
            EnvSource::None => Vec::new(),
        };
        if let Some(env) = env_layer(&self.env_prefix, vars)? {
            root.merge(env, &mut Vec::new())?;
        }
        let metrics = self.metrics.unwrap_or_else(|| Metrics::global().clone());
        let reloads = Family::<Vec<(&'static str, String)>, Counter>::default();
        metrics.register(
            "config_reload",
            "Dynamic configuration reloads, by source and result.",
            reloads.clone(),
        );
        let base = Arc::new(root);
        Ok(Config {
            inner: Arc::new(Inner {
                current: ArcSwap::new(base.clone()),
                base,
                state: Mutex::new(State::default()),
                reloads,
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }
}

fn file_location(path: &Path) -> Location {
    Location::File {
        path: Arc::from(path),
        line: 0,
        column: 0,
    }
}

/// Builds the environment layer: `PREFIX_A__B_C=v` sets `a.b-c` (matched loosely).
fn env_layer(prefix: &str, mut vars: Vec<(String, String)>) -> Result<Option<Node>, ConfigError> {
    let lead = format!("{prefix}_");
    vars.retain(|(k, _)| k.starts_with(&lead) && k.len() > lead.len());
    vars.sort();
    let mut layer: Option<Node> = None;
    for (var, value) in vars {
        let origin = Location::Env {
            var: Arc::from(var.as_str()),
        };
        let rest = &var[lead.len()..];
        let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || s.starts_with('_') || s.ends_with('_'))
        {
            return Err(ConfigError::new(
                Some(origin),
                String::new(),
                ErrorKind::BadEnvName(format!(
                    "cannot map to a key: separate keys with exactly two underscores, e.g. {prefix}_REDIS__MAIN__POOL_SIZE"
                )),
            ));
        }
        let node = nest(
            &segments,
            raw_value(&value, &origin).map_err(|e| e.with_key_prefix(&segments.join(".")))?,
        );
        match &mut layer {
            None => layer = Some(node),
            Some(l) => l.merge(node, &mut Vec::new())?,
        }
    }
    Ok(layer)
}

/// The loaded configuration. Cheap to clone (an `Arc` inside); clones share state, so a reload
/// is seen through every clone.
#[derive(Clone)]
pub struct Config {
    inner: Arc<Inner>,
}

struct Inner {
    /// Documents + environment: every reload starts from this.
    base: Arc<Node>,
    /// The tree sections are read from; replaced whole on reload.
    current: ArcSwap<Node>,
    state: Mutex<State>,
    reloads: Family<Vec<(&'static str, String)>, Counter>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

#[derive(Default)]
struct State {
    slots: Vec<Box<dyn Slot>>,
    last_error: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config").finish_non_exhaustive()
    }
}

/// What a reload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new tree replaced the old; this many subscribed sections changed.
    Applied {
        /// Sections whose subscribers were notified.
        changed_sections: usize,
    },
    /// The new content equals the current tree.
    Unchanged,
}

impl Config {
    /// A builder with no documents, the process environment, prefix `JUPITER`.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            documents: Vec::new(),
            env_prefix: DEFAULT_ENV_PREFIX.to_owned(),
            env: EnvSource::Process,
            metrics: None,
        }
    }

    /// Reads the section at `path` (`"redis.main"`; `""` is the whole tree) as `T`. A missing
    /// section reads as an empty table, so `#[serde(default)]` sections get their defaults.
    ///
    /// # Errors
    ///
    /// The section does not deserialize as `T`; the error names the location and key.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        Ok(read_section(&self.inner.current.load(), path)?)
    }

    /// [`get`](Self::get) with the configuration error itself, for a crate that wraps it in
    /// an error of its own (naming the section) and keeps it as the source.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn section<T: DeserializeOwned>(&self, path: &str) -> Result<T, ConfigError> {
        read_section(&self.inner.current.load(), path)
    }

    /// Where the value at `path` came from; a number in the path indexes an array
    /// (`scenarios.0.steps.1.target`). For errors found after deserialization (a reference to
    /// a name defined elsewhere), so they too can name the file and line.
    pub fn locate(&self, path: &str) -> Option<Location> {
        self.inner
            .current
            .load()
            .lookup_indexed(path)
            .map(|n| n.origin.clone())
    }

    /// Whether the tree has a value at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.inner.current.load().lookup(path).is_some()
    }

    /// Subscribes to the section at `path`: the receiver holds the current value and sees every
    /// reload that changes this section.
    ///
    /// # Errors
    ///
    /// The current section does not deserialize as `T`.
    pub fn subscribe<T>(&self, path: &str) -> Result<watch::Receiver<Arc<T>>, Error>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.subscribe_validated(path, |_: &T| Ok(()))
    }

    /// Like [`subscribe`](Self::subscribe), with a check every new value must pass; a reload
    /// whose value fails it is rejected as a whole.
    ///
    /// # Errors
    ///
    /// The current section does not deserialize as `T` or fails `validate`.
    pub fn subscribe_validated<T, F>(
        &self,
        path: &str,
        validate: F,
    ) -> Result<watch::Receiver<Arc<T>>, Error>
    where
        T: DeserializeOwned + Send + Sync + 'static,
        F: Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    {
        let mut state = self.inner.lock_state();
        let root = self.inner.current.load();
        let slot = TypedSlot {
            path: path.to_owned(),
            tx: None,
            validate: Box::new(validate),
        };
        let value = slot.read(&root)?;
        let (tx, rx) = watch::channel(Arc::new(value));
        state.slots.push(Box::new(TypedSlot {
            tx: Some(tx),
            ..slot
        }));
        Ok(rx)
    }

    /// Starts a dynamic source and waits up to `first_load_timeout` for its first content, which
    /// is applied before this returns. Later changes apply in the background for as long as the
    /// `Config` lives.
    ///
    /// # Errors
    ///
    /// The source delivered nothing in time, or its first content is invalid.
    pub async fn attach<S: DynamicSource>(
        &self,
        source: S,
        first_load_timeout: Duration,
    ) -> Result<(), Error> {
        let name = source.name();
        let (tx, mut rx) = mpsc::channel::<DynamicLayer>(8);
        let runner = tokio::spawn(Box::new(source).run(tx));
        let first = match tokio::time::timeout(first_load_timeout, rx.recv()).await {
            Ok(Some(layer)) => layer,
            Ok(None) | Err(_) => {
                runner.abort();
                return Err(Error::Timeout {
                    what: format!("first load from {name}"),
                    after: first_load_timeout,
                });
            }
        };
        if let Err(e) = self.apply(&first) {
            runner.abort();
            return Err(e.into());
        }
        let weak = Arc::downgrade(&self.inner);
        let applier = tokio::spawn(async move {
            while let Some(layer) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                // Errors are logged and counted inside.
                let _ = (Config { inner }).apply(&layer);
            }
        });
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([runner, applier]);
        Ok(())
    }

    /// Applies a dynamic source's complete content: builds a new tree from the documents, the
    /// environment and `layer`, checks every subscribed section, and swaps the tree atomically.
    ///
    /// [`attach`](Self::attach) calls this for each change; call it directly for a source that
    /// is not a [`DynamicSource`].
    ///
    /// # Errors
    ///
    /// The layer does not merge, or a subscribed section fails to deserialize or validate. The
    /// current tree is then left as it was, and the rejection is logged and counted.
    pub fn apply(&self, layer: &DynamicLayer) -> Result<ReloadOutcome, ConfigError> {
        let result = self.try_apply(layer);
        let label = match &result {
            Ok(ReloadOutcome::Applied { .. }) => "applied",
            Ok(ReloadOutcome::Unchanged) => "unchanged",
            Err(_) => "rejected",
        };
        self.inner
            .reloads
            .get_or_create(&vec![
                ("source", layer.source.to_string()),
                ("result", label.to_owned()),
            ])
            .inc();
        let mut state = self.inner.lock_state();
        match &result {
            Ok(outcome) => {
                tracing::debug!(source = %layer.source, ?outcome, "configuration reloaded");
                state.last_error = None;
            }
            Err(e) => {
                tracing::warn!(source = %layer.source, error = %e, "configuration reload rejected; keeping the previous one");
                state.last_error = Some(e.to_string());
            }
        }
        result
    }

    fn try_apply(&self, layer: &DynamicLayer) -> Result<ReloadOutcome, ConfigError> {
        let mut state = self.inner.lock_state();
        let mut root = (*self.inner.base).clone();
        root.merge(layer.to_node()?, &mut Vec::new())?;
        let old = self.inner.current.load_full();
        if old.same(&root) {
            return Ok(ReloadOutcome::Unchanged);
        }
        state.slots.retain(|s| !s.is_closed());
        let mut ready = Vec::new();
        for (i, slot) in state.slots.iter().enumerate() {
            let (before, after) = (old.lookup(slot.path()), root.lookup(slot.path()));
            let changed = match (before, after) {
                (Some(a), Some(b)) => !a.same(b),
                (None, None) => false,
                _ => true,
            };
            if changed {
                ready.push((i, slot.prepare(&root)?));
            }
        }
        self.inner.current.store(Arc::new(root));
        let changed_sections = ready.len();
        for (i, value) in ready {
            state.slots[i].commit(value);
        }
        Ok(ReloadOutcome::Applied { changed_sections })
    }

    /// Why the last reload was rejected, if it was.
    pub fn last_reload_error(&self) -> Option<String> {
        self.inner.lock_state().last_error.clone()
    }

    /// The effective configuration as JSON, with secret-looking values redacted (keys such as
    /// `password`, `token`, `secret`; passwords inside URLs). With `sources`, each value is
    /// `{"value": ..., "from": "app.toml:3:1"}`.
    pub fn effective(&self, sources: bool) -> serde_json::Value {
        redact::to_json(&self.inner.current.load(), sources)
    }
}

impl Inner {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn read_section<T: DeserializeOwned>(root: &Node, path: &str) -> Result<T, ConfigError> {
    let empty;
    let node = match root.lookup(path) {
        Some(n) => n,
        None => {
            empty = Node::empty_table(Location::Default);
            &empty
        }
    };
    let shown = split_path(path).collect::<Vec<_>>().join(".");
    T::deserialize(NodeDe { node, path: shown })
        .map_err(|e| e.into_config_error(|| node.origin.clone()))
}

trait Slot: Send {
    fn path(&self) -> &str;
    fn is_closed(&self) -> bool;
    fn prepare(&self, root: &Node) -> Result<Box<dyn Any + Send>, ConfigError>;
    fn commit(&self, value: Box<dyn Any + Send>);
}

type Validator<T> = Box<dyn Fn(&T) -> Result<(), String> + Send + Sync>;

struct TypedSlot<T> {
    path: String,
    tx: Option<watch::Sender<Arc<T>>>,
    validate: Validator<T>,
}

impl<T: DeserializeOwned> TypedSlot<T> {
    fn read(&self, root: &Node) -> Result<T, ConfigError> {
        let value: T = read_section(root, &self.path)?;
        (self.validate)(&value).map_err(|msg| {
            let origin = root
                .lookup(&self.path)
                .map_or(Location::Default, |n| n.origin.clone());
            ConfigError::new(Some(origin), self.path.clone(), ErrorKind::Validation(msg))
        })?;
        Ok(value)
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Slot for TypedSlot<T> {
    fn path(&self) -> &str {
        &self.path
    }

    fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn prepare(&self, root: &Node) -> Result<Box<dyn Any + Send>, ConfigError> {
        Ok(Box::new(Arc::new(self.read(root)?)))
    }

    fn commit(&self, value: Box<dyn Any + Send>) {
        if let (Some(tx), Ok(value)) = (&self.tx, value.downcast::<Arc<T>>()) {
            tx.send_replace(*value);
        }
    }
}

/// The complete current content of a dynamic source.
#[derive(Clone, Debug)]
pub struct DynamicLayer {
    /// The source's name, for errors and the `source` metric label (`etcd`).
    pub source: Arc<str>,
    /// Its entries; order does not matter.
    pub entries: Vec<DynamicEntry>,
}

/// One key of a dynamic source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicEntry {
    /// The key as the source names it (`/jupiter/app/redis.main.pool-size`), for errors.
    pub key: String,
    /// The key path it sets (`redis.main.pool-size`); `.` or `/` between keys.
    pub path: String,
    /// Text, typed on demand like an environment variable, or a TOML document if
    /// `document` is set.
    pub value: String,
    /// `value` is a whole TOML document merged at `path` (the root when empty).
    pub document: bool,
}

impl DynamicLayer {
    fn to_node(&self) -> Result<Node, ConfigError> {
        let mut entries: Vec<&DynamicEntry> = self.entries.iter().collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let mut root = Node::empty_table(Location::Default);
        let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
        for entry in entries {
            let origin = Location::Dynamic {
                source: self.source.clone(),
                key: Arc::from(entry.key.as_str()),
                position: None,
            };
            let segments: Vec<String> = split_path(&entry.path).map(str::to_owned).collect();
            let leaf = if entry.document {
                parse_document(&entry.value, origin)?
            } else {
                if segments.is_empty() {
                    return Err(ConfigError::new(
                        Some(origin),
                        String::new(),
                        ErrorKind::Invalid("a value needs a key path".to_owned()),
                    ));
                }
                let path = segments.join(".");
                // Two keys spelling the same path (`a.b` and `a/b`) would make one win silently.
                if let Some(other) = seen.insert(tree::normalize(&path), &entry.key) {
                    return Err(ConfigError::new(
                        Some(origin),
                        path,
                        ErrorKind::Invalid(format!("also set by {} key {other}", self.source)),
                    ));
                }
                raw_value(&entry.value, &origin).map_err(|e| e.with_key_prefix(&path))?
            };
            root.merge(nest(&segments, leaf), &mut Vec::new())?;
        }
        Ok(root)
    }
}

/// A source of configuration that changes at run time.
///
/// Implementations run until the receiving side is gone, sending their complete content first
/// and again after every change; they reconnect by themselves after errors.
pub trait DynamicSource: Send + 'static {
    /// A short name for logs and metrics (`etcd`).
    fn name(&self) -> String;

    /// Runs the source.
    fn run(self: Box<Self>, updates: mpsc::Sender<DynamicLayer>) -> BoxFuture<'static, ()>;
}
