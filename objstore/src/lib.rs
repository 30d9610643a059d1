//! A memory-based object store served over gRPC, with etcd-style revisions, watches, TTLs, a
//! memory cap that holds for resident memory, and memory-mapped snapshots.
//!
//! Run it with `objstore serve [--config objstore.toml]` (embedded defaults: loopback, the
//! in-process registry, no snapshot unless configured; see `objstore.example.toml`), operate
//! it with `objstore put|get|rm|ls|stat|snapshot`, call it from Rust through [`client`] or from
//! any language through `proto/objstore.proto`.
//!
//! # Layout
//!
//! - [`engine`]: sharded in-memory map of key → object (value as `Bytes`, revisions, expiry,
//!   content type, metadata): records packed into segments behind a compact hash index that
//!   grows incrementally, memory accounting against real resident memory with eviction, lazy
//!   and active expiry, and the change feed watches resume from.
//! - [`server`]: the tonic service (Put/Get/Head/Delete/List/BatchGet/BatchPut/Watch,
//!   streaming Upload/Download, Snapshot), health and reflection, token auth, TLS, the shadow
//!   namespace, per-call metrics.
//! - [`resp`]: the RESP port, the Redis string subset on the same engine (off unless
//!   `resp-listen` is set), so redis-cli, redis-benchmark and Redis clients drive it.
//! - [`snapshot`]: atomic, checksummed snapshots written shard by shard while writers go on,
//!   loaded through memmap2 without copying values.
//! - [`client`]: the Rust client with our own types, deadlines, and retries for reads.
//! - [`config`]: the `[objstore]` section.
//!
//! # Example
//!
//! ```no_run
//! # async fn f() -> Result<(), objstore::client::Error> {
//! use objstore::client::{Client, ClientConfig, PutOptions};
//!
//! let client = Client::connect("127.0.0.1:7070", ClientConfig::default()).await?;
//! let info = client
//!     .put(b"docs/readme", "hello".into(), PutOptions::default())
//!     .await?;
//! let object = client.get(b"docs/readme").await?.expect("just written");
//! assert_eq!(object.info.mod_revision, info.mod_revision);
//! # Ok(()) }
//! ```

pub mod client;
pub mod cluster;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod engine;
mod error;
pub mod protocol;

pub use crate::error::Error;
#[cfg(feature = "server")]
pub mod resp;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod snapshot;

/// The generated protobuf types and gRPC stubs of `proto/objstore.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("jupiter.objstore.v1");

    /// The encoded descriptor set, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/objstore_descriptor.bin"));
}

/// Listens on `addr` with a backlog of 1024 connections (std's default is 128, which a burst of
/// connects overflows before the accept loop wakes; each overflow costs its client a 1 s SYN
/// retransmit).
///
/// # Errors
///
/// The address cannot be bound.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
