//! Streaming RESP2/RESP3 decoder.
//!
//! Hot path: no allocation per scalar reply, no copy of any value.
//!
//! Two passes per frame: a resumable scan finds where the frame ends (keeping its position and
//! the stack of open aggregates across reads, so a reply that arrives in a thousand pieces is
//! scanned once, not a thousand times), then the complete frame is split off the read buffer
//! and built from that one shared allocation, every string a slice of it.
//!
//! Network input is bounded: a frame larger than `max_frame` bytes, a line longer than
//! [`MAX_LINE`] without its terminator, or aggregates nested deeper than `max_depth` are
//! protocol errors, not memory growth.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::Frame;

/// Default largest frame accepted: Redis's own `proto-max-bulk-len` default.
pub const DEFAULT_MAX_FRAME: usize = 512 * 1024 * 1024;
/// Default deepest nesting of aggregates accepted.
pub const DEFAULT_MAX_DEPTH: usize = 128;
/// Longest header or simple line accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// Malformed or oversized protocol data. The connection it came from cannot be trusted any
/// more and must be replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    message: String,
}

impl ProtocolError {
    fn new(message: impl Into<String>) -> Self {
        ProtocolError {
            message: message.into(),
        }
    }

    pub(crate) fn unexpected() -> Self {
        ProtocolError::new("reply with no request waiting for it")
    }

    /// What was wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.message)
    }
}

impl std::error::Error for ProtocolError {}

#[derive(Clone, Copy, Debug)]
struct Level {
    remaining: u64,
    attribute: bool,
}

/// Decodes frames from a read buffer. Keeps scan state between calls: feed it the same buffer,
/// grown by each read.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use redis_client::resp::{Decoder, Frame};
///
/// let mut d = Decoder::new();
/// let mut buf = BytesMut::from(&b"*2\r\n$3\r\nfoo\r\n:4"[..]);
/// assert_eq!(d.decode(&mut buf).unwrap(), None); // incomplete
/// buf.extend_from_slice(b"2\r\n+OK\r\n");
/// let frame = d.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(frame, Frame::Array(vec![Frame::Bulk("foo".into()), Frame::Integer(42)]));
/// assert_eq!(d.decode(&mut buf).unwrap(), Some(Frame::Simple("OK".into())));
/// ```
#[derive(Debug)]
pub struct Decoder {
    max_frame: usize,
    max_depth: usize,
    pos: usize,
    stack: Vec<Level>,
    /// What the scan found, so building the frame parses nothing twice.
    tokens: Vec<Token>,
}

