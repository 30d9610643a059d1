//! A high-concurrency Redis client: one multiplexed, auto-pipelined connection per owner task,
//! pools for multi-core throughput, Redis Cluster routing, and shadow-traffic key mapping.
//!
//! Users swap it in where they used fred or redis-rs.
//!
//! # Layout
//!
//! Layers follow the protocol, bottom to top:
//! - `resp`: RESP2/RESP3 frames, pure parse and encode over `bytes` (`Incomplete` means "need
//!   more bytes"); objstore reuses it for its RESP port.
//! - `connection`: the owner task of one connection — FIFO reply matching, writes batched while
//!   the queue is non-empty, bounded in-flight queue, cancellation safety.
//! - `pool`, `cluster`: N connections; slot map, MOVED/ASK, topology refresh.
//! - `cmd`: typed commands and the generic `cmd("...")` escape hatch.
//! - `client`: the public handle, built from a `[redis.<name>]` section of jupiter-core's config.
//!
//! # Status
//!
//! Not implemented yet; see the redis-client issue.
