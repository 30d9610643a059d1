//! Thresholds: `"p99 < 20ms"`, `"p95 <= 1s"`, `"error-rate < 1%"`, `"rps > 1000"`.
//!
//! Latency metrics: `p50`, `p90`, `p95`, `p99`, `p99.9` (any percentile), `mean`, `max`;
//! prefixed with `service-` they read the service time (send to reply) instead of the latency
//! (intended send time to reply). `error-rate` is the failed share of requests; `rps` the
//! requests per second over the scenario's run time; `checks` the share of answered requests
//! whose checks passed (`checks > 99%`); `dropped-iterations` the arrivals an open model
//! dropped (`dropped-iterations < 1`; a step reads its scenario's).
//!
//! `p99[30s] < 200ms` reads every 30-second window of the run (sliding by one second) rather
//! than the whole run: it fails if any window fails, and its value is the worst window's.
//! A table form adds `abort-on-fail` and `delay-abort-eval`.

use std::fmt;
use std::time::Duration;

/// What a threshold reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// A latency percentile (0–100).
    Percentile {
        /// The percentile.
        p: f64,
        /// Service time rather than latency.
        service: bool,
    },
    /// Mean latency.
    Mean {
        /// Service time rather than latency.
        service: bool,
    },
    /// Largest latency.
    Max {
        /// Service time rather than latency.
        service: bool,
    },
    /// Failed requests / requests.
    ErrorRate,
    /// Requests per second.
    Rps,
    /// The share of answered requests (no connect, timeout or protocol error) whose checks
    /// (status and body) passed.
    Checks,
    /// Arrivals dropped because every worker was busy (the scenario's, or the run's).
    DroppedIterations,
}

/// The comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A parsed threshold.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(try_from = "Spec")]
pub struct Threshold {
    /// The expression as written.
    pub text: String,
    /// What it reads.
    pub metric: Metric,
    /// How it compares.
    pub op: Op,
    /// The limit: seconds for latencies, a fraction for `error-rate`, a rate for `rps`.
    pub limit: f64,
    /// Stop the run as soon as it fails (evaluated each second on the data so far).
    pub abort_on_fail: bool,
    /// With `abort_on_fail`: not before this long into the run (the start is often noisy).
    pub delay_abort_eval: Duration,
    /// `p99[30s] < 200ms`: over every window of this many seconds (sliding by one), not the
    /// whole run; it fails if any window does, and reports the worst window.
    pub window: Option<usize>,
    /// `p99{kind=write} < 50ms`: only the steps of its scope carrying all these tags.
    pub selector: Vec<(String, String)>,
}

/// A threshold as written: `"p99 < 20ms"`, or a table
/// `{ threshold = "p99 < 20ms", abort-on-fail = true, delay-abort-eval = "10s" }`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Spec {
    Text(String),
    Table(Table),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Table {
    threshold: String,
    #[serde(default)]
    abort_on_fail: bool,
    delay_abort_eval: Option<String>,
}

/// The longest window of a sliding-window threshold (the run keeps per-second histograms
/// compressed; a window is summed from them).
const MAX_WINDOW_S: u64 = 3600;

/// The longest `delay-abort-eval` (a run is at most a year).
const MAX_DELAY: Duration = Duration::from_secs(366 * 86_400);

impl TryFrom<Spec> for Threshold {
    type Error = String;

    fn try_from(spec: Spec) -> Result<Self, String> {
        match spec {
            Spec::Text(text) => text.parse(),
            Spec::Table(t) => {
                let mut out: Threshold = t.threshold.parse()?;
                out.abort_on_fail = t.abort_on_fail;
                if let Some(d) = t.delay_abort_eval {
                    if !t.abort_on_fail {
                        return Err(format!(
                            "threshold {:?}: delay-abort-eval without abort-on-fail = true",
                            t.threshold
                        ));
                    }
                    out.delay_abort_eval = humantime::parse_duration(&d)
                        .ok()
                        .filter(|d| *d <= MAX_DELAY)
                        .ok_or_else(|| {
                            format!("threshold {:?}: delay-abort-eval {d:?} is not a duration up to a year (write e.g. 10s)", t.threshold)
                        })?;
                }
                Ok(out)
            }
        }
    }
}