/// One scanned element. Offsets are from the start of the frame.
#[derive(Clone, Copy, Debug)]
enum Token {
    Simple(usize, usize),
    Error(usize, usize),
    BigNumber(usize, usize),
    Integer(i64),
    Double(f64),
    Boolean(bool),
    Null,
    Bulk(usize, usize),
    Verbatim(usize, usize),
    /// Array, set or push (tag) with this many elements.
    Aggregate(u8, usize),
    /// Map with this many pairs.
    Map(usize),
    /// Attribute with this many pairs; precedes the element it annotates.
    Attribute(usize),
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

enum Step {
    Continue,
    Complete,
}

impl Decoder {
    /// A decoder with [`DEFAULT_MAX_FRAME`] and [`DEFAULT_MAX_DEPTH`].
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_FRAME, DEFAULT_MAX_DEPTH)
    }

    /// A decoder with explicit limits.
    pub fn with_limits(max_frame: usize, max_depth: usize) -> Self {
        Decoder {
            max_frame,
            max_depth,
            pos: 0,
            stack: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// Bytes the current partial frame still needs at least (a hint for the next read).
    pub fn pending(&self) -> usize {
        self.pos
    }

    /// What the partial frame holds: (tokens parsed, aggregates open). For tests of the memory
    /// bounds: every token took at least 3 bytes of the frame, and nesting stops at the depth
    /// limit.
    #[doc(hidden)]
    pub fn held(&self) -> (usize, usize) {
        (self.tokens.len(), self.stack.len())
    }

    /// Decodes the next complete frame from the front of `buf`, removing it. `Ok(None)` means
    /// more bytes are needed.
    ///
    /// # Errors
    ///
    /// Malformed or oversized data; the decoder and the buffer are then unusable.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        loop {
            let p = self.pos;
            if p >= buf.len() {
                return Ok(None);
            }
            let tag = buf[p];
            // A byte that starts no frame is refused at once, not after waiting for a line end
            // that garbage may never bring.
            if !b"+-:(,#_$!=*%~>|".contains(&tag) {
                return Err(ProtocolError::new(format!(
                    "invalid type byte {:?}",
                    char::from(tag)
                )));
            }
            let Some(eol) = find_crlf(&buf[p + 1..]) else {
                if buf.len() - p > MAX_LINE {
                    return Err(ProtocolError::new(format!(
                        "line longer than {MAX_LINE} bytes"
                    )));
                }
                return Ok(None);
            };
            let (ls, le) = (p + 1, p + 1 + eol);
            let line = &buf[ls..le];
            let next = le + 2;
            let token = match tag {
                b'+' => Token::Simple(ls, le),
                b'-' => Token::Error(ls, le),
                b':' => Token::Integer(parse_int(line)?),
                b'(' => {
                    let digits = line.strip_prefix(b"-").unwrap_or(line);
                    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                        return Err(bad("big number", line));
                    }
                    Token::BigNumber(ls, le)
                }
                b',' => Token::Double(parse_double(line)?),
                b'#' => match line {
                    b"t" => Token::Boolean(true),
                    b"f" => Token::Boolean(false),
                    _ => return Err(bad("boolean", line)),
                },
                b'_' if line.is_empty() => Token::Null,
                b'_' => return Err(bad("null", line)),
                b'$' | b'!' | b'=' => {
                    let n = parse_int(line)?;
                    if n == -1 && tag == b'$' {
                        Token::Null
                    } else {
                        let len = usize::try_from(n).map_err(|_| bad("length", line))?;
                        if len > self.max_frame {
                            return Err(ProtocolError::new(format!(
                                "bulk of {len} bytes exceeds the limit of {} bytes",
                                self.max_frame
                            )));
                        }
                        let end = next + len + 2;
                        if buf.len() < end {
                            buf.reserve(end - buf.len());
                            return Ok(None);
                        }
                        if &buf[end - 2..end] != b"\r\n" {
                            return Err(ProtocolError::new("bulk string not terminated by CRLF"));
                        }
                        match tag {
                            b'$' => Token::Bulk(next, end - 2),
                            b'!' => Token::Error(next, end - 2),
                            _ if len < 4 || buf[next + 3] != b':' => {
                                return Err(ProtocolError::new(
                                    "verbatim string without format prefix",
                                ));
                            }
                            _ => Token::Verbatim(next, end - 2),
                        }
                    }
                }
                b'*' | b'%' | b'~' | b'>' | b'|' => {
                    let n = parse_int(line)?;
                    if n == -1 && tag == b'*' {
                        Token::Null
                    } else {
                        let n = usize::try_from(n).map_err(|_| bad("aggregate length", line))?;
                        let elements = if tag == b'%' || tag == b'|' {
                            n.saturating_mul(2)
                        } else {
                            n
                        };
                        // Each element takes at least 3 bytes: reject counts no frame within the
                        // limit could hold, before they grow anything.
                        if elements.saturating_mul(3) > self.max_frame {
                            return Err(ProtocolError::new(format!(
                                "aggregate of {n} elements exceeds the frame limit"
                            )));
                        }
                        if elements > 0 && self.stack.len() >= self.max_depth {
                            return Err(ProtocolError::new(format!(
                                "aggregates nested deeper than {}",
                                self.max_depth
                            )));
                        }
                        match tag {
                            b'%' => Token::Map(n),
                            b'|' => Token::Attribute(n),
                            _ => Token::Aggregate(tag, n),
                        }
                    }
                }
                other => {
                    return Err(ProtocolError::new(format!(
                        "invalid type byte {:?}",
                        char::from(other)
                    )));
                }
            };
            let end = match token {
                Token::Bulk(_, e) | Token::Verbatim(_, e) => e + 2,
                Token::Error(_, e) if tag == b'!' => e + 2,
                _ => next,
            };
            // Refused before it is taken in: the decoder never holds a frame past the limit,
            // not even on the way to the error.
            if end > self.max_frame {
                return Err(ProtocolError::new(format!(
                    "frame exceeds the limit of {} bytes",
                    self.max_frame
                )));
            }
            self.pos = end;
            self.tokens.push(token);
            let step = match token {
                Token::Aggregate(_, n) | Token::Map(n) | Token::Attribute(n) if n > 0 => {
                    let elements = if matches!(token, Token::Aggregate(..)) {
                        n
                    } else {
                        n * 2
                    };
                    self.stack.push(Level {
                        remaining: elements as u64,
                        attribute: matches!(token, Token::Attribute(_)),
                    });
                    Step::Continue
                }
                Token::Attribute(_) => Step::Continue,
                _ => self.done(),
            };
            if let Step::Complete = step {
                let total = std::mem::take(&mut self.pos);
                let frame = self.take_frame(buf, total);
                self.tokens.clear();
                return frame.map(Some);
            }
        }
    }

    /// Builds the complete frame of `total` bytes from the tokens and removes it from `buf`.
    fn take_frame(&self, buf: &mut BytesMut, total: usize) -> Result<Frame, ProtocolError> {
        // Frames without a string payload are built in place: no reference to the buffer kept.
        let needs_bytes = self.tokens.iter().any(|t| {
            matches!(
                t,
                Token::Simple(..)
                    | Token::Error(..)
                    | Token::BigNumber(..)
                    | Token::Bulk(..)
                    | Token::Verbatim(..)
            )
        });
        if !needs_bytes || &buf[..total] == b"+OK\r\n" {
            let data = if needs_bytes {
                Bytes::from_static(b"+OK\r\n")
            } else {
                Bytes::new()
            };
            buf.advance(total);
            let mut i = 0;
            return Ok(build(&data, &self.tokens, &mut i));
        }
        let data = buf.split_to(total).freeze();
        let mut i = 0;
        Ok(build(&data, &self.tokens, &mut i))
    }

    /// One element finished: count it against the open aggregates.
    fn done(&mut self) -> Step {
        while let Some(level) = self.stack.last_mut() {
            level.remaining -= 1;
            if level.remaining > 0 {
                return Step::Continue;
            }
            let attribute = level.attribute;
            self.stack.pop();
            if attribute {
                // An attribute annotates the element after it.
                return Step::Continue;
            }
        }
        Step::Complete
    }
}

