//! Distributed runs, coordinated through jupiter-core's registry (etcd): no cluster manager of
//! our own.
//!
//! - `loadtest worker --registry etcd://…` listens for a coordinator (WebSocket) and registers
//!   itself as `ws:loadtest-worker:v1:{pool}/{address}`.
//! - `loadtest run scenario.toml --workers N --registry etcd://…` finds N workers of the pool,
//!   hands worker *i* (in address order) the scenario's text and segment *i*/N, waits until all
//!   have connected and probed their targets, then starts them together: each gets the same
//!   start instant, a second ahead (the barrier). Each worker computes its own slice of the
//!   global schedule (see [`segment`](crate::segment)), so intended send times, and with them
//!   the coordinated-omission correction, hold across workers.
//! - Workers stream their per-second figures with histograms; the coordinator adds them second
//!   by second (histograms added, never percentiles averaged) for the live progress line, and
//!   at the end merges the workers' full reports exactly as `loadtest merge` does, evaluates
//!   every threshold on the sums and writes one report with a per-worker breakdown.
//! - `abort-on-fail` thresholds of the run (without a selector) are evaluated by the
//!   coordinator each second on every worker's figures added together; the others (of a
//!   scenario, a step, or with a selector) by each worker on its share, as in a `--segment`
//!   run. Either way a failing one stops every worker, and the merged report carries
//!   `stopped_by`. Ctrl-C on the coordinator stops them all too.
//! - A worker that dies or disconnects: the run goes on with the others; the report lists it
//!   as `lost` and its segment under `missing_segments`, and the exit code is 3 (incomplete).
//!
//! # Messages (JSON over WebSocket text frames)
//!
//! coordinator → worker: `{"type":"prepare","job":{…}}`, `{"type":"start","at_unix_ms":…}`,
//! `{"type":"stop"}`. worker → coordinator: `{"type":"ready"}`,
//! `{"type":"failed","message":…}`, `{"type":"second","point":{…}}` (once a second),
//! `{"type":"report","report":"<the JSON report>"}` (last).
//!
//! The scenario travels as text; files it names (CSV feeders, `.proto` files) are read by each
//! worker from the same path as on the coordinator (a shared volume or a Kubernetes ConfigMap).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt as _, StreamExt as _};
use jupiter_core::registry::{self, RegistryConfig, ServiceInfo, ServiceKind, Target};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::report::{Report, WorkerShare};
use crate::run::{Outcome, Reporter, RunOptions};
use crate::scenario::{Overrides, Plan};
use crate::segment::Segment;
use crate::stats::{Hdr, Point, StepWindow};

/// The service name workers register under.
pub const SERVICE: &str = "loadtest-worker";
/// The registry scheme of a worker's address.
const SCHEME: &str = "ws";
/// The largest message either side accepts (a final report of a long run with many steps).
const MAX_MESSAGE: usize = 256 << 20;
/// How long the coordinator waits for every worker to prepare (connect and probe).
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);
/// The barrier: workers start this long after the last of them is ready.
const START_DELAY: Duration = Duration::from_secs(1);
/// How long a running worker may stay silent (beyond `graceful-stop`) before it counts as lost.
const SILENCE: Duration = Duration::from_secs(15);
/// How long a connection to a worker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum ToWorker {
    Prepare { job: Box<Job> },
    Start { at_unix_ms: u64 },
    Stop,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum FromWorker {
    Ready,
    Failed { message: String },
    Second { point: WirePoint },
    Report { report: String },
}

/// What a worker runs: the scenario, its overrides, its segment and the run's id.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    /// The scenario file's path on the coordinator (relative files are read from its folder).
    path: PathBuf,
    text: String,
    segment: String,
    run_id: String,
    targets: Vec<(String, String)>,
    rate: Option<f64>,
    duration_ms: Option<u64>,
    vus: Option<usize>,
    iterations: Option<u64>,
    only: Vec<String>,
}

/// A second of a worker's run: what the live merge needs of a [`Point`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct WirePoint {
    t: f64,
    requests: u64,
    errors: u64,
    #[serde(default)]
    hdr: Option<Hdr>,
    #[serde(default)]
    dropped: Option<u64>,
}

