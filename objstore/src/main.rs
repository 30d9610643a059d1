//! `objstore`: run the object store, or operate on one.
//!
//! Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 key not found.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use jupiter_core::app::{App, component_fn};
use jupiter_core::config::Config;
use jupiter_core::logging::{self, LogConfig};
use jupiter_core::metrics::Metrics;
use jupiter_core::registry::{self, RegistryConfig, ServiceInfo, ServiceKind, ServiceRegistrar};
use jupiter_core::shadow::{ShadowLayer, ShadowSwitch};
use jupiter_core::{cli, say};
use objstore::client::{Client, ClientConfig, Info, Object, PutOptions};
use objstore::cluster::{ClusterClient, ClusterConfig};
use objstore::config::{ObjstoreConfig, OnCorrupt};
use objstore::engine::Engine;
use objstore::server::{Service, serve_with};
use objstore::snapshot::{self, Snapshotter};

/// jupiter-core's commented template, then objstore's: the embedded defaults.
const CORE_DEFAULTS: &str = include_str!("../../jupiter-core/config.example.toml");
const DEFAULTS: &str = include_str!("../objstore.example.toml");

/// Runs the object store, or operates on one.
///
/// `serve` runs the store (gRPC on 127.0.0.1:7070 by default, governance with /metrics and
/// /health/* alongside) until SIGINT or SIGTERM; the other commands talk to a running one.
///
/// Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 key not found.
#[derive(Debug, Parser)]
#[command(
    name = "objstore",
    version,
    after_help = "Start with: objstore serve, then: echo hi | objstore put greeting"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the `Op` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the store until SIGINT or SIGTERM.
    Serve {
        /// TOML configuration layered over the embedded defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    #[command(flatten)]
    Op(Op),
}

