//! W3C trace-context propagation through the OpenTelemetry layer (feature `otel`).
#![cfg(feature = "otel")]

use jupiter_core::telemetry::{extract, inject, layer_for};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, reload};

#[test]
fn traceparent_crosses_a_hop() {
    let provider = SdkTracerProvider::builder().build();
    let (filter, _handle) = reload::Layer::new(EnvFilter::new("trace"));
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(vec![layer_for(&provider)]);
    tracing::subscriber::with_default(subscriber, || {
        let outgoing = tracing::info_span!("client call");
        let entered = outgoing.enter();
        let mut headers = http::HeaderMap::new();
        inject(&mut headers);
        let traceparent = headers
            .get("traceparent")
            .expect("traceparent injected")
            .to_str()
            .unwrap()
            .to_owned();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        let sent_trace = outgoing.context().span().span_context().trace_id();
        assert_eq!(parts[1], sent_trace.to_string());

        // The receiving side: a new span becomes a child of the sender's.
        let incoming = tracing::info_span!("server handle");
        extract(&headers, &incoming);
        assert_eq!(
            incoming.context().span().span_context().trace_id(),
            sent_trace
        );

        // No header, no parent: a fresh trace (outside the client span).
        drop(entered);
        let unrelated = tracing::info_span!("other");
        extract(&http::HeaderMap::new(), &unrelated);
        assert_ne!(
            unrelated.context().span().span_context().trace_id(),
            sent_trace
        );
    });
}
