//! The RESP port: the Redis string subset on the same engine, so redis-cli, redis-benchmark
//! and any Redis client (ours included) can drive objstore.
//!
//! Commands: `PING`, `ECHO`, `GET`, `SET` (`EX`/`PX`/`EXAT`/`PXAT`, `NX`/`XX`, `KEEPTTL`,
//! `GET`), `SETNX`, `SETEX`, `PSETEX`, `GETDEL`, `MGET`, `MSET`, `MSETNX`, `DEL`, `UNLINK`,
//! `EXISTS`, `EXPIRE`, `PEXPIRE`, `PERSIST`, `TTL`, `PTTL`, `STRLEN`, `INCR`, `INCRBY`,
//! `DECR`, `DECRBY`, `DBSIZE`, and the connection commands clients send on their own
//! (`SELECT 0`, `CLIENT SETNAME`/`GETNAME`/`ID`, `COMMAND`, `CONFIG GET`, `INFO`, `QUIT`,
//! `HELLO 2`). Every write is an engine write: it gets a revision and reaches watchers.
//!
//! The port speaks RESP2 and carries no shadow tag (RESP has nowhere to put one): serve it to
//! live traffic, or keep it off (the default) where shadow traffic runs.
//!
//! Hot path. Forbidden here: a lock beyond the engine's shard lock, a reply copied out of a
//! stored value (large values go out as their own `Bytes`), per-command logging.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use jupiter_core::Metrics;
use jupiter_core::metrics::{Code, SeriesTable};
use redis_client::resp::{Decoder, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Error;
use crate::engine::{Condition, Engine, Put};

/// Values up to this size are copied into the reply buffer; larger ones are written as they
/// are stored.
const COPY_LIMIT: usize = 16 * 1024;
/// Write the replies out once this much has accumulated, even mid-pipeline.
const FLUSH_AT: usize = 1024 * 1024;
/// Attempts of a read-modify-write (`INCR`, `EXPIRE`, `SET XX`) that lost a race.
const CAS_ATTEMPTS: usize = 64;

/// RESP port settings.
#[derive(Clone, Debug)]
pub struct RespConfig {
    /// Largest value (and so largest request) accepted.
    pub max_object: usize,
}

/// Serves the RESP port on `listener` until `shutdown`; connections already open are closed
/// when it resolves.
///
/// # Errors
///
/// Accepting failed for good.
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    config: RespConfig,
    metrics: &Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let ids = Arc::new(AtomicU64::new(1));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (sock, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: wait and go on.
                Err(e) => {
                    tracing::warn!(error = %e, "resp port: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => {
                let _ = stop_tx.send(true);
                return Ok(());
            }
        };
        let _ = sock.set_nodelay(true);
        let conn = Conn {
            engine: engine.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            peer,
            id: ids.fetch_add(1, Ordering::Relaxed),
            name: None,
            series: None,
        };
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = conn.run(sock) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "resp connection ended");
                    }
                }
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

struct Conn {
    engine: Engine,
    config: RespConfig,
    metrics: Metrics,
    peer: SocketAddr,
    id: u64,
    name: Option<Bytes>,
    /// Per-command metric series of this connection (by position in `COMMANDS`), made on the
    /// first command and resolved on each one's first use.
    series: Option<SeriesTable>,
}

