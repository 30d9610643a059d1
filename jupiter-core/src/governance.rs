//! The governance HTTP server: metrics, health, effective configuration, registry state and
//! the log level, for operators and scrapers. Binds to loopback unless told otherwise.
//!
//! | path | method | answer |
//! |---|---|---|
//! | `/metrics` | GET | Prometheus text format (OpenMetrics) |
//! | `/health/live` | GET | `200 live` while the process runs |
//! | `/health/ready` | GET | `200 ready` once serving and until shutdown starts, else `503` |
//! | `/config` | GET | effective configuration as JSON, secrets redacted; `?sources=true` adds where each value came from |
//! | `/registry` | GET | what this process registered and discovered (JSON) |
//! | `/log/level` | GET, PUT | current log filter; PUT a new one as the body |

use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
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
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        GovernanceConfig {
            enabled: true,
            addr: DEFAULT_ADDR,
        }
    }
}

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

#[derive(Clone)]
struct Shared {
    metrics: Metrics,
    health: Health,
    config: Option<Config>,
    log: Option<LogHandle>,
    registry: Arc<dyn RegistryView>,
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
            shared: Shared {
                metrics: Metrics::global().clone(),
                health: Health::default(),
                config: None,
                log: None,
                registry: Arc::new(EmptyRegistry),
            },
        }
    }

    /// The routes, to mount in an existing axum server instead of binding a new one.
    pub fn router(&self) -> Router {
        let requests = self.requests.clone();
        Router::new()
            .route("/metrics", get(metrics))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .route("/config", get(config))
            .route("/registry", get(registry))
            .route("/log/level", get(log_level).put(set_log_level))
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let requests = requests.clone();
                    async move {
                        // Known paths only, so a scanner cannot grow the label set.
                        let path = match req.uri().path() {
                            p @ ("/metrics" | "/health/live" | "/health/ready" | "/config"
                            | "/registry" | "/log/level") => p.to_owned(),
                            _ => "other".to_owned(),
                        };
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
    /// The address is taken or not allowed.
    pub async fn bind(self) -> Result<BoundGovernance, Error> {
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
        None => (StatusCode::NOT_FOUND, "no configuration attached\n").into_response(),
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
