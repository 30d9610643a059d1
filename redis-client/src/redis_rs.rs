//! redis-rs's async API on this client's engine (feature `redis-rs`, redis 1.x).
//!
//! redis-rs's async commands are all built on one trait, [`redis::aio::ConnectionLike`]:
//! `AsyncCommands` is implemented for every type that has it, and `redis::cmd(..)`,
//! `redis::pipe()` and `redis::Script` take any `&mut impl ConnectionLike`. [`Client`] has it,
//! and so has [`Connection`], the handle to use where redis-rs code calls `con.get(..)`:
//! `Client`'s own methods of the same names (`get`, `set`, ...) would be found before the
//! trait's, with other signatures, so a redis-rs program keeps compiling only on a type
//! without them.
//!
//! What a command goes through is what it goes through from this crate's own API: routing
//! (one server or a cluster, with redirections handled and never surfacing), the command
//! timeout, shadow-traffic key mapping and refusal, and per-command metrics.
//!
//! - A command is encoded once, from redis-rs's arguments into this client's buffer (what
//!   `get_packed_command` would have made is never built), except a `SCAN`-style command with
//!   a cursor argument, whose packed form is read back since only it holds the cursor.
//! - Replies become [`redis::Value`]s as redis-rs's own parser makes them, RESP2 and RESP3:
//!   `+OK` is `Okay`, maps, sets, doubles, booleans, verbatim strings, big numbers; an error
//!   reply is `Value::ServerError`, which redis-rs turns into its `RedisError` as usual.
//! - Errors: a timeout is an `Io` error of kind `TimedOut`; a lost connection `Io` with
//!   `ConnectionReset` (redis-rs's `is_connection_dropped`); a server that cannot be reached
//!   `Io` with the underlying kind (`ConnectionRefused`); malformed replies `Parse`; a command
//!   this client refuses before sending it (a shadow refusal, a subscription, a cross-slot
//!   transaction, a blocking command inside a pipeline) `Client`, with the reason as detail.
//! - A pipeline is one request on one connection, in order; `.atomic()` wraps it in
//!   `MULTI`/`EXEC` there too. In cluster mode a pipeline is split per node and its replies put
//!   back in order, and a transaction must stay in one slot. A transaction the server
//!   discarded (a command refused while queueing) is an `EXECABORT` server error whose detail
//!   names the first refusal (redis-rs lists every refusal in its own error type, which has
//!   no public constructor).
//! - `get_db` is the configured database.
//!
//! Supported: redis `>= 1.0, < 2` (the trait's shape since 1.0).

use std::io;

use futures::FutureExt;
use redis::{ErrorKind, RedisError, RedisFuture, Value};

use crate::resp::Frame;
use crate::{Client, Cmd, Error};

/// A redis-rs connection on a [`Client`]: `use redis::AsyncCommands` and call `con.get(..)`,
/// `con.set(..)`, `redis::pipe().query_async(&mut con)` as on redis-rs's
/// `MultiplexedConnection`. Cheap to clone (the client's handle); clones share the engine.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> redis::RedisResult<()> {
/// use redis::AsyncCommands;
///
/// // Was: redis::Client::open(url)?.get_multiplexed_async_connection().await?
/// let mut con = redis_client::Client::connect_url("redis://127.0.0.1:6379")
///     .await
///     .map_err(redis_client::redis_rs::to_redis_error)?
///     .redis_rs();
/// let () = con.set("k", "v").await?;
/// let v: Option<String> = con.get("k").await?;
/// # let _ = v; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Connection {
    client: Client,
}

impl Connection {
    /// The client underneath, for this crate's own API.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client underneath.
    pub fn into_client(self) -> Client {
        self.client
    }
}

impl From<Client> for Connection {
    fn from(client: Client) -> Self {
        Connection { client }
    }
}

impl Client {
    /// This client as a redis-rs connection (see [`Connection`]).
    pub fn redis_rs(&self) -> Connection {
        Connection {
            client: self.clone(),
        }
    }
}

/// `ConnectionLike` for `Client` and for [`Connection`], both on the client `$client` names
/// (with `$this` bound to `&self`).
macro_rules! connection_like {
    ($ty:ty, $this:ident => $client:expr) => {
        impl redis::aio::ConnectionLike for $ty {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
                let $this = &*self;
                command($client, cmd).boxed()
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                pipeline: &'a redis::Pipeline,
                offset: usize,
                count: usize,
            ) -> RedisFuture<'a, Vec<Value>> {
                let $this = &*self;
                commands($client, pipeline, offset, count).boxed()
            }

            fn get_db(&self) -> i64 {
                let $this = self;
                i64::from($client.config().db)
            }
        }
    };
}

