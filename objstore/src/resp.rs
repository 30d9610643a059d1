//! The RESP port: the Redis string subset on the same engine, so redis-cli, redis-benchmark
//! and any Redis client (ours, redis-py, go-redis, Lettuce, rueidis) can drive objstore.
//!
//! Commands (see `COMMANDS`): `GET`, `SET` (`EX`/`PX`/`EXAT`/`PXAT`, `NX`/`XX`, `KEEPTTL`,
//! `GET`), `SETNX`, `SETEX`, `PSETEX`, `GETEX`, `GETDEL`, `APPEND`, `MGET`, `MSET`, `MSETNX`
//! (both atomic: every key's shard is locked while they are written), `DEL`, `UNLINK`,
//! `EXISTS`, `EXPIRE`/`PEXPIRE` (`NX`/`XX`/`GT`/`LT`), `EXPIREAT`, `PEXPIREAT`, `PERSIST`,
//! `TTL`, `PTTL`, `TYPE`, `STRLEN`, `INCR`, `INCRBY`, `DECR`, `DECRBY`, `SCAN` (`MATCH`,
//! `COUNT`, `TYPE`), `DBSIZE`, `FLUSHDB` (refused unless `flushdb = true`), and the
//! connection commands clients send on their own: `PING`, `ECHO`, `HELLO 2|3` (with `AUTH`
//! and `SETNAME`), `AUTH`, `SELECT 0`, `CLIENT SETNAME`/`GETNAME`/`ID`/`SETINFO`, `COMMAND`
//! (`COUNT`, `INFO`, `DOCS`), `CONFIG GET`, `INFO` (server, clients, memory, stats,
//! keyspace), `QUIT`. Errors are Redis's own texts (tested against a real redis-server).
//! Every write is an engine write: it gets a revision and reaches watchers.
//!
//! # Authentication
//!
//! With `auth-token` set, a connection must authenticate first (`AUTH <token>`,
//! `AUTH default <token>`, or `HELLO 3 AUTH default <token>`); anything else is answered
//! `NOAUTH`, as Redis does with `requirepass`.
//!
//! # Shadow traffic
//!
//! RESP has no headers to carry a shadow tag, so a connection declares itself: by
//! authenticating as the shadow user (`AUTH shadow <token>`; default user name `shadow`),
//! or by a client name ending in the shadow suffix (`CLIENT SETNAME loadtest:shadow`, or
//! `HELLO 3 SETNAME …`; default suffix `:shadow`). Such a connection follows the service's
//! shadow switch: `on`, every key it names is put under the shadow prefix (and `SCAN`
//! returns only shadow keys, without the prefix); `watch`, reads are served from live data
//! and writes refused; `off`, every data command is refused. Refusals answer
//! `NOSHADOW …` and are counted with the `ShadowRefused` code. A live connection's `SCAN`
//! and `FLUSHDB` pass over shadow keys. `DBSIZE` counts both.
//!
//! # One accept loop
//!
//! Connections are accepted by one loop and run as tasks on the process's multi-thread
//! runtime, which spreads them over its workers. Measured against `SO_REUSEPORT` with one
//! listener and accept loop per core (2026-12-04, 2-core machine, two rounds each,
//! `redis-benchmark -c 50`): connection churn (`-k 0`, PING) 17,809 / 17,699 req/s with one
//! loop and 17,762 / 17,825 with two — the client's ephemeral ports are the limit, for
//! redis-server too (17,731) — and `SET -P 16 -d 64 -r 100000` 834k / 845k against 840k /
//! 869k at 1.64 / 1.59 µs against 1.59 / 1.56 µs of server CPU per request: within the
//! noise, so the simpler shape stays. (Two current-thread runtimes, one per core, measured
//! within the noise as well, in an earlier session.)
//!
//! Hot path. Forbidden here: a lock beyond the engine's shard lock, a reply copied out of a
//! stored value (large values go out as their own `Bytes`), per-command logging, per-command
//! allocation on a live connection's `GET`/`SET` beyond the argument list.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use jupiter_core::Metrics;
use jupiter_core::metrics::{Code, SeriesTable};
use jupiter_core::shadow::{ShadowMode, ShadowSwitch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Error;
use crate::engine::{Condition, Engine, MAX_EXPIRY_MS, Put};
use crate::server::constant_time_eq;

/// Values up to this size are copied into the reply buffer; larger ones are written as they
/// are stored.
const COPY_LIMIT: usize = 16 * 1024;
/// Write the replies out once this much has accumulated, even mid-pipeline.
const FLUSH_AT: usize = 1024 * 1024;
/// Attempts of a read-modify-write (`INCR`, `EXPIRE`, `SET XX`) that lost a race.
const CAS_ATTEMPTS: usize = 64;
/// The Redis version whose commands and replies the port follows (`INFO`, `HELLO`).
const REDIS_VERSION: &str = "7.0.0";

/// RESP port settings.
#[derive(Clone)]
pub struct RespConfig {
    /// Largest value (and so largest request) accepted.
    pub max_object: usize,
    /// The password every connection must give first (`AUTH`); none by default.
    pub auth_token: Option<String>,
    /// Whether `FLUSHDB` may run. Default: refused.
    pub flushdb: bool,
    /// How shadow connections are recognised and served.
    pub shadow: RespShadow,
}

/// How the RESP port recognises shadow connections (see the module docs).
#[derive(Clone, Debug)]
pub struct RespShadow {
    /// The shadow namespace's key prefix; `None` refuses shadow traffic.
    pub prefix: Option<Bytes>,
    /// An `AUTH` user name that marks the connection shadow; empty for none.
    pub user: String,
    /// A client-name suffix that marks the connection shadow; empty for none.
    pub name_suffix: String,
    /// The service's shadow switch.
    pub switch: ShadowSwitch,
}

impl Default for RespShadow {
    fn default() -> Self {
        RespShadow {
            prefix: Some(Bytes::from_static(b"__shadow__/")),
            user: "shadow".into(),
            name_suffix: ":shadow".into(),
            switch: ShadowSwitch::new(ShadowMode::Off),
        }
    }
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            max_object: 64 * 1024 * 1024,
            auth_token: None,
            flushdb: false,
            shadow: RespShadow::default(),
        }
    }
}

impl std::fmt::Debug for RespConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespConfig")
            .field("max_object", &self.max_object)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("flushdb", &self.flushdb)
            .field("shadow", &self.shadow)
            .finish()
    }
}