/// Builds the element at token `i` from the frame's bytes.
fn build(data: &Bytes, tokens: &[Token], i: &mut usize) -> Frame {
    let t = tokens[*i];
    *i += 1;
    match t {
        Token::Simple(s, e) => Frame::Simple(data.slice(s..e)),
        Token::Error(s, e) => Frame::Error(data.slice(s..e)),
        Token::BigNumber(s, e) => Frame::BigNumber(data.slice(s..e)),
        Token::Integer(n) => Frame::Integer(n),
        Token::Double(d) => Frame::Double(d),
        Token::Boolean(b) => Frame::Boolean(b),
        Token::Null => Frame::Null,
        Token::Bulk(s, e) => Frame::Bulk(data.slice(s..e)),
        Token::Verbatim(s, e) => Frame::Verbatim {
            format: [data[s], data[s + 1], data[s + 2]],
            data: data.slice(s + 4..e),
        },
        Token::Aggregate(tag, n) => {
            let items = (0..n).map(|_| build(data, tokens, i)).collect();
            match tag {
                b'*' => Frame::Array(items),
                b'~' => Frame::Set(items),
                _ => Frame::Push(items),
            }
        }
        Token::Map(n) => Frame::Map(
            (0..n)
                .map(|_| (build(data, tokens, i), build(data, tokens, i)))
                .collect(),
        ),
        Token::Attribute(n) => {
            // Attributes are metadata about the next element; skip them.
            for _ in 0..n * 2 {
                build(data, tokens, i);
            }
            build(data, tokens, i)
        }
    }
}