/// Replies of one batch: small ones packed, large values as they are.
struct Out {
    buf: BytesMut,
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Out {
    fn raw(&mut self, b: &[u8]) {
        self.buf.put_slice(b);
        self.len += b.len();
    }
    fn ok(&mut self) {
        self.raw(b"+OK\r\n");
    }
    fn simple(&mut self, s: &str) {
        self.raw(b"+");
        self.raw(s.as_bytes());
        self.raw(b"\r\n");
    }
    fn error(&mut self, msg: &str) {
        self.raw(b"-");
        // A reply line cannot hold a line break.
        for chunk in msg.split(['\r', '\n']) {
            self.raw(chunk.as_bytes());
        }
        self.raw(b"\r\n");
    }
    fn int(&mut self, n: i64) {
        self.raw(b":");
        self.raw(itoa::Buffer::new().format(n).as_bytes());
        self.raw(b"\r\n");
    }
    fn null(&mut self) {
        self.raw(b"$-1\r\n");
    }
    fn array(&mut self, n: usize) {
        self.raw(b"*");
        self.raw(itoa::Buffer::new().format(n).as_bytes());
        self.raw(b"\r\n");
    }
    fn bulk(&mut self, v: &Bytes) {
        self.raw(b"$");
        self.raw(itoa::Buffer::new().format(v.len()).as_bytes());
        self.raw(b"\r\n");
        if v.len() <= COPY_LIMIT {
            self.raw(v);
        } else {
            if !self.buf.is_empty() {
                self.chunks.push_back(self.buf.split().freeze());
            }
            self.chunks.push_back(v.clone());
            self.len += v.len();
        }
        self.raw(b"\r\n");
    }
    fn bulk_opt(&mut self, v: Option<&Bytes>) {
        match v {
            Some(v) => self.bulk(v),
            None => self.null(),
        }
    }

    async fn flush(&mut self, sock: &mut TcpStream) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.chunks.push_back(self.buf.split().freeze());
        }
        while let Some(c) = self.chunks.pop_front() {
            sock.write_all(&c).await?;
        }
        self.len = 0;
        Ok(())
    }
}

/// Why a connection is closed after its last reply.
enum Close {
    Quit,
    Protocol,
}

