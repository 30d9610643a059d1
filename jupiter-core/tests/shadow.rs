//! Shadow traffic end to end over loopback: HTTP service → gRPC service, the tag crossing both
//! hops; no leak onto untagged requests of a reused connection; the switch's `off` and `watch`
//! modes; counters in /metrics; the spawn helper.

mod common;

use std::net::SocketAddr;

use axum::routing::get;
use common::echo::{Echo, say, serve};
use jupiter_core::metrics::Metrics;
use jupiter_core::shadow::{
    self, Access, PropagateLayer, ShadowContext, ShadowLayer, ShadowMode, ShadowPolicy,
    ShadowSwitch,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What a handler sees, in one line.
fn seen() -> String {
    let policy = ShadowPolicy::key_prefix("store", "shadow:");
    let write = match policy.route(Access::Write) {
        Ok(route) => format!(
            "{route:?}:{}",
            String::from_utf8_lossy(&policy.map_key(route, b"k"))
        ),
        Err(_) => "refused".to_owned(),
    };
    let read = policy
        .route(Access::Read)
        .map_or("refused".to_owned(), |r| format!("{r:?}"));
    let ctx = ShadowContext::current();
    format!(
        "shadow={} run={} write={write} read={read}",
        ctx.is_some(),
        ctx.as_ref().and_then(|c| c.run_id()).unwrap_or("-")
    )
}

struct Chain {
    http: SocketAddr,
    metrics: Metrics,
    orders: ShadowSwitch,
    inventory: ShadowSwitch,
}

async fn chain() -> Chain {
    let metrics = Metrics::new();
    let inventory = ShadowSwitch::new(ShadowMode::On);
    let orders = ShadowSwitch::new(ShadowMode::On);

    // Downstream: a gRPC service behind the shadow layer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = listener.local_addr().unwrap();
    let layer = ShadowLayer::new("inventory", inventory.clone(), &metrics);
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(Echo::new("inventory", |_| seen()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect_lazy();
    let downstream = tower::ServiceBuilder::new()
        .layer(PropagateLayer)
        .service(channel);

    // Upstream: an HTTP service that calls the gRPC one.
    let app = axum::Router::new()
        .route(
            "/order",
            get(move || {
                let downstream = downstream.clone();
                async move {
                    let mine = seen();
                    match say(downstream, "order").await {
                        Ok(reply) => (http::StatusCode::OK, format!("orders|{mine} -> {reply}")),
                        Err(status) => (
                            http::StatusCode::BAD_GATEWAY,
                            format!("orders|{mine} -> {:?}: {}", status.code(), status.message()),
                        ),
                    }
                }
            }),
        )
        .layer(ShadowLayer::new("orders", orders.clone(), &metrics));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Chain {
        http,
        metrics,
        orders,
        inventory,
    }
}

/// Sends one request on `conn` (keep-alive) and reads the response: status, ack header, body.
async fn request(
    conn: &mut BufReader<TcpStream>,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    let mut req = String::from("GET /order HTTP/1.1\r\nHost: test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.get_mut().write_all(req.as_bytes()).await.unwrap();
    let mut status_line = String::new();
    conn.read_line(&mut status_line).await.unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let (mut len, mut ack) = (0usize, None);
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().unwrap(),
            "x-jupiter-shadow-ack" => ack = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.unwrap();
    (status, ack, String::from_utf8(body).unwrap())
}

async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(addr).await.unwrap())
}

#[tokio::test]
async fn the_tag_crosses_http_and_grpc_and_never_leaks() {
    let c = chain().await;
    let mut conn = connect(c.http).await;

    let (status, ack, body) = request(
        &mut conn,
        &[("x-jupiter-shadow", "1"), ("x-jupiter-shadow-run", "run42")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ack.as_deref(),
        Some("on"),
        "the server acknowledges shadow mode"
    );
    assert_eq!(
        body,
        "orders|shadow=true run=run42 write=Shadow:shadow:k read=Shadow -> inventory|shadow=true run=run42 write=Shadow:shadow:k read=Shadow"
    );

    // Same connection, no tag: live at both hops, no acknowledgement.
    let (status, ack, body) = request(&mut conn, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ack, None);
    assert_eq!(
        body,
        "orders|shadow=false run=- write=Live:k read=Live -> inventory|shadow=false run=- write=Live:k read=Live"
    );

    // The W3C baggage carrier alone works too.
    let (_, _, body) = request(&mut conn, &[("baggage", "tenant=7, jupiter.shadow=1")]).await;
    assert!(
        body.starts_with("orders|shadow=true run=-") && body.contains("inventory|shadow=true"),
        "{body}"
    );

    let text = c.metrics.encode();
    for line in [
        "shadow_requests_total{service=\"orders\",traffic=\"shadow\",outcome=\"served\"} 2",
        "shadow_requests_total{service=\"orders\",traffic=\"live\",outcome=\"served\"} 1",
        "shadow_requests_total{service=\"inventory\",traffic=\"shadow\",outcome=\"served\"} 2",
        "shadow_requests_total{service=\"inventory\",traffic=\"live\",outcome=\"served\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[tokio::test]
async fn switch_off_refuses_and_watch_observes() {
    let c = chain().await;
    let mut conn = connect(c.http).await;

    // HTTP service off: 403 with the reason, live traffic unaffected.
    c.orders.set(ShadowMode::Off);
    let (status, ack, body) = request(&mut conn, &[("x-jupiter-shadow", "1")]).await;
    assert_eq!((status, ack.as_deref()), (403, Some("off")));
    assert_eq!(
        body,
        "shadow traffic refused: service orders has shadow mode off\n"
    );
    assert_eq!(request(&mut conn, &[]).await.0, 200);

    // gRPC service off: PERMISSION_DENIED reaches the caller.
    c.orders.set(ShadowMode::On);
    c.inventory.set(ShadowMode::Off);
    let (status, _, body) = request(&mut conn, &[("x-jupiter-shadow", "1")]).await;
    assert_eq!(status, 502);
    assert!(
        body.ends_with(
            "-> PermissionDenied: shadow traffic refused: service inventory has shadow mode off"
        ),
        "{body}"
    );

    // Watch: reads served from live data, writes refused, acknowledged as watch.
    c.inventory.set(ShadowMode::Watch);
    c.orders.set(ShadowMode::Watch);
    let (status, ack, body) = request(&mut conn, &[("x-jupiter-shadow", "1")]).await;
    assert_eq!((status, ack.as_deref()), (200, Some("watch")));
    assert_eq!(
        body,
        "orders|shadow=true run=- write=refused read=Live -> inventory|shadow=true run=- write=refused read=Live"
    );

    let text = c.metrics.encode();
    assert!(
        text.contains(
            "shadow_requests_total{service=\"orders\",traffic=\"shadow\",outcome=\"refused\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "shadow_requests_total{service=\"inventory\",traffic=\"shadow\",outcome=\"refused\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn spawned_work_keeps_the_tag_only_through_the_helper() {
    let ctx = ShadowContext::new().with_run_id("r1");
    let (helper, plain) = ShadowContext::scope(Some(ctx), async {
        let helper = shadow::spawn(async {
            ShadowContext::current().and_then(|c| c.run_id().map(str::to_owned))
        });
        let plain = tokio::spawn(async { shadow::is_shadow() });
        (helper.await.unwrap(), plain.await.unwrap())
    })
    .await;
    assert_eq!(helper.as_deref(), Some("r1"));
    assert!(
        !plain,
        "tokio::spawn drops task-locals; only shadow::spawn carries the tag"
    );
    assert!(!shadow::is_shadow());
}

#[tokio::test]
async fn the_grpc_interceptor_injects_the_tag() {
    let addr = serve(Echo::new("e", |req| {
        format!(
            "{:?}",
            req.metadata()
                .get("x-jupiter-shadow")
                .and_then(|v| v.to_str().ok())
        )
    }))
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let intercepted =
        tonic::service::interceptor::InterceptedService::new(channel, shadow::inject_grpc);
    let live = say(intercepted.clone(), "x").await.unwrap();
    assert_eq!(live, "e|None");
    let tagged = ShadowContext::scope(Some(ShadowContext::new()), say(intercepted, "x"))
        .await
        .unwrap();
    assert_eq!(tagged, "e|Some(\"1\")");
}

#[tokio::test]
async fn the_switch_follows_configuration_reloads() {
    use jupiter_core::config::{Config, DynamicEntry, DynamicLayer};
    let config = Config::builder()
        .toml("app.toml", "[shadow]\nmode = \"on\"\n")
        .no_env()
        .metrics(&Metrics::new())
        .build()
        .unwrap();
    let switch = ShadowSwitch::from_config(&config).unwrap();
    assert_eq!(switch.mode(), ShadowMode::On);
    let layer = |v: &str| DynamicLayer {
        source: "test".into(),
        entries: vec![DynamicEntry {
            key: "k".into(),
            path: "shadow.mode".into(),
            value: v.into(),
            document: false,
        }],
    };
    config.apply(&layer("watch")).unwrap();
    for _ in 0..100 {
        if switch.mode() == ShadowMode::Watch {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(switch.mode(), ShadowMode::Watch);
    // An invalid mode is rejected and the switch keeps its value.
    assert!(config.apply(&layer("sometimes")).is_err());
    assert_eq!(switch.mode(), ShadowMode::Watch);
}

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_shadow_requests_logs_carry_its_run_id() {
    use tower::ServiceExt;
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // This test's thread only (a current-thread runtime: the handler runs here too).
    let _guard = tracing::subscriber::set_default(subscriber);
    let metrics = Metrics::new();
    let app = axum::Router::new()
        .route(
            "/order",
            get(|| async {
                tracing::info!("order placed");
                "ok"
            }),
        )
        .layer(ShadowLayer::new(
            "orders",
            ShadowSwitch::new(ShadowMode::On),
            &metrics,
        ));
    let tagged = http::Request::get("/order")
        .header(shadow::HEADER, "1")
        .header(shadow::RUN_HEADER, "run-42")
        .body(axum::body::Body::empty())
        .unwrap();
    let live = http::Request::get("/order")
        .body(axum::body::Body::empty())
        .unwrap();
    for req in [tagged, live] {
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("order placed"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("shadow{run=run-42 mode=on}"),
        "the shadow request's line names its run: {}",
        lines[0]
    );
    assert!(
        !lines[1].contains("shadow{"),
        "a live request's line has no shadow span: {}",
        lines[1]
    );
}
