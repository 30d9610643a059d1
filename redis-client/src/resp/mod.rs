//! The RESP2/RESP3 codec: frames, a streaming zero-copy decoder, and command encoding.
//!
//! Pure parse and encode, no I/O; objstore's RESP port uses it on the server side.

mod decode;
mod frame;

use bytes::{BufMut, BytesMut};

pub use self::decode::{DEFAULT_MAX_DEPTH, DEFAULT_MAX_FRAME, Decoder, MAX_LINE, ProtocolError};
pub use self::frame::Frame;

/// Appends a command — an array of bulk strings — to `out`.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
///
/// let mut out = BytesMut::new();
/// redis_client::resp::encode_command(&mut out, &[&b"SET"[..], b"k", b"v"]);
/// assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
/// ```
pub fn encode_command<A: AsRef<[u8]>>(out: &mut BytesMut, args: &[A]) {
    let len: usize = args.iter().map(|a| a.as_ref().len() + 16).sum();
    out.reserve(len + 16);
    out.put_u8(b'*');
    frame::put_int(out, args.len() as i64);
    out.put_slice(b"\r\n");
    for a in args {
        put_bulk(out, a.as_ref());
    }
}

/// Appends one bulk string.
#[inline]
pub fn put_bulk(out: &mut BytesMut, a: &[u8]) {
    out.put_u8(b'$');
    frame::put_int(out, a.len() as i64);
    out.put_slice(b"\r\n");
    out.put_slice(a);
    out.put_slice(b"\r\n");
}
