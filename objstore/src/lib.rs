//! A memory-based object store served over gRPC (and a RESP port), with revisions, watches and
//! memory-mapped snapshots.
//!
//! # Layout
//!
//! - [`engine`]: sharded in-memory map of key → object (value as `Bytes`, revisions, expiry,
//!   metadata), memory accounting with eviction, TTL, change feed.
//! - [`server`]: tonic gRPC service (Put/Get/Head/Delete/List/BatchGet/BatchPut/Watch,
//!   streaming upload/download), health and reflection; the RESP port on the same engine.
//! - `snapshot` (to come): atomic, checksummed snapshots loaded through memmap2 without
//!   copying values.
//! - [`client`]: the Rust client with our own types, deadlines, and retries for reads.
//!
//! # Status
//!
//! The engine is implemented and tested; the service, snapshots and client are not yet (see
//! the objstore issue).

pub mod client;
pub mod config;
pub mod engine;
pub mod server;
pub mod snapshot;

/// The generated protobuf types and gRPC stubs of `proto/objstore.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("jupiter.objstore.v1");

    /// The encoded descriptor set, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/objstore_descriptor.bin"));
}