impl Conn {
    async fn run(mut self, mut sock: TcpStream) -> std::io::Result<()> {
        // A request is at most a value plus its key and framing.
        let mut decoder = Decoder::with_limits(self.config.max_object + 64 * 1024, 4);
        let mut rbuf = BytesMut::with_capacity(16 * 1024);
        let mut out = Out {
            buf: BytesMut::with_capacity(16 * 1024),
            chunks: VecDeque::new(),
            len: 0,
        };
        loop {
            if sock.read_buf(&mut rbuf).await? == 0 {
                return Ok(());
            }
            let mut close = None;
            loop {
                match decoder.decode(&mut rbuf) {
                    Ok(Some(frame)) => {
                        if let Some(c) = self.frame(frame, &mut out) {
                            close = Some(c);
                            break;
                        }
                        if out.len >= FLUSH_AT {
                            out.flush(&mut sock).await?;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        out.error(&format!("ERR Protocol error: {e}"));
                        close = Some(Close::Protocol);
                        break;
                    }
                }
            }
            out.flush(&mut sock).await?;
            match close {
                Some(Close::Quit) => return Ok(()),
                Some(Close::Protocol) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "malformed request",
                    ));
                }
                None => {}
            }
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(16 * 1024);
            }
        }
    }

    /// One request frame: runs it, appends its reply. `Some` closes the connection.
    fn frame(&mut self, frame: Frame, out: &mut Out) -> Option<Close> {
        let Frame::Array(items) = frame else {
            out.error("ERR Protocol error: expected an array of bulk strings");
            return Some(Close::Protocol);
        };
        let mut args = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Frame::Bulk(b) | Frame::Simple(b) => args.push(b),
                _ => {
                    out.error("ERR Protocol error: expected an array of bulk strings");
                    return Some(Close::Protocol);
                }
            }
        }
        if args.is_empty() {
            return None;
        }
        // Resolved without allocating: the known name (`""` for an unknown one, which gets
        // the unknown-command error and no series of its own).
        let known = COMMANDS
            .iter()
            .position(|(c, _)| c.as_bytes().eq_ignore_ascii_case(&args[0]));
        let name = known.map_or("", |i| COMMANDS[i].0);
        // The TSC clock: a quarter of `std::time::Instant`'s cost per reading.
        let started = quanta::Instant::now();
        let (code, close) = match known {
            // Checked once here, so the commands below may index their arguments.
            Some(i) if !fits(COMMANDS[i].1, args.len()) => {
                out.error(&format!(
                    "ERR wrong number of arguments for '{}' command",
                    name.to_ascii_lowercase()
                ));
                (Code::INVALID, None)
            }
            _ => self.command(name, &args, out),
        };
        if let Some(i) = known {
            self.observe(i, started.elapsed(), code);
        }
        close
    }

    fn observe(&mut self, i: usize, took: Duration, code: Code) {
        let (metrics, peer) = (&self.metrics, self.peer.ip());
        let series = self
            .series
            .get_or_insert_with(|| SeriesTable::new(COMMANDS.len()));
        if let Some(h) = series.get(i, || metrics.server("resp", COMMANDS[i].0, peer)) {
            h.observe(took, code);
        }
    }

    fn command(&mut self, name: &str, args: &[Bytes], out: &mut Out) -> (Code, Option<Close>) {
        let n = args.len();
        // What the arity table cannot say (PING takes at most one argument, MSET pairs).
        let arity = |ok: bool, out: &mut Out| {
            if !ok {
                out.error(&format!(
                    "ERR wrong number of arguments for '{}' command",
                    name.to_ascii_lowercase()
                ));
            }
            ok
        };
        let e = &self.engine;
        let code = match name {
            "PING" => {
                if !arity(n <= 2, out) {
                    return (Code::INVALID, None);
                }
                match args.get(1) {
                    Some(m) => out.bulk(m),
                    None => out.simple("PONG"),
                }
                Code::OK
            }
            "ECHO" => {
                out.bulk(&args[1]);
                Code::OK
            }
            "QUIT" => {
                out.ok();
                return (Code::OK, Some(Close::Quit));
            }
            "GET" => {
                out.bulk_opt(e.get(&args[1]).as_ref().map(|o| &o.value));
                Code::OK
            }
            "MGET" => {
                out.array(n - 1);
                for k in &args[1..] {
                    out.bulk_opt(e.get(k).as_ref().map(|o| &o.value));
                }
                Code::OK
            }
            "STRLEN" => {
                out.int(e.get(&args[1]).map_or(0, |o| o.value.len() as i64));
                Code::OK
            }
            "EXISTS" => {
                out.int(args[1..].iter().filter(|k| e.get(k).is_some()).count() as i64);
                Code::OK
            }
            "DBSIZE" => {
                out.int(e.len() as i64);
                Code::OK
            }
            "TTL" | "PTTL" => {
                let ms = name == "PTTL";
                out.int(match e.get(&args[1]) {
                    None => -2,
                    Some(o) => match o.expires_at_ms {
                        None => -1,
                        Some(at) => {
                            let left = at.saturating_sub(e.now_ms()) as i64;
                            if ms { left } else { (left + 500) / 1000 }
                        }
                    },
                });
                Code::OK
            }
            "SET" => return self.set(args, out),
            "SETNX" | "SETEX" | "PSETEX" => {
                let (ttl, value, condition) = match name {
                    "SETNX" => (None, &args[2], Condition::IfAbsent),
                    _ => match positive(&args[2])
                        .and_then(|t| t.checked_mul(if name == "SETEX" { 1000 } else { 1 }))
                        .filter(|&ms| {
                            self.engine
                                .expiry_after(Duration::from_millis(ms))
                                .is_some()
                        }) {
                        Some(ms) => (Some(Duration::from_millis(ms)), &args[3], Condition::Always),
                        None => {
                            out.error(&format!(
                                "ERR invalid expire time in '{}' command",
                                name.to_ascii_lowercase()
                            ));
                            return (Code::INVALID, None);
                        }
                    },
                };
                let nx = condition == Condition::IfAbsent;
                match e.put(put(&args[1], value, ttl, condition)) {
                    Ok(_) if nx => out.int(1),
                    Ok(_) => out.ok(),
                    Err(Error::Precondition { .. }) => out.int(0),
                    Err(err) => return (engine_error(err, out), None),
                }
                Code::OK
            }
            "MSET" | "MSETNX" => {
                if !arity(n % 2 == 1, out) {
                    return (Code::INVALID, None);
                }
                let nx = name == "MSETNX";
                // All or nothing for MSETNX: every key checked first (not atomic against
                // concurrent writers of the same keys, which Redis's single thread is).
                if nx && args[1..].chunks(2).any(|kv| e.get(&kv[0]).is_some()) {
                    out.int(0);
                    return (Code::OK, None);
                }
                for kv in args[1..].chunks(2) {
                    if let Err(err) = e.put(put(&kv[0], &kv[1], None, Condition::Always)) {
                        return (engine_error(err, out), None);
                    }
                }
                if nx {
                    out.int(1)
                } else {
                    out.ok()
                }
                Code::OK
            }
            "DEL" | "UNLINK" => {
                let removed = args[1..]
                    .iter()
                    .filter(|k| e.delete(k, &Condition::Always).is_ok())
                    .count();
                out.int(removed as i64);
                Code::OK
            }
            "GETDEL" => {
                match e.get(&args[1]) {
                    None => out.null(),
                    Some(o) => {
                        match e.delete(&args[1], &Condition::IfRevision(o.mod_revision)) {
                            Ok(_) => out.bulk(&o.value),
                            // Changed or gone meanwhile: as if it ran before that write.
                            Err(_) => out.null(),
                        }
                    }
                }
                Code::OK
            }
            "EXPIRE" | "PEXPIRE" | "PERSIST" => {
                let ttl = match name {
                    "PERSIST" => None,
                    // Zero or negative: the key goes now, as in Redis.
                    _ => match integer(&args[2]) {
                        Some(t) if t <= 0 => Some(Duration::ZERO),
                        Some(t) => {
                            let scale = if name == "EXPIRE" { 1000 } else { 1 };
                            match (t as u64).checked_mul(scale).filter(|&ms| {
                                self.engine
                                    .expiry_after(Duration::from_millis(ms))
                                    .is_some()
                            }) {
                                Some(ms) => Some(Duration::from_millis(ms)),
                                None => {
                                    out.error(&format!(
                                        "ERR invalid expire time in '{}' command",
                                        name.to_ascii_lowercase()
                                    ));
                                    return (Code::INVALID, None);
                                }
                            }
                        }
                        None => {
                            out.error("ERR value is not an integer or out of range");
                            return (Code::INVALID, None);
                        }
                    },
                };
                match self.retouch(&args[1], ttl, name == "PERSIST") {
                    Ok(changed) => out.int(i64::from(changed)),
                    Err(err) => return (engine_error(err, out), None),
                }
                Code::OK
            }
            "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
                let by = match name {
                    "INCR" | "DECR" => 1,
                    _ => match integer(&args[2]) {
                        Some(v) => v,
                        None => {
                            out.error("ERR value is not an integer or out of range");
                            return (Code::INVALID, None);
                        }
                    },
                };
                let by = if name.starts_with("DECR") {
                    by.checked_neg()
                } else {
                    Some(by)
                };
                match by.map(|by| self.incr(&args[1], by)) {
                    Some(Ok(Ok(v))) => out.int(v),
                    Some(Ok(Err(msg))) | Some(Err(msg)) => {
                        out.error(msg);
                        return (Code::INVALID, None);
                    }
                    None => {
                        out.error("ERR increment or decrement would overflow");
                        return (Code::INVALID, None);
                    }
                }
                Code::OK
            }
            // What clients and tools send on their own.
            "SELECT" => {
                if n == 2 && &args[1][..] == b"0" {
                    out.ok();
                } else {
                    out.error("ERR objstore has one database: SELECT 0");
                    return (Code::INVALID, None);
                }
                Code::OK
            }
            "HELLO" => {
                if n >= 2 && &args[1][..] != b"2" {
                    out.error("NOPROTO this port speaks RESP2");
                    return (Code::INVALID, None);
                }
                let fields: [(&str, Bytes); 3] = [
                    ("server", Bytes::from_static(b"objstore")),
                    (
                        "version",
                        Bytes::from_static(env!("CARGO_PKG_VERSION").as_bytes()),
                    ),
                    ("proto", Bytes::from_static(b"2")),
                ];
                out.array(fields.len() * 2);
                for (k, v) in fields {
                    out.bulk(&Bytes::from_static(k.as_bytes()));
                    out.bulk(&v);
                }
                Code::OK
            }
            "CLIENT" => {
                let sub = args.get(1).map(|s| upper(s)).unwrap_or_default();
                match (sub.as_str(), n) {
                    ("SETNAME", 3) => {
                        self.name = Some(args[2].clone());
                        out.ok();
                    }
                    ("GETNAME", 2) => out.bulk_opt(self.name.as_ref()),
                    ("ID", 2) => out.int(self.id as i64),
                    ("SETINFO", 4) => out.ok(),
                    _ => {
                        out.error("ERR objstore supports CLIENT SETNAME, GETNAME, ID, SETINFO");
                        return (Code::INVALID, None);
                    }
                }
                Code::OK
            }
            // redis-cli and redis-benchmark ask for these; empty answers are what Redis gives
            // for unknown parameters.
            "COMMAND" | "CONFIG" => {
                out.array(0);
                Code::OK
            }
            "INFO" => {
                let text = format!(
                    "# Server\r\nredis_version:7.0.0\r\nobjstore_version:{}\r\n# Keyspace\r\ndb0:keys={},expires=0\r\n",
                    env!("CARGO_PKG_VERSION"),
                    e.len()
                );
                out.bulk(&Bytes::from(text));
                Code::OK
            }
            _ => {
                out.error(&format!(
                    "ERR unknown command '{}', with args beginning with: {}",
                    String::from_utf8_lossy(&args[0]),
                    args[1..]
                        .iter()
                        .take(3)
                        .map(|a| format!("'{}'", String::from_utf8_lossy(&a[..a.len().min(32)])))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
                return (Code::INVALID, None);
            }
        };
        (code, None)
    }

    /// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`
    fn set(&mut self, args: &[Bytes], out: &mut Out) -> (Code, Option<Close>) {
        if args.len() < 3 {
            out.error("ERR wrong number of arguments for 'set' command");
            return (Code::INVALID, None);
        }
        let (mut nx, mut xx, mut get, mut keep) = (false, false, false, false);
        let mut expires_at: Option<u64> = None;
        let mut i = 3;
        while i < args.len() {
            let opt = upper(&args[i]);
            let mut time = |scale: u64, absolute: bool| -> Option<u64> {
                i += 1;
                let t = positive(args.get(i)?)?;
                let ms = t.checked_mul(scale)?;
                if absolute {
                    Some(ms).filter(|&at| at <= crate::engine::MAX_EXPIRY_MS)
                } else {
                    self.engine.expiry_after(Duration::from_millis(ms))
                }
            };
            match opt.as_str() {
                "NX" => nx = true,
                "XX" => xx = true,
                "GET" => get = true,
                "KEEPTTL" => keep = true,
                "EX" | "PX" | "EXAT" | "PXAT" if expires_at.is_none() => {
                    let scale = if opt.starts_with('E') { 1000 } else { 1 };
                    match time(scale, opt.ends_with("AT")) {
                        Some(at) => expires_at = Some(at),
                        None => {
                            out.error("ERR invalid expire time in 'set' command");
                            return (Code::INVALID, None);
                        }
                    }
                }
                _ => {
                    out.error("ERR syntax error");
                    return (Code::INVALID, None);
                }
            }
            i += 1;
        }
        if (nx && xx) || (keep && expires_at.is_some()) {
            out.error("ERR syntax error");
            return (Code::INVALID, None);
        }
        let (key, value) = (&args[1], &args[2]);
        let e = &self.engine;
        for _ in 0..CAS_ATTEMPTS {
            // A plain SET (or SET NX) needs no read: the engine's condition decides.
            let current = if xx || get || keep { e.get(key) } else { None };
            let condition = match (&current, nx, xx) {
                (Some(_), true, _) => {
                    reply_set(out, get, current.as_ref(), false);
                    return (Code::OK, None);
                }
                (None, _, true) => {
                    reply_set(out, get, None, false);
                    return (Code::OK, None);
                }
                (_, true, _) => Condition::IfAbsent,
                (Some(o), _, _) if xx || keep || get => Condition::IfRevision(o.mod_revision),
                (None, _, _) if get => Condition::IfAbsent,
                _ => Condition::Always,
            };
            let ttl = match (keep, expires_at) {
                (true, _) => current
                    .as_ref()
                    .and_then(|o| o.expires_at_ms)
                    .map(|at| self.engine.ttl_until(at)),
                (false, Some(at)) => Some(self.engine.ttl_until(at)),
                (false, None) => None,
            };
            match e.put(put(key, value, ttl, condition)) {
                Ok(_) => {
                    reply_set(out, get, current.as_ref(), true);
                    return (Code::OK, None);
                }
                // NX lost to a concurrent creator: not set, as Redis would answer.
                Err(Error::Precondition { .. }) if nx => {
                    reply_set(out, get, e.get(key).as_ref(), false);
                    return (Code::OK, None);
                }
                // Changed under us: read again.
                Err(Error::Precondition { .. }) => {}
                Err(err) => return (engine_error(err, out), None),
            }
        }
        out.error("ERR too much contention on this key; try again");
        (Code::from_static("Busy"), None)
    }

    /// Sets (`Some`) or clears (`persist`) an object's expiry, keeping its value. Whether it
    /// changed anything.
    fn retouch(&self, key: &Bytes, ttl: Option<Duration>, persist: bool) -> Result<bool, Error> {
        let e = &self.engine;
        for _ in 0..CAS_ATTEMPTS {
            let Some(o) = e.get(key) else {
                return Ok(false);
            };
            if persist && o.expires_at_ms.is_none() {
                return Ok(false);
            }
            if ttl == Some(Duration::ZERO) {
                match e.delete(key, &Condition::IfRevision(o.mod_revision)) {
                    Ok(_) => return Ok(true),
                    Err(Error::Precondition { .. }) => continue,
                    Err(err) => return Err(err),
                }
            }
            let mut p = put(key, &o.value, ttl, Condition::IfRevision(o.mod_revision));
            p.content_type = o.content_type.clone();
            p.metadata = o.metadata.clone();
            match e.put(p) {
                Ok(_) => return Ok(true),
                Err(Error::Precondition { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Err(Error::Exhausted(
            "too much contention on this key; try again".into(),
        ))
    }

    /// `INCRBY`: the new value, or the error reply's text.
    fn incr(&self, key: &Bytes, by: i64) -> Result<Result<i64, &'static str>, &'static str> {
        let e = &self.engine;
        for _ in 0..CAS_ATTEMPTS {
            let current = e.get(key);
            let (old, condition, ttl) = match &current {
                None => (0, Condition::IfAbsent, None),
                Some(o) => match integer(&o.value) {
                    Some(v) => (
                        v,
                        Condition::IfRevision(o.mod_revision),
                        o.expires_at_ms.map(|at| self.engine.ttl_until(at)),
                    ),
                    None => return Ok(Err("ERR value is not an integer or out of range")),
                },
            };
            let Some(new) = old.checked_add(by) else {
                return Ok(Err("ERR increment or decrement would overflow"));
            };
            let value = Bytes::from(itoa::Buffer::new().format(new).to_owned());
            match e.put(put(key, &value, ttl, condition)) {
                Ok(_) => return Ok(Ok(new)),
                Err(Error::Precondition { .. }) => {}
                Err(Error::Exhausted(_)) => {
                    return Err("OOM command not allowed when used memory > 'maxmemory'");
                }
                Err(_) => return Err("ERR invalid key"),
            }
        }
        Err("ERR too much contention on this key; try again")
    }
}

/// Every command the port answers, with its arity as Redis states it (`n`: exactly `n` words,
/// the name included; `-n`: at least `n`). A name missing here is answered as unknown, and
/// only these get a metric series of their own (an unknown name is the caller's, never a
/// label).
const COMMANDS: &[(&str, i8)] = &[
    ("PING", -1),
    ("ECHO", 2),
    ("GET", 2),
    ("MGET", -2),
    ("STRLEN", 2),
    ("EXISTS", -2),
    ("DBSIZE", 1),
    ("TTL", 2),
    ("PTTL", 2),
    ("SET", -3),
    ("SETNX", 3),
    ("SETEX", 4),
    ("PSETEX", 4),
    ("MSET", -3),
    ("MSETNX", -3),
    ("DEL", -2),
    ("UNLINK", -2),
    ("GETDEL", 2),
    ("EXPIRE", 3),
    ("PEXPIRE", 3),
    ("PERSIST", 2),
    ("INCR", 2),
    ("DECR", 2),
    ("INCRBY", 3),
    ("DECRBY", 3),
    ("SELECT", 2),
    ("HELLO", -1),
    ("CLIENT", -2),
    ("COMMAND", -1),
    ("CONFIG", -1),
    ("INFO", -1),
    ("QUIT", -1),
];

/// Whether `n` words fit `arity`.
fn fits(arity: i8, n: usize) -> bool {
    let a = usize::from(arity.unsigned_abs());
    if arity < 0 { n >= a } else { n == a }
}

fn reply_set(out: &mut Out, get: bool, old: Option<&crate::engine::Object>, done: bool) {
    if get {
        out.bulk_opt(old.map(|o| &o.value));
    } else if done {
        out.ok();
    } else {
        out.null();
    }
}

fn put(key: &Bytes, value: &Bytes, ttl: Option<Duration>, condition: Condition) -> Put {
    Put {
        key: key.clone(),
        value: value.clone(),
        ttl,
        condition,
        ..Put::default()
    }
}

/// The error reply for an engine refusal, and its metric code.
fn engine_error(e: Error, out: &mut Out) -> Code {
    match e {
        Error::Exhausted(m) => {
            out.error(&format!("OOM {m}"));
            Code::from_static("OOM")
        }
        Error::Invalid(m) => {
            out.error(&format!("ERR {m}"));
            Code::INVALID
        }
        Error::Precondition { .. } | Error::NotFound => {
            out.error("ERR the key changed meanwhile; try again");
            Code::from_static("Busy")
        }
        // Not what the engine answers a write.
        e => {
            out.error(&format!("ERR {e}"));
            Code::grpc(13)
        }
    }
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

fn integer(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A positive integer (expiry times).
fn positive(b: &[u8]) -> Option<u64> {
    integer(b).filter(|v| *v > 0).map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn {
            engine: Engine::new(crate::engine::EngineConfig::default()),
            config: RespConfig { max_object: 1024 },
            metrics: Metrics::new(),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            id: 1,
            name: None,
            series: None,
        }
    }

    fn reply(c: &mut Conn, words: &[&str]) -> String {
        let mut out = Out {
            buf: BytesMut::new(),
            chunks: VecDeque::new(),
            len: 0,
        };
        let frame = Frame::Array(
            words
                .iter()
                .map(|w| Frame::Bulk(Bytes::copy_from_slice(w.as_bytes())))
                .collect(),
        );
        c.frame(frame, &mut out);
        String::from_utf8_lossy(&out.buf).into_owned()
    }

    /// The table and the dispatcher agree: every listed command is answered (not as
    /// unknown) at its arity, and refused one word short of it.
    #[test]
    fn every_listed_command_is_dispatched_and_its_arity_checked() {
        let mut c = conn();
        for &(name, arity) in COMMANDS {
            let n = usize::from(arity.unsigned_abs());
            let mut words = vec![name];
            words.resize(n, "1");
            let r = reply(&mut c, &words);
            assert!(!r.contains("unknown command"), "{name}: {r}");
            if n > 1 {
                let r = reply(&mut c, &words[..n - 1]);
                assert!(r.contains("wrong number of arguments"), "{name}: {r}");
            }
        }
        assert!(reply(&mut c, &["NOSUCH", "x"]).contains("unknown command"));
        assert!(reply(&mut c, &["ping", "a", "b"]).contains("wrong number"));
        assert!(reply(&mut c, &["MSET", "a", "1", "b"]).contains("wrong number"));
    }
}
