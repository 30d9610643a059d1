//! Faults: killed and restarted servers, malformed replies from a fake server, random
//! cancellations, huge values.
//!
//! The fake server exists only to send what a real redis-server never does (malformed frames,
//! unsolicited replies); everything else runs against real redis-server from testkit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_client::resp::{Decoder, Frame};
use redis_client::{Client, ClientConfig, Error, cmd, cmds};
use testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::HANG;

fn config(url: &str) -> ClientConfig {
    ClientConfig {
        url: url.to_owned(),
        command_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        ..ClientConfig::default()
    }
}

async fn connect(config: ClientConfig) -> Client {
    common::connect(config).await.expect("connects")
}

/// Awaits a spawned call (within [`HANG`]) that must end in a timeout.
async fn expect_timeout<T: std::fmt::Debug>(t: tokio::task::JoinHandle<Result<T, Error>>) {
    let e = tokio::time::timeout(HANG, t)
        .await
        .expect("the call resolves")
        .unwrap()
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_resolves_every_pending_future_and_restart_reconnects() {
    let redis = RedisServer::start();
    let client = connect(config(&redis.url())).await;
    let errors = Arc::new(AtomicUsize::new(0));
    let oks = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..64 {
        let (client, errors, oks) = (client.clone(), errors.clone(), oks.clone());
        tasks.push(tokio::spawn(async move {
            // Until this task has seen the server die (bounded count).
            for i in 0..200_000u32 {
                let key = format!("k{t}:{}", i % 100);
                let r = if i % 2 == 0 {
                    client.set(&key, i).await
                } else {
                    client.get::<Option<u32>>(&key).await.map(drop)
                };
                match r {
                    Ok(()) => oks.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        assert!(
                            matches!(
                                e,
                                Error::ConnectionLost { .. }
                                    | Error::Connect { .. }
                                    | Error::Io { .. }
                                    | Error::Timeout(_)
                            ),
                            "unexpected error kind: {e:?}"
                        );
                        errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
            }
        }));
    }
    // Let load build up, then kill the server mid-flight (bounded: no load is a failure).
    tokio::time::timeout(HANG, async {
        while oks.load(Ordering::Relaxed) < 5_000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("5,000 commands succeed before the kill");
    redis.kill();
    for t in tasks {
        tokio::time::timeout(HANG, t)
            .await
            .expect("every pending future resolves after the kill")
            .unwrap();
    }
    assert_eq!(
        errors.load(Ordering::Relaxed),
        64,
        "every task saw the failure"
    );
    let e = client.ping().await.unwrap_err();
    assert!(e.retryable(), "{e:?}");
    assert!(!client.is_connected());

    redis.restart();
    // The client reconnects by itself (backoff ≤ 200 ms); later commands succeed.
    let mut recovered = false;
    for _ in 0..200 {
        if client.set("after", "restart").await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(recovered, "no successful command within 5 s of the restart");
    for i in 0..1000 {
        client.set(format!("x{i}"), i).await.unwrap();
    }
    assert_eq!(client.get::<i64>("x999").await.unwrap(), 999);
    assert_eq!(client.get::<String>("after").await.unwrap(), "restart");
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error_not_a_hang() {
    let port = testkit::free_port().unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let r = tokio::time::timeout(HANG, Client::builder().config(config(&url)).connect()).await;
    let e = r
        .expect("connect gives up within the connect timeout")
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains(&port.to_string()), "{e}");
    // A client built without waiting fails each command quickly, with the cause.
    let client = Client::builder().config(config(&url)).build().unwrap();
    let e = tokio::time::timeout(HANG, client.ping())
        .await
        .expect("resolves")
        .unwrap_err();
    assert!(
        matches!(e, Error::Connect { .. } | Error::Timeout(_)),
        "{e:?}"
    );
}

#[tokio::test]
async fn paused_server_gives_timeouts_and_recovers_in_step() {
    let redis = RedisServer::start();
    let mut c = config(&redis.url());
    c.command_timeout = Duration::from_millis(200);
    c.pool_size = Some(1);
    let client = connect(c).await;
    client.set("k", "v").await.unwrap();
    redis.pause();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.echo::<Bytes>(format!("m{i}")).await
        }));
    }
    for t in tasks {
        expect_timeout(t).await;
    }
    redis.resume();
    // The 100 abandoned replies arrive and are discarded; later replies match their requests.
    for i in 0..200 {
        let m = format!("after{i}");
        let mut got = None;
        for _ in 0..50 {
            match client.echo::<String>(&m).await {
                Ok(v) => {
                    got = Some(v);
                    break;
                }
                Err(e) if e.is_timeout() => continue,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(got.as_deref(), Some(m.as_str()));
    }
    assert_eq!(client.get::<String>("k").await.unwrap(), "v");
}

/// At the in-flight bound with a stalled server, a request that arrives after every earlier
/// deadline has passed (nothing left to time) still gets its timeout: the owner task watches
/// requests it cannot send yet. (A found bug: such a request waited forever.)
#[tokio::test]
async fn a_request_held_back_by_the_in_flight_bound_still_times_out() {
    let redis = RedisServer::start();
    let mut c = config(&redis.url());
    c.command_timeout = Duration::from_millis(50);
    c.pool_size = Some(1);
    c.max_in_flight = 1;
    let client = connect(c).await;
    client.set("k", "v").await.unwrap();
    redis.pause();
    // Fills the one in-flight slot; its reply never comes while the server is paused.
    let e = client.get::<Bytes>("k").await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    // Every deadline has passed: the owner task has nothing left to time.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let e = tokio::time::timeout(HANG, client.get::<Bytes>("k"))
            .await
            .expect("a request behind the in-flight bound must still time out")
            .unwrap_err();
        assert!(e.is_timeout(), "{e:?}");
    }
    redis.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cancellations_never_desynchronize_replies() {
    let redis = RedisServer::start();
    let mut c = config(&redis.url());
    c.pool_size = Some(2);
    let client = connect(c).await;
    let mut setup = client.pipeline();
    for i in 0..100 {
        setup.add(cmds::set(format!("key{i}"), format!("key{i}")));
    }
    let _: Vec<Frame> = setup.query().await.unwrap();

    let completed = Arc::new(AtomicUsize::new(0));
    let cancelled = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..1000u64 {
        let (client, completed, cancelled) = (client.clone(), completed.clone(), cancelled.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t);
            for i in 0..10 {
                let payload = format!("t{t}-{i}-{}", "x".repeat(rng.usize(0..300)));
                // A third never cancelled, a third cancelled right after being queued (the
                // timer is checked after the first poll), a third at a random moment.
                let deadline = match rng.u8(0..3) {
                    0 => HANG,
                    1 => Duration::ZERO,
                    _ => Duration::from_micros(rng.u64(0..2000)),
                };
                // Three request shapes: a single command, a GET whose value is its key, and
                // a pipeline.
                let outcome = match rng.u8(0..3) {
                    0 => tokio::time::timeout(deadline, client.echo::<String>(&payload))
                        .await
                        .map(|r| assert_eq!(r.unwrap(), payload)),
                    1 => {
                        let key = format!("key{}", rng.u8(0..100));
                        tokio::time::timeout(deadline, client.get::<String>(&key))
                            .await
                            .map(|r| assert_eq!(r.unwrap(), key))
                    }
                    _ => {
                        let mut p = client.pipeline();
                        p.add(cmds::echo(&payload)).add(cmds::echo(i));
                        tokio::time::timeout(deadline, p.query::<(String, i64)>())
                            .await
                            .map(|r| assert_eq!(r.unwrap(), (payload.clone(), i)))
                    }
                };
                match outcome {
                    Ok(()) => completed.fetch_add(1, Ordering::Relaxed),
                    Err(_) => cancelled.fetch_add(1, Ordering::Relaxed),
                };
                if rng.bool() {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(HANG, t).await.unwrap().unwrap();
    }
    let (done, gone) = (
        completed.load(Ordering::Relaxed),
        cancelled.load(Ordering::Relaxed),
    );
    assert_eq!(done + gone, 10_000);
    assert!(
        gone > 500,
        "too few cancellations to prove anything: {gone}"
    );
    assert!(done > 500, "too few completions to prove anything: {done}");
    // After all that, every reply still matches its request.
    for i in 0..2000 {
        let m = format!("final{i}");
        assert_eq!(client.echo::<String>(&m).await.unwrap(), m);
    }
}

#[tokio::test]
async fn sixty_four_mib_value_round_trips() {
    let redis = RedisServer::start();
    let mut c = config(&redis.url());
    // Debug builds move 64 MiB slowly; this test is about integrity, not speed.
    c.command_timeout = Duration::from_secs(60);
    let client = connect(c).await;
    let mut rng = fastrand::Rng::with_seed(64);
    let big: Vec<u8> = (0..64 * 1024 * 1024).map(|_| rng.u8(..)).collect();
    let big = Bytes::from(big);
    // Small commands on either side go out in order around the big one.
    let (a, b, c) = tokio::join!(
        client.set("before", 1),
        client.set("big", big.clone()),
        client.incr("before")
    );
    a.unwrap();
    b.unwrap();
    // One task, one connection: the INCR went out after the first SET.
    assert_eq!(c.unwrap(), 2);
    let back: Bytes = client.get("big").await.unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back == big, "the value came back changed");
    assert_eq!(client.strlen("big").await.unwrap(), 64 * 1024 * 1024);

    // A client whose reply limit is smaller refuses it as a protocol error, replaces the
    // connection, and goes on.
    let mut small = config(&redis.url());
    small.max_frame = "1MiB".parse().unwrap();
    small.pool_size = Some(1);
    small.command_timeout = Duration::from_secs(60);
    let small = connect(small).await;
    let e = small.get::<Bytes>("big").await.unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    assert_eq!(small.get::<i64>("before").await.unwrap(), 2);
}

/// What the fake server answers to one command, by the command's first argument.
fn fake_reply(args: &[Bytes]) -> Vec<u8> {
    let name = args
        .first()
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    let arg = args.get(1).cloned().unwrap_or_default();
    match (&name[..], &arg[..]) {
        (b"PING", _) => b"+PONG\r\n".to_vec(),
        (b"GET", b"bad-type") => b"?what\r\n".to_vec(),
        (b"GET", b"bad-length") => b"$abc\r\n".to_vec(),
        (b"GET", b"huge") => b"$99999999999\r\n".to_vec(),
        (b"GET", b"deep") => b"*1\r\n".repeat(100_000),
        (b"GET", b"two-replies") => b"+one\r\n+two\r\n".to_vec(),
        (b"GET", b"endless-line") => vec![b'+'; 256 * 1024],
        (_, a) => {
            let mut out = format!("${}\r\n", a.len()).into_bytes();
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
            out
        }
    }
}

/// A fake server that answers by [`fake_reply`]; counts the connections it accepted.
async fn fake_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                let mut decoder = Decoder::new();
                loop {
                    if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    while let Ok(Some(Frame::Array(words))) = decoder.decode(&mut buf) {
                        let args: Vec<Bytes> = words
                            .into_iter()
                            .map(|w| match w {
                                Frame::Bulk(b) => b,
                                _ => Bytes::new(),
                            })
                            .collect();
                        if sock.write_all(&fake_reply(&args)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn malformed_replies_are_protocol_errors_and_the_connection_is_replaced() {
    let (url, accepted) = fake_server().await;
    let mut c = config(&url);
    c.pool_size = Some(1);
    c.max_frame = "1MiB".parse().unwrap();
    let client = connect(c).await;
    assert_eq!(client.get::<String>("ok").await.unwrap(), "ok");
    let before = accepted.load(Ordering::Relaxed);
    for (i, key) in ["bad-type", "bad-length", "huge", "deep", "endless-line"]
        .into_iter()
        .enumerate()
    {
        // Requests queued behind the bad reply resolve too (error or value), never hang.
        let behind: Vec<_> = (0..20)
            .map(|j| {
                let client = client.clone();
                tokio::spawn(async move { client.get::<String>(format!("v{j}")).await })
            })
            .collect();
        let e = tokio::time::timeout(HANG, client.get::<Frame>(key))
            .await
            .expect("resolves")
            .unwrap_err();
        assert!(matches!(e, Error::Protocol { .. }), "{key}: {e:?}");
        for (j, b) in behind.into_iter().enumerate() {
            match tokio::time::timeout(HANG, b)
                .await
                .expect("resolves")
                .unwrap()
            {
                Ok(v) => assert_eq!(v, format!("v{j}")),
                Err(e) => assert!(
                    matches!(e, Error::Protocol { .. } | Error::ConnectionLost { .. }),
                    "{e:?}"
                ),
            }
        }
        // The connection was replaced: later requests succeed and match.
        let mut ok = false;
        for _ in 0..100 {
            match client.get::<String>(format!("after{i}")).await {
                Ok(v) => {
                    assert_eq!(v, format!("after{i}"));
                    ok = true;
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        assert!(ok, "{key}: no recovery");
    }
    assert!(
        accepted.load(Ordering::Relaxed) >= before + 5,
        "each malformed reply replaced the connection"
    );

    // A reply nobody asked for: the request before it got its own reply; the stray one is
    // detected when it arrives, the connection replaced, and nothing later is mismatched.
    let before = accepted.load(Ordering::Relaxed);
    let first: String = client.get("two-replies").await.unwrap();
    assert_eq!(first, "one");
    let mut later = Vec::new();
    for i in 0..50 {
        match client.get::<String>(format!("later{i}")).await {
            Ok(v) => later.push((i, v)),
            Err(e) => assert!(matches!(e, Error::Protocol { .. }), "{e:?}"),
        }
    }
    for (i, v) in &later {
        assert_eq!(
            *v,
            format!("later{i}"),
            "a stray reply was matched to a later request"
        );
    }
    assert!(later.len() >= 45, "{later:?}");
    assert!(
        accepted.load(Ordering::Relaxed) > before,
        "stray reply replaced the connection"
    );
}

#[tokio::test]
async fn error_messages_say_what_went_wrong() {
    let redis = RedisServer::start();
    let client = connect(config(&redis.url())).await;
    client.set("s", "x").await.unwrap();
    let e = client
        .query::<()>(cmd("LPUSH").arg("s").arg(1))
        .await
        .unwrap_err();
    assert_eq!(e.server_code(), Some("WRONGTYPE"));
    assert!(!e.retryable());
    let e = client.get::<i64>("s").await.unwrap_err();
    assert!(
        e.to_string().contains("\"x\"") || e.to_string().contains("i64"),
        "{e}"
    );
}

#[tokio::test]
async fn the_command_timeout_covers_connecting_and_a_silent_server() {
    // A real server stopped with SIGSTOP: the kernel still accepts connections into its
    // backlog, and nothing ever answers (the handshake hangs).
    let redis = RedisServer::start();
    let url = redis.url();
    redis.pause();
    for protocol in [redis_client::Protocol::Resp2, redis_client::Protocol::Resp3] {
        let client = Client::builder()
            .config(ClientConfig {
                url: url.clone(),
                protocol,
                command_timeout: Duration::from_millis(200),
                // Longer than the test's liveness bound: only the command timeout can end it.
                connect_timeout: Duration::from_secs(60),
                pool_size: Some(1),
                ..ClientConfig::default()
            })
            .metrics(&jupiter_core::Metrics::new())
            .build()
            .unwrap();
        // RESP3 hangs in HELLO (connecting); RESP2 has no handshake and hangs awaiting a reply.
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move { c.echo::<String>(i).await })
            })
            .collect();
        for call in calls {
            let e = tokio::time::timeout(Duration::from_secs(20), call)
                .await
                .expect("the command timeout ends the wait")
                .unwrap()
                .unwrap_err();
            assert!(
                matches!(e, Error::Timeout(t) if t == Duration::from_millis(200)),
                "{protocol:?}: {e:?}"
            );
        }
    }
    // Awake, the same server answers: the timeouts were the pause, not the address.
    redis.resume();
    let client = connect(config(&url)).await;
    assert_eq!(client.echo::<String>("back").await.unwrap(), "back");
}

/// A TCP proxy in front of a real server that injects one fault when armed: it forwards a
/// command containing `marker` to the server (so it runs), then drops the connection instead
/// of forwarding the reply. Returns the proxy's URL and the switch that arms it.
async fn dropping_proxy(
    upstream: std::net::SocketAddr,
    marker: &'static [u8],
) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::AtomicBool;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let armed = Arc::new(AtomicBool::new(false));
    let switch = armed.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let armed = armed.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                // Server to client, until told to drop.
                let (drop_tx, mut drop_rx) = tokio::sync::oneshot::channel::<()>();
                let down = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        tokio::select! {
                            biased;
                            // The faulty command is on its way: read its reply and drop it
                            // with the connection.
                            _ = &mut drop_rx => {
                                let _ = sr.read(&mut buf).await;
                                return;
                            }
                            n = sr.read(&mut buf) => match n {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if cw.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            },
                        }
                    }
                });
                let mut buf = vec![0u8; 64 * 1024];
                let mut drop_tx = Some(drop_tx);
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // Told before the command goes on, so its reply can never slip through.
                    let hit = buf[..n].windows(marker.len()).any(|w| w == marker)
                        && armed.swap(false, Ordering::SeqCst);
                    if hit && let Some(tx) = drop_tx.take() {
                        let _ = tx.send(());
                    }
                    if sw.write_all(&buf[..n]).await.is_err() || hit {
                        break;
                    }
                }
                // Dropping both halves (and the server task) closes both connections.
                let _ = down.await;
            });
        }
    });
    (url, switch)
}

