//! The HTTP/1.1 engine: keep-alive connections in a lock-free pool, requests encoded into the
//! worker's reused buffer, responses parsed in place with `httparse`.
//!
//! A load generator's hot path: a general-purpose client (hyper's, with a connection task per
//! connection and a pool behind a mutex) costs more CPU per request than the server under test
//! spends answering it. Here a request is one `write` and usually one `read`, on the worker's
//! own task. Bounded: response heads over 64 KiB and bodies over 64 MiB are protocol errors.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use crossbeam_queue::ArrayQueue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body (the HTTP/2 client reads up to the same).
pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;

/// Where an HTTP target lives.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    /// `host:port` as written (for the Host header).
    pub(crate) authority: String,
    /// Host name or address.
    pub(crate) host: String,
    /// Port.
    pub(crate) port: u16,
    /// `https://`.
    pub(crate) tls: bool,
}

impl Endpoint {
    /// Parses `http://host[:port][/]` or `https://…`.
    ///
    /// # Errors
    ///
    /// Not an `http://` or `https://` URL with a host, or it has a path.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(format!("{url:?}: only http:// and https:// URLs")),
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "{url:?}: give the server only (http(s)://host:port); paths belong to the steps"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                p.parse::<u16>()
                    .map_err(|_| format!("{url:?}: {p:?} is not a port"))?,
            ),
            _ => (authority.to_owned(), if tls { 443 } else { 80 }),
        };
        Ok(Endpoint {
            authority: authority.to_owned(),
            host,
            port,
            tls,
        })
    }

    /// `http` or `https`, for request URIs.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Resolves the address.
    ///
    /// # Errors
    ///
    /// The name does not resolve.
    pub(crate) async fn resolve(&self) -> std::io::Result<SocketAddr> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{} does not resolve", self.host)))
    }
}

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// No connection could be made.
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    /// The connection failed mid-request.
    #[error("the connection failed mid-request")]
    Io(#[source] std::io::Error),
    /// The HTTP/2 handshake failed (the HTTP/2 client shares this error type).
    #[error("the HTTP/2 handshake failed")]
    Handshake(#[source] hyper::Error),
    /// The server's bytes are not HTTP/1.1 (or are over the limits).
    #[error("not an HTTP/1.1 answer: {0}")]
    Protocol(String),
}

/// A response, borrowed from the connection's buffer until the next request.
#[derive(Debug, Default)]
pub(crate) struct Response {
    /// Status code.
    pub(crate) status: u16,
    /// Headers the caller asked for (lowercase name, value).
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// Body, when asked for.
    pub(crate) body: Vec<u8>,
    /// Body length (read in full either way).
    pub(crate) body_len: usize,
    /// When the request got a connection and was sent: the start of the service time (a
    /// wait for a free connection is latency, not service).
    pub(crate) sent: Option<std::time::Instant>,
}

/// One keep-alive connection.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: crate::tls::Stream,
    buf: BytesMut,
    reused: bool,
}

/// Connections to one endpoint. Idle connections wait in a lock-free queue; at most `max`
/// are open (more waiting workers open more only up to it; the rest get a connection back).
#[derive(Debug)]
pub(crate) struct Pool {
    addr: SocketAddr,
    /// `https://`: the handshake every new connection runs.
    tls: Option<crate::tls::Tls>,
    idle: ArrayQueue<Conn>,
    open: tokio::sync::Semaphore,
    connect_timeout: Duration,
}

/// A checked-out connection: returns to the pool when dropped, if its last exchange finished
/// and left it open; otherwise it is closed.
#[derive(Debug)]
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    /// The last exchange on `conn` finished with the connection kept open. False while an
    /// exchange is under way: a lease dropped then (the request's deadline passed, the run
    /// was stopped) holds a connection whose answer is still to come, and the next request
    /// on it would read that answer as its own.
    idle: bool,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take().filter(|_| self.idle) {
            // Full cannot happen (at most `max` exist); dropping closes it if it did.
            let _ = self.pool.idle.push(c);
        }
    }
}

