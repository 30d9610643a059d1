//! Load generators side by side: `loadtest` against wrk and oha (HTTP/1.1 keep-alive, 64
//! connections) on one loopback HTTP server, and against `redis-benchmark` (64 connections,
//! GET/SET) on one redis-server. The figure that matters is requests per CPU-second of the
//! generator (its own user + system time, from `wait4`), since on a small machine the
//! generator and the server share the cores. Each tool runs as its own process, in turns,
//! `BENCH_ROUNDS` times (default 3); the median round is reported.
//!
//! Needs the release `loadtest` binary next to this one (`cargo build --release -p loadtest`),
//! `wrk`, `oha` and `redis-benchmark` on the PATH (a missing peer is reported and skipped).
//!
//! Then the accuracy of the tool itself, the figures its tests leave to a benchmark because
//! they are the machine's as much as the tool's: how closely an open model keeps its planned
//! rate (in total and in each second), and how far above a server's fixed 5 ms delay the
//! median latency and service time come, closed and open model. The tests assert only what
//! holds on any machine (exact counts, the delay as a floor).

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One tool's run.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Requests completed.
    pub requests: f64,
    /// Wall seconds.
    pub secs: f64,
    /// Generator CPU seconds (user + system).
    pub cpu: f64,
}

impl Run {
    fn per_cpu_second(&self) -> f64 {
        self.requests / self.cpu.max(1e-9)
    }

    fn rps(&self) -> f64 {
        self.requests / self.secs.max(1e-9)
    }
}

/// Runs `cmd` to its end; returns its stdout and its CPU time.
fn run_measured(cmd: &mut Command) -> Result<(String, f64, f64), String> {
    let t0 = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: wait4 on our own child's pid with valid out-pointers; it reaps the child, which
    // `Child` never waits for afterwards (it is dropped without wait).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r != pid {
        return Err(format!("wait4 failed for {:?}", cmd.get_program()));
    }
    let secs = t0.elapsed().as_secs_f64();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let text = reader.join().unwrap_or_default();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) > 1 {
        return Err(format!("{:?} failed: {text}", cmd.get_program()));
    }
    Ok((text, tv(ru.ru_utime) + tv(ru.ru_stime), secs))
}

