//! Shadow traffic for full-link stress tests: a tag that rides on every request, hop to hop,
//! and sends storage to a shadow key space so load tests never touch live data.
//!
//! # The tag
//!
//! [`ShadowContext`] says "this request is shadow traffic" and may carry a test-run id. It lives
//! in a tokio task-local for the duration of one request ([`ShadowContext::scope`]); reading it
//! is one thread-local access ([`is_shadow`]). `tokio::spawn` does not carry task-locals, so use
//! [`spawn`] to keep the tag on spawned work.
//!
//! # Carriers
//!
//! - HTTP header `x-jupiter-shadow: 1` (Go Jupiter's marker), run id in `x-jupiter-shadow-run`;
//! - the same in W3C `baggage`: `jupiter.shadow=1,jupiter.shadow.run=<id>`;
//! - gRPC metadata under the same keys (gRPC metadata is HTTP/2 headers).
//!
//! [`ShadowLayer`] (servers, HTTP and tonic alike) extracts the tag into the request's scope,
//! applies the service's switch and answers with `x-jupiter-shadow-ack: <mode>`;
//! [`PropagateLayer`] (clients) writes the current tag onto outgoing requests; [`inject_grpc`]
//! is the same as a tonic interceptor.
//!
//! # The switch (`[shadow] mode`)
//!
//! | mode | shadow requests |
//! |---|---|
//! | `off` (default) | refused: HTTP 403, gRPC `PERMISSION_DENIED` |
//! | `on` | served; storage uses its shadow target |
//! | `watch` | observer mode: logged and counted, reads served from live data, writes refused |
//!
//! # Storage
//!
//! [`ShadowPolicy`] is what redis-client, objstore and cache consult: live traffic is untouched,
//! shadow traffic goes to the shadow target (a key prefix, or a separate store), and a shadow
//! request with no shadow target is refused — reads too, so shadow and live data never mix.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;

use crate::metrics::Metrics;

/// The shadow marker header (Go Jupiter's).
pub const HEADER: &str = "x-jupiter-shadow";
/// The test-run id header.
pub const RUN_HEADER: &str = "x-jupiter-shadow-run";
/// The acknowledgement a server sends back on shadow requests: its mode.
pub const ACK_HEADER: &str = "x-jupiter-shadow-ack";
/// The W3C baggage entry for the marker.
pub const BAGGAGE_KEY: &str = "jupiter.shadow";
/// The W3C baggage entry for the run id.
pub const BAGGAGE_RUN_KEY: &str = "jupiter.shadow.run";
/// Longest run id accepted from the wire.
pub const MAX_RUN_ID: usize = 64;

tokio::task_local! {
    static CURRENT: Option<ShadowContext>;
}

/// A service's shadow switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShadowMode {
    /// Shadow requests are refused.
    #[default]
    Off,
    /// Shadow requests are served against shadow storage.
    On,
    /// Shadow requests are logged and counted; reads served from live data, writes refused.
    Watch,
}

impl ShadowMode {
    /// `off`, `on` or `watch`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowMode::Off => "off",
            ShadowMode::On => "on",
            ShadowMode::Watch => "watch",
        }
    }

    fn from_u8(v: u8) -> ShadowMode {
        match v {
            1 => ShadowMode::On,
            2 => ShadowMode::Watch,
            _ => ShadowMode::Off,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            ShadowMode::Off => 0,
            ShadowMode::On => 1,
            ShadowMode::Watch => 2,
        }
    }
}

/// The `[shadow]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ShadowConfig {
    /// The switch. Default is `off`: a service must opt in to shadow traffic.
    pub mode: ShadowMode,
}

/// The tag of one shadow request. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowContext {
    run_id: Option<Arc<str>>,
    mode: ShadowMode,
}

impl Default for ShadowContext {
    fn default() -> Self {
        ShadowContext::new()
    }
}

impl ShadowContext {
    /// A shadow tag without run id, in mode `on` (what a load generator starts with).
    pub fn new() -> Self {
        ShadowContext {
            run_id: None,
            mode: ShadowMode::On,
        }
    }