/// The operator commands: each talks to a running store.
#[derive(Debug, Subcommand)]
enum Op {
    /// Store FILE (or standard input, `-`) under KEY.
    Put {
        /// The key.
        key: String,
        /// The file to store; `-` or nothing: standard input.
        file: Option<PathBuf>,
        /// Expire after this long, e.g. 30s or 2h.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// The value's content type.
        #[arg(long, value_name = "TYPE")]
        content_type: Option<String>,
        /// Only if KEY does not exist yet.
        #[arg(long)]
        if_absent: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Write KEY's value to standard output.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print KEY's metadata.
    Stat {
        /// The key.
        key: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete KEY.
    Rm {
        /// The key.
        key: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List keys under PREFIX, in order, with size and revision.
    Ls {
        /// Only keys starting with this.
        prefix: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Have the server write its snapshot now.
    Snapshot {
        #[command(flatten)]
        remote: Remote,
    },
}

/// Where the operator commands find the server.
#[derive(Debug, clap::Args)]
struct Remote {
    /// The server.
    #[arg(
        long,
        env = "OBJSTORE_ADDR",
        default_value = "127.0.0.1:7070",
        value_name = "HOST:PORT"
    )]
    addr: String,
    /// Bearer token.
    #[arg(long, env = "OBJSTORE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Deadline of each call.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Act on every node registered here instead of one server (--addr):
    /// etcd://HOST:PORT[,HOST:PORT…]. Keys are placed as the cluster client places them.
    #[arg(long, value_name = "URL", value_parser = RegistryConfig::from_url)]
    registry: Option<RegistryConfig>,
    /// With --registry: the nodes' service name.
    #[arg(long, default_value = "objstore")]
    service: String,
    /// With --registry: the nodes' deployment mode.
    #[arg(long, default_value = registry::DEFAULT_MODE)]
    mode: String,
    /// With --registry: copies of each key.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// With --registry: acknowledgements a write needs (default: every copy).
    #[arg(long)]
    write_quorum: Option<usize>,
}

/// What the operator commands act on: one server, or every node of a registry.
enum Store {
    // Boxed: the one-server client is the larger by far.
    One(Box<Client>),
    Many(ClusterClient),
}

impl Store {
    async fn put(&self, key: &[u8], value: Bytes, o: PutOptions) -> Result<Info, objstore::Error> {
        match self {
            Store::One(c) => c.put(key, value, o).await,
            Store::Many(c) => c.put(key, value, o).await,
        }
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Object>, objstore::Error> {
        match self {
            Store::One(c) => c.get(key).await,
            Store::Many(c) => c.get(key).await,
        }
    }

    async fn head(&self, key: &[u8]) -> Result<Option<Info>, objstore::Error> {
        match self {
            Store::One(c) => c.head(key).await,
            Store::Many(c) => c.head(key).await,
        }
    }

    async fn delete(&self, key: &[u8]) -> Result<Option<u64>, objstore::Error> {
        match self {
            Store::One(c) => c.delete(key).await,
            Store::Many(c) => c.delete(key).await,
        }
    }

    async fn list_all(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Info)>, objstore::Error> {
        match self {
            Store::One(c) => c.list_all(prefix).await,
            Store::Many(c) => c.list_all(prefix).await,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write e.g. 5s or 2m"))
}

fn print_error(e: &(dyn std::error::Error + 'static)) {
    cli::print_error("objstore", e);
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn out(bytes: impl AsRef<[u8]>) -> Result<(), AnyError> {
    cli::write_stdout(bytes)?;
    Ok(())
}

/// glibc's per-thread arenas are a memory cap's enemy: a value freed into one arena's free
/// lists cannot serve another thread's allocation, so resident memory runs ahead of live data
/// (measured in-process: a flood against a 99 MiB cap peaked at 113–133 MiB with the default
/// arenas, 99–101 MiB with one). One arena, set before any other thread exists; small
/// allocations still come from per-thread caches without its lock.
fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; M_ARENA_MAX is -8 in glibc's malloc.h.
    unsafe {
        libc::mallopt(-8, 1);
    }
}

fn main() -> ExitCode {
    limit_allocator_arenas();
    let Cli { command } = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&e);
            return ExitCode::from(1);
        }
    };
    match command {
        Command::Serve { config } => runtime.block_on(serve_command(config)),
        Command::Op(op) => runtime.block_on(operate(op)),
    }
}

async fn serve_command(file: Option<PathBuf>) -> ExitCode {
    let mut builder = Config::builder()
        .toml("<jupiter-core defaults>", CORE_DEFAULTS)
        .toml("<objstore defaults>", DEFAULTS);
    if let Some(f) = &file {
        builder = builder.file(f);
    }
    let loaded = builder.build().and_then(|config| {
        let section: ObjstoreConfig = config.get("objstore")?;
        let log: LogConfig = config.get("log")?;
        let registry: RegistryConfig = config.get("registry")?;
        let app: jupiter_core::app::AppConfig = config.get("app")?;
        Ok((config, section, log, registry, app))
    });
    let (config, section, log_config, registry_config, app_config) = match loaded {
        Ok(l) => l,
        Err(e) => {
            print_error(&e);
            return ExitCode::from(2);
        }
    };
    match run_server(config, section, log_config, registry_config, app_config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&*e);
            ExitCode::from(1)
        }
    }
}

async fn run_server(
    config: Config,
    section: ObjstoreConfig,
    log_config: LogConfig,
    registry_config: RegistryConfig,
    app_config: jupiter_core::app::AppConfig,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let log = logging::init(&log_config)?;
    let metrics = Metrics::global().clone();
    // Before anything loads: a TLS mistake is reported at once.
    let tls = section.tls.server()?;
    let snap = &section.snapshot;
    let engine = match &snap.path {
        Some(path) if path.exists() => {
            snapshot::remove_leftovers(path);
            let started = std::time::Instant::now();
            match snapshot::load(path, section.engine()) {
                Ok((engine, stats)) => {
                    say!(
                        "loaded snapshot {}: {} objects, revision {}, in {:?}",
                        path.display(),
                        stats.objects,
                        stats.revision,
                        started.elapsed()
                    );
                    engine
                }
                Err(e @ objstore::Error::Corrupt { .. })
                    if snap.on_corrupt == OnCorrupt::StartEmpty =>
                {
                    tracing::warn!(error = %e, "corrupt snapshot; starting empty (on-corrupt = \"start-empty\")");
                    Engine::new(section.engine())
                }
                Err(e) => {
                    return Err(format!(
                        "{e} (set [objstore.snapshot] on-corrupt = \"start-empty\" to start without it)"
                    )
                    .into());
                }
            }
        }
        _ => Engine::new(section.engine()),
    };
    engine.spawn_maintenance();
    let listener = objstore::listen(section.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", section.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "grpcs" } else { "grpc" };
    say!("objstore listening on {scheme}://{addr}");
    let registry = registry::from_config(&registry_config).await?;
    let registrar = ServiceRegistrar::new(
        registry.clone(),
        ServiceInfo::new(app_config.name.clone(), "grpc", addr.to_string())
            .mode(app_config.mode.clone())
            .kind(ServiceKind::Provider),
    );
    let switch = ShadowSwitch::from_config(&config)?;
    let resp_config = section.resp(switch.clone());
    let shadow = ShadowLayer::new(&app_config.name, switch, &metrics);
    let snapshots = snap.path.clone().map(|p| {
        Arc::new(Snapshotter::new(
            engine.clone(),
            p,
            snap.write_rate_limit.bytes(),
        ))
    });
    let resp = match section.resp_listen {
        Some(at) => {
            let l = objstore::listen(at)
                .map_err(|e| format!("cannot listen on {at} (resp-listen): {e}"))?;
            say!("objstore RESP listening on redis://{}", l.local_addr()?);
            Some((l, engine.clone()))
        }
        None => None,
    };
    let mut service = Service::new(engine, section.service(), &metrics);
    if let Some(s) = &snapshots {
        service = service.with_snapshots(s.clone());
        if !snap.interval.is_zero() {
            let (s, every) = (Arc::downgrade(s), snap.interval);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    let Some(s) = s.upgrade() else { return };
                    if let Err(e) = s.take().await {
                        tracing::error!(error = %e, "periodic snapshot failed");
                    }
                }
            });
        }
    }
    let final_snapshot = snapshots.filter(|_| snap.on_shutdown);
    let app = App::from_config(&config)?
        .build()
        .with_governance(|g| g.log(&log).registry(registry.clone()))
        .on_governance_bound(|a| say!("governance listening on http://{a}"))
        .registrar(registrar)
        .component(component_fn("grpc", move |mut ctx| async move {
            ctx.ready();
            let stop = ctx.stop_token();
            serve_with(service, listener, shadow, tls, async move {
                stop.cancelled().await
            })
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            // Drained: the last writes are in; keep them.
            if let Some(s) = final_snapshot {
                let stats = s.take().await?;
                say!(
                    "snapshot {}: {} objects, revision {}",
                    s.path().display(),
                    stats.objects,
                    stats.revision
                );
            }
            Ok(())
        }));
    let app = match resp {
        Some((listener, engine)) => {
            let config = resp_config;
            let metrics = metrics.clone();
            app.component(component_fn("resp", move |mut ctx| async move {
                ctx.ready();
                let stop = ctx.stop_token();
                objstore::resp::serve(engine, listener, config, &metrics, async move {
                    stop.cancelled().await
                })
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            }))
        }
        None => app,
    };
    app.run().await?;
    Ok(())
}

