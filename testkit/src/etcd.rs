//! A single-member etcd.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{Proc, find_binary};
use crate::redis::tempdir;
use crate::{Error, ports};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A single-member etcd with its own data dir, client and peer URLs on free loopback ports.
/// Stopped and cleaned up on drop; [`restart`](Etcd::restart) keeps the data.
///
/// # Examples
///
/// ```no_run
/// let etcd = testkit::Etcd::start();
/// etcd.put("greeting", "hello").unwrap();
/// assert_eq!(etcd.get("greeting").unwrap().as_deref(), Some("hello"));
/// println!("{}", etcd.endpoint()); // http://127.0.0.1:<port>
/// ```
#[derive(Debug)]
pub struct Etcd {
    // Field order matters: the process (killed when dropped) goes before its directory.
    proc: Proc,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Etcd {
    /// Starts etcd and waits until `/health` says healthy.
    ///
    /// # Panics
    ///
    /// The binary is missing (the message names it and the install command) or etcd does not
    /// become healthy.
    pub fn start() -> Etcd {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`start`](Self::start) returning errors.
    pub fn try_start() -> Result<Etcd, Error> {
        Self::try_start_with("etcd")
    }

    /// Starts with another binary (a name looked up in `PATH`, or a path).
    pub fn try_start_with(binary: &str) -> Result<Etcd, Error> {
        let program = find_binary(binary)?;
        let dir = tempdir("etcd")?;
        let mut last = None;
        for _ in 0..5 {
            let (client, peer) = (ports::free_port()?, ports::free_port()?);
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let args: Vec<OsString> = [
                "--name",
                "testkit",
                "--data-dir",
                &dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("testkit={peer_url}"),
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ]
            .iter()
            .map(OsString::from)
            .collect();
            let proc = Proc::new(program.clone(), args, dir.path().join("etcd.log"));
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, client));
            proc.start()?;
            match wait_ready(&proc, addr) {
                Ok(()) => {
                    return Ok(Etcd {
                        proc,
                        addr,
                        _dir: dir,
                    });
                }
                Err(e) if proc.exited().is_some() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Protocol("etcd did not start".into())))
    }

    /// `http://127.0.0.1:<port>`, for etcd clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    crate::process::process_controls!();

    fn wait_ready(&self) -> Result<(), Error> {
        wait_ready(&self.proc, self.addr)
    }

    /// Puts a key through etcd's v3 JSON gateway.
    pub fn put(&self, key: &str, value: &str) -> Result<(), Error> {
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            base64(key.as_bytes()),
            base64(value.as_bytes())
        );
        match http(
            self.addr,
            "POST",
            "/v3/kv/put",
            &body,
            Duration::from_secs(2),
        )? {
            (200, _) => Ok(()),
            (status, body) => Err(Error::Protocol(format!(
                "etcd put {key:?}: HTTP {status}: {body}"
            ))),
        }
    }

    /// Gets a key through etcd's v3 JSON gateway.
    pub fn get(&self, key: &str) -> Result<Option<String>, Error> {
        let body = format!("{{\"key\":\"{}\"}}", base64(key.as_bytes()));
        let (status, body) = http(
            self.addr,
            "POST",
            "/v3/kv/range",
            &body,
            Duration::from_secs(2),
        )?;
        if status != 200 {
            return Err(Error::Protocol(format!(
                "etcd get {key:?}: HTTP {status}: {body}"
            )));
        }
        // {"header":{...},"kvs":[{"key":"..","value":"..",...}],"count":"1"}
        let Some(kvs) = body.split("\"kvs\":").nth(1) else {
            return Ok(None);
        };
        let value = kvs
            .split("\"value\":\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .ok_or_else(|| Error::Protocol(format!("etcd get {key:?}: unexpected body {body}")))?;
        let bytes = unbase64(value)
            .ok_or_else(|| Error::Protocol(format!("etcd get {key:?}: bad base64 {value:?}")))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }
}

fn wait_ready(proc: &Proc, addr: SocketAddr) -> Result<(), Error> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let not_ready = |reason: String| Error::NotReady {
        what: format!("etcd on {addr}"),
        reason,
        log: proc.log_tail(),
    };
    loop {
        if let Some(status) = proc.exited() {
            return Err(not_ready(format!("exited with {status}")));
        }
        if let Ok((200, body)) = http(addr, "GET", "/health", "", Duration::from_millis(500))
            && body.contains("\"health\":\"true\"")
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(not_ready(format!(
                "/health not healthy within {READY_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One HTTP/1.1 request with `Connection: close`: status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), Error> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| Error::io(format!("connect {addr}"), e))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| Error::io("set timeouts", e))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| Error::io(format!("{method} {path}"), e))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| Error::io(format!("{method} {path}"), e))?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("malformed HTTP response {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "hello world",
            "/jupiter/config/redis.main",
        ] {
            assert_eq!(unbase64(&base64(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(base64(b"hello"), "aGVsbG8=");
    }
}