/// Position of the first CRLF. Lines are mostly a few bytes (`$64`, `:1`): a plain loop beats
/// memchr's set-up for them; long lines (errors, simple strings) fall back to memchr.
#[inline]
fn find_crlf(buf: &[u8]) -> Option<usize> {
    let short = buf.len().min(16);
    for i in 0..short {
        if buf[i] == b'\r' {
            return match buf.get(i + 1) {
                Some(b'\n') => Some(i),
                Some(_) => find_crlf(&buf[i + 1..]).map(|j| i + 1 + j),
                None => None,
            };
        }
    }
    let mut from = short;
    while let Some(i) = memchr::memchr(b'\r', &buf[from..]) {
        let at = from + i;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at),
            Some(_) => from = at + 1,
            None => return None,
        }
    }
    None
}

fn bad(what: &str, line: &[u8]) -> ProtocolError {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(32)]).into_owned();
    ProtocolError::new(format!("invalid {what} {shown:?}"))
}

#[inline]
fn parse_int(line: &[u8]) -> Result<i64, ProtocolError> {
    let (neg, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(bad("integer", line));
    }
    let mut n: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return Err(bad("integer", line));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(c - b'0')))
            .ok_or_else(|| bad("integer", line))?;
    }
    Ok(if neg { -n } else { n })
}

