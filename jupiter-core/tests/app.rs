//! App lifecycle: start-up order, shutdown order, drain deadline. Time is paused, so the
//! grace and deadline delays cost nothing and are exact.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jupiter_core::app::{App, Registrar, ShutdownConfig, component_fn};
use jupiter_core::governance::Health;
use jupiter_core::{BoxError, Error};
use tokio::time::Instant;

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(String, Instant)>>>);

impl Log {
    fn push(&self, e: impl Into<String>) {
        self.0.lock().unwrap().push((e.into(), Instant::now()));
    }
    fn events(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(e, _)| e.clone())
            .collect()
    }
    fn at(&self, e: &str) -> Instant {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(x, _)| x == e)
            .unwrap()
            .1
    }
}

struct Recorder {
    log: Log,
    health: Health,
}

impl Registrar for Recorder {
    fn register(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            self.log
                .push(format!("register ready={}", self.health.is_ready()));
            Ok(())
        })
    }
    fn deregister(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            self.log
                .push(format!("deregister ready={}", self.health.is_ready()));
            Ok(())
        })
    }
}

fn shutdown(grace_ms: u64, deadline_ms: u64) -> ShutdownConfig {
    ShutdownConfig {
        grace: Duration::from_millis(grace_ms),
        deadline: Duration::from_millis(deadline_ms),
    }
}

fn app_with(log: &Log, shutdown_cfg: ShutdownConfig) -> App {
    let app = App::builder("test")
        .governance(None)
        .handle_signals(false)
        .shutdown(shutdown_cfg)
        .build();
    let health = app.health().clone();
    let log2 = log.clone();
    app.registrar(Recorder {
        log: log.clone(),
        health,
    })
    .on_flush(move || async move { log2.push("flush") })
}

#[tokio::test(start_paused = true)]
async fn registers_after_serving_and_shuts_down_in_order() {
    let log = Log::default();
    let app = app_with(&log, shutdown(2000, 30_000));
    let stop = app.shutdown_handle();
    let l = log.clone();
    let app = app.component(component_fn("server", move |mut ctx| async move {
        // Binding takes a while; registration must wait for it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        l.push("server ready");
        ctx.ready();
        ctx.stopped().await;
        l.push("server draining");
        tokio::time::sleep(Duration::from_millis(100)).await;
        l.push("server stopped");
        Ok(())
    }));
    let running = tokio::spawn(app.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    log.push("shutdown requested");
    stop.shutdown();
    running.await.unwrap().unwrap();

    assert_eq!(
        log.events(),
        [
            "server ready",
            "register ready=true",
            "shutdown requested",
            "deregister ready=false",
            "server draining",
            "server stopped",
            "flush",
        ]
    );
    assert_eq!(
        log.at("server draining") - log.at("deregister ready=false"),
        Duration::from_millis(2000),
        "grace delay"
    );
}

#[tokio::test(start_paused = true)]
async fn drain_deadline_aborts_stuck_components() {
    let log = Log::default();
    let app = app_with(&log, shutdown(0, 5_000));
    let stop = app.shutdown_handle();
    let app = app.component(component_fn("stuck", |mut ctx| async move {
        ctx.ready();
        ctx.stopped().await;
        std::future::pending::<()>().await;
        Ok(())
    }));
    let running = tokio::spawn(app.run());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let t0 = Instant::now();
    stop.shutdown();
    let err = running.await.unwrap().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        err.to_string(),
        "draining 1 component(s) did not complete within 5s"
    );
    assert_eq!(Instant::now() - t0, Duration::from_secs(5));
    assert_eq!(
        log.events().last().unwrap(),
        "flush",
        "flush runs even after a timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_component_failing_at_start_up_means_no_registration() {
    let log = Log::default();
    let app = app_with(&log, shutdown(100, 1000))
        .component(component_fn("broken", |_ctx| async move {
            Err::<(), BoxError>("port already in use".into())
        }));
    let err = app.run().await.unwrap_err();
    match &err {
        Error::Component { name, source } => {
            assert_eq!(name, "broken");
            assert_eq!(source.to_string(), "port already in use");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(
        !log.events().iter().any(|e| e.starts_with("register")),
        "{:?}",
        log.events()
    );
}

#[tokio::test(start_paused = true)]
async fn a_component_stopping_on_its_own_shuts_the_app_down() {
    let log = Log::default();
    let app = app_with(&log, shutdown(100, 1000))
        .component(component_fn("short", |mut ctx| async move {
            ctx.ready();
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err::<(), BoxError>("lost the connection".into())
        }))
        .component(component_fn("long", |mut ctx| async move {
            ctx.ready();
            ctx.stopped().await;
            Ok(())
        }));
    let err = app.run().await.unwrap_err();
    assert!(err.to_string().contains("\"short\""), "{err}");
    assert_eq!(
        log.events(),
        ["register ready=true", "deregister ready=false", "flush"]
    );
}

/// The status code of `GET path` on `addr`, or `None` when nothing answers.
async fn status_of(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1)?.parse().ok()
}

/// Polls `GET path` until it answers `want` (bounded: a liveness limit, not a verdict).
async fn wait_status(addr: std::net::SocketAddr, path: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = status_of(addr, path).await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} answered {got:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn governance_reports_readiness_through_the_lifecycle() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
    // A grace delay between "not ready" and draining, long enough to see 503 from a
    // governance server that still runs.
    let app = App::builder("gov")
        .governance(Some("127.0.0.1:0".parse().unwrap()))
        .metrics(&jupiter_core::Metrics::new())
        .handle_signals(false)
        .shutdown(shutdown(3000, 1000))
        .build()
        .on_governance_bound(move |addr| tx.send(addr).unwrap());
    let stop = app.shutdown_handle();
    let health = app.health().clone();
    let app = app.component(component_fn("c", |mut ctx| async move {
        // Ready only when the test says so.
        let _ = go.await;
        ctx.ready();
        ctx.stopped().await;
        Ok(())
    }));
    let running = tokio::spawn(app.run());
    let addr = rx.await.unwrap();
    // Serving governance, not yet ready: alive, and /health/ready says 503.
    assert_eq!(status_of(addr, "/health/live").await, Some(200));
    assert_eq!(status_of(addr, "/health/ready").await, Some(503));
    assert!(!health.is_ready());
    go_tx.send(()).unwrap();
    wait_status(addr, "/health/ready", 200).await;
    assert!(health.is_ready());
    // Shutdown starts: readiness is withdrawn while the server still answers (the grace
    // delay), then everything stops.
    stop.shutdown();
    wait_status(addr, "/health/ready", 503).await;
    assert_eq!(status_of(addr, "/health/live").await, Some(200));
    running.await.unwrap().unwrap();
    assert!(!health.is_ready());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "governance server stopped"
    );
}
