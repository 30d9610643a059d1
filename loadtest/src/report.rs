//! Reports: the end summary table, the JSON report (schema `jupiter-loadtest/1`, documented in
//! the README), a self-contained HTML report with SVG plots, and the Prometheus exposition
//! served while running.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::{Executor, Plan};
use crate::segment::Segment;
use crate::stats::{Collected, ErrorKind, Hdr, Percentiles, Point, Recorder, StepWindow};
use crate::threshold::{Metric, Op, Threshold, fmt_duration};

/// The JSON schema name and version.
pub const SCHEMA: &str = "jupiter-loadtest/1";

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// `[run] name`.
    pub name: String,
    /// The scenario file.
    pub scenario_file: String,
    /// Start, Unix milliseconds.
    pub started_unix_ms: u64,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
    /// Stopped early (Ctrl-C, or an `abort-on-fail` threshold).
    pub aborted: bool,
    /// The `abort-on-fail` threshold that stopped the run, as `"scope: threshold (measured …)"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
    /// Every threshold passed.
    pub passed: bool,
    /// Requests were tagged as shadow traffic.
    pub shadow: bool,
    /// The test-run id the shadow tag carried (`[run] run-id`, or one made for the run); the
    /// distinct ids joined by commas for a merge of runs that had different ones.
    pub run_id: String,
    /// The share of the run this generator ran (`--segment`): `"1/1"` for a whole run.
    pub segment: Segment,
    /// The reports this one was merged from (`loadtest merge`), as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// A distributed run (`loadtest run --workers N`): each worker's share and how it ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerShare>,
    /// Segments of a distributed run that are not in these figures (their worker was lost),
    /// as `K/N`: the figures and thresholds are of the rest of the load only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_segments: Vec<String>,
    /// All requests together.
    pub total: StepReport,
    /// Per scenario.
    pub scenarios: Vec<ScenarioReport>,
    /// Threshold results.
    pub thresholds: Vec<ThresholdReport>,
    /// The load generator's own CPU use (absent in merged reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator: Option<Generator>,
    /// What to change when the run could not deliver its load (dropped arrivals, all workers
    /// busy, the generator's CPU saturated).
    pub advice: Vec<String>,
    /// Per second, all requests together.
    pub series: Vec<Point>,
}

/// One worker of a distributed run.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerShare {
    /// Its address (as registered).
    pub worker: String,
    /// Its segment, `K/N`.
    pub segment: String,
    /// Requests it reported (its final report, or its last second when lost).
    pub requests: u64,
    /// Failed requests among them.
    pub failed: u64,
    /// `done`, or `lost: why` (then its share is in `missing_segments`).
    pub status: String,
}

/// One scenario.
#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    /// Name.
    pub name: String,
    /// `open` (latency from the intended send time) or `closed`.
    pub model: &'static str,
    /// How long it ran, seconds.
    pub duration_s: f64,
    /// Open model: arrivals dropped because every worker was busy and the queue full.
    pub dropped_iterations: u64,
    /// ramping-vus: iterations cut off after `graceful-ramp-down`.
    pub interrupted_iterations: u64,
    /// Iterations that stopped at a step whose extraction (or request) failed: their later
    /// steps were not sent.
    pub iterations_cut_short: u64,
    /// Open model: its workers (`max-in-flight`, this generator's share).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u64>,
    /// Open model: the most workers busy at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_in_flight: Option<u64>,
    /// Its requests together.
    pub summary: StepReport,
    /// Per step.
    pub steps: Vec<StepReport>,
}

/// Figures of a step (or a group of steps).
#[derive(Debug, Serialize)]
pub struct StepReport {
    /// Name (`scenario/step` for steps).
    pub name: String,
    /// Requests sent and finished (passed or failed).
    pub requests: u64,
    /// Failed requests.
    pub failed: u64,
    /// `failed / requests`.
    pub error_rate: f64,
    /// Requests per second over the run time.
    pub rps: f64,
    /// Failures by kind: connect, timeout, status, check, protocol.
    pub errors: BTreeMap<&'static str, u64>,
    /// Latency (from the intended send time in open models), milliseconds.
    pub latency_ms: Percentiles,
    /// Service time (from the actual send), milliseconds.
    pub service_time_ms: Percentiles,
    /// Latency distribution: `[upper bound ms, count]`, log-spaced.
    pub distribution: Vec<(f64, u64)>,
    /// Per second (steps only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<Point>,
    /// Tags (steps only): `scenario`, `step` and those of the scenario file.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The latency and service-time histograms (steps only), for `loadtest merge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdr: Option<Hdr>,
}

/// One threshold's result.
#[derive(Debug, Serialize)]
pub struct ThresholdReport {
    /// `run`, `scenario NAME` or `step SCENARIO/STEP`.
    pub scope: String,
    /// As written.
    pub threshold: String,
    /// The measured value (seconds, fraction or per second).
    pub value: f64,
    /// The value for people.
    pub shown: String,
    /// Whether it passed.
    pub passed: bool,
}

/// The load generator's own CPU use over the run.
#[derive(Clone, Debug, Serialize)]
pub struct Generator {
    /// User + system CPU seconds of this process.
    pub cpu_s: f64,
    /// Cores the machine offers it.
    pub cores: usize,
    /// `cpu_s / (run time × cores)`: 1.0 is every core busy.
    pub cpu_share: f64,
}

/// User + system CPU seconds this process has used.
pub(crate) fn process_cpu() -> f64 {
    // SAFETY: getrusage fills the struct passed; RUSAGE_SELF is always valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// This process's resident memory in bytes (`VmRSS` of `/proc/self/status`); 0 where that
/// cannot be read.
pub(crate) fn resident_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024))
}

/// A generator this busy delays its own requests: its figures include its own queueing.
const SATURATED: f64 = 0.85;

