//! Tracing: spans and events name the command and the server, never keys or values.
//!
//! Alone in its binary: tracing caches per-callsite interest process-wide, and a test in
//! another thread hitting the same callsites without a subscriber could race with this one.

mod common;

use common::connect_url;
use testkit::RedisServer;

#[test]
fn tracing_names_commands_and_never_values() {
    let redis = RedisServer::start();
    let secured = RedisServer::builder()
        .config("requirepass", "right-pw")
        .start();
    let ((), out) = testkit::with_logs(tracing::Level::DEBUG, async {
        let c = connect_url(&redis.url()).await.unwrap();
        c.set("secret-key", "secret-value").await.unwrap();
        let _ = c.incr("secret-key").await.unwrap_err();
        // Passwords never reach a log line: neither a refused one nor the right one.
        let refused = connect_url(&format!("redis://:hunter2@{}", secured.addr()))
            .await
            .unwrap_err();
        assert!(!format!("{refused:?}").contains("hunter2"), "{refused:?}");
        let ok = connect_url(&format!("redis://:right-pw@{}", secured.addr()))
            .await
            .unwrap();
        ok.ping().await.unwrap();
        tracing::debug!(config = ?ok.config(), "the effective configuration");
    });
    assert!(
        out.contains("redis") && out.contains("command=\"SET\""),
        "{out}"
    );
    assert!(out.contains("command=\"INCR\""), "{out}");
    assert!(out.contains("redis command failed"), "{out}");
    assert!(!out.contains("secret-value"), "{out}");
    assert!(!out.contains("secret-key"), "{out}");
    assert!(out.contains("the effective configuration"), "{out}");
    assert!(out.contains("redis connect failed"), "{out}");
    for secret in ["hunter2", "right-pw"] {
        assert!(!out.contains(secret), "{secret} logged: {out}");
    }
}
