//! Measurement: HDR histograms per step, written without a global lock and collected once a
//! second into a time series and run totals.
//!
//! Each generator thread records into its own slot (a mutex only the collector ever contends
//! for, once a second). The collector swaps every slot's window for an empty one, merges the
//! windows into the second's figures and the totals, and keeps per second only summary figures,
//! so memory does not grow with the request count.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency a histogram holds (longer ones are recorded as this): one hour, in µs.
const MAX_US: u64 = 3_600_000_000;

/// Why a request failed. Errors are classified by kind, never by message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No connection could be made.
    Connect,
    /// No answer within the timeout.
    Timeout,
    /// An error status (HTTP 4xx/5xx, a gRPC error code, a Redis error reply).
    Status,
    /// The answer came but a check on it failed.
    Check,
    /// The connection broke mid-request or the answer was malformed.
    Protocol,
}

impl ErrorKind {
    /// All kinds, in report order.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Status,
        ErrorKind::Check,
        ErrorKind::Protocol,
    ];

    /// Report name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Status => "status",
            ErrorKind::Check => "check",
            ErrorKind::Protocol => "protocol",
        }
    }
}

fn histogram<T: hdrhistogram::Counter>() -> Histogram<T> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_US)
}

/// A window's two histograms in HdrHistogram's V2 + DEFLATE form, base64: what a report
/// carries so that reports merge exactly (`loadtest merge` adds histograms; it never averages
/// percentiles). Any HdrHistogram library reads them (`Histogram.decodeFromCompressedByteBuffer`
/// in Java, `hdrhistogram` in Go, Rust and Python).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Hdr {
    /// Latency, microseconds.
    pub latency: String,
    /// Service time, microseconds.
    pub service: String,
}

/// The longest histogram text a report may carry (ours are a few KiB at most): a bound on
/// what a report file makes `merge` allocate.
const MAX_HDR_TEXT: usize = 1 << 20;