/// What the summary suggests: why the run could not deliver its load, and what to raise.
pub fn advice(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for s in &r.scenarios {
        let p99_s = s.summary.latency_ms.p99 / 1000.0;
        let offered = (s.summary.requests + s.dropped_iterations) as f64 / s.duration_s.max(1e-9);
        // Little's law: workers needed = arrival rate × time in the system.
        let needed = (offered * p99_s * 1.5).ceil().max(1.0) as u64;
        match (s.max_in_flight, s.peak_in_flight) {
            (Some(max), _) if s.dropped_iterations > 0 => out.push(format!(
                "scenario {}: {} arrivals were dropped, every one of its {max} workers busy: \
                 raise max-in-flight to about {} ({offered:.0}/s × p99 {:.0} ms × 1.5), or \
                 the target cannot take this rate",
                s.name,
                s.dropped_iterations,
                needed.max(max * 2),
                p99_s * 1000.0
            )),
            (Some(max), Some(peak)) if peak >= max => out.push(format!(
                "scenario {}: all {max} workers were busy at its peak (none dropped yet): \
                 raise max-in-flight for headroom",
                s.name
            )),
            _ => {}
        }
    }
    if let Some(g) = &r.generator
        && g.cpu_share >= SATURATED
    {
        out.push(format!(
            "the generator's CPU was {:.0}% busy over {} cores: its own delays are in the \
             latencies; spread the load over more generators (--segment K/N) or lower the rate",
            g.cpu_share * 100.0,
            g.cores
        ));
    }
    out
}

/// What [`Report::assemble`] makes a report of.
pub(crate) struct Parts<'a> {
    pub name: String,
    pub stopped_by: Option<String>,
    pub scenario_file: String,
    pub started_unix_ms: u64,
    pub duration_s: f64,
    pub aborted: bool,
    pub shadow: bool,
    pub run_id: String,
    pub segment: Segment,
    pub scenarios: Vec<ScenarioParts<'a>>,
    /// Run-wide thresholds.
    pub thresholds: &'a [Threshold],
    pub series: Vec<Point>,
    pub merged_from: Vec<String>,
}

/// One scenario of [`Parts`].
pub(crate) struct ScenarioParts<'a> {
    pub name: String,
    /// Open model: `max-in-flight` and the most workers busy at once.
    pub workers: Option<(u64, u64)>,
    /// Iterations cut off by `graceful-ramp-down`.
    pub interrupted: u64,
    /// Iterations stopped at a failed extracting step.
    pub cut_short: u64,
    pub open: bool,
    /// How long it ran, seconds.
    pub secs: f64,
    pub dropped: u64,
    pub thresholds: &'a [Threshold],
    pub steps: Vec<StepParts<'a>>,
}

/// One step of a [`ScenarioParts`].
pub(crate) struct StepParts<'a> {
    pub name: String,
    pub tags: &'a BTreeMap<String, String>,
    pub thresholds: &'a [Threshold],
    pub window: &'a StepWindow,
    pub series: Vec<Point>,
}

fn step_report(name: String, w: &StepWindow, secs: f64, series: Vec<Point>) -> StepReport {
    let requests = w.requests();
    let failed = w.failed();
    let mut distribution = Vec::new();
    if !w.latency.is_empty() {
        for v in w.latency.iter_log(10, 1.5) {
            if v.count_since_last_iteration() > 0 {
                distribution.push((
                    v.value_iterated_to() as f64 / 1000.0,
                    v.count_since_last_iteration(),
                ));
            }
        }
    }
    StepReport {
        name,
        requests,
        failed,
        error_rate: if requests == 0 {
            0.0
        } else {
            failed as f64 / requests as f64
        },
        rps: if secs > 0.0 {
            requests as f64 / secs
        } else {
            0.0
        },
        errors: ErrorKind::ALL
            .iter()
            .map(|k| (k.as_str(), w.errors[*k as usize]))
            .collect(),
        latency_ms: Percentiles::of(&w.latency),
        service_time_ms: Percentiles::of(&w.service),
        distribution,
        series,
        tags: BTreeMap::new(),
        hdr: None,
    }
}

/// The first `abort-on-fail` threshold (past its `delay-abort-eval`) that fails on the figures
/// collected so far, `elapsed` into the run: `"scope: threshold (measured …)"`.
pub fn failing_abort(
    plan: &Plan,
    c: &Collected,
    recorder: &Recorder,
    elapsed: Duration,
) -> Option<String> {
    let armed = |t: &Threshold| t.abort_on_fail && elapsed >= t.delay_abort_eval;
    let any = plan.thresholds.iter().any(armed)
        || plan.scenarios.iter().any(|s| {
            s.thresholds.iter().any(armed)
                || s.steps.iter().any(|st| st.thresholds.iter().any(armed))
        });
    if !any {
        return None;
    }
    let fails = |scope: &str, list: &[Threshold], on: &Scope<'_>| {
        list.iter().filter(|t| armed(t)).find_map(|t| {
            // A windowed threshold reads the last `window` seconds of its series.
            let v = on.value(t, true);
            (!t.passes(v)).then(|| format!("{scope}: {} (measured {})", t.text, t.show(v)))
        })
    };
    let mut base = 0;
    let mut run_dropped = 0u64;
    let mut everyone = Vec::new();
    for (i, s) in plan.scenarios.iter().enumerate() {
        let secs = elapsed
            .saturating_sub(s.start_time)
            .min(s.executor.duration())
            .as_secs_f64();
        let dropped = recorder.dropped[i].load(std::sync::atomic::Ordering::Relaxed);
        run_dropped = run_dropped.saturating_add(dropped);
        let members: Vec<Member<'_>> = s
            .steps
            .iter()
            .enumerate()
            .map(|(j, st)| Member {
                tags: &st.tags,
                window: &c.totals[base + j],
                series: &c.step_series[base + j],
            })
            .collect();
        for (st, m) in s.steps.iter().zip(&members) {
            let on = Scope::of(vec![*m], m.window, vec![m.series], secs, dropped);
            if let Some(why) = fails(&format!("step {}/{}", s.name, st.name), &st.thresholds, &on) {
                return Some(why);
            }
        }
        let all = merged(members.iter().map(|m| m.window));
        let seconds = members.iter().map(|m| m.series).collect();
        everyone.extend(members.iter().copied());
        let on = Scope::of(members, &all, seconds, secs, dropped);
        if let Some(why) = fails(&format!("scenario {}", s.name), &s.thresholds, &on) {
            return Some(why);
        }
        base += s.steps.len();
    }
    let all = merged(c.totals.iter());
    let on = Scope::of(
        everyone,
        &all,
        vec![&c.series],
        elapsed.as_secs_f64(),
        run_dropped,
    );
    fails("run", &plan.thresholds, &on)
}

