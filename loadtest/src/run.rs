//! Running a plan: connect the targets, probe them for shadow support, drive the executors,
//! collect once a second, stop gracefully, and hand the figures to the report.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jupiter_core::shadow::ShadowContext;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::protocol::{Call, Scratch, Shadow, TargetClient};
use crate::report::Report;
use crate::scenario::{Executor, Flow, Plan, Stage, Step};
use crate::segment::Segment;
use crate::stats::{Collected, ErrorKind, Point, Recorder};
use crate::template::Vars;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every threshold passed.
    Passed,
    /// A threshold failed.
    ThresholdsFailed,
    /// Stopped early: why.
    Aborted(String),
}

/// Run settings that are not part of the scenario.
#[derive(Default)]
pub struct RunOptions {
    /// Told about progress and notices while the run goes on. Default: none, the run is
    /// silent (the library never prints).
    pub reporter: Option<Arc<dyn Reporter>>,
    /// Stops the run early (Ctrl-C); the report is still written.
    pub cancel: Option<CancellationToken>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("reporter", &self.reporter.as_ref().map(|_| "dyn Reporter"))
            .field("cancel", &self.cancel)
            .finish()
    }
}

/// Where a run reports while it goes on; the binary installs one that writes to stderr.
///
/// Every method has an empty default, so an implementation picks what it wants. Calls come
/// from the collector task, once a second: a slow reporter delays the next collection, not the
/// load.
pub trait Reporter: Send + Sync {
    /// Prometheus metrics are served at `addr` (`[output] prometheus`), before the load starts.
    fn serving_metrics(&self, addr: SocketAddr) {
        let _ = addr;
    }

    /// The figures of the second that ended `elapsed` after the start.
    fn progress(&self, point: &Point, elapsed: Duration) {
        let _ = (point, elapsed);
    }

    /// The load has stopped: no more [`progress`](Reporter::progress) calls follow.
    fn finished(&self) {}
}

struct Shared {
    plan: Plan,
    /// One per target, in the plan's order.
    clients: Vec<TargetClient>,
    recorder: Recorder,
    /// First global step index of each scenario.
    step_base: Vec<usize>,
    /// How every request is tagged as shadow traffic.
    shadow: Shadow,
    cancel: CancellationToken,
    /// The abort-on-fail threshold that stopped the run, if one did.
    stopped_by: Mutex<Option<String>>,
}

/// Runs `plan`; returns the report (always, also when stopped early) and how the run ended.
///
/// # Errors
///
/// A target could not be set up, or the shadow probe failed (the report is not written: no
/// load was sent).
pub async fn run(plan: Plan, options: RunOptions) -> Result<(Report, Outcome), Error> {
    prepare(plan).await?.run(options).await
}

/// A plan whose targets are connected and have passed the shadow probe: ready to start at
/// once (a distributed run's workers prepare, then start together).
pub struct Prepared {
    plan: Plan,
    clients: Vec<TargetClient>,
    shadow: Option<ShadowContext>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("name", &self.plan.run.name)
            .field("targets", &self.clients.len())
            .finish_non_exhaustive()
    }
}

/// Connects `plan`'s targets and probes the live ones for shadow support.
///
/// # Errors
///
/// As [`run`]: a target could not be set up, or the shadow probe failed.
pub async fn prepare(plan: Plan) -> Result<Prepared, Error> {
    let clients = connect_targets(&plan).await?;
    let shadow = plan.run.shadow.then(|| {
        let ctx = ShadowContext::new();
        match &plan.run.run_id {
            Some(id) => ctx.with_run_id(id.clone()),
            None => ctx,
        }
    });
    if let Some(ctx) = &shadow {
        probe(&plan, &clients, ctx).await?;
    }
    Ok(Prepared {
        plan,
        clients,
        shadow,
    })
}

impl Prepared {
    /// Runs the prepared plan now; as [`run`].
    ///
    /// # Errors
    ///
    /// A scenario could not run (its error; the report is not written).
    pub async fn run(self, options: RunOptions) -> Result<(Report, Outcome), Error> {
        run_prepared(self, options).await
    }
}

