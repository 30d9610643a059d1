//! A plain HTTP/1.1 server on loopback for the tests: a thread per connection, so its delays
//! are precise (`thread::sleep`), and it counts and records what it answered. The load tool is
//! the thing under test; this server is just a fixed point to measure against.
//!
//! It can stall, but only on the test's signal: a [`Gate`] parks every request that reaches
//! it while closed, tells the test how many it holds, and lets them go when the test opens it.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How the server answers.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// At once.
    Fast,
    /// After a fixed delay.
    Delay(Duration),
    /// When the gate lets the request through.
    Gate(Arc<Gate>),
    /// At once, with a JSON body and a session header to extract from (request chaining):
    /// `{"data":{"token":"abc123","items":[{"id":7},{"id":8}]}}`, `x-session: s-42`.
    Login,
}

/// What the server saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request target (`/users/7`).
    pub path: String,
    /// It carried `x-jupiter-shadow: 1`.
    pub shadow: bool,
    /// Its `baggage` header, if any.
    pub baggage: Option<String>,
    /// Its `cookie` header, if any.
    pub cookie: Option<String>,
}

pub struct Server {
    pub addr: SocketAddr,
    /// Requests answered.
    pub hits: Arc<AtomicU64>,
    /// Requests answered that carried the shadow tag.
    pub shadow_hits: Arc<AtomicU64>,
    /// Every request, in the order the server read them.
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Starts a server; `ack` adds the shadow acknowledgement header to shadow requests.
    pub fn start(behavior: Behavior, ack: bool) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server {
            addr,
            hits: Arc::default(),
            shadow_hits: Arc::default(),
            seen: Arc::default(),
        };
        let counters = Counters {
            hits: server.hits.clone(),
            shadow_hits: server.shadow_hits.clone(),
            seen: server.seen.clone(),
        };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (behavior, counters) = (behavior.clone(), counters.clone());
                std::thread::spawn(move || serve(conn, &behavior, ack, &counters));
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The paths of every request so far, in order.
    pub fn paths(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|s| s.path.clone()).collect()
    }
}

#[derive(Clone)]
struct Counters {
    hits: Arc<AtomicU64>,
    shadow_hits: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn serve(mut conn: TcpStream, behavior: &Behavior, ack: bool, counters: &Counters) {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // One request: the head, then a content-length body.
        let (head_end, length, seen) = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                let (length, seen) = parse_head(&head);
                break (i + 4, length, seen);
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_end + length {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let shadow = seen.shadow;
        counters.seen.lock().unwrap().push(seen);
        match behavior {
            Behavior::Fast => {}
            Behavior::Delay(d) => {
                // Precise: sleep most of it, spin the rest (a sleep alone ends up to ~100 µs late).
                let t = Instant::now();
                std::thread::sleep(d.saturating_sub(Duration::from_micros(300)));
                while t.elapsed() < *d {
                    std::hint::spin_loop();
                }
            }
            Behavior::Gate(gate) => gate.pass(),
            Behavior::Login => {}
        }
        counters.hits.fetch_add(1, Ordering::Relaxed);
        if shadow {
            counters.shadow_hits.fetch_add(1, Ordering::Relaxed);
        }
        let ack = if ack && shadow {
            "x-jupiter-shadow-ack: 1\r\n"
        } else {
            ""
        };
        let reply = if matches!(behavior, Behavior::Login) {
            let body = r#"{"data":{"token":"abc123","items":[{"id":7},{"id":8}]}}"#;
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-session: s-42\r\n\
                 set-cookie: sid=xyz; Path=/; HttpOnly\r\nset-cookie: theme=dark\r\n{ack}\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n{ack}content-length: 2\r\n\r\nok"
            )
        };
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// The content length and what the tests look at, from a request head.
fn parse_head(head: &str) -> (usize, Seen) {
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    let mut seen = Seen {
        path,
        shadow: false,
        baggage: None,
        cookie: None,
    };
    let mut length = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "x-jupiter-shadow" => seen.shadow = value == "1",
            "baggage" => seen.baggage = Some(value.to_owned()),
            "cookie" => seen.cookie = Some(value.to_owned()),
            _ => {}
        }
    }
    (length, seen)
}

/// How long a parked request or a waiting test holds on before giving up: a failsafe so that
/// a broken test fails instead of hanging, never a timing the tests depend on.
const FAILSAFE: Duration = Duration::from_secs(60);

/// Holds requests while closed, until the test opens it.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug)]
struct GateState {
    /// Requests let through before the gate closes by itself (`u64::MAX`: it stays open).
    free: u64,
    closed: bool,
    /// Requests that reached the gate while it was closed.
    parked: u64,
    /// The gate opens by itself once this many are parked.
    open_at: Option<u64>,
}

impl Gate {
    /// A gate that lets `free` requests through (the shadow probe, a warm-up), then holds every
    /// request until [`open`](Gate::open).
    pub fn closing_after(free: u64) -> Arc<Gate> {
        Gate::new(free, None)
    }