/// The first run-scope `abort-on-fail` threshold without a selector (past its
/// `delay-abort-eval`) that fails on `all` (every request so far), `series` (the run's seconds)
/// and `dropped`, `elapsed` into the run: what the coordinator of a distributed run evaluates
/// on the workers' figures added together. `"run: threshold (measured …)"`.
pub fn failing_run_abort(
    plan: &Plan,
    all: &StepWindow,
    series: &[Point],
    dropped: u64,
    elapsed: Duration,
) -> Option<String> {
    let on = Scope::of(
        Vec::new(),
        all,
        vec![series],
        elapsed.as_secs_f64(),
        dropped,
    );
    plan.thresholds
        .iter()
        .filter(|t| t.abort_on_fail && t.selector.is_empty() && elapsed >= t.delay_abort_eval)
        .find_map(|t| {
            let v = on.value(t, true);
            (!t.passes(v)).then(|| format!("run: {} (measured {})", t.text, t.show(v)))
        })
}

/// One step, as the thresholds of its scopes see it.
#[derive(Clone, Copy)]
struct Member<'a> {
    tags: &'a BTreeMap<String, String>,
    window: &'a StepWindow,
    series: &'a [Point],
}

/// What the thresholds of one scope (a step, a scenario, the run) read.
struct Scope<'a> {
    /// The scope's steps (for selectors).
    members: Vec<Member<'a>>,
    /// All of them together.
    all: &'a StepWindow,
    /// The scope's per-second series (the run's total, or its steps').
    seconds: Vec<&'a [Point]>,
    /// Its run time.
    secs: f64,
    /// Its dropped iterations.
    dropped: u64,
}

impl<'a> Scope<'a> {
    fn of(
        members: Vec<Member<'a>>,
        all: &'a StepWindow,
        seconds: Vec<&'a [Point]>,
        secs: f64,
        dropped: u64,
    ) -> Scope<'a> {
        Scope {
            members,
            all,
            seconds,
            secs,
            dropped,
        }
    }

    /// `t`'s value here: over the steps its selector picks (all without one), over the whole
    /// time or its worst window (the last window only, with `tail`: a run still going).
    fn value(&self, t: &Threshold, tail: bool) -> f64 {
        let picked: Vec<&Member<'_>> = self
            .members
            .iter()
            .filter(|m| t.selector.iter().all(|(k, v)| m.tags.get(k) == Some(v)))
            .collect();
        match t.window {
            Some(width) => {
                let mut series: Vec<&[Point]> = if t.selector.is_empty() {
                    self.seconds.clone()
                } else {
                    picked.iter().map(|m| m.series).collect()
                };
                if tail {
                    for s in &mut series {
                        *s = &s[s.len().saturating_sub(width)..];
                    }
                }
                worst_window(t, &series, width)
            }
            None if t.selector.is_empty() => value(t, self.all, self.secs, self.dropped),
            None => value(
                t,
                &merged(picked.iter().map(|m| m.window)),
                self.secs,
                self.dropped,
            ),
        }
    }
}

/// Second `i` of the series in `seconds` (one per step of the scope), as one window: from the
/// per-second histograms, with the failed count (per-second points carry no kinds).
fn second(seconds: &[&[Point]], i: usize) -> StepWindow {
    let mut w = StepWindow::new();
    for p in seconds.iter().filter_map(|s| s.get(i)) {
        if let Some(one) = p
            .hdr
            .as_ref()
            .and_then(|h| StepWindow::from_report(h, [p.errors, 0, 0, 0, 0]).ok())
        {
            w.merge(&one);
        }
    }
    w
}

/// A windowed threshold's value: the worst over every `width`-second window of the series,
/// sliding by one second (over the whole series when it is shorter). The sum moves by adding
/// the second that enters and subtracting the one that leaves: two decodes per second, and
/// only one window's histograms in memory.
fn worst_window(t: &Threshold, seconds: &[&[Point]], width: usize) -> f64 {
    let len = seconds.iter().map(|s| s.len()).max().unwrap_or(0);
    let width = width.max(1);
    let high_is_bad = matches!(t.op, Op::Lt | Op::Le);
    let mut sum = StepWindow::new();
    let mut worst: Option<f64> = None;
    for i in 0..len {
        sum.merge(&second(seconds, i));
        if i >= width {
            sum.subtract(&second(seconds, i - width));
        }
        if i + 1 >= width || i + 1 == len {
            let v = value(t, &sum, width.min(i + 1) as f64, 0);
            worst = Some(match worst {
                None => v,
                Some(x) if high_is_bad => x.max(v),
                Some(x) => x.min(v),
            });
        }
    }
    worst.unwrap_or(0.0)
}

fn value(t: &Threshold, w: &StepWindow, secs: f64, dropped: u64) -> f64 {
    let pick = |service: bool| -> &Histogram<u64> { if service { &w.service } else { &w.latency } };
    let s = |us: f64| us / 1e6;
    match t.metric {
        Metric::Percentile { p, service } => {
            let h = pick(service);
            if h.is_empty() {
                0.0
            } else {
                s(h.value_at_quantile(p / 100.0) as f64)
            }
        }
        Metric::Mean { service } => s(pick(service).mean()),
        Metric::Max { service } => s(pick(service).max() as f64),
        Metric::ErrorRate => {
            if w.requests() == 0 {
                0.0
            } else {
                w.failed() as f64 / w.requests() as f64
            }
        }
        Metric::Checks => {
            let unanswered: u64 = [ErrorKind::Connect, ErrorKind::Timeout, ErrorKind::Protocol]
                .iter()
                .map(|&k| w.errors[k as usize])
                .sum();
            let answered = w.requests().saturating_sub(unanswered);
            let failed = w.errors[ErrorKind::Status as usize] + w.errors[ErrorKind::Check as usize];
            if answered == 0 {
                // Nothing was checked: no evidence that checks pass.
                0.0
            } else {
                answered.saturating_sub(failed) as f64 / answered as f64
            }
        }
        Metric::DroppedIterations => dropped as f64,
        Metric::Rps => {
            if secs > 0.0 {
                w.requests() as f64 / secs
            } else {
                0.0
            }
        }
    }
}

fn merged<'a>(windows: impl Iterator<Item = &'a StepWindow>) -> StepWindow {
    let mut all = StepWindow::new();
    for w in windows {
        all.merge(w);
    }
    all
}

