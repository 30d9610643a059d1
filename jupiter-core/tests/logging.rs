//! Run-time log level changes through the governance server. One test per binary: the
//! subscriber is global.

mod common;

use common::http;
use jupiter_core::governance::Governance;
use jupiter_core::logging::{self, LogConfig, LogFormat};
use jupiter_core::metrics::Metrics;

#[tokio::test]
async fn log_level_changes_at_run_time() {
    // SAFETY of the test: RUST_LOG would override the configured level.
    assert!(
        std::env::var("RUST_LOG").map_or(true, |v| v.is_empty()),
        "unset RUST_LOG for this test"
    );
    let log = logging::init(&LogConfig {
        level: "warn".into(),
        format: LogFormat::Json,
    })
    .unwrap();
    assert!(!tracing::enabled!(tracing::Level::INFO));

    let addr = common::governance(Governance::builder().metrics(&Metrics::new()).log(&log)).await;

    assert_eq!(http(addr, "GET", "/log/level", "").await.body, "warn\n");
    let set = http(addr, "PUT", "/log/level", "info,hyper=warn").await;
    assert_eq!((set.status, set.body.as_str()), (200, "info,hyper=warn\n"));
    assert!(tracing::enabled!(tracing::Level::INFO));
    assert!(!tracing::enabled!(tracing::Level::DEBUG));

    let bad = http(addr, "PUT", "/log/level", "info,=[").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("invalid log level"), "{}", bad.body);
    assert_eq!(
        log.level(),
        "info,hyper=warn",
        "a bad level keeps the old one"
    );

    // A second global subscriber is refused with a clear error.
    let err = logging::init(&LogConfig::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot install the log subscriber"),
        "{err}"
    );
}
