//! Converting replies into Rust types.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use bytes::Bytes;

use crate::Error;
use crate::resp::Frame;

/// A Rust type a reply converts into. Errors name the reply's type and the Rust type.
///
/// Strings convert from simple, bulk and verbatim strings; numbers also from strings holding
/// numbers (Redis returns `INCRBYFLOAT` as a string); `Option<T>` is `None` for null;
/// collections convert from arrays, sets and (flattened) maps; maps from RESP3 maps and RESP2
/// flat arrays alike.
pub trait FromReply: Sized {
    /// Converts `frame`. Error replies never reach this: they are [`Error::Server`] earlier.
    ///
    /// # Errors
    ///
    /// The frame is of a type that does not convert.
    fn from_reply(frame: Frame) -> Result<Self, Error>;
}

pub(crate) fn mismatch<T>(frame: &Frame) -> Error {
    let found = match frame.as_bytes() {
        Some(b) if b.len() <= 32 => format!("{} {:?}", frame.kind(), String::from_utf8_lossy(b)),
        Some(b) => format!("{} of {} bytes", frame.kind(), b.len()),
        None => match frame {
            Frame::Integer(i) => format!("integer {i}"),
            Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => {
                format!("{} of {}", frame.kind(), v.len())
            }
            _ => frame.kind().to_owned(),
        },
    };
    Error::Type {
        found,
        into: std::any::type_name::<T>(),
    }
}

impl FromReply for Frame {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        Ok(frame)
    }
}

impl FromReply for () {
    fn from_reply(_: Frame) -> Result<Self, Error> {
        Ok(())
    }
}

impl FromReply for Bytes {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        match frame {
            Frame::Bulk(b) | Frame::Simple(b) | Frame::BigNumber(b) => Ok(b),
            Frame::Verbatim { data, .. } => Ok(data),
            Frame::Integer(i) => Ok(Bytes::from(i.to_string())),
            Frame::Double(d) => Ok(Bytes::from(d.to_string())),
            other => Err(mismatch::<Self>(&other)),
        }
    }
}

impl FromReply for Vec<u8> {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        match frame {
            Frame::Array(_) | Frame::Set(_) | Frame::Map(_) | Frame::Push(_) => {
                Err(mismatch::<Self>(&frame))
            }
            f => Ok(Bytes::from_reply(f)?.to_vec()),
        }
    }
}

impl FromReply for String {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        let b = Bytes::from_reply(frame)?;
        String::from_utf8(b.to_vec()).map_err(|_| Error::Type {
            found: format!("non-UTF-8 string of {} bytes", b.len()),
            into: "String",
        })
    }
}

fn parse_text<T: std::str::FromStr>(frame: &Frame) -> Option<T> {
    std::str::from_utf8(frame.as_bytes()?).ok()?.parse().ok()
}

macro_rules! int_reply {
    ($($t:ty),*) => {$(
        impl FromReply for $t {
            fn from_reply(frame: Frame) -> Result<Self, Error> {
                match &frame {
                    Frame::Integer(i) => <$t>::try_from(*i).map_err(|_| mismatch::<Self>(&frame)),
                    Frame::Boolean(b) => Ok(<$t>::from(*b)),
                    Frame::Bulk(_) | Frame::Simple(_) | Frame::BigNumber(_) => parse_text(&frame).ok_or_else(|| mismatch::<Self>(&frame)),
                    _ => Err(mismatch::<Self>(&frame)),
                }
            }
        }
    )*};
}
// Not `u8`: `Vec<u8>` is a byte string.
int_reply!(i8, i16, i32, i64, i128, isize, u16, u32, u64, u128, usize);

impl FromReply for f64 {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        match &frame {
            Frame::Double(d) => Ok(*d),
            Frame::Integer(i) => Ok(*i as f64),
            Frame::Bulk(b) | Frame::Simple(b) => match &b[..] {
                b"inf" | b"+inf" => Ok(f64::INFINITY),
                b"-inf" => Ok(f64::NEG_INFINITY),
                _ => parse_text(&frame).ok_or_else(|| mismatch::<Self>(&frame)),
            },
            _ => Err(mismatch::<Self>(&frame)),
        }
    }
}

impl FromReply for bool {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        match &frame {
            Frame::Boolean(b) => Ok(*b),
            Frame::Integer(0) => Ok(false),
            Frame::Integer(1) => Ok(true),
            Frame::Simple(s) if &s[..] == b"OK" => Ok(true),
            Frame::Null => Ok(false),
            Frame::Bulk(b) if &b[..] == b"1" => Ok(true),
            Frame::Bulk(b) if &b[..] == b"0" => Ok(false),
            _ => Err(mismatch::<Self>(&frame)),
        }
    }
}

impl<T: FromReply> FromReply for Option<T> {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        match frame {
            Frame::Null => Ok(None),
            f => T::from_reply(f).map(Some),
        }
    }
}