impl Report {
    /// Builds the report from the collected figures.
    pub fn build(
        plan: &Plan,
        c: &Collected,
        recorder: &Recorder,
        started: SystemTime,
        elapsed: Duration,
        durations: &[Duration],
        aborted: bool,
    ) -> Report {
        let mut base = 0;
        let mut scenarios = Vec::new();
        for (i, s) in plan.scenarios.iter().enumerate() {
            let steps = s
                .steps
                .iter()
                .enumerate()
                .map(|(j, st)| StepParts {
                    name: st.name.clone(),
                    tags: &st.tags,
                    thresholds: &st.thresholds,
                    window: &c.totals[base + j],
                    series: c.step_series[base + j].clone(),
                })
                .collect();
            let workers = match &s.executor {
                Executor::Arrival { max_in_flight, .. } => Some((
                    plan.segment.workers(*max_in_flight) as u64,
                    recorder.peak_busy[i].load(std::sync::atomic::Ordering::Relaxed),
                )),
                Executor::Vus { .. } => None,
            };
            scenarios.push(ScenarioParts {
                name: s.name.clone(),
                workers,
                interrupted: recorder.interrupted[i].load(std::sync::atomic::Ordering::Relaxed),
                cut_short: recorder.cut_short[i].load(std::sync::atomic::Ordering::Relaxed),
                open: s.executor.is_open(),
                secs: durations.get(i).copied().unwrap_or(elapsed).as_secs_f64(),
                dropped: recorder.dropped[i].load(std::sync::atomic::Ordering::Relaxed),
                thresholds: &s.thresholds,
                steps,
            });
            base += s.steps.len();
        }
        Report::assemble(Parts {
            name: plan.run.name.clone(),
            stopped_by: None,
            scenario_file: plan.file.display().to_string(),
            started_unix_ms: started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            duration_s: elapsed.as_secs_f64(),
            aborted,
            shadow: plan.run.shadow,
            run_id: plan.run.run_id.clone().unwrap_or_default(),
            segment: plan.segment,
            scenarios,
            thresholds: &plan.thresholds,
            series: c.series.clone(),
            merged_from: Vec::new(),
        })
    }

