//! Every call of the ObjectStore service over real gRPC on loopback.

use std::time::Duration;

use bytes::Bytes;
use jupiter_core::shadow::{ShadowLayer, ShadowMode, ShadowSwitch};
use objstore::engine::{Engine, EngineConfig, Eviction};
use objstore::proto::object_store_client::ObjectStoreClient;
use objstore::proto::{self, condition::Kind};
use objstore::server::{Service, ServiceConfig, serve};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};

struct Server {
    addr: std::net::SocketAddr,
    engine: Engine,
    metrics: jupiter_core::Metrics,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(engine: EngineConfig, service: ServiceConfig) -> Server {
    let engine = Engine::new(engine);
    let metrics = jupiter_core::Metrics::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let svc = Service::new(engine.clone(), service, &metrics);
    let shadow = ShadowLayer::new("objstore", ShadowSwitch::new(ShadowMode::On), &metrics);
    tokio::spawn(serve(svc, listener, shadow, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        engine,
        metrics,
        _stop: stop,
    }
}

async fn client(s: &Server) -> ObjectStoreClient<Channel> {
    ObjectStoreClient::connect(format!("http://{}", s.addr))
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn put(key: &str, value: &[u8]) -> proto::PutRequest {
    proto::PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value),
        ..Default::default()
    }
}

fn key(k: &str) -> Bytes {
    Bytes::copy_from_slice(k.as_bytes())
}

#[tokio::test]
async fn put_get_head_delete_with_revisions_and_conditions() {
    let clock = objstore::engine::Clock::manual(1_700_000_000_000);
    let s = start(
        EngineConfig {
            clock: clock.clone(),
            ..EngineConfig::default()
        },
        ServiceConfig::default(),
    )
    .await;
    let mut c = client(&s).await;
    let mut p = put("users/1", b"ada");
    p.content_type = "text/plain".into();
    p.metadata.insert("owner".into(), "ops".into());
    let r = c.put(p).await.unwrap().into_inner();
    assert_eq!(r.revision, 1);
    let m = r.meta.unwrap();
    assert_eq!(
        (m.create_revision, m.mod_revision, m.version, m.size),
        (1, 1, 1, 3)
    );
    let g = c
        .get(proto::GetRequest {
            key: key("users/1"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&g.value[..], b"ada");
    let gm = g.meta.unwrap();
    assert_eq!(gm.content_type, "text/plain");
    assert_eq!(gm.metadata["owner"], "ops");
    let h = c
        .head(proto::HeadRequest {
            key: key("users/1"),
        })
        .await
        .unwrap()
        .into_inner()
        .meta
        .unwrap();
    assert_eq!(h.etag, gm.etag);

    // if-absent on an existing key.
    let mut p = put("users/1", b"x");
    p.condition = Some(proto::Condition {
        kind: Some(Kind::IfAbsent(true)),
    });
    let e = c.put(p).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("current revision is 1"),
        "{}",
        e.message()
    );
    assert_eq!(
        e.metadata()
            .get(objstore::server::CURRENT_REVISION)
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "the current revision as metadata"
    );
    // if-match revision, then a stale ETag.
    let mut p = put("users/1", b"grace");
    p.condition = Some(proto::Condition {
        kind: Some(Kind::IfRevision(1)),
    });
    let r2 = c.put(p).await.unwrap().into_inner();
    assert_eq!(r2.meta.as_ref().unwrap().version, 2);
    let mut p = put("users/1", b"x");
    p.condition = Some(proto::Condition {
        kind: Some(Kind::IfEtag(gm.etag.clone())),
    });
    assert_eq!(c.put(p).await.unwrap_err().code(), Code::FailedPrecondition);
    // Conditional delete.
    let e = c
        .delete(proto::DeleteRequest {
            key: key("users/1"),
            condition: Some(proto::Condition {
                kind: Some(Kind::IfRevision(1)),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let d = c
        .delete(proto::DeleteRequest {
            key: key("users/1"),
            condition: Some(proto::Condition {
                kind: Some(Kind::IfEtag(r2.meta.unwrap().etag)),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.revision, 3);
    for code in [
        c.get(proto::GetRequest {
            key: key("users/1"),
        })
        .await
        .unwrap_err()
        .code(),
        c.head(proto::HeadRequest {
            key: key("users/1"),
        })
        .await
        .unwrap_err()
        .code(),
        c.delete(proto::DeleteRequest {
            key: key("users/1"),
            condition: None,
        })
        .await
        .unwrap_err()
        .code(),
    ] {
        assert_eq!(code, Code::NotFound);
    }
    // TTL.
    let mut p = put("tmp", b"v");
    p.ttl_ms = 50;
    let m = c.put(p).await.unwrap().into_inner().meta.unwrap();
    assert_eq!(m.expires_at_ms, 1_700_000_000_050);
    assert!(c.get(proto::GetRequest { key: key("tmp") }).await.is_ok());
    clock.advance(Duration::from_millis(50));
    assert_eq!(
        c.get(proto::GetRequest { key: key("tmp") })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // Metrics per method with bounded codes.
    let text = s.metrics.encode();
    assert!(
        text.lines().any(|l| l.starts_with("server_handle_total")
            && l.contains("ObjectStore/Put")
            && l.contains("code=\"FailedPrecondition\"")),
        "{text}"
    );
}

#[tokio::test]
async fn bad_input_gets_the_right_status() {
    let s = start(
        EngineConfig {
            max_key: 64,
            ..EngineConfig::default()
        },
        ServiceConfig {
            max_object: 1024 * 1024,
            ..ServiceConfig::default()
        },
    )
    .await;
    let mut c = client(&s).await;
    let cases = [
        (put("", b"v"), Code::InvalidArgument, "empty"),
        (
            put(&"k".repeat(65), b"v"),
            Code::InvalidArgument,
            "key of 65 bytes",
        ),
        (
            put("big", &vec![0u8; 1024 * 1024 + 1]),
            Code::InvalidArgument,
            "exceeds the limit",
        ),
        (put("__shadow__/x", b"v"), Code::InvalidArgument, "reserved"),
        // Regression: `now + ttl_ms` overflowed (a panic in debug builds; an object stored
        // already expired, its memory charged, in release builds).
        (
            proto::PutRequest {
                ttl_ms: u64::MAX,
                ..put("forever", b"v")
            },
            Code::InvalidArgument,
            "invalid expire time",
        ),
        (
            proto::PutRequest {
                ttl_ms: i64::MAX as u64,
                ..put("forever", b"v")
            },
            Code::InvalidArgument,
            "invalid expire time",
        ),
    ];
    for (p, code, msg) in cases {
        let e = c.put(p).await.unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(e.message().contains(msg), "{}", e.message());
    }
    // A message far beyond the limit is refused by the transport itself.
    // (tonic reports it as OUT_OF_RANGE or RESOURCE_EXHAUSTED, with the sizes.)
    let e = c
        .put(put("huge", &vec![0u8; 3 * 1024 * 1024]))
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{e:?}"
    );
    assert!(e.message().contains("too large"), "{e:?}");
    // Reads and deletes check keys as writes do: INVALID_ARGUMENT, not NOT_FOUND.
    for (k, msg) in [
        (Bytes::new(), "empty"),
        (key(&"k".repeat(65)), "key of 65 bytes"),
    ] {
        let codes = [
            (
                "get",
                c.get(proto::GetRequest { key: k.clone() }).await.map(drop),
            ),
            (
                "head",
                c.head(proto::HeadRequest { key: k.clone() })
                    .await
                    .map(drop),
            ),
            (
                "delete",
                c.delete(proto::DeleteRequest {
                    key: k.clone(),
                    condition: None,
                })
                .await
                .map(drop),
            ),
            (
                "batch_get",
                c.batch_get(proto::BatchGetRequest {
                    keys: vec![key("fine"), k.clone()],
                })
                .await
                .map(drop),
            ),
            (
                "download",
                c.download(proto::DownloadRequest {
                    key: k.clone(),
                    chunk_size: 0,
                })
                .await
                .map(drop),
            ),
        ];
        for (call, r) in codes {
            let e = r.expect_err(call);
            assert_eq!(e.code(), Code::InvalidArgument, "{call}: {}", e.message());
            assert!(e.message().contains(msg), "{call}: {}", e.message());
        }
    }
    for token in ["nonsense", "v1.zz", "v1."] {
        let e = c
            .list(proto::ListRequest {
                prefix: Bytes::new(),
                limit: 10,
                page_token: token.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{token}");
    }
    let e = c
        .list(proto::ListRequest {
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .download(proto::DownloadRequest {
            key: key("x"),
            chunk_size: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Watch from the future: OUT_OF_RANGE.
    let e = c
        .watch(proto::WatchRequest {
            start_revision: 1000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    assert_eq!(s.engine.revision(), 0, "nothing was written");
}

#[tokio::test]
async fn list_paginates_in_key_order_and_batches_work() {
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let mut c = client(&s).await;
    let puts: Vec<proto::PutRequest> = (0..2500)
        .map(|i| put(&format!("items/{i:05}"), format!("v{i}").as_bytes()))
        .chain([put("other/1", b"x"), put("", b"bad")])
        .collect();
    let results = c
        .batch_put(proto::BatchPutRequest { puts })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 2502);
    assert!(results[..2501].iter().all(|r| r.code == 0));
    assert_eq!(results[2501].code, Code::InvalidArgument as i32);
    assert!(results[2501].message.contains("empty"));

    let mut keys = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list(proto::ListRequest {
                prefix: key("items/"),
                limit: 1000,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        keys.extend(page.items.into_iter().map(|i| i.key));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let expected: Vec<Bytes> = (0..2500)
        .map(|i| Bytes::from(format!("items/{i:05}")))
        .collect();
    assert_eq!(keys, expected);

    let got = c
        .batch_get(proto::BatchGetRequest {
            keys: vec![key("items/00007"), key("missing"), key("other/1")],
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(got.len(), 3);
    assert!(got[0].found && &got[0].value[..] == b"v7");
    assert!(!got[1].found);
    assert_eq!(&got[2].value[..], b"x");
}

#[tokio::test]
async fn watch_resumes_from_a_revision_and_reports_lag() {
    let s = start(
        EngineConfig {
            feed_history: 1000,
            watch_buffer: 64,
            ..EngineConfig::default()
        },
        ServiceConfig::default(),
    )
    .await;
    let mut c = client(&s).await;
    for i in 0..10 {
        c.put(put(&format!("w/{i}"), b"v")).await.unwrap();
    }
    c.put(put("x/1", b"v")).await.unwrap(); // 11
    // Resume from revision 5: history first, then live, prefix-filtered.
    let mut stream = c
        .watch(proto::WatchRequest {
            prefix: key("w/"),
            start_revision: 5,
            include_values: true,
        })
        .await
        .unwrap()
        .into_inner();
    for rev in 5..=10 {
        let e = stream.next().await.unwrap().unwrap();
        assert_eq!(e.revision, rev);
        assert_eq!(e.r#type, proto::EventType::Put as i32);
        assert_eq!(&e.value[..], b"v");
    }
    c.delete(proto::DeleteRequest {
        key: key("w/0"),
        condition: None,
    })
    .await
    .unwrap(); // 12
    let e = stream.next().await.unwrap().unwrap();
    assert_eq!(
        (e.revision, e.r#type),
        (12, proto::EventType::Delete as i32)
    );

    // A watcher that does not read while thousands of writes go past the history (1000
    // events) is cut off with the revision to resume from; writers were never blocked.
    let mut slow = c
        .watch(proto::WatchRequest {
            prefix: key("w/"),
            start_revision: 0,
            include_values: true,
        })
        .await
        .unwrap()
        .into_inner();
    let value = vec![1u8; 4096];
    let puts: Vec<_> = (0..5000)
        .map(|i| put(&format!("w/{}", i % 50), &value))
        .collect();
    c.batch_put(proto::BatchPutRequest { puts }).await.unwrap();
    let mut delivered = Vec::new();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next())
            .await
            .expect("the stream moves")
        {
            Some(Ok(e)) => delivered.push(e.revision),
            Some(Err(s)) => break s,
            None => panic!("ended without a status"),
        }
    };
    assert_eq!(status.code(), Code::OutOfRange);
    // Where to resume is metadata, for clients to read without parsing the message.
    let resume: u64 = status
        .metadata()
        .get(objstore::server::RESUME_FROM)
        .expect("resume-from metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(resume, delivered.last().map_or(13, |r| r + 1));
    // The history has moved past it: resuming there is refused, naming the oldest revision
    // kept; from that one, the rest, in order, without gaps.
    let watch_from = |start_revision| proto::WatchRequest {
        prefix: key("w/"),
        start_revision,
        include_values: false,
    };
    let refused = c.watch(watch_from(resume)).await.unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange);
    assert!(
        refused.message().contains("the oldest available is 4013"),
        "{}",
        refused.message()
    );
    let mut rest = c.watch(watch_from(4013)).await.unwrap().into_inner();
    let mut expect = 4013;
    while expect <= 5012 {
        let e = rest.next().await.unwrap().unwrap();
        assert_eq!(e.revision, expect);
        expect += 1;
    }
}

#[tokio::test]
async fn a_thousand_concurrent_watchers() {
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let c = client(&s).await;
    let mut watchers = Vec::new();
    for i in 0..1000 {
        let mut c = c.clone();
        let stream = c
            .watch(proto::WatchRequest {
                prefix: key(&format!("k/{}", i % 10)),
                start_revision: 0,
                include_values: false,
            })
            .await
            .unwrap()
            .into_inner();
        watchers.push(stream);
    }
    let mut w = c.clone();
    for i in 0..10 {
        w.put(put(&format!("k/{i}"), b"v")).await.unwrap();
    }
    for (i, mut stream) in watchers.into_iter().enumerate() {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("event within 20 s")
            .unwrap()
            .unwrap();
        assert_eq!(e.key, key(&format!("k/{}", i % 10)));
        assert_eq!(e.revision, (i % 10) as u64 + 1);
    }
}

#[tokio::test]
async fn large_objects_stream_both_ways() {
    let s = start(
        EngineConfig::default(),
        ServiceConfig {
            max_object: 8 * 1024 * 1024,
            ..ServiceConfig::default()
        },
    )
    .await;
    let mut c = client(&s).await;
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let mut header = put("blob", b"");
    header.content_type = "application/octet-stream".into();
    let chunks: Vec<proto::UploadChunk> = std::iter::once(upload_header(header, data.len()))
        .chain(data.chunks(32 * 1024).map(data_chunk))
        .collect();
    let r = c
        .upload(tokio_stream::iter(chunks))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.meta.unwrap().size, data.len() as u64);
    let mut down = c
        .download(proto::DownloadRequest {
            key: key("blob"),
            chunk_size: 64 * 1024,
        })
        .await
        .unwrap()
        .into_inner();
    let first = down.next().await.unwrap().unwrap();
    assert!(
        matches!(first.part, Some(proto::download_chunk::Part::Meta(ref m)) if m.content_type == "application/octet-stream")
    );
    let mut back = Vec::new();
    let mut n = 0;
    while let Some(chunk) = down.next().await {
        match chunk.unwrap().part {
            Some(proto::download_chunk::Part::Data(d)) => {
                assert!(d.len() <= 64 * 1024);
                back.extend_from_slice(&d);
                n += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(n, data.len().div_ceil(64 * 1024));
    assert!(back == data);

    // Too large: refused, nothing stored.
    let big = vec![upload_header(put("toobig", b""), 130 * 64 * 1024)];
    let e = c.upload(tokio_stream::iter(big)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // More data than announced.
    let lying: Vec<proto::UploadChunk> =
        vec![upload_header(put("liar", b""), 10), data_chunk(&[0u8; 11])];
    let e = c.upload(tokio_stream::iter(lying)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(s.engine.get(b"toobig").is_none() && s.engine.get(b"liar").is_none());
    // A data chunk before the header.
    let e = c
        .upload(tokio_stream::iter(vec![data_chunk(b"x")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

fn upload_header(put: proto::PutRequest, size: usize) -> proto::UploadChunk {
    proto::UploadChunk {
        part: Some(proto::upload_chunk::Part::Header(proto::UploadHeader {
            put: Some(put),
            size: size as u64,
        })),
    }
}

fn data_chunk(d: &[u8]) -> proto::UploadChunk {
    proto::UploadChunk {
        part: Some(proto::upload_chunk::Part::Data(Bytes::copy_from_slice(d))),
    }
}

#[tokio::test]
async fn an_upload_that_ends_short_or_loses_its_connection_stores_nothing() {
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let mut c = client(&s).await;
    // The stream ends cleanly but short of the announced size.
    let short = vec![
        upload_header(put("short", b""), 100_000),
        data_chunk(&[1u8; 32 * 1024]),
    ];
    let e = c.upload(tokio_stream::iter(short)).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert!(e.message().contains("32768 of 100000"), "{}", e.message());

    // The connection dies mid-upload: a proxy in between drops both sockets.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let target = s.addr;
    // Client to server is copied by hand, counting: the test cuts the connection once the
    // first chunk has reached the server's socket.
    let (forwarded_tx, mut forwarded) = tokio::sync::watch::channel(0usize);
    let pipes = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (inbound, _) = proxy.accept().await.unwrap();
        let outbound = tokio::net::TcpStream::connect(target).await.unwrap();
        let (mut ir, mut iw) = inbound.into_split();
        let (mut or, mut ow) = outbound.into_split();
        let up = async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut total = 0;
            loop {
                let n = ir.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                ow.write_all(&buf[..n]).await?;
                total += n;
                forwarded_tx.send_replace(total);
            }
        };
        let down = tokio::io::copy(&mut or, &mut iw);
        let _ = tokio::join!(up, down);
    });
    let mut via = ObjectStoreClient::connect(format!("http://{proxy_addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(upload_header(put("partial", b""), 1_000_000))
        .await
        .unwrap();
    tx.send(data_chunk(&[0u8; 32 * 1024])).await.unwrap();
    let call = tokio::spawn(async move {
        via.upload(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::timeout(
        Duration::from_secs(10),
        forwarded.wait_for(|&n| n >= 32 * 1024),
    )
    .await
    .expect("the first chunk reaches the server")
    .unwrap();
    pipes.abort();
    let r = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call ends")
        .unwrap();
    assert!(r.is_err(), "{r:?}");
    drop(tx);
    // The server has ended both uploads (its metrics count each call when it ends): only
    // then is "nothing stored" a verdict.
    let ended = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("server_handle_total") && l.contains("ObjectStore/Upload"))
            .filter(|l| !l.contains("code=\"OK\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ended(&s.metrics.encode()) < 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not end the cut upload: {}",
            s.metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(s.engine.get(b"partial").is_none());
    assert!(s.engine.get(b"short").is_none());
    assert_eq!(s.engine.revision(), 0);
}

#[tokio::test]
async fn token_auth_health_and_reflection() {
    let s = start(
        EngineConfig::default(),
        ServiceConfig {
            auth_token: Some("t0ken".into()),
            ..ServiceConfig::default()
        },
    )
    .await;
    let mut c = client(&s).await;
    let e = c.put(put("k", b"v")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut wrong = Request::new(put("k", b"v"));
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        c.put(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut right = Request::new(put("k", b"v"));
    right
        .metadata_mut()
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    c.put(right).await.unwrap();

    let channel = Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "jupiter.objstore.v1.ObjectStore".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Both reflection versions list both services.
    macro_rules! services {
        ($v:ident) => {{
            use tonic_reflection::pb::$v::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$v::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$v::server_reflection_response::MessageResponse;
            let mut refl = ServerReflectionClient::new(channel.clone());
            let req = tonic_reflection::pb::$v::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut resp = refl
                .server_reflection_info(tokio_stream::iter(vec![req]))
                .await
                .unwrap()
                .into_inner();
            let msg = resp.next().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
                panic!("{msg:?}");
            };
            list.service
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<String>>()
        }};
    }
    for names in [services!(v1), services!(v1alpha)] {
        assert!(
            names.contains(&"jupiter.objstore.v1.ObjectStore".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_owned()),
            "{names:?}"
        );
    }
}

#[tokio::test]
async fn shadow_requests_use_the_shadow_namespace() {
    let s = start(EngineConfig::default(), ServiceConfig::default()).await;
    let mut c = client(&s).await;
    c.put(put("orders/1", b"live")).await.unwrap();
    // Shadow reads see the shadow namespace (empty), writes go there.
    assert_eq!(
        c.get(shadow(proto::GetRequest {
            key: key("orders/1")
        }))
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    c.put(shadow(put("orders/1", b"shadow"))).await.unwrap();
    c.put(shadow(put("orders/2", b"shadow"))).await.unwrap();
    let g = c
        .get(shadow(proto::GetRequest {
            key: key("orders/1"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&g.value[..], b"shadow");
    let list = c
        .list(shadow(proto::ListRequest {
            prefix: key("orders/"),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<Bytes> = list.items.into_iter().map(|i| i.key).collect();
    assert_eq!(keys, [key("orders/1"), key("orders/2")]);
    // Live data is untouched and live listings never show shadow keys.
    let g = c
        .get(proto::GetRequest {
            key: key("orders/1"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&g.value[..], b"live");
    let list = c
        .list(proto::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.items.len(), 1);
    assert!(s.engine.get(b"__shadow__/orders/2").is_some());

    // Regression: a live listing filtered the shadow namespace out after paging, so a page of
    // shadow keys came back empty with no token and the listing stopped early. Shadow keys
    // ("__shadow__/…") sort before these live ones.
    for i in 0..10 {
        c.put(shadow(put(&format!("a/{i}"), b"s"))).await.unwrap();
    }
    for i in 0..5 {
        c.put(put(&format!("z/{i}"), b"live")).await.unwrap();
    }
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let page = c
            .list(proto::ListRequest {
                limit: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            !page.items.is_empty() || page.next_page_token.is_empty(),
            "an empty page with more to come"
        );
        seen.extend(page.items.into_iter().map(|i| i.key));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let want: Vec<Bytes> = std::iter::once(key("orders/1"))
        .chain((0..5).map(|i| key(&format!("z/{i}"))))
        .collect();
    assert_eq!(seen, want);

    // Without a shadow namespace, shadow requests are refused and nothing is written.
    let strict = start(
        EngineConfig::default(),
        ServiceConfig {
            shadow_prefix: None,
            ..ServiceConfig::default()
        },
    )
    .await;
    let mut c = client(&strict).await;
    let e = c.put(shadow(put("orders/1", b"x"))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("no shadow target"), "{}", e.message());
    assert_eq!(strict.engine.revision(), 0);
}

#[tokio::test]
async fn a_write_flood_against_the_cap_is_refused_or_evicts() {
    for eviction in [Eviction::Noeviction, Eviction::SampledLru] {
        let s = start(
            EngineConfig {
                max_memory: 8 * 1024 * 1024,
                eviction,
                ..EngineConfig::default()
            },
            ServiceConfig::default(),
        )
        .await;
        let mut c = client(&s).await;
        let value = vec![7u8; 16 * 1024];
        let mut exhausted = 0;
        for i in 0..1500 {
            match c.put(put(&format!("f/{i}"), &value)).await {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.code(), Code::ResourceExhausted, "{eviction:?}");
                    exhausted += 1;
                }
            }
            assert!(s.engine.charged_bytes() <= 8 * 1024 * 1024);
        }
        match eviction {
            Eviction::Noeviction => assert!(exhausted > 500, "{exhausted}"),
            Eviction::SampledLru => {
                assert_eq!(exhausted, 0);
                assert!(s.engine.evictions().0 > 500);
            }
        }
    }
}

/// A request tagged as shadow traffic.
fn shadow<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("x-jupiter-shadow", "1".parse().unwrap());
    r
}