/// The elements of an aggregate (maps flattened), for collections.
pub(crate) fn elements(frame: Frame) -> Result<Vec<Frame>, Error> {
    match frame {
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => Ok(v),
        Frame::Map(pairs) => Ok(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Frame::Null => Ok(Vec::new()),
        other => Err(mismatch::<Vec<Frame>>(&other)),
    }
}

/// Key-value pairs of a RESP3 map or a RESP2 flat array.
pub(crate) fn pairs(frame: Frame) -> Result<Vec<(Frame, Frame)>, Error> {
    match frame {
        Frame::Map(pairs) => Ok(pairs),
        Frame::Array(v) if v.len() % 2 == 0 => {
            let mut it = v.into_iter();
            let mut out = Vec::with_capacity(it.len() / 2);
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Ok(out)
        }
        Frame::Null => Ok(Vec::new()),
        other => Err(mismatch::<Vec<(Frame, Frame)>>(&other)),
    }
}

impl<T: FromReply> FromReply for Vec<T> {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        elements(frame)?.into_iter().map(T::from_reply).collect()
    }
}

impl<T: FromReply + Eq + Hash> FromReply for HashSet<T> {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        elements(frame)?.into_iter().map(T::from_reply).collect()
    }
}

impl<K: FromReply + Eq + Hash, V: FromReply> FromReply for HashMap<K, V> {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        pairs(frame)?
            .into_iter()
            .map(|(k, v)| Ok((K::from_reply(k)?, V::from_reply(v)?)))
            .collect()
    }
}

impl<K: FromReply + Ord, V: FromReply> FromReply for BTreeMap<K, V> {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        pairs(frame)?
            .into_iter()
            .map(|(k, v)| Ok((K::from_reply(k)?, V::from_reply(v)?)))
            .collect()
    }
}

macro_rules! tuple_reply {
    ($n:literal: $($t:ident),*) => {
        impl<$($t: FromReply),*> FromReply for ($($t,)*) {
            fn from_reply(frame: Frame) -> Result<Self, Error> {
                let items = elements(frame)?;
                if items.len() != $n {
                    return Err(Error::Type { found: format!("array of {}", items.len()), into: std::any::type_name::<Self>() });
                }
                let mut it = items.into_iter();
                Ok(($($t::from_reply(it.next().expect("length checked"))?,)*))
            }
        }
    };
}
tuple_reply!(1: A);
tuple_reply!(2: A, B);
tuple_reply!(3: A, B, C);
tuple_reply!(4: A, B, C, D);

/// A JSON value stored as a string: `Json(T)` writes `T` as JSON and reads it back.
///
/// ```no_run
/// # async fn f(client: redis_client::Client) -> Result<(), redis_client::Error> {
/// use redis_client::Json;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct User { name: String }
/// client.set("user:1", Json(User { name: "ada".into() })).await?;
/// let Json(user): Json<User> = client.get("user:1").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> crate::ToArg for Json<T> {
    fn write_arg(&self, out: &mut bytes::BytesMut) {
        // Only reached by callers that encode arguments by hand; commands go through
        // `try_write_arg` and refuse a value that does not serialize.
        let text = serde_json::to_vec(&self.0).unwrap_or_else(|_| b"null".to_vec());
        crate::resp::put_bulk(out, &text);
    }

    fn try_write_arg(&self, out: &mut bytes::BytesMut) -> Result<(), String> {
        // Plain data always serializes; a map with non-string keys does not.
        let text = serde_json::to_vec(&self.0).map_err(|e| {
            format!(
                "{} does not serialize as JSON: {e}",
                std::any::type_name::<T>()
            )
        })?;
        crate::resp::put_bulk(out, &text);
        Ok(())
    }
}

impl<T: serde::de::DeserializeOwned> FromReply for Json<T> {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        let b = Bytes::from_reply(frame)?;
        serde_json::from_slice(&b)
            .map(Json)
            .map_err(|e| Error::Type {
                found: format!("string that is not valid JSON for it ({e})"),
                into: std::any::type_name::<T>(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::from(s.to_owned()))
    }

    #[test]
    fn conversions() {
        assert_eq!(i64::from_reply(Frame::Integer(7)).unwrap(), 7);
        assert_eq!(i64::from_reply(bulk("-3")).unwrap(), -3);
        assert_eq!(f64::from_reply(bulk("1.5")).unwrap(), 1.5);
        assert_eq!(Option::<String>::from_reply(Frame::Null).unwrap(), None);
        let m: HashMap<String, i64> =
            FromReply::from_reply(Frame::Array(vec![bulk("a"), Frame::Integer(1)])).unwrap();
        assert_eq!(m["a"], 1);
        let t: (String, i64) =
            FromReply::from_reply(Frame::Array(vec![bulk("x"), Frame::Integer(2)])).unwrap();
        assert_eq!(t, ("x".into(), 2));
    }

    #[test]
    fn mismatches_name_both_sides() {
        let e = i64::from_reply(bulk("abc")).unwrap_err().to_string();
        assert_eq!(e, "cannot convert bulk string \"abc\" reply into i64");
        let e = u16::from_reply(Frame::Integer(70000))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "cannot convert integer 70000 reply into u16");
        assert!(String::from_reply(Frame::Bulk(Bytes::from_static(&[0xff]))).is_err());
    }
}
