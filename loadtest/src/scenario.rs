//! The scenario file (TOML) and its validation into a [`Plan`].
//!
//! Every error names the file, line, column and key path: structural errors come from
//! jupiter-core's configuration reader (unknown keys, wrong types), cross-references (a step's
//! target, a template's feeder) are checked afterwards and located through
//! [`Config::locate`](jupiter_core::Config::locate). The format is documented, with a fully
//! commented example, in the crate's README.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jupiter_core::Config;
use jupiter_core::config::types::{ByteSize, duration};
use serde::Deserialize;

use crate::error::{Error, Problem};
use crate::template::{Feeder, Template, load_feeder};
use crate::threshold::Threshold;

/// Most workers (VUs, or iterations in flight for the open model) of one scenario: each is a
/// task with its own connection state; beyond this a file is more likely a typo than a plan.
pub const MAX_VUS: usize = 100_000;
/// Highest arrival rate, per second, of one scenario.
pub const MAX_RATE: f64 = 10_000_000.0;
/// Longest planned run (iterations at a rate).
pub const MAX_RUN: Duration = Duration::from_secs(366 * 86_400);

/// How long a worker ramped down may finish its iteration, unless `graceful-ramp-down` says.
pub const DEFAULT_RAMP_DOWN: Duration = Duration::from_secs(30);

/// How long the iteration executors may run unless `max-duration` says (k6's default too).
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(600);
/// Largest generated objstore value (`value-size`), as objstore's own default limit.
pub const MAX_VALUE_SIZE: u64 = 64 << 20;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScenarioFile {
    /// Run-wide settings.
    #[serde(default)]
    pub run: RunSection,
    /// Reports.
    #[serde(default)]
    pub output: OutputSection,
    /// Systems under test, by name.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSpec>,
    /// CSV data feeders, by name.
    #[serde(default)]
    pub feeders: BTreeMap<String, FeederSpec>,
    /// Scenarios, run side by side.
    #[serde(default)]
    pub scenarios: Vec<ScenarioSpec>,
    /// Thresholds over every request of the run.
    #[serde(default)]
    pub thresholds: Vec<Threshold>,
    /// Run over workers found in a registry (`loadtest worker`).
    #[serde(default)]
    pub distributed: Option<DistributedSection>,
}

/// `[distributed]`: `loadtest run` splits the run over this many workers, as `--workers`,
/// `--registry`, `--pool` and `--wait` would (which override it).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DistributedSection {
    /// How many workers.
    pub workers: usize,
    /// Where they registered: `etcd://HOST:PORT[,HOST:PORT…]`.
    pub registry: String,
    /// Their pool. Default is `default`.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// How long to wait for them to be registered. Default is 30 s.
    #[serde(default = "default_wait", with = "duration")]
    pub wait: Duration,
}

fn default_pool() -> String {
    "default".into()
}

fn default_wait() -> Duration {
    Duration::from_secs(30)
}

/// `[run]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RunSection {
    /// The run's name in reports.
    pub name: String,
    /// Tag every request as shadow traffic (`x-jupiter-shadow: 1` and W3C baggage).
    pub shadow: bool,
    /// A test-run id carried with the shadow tag. Without one, the run makes one
    /// (`lt-` and 12 hex digits); segments of one run should be given the same.
    pub run_id: Option<String>,
    /// Generator threads (0: one per core).
    pub threads: usize,
    /// Deadline of one request.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How long in-flight requests may finish after a scenario's end (or Ctrl-C).
    #[serde(with = "duration")]
    pub graceful_stop: Duration,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            name: "loadtest".into(),
            shadow: true,
            run_id: None,
            threads: 0,
            timeout: Duration::from_secs(10),
            graceful_stop: Duration::from_secs(5),
        }
    }
}

/// `[output]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct OutputSection {
    /// JSON report path (relative to the working directory).
    pub json: Option<PathBuf>,
    /// HTML report path.
    pub html: Option<PathBuf>,
    /// Serve Prometheus metrics at this address while running (loopback advised).
    pub prometheus: Option<String>,
}

/// What a target is.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// An HTTP server.
    Http,
    /// An objstore server (gRPC).
    Objstore,
    /// A Redis server.
    Redis,
    /// Any gRPC server: unary methods from `.proto` files or its reflection service.
    Grpc,
    /// A WebSocket server.
    Websocket,
}

/// `[targets.NAME]`. Its `Debug` shows neither the token nor a password in the URL.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetSpec {
    /// `http`, `objstore` or `redis`.
    pub kind: TargetKind,
    /// `http://host:port` (http), `host:port` (objstore), `redis://…` (redis).
    pub url: Option<String>,
    /// objstore only: start an objstore in this process (no server needed).
    #[serde(default)]
    pub embedded: bool,
    /// http only: speak HTTP/2 (prior knowledge) instead of HTTP/1.1.
    #[serde(default)]
    pub http2: bool,
    /// Most connections (HTTP/1.1: one request each at a time; HTTP/2 and Redis: multiplexed).
    pub connections: Option<usize>,
    /// A live target must acknowledge shadow traffic before the run starts; set `false` for a
    /// target that holds no live data (a staging copy) to skip that probe.
    #[serde(default = "yes")]
    pub live: bool,
    /// HTTP: a cookie jar per iteration (what a response sets, the later steps of the same
    /// iteration send back to this target); `false` turns it off for this target.
    #[serde(default = "yes")]
    pub cookies: bool,
    /// http only: the path the shadow probe requests.
    #[serde(default = "root")]
    pub probe: String,
    /// redis only: where shadow keys go (key prefix). Without it a live Redis target refuses
    /// shadow writes, and the probe fails.
    pub shadow_prefix: Option<String>,
    /// redis only, for objstore's RESP port: every connection is named this (`CLIENT
    /// SETNAME`), which objstore takes as the shadow rule when it ends in its shadow suffix
    /// (`:shadow` by default): the server keeps the keys in its shadow namespace, and loadtest
    /// leaves them as written. The probe checks that the server is objstore. Not with
    /// `shadow-prefix`.
    pub shadow_name: Option<String>,
    /// objstore only: bearer token.
    pub token: Option<String>,
    /// http only, `https://` URLs (websocket: `wss://`): how the server's certificate is
    /// checked.
    #[serde(default)]
    pub tls: TlsSpec,
    /// grpc only: the `.proto` files that declare the services the steps call (relative to
    /// the scenario file's folder), compiled when the scenario loads.
    #[serde(default)]
    pub protos: Vec<PathBuf>,
    /// grpc only: folders their imports are found in, besides each file's own folder.
    #[serde(default)]
    pub proto_paths: Vec<PathBuf>,
    /// grpc only: take the descriptors from the server's reflection service (v1) when the run
    /// connects, instead of `.proto` files.
    #[serde(default)]
    pub reflection: bool,
}

/// `tls = { ca-file = "staging-ca.pem" }` or `tls = { insecure = true }` on an `https://`
/// target. Without it the certificate is checked against the public web roots.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsSpec {
    /// PEM file of the CA certificates to trust instead of the public roots (relative paths
    /// from the scenario file's folder).
    pub ca_file: Option<PathBuf>,
    /// Take any certificate (a staging server's self-signed one). Encrypted, not
    /// authenticated.
    #[serde(default)]
    pub insecure: bool,
}

impl fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetSpec")
            .field("kind", &self.kind)
            .field("url", &self.url.as_deref().map(redact_userinfo))
            .field("embedded", &self.embedded)
            .field("http2", &self.http2)
            .field("connections", &self.connections)
            .field("live", &self.live)
            .field("cookies", &self.cookies)
            .field("probe", &self.probe)
            .field("shadow_prefix", &self.shadow_prefix)
            .field("shadow_name", &self.shadow_name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("protos", &self.protos)
            .field("proto_paths", &self.proto_paths)
            .field("reflection", &self.reflection)
            .finish()
    }
}

/// `url` with its password (or a bare user, which may be a token) redacted, for `Debug`.
fn redact_userinfo(url: &str) -> String {
    jupiter_core::config::redact_url(url).unwrap_or_else(|| url.to_owned())
}

