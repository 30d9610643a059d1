//! The cache against real servers (redis-server from testkit, objstore's own server over
//! loopback gRPC) and with time mocked (quanta's mock clock): no test sleeps for its verdict.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache::{Cache, CacheEvent, ObjstoreL2, RedisL2};
use jupiter_core::shadow::ShadowContext;
use redis_client::{Client, Protocol, TrackingMode};
use testkit::RedisServer;

/// A hang fails the test instead of stalling the suite; never a verdict on speed.
const LIVENESS: Duration = Duration::from_secs(30);

async fn live<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIVENESS, f)
        .await
        .expect("finished within the liveness bound")
}

fn metrics() -> jupiter_core::Metrics {
    jupiter_core::Metrics::new()
}

async fn redis_client(redis: &RedisServer, tracking: bool) -> Client {
    let mut b = Client::builder()
        .url(&redis.url())
        .shadow_prefix("shadow:")
        .metrics(&metrics());
    if tracking {
        b = b
            .protocol(Protocol::Resp3)
            .tracking(TrackingMode::Default, &[]);
    }
    b.connect().await.unwrap()
}

/// A client without tracking or shadow prefix, with `timeout` as its command timeout.
async fn timed_client(redis: &RedisServer, timeout: Duration) -> Client {
    Client::builder()
        .url(&redis.url())
        .command_timeout(timeout)
        .metrics(&metrics())
        .connect()
        .await
        .unwrap()
}

/// A cache named `name` over `l2`, with every other setting at its default.
fn over<K, V>(name: &str, l2: impl cache::L2) -> Cache<K, V>
where
    K: cache::Key,
    V: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    Cache::builder(name)
        .metrics(&metrics())
        .l2(l2)
        .build()
        .unwrap()
}