    /// Sets the test-run id.
    #[must_use]
    pub fn with_run_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.run_id = Some(id.into());
        self
    }

    /// The test-run id, if any.
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    /// The switch of the service that admitted the request (`on` outside any server).
    pub fn mode(&self) -> ShadowMode {
        self.mode
    }

    /// The tag of the current task, if it is shadow traffic.
    pub fn current() -> Option<ShadowContext> {
        CURRENT.try_with(Clone::clone).ok().flatten()
    }

    /// Runs `fut` with `ctx` as the tag (`None`: live traffic, even inside a shadow scope).
    pub async fn scope<F: Future>(ctx: Option<ShadowContext>, fut: F) -> F::Output {
        CURRENT.scope(ctx, fut).await
    }

    /// Runs `f` with `ctx` as the tag, synchronously.
    pub fn sync_scope<R>(ctx: Option<ShadowContext>, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(ctx, f)
    }

    /// Reads the tag from request headers: the marker header or the baggage entry.
    pub fn from_headers(headers: &HeaderMap) -> Option<ShadowContext> {
        let mut shadow = headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(truthy);
        let mut run_id = headers
            .get(RUN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        for value in headers
            .get_all("baggage")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for member in value.split(',') {
                let kv = member.split(';').next().unwrap_or("");
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                match k.trim() {
                    BAGGAGE_KEY => shadow |= truthy(v.trim()),
                    BAGGAGE_RUN_KEY if run_id.is_none() => run_id = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
        }
        if !shadow {
            return None;
        }
        // Bounded and printable: it ends up in logs and metrics' neighbours.
        let run_id = run_id.filter(|id| {
            !id.is_empty() && id.len() <= MAX_RUN_ID && id.bytes().all(|b| b.is_ascii_graphic())
        });
        Some(ShadowContext {
            run_id: run_id.map(Arc::from),
            mode: ShadowMode::On,
        })
    }

    /// Writes the tag onto outgoing headers (marker, run id, and the baggage entries appended to
    /// any existing baggage).
    pub fn inject(&self, headers: &mut HeaderMap) {
        headers.insert(HEADER, HeaderValue::from_static("1"));
        let mut baggage = format!("{BAGGAGE_KEY}=1");
        if let Some(id) = self
            .run_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok().map(|v| (id, v)))
        {
            headers.insert(RUN_HEADER, id.1);
            baggage.push_str(&format!(",{BAGGAGE_RUN_KEY}={}", id.0));
        }
        let merged = match headers.get("baggage").and_then(|v| v.to_str().ok()) {
            Some(existing) if !existing.contains(BAGGAGE_KEY) => format!("{existing},{baggage}"),
            Some(existing) => existing.to_owned(),
            None => baggage,
        };
        if let Ok(v) = HeaderValue::from_str(&merged) {
            headers.insert("baggage", v);
        }
    }
}

fn truthy(v: &str) -> bool {
    matches!(v.trim(), "1" | "true" | "on" | "yes")
}

/// Whether the current task serves shadow traffic. One task-local read.
pub fn is_shadow() -> bool {
    CURRENT.try_with(Option::is_some).unwrap_or(false)
}

/// `tokio::spawn` that keeps the current shadow tag on the spawned task.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let ctx = ShadowContext::current();
    tokio::spawn(CURRENT.scope(ctx, fut))
}

/// A tonic client interceptor writing the current tag into the request metadata.
///
/// # Errors
///
/// Never; the signature is tonic's.
pub fn inject_grpc(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(ctx) = ShadowContext::current() {
        let mut headers = std::mem::take(req.metadata_mut()).into_headers();
        ctx.inject(&mut headers);
        *req.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
    }
    Ok(req)
}

/// A service's shadow switch, changeable at run time. Cheap to clone; clones share the switch.
#[derive(Clone, Debug)]
pub struct ShadowSwitch(Arc<AtomicU8>);

impl ShadowSwitch {
    /// A switch in `mode`.
    pub fn new(mode: ShadowMode) -> Self {
        ShadowSwitch(Arc::new(AtomicU8::new(mode.to_u8())))
    }

    /// The current mode.
    pub fn mode(&self) -> ShadowMode {
        ShadowMode::from_u8(self.0.load(Ordering::Relaxed))
    }

    /// Changes the mode.
    pub fn set(&self, mode: ShadowMode) {
        self.0.store(mode.to_u8(), Ordering::Relaxed);
    }