fn encode(h: &Histogram<u64>) -> String {
    use base64::Engine as _;
    use hdrhistogram::serialization::Serializer as _;
    let mut bytes = Vec::new();
    // Writing into a Vec fails only for a histogram wider than usize, which ours are not; an
    // empty text then reads back as "not a histogram" rather than a wrong one.
    if hdrhistogram::serialization::V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .is_err()
    {
        bytes.clear();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads a histogram [`encode`] wrote. The header is checked before the counts are read, so a
/// report claiming other bounds (which would size the allocation) is refused, not allocated.
fn decode(text: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine as _;
    use std::io::Read as _;
    if text.len() > MAX_HDR_TEXT {
        return Err(format!(
            "a histogram of {} bytes (at most {MAX_HDR_TEXT})",
            text.len()
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("a histogram that is not base64: {e}"))?;
    // Outer cookie and length (8 bytes), then the zlib stream of the V2 form, whose 40-byte
    // header holds the significant digits (at 12), lowest (16) and highest (24) values.
    let mut header = [0u8; 40];
    let inflated = bytes
        .get(8..)
        .map(|z| flate2::read::ZlibDecoder::new(z).read_exact(&mut header));
    if !matches!(inflated, Some(Ok(()))) {
        return Err("a histogram that is not HdrHistogram V2 + DEFLATE".into());
    }
    let word = |at: usize, n: usize| {
        header[at..at + n]
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    };
    let (digits, lowest, highest) = (word(12, 4), word(16, 8), word(24, 8));
    if (digits, lowest, highest) != (3, 1, MAX_US) {
        return Err(format!(
            "a histogram with bounds {lowest}..{highest} at {digits} digits (loadtest writes \
             1..{MAX_US} at 3)"
        ));
    }
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("a histogram that does not decode: {e}"))
}

/// One step's figures over some time.
#[derive(Debug)]
pub struct StepWindow {
    /// Intended send time (open model) or send time (closed) to answer.
    pub latency: Histogram<u64>,
    /// Send time to answer.
    pub service: Histogram<u64>,
    /// Requests that failed, by kind.
    pub errors: [u64; 5],
}

impl StepWindow {
    /// An empty window.
    pub(crate) fn new() -> StepWindow {
        StepWindow {
            latency: histogram(),
            service: histogram(),
            errors: [0; 5],
        }
    }

    /// Requests (passed and failed).
    pub fn requests(&self) -> u64 {
        self.latency.len()
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.iter().sum()
    }

    fn reset(&mut self) {
        self.latency.reset();
        self.service.reset();
        self.errors = [0; 5];
    }

    /// Its histograms, for a report.
    pub fn hdr(&self) -> Hdr {
        Hdr {
            latency: encode(&self.latency),
            service: encode(&self.service),
        }
    }

    /// A window from a report's histograms and error counts.
    ///
    /// # Errors
    ///
    /// A histogram is not one [`StepWindow::hdr`] writes, or the failures outnumber the
    /// requests.
    pub fn from_report(hdr: &Hdr, errors: [u64; 5]) -> Result<StepWindow, String> {
        let w = StepWindow {
            latency: decode(&hdr.latency)?,
            service: decode(&hdr.service)?,
            errors,
        };
        let failed = errors.iter().try_fold(0u64, |a, &b| a.checked_add(b));
        if failed.is_none_or(|f| f > w.requests()) {
            return Err(format!("{errors:?} failures for {} requests", w.requests()));
        }
        Ok(w)
    }

    /// Adds `other` into this; `None` when an error count would overflow or the histograms'
    /// bounds differ (only reports read from files get there; histogram counts saturate).
    pub fn checked_merge(&mut self, other: &StepWindow) -> Option<()> {
        let mut errors = self.errors;
        for (a, b) in errors.iter_mut().zip(other.errors) {
            *a = a.checked_add(b)?;
        }
        self.latency.add(&other.latency).ok()?;
        self.service.add(&other.service).ok()?;
        self.errors = errors;
        Some(())
    }

    /// Takes `other` (added before) out of this.
    pub(crate) fn subtract(&mut self, other: &StepWindow) {
        // Exact: `other` is part of the sum. A histogram that was not (only from a file)
        // leaves the sum as it was.
        let _ = self.latency.subtract(&other.latency);
        let _ = self.service.subtract(&other.service);
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a = a.saturating_sub(b);
        }
    }

    /// Adds `other` into this.
    pub fn merge(&mut self, other: &StepWindow) {
        self.latency.add(&other.latency).expect("same bounds");
        self.service.add(&other.service).expect("same bounds");
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
    }
}

/// See [`Recorder::active`].
pub(crate) struct ActiveGuard<'a>(&'a AtomicU64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Slot {
    steps: Vec<StepWindow>,
}

/// Where workers record. Shared by reference; recording takes the calling thread's own slot.
#[derive(Debug)]
pub struct Recorder {
    slots: Vec<Mutex<Slot>>,
    /// Arrivals dropped because every worker was busy and the queue full, per scenario.
    pub dropped: Vec<AtomicU64>,
    /// Iterations that stopped at a step whose extraction failed, per scenario.
    pub cut_short: Vec<AtomicU64>,
    /// ramping-vus: iterations cut off after `graceful-ramp-down`, per scenario.
    pub interrupted: Vec<AtomicU64>,
    /// Open model: workers busy with an iteration now, per scenario.
    pub busy: Vec<AtomicU64>,
    /// Open model: the most workers busy at once so far, per scenario.
    pub peak_busy: Vec<AtomicU64>,
    /// Closed models: VUs inside an iteration now, per scenario.
    pub active: Vec<AtomicU64>,
}

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

impl Recorder {
    /// A recorder for `steps` steps (all scenarios), with a slot per expected thread.
    pub fn new(steps: usize, scenarios: usize, threads: usize) -> Recorder {
        let slots = (threads * 2).next_power_of_two().max(4);
        Recorder {
            slots: (0..slots)
                .map(|_| {
                    Mutex::new(Slot {
                        steps: (0..steps).map(|_| StepWindow::new()).collect(),
                    })
                })
                .collect(),
            dropped: (0..scenarios).map(|_| AtomicU64::new(0)).collect(),
            busy: (0..scenarios).map(|_| AtomicU64::new(0)).collect(),
            interrupted: (0..scenarios).map(|_| AtomicU64::new(0)).collect(),
            cut_short: (0..scenarios).map(|_| AtomicU64::new(0)).collect(),
            peak_busy: (0..scenarios).map(|_| AtomicU64::new(0)).collect(),
            active: (0..scenarios).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A worker of scenario `i` starts an iteration (open model).
    pub(crate) fn busy_start(&self, i: usize) {
        let now = self.busy[i].fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_busy[i].fetch_max(now, Ordering::Relaxed);
    }

    /// A worker of scenario `i` ends an iteration (open model).
    pub(crate) fn busy_end(&self, i: usize) {
        self.busy[i].fetch_sub(1, Ordering::Relaxed);
    }

    /// A VU of closed scenario `i` is inside an iteration until the guard drops (also when
    /// its task is cut off at the graceful stop).
    pub(crate) fn active(&self, i: usize) -> ActiveGuard<'_> {
        self.active[i].fetch_add(1, Ordering::Relaxed);
        ActiveGuard(&self.active[i])
    }

    /// Workers inside an iteration now, every scenario and model together.
    pub(crate) fn in_iterations(&self) -> u64 {
        self.busy
            .iter()
            .chain(&self.active)
            .map(|a| a.load(Ordering::Relaxed))
            .fold(0, u64::saturating_add)
    }

    /// Arrivals dropped so far, every scenario together.
    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .fold(0, u64::saturating_add)
    }

    /// Records one request of step `step`.
    pub fn record(
        &self,
        step: usize,
        latency: Duration,
        service: Duration,
        error: Option<ErrorKind>,
    ) {
        let i = MY_SLOT.with(|s| {
            let mut v = s.get();
            if v == usize::MAX {
                v = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
                s.set(v);
            }
            v
        }) & (self.slots.len() - 1);
        let mut slot = self.slots[i].lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut slot.steps[step];
        w.latency.saturating_record(micros(latency));
        w.service.saturating_record(micros(service));
        if let Some(e) = error {
            w.errors[e as usize] += 1;
        }
    }

    /// Moves everything recorded since the last call into `into` (one window per step),
    /// leaving the slots empty.
    pub fn drain(&self, into: &mut [StepWindow]) {
        for slot in &self.slots {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            for (acc, w) in into.iter_mut().zip(slot.steps.iter_mut()) {
                if w.requests() > 0 {
                    acc.merge(w);
                    w.reset();
                }
            }
        }
    }
}

/// Figures of one second (or the whole run).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Point {
    /// Seconds since the start, at the end of this interval.
    pub t: f64,
    /// Requests answered (or failed) in the interval.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// p90
    pub p90_ms: f64,
    /// p99
    pub p99_ms: f64,
    /// max
    pub max_ms: f64,
    /// Service-time p99, milliseconds.
    pub service_p99_ms: f64,
    /// Run series only: workers inside an iteration at the end of the interval (busy
    /// workers of open models, active VUs of closed ones), all scenarios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<u64>,
    /// Run series only: arrivals dropped in the interval (every worker busy), all scenarios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// Run series only: the generator's CPU over the interval, as a share of all its cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_share: Option<f64>,
    /// Run series only: the generator's resident memory at the end of the interval, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// The interval's histograms (in reports, for `loadtest merge`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdr: Option<Hdr>,
}

impl Point {
    /// The point for `w` over an interval ending at `t`.
    pub fn of(t: f64, w: &StepWindow) -> Point {
        let ms = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        Point {
            t,
            requests: w.requests(),
            errors: w.failed(),
            p50_ms: ms(&w.latency, 0.50),
            p90_ms: ms(&w.latency, 0.90),
            p99_ms: ms(&w.latency, 0.99),
            max_ms: w.latency.max() as f64 / 1000.0,
            service_p99_ms: ms(&w.service, 0.99),
            active: None,
            dropped: None,
            cpu_share: None,
            rss_bytes: None,
            hdr: None,
        }
    }
}

/// Collected figures: totals per step and per-second series (total and per step).
#[derive(Debug)]
pub struct Collected {
    /// Totals per step.
    pub totals: Vec<StepWindow>,
    /// Per second, all steps together.
    pub series: Vec<Point>,
    /// Per second, per step.
    pub step_series: Vec<Vec<Point>>,
    window: Vec<StepWindow>,
    all: StepWindow,
    /// Dropped arrivals and generator CPU seconds at the last annotated point.
    last_gauges: Option<(u64, f64, f64)>,
}

/// What the run series carries beside the requests, read at each point's end.
#[derive(Clone, Copy, Debug)]
pub struct Gauges {
    /// Workers inside an iteration.
    pub active: u64,
    /// Arrivals dropped since the start.
    pub dropped_total: u64,
    /// The generator's CPU seconds since it started.
    pub cpu_s: f64,
    /// Its cores.
    pub cores: usize,
    /// Its resident memory, bytes (0: unknown).
    pub rss_bytes: u64,
}

impl Collected {
    /// Empty figures for `steps` steps.
    pub fn new(steps: usize) -> Collected {
        Collected {
            totals: (0..steps).map(|_| StepWindow::new()).collect(),
            series: Vec::new(),
            step_series: (0..steps).map(|_| Vec::new()).collect(),
            window: (0..steps).map(|_| StepWindow::new()).collect(),
            all: StepWindow::new(),
            last_gauges: None,
        }
    }

    /// Sets the gauges of the run series' last point (taken at `g`), the drops and CPU as the
    /// change since the previous annotated point (or the start, at `cpu0` CPU seconds).
    pub fn annotate(&mut self, g: Gauges, cpu0: f64) {
        let Some(p) = self.series.last_mut() else {
            return;
        };
        let (dropped_before, cpu_before, t_before) = self.last_gauges.unwrap_or((0, cpu0, 0.0));
        if self.last_gauges.is_some() && p.t <= t_before {
            // The final collection found nothing new and was dropped: this point has its own.
            return;
        }
        let wall = (p.t - t_before).max(1e-3);
        p.active = Some(g.active);
        p.dropped = Some(g.dropped_total.saturating_sub(dropped_before));
        let share = (g.cpu_s - cpu_before).max(0.0) / (wall * g.cores.max(1) as f64);
        p.cpu_share = share.is_finite().then_some(share);
        p.rss_bytes = (g.rss_bytes > 0).then_some(g.rss_bytes);
        self.last_gauges = Some((g.dropped_total, g.cpu_s, p.t));
    }

    /// Drains the recorder into a new point at `t` seconds; returns the point.
    pub fn tick(&mut self, recorder: &Recorder, t: f64) -> Point {
        recorder.drain(&mut self.window);
        self.all.reset();
        for (i, w) in self.window.iter_mut().enumerate() {
            self.step_series[i].push(Point {
                hdr: Some(w.hdr()),
                ..Point::of(t, w)
            });
            self.totals[i].merge(w);
            self.all.merge(w);
            w.reset();
        }
        let p = Point {
            hdr: Some(self.all.hdr()),
            ..Point::of(t, &self.all)
        };
        self.series.push(p.clone());
        p
    }

    /// The last collection, when the run has ended at `t` seconds: drains whatever was
    /// recorded after the last tick. Its point is dropped again when it is empty and within
    /// 1 ms of the previous one (the run ended just after a tick).
    pub fn finish(&mut self, recorder: &Recorder, t: f64) {
        let previous = self.series.last().map(|p| p.t);
        let p = self.tick(recorder, t);
        if p.requests == 0 && previous.is_some_and(|prev| t <= prev + 0.001) {
            self.series.pop();
            for s in &mut self.step_series {
                s.pop();
            }
        }
    }
}

/// Percentiles of a histogram, milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Percentiles {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 95th.
    pub p95: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Of `h` (µs) in milliseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            min: h.min() as f64 / 1000.0,
            mean: h.mean() / 1000.0,
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_many_threads_and_drains_everything() {
        let r = std::sync::Arc::new(Recorder::new(2, 1, 2));
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        let e = (i % 10 == 0).then_some(ErrorKind::Timeout);
                        r.record(
                            t % 2,
                            Duration::from_micros(i + 1),
                            Duration::from_micros(1),
                            e,
                        );
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let mut c = Collected::new(2);
        let p = c.tick(&r, 1.0);
        assert_eq!((p.requests, p.errors), (4000, 400));
        assert_eq!(c.totals[0].requests(), 2000);
        assert_eq!(c.totals[1].errors[ErrorKind::Timeout as usize], 200);
        assert!((p.p50_ms - 0.5).abs() < 0.01, "{}", p.p50_ms);
        // Drained: the next second is empty, the totals stay.
        assert_eq!(c.tick(&r, 2.0).requests, 0);
        assert_eq!(c.totals[0].requests(), 2000);
        assert_eq!(c.series.len(), 2);
    }

    /// Regression: the end of a run collected again only when it came more than 1 ms after
    /// the last tick's rounded time, so a request finished just after a tick at 1.0004 s, in a
    /// run ending at 1.0007 s, was missing from every figure.
    #[test]
    fn finishing_just_after_a_tick_keeps_what_came_after_it() {
        let r = Recorder::new(1, 1, 1);
        let mut c = Collected::new(1);
        let one = Duration::from_millis(1);
        r.record(0, one, one, None);
        c.tick(&r, 1.0);
        r.record(0, one, one, None);
        c.finish(&r, 1.0007);
        assert_eq!(c.totals[0].requests(), 2);
        assert_eq!(c.series.iter().map(|p| p.requests).sum::<u64>(), 2);
        assert_eq!(c.series.len(), 2);
        // Nothing after the tick: no empty point beside it.
        c.finish(&r, 1.0009);
        assert_eq!(c.series.len(), 2);
        assert_eq!(c.step_series[0].len(), 2);
    }
}