    /// The report of `parts`: figures from the windows' histograms, thresholds evaluated on
    /// them (a run's report, and `merge`'s).
    pub(crate) fn assemble(parts: Parts<'_>) -> Report {
        let run_secs = parts
            .scenarios
            .iter()
            .map(|s| s.secs)
            .reduce(f64::max)
            .unwrap_or(parts.duration_s);
        let mut thresholds = Vec::new();
        let mut check = |scope: String, list: &[Threshold], on: &Scope<'_>| {
            for t in list {
                let v = on.value(t, false);
                thresholds.push(ThresholdReport {
                    scope: scope.clone(),
                    threshold: t.text.clone(),
                    value: v,
                    shown: t.show(v),
                    passed: t.passes(v),
                });
            }
        };
        let mut scenarios = Vec::new();
        let mut everyone = Vec::new();
        let mut run_dropped = 0u64;
        for s in &parts.scenarios {
            let members: Vec<Member<'_>> = s
                .steps
                .iter()
                .map(|st| Member {
                    tags: st.tags,
                    window: st.window,
                    series: &st.series,
                })
                .collect();
            let all = merged(members.iter().map(|m| m.window));
            let seconds = members.iter().map(|m| m.series).collect();
            let on = Scope::of(members.clone(), &all, seconds, s.secs, s.dropped);
            check(format!("scenario {}", s.name), s.thresholds, &on);
            run_dropped = run_dropped.saturating_add(s.dropped);
            let mut steps = Vec::new();
            for (st, m) in s.steps.iter().zip(&members) {
                let on = Scope::of(vec![*m], m.window, vec![m.series], s.secs, s.dropped);
                check(format!("step {}/{}", s.name, st.name), st.thresholds, &on);
                let mut r = step_report(
                    format!("{}/{}", s.name, st.name),
                    st.window,
                    s.secs,
                    st.series.clone(),
                );
                r.hdr = Some(st.window.hdr());
                r.tags = st.tags.clone();
                steps.push(r);
            }
            everyone.extend(members);
            scenarios.push(ScenarioReport {
                name: s.name.clone(),
                model: if s.open { "open" } else { "closed" },
                duration_s: s.secs,
                dropped_iterations: s.dropped,
                interrupted_iterations: s.interrupted,
                iterations_cut_short: s.cut_short,
                max_in_flight: s.workers.map(|w| w.0),
                peak_in_flight: s.workers.map(|w| w.1),
                summary: step_report(s.name.clone(), &all, s.secs, Vec::new()),
                steps,
            });
        }
        let all = merged(everyone.iter().map(|m| m.window));
        let on = Scope::of(everyone, &all, vec![&parts.series], run_secs, run_dropped);
        check("run".into(), parts.thresholds, &on);
        let passed = thresholds.iter().all(|t| t.passed);
        Report {
            schema: SCHEMA,
            name: parts.name,
            scenario_file: parts.scenario_file,
            started_unix_ms: parts.started_unix_ms,
            duration_s: parts.duration_s,
            aborted: parts.aborted,
            stopped_by: parts.stopped_by,
            passed,
            shadow: parts.shadow,
            run_id: parts.run_id,
            segment: parts.segment,
            merged_from: parts.merged_from,
            workers: Vec::new(),
            missing_segments: Vec::new(),
            total: step_report("total".into(), &all, run_secs, Vec::new()),
            scenarios,
            thresholds,
            generator: None,
            advice: Vec::new(),
            series: parts.series,
        }
    }

    /// The end summary table.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let ms = |v: f64| fmt_duration(Duration::from_secs_f64(v / 1000.0));
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>10} {:>16} {:>9} {:>9} {:>9} {:>9} {:>11}",
            "scenario/step", "requests", "rps", "errors", "p50", "p90", "p99", "max", "service p99"
        );
        let mut row = |r: &StepReport| {
            let _ = writeln!(
                out,
                "{:<28} {:>9} {:>10.1} {:>16} {:>9} {:>9} {:>9} {:>9} {:>11}",
                r.name,
                r.requests,
                r.rps,
                format!("{} ({:.2}%)", r.failed, r.error_rate * 100.0),
                ms(r.latency_ms.p50),
                ms(r.latency_ms.p90),
                ms(r.latency_ms.p99),
                ms(r.latency_ms.max),
                ms(r.service_time_ms.p99),
            );
        };
        for s in &self.scenarios {
            for st in &s.steps {
                row(st);
            }
        }
        row(&self.total);
        if !self.workers.is_empty() {
            let _ = writeln!(
                out,
                "{:<28} {:>9} {:>9} {:>9}  status",
                "worker", "segment", "requests", "failed"
            );
            for w in &self.workers {
                let _ = writeln!(
                    out,
                    "{:<28} {:>9} {:>9} {:>9}  {}",
                    w.worker, w.segment, w.requests, w.failed, w.status
                );
            }
        }
        if !self.missing_segments.is_empty() {
            let _ = writeln!(
                out,
                "INCOMPLETE: segments {} missing (worker lost): the figures and thresholds are of the rest of the load",
                self.missing_segments.join(", ")
            );
        }
        if !self.segment.is_whole() {
            let _ = writeln!(
                out,
                "segment {} of the run: these figures and thresholds are this generator's share",
                self.segment
            );
        }
        for s in &self.scenarios {
            let kinds: Vec<String> = s
                .summary
                .errors
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            if s.interrupted_iterations > 0 {
                let _ = writeln!(
                    out,
                    "{}: {} iterations cut off by graceful-ramp-down",
                    s.name, s.interrupted_iterations
                );
            }
            if !kinds.is_empty() || s.dropped_iterations > 0 {
                let _ = writeln!(
                    out,
                    "{}: errors: {}; dropped iterations: {}",
                    s.name,
                    if kinds.is_empty() {
                        "none".into()
                    } else {
                        kinds.join(", ")
                    },
                    s.dropped_iterations
                );
            }
        }
        if let Some(g) = &self.generator {
            let _ = writeln!(
                out,
                "generator: {:.1} CPU seconds, {:.0}% of {} cores",
                g.cpu_s,
                g.cpu_share * 100.0,
                g.cores
            );
        }
        for a in &self.advice {
            let _ = writeln!(out, "advice: {a}");
        }
        if let Some(why) = &self.stopped_by {
            let _ = writeln!(out, "stopped early by an abort-on-fail threshold: {why}");
        }
        if !self.thresholds.is_empty() {
            let _ = writeln!(out, "thresholds:");
            for t in &self.thresholds {
                let _ = writeln!(
                    out,
                    "  {} {}: {} (measured {})",
                    if t.passed { "pass" } else { "FAIL" },
                    t.scope,
                    t.threshold,
                    t.shown
                );
            }
        }
        out
    }

    /// The JSON report.
    ///
    /// # Errors
    ///
    /// [`Error::Report`](crate::Error::Report): serde_json refused a value (none of the
    /// report's types should make it).
    pub fn to_json(&self) -> Result<String, crate::Error> {
        serde_json::to_string_pretty(self).map_err(crate::Error::Report)
    }

    /// The HTML report: one file, no external resources.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadtest: {name}</title>\
             <style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
             table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
             th:first-child,td:first-child{{text-align:left}}.fail{{color:#b00;font-weight:bold}}\
             .pass{{color:#070}}svg{{background:#fafafa;border:1px solid #ddd;margin:1em 0}}</style>\
             </head><body><h1>loadtest: {name}</h1><p>{file} — {dur:.1} s{aborted} — {verdict}</p>",
            name = esc(&self.name),
            file = esc(&self.scenario_file),
            dur = self.duration_s,
            aborted = if self.aborted { " (stopped early)" } else { "" },
            verdict = if self.passed {
                "<span class=\"pass\">thresholds passed</span>"
            } else {
                "<span class=\"fail\">thresholds failed</span>"
            },
        );
        h.push_str("<table><tr><th>scenario/step</th><th>requests</th><th>rps</th><th>errors</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>service p99 ms</th></tr>");
        let mut rows: Vec<&StepReport> = self.scenarios.iter().flat_map(|s| &s.steps).collect();
        rows.push(&self.total);
        for r in rows {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{} ({:.2}%)</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                esc(&r.name),
                r.requests,
                r.rps,
                r.failed,
                r.error_rate * 100.0,
                r.latency_ms.p50,
                r.latency_ms.p90,
                r.latency_ms.p99,
                r.latency_ms.max,
                r.service_time_ms.p99
            );
        }
        h.push_str("</table>");
        if !self.thresholds.is_empty() {
            h.push_str("<h2>Thresholds</h2><ul>");
            for t in &self.thresholds {
                let _ = write!(
                    h,
                    "<li class=\"{}\">{} — {}: {} (measured {})</li>",
                    if t.passed { "pass" } else { "fail" },
                    if t.passed { "pass" } else { "FAIL" },
                    esc(&t.scope),
                    esc(&t.threshold),
                    esc(&t.shown)
                );
            }
            h.push_str("</ul>");
        }
        let pts = |f: &dyn Fn(&Point) -> f64| -> Vec<(f64, f64)> {
            self.series.iter().map(|p| (p.t, f(p))).collect()
        };
        h.push_str("<h2>Throughput over time</h2>");
        h.push_str(&throughput_chart(&self.series));
        if self.series.iter().any(|p| p.active.is_some()) {
            h.push_str("<h2>Workers and dropped arrivals over time</h2>");
            h.push_str(&svg_chart(
                &[
                    (
                        "in an iteration",
                        "#1f77b4",
                        pts(&|p| p.active.unwrap_or(0) as f64),
                    ),
                    (
                        "dropped/s",
                        "#d62728",
                        pts(&|p| p.dropped.unwrap_or(0) as f64),
                    ),
                ],
                "seconds",
                "workers, arrivals",
                false,
            ));
        }
        if self.series.iter().any(|p| p.cpu_share.is_some()) {
            h.push_str("<h2>Generator CPU over time</h2>");
            h.push_str(&svg_chart(
                &[(
                    "CPU % of all cores",
                    "#8c564b",
                    pts(&|p| p.cpu_share.unwrap_or(0.0) * 100.0),
                )],
                "seconds",
                "%",
                false,
            ));
        }
        if self.series.iter().any(|p| p.rss_bytes.is_some()) {
            h.push_str("<h2>Generator memory over time</h2>");
            h.push_str(&svg_chart(
                &[(
                    "resident MB",
                    "#17becf",
                    pts(&|p| p.rss_bytes.unwrap_or(0) as f64 / f64::from(1 << 20)),
                )],
                "seconds",
                "MB",
                false,
            ));
        }
        h.push_str("<h2>Latency percentiles over time</h2>");
        h.push_str(&svg_chart(
            &[
                ("p50", "#2ca02c", pts(&|p| p.p50_ms)),
                ("p90", "#ff7f0e", pts(&|p| p.p90_ms)),
                ("p99", "#d62728", pts(&|p| p.p99_ms)),
                ("service p99", "#9467bd", pts(&|p| p.service_p99_ms)),
            ],
            "seconds",
            "ms",
            false,
        ));
        h.push_str("<h2>Latency distribution</h2>");
        let mut cum = 0u64;
        let total: u64 = self.total.distribution.iter().map(|d| d.1).sum();
        let curve: Vec<(f64, f64)> = self
            .total
            .distribution
            .iter()
            .map(|(ms, n)| {
                cum += n;
                let q = cum as f64 / total.max(1) as f64;
                // "Nines" axis: 0 → 0%, 1 → 90%, 2 → 99%, 3 → 99.9%.
                (-(1.0 - q).max(1e-6).log10(), *ms)
            })
            .collect();
        h.push_str(&svg_chart(
            &[("latency at percentile", "#1f77b4", curve)],
            "percentile (1 = 90%, 2 = 99%, 3 = 99.9%)",
            "ms",
            true,
        ));
        self.step_charts(&mut h);
        h.push_str("</body></html>\n");
        h
    }

    /// Per-step plots of latency and throughput over time, one step shown at a time through a
    /// selector (inline script: the report still loads nothing from elsewhere).
    fn step_charts(&self, h: &mut String) {
        let steps: Vec<&StepReport> = self
            .scenarios
            .iter()
            .flat_map(|s| &s.steps)
            .filter(|s| !s.series.is_empty())
            .collect();
        if steps.is_empty() {
            return;
        }
        h.push_str("<h2>Per step</h2><p><label>step <select id=\"step\">");
        for (i, st) in steps.iter().enumerate() {
            let _ = write!(h, "<option value=\"{i}\">{}</option>", esc(&st.name));
        }
        h.push_str("</select></label></p>");
        for (i, st) in steps.iter().enumerate() {
            let pts = |f: &dyn Fn(&Point) -> f64| -> Vec<(f64, f64)> {
                st.series.iter().map(|p| (p.t, f(p))).collect()
            };
            let hidden = if i == 0 {
                ""
            } else {
                " style=\"display:none\""
            };
            let _ = write!(h, "<div class=\"step\" data-step=\"{i}\"{hidden}>");
            h.push_str(&svg_chart(
                &[
                    ("p50", "#2ca02c", pts(&|p| p.p50_ms)),
                    ("p99", "#d62728", pts(&|p| p.p99_ms)),
                    ("service p99", "#9467bd", pts(&|p| p.service_p99_ms)),
                ],
                "seconds",
                "ms",
                false,
            ));
            h.push_str(&throughput_chart(&st.series));
            h.push_str("</div>");
        }
        h.push_str(
            "<script>document.getElementById('step').addEventListener('change',function(e){\
             document.querySelectorAll('div.step').forEach(function(d){\
             d.style.display=d.dataset.step===e.target.value?'':'none'})})</script>",
        );
    }
}

