//! The `[cache.<name>]` section.

use std::time::Duration;

use jupiter_core::config::types::duration;
use serde::Deserialize;

use crate::Error;

/// The `[cache.<name>]` section, with every default in place; see `cache/config.example.toml`
/// for the commented template.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct CacheConfig {
    /// L1 capacity: entries, or the weigher's units. Default is 10 000.
    pub capacity: u64,
    /// Time to live of an entry, before jitter. Default is 5 minutes.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// L1 entries unused this long are dropped; `0s`: off. Default is off.
    #[serde(with = "duration")]
    pub tti: Duration,
    /// Time to live in L2 (`0s`: the same as `ttl`). Default is `0s`.
    #[serde(with = "duration")]
    pub l2_ttl: Duration,
    /// How long a "not found" is cached; `0s`: not at all. Default is 30 s.
    #[serde(with = "duration")]
    pub negative_ttl: Duration,
    /// Up to this fraction of the TTL is taken off each entry's, at random (0 to 1). Default
    /// is 0.1.
    pub ttl_jitter: f64,
    /// A hit on an entry older than this fraction of its TTL refreshes it in the background
    /// (0: off; else above 0, below 1). Default is 0.
    pub refresh_ahead: f64,
    /// Deadline of one L2 call. Default is 200 ms.
    #[serde(with = "duration")]
    pub l2_timeout: Duration,
    /// While L2 is down, how often one call tries it again. Default is 1 s.
    #[serde(with = "duration")]
    pub l2_retry: Duration,
    /// Return L2 failures instead of degrading to L1 and the loader. Default is false.
    pub strict: bool,
    /// L2 keys are `{key-prefix}{name}:{key}`. Default is `cache:`.
    pub key_prefix: String,
    /// How long a loader's error is cached (`0s`: not at all). Default is `0s`.
    #[serde(with = "duration")]
    pub cache_load_errors: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: 10_000,
            ttl: Duration::from_secs(300),
            tti: Duration::ZERO,
            l2_ttl: Duration::ZERO,
            negative_ttl: Duration::from_secs(30),
            ttl_jitter: 0.1,
            refresh_ahead: 0.0,
            l2_timeout: Duration::from_millis(200),
            l2_retry: Duration::from_secs(1),
            strict: false,
            key_prefix: "cache:".to_owned(),
            cache_load_errors: Duration::ZERO,
        }
    }
}

impl CacheConfig {
    /// Checks every value.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key and the bad value.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &'static str, message: String| Err(Error::Config { key, message });
        if self.capacity == 0 {
            return bad("capacity", "must be at least 1".into());
        }
        if self.ttl.is_zero() {
            return bad("ttl", "must be more than 0s".into());
        }
        if !(0.0..1.0).contains(&self.ttl_jitter) || self.ttl_jitter.is_nan() {
            return bad(
                "ttl-jitter",
                format!("{} is not in [0, 1)", self.ttl_jitter),
            );
        }
        if !(0.0..1.0).contains(&self.refresh_ahead) || self.refresh_ahead.is_nan() {
            return bad(
                "refresh-ahead",
                format!("{} is not 0 (off) or in (0, 1)", self.refresh_ahead),
            );
        }
        if self.l2_timeout.is_zero() {
            return bad("l2-timeout", "must be more than 0s".into());
        }
        if self.l2_retry.is_zero() {
            return bad("l2-retry", "must be more than 0s".into());
        }
        // A TTL the clock cannot hold (nanoseconds in a u64: 584 years) is refused rather than
        // wrapped.
        for (key, d) in [
            ("ttl", self.ttl),
            ("l2-ttl", self.l2_ttl),
            ("negative-ttl", self.negative_ttl),
            ("tti", self.tti),
            ("cache-load-errors", self.cache_load_errors),
        ] {
            if u64::try_from(d.as_nanos()).is_err() {
                return bad(key, format!("{d:?} is longer than the cache can count"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commented_template_is_the_default() {
        let text = include_str!("../config.example.toml");
        let config = jupiter_core::Config::builder()
            .toml("config.example.toml", text)
            .no_env()
            .build()
            .unwrap();
        let parsed: CacheConfig = config.get("cache.users").unwrap();
        assert_eq!(parsed, CacheConfig::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let check = |c: CacheConfig, key: &str| {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        };
        check(
            CacheConfig {
                capacity: 0,
                ..Default::default()
            },
            "capacity",
        );
        check(
            CacheConfig {
                ttl: Duration::ZERO,
                ..Default::default()
            },
            "ttl",
        );
        check(
            CacheConfig {
                ttl_jitter: 1.5,
                ..Default::default()
            },
            "ttl-jitter",
        );
        check(
            CacheConfig {
                ttl_jitter: f64::NAN,
                ..Default::default()
            },
            "ttl-jitter",
        );
        check(
            CacheConfig {
                refresh_ahead: -0.1,
                ..Default::default()
            },
            "refresh-ahead",
        );
        check(
            CacheConfig {
                ttl: Duration::MAX,
                ..Default::default()
            },
            "ttl",
        );
        let config = jupiter_core::Config::builder()
            .toml("app.toml", "[cache.users]\nttl = \"5m\"\nttl-jiter = 0.2\n")
            .no_env()
            .build()
            .unwrap();
        let e = config
            .get::<CacheConfig>("cache.users")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ttl-jiter") && e.contains("app.toml"), "{e}");
    }
}