impl Pool {
    /// A pool of at most `max` connections to `addr` (over TLS with `tls`).
    pub(crate) fn new(
        addr: SocketAddr,
        tls: Option<crate::tls::Tls>,
        max: usize,
        connect_timeout: Duration,
    ) -> Pool {
        Pool {
            addr,
            tls,
            idle: ArrayQueue::new(max.max(1)),
            open: tokio::sync::Semaphore::new(max.max(1)),
            connect_timeout,
        }
    }

    async fn lease(&self) -> Result<Lease<'_>, HttpError> {
        let permit = self
            .open
            .acquire()
            .await
            .map_err(|_| HttpError::Connect(std::io::Error::other("pool closed")))?;
        let conn = match self.idle.pop() {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            idle: false,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Conn, HttpError> {
        let stream =
            tokio::time::timeout(self.connect_timeout, connect(self.addr, self.tls.as_ref()))
                .await
                .map_err(|_| {
                    HttpError::Connect(std::io::Error::from(std::io::ErrorKind::TimedOut))
                })?
                .map_err(HttpError::Connect)?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            reused: false,
        })
    }

    /// Sends the encoded `request` and reads the response into `out`. `want_headers` names
    /// (lowercase, first of each pair) the headers to keep; `want_body` keeps the body. A reused connection the
    /// server had closed is retried once on a fresh one (nothing was answered on it).
    ///
    /// # Errors
    ///
    /// See [`HttpError`].
    pub(crate) async fn send(
        &self,
        request: &[u8],
        head: bool,
        want_headers: &[(String, String)],
        want_body: bool,
        out: &mut Response,
    ) -> Result<(), HttpError> {
        let mut lease = self.lease().await?;
        out.sent = Some(std::time::Instant::now());
        let mut retried = false;
        loop {
            let Some(conn) = lease.conn.as_mut() else {
                // A lease holds a connection until this function gives it up.
                return Err(HttpError::Connect(std::io::Error::other(
                    "no connection leased",
                )));
            };
            match exchange(conn, request, head, want_headers, want_body, out).await {
                Ok(keep) => {
                    if keep {
                        conn.reused = true;
                        lease.idle = true;
                    } else {
                        lease.conn = None;
                    }
                    return Ok(());
                }
                Err(Failure { error, answered }) => {
                    let stale = conn.reused && !answered && !retried;
                    lease.conn = None;
                    if !stale || matches!(error, HttpError::Protocol(_)) {
                        return Err(error);
                    }
                    lease.conn = Some(self.connect().await?);
                    retried = true;
                }
            }
        }
    }
}

struct Failure {
    error: HttpError,
    /// Whether any response byte arrived.
    answered: bool,
}

fn io(e: std::io::Error, answered: bool) -> Failure {
    Failure {
        error: HttpError::Io(e),
        answered,
    }
}

fn protocol(m: impl Into<String>) -> Failure {
    Failure {
        error: HttpError::Protocol(m.into()),
        answered: true,
    }
}

/// A connection to `addr`, no delay on small writes, with the TLS handshake when `tls`.
pub(crate) async fn connect(
    addr: SocketAddr,
    tls: Option<&crate::tls::Tls>,
) -> std::io::Result<crate::tls::Stream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    match tls {
        Some(tls) => tls.connect(tcp).await,
        None => Ok(crate::tls::Stream::Plain(tcp)),
    }
}