/// A plotted line: name, colour, points.
pub(crate) type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// The most hover dots a plotted line gets (a long run is thinned evenly).
const HOVER_POINTS: usize = 600;

/// A line chart as inline SVG.
pub(crate) fn svg_chart(series: &[Line<'_>], x_label: &str, y_label: &str, nines: bool) -> String {
    let (w, ht, l, r, t, b) = (860.0, 320.0, 70.0, 20.0, 20.0, 50.0);
    let xs = series.iter().flat_map(|s| s.2.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.2.iter().map(|p| p.1));
    // Axes end on a round tick: 0, 500, 1000 … rather than quarters of the largest value.
    let (xmax, xticks) = ticks(xs.fold(0.0f64, f64::max).max(1.0), 6, nines);
    let (ymax, yticks) = ticks(ys.fold(0.0f64, f64::max).max(1e-3), 5, false);
    let px = |x: f64| l + x / xmax * (w - l - r);
    let py = |y: f64| ht - b - y / ymax * (ht - t - b);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" font-size=\"11\">"
    );
    for (y, label) in yticks {
        let _ = write!(
            s,
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            w - r,
            l - 4.0,
            py(y) + 4.0,
            py = py(y)
        );
    }
    let last = xticks.len().saturating_sub(1);
    for (k, (x, label)) in xticks.into_iter().enumerate() {
        // The last label ends at the axis end rather than running past the plot.
        let anchor = if k == last && k > 0 { "end" } else { "middle" };
        let label = if nines {
            // x is the count of nines: 0 → 0%, 1 → 90%, 2 → 99%, 3 → 99.9% …
            let digits = (x as usize).saturating_sub(2);
            format!("{:.digits$}%", (1.0 - 10f64.powf(-x)) * 100.0)
        } else {
            label
        };
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{label}</text>",
            px(x),
            ht - b + 16.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text><text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{y_label}</text>",
        (l + w - r) / 2.0,
        ht - 8.0,
        ht / 2.0,
        ht / 2.0
    );
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        // Hover read-outs: an invisible dot per point (at most HOVER_POINTS a line) with the
        // values as its tooltip; no script needed.
        let every = pts.len().div_ceil(HOVER_POINTS).max(1);
        for (x, y) in pts.iter().step_by(every) {
            let shown_x = if nines {
                format!("{:.3}%", (1.0 - 10f64.powf(-x)) * 100.0)
            } else {
                format!("{x:.0} {x_label}")
            };
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\" fill-opacity=\"0\" \
                 pointer-events=\"all\"><title>{name} at {shown_x}: {y:.3} {y_label}</title></circle>",
                px(*x),
                py(*y)
            );
        }
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/><text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>",
            path.join(" "),
            l + 10.0 + 140.0 * i as f64,
            t + 12.0
        );
    }
    s.push_str("</svg>");
    s
}

