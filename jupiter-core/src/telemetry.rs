//! OpenTelemetry trace export (OTLP over gRPC) and W3C trace-context propagation.
//!
//! Enabled by the `otel` feature. [`init`] builds the exporter and returns a tracing layer to
//! pass to [`logging::init_with`](crate::logging::init_with), and installs the W3C
//! `traceparent`/`tracestate` propagator globally; [`inject`] and [`extract`] carry the current
//! span across HTTP hops.

use std::fmt;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;

use crate::Error;
use crate::logging::BoxedLayer;

/// The `[telemetry]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP gRPC collector endpoint. Default is `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// `service.name` resource attribute. Default is `jupiter`.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            endpoint: "http://127.0.0.1:4317".to_owned(),
            service_name: "jupiter".to_owned(),
        }
    }
}

/// Keeps the exporter alive; [`flush`](TelemetryGuard::flush) at shutdown.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard").finish_non_exhaustive()
    }
}

impl TelemetryGuard {
    /// Exports what is buffered and stops the exporter.
    pub fn flush(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "telemetry flush failed");
        }
    }
}

/// Builds the OTLP exporter and the tracing layer, and installs the W3C propagator.
///
/// # Errors
///
/// The exporter could not be built (bad endpoint).
pub fn init(config: &TelemetryConfig) -> Result<(BoxedLayer, TelemetryGuard), Error> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(config.endpoint.clone())
        .build()
        .map_err(|e| {
            Error::Logging(format!(
                "opentelemetry exporter for {}: {e}",
                config.endpoint
            ))
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok((layer_for(&provider), TelemetryGuard { provider }))
}

/// A tracing layer exporting through `provider`, with the W3C propagator installed.
pub fn layer_for(provider: &SdkTracerProvider) -> BoxedLayer {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("jupiter"))
        .boxed()
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes the current span's context as `traceparent` (and `tracestate`) headers.
pub fn inject(headers: &mut http::HeaderMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// Makes `span` a child of the context in `headers`, if they carry one.
pub fn extract(headers: &http::HeaderMap, span: &tracing::Span) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}
