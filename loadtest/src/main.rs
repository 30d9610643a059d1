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
/// Exit codes: 0 passed, 1 thresholds failed, 2 invalid scenario, report or usage, 3 aborted.
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

// Parsed once per process: the size of the `Run` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file and report.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
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
        /// Split the run over this many workers (`loadtest worker`) found in the registry:
        /// each runs one segment, all start together, one merged report.
        #[arg(long, value_name = "N", requires = "registry")]
        workers: Option<usize>,
        /// The registry the workers registered in: etcd://HOST:PORT[,HOST:PORT…].
        #[arg(long, value_name = "URL", value_parser = loadtest::distributed::registry_config)]
        registry: Option<jupiter_core::registry::RegistryConfig>,
        /// The workers' pool.
        #[arg(long, default_value = "default")]
        pool: String,
        /// How long to wait for enough workers to be registered.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        wait: Duration,
    },
    /// Serve as a worker of distributed runs (`loadtest run --workers N`): registers in the
    /// registry and runs the segment a coordinator hands it.
    Worker {
        /// The registry to register in: etcd://HOST:PORT[,HOST:PORT…].
        #[arg(long, value_name = "URL", value_parser = loadtest::distributed::registry_config)]
        registry: jupiter_core::registry::RegistryConfig,
        /// Where to listen for coordinators (loopback by default, as every Jupiter server;
        /// 0.0.0.0:6565 for coordinators on other machines).
        #[arg(long, default_value = "127.0.0.1:6565")]
        listen: SocketAddr,
        /// The pool to join (coordinators pick workers of one pool).
        #[arg(long, default_value = "default")]
        pool: String,
    },
    /// Check a scenario file without sending anything.
    Validate {
        /// The scenario file.
        scenario: PathBuf,
    },
    /// Write a commented starter scenario for an HTTP endpoint (to stdout, or a new file).
    Init {
        /// The endpoint, e.g. http://127.0.0.1:8080/health.
        url: String,
        /// Write it here (an existing file is not overwritten).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Compare two runs of a scenario: a baseline and a candidate (JSON reports). Prints the
    /// change of each step's figures; exit code 1 when p99, throughput or the error rate got
    /// worse than the tolerance, 2 when a file is not a report.
    Compare {
        /// The reference run's JSON report.
        baseline: PathBuf,
        /// The run under test.
        candidate: PathBuf,
        /// How much worse a figure may get: `10%` (the default), `0%`, `25%`.
        #[arg(long, default_value = "10%", value_parser = parse_tolerance)]
        tolerance: f64,
        /// Write the HTML diff here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Write the comparison as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Merge JSON reports (the segments of one run, or runs of one scenario) into one:
    /// histograms added, thresholds evaluated again; the exit code is the merged run's.
    Merge {
        /// The JSON reports (`loadtest run --json`).
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Write the merged JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the merged HTML report here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
}

/// What the binary itself can fail at (the library's failures are [`loadtest::Error`]).
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot start the runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot write the report {}", .path.display())]
    WriteReport {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Init(String),
    #[error("cannot write the scenario {} (an existing file is never overwritten)", .path.display())]
    WriteScenario {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
}

/// Exit codes (documented in `--help` and the README).
const PASSED: u8 = 0;
const THRESHOLDS_FAILED: u8 = 1;
const INVALID: u8 = 2;
const ABORTED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { scenario } => match Plan::load(&scenario, &Overrides::default()) {
            Ok(plan) => {
                let line = format!(
                    "{}: ok ({} scenario(s), {} target(s))\n",
                    scenario.display(),
                    plan.scenarios.len(),
                    plan.targets.len()
                );
                let mut out = Stdout::default();
                match out.write(&line) {
                    Ok(()) => ExitCode::from(PASSED),
                    Err(e) => fail(&e, ABORTED),
                }
            }
            Err(e) => fail(&e, exit_code(&e)),
        },
        Command::Init { url, output } => init(&url, output),
        Command::Compare {
            baseline,
            candidate,
            tolerance,
            html,
            json,
        } => compare(baseline, candidate, tolerance, html, json),
        Command::Merge {
            reports,
            json,
            html,
        } => match loadtest::merge::merge(&reports) {
            Ok(report) => {
                let outcome = if report.passed {
                    Outcome::Passed
                } else {
                    Outcome::ThresholdsFailed
                };
                conclude(&report, &outcome, json, html)
            }
            Err(e) => fail(&e, exit_code(&e)),
        },
        Command::Worker {
            registry,
            listen,
            pool,
        } => match runtime(0) {
            Ok(rt) => rt.block_on(worker(loadtest::distributed::WorkerOptions {
                listen,
                registry,
                pool,
            })),
            Err(e) => fail(&CliError::Runtime(e), ABORTED),
        },
        Command::Run {
            scenario,
            overrides,
            json,
            html,
            quiet,
            workers: Some(workers),
            registry: Some(registry),
            pool,
            wait,
            ..
        } => {
            let coordination = loadtest::distributed::Coordination {
                workers,
                registry,
                pool,
                wait,
            };
            coordinate(scenario, overrides, coordination, json, html, quiet)
        }
        Command::Run {
            scenario,
            overrides,
            json,
            html,
            prometheus,
            quiet,
            ..
        } => {
            let mut plan = match Plan::load(&scenario, &overrides) {
                Ok(p) => p,
                Err(e) => return fail(&e, exit_code(&e)),
            };
            if let Some(d) = plan.distributed.take() {
                // Checked when the scenario loaded.
                let registry = match loadtest::distributed::registry_config(&d.registry) {
                    Ok(r) => r,
                    Err(message) => {
                        let e = loadtest::Error::Distributed(message);
                        return fail(&e, INVALID);
                    }
                };
                let coordination = loadtest::distributed::Coordination {
                    workers: d.workers,
                    registry,
                    pool: d.pool,
                    wait: d.wait,
                };
                return coordinate(scenario, overrides, coordination, json, html, quiet);
            }
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
            match builder.enable_all().build() {
                Ok(runtime) => runtime.block_on(run(plan, quiet)),
                Err(e) => fail(&CliError::Runtime(e), ABORTED),
            }
        }
    }
}

/// A runtime of `threads` workers (0: one per core).
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        b.worker_threads(threads);
    }
    b.enable_all().build()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write e.g. 30s or 2m"))
}

