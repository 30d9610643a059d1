//! RESP2/RESP3 frames.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// One RESP2 or RESP3 value. Strings are `Bytes` slices of the read buffer: decoding copies no
/// value.
#[derive(Clone, PartialEq)]
pub enum Frame {
    /// `+OK`
    Simple(Bytes),
    /// `-ERR ...` (and RESP3 blob errors `!`).
    Error(Bytes),
    /// `:42`
    Integer(i64),
    /// `$5\r\nhello`
    Bulk(Bytes),
    /// `$-1`, `*-1` (RESP2) and `_` (RESP3).
    Null,
    /// `*n`
    Array(Vec<Frame>),
    /// RESP3 `,3.14`
    Double(f64),
    /// RESP3 `#t`
    Boolean(bool),
    /// RESP3 `(3492890328409238509324850943850943825024385`
    BigNumber(Bytes),
    /// RESP3 `=15\r\ntxt:Some string`
    Verbatim {
        /// The three-letter format, e.g. `txt`, `mkd`.
        format: [u8; 3],
        /// The text.
        data: Bytes,
    },
    /// RESP3 `%n`
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~n`
    Set(Vec<Frame>),
    /// RESP3 `>n`: out-of-band data (pub/sub messages, client-tracking invalidations).
    Push(Vec<Frame>),
}

impl Frame {
    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    /// The text of a simple string, bulk string, verbatim string or error.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::Error(b) | Frame::BigNumber(b) => Some(b),
            Frame::Verbatim { data, .. } => Some(data),
            _ => None,
        }
    }

    /// A short name of the frame's type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Simple(_) => "simple string",
            Frame::Error(_) => "error",
            Frame::Integer(_) => "integer",
            Frame::Bulk(_) => "bulk string",
            Frame::Null => "null",
            Frame::Array(_) => "array",
            Frame::Double(_) => "double",
            Frame::Boolean(_) => "boolean",
            Frame::BigNumber(_) => "big number",
            Frame::Verbatim { .. } => "verbatim string",
            Frame::Map(_) => "map",
            Frame::Set(_) => "set",
            Frame::Push(_) => "push",
        }
    }

    /// Appends the frame's encoding to `out`, in RESP3 where the type exists only there.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Simple(s) => line(out, b'+', s),
            Frame::Error(s) => line(out, b'-', s),
            Frame::Integer(i) => {
                out.put_u8(b':');
                put_int(out, *i);
                out.put_slice(b"\r\n");
            }
            Frame::Bulk(b) => blob(out, b'$', b),
            Frame::Null => out.put_slice(b"_\r\n"),
            Frame::Array(items) => aggregate(out, b'*', items),
            Frame::Double(d) => {
                out.put_u8(b',');
                if d.is_infinite() {
                    out.put_slice(if *d > 0.0 { b"inf" } else { b"-inf" });
                } else if d.is_nan() {
                    out.put_slice(b"nan");
                } else {
                    out.put_slice(ryu::Buffer::new().format(*d).as_bytes());
                }
                out.put_slice(b"\r\n");
            }
            Frame::Boolean(b) => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::BigNumber(n) => line(out, b'(', n),
            Frame::Verbatim { format, data } => {
                out.put_u8(b'=');
                put_int(out, (data.len() + 4) as i64);
                out.put_slice(b"\r\n");
                out.put_slice(format);
                out.put_u8(b':');
                out.put_slice(data);
                out.put_slice(b"\r\n");
            }
            Frame::Map(pairs) => {
                header(out, b'%', pairs.len());
                for (k, v) in pairs {
                    k.encode(out);
                    v.encode(out);
                }
            }
            Frame::Set(items) => aggregate(out, b'~', items),
            Frame::Push(items) => aggregate(out, b'>', items),
        }
    }

    /// Appends the frame's RESP2 encoding: RESP3-only types are written as their RESP2
    /// equivalents (maps as flat arrays, doubles as bulk strings, null as `$-1`), as Redis does
    /// for RESP2 clients.
    pub fn encode_resp2(&self, out: &mut BytesMut) {
        match self {
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::Double(d) => blob(out, b'$', ryu::Buffer::new().format(*d).as_bytes()),
            Frame::Boolean(b) => out.put_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
            Frame::BigNumber(n) => blob(out, b'$', n),
            Frame::Verbatim { data, .. } => blob(out, b'$', data),
            Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
                header(out, b'*', items.len());
                for i in items {
                    i.encode_resp2(out);
                }
            }
            Frame::Map(pairs) => {
                header(out, b'*', pairs.len() * 2);
                for (k, v) in pairs {
                    k.encode_resp2(out);
                    v.encode_resp2(out);
                }
            }
            other => other.encode(out),
        }
    }
}

fn line(out: &mut BytesMut, tag: u8, s: &[u8]) {
    out.reserve(s.len() + 3);
    out.put_u8(tag);
    out.put_slice(s);
    out.put_slice(b"\r\n");
}

fn header(out: &mut BytesMut, tag: u8, n: usize) {
    out.put_u8(tag);
    put_int(out, n as i64);
    out.put_slice(b"\r\n");
}

fn blob(out: &mut BytesMut, tag: u8, b: &[u8]) {
    out.reserve(b.len() + 16);
    header(out, tag, b.len());
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

fn aggregate(out: &mut BytesMut, tag: u8, items: &[Frame]) {
    header(out, tag, items.len());
    for i in items {
        i.encode(out);
    }
}

#[inline]
pub(crate) fn put_int(out: &mut BytesMut, n: i64) {
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        match self {
            Frame::Simple(s) => write!(f, "Simple({:?})", text(s)),
            Frame::Error(s) => write!(f, "Error({:?})", text(s)),
            Frame::Integer(i) => write!(f, "Integer({i})"),
            Frame::Bulk(b) if b.len() > 64 => write!(f, "Bulk({} bytes)", b.len()),
            Frame::Bulk(b) => write!(f, "Bulk({:?})", text(b)),
            Frame::Null => f.write_str("Null"),
            Frame::Array(v) => f.debug_tuple("Array").field(v).finish(),
            Frame::Double(d) => write!(f, "Double({d})"),
            Frame::Boolean(b) => write!(f, "Boolean({b})"),
            Frame::BigNumber(n) => write!(f, "BigNumber({})", text(n)),
            Frame::Verbatim { format, data } => write!(
                f,
                "Verbatim({}:{:?})",
                String::from_utf8_lossy(format),
                text(data)
            ),
            Frame::Map(m) => f.debug_tuple("Map").field(m).finish(),
            Frame::Set(v) => f.debug_tuple("Set").field(v).finish(),
            Frame::Push(v) => f.debug_tuple("Push").field(v).finish(),
        }
    }
}
