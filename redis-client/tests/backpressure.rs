//! A flood against a paused (SIGSTOP) server: callers see timeouts and backpressure, and the
//! client's memory stays bounded. Alone in its test binary so the process's resident memory
//! measures only this test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis_client::{Client, ClientConfig};
use testkit::RedisServer;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm resident field");
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_against_a_paused_server_is_bounded() {
    let redis = RedisServer::start();
    let config = ClientConfig {
        url: redis.url(),
        pool_size: Some(2),
        command_timeout: Duration::from_millis(20),
        queue_capacity: 256,
        max_in_flight: 1024,
        ..ClientConfig::default()
    };
    let client = Client::builder()
        .config(config)
        .metrics(&jupiter_core::Metrics::new())
        .connect()
        .await
        .unwrap();
    // 16 KiB values: the flood below would hold about 800 MiB if abandoned requests piled up.
    let value = Bytes::from(vec![b'x'; 16 * 1024]);
    // Set up (and checked at the end) with a deadline of its own: the 20 ms is for the flood,
    // not for a loaded machine's first 16 KiB write.
    let patient = client.with_timeout(Duration::from_secs(10));
    patient.set("warm", value.clone()).await.unwrap();
    let baseline = rss_bytes();

    redis.pause();
    // A flood of a fixed size (not "as many as fit in 3 s": no verdict depends on speed).
    const CALLERS: usize = 256;
    const EACH: u32 = 60;
    let timeouts = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for t in 0..CALLERS {
        let (client, value, timeouts) = (client.clone(), value.clone(), timeouts.clone());
        tasks.push(tokio::spawn(async move {
            // Each caller gives up after 20 ms and sends the next one at once.
            for i in 0..EACH {
                let e = client
                    .set(format!("k{t}:{i}"), value.clone())
                    .await
                    .expect_err("the server is paused");
                assert!(e.is_timeout(), "{e:?}");
                timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("callers are not stuck")
            .unwrap();
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    redis.resume();

    let timeouts = timeouts.load(Ordering::Relaxed);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!(
        "{timeouts} timed-out requests ({} MiB of values offered); resident memory grew {} MiB",
        timeouts * 16 / 1024,
        growth >> 20
    );
    // Every request of the flood timed out: none was lost, none hung, none failed otherwise.
    assert_eq!(timeouts, CALLERS * EACH as usize);
    // Bound: per connection 256 queued + 1 MiB write buffer + socket buffers; written
    // requests hold no value. 96 MiB leaves room for the allocator and the 256 tasks.
    assert!(
        growth < 96 << 20,
        "resident memory grew {} MiB during the flood",
        growth >> 20
    );
    // The server comes back and the client serves again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !patient.get::<Bytes>("warm").await.is_ok_and(|v| v == value) {
        assert!(
            Instant::now() < deadline,
            "no recovery within 30 s of resume"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
