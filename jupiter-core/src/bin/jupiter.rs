//! `jupiter`: runs a Jupiter service shell (config, logging, governance, lifecycle) and checks
//! configuration files.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::{Parser, Subcommand};
use jupiter_core::app::{App, component_fn};
use jupiter_core::config::Config;
use jupiter_core::logging::{self, LogConfig};
use jupiter_core::metrics::{Code, Metrics};
use jupiter_core::registry::{self, RegistryConfig, ServiceInfo, ServiceKind, ServiceRegistrar};
use jupiter_core::{cli, say};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The commented template, embedded as the lowest layer.
const DEFAULTS: &str = include_str!("../../config.example.toml");

/// Runs a Jupiter service shell (config, logging, governance, lifecycle) and checks
/// configuration files.
///
/// Configuration is layered: the embedded defaults (`config.example.toml`), then `--config
/// FILE`, then environment overrides (`JUPITER_SECTION__KEY=value`).
///
/// Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
#[derive(Debug, Parser)]
#[command(name = "jupiter", version, after_help = "Start with: jupiter demo")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// TOML configuration layered over the embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the service shell on embedded defaults (governance on a free loopback port),
    /// check its own /health/ready, /metrics and /config, then shut down gracefully.
    Demo,
    /// Run until SIGINT or SIGTERM.
    Serve,
    /// Validate a configuration file and print the effective configuration.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let Cli {
        command,
        config: file,
    } = Cli::parse();
    let mut builder = Config::builder().toml("<embedded defaults>", DEFAULTS);
    if matches!(command, Command::Demo) {
        builder = builder.toml(
            "<demo>",
            "[governance]\naddr = \"127.0.0.1:0\"\n[app.shutdown]\ngrace = \"200ms\"\n",
        );
    }
    let file = match &command {
        Command::Check { file } => Some(file.clone()),
        _ => file,
    };
    if let Some(f) = &file {
        builder = builder.file(f);
    }
    let config = match builder.build().and_then(|c| validate(&c).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            print_error(&e);
            return ExitCode::from(2);
        }
    };
    if let Command::Check { .. } = command {
        return match cli::write_stdout(format!("{:#}\n", config.effective(true))) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                cli::print_error("jupiter", &e);
                ExitCode::from(1)
            }
        };
    }
    let log_config: LogConfig = match config.get("log") {
        Ok(l) => l,
        Err(e) => {
            print_error(&e);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli::print_error("jupiter", &e);
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let log = logging::init(&log_config)?;
        let demo = matches!(command, Command::Demo);
        run(config, log, demo).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e);
            ExitCode::from(1)
        }
    }
}

/// Checks every section the shell reads, so `check` and start-up fail on the same errors.
fn validate(config: &Config) -> Result<(), jupiter_core::Error> {
    config.get::<jupiter_core::app::AppConfig>("app")?;
    config.get::<jupiter_core::governance::GovernanceConfig>("governance")?;
    config.get::<LogConfig>("log")?;
    config.get::<RegistryConfig>("registry")?;
    Ok(())
}

fn print_error(e: &(dyn std::error::Error + 'static)) {
    cli::print_error("jupiter", e);
}

async fn run(
    config: Config,
    log: logging::LogHandle,
    demo: bool,
) -> Result<(), jupiter_core::Error> {
    let metrics = Metrics::global().clone();
    let app_config: jupiter_core::app::AppConfig = config.get("app")?;
    let registry = registry::from_config(&config.get::<RegistryConfig>("registry")?).await?;
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let bound = Arc::new(OnceLock::<SocketAddr>::new());
    let bound2 = bound.clone();
    // The governance endpoint is what this shell registers (kind governor, scheme http), once
    // every component serves; its address is known only after binding.
    let registrar = ServiceRegistrar::with(registry.clone(), move || {
        let addr = bound2.get().map(ToString::to_string).unwrap_or_default();
        ServiceInfo::new(app_config.name.clone(), "http", addr)
            .mode(app_config.mode.clone())
            .kind(ServiceKind::Governor)
    });
    let mut app = App::from_config(&config)?
        .handle_signals(!demo)
        .build()
        .with_governance(|g| g.log(&log).registry(registry.clone()))
        .on_governance_bound(move |addr| {
            say!("governance listening on http://{addr}");
            let _ = bound.set(addr);
            let _ = addr_tx.send(addr);
        });
    if config
        .get::<jupiter_core::governance::GovernanceConfig>("governance")?
        .enabled
    {
        // Its instance key (Go Jupiter's governor kind), and the key Prometheus's etcd
        // discovery and Juno read (`/prometheus/job/{app}/{host}`).
        app = app
            .registrar(registrar)
            .register_governance(registry.clone());
    }
    let stop = app.shutdown_handle();
    let work = metrics.server("internal", "tick", "self");
    let app = app.component(component_fn("ticker", move |mut ctx| async move {
        ctx.ready();
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = ctx.stopped() => break,
                _ = every.tick() => work.start().finish(Code::OK),
            }
        }
        Ok(())
    }));
    if !demo {
        return app.run().await;
    }
    let running = tokio::spawn(app.run());
    let checked = async {
        let addr = addr_rx
            .await
            .map_err(|_| "the governance server did not start".to_string())?;
        // Ready comes after every component reported serving.
        let mut status = 0;
        for _ in 0..100 {
            status = http_get(addr, "/health/ready").await?.0;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        say!("GET /health/ready -> {status}");
        for path in ["/health/live", "/metrics", "/config"] {
            let (status, body) = http_get(addr, path).await?;
            say!("GET {path} -> {status} ({} bytes)", body.len());
            if path == "/metrics" {
                for line in body
                    .lines()
                    .filter(|l| l.starts_with("server_handle_total"))
                {
                    say!("  {line}");
                }
            }
            if status != 200 {
                return Err(format!("{path} answered {status}"));
            }
        }
        Ok::<(), String>(())
    }
    .await;
    stop.shutdown();
    let ran = running.await.map_err(|e| jupiter_core::Error::Io {
        what: "app task".into(),
        source: std::io::Error::other(e),
    })?;
    ran?;
    match checked {
        Ok(()) => {
            say!("demo: all governance endpoints answered; shut down cleanly");
            Ok(())
        }
        Err(msg) => Err(jupiter_core::Error::Io {
            what: "demo self-check".into(),
            source: std::io::Error::other(msg),
        }),
    }
}

/// A minimal HTTP/1.1 GET, enough for the self-check without an HTTP client dependency.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed response")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
