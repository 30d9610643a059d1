//! The lean core that Jupiter services embed: configuration, metrics, logging, the governance
//! HTTP server and the application lifecycle.
//!
//! # Layout
//!
//! - [`config`]: TOML files → environment overrides → dynamic source (etcd) with hot reload;
//!   typed sections through serde; errors that name file, line and key. Main type [`Config`].
//! - [`metrics`]: the Prometheus registry and the standard `server_handle_*` /
//!   `client_handle_*` families, with a cheap recorder guard for hot paths. Main type
//!   [`Metrics`]. The module docs list every metric name of the workspace.
//! - [`logging`]: `tracing` subscriber set-up for binaries (human or JSON, level changeable at
//!   run time).
//! - [`governance`]: the operator HTTP server (`/metrics`, `/health/*`, `/config`, `/registry`,
//!   `/log/level`), loopback by default.
//! - [`app`]: components, registration once serving, ordered graceful shutdown. Main type
//!   [`App`].
//! - [`registry`]: service registry (in-process, or etcd wire-compatible with Go Jupiter),
//!   discovery as a watch of the complete instance set, and a balanced tonic channel over it.
//! - [`shadow`]: shadow-traffic tag for full-link stress tests — task-local context, HTTP/gRPC
//!   carriers, server and client layers, the per-service switch, and the storage policy.
//! - [`backoff`]: jittered exponential backoff for reconnect loops.
//! - `telemetry` (feature `otel`): OpenTelemetry export and W3C trace-context propagation.
//!
//! # Feature flags
//!
//! - `otel`: OpenTelemetry trace export over OTLP/gRPC, W3C trace-context helpers.
//!
//! # Example
//!
//! ```
//! use jupiter_core::{Config, Metrics};
//! use jupiter_core::metrics::Code;
//!
//! let config = Config::builder().toml("defaults", "[app]\nname = \"demo\"\n").no_env().build()?;
//! let name: String = config.get("app.name")?;
//! let metrics = Metrics::new();
//! metrics.server("http", "GET /users/{id}", "10.0.0.7").start().finish(Code::http(200));
//! assert_eq!(name, "demo");
//! # Ok::<(), jupiter_core::Error>(())
//! ```

pub mod app;
pub mod backoff;
pub mod cli;
pub mod config;
mod error;
pub mod governance;
pub mod logging;
pub mod metrics;
pub mod registry;
pub mod shadow;
#[cfg(feature = "otel")]
pub mod telemetry;

pub use app::App;
pub use config::Config;
pub use error::{BoxError, Error};
pub use metrics::Metrics;

/// The version of prometheus-client our registry uses, for crates that register their own
/// metrics.
pub use prometheus_client;
