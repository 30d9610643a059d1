//! The governance HTTP server: metrics, health, effective configuration, registry state, the
//! log level, and the routes Douyu's Juno platform and Go Jupiter's operators call. Binds to
//! loopback unless told otherwise.
//!
//! | path | method | answer |
//! |---|---|---|
//! | `/metrics` | GET | Prometheus text format (OpenMetrics) |
//! | `/health` | GET | `200 ok` while the server answers (Go Jupiter's governor routes it to the wrong router and answers 404) |
//! | `/health/live` | GET | `200 live` while the process runs |
//! | `/health/ready` | GET | `200 ready` once serving and until shutdown starts, else `503` |
//! | `/config` | GET | effective configuration as JSON, secrets redacted; `?sources=true` adds where each value came from |
//! | `/configs` | GET | the same as one flat JSON object of dotted keys (`redis.main.url`), as Juno reads it (its `juno_configuration_version` is a key like any other) |
//! | `/debug/config` | GET | the effective configuration as JSON (Go Jupiter's path) |
//! | `/debug/env` | GET | the process environment as a JSON object, secret-looking names and URL passwords redacted |
//! | `/build/info` | GET | Go Jupiter's build info: `name, appID, appMode, appVersion, jupiterVersion, buildUser, buildHost, buildTime, startTime, hostName`, plus `rustVersion` |
//! | `/routes` | GET | these routes as JSON |
//! | `/registry` | GET | what this process registered and discovered (JSON) |
//! | `/log/level` | GET, PUT | current log filter; PUT a new one as the body |
//! | `/debug/pprof/profile` | GET | `?seconds=N` (1 to 60, default 30): a CPU profile in pprof's protobuf format, for `go tool pprof` (feature `pprof`; without it, `501`). One at a time (`409` while one runs) |
//!
//! # Security
//!
//! Go Jupiter's governor has no authentication and listens on every interface. This one
//! listens on loopback by default. With a `token` configured, every route but `/metrics` and
//! `/health*` (what scrapers and probes call) needs `Authorization: Bearer <token>` and
//! answers `401` without it; bound to an address other than loopback, a token is required and
//! [`Governance::bind`] refuses to start without one.

use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::Error;
use crate::config::Config;
use crate::logging::LogHandle;
use crate::metrics::Metrics;

/// Default governance address: loopback only.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9246);

/// The `[governance]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct GovernanceConfig {
    /// Default is true.
    pub enabled: bool,
    /// Default is `127.0.0.1:9246`; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Bearer token for every route but `/metrics` and `/health*`; required when `addr` is
    /// not loopback. Default: none.
    pub token: Option<Token>,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        GovernanceConfig {
            enabled: true,
            addr: DEFAULT_ADDR,
            token: None,
        }
    }
}

/// A bearer token. Its `Debug` never shows it; comparison takes the same time wherever the
/// first difference is.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// A token; `None` for an empty one (which would let anything in).
    pub fn new(token: impl Into<String>) -> Option<Token> {
        let token = token.into();
        (!token.is_empty()).then_some(Token(token))
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        let want = self.0.as_bytes();
        presented.len() == want.len()
            && presented
                .iter()
                .zip(want)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::config::redact::REDACTED)
    }
}

/// Every route, its methods, and whether it answers without the token.
const ROUTES: &[(&str, &str, bool)] = &[
    ("GET", "/metrics", true),
    ("GET", "/health", true),
    ("GET", "/health/live", true),
    ("GET", "/health/ready", true),
    ("GET", "/config", false),
    ("GET", "/configs", false),
    ("GET", "/debug/config", false),
    ("GET", "/debug/env", false),
    ("GET", "/build/info", false),
    ("GET", "/routes", false),
    ("GET", "/registry", false),
    ("GET, PUT", "/log/level", false),
    ("GET", "/debug/pprof/profile", false),
];

