//! The RESP port on a real engine over loopback, driven by our Redis client, by redis-cli and
//! redis-benchmark (the real tools), and by raw bytes for malformed input.

use std::time::Duration;

use bytes::Bytes;
use objstore::engine::{Engine, EngineConfig};
use objstore::resp::{RespConfig, serve};
use redis_client::cmds::Ttl;
use redis_client::{Client, Error, Protocol, cmd, cmds};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Port {
    addr: std::net::SocketAddr,
    engine: Engine,
    /// The engine's clock, standing still until a test moves it.
    clock: objstore::engine::Clock,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(max_object: usize) -> Port {
    start_with(RespConfig {
        max_object,
        ..RespConfig::default()
    })
    .await
}

async fn start_with(config: RespConfig) -> Port {
    let clock = objstore::engine::Clock::manual(1_700_000_000_000);
    let engine = Engine::new(EngineConfig {
        max_value: config.max_object,
        clock: clock.clone(),
        ..EngineConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = jupiter_core::Metrics::new();
    let e = engine.clone();
    tokio::spawn(async move {
        serve(e, listener, config, &metrics, async {
            let _ = stopped.await;
        })
        .await
    });
    Port {
        addr,
        engine,
        clock,
        _stop: stop,
    }
}

async fn client(p: &Port) -> Client {
    Client::builder()
        .url(&format!("redis://{}", p.addr))
        .metrics(&jupiter_core::Metrics::new())
        .connect()
        .await
        .unwrap()
}

/// redis-client's own string-command group, the one it runs against redis-server.
#[path = "../../redis-client/tests/groups/strings.rs"]
mod strings;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_clients_string_group_passes_here_as_on_redis_server() {
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        // A fresh port per protocol: the group expects an empty database.
        let p = start(1024 * 1024).await;
        let c = Client::builder()
            .url(&format!("redis://{}", p.addr))
            .protocol(protocol)
            .metrics(&jupiter_core::Metrics::new())
            .connect()
            .await
            .unwrap();
        strings::strings_body(&c, protocol).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_url_authenticates_and_scan_streams_every_key() {
    let p = start_with(RespConfig {
        auth_token: Some("s3cret".into()),
        ..RespConfig::default()
    })
    .await;
    let refused = Client::builder()
        .url(&format!("redis://{}", p.addr))
        .metrics(&jupiter_core::Metrics::new())
        .connect()
        .await;
    match refused {
        Err(e) => assert!(format!("{e:?}").contains("NOAUTH"), "{e:?}"),
        Ok(c) => {
            let e = c.get::<Option<String>>("k").await.unwrap_err();
            assert!(e.to_string().contains("NOAUTH"), "{e}");
        }
    }
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let c = Client::builder()
            .url(&format!("redis://:s3cret@{}", p.addr))
            .protocol(protocol)
            .metrics(&jupiter_core::Metrics::new())
            .connect()
            .await
            .unwrap();
        let mut pipe = c.pipeline();
        for i in 0..1000 {
            pipe.add(cmds::set(format!("scan:{i}"), i));
        }
        pipe.add(cmds::set("other", 1));
        let _: Vec<redis_client::resp::Frame> = pipe.query().await.unwrap();
        let keys: std::collections::HashSet<Bytes> =
            futures::TryStreamExt::try_collect(c.scan(Some("scan:*"), Some(64)))
                .await
                .unwrap();
        assert_eq!(keys.len(), 1000, "{protocol:?}");
        assert!(!keys.contains(&Bytes::from_static(b"other")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_redis_client_drives_the_string_subset() {
    let p = start(1024 * 1024).await;
    let c = client(&p).await;
    let mut watch = p.engine.watch(Bytes::new(), 0).unwrap();

    c.set("user:1", "ada").await.unwrap();
    assert_eq!(c.get::<String>("user:1").await.unwrap(), "ada");
    assert_eq!(c.get::<Option<String>>("nope").await.unwrap(), None);
    c.mset(&[("a", "1"), ("b", "2")]).await.unwrap();
    let v: Vec<Option<String>> = c.mget(&["a", "nope", "b"]).await.unwrap();
    assert_eq!(v, [Some("1".into()), None, Some("2".into())]);
    assert_eq!(c.exists(&["a", "b", "nope"]).await.unwrap(), 2);
    assert_eq!(c.incr("n").await.unwrap(), 1);
    assert_eq!(c.incr_by("n", 41).await.unwrap(), 42);
    let e = c.incr("user:1").await.unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");

    // Expiry: TTL, PERSIST, and the value kept through both.
    assert!(c.expire("a", Duration::from_secs(100)).await.unwrap());
    // The engine's clock stands still: the time to live is exactly what was set.
    let ttl = c.ttl("a").await.unwrap().remaining().expect("expires");
    assert_eq!(ttl, Duration::from_secs(100));
    assert_eq!(c.ttl("user:1").await.unwrap(), Ttl::Persistent);
    assert_eq!(c.ttl("nope").await.unwrap(), Ttl::Missing);
    let persisted: bool = c.query(cmd("PERSIST").arg("a")).await.unwrap();
    assert!(persisted);
    assert_eq!(c.ttl("a").await.unwrap(), Ttl::Persistent);
    assert_eq!(c.get::<String>("a").await.unwrap(), "1");
    let r: Option<String> = c
        .query(cmd("SET").arg("brief").arg("x").arg("PX").arg(50))
        .await
        .unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    p.clock.advance(Duration::from_millis(49));
    assert_eq!(c.get::<String>("brief").await.unwrap(), "x");
    p.clock.advance(Duration::from_millis(1));
    assert_eq!(c.get::<Option<String>>("brief").await.unwrap(), None);

    // SET options.
    let nx: Option<String> = c
        .query(cmd("SET").arg("user:1").arg("x").arg("NX"))
        .await
        .unwrap();
    assert_eq!(nx, None, "NX on an existing key does nothing");
    let xx: Option<String> = c
        .query(cmd("SET").arg("ghost").arg("x").arg("XX"))
        .await
        .unwrap();
    assert_eq!(xx, None, "XX on a missing key does nothing");
    let old: Option<String> = c
        .query(cmd("SET").arg("user:1").arg("grace").arg("GET"))
        .await
        .unwrap();
    assert_eq!(old.as_deref(), Some("ada"));
    let e = c
        .query::<()>(cmd("SET").arg("k").arg("v").arg("NX").arg("XX"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("syntax error"), "{e}");
    assert_eq!(c.del(&["a", "b", "nope"]).await.unwrap(), 2);

    // A pipeline of a thousand, and concurrent callers auto-pipelined.
    let mut pipe = c.pipeline();
    for i in 0..1000 {
        pipe.add(cmds::set(format!("p:{i}"), i));
    }
    let _: Vec<()> = pipe.query().await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let v: i64 = c.get(format!("p:{}", (t * 61 + i) % 1000)).await.unwrap();
                assert_eq!(v, i64::from((t * 61 + i) % 1000));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // Every write was an engine write: revisions and watchers see them.
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(&first.key[..], b"user:1");
    assert!(
        p.engine
            .get(b"p:999")
            .is_some_and(|o| o.mod_revision > 1000)
    );

    // Errors are replies, and the connection goes on.
    let e = c
        .query::<()>(cmd("HSET").arg("h").arg("f").arg("v"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Server(_)), "{e:?}");
    assert!(e.to_string().contains("unknown command"), "{e}");
    assert_eq!(c.get::<String>("user:1").await.unwrap(), "grace");
}

/// The real tools: redis-cli and redis-benchmark (installed by `scripts/test.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_and_redis_benchmark_drive_it() {
    let p = start(1024 * 1024).await;
    let port = p.addr.port().to_string();
    let cli = testkit::binary("redis-cli");
    // The tools block: run them off the runtime that serves the port.
    let run = |args: Vec<String>| {
        let (cli, port) = (cli.clone(), port.clone());
        async move {
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new(&cli)
                    .args(["-h", "127.0.0.1", "-p", &port])
                    .args(&args)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
    };
    assert_eq!(run(vec!["PING".into()]).await, "PONG");
    assert_eq!(
        run(vec!["SET".into(), "greeting".into(), "hello".into()]).await,
        "OK"
    );
    assert_eq!(run(vec!["GET".into(), "greeting".into()]).await, "hello");
    assert_eq!(run(vec!["STRLEN".into(), "greeting".into()]).await, "5");

    let bench = testkit::binary("redis-benchmark");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&bench)
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(["-t", "set,get", "-n", "20000", "-c", "8", "-P", "8", "-q"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("SET:") && text.contains("GET:"), "{text}");
    assert!(
        p.engine.get(b"key:__rand_int__").is_some(),
        "redis-benchmark's SETs landed in the engine"
    );
}

/// Malformed or oversized requests get an error reply and the connection is closed; the
/// port goes on serving others.
#[tokio::test]
async fn malformed_and_oversized_requests_are_refused() {
    let p = start(1024).await;
    for (bad, want) in [
        (&b"*1\r\n$x\r\n"[..], "Protocol error"),
        // Far past the largest object: refused from its header, before the bytes arrive.
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n",
            "Protocol error",
        ),
        (b":1\r\n", "expected an array"),
    ] {
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        s.write_all(bad).await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply))
            .await
            .expect("the connection is closed after the error")
            .unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("-ERR") && reply.contains(want),
            "{reply:?}"
        );
    }
    assert_eq!(p.engine.revision(), 0, "nothing was written");
    let c = client(&p).await;
    // Over the object limit but a well-formed request: an error reply, the connection stays.
    let e = c.set("big", vec![0u8; 2000]).await.unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
    assert_eq!(p.engine.revision(), 0, "nothing was written");
    c.set("after", "fine").await.unwrap();
    assert_eq!(c.get::<String>("after").await.unwrap(), "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_absurd_expire_times_are_refused_not_stored_expired() {
    // `now + ttl` was unchecked: a panic in debug builds, an object stored already expired
    // (after charging its memory) in release builds.
    let p = start(1024 * 1024).await;
    let c = client(&p).await;
    c.set("kept", "v").await.unwrap();
    let charged = p.engine.charged_bytes();
    let max = i64::MAX.to_string();
    let refused: [(&str, Vec<&str>); 7] = [
        ("setex", vec!["SETEX", "k", &max, "v"]),
        ("psetex", vec!["PSETEX", "k", &max, "v"]),
        ("set", vec!["SET", "k", "v", "EX", &max]),
        ("set", vec!["SET", "k", "v", "PX", &max]),
        ("set", vec!["SET", "k", "v", "EXAT", &max]),
        ("expire", vec!["EXPIRE", "kept", &max]),
        ("pexpire", vec!["PEXPIRE", "kept", &max]),
    ];
    for (name, args) in refused {
        let mut command = cmd(args[0]);
        for a in &args[1..] {
            command = command.arg(*a);
        }
        let e = c
            .query::<()>(command)
            .await
            .expect_err(&format!("{args:?} is refused"));
        assert!(
            e.to_string()
                .contains(&format!("invalid expire time in '{name}' command")),
            "{args:?}: {e}"
        );
    }
    assert_eq!(
        c.get::<Option<String>>("k").await.unwrap(),
        None,
        "nothing stored"
    );
    assert_eq!(
        c.ttl("kept").await.unwrap(),
        Ttl::Persistent,
        "kept is untouched"
    );
    assert_eq!(p.engine.charged_bytes(), charged, "no memory charged");
    // The largest expiry that fits is accepted.
    c.query::<()>(
        cmd("SET")
            .arg("far")
            .arg("v")
            .arg("PX")
            .arg(1_000_000_000_000_000u64),
    )
    .await
    .unwrap();
    assert!(matches!(c.ttl("far").await.unwrap(), Ttl::Expires(_)));
}