async fn run_prepared(prepared: Prepared, options: RunOptions) -> Result<(Report, Outcome), Error> {
    let Prepared {
        plan,
        clients,
        shadow,
    } = prepared;
    let cancel = options.cancel.unwrap_or_default();
    let reporter = options.reporter;
    let shadow = Shadow::new(shadow);
    let mut step_base = Vec::new();
    let mut steps = 0;
    for s in &plan.scenarios {
        step_base.push(steps);
        steps += s.steps.len();
    }
    let threads = tokio::runtime::Handle::current()
        .metrics()
        .num_workers()
        .max(1);
    let shared = Arc::new(Shared {
        recorder: Recorder::new(steps, plan.scenarios.len(), threads),
        clients,
        step_base,
        shadow,
        cancel: cancel.clone(),
        stopped_by: Mutex::new(None),
        plan,
    });
    let started_at = std::time::SystemTime::now();
    let start = Instant::now();
    let cpu_start = crate::report::process_cpu();
    // Read once: on Linux it reads the cgroup's CPU quota from files.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // The collector: once a second, and once more at the end.
    let collected = Arc::new(Mutex::new(Collected::new(steps)));
    let prom_text = Arc::new(Mutex::new(String::new()));
    let prometheus = match &shared.plan.output.prometheus {
        Some(addr) => {
            let bound = crate::report::serve_prometheus(addr, prom_text.clone())
                .await
                .map_err(|source| Error::Prometheus {
                    addr: addr.clone(),
                    source,
                })?;
            if let Some(r) = &reporter {
                r.serving_metrics(bound);
            }
            Some(bound)
        }
        None => None,
    };
    let collector_stop = CancellationToken::new();
    let collector = {
        let shared = shared.clone();
        let collected = collected.clone();
        let stop = collector_stop.clone();
        let prom_text = prom_text.clone();
        let reporter = reporter.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::from_std(start) + Duration::from_secs(1),
                Duration::from_secs(1),
            );
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                let elapsed = start.elapsed();
                let mut c = collected.lock().unwrap_or_else(|p| p.into_inner());
                let p = c.tick(&shared.recorder, elapsed.as_secs_f64().round());
                c.annotate(gauges(&shared.recorder, cores), cpu_start);
                // With the gauges the annotation added (dropped arrivals, CPU, memory).
                let p = c.series.last().cloned().unwrap_or(p);
                if let Some(r) = &reporter {
                    r.progress(&p, elapsed);
                }
                if prometheus.is_some() {
                    *prom_text.lock().unwrap_or_else(|p| p.into_inner()) =
                        crate::report::prometheus_text(&shared.plan, &c, &shared.recorder);
                }
                // abort-on-fail thresholds, each second on the data so far.
                if let Some(why) =
                    crate::report::failing_abort(&shared.plan, &c, &shared.recorder, elapsed)
                {
                    let mut stopped = shared.stopped_by.lock().unwrap_or_else(|p| p.into_inner());
                    stopped.get_or_insert(why);
                    shared.cancel.cancel();
                }
            }
        })
    };

    // The scenarios, side by side.
    let mut runs = Vec::new();
    for i in 0..shared.plan.scenarios.len() {
        let shared = shared.clone();
        runs.push(tokio::spawn(run_scenario(shared, i, start)));
    }
    let mut durations = Vec::new();
    let mut failed = None;
    for r in runs {
        match r.await {
            Ok(Ok(d)) => durations.push(d),
            Ok(Err(e)) => {
                durations.push(Duration::ZERO);
                failed.get_or_insert(e);
            }
            // A scenario task that panicked: its figures stand, its duration is unknown.
            Err(_) => durations.push(Duration::ZERO),
        }
    }
    collector_stop.cancel();
    let _ = collector.await;
    if let Some(r) = &reporter {
        r.finished();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let elapsed = start.elapsed();
    let mut c = collected.lock().unwrap_or_else(|p| p.into_inner());
    // Always: a request recorded just after the last tick (whose time is rounded to the
    // second) would otherwise be missing from every figure.
    c.finish(&shared.recorder, elapsed.as_secs_f64());
    c.annotate(gauges(&shared.recorder, cores), cpu_start);
    let aborted = cancel.is_cancelled();
    let stopped_by = shared
        .stopped_by
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let by_threshold = stopped_by.is_some();
    let mut report = Report::build(
        &shared.plan,
        &c,
        &shared.recorder,
        started_at,
        elapsed,
        &durations,
        aborted,
    );
    report.stopped_by = stopped_by;
    let cpu_s = (crate::report::process_cpu() - cpu_start).max(0.0);
    report.generator = Some(crate::report::Generator {
        cpu_s,
        cores,
        cpu_share: cpu_s / (elapsed.as_secs_f64().max(1e-9) * cores as f64),
    });
    report.advice = crate::report::advice(&report);
    let outcome = if by_threshold {
        // Stopped by a failing threshold: that is a failed run (exit code 1), not an abort.
        Outcome::ThresholdsFailed
    } else if aborted {
        Outcome::Aborted("stopped (Ctrl-C)".into())
    } else if report.passed {
        Outcome::Passed
    } else {
        Outcome::ThresholdsFailed
    };
    Ok((report, outcome))
}

/// Every live target a scenario uses must acknowledge shadow traffic.
/// The run series' gauges now, on a machine of `cores` cores.
fn gauges(recorder: &crate::stats::Recorder, cores: usize) -> crate::stats::Gauges {
    crate::stats::Gauges {
        active: recorder.in_iterations(),
        dropped_total: recorder.dropped_total(),
        cpu_s: crate::report::process_cpu(),
        cores,
        rss_bytes: crate::report::resident_bytes(),
    }
}

async fn probe(plan: &Plan, clients: &[TargetClient], ctx: &ShadowContext) -> Result<(), Error> {
    for (i, (t, client)) in plan.targets.iter().zip(clients).enumerate() {
        let used = plan
            .scenarios
            .iter()
            .any(|s| s.steps.iter().any(|st| st.target == i));
        if !used || !t.spec.live {
            continue;
        }
        if let Err(f) = client.probe(t, ctx, plan.run.timeout).await {
            return Err(Error::Probe {
                target: t.name.clone(),
                reason: f.message,
                source: f.source,
            });
        }
    }
    Ok(())
}

