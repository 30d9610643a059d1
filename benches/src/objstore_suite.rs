//! objstore side by side:
//!
//! - **gRPC**: Get and Put of 1 KiB values, 64 calls in flight, against the transport's limit:
//!   the same `.proto` served by an empty service that answers every Get with a fixed 1 KiB
//!   value and every Put with a fixed answer (no storage at all). Server and client each on a
//!   one-thread runtime in this process; turns alternate, `BENCH_ROUNDS` rounds, median.
//! - **Memory per object**: resident memory of `objstore serve` holding 1M objects (16 B keys,
//!   100 B random values) vs redis-server's for the same data, both as separate processes.
//! - **Restore**: 1M objects from a snapshot (`objstore serve` start until it answers) vs
//!   redis-server loading an RDB of the same data (start until `PING` stops answering
//!   `LOADING`), page cache warm.
//! - **RESP port**: redis-benchmark (`-t set,get`, 50 connections, pipelines of 16, 64-byte
//!   values) against `objstore serve`'s RESP port and against redis-server, rounds
//!   interleaved, medians, requests per second and server CPU per request.
//! - **Growth**: the latency of each of 2M puts into a one-shard engine (the worst case: one
//!   index holds everything): the slowest put against the median. A table rehashed in one go
//!   would make the slowest put wait for all of it; an incremental one spreads it out.
//!
//! Needs the release `objstore` binary next to this one (`cargo build --release -p objstore`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use objstore::proto;
use objstore::proto::object_store_client::ObjectStoreClient;
use objstore::proto::object_store_server::{ObjectStore, ObjectStoreServer};
use tonic::{Request, Response, Status};

type Stream<T> = futures::stream::Empty<Result<T, Status>>;

/// The transport's limit: the ObjectStore API with nothing behind it.
struct Echo {
    value: Bytes,
}

