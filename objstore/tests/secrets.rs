//! Regression: the bearer token reached `Debug` output (client and server configuration, the
//! client handle). It must never reach `{:?}` or a log line.
//!
//! Alone in its binary: tracing caches per-callsite interest process-wide.

use std::time::Duration;

use bytes::Bytes;
use objstore::client::{Client, ClientConfig, PutOptions};
use objstore::config::ObjstoreConfig;
use objstore::engine::{Engine, EngineConfig};
use objstore::server::{Service, ServiceConfig, serve};

const TOKEN: &str = "sekr1t-T0KEN-4f9a";

#[test]
fn regression_tokens_never_reach_debug_output_or_logs() {
    let mut debug = Vec::new();
    let ((), logs) = testkit::with_logs(tracing::Level::DEBUG, async {
        let service_config = ServiceConfig {
            auth_token: Some(TOKEN.into()),
            ..ServiceConfig::default()
        };
        let file_config = ObjstoreConfig {
            auth_token: Some(TOKEN.into()),
            ..ObjstoreConfig::default()
        };
        debug.push(format!("{service_config:?}"));
        debug.push(format!("{file_config:?}"));
        debug.push(format!("{:?}", file_config.service()));
        let metrics = jupiter_core::Metrics::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let svc = Service::new(
            Engine::new(EngineConfig::default()),
            service_config,
            &metrics,
        );
        debug.push(format!("{svc:?}"));
        let shadow = jupiter_core::shadow::ShadowLayer::new(
            "objstore",
            jupiter_core::shadow::ShadowSwitch::new(jupiter_core::shadow::ShadowMode::On),
            &metrics,
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(svc, listener, shadow, async {
            let _ = stopped.await;
        }));
        let config = |token: &str| ClientConfig {
            timeout: Duration::from_secs(5),
            token: Some(token.to_owned()),
            ..ClientConfig::default()
        };
        debug.push(format!("{:?}", config(TOKEN)));
        let good = Client::connect(&addr, config(TOKEN)).await.unwrap();
        debug.push(format!("{good:?}"));
        good.put(b"k", Bytes::from_static(b"v"), PutOptions::default())
            .await
            .unwrap();
        // A wrong token: refused, and neither token is echoed.
        let bad = Client::connect(&addr, config("wrong-WR0NG-token"))
            .await
            .unwrap();
        let e = bad.get(b"k").await.unwrap_err();
        debug.push(format!("{e:?} {e}"));
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    });
    for d in &debug {
        assert!(!d.contains(TOKEN), "the token in Debug output: {d}");
        assert!(!d.contains("WR0NG"), "a token in Debug output: {d}");
    }
    assert!(
        debug.iter().filter(|d| d.contains("<redacted>")).count() >= 5,
        "redacted, not left out: {debug:?}"
    );
    assert!(
        !logs.contains(TOKEN) && !logs.contains("WR0NG"),
        "a token in the logs:\n{logs}"
    );
}