connection_like!(Client, this => this);
connection_like!(Connection, this => &this.client);

async fn command(client: &Client, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
    let ours = convert(cmd)?;
    if client.is_cluster() && ours.name() == "SCAN" {
        // Its cursor belongs to one node: redis-rs's `scan` iterator would see one primary's
        // keys and end as if it had seen them all.
        return Err(RedisError::from((
            ErrorKind::Client,
            "SCAN over a cluster",
            "through the redis-rs API it would see one node's keys; \
             redis_client::Client::scan visits every primary"
                .to_owned(),
        )));
    }
    match client.query_frame(ours).await {
        // A command sent without waiting for its reply in redis-rs (`set_no_response`): here
        // the reply is awaited, so the connection stays in step, and dropped.
        Ok(_) if cmd.is_no_response() => Ok(Value::Nil),
        Ok(frame) => Ok(to_value(frame)),
        Err(Error::Server(e)) => Ok(server_error(&e)),
        Err(e) => Err(to_redis_error(e)),
    }
}

async fn commands(
    client: &Client,
    pipeline: &redis::Pipeline,
    offset: usize,
    count: usize,
) -> redis::RedisResult<Vec<Value>> {
    let atomic = pipeline.is_transaction();
    let mut ours = if atomic {
        client.transaction()
    } else {
        client.pipeline()
    };
    for cmd in pipeline.cmd_iter() {
        ours.add(convert(cmd)?);
    }
    let n = ours.len();
    let each = |results: Vec<Result<Frame, Error>>| -> redis::RedisResult<Vec<Value>> {
        results
            .into_iter()
            .map(|r| match r {
                Ok(frame) => Ok(to_value(frame)),
                Err(Error::Server(e)) => Ok(server_error(&e)),
                Err(e) => Err(to_redis_error(e)),
            })
            .collect()
    };
    // Every reply the server sends for the request, as redis-rs counts them: for a
    // transaction `MULTI`'s OK, a QUEUED per command, then `EXEC`'s reply.
    let all = match ours.query_each().await {
        Ok(Some(results)) if atomic => {
            let mut all = Vec::with_capacity(n + 2);
            all.push(Value::Okay);
            all.extend((0..n).map(|_| Value::SimpleString("QUEUED".to_owned())));
            all.push(Value::Array(each(results)?));
            all
        }
        Ok(Some(results)) => each(results)?,
        // A WATCHed key changed: EXEC's null.
        Ok(None) => {
            let mut all = Vec::with_capacity(n + 2);
            all.push(Value::Okay);
            all.extend((0..n).map(|_| Value::SimpleString("QUEUED".to_owned())));
            all.push(Value::Nil);
            all
        }
        Err(Error::Server(e)) if atomic => {
            let text = format!(
                "EXECABORT Transaction discarded because of previous errors: {}",
                String::from_utf8_lossy(&e)
            );
            return Err(server_error_of(text.as_bytes()));
        }
        Err(e) => return Err(to_redis_error(e)),
    };
    let end = offset
        .checked_add(count)
        .filter(|&end| end <= all.len())
        .ok_or_else(|| {
            RedisError::from((
                ErrorKind::Client,
                "pipeline replies out of range",
                format!("asked for {count} replies after {offset} of {}", all.len()),
            ))
        })?;
    Ok(all.into_iter().skip(offset).take(end - offset).collect())
}

/// redis-rs's command as ours.
fn convert(cmd: &redis::Cmd) -> redis::RedisResult<Cmd> {
    let empty = || RedisError::from((ErrorKind::Client, "empty command"));
    if !cmd.in_scan_mode() {
        let simple = cmd.args_iter().filter_map(|a| match a {
            redis::Arg::Simple(a) => Some(a),
            _ => None,
        });
        if simple.clone().count() == cmd.args_iter().len() {
            return Cmd::from_raw(simple).ok_or_else(empty);
        }
    }
    // The cursor of a `SCAN`-style command is only in its packed form.
    let packed = cmd.get_packed_command();
    let args = unpack(&packed).ok_or_else(|| {
        RedisError::from((
            ErrorKind::Client,
            "command could not be read back from its encoding",
        ))
    })?;
    Cmd::from_raw(args.into_iter()).ok_or_else(empty)
}

