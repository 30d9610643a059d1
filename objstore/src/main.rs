//! `objstore`: run the object store, or operate on one.
//!
//! Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 key not found.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jupiter_core::app::{App, component_fn};
use jupiter_core::config::Config;
use jupiter_core::logging::{self, LogConfig};
use jupiter_core::metrics::Metrics;
use jupiter_core::registry::{self, RegistryConfig, ServiceInfo, ServiceKind, ServiceRegistrar};
use jupiter_core::shadow::{ShadowLayer, ShadowSwitch};
use objstore::client::{Client, ClientConfig, PutOptions};
use objstore::config::{ObjstoreConfig, OnCorrupt};
use objstore::engine::Engine;
use objstore::server::{Service, serve_with};
use objstore::snapshot::{self, Snapshotter};

const USAGE: &str = "\
usage: objstore <command> [options]

commands:
  serve [--config FILE]        run the store (gRPC on 127.0.0.1:7070 by default) until SIGINT
                               or SIGTERM; governance (/metrics, /health/*) alongside
  put KEY [FILE|-]             store FILE (or standard input) under KEY
        [--ttl 30s] [--content-type TYPE] [--if-absent]
  get KEY                      write KEY's value to standard output
  stat KEY                     print KEY's metadata
  rm KEY                       delete KEY
  ls [PREFIX]                  list keys under PREFIX, in order, with size and revision
  snapshot                     have the server write its snapshot now

options for the operator commands:
  --addr HOST:PORT             the server (default 127.0.0.1:7070, or $OBJSTORE_ADDR)
  --token TOKEN                bearer token (or $OBJSTORE_TOKEN)
  --timeout 5s                 deadline of each call

exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 key not found";

/// jupiter-core's commented template, then objstore's: the embedded defaults.
const CORE_DEFAULTS: &str = include_str!("../../jupiter-core/config.example.toml");
const DEFAULTS: &str = include_str!("../objstore.example.toml");

struct Args {
    command: String,
    positional: Vec<String>,
    config: Option<PathBuf>,
    addr: String,
    token: Option<String>,
    timeout: Duration,
    ttl: Option<Duration>,
    content_type: Option<String>,
    if_absent: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        command: String::new(),
        positional: Vec::new(),
        config: None,
        addr: std::env::var("OBJSTORE_ADDR").unwrap_or_else(|_| "127.0.0.1:7070".into()),
        token: std::env::var("OBJSTORE_TOKEN").ok(),
        timeout: Duration::from_secs(5),
        ttl: None,
        content_type: None,
        if_absent: false,
    };
    let duration = |flag: &str, v: Option<String>| -> Result<Duration, String> {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        humantime::parse_duration(&v).map_err(|e| format!("{flag} {v:?}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--config" => a.config = Some(it.next().ok_or("--config needs a file")?.into()),
            "--addr" => a.addr = it.next().ok_or("--addr needs HOST:PORT")?,
            "--token" => a.token = Some(it.next().ok_or("--token needs a value")?),
            "--timeout" => a.timeout = duration("--timeout", it.next())?,
            "--ttl" => a.ttl = Some(duration("--ttl", it.next())?),
            "--content-type" => {
                a.content_type = Some(it.next().ok_or("--content-type needs a value")?)
            }
            "--if-absent" => a.if_absent = true,
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ if a.command.is_empty() => a.command = arg,
            _ => a.positional.push(arg),
        }
    }
    let want = |n: std::ops::RangeInclusive<usize>| {
        if n.contains(&a.positional.len()) {
            Ok(())
        } else {
            Err(format!("{}: wrong number of arguments", a.command))
        }
    };
    match a.command.as_str() {
        "" => return Err("missing command".into()),
        "serve" => want(0..=0)?,
        "put" => want(1..=2)?,
        "get" | "stat" | "rm" => want(1..=1)?,
        "ls" => want(0..=1)?,
        "snapshot" => want(0..=0)?,
        other => return Err(format!("unknown command {other:?}")),
    }
    Ok(a)
}

fn print_error(e: &dyn std::error::Error) {
    let mut msg = format!("objstore: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    eprintln!("{msg}");
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
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("objstore: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("objstore: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if args.command == "serve" {
        return runtime.block_on(serve_command(args.config));
    }
    runtime.block_on(operate(args))
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
                    println!(
                        "loaded snapshot {}: {} objects, revision {}, in {:?}",
                        path.display(),
                        stats.objects,
                        stats.revision,
                        started.elapsed()
                    );
                    engine
                }
                Err(e @ snapshot::SnapshotError::Corrupt { .. })
                    if snap.on_corrupt == OnCorrupt::StartEmpty =>
                {
                    eprintln!("objstore: {e}; starting empty (on-corrupt = \"start-empty\")");
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
    let listener = tokio::net::TcpListener::bind(section.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", section.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "grpcs" } else { "grpc" };
    println!("objstore listening on {scheme}://{addr}");
    let registry = registry::from_config(&registry_config).await?;
    let registrar = ServiceRegistrar::new(
        registry.clone(),
        ServiceInfo::new(app_config.name.clone(), "grpc", addr.to_string())
            .mode(app_config.mode.clone())
            .kind(ServiceKind::Provider),
    );
    let switch = ShadowSwitch::from_config(&config)?;
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
            let l = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| format!("cannot listen on {at} (resp-listen): {e}"))?;
            println!("objstore RESP listening on redis://{}", l.local_addr()?);
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
        .on_governance_bound(|a| println!("governance listening on http://{a}"))
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
                println!(
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
            let config = objstore::resp::RespConfig {
                max_object: section.max_object_size.bytes() as usize,
            };
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

async fn operate(a: Args) -> ExitCode {
    let config = ClientConfig {
        timeout: a.timeout,
        token: a.token.clone(),
        ..ClientConfig::default()
    };
    let client = match Client::connect(&a.addr, config).await {
        Ok(c) => c,
        Err(e) => {
            print_error(&e);
            return ExitCode::from(1);
        }
    };
    let key = a
        .positional
        .first()
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let result: Result<ExitCode, objstore::client::Error> = async {
        match a.command.as_str() {
            "put" => {
                let source = a.positional.get(1).map_or("-", String::as_str);
                let mut data = Vec::new();
                let read = if source == "-" {
                    std::io::stdin().read_to_end(&mut data)
                } else {
                    std::fs::File::open(source).and_then(|mut f| f.read_to_end(&mut data))
                };
                if let Err(e) = read {
                    eprintln!("objstore: cannot read {source}: {e}");
                    return Ok(ExitCode::from(1));
                }
                let info = client
                    .put(
                        &key,
                        Bytes::from(data),
                        PutOptions {
                            ttl: a.ttl,
                            content_type: a.content_type.clone(),
                            if_absent: a.if_absent,
                            ..PutOptions::default()
                        },
                    )
                    .await?;
                println!(
                    "revision {} version {} etag {}",
                    info.mod_revision, info.version, info.etag
                );
                Ok(ExitCode::SUCCESS)
            }
            "get" => match client.get(&key).await? {
                Some(o) => {
                    let mut out = std::io::stdout().lock();
                    if out.write_all(&o.value).and_then(|()| out.flush()).is_err() {
                        return Ok(ExitCode::from(1));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("objstore: not found");
                    Ok(ExitCode::from(3))
                }
            },
            "stat" => match client.head(&key).await? {
                Some(i) => {
                    println!("size            {}", i.size);
                    println!("create-revision {}", i.create_revision);
                    println!("mod-revision    {}", i.mod_revision);
                    println!("version         {}", i.version);
                    println!("etag            {}", i.etag);
                    if !i.content_type.is_empty() {
                        println!("content-type    {}", i.content_type);
                    }
                    if let Some(t) = i.expires_at_ms {
                        println!("expires-at-ms   {t}");
                    }
                    let mut meta: Vec<_> = i.metadata.iter().collect();
                    meta.sort();
                    for (k, v) in meta {
                        println!("meta.{k}  {v}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("objstore: not found");
                    Ok(ExitCode::from(3))
                }
            },
            "rm" => match client.delete(&key).await? {
                Some(rev) => {
                    println!("deleted at revision {rev}");
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("objstore: not found");
                    Ok(ExitCode::from(3))
                }
            },
            "snapshot" => {
                let (objects, revision, bytes, path) = client.snapshot().await?;
                println!("snapshot {path}: {objects} objects, revision {revision}, {bytes} bytes");
                Ok(ExitCode::SUCCESS)
            }
            "ls" => {
                for (k, i) in client.list_all(&key).await? {
                    println!(
                        "{}\t{}\t{}",
                        String::from_utf8_lossy(&k),
                        i.size,
                        i.mod_revision
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            _ => unreachable!("checked by parse_args"),
        }
    }
    .await;
    match result {
        Ok(code) => code,
        Err(e) => {
            print_error(&e);
            ExitCode::from(1)
        }
    }
}