fn yes() -> bool {
    true
}

fn root() -> String {
    "/".into()
}

/// `[feeders.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FeederSpec {
    /// CSV file with a header row (relative to the scenario file).
    pub csv: PathBuf,
    /// `sequential` (row = iteration number modulo rows) or `random`.
    #[serde(default)]
    pub order: FeederOrder,
}

/// Row order of a feeder.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FeederOrder {
    /// In order, wrapping.
    #[default]
    Sequential,
    /// At random.
    Random,
}

/// The executor names.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorKind {
    /// Open model: a fixed arrival rate.
    ConstantArrivalRate,
    /// Open model: arrival rate moving linearly through stages.
    RampingArrivalRate,
    /// Closed model: a fixed number of workers, each looping.
    ConstantVus,
    /// Closed model: workers added and removed through stages.
    RampingVus,
    /// Closed model: `vus` workers share `iterations` between them (a fast worker runs more),
    /// within `max-duration`.
    SharedIterations,
    /// Closed model: each of `vus` workers runs exactly `iterations`, within `max-duration`.
    PerVuIterations,
}

impl ExecutorKind {
    /// The name as written in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::ConstantArrivalRate => "constant-arrival-rate",
            ExecutorKind::RampingArrivalRate => "ramping-arrival-rate",
            ExecutorKind::ConstantVus => "constant-vus",
            ExecutorKind::RampingVus => "ramping-vus",
            ExecutorKind::SharedIterations => "shared-iterations",
            ExecutorKind::PerVuIterations => "per-vu-iterations",
        }
    }
}

/// `{ duration = "30s", target = 100 }`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// How long the stage takes.
    #[serde(with = "duration")]
    pub duration: Duration,
    /// Rate (arrival-rate executors) or workers (VU executors) at the stage's end.
    pub target: f64,
}

/// How an iteration uses the steps.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    /// Each iteration runs one step, chosen by weight.
    #[default]
    Pick,
    /// Each iteration runs every step in order (a user journey).
    Sequence,
}

/// `[[scenarios]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScenarioSpec {
    /// Name in reports.
    pub name: String,
    /// The workload model.
    pub executor: ExecutorKind,
    /// constant-arrival-rate: iterations per second.
    pub rate: Option<f64>,
    /// ramping-arrival-rate: rate at the start.
    pub start_rate: Option<f64>,
    /// constant-vus: workers.
    pub vus: Option<usize>,
    /// ramping-vus: workers at the start.
    pub start_vus: Option<usize>,
    /// Ramping executors: the stages.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// How long (constant executors).
    #[serde(default, with = "duration::option")]
    pub duration: Option<Duration>,
    /// Or how many iterations (constant executors; all workers together in
    /// shared-iterations, each worker in per-vu-iterations).
    pub iterations: Option<u64>,
    /// ramping-vus: how long a worker the stages no longer want may finish its iteration
    /// (default 30s); an iteration still running then is interrupted and counted.
    #[serde(default, with = "duration::option")]
    pub graceful_ramp_down: Option<Duration>,
    /// The iteration executors: the longest they run (default 10 minutes).
    #[serde(default, with = "duration::option")]
    pub max_duration: Option<Duration>,
    /// Start this long after the run starts (scenarios run side by side, each from its own
    /// start time: a warm-up, then the load).
    #[serde(default, with = "duration::option")]
    pub start_time: Option<Duration>,
    /// Open model: most iterations in flight (workers); beyond it arrivals wait, and their
    /// wait counts in their latency.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Pause after each step: `"100ms"`, or a uniform range `"50ms..150ms"`.
    pub think_time: Option<String>,
    /// `pick` (default) or `sequence`.
    #[serde(default)]
    pub flow: Flow,
    /// Thresholds over this scenario's requests.
    #[serde(default)]
    pub thresholds: Vec<Threshold>,
    /// Tags every step of the scenario carries (a step's own tags win).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The requests.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
}

fn default_in_flight() -> usize {
    1000
}

/// `[[scenarios.steps]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StepSpec {
    /// Name in reports.
    pub name: String,
    /// Target name (may be left out when there is one target).
    pub target: Option<String>,
    /// Relative weight in `pick` flow.
    #[serde(default = "one")]
    pub weight: u32,
    /// An HTTP request.
    pub http: Option<HttpSpec>,
    /// An objstore call.
    pub objstore: Option<ObjstoreSpec>,
    /// A Redis command: `["SET", "k:{{seq}}", "v"]`.
    pub redis: Option<Vec<String>>,
    /// A unary gRPC call.
    pub grpc: Option<GrpcSpec>,
    /// A WebSocket session.
    pub websocket: Option<WebsocketSpec>,
    /// Checks on the response.
    #[serde(default)]
    pub checks: ChecksSpec,
    /// Thresholds over this step's requests.
    #[serde(default)]
    pub thresholds: Vec<Threshold>,
    /// Tags (`{ kind = "write" }`): in the JSON report, the Prometheus labels and threshold
    /// selectors (`p99{kind=write} < 50ms`), beside the scenario's tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// HTTP and Redis steps: values taken from the response (a Redis reply: its text, an
    /// aggregate as JSON) into `{{var.NAME}}` for the later steps of the same iteration
    /// (`sequence` flow): `{ token = { json = "$.token" } }`, `{ id = { regex = "id=(\\d+)" } }`,
    /// `{ session = { header = "x-session" } }` (HTTP only).
    #[serde(default)]
    pub extract: BTreeMap<String, ExtractSpec>,
}

/// How one value is taken from a response: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractSpec {
    /// A path into a JSON body: `$.data.items[0].id` (or `data.items.0.id`).
    pub json: Option<String>,
    /// A regular expression over the body: its first group (or the whole match).
    pub regex: Option<String>,
    /// A response header's value.
    pub header: Option<String>,
}

/// A compiled extraction.
#[derive(Debug)]
pub struct Extract {
    /// The variable it sets.
    pub var: Arc<str>,
    /// How.
    pub how: ExtractHow,
}

/// Where an extraction looks.
#[derive(Debug)]
pub enum ExtractHow {
    /// A JSON path: object keys and array indexes.
    Json(Vec<JsonStep>),
    /// The first group of a regex over the body (or its whole match).
    Regex(regex::bytes::Regex),
    /// A header (lowercase name).
    Header(String),
}

/// One step of a JSON path.
#[derive(Debug, PartialEq)]
pub enum JsonStep {
    /// An object's key.
    Key(String),
    /// An array's index.
    Index(usize),
}

/// `$.data.items[0].id` or `data.items.0.id` → keys and indexes.
fn json_path(p: &str) -> Result<Vec<JsonStep>, String> {
    let rest = p.strip_prefix('$').unwrap_or(p);
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    let mut out = Vec::new();
    for part in rest.split('.').filter(|s| !s.is_empty()) {
        let (name, mut idx) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(match name.parse::<usize>() {
                Ok(i) if idx.is_empty() => JsonStep::Index(i),
                _ => JsonStep::Key(name.to_owned()),
            });
        }
        while let Some(r) = idx.strip_prefix('[') {
            let (n, after) = r
                .split_once(']')
                .ok_or_else(|| format!("{p:?}: an unclosed ["))?;
            let i = n
                .parse::<usize>()
                .map_err(|_| format!("{p:?}: [{n}] is not an array index"))?;
            out.push(JsonStep::Index(i));
            idx = after;
        }
        if !idx.is_empty() {
            return Err(format!("{p:?}: unexpected {idx:?}"));
        }
    }
    if out.is_empty() {
        return Err(format!("{p:?}: an empty path; write e.g. $.data.token"));
    }
    Ok(out)
}