/// Liveness and readiness, shared by the app lifecycle and the governance server. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Debug)]
struct HealthInner {
    live: AtomicBool,
    ready: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            inner: Arc::new(HealthInner {
                live: AtomicBool::new(true),
                ready: AtomicBool::new(false),
            }),
        }
    }
}

impl Health {
    /// Marks the process ready (serving) or not.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// Marks the process live or not (not live: it should be restarted).
    pub fn set_live(&self, live: bool) {
        self.inner.live.store(live, Ordering::SeqCst);
    }

    /// Whether the process is live.
    pub fn is_live(&self) -> bool {
        self.inner.live.load(Ordering::SeqCst)
    }
}

/// What `/registry` shows; the registry fills it.
pub trait RegistryView: Send + Sync + 'static {
    /// A JSON document of registered and discovered instances.
    fn snapshot(&self) -> serde_json::Value;
}

struct EmptyRegistry;

impl RegistryView for EmptyRegistry {
    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({ "registered": [], "discovered": {} })
    }
}

/// The environment `/debug/env` shows (injectable for tests).
type EnvSource = Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

#[derive(Clone)]
struct Shared {
    metrics: Metrics,
    health: Health,
    config: Option<Config>,
    log: Option<LogHandle>,
    registry: Arc<dyn RegistryView>,
    app: Arc<AppInfo>,
    env: EnvSource,
}

/// What `/build/info` says of the application.
#[derive(Debug)]
struct AppInfo {
    name: String,
    id: String,
    mode: String,
    version: String,
    started: std::time::SystemTime,
}

/// The governance server. Build with [`Governance::builder`], then [`bind`](Governance::bind).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), jupiter_core::Error> {
/// use jupiter_core::governance::Governance;
///
/// let server = Governance::builder().addr("127.0.0.1:0".parse().unwrap()).build().bind().await?;
/// println!("governance on http://{}", server.local_addr());
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let running = tokio::spawn(server.serve(async { let _ = stopped.await; }));
/// stop.send(()).unwrap();
/// running.await.unwrap()?;
/// # Ok(()) }
/// ```
pub struct Governance {
    addr: SocketAddr,
    token: Option<Token>,
    shared: Shared,
    requests: RequestCounter,
}

type RequestCounter = prometheus_client::metrics::family::Family<
    Vec<(&'static str, String)>,
    prometheus_client::metrics::counter::Counter,
>;

impl fmt::Debug for Governance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Governance")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Governance`] server.
#[must_use]
pub struct GovernanceBuilder {
    addr: SocketAddr,
    token: Option<Token>,
    shared: Shared,
}

impl fmt::Debug for GovernanceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernanceBuilder")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl GovernanceBuilder {
    /// Address to listen on. Default is [`DEFAULT_ADDR`] (loopback).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Registry served on `/metrics`. Default is [`Metrics::global`].
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.shared.metrics = metrics.clone();
        self
    }

    /// Health state served on `/health/*`. Default is a new one, not ready.
    pub fn health(mut self, health: &Health) -> Self {
        self.shared.health = health.clone();
        self
    }

    /// Configuration served on `/config`. Default: none (`/config` answers 404).
    pub fn config(mut self, config: &Config) -> Self {
        self.shared.config = Some(config.clone());
        self
    }

    /// Log handle for `/log/level`. Default: none (404).
    pub fn log(mut self, log: &LogHandle) -> Self {
        self.shared.log = Some(log.clone());
        self
    }

    /// What `/registry` shows. Default: nothing registered or discovered.
    pub fn registry(mut self, view: impl RegistryView) -> Self {
        self.shared.registry = Arc::new(view);
        self
    }

    /// The bearer token for every route but `/metrics` and `/health*` (see the module docs).
    /// Default: none, which only a loopback address accepts.
    pub fn token(mut self, token: Option<Token>) -> Self {
        self.token = token;
        self
    }

    /// The application `/build/info` describes: its name and mode (the `[app]` section), its
    /// id on Juno (empty: the name) and its version. Default: `jupiter`, Go Jupiter's default
    /// mode, this crate's version.
    pub fn app(mut self, name: &str, id: &str, mode: &str, version: &str) -> Self {
        let started = self.shared.app.started;
        self.shared.app = Arc::new(AppInfo {
            name: name.to_owned(),
            id: if id.is_empty() { name } else { id }.to_owned(),
            mode: mode.to_owned(),
            version: version.to_owned(),
            started,
        });
        self
    }

    /// The environment `/debug/env` shows. Default: the process's own.
    pub fn env(mut self, env: impl Fn() -> Vec<(String, String)> + Send + Sync + 'static) -> Self {
        self.shared.env = Arc::new(env);
        self
    }

    /// The server, not yet bound.
    pub fn build(self) -> Governance {
        let requests = RequestCounter::default();
        self.shared.metrics.register(
            "governance_requests",
            "Requests served by the governance server.",
            requests.clone(),
        );
        Governance {
            addr: self.addr,
            token: self.token,
            shared: self.shared,
            requests,
        }
    }
}