/// One request/response; returns whether the connection stays open.
async fn exchange(
    conn: &mut Conn,
    request: &[u8],
    head: bool,
    want_headers: &[(String, String)],
    want_body: bool,
    out: &mut Response,
) -> Result<bool, Failure> {
    conn.stream
        .write_all(request)
        .await
        .map_err(|e| io(e, false))?;
    // TLS keeps what it was handed until flushed (a no-op on plain TCP).
    conn.stream.flush().await.map_err(|e| io(e, false))?;
    conn.buf.clear();
    out.headers.clear();
    out.body.clear();
    // The head.
    let (head_len, length, chunked, close) = loop {
        if !conn.buf.is_empty() {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            match r.parse(&conn.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = r.code.unwrap_or(0);
                    if (100..200).contains(&status) && status != 101 {
                        // An interim response: drop it and read the real one.
                        conn.buf.advance(n);
                        continue;
                    }
                    out.status = status;
                    let mut length = None;
                    let mut chunked = false;
                    let mut close = r.version == Some(0);
                    for h in r.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let v = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .ok_or_else(|| protocol("bad content-length"))?;
                            length = Some(v);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h
                                .value
                                .windows(7)
                                .any(|w| w.eq_ignore_ascii_case(b"chunked"));
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            if h.value.eq_ignore_ascii_case(b"close") {
                                close = true;
                            } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                                close = false;
                            }
                        }
                        if let Some((w, _)) = want_headers
                            .iter()
                            .find(|(w, _)| h.name.eq_ignore_ascii_case(w))
                        {
                            out.headers.push((w.clone(), h.value.to_vec()));
                        }
                    }
                    break (n, length, chunked, close);
                }
                Ok(httparse::Status::Partial) => {
                    if conn.buf.len() > MAX_HEAD {
                        return Err(protocol("response head over 64 KiB"));
                    }
                }
                Err(e) => return Err(protocol(format!("malformed response head: {e}"))),
            }
        }
        let answered = !conn.buf.is_empty();
        read_more(conn, answered).await?;
    };
    conn.buf.advance(head_len);
    let no_body = head || out.status == 204 || out.status == 304;
    if no_body {
        out.body_len = 0;
        return Ok(!close);
    }
    if chunked {
        read_chunked(conn, want_body, out).await?;
        return Ok(!close);
    }
    match length {
        Some(len) => {
            if len > MAX_BODY {
                return Err(protocol(format!(
                    "response body of {len} bytes is over 64 MiB"
                )));
            }
            read_exact_body(conn, len, want_body, out).await?;
            Ok(!close)
        }
        None => {
            // Delimited by the end of the connection.
            let mut total = 0;
            loop {
                total += conn.buf.len();
                if want_body {
                    out.body.extend_from_slice(&conn.buf);
                }
                conn.buf.clear();
                if total > MAX_BODY {
                    return Err(protocol("response body over 64 MiB"));
                }
                if read(conn, true).await? == 0 {
                    break;
                }
            }
            out.body_len = total;
            Ok(false)
        }
    }
}

/// Reads what the server sent next into `conn.buf`; returns how many bytes (0: it closed the
/// connection). `answered`: whether any of the response has arrived before.
async fn read(conn: &mut Conn, answered: bool) -> Result<usize, Failure> {
    conn.stream
        .read_buf(&mut conn.buf)
        .await
        .map_err(|e| io(e, answered))
}

/// [`read`], where the end of the connection is an error: more of the response is due.
async fn read_more(conn: &mut Conn, answered: bool) -> Result<(), Failure> {
    if read(conn, answered).await? == 0 {
        return Err(io(
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            answered,
        ));
    }
    Ok(())
}

async fn fill(conn: &mut Conn, need: usize) -> Result<(), Failure> {
    while conn.buf.len() < need {
        read_more(conn, true).await?;
    }
    Ok(())
}

async fn read_exact_body(
    conn: &mut Conn,
    len: usize,
    want_body: bool,
    out: &mut Response,
) -> Result<(), Failure> {
    let mut left = len;
    while left > 0 {
        if conn.buf.is_empty() {
            fill(conn, 1).await?;
        }
        let take = left.min(conn.buf.len());
        if want_body {
            out.body.extend_from_slice(&conn.buf[..take]);
        }
        conn.buf.advance(take);
        left -= take;
    }
    out.body_len = len;
    Ok(())
}