impl std::str::FromStr for Threshold {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let syntax = || {
            format!(
                "invalid threshold {text:?}: write `METRIC OP VALUE`, e.g. \"p99 < 20ms\", \
                 \"error-rate < 1%\", \"rps > 1000\""
            )
        };
        let (at, op, len) = ["<=", ">=", "<", ">"]
            .iter()
            .find_map(|o| text.find(o).map(|i| (i, *o, o.len())))
            .ok_or_else(syntax)?;
        let op = match op {
            "<=" => Op::Le,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            _ => Op::Gt,
        };
        let name = text[..at].trim();
        let value = text[at + len..].trim();
        let (name, window) = match name.strip_suffix(']').and_then(|n| n.split_once('[')) {
            Some((n, w)) => {
                let secs = humantime::parse_duration(w.trim())
                    .ok()
                    .filter(|d| d.subsec_nanos() == 0 && (1..=MAX_WINDOW_S).contains(&d.as_secs()))
                    .ok_or_else(|| {
                        format!(
                            "invalid threshold {text:?}: the window [{w}] must be whole seconds, \
                             1s to {MAX_WINDOW_S}s (e.g. p99[30s] < 200ms)"
                        )
                    })?;
                (n.trim(), Some(secs.as_secs() as usize))
            }
            None => (name, None),
        };
        let (name, selector) = match name.strip_suffix('}').and_then(|n| n.split_once('{')) {
            Some((n, sel)) => {
                let mut pairs = Vec::new();
                for part in sel.split(',') {
                    let (k, v) = part
                        .split_once('=')
                        .map(|(k, v)| (k.trim(), v.trim()))
                        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                        .ok_or_else(|| {
                            format!(
                                "invalid threshold {text:?}: a selector is {{tag=value,…}}, e.g. \
                                 p99{{step=login}} < 100ms"
                            )
                        })?;
                    pairs.push((k.to_owned(), v.to_owned()));
                }
                (n.trim(), pairs)
            }
            None => (name, Vec::new()),
        };
        let (service, base) = match name.strip_prefix("service-") {
            Some(b) => (true, b),
            None => (false, name),
        };
        let metric = match base {
            "error-rate" if !service => Metric::ErrorRate,
            "rps" if !service => Metric::Rps,
            "checks" if !service => Metric::Checks,
            "dropped-iterations" if !service => Metric::DroppedIterations,
            "mean" | "avg" => Metric::Mean { service },
            "max" => Metric::Max { service },
            p if p.starts_with('p') => {
                let p: f64 = p[1..]
                    .parse()
                    .map_err(|_| format!("invalid threshold {text:?}: unknown metric {name:?}"))?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!(
                        "invalid threshold {text:?}: a percentile is between p0 and p100"
                    ));
                }
                Metric::Percentile { p, service }
            }
            _ => {
                return Err(format!(
                    "invalid threshold {text:?}: unknown metric {name:?}; known: p50, p90, p95, \
                     p99, p99.9, mean, max (and service-…), error-rate, rps, \
                     checks, dropped-iterations"
                ));
            }
        };
        if window.is_some() && matches!(metric, Metric::Checks | Metric::DroppedIterations) {
            return Err(format!(
                "invalid threshold {text:?}: {base} has no per-second figures to take a window \
                 of; write it without [..]"
            ));
        }
        let limit = match metric {
            Metric::ErrorRate | Metric::Checks => {
                let v = value.strip_suffix('%').ok_or_else(|| {
                    format!("invalid threshold {text:?}: write {base} as a percentage, e.g. 1%")
                })?;
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("invalid threshold {text:?}: {value:?} is not a percentage"))?
                    / 100.0
            }
            Metric::Rps | Metric::DroppedIterations => value
                .parse::<f64>()
                .map_err(|_| format!("invalid threshold {text:?}: {value:?} is not a number"))?,
            _ => humantime::parse_duration(value)
                .map_err(|e| {
                    format!("invalid threshold {text:?}: {value:?} is not a duration ({e}); write e.g. 20ms")
                })?
                .as_secs_f64(),
        };
        Ok(Threshold {
            text: text.to_owned(),
            metric,
            op,
            limit,
            abort_on_fail: false,
            delay_abort_eval: Duration::ZERO,
            window,
            selector,
        })
    }
}

impl Threshold {
    /// Whether `value` (in the metric's unit) passes.
    pub fn passes(&self, value: f64) -> bool {
        match self.op {
            Op::Lt => value < self.limit,
            Op::Le => value <= self.limit,
            Op::Gt => value > self.limit,
            Op::Ge => value >= self.limit,
        }
    }

