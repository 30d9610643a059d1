//! The tag ([`ShadowContext`]), its carriers (headers, baggage, gRPC metadata) and the task-local scope.

use super::*;

/// The tag of one shadow request. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowContext {
    pub(super) run_id: Option<Arc<str>>,
    pub(super) mode: ShadowMode,
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

    /// Sets the mode, as a server's [`ShadowLayer`](super::ShadowLayer) does from its switch
    /// (for work admitted some other way: a queue consumer, a test).
    #[must_use]
    pub fn with_mode(mut self, mode: ShadowMode) -> Self {
        self.mode = mode;
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
