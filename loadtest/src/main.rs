//! `loadtest`: the command line. Everything else is in the library.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadtest::stats::Point;
use loadtest::{Outcome, Overrides, Plan, Reporter, RunOptions};

/// Full-link load testing for HTTP, objstore (gRPC) and Redis.
///
/// A scenario file (TOML) names the targets, the workload (open model: constant or ramping
/// arrival rate; closed model: constant or ramping workers) and the requests, with thresholds
/// that set the exit code. Latency in open models is measured from the intended send time, so
/// a stalled server shows up in the percentiles (no coordinated omission); the service time
/// (from the actual send) is reported beside it. Every request is tagged as shadow traffic
/// (`x-jupiter-shadow: 1`), and live targets must acknowledge it before any load is sent.
///
/// Exit codes: 0 passed, 1 thresholds failed, 2 invalid scenario or usage, 3 aborted.
#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    after_help = "Start with: loadtest run loadtest/scenarios/quickstart.toml\nThe scenario format: loadtest/README.md"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file and report.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// Arrival rate (per second) of constant-arrival-rate scenarios.
        #[arg(long)]
        rate: Option<f64>,
        /// Duration of constant executors, e.g. 30s or 2m.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Workers of constant-vus scenarios.
        #[arg(long)]
        vus: Option<usize>,
        /// Iterations of constant executors (instead of a duration).
        #[arg(long)]
        iterations: Option<u64>,
        /// Point a target elsewhere: NAME=URL (repeatable).
        #[arg(long = "target", value_name = "NAME=URL", value_parser = parse_target)]
        targets: Vec<(String, String)>,
        /// Run only this scenario (repeatable).
        #[arg(long = "scenario", value_name = "NAME")]
        only: Vec<String>,
        /// Write the JSON report here (overrides [output] json).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the HTML report here (overrides [output] html).
        #[arg(long)]
        html: Option<PathBuf>,
        /// Serve Prometheus metrics at this address while running.
        #[arg(long, value_name = "ADDR")]
        prometheus: Option<String>,
        /// No live progress line.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check a scenario file without sending anything.
    Validate {
        /// The scenario file.
        scenario: PathBuf,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write e.g. 30s or 2m"))
}

fn parse_target(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .ok_or_else(|| "write NAME=URL".to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { scenario } => match Plan::load(&scenario, &Overrides::default()) {
            Ok(plan) => {
                println!(
                    "{}: ok ({} scenario(s), {} target(s))",
                    scenario.display(),
                    plan.scenarios.len(),
                    plan.targets.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            scenario,
            rate,
            duration,
            vus,
            iterations,
            targets,
            only,
            json,
            html,
            prometheus,
            quiet,
        } => {
            let overrides = Overrides {
                rate,
                duration,
                vus,
                iterations,
                targets,
                only,
            };
            let mut plan = match Plan::load(&scenario, &overrides) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if json.is_some() {
                plan.output.json = json;
            }
            if html.is_some() {
                plan.output.html = html;
            }
            if prometheus.is_some() {
                plan.output.prometheus = prometheus;
            }
            let threads = match plan.run.threads {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            };
            // One thread: a current-thread runtime, without the cross-thread wake-up paths a
            // one-worker multi-thread runtime still pays for.
            let mut builder = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(threads);
                b
            };
            let runtime = match builder.enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(3);
                }
            };
            runtime.block_on(run(plan, quiet))
        }
    }
}

async fn run(plan: Plan, quiet: bool) -> ExitCode {
    let cancel = tokio_util::sync::CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping (Ctrl-C again to quit at once)…");
                cancel.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(3);
                }
            }
        });
    }
    let json = plan.output.json.clone();
    let html = plan.output.html.clone();
    let options = RunOptions {
        reporter: Some(Arc::new(StderrReporter {
            progress: !quiet && std::io::stderr().is_terminal(),
        })),
        cancel: Some(cancel),
    };
    let (report, outcome) = match loadtest::run(plan, options).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(3);
        }
    };
    print!("{}", report.summary());
    let mut write_failed = false;
    for (path, text) in [(json, report.to_json()), (html, report.to_html())]
        .into_iter()
        .filter_map(|(p, f)| p.map(|p| (p, f)))
    {
        match std::fs::write(&path, text) {
            Ok(()) => println!("report: {}", path.display()),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                write_failed = true;
            }
        }
    }
    match outcome {
        Outcome::Passed if !write_failed => ExitCode::SUCCESS,
        Outcome::Passed => ExitCode::from(3),
        Outcome::ThresholdsFailed => {
            println!("thresholds failed");
            ExitCode::from(1)
        }
        Outcome::Aborted(why) => {
            println!("aborted: {why}");
            ExitCode::from(3)
        }
    }
}

/// Progress and notices on stderr: the progress line is rewritten in place once a second (when
/// `progress`: stderr is a terminal and `-q` was not given), and a newline ends it.
struct StderrReporter {
    progress: bool,
}

impl Reporter for StderrReporter {
    // Written, not `eprint!`ed: a closed stderr is no reason to stop a run.
    fn serving_metrics(&self, addr: SocketAddr) {
        let _ = writeln!(
            std::io::stderr(),
            "prometheus metrics: http://{addr}/metrics"
        );
    }

    fn progress(&self, p: &Point, elapsed: Duration) {
        if !self.progress {
            return;
        }
        let t = elapsed.as_secs_f64();
        let rate = if p.requests > 0 {
            p.errors as f64 / p.requests as f64 * 100.0
        } else {
            0.0
        };
        let _ = write!(
            std::io::stderr(),
            "\r[{t:>5.0}s] {:>8} req/s  p50 {:>8.2}ms  p99 {:>8.2}ms  errors {:>6} ({rate:.2}%)   ",
            p.requests,
            p.p50_ms,
            p.p99_ms,
            p.errors
        );
    }

    fn finished(&self) {
        if self.progress {
            let _ = writeln!(std::io::stderr());
        }
    }
}