/// Takes the value `how` names from a response; `None` when it is not there.
pub(crate) fn extract<'a, I>(
    how: &ExtractHow,
    headers: impl Fn() -> I,
    body: &[u8],
) -> Option<Vec<u8>>
where
    I: Iterator<Item = (&'a str, &'a [u8])>,
{
    match how {
        ExtractHow::Header(name) => headers()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_vec()),
        ExtractHow::Regex(re) => {
            let c = re.captures(body)?;
            c.get(1).or_else(|| c.get(0)).map(|m| m.as_bytes().to_vec())
        }
        ExtractHow::Json(path) => {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            let mut at = &v;
            for step in path {
                at = match step {
                    JsonStep::Key(k) => at.get(k.as_str())?,
                    JsonStep::Index(i) => at.get(*i)?,
                };
            }
            Some(match at {
                serde_json::Value::String(s) => s.clone().into_bytes(),
                serde_json::Value::Null => return None,
                other => other.to_string().into_bytes(),
            })
        }
    }
}

fn one() -> u32 {
    1
}

/// `http = { … }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpSpec {
    /// Method.
    #[serde(default = "get")]
    pub method: String,
    /// Path and query (templated).
    pub path: String,
    /// Extra headers (values templated).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body (templated).
    pub body: Option<String>,
}

fn get() -> String {
    "GET".into()
}

/// `grpc = { method = "pkg.Service/Method", body = '{"id": "{{seq}}"}' }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GrpcSpec {
    /// `package.Service/Method`.
    pub method: String,
    /// The request message as JSON (the proto3 JSON mapping), templated. Default `{}`.
    #[serde(default = "empty_json")]
    pub body: String,
    /// Request metadata (values templated).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

fn empty_json() -> String {
    "{}".into()
}

/// `websocket = { path = "/chat", send = ["hi {{vu}}"], receive = 1 }`: connect, send each
/// message, wait for `receive` messages, close.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebsocketSpec {
    /// Path and query of the handshake (templated).
    #[serde(default = "root")]
    pub path: String,
    /// Text messages to send, in order (templated).
    #[serde(default)]
    pub send: Vec<String>,
    /// Messages to wait for after sending (default: as many as were sent).
    pub receive: Option<u32>,
}

/// objstore operations.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ObjstoreOp {
    /// Put
    Put,
    /// Get
    Get,
    /// Head
    Head,
    /// Delete
    Delete,
}

/// `objstore = { … }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ObjstoreSpec {
    /// The call.
    pub op: ObjstoreOp,
    /// Key (templated).
    pub key: String,
    /// put: value (templated) …
    pub value: Option<String>,
    /// … or random bytes of this size.
    pub value_size: Option<ByteSize>,
}

/// `checks = { … }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ChecksSpec {
    /// Accepted statuses (HTTP status codes, gRPC code numbers). Without it, HTTP 2xx/3xx and
    /// gRPC OK (and NOT_FOUND for get/head/delete) pass.
    pub status: Option<Vec<u16>>,
    /// The body must contain this text (a gRPC reply: its JSON; WebSocket: what it received).
    pub body_contains: Option<String>,
    /// Fields of a JSON body (a gRPC reply as JSON, WebSocket messages) that must have these
    /// values: `{ "$.status" = "SERVING" }` (strings as they are, other values as JSON text).
    #[serde(default)]
    pub json: BTreeMap<String, String>,
    /// Response headers that must have these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Overrides from the command line, applied before validation (`loadtest run`'s options).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// Arrival rate (per second) of constant-arrival-rate scenarios.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Duration of constant executors, e.g. 30s or 2m.
    #[arg(long, value_parser = parse_cli_duration)]
    pub duration: Option<Duration>,
    /// Workers of constant-vus scenarios.
    #[arg(long)]
    pub vus: Option<usize>,
    /// Iterations of constant executors (instead of a duration).
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Point a target elsewhere: NAME=URL (repeatable).
    #[arg(long = "target", value_name = "NAME=URL", value_parser = parse_cli_target)]
    pub targets: Vec<(String, String)>,
    /// Run only this scenario (repeatable).
    #[arg(long = "scenario", value_name = "NAME")]
    pub only: Vec<String>,
    /// Run the K-th of N interleaved slices of every executor's schedule (arrivals, workers
    /// and iterations), e.g. 2/5 on the second of five generators.
    #[arg(long, value_name = "K/N")]
    pub segment: Option<crate::segment::Segment>,
}

fn parse_cli_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write e.g. 30s or 2m"))
}

fn parse_cli_target(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .ok_or_else(|| "write NAME=URL".to_owned())
}

/// The workload model, validated.
#[derive(Clone, Debug)]
pub enum Executor {
    /// Open model with a rate curve.
    Arrival {
        /// Rate at the start.
        start: f64,
        /// Stages (one flat stage for the constant executor).
        stages: Vec<Stage>,
        /// Stop after this many iterations.
        iterations: Option<u64>,
        /// Workers.
        max_in_flight: usize,
    },
    /// Closed model.
    Vus {
        /// Workers at the start.
        start: usize,
        /// Stages (one flat stage for the constant executor).
        stages: Vec<Stage>,
        /// Stop after this many iterations (all workers together).
        iterations: Option<u64>,
        /// Each worker stops after this many iterations of its own.
        per_vu: Option<u64>,
        /// ramping-vus: how long a worker the stages no longer want may finish its iteration
        /// before it is interrupted (counted).
        ramp_down: Option<Duration>,
    },
}

impl Executor {
    /// Planned length of the run (before the graceful stop).
    pub fn duration(&self) -> Duration {
        match self {
            Executor::Arrival { stages, .. } | Executor::Vus { stages, .. } => {
                stages.iter().map(|s| s.duration).sum()
            }
        }
    }

    /// Whether latency is measured from the intended send time.
    pub fn is_open(&self) -> bool {
        matches!(self, Executor::Arrival { .. })
    }
}

/// A validated step.
#[derive(Debug)]
pub struct Step {
    /// Name.
    pub name: String,
    /// Index into [`Plan::targets`].
    pub target: usize,
    /// Weight in `pick` flow.
    pub weight: u32,
    /// What to send.
    pub action: Action,
    /// Checks.
    pub checks: Checks,
    /// Step thresholds.
    pub thresholds: Vec<Threshold>,
    /// Its tags: `scenario` and `step` (the names), the scenario's tags, then its own.
    pub tags: BTreeMap<String, String>,
    /// Values taken from its response for later steps.
    pub extract: Vec<Extract>,
    /// Response headers to keep: those checked and those extracted.
    pub keep_headers: Vec<(String, String)>,
    /// An HTTP step, in a sequence flow, of a target with cookies on: sends the iteration's
    /// cookies, keeps what `set-cookie` says.
    pub cookies: bool,
}

impl Step {
    /// Whether the response body is needed (checked or extracted from).
    pub fn needs_body(&self) -> bool {
        self.checks.needs_body()
            || self
                .extract
                .iter()
                .any(|e| !matches!(e.how, ExtractHow::Header(_)))
    }

    /// The templates it renders.
    pub fn templates(&self) -> Vec<&Template> {
        match &self.action {
            Action::Http(HttpRequest {
                path,
                headers,
                body,
                ..
            }) => std::iter::once(path)
                .chain(headers.iter().map(|(_, t)| t))
                .chain(body)
                .collect(),
            Action::Objstore { key, value, .. } => std::iter::once(key).chain(value).collect(),
            Action::Redis { words } => words.iter().collect(),
            Action::Grpc(g) => std::iter::once(&g.body)
                .chain(g.metadata.iter().map(|(_, t)| t))
                .collect(),
            Action::Websocket { path, send, .. } => std::iter::once(path).chain(send).collect(),
        }
    }
}

/// A step's request, compiled.
#[derive(Debug)]
pub enum Action {
    /// HTTP.
    Http(HttpRequest),
    /// objstore.
    Objstore {
        /// Call.
        op: ObjstoreOp,
        /// Key.
        key: Template,
        /// Value template, or a random value of a size (made once, shared).
        value: Option<Template>,
        /// Random value.
        random: Option<bytes::Bytes>,
    },
    /// Redis.
    Redis {
        /// Command words.
        words: Vec<Template>,
    },
    /// A unary gRPC call.
    Grpc(GrpcCall),
    /// A WebSocket session.
    Websocket {
        /// Path and query of the handshake.
        path: Template,
        /// Messages to send.
        send: Vec<Template>,
        /// Messages to wait for.
        receive: u32,
    },
}

