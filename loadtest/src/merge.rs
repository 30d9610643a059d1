//! `loadtest merge`: one report from the reports of several generators (the segments of one
//! run, `--segment K/N`) or of separate runs of one scenario.
//!
//! Exact, never averaged: each step's latency and service-time histograms (HdrHistogram V2 +
//! DEFLATE in the JSON report) are added, error counts and dropped iterations summed, and
//! every percentile and threshold is computed again on the sums; the per-second series are
//! added second by second (their histograms too). A scenario's run time is the longest of the
//! generators' (they ran side by side), so rates are the generators' rates added.
//!
//! The reports must be of the same scenarios and steps with the same thresholds; segments
//! must be all of one split, each once, and every one of them (a missing segment would pass
//! thresholds on part of the load). Anything else is refused naming the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;
use crate::report::{Parts, Report, SCHEMA, ScenarioParts, StepParts};
use crate::segment::Segment;
use crate::stats::{ErrorKind, Hdr, Point, StepWindow};
use crate::threshold::Threshold;

/// The largest report file `merge` reads (a one-hour run with a few steps is a few MiB).
const MAX_REPORT_BYTES: u64 = 256 << 20;

/// What `merge` reads of a report: the histograms and counts, not the figures made of them.
#[derive(Deserialize)]
struct Input {
    schema: String,
    name: String,
    scenario_file: String,
    started_unix_ms: u64,
    duration_s: f64,
    aborted: bool,
    #[serde(default)]
    stopped_by: Option<String>,
    shadow: bool,
    #[serde(default)]
    run_id: String,
    segment: String,
    scenarios: Vec<InScenario>,
    thresholds: Vec<InThreshold>,
    series: Vec<InPoint>,
}

#[derive(Deserialize)]
struct InScenario {
    name: String,
    model: String,
    duration_s: f64,
    dropped_iterations: u64,
    #[serde(default)]
    interrupted_iterations: u64,
    #[serde(default)]
    iterations_cut_short: u64,
    steps: Vec<InStep>,
}