/// The arguments of a packed command: `*<n>\r\n` then `n` times `$<len>\r\n<bytes>\r\n`.
fn unpack(b: &[u8]) -> Option<Vec<&[u8]>> {
    fn line(b: &[u8], at: usize, tag: u8) -> Option<(usize, usize)> {
        if *b.get(at)? != tag {
            return None;
        }
        let end = at + 1 + memchr::memchr(b'\r', b.get(at + 1..)?)?;
        let n = std::str::from_utf8(&b[at + 1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    }
    let (n, mut at) = line(b, 0, b'*')?;
    let mut args = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let (len, start) = line(b, at, b'$')?;
        let end = start.checked_add(len)?;
        args.push(b.get(start..end)?);
        at = end.checked_add(2)?;
    }
    Some(args)
}

/// A reply as redis-rs's parser makes it.
fn to_value(frame: Frame) -> Value {
    match frame {
        Frame::Simple(s) if &s[..] == b"OK" => Value::Okay,
        Frame::Simple(s) => Value::SimpleString(String::from_utf8_lossy(&s).into_owned()),
        Frame::Error(e) => server_error(&e),
        Frame::Integer(n) => Value::Int(n),
        Frame::Bulk(b) => Value::BulkString(b.to_vec()),
        Frame::Null => Value::Nil,
        Frame::Array(items) => Value::Array(items.into_iter().map(to_value).collect()),
        Frame::Double(d) => Value::Double(d),
        Frame::Boolean(b) => Value::Boolean(b),
        Frame::BigNumber(digits) => {
            // Its representation depends on redis-rs's `num-bigint` feature: let its parser
            // choose.
            let mut line = Vec::with_capacity(digits.len() + 3);
            line.push(b'(');
            line.extend_from_slice(&digits);
            line.extend_from_slice(b"\r\n");
            redis::parse_redis_value(&line).unwrap_or(Value::BulkString(digits.to_vec()))
        }
        Frame::Verbatim { format, data } => Value::VerbatimString {
            format: match &format {
                b"txt" => redis::VerbatimFormat::Text,
                b"mkd" => redis::VerbatimFormat::Markdown,
                other => redis::VerbatimFormat::Unknown(String::from_utf8_lossy(other).into()),
            },
            text: String::from_utf8_lossy(&data).into_owned(),
        },
        Frame::Map(pairs) => Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (to_value(k), to_value(v)))
                .collect(),
        ),
        Frame::Set(items) => Value::Set(items.into_iter().map(to_value).collect()),
        Frame::Push(items) => {
            let mut items = items.into_iter().map(to_value);
            let kind = match items.next() {
                Some(Value::BulkString(k)) => push_kind(&String::from_utf8_lossy(&k)),
                Some(Value::SimpleString(k)) => push_kind(&k),
                _ => redis::PushKind::Other(String::new()),
            };
            Value::Push {
                kind,
                data: items.collect(),
            }
        }
    }
}

fn push_kind(kind: &str) -> redis::PushKind {
    use redis::PushKind as K;
    match kind {
        "invalidate" => K::Invalidate,
        "message" => K::Message,
        "pmessage" => K::PMessage,
        "smessage" => K::SMessage,
        "unsubscribe" => K::Unsubscribe,
        "punsubscribe" => K::PUnsubscribe,
        "sunsubscribe" => K::SUnsubscribe,
        "subscribe" => K::Subscribe,
        "psubscribe" => K::PSubscribe,
        "ssubscribe" => K::SSubscribe,
        other => K::Other(other.to_owned()),
    }
}

/// An error reply as the `Value` redis-rs's parser makes of it (its `ServerError` has no
/// public constructor, so its parser builds it).
fn server_error(text: &[u8]) -> Value {
    let mut line = Vec::with_capacity(text.len() + 3);
    line.push(b'-');
    // An error reply is one line; a stray line break would end it early.
    line.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    line.extend_from_slice(b"\r\n");
    redis::parse_redis_value(&line).unwrap_or_else(|_| {
        Value::ServerError(
            redis::parse_redis_value(b"-ERR unreadable error reply\r\n")
                .ok()
                .and_then(|v| match v {
                    Value::ServerError(e) => Some(e),
                    _ => None,
                })
                .expect("a literal error reply parses"),
        )
    })
}

/// An error reply as redis-rs's error.
fn server_error_of(text: &[u8]) -> RedisError {
    match server_error(text) {
        Value::ServerError(e) => e.into(),
        _ => RedisError::from((ErrorKind::Client, "error reply")),
    }
}

