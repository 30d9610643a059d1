//! Cache keys: how a key becomes the bytes of its L2 key, and back (for invalidations the
//! server reports by L2 key).

use std::hash::Hash;

use bytes::Bytes;

/// A cache key. Implemented for strings, byte strings and integers; implement it for your own
/// key types (the encoding must be injective: two keys, two encodings).
pub trait Key: Hash + Eq + Clone + Send + Sync + 'static {
    /// Appends the key's bytes (what follows the cache's prefix in L2).
    fn encode(&self, out: &mut Vec<u8>);

    /// The key whose encoding is `bytes`, if any (an invalidation for a key this cache cannot
    /// name is ignored).
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl Key for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }
}

impl Key for Bytes {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Bytes::copy_from_slice(bytes))
    }
}

impl Key for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

macro_rules! int_key {
    ($($t:ty),*) => {$(
        impl Key for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
            }

            fn decode(bytes: &[u8]) -> Option<Self> {
                std::str::from_utf8(bytes).ok()?.parse().ok()
            }
        }
    )*};
}
int_key!(u32, u64, i32, i64, u128, i128, usize);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<K: Key + std::fmt::Debug>(k: K) {
        let mut b = Vec::new();
        k.encode(&mut b);
        assert_eq!(K::decode(&b), Some(k));
    }

    #[test]
    fn keys_round_trip() {
        round_trip("user:1".to_owned());
        round_trip(Bytes::from_static(b"\0\xff"));
        round_trip(42u64);
        round_trip(-7i64);
        assert_eq!(u64::decode(b"x"), None);
        assert_eq!(String::decode(b"\xff"), None);
    }
}
