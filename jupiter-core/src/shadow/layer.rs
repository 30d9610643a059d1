//! Tower layers: [`ShadowLayer`] for servers, [`PropagateLayer`] for clients.

use tracing::Instrument;

use super::*;

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
        // Every log line and span of the request's handling carries the run id: a service's
        // logs and traces say which load test a request came from.
        let span = tracing::info_span!(
            "shadow",
            run = %ctx.run_id().unwrap_or(""),
            mode = %mode.as_str()
        );
        // The inner future is created inside the scope too: handlers may read the tag in
        // their synchronous part.
        let fut = span.in_scope(|| CURRENT.sync_scope(Some(ctx.clone()), || self.inner.call(req)));
        Box::pin(
            async move {
                let mut resp = CURRENT.scope(Some(ctx), fut).await?.map(Either::Left);
                resp.headers_mut()
                    .insert(ACK_HEADER, HeaderValue::from_static(mode.as_str()));
                Ok(resp)
            }
            .instrument(span),
        )
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