async fn read_line(conn: &mut Conn) -> Result<Vec<u8>, Failure> {
    loop {
        if let Some(i) = conn.buf.windows(2).position(|w| w == b"\r\n") {
            let line = conn.buf[..i].to_vec();
            conn.buf.advance(i + 2);
            return Ok(line);
        }
        if conn.buf.len() > 4096 {
            return Err(protocol("chunk size line over 4 KiB"));
        }
        let have = conn.buf.len();
        fill(conn, have + 1).await?;
    }
}

async fn read_chunked(conn: &mut Conn, want_body: bool, out: &mut Response) -> Result<(), Failure> {
    let mut total = 0usize;
    loop {
        let line = read_line(conn).await?;
        let size_text = line.split(|b| *b == b';').next().unwrap_or(&[]);
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or_else(|| protocol("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(conn).await?.is_empty() {}
            out.body_len = total;
            return Ok(());
        }
        total += size;
        if total > MAX_BODY {
            return Err(protocol("chunked response body over 64 MiB"));
        }
        let mut part = Response::default();
        read_exact_body(conn, size, want_body, &mut part).await?;
        if want_body {
            out.body.extend_from_slice(&part.body);
        }
        fill(conn, 2).await?;
        if &conn.buf[..2] != b"\r\n" {
            return Err(protocol("chunk not followed by CRLF"));
        }
        conn.buf.advance(2);
    }
}

/// Encodes a request head (and body) into `out`.
pub(crate) fn encode<'a>(
    out: &mut Vec<u8>,
    method: &http::Method,
    path: &[u8],
    authority: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    body: Option<&[u8]>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(b) = body {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(b.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(b);
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("127.0.0.1", 8080, "127.0.0.1:8080")
        );
        let e = Endpoint::parse("http://[::1]:81/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 81));
        assert_eq!(Endpoint::parse("http://localhost").unwrap().port, 80);
        let e = Endpoint::parse("https://x").unwrap();
        assert_eq!((e.port, e.tls, e.scheme()), (443, true, "https"));
        assert_eq!(Endpoint::parse("https://x:8443").unwrap().port, 8443);
        assert!(!Endpoint::parse("http://x").unwrap().tls);
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://x/path").is_err());
        assert!(Endpoint::parse("http://x:port").is_err());
    }

    /// A fake server writes what a real one rarely does: chunked bodies with trailers,
    /// interim responses, close-delimited bodies, garbage.
    #[tokio::test]
    async fn parses_the_awkward_responses_and_refuses_garbage() {
        type Case<'a> = (&'a [u8], Result<(u16, &'a [u8]), &'a str>);
        let cases: Vec<Case<'_>> = vec![
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", Ok((200, b"hello"))),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nt: 1\r\n\r\n",
                Ok((201, b"abcde")),
            ),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", Ok((200, b"until the end"))),
            (b"SSH-2.0-OpenSSH\r\n\r\n", Err("protocol")),
            (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", Err("protocol")),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", Err("protocol")),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", Err("i/o")),
        ];
        for (reply, want) in cases {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let reply = reply.to_vec();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                s.write_all(&reply).await.unwrap();
            });
            let pool = Pool::new(addr, None, 1, Duration::from_secs(1));
            let mut req = Vec::new();
            encode(&mut req, &http::Method::GET, b"/", "x", [], None);
            let mut out = Response::default();
            let got = pool.send(&req, false, &[], true, &mut out).await;
            match want {
                Ok((status, body)) => {
                    got.unwrap();
                    assert_eq!((out.status, &out.body[..]), (status, body));
                }
                Err(kind) => {
                    let e = got.unwrap_err();
                    let is = match e {
                        HttpError::Protocol(_) => "protocol",
                        HttpError::Io(_) => "i/o",
                        _ => "other",
                    };
                    assert_eq!(is, kind, "{e}");
                }
            }
        }
    }
}