/// The registry a `--registry` URL names (see [`RegistryConfig::from_url`]).
///
/// # Errors
///
/// Not such a URL.
pub fn registry_config(url: &str) -> Result<RegistryConfig, String> {
    RegistryConfig::from_url(url)
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn text(m: &impl Serialize) -> Message {
    // Our own message types always serialize.
    Message::text(serde_json::to_string(m).unwrap_or_default())
}

fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

// ---------------------------------------------------------------------------------------------
// The worker.

/// Where a worker listens and registers.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The address to listen on (port 0: any).
    pub listen: SocketAddr,
    /// The registry it registers in.
    pub registry: RegistryConfig,
    /// The pool (the registry's mode part): coordinators pick workers of one pool.
    pub pool: String,
}

/// Serves as a worker until `stop`: registered while it serves, one run at a time. `bound` is
/// told the address once it listens and is registered; `log` gets one line per event (run
/// started, each second, run ended).
///
/// # Errors
///
/// It cannot listen or register.
pub async fn serve_worker(
    options: WorkerOptions,
    stop: CancellationToken,
    bound: impl FnOnce(SocketAddr),
    log: Arc<dyn Fn(String) + Send + Sync>,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| Error::Distributed(format!("cannot listen on {}: {e}", options.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Distributed(format!("listener address: {e}")))?;
    let registry = registry::from_config(&options.registry)
        .await
        .map_err(|e| Error::Distributed(format!("registry: {e}")))?;
    let registration = registry
        .register(
            ServiceInfo::new(SERVICE, SCHEME, addr.to_string())
                .mode(options.pool.clone())
                .kind(ServiceKind::Provider),
        )
        .await
        .map_err(|e| Error::Distributed(format!("cannot register: {e}")))?;
    bound(addr);
    let busy = Arc::new(tokio::sync::Semaphore::new(1));
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    log(format!("accept failed: {e}"));
                    continue;
                }
            },
        };
        let (busy, log, stop) = (busy.clone(), log.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_coordinator(stream, &busy, &log, stop).await {
                log(format!("coordinator {peer}: {e}"));
            }
        });
    }
    let _ = registration.deregister().await;
    Ok(())
}

/// One coordinator's connection: prepare, wait for the start, run, report.
async fn serve_coordinator(
    stream: tokio::net::TcpStream,
    busy: &tokio::sync::Semaphore,
    log: &Arc<dyn Fn(String) + Send + Sync>,
    stop: CancellationToken,
) -> Result<(), String> {
    let ws = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())),
    )
    .await
    .map_err(|_| "no WebSocket handshake in time".to_owned())?
    .map_err(|e| format!("handshake: {e}"))?;
    let (mut tx, mut rx) = ws.split();
    let send = |m: FromWorker| text(&m);
    let Ok(_permit) = busy.try_acquire() else {
        let busy = FromWorker::Failed {
            message: "busy with another run".into(),
        };
        let _ = tx.send(send(busy)).await;
        return Ok(());
    };
    let job = match next(&mut rx).await? {
        Some(ToWorker::Prepare { job }) => job,
        Some(other) => return Err(format!("expected prepare, got {other:?}")),
        None => return Ok(()),
    };
    let segment = job.segment.clone();
    let prepared = match job_plan(*job) {
        Ok(plan) => crate::run::prepare(plan).await.map_err(|e| chain(&e)),
        Err(e) => Err(e),
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(message) => {
            log(format!("segment {segment}: cannot run: {message}"));
            let _ = tx.send(send(FromWorker::Failed { message })).await;
            return Ok(());
        }
    };
    tx.send(send(FromWorker::Ready))
        .await
        .map_err(|e| e.to_string())?;
    let at = match next(&mut rx).await? {
        Some(ToWorker::Start { at_unix_ms }) => at_unix_ms,
        // Stopped (another worker failed to prepare) or gone: nothing was sent.
        _ => return Ok(()),
    };
    let wait = Duration::from_millis(at.saturating_sub(now_unix_ms()));
    tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
    log(format!("segment {segment} started"));

    let cancel = stop.child_token();
    let (points_tx, mut points_rx) = mpsc::unbounded_channel::<Message>();
    let reporter = Arc::new(Streamer {
        out: points_tx,
        log: log.clone(),
        segment: segment.clone(),
    });
    let options = RunOptions {
        reporter: Some(reporter),
        cancel: Some(cancel.clone()),
    };
    let run = tokio::spawn(prepared.run(options));
    // Forward the seconds; a stop (or the coordinator gone) cancels the run.
    let mut run = run;
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            Some(m) = points_rx.recv() => {
                if tx.send(m).await.is_err() {
                    cancel.cancel();
                }
            }
            m = next(&mut rx) => match m {
                Ok(Some(ToWorker::Stop)) | Ok(None) | Err(_) => cancel.cancel(),
                Ok(Some(_)) => {}
            },
        }
    };
    while let Ok(m) = points_rx.try_recv() {
        let _ = tx.send(m).await;
    }
    let message = match result {
        Ok(Ok((report, outcome))) => {
            log(format!("segment {segment} ended: {outcome:?}"));
            match report.to_json() {
                Ok(report) => FromWorker::Report { report },
                Err(e) => FromWorker::Failed { message: chain(&e) },
            }
        }
        Ok(Err(e)) => FromWorker::Failed { message: chain(&e) },
        Err(e) => FromWorker::Failed {
            message: format!("the run failed: {e}"),
        },
    };
    tx.send(send(message)).await.map_err(|e| e.to_string())?;
    let _ = tx.close().await;
    Ok(())
}

