//! Where the engine reads the time: expiries are milliseconds since the Unix epoch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The engine's clock: the system's by default, or a manual one that moves only when told
/// (tests of expiry, without sleeping).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use objstore::engine::{Clock, Engine, EngineConfig, Put};
///
/// let clock = Clock::manual(1_000);
/// let engine = Engine::new(EngineConfig { clock: clock.clone(), ..EngineConfig::default() });
/// engine
///     .put(Put {
///         key: "k".into(),
///         value: "v".into(),
///         ttl: Some(Duration::from_secs(1)),
///         ..Put::default()
///     })
///     .unwrap();
/// clock.advance(Duration::from_millis(999));
/// assert!(engine.get(b"k").is_some());
/// clock.advance(Duration::from_millis(1));
/// assert!(engine.get(b"k").is_none(), "expired at exactly its TTL");
/// ```
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock.
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock standing at `now_ms` until [`Clock::advance`] moves it.
    pub fn manual(now_ms: u64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(now_ms))),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(at) => at.load(Ordering::Relaxed),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Moves a manual clock forward by `by` (saturating); the system clock is not ours to
    /// move: `false`.
    pub fn advance(&self, by: Duration) -> bool {
        let Some(at) = &self.manual else {
            return false;
        };
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = at.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
            Some(t.saturating_add(ms))
        });
        true
    }
}