fn loadtest_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = exe.with_file_name("loadtest");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release -p loadtest` first",
            p.display()
        ))
    }
}

/// What `/token` answers (the chaining row extracts `$.token` from it).
const TOKEN_JSON: &str = r#"{"token":"t-42","user":{"id":7,"name":"ann"}}"#;

/// nginx (one worker, `return 200 "ok"`, `/token` JSON, no access log) on a free loopback port, when it is
/// installed: a target in its own process, as in wrk's and oha's own benchmarks.
fn start_nginx() -> Option<(std::net::SocketAddr, std::process::Child)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = std::env::temp_dir().join(format!("loadtest-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\nhttp {{ access_log off; keepalive_requests 10000000;\n\
             client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\"; }}\n\
             location /token {{ default_type application/json; return 200 '{TOKEN_JSON}'; }} }} }}\n",
            d = dir.display()
        ),
    )
    .ok()?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..50 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Some((addr, child));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// A minimal hyper HTTP/1.1 server on its own one-thread runtime: answers `ok` (`/token`:
/// its JSON).
fn start_http_server() -> std::net::SocketAddr {
    crate::serve_on_thread(|listener| async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                    let body: &'static [u8] = if req.uri().path() == "/token" {
                        TOKEN_JSON.as_bytes()
                    } else {
                        b"ok"
                    };
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(body),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

fn loadtest_run(scenario: &str, secs: u64) -> Result<Run, String> {
    let dir = std::env::temp_dir().join(format!("loadtest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("scenario.toml");
    let json = dir.join("report.json");
    std::fs::write(&file, scenario).map_err(|e| e.to_string())?;
    let (_, cpu, wall) = run_measured(
        Command::new(loadtest_binary()?)
            .args(["run", "-q", "--duration", &format!("{secs}s"), "--json"])
            .arg(&json)
            .arg(&file),
    )?;
    let text = std::fs::read_to_string(&json).map_err(|e| e.to_string())?;
    let report: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let requests = report["total"]["requests"]
        .as_f64()
        .ok_or("no request count in the loadtest report")?;
    if report["total"]["failed"].as_u64() != Some(0) {
        return Err(format!(
            "loadtest saw errors: {}",
            report["total"]["errors"]
        ));
    }
    Ok(Run {
        requests,
        secs: wall.min(secs as f64 + 0.5),
        cpu,
    })
}

fn wrk_run(url: &str, secs: u64) -> Result<Run, String> {
    let (out, cpu, _) =
        run_measured(Command::new("wrk").args(["-t1", "-c64", &format!("-d{secs}s"), url]))?;
    let requests = out
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| format!("cannot read wrk's output: {out}"))?;
    Ok(Run {
        requests,
        secs: secs as f64,
        cpu,
    })
}

fn oha_run(url: &str, secs: u64) -> Result<Run, String> {
    let (out, cpu, _) = run_measured(Command::new("oha").args([
        "-c",
        "64",
        "-z",
        &format!("{secs}s"),
        "--no-tui",
        "--output-format",
        "json",
        url,
    ]))?;
    // Total requests: the sum of the status code distribution.
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("cannot read oha's output: {e}"))?;
    let requests: f64 = v["statusCodeDistribution"]
        .as_object()
        .ok_or("oha's output has no statusCodeDistribution")?
        .values()
        .filter_map(serde_json::Value::as_f64)
        .sum();
    Ok(Run {
        requests,
        secs: secs as f64,
        cpu,
    })
}

fn redis_benchmark_run(port: u16, requests: u64) -> Result<Run, String> {
    let (out, cpu, wall) = run_measured(Command::new("redis-benchmark").args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-c",
        "64",
        "-n",
        &requests.to_string(),
        "-r",
        "10000",
        "-t",
        "set,get",
        "-q",
    ]))?;
    if !out.contains("GET") {
        return Err(format!("cannot read redis-benchmark's output: {out}"));
    }
    Ok(Run {
        requests: 2.0 * requests as f64,
        secs: wall,
        cpu,
    })
}

fn median(mut v: Vec<Run>) -> Option<Run> {
    v.sort_by(|a, b| a.per_cpu_second().total_cmp(&b.per_cpu_second()));
    v.get(v.len() / 2).copied()
}

fn table(title: &str, rows: &[(&str, Option<Run>)]) {
    println!("\n{title}");
    println!(
        "{:<16} {:>12} {:>12} {:>10} {:>16} {:>12}",
        "tool", "requests", "req/s", "CPU s", "req/CPU-second", "loadtest ×"
    );
    let ours = rows[0].1.map(|r| r.per_cpu_second());
    for (name, run) in rows {
        match run {
            Some(r) => println!(
                "{name:<16} {:>12.0} {:>12.0} {:>10.2} {:>16.0} {:>12}",
                r.requests,
                r.rps(),
                r.cpu,
                r.per_cpu_second(),
                match ours {
                    Some(o) if *name != rows[0].0 => format!("{:.2}×", o / r.per_cpu_second()),
                    _ => "—".into(),
                }
            ),
            None => println!("{name:<16} (not measured)"),
        }
    }
}

/// A loopback HTTP/1.1 server that answers every request after `delay`, precisely: a thread
/// per connection that sleeps most of the delay and spins the rest (a sleep alone ends up to
/// ~100 µs late, which would be counted against the load tool).
fn start_delay_server(delay: Duration) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_nodelay(true);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // The requests here are GETs: a head, no body.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let t = Instant::now();
                        std::thread::sleep(delay.saturating_sub(Duration::from_micros(300)));
                        while t.elapsed() < delay {
                            std::hint::spin_loop();
                        }
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if conn.write_all(reply).is_err() {
                            return;
                        }
                    }
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// Runs `scenario` with the release binary; returns its JSON report.
fn loadtest_report(name: &str, scenario: &str) -> Result<serde_json::Value, String> {
    let dir = std::env::temp_dir().join(format!("loadtest-accuracy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join(format!("{name}.toml"));
    let json = dir.join(format!("{name}.json"));
    std::fs::write(&file, scenario).map_err(|e| e.to_string())?;
    run_measured(
        Command::new(loadtest_binary()?)
            .args(["run", "-q", "--json"])
            .arg(&json)
            .arg(&file),
    )?;
    let text = std::fs::read_to_string(&json).map_err(|e| e.to_string())?;
    let report: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if report["total"]["failed"].as_u64() != Some(0) {
        return Err(format!("{name}: errors: {}", report["total"]["errors"]));
    }
    Ok(report)
}

/// How closely an open model keeps `rate`/s for `secs` s against a fast server: the requests
/// delivered against the planned count, and the worst full second of the series.
fn rate_accuracy(rate: u64, secs: u64) -> Result<String, String> {
    let addr = start_http_server();
    let scenario = format!(
        "[run]\nshadow = false\n[targets.api]\nkind = \"http\"\nurl = \"http://{addr}\"\n\
         connections = 64\n[[scenarios]]\nname = \"rate\"\nexecutor = \"constant-arrival-rate\"\n\
         rate = {rate}\nduration = \"{secs}s\"\n[[scenarios.steps]]\nname = \"get\"\n\
         http = {{ path = \"/\" }}\n"
    );
    let r = loadtest_report("rate", &scenario)?;
    let planned = (rate * secs) as f64;
    let delivered = r["total"]["requests"].as_f64().unwrap_or(0.0);
    let dropped = r["scenarios"][0]["dropped_iterations"]
        .as_u64()
        .unwrap_or(0);
    // Full seconds only: the last point of the series is the rest of the run.
    let per_second: Vec<f64> = r["series"]
        .as_array()
        .map(|s| {
            s.iter()
                .take(secs as usize)
                .filter_map(|p| p["requests"].as_f64())
                .collect()
        })
        .unwrap_or_default();
    let worst = per_second
        .iter()
        .map(|n| (n - rate as f64) / rate as f64 * 100.0)
        .max_by(|a, b| a.abs().total_cmp(&b.abs()))
        .unwrap_or(f64::NAN);
    let (lo, hi) = per_second
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), n| {
            (lo.min(*n), hi.max(*n))
        });
    Ok(format!(
        "rate {rate}/s for {secs} s: {delivered:.0} of {planned:.0} delivered ({:+.3}%), \
         {lo:.0}..{hi:.0} per second (worst {worst:+.2}%), {dropped} dropped",
        (delivered - planned) / planned * 100.0
    ))
}

/// How far above a server's fixed `delay` the median latency and service time come, with 4
/// workers (closed) and at 200/s (open), over `iterations` requests each.
fn latency_accuracy(delay: Duration, iterations: usize) -> Result<Vec<String>, String> {
    let addr = start_delay_server(delay);
    let scenario = format!(
        "[run]\nshadow = false\n[targets.api]\nkind = \"http\"\nurl = \"http://{addr}\"\n\
         [[scenarios]]\nname = \"closed\"\nexecutor = \"constant-vus\"\nvus = 4\n\
         iterations = {iterations}\n[[scenarios.steps]]\nname = \"get\"\nhttp = {{ path = \"/\" }}\n\
         [[scenarios]]\nname = \"open\"\nexecutor = \"constant-arrival-rate\"\nrate = 200\n\
         iterations = {iterations}\n[[scenarios.steps]]\nname = \"get\"\nhttp = {{ path = \"/\" }}\n"
    );
    let r = loadtest_report("latency", &scenario)?;
    let d = delay.as_secs_f64() * 1000.0;
    let mut lines = Vec::new();
    for s in r["scenarios"].as_array().into_iter().flatten() {
        let p50 = s["summary"]["latency_ms"]["p50"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let p99 = s["summary"]["latency_ms"]["p99"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let svc = s["summary"]["service_time_ms"]["p50"]
            .as_f64()
            .unwrap_or(f64::NAN);
        lines.push(format!(
            "{:<6} p50 {p50:.3} ms ({:+.3} ms over the {d:.0} ms delay), p99 {p99:.3} ms, \
             service p50 {svc:.3} ms ({:+.3} ms), {} requests",
            s["name"].as_str().unwrap_or("?"),
            p50 - d,
            svc - d,
            s["summary"]["requests"]
        ));
    }
    Ok(lines)
}

/// The accuracy section: printed, never asserted.
fn accuracy(secs: u64) {
    println!("\nloadtest accuracy (printed here, not asserted by the tests)");
    match rate_accuracy(2000, secs) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("loadtest accuracy, rate: {e}"),
    }
    match latency_accuracy(Duration::from_millis(5), crate::scaled(1000)) {
        Ok(lines) => lines
            .iter()
            .for_each(|l| println!("latency at a 5 ms server, {l}")),
        Err(e) => eprintln!("loadtest accuracy, latency: {e}"),
    }
}

/// The suite: HTTP, then Redis, then the tool's own accuracy.
pub fn loadtest_suite() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    if let Err(e) = loadtest_binary() {
        eprintln!("loadtest suite: {e}");
        return;
    }
    let mut nginx = start_nginx();
    let (addr, server) = match &nginx {
        Some((addr, _)) => (*addr, "nginx (1 worker)"),
        None => (start_http_server(), "a hyper server (nginx not installed)"),
    };
    let url = format!("http://{addr}/");
    let scenario = format!(
        "[run]\nshadow = false\nthreads = 1\n[targets.api]\nkind = \"http\"\nurl = \"http://{addr}\"\n\
         connections = 64\n[[scenarios]]\nname = \"http\"\nexecutor = \"constant-vus\"\nvus = 64\n\
         duration = \"{secs}s\"\n[[scenarios.steps]]\nname = \"get\"\nhttp = {{ path = \"/\" }}\n"
    );
    // The same with request chaining on: log in (a JSON answer, its status and a field
    // checked, the token extracted), then a call carrying the token, its status and body
    // checked; two requests an iteration.
    let chained = format!(
        "[run]\nshadow = false\nthreads = 1\n[targets.api]\nkind = \"http\"\nurl = \"http://{addr}\"\n\
         connections = 64\n[[scenarios]]\nname = \"http\"\nexecutor = \"constant-vus\"\nvus = 64\n\
         duration = \"{secs}s\"\nflow = \"sequence\"\n\
         [[scenarios.steps]]\nname = \"login\"\nhttp = {{ path = \"/token\" }}\n\
         checks = {{ status = [200], json = {{ \"$.user.id\" = \"7\" }} }}\n\
         extract = {{ token = {{ json = \"$.token\" }} }}\n\
         [[scenarios.steps]]\nname = \"use\"\nhttp = {{ path = \"/?t={{{{var.token}}}}\" }}\n\
         checks = {{ status = [200], body-contains = \"ok\" }}\n"
    );
    let (mut ours, mut wrk, mut oha) = (Vec::new(), Vec::new(), Vec::new());
    let mut ours_chained = Vec::new();
    for round in 0..rounds {
        eprintln!("http round {}/{rounds}", round + 1);
        match loadtest_run(&scenario, secs) {
            Ok(r) => ours.push(r),
            Err(e) => eprintln!("loadtest: {e}"),
        }
        match loadtest_run(&chained, secs) {
            Ok(r) => ours_chained.push(r),
            Err(e) => eprintln!("loadtest (chained): {e}"),
        }
        match wrk_run(&url, secs) {
            Ok(r) => wrk.push(r),
            Err(e) => eprintln!("wrk: {e} (install: apt-get install wrk)"),
        }
        match oha_run(&url, secs) {
            Ok(r) => oha.push(r),
            Err(e) => eprintln!("oha: {e} (install: cargo install oha)"),
        }
    }
    table(
        &format!(
            "HTTP/1.1 keep-alive, 64 connections, {secs} s, loopback {server}; median of {rounds}"
        ),
        &[
            ("loadtest", median(ours)),
            ("wrk -t1", median(wrk.clone())),
            ("oha", median(oha)),
        ],
    );
    table(
        "The same, loadtest with JSON extraction and checks on (login → token → call)",
        &[
            ("loadtest chained", median(ours_chained)),
            ("wrk -t1", median(wrk)),
        ],
    );

    if let Some((_, child)) = &mut nginx {
        let _ = child.kill();
        let _ = child.wait();
    }
    let redis = testkit::RedisServer::start();
    let n: u64 = 200_000;
    let scenario = format!(
        "[run]\nshadow = false\nthreads = 1\n[targets.cache]\nkind = \"redis\"\nurl = \"{}\"\n\
         connections = 64\n[[scenarios]]\nname = \"redis\"\nexecutor = \"constant-vus\"\nvus = 64\n\
         duration = \"{secs}s\"\n[[scenarios.steps]]\nname = \"set\"\n\
         redis = [\"SET\", \"key:{{{{random 0 9999}}}}\", \"xxx\"]\n[[scenarios.steps]]\nname = \"get\"\n\
         redis = [\"GET\", \"key:{{{{random 0 9999}}}}\"]\n",
        redis.url()
    );
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("redis round {}/{rounds}", round + 1);
        match loadtest_run(&scenario, secs) {
            Ok(r) => ours.push(r),
            Err(e) => eprintln!("loadtest: {e}"),
        }
        match redis_benchmark_run(redis.port(), n) {
            Ok(r) => peer.push(r),
            Err(e) => eprintln!("redis-benchmark: {e}"),
        }
    }
    table(
        &format!("Redis GET/SET, 64 connections, one redis-server; median of {rounds}"),
        &[
            ("loadtest", median(ours)),
            ("redis-benchmark", median(peer)),
        ],
    );
    accuracy(secs);
}

/// `compare loadtest-memory`: does loadtest's memory stay flat over a long run? One open-model
/// run at 5,000 requests/s (`BENCH_RATE`) against a local hyper server for 10 minutes
/// (scaled by `BENCH_SCALE`); the generator's resident memory per second comes from its own
/// report (`series[].rss_bytes`): the figure is RSS at 1 minute against RSS at the end (per-second histograms are kept for the
/// report, so some growth per second of run is expected; the table says how much).
pub fn memory_suite() {
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let secs = crate::scaled(600) as u64;
    let early = crate::scaled(60) as u64;
    let binary = match loadtest_binary() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("loadtest-memory suite: {e}");
            return;
        }
    };
    let addr = start_http_server();
    let dir = std::env::temp_dir().join(format!("loadtest-memory-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("loadtest-memory suite: {e}");
        return;
    }
    let (file, json) = (dir.join("scenario.toml"), dir.join("report.json"));
    let scenario = format!(
        "[run]\nshadow = false\nthreads = 1\n[targets.api]\nkind = \"http\"\nurl = \"http://{addr}\"\n\
         connections = 64\n[[scenarios]]\nname = \"steady\"\nexecutor = \"constant-arrival-rate\"\n\
         rate = {rate}\nduration = \"{secs}s\"\nmax-in-flight = 256\n[[scenarios.steps]]\n\
         name = \"get\"\nhttp = {{ path = \"/\" }}\n"
    );
    if let Err(e) = std::fs::write(&file, scenario) {
        eprintln!("loadtest-memory suite: {e}");
        return;
    }
    // The run bounds itself (its duration, then the graceful stop); loadtest samples its own
    // resident memory into each second of the report's series.
    let status = Command::new(&binary)
        .args(["run", "-q", "--json"])
        .arg(&json)
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "loadtest-memory suite: cannot start {}: {e}",
                binary.display()
            );
            return;
        }
    };
    let report = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or_default();
    let requests = report["total"]["requests"].as_u64().unwrap_or(0);
    let rss: Vec<(f64, u64)> = report["series"]
        .as_array()
        .map(|points| {
            points
                .iter()
                .filter_map(|p| Some((p["t"].as_f64()?, p["rss_bytes"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let at_early = rss
        .iter()
        .find(|(t, _)| *t >= early as f64)
        .map_or(0, |p| p.1);
    let last = rss.last().map_or(0, |p| p.1);
    let peak = rss.iter().map(|p| p.1).max().unwrap_or(0);
    let report_bytes = std::fs::metadata(&json).map_or(0, |m| m.len());
    let _ = std::fs::remove_dir_all(&dir);
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "loadtest resident memory, open model at {rate}/s for {secs} s against a local hyper server ({}):",
        if status.success() {
            "completed".to_owned()
        } else {
            format!("exit {status}")
        }
    );
    println!(
        "| at {early} s | last sample | peak | last / at {early} s | requests | JSON report |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {:.1} MB | {:.1} MB | {:.1} MB | {:.2}× | {requests} | {:.1} MB |",
        mb(at_early),
        mb(last),
        mb(peak),
        last as f64 / at_early.max(1) as f64,
        mb(report_bytes)
    );
}