impl Governance {
    /// A builder with the defaults.
    pub fn builder() -> GovernanceBuilder {
        GovernanceBuilder {
            addr: DEFAULT_ADDR,
            token: None,
            shared: Shared {
                metrics: Metrics::global().clone(),
                health: Health::default(),
                config: None,
                log: None,
                registry: Arc::new(EmptyRegistry),
                app: Arc::new(AppInfo {
                    name: "jupiter".to_owned(),
                    id: "jupiter".to_owned(),
                    mode: crate::registry::DEFAULT_MODE.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    started: std::time::SystemTime::now(),
                }),
                env: Arc::new(|| {
                    std::env::vars_os()
                        .map(|(k, v)| {
                            (
                                k.to_string_lossy().into_owned(),
                                v.to_string_lossy().into_owned(),
                            )
                        })
                        .collect()
                }),
            },
        }
    }

    /// The routes, to mount in an existing axum server instead of binding a new one.
    pub fn router(&self) -> Router {
        let requests = self.requests.clone();
        let token = self.token.clone().map(Arc::new);
        Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .route("/config", get(config))
            .route("/configs", get(configs))
            .route("/debug/config", get(debug_config))
            .route("/debug/env", get(debug_env))
            .route("/build/info", get(build_info))
            .route("/routes", get(routes))
            .route("/registry", get(registry))
            .route("/log/level", get(log_level).put(set_log_level))
            .route("/debug/pprof/profile", get(pprof_profile))
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let token = token.clone();
                    async move {
                        let open = ROUTES
                            .iter()
                            .find(|(_, path, _)| *path == req.uri().path())
                            .is_none_or(|(_, _, open)| *open);
                        match &token {
                            Some(t)
                                if !open
                                    && !bearer(req.headers()).is_some_and(|p| t.accepts(p)) =>
                            {
                                (
                                    StatusCode::UNAUTHORIZED,
                                    [(header::WWW_AUTHENTICATE, "Bearer")],
                                    "this route needs the governance token\n",
                                )
                                    .into_response()
                            }
                            _ => next.run(req).await,
                        }
                    }
                },
            ))
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let requests = requests.clone();
                    async move {
                        // Known paths only, so a scanner cannot grow the label set.
                        let path = ROUTES
                            .iter()
                            .find(|(_, path, _)| *path == req.uri().path())
                            .map_or("other", |(_, path, _)| path)
                            .to_owned();
                        let resp = next.run(req).await;
                        let code = crate::metrics::Code::http(resp.status().as_u16())
                            .as_str()
                            .to_owned();
                        requests
                            .get_or_create(&vec![("path", path), ("code", code)])
                            .inc();
                        resp
                    }
                },
            ))
            .with_state(self.shared.clone())
    }

    /// Binds the listener.
    ///
    /// # Errors
    ///
    /// The address is taken or not allowed, or it is not loopback and no token is set.
    pub async fn bind(self) -> Result<BoundGovernance, Error> {
        if !self.addr.ip().is_loopback() && self.token.is_none() {
            return Err(Error::Bind {
                what: "governance server",
                addr: self.addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "off loopback the governance server needs a token \
                     (`governance.token`): it shows the configuration and changes the log level",
                ),
            });
        }
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| Error::Bind {
                what: "governance server",
                addr: self.addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Io {
            what: "governance listener address".into(),
            source,
        })?;
        let router = self.router();
        Ok(BoundGovernance {
            listener,
            router,
            local_addr,
        })
    }
}