/// Counters the port keeps for `INFO`.
struct Stats {
    connected: AtomicUsize,
    connections: AtomicU64,
    commands: AtomicU64,
    started: std::time::Instant,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            connected: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }
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
    let stats = Arc::new(Stats::new());
    let port = listener.local_addr()?.port();
    let config = Arc::new(config);
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
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let conn = Conn {
            engine: engine.clone(),
            authed: config.auth_token.is_none(),
            config: config.clone(),
            metrics: metrics.clone(),
            stats: Connected::new(stats.clone()),
            port,
            peer,
            id: ids.fetch_add(1, Ordering::Relaxed),
            name: None,
            series: None,
            shadow_user: false,
            shadow_name: false,
            commands: 0,
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

/// A connection's place in the connected count, given back when it ends.
struct Connected(Arc<Stats>);

impl Connected {
    fn new(stats: Arc<Stats>) -> Connected {
        stats.connected.fetch_add(1, Ordering::Relaxed);
        Connected(stats)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Conn {
    engine: Engine,
    config: Arc<RespConfig>,
    metrics: Metrics,
    stats: Connected,
    port: u16,
    peer: SocketAddr,
    id: u64,
    name: Option<Bytes>,
    /// Per-command metric series of this connection (by position in `COMMANDS`), made on the
    /// first command and resolved on each one's first use.
    series: Option<SeriesTable>,
    authed: bool,
    /// Authenticated as the shadow user.
    shadow_user: bool,
    /// Named with the shadow suffix.
    shadow_name: bool,
    /// Commands run since the count in `stats` was last brought up to date.
    commands: u64,
}

/// Replies of one batch: small ones packed, large values as they are.
struct Out {
    buf: BytesMut,
    chunks: VecDeque<Bytes>,
    len: usize,
    /// RESP3 once the connection said `HELLO 3`.
    resp3: bool,
}

impl Out {
    fn new(resp3: bool) -> Out {
        Out {
            buf: BytesMut::new(),
            chunks: VecDeque::new(),
            len: 0,
            resp3,
        }
    }
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
        if self.resp3 {
            self.raw(b"_\r\n");
        } else {
            self.raw(b"$-1\r\n");
        }
    }
    fn header(&mut self, kind: u8, n: usize) {
        self.raw(&[kind]);
        self.raw(itoa::Buffer::new().format(n).as_bytes());
        self.raw(b"\r\n");
    }
    fn array(&mut self, n: usize) {
        self.header(b'*', n);
    }
    /// A map of `n` pairs: `%` in RESP3, a flat array in RESP2.
    fn map(&mut self, n: usize) {
        if self.resp3 {
            self.header(b'%', n);
        } else {
            self.header(b'*', n * 2);
        }
    }
    fn bulk(&mut self, v: &Bytes) {
        self.header(b'$', v.len());
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
    fn bulk_str(&mut self, s: &str) {
        self.header(b'$', s.len());
        self.raw(s.as_bytes());
        self.raw(b"\r\n");
    }
    /// The value under `key` as a bulk string, or null: small values copied straight out
    /// of the engine (no allocation), large ones sent as they are stored.
    fn value(&mut self, engine: &Engine, key: &[u8]) {
        let small = engine.with_value(key, |v| {
            if v.len() > COPY_LIMIT {
                return Some(v.to_bytes());
            }
            self.header(b'$', v.len());
            self.raw(v.as_slice());
            self.raw(b"\r\n");
            None
        });
        match small {
            None => self.null(),
            Some(Some(large)) => self.bulk(&large),
            Some(None) => {}
        }
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

/// The key space a command runs in; `prefix` below is the shadow prefix, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Space {
    /// Live keys; shadow keys passed over where keys are listed.
    Live,
    /// Shadow keys: every key under the prefix, shown without it.
    Shadow,
}

impl Space {
    /// The caller's view of a stored key, or `None` if it lies outside this space.
    fn view<'k>(self, prefix: Option<&[u8]>, key: &'k [u8]) -> Option<&'k [u8]> {
        match (self, prefix) {
            (Space::Live, Some(p)) if key.starts_with(p) => None,
            (Space::Live, _) => Some(key),
            (Space::Shadow, p) => key.strip_prefix(p.unwrap_or_default()),
        }
    }
}

impl Conn {
    async fn run(mut self, mut sock: TcpStream) -> std::io::Result<()> {
        // A request is at most a value plus its key and framing.
        let max_bulk = self.config.max_object + 64 * 1024;
        // Buffers are taken when the first bytes arrive: a connection that never sends holds
        // none (10k idle connections cost their sockets and tasks, not 320 MiB of buffers).
        let mut rbuf = BytesMut::new();
        let mut out = Out::new(false);
        // Reused for every batch: where each argument lies, and each request's first one.
        let (mut spans, mut bounds) = (Vec::new(), Vec::new());
        let mut args: Vec<Bytes> = Vec::new();
        loop {
            if rbuf.capacity() == 0 {
                sock.readable().await?;
                rbuf.reserve(16 * 1024);
            }
            if sock.read_buf(&mut rbuf).await? == 0 {
                return Ok(());
            }
            // Every complete request of the batch is parsed first, then the bytes they span
            // are frozen once and each argument is a slice of them: no allocation per request.
            spans.clear();
            // `bounds[i]..bounds[i + 1]`: request i's arguments in `spans`.
            bounds.clear();
            bounds.push(0);
            let mut end = 0;
            let bad = loop {
                match parse_request(&rbuf, end, max_bulk, &mut spans) {
                    Ok(Some(next)) => {
                        end = next;
                        bounds.push(spans.len());
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            let batch = rbuf.split_to(end).freeze();
            let mut close = None;
            for w in bounds.windows(2) {
                args.clear();
                args.extend(spans[w[0]..w[1]].iter().map(|&(a, b)| batch.slice(a..b)));
                if let Some(c) = self.frame(&args, &mut out) {
                    close = Some(c);
                    break;
                }
                if out.len >= FLUSH_AT {
                    out.flush(&mut sock).await?;
                }
            }
            args.clear();
            drop(batch);
            if close.is_none()
                && let Some(e) = bad
            {
                out.error(&format!("ERR Protocol error: {e}"));
                close = Some(Close::Protocol);
            }
            // One shared counter update per batch, not per command.
            let stats = &self.stats.0;
            stats.commands.fetch_add(self.commands, Ordering::Relaxed);
            self.commands = 0;
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

    /// One request: runs it, appends its reply. `Some` closes the connection.
    fn frame(&mut self, args: &[Bytes], out: &mut Out) -> Option<Close> {
        if args.is_empty() {
            return None;
        }
        self.commands += 1;
        // Resolved without allocating. An unknown name gets the unknown-command error and no
        // series of its own (it is the caller's text, never a label).
        let known = COMMANDS
            .iter()
            .position(|c| c.name.as_bytes().eq_ignore_ascii_case(&args[0]));
        let Some(i) = known else {
            unknown_command(args, out);
            return None;
        };
        // The TSC clock: a quarter of `std::time::Instant`'s cost per reading.
        let started = quanta::Instant::now();
        let (code, close) = self.dispatch(&COMMANDS[i], args, out);
        self.observe(i, started.elapsed(), code);
        close
    }

    /// Arity, authentication and the shadow rule, in Redis's order; then the command.
    fn dispatch(&mut self, spec: &Spec, args: &[Bytes], out: &mut Out) -> (Code, Option<Close>) {
        if !fits(spec.arity, args.len()) {
            wrong_arity(spec.name, out);
            return (Code::INVALID, None);
        }
        if !self.authed && !matches!(spec.name, "AUTH" | "HELLO" | "QUIT") {
            out.error("NOAUTH Authentication required.");
            return (Code::from_static("Unauthenticated"), None);
        }
        if spec.kind == Kind::Connection || !(self.shadow_user || self.shadow_name) {
            return self.command(spec.name, args, Space::Live, out);
        }
        let shadow = &self.config.shadow;
        let refused = match (shadow.switch.mode(), &shadow.prefix) {
            (ShadowMode::On, Some(prefix)) => {
                let args = prefixed(spec.keys, args.to_vec(), prefix);
                return self.command(spec.name, &args, Space::Shadow, out);
            }
            // Watch: reads served from live data, writes refused.
            (ShadowMode::Watch, Some(_)) if spec.kind == Kind::Read => {
                return self.command(spec.name, args, Space::Live, out);
            }
            (ShadowMode::Watch, Some(_)) => {
                "shadow writes are refused (the shadow switch is watch)"
            }
            (_, None) => "shadow traffic is refused (this server has no shadow prefix)",
            _ => "shadow traffic is refused (the shadow switch is off)",
        };
        out.error(&format!("NOSHADOW {refused}"));
        (Code::SHADOW_REFUSED, None)
    }

    fn observe(&mut self, i: usize, took: Duration, code: Code) {
        let (metrics, peer) = (&self.metrics, self.peer.ip());
        let series = self
            .series
            .get_or_insert_with(|| SeriesTable::new(COMMANDS.len()));
        if let Some(h) = series.get(i, || metrics.server("resp", COMMANDS[i].name, peer)) {
            h.observe(took, code);
        }
    }

    fn command(
        &mut self,
        name: &str,
        args: &[Bytes],
        space: Space,
        out: &mut Out,
    ) -> (Code, Option<Close>) {
        let n = args.len();
        // What the arity table cannot say (PING takes at most one argument, MSET pairs).
        let arity = |ok: bool, out: &mut Out| {
            if !ok {
                wrong_arity(name, out);
            }
            ok
        };
        let e = &self.engine;
        let code = match name {
            "GET" => {
                out.value(e, &args[1]);
                Code::OK
            }
            "SET" => return (self.set(args, out), None),
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
            "MGET" => {
                out.array(n - 1);
                for k in &args[1..] {
                    out.value(e, k);
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
            "TYPE" => {
                out.simple(if e.get(&args[1]).is_some() {
                    "string"
                } else {
                    "none"
                });
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
            "SETNX" | "SETEX" | "PSETEX" => {
                let (ttl, value, condition) = match name {
                    "SETNX" => (None, &args[2], Condition::IfAbsent),
                    _ => {
                        let unit = if name == "SETEX" { "EX" } else { "PX" };
                        let ttl = match self.time_option(unit, &args[2], name, out) {
                            Ok(Expiry::At(at)) => e.ttl_until(at),
                            // Not for a positive relative time; the shortest TTL if it were.
                            Ok(_) => Duration::from_millis(1),
                            Err(code) => return (code, None),
                        };
                        (Some(ttl), &args[3], Condition::Always)
                    }
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
                let puts = args[1..]
                    .chunks(2)
                    .map(|kv| put(&kv[0], &kv[1], None, Condition::Always))
                    .collect();
                match e.put_all(puts, name == "MSETNX") {
                    Ok(_) if name == "MSET" => out.ok(),
                    Ok(written) => out.int(i64::from(written)),
                    Err(err) => return (engine_error(err, out), None),
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
            "GETEX" => return (self.getex(args, out), None),
            "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => {
                return (self.expire(name, args, out), None);
            }
            "PERSIST" => {
                match self.retouch(&args[1], Expiry::Persist, |at| at.is_some()) {
                    Ok(r) => out.int(i64::from(r.is_some_and(|(_, changed)| changed))),
                    Err(err) => return (engine_error(err, out), None),
                }
                Code::OK
            }
            "APPEND" => return (self.append(&args[1], &args[2], out), None),
            "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
                let by = match name {
                    "INCR" | "DECR" => 1,
                    _ => match integer(&args[2]) {
                        Some(v) => v,
                        None => {
                            out.error(NOT_INTEGER);
                            return (Code::INVALID, None);
                        }
                    },
                };
                let by = if name.starts_with("DECR") {
                    match by.checked_neg() {
                        Some(by) => by,
                        None => {
                            out.error("ERR decrement would overflow");
                            return (Code::INVALID, None);
                        }
                    }
                } else {
                    by
                };
                match self.incr(&args[1], by, out) {
                    Ok(v) => out.int(v),
                    Err(code) => return (code, None),
                }
                Code::OK
            }
            "GETRANGE" => {
                let (Some(start), Some(end)) = (integer(&args[2]), integer(&args[3])) else {
                    out.error(NOT_INTEGER);
                    return (Code::INVALID, None);
                };
                let value = e.get(&args[1]).map(|o| o.value).unwrap_or_default();
                out.bulk(&value.slice(byte_range(value.len(), start, end)));
                Code::OK
            }
            "SETRANGE" => return (self.setrange(args, out), None),
            "INCRBYFLOAT" => return (self.incr_float(&args[1], &args[2], out), None),
            "EXPIRETIME" | "PEXPIRETIME" => {
                out.int(match e.get(&args[1]) {
                    None => -2,
                    Some(o) => match o.expires_at_ms {
                        None => -1,
                        Some(at) if name == "PEXPIRETIME" => at as i64,
                        Some(at) => (at / 1000) as i64,
                    },
                });
                Code::OK
            }
            "TIME" => {
                // The engine's clock, which expiry follows.
                let now = e.now_ms();
                out.array(2);
                out.bulk_str(itoa::Buffer::new().format(now / 1000));
                out.bulk_str(itoa::Buffer::new().format((now % 1000) * 1000));
                Code::OK
            }
            "SCAN" => return (self.scan(args, space, out), None),
            "FLUSHDB" => {
                if !self.config.flushdb {
                    out.error(
                        "ERR FLUSHDB is disabled on this server (flushdb = true in [objstore.resp] allows it)",
                    );
                    return (Code::from_static("PermissionDenied"), None);
                }
                if n > 2 || args.get(1).is_some_and(|a| !is_any(a, &["ASYNC", "SYNC"])) {
                    out.error("ERR syntax error");
                    return (Code::INVALID, None);
                }
                let mut cursor = 0;
                loop {
                    let (keys, next) = e.scan(cursor, 1024);
                    let prefix = self.config.shadow.prefix.as_deref();
                    for k in keys.iter().filter(|k| space.view(prefix, k).is_some()) {
                        let _ = e.delete(k, &Condition::Always);
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                out.ok();
                Code::OK
            }
            // What clients and tools send on their own.
            "SELECT" => {
                match integer(&args[1]) {
                    Some(0) => out.ok(),
                    Some(_) => {
                        out.error("ERR DB index is out of range");
                        return (Code::INVALID, None);
                    }
                    None => {
                        out.error(NOT_INTEGER);
                        return (Code::INVALID, None);
                    }
                }
                Code::OK
            }
            "AUTH" => {
                let (user, pass) = match n {
                    2 => (None, &args[1]),
                    3 => (Some(&args[1][..]), &args[2]),
                    _ => {
                        out.error("ERR syntax error");
                        return (Code::INVALID, None);
                    }
                };
                if let Err(msg) = self.authenticate(user, pass) {
                    out.error(msg);
                    return (Code::from_static("Unauthenticated"), None);
                }
                out.ok();
                Code::OK
            }
            "HELLO" => return (self.hello(args, out), None),
            "CLIENT" => {
                let sub = upper(&args[1]);
                match (sub.as_str(), n) {
                    ("SETNAME", 3) => {
                        if let Err(msg) = self.set_name(&args[2]) {
                            out.error(msg);
                            return (Code::INVALID, None);
                        }
                        out.ok();
                    }
                    ("GETNAME", 2) => out.bulk_opt(self.name.as_ref()),
                    ("ID", 2) => out.int(self.id as i64),
                    ("SETINFO", 4) => out.ok(),
                    ("SETNAME" | "GETNAME" | "ID" | "SETINFO", _) => {
                        out.error(&format!(
                            "ERR wrong number of arguments for 'client|{}' command",
                            sub.to_ascii_lowercase()
                        ));
                        return (Code::INVALID, None);
                    }
                    _ => {
                        unknown_subcommand(&args[1], "CLIENT", out);
                        return (Code::INVALID, None);
                    }
                }
                Code::OK
            }
            "COMMAND" => return (command_info(args, out), None),
            "CONFIG" => {
                if upper(&args[1]) == "GET" {
                    // Redis's answer for parameters it does not know.
                    out.map(0);
                } else {
                    out.error(
                        "ERR objstore takes its settings from its config file: CONFIG GET only",
                    );
                    return (Code::INVALID, None);
                }
                Code::OK
            }
            "INFO" => {
                out.bulk(&Bytes::from(self.info(&args[1..])));
                Code::OK
            }
            _ => unreachable!("every name in COMMANDS is dispatched (tested)"),
        };
        (code, None)
    }

    /// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`
    fn set(&mut self, args: &[Bytes], out: &mut Out) -> Code {
        let (mut nx, mut xx, mut get, mut keep) = (false, false, false, false);
        let mut expires_at: Option<Expiry> = None;
        let mut i = 3;
        while i < args.len() {
            let opt = upper(&args[i]);
            match opt.as_str() {
                "NX" => nx = true,
                "XX" => xx = true,
                "GET" => get = true,
                "KEEPTTL" => keep = true,
                "EX" | "PX" | "EXAT" | "PXAT" if expires_at.is_none() && i + 1 < args.len() => {
                    i += 1;
                    match self.time_option(&opt, &args[i], "SET", out) {
                        Ok(to) => expires_at = Some(to),
                        Err(code) => return code,
                    }
                }
                _ => {
                    out.error("ERR syntax error");
                    return Code::INVALID;
                }
            }
            i += 1;
        }
        if (nx && xx) || (keep && expires_at.is_some()) {
            out.error("ERR syntax error");
            return Code::INVALID;
        }
        let (key, value) = (&args[1], &args[2]);
        let e = &self.engine;
        for _ in 0..CAS_ATTEMPTS {
            // A plain SET (or SET NX) needs no read: the engine's condition decides.
            let current = if xx || get || keep { e.get(key) } else { None };
            let condition = match (&current, nx, xx) {
                (Some(_), true, _) => {
                    reply_set(out, get, current.as_ref(), false);
                    return Code::OK;
                }
                (None, _, true) => {
                    reply_set(out, get, None, false);
                    return Code::OK;
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
                    .map(|at| e.ttl_until(at)),
                (false, Some(Expiry::At(at))) => Some(e.ttl_until(at)),
                (false, Some(_)) => Some(Duration::from_millis(1)),
                (false, None) => None,
            };
            match e.put(put(key, value, ttl, condition)) {
                Ok(written) => {
                    // An expiry already past: set, then gone at once, as in Redis.
                    if expires_at == Some(Expiry::Now) {
                        let _ = e.delete(key, &Condition::IfRevision(written.mod_revision));
                    }
                    reply_set(out, get, current.as_ref(), true);
                    return Code::OK;
                }
                // NX lost to a concurrent creator: not set, as Redis would answer.
                Err(Error::Precondition { .. }) if nx => {
                    reply_set(out, get, e.get(key).as_ref(), false);
                    return Code::OK;
                }
                // Changed under us: read again.
                Err(Error::Precondition { .. }) => {}
                Err(err) => return engine_error(err, out),
            }
        }
        out.error("ERR too much contention on this key; try again");
        Code::from_static("Busy")
    }

    /// `GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]`
    fn getex(&mut self, args: &[Bytes], out: &mut Out) -> Code {
        let key = &args[1];
        let opts = &args[2..];
        // Syntax first; then, as Redis does, a missing key is null whatever the time says.
        let time = match opts {
            [] => None,
            [o] if upper(o) == "PERSIST" => None,
            [o, t] if is_any(o, &["EX", "PX", "EXAT", "PXAT"]) => Some((upper(o), t)),
            _ => {
                out.error("ERR syntax error");
                return Code::INVALID;
            }
        };
        if opts.is_empty() || self.engine.get(key).is_none() {
            out.bulk_opt(self.engine.get(key).as_ref().map(|o| &o.value));
            return Code::OK;
        }
        let to = match time {
            None => Expiry::Persist,
            Some((opt, t)) => match self.time_option(&opt, t, "GETEX", out) {
                Ok(to) => to,
                Err(code) => return code,
            },
        };
        match self.retouch(key, to, |_| true) {
            Ok(found) => out.bulk_opt(found.as_ref().map(|(o, _)| &o.value)),
            Err(err) => return engine_error(err, out),
        }
        Code::OK
    }

    /// A `SET`/`GETEX`/`SETEX` time option (`EX`, `PX`, `EXAT`, `PXAT`, upper case) as Redis
    /// reads it: not an integer, an error; zero or negative, or past what a millisecond
    /// timestamp holds, an invalid expire time; an instant already past, [`Expiry::Now`].
    /// The error reply is written on failure.
    fn time_option(
        &self,
        opt: &str,
        value: &[u8],
        command: &str,
        out: &mut Out,
    ) -> Result<Expiry, Code> {
        let Some(t) = integer(value) else {
            out.error(NOT_INTEGER);
            return Err(Code::INVALID);
        };
        let scale = if opt.starts_with('E') { 1000 } else { 1 };
        match (t > 0)
            .then(|| self.expiry(t, scale, opt.ends_with("AT")))
            .flatten()
        {
            Some(to) => Ok(to),
            None => {
                invalid_expire(command, out);
                Err(Code::INVALID)
            }
        }
    }

    /// `EXPIRE`/`PEXPIRE key ttl`, `EXPIREAT`/`PEXPIREAT key at`, with `NX`/`XX`/`GT`/`LT`.
    fn expire(&mut self, name: &str, args: &[Bytes], out: &mut Out) -> Code {
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for o in &args[3..] {
            match upper(o).as_str() {
                "NX" => nx = true,
                "XX" => xx = true,
                "GT" => gt = true,
                "LT" => lt = true,
                _ => {
                    out.error(&format!(
                        "ERR Unsupported option {}",
                        String::from_utf8_lossy(o)
                    ));
                    return Code::INVALID;
                }
            }
        }
        if nx && (xx || gt || lt) {
            out.error("ERR NX and XX, GT or LT options at the same time are not compatible");
            return Code::INVALID;
        }
        if gt && lt {
            out.error("ERR GT and LT options at the same time are not compatible");
            return Code::INVALID;
        }
        let Some(t) = integer(&args[2]) else {
            out.error(NOT_INTEGER);
            return Code::INVALID;
        };
        let scale = if name.starts_with('P') { 1 } else { 1000 };
        let Some(to) = self.expiry(t, scale, name.ends_with("AT")) else {
            invalid_expire(name, out);
            return Code::INVALID;
        };
        let new = match to {
            Expiry::At(at) => at,
            _ => 0,
        };
        // A persistent key's expiry counts as infinite for GT and LT, as in Redis.
        let when = |current: Option<u64>| match current {
            None => !xx && !gt,
            Some(c) => !nx && (!gt || new > c) && (!lt || new < c),
        };
        match self.retouch(&args[1], to, when) {
            Ok(r) => out.int(i64::from(r.is_some_and(|(_, changed)| changed))),
            Err(err) => return engine_error(err, out),
        }
        Code::OK
    }

    /// The expiry an `EXPIRE`-family time asks for: `t` in units of `scale` ms, from now or
    /// (`absolute`) since the epoch; [`Expiry::Now`] for an instant not in the future. `None`
    /// for what Redis calls an invalid expire time: past what a millisecond timestamp holds.
    fn expiry(&self, t: i64, scale: i64, absolute: bool) -> Option<Expiry> {
        let ms = t.checked_mul(scale)?;
        let now = self.engine.now_ms() as i64;
        let at = if absolute { ms } else { now.checked_add(ms)? };
        if at > MAX_EXPIRY_MS as i64 {
            return None;
        }
        Some(if at <= now {
            Expiry::Now
        } else {
            Expiry::At(at as u64)
        })
    }

    /// Sets (`At`), clears (`Persist`) or ends now (`Now`: deletes) an object's expiry,
    /// keeping its value, if `when` says yes for its current expiry. Returns the object as
    /// it was read and whether anything changed; `None` if the key is absent.
    fn retouch(
        &self,
        key: &Bytes,
        to: Expiry,
        when: impl Fn(Option<u64>) -> bool,
    ) -> Result<Option<(crate::engine::Object, bool)>, Error> {
        let e = &self.engine;
        for _ in 0..CAS_ATTEMPTS {
            let Some(o) = e.get(key) else {
                return Ok(None);
            };
            if !when(o.expires_at_ms) || (to == Expiry::Persist && o.expires_at_ms.is_none()) {
                return Ok(Some((o, false)));
            }
            let ttl = match to {
                Expiry::Now => match e.delete(key, &Condition::IfRevision(o.mod_revision)) {
                    Ok(_) => return Ok(Some((o, true))),
                    Err(Error::Precondition { .. }) => continue,
                    Err(err) => return Err(err),
                },
                Expiry::Persist => None,
                Expiry::At(at) => Some(e.ttl_until(at)),
            };
            let mut p = put(key, &o.value, ttl, Condition::IfRevision(o.mod_revision));
            p.content_type = o.content_type.clone();
            p.metadata = o.metadata.clone();
            match e.put(p) {
                Ok(_) => return Ok(Some((o, true))),
                Err(Error::Precondition { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Err(Error::Exhausted(
            "too much contention on this key; try again".into(),
        ))
    }

    /// `APPEND key value`: the new length.
    fn append(&self, key: &Bytes, tail: &Bytes, out: &mut Out) -> Code {
        self.write_at(key, None, tail, out)
    }

    /// Writes `tail` into `key`'s value at `offset` (`None`: at its end), zero-padding a
    /// gap; replies with the new length.
    fn write_at(&self, key: &Bytes, offset: Option<usize>, tail: &[u8], out: &mut Out) -> Code {
        let max = self.config.max_object;
        let written = self.rewrite(key, out, |current| {
            let head = current.map_or(&[][..], |v| &v[..]);
            let at = offset.unwrap_or(head.len());
            let Some(end) = at.checked_add(tail.len()).filter(|&t| t <= max) else {
                return Err("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
            };
            let mut v = BytesMut::zeroed(end.max(head.len()));
            v[..head.len()].copy_from_slice(head);
            v[at..end].copy_from_slice(tail);
            Ok(v.freeze())
        });
        match written {
            Ok(v) => {
                out.int(v.len() as i64);
                Code::OK
            }
            Err(code) => code,
        }
    }

    /// A read-modify-write of `key`, retried while other writes come between: `f` gets the
    /// current value (`None`: absent) and gives the new one, or the text of an error reply.
    /// The object's expiry, content type and metadata are kept. On failure the error reply
    /// is written and its code returned.
    fn rewrite(
        &self,
        key: &Bytes,
        out: &mut Out,
        mut f: impl FnMut(Option<&Bytes>) -> Result<Bytes, &'static str>,
    ) -> Result<Bytes, Code> {
        let e = &self.engine;
        for _ in 0..CAS_ATTEMPTS {
            let current = e.get(key);
            let value = match f(current.as_ref().map(|o| &o.value)) {
                Ok(v) => v,
                Err(msg) => {
                    out.error(msg);
                    return Err(Code::INVALID);
                }
            };
            let p = match &current {
                None => put(key, &value, None, Condition::IfAbsent),
                Some(o) => {
                    let ttl = o.expires_at_ms.map(|at| e.ttl_until(at));
                    let mut p = put(key, &value, ttl, Condition::IfRevision(o.mod_revision));
                    p.content_type = o.content_type.clone();
                    p.metadata = o.metadata.clone();
                    p
                }
            };
            match e.put(p) {
                Ok(_) => return Ok(value),
                Err(Error::Precondition { .. }) => {}
                Err(err) => return Err(engine_error(err, out)),
            }
        }
        out.error("ERR too much contention on this key; try again");
        Err(Code::from_static("Busy"))
    }

    /// `SETRANGE key offset value`: the new length.
    fn setrange(&self, args: &[Bytes], out: &mut Out) -> Code {
        let (key, tail) = (&args[1], &args[3]);
        let Some(offset) = integer(&args[2]) else {
            out.error(NOT_INTEGER);
            return Code::INVALID;
        };
        let Ok(offset) = usize::try_from(offset) else {
            out.error("ERR offset is out of range");
            return Code::INVALID;
        };
        // Nothing to write: the length as it is, and no key made.
        if tail.is_empty() {
            out.int(self.engine.get(key).map_or(0, |o| o.value.len() as i64));
            return Code::OK;
        }
        self.write_at(key, Some(offset), tail, out)
    }

    /// `INCRBYFLOAT key increment`: the new value, as a bulk string.
    fn incr_float(&self, key: &Bytes, by: &[u8], out: &mut Out) -> Code {
        let Some(by) = float(by) else {
            out.error("ERR value is not a valid float");
            return Code::INVALID;
        };
        let written = self.rewrite(key, out, |current| {
            let old = match current {
                None => 0.0,
                Some(v) => float(v).ok_or("ERR value is not a valid float")?,
            };
            let new = old + by;
            if !new.is_finite() {
                return Err("ERR increment would produce NaN or Infinity");
            }
            Ok(Bytes::from(format!("{new}")))
        });
        match written {
            Ok(v) => {
                out.bulk(&v);
                Code::OK
            }
            Err(code) => code,
        }
    }

    /// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`, over the connection's space.
    fn scan(&self, args: &[Bytes], space: Space, out: &mut Out) -> Code {
        let Some(cursor) = std::str::from_utf8(&args[1])
            .ok()
            .and_then(|c| c.parse::<u64>().ok())
        else {
            out.error("ERR invalid cursor");
            return Code::INVALID;
        };
        let (mut pattern, mut count, mut kind) = (None, 10usize, None);
        let mut i = 2;
        while i < args.len() {
            let Some(value) = args.get(i + 1) else {
                out.error("ERR syntax error");
                return Code::INVALID;
            };
            match upper(&args[i]).as_str() {
                "MATCH" => pattern = Some(value),
                "COUNT" => match integer(value) {
                    Some(c) if c >= 1 => count = usize::try_from(c).unwrap_or(usize::MAX),
                    Some(_) => {
                        out.error("ERR syntax error");
                        return Code::INVALID;
                    }
                    None => {
                        out.error(NOT_INTEGER);
                        return Code::INVALID;
                    }
                },
                "TYPE" => kind = Some(value),
                _ => {
                    out.error("ERR syntax error");
                    return Code::INVALID;
                }
            }
            i += 2;
        }
        // Every object is a string: TYPE string keeps all, any other type none.
        let strings = kind.is_none_or(|t| t.eq_ignore_ascii_case(b"string"));
        // A huge COUNT is a full pass: the page grows with the keys found, not with COUNT.
        let (keys, next) = self.engine.scan(cursor, count);
        let shown: Vec<Bytes> = keys
            .into_iter()
            .filter(|_| strings)
            .filter_map(|k| {
                let v = space.view(self.config.shadow.prefix.as_deref(), &k)?;
                let v = k.slice_ref(v);
                pattern.is_none_or(|p| glob(p, &v)).then_some(v)
            })
            .collect();
        out.array(2);
        out.bulk_str(itoa::Buffer::new().format(next));
        out.array(shown.len());
        for k in &shown {
            out.bulk(k);
        }
        Code::OK
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`
    fn hello(&mut self, args: &[Bytes], out: &mut Out) -> Code {
        // The protocol the connection speaks is the one its replies are written in.
        let mut proto = if out.resp3 { 3 } else { 2 };
        if let Some(v) = args.get(1) {
            match integer(v) {
                Some(v @ (2 | 3)) => proto = v as u8,
                Some(_) => {
                    out.error("NOPROTO unsupported protocol version");
                    return Code::INVALID;
                }
                None => {
                    out.error("ERR Protocol version is not an integer or out of range");
                    return Code::INVALID;
                }
            }
        }
        let (mut auth, mut name) = (None, None);
        let mut i = 2;
        while i < args.len() {
            let more = args.len() - i - 1;
            match upper(&args[i]).as_str() {
                "AUTH" if more >= 2 => {
                    auth = Some((&args[i + 1], &args[i + 2]));
                    i += 3;
                }
                "SETNAME" if more >= 1 => {
                    name = Some(&args[i + 1]);
                    i += 2;
                }
                _ => {
                    out.error(&format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(&args[i])
                    ));
                    return Code::INVALID;
                }
            }
        }
        if let Some((user, pass)) = auth
            && let Err(msg) = self.authenticate(Some(user), pass)
        {
            out.error(msg);
            return Code::from_static("Unauthenticated");
        }
        if !self.authed {
            out.error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
            return Code::from_static("Unauthenticated");
        }
        if let Some(name) = name
            && let Err(msg) = self.set_name(name)
        {
            out.error(msg);
            return Code::INVALID;
        }
        // The reply already speaks the protocol asked for.
        out.resp3 = proto == 3;
        out.map(7);
        out.bulk_str("server");
        out.bulk_str("objstore");
        out.bulk_str("version");
        out.bulk_str(REDIS_VERSION);
        out.bulk_str("proto");
        out.int(i64::from(proto));
        out.bulk_str("id");
        out.int(self.id as i64);
        out.bulk_str("mode");
        out.bulk_str("standalone");
        out.bulk_str("role");
        out.bulk_str("master");
        out.bulk_str("modules");
        out.array(0);
        Code::OK
    }

    /// Checks `AUTH [user] pass`; the shadow user marks the connection shadow.
    fn authenticate(&mut self, user: Option<&[u8]>, pass: &[u8]) -> Result<(), &'static str> {
        const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
        let shadow_user = &self.config.shadow.user;
        let shadow = match user {
            None | Some(b"default") => false,
            Some(u) if !shadow_user.is_empty() && u == shadow_user.as_bytes() => true,
            Some(_) => return Err(WRONGPASS),
        };
        match &self.config.auth_token {
            None if user.is_none() => {
                return Err(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                );
            }
            // No password configured: any user name we know gets in with any password.
            None => {}
            Some(token) if !constant_time_eq(pass, token.as_bytes()) => return Err(WRONGPASS),
            Some(_) => {}
        }
        self.authed = true;
        self.shadow_user = shadow;
        Ok(())
    }

    /// `CLIENT SETNAME`: the shadow suffix marks the connection shadow (and a later name
    /// without it makes it live again).
    fn set_name(&mut self, name: &Bytes) -> Result<(), &'static str> {
        if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            return Err("ERR Client names cannot contain spaces, newlines or special characters.");
        }
        let suffix = self.config.shadow.name_suffix.as_bytes();
        self.shadow_name = !suffix.is_empty() && name.ends_with(suffix);
        self.name = (!name.is_empty()).then(|| name.clone());
        Ok(())
    }

    /// `INFO [section …]`
    fn info(&self, sections: &[Bytes]) -> String {
        use std::fmt::Write as _;
        const ALL: [&str; 5] = ["server", "clients", "memory", "stats", "keyspace"];
        let wanted: Vec<String> = sections
            .iter()
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
            .collect();
        let every = wanted.is_empty()
            || wanted
                .iter()
                .any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
        let e = &self.engine;
        let stats = &self.stats.0;
        let mut text = String::new();
        for section in ALL
            .iter()
            .filter(|s| every || wanted.iter().any(|w| w == *s))
        {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let _ = match *section {
                "server" => write!(
                    text,
                    "# Server\r\nredis_version:{REDIS_VERSION}\r\nobjstore_version:{}\r\nredis_mode:standalone\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n",
                    env!("CARGO_PKG_VERSION"),
                    std::process::id(),
                    self.port,
                    stats.started.elapsed().as_secs(),
                ),
                "clients" => write!(
                    text,
                    "# Clients\r\nconnected_clients:{}\r\n",
                    stats.connected.load(Ordering::Relaxed)
                ),
                "memory" => {
                    let cap = e.config().max_memory;
                    write!(
                        text,
                        "# Memory\r\nused_memory:{}\r\nused_memory_rss:{}\r\nmaxmemory:{cap}\r\nmaxmemory_policy:{}\r\n",
                        e.charged_bytes(),
                        crate::engine::resident_bytes().unwrap_or(0),
                        match e.config().eviction {
                            crate::engine::Eviction::Noeviction => "noeviction",
                            crate::engine::Eviction::SampledLru => "allkeys-lru",
                        }
                    )
                }
                "stats" => {
                    let (evicted, expired) = e.evictions();
                    write!(
                        text,
                        "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nexpired_keys:{expired}\r\nevicted_keys:{evicted}\r\n",
                        stats.connections.load(Ordering::Relaxed),
                        stats.commands.load(Ordering::Relaxed) + self.commands,
                    )
                }
                _ => {
                    let keys = e.len();
                    text.push_str("# Keyspace\r\n");
                    if keys > 0 {
                        let _ = write!(
                            text,
                            "db0:keys={keys},expires={},avg_ttl=0\r\n",
                            e.expiring()
                        );
                    }
                    Ok(())
                }
            };
        }
        text
    }

    /// `INCRBY`: the new value, or the error reply written.
    fn incr(&self, key: &Bytes, by: i64, out: &mut Out) -> Result<i64, Code> {
        let mut new = 0;
        self.rewrite(key, out, |current| {
            let old = match current {
                None => 0,
                Some(v) => integer(v).ok_or(NOT_INTEGER)?,
            };
            new = old
                .checked_add(by)
                .ok_or("ERR increment or decrement would overflow")?;
            Ok(Bytes::from(itoa::Buffer::new().format(new).to_owned()))
        })?;
        Ok(new)
    }
}

/// Most arguments a request may have (Redis's limit).
const MAX_ARGS: usize = 1024 * 1024;
/// Longest `*N` or `$N` line.
const MAX_HEADER_LINE: usize = 32;

/// Parses the request (at most `max_bulk` bytes in all) `*N\r\n` then N times `$len\r\n<len bytes>\r\n` at `buf[at..]`,
/// appending where its arguments lie to `spans`. `Ok(Some(end))` when complete, `Ok(None)`
/// when more bytes are needed (nothing appended then), `Err` for what no request can be.
fn parse_request(
    buf: &[u8],
    at: usize,
    max_bulk: usize,
    spans: &mut Vec<(usize, usize)>,
) -> Result<Option<usize>, String> {
    let mark = spans.len();
    let incomplete = |spans: &mut Vec<(usize, usize)>| {
        spans.truncate(mark);
        Ok(None)
    };
    let Some((n, mut p)) = header_line(buf, at, b'*', "expected an array of bulk strings")? else {
        return incomplete(spans);
    };
    if n > MAX_ARGS {
        return Err("invalid multibulk length".into());
    }
    for _ in 0..n {
        let Some((len, start)) = header_line(buf, p, b'$', "expected an array of bulk strings")?
        else {
            return incomplete(spans);
        };
        if len > max_bulk {
            return Err("invalid bulk length".into());
        }
        let end = start + len;
        if buf.len() < end + 2 {
            return incomplete(spans);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err("bulk string not terminated by CRLF".into());
        }
        spans.push((start, end));
        p = end + 2;
        if p - at > max_bulk {
            return Err(format!("request larger than {max_bulk} bytes"));
        }
    }
    Ok(Some(p))
}

/// The number on a `<tag>N\r\n` line at `buf[at..]` and where the line ends; `None` when
/// the line is not all there yet.
fn header_line(
    buf: &[u8],
    at: usize,
    tag: u8,
    wrong_tag: &str,
) -> Result<Option<(usize, usize)>, String> {
    let Some(&first) = buf.get(at) else {
        return Ok(None);
    };
    if first != tag {
        return Err(if tag == b'*' {
            wrong_tag.to_owned()
        } else {
            format!("expected '$', got '{}'", char::from(first))
        });
    }
    let rest = &buf[at + 1..buf.len().min(at + 1 + MAX_HEADER_LINE)];
    let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
        if rest.len() == MAX_HEADER_LINE {
            return Err(format!("{} line too long", char::from(tag)));
        }
        return Ok(None);
    };
    if rest.get(cr + 1).is_none() {
        return Ok(None);
    }
    if rest[cr + 1] != b'\n' {
        return Err("line not terminated by CRLF".into());
    }
    let digits = &rest[..cr];
    let what = if tag == b'*' { "multibulk" } else { "bulk" };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("invalid {what} length"));
    }
    let n = digits.iter().fold(0usize, |n, &d| {
        n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
    });
    Ok(Some((n, at + 1 + cr + 2)))
}

/// Where a command's expiry change goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// The key goes now.
    Now,
    /// No expiry.
    Persist,
    /// Milliseconds since the epoch.
    At(u64),
}

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

/// Which arguments are keys.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    None,
    /// The first argument.
    First,
    /// Every argument.
    All,
    /// Every other argument from the first (`MSET k v k v`).
    Pairs,
}

/// What a command does, for the shadow rule and `COMMAND INFO`'s flags.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    /// About the connection; never refused by the shadow rule.
    Connection,
}

/// A command the port answers.
struct Spec {
    name: &'static str,
    /// As Redis states it: `n`, exactly `n` words with the name; `-n`, at least `n`.
    arity: i8,
    keys: Keys,
    kind: Kind,
    summary: &'static str,
}

const fn spec(
    name: &'static str,
    arity: i8,
    keys: Keys,
    kind: Kind,
    summary: &'static str,
) -> Spec {
    Spec {
        name,
        arity,
        keys,
        kind,
        summary,
    }
}

/// Every command the port answers, the most frequent first (looked up in order). A name
/// missing here is answered as unknown, and only these get a metric series of their own.
const COMMANDS: &[Spec] = &[
    spec(
        "GET",
        2,
        Keys::First,
        Kind::Read,
        "Returns the string value of a key.",
    ),
    spec(
        "SET",
        -3,
        Keys::First,
        Kind::Write,
        "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
    ),
    spec(
        "MGET",
        -2,
        Keys::All,
        Kind::Read,
        "Atomically returns the string values of one or more keys.",
    ),
    spec(
        "MSET",
        -3,
        Keys::Pairs,
        Kind::Write,
        "Atomically creates or modifies the string values of one or more keys.",
    ),
    spec(
        "DEL",
        -2,
        Keys::All,
        Kind::Write,
        "Deletes one or more keys.",
    ),
    spec(
        "EXISTS",
        -2,
        Keys::All,
        Kind::Read,
        "Determines whether one or more keys exist.",
    ),
    spec(
        "INCR",
        2,
        Keys::First,
        Kind::Write,
        "Increments the integer value of a key by one.",
    ),
    spec(
        "PING",
        -1,
        Keys::None,
        Kind::Connection,
        "Returns the server's liveliness response.",
    ),
    spec(
        "ECHO",
        2,
        Keys::None,
        Kind::Connection,
        "Returns the given string.",
    ),
    spec(
        "STRLEN",
        2,
        Keys::First,
        Kind::Read,
        "Returns the length of a string value.",
    ),
    spec(
        "TYPE",
        2,
        Keys::First,
        Kind::Read,
        "Determines the type of value stored at a key.",
    ),
    spec(
        "DBSIZE",
        1,
        Keys::None,
        Kind::Read,
        "Returns the number of keys in the database.",
    ),
    spec(
        "TTL",
        2,
        Keys::First,
        Kind::Read,
        "Returns the expiration time in seconds of a key.",
    ),
    spec(
        "PTTL",
        2,
        Keys::First,
        Kind::Read,
        "Returns the expiration time in milliseconds of a key.",
    ),
    spec(
        "SETNX",
        3,
        Keys::First,
        Kind::Write,
        "Set the string value of a key only when the key doesn't exist.",
    ),
    spec(
        "SETEX",
        4,
        Keys::First,
        Kind::Write,
        "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.",
    ),
    spec(
        "PSETEX",
        4,
        Keys::First,
        Kind::Write,
        "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.",
    ),
    spec(
        "GETEX",
        -2,
        Keys::First,
        Kind::Write,
        "Returns the string value of a key after setting its expiration time.",
    ),
    spec(
        "GETDEL",
        2,
        Keys::First,
        Kind::Write,
        "Returns the string value of a key after deleting the key.",
    ),
    spec(
        "APPEND",
        3,
        Keys::First,
        Kind::Write,
        "Appends a string to the value of a key. Creates the key if it doesn't exist.",
    ),
    spec(
        "MSETNX",
        -3,
        Keys::Pairs,
        Kind::Write,
        "Atomically modifies the string values of one or more keys only when all keys don't exist.",
    ),
    spec(
        "UNLINK",
        -2,
        Keys::All,
        Kind::Write,
        "Asynchronously deletes one or more keys.",
    ),
    spec(
        "EXPIRE",
        -3,
        Keys::First,
        Kind::Write,
        "Sets the expiration time of a key in seconds.",
    ),
    spec(
        "PEXPIRE",
        -3,
        Keys::First,
        Kind::Write,
        "Sets the expiration time of a key in milliseconds.",
    ),
    spec(
        "EXPIREAT",
        -3,
        Keys::First,
        Kind::Write,
        "Sets the expiration time of a key to a Unix timestamp.",
    ),
    spec(
        "PEXPIREAT",
        -3,
        Keys::First,
        Kind::Write,
        "Sets the expiration time of a key to a Unix milliseconds timestamp.",
    ),
    spec(
        "PERSIST",
        2,
        Keys::First,
        Kind::Write,
        "Removes the expiration time of a key.",
    ),
    spec(
        "GETRANGE",
        4,
        Keys::First,
        Kind::Read,
        "Returns a substring of the string stored at a key.",
    ),
    spec(
        "SETRANGE",
        4,
        Keys::First,
        Kind::Write,
        "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.",
    ),
    spec(
        "INCRBYFLOAT",
        3,
        Keys::First,
        Kind::Write,
        "Increment the floating point value of a key by a number.",
    ),
    spec(
        "EXPIRETIME",
        2,
        Keys::First,
        Kind::Read,
        "Returns the expiration time of a key as a Unix timestamp.",
    ),
    spec(
        "PEXPIRETIME",
        2,
        Keys::First,
        Kind::Read,
        "Returns the expiration time of a key as a Unix milliseconds timestamp.",
    ),
    spec(
        "TIME",
        1,
        Keys::None,
        Kind::Connection,
        "Returns the server time.",
    ),
    spec(
        "DECR",
        2,
        Keys::First,
        Kind::Write,
        "Decrements the integer value of a key by one.",
    ),
    spec(
        "INCRBY",
        3,
        Keys::First,
        Kind::Write,
        "Increments the integer value of a key by a number.",
    ),
    spec(
        "DECRBY",
        3,
        Keys::First,
        Kind::Write,
        "Decrements a number from the integer value of a key.",
    ),
    spec(
        "SCAN",
        -2,
        Keys::None,
        Kind::Read,
        "Iterates over the key names in the database.",
    ),
    spec(
        "FLUSHDB",
        -1,
        Keys::None,
        Kind::Write,
        "Removes all keys from the current database.",
    ),
    spec(
        "SELECT",
        2,
        Keys::None,
        Kind::Connection,
        "Changes the selected database.",
    ),
    spec(
        "AUTH",
        -2,
        Keys::None,
        Kind::Connection,
        "Authenticates the connection.",
    ),
    spec(
        "HELLO",
        -1,
        Keys::None,
        Kind::Connection,
        "Handshakes with the Redis server.",
    ),
    spec(
        "CLIENT",
        -2,
        Keys::None,
        Kind::Connection,
        "A container for client connection commands.",
    ),
    spec(
        "COMMAND",
        -1,
        Keys::None,
        Kind::Connection,
        "Returns detailed information about all commands.",
    ),
    spec(
        "CONFIG",
        -2,
        Keys::None,
        Kind::Connection,
        "A container for server configuration commands.",
    ),
    spec(
        "INFO",
        -1,
        Keys::None,
        Kind::Connection,
        "Returns information and statistics about the server.",
    ),
    spec(
        "QUIT",
        -1,
        Keys::None,
        Kind::Connection,
        "Closes the connection.",
    ),
];

/// Whether `n` words fit `arity`.
fn fits(arity: i8, n: usize) -> bool {
    let a = usize::from(arity.unsigned_abs());
    if arity < 0 { n >= a } else { n == a }
}

/// The arguments with every key put under `prefix` (a shadow connection's).
fn prefixed(keys: Keys, mut args: Vec<Bytes>, prefix: &[u8]) -> Vec<Bytes> {
    let step = match keys {
        Keys::None => return args,
        Keys::First => {
            args[1] = under(prefix, &args[1]);
            return args;
        }
        Keys::All => 1,
        Keys::Pairs => 2,
    };
    for a in args.iter_mut().skip(1).step_by(step) {
        *a = under(prefix, a);
    }
    args
}

fn under(prefix: &[u8], key: &[u8]) -> Bytes {
    let mut k = BytesMut::with_capacity(prefix.len() + key.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(key);
    k.freeze()
}

fn wrong_arity(name: &str, out: &mut Out) {
    out.error(&format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ));
}

fn invalid_expire(name: &str, out: &mut Out) {
    out.error(&format!(
        "ERR invalid expire time in '{}' command",
        name.to_ascii_lowercase()
    ));
}

/// Redis's text for an unknown command: the name (at most 128 bytes) and its arguments,
/// each quoted and followed by a space, until 128 bytes of them are shown; line breaks
/// become spaces.
fn unknown_command(args: &[Bytes], out: &mut Out) {
    let mut shown = String::new();
    for a in &args[1..] {
        if shown.len() >= 128 {
            break;
        }
        let room = 128 - shown.len();
        shown.push('\'');
        shown.push_str(&String::from_utf8_lossy(c_str(a, room)));
        shown.push_str("' ");
    }
    let msg = format!(
        "ERR unknown command '{}', with args beginning with: {shown}",
        String::from_utf8_lossy(c_str(&args[0], 128))
    );
    out.error(&msg.replace(['\r', '\n'], " "));
}

/// What C's `%.*s` prints of `b`: up to `max` bytes, stopping at a NUL.
fn c_str(b: &[u8], max: usize) -> &[u8] {
    let b = &b[..b.len().min(max)];
    b.iter().position(|&c| c == 0).map_or(b, |i| &b[..i])
}

fn unknown_subcommand(sub: &[u8], command: &str, out: &mut Out) {
    out.error(&format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        String::from_utf8_lossy(c_str(sub, 128))
    ));
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND LIST`, `COMMAND INFO name …`, `COMMAND DOCS [name …]`.
fn command_info(args: &[Bytes], out: &mut Out) -> Code {
    let find = |name: &[u8]| {
        COMMANDS
            .iter()
            .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
    };
    let Some(sub) = args.get(1) else {
        out.array(COMMANDS.len());
        for c in COMMANDS {
            info_entry(c, out);
        }
        return Code::OK;
    };
    match upper(sub).as_str() {
        "COUNT" if args.len() == 2 => out.int(COMMANDS.len() as i64),
        "LIST" if args.len() == 2 => {
            out.array(COMMANDS.len());
            for c in COMMANDS {
                out.bulk_str(&c.name.to_ascii_lowercase());
            }
        }
        "INFO" => {
            if args.len() == 2 {
                out.array(COMMANDS.len());
                COMMANDS.iter().for_each(|c| info_entry(c, out));
            } else {
                out.array(args.len() - 2);
                for name in &args[2..] {
                    match find(name) {
                        Some(c) => info_entry(c, out),
                        None => out.null(),
                    }
                }
            }
        }
        "DOCS" => {
            let docs: Vec<&Spec> = if args.len() == 2 {
                COMMANDS.iter().collect()
            } else {
                args[2..].iter().filter_map(|n| find(n)).collect()
            };
            out.map(docs.len());
            for c in docs {
                out.bulk_str(&c.name.to_ascii_lowercase());
                out.map(3);
                out.bulk_str("summary");
                out.bulk_str(c.summary);
                out.bulk_str("since");
                out.bulk_str("1.0.0");
                out.bulk_str("group");
                out.bulk_str(match c.kind {
                    Kind::Connection => "connection",
                    _ if c.keys == Keys::None => "generic",
                    _ => "string",
                });
            }
        }
        "COUNT" | "LIST" => {
            out.error(&format!(
                "ERR wrong number of arguments for 'command|{}' command",
                upper(sub).to_ascii_lowercase()
            ));
            return Code::INVALID;
        }
        _ => {
            unknown_subcommand(sub, "COMMAND", out);
            return Code::INVALID;
        }
    }
    Code::OK
}

/// One `COMMAND INFO` entry, as Redis 7 gives it: name, arity, flags, first key, last key,
/// step, ACL categories, tips, key specs, subcommands.
fn info_entry(c: &Spec, out: &mut Out) {
    out.array(10);
    out.bulk_str(&c.name.to_ascii_lowercase());
    out.int(i64::from(c.arity));
    let flags: &[&str] = match c.kind {
        Kind::Read => &["readonly", "fast"],
        Kind::Write => &["write", "denyoom"],
        Kind::Connection => &["fast", "loading", "stale"],
    };
    out.array(flags.len());
    flags.iter().for_each(|f| out.simple(f));
    let (first, last, step) = match c.keys {
        Keys::None => (0, 0, 0),
        Keys::First => (1, 1, 1),
        Keys::All => (1, -1, 1),
        Keys::Pairs => (1, -1, 2),
    };
    out.int(first);
    out.int(last);
    out.int(step);
    for _ in 0..4 {
        out.array(0);
    }
}

/// Redis's glob (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`; case-sensitive.
/// Iterative with one backtrack point, so a pattern of many `*` cannot take exponential
/// time on a long key.
pub(crate) fn glob(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Where to resume after the last `*`: (pattern position after it, string position).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class(pattern, p, s[i]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == s[i]).then_some(p + 2),
            Some(&c) => (c == s[i]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                i += 1;
            }
            (None, Some((sp, si))) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == b'['`: the position after
/// the class if it matches.
fn class(pattern: &[u8], start: usize, c: u8) -> Option<usize> {
    let mut p = start + 1;
    let not = pattern.get(p) == Some(&b'^');
    if not {
        p += 1;
    }
    let mut matched = false;
    loop {
        match pattern.get(p) {
            // An unclosed class ends with the pattern, as in Redis.
            None => break,
            Some(b']') => {
                p += 1;
                break;
            }
            Some(b'\\') if p + 1 < pattern.len() => {
                matched |= pattern[p + 1] == c;
                p += 2;
            }
            Some(&lo) if pattern.get(p + 1) == Some(&b'-') && p + 2 < pattern.len() => {
                let hi = pattern[p + 2];
                let (lo, hi) = if lo > hi { (hi, lo) } else { (lo, hi) };
                matched |= (lo..=hi).contains(&c);
                p += 3;
            }
            Some(&x) => {
                matched |= x == c;
                p += 1;
            }
        }
    }
    (matched != not).then_some(p)
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

fn is_any(b: &[u8], words: &[&str]) -> bool {
    words.iter().any(|w| w.as_bytes().eq_ignore_ascii_case(b))
}

fn integer(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A finite float as Redis reads one (no spaces, no NaN).
fn float(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| !v.is_nan())
}

/// The bytes `GETRANGE` returns of a value of `len` bytes: indices count from the end when
/// negative, and are clamped; an empty range when start lies past end.
fn byte_range(len: usize, start: i64, end: i64) -> std::ops::Range<usize> {
    let len_i = i64::try_from(len).unwrap_or(i64::MAX);
    let fix = |i: i64| if i < 0 { (len_i + i).max(0) } else { i };
    let (start, end) = (fix(start), fix(end).min(len_i - 1));
    if len == 0 || start > end {
        return 0..0;
    }
    start as usize..end as usize + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn {
            engine: Engine::new(crate::engine::EngineConfig::default()),
            config: Arc::new(RespConfig {
                max_object: 1024,
                ..RespConfig::default()
            }),
            metrics: Metrics::new(),
            stats: Connected::new(Arc::new(Stats::new())),
            port: 1,
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            id: 1,
            name: None,
            series: None,
            authed: true,
            shadow_user: false,
            shadow_name: false,
            commands: 0,
        }
    }

    fn reply(c: &mut Conn, words: &[&str]) -> String {
        let mut out = Out::new(false);
        let args: Vec<Bytes> = words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        c.frame(&args, &mut out);
        String::from_utf8_lossy(&out.buf).into_owned()
    }

    /// The table and the dispatcher agree: every listed command is answered (not as
    /// unknown) at its arity, and refused one word short of it.
    #[test]
    fn every_listed_command_is_dispatched_and_its_arity_checked() {
        let mut c = conn();
        for spec in COMMANDS {
            let n = usize::from(spec.arity.unsigned_abs());
            let mut words = vec![spec.name];
            words.resize(n, "1");
            if spec.name == "QUIT" {
                continue;
            }
            let r = reply(&mut c, &words);
            assert!(!r.contains("unknown command"), "{}: {r}", spec.name);
            if n > 1 {
                let r = reply(&mut c, &words[..n - 1]);
                assert!(
                    r.contains("wrong number of arguments"),
                    "{}: {r}",
                    spec.name
                );
            }
        }
        assert!(reply(&mut c, &["NOSUCH", "x"]).contains("unknown command"));
        assert!(reply(&mut c, &["ping", "a", "b"]).contains("wrong number"));
        assert!(reply(&mut c, &["MSET", "a", "1", "b"]).contains("wrong number"));
    }

    #[test]
    fn requests_parse_whole_partial_or_refused() {
        let parse = |b: &[u8]| {
            let mut spans = Vec::new();
            parse_request(b, 0, 1024, &mut spans).map(|end| (end, spans))
        };
        let req = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(parse(req), Ok((Some(req.len()), vec![(8, 11), (17, 18)])));
        // Every prefix is incomplete, never an error, and leaves no spans behind.
        for cut in 0..req.len() {
            assert_eq!(parse(&req[..cut]), Ok((None, Vec::new())), "cut at {cut}");
        }
        for (bad, want) in [
            (&b":1\r\n"[..], "expected an array"),
            (b"*1\r\n:1\r\n", "expected '$', got ':'"),
            (b"*-1\r\n", "invalid multibulk length"),
            (b"*2000000\r\n", "invalid multibulk length"),
            (b"*1\r\n$2000\r\n", "invalid bulk length"),
            (b"*1\r\n$99999999999999999999999\r\n", "invalid bulk length"),
            (b"*1\r\n$1\r\nkk\r\n", "not terminated"),
            (b"*1\r\n$1\r\nk\r\r", "not terminated"),
            (b"*11111111111111111111111111111111111111", "line too long"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        // The whole request is bounded, not only each argument.
        let mut big = b"*3\r\n".to_vec();
        for _ in 0..3 {
            big.extend_from_slice(b"$600\r\n");
            big.extend_from_slice(&[b'x'; 600]);
            big.extend_from_slice(b"\r\n");
        }
        assert!(parse(&big).unwrap_err().contains("request larger"));
    }

    #[test]
    fn glob_matches_as_redis_does() {
        for (p, s, want) in [
            ("*", "", true),
            ("*", "abc", true),
            ("a*", "abc", true),
            ("a*c", "abc", true),
            ("a*c", "abd", false),
            ("?b?", "abc", true),
            ("?b?", "ab", false),
            ("h[ae]llo", "hello", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("user:*:name", "user:42:name", true),
            ("user:*:name", "user:42:mail", false),
            ("**a", "bbba", true),
            ("a", "A", false),
        ] {
            assert_eq!(glob(p.as_bytes(), s.as_bytes()), want, "{p} ~ {s}");
        }
        // Many stars against a long miss: linear, not exponential.
        let p = "*a".repeat(30) + "b";
        assert!(!glob(p.as_bytes(), "a".repeat(5000).as_bytes()));
    }
}
