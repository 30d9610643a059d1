//! The second level: one trait for backends, with Redis (through redis-client, standalone or
//! cluster) and objstore implementations.

mod objstore;
mod redis;

pub use self::objstore::ObjstoreL2;
pub use self::redis::RedisL2;

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// A backend's error, boxed: the cache reports it (strict mode) or counts it (degraded).
pub type L2Error = Box<dyn std::error::Error + Send + Sync>;

/// What a backend's invalidation source reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidated {
    /// These L2 keys changed: `(shadow, key)`, the key as the cache wrote it (a backend that
    /// maps shadow keys, by prefix or namespace, undoes that and says `shadow = true`).
    Keys(Vec<(bool, Bytes)>),
    /// Anything may have changed (a flush, a lost connection, a gap in a feed): drop all.
    All,
}

/// A second-level store. Keys are the cache's full L2 keys (`{prefix}{name}:{key}`); values
/// are opaque records. Under a jupiter-core shadow context a backend must keep to the shadow
/// key space (redis-client and objstore's client do).
///
/// Every method's future must resolve: within `l2-timeout` if [`bound_calls`](L2::bound_calls)
/// said so, else the cache bounds each call by it.
pub trait L2: Send + Sync + 'static {
    /// Makes every later call answer within `timeout` by itself, if this backend can (a
    /// client's own per-request deadline costs less than a timer around each call: a third
    /// of the cache's own work on an L2 hit, measured in instructions). `true` if it did;
    /// the default, `false`, has the cache put a timer around each call.
    fn bound_calls(&mut self, _timeout: Duration) -> bool {
        false
    }

    /// The record at `key`.
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Bytes>, L2Error>>;

    /// The records at `keys`, in order.
    fn get_many<'a>(
        &'a self,
        keys: &'a [Bytes],
    ) -> BoxFuture<'a, Result<Vec<Option<Bytes>>, L2Error>>;

    /// Stores `value` at `key` for `ttl`.
    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), L2Error>>;

    /// Removes `keys`.
    fn delete<'a>(&'a self, keys: &'a [Bytes]) -> BoxFuture<'a, Result<(), L2Error>>;

    /// Where changes made by other instances are heard: keys under `prefix` that changed.
    /// `None`: this backend offers none (then instances see each other's writes when their L1
    /// entries expire).
    fn invalidations(&self, prefix: &[u8]) -> Option<BoxStream<'static, Invalidated>>;

    /// Tells other instances that `keys` (under `prefix`) changed, for sources that do not
    /// hear writes by themselves (pub/sub). Default: nothing to do.
    fn announce<'a>(
        &'a self,
        _prefix: &'a [u8],
        _keys: &'a [Bytes],
    ) -> BoxFuture<'a, Result<(), L2Error>> {
        Box::pin(async { Ok(()) })
    }
}