    /// Formats a value in the metric's unit.
    pub fn show(&self, value: f64) -> String {
        match self.metric {
            Metric::ErrorRate | Metric::Checks => format!("{:.3}%", value * 100.0),
            Metric::Rps => format!("{value:.1}/s"),
            Metric::DroppedIterations => format!("{value:.0}"),
            _ => fmt_duration(Duration::from_secs_f64(value.max(0.0))),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `1.23ms`, `850µs`, `2.1s`.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1e6 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let t: Threshold = "p99 < 20ms".parse().unwrap();
        assert_eq!(
            t.metric,
            Metric::Percentile {
                p: 99.0,
                service: false
            }
        );
        assert_eq!((t.op, t.limit), (Op::Lt, 0.020));
        assert!(t.passes(0.019) && !t.passes(0.020));
        let t: Threshold = "service-p99.9<=1s".parse().unwrap();
        assert_eq!(
            t.metric,
            Metric::Percentile {
                p: 99.9,
                service: true
            }
        );
        assert_eq!(t.op, Op::Le);
        let t: Threshold = "error-rate < 1%".parse().unwrap();
        assert_eq!((t.metric, t.limit), (Metric::ErrorRate, 0.01));
        let t: Threshold = "rps >= 1000".parse().unwrap();
        assert_eq!((t.metric, t.op, t.limit), (Metric::Rps, Op::Ge, 1000.0));
        assert!(t.passes(1000.0));
        assert_eq!(
            "max > 2s".parse::<Threshold>().unwrap().metric,
            Metric::Max { service: false }
        );
        let t: Threshold = "checks > 99.5%".parse().unwrap();
        assert_eq!((t.metric, t.op, t.limit), (Metric::Checks, Op::Gt, 0.995));
        assert_eq!(t.show(0.5), "50.000%");
        let t: Threshold = "dropped-iterations < 1".parse().unwrap();
        assert_eq!((t.metric, t.limit), (Metric::DroppedIterations, 1.0));
        assert!(t.passes(0.0) && !t.passes(1.0));
        assert_eq!(t.show(3.0), "3");
        let t: Threshold = "p99[30s] < 200ms".parse().unwrap();
        assert_eq!(
            (t.metric, t.window, t.limit),
            (
                Metric::Percentile {
                    p: 99.0,
                    service: false
                },
                Some(30),
                0.2
            )
        );
        let t: Threshold = "error-rate[1m] < 1%".parse().unwrap();
        assert_eq!((t.metric, t.window), (Metric::ErrorRate, Some(60)));
        assert_eq!("rps > 1".parse::<Threshold>().unwrap().window, None);
        let t: Threshold = "p99{step=login, kind = write}[30s] < 100ms"
            .parse()
            .unwrap();
        assert_eq!(t.window, Some(30));
        let want =
            [("step", "login"), ("kind", "write")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(t.selector, want);
        assert!("rps > 1".parse::<Threshold>().unwrap().selector.is_empty());
    }

    #[test]
    fn a_table_sets_abort_on_fail_and_its_delay() {
        #[derive(serde::Deserialize)]
        struct F {
            t: Vec<Threshold>,
        }
        let f: F = toml_from(
            r#"t = ["p99 < 1s", { threshold = "error-rate < 1%", abort-on-fail = true, delay-abort-eval = "10s" }]"#,
        )
        .unwrap();
        assert!(!f.t[0].abort_on_fail);
        assert_eq!(
            (f.t[1].metric, f.t[1].abort_on_fail),
            (Metric::ErrorRate, true)
        );
        assert_eq!(f.t[1].delay_abort_eval, Duration::from_secs(10));
        for bad in [
            r#"t = [{ threshold = "p99 < 1s", delay-abort-eval = "1s" }]"#,
            r#"t = [{ threshold = "p99 < 1s", abort-on-fail = true, delay-abort-eval = "soon" }]"#,
            r#"t = [{ threshold = "p99 < 1s", abort = true }]"#,
            r#"t = [{ threshold = "p99 < fast", abort-on-fail = true }]"#,
        ] {
            assert!(toml_from::<F>(bad).is_err(), "{bad}");
        }
    }

    fn toml_from<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
        jupiter_core::config::Config::builder()
            .toml("t.toml", text)
            .no_env()
            .build()
            .map_err(|e| e.to_string())?
            .get("")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "p99",
            "p99 < fast",
            "q99 < 1ms",
            "error-rate < 1",
            "rps > many",
            "p101 < 1s",
            "checks > 99",
            "service-checks > 1%",
            "dropped-iterations < none",
            "p99[0s] < 1s",
            "p99[1.5s] < 1s",
            "p99[2h] < 1s",
            "p99[soon] < 1s",
            "checks[10s] > 99%",
            "p99{step} < 1s",
            "p99{=x} < 1s",
            "p99{step=a,} < 1s",
            "dropped-iterations[10s] < 1",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
    }
}
