//! A minimal blocking RESP client, to prepare and inspect servers independently of the client
//! under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::Error;

/// A reply (RESP2 and the RESP3 types servers send by default after `HELLO 3`).
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$5\r\nhello`; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*2 ...`; `None` for the null array. RESP3 maps, sets and pushes are flattened here.
    Array(Option<Vec<Reply>>),
    /// RESP3 `_`.
    Null,
    /// RESP3 `,1.5`.
    Double(f64),
    /// RESP3 `#t`.
    Boolean(bool),
}

impl Reply {
    /// The text of a simple string, bulk string or error.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) | Reply::Error(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects with `timeout` for the connection and every later read and write.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, Error> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| Error::io(format!("connect {addr}"), e))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| Error::io("set timeouts", e))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply.
    pub fn command<S: AsRef<[u8]>>(&mut self, args: &[S]) -> Result<Reply, Error> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref();
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.reader
            .get_mut()
            .write_all(&buf)
            .map_err(|e| Error::io("send command", e))?;
        self.read_reply()
    }

    fn line(&mut self) -> Result<String, Error> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| Error::io("read reply", e))?;
        if n == 0 {
            return Err(Error::io(
                "read reply",
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn read_reply(&mut self) -> Result<Reply, Error> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1.min(line.len()));
        let int = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| Error::Protocol(format!("bad RESP integer {s:?}")))
        };
        Ok(match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" | "!" => Reply::Error(rest.to_owned()),
            ":" => Reply::Integer(int(rest)?),
            "_" => Reply::Null,
            "#" => Reply::Boolean(rest == "t"),
            "," => Reply::Double(
                rest.parse()
                    .map_err(|_| Error::Protocol(format!("bad RESP double {rest:?}")))?,
            ),
            "(" => Reply::Simple(rest.to_owned()),
            "$" | "=" => {
                let n = int(rest)?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut data = vec![0; n as usize + 2];
                self.reader
                    .read_exact(&mut data)
                    .map_err(|e| Error::io("read bulk", e))?;
                data.truncate(n as usize);
                Reply::Bulk(Some(data))
            }
            "*" | "~" | ">" | "%" => {
                let n = int(rest)?;
                if n < 0 {
                    return Ok(Reply::Array(None));
                }
                let items = if kind == "%" { n * 2 } else { n };
                let mut v = Vec::with_capacity(items as usize);
                for _ in 0..items {
                    v.push(self.read_reply()?);
                }
                Reply::Array(Some(v))
            }
            _ => return Err(Error::Protocol(format!("unexpected RESP line {line:?}"))),
        })
    }
}

/// Connects, sends one command, returns its reply (2 s timeouts).
pub fn command<S: AsRef<[u8]>>(addr: SocketAddr, args: &[S]) -> Result<Reply, Error> {
    Conn::connect(addr, Duration::from_secs(2))?.command(args)
}

/// `INFO <section>` (or `CLUSTER INFO`) parsed into `field -> value`.
pub(crate) fn info_field(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')
            .map(|v| v.trim().to_owned())
    })
}