/// `loadtest worker`: serves until Ctrl-C or SIGTERM.
async fn worker(options: loadtest::distributed::WorkerOptions) -> ExitCode {
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
    }
    let log: Arc<dyn Fn(String) + Send + Sync> = Arc::new(|line: String| {
        let _ = jupiter_core::cli::write_stdout(format!("{line}\n"));
    });
    let pool = options.pool.clone();
    let served = loadtest::distributed::serve_worker(
        options,
        stop,
        |addr| {
            let _ = jupiter_core::cli::write_stdout(format!(
                "worker listening on ws://{addr} (pool {pool})\n"
            ));
        },
        log,
    )
    .await;
    match served {
        Ok(()) => ExitCode::from(PASSED),
        Err(e) => fail(&e, ABORTED),
    }
}

/// `loadtest run --workers N` (or `[distributed]`): the coordinator, on a small runtime of its
/// own (it only relays and merges).
fn coordinate(
    scenario: PathBuf,
    overrides: Overrides,
    coordination: loadtest::distributed::Coordination,
    json: Option<PathBuf>,
    html: Option<PathBuf>,
    quiet: bool,
) -> ExitCode {
    match runtime(2) {
        Ok(rt) => rt.block_on(coordinate_on(
            scenario,
            overrides,
            coordination,
            json,
            html,
            quiet,
        )),
        Err(e) => fail(&CliError::Runtime(e), ABORTED),
    }
}

async fn coordinate_on(
    scenario: PathBuf,
    overrides: Overrides,
    coordination: loadtest::distributed::Coordination,
    json: Option<PathBuf>,
    html: Option<PathBuf>,
    quiet: bool,
) -> ExitCode {
    let plan = match Plan::load(&scenario, &overrides) {
        Ok(p) => p,
        Err(e) => return fail(&e, exit_code(&e)),
    };
    let (json, html) = (json.or(plan.output.json), html.or(plan.output.html));
    let cancel = tokio_util::sync::CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = writeln!(std::io::stderr(), "\nstopping every worker…");
                cancel.cancel();
            }
        });
    }
    let reporter: Arc<dyn Reporter> = Arc::new(StderrReporter {
        progress: !quiet && std::io::stderr().is_terminal(),
    });
    match loadtest::distributed::run_distributed(
        &scenario,
        &overrides,
        &coordination,
        Some(reporter),
        cancel,
    )
    .await
    {
        Ok((report, outcome)) => conclude(&report, &outcome, json, html),
        Err(e) => fail(&e, exit_code(&e)),
    }
}

/// `loadtest init`: exit code 2 for a URL it cannot use or a file that exists.
fn init(url: &str, output: Option<PathBuf>) -> ExitCode {
    let text = match loadtest::init::starter(url) {
        Ok(t) => t,
        Err(message) => return fail(&CliError::Init(message), INVALID),
    };
    let Some(path) = output else {
        let mut out = Stdout::default();
        out.print(&text);
        return ExitCode::from(if out.failed { ABORTED } else { PASSED });
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path);
    let written = file.and_then(|mut f| f.write_all(text.as_bytes()));
    match written {
        Ok(()) => {
            Stdout::default().print(&format!(
                "wrote {p}: check it with `loadtest validate {p}`, run it with `loadtest run {p}`\n",
                p = path.display()
            ));
            ExitCode::from(PASSED)
        }
        Err(source) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            fail(&CliError::WriteScenario { path, source }, INVALID)
        }
        Err(source) => fail(&CliError::WriteScenario { path, source }, ABORTED),
    }
}

