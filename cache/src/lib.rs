//! A multi-level cache: L1 in-process (moka) over an optional L2 (Redis through redis-client, or
//! objstore), with read-through loading, single-flight, negative caching, TTL jitter,
//! refresh-ahead, cross-instance invalidation and shadow-aware keys.
//!
//! # Layout
//!
//! - `cache`: `Cache<K, V>` and its builder.
//! - `level`: the L2 trait and its Redis and objstore implementations.
//! - `invalidate`: cross-instance invalidation (pub/sub or RESP3 client tracking).
//!
//! # Status
//!
//! Not implemented yet.