/// The worker's plan for `job`.
fn job_plan(job: Job) -> Result<Plan, String> {
    let segment: Segment = job
        .segment
        .parse()
        .map_err(|e| format!("segment {:?}: {e}", job.segment))?;
    let overrides = Overrides {
        rate: job.rate,
        duration: job.duration_ms.map(Duration::from_millis),
        vus: job.vus,
        iterations: job.iterations,
        targets: job.targets,
        only: job.only,
        segment: Some(segment),
    };
    let mut plan = Plan::load_text(&job.text, &job.path, &overrides).map_err(|e| chain(&e))?;
    plan.run.run_id = Some(job.run_id);
    // The coordinator evaluates these on every worker's figures together (an `rps` threshold
    // on one share would fail for want of the others').
    for t in &mut plan.thresholds {
        if t.selector.is_empty() {
            t.abort_on_fail = false;
        }
    }
    // The coordinator writes the reports.
    plan.output.json = None;
    plan.output.html = None;
    plan.output.prometheus = None;
    Ok(plan)
}

/// The next message from the other side (`None`: it closed).
async fn next<S, M>(rx: &mut S) -> Result<Option<M>, String>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    M: serde::de::DeserializeOwned,
{
    loop {
        match rx.next().await {
            None | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str())
                    .map(Some)
                    .map_err(|e| format!("unreadable message: {e}"));
            }
            Some(Ok(_)) => {}
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// A worker's reporter: each second to the coordinator, and a log line.
struct Streamer {
    out: mpsc::UnboundedSender<Message>,
    log: Arc<dyn Fn(String) + Send + Sync>,
    segment: String,
}

impl Reporter for Streamer {
    fn progress(&self, point: &Point, elapsed: Duration) {
        (self.log)(format!(
            "segment {} t={:.0}s requests={} errors={}",
            self.segment,
            elapsed.as_secs_f64(),
            point.requests,
            point.errors
        ));
        let wire = WirePoint {
            t: point.t,
            requests: point.requests,
            errors: point.errors,
            hdr: point.hdr.clone(),
            dropped: point.dropped,
        };
        let _ = self.out.send(text(&FromWorker::Second { point: wire }));
    }
}

// ---------------------------------------------------------------------------------------------
// The coordinator.

/// How a coordinator finds its workers.
#[derive(Clone, Debug)]
pub struct Coordination {
    /// How many workers the run is split over.
    pub workers: usize,
    /// The registry they registered in.
    pub registry: RegistryConfig,
    /// Their pool.
    pub pool: String,
    /// How long to wait for that many workers to be registered.
    pub wait: Duration,
}

/// What a worker connection tells the coordinator.
enum Event {
    Ready,
    Second(usize, WirePoint),
    Report(usize, String),
    Lost(usize, String),
}

/// Runs the scenario at `path` over `coordination.workers` workers (see the module docs):
/// the merged report and how the run ended.
///
/// # Errors
///
/// The scenario is invalid, the workers cannot be found, or one could not prepare (nothing
/// was sent then).
pub async fn run_distributed(
    path: &Path,
    overrides: &Overrides,
    coordination: &Coordination,
    reporter: Option<Arc<dyn Reporter>>,
    cancel: CancellationToken,
) -> Result<(Report, Outcome), Error> {
    let n = coordination.workers;
    if n == 0 {
        return Err(Error::Override {
            option: "--workers 0".into(),
            message: "a distributed run needs at least one worker".into(),
        });
    }
    if overrides.segment.is_some() {
        return Err(Error::Override {
            option: "--segment".into(),
            message: "a distributed run hands out the segments itself (--workers)".into(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::Override {
        option: path.display().to_string(),
        message: format!("cannot read the scenario: {e}"),
    })?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    // Validated here first: an invalid scenario never reaches a worker.
    let plan = Plan::load_text(&text, &path, overrides)?;
    let run_id = plan.run.run_id.clone().unwrap_or_default();

    let addrs = find_workers(coordination).await?;
    let mut senders = Vec::with_capacity(n);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    for (i, addr) in addrs.iter().enumerate() {
        let url = format!("ws://{addr}/");
        let connect = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true);
        let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| Error::Distributed(format!("worker {addr}: no connection in time")))?
            .map_err(|e| Error::Distributed(format!("worker {addr}: {e}")))?;
        let (mut tx, rx) = ws.split();
        let job = Job {
            path: path.clone(),
            text: text.clone(),
            segment: format!("{}/{n}", i + 1),
            run_id: run_id.clone(),
            targets: overrides.targets.clone(),
            rate: overrides.rate,
            duration_ms: overrides
                .duration
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            vus: overrides.vus,
            iterations: overrides.iterations,
            only: overrides.only.clone(),
        };
        tx.send(text_of(&ToWorker::Prepare { job: Box::new(job) }))
            .await
            .map_err(|e| Error::Distributed(format!("worker {addr}: {e}")))?;
        senders.push(Some(tx));
        // A second's report, plus the graceful stop and the report at the end.
        let silence = plan.run.graceful_stop + SILENCE;
        tokio::spawn(listen(i, rx, events_tx.clone(), silence));
    }
    drop(events_tx);

    // Every worker ready, or nothing starts.
    let mut ready = 0;
    let deadline = tokio::time::Instant::now() + PREPARE_TIMEOUT;
    while ready < n {
        let event = tokio::time::timeout_at(deadline, events.recv()).await;
        let failure = match event {
            Ok(Some(Event::Ready)) => {
                ready += 1;
                continue;
            }
            Ok(Some(Event::Lost(i, why))) => {
                format!("worker {} (segment {}/{n}): {why}", addrs[i], i + 1)
            }
            Ok(Some(Event::Second(i, _) | Event::Report(i, _))) => {
                format!("worker {}: answered out of turn", addrs[i])
            }
            Ok(None) => "every worker connection closed".to_owned(),
            Err(_) => format!("only {ready} of {n} workers were ready within {PREPARE_TIMEOUT:?}"),
        };
        stop_all(&mut senders).await;
        return Err(Error::Distributed(failure));
    }
    let at = now_unix_ms().saturating_add(u64::try_from(START_DELAY.as_millis()).unwrap_or(0));
    for tx in senders.iter_mut().flatten() {
        let _ = tx.send(text_of(&ToWorker::Start { at_unix_ms: at })).await;
    }
    tokio::time::sleep(START_DELAY).await;
    let started = tokio::time::Instant::now();

    // Live: seconds added over the workers; the end: their reports.
    let mut live = vec![true; n];
    let mut reports: Vec<Option<String>> = vec![None; n];
    let mut lost: Vec<Option<String>> = vec![None; n];
    let mut seen = vec![(0u64, 0u64); n];
    let mut seconds: BTreeMap<u64, (StepWindow, u64, u64, usize)> = BTreeMap::new();
    // The run so far, every worker's seconds added: for the run's abort-on-fail thresholds.
    let (mut all, mut series, mut dropped) = (StepWindow::new(), Vec::<Point>::new(), 0u64);
    let mut stopped_by = None;
    let mut stopping = false;
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = cancel.cancelled(), if !stopping => {
                stopping = true;
                stop_all(&mut senders).await;
                continue;
            }
        };
        let Some(event) = event else { break };
        match event {
            Event::Ready => {}
            Event::Second(i, p) => {
                seen[i].0 = seen[i].0.saturating_add(p.requests);
                seen[i].1 = seen[i].1.saturating_add(p.errors);
                let key = p.t.max(0.0).round() as u64;
                let entry = seconds
                    .entry(key)
                    .or_insert_with(|| (StepWindow::new(), 0, 0, 0));
                if let Some(w) = p
                    .hdr
                    .as_ref()
                    .and_then(|h| StepWindow::from_report(h, [p.errors, 0, 0, 0, 0]).ok())
                {
                    let _ = entry.0.checked_merge(&w);
                }
                entry.1 = entry.1.saturating_add(p.requests);
                entry.2 = entry.2.saturating_add(p.errors);
                entry.3 += 1;
                dropped = dropped.saturating_add(p.dropped.unwrap_or(0));
            }
            Event::Report(i, report) => {
                live[i] = false;
                // A worker stopped by an abort-on-fail threshold stops the whole run.
                if !stopping && stopped_early(&report) {
                    stopping = true;
                    stop_all(&mut senders).await;
                }
                reports[i] = Some(report);
                senders[i] = None;
            }
            Event::Lost(i, why) => {
                live[i] = false;
                senders[i] = None;
                lost[i] = Some(why);
            }
        }
        // Seconds every live worker has reported, in order.
        let waiting = live.iter().filter(|l| **l).count();
        while let Some((&t, entry)) = seconds.first_key_value() {
            if entry.3 < waiting.max(1) && waiting > 0 {
                break;
            }
            let (w, requests, errors, _) = entry;
            let mut point = Point::of(t as f64, w);
            point.requests = *requests;
            point.errors = *errors;
            if let Some(r) = &reporter {
                r.progress(&point, started.elapsed());
            }
            let _ = all.checked_merge(w);
            series.push(point);
            seconds.remove(&t);
            if !stopping {
                let elapsed = Duration::from_secs(t);
                if let Some(why) =
                    crate::report::failing_run_abort(&plan, &all, &series, dropped, elapsed)
                {
                    stopped_by = Some(why);
                    stopping = true;
                    stop_all(&mut senders).await;
                }
            }
        }
    }
    if let Some(r) = &reporter {
        r.finished();
    }

    let labelled: Vec<(PathBuf, Vec<u8>)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.as_ref().map(|r| {
                (
                    PathBuf::from(format!("worker {} (segment {}/{n})", addrs[i], i + 1)),
                    r.clone().into_bytes(),
                )
            })
        })
        .collect();
    if labelled.is_empty() {
        let why: Vec<String> = lost
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.as_ref().map(|w| format!("{}: {w}", addrs[i])))
            .collect();
        return Err(Error::Distributed(format!(
            "no worker finished its share ({})",
            why.join("; ")
        )));
    }
    let (mut report, missing) = crate::merge::merge_texts(&labelled, true)?;
    if stopped_by.is_some() {
        report.stopped_by = stopped_by;
    }
    report.workers = (0..n)
        .map(|i| {
            let (requests, failed) = reports[i].as_deref().and_then(totals).unwrap_or(seen[i]);
            WorkerShare {
                worker: addrs[i].clone(),
                segment: format!("{}/{n}", i + 1),
                requests,
                failed,
                status: match &lost[i] {
                    Some(why) => format!("lost: {why}"),
                    None => "done".into(),
                },
            }
        })
        .collect();
    report.missing_segments = missing;
    report.advice = crate::report::advice(&report);
    let outcome = if report.stopped_by.is_some() {
        Outcome::ThresholdsFailed
    } else if !report.missing_segments.is_empty() {
        Outcome::Aborted(format!(
            "incomplete: segments {} missing (worker lost)",
            report.missing_segments.join(", ")
        ))
    } else if cancel.is_cancelled() {
        Outcome::Aborted("stopped (Ctrl-C)".into())
    } else if report.passed {
        Outcome::Passed
    } else {
        Outcome::ThresholdsFailed
    };
    Ok((report, outcome))
}

