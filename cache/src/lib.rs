//! A multi-level cache for Jupiter services: L1 in process (moka) over an optional L2 (Redis
//! through redis-client, standalone or cluster, or objstore), read-through loading that never
//! stampedes the source, and invalidation across instances.
//!
//! What it adds over its anchors: two levels with one single-flight across both (JetCache
//! has two levels, go-zero and Go Jupiter single-flight on one), TTL jitter, refresh-ahead
//! (moka #467), per-level metrics (moka #234), cross-instance invalidation through the L2's
//! own change feed (Redis client tracking, pub/sub, objstore watch), and shadow-traffic
//! partitions.
//!
//! # Layout
//!
//! - `cache`: [`Cache`] and its [`CacheBuilder`]: the levels, single-flight, expiry,
//!   refresh-ahead, degradation when L2 is down.
//! - `l2`: the [`L2`] trait and its [`RedisL2`] and [`ObjstoreL2`] implementations, each
//!   with its invalidation source.
//! - `codec`: how values are stored in L2 ([`Codec`]; postcard by default, JSON).
//! - `key`: how keys become L2 keys and back ([`Key`]).
//! - `config`: the `[cache.<name>]` section ([`CacheConfig`]).
//!
//! # Metrics
//!
//! Through jupiter-core: `client_events_total{type="cache", name, event}` with `event` one of
//! `l1_hit`, `l1_miss`, `l2_hit`, `l2_miss`, `load`, `load_error`, `l2_error`,
//! `decode_error`, `eviction`, `invalidation_received`, `invalidation_lost`; load latency as
//! `client_handle_seconds{type="cache", name, method="load"}`. [`Cache::stats`] reads them.
//!
//! # Example
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use cache::{Cache, RedisL2};
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct User {
//!     name: String,
//! }
//!
//! let redis = redis_client::Client::connect_url("redis://127.0.0.1:6379").await?;
//! let users: Cache<u64, User> = Cache::builder("users")
//!     .capacity(100_000)
//!     .ttl(Duration::from_secs(600))
//!     .refresh_ahead(0.8)
//!     .l2(RedisL2::new(redis))
//!     .build()?;
//!
//! // A thousand concurrent requests for a missing user: one database query.
//! let user = users
//!     .get_or_load(&42, || async move {
//!         Some(User { name: "ada".into() }) // SELECT … WHERE id = 42
//!     })
//!     .await?;
//! users.invalidate(&42).await?; // gone from every instance's L1
//! # let _ = user; Ok(()) }
//! ```

mod cache;
mod codec;
mod config;
mod error;
mod key;
mod l2;

pub use cache::{Cache, CacheBuilder, CacheEvent, CacheStats};
pub use codec::{Codec, CodecError, JsonCodec, PostcardCodec};
pub use config::CacheConfig;
pub use error::{Error, LoadError};
pub use key::Key;
pub use l2::{Invalidated, L2, L2Error, ObjstoreL2, RedisL2};