    /// A barrier: after `free` requests, holds requests until `n` are held at once, then lets
    /// them all go. A run reaches it only with `n` requests in flight together.
    pub fn opening_at(free: u64, n: u64) -> Arc<Gate> {
        Gate::new(free, Some(n))
    }

    fn new(free: u64, open_at: Option<u64>) -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(GateState {
                free,
                closed: false,
                parked: 0,
                open_at,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets every held request go, and every later one through.
    pub fn open(&self) {
        let mut s = self.lock();
        s.closed = false;
        s.free = u64::MAX;
        self.changed.notify_all();
    }

    /// Requests that have been held so far.
    pub fn parked(&self) -> u64 {
        self.lock().parked
    }

    /// Blocks until `n` requests have been held (in all).
    ///
    /// # Panics
    ///
    /// After [`FAILSAFE`] without them: the run never sent them.
    pub fn wait_parked(&self, n: u64) {
        let s = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, FAILSAFE, |s| s.parked < n)
            .unwrap_or_else(|p| p.into_inner());
        assert!(
            s.parked >= n,
            "{} of {n} requests reached the gate",
            s.parked
        );
    }

    /// The server's side: returns when this request may be answered.
    fn pass(&self) {
        let mut s = self.lock();
        if !s.closed {
            if s.free > 0 {
                s.free -= 1;
                return;
            }
            s.closed = true;
        }
        s.parked += 1;
        if s.open_at.is_some_and(|n| s.parked >= n) {
            s.closed = false;
            s.free = u64::MAX;
        }
        self.changed.notify_all();
        let _ = self
            .changed
            .wait_timeout_while(s, FAILSAFE, |s| s.closed)
            .unwrap_or_else(|p| p.into_inner());
    }
}

/// GETs `/metrics` from `addr`; returns the whole answer.
pub fn scrape(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    let _ = tcp.read_to_string(&mut body);
    body
}

/// The value of the metric line that starts with `name` (labels included), if served.
/// Scrapes `addr` until the series `name` is above 0 and returns that body. The figures are
/// collected once a second, so this polls (every 50 ms, for 30 s at most: a liveness bound,
/// the series not showing is the failure).
pub fn scrape_until_counted(addr: SocketAddr, name: &str) -> String {
    for _ in 0..600 {
        let body = scrape(addr);
        if metric(&body, name).is_some_and(|n| n > 0) {
            return body;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{name} never counted anything at {addr}");
}

pub fn metric(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Reads the binary's stderr up to its `prometheus metrics: http://ADDR/metrics` line, which
/// it prints before the load starts; returns ADDR.
pub fn metrics_address(stderr: &mut impl std::io::BufRead) -> SocketAddr {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("no metrics address on stderr: {seen:?}");
        }
        let addr = line
            .trim()
            .strip_prefix("prometheus metrics: http://")
            .and_then(|a| a.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok());
        if let Some(addr) = addr {
            return addr;
        }
        seen.push_str(&line);
    }
}

/// Writes `text` as a scenario file in a fresh temporary directory.
pub fn scenario(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Runs a scenario through the library; returns the report.
pub async fn run(text: &str) -> (loadtest::report::Report, loadtest::Outcome) {
    run_text(text, loadtest::RunOptions::default())
        .await
        .unwrap()
}

/// [`run`], telling `reporter` what the run has to say while it goes on.
pub async fn run_reporting(
    text: &str,
    reporter: Arc<dyn loadtest::Reporter>,
) -> (loadtest::report::Report, loadtest::Outcome) {
    let options = loadtest::RunOptions {
        reporter: Some(reporter),
        cancel: None,
    };
    run_text(text, options).await.unwrap()
}

/// Runs a scenario that loads but that the run refuses; returns why.
///
/// # Panics
///
/// If the scenario does not load, or if the run goes ahead.
pub async fn refused(text: &str) -> loadtest::Error {
    run_text(text, loadtest::RunOptions::default())
        .await
        .unwrap_err()
}

/// Runs the scenario file at `path` (next to the files it names, such as feeders' CSVs).
///
/// # Panics
///
/// If the scenario does not load: every test's scenario is valid.
pub async fn run_file(
    path: &Path,
    options: loadtest::RunOptions,
) -> Result<(loadtest::report::Report, loadtest::Outcome), loadtest::Error> {
    let plan = loadtest::Plan::load(path, &Default::default()).unwrap();
    loadtest::run(plan, options).await
}

async fn run_text(
    text: &str,
    options: loadtest::RunOptions,
) -> Result<(loadtest::report::Report, loadtest::Outcome), loadtest::Error> {
    let (_dir, path) = scenario(text);
    run_file(&path, options).await
}

/// `err` and every error under it, `: `-separated.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// Runs the `loadtest` binary with `args` to its end.
pub fn loadtest(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("run loadtest")
}

/// What a run of the binary printed, stdout then stderr.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A CA (`ca.pem`) and a server certificate it signed for localhost and 127.0.0.1.
pub fn issue(dir: &Path) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "loadtest test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "server");
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}
