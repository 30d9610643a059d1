//! Where storage clients send shadow traffic ([`ShadowPolicy`]).

use super::*;

/// Where a storage client sends shadow traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShadowTarget {
    /// Nowhere: shadow requests are refused.
    None,
    /// The same store, keys prefixed (e.g. `shadow:`); the prefix keeps Redis hash tags intact.
    KeyPrefix(Arc<[u8]>),
    /// A separate store or namespace the client routes to; keys unchanged.
    Separate,
}

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Does not change data.
    Read,
    /// Changes data.
    Write,
}

/// Where one storage operation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Live data (live traffic, or a read in watch mode).
    Live,
    /// The shadow target.
    Shadow,
}

/// A shadow request a storage client refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shadow {access} refused by {store}: {reason}")]
pub struct ShadowRefused {
    /// `read` or `write`.
    pub access: &'static str,
    /// The store, e.g. `redis.main`.
    pub store: String,
    /// Why.
    pub reason: &'static str,
}

/// The storage side of shadow traffic: consulted by redis-client, objstore and cache for every
/// operation. Cheap to clone.
///
/// # Examples
///
/// ```
/// use jupiter_core::shadow::{Access, Route, ShadowContext, ShadowPolicy};
///
/// let policy = ShadowPolicy::key_prefix("redis.main", "shadow:");
/// assert_eq!(policy.route(Access::Write), Ok(Route::Live));
/// assert_eq!(&*policy.map_key(Route::Live, b"user:1"), b"user:1");
/// ShadowContext::sync_scope(Some(ShadowContext::new()), || {
///     let route = policy.route(Access::Write).unwrap();
///     assert_eq!(&*policy.map_key(route, b"user:1"), b"shadow:user:1");
/// });
/// let strict = ShadowPolicy::none("redis.main");
/// ShadowContext::sync_scope(Some(ShadowContext::new()), || assert!(strict.route(Access::Write).is_err()));
/// ```
#[derive(Clone, Debug)]
pub struct ShadowPolicy {
    store: Arc<str>,
    target: ShadowTarget,
}

impl ShadowPolicy {
    /// No shadow target: shadow requests are refused.
    pub fn none(store: &str) -> Self {
        ShadowPolicy {
            store: Arc::from(store),
            target: ShadowTarget::None,
        }
    }

    /// Shadow keys live beside live ones under `prefix`.
    pub fn key_prefix(store: &str, prefix: impl AsRef<[u8]>) -> Self {
        ShadowPolicy {
            store: Arc::from(store),
            target: ShadowTarget::KeyPrefix(Arc::from(prefix.as_ref())),
        }
    }

    /// Shadow traffic goes to a separate store the client routes to.
    pub fn separate(store: &str) -> Self {
        ShadowPolicy {
            store: Arc::from(store),
            target: ShadowTarget::Separate,
        }
    }

    /// The target.
    pub fn target(&self) -> &ShadowTarget {
        &self.target
    }

    /// Decides an operation for the current task's tag.
    ///
    /// # Errors
    ///
    /// Shadow traffic with mode `off`, a write in mode `watch`, or no shadow target.
    pub fn route(&self, access: Access) -> Result<Route, ShadowRefused> {
        // Fast path for live traffic: one task-local read, no clone.
        let Some(mode) = CURRENT
            .try_with(|c| c.as_ref().map(|c| c.mode))
            .ok()
            .flatten()
        else {
            return Ok(Route::Live);
        };
        let refuse = |reason| {
            Err(ShadowRefused {
                access: if access == Access::Read {
                    "read"
                } else {
                    "write"
                },
                store: self.store.to_string(),
                reason,
            })
        };
        match (mode, access) {
            (ShadowMode::Off, _) => refuse("shadow traffic is off"),
            (ShadowMode::Watch, Access::Read) => Ok(Route::Live),
            (ShadowMode::Watch, Access::Write) => refuse("watch mode serves reads only"),
            (ShadowMode::On, _) if self.target == ShadowTarget::None => {
                refuse("no shadow target configured; shadow traffic must never touch live data")
            }
            (ShadowMode::On, _) => Ok(Route::Shadow),
        }
    }

    /// The key to use for `route`: prefixed for a shadow route with a key-prefix target.
    pub fn map_key<'a>(&self, route: Route, key: &'a [u8]) -> Cow<'a, [u8]> {
        match (route, &self.target) {
            (Route::Shadow, ShadowTarget::KeyPrefix(prefix)) => {
                let mut k = Vec::with_capacity(prefix.len() + key.len());
                k.extend_from_slice(prefix);
                k.extend_from_slice(key);
                Cow::Owned(k)
            }
            _ => Cow::Borrowed(key),
        }
    }
}