fn meta(size: usize) -> proto::ObjectMeta {
    proto::ObjectMeta {
        create_revision: 1,
        mod_revision: 1,
        version: 1,
        etag: "\"0123456789abcdef\"".into(),
        size: size as u64,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl ObjectStore for Echo {
    async fn put(
        &self,
        req: Request<proto::PutRequest>,
    ) -> Result<Response<proto::PutResponse>, Status> {
        let size = req.get_ref().value.len();
        Ok(Response::new(proto::PutResponse {
            revision: 1,
            meta: Some(meta(size)),
        }))
    }
    async fn get(
        &self,
        _: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        Ok(Response::new(proto::GetResponse {
            value: self.value.clone(),
            meta: Some(meta(self.value.len())),
        }))
    }
    async fn head(
        &self,
        _: Request<proto::HeadRequest>,
    ) -> Result<Response<proto::HeadResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn delete(
        &self,
        _: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn list(
        &self,
        _: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn batch_get(
        &self,
        _: Request<proto::BatchGetRequest>,
    ) -> Result<Response<proto::BatchGetResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn batch_put(
        &self,
        _: Request<proto::BatchPutRequest>,
    ) -> Result<Response<proto::BatchPutResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    type WatchStream = Stream<proto::WatchEvent>;
    async fn watch(
        &self,
        _: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn upload(
        &self,
        _: Request<tonic::Streaming<proto::UploadChunk>>,
    ) -> Result<Response<proto::PutResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    type DownloadStream = Stream<proto::DownloadChunk>;
    async fn download(
        &self,
        _: Request<proto::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn snapshot(
        &self,
        _: Request<proto::SnapshotRequest>,
    ) -> Result<Response<proto::SnapshotResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
}

/// Serves `svc` on a one-thread runtime of its own; returns the address.
fn serve<S>(svc: ObjectStoreServer<S>) -> std::net::SocketAddr
where
    S: ObjectStore,
{
    crate::serve_on_thread(|listener| async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await;
    })
}

#[derive(Clone, Copy)]
enum Op {
    Get,
    Put,
}

/// Calls per second with 64 calls in flight for `secs`.
fn drive(rt: &tokio::runtime::Runtime, addr: std::net::SocketAddr, op: Op, secs: f64) -> f64 {
    rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect");
        let client = ObjectStoreClient::new(channel);
        let value = Bytes::from(vec![7u8; 1024]);
        // The objects Get reads.
        for i in 0..1000u32 {
            let _ = client
                .clone()
                .put(proto::PutRequest {
                    key: Bytes::from(format!("bench/{i:04}")),
                    value: value.clone(),
                    ..Default::default()
                })
                .await;
        }
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut tasks = Vec::new();
        for t in 0..64u32 {
            let mut c = client.clone();
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut i = t;
                while Instant::now() < deadline {
                    i = (i + 64) % 1000;
                    let key = Bytes::from(format!("bench/{i:04}"));
                    let ok = match op {
                        Op::Get => c.get(proto::GetRequest { key }).await.is_ok(),
                        Op::Put => c
                            .put(proto::PutRequest {
                                key,
                                value: value.clone(),
                                ..Default::default()
                            })
                            .await
                            .is_ok(),
                    };
                    assert!(ok, "call failed");
                    n += 1;
                }
                n
            }));
        }
        let t0 = Instant::now();
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("task");
        }
        total as f64 / t0.elapsed().as_secs_f64()
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let p = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release -p {name}` first",
            p.display()
        ))
    }
}

fn rss_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |pages| pages * 4096.0)
}

/// Starts `objstore serve` with `config`; returns the child, its gRPC address and the time it
/// took to print it.
fn start_objstore(bin: &Path, dir: &Path, config: &str) -> (Child, String, Duration) {
    start_objstore_until(bin, dir, config, "objstore listening on grpc://")
}

/// Starts `objstore serve` with `config` and waits for the line that starts with `prefix`;
/// returns the child, the rest of that line (an address) and the time it took.
fn start_objstore_until(
    bin: &Path,
    dir: &Path,
    config: &str,
    prefix: &str,
) -> (Child, String, Duration) {
    let file = dir.join("objstore.toml");
    std::fs::write(&file, config).expect("config");
    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn objstore");
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().expect("piped")));
    let addr = loop {
        let line = lines
            .next()
            .expect("objstore printed its address")
            .expect("line");
        if let Some(a) = line.strip_prefix(prefix) {
            break a.to_owned();
        }
    };
    let took = t0.elapsed();
    std::thread::spawn(move || for _ in lines {});
    (child, addr, took)
}

/// Objects in the memory and restore measurements (1M unless scaled).
fn objects() -> usize {
    crate::scaled(1_000_000)
}

fn object(i: usize) -> (Bytes, Bytes) {
    let key = Bytes::from(format!("key:{i:012}"));
    let mut v = vec![0u8; 100];
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut v {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    (key, Bytes::from(v))
}

fn memory_and_restore() -> Result<(), String> {
    let bin = sibling("objstore")?;
    let dir = std::env::temp_dir().join(format!("objstore-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let snap = dir.join("store.snap");
    let config = format!(
        "[governance]\naddr = \"127.0.0.1:0\"\n[objstore]\nlisten = \"127.0.0.1:0\"\n\
         [objstore.snapshot]\npath = \"{}\"\ninterval = \"0s\"\non-shutdown = false\n",
        snap.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    // objstore: 1M objects through BatchPut, then resident memory.
    let (mut child, addr, _) = start_objstore(&bin, &dir, &config);
    let base = rss_of(child.id());
    rt.block_on(async {
        let mut c = ObjectStoreClient::connect(format!("http://{addr}"))
            .await
            .expect("connect")
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        for chunk in (0..objects()).collect::<Vec<_>>().chunks(5000) {
            let puts = chunk
                .iter()
                .map(|&i| {
                    let (key, value) = object(i);
                    proto::PutRequest {
                        key,
                        value,
                        ..Default::default()
                    }
                })
                .collect();
            c.batch_put(proto::BatchPutRequest { puts })
                .await
                .expect("batch put");
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let ours = rss_of(child.id());
    // Snapshot, then stop.
    let snap_stats = rt.block_on(async {
        let c = objstore::client::Client::connect(&addr, Default::default())
            .await
            .expect("connect");
        c.snapshot().await.expect("snapshot")
    });
    let _ = child.kill();
    let _ = child.wait();

    // redis-server: the same objects through pipelined SETs.
    let redis = testkit::RedisServer::start();
    let redis_pid = redis.pid().ok_or("redis pid")?;
    let redis_base = rss_of(redis_pid);
    rt.block_on(async {
        let client = redis_client::Client::builder()
            .url(&redis.url())
            .build()
            .expect("redis client");
        for chunk in (0..objects()).collect::<Vec<_>>().chunks(5000) {
            let mut p = client.pipeline();
            for &i in chunk {
                let (k, v) = object(i);
                p.add(redis_client::cmd("SET").arg(&k[..]).arg(&v[..]));
            }
            p.query_each().await.expect("pipeline");
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let theirs = rss_of(redis_pid);
    // SAVE of 1M keys outlasts the 2 s timeout of `command`. (`dbfilename` is a protected
    // config: the file keeps the name testkit gave it, found below.)
    match testkit::resp::Conn::connect(redis.addr(), Duration::from_secs(300))
        .and_then(|mut c| c.command(&["SAVE"]))
    {
        Ok(r) if !r.is_error() => {}
        other => return Err(format!("SAVE: {other:?}")),
    }
    let rdb = std::fs::read_dir(redis.dir())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "rdb"))
        .ok_or("SAVE wrote no .rdb file")?;
    let rdb_size = std::fs::metadata(&rdb).map(|m| m.len()).unwrap_or(0);

    println!(
        "\nmemory: {} objects, 16 B keys, 100 B random values (payload {} MB)",
        objects(),
        objects() * 116 / 1_000_000
    );
    println!(
        "{:<14} {:>14} {:>14} {:>14}",
        "server", "RSS MB", "data MB", "B / object"
    );
    for (name, rss, base) in [
        ("objstore", ours, base),
        ("redis-server", theirs, redis_base),
    ] {
        println!(
            "{name:<14} {:>14.1} {:>14.1} {:>14.1}",
            rss / 1e6,
            (rss - base) / 1e6,
            (rss - base) / objects() as f64
        );
    }
    println!("objstore / redis (RSS): {:.2}×", ours / theirs);

    // Restore: three turns each, page cache warm; median.
    let mut ours_t = Vec::new();
    let mut theirs_t = Vec::new();
    for _ in 0..3 {
        let (mut child, _, took) = start_objstore(&bin, &dir, &config);
        ours_t.push(took.as_secs_f64());
        let _ = child.kill();
        let _ = child.wait();
        theirs_t.push(redis_load(&rdb)?);
    }
    let (o, t) = (median(ours_t), median(theirs_t));
    println!(
        "\nrestore of {} objects: objstore snapshot ({:.1} MB) {o:.3} s; redis-server RDB ({:.1} MB) {t:.3} s; objstore is {:.2}× faster",
        objects(),
        snap_stats.2 as f64 / 1e6,
        rdb_size as f64 / 1e6,
        t / o
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Starts a redis-server on `rdb`; seconds until it stops answering `LOADING`.
fn redis_load(rdb: &Path) -> Result<f64, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| e.to_string())?
        .local_addr()
        .map_err(|e| e.to_string())?
        .port();
    let t0 = Instant::now();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(rdb.parent().ok_or("dir")?)
        .args([
            "--dbfilename",
            rdb.file_name().and_then(|f| f.to_str()).ok_or("name")?,
        ])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server: {e}"))?;
    let loaded = loop {
        if t0.elapsed() > Duration::from_secs(60) {
            break Err("redis-server did not load in 60 s".to_owned());
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"PING\r\n");
            let mut b = [0u8; 64];
            if let Ok(n) = s.read(&mut b)
                && b[..n].starts_with(b"+PONG")
            {
                break Ok(t0.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = child.kill();
    let _ = child.wait();
    loaded
}

/// The suite.
pub fn objstore_suite() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let echo = serve(ObjectStoreServer::new(Echo {
        value: Bytes::from(vec![7u8; 1024]),
    }));
    let metrics = jupiter_core::metrics::Metrics::new();
    let engine = objstore::engine::Engine::new(objstore::engine::EngineConfig::default());
    let store =
        serve(objstore::server::Service::new(engine, Default::default(), &metrics).into_server());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("gRPC, 1 KiB values, 64 calls in flight, {secs} s a turn, median of {rounds}");
    println!(
        "{:<6} {:>14} {:>14} {:>10}",
        "call", "objstore/s", "empty svc/s", "ratio"
    );
    for (name, op) in [("Get", Op::Get), ("Put", Op::Put)] {
        let (mut ours, mut limit) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours.push(drive(&rt, store, op, secs));
            limit.push(drive(&rt, echo, op, secs));
        }
        let (o, l) = (median(ours), median(limit));
        println!("{name:<6} {o:>14.0} {l:>14.0} {:>9.2}×", o / l);
    }
    if let Err(e) = memory_and_restore() {
        eprintln!("objstore memory/restore: {e}");
    }
    if let Err(e) = resp_vs_redis(rounds) {
        eprintln!("objstore RESP port: {e}");
    }
    growth();
}

/// redis-benchmark's requests per second for SET and GET against `port`, and the server's
/// CPU microseconds per request meanwhile.
fn redis_benchmark(port: u16, pid: u32, pipeline: u32) -> Result<(f64, f64, f64), String> {
    let requests = crate::scaled(400_000);
    let cpu0 = crate::process_cpu_seconds(pid);
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-t",
            "set,get",
            "-n",
            &requests.to_string(),
            "-c",
            "50",
            "-P",
            &pipeline.to_string(),
        ])
        .args(["-d", "64", "-r", "100000", "--csv"])
        .output()
        .map_err(|e| format!("redis-benchmark: {e} (apt-get install redis-tools)"))?;
    let cpu = crate::process_cpu_seconds(pid) - cpu0;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("\"{name}\"")))
            .and_then(|l| l.split(',').nth(1))
            .and_then(|v| v.trim_matches('"').parse::<f64>().ok())
            .ok_or_else(|| format!("no {name} figure in redis-benchmark's output: {text}"))
    };
    Ok((rps("SET")?, rps("GET")?, cpu * 1e6 / (2 * requests) as f64))
}

/// Resident memory and restore time alone (`compare objstore-memory`).
pub fn memory_suite() {
    if let Err(e) = memory_and_restore() {
        eprintln!("objstore memory/restore: {e}");
    }
}

/// The RESP port against redis-server alone (`compare objstore-resp`).
pub fn resp_suite() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    if let Err(e) = resp_vs_redis(rounds) {
        eprintln!("objstore RESP port: {e}");
    }
}

fn resp_vs_redis(rounds: usize) -> Result<(), String> {
    let bin = sibling("objstore")?;
    let dir = std::env::temp_dir().join(format!("objstore-bench-resp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (mut child, addr, _) = start_objstore_until(
        &bin,
        &dir,
        "[governance]\naddr = \"127.0.0.1:0\"\n[objstore]\nlisten = \"127.0.0.1:0\"\nresp-listen = \"127.0.0.1:0\"\n",
        "objstore RESP listening on redis://",
    );
    let port: u16 = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("bad RESP address {addr}"))?;
    let redis = testkit::RedisServer::start();
    let mut table = Vec::new();
    for pipeline in [16, 1] {
        // Interleaved rounds, medians: drift in the machine's load hits both alike.
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours.push(redis_benchmark(port, child.id(), pipeline)?);
            theirs.push(redis_benchmark(
                redis.port(),
                redis.pid().unwrap_or(0),
                pipeline,
            )?);
        }
        table.push((pipeline, ours, theirs));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let pick =
        |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| median(v.iter().map(f).collect());
    println!(
        "\nRESP port: redis-benchmark -t set,get -c 50 -d 64 -r 100000, same binary, median of {rounds}"
    );
    println!(
        "| -P | server | SET/s | GET/s | server CPU µs/req | SET vs redis | GET vs redis | CPU vs redis |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for (pipeline, ours, theirs) in &table {
        for (name, v) in [("objstore RESP", ours), ("redis-server", theirs)] {
            println!(
                "| {pipeline} | {name} | {:.0} | {:.0} | {:.2} | {:.2}× | {:.2}× | {:.2}× |",
                pick(v, |s| s.0),
                pick(v, |s| s.1),
                pick(v, |s| s.2),
                pick(v, |s| s.0) / pick(theirs, |s| s.0),
                pick(v, |s| s.1) / pick(theirs, |s| s.1),
                pick(v, |s| s.2) / pick(theirs, |s| s.2),
            );
        }
    }
    Ok(())
}

/// Put latencies while one shard's index grows from empty to 2M keys.
fn growth() {
    let puts = crate::scaled(2_000_000);
    let engine = objstore::engine::Engine::new(objstore::engine::EngineConfig {
        shards: 1,
        ..Default::default()
    });
    let mut took = Vec::with_capacity(puts);
    for i in 0..puts {
        let (key, value) = object(i);
        let put = objstore::engine::Put {
            key,
            value,
            ..Default::default()
        };
        let t = Instant::now();
        engine.put(put).expect("put");
        took.push(t.elapsed().as_secs_f64() * 1e6);
    }
    took.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| took[((puts as f64 * q) as usize).min(puts - 1)];
    println!(
        "\ngrowth: {puts} puts into one shard: p50 {:.2} µs, p99 {:.2} µs, p99.99 {:.1} µs, max {:.1} µs",
        at(0.5),
        at(0.99),
        at(0.9999),
        took[puts - 1]
    );
}
