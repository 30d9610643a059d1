//! The example shop: two services wired only with jupiter-core's config, registry, layers and
//! governance — the reference for services that take part in full-link stress tests.
//!
//! - `shop api`: the HTTP API (axum). Products are read through a two-level cache (moka over
//!   Redis) whose loader reads objstore; orders reserve stock through the inventory service
//!   (gRPC, found in the registry), then land in Redis and objstore.
//! - `shop inventory`: the gRPC inventory service; reservations are counters in Redis.
//!
//! Both put [`ShadowLayer`](jupiter_core::shadow::ShadowLayer) in front of their handlers, so a
//! request tagged as shadow traffic (by loadtest) runs in a shadow context: redis-client maps
//! its keys to the shadow prefix, objstore keeps its objects in the shadow namespace, the cache
//! keeps them in a separate partition, and the gRPC hop carries the tag on. The `[shadow] mode`
//! switch (`off`, `on`, `watch`) follows the config, including its dynamic source in etcd.
//!
//! See the README for running both services and a load test against them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use jupiter_core::config::{Config, EtcdSource};
use jupiter_core::logging::{self, LogConfig, LogHandle};
use jupiter_core::say;
use serde::Deserialize;

mod api;
mod inventory;

/// The generated gRPC code of `proto/inventory.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub(crate) mod pb {
    tonic::include_proto!("jupiter.shop.v1");
}

const CORE_DEFAULTS: &str = include_str!("../../../jupiter-core/config.example.toml");
const DEFAULTS: &str = include_str!("../shop.example.toml");

/// The example shop's two services.
#[derive(Debug, Parser)]
#[command(name = "shop", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The HTTP API (products, orders).
    Api {
        /// Config file (TOML), over the embedded defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The gRPC inventory service.
    Inventory {
        /// Config file (TOML), over the embedded defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// The `[dynamic-config]` section: an etcd prefix whose keys override the files at run time
/// (`shadow.mode` = `watch` flips the switch of every service attached to it).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct DynamicConfig {
    /// etcd endpoints; none: no dynamic source.
    endpoints: Vec<String>,
    /// The key prefix. Default is `/shop/config/`.
    prefix: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shop: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let (file, run): (_, fn(Config, LogHandle) -> Run) = match cli.command {
        Command::Api { config } => (config, |c, l| Box::pin(api::run(c, l))),
        Command::Inventory { config } => (config, |c, l| Box::pin(inventory::run(c, l))),
    };
    runtime.block_on(async move {
        let (config, log) = match load(file).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("shop: {e}");
                return ExitCode::from(2);
            }
        };
        match run(config, log).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let mut msg = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    msg.push_str(&format!(": {s}"));
                    source = s.source();
                }
                eprintln!("shop: {msg}");
                ExitCode::from(1)
            }
        }
    })
}

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Run = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>;

/// The embedded defaults, the file, the environment (`JUPITER_…`), then etcd if configured.
async fn load(file: Option<PathBuf>) -> Result<(Config, LogHandle), BoxError> {
    let mut builder = Config::builder()
        .toml("<jupiter-core defaults>", CORE_DEFAULTS)
        .toml("<shop defaults>", DEFAULTS);
    if let Some(f) = &file {
        builder = builder.file(f);
    }
    let config = builder.build()?;
    let log: LogConfig = config.get("log")?;
    let log = logging::init(&log)?;
    let dynamic: DynamicConfig = config.get("dynamic-config")?;
    if !dynamic.endpoints.is_empty() {
        let prefix = dynamic.prefix.unwrap_or_else(|| "/shop/config/".into());
        say!("dynamic config from etcd under {prefix}");
        config
            .attach(
                EtcdSource::new(dynamic.endpoints, prefix),
                Duration::from_secs(5),
            )
            .await?;
    }
    Ok((config, log))
}