fn counting<V: Clone + Send + 'static>(
    calls: &Arc<AtomicUsize>,
    value: V,
) -> impl FnOnce() -> futures::future::Ready<Option<V>> + Send + 'static {
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(Some(value))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_loads_of_one_missing_key_run_the_loader_once() {
    let redis = RedisServer::start();
    for with_l2 in [false, true] {
        let mut b = Cache::<String, String>::builder("stampede").metrics(&metrics());
        if with_l2 {
            b = b.l2(RedisL2::new(redis_client(&redis, false).await));
        }
        let cache = b.build().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        // The loader holds until every caller is waiting on it.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load(&"hot".to_owned(), move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _permit = gate.acquire().await;
                        Some("value".to_owned())
                    })
                    .await
            }));
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1000);
        for t in tasks {
            assert_eq!(live(t).await.unwrap().unwrap().as_deref(), Some("value"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "l2: {with_l2}");
        let stats = cache.stats();
        assert_eq!(stats.loads, 1);
        if with_l2 {
            assert_eq!(stats.l2_misses, 1, "one L2 lookup for all: {stats:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_l2_and_invalidate_each_others_l1() {
    let redis = RedisServer::start();
    // Both invalidation sources: RESP3 client tracking, and pub/sub on a channel per cache.
    for tracking in [true, false] {
        redis.command(&["FLUSHALL"]).unwrap();
        let name = if tracking { "tracked" } else { "announced" };
        let make = |client: Client| {
            Cache::<u64, String>::builder(name)
                .metrics(&metrics())
                .l2(RedisL2::new(client))
                .build()
                .unwrap()
        };
        let a = make(redis_client(&redis, tracking).await);
        let b = make(redis_client(&redis, tracking).await);
        let (a_calls, b_calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        // A loads: L2 is filled. B's miss finds it in L2, not in its loader.
        let v = a
            .get_or_load(&7, counting(&a_calls, "v1".to_owned()))
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("v1"));
        let v = b
            .get_or_load(&7, counting(&b_calls, "never".to_owned()))
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("v1"), "{name}");
        assert_eq!(
            (
                a_calls.load(Ordering::SeqCst),
                b_calls.load(Ordering::SeqCst)
            ),
            (1, 0)
        );
        assert_eq!(b.stats().l2_hits, 1);
        // An update through A removes the key from B's L1: B's invalidation event says so.
        let mut events = b.events();
        a.put(7, "v2".to_owned()).await.unwrap();
        let event = live(async {
            loop {
                match events.recv().await.unwrap() {
                    CacheEvent::Invalidated {
                        key: 7,
                        shadow: false,
                    } => return,
                    _ => continue,
                }
            }
        })
        .await;
        let () = event;
        let v = b
            .get_or_load(&7, counting(&b_calls, "never".to_owned()))
            .await
            .unwrap();
        assert_eq!(
            v.as_deref(),
            Some("v2"),
            "{name}: B reads the new value from L2"
        );
        assert_eq!(b_calls.load(Ordering::SeqCst), 0);
        // An invalidation through B removes it from A (and from L2).
        let mut events = a.events();
        b.invalidate(&7).await.unwrap();
        live(async {
            loop {
                if let CacheEvent::Invalidated { key: 7, .. } = events.recv().await.unwrap() {
                    return;
                }
            }
        })
        .await;
        let v = a
            .get_or_load(&7, counting(&a_calls, "v3".to_owned()))
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("v3"));
        assert_eq!(a_calls.load(Ordering::SeqCst), 2);
        assert!(b.stats().invalidations >= 1);
    }
}

#[tokio::test]
async fn refresh_ahead_serves_the_current_value_and_refreshes_once() {
    let (clock, mock) = quanta::Clock::mock();
    let cache = Cache::<u64, u64>::builder("refresh")
        .metrics(&metrics())
        .clock(clock)
        .ttl(Duration::from_secs(100))
        .ttl_jitter(0.0)
        .refresh_ahead(0.5)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let loader = |calls: &Arc<AtomicUsize>| {
        let calls = calls.clone();
        move || async move { Some(calls.fetch_add(1, Ordering::SeqCst) as u64 + 1) }
    };
    assert_eq!(
        cache.get_or_load(&1, loader(&calls)).await.unwrap(),
        Some(1)
    );
    // Before the refresh point: a plain hit.
    mock.increment(Duration::from_secs(40));
    assert_eq!(
        cache.get_or_load(&1, loader(&calls)).await.unwrap(),
        Some(1)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Past it: fifty hits all get the current value; exactly one refresh runs.
    mock.increment(Duration::from_secs(20));
    for _ in 0..50 {
        assert_eq!(
            cache.get_or_load(&1, loader(&calls)).await.unwrap(),
            Some(1)
        );
    }
    // The refresh is a background task: let it run, then the new value is served.
    let mut turns = 0;
    while cache.stats().loads < 2 || cache.get(&1).await.unwrap() != Some(Some(2)) {
        turns += 1;
        assert!(turns < 10_000, "the refresh never landed");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one initial load, one refresh"
    );
    assert_eq!(
        cache.get_or_load(&1, loader(&calls)).await.unwrap(),
        Some(2)
    );
    // The refreshed entry has a full TTL of its own: past the old one's end, still a hit.
    mock.increment(Duration::from_secs(45));
    assert_eq!(cache.get(&1).await.unwrap(), Some(Some(2)));
}

#[tokio::test]
async fn negative_caching_and_ttl_expiry_follow_the_clock() {
    let (clock, mock) = quanta::Clock::mock();
    let cache = Cache::<u64, String>::builder("negative")
        .metrics(&metrics())
        .clock(clock)
        .ttl(Duration::from_secs(60))
        .ttl_jitter(0.0)
        .negative_ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let missing = |calls: &Arc<AtomicUsize>| {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            None::<String>
        }
    };
    assert_eq!(cache.get_or_load(&1, missing(&calls)).await.unwrap(), None);
    assert_eq!(
        cache.get(&1).await.unwrap(),
        Some(None),
        "\"not found\" is cached"
    );
    mock.increment(Duration::from_secs(4));
    assert_eq!(cache.get_or_load(&1, missing(&calls)).await.unwrap(), None);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    mock.increment(Duration::from_secs(2));
    assert_eq!(
        cache.get(&1).await.unwrap(),
        None,
        "expired after negative-ttl"
    );
    assert_eq!(cache.get_or_load(&1, missing(&calls)).await.unwrap(), None);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A found value lives for `ttl`.
    cache.put(2, "x".into()).await.unwrap();
    mock.increment(Duration::from_secs(59));
    assert_eq!(cache.get(&2).await.unwrap(), Some(Some("x".into())));
    mock.increment(Duration::from_secs(2));
    assert_eq!(cache.get(&2).await.unwrap(), None);
    // With negative caching off, "not found" is not kept.
    let off = Cache::<u64, String>::builder("no-negative")
        .metrics(&metrics())
        .negative_ttl(Duration::ZERO)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        assert_eq!(off.get_or_load(&1, missing(&calls)).await.unwrap(), None);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn ttl_jitter_spreads_expiry_inside_the_configured_ttl() {
    let (clock, mock) = quanta::Clock::mock();
    let cache = Cache::<u64, u64>::builder("jitter")
        .metrics(&metrics())
        .clock(clock)
        .ttl(Duration::from_secs(100))
        .ttl_jitter(0.5)
        .build()
        .unwrap();
    for k in 0..200 {
        cache.put(k, k).await.unwrap();
    }
    let alive = |cache: Cache<u64, u64>| async move {
        let mut n = 0;
        for k in 0..200 {
            if cache.get(&k).await.unwrap().is_some() {
                n += 1;
            }
        }
        n
    };
    // Every entry lives at least ttl × (1 - jitter) and at most ttl.
    mock.increment(Duration::from_secs(49));
    assert_eq!(alive(cache.clone()).await, 200);
    mock.increment(Duration::from_secs(26));
    let mid = alive(cache.clone()).await;
    assert!(
        mid > 0 && mid < 200,
        "expiry spread: {mid} of 200 alive at 75 s"
    );
    mock.increment(Duration::from_secs(26));
    assert_eq!(alive(cache.clone()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_degrades_to_l1_and_the_loader_and_recovers() {
    let redis = RedisServer::start();
    let client = timed_client(&redis, Duration::from_secs(2)).await;
    let cache = Cache::<u64, String>::builder("outage")
        .metrics(&metrics())
        .l2_timeout(Duration::from_millis(200))
        .l2_retry(Duration::from_millis(100))
        .l2(RedisL2::new(client))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_load(&1, counting(&calls, "one".to_owned()))
        .await
        .unwrap();
    // The invalidation listener must be connected for its loss to be seen (bounded wait).
    let mut polls = 0;
    while redis
        .command(&["PUBSUB", "NUMSUB", "cache:outage:invalidations"])
        .unwrap()
        != testkit::Reply::Array(Some(vec![
            testkit::Reply::Bulk(Some(b"cache:outage:invalidations".to_vec())),
            testkit::Reply::Integer(1),
        ]))
    {
        polls += 1;
        assert!(polls < 500, "the invalidation listener never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut events = cache.events();
    redis.kill();
    // The invalidation connection is lost with it: L1 is emptied (what others changed
    // meanwhile cannot be heard), once.
    live(async {
        loop {
            if let CacheEvent::Cleared = events.recv().await.unwrap() {
                return;
            }
        }
    })
    .await;
    // Callers keep getting values: from the loader, L2 being down.
    assert_eq!(
        live(cache.get_or_load(&1, counting(&calls, "x".into())))
            .await
            .unwrap()
            .as_deref(),
        Some("x")
    );
    assert_eq!(
        cache.get(&1).await.unwrap(),
        Some(Some("x".into())),
        "and keep them in L1 while L2 is down"
    );
    for k in 2..20 {
        let v = live(cache.get_or_load(&k, counting(&calls, format!("v{k}"))))
            .await
            .unwrap();
        assert_eq!(v, Some(format!("v{k}")));
    }
    let stats = cache.stats();
    assert!(stats.l2_errors >= 1, "{stats:?}");
    assert!(cache.is_degraded());
    assert_eq!(calls.load(Ordering::SeqCst), 20);
    // Redis back: L2 is probed again and used: a new load is written there.
    redis.restart();
    let mut k = 100;
    while cache.is_degraded() {
        k += 1;
        assert!(k < 1_000, "L2 never came back");
        live(cache.get_or_load(&k, counting(&calls, "after".into())))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live(cache.get_or_load(&5000, counting(&calls, "stored".into())))
        .await
        .unwrap();
    let stored = redis.command(&["EXISTS", "cache:outage:5000"]).unwrap();
    assert_eq!(stored, testkit::Reply::Integer(1), "written to L2 again");
}

#[tokio::test]
async fn shadow_and_live_entries_never_mix() {
    let redis = RedisServer::start();
    let cache = over::<String, String>("users", RedisL2::new(redis_client(&redis, false).await));
    let key = "42".to_owned();
    let live_v = cache
        .get_or_load(&key, || async { Some("live".to_owned()) })
        .await
        .unwrap();
    let shadow_v = ShadowContext::scope(
        Some(ShadowContext::new()),
        cache.get_or_load(&key, || async { Some("shadow".to_owned()) }),
    )
    .await
    .unwrap();
    assert_eq!(
        (live_v.as_deref(), shadow_v.as_deref()),
        (Some("live"), Some("shadow"))
    );
    // Each partition serves its own from L1, and L2 holds both under different keys.
    assert_eq!(
        cache.get(&key).await.unwrap(),
        Some(Some("live".to_owned()))
    );
    let in_shadow = ShadowContext::scope(Some(ShadowContext::new()), cache.get(&key)).await;
    assert_eq!(in_shadow.unwrap(), Some(Some("shadow".to_owned())));
    for k in ["cache:users:42", "shadow:cache:users:42"] {
        assert_eq!(
            redis.command(&["EXISTS", k]).unwrap(),
            testkit::Reply::Integer(1),
            "{k}"
        );
    }
    // A second instance reads each from its own L2 key.
    let other = over::<String, String>("users", RedisL2::new(redis_client(&redis, false).await));
    assert_eq!(
        other.get(&key).await.unwrap(),
        Some(Some("live".to_owned()))
    );
    let s = ShadowContext::scope(Some(ShadowContext::new()), other.get(&key)).await;
    assert_eq!(s.unwrap(), Some(Some("shadow".to_owned())));
    // Invalidating the shadow entry leaves the live one.
    ShadowContext::scope(Some(ShadowContext::new()), cache.invalidate(&key))
        .await
        .unwrap();
    assert_eq!(
        cache.get(&key).await.unwrap(),
        Some(Some("live".to_owned()))
    );
    assert_eq!(
        redis.command(&["EXISTS", "shadow:cache:users:42"]).unwrap(),
        testkit::Reply::Integer(0)
    );
}

#[tokio::test]
async fn undecodable_l2_values_are_misses_not_panics() {
    let redis = RedisServer::start();
    let cache = over::<u64, String>("garbage", RedisL2::new(redis_client(&redis, false).await));
    let junk: [&[u8]; 5] = [
        b"",
        b"\x01",
        b"\x01\x00\x00\x00",
        b"plain text",
        b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff",
    ];
    for (i, junk) in junk.iter().enumerate() {
        let key = format!("cache:garbage:{i}");
        redis
            .command(&[b"SET".as_slice(), key.as_bytes(), junk])
            .unwrap();
        let v = cache
            .get_or_load(
                &(i as u64),
                move || async move { Some(format!("fresh{i}")) },
            )
            .await
            .unwrap();
        assert_eq!(v, Some(format!("fresh{i}")));
    }
    assert!(cache.stats().decode_errors >= 4, "{:?}", cache.stats());
}

#[tokio::test]
async fn batches_load_only_what_neither_level_has_in_one_call() {
    let redis = RedisServer::start();
    let make =
        || async { over::<u64, String>("batch", RedisL2::new(redis_client(&redis, false).await)) };
    let (a, b) = (make().await, make().await);
    a.put(2, "two".into()).await.unwrap(); // L2 (and a's L1)
    b.put(4, "four".into()).await.unwrap(); // b's L1 and L2
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let got = b
        .get_many_or_load(&[1, 2, 3, 4, 5], move |missing| async move {
            seen.lock().unwrap().push(missing.clone());
            missing
                .into_iter()
                .map(|k| (k != 5).then(|| format!("loaded{k}")))
                .collect()
        })
        .await
        .unwrap();
    assert_eq!(
        got,
        [
            Some("loaded1".into()),
            Some("two".into()),
            Some("loaded3".into()),
            Some("four".into()),
            None
        ]
    );
    assert_eq!(
        *asked.lock().unwrap(),
        [vec![1, 3, 5]],
        "one call, the missing keys in order"
    );
    // Everything is cached now, "not found" included.
    let again = b
        .get_many_or_load(&[1, 2, 3, 4, 5], |_| async { panic!("nothing to load") })
        .await
        .unwrap();
    assert_eq!(again, got);
}

#[derive(Debug)]
struct DbDown;

impl std::fmt::Display for DbDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("database down")
    }
}

impl std::error::Error for DbDown {}

#[tokio::test]
async fn loader_errors_are_shared_and_not_cached_unless_asked() {
    for cached in [false, true] {
        let mut b = Cache::<u64, u64>::builder("errors").metrics(&metrics());
        if cached {
            b = b.cache_load_errors(Duration::from_secs(60));
        }
        let cache = b.build().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let c = calls.clone();
            let r = cache
                .try_get_or_load(&1, move || async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    Err::<Option<u64>, _>(DbDown)
                })
                .await;
            assert!(matches!(r, Err(cache::LoadError::Load(_))), "{r:?}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), if cached { 1 } else { 3 });
        assert_eq!(
            cache.stats().load_errors as usize,
            calls.load(Ordering::SeqCst)
        );
    }
}

#[tokio::test]
async fn objstore_as_l2_shares_values_and_invalidates_through_its_watch() {
    use objstore::engine::{Engine, EngineConfig};
    use objstore::server::{Service, ServiceConfig, serve};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let m = metrics();
    let svc = Service::new(
        Engine::new(EngineConfig::default()),
        ServiceConfig::default(),
        &m,
    );
    let shadow = jupiter_core::shadow::ShadowLayer::new(
        "objstore",
        jupiter_core::shadow::ShadowSwitch::new(jupiter_core::shadow::ShadowMode::On),
        &m,
    );
    tokio::spawn(serve(svc, listener, shadow, std::future::pending()));
    let make = || async {
        let client = objstore::client::Client::connect(&addr.to_string(), Default::default())
            .await
            .unwrap();
        over::<u64, String>("docs", ObjstoreL2::new(client))
    };
    let (a, b) = (make().await, make().await);
    let calls = Arc::new(AtomicUsize::new(0));
    a.get_or_load(&1, counting(&calls, "v1".to_owned()))
        .await
        .unwrap();
    assert_eq!(
        b.get_or_load(&1, counting(&calls, "never".into()))
            .await
            .unwrap()
            .as_deref(),
        Some("v1")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let mut events = b.events();
    a.put(1, "v2".into()).await.unwrap();
    live(async {
        loop {
            if let CacheEvent::Invalidated {
                key: 1,
                shadow: false,
            } = events.recv().await.unwrap()
            {
                return;
            }
        }
    })
    .await;
    assert_eq!(b.get(&1).await.unwrap(), Some(Some("v2".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_as_l2_with_tracking() {
    let cluster = testkit::RedisCluster::start();
    let seeds: Vec<String> = cluster.seed_urls();
    let make = || async {
        let client = Client::builder()
            .config(redis_client::ClientConfig {
                cluster: true,
                urls: seeds.clone(),
                protocol: Protocol::Resp3,
                tracking: TrackingMode::Default,
                ..Default::default()
            })
            .metrics(&metrics())
            .connect()
            .await
            .unwrap();
        over::<u64, u64>("clustered", RedisL2::new(client))
    };
    let (a, b) = (make().await, make().await);
    let calls = Arc::new(AtomicUsize::new(0));
    // Keys on every primary: loaded once, shared through L2, batches split by slot.
    for k in 0..30u64 {
        a.get_or_load(&k, counting(&calls, k * 10)).await.unwrap();
    }
    let keys: Vec<u64> = (0..30).collect();
    let got = b
        .get_many_or_load(&keys, |_| async { panic!("all in L2") })
        .await
        .unwrap();
    assert_eq!(got, keys.iter().map(|k| Some(k * 10)).collect::<Vec<_>>());
    assert_eq!(calls.load(Ordering::SeqCst), 30);
    // Updates through B reach A's L1, whatever node the key lives on.
    let mut events = a.events();
    for k in 0..30u64 {
        b.put(k, k + 1000).await.unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    live(async {
        while seen.len() < 30 {
            if let CacheEvent::Invalidated { key, .. } = events.recv().await.unwrap() {
                seen.insert(key);
            }
        }
    })
    .await;
    for k in 0..30u64 {
        let v = a.get_or_load(&k, counting(&calls, 0)).await.unwrap();
        assert_eq!(v, Some(k + 1000));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 30);
}

#[tokio::test]
async fn strict_mode_surfaces_an_l2_outage_to_every_caller() {
    let redis = RedisServer::start();
    let client = timed_client(&redis, Duration::from_secs(2)).await;
    let cache = Cache::<u64, String>::builder("strict")
        .metrics(&metrics())
        .strict(true)
        .l2_timeout(Duration::from_millis(300))
        .l2(RedisL2::new(client))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_load(&1, counting(&calls, "one".to_owned()))
        .await
        .unwrap();
    redis.kill();
    // L1 still answers for what it holds; a miss is L2's error, not a silent load, and so
    // for every caller during the outage (not only the first).
    assert_eq!(cache.get(&1).await.unwrap(), Some(Some("one".into())));
    for k in 2..5 {
        let e = live(cache.get_or_load(&k, counting(&calls, "x".into())))
            .await
            .unwrap_err();
        assert!(e.retryable(), "{k}: {e:?}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no load past a failed L2");
    assert!(cache.stats().l2_errors >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_ttl_is_capped_by_the_l2_entrys_remaining_ttl() {
    let redis = RedisServer::start();
    // A writes with a short TTL; B (a long TTL, its own clock) reads A's entry from L2 and
    // keeps it in L1 no longer than L2 does.
    let a = Cache::<u64, String>::builder("capped")
        .metrics(&metrics())
        .ttl(Duration::from_secs(5))
        .ttl_jitter(0.0)
        .l2(RedisL2::new(redis_client(&redis, false).await))
        .build()
        .unwrap();
    let (clock, mock) = quanta::Clock::mock();
    let b = Cache::<u64, String>::builder("capped")
        .metrics(&metrics())
        .clock(clock)
        .ttl(Duration::from_secs(3600))
        .ttl_jitter(0.0)
        .l2(RedisL2::new(redis_client(&redis, false).await))
        .build()
        .unwrap();
    a.put(1, "short".into()).await.unwrap();
    b.put(2, "long".into()).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    for k in [1, 2] {
        b.get_or_load(&k, counting(&calls, "never".into()))
            .await
            .unwrap();
    }
    let hits = b.stats().l2_hits;
    // Past A's TTL by B's clock: B's copy of A's entry is stale, its own is not.
    mock.increment(Duration::from_secs(6));
    b.get_or_load(&2, counting(&calls, "never".into()))
        .await
        .unwrap();
    assert_eq!(b.stats().l2_hits, hits, "B's own entry is still in L1");
    b.get_or_load(&1, counting(&calls, "reloaded".into()))
        .await
        .unwrap();
    let stats = b.stats();
    assert_eq!(
        stats.l2_hits + stats.loads,
        hits + 1,
        "A's entry left B's L1 with its L2 TTL: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_invalidation_connection_clears_l1() {
    let redis = RedisServer::start();
    for tracking in [true, false] {
        let name = if tracking {
            "lost-tracked"
        } else {
            "lost-announced"
        };
        let cache = Cache::<u64, String>::builder(name)
            .metrics(&metrics())
            .l2(RedisL2::new(redis_client(&redis, tracking).await))
            .build()
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        // A put fills both levels and is not invalidated by its own write (a load is: its
        // SET reaches the connection that tracked the miss's GET, at a moment of its own).
        cache.put(1, "v".into()).await.unwrap();
        assert_eq!(cache.l1_len().await, 1);
        let kill_type = if tracking {
            "normal"
        } else {
            // The listener subscribes in the background: wait (bounded) until it has.
            let channel = format!("cache:{name}:invalidations");
            let mut polls = 0;
            loop {
                let r = redis.command(&["PUBSUB", "NUMSUB", &channel]).unwrap();
                if matches!(&r, testkit::Reply::Array(Some(v)) if v.get(1) == Some(&testkit::Reply::Integer(1)))
                {
                    break;
                }
                polls += 1;
                assert!(polls < 500, "the listener never subscribed: {r:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            "pubsub"
        };
        let mut events = cache.events();
        redis
            .command(&["CLIENT", "KILL", "TYPE", kill_type])
            .unwrap();
        live(async {
            loop {
                if let CacheEvent::Cleared = events.recv().await.unwrap() {
                    return;
                }
            }
        })
        .await;
        assert_eq!(cache.l1_len().await, 0, "{name}: L1 emptied");
        assert!(cache.stats().invalidations_lost >= 1, "{name}");
        // Served from L2 again, not the loader.
        let v = live(cache.get_or_load(&1, counting(&calls, "never".into())))
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("v"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "{name}: from L2, not the loader"
        );
    }
}

/// `l2-timeout` holds both ways: Redis enforces it through the client's own per-request
/// deadline (its configured command timeout is a minute here), and a backend that cannot
/// bound its calls gets a timer from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_timeout_bounds_every_l2_call() {
    let redis = RedisServer::start();
    let client = timed_client(&redis, Duration::from_secs(60)).await;
    let strict = Cache::<u64, String>::builder("bounded")
        .metrics(&metrics())
        .strict(true)
        .l2_timeout(Duration::from_millis(200))
        .l2(RedisL2::new(client.clone()))
        .build()
        .unwrap();
    redis.pause();
    let e = live(strict.get(&1)).await.unwrap_err();
    assert!(
        matches!(e, cache::Error::L2Timeout { op: "get", .. }),
        "{e:?}"
    );
    redis.resume();
    // The client handle the cache was given keeps its own (one minute) timeout.
    assert_eq!(client.timeout(), Some(Duration::from_secs(60)));

    /// Never answers, and cannot bound its calls.
    struct Stuck;
    impl cache::L2 for Stuck {
        fn get<'a>(
            &'a self,
            _: &'a [u8],
        ) -> futures::future::BoxFuture<'a, Result<Option<bytes::Bytes>, cache::L2Error>> {
            Box::pin(futures::future::pending())
        }
        fn get_many<'a>(
            &'a self,
            _: &'a [bytes::Bytes],
        ) -> futures::future::BoxFuture<'a, Result<Vec<Option<bytes::Bytes>>, cache::L2Error>>
        {
            Box::pin(futures::future::pending())
        }
        fn set<'a>(
            &'a self,
            _: &'a [u8],
            _: bytes::Bytes,
            _: Duration,
        ) -> futures::future::BoxFuture<'a, Result<(), cache::L2Error>> {
            Box::pin(futures::future::pending())
        }
        fn delete<'a>(
            &'a self,
            _: &'a [bytes::Bytes],
        ) -> futures::future::BoxFuture<'a, Result<(), cache::L2Error>> {
            Box::pin(futures::future::pending())
        }
        fn invalidations(
            &self,
            _: &[u8],
        ) -> Option<futures::stream::BoxStream<'static, cache::Invalidated>> {
            None
        }
    }
    let stuck = Cache::<u64, String>::builder("stuck")
        .metrics(&metrics())
        .strict(true)
        .l2_timeout(Duration::from_millis(50))
        .l2(Stuck)
        .build()
        .unwrap();
    let e = live(stuck.get(&1)).await.unwrap_err();
    assert!(
        matches!(e, cache::Error::L2Timeout { op: "get", .. }),
        "{e:?}"
    );
}
