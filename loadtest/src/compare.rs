//! `loadtest compare BASELINE CANDIDATE`: two runs side by side — a baseline against a
//! candidate (the last release against this build, yesterday against today) — as a table of
//! changes per step and overlaid charts, with an exit code a CI job can gate on.
//!
//! Each report is read through [`merge`](crate::merge::merge) (one file, or every segment of a
//! distributed run), so every figure is computed again from the report's histograms: the same
//! numbers `loadtest run` printed, and the same refusals of a file that is not a report. Steps
//! are matched by `scenario/step` name; a step in one run only is listed, never compared.
//!
//! A change is a regression when it is worse than the tolerance (10% unless told): p99
//! latency up, throughput down, or the error rate up (by the tolerance *and* by at least 0.1
//! percentage points, so a rise from 0 to one error in a million is not one).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::Error;
use crate::report::{Report, StepReport, esc, svg_chart};
use crate::stats::Point;

/// The smallest rise of the error rate that counts as a regression, whatever the tolerance.
const MIN_ERROR_RISE: f64 = 0.001;

/// What the two runs are and how much worse a figure may get.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The reference run's report files (one, or every segment of one run).
    pub baseline: Vec<PathBuf>,
    /// The run under test.
    pub candidate: Vec<PathBuf>,
    /// How much worse a figure may get before it is a regression: 0.1 is 10%.
    pub tolerance: f64,
}

/// Two runs compared.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// The baseline's name and file(s).
    pub baseline: Side,
    /// The candidate's.
    pub candidate: Side,
    /// The tolerance, as a fraction.
    pub tolerance: f64,
    /// One row per step found in both runs, then the whole run (`total`).
    pub steps: Vec<StepChange>,
    /// Steps found in one run only: `(name, "baseline" | "candidate")`.
    pub unmatched: Vec<(String, &'static str)>,
    /// Every figure worse than the tolerance, as a sentence.
    pub regressions: Vec<String>,
    #[serde(skip)]
    runs: [Report; 2],
}

/// One run of a comparison.
#[derive(Debug, Serialize)]
pub struct Side {
    /// The scenario's name.
    pub name: String,
    /// The report file(s).
    pub files: Vec<String>,
    /// Whether its own thresholds passed.
    pub passed: bool,
}

/// One step in both runs.
#[derive(Debug, Serialize)]
pub struct StepChange {
    /// `scenario/step`, or `total`.
    pub name: String,
    /// Each figure: baseline, candidate, and whether the change is a regression.
    pub figures: Vec<Figure>,
}

/// One figure of a step in both runs.
#[derive(Debug, Serialize)]
pub struct Figure {
    /// What it is (`p99 ms`, `rps`, …).
    pub what: &'static str,
    /// In the baseline.
    pub baseline: f64,
    /// In the candidate.
    pub candidate: f64,
    /// Candidate over baseline; `None` when the baseline is 0.
    pub ratio: Option<f64>,
    /// Worse than the tolerance allows.
    pub regression: bool,
}

/// Which way is better for a figure.
#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
    /// An error rate: lower, with [`MIN_ERROR_RISE`] of slack.
    LowerRate,
    /// Shown, never a regression (a count, or a percentile no threshold of ours names).
    Shown,
}