/// This client's error as redis-rs's, of the kind redis-rs callers match on.
pub fn to_redis_error(e: Error) -> RedisError {
    let text = chain(&e);
    let io = |kind: io::ErrorKind| RedisError::from(io::Error::new(kind, text.clone()));
    match &e {
        Error::Server(b) => server_error_of(b),
        Error::Timeout(_) => io(io::ErrorKind::TimedOut),
        Error::ConnectionLost { source, .. } => io(source
            .as_ref()
            .map_or(io::ErrorKind::ConnectionReset, io::Error::kind)),
        Error::Io { source, .. } => io(source.kind()),
        Error::Connect { source, .. } => io(io_kind(source).unwrap_or(io::ErrorKind::NotConnected)),
        Error::Closed => io(io::ErrorKind::NotConnected),
        Error::Protocol { .. } => RedisError::from((ErrorKind::Parse, "malformed reply", text)),
        Error::Auth(_) => RedisError::from((
            ErrorKind::AuthenticationFailed,
            "authentication failed",
            text,
        )),
        Error::Cluster(_) => {
            RedisError::from((ErrorKind::ClusterConnectionNotFound, "redis cluster", text))
        }
        Error::Type { .. } => {
            RedisError::from((ErrorKind::UnexpectedReturnType, "unexpected reply", text))
        }
        Error::Config { .. } | Error::ConfigSection { .. } => RedisError::from((
            ErrorKind::InvalidClientConfig,
            "invalid configuration",
            text,
        )),
        _ => RedisError::from((ErrorKind::Client, "refused by redis-client", text)),
    }
}

/// The I/O error kind at the bottom of `e`'s chain.
fn io_kind(e: &Error) -> Option<io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut kind = None;
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            kind = Some(io.kind());
        }
        cur = err.source();
    }
    kind
}

/// `e` and its causes, one line.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cur = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_commands_read_back() {
        let mut c = redis::cmd("SCAN");
        c.cursor_arg(42).arg("MATCH").arg("k*");
        let packed = c.get_packed_command();
        let args = unpack(&packed).unwrap();
        assert_eq!(args, [&b"SCAN"[..], b"42", b"MATCH", b"k*"]);
        assert!(
            unpack(b"*2\r\n$3\r\nGET\r\n").is_none(),
            "a missing argument"
        );
        assert!(
            unpack(b"*1\r\n$99\r\nGET\r\n").is_none(),
            "a length past the end"
        );
        assert!(unpack(b"*1\r\n$18446744073709551615\r\n").is_none());
    }

    #[test]
    fn replies_become_the_values_redis_rs_makes() {
        // Each wire form through redis-rs's own parser and through ours.
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"+PONG\r\n",
            b"-WRONGTYPE Operation against a key\r\n",
            b"-NOSCRIPT No matching script\r\n",
            b":-7\r\n",
            b"$3\r\nabc\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"_\r\n",
            b"*2\r\n:1\r\n-ERR inner\r\n",
            b",3.25\r\n",
            b",inf\r\n",
            b"#t\r\n",
            b"(12345678901234567890123\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"%1\r\n+k\r\n$1\r\nv\r\n",
            b"~2\r\n:1\r\n:2\r\n",
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n",
        ];
        for wire in cases {
            let theirs = redis::parse_redis_value(wire).unwrap();
            let mut buf = bytes::BytesMut::from(*wire);
            let frame = crate::resp::Decoder::new()
                .decode(&mut buf)
                .unwrap()
                .unwrap();
            assert_eq!(to_value(frame), theirs, "{}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn errors_map_to_the_kinds_redis_rs_callers_match() {
        let timeout = to_redis_error(Error::Timeout(std::time::Duration::from_millis(5)));
        assert!(timeout.is_timeout() && timeout.is_io_error(), "{timeout:?}");
        let lost = to_redis_error(Error::ConnectionLost {
            addr: "127.0.0.1:1".into(),
            source: None,
        });
        assert!(lost.is_connection_dropped(), "{lost:?}");
        let refused = to_redis_error(Error::Connect {
            addr: "127.0.0.1:1".into(),
            source: Box::new(Error::Io {
                addr: "127.0.0.1:1".into(),
                source: io::Error::from(io::ErrorKind::ConnectionRefused),
            }),
        });
        assert!(refused.is_connection_refusal(), "{refused:?}");
        let server = to_redis_error(Error::Server(bytes::Bytes::from_static(
            b"WRONGTYPE Operation against a key",
        )));
        assert_eq!(server.kind(), ErrorKind::Extension, "{server:?}");
        assert_eq!(server.code(), Some("WRONGTYPE"));
        let noscript = to_redis_error(Error::Server(bytes::Bytes::from_static(
            b"NOSCRIPT No matching script",
        )));
        assert_eq!(
            noscript.kind(),
            ErrorKind::Server(redis::ServerErrorKind::NoScript)
        );
        let cross = to_redis_error(Error::CrossSlot {
            command: "MULTI".into(),
            first: 1,
            other: 2,
        });
        assert_eq!(cross.kind(), ErrorKind::Client);
        assert!(
            cross.detail().unwrap().contains("slots 1 and 2"),
            "{cross:?}"
        );
    }
}
