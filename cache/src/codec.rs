//! How values are stored in L2: a small header (format, found or not, absolute expiry) and the
//! value encoded by a pluggable [`Codec`].
//!
//! The default codec is postcard: maintained, a stable 1.0 wire format, serde-based (any
//! `Serialize` type, no derives of its own), compact (varints, no field names) and fast.
//! bincode is not an option (its 3.0.0 is a compile-error tombstone, 2.x unmaintained); rkyv
//! is faster to read but needs its own derives on every value type; JSON ([`JsonCodec`]) is
//! there for values other languages read from the same Redis.

use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Encodes values for L2 and decodes them back. A value that fails to decode is a miss
/// (counted as `decode_error`), never a panic.
pub trait Codec<V>: Send + Sync + 'static {
    /// Appends the encoding of `value`.
    ///
    /// # Errors
    ///
    /// The value cannot be encoded.
    fn encode(&self, value: &V, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// The value encoded in `bytes`.
    ///
    /// # Errors
    ///
    /// `bytes` is not an encoding of a `V`.
    fn decode(&self, bytes: &[u8]) -> Result<V, CodecError>;
}

/// postcard (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct PostcardCodec;

impl<V: Serialize + DeserializeOwned + 'static> Codec<V> for PostcardCodec {
    fn encode(&self, value: &V, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let bytes = postcard::to_allocvec(value).map_err(|e| CodecError(e.to_string()))?;
        out.extend_from_slice(&bytes);
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<V, CodecError> {
        postcard::from_bytes(bytes).map_err(|e| CodecError(e.to_string()))
    }
}

/// JSON, for values read by other languages.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonCodec;

impl<V: Serialize + DeserializeOwned + 'static> Codec<V> for JsonCodec {
    fn encode(&self, value: &V, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, value).map_err(|e| CodecError(e.to_string()))
    }

    fn decode(&self, bytes: &[u8]) -> Result<V, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError(e.to_string()))
    }
}

/// The header's format byte.
const FORMAT: u8 = 1;
const FOUND: u8 = 0;
const NOT_FOUND: u8 = 1;
const HEADER: usize = 10;

/// An L2 record: a value or "not found", and when it expires.
#[derive(Debug, PartialEq)]
pub(crate) struct Record<V> {
    pub(crate) value: Option<V>,
    /// Time left before it expires (0: already expired).
    pub(crate) remaining: Duration,
}

/// `[format][found?][expires at: unix ms, u64 BE][value]`.
pub(crate) fn encode_record<V: 'static>(
    codec: &dyn Codec<V>,
    value: Option<&V>,
    ttl: Duration,
    now: SystemTime,
) -> Result<Bytes, CodecError> {
    let expires = now
        .checked_add(ttl)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .ok_or_else(|| CodecError(format!("a time to live of {ttl:?} is out of range")))?;
    let mut payload = Vec::new();
    if let Some(v) = value {
        codec.encode(v, &mut payload)?;
    }
    let mut out = BytesMut::with_capacity(HEADER + payload.len());
    out.put_u8(FORMAT);
    out.put_u8(if value.is_some() { FOUND } else { NOT_FOUND });
    out.put_u64(expires);
    out.put_slice(&payload);
    Ok(out.freeze())
}

pub(crate) fn decode_record<V: 'static>(
    codec: &dyn Codec<V>,
    bytes: &[u8],
    now: SystemTime,
) -> Result<Record<V>, CodecError> {
    let [FORMAT, kind, rest @ ..] = bytes else {
        return Err(CodecError("not a cache record (format byte)".into()));
    };
    let (expires, payload) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| CodecError("a cache record shorter than its header".into()))?;
    let expires = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(u64::from_be_bytes(*expires)))
        .ok_or_else(|| CodecError("expiry out of range".into()))?;
    let remaining = expires.duration_since(now).unwrap_or(Duration::ZERO);
    let value = match *kind {
        FOUND => Some(codec.decode(payload)?),
        NOT_FOUND if payload.is_empty() => None,
        _ => return Err(CodecError(format!("unknown record kind {kind}"))),
    };
    Ok(Record { value, remaining })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct User {
        id: u64,
        name: String,
    }

    #[test]
    fn records_round_trip_and_bad_bytes_are_errors() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let u = User {
            id: 1,
            name: "ada".into(),
        };
        for codec in [&PostcardCodec as &dyn Codec<User>, &JsonCodec] {
            let b = encode_record(codec, Some(&u), Duration::from_secs(60), now).unwrap();
            let r = decode_record(codec, &b, now + Duration::from_secs(10)).unwrap();
            assert_eq!(r.value, Some(u.clone()));
            assert_eq!(r.remaining, Duration::from_secs(50));
            let b = encode_record(codec, None, Duration::from_secs(5), now).unwrap();
            let r = decode_record(codec, &b, now + Duration::from_secs(9)).unwrap();
            assert_eq!((r.value, r.remaining), (None, Duration::ZERO));
            for bad in [
                &b""[..],
                b"\x01",
                b"\x02\x00",
                b"\x01\x00\x00",
                b"\x01\x07\0\0\0\0\0\0\0\0",
            ] {
                assert!(decode_record(codec, bad, now).is_err(), "{bad:?}");
            }
            let mut truncated = encode_record(codec, Some(&u), Duration::from_secs(1), now)
                .unwrap()
                .to_vec();
            truncated.truncate(truncated.len() - 2);
            assert!(decode_record(codec, &truncated, now).is_err());
        }
        let e = encode_record(&PostcardCodec, Some(&u), Duration::MAX, now);
        assert!(e.is_err());
    }
}
