//! The `[objstore]` configuration section.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use jupiter_core::config::types::{ByteSize, duration};
use serde::Deserialize;

use crate::engine::{EngineConfig, Eviction};
use crate::server::ServiceConfig;

/// `[objstore]`: see `objstore.example.toml` for every key with its default. Its `Debug`
/// output never shows the token.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ObjstoreConfig {
    /// gRPC listen address. Default `127.0.0.1:7070` (loopback).
    pub listen: SocketAddr,
    /// RESP port (the Redis string subset on the same engine; see `[objstore.resp]`).
    /// Default: off.
    pub resp_listen: Option<SocketAddr>,
    /// Engine shards (a power of two).
    pub shards: usize,
    /// Memory cap for the process's resident memory; `0` for none.
    pub max_memory: ByteSize,
    /// `noeviction` or `sampled-lru`.
    pub eviction: Eviction,
    /// Longest key in bytes.
    pub max_key: usize,
    /// Largest object.
    pub max_object_size: ByteSize,
    /// Change events kept for watchers resuming from an older revision.
    pub feed_history: usize,
    /// Events kept for live watchers whatever the history's byte budget; a watcher further
    /// behind than the history holds is cut off.
    pub watch_buffer: usize,
    /// A bearer token every call must carry; none by default.
    pub auth_token: Option<String>,
    /// Key prefix of the shadow namespace; empty refuses shadow traffic.
    pub shadow_prefix: String,
    /// `[objstore.resp]`.
    pub resp: RespSection,
    /// `[objstore.snapshot]`.
    pub snapshot: SnapshotConfig,
    /// `[objstore.tls]`: serve gRPC over TLS (rustls) when both files are set.
    pub tls: TlsConfig,
}

/// `[objstore.resp]`: the RESP port's settings beyond its address (`resp-listen`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RespSection {
    /// Whether `FLUSHDB` may run.
    pub flushdb: bool,
    /// The `AUTH` user that marks a connection shadow; empty for none.
    pub shadow_user: String,
    /// The client-name suffix that marks a connection shadow; empty for none.
    pub shadow_name_suffix: String,
}

impl Default for RespSection {
    fn default() -> Self {
        RespSection {
            flushdb: false,
            shadow_user: "shadow".into(),
            shadow_name_suffix: ":shadow".into(),
        }
    }
}

/// `[objstore.tls]`
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the server.
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The server's TLS settings, or `None` without TLS.
    ///
    /// # Errors
    ///
    /// Only one of the two files is set, or a file cannot be read.
    pub fn server(&self) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                let read = |p: &PathBuf, what: &str| {
                    std::fs::read(p).map_err(|e| {
                        format!("objstore.tls.{what}: cannot read {}: {e}", p.display())
                    })
                };
                let identity = tonic::transport::Identity::from_pem(
                    read(cert, "cert-file")?,
                    read(key, "key-file")?,
                );
                Ok(Some(
                    tonic::transport::ServerTlsConfig::new().identity(identity),
                ))
            }
            _ => Err("objstore.tls: set both cert-file and key-file, or neither".into()),
        }
    }
}

/// What to do with a snapshot that fails its checks at start.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnCorrupt {
    /// Refuse to start (the file is kept for inspection).
    #[default]
    Refuse,
    /// Start empty (the bad file is overwritten by the next snapshot).
    StartEmpty,
}

/// `[objstore.snapshot]`: none unless `path` is set.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SnapshotConfig {
    /// The snapshot file: loaded at start, written periodically, on demand and at shutdown.
    pub path: Option<PathBuf>,
    /// Between periodic snapshots; `0s`: none.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Write a snapshot on graceful shutdown.
    pub on_shutdown: bool,
    /// `refuse` or `start-empty`.
    pub on_corrupt: OnCorrupt,
    /// Bytes per second to write at most; `0`: no limit.
    pub write_rate_limit: ByteSize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            path: None,
            interval: Duration::from_secs(300),
            on_shutdown: true,
            on_corrupt: OnCorrupt::Refuse,
            write_rate_limit: ByteSize(0),
        }
    }
}

impl std::fmt::Debug for ObjstoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjstoreConfig")
            .field("listen", &self.listen)
            .field("resp_listen", &self.resp_listen)
            .field("shards", &self.shards)
            .field("max_memory", &self.max_memory)
            .field("eviction", &self.eviction)
            .field("max_key", &self.max_key)
            .field("max_object_size", &self.max_object_size)
            .field("feed_history", &self.feed_history)
            .field("watch_buffer", &self.watch_buffer)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("shadow_prefix", &self.shadow_prefix)
            .field("resp", &self.resp)
            .field("snapshot", &self.snapshot)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Default for ObjstoreConfig {
    fn default() -> Self {
        let engine = EngineConfig::default();
        ObjstoreConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            resp_listen: None,
            shards: engine.shards,
            max_memory: ByteSize(0),
            eviction: Eviction::Noeviction,
            max_key: engine.max_key,
            max_object_size: ByteSize(64 * 1024 * 1024),
            feed_history: engine.feed_history,
            watch_buffer: engine.watch_buffer,
            auth_token: None,
            shadow_prefix: "__shadow__/".to_owned(),
            resp: RespSection::default(),
            snapshot: SnapshotConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl ObjstoreConfig {
    /// The engine's part.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            shards: self.shards,
            max_memory: self.max_memory.bytes(),
            eviction: self.eviction,
            max_key: self.max_key,
            max_value: self.max_object_size.bytes() as usize,
            feed_history: self.feed_history,
            watch_buffer: self.watch_buffer,
            clock: crate::engine::Clock::system(),
        }
    }

    /// The RESP port's part, following `switch` for shadow connections.
    pub fn resp(&self, switch: jupiter_core::shadow::ShadowSwitch) -> crate::resp::RespConfig {
        crate::resp::RespConfig {
            max_object: self.max_object_size.bytes() as usize,
            auth_token: self.auth_token.clone(),
            flushdb: self.resp.flushdb,
            shadow: crate::resp::RespShadow {
                prefix: self.service().shadow_prefix,
                user: self.resp.shadow_user.clone(),
                name_suffix: self.resp.shadow_name_suffix.clone(),
                switch,
            },
        }
    }

    /// The service's part.
    pub fn service(&self) -> ServiceConfig {
        ServiceConfig {
            max_object: self.max_object_size.bytes() as usize,
            shadow_prefix: (!self.shadow_prefix.is_empty())
                .then(|| Bytes::from(self.shadow_prefix.clone().into_bytes())),
            auth_token: self.auth_token.clone(),
        }
    }
}