/// A bound governance server; [`serve`](BoundGovernance::serve) runs it.
pub struct BoundGovernance {
    listener: tokio::net::TcpListener,
    router: Router,
    local_addr: SocketAddr,
}

impl fmt::Debug for BoundGovernance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundGovernance")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl BoundGovernance {
    /// The address it listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    ///
    /// # Errors
    ///
    /// The listener failed.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Io {
                what: "governance server".into(),
                source,
            })
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn live(State(s): State<Shared>) -> Response {
    if s.health.is_live() {
        (StatusCode::OK, "live\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not live\n")
    }
    .into_response()
}

async fn ready(State(s): State<Shared>) -> Response {
    if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
    .into_response()
}

#[derive(Deserialize)]
struct ConfigQuery {
    #[serde(default)]
    sources: bool,
}

async fn config(State(s): State<Shared>, Query(q): Query<ConfigQuery>) -> Response {
    match &s.config {
        Some(c) => axum::Json(serde_json::json!({
            "config": c.effective(q.sources),
            "last_reload_error": c.last_reload_error(),
        }))
        .into_response(),
        None => no_config(),
    }
}

async fn registry(State(s): State<Shared>) -> Response {
    axum::Json(s.registry.snapshot()).into_response()
}

async fn log_level(State(s): State<Shared>) -> Response {
    match &s.log {
        Some(h) => format!("{}\n", h.level()).into_response(),
        None => (StatusCode::NOT_FOUND, "no log handle attached\n").into_response(),
    }
}

async fn set_log_level(State(s): State<Shared>, body: String) -> Response {
    match &s.log {
        Some(h) => match h.set_level(&body) {
            Ok(()) => format!("{}\n", h.level()).into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        },
        None => (StatusCode::NOT_FOUND, "no log handle attached\n").into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value[7..].trim_ascii())
}

async fn health() -> &'static str {
    "ok\n"
}

fn no_config() -> Response {
    (StatusCode::NOT_FOUND, "no configuration attached\n").into_response()
}

async fn configs(State(s): State<Shared>) -> Response {
    let Some(c) = &s.config else {
        return no_config();
    };
    let mut flat = serde_json::Map::new();
    flatten("", c.effective(false), &mut flat);
    axum::Json(serde_json::Value::Object(flat)).into_response()
}

/// Tables become dotted keys; every other value (arrays included) stays where it is.
fn flatten(
    prefix: &str,
    value: serde_json::Value,
    out: &mut serde_json::Map<String, serde_json::Value>,
) {
    match value {
        serde_json::Value::Object(table) if !table.is_empty() || prefix.is_empty() => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other);
        }
    }
}

async fn debug_config(State(s): State<Shared>) -> Response {
    match &s.config {
        Some(c) => axum::Json(c.effective(false)).into_response(),
        None => no_config(),
    }
}

async fn debug_env(State(s): State<Shared>) -> Response {
    use crate::config::redact::{REDACTED, is_secret_key, redact_url};
    let env: std::collections::BTreeMap<String, String> = (s.env)()
        .into_iter()
        .map(|(k, v)| {
            let v = if is_secret_key(&k) {
                REDACTED.to_owned()
            } else {
                redact_url(&v).unwrap_or(v)
            };
            (k, v)
        })
        .collect();
    axum::Json(env).into_response()
}

