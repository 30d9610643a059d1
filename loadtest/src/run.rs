//! Running a plan: connect the targets, probe them for shadow support, drive the executors,
//! collect once a second, stop gracefully, and hand the figures to the report.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jupiter_core::shadow::ShadowContext;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::protocol::{Scratch, Shadow, TargetClient};
use crate::report::Report;
use crate::scenario::{Executor, Flow, Plan, Stage, Step};
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
}

/// Runs `plan`; returns the report (always, also when stopped early) and how the run ended.
///
/// # Errors
///
/// A target could not be set up, or the shadow probe failed (the report is not written: no
/// load was sent).
pub async fn run(plan: Plan, options: RunOptions) -> Result<(Report, Outcome), Error> {
    let cancel = options.cancel.unwrap_or_default();
    let reporter = options.reporter;
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
        plan,
    });
    let started_at = std::time::SystemTime::now();
    let start = Instant::now();

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
                if let Some(r) = &reporter {
                    r.progress(&p, elapsed);
                }
                if prometheus.is_some() {
                    *prom_text.lock().unwrap_or_else(|p| p.into_inner()) =
                        crate::report::prometheus_text(&shared.plan, &c, &shared.recorder);
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
    let last = c.series.last().map_or(0.0, |p| p.t);
    if elapsed.as_secs_f64() > last + 0.001 {
        c.tick(&shared.recorder, elapsed.as_secs_f64());
    }
    let aborted = cancel.is_cancelled();
    let report = Report::build(
        &shared.plan,
        &c,
        &shared.recorder,
        started_at,
        elapsed,
        &durations,
        aborted,
    );
    let outcome = if aborted {
        Outcome::Aborted("stopped (Ctrl-C)".into())
    } else if report.passed {
        Outcome::Passed
    } else {
        Outcome::ThresholdsFailed
    };
    Ok((report, outcome))
}

/// Every live target a scenario uses must acknowledge shadow traffic.
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
    for t in &plan.targets {
        let client = TargetClient::connect(t, &plan.run)
            .await
            .map_err(|source| Error::Target {
                target: t.name.clone(),
                source,
            })?;
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

/// Runs scenario `i` to its end; returns how long it ran.
///
/// # Errors
///
/// The pacer thread could not be started; the whole run is cancelled.
async fn run_scenario(shared: Arc<Shared>, i: usize, start: Instant) -> Result<Duration, Error> {
    let scenario = &shared.plan.scenarios[i];
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
            let (tx, rx) = async_channel::bounded::<(u64, Instant)>(*max_in_flight);
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
                    let mut n = 0u64;
                    while n < limit {
                        let Some(at) = schedule.time_of(n) else { break };
                        let due = start + at;
                        // Handed over a little early (a tenth of the gap to the next arrival,
                        // at most 300 µs): waking a parked worker takes about that long, and the
                        // worker spins the rest. The spinning costs at most a tenth of a core.
                        let gap = schedule
                            .time_of(n + 1)
                            .map_or(Duration::ZERO, |next| next.saturating_sub(at));
                        let lead = (gap / 10).min(Duration::from_micros(300));
                        let handover = due.checked_sub(lead).unwrap_or(due);
                        loop {
                            if cancel.is_cancelled() {
                                return;
                            }
                            let now = Instant::now();
                            if handover <= now + Duration::from_micros(20) {
                                break;
                            }
                            std::thread::sleep((handover - now).min(Duration::from_millis(50)));
                        }
                        match tx.try_send((n, due)) {
                            Ok(()) => {}
                            Err(async_channel::TrySendError::Full(_)) => {
                                s2.recorder.dropped[i].fetch_add(1, Ordering::Relaxed);
                            }
                            Err(async_channel::TrySendError::Closed(_)) => return,
                        }
                        n += 1;
                    }
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
            for vu in 0..*max_in_flight {
                let shared = shared.clone();
                let rx = rx.clone();
                tasks.spawn(async move {
                    let mut scratch = Scratch::default();
                    let mut iter = 0;
                    while let Ok((seq, due)) = rx.recv().await {
                        if shared.cancel.is_cancelled() {
                            break;
                        }
                        // Handed over early by at most 300 µs: wait out the rest precisely.
                        while Instant::now() < due {
                            std::hint::spin_loop();
                        }
                        iteration(&shared, i, seq, vu as u64, iter, Some(due), &mut scratch).await;
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
        } => {
            let max = stages
                .iter()
                .map(|s| s.target.round() as usize)
                .chain([*v0])
                .max()
                .unwrap_or(0);
            let counter = Arc::new(AtomicU64::new(0));
            for vu in 0..max {
                let shared = shared.clone();
                let counter = counter.clone();
                let stages = stages.clone();
                let (v0, limit) = (*v0, iterations.unwrap_or(u64::MAX));
                tasks.spawn(async move {
                    let mut scratch = Scratch::default();
                    let mut iter = 0;
                    loop {
                        let now = Instant::now();
                        if shared.cancel.is_cancelled() || now >= end {
                            break;
                        }
                        if vu >= vus_at(v0, &stages, now - start) {
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                                () = shared.cancel.cancelled() => break,
                            }
                            continue;
                        }
                        let seq = counter.fetch_add(1, Ordering::Relaxed);
                        if seq >= limit {
                            break;
                        }
                        iteration(&shared, i, seq, vu as u64, iter, None, &mut scratch).await;
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
    let vars = Vars {
        seq,
        vu,
        iter,
        feeders: &shared.plan.feeders,
    };
    let think = || async {
        if let Some((a, b)) = sc.think {
            let d = if a == b {
                a
            } else {
                a + Duration::from_nanos(fastrand::u64(0..=(b - a).as_nanos() as u64))
            };
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
        }
    };
    match sc.flow {
        Flow::Pick => {
            let j = pick(&sc.steps);
            run_step(shared, scenario, j, &vars, intended, scratch).await;
            think().await;
        }
        Flow::Sequence => {
            for j in 0..sc.steps.len() {
                let due = if j == 0 { intended } else { None };
                run_step(shared, scenario, j, &vars, due, scratch).await;
                think().await;
                if shared.cancel.is_cancelled() {
                    break;
                }
            }
        }
    }
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
) {
    let step = &shared.plan.scenarios[scenario].steps[j];
    let client = &shared.clients[step.target];
    let begin = Instant::now();
    scratch.begin();
    let result = tokio::time::timeout(
        shared.plan.run.timeout,
        ShadowContext::scope(
            shared.shadow.context.clone(),
            client.execute(step, vars, &shared.shadow, scratch),
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
}