/// A gRPC step's call, compiled.
#[derive(Debug)]
pub struct GrpcCall {
    /// `package.Service/Method`.
    pub method: String,
    /// `/package.Service/Method`.
    pub path: http::uri::PathAndQuery,
    /// The request as JSON.
    pub body: Template,
    /// Request metadata.
    pub metadata: Vec<(tonic::metadata::AsciiMetadataKey, Template)>,
    /// The method's messages, set when the run connects the target.
    pub resolved: std::sync::OnceLock<GrpcResolved>,
}

/// A gRPC method's messages, and the encoded body when it has no template.
#[derive(Debug)]
pub struct GrpcResolved {
    /// Request message.
    pub input: prost_reflect::MessageDescriptor,
    /// Reply message.
    pub output: prost_reflect::MessageDescriptor,
    /// The body, encoded once.
    pub body: Option<bytes::Bytes>,
}

/// An HTTP step's request, compiled.
#[derive(Debug)]
pub struct HttpRequest {
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub path: Template,
    /// Headers (name, value).
    pub headers: Vec<(http::HeaderName, Template)>,
    /// Body.
    pub body: Option<Template>,
}

/// Checks, compiled.
#[derive(Debug, Default)]
pub struct Checks {
    /// Accepted statuses.
    pub status: Option<Vec<u16>>,
    /// Body must contain.
    pub body_contains: Option<Vec<u8>>,
    /// JSON paths and the values they must have.
    pub json: Vec<(ExtractHow, Vec<u8>)>,
    /// Header name (lowercase) and value.
    pub headers: Vec<(String, String)>,
}

impl Checks {
    /// Whether the response body is needed.
    pub fn needs_body(&self) -> bool {
        self.body_contains.is_some() || !self.json.is_empty()
    }
}

/// A validated scenario.
#[derive(Debug)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// Workload.
    pub executor: Executor,
    /// Think time range.
    pub think: Option<(Duration, Duration)>,
    /// Flow.
    pub flow: Flow,
    /// Steps.
    pub steps: Vec<Step>,
    /// Scenario thresholds.
    pub thresholds: Vec<Threshold>,
    /// Offset of its start from the run's.
    pub start_time: Duration,
}

/// A validated target.
#[derive(Clone, Debug)]
pub struct Target {
    /// Name.
    pub name: String,
    /// Spec.
    pub spec: TargetSpec,
    /// A gRPC target's descriptors, compiled from its `.proto` files (`None` with
    /// `reflection = true`: asked from the server when the run connects).
    pub descriptors: Option<prost_reflect::DescriptorPool>,
}

/// Everything a run needs, validated.
#[derive(Debug)]
pub struct Plan {
    /// The scenario file.
    pub file: PathBuf,
    /// `[run]`
    pub run: RunSection,
    /// `[output]`
    pub output: OutputSection,
    /// Targets.
    pub targets: Vec<Target>,
    /// Feeders.
    pub feeders: Vec<Arc<Feeder>>,
    /// Scenarios.
    pub scenarios: Vec<Scenario>,
    /// Run-wide thresholds.
    pub thresholds: Vec<Threshold>,
    /// This generator's share of the run ([`Segment::WHOLE`](crate::segment::Segment::WHOLE)
    /// unless `--segment`).
    pub segment: crate::segment::Segment,
    /// `[distributed]`, checked (its registry URL parsed).
    pub distributed: Option<DistributedSection>,
}