/// Set by the build script.
const BUILD_USER: &str = env!("JUPITER_BUILD_USER");
const BUILD_HOST: &str = env!("JUPITER_BUILD_HOST");
const BUILD_EPOCH: &str = env!("JUPITER_BUILD_EPOCH");
const RUST_VERSION: &str = env!("JUPITER_RUSTC_VERSION");

async fn build_info(State(s): State<Shared>) -> Response {
    let app = &s.app;
    let build_time = BUILD_EPOCH
        .parse::<u64>()
        .ok()
        .and_then(|secs| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs)))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default();
    axum::Json(serde_json::json!({
        "name": app.name,
        "appID": app.id,
        "appMode": app.mode,
        "appVersion": app.version,
        "jupiterVersion": env!("CARGO_PKG_VERSION"),
        "buildUser": BUILD_USER,
        "buildHost": BUILD_HOST,
        "buildTime": build_time,
        "startTime": humantime::format_rfc3339_seconds(app.started).to_string(),
        "hostName": crate::registry::hostname(),
        "rustVersion": RUST_VERSION,
    }))
    .into_response()
}

async fn routes() -> Response {
    let routes: Vec<serde_json::Value> = ROUTES
        .iter()
        .map(|(methods, path, open)| {
            serde_json::json!({ "method": methods, "path": path, "token": !open })
        })
        .collect();
    axum::Json(routes).into_response()
}

#[derive(Deserialize)]
struct ProfileQuery {
    seconds: Option<u64>,
}

/// Longest profile a request may ask for: the request holds a blocking thread that long.
const MAX_PROFILE_SECONDS: u64 = 60;

async fn pprof_profile(Query(q): Query<ProfileQuery>) -> Response {
    let seconds = q.seconds.unwrap_or(30);
    if !(1..=MAX_PROFILE_SECONDS).contains(&seconds) {
        return (
            StatusCode::BAD_REQUEST,
            format!("seconds must be 1 to {MAX_PROFILE_SECONDS}\n"),
        )
            .into_response();
    }
    profile(std::time::Duration::from_secs(seconds)).await
}

#[cfg(not(feature = "pprof"))]
async fn profile(_: std::time::Duration) -> Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        "built without jupiter-core's `pprof` feature\n",
    )
        .into_response()
}

#[cfg(feature = "pprof")]
async fn profile(length: std::time::Duration) -> Response {
    // The sampler is process-wide (SIGPROF): one profile at a time.
    static RUNNING: AtomicBool = AtomicBool::new(false);
    if RUNNING.swap(true, Ordering::AcqRel) {
        return (StatusCode::CONFLICT, "a profile is being taken\n").into_response();
    }
    // Cleared when the profile is done or dropped (with the guard, which stops sampling).
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            RUNNING.store(false, Ordering::Release);
        }
    }
    let done = Done;
    let guard = match pprof::ProfilerGuardBuilder::default()
        // Go's default rate; frames of the signal handler's own libraries left out.
        .frequency(100)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(guard) => guard,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("profiling failed: {e}\n"),
            )
                .into_response();
        }
    };
    // Samples are taken while this request waits; a request dropped meanwhile drops the
    // guard, which stops the profiler.
    tokio::time::sleep(length).await;
    // Symbolizing the samples is CPU work: off the async workers.
    let taken = tokio::task::spawn_blocking(move || {
        let _done = done;
        let report = guard.report().build().map_err(|e| e.to_string())?;
        let profile = report.pprof().map_err(|e| e.to_string())?;
        Ok::<_, String>(pprof::protos::Message::encode_to_vec(&profile))
    })
    .await;
    match taken {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"profile\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profiling failed: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profiling failed: {e}\n"),
        )
            .into_response(),
    }
}