/// `s` as HTML text or attribute value.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Requests and errors per second over `series`.
fn throughput_chart(series: &[Point]) -> String {
    let pts =
        |f: fn(&Point) -> f64| -> Vec<(f64, f64)> { series.iter().map(|p| (p.t, f(p))).collect() };
    svg_chart(
        &[
            ("requests/s", "#1f77b4", pts(|p| p.requests as f64)),
            ("errors/s", "#d62728", pts(|p| p.errors as f64)),
        ],
        "seconds",
        "per second",
        false,
    )
}

/// Round ticks from 0 to at least `max`, about `count` of them, steps of 1, 2 or 5 × 10ⁿ
/// (whole numbers when `whole`); returns the axis end and each tick with its label.
fn ticks(max: f64, count: usize, whole: bool) -> (f64, Vec<(f64, String)>) {
    let raw = max / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    if whole {
        step = step.ceil().max(1.0);
    }
    let n = (max / step).ceil().max(1.0) as usize;
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let ticks = (0..=n)
        .map(|i| {
            let v = step * i as f64;
            (v, format!("{v:.decimals$}"))
        })
        .collect();
    (step * n as f64, ticks)
}

/// Prometheus text exposition of the figures so far.
pub fn prometheus_text(plan: &Plan, c: &Collected, recorder: &Recorder) -> String {
    let mut out = String::new();
    out.push_str("# HELP loadtest_requests_total Requests finished, by scenario, step and result.\n# TYPE loadtest_requests_total counter\n");
    let mut base = 0;
    let mut rows = Vec::new();
    for (i, s) in plan.scenarios.iter().enumerate() {
        for (j, st) in s.steps.iter().enumerate() {
            // The step's tags as labels: scenario, step and the scenario file's tags.
            let labels: Vec<String> = st
                .tags
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            rows.push((i, labels.join(","), &c.totals[base + j]));
        }
        base += s.steps.len();
    }
    for (_, labels, w) in &rows {
        let _ = writeln!(
            out,
            "loadtest_requests_total{{{labels},result=\"ok\"}} {}",
            w.requests() - w.failed()
        );
        for k in ErrorKind::ALL {
            let _ = writeln!(
                out,
                "loadtest_requests_total{{{labels},result=\"{}\"}} {}",
                k.as_str(),
                w.errors[k as usize]
            );
        }
    }
    out.push_str("# HELP loadtest_latency_seconds Latency (from the intended send time in open models).\n# TYPE loadtest_latency_seconds summary\n");
    for (_, labels, w) in &rows {
        for q in [0.5, 0.9, 0.99, 0.999] {
            let v = if w.latency.is_empty() {
                0.0
            } else {
                w.latency.value_at_quantile(q) as f64 / 1e6
            };
            let _ = writeln!(
                out,
                "loadtest_latency_seconds{{{labels},quantile=\"{q}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "loadtest_latency_seconds_count{{{labels}}} {}",
            w.requests()
        );
    }
    out.push_str("# HELP loadtest_dropped_iterations_total Open-model arrivals dropped (every worker busy).\n# TYPE loadtest_dropped_iterations_total counter\n");
    for (i, s) in plan.scenarios.iter().enumerate() {
        let _ = writeln!(
            out,
            "loadtest_dropped_iterations_total{{scenario=\"{}\"}} {}",
            s.name,
            recorder.dropped[i].load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    out.push_str("# HELP loadtest_active_workers Workers inside an iteration (open: busy workers; closed: active VUs).\n# TYPE loadtest_active_workers gauge\n");
    for (i, s) in plan.scenarios.iter().enumerate() {
        let load =
            |a: &[std::sync::atomic::AtomicU64]| a[i].load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(
            out,
            "loadtest_active_workers{{scenario=\"{}\"}} {}",
            s.name,
            load(&recorder.busy).saturating_add(load(&recorder.active))
        );
    }
    out
}

/// Serves `text` at `/metrics` on `addr` until the runtime ends; returns the bound address.
///
/// # Errors
///
/// The address is invalid or taken.
pub async fn serve_prometheus(
    addr: &str,
    text: Arc<Mutex<String>>,
) -> std::io::Result<std::net::SocketAddr> {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let text = text.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = if req.uri().path() == "/metrics" {
                        text.lock().unwrap_or_else(|p| p.into_inner()).clone()
                    } else {
                        String::new()
                    };
                    let status = if req.uri().path() == "/metrics" {
                        200
                    } else {
                        404
                    };
                    async move {
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

/// The executor's name for reports.
pub fn executor_name(e: &Executor) -> &'static str {
    match e {
        Executor::Arrival { .. } => "arrival-rate",
        Executor::Vus { .. } => "vus",
    }
}

#[cfg(test)]
mod tests {
    use super::ticks;

    fn labels(max: f64, count: usize, whole: bool) -> (f64, Vec<String>) {
        let (end, t) = ticks(max, count, whole);
        (end, t.into_iter().map(|(_, l)| l).collect())
    }

    #[test]
    fn axis_ticks_fall_on_round_values() {
        // The values that gave `2201.100 / 1650.825 …` and `0 3 5 8 10` before.
        assert_eq!(
            labels(2201.1, 5, false),
            (
                2500.0,
                ["0", "500", "1000", "1500", "2000", "2500"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert_eq!(
            labels(10.0, 6, false),
            (
                10.0,
                ["0", "2", "4", "6", "8", "10"].map(String::from).to_vec()
            )
        );
        assert_eq!(
            labels(0.37, 5, false),
            (
                0.4,
                ["0.0", "0.1", "0.2", "0.3", "0.4"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert_eq!(labels(0.013, 5, false).1.last().unwrap(), "0.015");
        // Nines: whole numbers of nines only.
        assert_eq!(
            labels(3.4, 6, true),
            (4.0, ["0", "1", "2", "3", "4"].map(String::from).to_vec())
        );
        for max in [1e-3, 0.9, 1.0, 7.0, 99.0, 1e6, 3.3e9] {
            let (end, t) = ticks(max, 5, false);
            assert!(
                end >= max && t.len() >= 2 && t.len() <= 12,
                "{max}: {end} {t:?}"
            );
            assert_eq!(t[0].0, 0.0);
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    /// A second with `n` requests at `ms`, `errors` of them failed.
    fn second_of(ms: u64, n: u64, errors: u64) -> Point {
        let mut w = StepWindow::new();
        for _ in 0..n {
            w.latency.record(ms * 1000).unwrap();
            w.service.record(ms * 1000).unwrap();
        }
        w.errors[0] = errors;
        Point {
            hdr: Some(w.hdr()),
            ..Point::of(0.0, &w)
        }
    }

    fn run() -> Vec<Point> {
        // 20 s of 100 requests a second at 1 ms, except: second 5 has 50 failures, second 10
        // has 10 more requests at 500 ms, seconds 15 and 16 are empty.
        (0..20)
            .map(|i| match i {
                5 => second_of(1, 100, 50),
                10 => {
                    let mut w = StepWindow::new();
                    for ms in std::iter::repeat_n(1, 100).chain(std::iter::repeat_n(500, 10)) {
                        w.latency.record(ms * 1000).unwrap();
                        w.service.record(ms * 1000).unwrap();
                    }
                    Point {
                        hdr: Some(w.hdr()),
                        ..Point::of(0.0, &w)
                    }
                }
                15 | 16 => second_of(1, 0, 0),
                _ => second_of(1, 100, 0),
            })
            .collect()
    }

    fn worst(text: &str, seconds: &[&[Point]]) -> (f64, bool) {
        let t: Threshold = text.parse().unwrap();
        let v = worst_window(&t, seconds, t.window.unwrap());
        (v, t.passes(v))
    }

    #[test]
    fn a_sliding_window_finds_the_worst_stretch() {
        let s = run();
        // p99 over 3 s: 10 of the 210 requests around second 10 took 500 ms.
        let (v, pass) = worst("p99[3s] < 200ms", &[&s]);
        assert!(!pass && (0.49..0.51).contains(&v), "{v}");
        // Over windows as long as the run, it is the whole run's p99 (10 of 1,810: 0.55%).
        let (v, pass) = worst("p99[20s] < 200ms", &[&s]);
        assert!(pass && v < 0.002, "{v}");
        // Rates take the window's lowest: seconds 15 and 16 are empty.
        assert_eq!(worst("rps[2s] > 40", &[&s]), (0.0, false));
        assert_eq!(worst("rps[3s] > 30", &[&s]), (100.0 / 3.0, true));
        // Error rate: second 5 alone is 50%.
        assert_eq!(worst("error-rate[1s] < 10%", &[&s]), (0.5, false));
        assert!(worst("error-rate[10s] < 10%", &[&s]).1);
        // A run shorter than the window is one window over all of it.
        assert_eq!(worst("rps[1m] > 1", &[&s[..4]]), (100.0, true));
        // A scenario's seconds are its steps' seconds added: two halves make the whole.
        let half: Vec<Point> = (0..20).map(|_| second_of(1, 50, 0)).collect();
        assert_eq!(worst("rps[5s] > 99", &[&half, &half]), (100.0, true));
        assert!(!worst("rps[5s] > 99", &[&half]).1);
    }

    #[test]
    fn advice_names_what_to_raise() {
        let total = second(&[&run()], 0);
        let of = |workers, dropped| {
            Report::assemble(Parts {
                name: "a".into(),
                stopped_by: None,
                scenario_file: "a.toml".into(),
                started_unix_ms: 0,
                duration_s: 1.0,
                aborted: false,
                shadow: true,
                run_id: "r".into(),
                segment: Segment::WHOLE,
                scenarios: vec![ScenarioParts {
                    name: "s".into(),
                    workers,
                    interrupted: 0,
                    cut_short: 0,
                    open: true,
                    secs: 1.0,
                    dropped,
                    thresholds: &[],
                    steps: vec![StepParts {
                        name: "get".into(),
                        tags: &BTreeMap::new(),
                        thresholds: &[],
                        window: &total,
                        series: Vec::new(),
                    }],
                }],
                thresholds: &[],
                series: Vec::new(),
                merged_from: Vec::new(),
            })
        };
        assert!(
            advice(&of(Some((4, 3)), 0)).is_empty(),
            "headroom left: nothing to say"
        );
        assert_eq!(
            advice(&of(Some((4, 4)), 0)),
            [
                "scenario s: all 4 workers were busy at its peak (none dropped yet): raise \
              max-in-flight for headroom"
            ]
        );
        let a = advice(&of(Some((4, 4)), 900));
        assert!(a[0].starts_with("scenario s: 900 arrivals were dropped, every one of its 4 workers busy: raise max-in-flight to about 8"), "{a:?}");
        let mut r = of(None, 0);
        r.generator = Some(Generator {
            cpu_s: 1.8,
            cores: 2,
            cpu_share: 0.9,
        });
        assert_eq!(advice(&r).len(), 1);
        assert!(advice(&r)[0].starts_with("the generator's CPU was 90% busy over 2 cores"));
        r.generator.as_mut().unwrap().cpu_share = 0.5;
        assert!(advice(&r).is_empty());
    }

    #[test]
    fn a_report_evaluates_windowed_thresholds_on_the_step_series() {
        let series = run();
        let mut total = StepWindow::new();
        for i in 0..series.len() {
            total.merge(&second(&[&series], i));
        }
        let thresholds: Vec<Threshold> = ["p99 < 200ms", "p99[3s] < 200ms"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let report = Report::assemble(Parts {
            name: "w".into(),
            stopped_by: None,
            scenario_file: "w.toml".into(),
            started_unix_ms: 0,
            duration_s: 20.0,
            aborted: false,
            shadow: true,
            run_id: "r".into(),
            segment: Segment::WHOLE,
            scenarios: vec![ScenarioParts {
                name: "s".into(),
                workers: None,
                interrupted: 0,
                cut_short: 0,
                open: true,
                secs: 20.0,
                dropped: 0,
                thresholds: &[],
                steps: vec![StepParts {
                    name: "get".into(),
                    tags: &BTreeMap::new(),
                    thresholds: &thresholds,
                    window: &total,
                    series,
                }],
            }],
            thresholds: &[],
            series: Vec::new(),
            merged_from: Vec::new(),
        });
        let got: Vec<(&str, bool)> = report
            .thresholds
            .iter()
            .map(|t| (t.threshold.as_str(), t.passed))
            .collect();
        assert_eq!(got, [("p99 < 200ms", true), ("p99[3s] < 200ms", false)]);
        assert!(!report.passed);
    }
}
