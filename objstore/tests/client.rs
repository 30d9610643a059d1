//! Our client (`objstore::client`) against a real objstore server over loopback gRPC.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use jupiter_core::shadow::{ShadowLayer, ShadowMode, ShadowSwitch};
use objstore::client::{Client, ClientConfig, DeleteOptions, Error, PutOptions};
use objstore::engine::{Engine, EngineConfig};
use objstore::server::{MAX_BATCH, Service, ServiceConfig, serve};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

/// Far beyond what any step below needs: a hang fails the test instead of stalling the suite.
const LIVENESS: Duration = Duration::from_secs(60);

struct Server {
    addr: SocketAddr,
    engine: Engine,
    metrics: jupiter_core::Metrics,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    /// Stops serving and waits until the listener and every connection are closed.
    async fn stop(self) -> Engine {
        let _ = self.stop.send(());
        tokio::time::timeout(LIVENESS, self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
        self.engine
    }
}

async fn start(engine: EngineConfig, service: ServiceConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, Engine::new(engine), service)
}

fn serve_on(listener: TcpListener, engine: Engine, service: ServiceConfig) -> Server {
    let metrics = jupiter_core::Metrics::new();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let svc = Service::new(engine.clone(), service, &metrics);
    let shadow = ShadowLayer::new("objstore", ShadowSwitch::new(ShadowMode::On), &metrics);
    let task = tokio::spawn(serve(svc, listener, shadow, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        engine,
        metrics,
        stop,
        task,
    }
}

fn config(read_attempts: u32) -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_secs(10),
        read_attempts,
        ..ClientConfig::default()
    }
}

async fn client(s: &Server) -> Client {
    Client::connect(&s.addr.to_string(), config(3))
        .await
        .unwrap()
}

fn value(v: &'static str) -> Bytes {
    Bytes::from_static(v.as_bytes())
}

/// `f` within [`LIVENESS`].
async fn live<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIVENESS, f)
        .await
        .expect("finished within the liveness bound")
}