    /// A switch that follows the `[shadow]` section of `config` (dynamic reloads included).
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// The section is invalid.
    pub fn from_config(config: &crate::Config) -> Result<Self, crate::Error> {
        let mut rx = config.subscribe::<ShadowConfig>("shadow")?;
        let switch = ShadowSwitch::new(rx.borrow_and_update().mode);
        let weak = Arc::downgrade(&switch.0);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(cell) = weak.upgrade() else { return };
                let mode = rx.borrow_and_update().mode;
                cell.store(mode.to_u8(), Ordering::Relaxed);
                tracing::info!(mode = mode.as_str(), "shadow switch changed");
            }
        });
        Ok(switch)
    }
}

type ShadowCounter = Family<Vec<(&'static str, String)>, Counter>;

/// Server-side tower layer: extracts the tag, applies the switch, acknowledges, counts.
/// Works for axum and tonic servers (both are `http::Request` services).
///
/// Every request runs in a scope: a request without the tag runs as live traffic even if the
/// connection's task was shadow before, so the tag never leaks between requests of a reused
/// connection.
#[derive(Clone)]
pub struct ShadowLayer {
    shared: Arc<LayerShared>,
}

struct LayerShared {
    service: String,
    switch: ShadowSwitch,
    counts: ShadowCounter,
}

impl fmt::Debug for ShadowLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowLayer")
            .field("service", &self.shared.service)
            .field("mode", &self.shared.switch.mode())
            .finish()
    }
}

impl ShadowLayer {
    /// A layer for `service` following `switch`, counting into `metrics` as
    /// `shadow_requests_total{service, traffic, outcome}`.
    pub fn new(service: impl Into<String>, switch: ShadowSwitch, metrics: &Metrics) -> Self {
        let counts = ShadowCounter::default();
        metrics.register(
            "shadow_requests",
            "Requests by shadow tag and outcome.",
            counts.clone(),
        );
        ShadowLayer {
            shared: Arc::new(LayerShared {
                service: service.into(),
                switch,
                counts,
            }),
        }
    }
}

impl<S> tower::Layer<S> for ShadowLayer {
    type Service = ShadowService<S>;

    fn layer(&self, inner: S) -> ShadowService<S> {
        ShadowService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`ShadowLayer`] wraps around a server.
#[derive(Clone)]
pub struct ShadowService<S> {
    inner: S,
    shared: Arc<LayerShared>,
}

impl<S> fmt::Debug for ShadowService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowService")
            .field("service", &self.shared.service)
            .finish_non_exhaustive()
    }
}

/// Response body of a [`ShadowService`]: the inner body, or a refusal.
pub type ShadowBody<B> = Either<B, Full<Bytes>>;

impl LayerShared {
    fn count(&self, traffic: &'static str, outcome: &'static str) {
        self.counts
            .get_or_create(&vec![
                ("service", self.service.clone()),
                ("traffic", traffic.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    fn refusal<B>(&self, grpc: bool) -> Response<ShadowBody<B>> {
        let msg = format!(
            "shadow traffic refused: service {} has shadow mode off",
            self.service
        );
        let mut resp = if grpc {
            // Trailers-only gRPC response: status in the headers.
            let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
            let h = r.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from_static("7"));
            if let Ok(v) = HeaderValue::from_str(&msg) {
                h.insert("grpc-message", v);
            }
            r
        } else {
            let mut r = Response::new(Either::Right(Full::new(Bytes::from(format!("{msg}\n")))));
            *r.status_mut() = StatusCode::FORBIDDEN;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        };
        resp.headers_mut()
            .insert(ACK_HEADER, HeaderValue::from_static("off"));
        resp
    }
}

impl<S, B, RB> tower::Service<Request<B>> for ShadowService<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<ShadowBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        let Some(mut ctx) = ShadowContext::from_headers(req.headers()) else {
            shared.count("live", "served");
            let fut = self.inner.call(req);
            return Box::pin(
                async move { CURRENT.scope(None, fut).await.map(|r| r.map(Either::Left)) },
            );
        };
        let mode = shared.switch.mode();
        if mode == ShadowMode::Off {
            shared.count("shadow", "refused");
            let grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/grpc"));
            let resp = shared.refusal(grpc);
            return Box::pin(async move { Ok(resp) });
        }
        ctx.mode = mode;
        shared.count("shadow", "served");
        if mode == ShadowMode::Watch {
            tracing::info!(service = %shared.service, path = req.uri().path(), run = ctx.run_id(), "shadow request observed (watch mode)");
        }
        // The inner future is created inside the scope too: handlers may read the tag in
        // their synchronous part.
        let fut = CURRENT.sync_scope(Some(ctx.clone()), || self.inner.call(req));
        Box::pin(async move {
            let mut resp = CURRENT.scope(Some(ctx), fut).await?.map(Either::Left);
            resp.headers_mut()
                .insert(ACK_HEADER, HeaderValue::from_static(mode.as_str()));
            Ok(resp)
        })
    }
}

/// Client-side tower layer: writes the current tag onto outgoing requests (HTTP clients and
/// tonic channels alike).
#[derive(Clone, Copy, Debug, Default)]
pub struct PropagateLayer;

impl<S> tower::Layer<S> for PropagateLayer {
    type Service = Propagate<S>;

