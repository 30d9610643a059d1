//! Full-link stress testing: `loadtest run scenario.toml` drives HTTP, gRPC (objstore) and Redis
//! with open and closed workload models, measures without coordinated omission, and tags every
//! request as shadow traffic.
//!
//! # Layout
//!
//! - `scenario`: the TOML scenario model, validated into a run plan (errors name file, line and
//!   key).
//! - `executor`: constant/ramping arrival rate (open model) and constant/ramping VUs (closed).
//! - `protocol`: HTTP/1.1 and HTTP/2, gRPC, Redis steps.
//! - `measure`: HDR histograms per step, per-second series, checks and thresholds.
//! - `report`: terminal progress, summary table, JSON and HTML reports.
//!
//! # Status
//!
//! Not implemented yet; see the loadtest issue.
