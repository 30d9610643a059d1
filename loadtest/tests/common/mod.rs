//! A plain HTTP/1.1 server on loopback for the measurement tests: a thread per connection, so
//! its delays are precise (`thread::sleep`), and it counts what it answered. The load tool is
//! the thing under test; this server is just a fixed point to measure against.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How the server answers.
#[derive(Clone, Copy, Debug)]
pub enum Behavior {
    /// At once.
    Fast,
    /// After a fixed delay.
    Delay(Duration),
    /// At once, except in the last `stall` of every `period` (counted from the server's
    /// start), when every answer waits for the stall to end.
    Stall { period: Duration, stall: Duration },
}

pub struct Server {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub shadow_hits: Arc<AtomicU64>,
}

impl Server {
    /// Starts a server; `ack` adds the shadow acknowledgement header to shadow requests.
    pub fn start(behavior: Behavior, ack: bool) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let shadow_hits = Arc::new(AtomicU64::new(0));
        let (h, sh) = (hits.clone(), shadow_hits.clone());
        let t0 = Instant::now();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (h, sh) = (h.clone(), sh.clone());
                std::thread::spawn(move || serve(conn, behavior, ack, t0, &h, &sh));
            }
        });
        Server {
            addr,
            hits,
            shadow_hits,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn serve(
    mut conn: TcpStream,
    behavior: Behavior,
    ack: bool,
    t0: Instant,
    hits: &AtomicU64,
    shadow_hits: &AtomicU64,
) {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // One request: the head, then a content-length body.
        let (head_end, length, shadow) = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let shadow = head.contains("x-jupiter-shadow: 1");
                break (i + 4, length, shadow);
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
        match behavior {
            Behavior::Fast => {}
            Behavior::Delay(d) => {
                // Precise: sleep most of it, spin the rest (a sleep alone ends up to ~100 µs late).
                let t = Instant::now();
                std::thread::sleep(d.saturating_sub(Duration::from_micros(300)));
                while t.elapsed() < d {
                    std::hint::spin_loop();
                }
            }
            Behavior::Stall { period, stall } => {
                let into =
                    Duration::from_nanos((t0.elapsed().as_nanos() % period.as_nanos()) as u64);
                if into >= period - stall {
                    std::thread::sleep(period - into);
                }
            }
        }
        hits.fetch_add(1, Ordering::Relaxed);
        if shadow {
            shadow_hits.fetch_add(1, Ordering::Relaxed);
        }
        let ack = if ack && shadow {
            "x-jupiter-shadow-ack: 1\r\n"
        } else {
            ""
        };
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n{ack}content-length: 2\r\n\r\nok"
        );
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
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
    run_with(text, loadtest::RunOptions::default()).await
}

/// [`run`] with `options` (a reporter, a cancel token).
pub async fn run_with(
    text: &str,
    options: loadtest::RunOptions,
) -> (loadtest::report::Report, loadtest::Outcome) {
    let (_dir, path) = scenario(text);
    let plan = loadtest::Plan::load(&path, &Default::default()).unwrap();
    loadtest::run(plan, options).await.unwrap()
}
