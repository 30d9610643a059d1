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
//! - [`run`]: the shadow probe, executors (a precise pacer thread for open models, looping
//!   workers for closed ones), graceful stop; progress goes to a [`Reporter`] the caller
//!   installs (the library prints nothing).
//! - `protocol`: one file per protocol (HTTP/1.1, HTTP/2, objstore gRPC, Redis), each a
//!   `Protocol` implementation: how it connects, probes and sends one request. Adding a
//!   protocol starts there.
//! - `http1`: the HTTP/1.1 engine (HTTP/2 goes through hyper).
//! - [`segment`]: `--segment K/N`, one generator's exact share of a run spread over several.
//! - [`init`]: `loadtest init URL`, a commented starter scenario.
//! - [`distributed`]: `loadtest worker` and `loadtest run --workers N`, coordinated through the
//!   registry (etcd).
//! - [`merge`]: `loadtest merge`, one report from several (histograms added, never
//!   percentiles averaged).
//! - [`compare`]: `loadtest compare`, a baseline run against a candidate (a table of changes,
//!   overlaid charts, an exit code for CI).
//! - [`stats`]: HDR histograms per step and thread, collected once a second.
//! - [`report`]: summary table, JSON (schema `jupiter-loadtest/1`), HTML, Prometheus.
//! - [`Error`]: the crate's one error type (an invalid scenario, a run that could not start).
//!
//! The scenario format and the JSON schema are documented in the crate's README.
//!
//! # Exit codes of the binary
//!
//! 0 passed, 1 thresholds failed, 2 invalid scenario or usage, 3 aborted (shadow probe failed,
//! a target could not be set up, or Ctrl-C; the report is still written after Ctrl-C).

pub mod compare;
pub mod distributed;
mod error;
mod http1;
pub mod init;
pub mod merge;
mod protocol;
pub mod report;
pub mod run;
pub mod scenario;
pub mod segment;
pub mod stats;
pub mod template;
pub mod threshold;
mod tls;

pub use error::Error;
pub use run::{Outcome, Prepared, Reporter, RunOptions, prepare, run};
pub use scenario::{Overrides, Plan};