/// Sets up every target's client, in the plan's order.
async fn connect_targets(plan: &Plan) -> Result<Vec<TargetClient>, Error> {
    let mut clients = Vec::with_capacity(plan.targets.len());
    for (i, t) in plan.targets.iter().enumerate() {
        let failed = |source| Error::Target {
            target: t.name.clone(),
            source,
        };
        let client = TargetClient::connect(t, &plan.run).await.map_err(failed)?;
        for step in plan.scenarios.iter().flat_map(|s| &s.steps) {
            if step.target == i {
                client.prepare(step).map_err(failed)?;
            }
        }
        clients.push(client);
    }
    Ok(clients)
}

/// Arrival times of an open model: the `i`-th arrival's offset from the start.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: f64,
    stages: Vec<Stage>,
}

impl Schedule {
    /// A rate curve starting at `start`/s and moving linearly to each stage's target.
    pub fn new(start: f64, stages: Vec<Stage>) -> Schedule {
        Schedule { start, stages }
    }

    /// When arrival `i` (0-based) is due, or `None` past the end.
    pub fn time_of(&self, i: u64) -> Option<Duration> {
        let mut k = i as f64;
        let mut offset = 0.0;
        let mut r0 = self.start;
        for s in &self.stages {
            let d = s.duration.as_secs_f64();
            let r1 = s.target;
            let count = (r0 + r1) / 2.0 * d;
            if k < count {
                let t = if (r1 - r0).abs() < 1e-12 {
                    k / r0
                } else {
                    // r0·t + (r1 − r0)/(2d)·t² = k
                    let a = (r1 - r0) / (2.0 * d);
                    (-r0 + (r0 * r0 + 4.0 * a * k).max(0.0).sqrt()) / (2.0 * a)
                };
                // A degenerate stage (NaN from the quadratic) is due at its end, never a panic.
                let t = if t.is_nan() { d } else { t.clamp(0.0, d) };
                return Duration::try_from_secs_f64(offset + t).ok();
            }
            k -= count;
            offset += d;
            r0 = r1;
        }
        None
    }
}

/// Workers wanted at `t` by a VU executor.
fn vus_at(start: usize, stages: &[Stage], t: Duration) -> usize {
    let mut from = start as f64;
    let mut t = t.as_secs_f64();
    for s in stages {
        let d = s.duration.as_secs_f64();
        if t < d {
            return (from + (s.target - from) * (t / d)).round() as usize;
        }
        t -= d;
        from = s.target;
    }
    from.round() as usize
}

/// The clock the pacer reads and sleeps on: the system's in a run, a virtual one in tests.
trait PacerClock {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration);
}

struct SystemClock;

impl PacerClock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// What became of an arrival handed to the workers' queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handed {
    Taken,
    /// Every worker busy and the queue full: the arrival is dropped.
    Full,
    /// The workers have gone: the pacer stops.
    Closed,
}

/// Releases `segment`'s arrivals among `0..limit` of `schedule` (offsets from `start`)
/// through `hand`, each with its global number and intended time, until the schedule ends or
/// `cancel`. An arrival that finds the queue full is counted in `dropped`, never waited for:
/// waiting would make every later arrival late.
#[allow(clippy::too_many_arguments)] // One call site in a run, one in the tests.
fn pace(
    schedule: &Schedule,
    segment: Segment,
    limit: u64,
    start: Instant,
    clock: &impl PacerClock,
    cancel: &CancellationToken,
    dropped: &AtomicU64,
    mut hand: impl FnMut(u64, Instant) -> Handed,
) {
    for j in 0.. {
        let Some(n) = segment.nth(j).filter(|&n| n < limit) else {
            break;
        };
        let Some(at) = schedule.time_of(n) else { break };
        let due = start + at;
        // Handed over a little early (a tenth of the gap to this segment's next arrival, at
        // most MAX_LEAD): waking a parked worker takes about that long, and the worker spins
        // the rest. The spinning costs at most a tenth of a core.
        let gap = segment
            .nth(j + 1)
            .and_then(|next| schedule.time_of(next))
            .map_or(Duration::ZERO, |next| next.saturating_sub(at));
        let lead = (gap / 10).min(MAX_LEAD);
        let handover = due.checked_sub(lead).unwrap_or(due);
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let now = clock.now();
            if handover <= now + WAKE_SLACK {
                break;
            }
            clock.sleep((handover - now).min(Duration::from_millis(50)));
        }
        match hand(n, due) {
            Handed::Taken => {}
            Handed::Full => {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            Handed::Closed => return,
        }
    }
}

/// The most an arrival is handed to its worker before its intended time.
const MAX_LEAD: Duration = Duration::from_micros(300);
/// A sleep shorter than this is not worth it: the pacer hands the arrival over at once.
const WAKE_SLACK: Duration = Duration::from_micros(20);