fn parse_double(line: &[u8]) -> Result<f64, ProtocolError> {
    match line {
        b"inf" | b"+inf" => Ok(f64::INFINITY),
        b"-inf" => Ok(f64::NEG_INFINITY),
        b"nan" | b"-nan" => Ok(f64::NAN),
        _ => std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("double", line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Frame>, ProtocolError> {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = d.decode(&mut buf)? {
            out.push(f);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    /// Garbage is refused by its first byte, not after waiting up to `MAX_LINE` bytes for a
    /// line end that may never come (a server kept such a connection open, silent).
    #[test]
    fn regression_an_invalid_type_byte_is_refused_at_once() {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(&[0xffu8; 100][..]);
        let e = d.decode(&mut buf).unwrap_err();
        assert!(e.to_string().contains("invalid type byte"), "{e}");
        let mut buf = BytesMut::from(&b"GET k"[..]);
        assert!(
            Decoder::new().decode(&mut buf).is_err(),
            "inline commands are not RESP"
        );
    }

    /// Found by `codec_props::arbitrary_bytes_never_panic`: a line one byte past the frame
    /// limit was taken in (the decoder said it held 257 of 256 bytes) before it was refused.
    #[test]
    fn regression_a_frame_past_the_limit_is_refused_before_it_is_held() {
        for frame in [
            [&b"+"[..], &[b'a'; 255], b"\r\n"].concat(),
            [&b"$255\r\n"[..], &[b'a'; 255], b"\r\n"].concat(),
        ] {
            let mut d = Decoder::with_limits(256, 4);
            let mut buf = BytesMut::from(&frame[..]);
            let e = d.decode(&mut buf).unwrap_err();
            assert!(e.to_string().contains("exceeds the limit of 256"), "{e}");
            assert!(d.pending() <= 256, "holds {}", d.pending());
        }
        // At the limit exactly, the frame decodes.
        let frame = [&b"+"[..], &[b'a'; 253], b"\r\n"].concat();
        let mut buf = BytesMut::from(&frame[..]);
        assert!(
            Decoder::with_limits(256, 4)
                .decode(&mut buf)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn every_type() {
        let input = b"+OK\r\n-ERR bad\r\n:-12\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n*0\r\n_\r\n,1.5\r\n,inf\r\n#t\r\n(123456789012345678901234\r\n=7\r\ntxt:hey\r\n!4\r\nOOPS\r\n%1\r\n+k\r\n:1\r\n~2\r\n:1\r\n:2\r\n>2\r\n+message\r\n$1\r\nx\r\n";
        let frames = decode_all(input).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::Simple("OK".into()),
                Frame::Error("ERR bad".into()),
                Frame::Integer(-12),
                Frame::Bulk("abc".into()),
                Frame::Null,
                Frame::Null,
                Frame::Array(vec![]),
                Frame::Null,
                Frame::Double(1.5),
                Frame::Double(f64::INFINITY),
                Frame::Boolean(true),
                Frame::BigNumber("123456789012345678901234".into()),
                Frame::Verbatim {
                    format: *b"txt",
                    data: "hey".into()
                },
                Frame::Error("OOPS".into()),
                Frame::Map(vec![(Frame::Simple("k".into()), Frame::Integer(1))]),
                Frame::Set(vec![Frame::Integer(1), Frame::Integer(2)]),
                Frame::Push(vec![
                    Frame::Simple("message".into()),
                    Frame::Bulk("x".into())
                ]),
            ]
        );
    }

    #[test]
    fn attributes_are_skipped() {
        let frames = decode_all(
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n|1\r\n+a\r\n+b\r\n:7\r\n",
        )
        .unwrap();
        assert_eq!(frames, vec![Frame::Array(vec![Frame::Integer(7)])]);
    }

    #[test]
    fn byte_by_byte_equals_all_at_once() {
        let input: &[u8] =
            b"*3\r\n$5\r\nhello\r\n%1\r\n+a\r\n*2\r\n:1\r\n_\r\n=8\r\ntxt:abcd\r\n:9\r\n";
        let expected = decode_all(input).unwrap();
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in input {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn values_are_slices_of_the_read_buffer() {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(&b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n"[..]);
        let base = buf.as_ptr() as usize;
        let Frame::Array(items) = d.decode(&mut buf).unwrap().unwrap() else {
            panic!()
        };
        let Frame::Bulk(hello) = &items[0] else {
            panic!()
        };
        assert_eq!(hello.as_ptr() as usize, base + 8, "no copy");
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$3\r\nabcd\r\n",
            b"*x\r\n",
            b"#x\r\n",
            b"$-2\r\n",
            b"=3\r\nabc\r\n",
            b"_x\r\n",
            b",abc\r\n",
            b":99999999999999999999\r\n",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn limits_bound_memory() {
        let mut d = Decoder::with_limits(1024, 4);
        assert!(
            d.decode(&mut BytesMut::from(&b"$2000\r\n"[..])).is_err(),
            "bulk over the limit"
        );
        let mut d = Decoder::with_limits(1024, 4);
        assert!(
            d.decode(&mut BytesMut::from(&b"*1000000\r\n"[..])).is_err(),
            "count no frame could hold"
        );
        let mut d = Decoder::with_limits(1024, 4);
        assert!(
            d.decode(&mut BytesMut::from(
                &b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"[..]
            ))
            .is_err(),
            "too deep"
        );
        let mut d = Decoder::new();
        let long = vec![b'a'; MAX_LINE + 10];
        let mut buf = BytesMut::from(&b"+"[..]);
        buf.extend_from_slice(&long);
        assert!(d.decode(&mut buf).is_err(), "unterminated long line");
    }
}