async fn operate(op: Op) -> ExitCode {
    let remote = match &op {
        Op::Put { remote, .. }
        | Op::Get { remote, .. }
        | Op::Stat { remote, .. }
        | Op::Rm { remote, .. }
        | Op::Ls { remote, .. }
        | Op::Snapshot { remote } => remote,
    };
    let config = ClientConfig {
        timeout: remote.timeout,
        token: remote.token.clone(),
        ..ClientConfig::default()
    };
    let store = match &remote.registry {
        Some(registry_config) => {
            let cluster = ClusterConfig {
                service: remote.service.clone(),
                mode: remote.mode.clone(),
                replicas: remote.replicas,
                write_quorum: remote.write_quorum,
                client: config,
                ..ClusterConfig::default()
            };
            let found = match registry::from_config(registry_config).await {
                Ok(r) => ClusterClient::discover(r.as_ref(), cluster)
                    .await
                    .map_err(|e| Box::new(e) as AnyError),
                Err(e) => Err(Box::new(e) as AnyError),
            };
            match found {
                Ok(c) => Store::Many(c),
                Err(e) => {
                    print_error(&*e);
                    return ExitCode::from(1);
                }
            }
        }
        None => match Client::connect(&remote.addr, config).await {
            Ok(c) => Store::One(Box::new(c)),
            Err(e) => {
                print_error(&e);
                return ExitCode::from(1);
            }
        },
    };
    match run_operation(&store, op).await {
        Ok(code) => code,
        Err(e) => {
            print_error(&*e);
            ExitCode::from(1)
        }
    }
}