#[derive(Deserialize)]
struct InStep {
    name: String,
    errors: BTreeMap<String, u64>,
    hdr: Hdr,
    #[serde(default)]
    series: Vec<InPoint>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct InThreshold {
    scope: String,
    threshold: String,
}

#[derive(Deserialize)]
struct InPoint {
    t: f64,
    hdr: Hdr,
    requests: u64,
    errors: u64,
    #[serde(default)]
    active: Option<u64>,
    #[serde(default)]
    dropped: Option<u64>,
    #[serde(default)]
    cpu_share: Option<f64>,
    #[serde(default)]
    rss_bytes: Option<u64>,
}

/// Reads `files` and merges them into one report.
///
/// # Errors
///
/// [`Error::Merge`] naming the file (and key) that cannot be read or does not fit.
pub fn merge(files: &[PathBuf]) -> Result<Report, Error> {
    let inputs: Vec<Input> = files.iter().map(|f| read(f)).collect::<Result<_, _>>()?;
    check_segments(files, &inputs, false)?;
    merge_inputs(files, inputs)
}

/// Merges reports held in memory (JSON, as `loadtest run --json` writes them), each named by
/// `label` in errors: the coordinator of a distributed run merges its workers' reports. With
/// `partial`, segments of the split may be missing (a worker that died); they are listed in
/// the second value, as `K/N`.
///
/// # Errors
///
/// [`Error::Merge`] naming the label (and key) of a report that cannot be read or does not fit.
pub fn merge_texts(
    reports: &[(PathBuf, Vec<u8>)],
    partial: bool,
) -> Result<(Report, Vec<String>), Error> {
    let labels: Vec<PathBuf> = reports.iter().map(|(l, _)| l.clone()).collect();
    let inputs: Vec<Input> = reports
        .iter()
        .map(|(label, bytes)| parse(label, bytes))
        .collect::<Result<_, _>>()?;
    let missing = check_segments(&labels, &inputs, partial)?;
    Ok((merge_inputs(&labels, inputs)?, missing))
}

fn merge_inputs(files: &[PathBuf], inputs: Vec<Input>) -> Result<Report, Error> {
    let first = files.first().ok_or_else(|| Error::Merge {
        file: PathBuf::from("-"),
        message: "no reports to merge".into(),
    })?;
    let at = |i: usize, message: String| Error::Merge {
        file: files[i].clone(),
        message,
    };
    let base = &inputs[0];

    // The shape (scenarios, steps, thresholds) of the first report; every other must match.
    let mut thresholds: BTreeMap<&str, Vec<Threshold>> = BTreeMap::new();
    for (k, t) in base.thresholds.iter().enumerate() {
        let parsed = t
            .threshold
            .parse()
            .map_err(|e| at(0, format!("thresholds[{k}].threshold: {e}")))?;
        thresholds.entry(&t.scope).or_default().push(parsed);
    }
    for (i, input) in inputs.iter().enumerate().skip(1) {
        let shape = |r: &Input| -> Vec<String> {
            r.scenarios
                .iter()
                .flat_map(|s| {
                    s.steps
                        .iter()
                        .map(move |st| format!("{} ({})", st.name, s.model))
                })
                .collect()
        };
        if shape(input) != shape(base) {
            return Err(at(
                i,
                format!(
                    "scenarios[].steps[] are {:?}, not {:?} as in {}: only reports of one \
                     scenario file merge",
                    shape(input),
                    shape(base),
                    first.display()
                ),
            ));
        }
        let texts = |r: &Input| -> Vec<(String, String)> {
            r.thresholds
                .iter()
                .map(|t| (t.scope.clone(), t.threshold.clone()))
                .collect()
        };
        if texts(input) != texts(base) {
            return Err(at(
                i,
                format!("thresholds[] differ from those in {}", first.display()),
            ));
        }
    }

    // Windows: per step (totals) and per second (series), added over the inputs.
    let steps: usize = base.scenarios.iter().map(|s| s.steps.len()).sum();
    let mut totals: Vec<StepWindow> = (0..steps).map(|_| StepWindow::new()).collect();
    let mut step_seconds: Vec<Vec<(f64, StepWindow)>> = (0..steps).map(|_| Vec::new()).collect();
    let mut seconds: Vec<(f64, StepWindow)> = Vec::new();
    let mut dropped = vec![0u64; base.scenarios.len()];
    let mut interrupted = vec![0u64; base.scenarios.len()];
    let mut cut_short = vec![0u64; base.scenarios.len()];
    let mut secs = vec![0f64; base.scenarios.len()];
    let overflow = |i: usize, key: String| at(i, format!("{key}: the counts overflow when added"));
    for (i, input) in inputs.iter().enumerate() {
        let mut n = 0;
        for (si, s) in input.scenarios.iter().enumerate() {
            dropped[si] = dropped[si]
                .checked_add(s.dropped_iterations)
                .ok_or_else(|| overflow(i, format!("scenarios[{si}].dropped_iterations")))?;
            secs[si] = secs[si].max(finite(s.duration_s));
            interrupted[si] = interrupted[si].saturating_add(s.interrupted_iterations);
            cut_short[si] = cut_short[si].saturating_add(s.iterations_cut_short);
            for (ti, st) in s.steps.iter().enumerate() {
                let key = format!("scenarios[{si}].steps[{ti}]");
                let w =
                    window(&st.hdr, &st.errors).map_err(|e| at(i, format!("{key}.hdr: {e}")))?;
                totals[n]
                    .checked_merge(&w)
                    .ok_or_else(|| overflow(i, key.clone()))?;
                add_series(&mut step_seconds[n], &st.series)
                    .map_err(|e| at(i, format!("{key}.series{e}")))?;
                n += 1;
            }
        }
        add_series(&mut seconds, &input.series).map_err(|e| at(i, format!("series{e}")))?;
    }

    let none: &[Threshold] = &[];
    let scoped = |scope: String| thresholds.get(scope.as_str()).map_or(none, Vec::as_slice);
    let mut scenarios = Vec::new();
    let mut n = 0;
    for (si, s) in base.scenarios.iter().enumerate() {
        let mut parts = Vec::new();
        for st in &s.steps {
            // A step report's name is `scenario/step`.
            let name = st
                .name
                .strip_prefix(&format!("{}/", s.name))
                .unwrap_or(&st.name)
                .to_owned();
            parts.push(StepParts {
                tags: &st.tags,
                thresholds: scoped(format!("step {}/{name}", s.name)),
                name,
                window: &totals[n],
                series: points(&step_seconds[n]),
            });
            n += 1;
        }
        scenarios.push(ScenarioParts {
            name: s.name.clone(),
            // Peaks of different generators do not add up to the peak of the whole.
            workers: None,
            interrupted: interrupted[si],
            cut_short: cut_short[si],
            open: s.model == "open",
            secs: secs[si],
            dropped: dropped[si],
            thresholds: scoped(format!("scenario {}", s.name)),
            steps: parts,
        });
    }
    Ok(Report::assemble(Parts {
        name: base.name.clone(),
        stopped_by: inputs.iter().find_map(|r| r.stopped_by.clone()),
        scenario_file: base.scenario_file.clone(),
        started_unix_ms: inputs.iter().map(|r| r.started_unix_ms).min().unwrap_or(0),
        duration_s: inputs
            .iter()
            .map(|r| finite(r.duration_s))
            .fold(0.0, f64::max),
        aborted: inputs.iter().any(|r| r.aborted),
        shadow: inputs.iter().all(|r| r.shadow),
        run_id: {
            let mut ids: Vec<&str> = Vec::new();
            for r in &inputs {
                if !r.run_id.is_empty() && !ids.contains(&r.run_id.as_str()) {
                    ids.push(&r.run_id);
                }
            }
            ids.join(",")
        },
        segment: Segment::WHOLE,
        scenarios,
        thresholds: scoped("run".into()),
        series: with_gauges(points(&seconds), &inputs),
        merged_from: files.iter().map(|f| f.display().to_string()).collect(),
    }))
}

fn finite(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

fn read(file: &Path) -> Result<Input, Error> {
    let fail = |message: String| Error::Merge {
        file: file.to_owned(),
        message,
    };
    let meta = std::fs::metadata(file).map_err(|e| fail(format!("cannot read it: {e}")))?;
    if meta.len() > MAX_REPORT_BYTES {
        return Err(fail(format!(
            "{} bytes is more than a report can be (at most {MAX_REPORT_BYTES})",
            meta.len()
        )));
    }
    let bytes = std::fs::read(file).map_err(|e| fail(format!("cannot read it: {e}")))?;
    parse(file, &bytes)
}

fn parse(file: &Path, bytes: &[u8]) -> Result<Input, Error> {
    let fail = |message: String| Error::Merge {
        file: file.to_owned(),
        message,
    };
    if bytes.len() as u64 > MAX_REPORT_BYTES {
        return Err(fail(format!(
            "{} bytes is more than a report can be (at most {MAX_REPORT_BYTES})",
            bytes.len()
        )));
    }
    let input: Input = serde_json::from_slice(bytes).map_err(|e| {
        fail(format!(
            "not a loadtest JSON report with histograms (write it with this version's \
             `loadtest run --json`): {e}"
        ))
    })?;
    if input.schema != SCHEMA {
        return Err(fail(format!(
            "schema: {:?}, and this loadtest reads {SCHEMA:?}",
            input.schema
        )));
    }
    Ok(input)
}

/// Segments: all whole runs, or every segment of one split exactly once.
/// Checks that `inputs` are distinct segments of one split, all of them unless `partial`;
/// returns the missing ones (`K/N`).
fn check_segments(
    files: &[PathBuf],
    inputs: &[Input],
    partial: bool,
) -> Result<Vec<String>, Error> {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut count = None;
    for (i, input) in inputs.iter().enumerate() {
        let at = |message: String| Error::Merge {
            file: files[i].clone(),
            message,
        };
        let segment: Segment = input
            .segment
            .parse()
            .map_err(|e| at(format!("segment: {e}")))?;
        let n = segment.count();
        if *count.get_or_insert(n) != n {
            return Err(at(format!(
                "segment: {segment}, but {} is a segment of {}: merge the segments of one split",
                files[0].display(),
                count.unwrap_or(1)
            )));
        }
        if n > 1 {
            let k = segment.number();
            if let Some(&j) = seen.get(&k) {
                return Err(at(format!(
                    "segment: {segment} again (also in {})",
                    files[j].display()
                )));
            }
            seen.insert(k, i);
        }
    }
    let n = count.unwrap_or(1);
    if n > 1 && seen.len() as u64 != n {
        let missing: Vec<String> = (1..=n)
            .filter(|k| !seen.contains_key(k))
            .take(if partial { usize::MAX } else { 10 })
            .map(|k| format!("{k}/{n}"))
            .collect();
        if partial {
            return Ok(missing);
        }
        return Err(Error::Merge {
            file: files[0].clone(),
            message: format!(
                "segments missing: {} (every segment of a split must be merged)",
                missing.join(", ")
            ),
        });
    }
    Ok(Vec::new())
}

fn window(hdr: &Hdr, errors: &BTreeMap<String, u64>) -> Result<StepWindow, String> {
    let mut counts = [0u64; 5];
    for (name, &count) in errors {
        let k = ErrorKind::ALL
            .iter()
            .position(|k| k.as_str() == name)
            .ok_or_else(|| format!("unknown error kind {name:?}"))?;
        counts[k] = count;
    }
    StepWindow::from_report(hdr, counts)
}

/// Adds `series` into `into`, second by second (by position: each generator's n-th second).
/// The error names the key under `series`.
fn add_series(into: &mut Vec<(f64, StepWindow)>, series: &[InPoint]) -> Result<(), String> {
    for (k, p) in series.iter().enumerate() {
        let w = StepWindow::from_report(&p.hdr, [0; 5]).map_err(|e| format!("[{k}].hdr: {e}"))?;
        if p.errors > p.requests || p.requests != w.requests() {
            return Err(format!(
                "[{k}]: {} requests and {} errors for a histogram of {}",
                p.requests,
                p.errors,
                w.requests()
            ));
        }
        if into.len() <= k {
            into.push((0.0, StepWindow::new()));
        }
        let (t, sum) = &mut into[k];
        *t = t.max(finite(p.t));
        sum.checked_merge(&w)
            .ok_or_else(|| format!("[{k}]: the counts overflow when added"))?;
        // The point's errors ride in the first error kind: a series point reports only the
        // number failed.
        sum.errors[0] = sum.errors[0]
            .checked_add(p.errors)
            .ok_or_else(|| format!("[{k}].errors: overflow"))?;
    }
    Ok(())
}

/// The run series' gauges of every generator, second by second: workers and drops add up;
/// the CPU share and resident memory are the busiest generator's (the one whose own
/// queueing shows first, the one nearest its limit).
fn with_gauges(mut series: Vec<Point>, inputs: &[Input]) -> Vec<Point> {
    fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        }
    }
    for input in inputs {
        for (q, p) in series.iter_mut().zip(&input.series) {
            q.active = add(q.active, p.active);
            q.dropped = add(q.dropped, p.dropped);
            let cpu = p.cpu_share.map(finite);
            q.cpu_share = match (q.cpu_share, cpu) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            q.rss_bytes = q.rss_bytes.max(p.rss_bytes);
        }
    }
    series
}

fn points(seconds: &[(f64, StepWindow)]) -> Vec<Point> {
    seconds
        .iter()
        .map(|(t, w)| Point {
            hdr: Some(w.hdr()),
            ..Point::of(*t, w)
        })
        .collect()
}