    fn layer(&self, inner: S) -> Propagate<S> {
        Propagate { inner }
    }
}

/// The service [`PropagateLayer`] wraps around a client.
#[derive(Clone, Debug)]
pub struct Propagate<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for Propagate<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        // `call` runs in the caller's task, where the tag is.
        if let Some(ctx) = ShadowContext::current() {
            ctx.inject(req.headers_mut());
        }
        self.inner.call(req)
    }
}

/// Where a storage client sends shadow traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShadowTarget {
    /// Nowhere: shadow requests are refused.
    None,
    /// The same store, keys prefixed (e.g. `shadow:`); the prefix keeps Redis hash tags intact.
    KeyPrefix(Arc<[u8]>),
    /// A separate store or namespace the client routes to; keys unchanged.
    Separate,
}

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Does not change data.
    Read,
    /// Changes data.
    Write,
}

/// Where one storage operation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Live data (live traffic, or a read in watch mode).
    Live,
    /// The shadow target.
    Shadow,
}

/// A shadow request a storage client refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shadow {access} refused by {store}: {reason}")]
pub struct ShadowRefused {
    /// `read` or `write`.
    pub access: &'static str,
    /// The store, e.g. `redis.main`.
    pub store: String,
    /// Why.
    pub reason: &'static str,
}

/// The storage side of shadow traffic: consulted by redis-client, objstore and cache for every
/// operation. Cheap to clone.
///
/// # Examples
///
/// ```
/// use jupiter_core::shadow::{Access, Route, ShadowContext, ShadowPolicy};
///
/// let policy = ShadowPolicy::key_prefix("redis.main", "shadow:");
/// assert_eq!(policy.route(Access::Write), Ok(Route::Live));
/// assert_eq!(&*policy.map_key(Route::Live, b"user:1"), b"user:1");
/// ShadowContext::sync_scope(Some(ShadowContext::new()), || {
///     let route = policy.route(Access::Write).unwrap();
///     assert_eq!(&*policy.map_key(route, b"user:1"), b"shadow:user:1");
/// });
/// let strict = ShadowPolicy::none("redis.main");
/// ShadowContext::sync_scope(Some(ShadowContext::new()), || assert!(strict.route(Access::Write).is_err()));
/// ```
#[derive(Clone, Debug)]
pub struct ShadowPolicy {
    store: Arc<str>,
    target: ShadowTarget,
}

impl ShadowPolicy {
    /// No shadow target: shadow requests are refused.
    pub fn none(store: &str) -> Self {
        ShadowPolicy {
            store: Arc::from(store),
            target: ShadowTarget::None,
        }
    }

    /// Shadow keys live beside live ones under `prefix`.
    pub fn key_prefix(store: &str, prefix: impl AsRef<[u8]>) -> Self {
        ShadowPolicy {
            store: Arc::from(store),
            target: ShadowTarget::KeyPrefix(Arc::from(prefix.as_ref())),
        }
    }

    /// Shadow traffic goes to a separate store the client routes to.
    pub fn separate(store: &str) -> Self {
        ShadowPolicy {
            store: Arc::from(store),
            target: ShadowTarget::Separate,
        }
    }

    /// The target.
    pub fn target(&self) -> &ShadowTarget {
        &self.target
    }