fn not_found() -> ExitCode {
    cli::print_error("objstore", &objstore::client::Error::NotFound);
    ExitCode::from(3)
}

async fn run_operation(client: &Store, op: Op) -> Result<ExitCode, AnyError> {
    match op {
        Op::Put {
            key,
            file,
            ttl,
            content_type,
            if_absent,
            ..
        } => {
            let mut data = Vec::new();
            match file.filter(|f| f.as_os_str() != "-") {
                None => std::io::stdin()
                    .read_to_end(&mut data)
                    .map_err(|e| format!("cannot read standard input: {e}"))?,
                Some(f) => std::fs::File::open(&f)
                    .and_then(|mut h| h.read_to_end(&mut data))
                    .map_err(|e| format!("cannot read {}: {e}", f.display()))?,
            };
            let options = PutOptions {
                ttl,
                content_type,
                if_absent,
                ..PutOptions::default()
            };
            let info = client
                .put(key.as_bytes(), Bytes::from(data), options)
                .await?;
            out(format!(
                "revision {} version {} etag {}\n",
                info.mod_revision, info.version, info.etag
            ))?;
        }
        Op::Get { key, .. } => {
            let Some(o) = client.get(key.as_bytes()).await? else {
                return Ok(not_found());
            };
            out(&o.value)?;
        }
        Op::Stat { key, .. } => {
            let Some(i) = client.head(key.as_bytes()).await? else {
                return Ok(not_found());
            };
            let mut text = format!(
                "size            {}\ncreate-revision {}\nmod-revision    {}\nversion         {}\netag            {}\n",
                i.size, i.create_revision, i.mod_revision, i.version, i.etag
            );
            if !i.content_type.is_empty() {
                text.push_str(&format!("content-type    {}\n", i.content_type));
            }
            if let Some(t) = i.expires_at_ms {
                text.push_str(&format!("expires-at-ms   {t}\n"));
            }
            let mut meta: Vec<_> = i.metadata.iter().collect();
            meta.sort();
            for (k, v) in meta {
                text.push_str(&format!("meta.{k}  {v}\n"));
            }
            out(&text)?;
        }
        Op::Rm { key, .. } => {
            let Some(rev) = client.delete(key.as_bytes()).await? else {
                return Ok(not_found());
            };
            out(format!("deleted at revision {rev}\n"))?;
        }
        Op::Snapshot { .. } => {
            let Store::One(client) = client else {
                return Err("snapshot asks one server (--addr), not a registry's nodes".into());
            };
            let (objects, revision, bytes, path) = client.snapshot().await?;
            out(format!(
                "snapshot {path}: {objects} objects, revision {revision}, {bytes} bytes\n"
            ))?;
        }
        Op::Ls { prefix, .. } => {
            let prefix = prefix.unwrap_or_default();
            let mut text = String::new();
            for (k, i) in client.list_all(prefix.as_bytes()).await? {
                text.push_str(&format!(
                    "{}\t{}\t{}\n",
                    String::from_utf8_lossy(&k),
                    i.size,
                    i.mod_revision
                ));
            }
            out(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