/// Prints `e` with its causes; returns `code`.
fn fail(e: &(dyn std::error::Error + 'static), code: u8) -> ExitCode {
    jupiter_core::cli::print_error("loadtest", e);
    ExitCode::from(code)
}

/// 2 for a scenario at fault, 3 for a run that could not start.
fn exit_code(e: &loadtest::Error) -> u8 {
    if e.is_invalid_scenario() {
        INVALID
    } else {
        ABORTED
    }
}

/// Stdout for the summary and report lines. Once the reader has gone (`loadtest … | head -1`)
/// the rest is dropped quietly: that is not an error, and the exit code stays the run's.
#[derive(Default)]
struct Stdout {
    closed: bool,
    /// A write failed other than by a closed pipe (and was reported).
    failed: bool,
}

impl Stdout {
    fn write(&mut self, text: &str) -> Result<(), CliError> {
        if !self.closed {
            self.closed = !jupiter_core::cli::write_stdout(text).map_err(CliError::Stdout)?;
        }
        Ok(())
    }

    /// [`write`](Stdout::write), reporting a failure on stderr instead of returning it.
    fn print(&mut self, text: &str) {
        if let Err(e) = self.write(text) {
            jupiter_core::cli::print_error("loadtest", &e);
            self.failed = true;
            self.closed = true;
        }
    }
}

async fn run(plan: Plan, quiet: bool) -> ExitCode {
    let cancel = tokio_util::sync::CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = writeln!(
                    std::io::stderr(),
                    "\nstopping (Ctrl-C again to quit at once)…"
                );
                cancel.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(ABORTED.into());
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
        Err(e) => return fail(&e, exit_code(&e)),
    };
    conclude(&report, &outcome, json, html)
}

/// Prints the summary, writes the reports asked for and returns the exit code of `outcome`
/// (3 when a report could not be written).
fn conclude(
    report: &loadtest::report::Report,
    outcome: &Outcome,
    json: Option<PathBuf>,
    html: Option<PathBuf>,
) -> ExitCode {
    let mut out = Stdout::default();
    // A report that could not be written (or a stdout that fails other than by a closed pipe)
    // turns a pass into exit code 3; the other reports are still written.
    out.print(&report.summary());
    let write_failed = write_files(
        &mut out,
        [
            (json, &|| report.to_json()),
            (html, &|| Ok(report.to_html())),
        ],
    );
    let code = match outcome {
        Outcome::Passed if write_failed || out.failed => ABORTED,
        Outcome::Passed => PASSED,
        Outcome::ThresholdsFailed => {
            out.print("thresholds failed\n");
            THRESHOLDS_FAILED
        }
        Outcome::Aborted(why) => {
            out.print(&format!("aborted: {why}\n"));
            ABORTED
        }
    };
    ExitCode::from(code)
}

/// A rendering of a report or comparison, made only when its file was asked for.
type Render<'a> = &'a dyn Fn() -> Result<String, loadtest::Error>;

/// Writes each asked-for file; whether any could not be rendered or written (each failure is
/// reported, and the other files are still written).
fn write_files(out: &mut Stdout, files: [(Option<PathBuf>, Render<'_>); 2]) -> bool {
    let mut failed = false;
    for (path, render) in files {
        let Some(path) = path else { continue };
        let text = match render() {
            Ok(t) => t,
            Err(e) => {
                jupiter_core::cli::print_error("loadtest", &e);
                failed = true;
                continue;
            }
        };
        match std::fs::write(&path, text) {
            Ok(()) => out.print(&format!("report: {}\n", path.display())),
            Err(source) => {
                jupiter_core::cli::print_error("loadtest", &CliError::WriteReport { path, source });
                failed = true;
            }
        }
    }
    failed
}

/// `loadtest compare`: 0 no regression, 1 regressions, 2 a file that is not a report, 3 an
/// output that could not be written.
fn compare(
    baseline: PathBuf,
    candidate: PathBuf,
    tolerance: f64,
    html: Option<PathBuf>,
    json: Option<PathBuf>,
) -> ExitCode {
    let inputs = loadtest::compare::Inputs {
        baseline: vec![baseline],
        candidate: vec![candidate],
        tolerance,
    };
    let comparison = match loadtest::compare::compare(&inputs) {
        Ok(c) => c,
        Err(e) => return fail(&e, exit_code(&e)),
    };
    let mut out = Stdout::default();
    out.print(&comparison.summary());
    let write_failed = write_files(
        &mut out,
        [
            (json, &|| comparison.to_json()),
            (html, &|| Ok(comparison.to_html())),
        ],
    );
    ExitCode::from(if write_failed || out.failed {
        ABORTED
    } else if comparison.passed() {
        PASSED
    } else {
        THRESHOLDS_FAILED
    })
}

/// `--tolerance 10%` (or `0.1`): how much worse a figure may get, as a fraction.
fn parse_tolerance(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a share such as 10%"))?;
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{s:?} is not a share from 0% to 10000%"))
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