fn text_of(m: &ToWorker) -> Message {
    text(m)
}

/// The addresses of `workers` registered workers of the pool, in address order.
async fn find_workers(c: &Coordination) -> Result<Vec<String>, Error> {
    let registry = registry::from_config(&c.registry)
        .await
        .map_err(|e| Error::Distributed(format!("registry: {e}")))?;
    let mut instances = registry
        .discover(Target::new(SCHEME, SERVICE, c.pool.clone()))
        .await
        .map_err(|e| Error::Distributed(format!("registry: {e}")))?;
    let n = c.workers;
    let enough = matches!(
        tokio::time::timeout(c.wait, instances.wait_for(|set| set.len() >= n)).await,
        Ok(Ok(_))
    );
    let set = instances.borrow().clone();
    if !enough {
        return Err(Error::Distributed(format!(
            "{} of {n} workers registered in pool {:?} after {:?} (start more with `loadtest worker --registry … --pool {}`)",
            set.len(),
            c.pool,
            c.wait,
            c.pool
        )));
    }
    let mut addrs: Vec<String> = set.iter().map(|i| i.address.clone()).collect();
    addrs.sort();
    addrs.truncate(n);
    Ok(addrs)
}

/// Reads one worker's messages into `events` until its report, or its loss.
///
/// Once ready, a worker speaks every second; one silent for `silence` (stopped, cut off
/// without a reset) is lost: every worker's end is known within a deadline.
async fn listen<S>(i: usize, mut rx: S, events: mpsc::UnboundedSender<Event>, silence: Duration)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut ready = false;
    loop {
        // Before it is ready the coordinator's own prepare deadline bounds the wait.
        let message = if ready {
            match tokio::time::timeout(silence, next::<_, FromWorker>(&mut rx)).await {
                Ok(m) => m,
                Err(_) => {
                    let why = format!("silent for {silence:?}");
                    let _ = events.send(Event::Lost(i, why));
                    return;
                }
            }
        } else {
            next::<_, FromWorker>(&mut rx).await
        };
        ready = true;
        let event = match message {
            Ok(Some(FromWorker::Ready)) => Event::Ready,
            Ok(Some(FromWorker::Second { point })) => Event::Second(i, point),
            Ok(Some(FromWorker::Report { report })) => {
                let _ = events.send(Event::Report(i, report));
                return;
            }
            Ok(Some(FromWorker::Failed { message })) => {
                let _ = events.send(Event::Lost(i, message));
                return;
            }
            Ok(None) => {
                let _ = events.send(Event::Lost(i, "connection closed before its report".into()));
                return;
            }
            Err(e) => {
                let _ = events.send(Event::Lost(i, format!("connection broken: {e}")));
                return;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

async fn stop_all<S>(senders: &mut [Option<S>])
where
    S: futures::Sink<Message> + Unpin,
{
    for tx in senders.iter_mut().flatten() {
        let _ = tx.send(text_of(&ToWorker::Stop)).await;
    }
}

/// Whether a worker's report says an `abort-on-fail` threshold stopped it.
fn stopped_early(report: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(report)
        .ok()
        .is_some_and(|v| v.get("stopped_by").is_some_and(|s| !s.is_null()))
}

/// A report's total requests and failures.
fn totals(report: &str) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(report).ok()?;
    let total = v.get("total")?;
    Some((
        total.get("requests")?.as_u64()?,
        total.get("failed")?.as_u64()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use jupiter_core::registry::RegistryKind;

    #[test]
    fn registry_urls_name_etcd_endpoints_or_are_refused() {
        let c = registry_config("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap();
        assert_eq!(c.kind, RegistryKind::Etcd);
        assert_eq!(
            c.endpoints,
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(
            registry_config("http://127.0.0.1:2379").unwrap().endpoints,
            ["http://127.0.0.1:2379"]
        );
        for bad in ["", "etcd://", "127.0.0.1:2379", "redis://x"] {
            assert!(registry_config(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_round_trip() {
        let m = text(&ToWorker::Start { at_unix_ms: 42 });
        let Message::Text(t) = m else { panic!() };
        assert!(matches!(
            serde_json::from_str::<ToWorker>(t.as_str()).unwrap(),
            ToWorker::Start { at_unix_ms: 42 }
        ));
        assert!(stopped_early(r#"{"stopped_by":"run: error-rate < 1%"}"#));
        assert!(!stopped_early(r#"{"passed":true}"#));
        assert_eq!(
            totals(r#"{"total":{"requests":7,"failed":1}}"#),
            Some((7, 1))
        );
    }
}