/// A figure's name, which way is better, and how to read it off a step.
type FigureOf = (&'static str, Better, fn(&StepReport) -> f64);

/// The figures of a step, in table order.
const FIGURES: &[FigureOf] = &[
    ("requests", Better::Shown, |s| s.requests as f64),
    ("rps", Better::Higher, |s| s.rps),
    ("error rate %", Better::LowerRate, |s| s.error_rate * 100.0),
    ("p50 ms", Better::Shown, |s| s.latency_ms.p50),
    ("p90 ms", Better::Shown, |s| s.latency_ms.p90),
    ("p99 ms", Better::Lower, |s| s.latency_ms.p99),
    ("p99.9 ms", Better::Shown, |s| s.latency_ms.p999),
    ("max ms", Better::Shown, |s| s.latency_ms.max),
    ("service p99 ms", Better::Shown, |s| s.service_time_ms.p99),
];

/// Reads both runs and compares them.
///
/// # Errors
///
/// A file that is not a report, segments that do not make one run (as `loadtest merge`
/// refuses them), a tolerance that is not a finite fraction ≥ 0, or two runs with no step in
/// common.
pub fn compare(inputs: &Inputs) -> Result<Comparison, Error> {
    let first = |files: &[PathBuf]| files.first().cloned().unwrap_or_else(|| PathBuf::from("-"));
    if !(inputs.tolerance.is_finite() && inputs.tolerance >= 0.0) {
        return Err(Error::Merge {
            file: first(&inputs.baseline),
            message: format!(
                "--tolerance: {} is not a share of 0% or more",
                inputs.tolerance
            ),
        });
    }
    let baseline = crate::merge::merge(&inputs.baseline)?;
    let candidate = crate::merge::merge(&inputs.candidate)?;
    let base_steps = steps(&baseline);
    let cand_steps = steps(&candidate);
    let mut changes = Vec::new();
    let mut unmatched = Vec::new();
    let mut regressions = Vec::new();
    for b in &base_steps {
        match cand_steps.iter().find(|c| c.name == b.name) {
            Some(c) => changes.push(change(b, c, inputs.tolerance, &mut regressions)),
            None => unmatched.push((b.name.clone(), "baseline")),
        }
    }
    for c in &cand_steps {
        if !base_steps.iter().any(|b| b.name == c.name) {
            unmatched.push((c.name.clone(), "candidate"));
        }
    }
    if changes.is_empty() {
        return Err(Error::Merge {
            file: first(&inputs.candidate),
            message: format!(
                "no step in common with {}: compare runs of one scenario",
                first(&inputs.baseline).display()
            ),
        });
    }
    changes.push(change(
        &baseline.total,
        &candidate.total,
        inputs.tolerance,
        &mut regressions,
    ));
    let side = |r: &Report, files: &[PathBuf]| Side {
        name: r.name.clone(),
        files: files.iter().map(|f| f.display().to_string()).collect(),
        passed: r.passed,
    };
    Ok(Comparison {
        baseline: side(&baseline, &inputs.baseline),
        candidate: side(&candidate, &inputs.candidate),
        tolerance: inputs.tolerance,
        steps: changes,
        unmatched,
        regressions,
        runs: [baseline, candidate],
    })
}

fn steps(r: &Report) -> Vec<&StepReport> {
    r.scenarios.iter().flat_map(|s| &s.steps).collect()
}

fn change(b: &StepReport, c: &StepReport, tolerance: f64, out: &mut Vec<String>) -> StepChange {
    let figures = FIGURES
        .iter()
        .map(|&(what, better, get)| {
            let (base, cand) = (get(b), get(c));
            let ratio = (base > 0.0).then(|| cand / base);
            let regression = match better {
                Better::Lower => cand > base * (1.0 + tolerance),
                Better::Higher => cand < base * (1.0 - tolerance),
                Better::LowerRate => {
                    cand > base * (1.0 + tolerance) && cand - base >= MIN_ERROR_RISE * 100.0
                }
                Better::Shown => false,
            };
            if regression {
                out.push(format!(
                    "{}: {what} {} → {} ({})",
                    b.name,
                    number(base),
                    number(cand),
                    ratio.map_or_else(|| "from 0".to_owned(), percent)
                ));
            }
            Figure {
                what,
                baseline: base,
                candidate: cand,
                ratio,
                regression,
            }
        })
        .collect();
    StepChange {
        name: b.name.clone(),
        figures,
    }
}

fn number(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// A ratio as a signed change: `+12.0%`, `-3.5%`.
fn percent(ratio: f64) -> String {
    format!("{:+.1}%", (ratio - 1.0) * 100.0)
}

impl Comparison {
    /// Whether no figure is worse than the tolerance.
    pub fn passed(&self) -> bool {
        self.regressions.is_empty()
    }

    /// The comparison as text, for the terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "baseline  {} ({})\ncandidate {} ({})\n",
            self.baseline.name,
            self.baseline.files.join(", "),
            self.candidate.name,
            self.candidate.files.join(", ")
        );
        for step in &self.steps {
            let _ = writeln!(s, "\n{}", step.name);
            for f in &step.figures {
                let _ = writeln!(
                    s,
                    "  {:<15} {:>12} {:>12} {:>9}{}",
                    f.what,
                    number(f.baseline),
                    number(f.candidate),
                    f.ratio.map_or_else(|| "-".to_owned(), percent),
                    if f.regression { "  REGRESSION" } else { "" }
                );
            }
        }
        for (name, only) in &self.unmatched {
            let _ = writeln!(s, "\n{name}: only in the {only}, not compared");
        }
        if self.regressions.is_empty() {
            let _ = writeln!(s, "\nno regression beyond {:.0}%", self.tolerance * 100.0);
        } else {
            let _ = writeln!(
                s,
                "\n{} regression(s) beyond {:.0}%:",
                self.regressions.len(),
                self.tolerance * 100.0
            );
            for r in &self.regressions {
                let _ = writeln!(s, "  {r}");
            }
        }
        s
    }

    /// The JSON form (the figures; not the two reports).
    ///
    /// # Errors
    ///
    /// Serialization failed (it does not, for these types).
    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string_pretty(self).map_err(Error::Report)
    }

    /// The HTML diff: the table of changes, then per step the two runs' p99 and throughput
    /// over time on one chart each. One file, no external resources.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadtest compare: {b} vs {c}</title>\
             <style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
             table{{border-collapse:collapse;margin-bottom:1em}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
             th:first-child,td:first-child{{text-align:left}}.worse{{background:#fdd;color:#900;font-weight:bold}}\
             .better{{color:#070}}.fail{{color:#b00;font-weight:bold}}.pass{{color:#070}}\
             svg{{background:#fafafa;border:1px solid #ddd;margin:1em 0}}</style></head><body>\
             <h1>loadtest compare</h1><p>baseline <b>{b}</b> ({bf}) — candidate <b>{c}</b> ({cf}) — tolerance {tol:.0}%</p>",
            b = esc(&self.baseline.name),
            c = esc(&self.candidate.name),
            bf = esc(&self.baseline.files.join(", ")),
            cf = esc(&self.candidate.files.join(", ")),
            tol = self.tolerance * 100.0,
        );
        if self.regressions.is_empty() {
            h.push_str("<p class=\"pass\">no regression beyond the tolerance</p>");
        } else {
            h.push_str("<p class=\"fail\">regressions:</p><ul>");
            for r in &self.regressions {
                let _ = write!(h, "<li class=\"fail\">{}</li>", esc(r));
            }
            h.push_str("</ul>");
        }
        for step in &self.steps {
            let _ = write!(
                h,
                "<h2>{}</h2><table><tr><th>figure</th><th>baseline</th><th>candidate</th><th>change</th></tr>",
                esc(&step.name)
            );
            for f in &step.figures {
                let class = if f.regression { " class=\"worse\"" } else { "" };
                let _ = write!(
                    h,
                    "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(f.what),
                    number(f.baseline),
                    number(f.candidate),
                    f.ratio.map_or_else(|| "-".to_owned(), percent)
                );
            }
            h.push_str("</table>");
            let series = |r: &Report| -> Vec<Point> {
                if step.name == "total" {
                    return r.series.clone();
                }
                steps(r)
                    .into_iter()
                    .find(|s| s.name == step.name)
                    .map(|s| s.series.clone())
                    .unwrap_or_default()
            };
            let (b, c) = (series(&self.runs[0]), series(&self.runs[1]));
            let line = |s: &[Point], f: fn(&Point) -> f64| -> Vec<(f64, f64)> {
                s.iter().map(|p| (p.t, f(p))).collect()
            };
            h.push_str(&svg_chart(
                &[
                    ("baseline p99", "#1f77b4", line(&b, |p| p.p99_ms)),
                    ("candidate p99", "#d62728", line(&c, |p| p.p99_ms)),
                ],
                "seconds",
                "ms",
                false,
            ));
            h.push_str(&svg_chart(
                &[
                    ("baseline req/s", "#1f77b4", line(&b, |p| p.requests as f64)),
                    (
                        "candidate req/s",
                        "#d62728",
                        line(&c, |p| p.requests as f64),
                    ),
                ],
                "seconds",
                "per second",
                false,
            ));
        }
        if !self.unmatched.is_empty() {
            h.push_str("<h2>Not compared</h2><ul>");
            for (name, only) in &self.unmatched {
                let _ = write!(h, "<li>{}: only in the {only}</li>", esc(name));
            }
            h.push_str("</ul>");
        }
        h.push_str("</body></html>\n");
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Percentiles;

    fn step(name: &str, rps: f64, error_rate: f64, p99: f64) -> StepReport {
        let latency = Percentiles {
            p99,
            ..Percentiles::default()
        };
        StepReport {
            name: name.into(),
            requests: 1000,
            failed: (error_rate * 1000.0) as u64,
            error_rate,
            rps,
            errors: Default::default(),
            latency_ms: latency.clone(),
            service_time_ms: latency,
            distribution: Vec::new(),
            series: Vec::new(),
            tags: Default::default(),
            hdr: None,
        }
    }

    fn flagged(b: &StepReport, c: &StepReport, tolerance: f64) -> Vec<&'static str> {
        let mut out = Vec::new();
        change(b, c, tolerance, &mut out)
            .figures
            .iter()
            .filter(|f| f.regression)
            .map(|f| f.what)
            .collect()
    }

    #[test]
    fn each_figure_regresses_only_past_the_tolerance_and_in_its_own_direction() {
        let base = step("s/get", 1000.0, 0.01, 10.0);
        assert!(
            flagged(&base, &base, 0.1).is_empty(),
            "a run against itself"
        );
        // Within 10%: slower, fewer, more errors, none flagged.
        assert!(flagged(&base, &step("s/get", 901.0, 0.0109, 10.9), 0.1).is_empty());
        assert_eq!(
            flagged(&base, &step("s/get", 899.0, 0.0111, 11.1), 0.1),
            ["rps", "error rate %", "p99 ms"]
        );
        // Better in every way is never a regression.
        assert!(flagged(&base, &step("s/get", 5000.0, 0.0, 1.0), 0.0).is_empty());
        // From no errors: one in a million is below the 0.1-point floor, one in a hundred is not.
        let clean = step("s/get", 1000.0, 0.0, 10.0);
        assert!(flagged(&clean, &step("s/get", 1000.0, 0.000_001, 10.0), 0.1).is_empty());
        assert_eq!(
            flagged(&clean, &step("s/get", 1000.0, 0.01, 10.0), 0.1),
            ["error rate %"]
        );
    }

    #[test]
    fn a_regression_reads_as_a_sentence() {
        let mut out = Vec::new();
        change(
            &step("s/get", 1000.0, 0.0, 10.0),
            &step("s/get", 1000.0, 0.0, 25.0),
            0.1,
            &mut out,
        );
        assert_eq!(out, ["s/get: p99 ms 10.000 → 25.000 (+150.0%)"]);
        out.clear();
        change(
            &step("s/get", 1000.0, 0.0, 10.0),
            &step("s/get", 1000.0, 0.5, 10.0),
            0.1,
            &mut out,
        );
        assert_eq!(out, ["s/get: error rate % 0.000 → 50.000 (from 0)"]);
    }
}
