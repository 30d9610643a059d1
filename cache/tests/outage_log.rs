//! An L2 outage is logged once when it starts and once when it ends, not once per call.
//!
//! Alone in its binary: tracing caches per-callsite interest process-wide.

use std::time::Duration;

use cache::{Cache, RedisL2};
use redis_client::Client;
use testkit::RedisServer;

#[test]
fn an_l2_outage_is_logged_once_per_outage_not_per_call() {
    let redis = RedisServer::start();
    let ((), text) = testkit::with_logs(tracing::Level::INFO, async {
        let client = Client::builder()
            .url(&redis.url())
            .command_timeout(Duration::from_secs(2))
            .metrics(&jupiter_core::Metrics::new())
            .connect()
            .await
            .unwrap();
        let cache = Cache::<u64, String>::builder("logged")
            .metrics(&jupiter_core::Metrics::new())
            .l2_timeout(Duration::from_millis(200))
            .l2_retry(Duration::from_millis(50))
            .l2(RedisL2::new(client))
            .build()
            .unwrap();
        let load = |k: u64| {
            let cache = cache.clone();
            async move {
                let v = tokio::time::timeout(
                    Duration::from_secs(30),
                    cache.get_or_load(&k, move || async move { Some(format!("v{k}")) }),
                )
                .await
                .expect("resolves")
                .unwrap();
                assert_eq!(v, Some(format!("v{k}")));
            }
        };
        for outage in 0..2u64 {
            redis.kill();
            // Many calls during the outage, the probe retried several times meanwhile.
            for k in 0..40 {
                load(outage * 1000 + k).await;
            }
            assert!(cache.is_degraded());
            redis.restart();
            let mut k = 500;
            while cache.is_degraded() {
                k += 1;
                assert!(k < 5_000, "L2 never came back");
                load(outage * 1000 + k).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("L2 unavailable"),
        2,
        "one warning per outage:\n{text}"
    );
    assert_eq!(count("L2 is back"), 2, "one notice per recovery:\n{text}");
}