/// Retries: a read whose connection broke before its reply is sent again on the next
/// connection (`retry-reads`, default on); a write never is — it may have run, and here it
/// did, once. With `retry-reads = false` reads fail like writes.
#[tokio::test]
async fn reads_are_resent_after_a_broken_connection_and_writes_never_are() {
    let redis = RedisServer::start();
    let direct = connect(config(&redis.url())).await;
    direct.set("dropme:value", "v").await.unwrap();
    let (url, arm) = dropping_proxy(redis.addr(), b"dropme").await;
    let mut c = config(&url);
    c.pool_size = Some(1);
    let client = connect(c.clone()).await;

    arm.store(true, Ordering::SeqCst);
    let v: Option<String> = client.get("dropme:value").await.unwrap();
    assert_eq!(v.as_deref(), Some("v"), "the read was resent and answered");
    assert!(!arm.load(Ordering::SeqCst), "the fault was injected");

    arm.store(true, Ordering::SeqCst);
    let e = client.incr("dropme:counter").await.unwrap_err();
    assert!(matches!(e, Error::ConnectionLost { .. }), "{e:?}");
    assert!(!arm.load(Ordering::SeqCst), "the fault was injected");
    assert_eq!(
        direct.get::<i64>("dropme:counter").await.unwrap(),
        1,
        "the write ran once and was not sent again"
    );
    // The connection is replaced; later commands work.
    assert_eq!(client.incr("dropme:counter").await.unwrap(), 2);

    c.retry_reads = false;
    let strict = connect(c).await;
    arm.store(true, Ordering::SeqCst);
    let e = strict
        .get::<Option<String>>("dropme:value")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ConnectionLost { .. }), "{e:?}");
    assert!(!arm.load(Ordering::SeqCst), "the fault was injected");
    assert_eq!(strict.get::<String>("dropme:value").await.unwrap(), "v");
}

