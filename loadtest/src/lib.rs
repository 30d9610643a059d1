//! Full-link load testing: `loadtest run scenario.toml` drives HTTP (HTTP/1.1 and HTTP/2),
//! objstore (gRPC) and Redis with open and closed workload models, measures latency from the
//! intended send time (no coordinated omission), tags every request as shadow traffic after
//! checking that the targets acknowledge it, and reports as a table, JSON and HTML.
//!
//! # Layout
//!
//! - [`scenario`]: the TOML scenario model, validated into a [`Plan`](scenario::Plan); errors
//!   name file, line, column and key.
//! - [`template`]: templated requests (`{{seq}}`, `{{uuid}}`, CSV feeders …).
//! - [`threshold`]: `p99 < 20ms`, `error-rate < 1%`, `rps > 1000`.
//! - [`run`]: targets, the shadow probe, executors (a precise pacer thread for open models,
//!   looping workers for closed ones), graceful stop.
//! - [`http1`]: the HTTP/1.1 engine (HTTP/2 goes through hyper).
//! - [`stats`]: HDR histograms per step and thread, collected once a second.
//! - [`report`]: summary table, JSON (schema `jupiter-loadtest/1`), HTML, Prometheus.
//!
//! The scenario format and the JSON schema are documented in the crate's README.
//!
//! # Exit codes of the binary
//!
//! 0 passed, 1 thresholds failed, 2 invalid scenario or usage, 3 aborted (shadow probe failed,
//! a target could not be set up, or Ctrl-C; the report is still written after Ctrl-C).

pub mod http1;
mod protocol;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod template;
pub mod threshold;

pub use run::{Outcome, Reporter, RunOptions, run};
pub use scenario::{Overrides, Plan};
