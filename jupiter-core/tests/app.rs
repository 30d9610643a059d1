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

#[tokio::test]
async fn governance_reports_readiness_through_the_lifecycle() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let app = App::builder("gov")
        .governance(Some("127.0.0.1:0".parse().unwrap()))
        .metrics(&jupiter_core::Metrics::new())
        .handle_signals(false)
        .shutdown(shutdown(0, 1000))
        .build()
        .on_governance_bound(move |addr| tx.send(addr).unwrap());
    let stop = app.shutdown_handle();
    let health = app.health().clone();
    let app = app.component(component_fn("c", |mut ctx| async move {
        ctx.ready();
        ctx.stopped().await;
        Ok(())
    }));
    let running = tokio::spawn(app.run());
    let addr = rx.await.unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if health.is_ready() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(ready);
    let stream = tokio::net::TcpStream::connect(addr).await;
    assert!(stream.is_ok(), "governance server is listening");
    stop.shutdown();
    running.await.unwrap().unwrap();
    assert!(!health.is_ready());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "governance server stopped"
    );
}
