//! W3C trace-context propagation through the OpenTelemetry layer, and OTLP export to a
//! stand-in collector on loopback (feature `otel`).
#![cfg(feature = "otel")]

use jupiter_core::telemetry::{extract, inject, layer_for};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
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

/// A stand-in OTLP collector: the generated TraceService, keeping every export it receives.
struct Collector(tokio::sync::mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_with_the_service_name() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let config = jupiter_core::telemetry::TelemetryConfig {
        endpoint: format!("http://{addr}"),
        service_name: "otlp-test".into(),
    };
    let (layer, guard) = jupiter_core::telemetry::init(&config).unwrap();
    let (filter, _handle) = reload::Layer::new(EnvFilter::new("trace"));
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(vec![layer]);
    tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("checkout", order = 42);
        let _in = outer.enter();
        tracing::info_span!("reserve stock").in_scope(|| {});
    });
    // Shutdown exports what the batch holds; it blocks, so off the runtime's threads.
    tokio::task::spawn_blocking(move || guard.flush())
        .await
        .unwrap();
    let mut names = Vec::new();
    let mut services = Vec::new();
    while names.len() < 2 {
        let export = tokio::time::timeout(std::time::Duration::from_secs(20), received.recv())
            .await
            .expect("the collector receives an export")
            .expect("collector open");
        for rs in export.resource_spans {
            for attr in rs.resource.iter().flat_map(|r| &r.attributes) {
                if attr.key == "service.name" {
                    services.push(format!("{:?}", attr.value));
                }
            }
            for ss in rs.scope_spans {
                names.extend(ss.spans.into_iter().map(|s| s.name));
            }
        }
    }
    names.sort();
    assert_eq!(names, ["checkout", "reserve stock"]);
    assert!(
        services.iter().all(|s| s.contains("otlp-test")) && !services.is_empty(),
        "{services:?}"
    );
}
