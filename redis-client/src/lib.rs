//! A high-concurrency Redis client: multiplexed, auto-pipelined connections, pools for
//! multi-core throughput, typed commands, and shadow-traffic key mapping.
//!
//! Users swap it in where they used fred or redis-rs.
//!
//! # Layout
//!
//! Layers follow the protocol, bottom to top:
//! - [`resp`]: RESP2/RESP3 frames, pure parse and encode over `bytes` (`Ok(None)` means "need
//!   more bytes"); objstore reuses it for its RESP port.
//! - `conn`: one connection's owner task — FIFO reply matching, writes batched while requests
//!   are queued (auto-pipelining), a bounded in-flight queue (backpressure), reconnect with
//!   jittered backoff. Cancel-safe: a dropped request never desynchronizes it.
//! - `pool`: one server's connections (picked by task), its per-command metrics, its idle
//!   dedicated connections.
//! - `cluster`: the slot map, routing by slot, redirections, refreshes, commands split by
//!   slot; see [`ClusterStats`].
//! - [`Cmd`] and [`ToArg`]: the command builder and argument encoding, with command metadata
//!   (flags and key positions from the server's own table).
//! - `commands` (re-exported as [`cmds`]): every typed command, one entry each, from which
//!   both its constructor (`cmds::get`) and its method (`Client::get`) are generated.
//! - [`Client`]: the handle, the same type for one server and a cluster; [`Pipeline`]s and
//!   transactions, [`Dedicated`] connections (blocking commands, `WATCH`), [`Subscriber`]s,
//!   `SCAN` streams, [`Script`]s, the [`Invalidations`] of client-side caching; replies
//!   convert through [`FromReply`].
//!
//! # Shadow traffic
//!
//! Under a jupiter-core shadow context, every key argument is mapped into the shadow key space
//! (`shadow-prefix`), found by the command's key specs: from the table generated from the
//! server's `COMMAND` reply, or, for a command it does not know (a module's, a renamed one),
//! learned once from `COMMAND INFO`. With no shadow prefix configured, shadow requests are
//! refused before anything is sent; so are commands whose keys cannot all be mapped
//! ([`Error::ShadowUnmappable`]: whole-keyspace commands such as `FLUSHDB` or `KEYS`, `SORT`
//! with `BY`/`GET`/`STORE`, commands the server does not describe). `SCAN` streams stay in
//! the shadow key space. Scripts see their `KEYS` mapped; a script that builds key names of
//! its own is beyond any client's reach. Live traffic is untouched.
//!
//! # Metrics
//!
//! `client_handle_seconds` and `client_handle_total` with `type="redis"`, the client's name,
//! the command (`method`) and the server (`peer`); see `jupiter_core::metrics`.
//!
//! # Feature flags
//!
//! - `tls`: TLS through rustls (ring provider): `rediss://` URLs and the `tls` table of the
//!   configuration ([`TlsOptions`]: CA file, client certificate for `tls-auth-clients`, server
//!   name). Without the feature, asking for TLS is a configuration error, never plain text.
//! - `redis-rs`: redis-rs 1.x's async API on this engine ([`redis_rs`]): `AsyncCommands`,
//!   `redis::cmd(..).query_async`, `redis::pipe()` and `redis::Script` on a [`Client`], for a
//!   one-line migration.
//!
//! # Example
//!
//! ```no_run
//! # async fn f() -> Result<(), redis_client::Error> {
//! use redis_client::{Client, cmd};
//!
//! let client = Client::connect_url("redis://127.0.0.1:6379").await?;
//! client.set("k", "v").await?;
//! let v: Option<String> = client.get("k").await?;
//! let n: i64 = client.query(cmd("INCRBY").arg("counter").arg(5)).await?;
//! # let _ = (v, n); Ok(()) }
//! ```

mod client;
mod cluster;
mod cmd;
mod commands;
mod config;
mod conn;
mod dedicated;
mod error;
mod pipeline;
mod pool;
mod pubsub;
#[cfg(feature = "redis-rs")]
pub mod redis_rs;
pub mod resp;
mod script;
mod stream;
mod tracking;
mod value;

// The README's examples compile as doctests (the redis-rs one needs its feature).
#[cfg(all(doctest, feature = "redis-rs"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Command constructors: each returns a [`Cmd`] for [`Client::query`], a [`Pipeline`] or a
/// transaction; the method of the same name on [`Client`] sends it. Option and reply types of
/// the typed commands live here too.
pub mod cmds {
    pub use crate::commands::*;
}

pub use client::{Client, ClientBuilder};
pub use cluster::{ClusterStats, key_slot};
pub use cmd::{Cmd, ToArg, cmd};
pub use config::{ClientConfig, DEFAULT_URL, Protocol, ReadFrom, TlsOptions, TrackingMode};
pub use dedicated::Dedicated;
pub use error::Error;
pub use pipeline::Pipeline;
pub use pubsub::{Message, Subscriber, SubscriberEvent};
pub use script::Script;
pub use stream::{PendingSummary, StreamEntry, StreamRead};
pub use tracking::{Invalidation, Invalidations};
pub use value::{FromReply, Json};

impl Client {
    /// What a cluster client's router did (refreshes, redirections, retries); `None` for a
    /// standalone client.
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        match &self.inner.mode {
            client::Mode::Cluster(router) => Some(router.stats()),
            client::Mode::Single(_) => None,
        }
    }
}
