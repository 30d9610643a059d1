//! A high-concurrency Redis client: one multiplexed, auto-pipelined connection per owner task,
//! pools for multi-core throughput, and shadow-traffic key mapping.
//!
//! Users swap it in where they used fred or redis-rs.
//!
//! # Layout
//!
//! Layers follow the protocol, bottom to top:
//! - [`resp`]: RESP2/RESP3 frames, pure parse and encode over `bytes` (`Ok(None)` means "need
//!   more bytes"); objstore reuses it for its RESP port.
//!
//! # Status
//!
//! Under construction: the codec is in place; connections and commands follow.

pub mod resp;