#[tokio::test]
async fn put_get_head_delete_with_revisions() {
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let c = client(&s).await;
    let options = PutOptions {
        content_type: Some("text/plain".into()),
        metadata: HashMap::from([("owner".to_owned(), "ops".to_owned())]),
        ..PutOptions::default()
    };
    let put = c.put(b"users/1", value("ada"), options).await.unwrap();
    assert_eq!(
        (put.create_revision, put.mod_revision, put.version, put.size),
        (1, 1, 1, 3)
    );
    assert_eq!(put.content_type, "text/plain");
    assert_eq!(put.metadata["owner"], "ops");
    assert_eq!(put.expires_at_ms, None);

    let got = c.get(b"users/1").await.unwrap().unwrap();
    assert_eq!(got.value, "ada");
    assert_eq!(got.info, put);
    assert_eq!(c.head(b"users/1").await.unwrap().unwrap(), put);

    // A second write: same key, new revision and version, new ETag.
    let second = c
        .put(b"users/1", value("grace"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (
            second.create_revision,
            second.mod_revision,
            second.version,
            second.size
        ),
        (1, 2, 2, 5)
    );
    assert_ne!(second.etag, put.etag);
    assert_eq!(c.get(b"users/1").await.unwrap().unwrap().value, "grace");

    // A TTL shows as an expiry.
    let ttl = PutOptions {
        ttl: Some(Duration::from_secs(3600)),
        ..PutOptions::default()
    };
    let tmp = c.put(b"tmp", value("x"), ttl).await.unwrap();
    assert_eq!(tmp.mod_revision, 3);
    assert!(tmp.expires_at_ms.is_some_and(|t| t > 0));

    assert_eq!(c.delete(b"users/1").await.unwrap(), Some(4));
    assert_eq!(c.get(b"users/1").await.unwrap(), None);
    assert_eq!(c.head(b"users/1").await.unwrap(), None);
    assert_eq!(c.delete(b"users/1").await.unwrap(), None);
    // Recreated: a new create revision, version 1 again.
    let again = c
        .put(b"users/1", value("new"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (again.create_revision, again.mod_revision, again.version),
        (5, 5, 1)
    );
    // An empty key is refused by the server, on reads as on writes.
    assert!(matches!(c.get(b"").await, Err(Error::Invalid(_))));
    assert!(matches!(
        c.put(b"", value("x"), PutOptions::default()).await,
        Err(Error::Invalid(_))
    ));
}

#[tokio::test]
async fn conditional_puts_and_deletes_fail_with_the_precondition_error() {
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let c = client(&s).await;
    let first = c
        .put(b"k", value("v1"), PutOptions::default())
        .await
        .unwrap();

    let e = c
        .put(
            b"k",
            value("x"),
            PutOptions {
                if_absent: true,
                ..PutOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Precondition { .. }), "{e:?}");
    assert_eq!(e.current_revision(), Some(1));
    assert!(!e.retryable());

    let if_revision = |r| PutOptions {
        if_revision: Some(r),
        ..PutOptions::default()
    };
    let second = c.put(b"k", value("v2"), if_revision(1)).await.unwrap();
    assert_eq!((second.mod_revision, second.version), (2, 2));
    let e = c.put(b"k", value("x"), if_revision(1)).await.unwrap_err();
    assert_eq!(e.current_revision(), Some(2), "{e:?}");

    let if_etag = |t: &str| PutOptions {
        if_etag: Some(t.to_owned()),
        ..PutOptions::default()
    };
    let e = c
        .put(b"k", value("x"), if_etag(&first.etag))
        .await
        .unwrap_err();
    assert_eq!(e.current_revision(), Some(2), "{e:?}");
    let third = c
        .put(b"k", value("v3"), if_etag(&second.etag))
        .await
        .unwrap();
    assert_eq!(third.mod_revision, 3);
    // The failed writes changed nothing.
    assert_eq!(c.get(b"k").await.unwrap().unwrap().value, "v3");

    // Deletes.
    let e = c
        .delete_with(
            b"k",
            DeleteOptions {
                if_revision: Some(2),
                ..DeleteOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Precondition { .. }), "{e:?}");
    assert_eq!(e.current_revision(), Some(3));
    let e = c
        .delete_with(
            b"k",
            DeleteOptions {
                if_etag: Some(second.etag.clone()),
                ..DeleteOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.current_revision(), Some(3), "{e:?}");
    assert!(c.head(b"k").await.unwrap().is_some());
    let deleted = c
        .delete_with(
            b"k",
            DeleteOptions {
                if_etag: Some(third.etag.clone()),
                ..DeleteOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(deleted, Some(4));
    assert!(c.head(b"k").await.unwrap().is_none());
    // A condition on a missing key fails too (no revision to report), where an unconditional
    // delete is `None`.
    let e = c
        .delete_with(
            b"k",
            DeleteOptions {
                if_revision: Some(3),
                ..DeleteOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Precondition { .. }), "{e:?}");
    assert_eq!(e.current_revision(), None);
    assert_eq!(c.delete(b"k").await.unwrap(), None);
    // if-absent now holds.
    let created = c
        .put(
            b"k",
            value("v5"),
            PutOptions {
                if_absent: true,
                ..PutOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((created.mod_revision, created.version), (5, 1));
}

#[tokio::test]
async fn list_pages_in_key_order() {
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let c = client(&s).await;
    // Written out of order; listed in key order.
    let items: Vec<(String, Bytes, PutOptions)> = (0..250)
        .rev()
        .map(|i| {
            (
                format!("items/{i:04}"),
                Bytes::from(format!("v{i}")),
                PutOptions::default(),
            )
        })
        .chain([("other/1".to_owned(), value("x"), PutOptions::default())])
        .collect();
    let results = c.batch_put(items).await.unwrap();
    assert!(results.iter().all(Result::is_ok));

    let mut keys = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let (page, next) = c.list_page(b"items/", 100, &token).await.unwrap();
        pages.push(page.len());
        for (k, info) in page {
            keys.push(k);
            sizes.push(info.size);
        }
        match next {
            Some(t) => token = t,
            None => break,
        }
    }
    assert_eq!(pages, [100, 100, 50]);
    let expected: Vec<Bytes> = (0..250)
        .map(|i| Bytes::from(format!("items/{i:04}")))
        .collect();
    assert_eq!(keys, expected);
    let expected_sizes: Vec<u64> = (0..250).map(|i| format!("v{i}").len() as u64).collect();
    assert_eq!(sizes, expected_sizes);

    let all = c.list_all(b"items/").await.unwrap();
    assert_eq!(
        all.into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(c.list_all(b"").await.unwrap().len(), 251);
    assert!(c.list_all(b"nothing/").await.unwrap().is_empty());
    assert!(matches!(
        c.list_page(b"items/", 100, "not-a-token").await,
        Err(Error::Invalid(_))
    ));
}

#[tokio::test]
async fn batch_get_and_batch_put_report_each_item() {
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let c = client(&s).await;
    c.put(b"taken", value("old"), PutOptions::default())
        .await
        .unwrap();
    let writes: [(&[u8], Bytes, PutOptions); 4] = [
        (b"a", value("1"), PutOptions::default()),
        (
            b"taken",
            value("new"),
            PutOptions {
                if_absent: true,
                ..PutOptions::default()
            },
        ),
        (b"", value("empty key"), PutOptions::default()),
        (b"b", value("2"), PutOptions::default()),
    ];
    let results = c.batch_put(writes).await.unwrap();
    assert_eq!(results.len(), 4);
    let a = results[0].as_ref().unwrap();
    assert_eq!((a.mod_revision, a.size), (2, 1));
    let e = results[1].as_ref().unwrap_err();
    assert!(matches!(e, Error::Precondition { .. }), "{e:?}");
    assert_eq!(e.current_revision(), Some(1));
    assert!(
        matches!(&results[2], Err(Error::Invalid(m)) if m.contains("empty")),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3].as_ref().unwrap().mod_revision, 3);

    let keys: [&[u8]; 4] = [b"a", b"missing", b"taken", b"b"];
    let got = c.batch_get(&keys).await.unwrap();
    let values: Vec<Option<Bytes>> = got
        .iter()
        .map(|o| o.as_ref().map(|o| o.value.clone()))
        .collect();
    assert_eq!(
        values,
        [Some(value("1")), None, Some(value("old")), Some(value("2"))]
    );
    assert_eq!(got[0].as_ref().unwrap().info, *a);
    assert!(c.batch_get::<&[u8]>(&[]).await.unwrap().is_empty());
    assert!(c.batch_put::<&[u8]>([]).await.unwrap().is_empty());

    // More keys than one call takes: split, and still in order.
    let keys: Vec<String> = (0..MAX_BATCH + 5).map(|i| format!("bulk/{i}")).collect();
    let present: Vec<usize> = (0..keys.len())
        .filter(|i| i % 1000 == 3 || *i == MAX_BATCH + 4)
        .collect();
    let writes = present.iter().map(|&i| {
        (
            keys[i].clone(),
            Bytes::from(i.to_string()),
            PutOptions::default(),
        )
    });
    assert!(c.batch_put(writes).await.unwrap().iter().all(Result::is_ok));
    let got = c.batch_get(&keys).await.unwrap();
    assert_eq!(got.len(), keys.len());
    let found: Vec<(usize, Bytes)> = got
        .into_iter()
        .enumerate()
        .filter_map(|(i, o)| o.map(|o| (i, o.value)))
        .collect();
    let expected: Vec<(usize, Bytes)> = present
        .iter()
        .map(|&i| (i, Bytes::from(i.to_string())))
        .collect();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn a_large_object_goes_up_and_down_in_chunks() {
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let c = client(&s).await;
    let mut rng = fastrand::Rng::with_seed(7);
    let data: Bytes = (0..10 * 1024 * 1024 + 7).map(|_| rng.u8(..)).collect();
    let options = PutOptions {
        content_type: Some("application/octet-stream".into()),
        ..PutOptions::default()
    };
    let put = live(c.put(b"blob", data.clone(), options)).await.unwrap();
    assert_eq!(put.size, data.len() as u64);
    assert!(s.engine.get(b"blob").unwrap().value == data);

    // Assembled.
    let down = live(c.download(b"blob")).await.unwrap().unwrap();
    assert_eq!(down.info, put);
    assert!(down.value == data, "the downloaded value differs");

    // Chunk by chunk.
    let mut stream = live(c.download_stream(b"blob")).await.unwrap().unwrap();
    assert_eq!(stream.info.content_type, "application/octet-stream");
    let mut back = Vec::with_capacity(data.len());
    let mut chunks = 0;
    while let Some(chunk) = live(stream.chunk()).await.unwrap() {
        assert!(
            !chunk.is_empty() && chunk.len() <= 64 * 1024,
            "{}",
            chunk.len()
        );
        back.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert_eq!(chunks, data.len().div_ceil(64 * 1024));
    assert!(back == data, "the streamed value differs");

    // The one-message path reads it too.
    assert!(live(c.get(b"blob")).await.unwrap().unwrap().value == data);
    assert!(c.download(b"missing").await.unwrap().is_none());
    assert!(c.download_stream(b"missing").await.unwrap().is_none());
    // A small object downloads as well (one chunk), and an empty one (none).
    c.put(b"small", value("tiny"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(c.download(b"small").await.unwrap().unwrap().value, "tiny");
    c.put(b"empty", Bytes::new(), PutOptions::default())
        .await
        .unwrap();
    let mut empty = c.download_stream(b"empty").await.unwrap().unwrap();
    assert_eq!(empty.info.size, 0);
    assert_eq!(empty.chunk().await.unwrap(), None);

    // The 10 MiB went up through Upload and came back through Download, not Put/Get alone.
    let text = s.metrics.encode();
    let ok = |method: &str| {
        text.lines().any(|l| {
            l.starts_with("server_handle_total")
                && l.contains(&format!("ObjectStore/{method}\""))
                && l.contains("code=\"OK\"")
        })
    };
    assert!(ok("Upload") && ok("Download"), "{text}");
}

#[tokio::test]
async fn watch_delivers_changes_in_order_and_resumes_from_a_revision() {
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let c = client(&s).await;
    for i in 0..5 {
        c.put(
            format!("w/{i}").as_bytes(),
            value("v"),
            PutOptions::default(),
        )
        .await
        .unwrap(); // 1..=5
    }
    c.put(b"x/1", value("v"), PutOptions::default())
        .await
        .unwrap(); // 6

    let mut live_watch = Box::pin(c.watch(b"w/", 0, true).await.unwrap());
    c.put(b"w/a", value("A"), PutOptions::default())
        .await
        .unwrap(); // 7
    c.delete(b"w/0").await.unwrap(); // 8
    c.put(b"x/2", value("v"), PutOptions::default())
        .await
        .unwrap(); // 9: another prefix
    c.put(b"w/b", value("B"), PutOptions::default())
        .await
        .unwrap(); // 10
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = live(live_watch.next()).await.unwrap().unwrap();
        seen.push((e.revision, e.key.clone(), e.kind, e.object.map(|o| o.value)));
    }
    assert_eq!(
        seen,
        [
            (7, value("w/a"), "put", Some(value("A"))),
            (8, value("w/0"), "delete", None),
            (10, value("w/b"), "put", Some(value("B"))),
        ]
    );

    // From revision 3: history first, then the live changes, without values this time.
    let mut resumed = Box::pin(c.watch(b"w/", 3, false).await.unwrap());
    let mut revisions = Vec::new();
    for _ in 0..6 {
        let e = live(resumed.next()).await.unwrap().unwrap();
        if let Some(o) = &e.object {
            assert!(o.value.is_empty(), "a value without include_values");
            assert_eq!(o.info.mod_revision, e.revision);
        }
        revisions.push(e.revision);
    }
    assert_eq!(revisions, [3, 4, 5, 7, 8, 10]);
    c.put(b"w/c", value("C"), PutOptions::default())
        .await
        .unwrap(); // 11
    let e = live(resumed.next()).await.unwrap().unwrap();
    assert_eq!((e.revision, e.kind), (11, "put"));

    // A watch from beyond the current revision is refused as it opens.
    match c.watch(b"w/", 1000, false).await {
        Err(e) => assert!(matches!(e, Error::OutOfRange { .. }), "{e:?}"),
        Ok(_) => panic!("a watch from a future revision opened"),
    }
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_told_where_to_resume() {
    // A watcher falls behind when the history no longer holds where it stands: 5000 writes
    // into a history of 1000 while this one reads nothing.
    let s = start(
        EngineConfig {
            feed_history: 1000,
            watch_buffer: 64,
            ..EngineConfig::default()
        },
        ServiceConfig::default(),
    )
    .await;
    let c = client(&s).await;
    let mut slow = Box::pin(c.watch(b"w/", 0, true).await.unwrap());
    let big = Bytes::from(vec![1u8; 4096]);
    let writes = (0..5000).map(|i| (format!("w/{}", i % 50), big.clone(), PutOptions::default()));
    assert!(c.batch_put(writes).await.unwrap().iter().all(Result::is_ok));
    let mut delivered = Vec::new();
    let resume_from = loop {
        match live(slow.next()).await {
            Some(Ok(e)) => delivered.push(e.revision),
            Some(Err(Error::OutOfRange { resume_from, .. })) => break resume_from,
            other => panic!("{other:?}"),
        }
    };
    let resume_from = resume_from.expect("the server says where to resume");
    assert_eq!(resume_from, delivered.last().map_or(1, |r| r + 1));
    assert!(delivered.windows(2).all(|w| w[1] == w[0] + 1), "a gap");
    // There the history has moved on: refused, naming the oldest revision it holds; from
    // that one, every later event with no gap.
    let refused = c.watch(b"w/", resume_from, false).await.err();
    let text = format!("{refused:?}");
    assert!(
        matches!(refused, Some(Error::OutOfRange { .. }))
            && text.contains("the oldest available is 4001"),
        "{text}"
    );
    let mut rest = Box::pin(c.watch(b"w/", 4001, false).await.unwrap());
    for expect in 4001..=5000 {
        assert_eq!(live(rest.next()).await.unwrap().unwrap().revision, expect);
    }
}

/// A real `objstore serve` process, stopped with SIGSTOP once it listens: the kernel still
/// accepts connections into its backlog, and nothing ever answers. Killed on drop.
struct Stopped {
    /// Kept for its drop, which kills the process.
    _served: common::Served,
    addr: SocketAddr,
}

impl Stopped {
    fn start() -> Stopped {
        let served = common::serve("stopped", "", std::process::Stdio::null());
        let addr = served.addr.parse().expect("an address");
        // Stopped means every thread stopped: a signal merely queued leaves the server
        // answering for a moment (the test then saw an answer: "a silent server answered").
        testkit::sigstop(&served.child);
        Stopped {
            _served: served,
            addr,
        }
    }
}

#[tokio::test]
async fn calls_to_a_server_that_never_answers_time_out() {
    let stopped = Stopped::start();
    let addr = stopped.addr.to_string();
    let timeout = Duration::from_millis(300);
    let config = ClientConfig {
        timeout,
        read_attempts: 3,
        ..ClientConfig::default()
    };
    let timed_out = |r: Result<(), Error>| match r {
        Err(e) => {
            assert!(matches!(e, Error::Timeout(t) if t == timeout), "{e:?}");
            assert!(e.is_timeout() && e.retryable());
        }
        Ok(()) => panic!("a silent server answered"),
    };
    // Plaintext: the connection opens (HTTP/2 does not wait for the server's preface), every
    // call then waits for an answer that never comes.
    let eager = live(Client::connect(&addr, config.clone())).await.unwrap();
    let lazy = Client::connect_lazy(&addr, config.clone()).unwrap();
    for c in [eager, lazy] {
        timed_out(live(c.get(b"k")).await.map(drop));
        timed_out(live(c.head(b"k")).await.map(drop));
        timed_out(live(c.list_page(b"", 10, "")).await.map(drop));
        timed_out(live(c.batch_get(&[b"k"])).await.map(drop));
        timed_out(live(c.download(b"k")).await.map(drop));
        timed_out(live(c.download_stream(b"k")).await.map(drop));
        timed_out(
            live(c.put(b"k", value("v"), PutOptions::default()))
                .await
                .map(drop),
        );
        timed_out(live(c.delete(b"k")).await.map(drop));
        timed_out(
            live(c.batch_put([(b"k", value("v"), PutOptions::default())]))
                .await
                .map(drop),
        );
        timed_out(live(c.watch(b"", 0, false)).await.map(drop));
    }

    // TLS: the handshake never completes, which no tonic deadline covers (its connect
    // timeout is the TCP connect's; its call deadline starts once connected).
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .unwrap()
        .cert
        .pem();
    let tls = ClientConfig {
        tls: Some(objstore::client::ClientTls {
            ca_pem: ca.into_bytes(),
            domain: Some("localhost".into()),
        }),
        ..config
    };
    let e = live(Client::connect(&addr, tls.clone())).await.unwrap_err();
    assert!(
        matches!(&e, Error::Connect { source, .. } if source.to_string().contains("no answer within")),
        "{e:?}"
    );
    assert!(e.retryable());
    let lazy = Client::connect_lazy(&addr, tls).unwrap();
    timed_out(live(lazy.get(b"k")).await.map(drop));
    timed_out(
        live(lazy.put(b"k", value("v"), PutOptions::default()))
            .await
            .map(drop),
    );
}

/// A server whose first `fail` calls (of any method) are refused as UNAVAILABLE, as a server
/// that is starting up or shedding load would; `calls` counts every call that arrives.
struct Flaky {
    addr: SocketAddr,
    engine: Engine,
    fail: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Flaky {
    /// Refuses the next `n` calls; returns the calls counted since the last reset.
    fn reset(&self, n: usize) -> usize {
        self.fail.store(n, Ordering::SeqCst);
        self.calls.swap(0, Ordering::SeqCst)
    }
}

async fn flaky() -> Flaky {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let engine = Engine::new(EngineConfig::default());
    let metrics = jupiter_core::Metrics::new();
    let fail = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (f, n) = (fail.clone(), calls.clone());
    let svc = Service::new(engine.clone(), ServiceConfig::default(), &metrics).into_server();
    let svc =
        tonic::service::interceptor::InterceptedService::new(svc, move |req: tonic::Request<()>| {
            n.fetch_add(1, Ordering::SeqCst);
            match f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
                Ok(_) => Err(tonic::Status::unavailable("starting up")),
                Err(_) => Ok(req),
            }
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    Flaky {
        addr,
        engine,
        fail,
        calls,
        _stop: stop,
    }
}

#[tokio::test]
async fn reads_are_retried_on_unavailable_and_writes_are_not() {
    let s = flaky().await;
    let c = Client::connect(&s.addr.to_string(), config(3))
        .await
        .unwrap();
    c.put(b"k", value("v"), PutOptions::default())
        .await
        .unwrap();

    // Two refusals, three attempts: every read gets through on its third call.
    s.reset(2);
    assert_eq!(c.get(b"k").await.unwrap().unwrap().value, "v");
    assert_eq!(s.reset(2), 3);
    assert!(c.head(b"k").await.unwrap().is_some());
    assert_eq!(s.reset(2), 3);
    assert_eq!(c.list_page(b"", 10, "").await.unwrap().0.len(), 1);
    assert_eq!(s.reset(2), 3);
    assert!(c.batch_get(&[b"k"]).await.unwrap()[0].is_some());
    assert_eq!(s.reset(2), 3);
    assert_eq!(c.download(b"k").await.unwrap().unwrap().value, "v");
    assert_eq!(s.reset(2), 3);
    assert!(c.download_stream(b"k").await.unwrap().is_some());
    assert_eq!(s.reset(3), 3);

    // Three refusals exhaust three attempts: the error says a later call may succeed.
    let e = c.get(b"k").await.unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)) && e.retryable(), "{e:?}");
    assert_eq!(s.reset(1), 3);

    // A write is made once, and refused; conditional ones too.
    let e = c
        .put(b"new", value("v"), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert_eq!(s.reset(1), 1);
    let conditional = PutOptions {
        if_absent: true,
        ..PutOptions::default()
    };
    let e = c.put(b"new", value("v"), conditional).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert_eq!(s.reset(1), 1);
    let e = c
        .delete_with(
            b"k",
            DeleteOptions {
                if_revision: Some(1),
                ..DeleteOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert_eq!(s.reset(1), 1);
    let e = c
        .batch_put([(b"new", value("v"), PutOptions::default())])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert_eq!(s.reset(1), 1);
    let e = c.delete(b"k").await.unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert_eq!(s.reset(0), 1);
    assert!(s.engine.get(b"new").is_none());
    assert!(s.engine.get(b"k").is_some());

    // With one attempt configured, a read is not repeated either.
    let once = Client::connect(&s.addr.to_string(), config(1))
        .await
        .unwrap();
    s.reset(1);
    assert!(matches!(once.get(b"k").await, Err(Error::Unavailable(_))));
    assert_eq!(s.reset(0), 1);
    assert!(once.get(b"k").await.unwrap().is_some());
}

#[tokio::test]
async fn reads_get_through_a_server_restart_on_the_same_port() {
    let first = start(EngineConfig::default(), ServiceConfig::default()).await;
    let addr = first.addr;
    let once = Client::connect_lazy(&addr.to_string(), config(1)).unwrap();
    let patient = Client::connect_lazy(&addr.to_string(), config(30)).unwrap();
    once.put(b"k", value("v"), PutOptions::default())
        .await
        .unwrap();
    assert!(patient.get(b"k").await.unwrap().is_some());
    let engine = first.stop().await;

    // Down: the port is held (bound, not listening), so connections are refused and no
    // other process can take it before the restart.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let e = once.get(b"k").await.unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)) && e.retryable(), "{e:?}");
    let e = once
        .put(b"k2", value("v"), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)) && e.retryable(), "{e:?}");
    assert!(engine.get(b"k2").is_none());

    // A patient read started while the server is down, which comes back on the same port
    // with the same store. (That a read is repeated exactly `read_attempts` times is shown
    // by `reads_are_retried_on_unavailable_and_writes_are_not`; here the read may see the
    // server down once or more, or not at all, and must succeed either way.)
    let read = tokio::spawn({
        let patient = patient.clone();
        async move { patient.get(b"k").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = serve_on(
        socket.listen(128).unwrap(),
        engine,
        ServiceConfig::default(),
    );
    assert_eq!(second.addr, addr);
    let got = live(read).await.unwrap().unwrap().unwrap();
    assert_eq!(got.value, "v");
    // The client that failed reconnects by itself; writes go through again.
    assert_eq!(once.get(b"k").await.unwrap().unwrap().value, "v");
    once.put(b"k2", value("v2"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(second.engine.get(b"k2").unwrap().value, "v2");
}

/// Under a shadow context every call of the client carries the tag, watches included: a
/// shadow watch sees the shadow namespace (keys as the caller wrote them), a live one never
/// sees shadow writes.
#[tokio::test]
async fn shadow_context_reaches_every_call_watches_included() {
    use jupiter_core::shadow::ShadowContext;
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let c = client(&s).await;
    let mut live_watch = Box::pin(c.watch(b"orders/", 0, false).await.unwrap());
    let shadow = Some(ShadowContext::new());
    let mut shadow_watch = ShadowContext::scope(shadow.clone(), async {
        Box::pin(c.watch(b"orders/", 0, false).await.unwrap())
    })
    .await;
    let shadow_put = ShadowContext::scope(shadow.clone(), async {
        c.put(b"orders/1", value("shadow"), PutOptions::default())
            .await
            .unwrap()
    })
    .await;
    c.put(b"orders/1", value("live"), PutOptions::default())
        .await
        .unwrap();

    let seen = live(shadow_watch.next()).await.unwrap().unwrap();
    assert_eq!((&seen.key[..], seen.kind), (&b"orders/1"[..], "put"));
    assert_eq!(
        seen.revision, shadow_put.mod_revision,
        "the shadow watcher's first event is the shadow write"
    );
    let seen = live(live_watch.next()).await.unwrap().unwrap();
    assert_eq!(&seen.key[..], b"orders/1");
    let live_value = c.get(b"orders/1").await.unwrap().unwrap();
    assert_eq!(
        &live_value.value[..],
        b"live",
        "the live watch saw the live write"
    );
    assert_eq!(
        seen.revision, live_value.info.mod_revision,
        "the live watcher's first event is the live write, not the shadow one"
    );
    assert!(s.engine.get(b"__shadow__/orders/1").is_some());
}

/// A shadow request its service serves in `watch` mode reads but never writes: the client
/// refuses puts and deletes before sending them (the server's own switch may be `on`).
#[tokio::test]
async fn watch_mode_shadow_requests_read_but_never_write() {
    use jupiter_core::shadow::{ShadowContext, ShadowMode};
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let c = client(&s).await;
    let watched = Some(ShadowContext::new().with_mode(ShadowMode::Watch));
    ShadowContext::scope(Some(ShadowContext::new()), async {
        c.put(b"shadowed", value("s"), PutOptions::default())
            .await
            .unwrap()
    })
    .await;
    let refused = ShadowContext::scope(watched, async {
        let put = c.put(b"k", value("w"), PutOptions::default()).await;
        let batch = c
            .batch_put([(&b"k"[..], value("w"), PutOptions::default())])
            .await;
        let delete = c.delete(b"shadowed").await;
        let read = c.get(b"shadowed").await;
        (put, batch, delete, read)
    })
    .await;
    assert!(
        matches!(refused.0, Err(objstore::Error::Refused(_))),
        "{:?}",
        refused.0
    );
    assert!(
        matches!(refused.1, Err(objstore::Error::Refused(_))),
        "{:?}",
        refused.1
    );
    assert!(
        matches!(refused.2, Err(objstore::Error::Refused(_))),
        "{:?}",
        refused.2
    );
    // Reads go on (to the shadow namespace, as the server's switch is on).
    assert_eq!(refused.3.unwrap().unwrap().value, "s");
    assert!(s.engine.get(b"k").is_none() && s.engine.get(b"__shadow__/k").is_none());
    assert!(s.engine.get(b"__shadow__/shadowed").is_some());
}