/// `with_timeout` gives a handle its own deadline over the same connections: against a
/// stalled server its commands (and pipelines) time out while the original handle's, with
/// the long configured timeout, are still waiting, and then get their replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_with_its_own_timeout_times_out_alone() {
    let redis = RedisServer::start();
    let mut c = config(&redis.url());
    c.command_timeout = Duration::from_secs(60);
    // One connection: both handles' requests share its FIFO and its one timer.
    c.pool_size = Some(1);
    let long = connect(c).await;
    let short = long.with_timeout(Duration::from_millis(100));
    assert_eq!(short.timeout(), Some(Duration::from_millis(100)));
    assert_eq!(long.timeout(), Some(Duration::from_secs(60)));
    assert_eq!(long.with_timeout(Duration::ZERO).timeout(), None);
    common::short_deadline_times_out_alone(&long, &short, "k", || redis.pause(), || redis.resume())
        .await;
    assert_eq!(short.get::<String>("k").await.unwrap(), "v");
}

#[tokio::test]
async fn callers_past_the_queue_capacity_wait_and_keep_their_deadline() {
    // One connection that takes one command at a time and queues two: a stopped server
    // leaves 48 of 50 callers waiting for room in the queue, not failing.
    let redis = RedisServer::start();
    let mut c = config(&redis.url());
    c.pool_size = Some(1);
    c.max_in_flight = 1;
    c.queue_capacity = 2;
    c.command_timeout = Duration::ZERO;
    let patient = connect(c.clone()).await;
    c.command_timeout = Duration::from_secs(5);
    let bounded = connect(c).await;
    patient.set("n", 0).await.unwrap();
    redis.pause();
    // Spawned from one task each, so each caller queues on its own.
    let waiting: Vec<_> = (0..50)
        .map(|_| {
            let c = patient.clone();
            tokio::spawn(async move { c.incr("n").await })
        })
        .collect();
    let timing_out: Vec<_> = (0..50)
        .map(|_| {
            let c = bounded.clone();
            tokio::spawn(async move { c.incr("n").await })
        })
        .collect();
    // Virtual time: an hour passes in an instant whenever the runtime idles. Callers with
    // a deadline get it (waiting for room counts), callers without keep waiting.
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    tokio::time::resume();
    for t in timing_out {
        expect_timeout(t).await;
    }
    assert!(waiting.iter().all(|t| !t.is_finished()), "a caller gave up");
    redis.resume();
    let mut got = Vec::new();
    for t in waiting {
        got.push(
            tokio::time::timeout(HANG, t)
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    // Every waiting caller ran, once, with its own reply. Of the timed-out callers only the
    // one command already written to the other connection may have run (its deadline ended
    // the wait, not the command): INCR ran 50 or 51 times.
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 50, "{got:?}");
    let total = patient.get::<i64>("n").await.unwrap();
    assert!(total == 50 || total == 51, "INCR ran {total} times");
    assert!(got.iter().all(|&v| (1..=total).contains(&v)), "{got:?}");
}