    /// Decides an operation for the current task's tag.
    ///
    /// # Errors
    ///
    /// Shadow traffic with mode `off`, a write in mode `watch`, or no shadow target.
    pub fn route(&self, access: Access) -> Result<Route, ShadowRefused> {
        // Fast path for live traffic: one task-local read, no clone.
        let Some(mode) = CURRENT
            .try_with(|c| c.as_ref().map(|c| c.mode))
            .ok()
            .flatten()
        else {
            return Ok(Route::Live);
        };
        let refuse = |reason| {
            Err(ShadowRefused {
                access: if access == Access::Read {
                    "read"
                } else {
                    "write"
                },
                store: self.store.to_string(),
                reason,
            })
        };
        match (mode, access) {
            (ShadowMode::Off, _) => refuse("shadow traffic is off"),
            (ShadowMode::Watch, Access::Read) => Ok(Route::Live),
            (ShadowMode::Watch, Access::Write) => refuse("watch mode serves reads only"),
            (ShadowMode::On, _) if self.target == ShadowTarget::None => {
                refuse("no shadow target configured; shadow traffic must never touch live data")
            }
            (ShadowMode::On, _) => Ok(Route::Shadow),
        }
    }

    /// The key to use for `route`: prefixed for a shadow route with a key-prefix target.
    pub fn map_key<'a>(&self, route: Route, key: &'a [u8]) -> Cow<'a, [u8]> {
        match (route, &self.target) {
            (Route::Shadow, ShadowTarget::KeyPrefix(prefix)) => {
                let mut k = Vec::with_capacity(prefix.len() + key.len());
                k.extend_from_slice(prefix);
                k.extend_from_slice(key);
                Cow::Owned(k)
            }
            _ => Cow::Borrowed(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn extracts_marker_and_baggage() {
        assert!(ShadowContext::from_headers(&headers(&[])).is_none());
        assert!(ShadowContext::from_headers(&headers(&[(HEADER, "0")])).is_none());
        let c =
            ShadowContext::from_headers(&headers(&[(HEADER, "1"), (RUN_HEADER, "run-7")])).unwrap();
        assert_eq!(c.run_id(), Some("run-7"));
        let c = ShadowContext::from_headers(&headers(&[(
            "baggage",
            "a=b, jupiter.shadow=1;p=q, jupiter.shadow.run=r9",
        )]))
        .unwrap();
        assert_eq!(c.run_id(), Some("r9"));
        // Oversized or non-printable run ids are dropped, the tag stays.
        let long = "x".repeat(MAX_RUN_ID + 1);
        assert_eq!(
            ShadowContext::from_headers(&headers(&[(HEADER, "1"), (RUN_HEADER, &long)]))
                .unwrap()
                .run_id(),
            None
        );
    }

    #[test]
    fn inject_round_trips_and_keeps_other_baggage() {
        let mut h = headers(&[("baggage", "tenant=42")]);
        ShadowContext::new().with_run_id("r1").inject(&mut h);
        assert_eq!(
            h.get("baggage").unwrap(),
            "tenant=42,jupiter.shadow=1,jupiter.shadow.run=r1"
        );
        let back = ShadowContext::from_headers(&h).unwrap();
        assert_eq!(back.run_id(), Some("r1"));
    }

    #[test]
    fn policy_decisions() {
        let p = ShadowPolicy::key_prefix("s", "shadow:");
        let with = |mode, f: &dyn Fn()| {
            ShadowContext::sync_scope(Some(ShadowContext { run_id: None, mode }), f);
        };
        with(ShadowMode::On, &|| {
            assert_eq!(p.route(Access::Read), Ok(Route::Shadow))
        });
        with(ShadowMode::Watch, &|| {
            assert_eq!(p.route(Access::Read), Ok(Route::Live));
            assert!(p.route(Access::Write).is_err());
        });
        with(ShadowMode::Off, &|| assert!(p.route(Access::Read).is_err()));
        let none = ShadowPolicy::none("redis.main");
        with(ShadowMode::On, &|| {
            let e = none.route(Access::Write).unwrap_err();
            assert_eq!(
                e.to_string(),
                "shadow write refused by redis.main: no shadow target configured; shadow traffic must never touch live data"
            );
            assert!(none.route(Access::Read).is_err());
        });
        // Live inside a shadow scope when explicitly scoped as live.
        with(ShadowMode::On, &|| {
            ShadowContext::sync_scope(None, || {
                assert_eq!(none.route(Access::Write), Ok(Route::Live))
            })
        });
    }
}