/// Runs scenario `i` to its end; returns how long it ran.
///
/// # Errors
///
/// The pacer thread could not be started; the whole run is cancelled.
async fn run_scenario(shared: Arc<Shared>, i: usize, start: Instant) -> Result<Duration, Error> {
    let scenario = &shared.plan.scenarios[i];
    let segment = shared.plan.segment;
    // `start-time`: the scenario's own clock starts later (its intended send times, its end
    // and its run time all count from there).
    let start = start + scenario.start_time;
    tokio::select! {
        () = tokio::time::sleep_until(start.into()) => {}
        () = shared.cancel.cancelled() => return Ok(Duration::ZERO),
    }
    let graceful = shared.plan.run.graceful_stop;
    let end = start + scenario.executor.duration();
    let mut tasks = tokio::task::JoinSet::new();
    match &scenario.executor {
        Executor::Arrival {
            start: r0,
            stages,
            iterations,
            max_in_flight,
        } => {
            // This segment's share of the workers (at least one).
            let max_in_flight = segment.workers(*max_in_flight);
            let (tx, rx) = async_channel::bounded::<(u64, Instant)>(max_in_flight);
            let schedule = Schedule::new(*r0, stages.clone());
            let cancel = shared.cancel.clone();
            let limit = iterations.unwrap_or(u64::MAX);
            let s2 = shared.clone();
            // The pacer: an OS thread sleeping precisely (tokio's timer has 1 ms steps) and
            // handing each arrival, with its intended time, to an idle worker.
            let pacer = std::thread::Builder::new()
                .name("loadtest-pacer".into())
                .spawn(move || {
                    // Sleeps of this thread end on time, not up to 50 µs late (Linux's default
                    // timer slack): the pacer's lateness would count in every latency.
                    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's slack.
                    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
                    let hand = |n, due| match tx.try_send((n, due)) {
                        Ok(()) => Handed::Taken,
                        Err(async_channel::TrySendError::Full(_)) => Handed::Full,
                        Err(async_channel::TrySendError::Closed(_)) => Handed::Closed,
                    };
                    let dropped = &s2.recorder.dropped[i];
                    pace(
                        &schedule,
                        segment,
                        limit,
                        start,
                        &SystemClock,
                        &cancel,
                        dropped,
                        hand,
                    );
                });
            let pacer = match pacer {
                Ok(p) => p,
                Err(source) => {
                    shared.cancel.cancel();
                    return Err(Error::Pacer {
                        scenario: scenario.name.clone(),
                        source,
                    });
                }
            };
            for vu in 0..max_in_flight {
                let shared = shared.clone();
                let rx = rx.clone();
                // Globally numbered: segment K of N runs workers K-1, K-1+N, …
                let vu = segment.nth(vu as u64).unwrap_or(u64::MAX);
                tasks.spawn(async move {
                    let mut scratch = Scratch::default();
                    let mut iter = 0;
                    while let Ok((seq, due)) = rx.recv().await {
                        if shared.cancel.is_cancelled() {
                            break;
                        }
                        // Handed over early by at most MAX_LEAD: wait out the rest precisely.
                        while Instant::now() < due {
                            std::hint::spin_loop();
                        }
                        shared.recorder.busy_start(i);
                        iteration(&shared, i, seq, vu, iter, Some(due), &mut scratch).await;
                        shared.recorder.busy_end(i);
                        iter += 1;
                    }
                });
            }
            drop(rx);
            // Wait for the pacer without blocking the runtime.
            let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
        }
        Executor::Vus {
            start: v0,
            stages,
            iterations,
            per_vu,
            ramp_down,
        } => {
            let max = stages
                .iter()
                .map(|s| s.target.round() as usize)
                .chain([*v0])
                .max()
                .unwrap_or(0);
            let counter = Arc::new(AtomicU64::new(0));
            // This segment's workers, by their global numbers: at any moment the segments
            // together run exactly the workers the stages ask for.
            for vu in (0..max).filter(|&vu| segment.owns(vu as u64)) {
                let shared = shared.clone();
                let counter = counter.clone();
                let stages = stages.clone();
                let (v0, limit) = (*v0, iterations.unwrap_or(u64::MAX));
                let (per_vu, own) = (*per_vu, per_vu.unwrap_or(u64::MAX));
                let ramp_down = *ramp_down;
                tasks.spawn(async move {
                    let mut scratch = Scratch::default();
                    let mut iter = 0;
                    loop {
                        let now = Instant::now();
                        if shared.cancel.is_cancelled() || now >= end || iter >= own {
                            break;
                        }
                        if vu >= vus_at(v0, &stages, now - start) {
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                                () = shared.cancel.cancelled() => break,
                            }
                            continue;
                        }
                        // The iteration's global number: the worker's own in per-vu-iterations
                        // (worker v runs v·M … v·M + M − 1), else the segment's next of the
                        // shared count.
                        let seq = match per_vu {
                            Some(m) => (vu as u64).saturating_mul(m).saturating_add(iter),
                            None => {
                                let local = counter.fetch_add(1, Ordering::Relaxed);
                                match segment.nth(local).filter(|&seq| seq < limit) {
                                    Some(seq) => seq,
                                    None => break,
                                }
                            }
                        };
                        let _active = shared.recorder.active(i);
                        let work = iteration(&shared, i, seq, vu as u64, iter, None, &mut scratch);
                        match ramp_down {
                            None => work.await,
                            Some(grace) => tokio::select! {
                                () = work => {}
                                () = ramped_down(vu, v0, &stages, start, grace) => {
                                    shared.recorder.interrupted[i].fetch_add(1, Ordering::Relaxed);
                                }
                            },
                        }
                        iter += 1;
                    }
                });
            }
            // Until the planned end (or Ctrl-C, or every iteration done).
            tokio::select! {
                () = tokio::time::sleep_until(end.into()) => {}
                () = shared.cancel.cancelled() => {}
                () = async { while tasks.join_next().await.is_some() {} } => {}
            }
        }
    }
    // In-flight iterations get the graceful stop to finish; then they are cut off.
    let deadline = tokio::time::Instant::now() + graceful;
    while !tasks.is_empty() {
        tokio::select! {
            r = tasks.join_next() => if r.is_none() { break },
            () = tokio::time::sleep_until(deadline) => {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
    Ok(start.elapsed().min(scenario.executor.duration()))
}

/// Resolves once worker `vu` has been unwanted by the stages for `grace` (checked every
/// 20 ms): its iteration is then cut off.
async fn ramped_down(vu: usize, v0: usize, stages: &[Stage], start: Instant, grace: Duration) {
    let wanted = || vu < vus_at(v0, stages, Instant::now().saturating_duration_since(start));
    loop {
        while wanted() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(grace).await;
        if !wanted() {
            return;
        }
    }
}

async fn iteration(
    shared: &Shared,
    scenario: usize,
    seq: u64,
    vu: u64,
    iter: u64,
    intended: Option<Instant>,
    scratch: &mut Scratch,
) {
    let sc = &shared.plan.scenarios[scenario];
    // What the steps of this iteration extract, for the later ones (`{{var.NAME}}`).
    let mut extracted: Vec<(Arc<str>, Vec<u8>)> = Vec::new();
    let feeders = &shared.plan.feeders[..];
    // The iteration's cookie jar: (target, name, value), filled from `set-cookie`.
    let mut jar: Vec<(usize, String, String)> = Vec::new();
    let mut cookie = Vec::new();
    let think = || async {
        if let Some(range) = sc.think {
            let d = think_time(range, fastrand::u64);
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
        }
    };
    match sc.flow {
        Flow::Pick => {
            let j = pick(&sc.steps);
            let vars = Vars {
                seq,
                vu,
                iter,
                feeders,
                extracted: &[],
                cookie: &[],
            };
            run_step(shared, scenario, j, &vars, intended, scratch).await;
            think().await;
        }
        Flow::Sequence => {
            for j in 0..sc.steps.len() {
                let due = if j == 0 { intended } else { None };
                let step = &sc.steps[j];
                cookie.clear();
                if step.cookies {
                    for (_, n, v) in jar.iter().filter(|(t, _, _)| *t == step.target) {
                        if !cookie.is_empty() {
                            cookie.extend_from_slice(b"; ");
                        }
                        cookie.extend_from_slice(n.as_bytes());
                        cookie.push(b'=');
                        cookie.extend_from_slice(v.as_bytes());
                    }
                }
                let now = Vars {
                    seq,
                    vu,
                    iter,
                    feeders,
                    extracted: &extracted,
                    cookie: &cookie,
                };
                let passed = run_step(shared, scenario, j, &now, due, scratch).await;
                for (name, value) in scratch.set_cookies.drain(..) {
                    jar.retain(|(t, n, _)| !(*t == step.target && *n == name));
                    // An empty value is how a server deletes a cookie.
                    if !value.is_empty() {
                        jar.push((step.target, name, value));
                    }
                }
                if !sc.steps[j].extract.is_empty() {
                    if !passed {
                        // The later steps would send without the values: the iteration ends
                        // here (its failed step counts as an error).
                        shared.recorder.cut_short[scenario].fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    for (name, value) in scratch.extracted.drain(..) {
                        match extracted.iter_mut().find(|(n, _)| *n == name) {
                            Some(slot) => slot.1 = value,
                            None => extracted.push((name, value)),
                        }
                    }
                }
                think().await;
                if shared.cancel.is_cancelled() {
                    break;
                }
            }
        }
    }
}

/// A think time drawn uniformly from `a..=b`; `draw` picks a number in a range (`fastrand::u64`
/// in a run, a seeded generator in tests).
fn think_time(
    (a, b): (Duration, Duration),
    draw: impl FnOnce(RangeInclusive<u64>) -> u64,
) -> Duration {
    if a >= b {
        return a;
    }
    // A span beyond u64 nanoseconds (584 years) is cut there.
    let span = u64::try_from((b - a).as_nanos()).unwrap_or(u64::MAX);
    a + Duration::from_nanos(draw(0..=span))
}

fn pick(steps: &[Step]) -> usize {
    if steps.len() == 1 {
        return 0;
    }
    let total: u64 = steps.iter().map(|s| u64::from(s.weight)).sum();
    let mut r = fastrand::u64(0..total);
    for (i, s) in steps.iter().enumerate() {
        let w = u64::from(s.weight);
        if r < w {
            return i;
        }
        r -= w;
    }
    steps.len() - 1
}

async fn run_step(
    shared: &Shared,
    scenario: usize,
    j: usize,
    vars: &Vars<'_>,
    intended: Option<Instant>,
    scratch: &mut Scratch,
) -> bool {
    let step = &shared.plan.scenarios[scenario].steps[j];
    let client = &shared.clients[step.target];
    let begin = Instant::now();
    scratch.begin();
    let result = tokio::time::timeout(
        shared.plan.run.timeout,
        ShadowContext::scope(
            shared.shadow.context.clone(),
            client.execute(
                Call {
                    step,
                    vars,
                    shadow: &shared.shadow,
                },
                scratch,
            ),
        ),
    )
    .await;
    let error = result.unwrap_or(Some(ErrorKind::Timeout));
    let done = Instant::now();
    let sent = scratch.sent().unwrap_or(begin);
    let latency = done - intended.unwrap_or(begin).min(begin);
    shared
        .recorder
        .record(shared.step_base[scenario] + j, latency, done - sent, error);
    error.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(secs: u64, target: f64) -> Stage {
        Stage {
            duration: Duration::from_secs(secs),
            target,
        }
    }

    #[test]
    fn constant_schedule_is_exact() {
        let s = Schedule::new(2000.0, vec![stage(10, 2000.0)]);
        assert_eq!(s.time_of(0), Some(Duration::ZERO));
        assert_eq!(s.time_of(1000), Some(Duration::from_millis(500)));
        assert!(s.time_of(19_999).is_some());
        assert_eq!(s.time_of(20_000), None);
    }

    #[test]
    fn ramping_schedule_counts_the_area_under_the_curve() {
        // 0 → 100/s over 10 s: 500 arrivals, the 125th at 5 s; then flat 100/s for 1 s.
        let s = Schedule::new(0.0, vec![stage(10, 100.0), stage(1, 100.0)]);
        let at = s.time_of(125).unwrap().as_secs_f64();
        assert!((at - 5.0).abs() < 1e-6, "{at}");
        assert!(s.time_of(499).unwrap() < Duration::from_secs(10));
        assert!(s.time_of(500).unwrap() >= Duration::from_secs(10));
        assert!(s.time_of(599).is_some());
        assert_eq!(s.time_of(600), None);
    }

    #[test]
    fn vus_follow_the_stages() {
        let st = [stage(10, 10.0), stage(10, 0.0)];
        assert_eq!(vus_at(0, &st, Duration::from_secs(0)), 0);
        assert_eq!(vus_at(0, &st, Duration::from_secs(5)), 5);
        assert_eq!(vus_at(0, &st, Duration::from_secs(10)), 10);
        assert_eq!(vus_at(0, &st, Duration::from_secs(15)), 5);
        assert_eq!(vus_at(0, &st, Duration::from_secs(30)), 0);
    }

    #[test]
    fn vus_round_to_the_nearest_worker_and_hold_the_last_target() {
        let ms = Duration::from_millis;
        // 0 → 4 over 1 s: worker k starts once the curve passes k + 0.5.
        let up = [stage(1, 4.0)];
        let starts: Vec<usize> = [0, 124, 125, 374, 375, 624, 625, 874, 875, 999]
            .into_iter()
            .map(|t| vus_at(0, &up, ms(t)))
            .collect();
        assert_eq!(starts, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        // Past the last stage the last target holds.
        assert_eq!(vus_at(0, &up, Duration::from_secs(60)), 4);
        // From start-vus, not from 0; a flat stage holds.
        let st = [stage(4, 6.0), stage(2, 6.0), stage(2, 2.0)];
        assert_eq!(vus_at(2, &st, ms(0)), 2);
        assert_eq!(vus_at(2, &st, ms(1000)), 3);
        assert_eq!(vus_at(2, &st, ms(5000)), 6);
        assert_eq!(vus_at(2, &st, ms(7000)), 4);
        assert_eq!(vus_at(2, &st, ms(8000)), 2);
    }

    /// Offsets of every arrival of `s`, in order.
    fn arrivals(s: &Schedule) -> Vec<f64> {
        (0..)
            .map_while(|n| s.time_of(n))
            .map(|d| d.as_secs_f64())
            .collect()
    }

    /// How many of `times` fall in `[from, to)`.
    fn count_in(times: &[f64], from: f64, to: f64) -> usize {
        times.iter().filter(|&&t| from <= t && t < to).count()
    }

    #[test]
    fn a_constant_rate_puts_the_same_count_in_every_interval() {
        // 2,000/s for 10 s: 200 arrivals in every 100 ms. The intervals start a quarter of a
        // gap (125 µs) after a round time, so no arrival sits on a boundary.
        let times = arrivals(&Schedule::new(2000.0, vec![stage(10, 2000.0)]));
        assert_eq!(times.len(), 20_000);
        assert!(times.windows(2).all(|w| w[0] < w[1]), "in order");
        assert_eq!(count_in(&times, 0.0, 0.000_125), 1);
        for k in 0..99 {
            let from = f64::from(k) / 10.0 + 0.000_125;
            assert_eq!(count_in(&times, from, from + 0.1), 200, "interval {k}");
        }
    }

    #[test]
    fn a_ramp_puts_the_area_under_the_curve_in_every_interval() {
        // 0 → 100/s over 10 s, then 100/s for 1 s: the rate at t is 10·t, so the second
        // centred on k (from k − 0.5 to k + 0.5) holds the area 10·k.
        let times = arrivals(&Schedule::new(0.0, vec![stage(10, 100.0), stage(1, 100.0)]));
        assert_eq!(times.len(), 600);
        for k in 1..10 {
            let from = f64::from(k) - 0.5;
            assert_eq!(
                count_in(&times, from, from + 1.0),
                10 * k as usize,
                "second {k}"
            );
        }
        // The flat stage: 100 arrivals in its second.
        assert_eq!(count_in(&times, 10.0 - 1e-9, 11.0), 100);
        // 50 → 150/s over 1 s, then 150/s for 1 s (the JSON report test's ramp): 100 + 150,
        // and 25 + 12.5 in the first half second.
        let times = arrivals(&Schedule::new(50.0, vec![stage(1, 150.0), stage(1, 150.0)]));
        assert_eq!(times.len(), 250);
        assert_eq!(count_in(&times, 0.0, 0.5), 38);
        assert_eq!(count_in(&times, 0.0, 1.0 - 1e-9), 100);
        // A ramp down to 0: 100 → 0/s over 2 s is 100 arrivals, 75 of them in the first second.
        let times = arrivals(&Schedule::new(100.0, vec![stage(2, 0.0)]));
        assert_eq!(times.len(), 100);
        assert_eq!(count_in(&times, 0.0, 1.0 - 1e-9), 75);
        assert!(times.iter().all(|&t| t <= 2.0));
    }

    /// A clock that moves only when the pacer sleeps, and then by exactly the sleep: what the
    /// pacer decides, without the machine's timing in it.
    struct VirtualClock {
        now: std::cell::Cell<Instant>,
    }

    impl PacerClock for VirtualClock {
        fn now(&self) -> Instant {
            self.now.get()
        }

        fn sleep(&self, d: Duration) {
            self.now.set(self.now.get() + d);
        }
    }

    /// Paces `schedule` on a virtual clock; returns each hand-over as (arrival, intended time,
    /// clock at the hand-over) and the dropped count. `answer` says what the queue does.
    fn pace_virtually(
        schedule: &Schedule,
        segment: Segment,
        limit: u64,
        cancel: &CancellationToken,
        mut answer: impl FnMut(u64) -> Handed,
    ) -> (Instant, Vec<(u64, Instant, Instant)>, u64) {
        let start = Instant::now();
        let clock = VirtualClock {
            now: std::cell::Cell::new(start),
        };
        let dropped = AtomicU64::new(0);
        let mut seen = Vec::new();
        pace(
            schedule,
            segment,
            limit,
            start,
            &clock,
            cancel,
            &dropped,
            |n, due| {
                seen.push((n, due, clock.now()));
                answer(n)
            },
        );
        (start, seen, dropped.into_inner())
    }

    #[test]
    fn the_pacer_hands_every_arrival_over_at_its_intended_time() {
        let s = Schedule::new(1000.0, vec![stage(1, 1000.0)]);
        let cancel = CancellationToken::new();
        let (start, seen, dropped) =
            pace_virtually(&s, Segment::WHOLE, u64::MAX, &cancel, |_| Handed::Taken);
        assert_eq!(dropped, 0);
        assert_eq!(seen.len(), 1000);
        for (i, &(n, due, at)) in seen.iter().enumerate() {
            assert_eq!(n, i as u64);
            assert_eq!(Some(due - start), s.time_of(n), "arrival {n}");
            // Early by the hand-over lead (a tenth of the 1 ms gap), never late.
            assert!(at <= due, "arrival {n} handed over late");
            assert!(
                due - at <= MAX_LEAD + WAKE_SLACK,
                "arrival {n}: {:?} early",
                due - at
            );
        }
        // By the clock of the hand-overs: 100 in every 100 ms. The intervals start at a quarter
        // of a gap past a round time, so no hand-over sits on a boundary.
        let offsets: Vec<f64> = seen
            .iter()
            .map(|&(_, _, at)| at.saturating_duration_since(start).as_secs_f64())
            .collect();
        for k in 0..9 {
            let from = f64::from(k) / 10.0 + 0.000_25;
            assert_eq!(count_in(&offsets, from, from + 0.1), 100, "interval {k}");
        }
    }

    #[test]
    fn a_full_queue_drops_arrivals_without_delaying_the_next() {
        let s = Schedule::new(1000.0, vec![stage(1, 1000.0)]);
        let cancel = CancellationToken::new();
        // The queue takes 10 arrivals, then stays full (no worker ever frees up).
        let (_, seen, dropped) = pace_virtually(&s, Segment::WHOLE, u64::MAX, &cancel, |n| {
            if n < 10 { Handed::Taken } else { Handed::Full }
        });
        assert_eq!(dropped, 990);
        assert_eq!(
            seen.len(),
            1000,
            "every arrival was offered, none waited for"
        );
        assert!(
            seen.iter()
                .all(|&(_, due, at)| at <= due && due - at <= MAX_LEAD + WAKE_SLACK),
            "a dropped arrival made the next ones late"
        );
    }

    #[test]
    fn the_pacer_stops_at_the_limit_on_cancel_and_when_the_workers_are_gone() {
        let s = Schedule::new(1000.0, vec![stage(1, 1000.0)]);
        let never = CancellationToken::new();
        let (_, seen, _) = pace_virtually(&s, Segment::WHOLE, 5, &never, |_| Handed::Taken);
        assert_eq!(seen.len(), 5, "iterations = 5");
        let (_, seen, dropped) = pace_virtually(&s, Segment::WHOLE, u64::MAX, &never, |n| {
            if n == 3 {
                Handed::Closed
            } else {
                Handed::Taken
            }
        });
        assert_eq!((seen.len(), dropped), (4, 0), "stops at the closed queue");
        let cancel = CancellationToken::new();
        let (_, seen, _) = pace_virtually(&s, Segment::WHOLE, u64::MAX, &cancel, |n| {
            if n == 2 {
                cancel.cancel();
            }
            Handed::Taken
        });
        assert_eq!(seen.len(), 3, "stops once cancelled");
    }

    #[test]
    fn segments_pace_disjoint_slices_that_add_up_to_the_whole_schedule() {
        // A ramp (the case where contiguous slices would not share the load evenly), with and
        // without an iteration limit that is not a multiple of the segment count.
        let s = Schedule::new(100.0, vec![stage(1, 900.0), stage(1, 900.0)]);
        let never = CancellationToken::new();
        for limit in [u64::MAX, 997] {
            let (start, whole, _) =
                pace_virtually(&s, Segment::WHOLE, limit, &never, |_| Handed::Taken);
            let whole: Vec<(u64, Duration)> =
                whole.iter().map(|&(n, due, _)| (n, due - start)).collect();
            assert_eq!(whole.len() as u64, limit.min(1400), "the whole run");
            for n in [2, 3, 5] {
                let mut union = Vec::new();
                for k in 1..=n {
                    let seg = Segment::new(k, n).unwrap();
                    let (start, seen, dropped) =
                        pace_virtually(&s, seg, limit, &never, |_| Handed::Taken);
                    assert_eq!(dropped, 0);
                    assert_eq!(seen.len() as u64, seg.share(whole.len() as u64), "{seg}");
                    // Even over time: each half of the ramp's first second gets its share of
                    // that half's arrivals (within one), not the low end for segment 1 only.
                    let first: Vec<f64> = seen
                        .iter()
                        .map(|&(_, due, _)| (due - start).as_secs_f64())
                        .collect();
                    let in_whole = |from, to| {
                        whole
                            .iter()
                            .filter(|&&(_, d)| (from..to).contains(&d.as_secs_f64()))
                            .count() as f64
                    };
                    for (from, to) in [(0.0, 0.5), (0.5, 1.0)] {
                        let mine = count_in(&first, from, to) as f64;
                        let fair = in_whole(from, to) / n as f64;
                        assert!(
                            (mine - fair).abs() <= 1.0,
                            "{seg} in {from}..{to}: {mine} vs {fair}"
                        );
                    }
                    for &(num, due, at) in &seen {
                        assert!(seg.owns(num), "{seg} got arrival {num}");
                        // The global schedule's intended time, and handed over early by at
                        // most the lead.
                        assert_eq!(Some(due - start), s.time_of(num), "{seg}: arrival {num}");
                        assert!(
                            at <= due && due - at <= MAX_LEAD + WAKE_SLACK,
                            "{seg}: {num}"
                        );
                        union.push((num, due - start));
                    }
                }
                union.sort();
                assert_eq!(union, whole, "{n} segments together run the whole schedule");
            }
        }
    }

    #[test]
    fn think_time_is_drawn_from_the_whole_range() {
        let ms = Duration::from_millis;
        let mut rng = fastrand::Rng::with_seed(7);
        let draws: Vec<Duration> = (0..10_000)
            .map(|_| think_time((ms(50), ms(150)), |r| rng.u64(r)))
            .collect();
        assert!(draws.iter().all(|d| (ms(50)..=ms(150)).contains(d)));
        let (lo, hi) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(*lo < ms(51) && *hi > ms(149), "{lo:?}..{hi:?}");
        let mean = draws.iter().sum::<Duration>() / 10_000;
        assert!(mean > ms(97) && mean < ms(103), "{mean:?}");
        // Both ends are reachable.
        assert_eq!(think_time((ms(50), ms(150)), |r| *r.start()), ms(50));
        assert_eq!(think_time((ms(50), ms(150)), |r| *r.end()), ms(150));
        // A single value draws nothing.
        let fixed = think_time((ms(100), ms(100)), |_| panic!("drawn"));
        assert_eq!(fixed, ms(100));
    }
}