impl Plan {
    /// Reads, validates and compiles a scenario file.
    ///
    /// # Errors
    ///
    /// Names the file, line, column and key path of the first problem.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Plan, Error> {
        if !path.exists() {
            return Err(Error::scenario(
                path,
                None,
                String::new(),
                Problem::new("no such scenario file"),
            ));
        }
        Plan::from_builder(Config::builder().file(path), path, overrides)
    }

    /// A scenario from its text, as if read from `path` (relative paths in it are read from
    /// `path`'s folder, errors name `path`): a distributed run's workers get the text from the
    /// coordinator.
    ///
    /// # Errors
    ///
    /// As [`load`](Plan::load).
    pub fn load_text(text: &str, path: &Path, overrides: &Overrides) -> Result<Plan, Error> {
        let builder = Config::builder().toml(path.display().to_string(), text);
        Plan::from_builder(builder, path, overrides)
    }

    /// The plan of the one document in `builder`, as the file `path`.
    fn from_builder(
        builder: jupiter_core::config::ConfigBuilder,
        path: &Path,
        overrides: &Overrides,
    ) -> Result<Plan, Error> {
        let config = builder
            .no_env()
            .build()
            .map_err(|e| Error::from_config(path, e))?;
        let file: ScenarioFile = config.get("").map_err(|e| Error::from_config(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Plan::build(file, &config, path, base, overrides)
    }

    fn build(
        mut file: ScenarioFile,
        config: &Config,
        path: &Path,
        base: &Path,
        o: &Overrides,
    ) -> Result<Plan, Error> {
        let at_problem = |key: &str, p: Problem| {
            Error::scenario(path, config.locate(key).as_ref(), shown_key(key), p)
        };
        let at = |key: &str, msg: String| at_problem(key, msg.into());
        // Command-line overrides.
        for (name, url) in &o.targets {
            let t = file.targets.get_mut(name).ok_or_else(|| Error::Override {
                option: format!("--target {name}={url}"),
                message: format!("the scenario has no target {name:?}"),
            })?;
            t.url = Some(url.clone());
            t.embedded = false;
        }
        if !o.only.is_empty() {
            for name in &o.only {
                if !file.scenarios.iter().any(|s| &s.name == name) {
                    return Err(Error::Override {
                        option: format!("--scenario {name}"),
                        message: format!("no such scenario in {}", path.display()),
                    });
                }
            }
            file.scenarios.retain(|s| o.only.contains(&s.name));
        }
        for s in &mut file.scenarios {
            let constant = matches!(
                s.executor,
                ExecutorKind::ConstantArrivalRate | ExecutorKind::ConstantVus
            );
            if s.executor == ExecutorKind::ConstantArrivalRate && o.rate.is_some() {
                s.rate = o.rate;
            }
            if s.executor == ExecutorKind::ConstantVus && o.vus.is_some() {
                s.vus = o.vus;
            }
            if constant && o.duration.is_some() {
                s.duration = o.duration;
                s.iterations = None;
            }
            if constant && o.iterations.is_some() {
                s.iterations = o.iterations;
                s.duration = None;
            }
        }
        if file.scenarios.is_empty() {
            return Err(Error::scenario(
                path,
                None,
                "scenarios".into(),
                Problem::new("at least one [[scenarios]] is needed"),
            ));
        }
        if file.run.timeout.is_zero() {
            return Err(at("run.timeout", "must be more than 0".into()));
        }
        let run_id = file
            .run
            .run_id
            .get_or_insert_with(|| format!("lt-{:012x}", fastrand::u64(..) >> 16))
            .clone();
        if run_id.len() > jupiter_core::shadow::MAX_RUN_ID {
            return Err(at(
                "run.run-id",
                format!("at most {} characters", jupiter_core::shadow::MAX_RUN_ID),
            ));
        }
        // Feeders.
        let mut feeders = Vec::new();
        for (name, f) in &file.feeders {
            let p = base.join(&f.csv);
            let feeder = load_feeder(name, &p, f.order == FeederOrder::Random)
                .map_err(|p| at_problem(&format!("feeders.{name}.csv"), p))?;
            feeders.push(Arc::new(feeder));
        }
        // Targets.
        let mut targets = Vec::new();
        for (name, t) in &file.targets {
            let key = format!("targets.{name}");
            match t.kind {
                TargetKind::Objstore if t.embedded => {
                    if t.url.is_some() {
                        return Err(at(&key, "either url or embedded = true, not both".into()));
                    }
                }
                _ if t.embedded => {
                    return Err(at(
                        &format!("{key}.embedded"),
                        "only an objstore target can be embedded".into(),
                    ));
                }
                kind => {
                    let Some(url) = &t.url else {
                        return Err(at(&key, "url is required".into()));
                    };
                    let ok = match kind {
                        TargetKind::Http => {
                            url.starts_with("http://") || url.starts_with("https://")
                        }
                        TargetKind::Redis => {
                            url.starts_with("redis://") || url.starts_with("rediss://")
                        }
                        TargetKind::Objstore => !url.is_empty(),
                        TargetKind::Grpc => {
                            url.starts_with("http://") || url.starts_with("https://")
                        }
                        TargetKind::Websocket => {
                            url.starts_with("ws://") || url.starts_with("wss://")
                        }
                    };
                    if !ok {
                        return Err(at(
                            &format!("{key}.url"),
                            format!(
                                "{url:?} is not a {kind:?} address (http(s)://host:port, redis://host:port, host:port, grpc: http://host:port, ws(s)://host:port)"
                            ),
                        ));
                    }
                    if kind == TargetKind::Http {
                        crate::http1::Endpoint::parse(url)
                            .map_err(|e| at(&format!("{key}.url"), e))?;
                    }
                    if kind == TargetKind::Websocket {
                        let http = url.replacen("ws", "http", 1);
                        crate::http1::Endpoint::parse(&http)
                            .map_err(|e| at(&format!("{key}.url"), e))?;
                    }
                }
            }
            if let Some(name) = &t.shadow_name {
                let field = format!("{key}.shadow-name");
                if t.kind != TargetKind::Redis {
                    return Err(at(
                        &field,
                        "only a redis target names its connections".into(),
                    ));
                }
                if t.shadow_prefix.is_some() {
                    return Err(at(
                        &field,
                        "either shadow-name (the server keeps shadow keys apart) or shadow-prefix (loadtest does), not both".into(),
                    ));
                }
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(at(
                        &field,
                        "a client name is printable ASCII without spaces".into(),
                    ));
                }
            }
            if t.connections == Some(0) {
                return Err(at(
                    &format!("{key}.connections"),
                    "must be at least 1".into(),
                ));
            }
            let mut spec = t.clone();
            let https = (matches!(t.kind, TargetKind::Http | TargetKind::Grpc)
                && t.url.as_deref().is_some_and(|u| u.starts_with("https://")))
                || (t.kind == TargetKind::Websocket
                    && t.url.as_deref().is_some_and(|u| u.starts_with("wss://")));
            let tls_set = t.tls.ca_file.is_some() || t.tls.insecure;
            if tls_set && !https {
                return Err(at(
                    &format!("{key}.tls"),
                    "only for an http target with an https:// url, grpc with https://, websocket with \
                     wss:// (Redis: rediss:// URLs)"
                        .into(),
                ));
            }
            if t.tls.ca_file.is_some() && t.tls.insecure {
                return Err(at(
                    &format!("{key}.tls.insecure"),
                    "either ca-file or insecure = true, not both".into(),
                ));
            }
            if let Some(ca) = &t.tls.ca_file {
                let resolved = base.join(ca);
                crate::tls::ca_certs(&resolved)
                    .map_err(|e| at(&format!("{key}.tls.ca-file"), e))?;
                spec.tls.ca_file = Some(resolved);
            }
            let descriptors = grpc_descriptors(t, &key, base, &at)?;
            targets.push(Target {
                name: name.clone(),
                spec,
                descriptors,
            });
        }
        let mut scenarios = Vec::new();
        for (i, s) in file.scenarios.iter().enumerate() {
            let key = format!("scenarios.{i}");
            if file.scenarios[..i].iter().any(|x| x.name == s.name) {
                return Err(at(
                    &format!("{key}.name"),
                    format!("two scenarios are named {:?}", s.name),
                ));
            }
            let executor = executor(s, &key, &at)?;
            let start_time = s.start_time.unwrap_or_default();
            if start_time > MAX_RUN {
                return Err(at(
                    &format!("{key}.start-time"),
                    format!("at most {} days", MAX_RUN.as_secs() / 86_400),
                ));
            }
            let think = match &s.think_time {
                None => None,
                Some(t) => Some(parse_think(t).map_err(|e| at(&format!("{key}.think-time"), e))?),
            };
            if s.steps.is_empty() {
                return Err(at(
                    &key,
                    "a scenario needs at least one [[scenarios.steps]]".into(),
                ));
            }
            let mut steps = Vec::new();
            for (j, st) in s.steps.iter().enumerate() {
                let skey = format!("{key}.steps.{j}");
                let chained = s.flow == Flow::Sequence;
                let mut step = step(st, &skey, &targets, &feeders, &run_id, chained, &at)?;
                for (k, v) in [("scenario", &s.name), ("step", &st.name)] {
                    step.tags.insert(k.to_owned(), v.clone());
                }
                for (tags, tkey) in [
                    (&s.tags, format!("{key}.tags")),
                    (&st.tags, format!("{skey}.tags")),
                ] {
                    for (k, v) in tags {
                        check_tag(k, v).map_err(|e| at(&format!("{tkey}.{k}"), e))?;
                        step.tags.insert(k.clone(), v.clone());
                    }
                }
                steps.push(step);
            }
            // {{var.NAME}} reads what an earlier step of the same iteration extracted.
            let mut known: Vec<&str> = Vec::new();
            for (j, st) in steps.iter().enumerate() {
                for name in st.templates().into_iter().flat_map(Template::var_names) {
                    if s.flow != Flow::Sequence {
                        return Err(at(
                            &format!("{key}.flow"),
                            format!(
                                "step {:?} uses {{{{var.{name}}}}}: variables need flow = \"sequence\"",
                                st.name
                            ),
                        ));
                    }
                    if !known.contains(&name) {
                        return Err(at(
                            &format!("{key}.steps.{j}"),
                            format!(
                                "{{{{var.{name}}}}}: no earlier step of the scenario extracts {name:?}"
                            ),
                        ));
                    }
                }
                known.extend(st.extract.iter().map(|e| &*e.var));
            }
            if s.flow == Flow::Pick && steps.iter().all(|s| s.weight == 0) {
                return Err(at(&key, "every step has weight 0".into()));
            }
            scenarios.push(Scenario {
                name: s.name.clone(),
                executor,
                think,
                flow: s.flow,
                steps,
                thresholds: s.thresholds.clone(),
                start_time,
            });
        }
        // A selector must pick a step of its scope: on no data it would decide nothing.
        let unpicked = |list: &[Threshold], steps: &[&Step], key: &str| -> Result<(), Error> {
            for (k, t) in list.iter().enumerate() {
                let picks = |st: &&Step| t.selector.iter().all(|(k, v)| st.tags.get(k) == Some(v));
                if !t.selector.is_empty() && !steps.iter().any(picks) {
                    let known: std::collections::BTreeSet<String> = steps
                        .iter()
                        .flat_map(|st| st.tags.iter().map(|(k, v)| format!("{k}={v}")))
                        .collect();
                    return Err(at(
                        &format!("{key}.{k}"),
                        format!(
                            "{:?} selects no step here; the steps' tags: {}",
                            t.text,
                            known.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            Ok(())
        };
        let every: Vec<&Step> = scenarios.iter().flat_map(|s| &s.steps).collect();
        unpicked(&file.thresholds, &every, "thresholds")?;
        for (i, s) in scenarios.iter().enumerate() {
            let steps: Vec<&Step> = s.steps.iter().collect();
            unpicked(&s.thresholds, &steps, &format!("scenarios.{i}.thresholds"))?;
            for (j, st) in s.steps.iter().enumerate() {
                unpicked(
                    &st.thresholds,
                    &[st],
                    &format!("scenarios.{i}.steps.{j}.thresholds"),
                )?;
            }
        }
        let distributed = match file.distributed {
            Some(d) if d.workers == 0 => {
                return Err(at("distributed.workers", "must be at least 1".into()));
            }
            Some(d) => {
                crate::distributed::registry_config(&d.registry)
                    .map_err(|e| at("distributed.registry", e))?;
                Some(d)
            }
            None => None,
        };
        Ok(Plan {
            file: path.to_owned(),
            run: file.run,
            output: file.output,
            targets,
            feeders,
            scenarios,
            thresholds: file.thresholds,
            segment: o.segment.unwrap_or_default(),
            distributed,
        })
    }
}

fn executor(
    s: &ScenarioSpec,
    key: &str,
    at: &impl Fn(&str, String) -> Error,
) -> Result<Executor, Error> {
    let field = |f: &str| format!("{key}.{f}");
    let refuse = |fields: &[(&str, bool)]| -> Result<(), Error> {
        for (f, set) in fields {
            if *set {
                return Err(at(
                    &field(f),
                    format!("not used by the {} executor", s.executor.name()),
                ));
            }
        }
        Ok(())
    };
    let flat = |target: f64| -> Result<(Vec<Stage>, Option<u64>), Error> {
        match (s.duration, s.iterations) {
            (Some(d), None) if !d.is_zero() => Ok((
                vec![Stage {
                    duration: d,
                    target,
                }],
                None,
            )),
            (None, Some(n)) if n > 0 => Ok((
                vec![Stage {
                    duration: Duration::from_secs(365 * 24 * 3600),
                    target,
                }],
                Some(n),
            )),
            (Some(_), Some(_)) => Err(at(key, "give duration or iterations, not both".into())),
            _ => Err(at(
                key,
                "needs a duration (\"30s\") or iterations (> 0)".into(),
            )),
        }
    };
    let stages = |what: &str, max: f64| -> Result<Vec<Stage>, Error> {
        if s.stages.is_empty() {
            return Err(at(
                &field("stages"),
                format!(
                    "a ramping executor needs stages = [{{ duration = \"30s\", target = … }}] ({what})"
                ),
            ));
        }
        for (i, st) in s.stages.iter().enumerate() {
            if !(st.target >= 0.0 && st.target.is_finite()) {
                return Err(at(
                    &format!("{key}.stages.{i}.target"),
                    "must be ≥ 0".into(),
                ));
            }
            if st.target > max {
                return Err(at(
                    &format!("{key}.stages.{i}.target"),
                    format!("at most {max} ({what})"),
                ));
            }
        }
        Ok(s.stages.clone())
    };
    if s.max_in_flight == 0 {
        return Err(at(&field("max-in-flight"), "must be at least 1".into()));
    }
    if s.max_in_flight > MAX_VUS {
        return Err(at(
            &field("max-in-flight"),
            format!("at most {MAX_VUS} workers"),
        ));
    }
    if s.start_vus.is_some_and(|v| v > MAX_VUS) {
        return Err(at(
            &field("start-vus"),
            format!("at most {MAX_VUS} workers"),
        ));
    }
    if s.start_rate
        .is_some_and(|r| !(r.is_finite() && r <= MAX_RATE))
    {
        return Err(at(
            &field("start-rate"),
            format!("at most {MAX_RATE} per second"),
        ));
    }
    Ok(match s.executor {
        ExecutorKind::ConstantArrivalRate => {
            refuse(&[
                ("graceful-ramp-down", s.graceful_ramp_down.is_some()),
                ("max-duration", s.max_duration.is_some()),
                ("vus", s.vus.is_some()),
                ("start-vus", s.start_vus.is_some()),
                ("start-rate", s.start_rate.is_some()),
                ("stages", !s.stages.is_empty()),
            ])?;
            let rate = s.rate.ok_or_else(|| {
                at(
                    key,
                    "constant-arrival-rate needs rate = … (per second)".into(),
                )
            })?;
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(at(&field("rate"), "must be more than 0".into()));
            }
            if rate > MAX_RATE {
                return Err(at(
                    &field("rate"),
                    format!("at most {MAX_RATE} per second (one load generator)"),
                ));
            }
            let (mut stages, iterations) = flat(rate)?;
            if let Some(n) = iterations {
                // Checked: a tiny rate with many iterations is a run longer than any clock.
                stages[0].duration = Duration::try_from_secs_f64(n as f64 / rate)
                    .ok()
                    .filter(|d| *d <= MAX_RUN)
                    .ok_or_else(|| {
                        at(
                            &field("iterations"),
                            format!(
                                "{n} iterations at {rate:?}/s would take longer than {} days",
                                MAX_RUN.as_secs() / 86_400
                            ),
                        )
                    })?;
            }
            Executor::Arrival {
                start: rate,
                stages,
                iterations,
                max_in_flight: s.max_in_flight,
            }
        }
        ExecutorKind::RampingArrivalRate => {
            refuse(&[
                ("graceful-ramp-down", s.graceful_ramp_down.is_some()),
                ("max-duration", s.max_duration.is_some()),
                ("vus", s.vus.is_some()),
                ("start-vus", s.start_vus.is_some()),
                ("rate", s.rate.is_some()),
                ("duration", s.duration.is_some()),
                ("iterations", s.iterations.is_some()),
            ])?;
            Executor::Arrival {
                start: s.start_rate.unwrap_or(0.0).max(0.0),
                stages: stages("targets are rates per second", MAX_RATE)?,
                iterations: None,
                max_in_flight: s.max_in_flight,
            }
        }
        ExecutorKind::ConstantVus => {
            refuse(&[
                ("graceful-ramp-down", s.graceful_ramp_down.is_some()),
                ("max-duration", s.max_duration.is_some()),
                ("rate", s.rate.is_some()),
                ("start-rate", s.start_rate.is_some()),
                ("start-vus", s.start_vus.is_some()),
                ("stages", !s.stages.is_empty()),
            ])?;
            let vus = s
                .vus
                .ok_or_else(|| at(key, "constant-vus needs vus = … (workers)".into()))?;
            if vus == 0 {
                return Err(at(&field("vus"), "must be at least 1".into()));
            }
            if vus > MAX_VUS {
                return Err(at(&field("vus"), format!("at most {MAX_VUS} workers")));
            }
            let (stages, iterations) = flat(vus as f64)?;
            Executor::Vus {
                start: vus,
                stages,
                iterations,
                per_vu: None,
                ramp_down: None,
            }
        }
        ExecutorKind::RampingVus => {
            refuse(&[
                ("max-duration", s.max_duration.is_some()),
                ("rate", s.rate.is_some()),
                ("start-rate", s.start_rate.is_some()),
                ("vus", s.vus.is_some()),
                ("duration", s.duration.is_some()),
                ("iterations", s.iterations.is_some()),
            ])?;
            Executor::Vus {
                start: s.start_vus.unwrap_or(0),
                stages: stages("targets are worker counts", MAX_VUS as f64)?,
                iterations: None,
                per_vu: None,
                ramp_down: Some(s.graceful_ramp_down.unwrap_or(DEFAULT_RAMP_DOWN)),
            }
        }
        ExecutorKind::SharedIterations | ExecutorKind::PerVuIterations => {
            refuse(&[
                ("graceful-ramp-down", s.graceful_ramp_down.is_some()),
                ("rate", s.rate.is_some()),
                ("start-rate", s.start_rate.is_some()),
                ("start-vus", s.start_vus.is_some()),
                ("stages", !s.stages.is_empty()),
                ("duration", s.duration.is_some()),
            ])?;
            let name = s.executor.name();
            let vus = s.vus.unwrap_or(1);
            if vus == 0 || vus > MAX_VUS {
                return Err(at(&field("vus"), format!("1 to {MAX_VUS} workers")));
            }
            let n = s
                .iterations
                .ok_or_else(|| at(key, format!("{name} needs iterations = … (> 0)")))?;
            if n == 0 {
                return Err(at(&field("iterations"), "must be at least 1".into()));
            }
            let max = s.max_duration.unwrap_or(DEFAULT_MAX_DURATION);
            if max.is_zero() || max > MAX_RUN {
                return Err(at(
                    &field("max-duration"),
                    format!(
                        "more than 0 and at most {} days",
                        MAX_RUN.as_secs() / 86_400
                    ),
                ));
            }
            let per_vu = s.executor == ExecutorKind::PerVuIterations;
            Executor::Vus {
                start: vus,
                stages: vec![Stage {
                    duration: max,
                    target: vus as f64,
                }],
                iterations: (!per_vu).then_some(n),
                per_vu: per_vu.then_some(n),
                ramp_down: None,
            }
        }
    })
}

fn step(
    st: &StepSpec,
    key: &str,
    targets: &[Target],
    feeders: &[Arc<Feeder>],
    run_id: &str,
    chained: bool,
    at: &impl Fn(&str, String) -> Error,
) -> Result<Step, Error> {
    let target = match &st.target {
        Some(name) => targets
            .iter()
            .position(|t| &t.name == name)
            .ok_or_else(|| {
                at(
                    &format!("{key}.target"),
                    format!(
                        "no target named {name:?} (targets: {})",
                        targets
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?,
        None if targets.len() == 1 => 0,
        None => {
            return Err(at(
                key,
                "name the step's target (target = \"…\"): the scenario has several or none".into(),
            ));
        }
    };
    let kind = targets[target].spec.kind;
    let tpl = |sub: &str, text: &str| {
        Template::compile(text, feeders, run_id).map_err(|e| at(&format!("{key}.{sub}"), e))
    };
    let given = [
        st.http.is_some(),
        st.objstore.is_some(),
        st.redis.is_some(),
        st.grpc.is_some(),
        st.websocket.is_some(),
    ];
    let not_one = || {
        at(
            key,
            "a step has exactly one of http = {…}, objstore = {…}, redis = […], grpc = {…}, \
             websocket = {…}"
                .into(),
        )
    };
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(not_one());
    }
    // The step's request must suit its target: `field` names the request (`http`), `a` its
    // kind with its article (`an http`).
    let want = |k: TargetKind, field: &str, a: &str| {
        if kind == k {
            return Ok(());
        }
        Err(at(
            &format!("{key}.{field}"),
            format!("target {:?} is not {a} target", targets[target].name),
        ))
    };
    let action = match (&st.http, &st.objstore, &st.redis) {
        _ if st.grpc.is_some() => {
            want(TargetKind::Grpc, "grpc", "a grpc")?;
            let g = st.grpc.as_ref().ok_or_else(not_one)?;
            grpc_call(g, &targets[target], key, &tpl, at)?
        }
        _ if st.websocket.is_some() => {
            want(TargetKind::Websocket, "websocket", "a websocket")?;
            let w = st.websocket.as_ref().ok_or_else(not_one)?;
            websocket_action(w, key, &tpl, at)?
        }
        (Some(h), None, None) => {
            want(TargetKind::Http, "http", "an http")?;
            let method = http::Method::from_bytes(h.method.as_bytes()).map_err(|_| {
                at(
                    &format!("{key}.http.method"),
                    format!("{:?} is not an HTTP method", h.method),
                )
            })?;
            if !h.path.starts_with('/') {
                return Err(at(
                    &format!("{key}.http.path"),
                    "a path starts with /".into(),
                ));
            }
            let mut headers = Vec::new();
            for (name, value) in &h.headers {
                let n = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    at(
                        &format!("{key}.http.headers"),
                        format!("{name:?} is not a header name"),
                    )
                })?;
                headers.push((n, tpl(&format!("http.headers.{name}"), value)?));
            }
            Action::Http(HttpRequest {
                method,
                path: tpl("http.path", &h.path)?,
                headers,
                body: h.body.as_deref().map(|b| tpl("http.body", b)).transpose()?,
            })
        }
        (None, Some(o), None) => {
            want(TargetKind::Objstore, "objstore", "an objstore")?;
            let random = match (o.op, &o.value, o.value_size) {
                (ObjstoreOp::Put, Some(_), Some(_)) => {
                    return Err(at(
                        &format!("{key}.objstore"),
                        "value or value-size, not both".into(),
                    ));
                }
                (ObjstoreOp::Put, None, None) => {
                    return Err(at(
                        &format!("{key}.objstore"),
                        "put needs value or value-size".into(),
                    ));
                }
                (ObjstoreOp::Put, None, Some(size)) if size.bytes() > MAX_VALUE_SIZE => {
                    return Err(at(
                        &format!("{key}.objstore.value-size"),
                        format!("at most {} MiB", MAX_VALUE_SIZE >> 20),
                    ));
                }
                (ObjstoreOp::Put, None, Some(size)) => {
                    let mut v = vec![0u8; size.bytes() as usize];
                    fastrand::fill(&mut v);
                    Some(bytes::Bytes::from(v))
                }
                (ObjstoreOp::Put, Some(_), None) => None,
                (_, None, None) => None,
                _ => {
                    return Err(at(
                        &format!("{key}.objstore"),
                        format!("{:?} takes no value", o.op).to_lowercase(),
                    ));
                }
            };
            Action::Objstore {
                op: o.op,
                key: tpl("objstore.key", &o.key)?,
                value: o
                    .value
                    .as_deref()
                    .map(|v| tpl("objstore.value", v))
                    .transpose()?,
                random,
            }
        }
        (None, None, Some(words)) => {
            want(TargetKind::Redis, "redis", "a redis")?;
            if words.is_empty() {
                return Err(at(
                    &format!("{key}.redis"),
                    "a command needs at least its name".into(),
                ));
            }
            let words = words
                .iter()
                .enumerate()
                .map(|(i, w)| tpl(&format!("redis.{i}"), w))
                .collect::<Result<Vec<_>, _>>()?;
            if words.first().and_then(Template::as_static).is_none() {
                return Err(at(
                    &format!("{key}.redis.0"),
                    "the command name cannot be templated".into(),
                ));
            }
            Action::Redis { words }
        }
        _ => {
            return Err(at(
                key,
                "a step has exactly one of http = {…}, objstore = {…}, redis = […]".into(),
            ));
        }
    };
    let bodies = matches!(
        kind,
        TargetKind::Http | TargetKind::Websocket | TargetKind::Grpc
    );
    if !bodies && (st.checks.body_contains.is_some() || !st.checks.json.is_empty()) {
        return Err(at(
            &format!("{key}.checks"),
            "body-contains and json check HTTP, gRPC and WebSocket answers only".into(),
        ));
    }
    if !matches!(kind, TargetKind::Http | TargetKind::Websocket) && !st.checks.headers.is_empty() {
        return Err(at(
            &format!("{key}.checks.headers"),
            "headers check HTTP responses and WebSocket handshakes only".into(),
        ));
    }
    let mut json_checks = Vec::new();
    for (path, want) in &st.checks.json {
        let steps = json_path(path).map_err(|m| at(&format!("{key}.checks.json"), m))?;
        json_checks.push((ExtractHow::Json(steps), want.as_bytes().to_vec()));
    }
    if let Action::Objstore { op, .. } = &action
        && *op != ObjstoreOp::Get
        && !st.extract.is_empty()
    {
        return Err(at(
            &format!("{key}.extract"),
            "an objstore step extracts from a get's value only".into(),
        ));
    }
    // Cookies go back only to later steps of the same iteration: a pick-flow iteration has
    // none, so its responses' set-cookie is not even kept.
    let cookies = chained && kind == TargetKind::Http && targets[target].spec.cookies;
    Ok(Step {
        name: st.name.clone(),
        target,
        weight: st.weight,
        action,
        checks: Checks {
            status: st.checks.status.clone(),
            body_contains: st
                .checks
                .body_contains
                .as_ref()
                .map(|s| s.as_bytes().to_vec()),
            json: json_checks,
            headers: st
                .checks
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        },
        thresholds: st.thresholds.clone(),
        tags: BTreeMap::new(),
        keep_headers: st
            .checks
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .chain(st.extract.values().filter_map(|e| {
                e.header
                    .as_ref()
                    .map(|h| (h.to_ascii_lowercase(), String::new()))
            }))
            .chain(cookies.then(|| ("set-cookie".to_owned(), String::new())))
            .collect(),
        cookies,
        extract: extracts(st, key, kind, at)?,
    })
}

/// A WebSocket step's session, compiled.
fn websocket_action(
    w: &WebsocketSpec,
    key: &str,
    tpl: &impl Fn(&str, &str) -> Result<Template, Error>,
    at: &impl Fn(&str, String) -> Error,
) -> Result<Action, Error> {
    if !w.path.starts_with('/') {
        return Err(at(
            &format!("{key}.websocket.path"),
            "a path starts with /".into(),
        ));
    }
    let send = w
        .send
        .iter()
        .enumerate()
        .map(|(i, m)| tpl(&format!("websocket.send.{i}"), m))
        .collect::<Result<Vec<_>, _>>()?;
    let receive = match w.receive {
        Some(n) => n,
        None => u32::try_from(send.len()).unwrap_or(u32::MAX),
    };
    if receive > MAX_WS_RECEIVE {
        return Err(at(
            &format!("{key}.websocket.receive"),
            format!("at most {MAX_WS_RECEIVE}"),
        ));
    }
    Ok(Action::Websocket {
        path: tpl("websocket.path", &w.path)?,
        send,
        receive,
    })
}

/// Most messages a WebSocket step waits for.
const MAX_WS_RECEIVE: u32 = 10_000;

/// A gRPC step, compiled; with the target's descriptors, its method and a body without a
/// template are checked now.
fn grpc_call(
    g: &GrpcSpec,
    target: &Target,
    key: &str,
    tpl: &impl Fn(&str, &str) -> Result<Template, Error>,
    at: &impl Fn(&str, String) -> Error,
) -> Result<Action, Error> {
    let path = format!("/{}", g.method);
    let path = match http::uri::PathAndQuery::try_from(path.as_str()) {
        Ok(p) if g.method.split('/').count() == 2 => p,
        _ => {
            return Err(at(
                &format!("{key}.grpc.method"),
                format!("{:?} is not package.Service/Method", g.method),
            ));
        }
    };
    let mut metadata = Vec::new();
    for (name, value) in &g.metadata {
        let k = tonic::metadata::AsciiMetadataKey::from_bytes(name.as_bytes()).map_err(|_| {
            at(
                &format!("{key}.grpc.metadata"),
                format!("{name:?} is not an ASCII metadata key (lowercase, no -bin suffix)"),
            )
        })?;
        metadata.push((k, tpl(&format!("grpc.metadata.{name}"), value)?));
    }
    let call = GrpcCall {
        method: g.method.clone(),
        path,
        body: tpl("grpc.body", &g.body)?,
        metadata,
        resolved: std::sync::OnceLock::new(),
    };
    if let Some(pool) = &target.descriptors {
        let resolved = crate::protocol::resolve_grpc(pool, &call)
            .map_err(|(field, e)| at(&format!("{key}.grpc.{field}"), e))?;
        let _ = call.resolved.set(resolved);
    }
    Ok(Action::Grpc(call))
}

/// A gRPC target's descriptors: compiled from its `.proto` files, or `None` when the server's
/// reflection service gives them; the settings of other kinds refused.
fn grpc_descriptors(
    t: &TargetSpec,
    key: &str,
    base: &Path,
    at: &impl Fn(&str, String) -> Error,
) -> Result<Option<prost_reflect::DescriptorPool>, Error> {
    if t.kind != TargetKind::Grpc {
        if !t.protos.is_empty() || !t.proto_paths.is_empty() || t.reflection {
            return Err(at(
                key,
                "protos, proto-paths and reflection are for grpc targets".into(),
            ));
        }
        return Ok(None);
    }
    match (t.protos.is_empty(), t.reflection) {
        (true, false) => Err(at(
            key,
            "a grpc target needs protos = [\"….proto\"] or reflection = true".into(),
        )),
        (false, true) => Err(at(
            &format!("{key}.reflection"),
            "either protos or reflection = true, not both".into(),
        )),
        (true, true) => Ok(None),
        (false, false) => {
            let protos: Vec<PathBuf> = t.protos.iter().map(|p| base.join(p)).collect();
            if let Some(missing) = protos.iter().find(|p| !p.is_file()) {
                return Err(at(
                    &format!("{key}.protos"),
                    format!("no such file: {}", missing.display()),
                ));
            }
            let includes: Vec<PathBuf> = t.proto_paths.iter().map(|p| base.join(p)).collect();
            crate::protocol::compile_protos(&protos, &includes)
                .map(Some)
                .map_err(|e| at(&format!("{key}.protos"), e))
        }
    }
}

/// A step's `extract` table, compiled.
fn extracts(
    st: &StepSpec,
    key: &str,
    kind: TargetKind,
    at: &impl Fn(&str, String) -> Error,
) -> Result<Vec<Extract>, Error> {
    let mut out = Vec::new();
    for (name, e) in &st.extract {
        let ekey = format!("{key}.extract.{name}");
        if matches!(kind, TargetKind::Redis | TargetKind::Objstore) && e.header.is_some() {
            return Err(at(
                &format!("{ekey}.header"),
                "a Redis reply or an objstore value has no headers: use json = \"$…\" or \
                 regex = \"…\" on it"
                    .into(),
            ));
        }
        let ok_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok_name {
            return Err(at(
                &ekey,
                "a variable name is letters, digits, _ and -".into(),
            ));
        }
        let how = match (&e.json, &e.regex, &e.header) {
            (Some(p), None, None) => ExtractHow::Json(json_path(p).map_err(|m| at(&ekey, m))?),
            (None, Some(r), None) => ExtractHow::Regex(
                regex::bytes::RegexBuilder::new(r)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| at(&format!("{ekey}.regex"), format!("invalid regex: {e}")))?,
            ),
            (None, None, Some(h)) => {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(at(
                        &format!("{ekey}.header"),
                        format!("{h:?} is not a header name"),
                    ));
                }
                ExtractHow::Header(h.to_ascii_lowercase())
            }
            _ => {
                return Err(at(
                    &ekey,
                    "give exactly one of json = \"$.path\", regex = \"…\", header = \"name\""
                        .into(),
                ));
            }
        };
        out.push(Extract {
            var: Arc::from(name.as_str()),
            how,
        });
    }
    Ok(out)
}

/// A tag must work as a Prometheus label and in a threshold selector.
fn check_tag(k: &str, v: &str) -> Result<(), String> {
    let name_ok = k
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if k.is_empty() || !name_ok || k.starts_with("__") {
        return Err("a tag name is letters, digits and _ (not first a digit, not __…)".into());
    }
    if k == "scenario" || k == "step" {
        return Err(format!("the {k} tag is the {k}'s name; choose another"));
    }
    if v.contains([',', '}', '"', '\\', '\n']) {
        return Err("a tag value may not hold , } \" \\ or a line break".into());
    }
    Ok(())
}

/// `scenarios.0.steps.1.target` → `scenarios[0].steps[1].target`, as the reader shows paths.
fn shown_key(key: &str) -> String {
    let mut out = String::new();
    for seg in key.split('.') {
        if seg.parse::<usize>().is_ok() {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn parse_think(text: &str) -> Result<(Duration, Duration), String> {
    let one = |t: &str| {
        humantime::parse_duration(t.trim()).map_err(|e| {
            format!("{t:?} is not a duration ({e}); write \"100ms\" or \"50ms..150ms\"")
        })
    };
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(format!("{text:?}: the range is empty"));
            }
            Ok((a, b))
        }
        None => {
            let d = one(text)?;
            Ok((d, d))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_spec_debug_shows_no_token_and_no_url_password() {
        let spec = TargetSpec {
            kind: TargetKind::Redis,
            url: Some("redis://app:hunter2@127.0.0.1:6379/0".into()),
            embedded: false,
            http2: false,
            connections: None,
            live: true,
            cookies: true,
            probe: root(),
            shadow_prefix: None,
            shadow_name: None,
            token: Some("s3cret-token".into()),
            tls: TlsSpec::default(),
            protos: Vec::new(),
            proto_paths: Vec::new(),
            reflection: false,
        };
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret-token"),
            "{shown}"
        );
        assert!(
            shown.contains("redis://app:<redacted>@127.0.0.1:6379/0"),
            "{shown}"
        );
        assert_eq!(
            redact_userinfo("http://127.0.0.1:80/a@b"),
            "http://127.0.0.1:80/a@b"
        );
    }
}
