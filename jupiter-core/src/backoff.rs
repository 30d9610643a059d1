//! Jittered exponential backoff for reconnect loops (etcd watches, leases, Redis connections).

use std::time::Duration;

/// Exponential backoff with "equal jitter": each delay is half the current step plus a random
/// part of the other half, so clients that lost the same server do not come back in lockstep.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use jupiter_core::backoff::Backoff;
///
/// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// let first = b.next_delay();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// b.reset();
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
    seed: u64,
}

impl Backoff {
    /// Starts at `initial`, doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed =
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
        Backoff {
            initial,
            max: max.max(initial),
            step: initial,
            seed: seed | 1,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: cheap, good enough for jitter.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = self.step / 2;
        let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        let delay = half + Duration::from_nanos(self.seed % jitter_ns);
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_stays_jittered() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays[9] >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn clients_that_lost_the_same_server_do_not_retry_in_lockstep() {
        // Twenty clients at the same step: their delays spread over [step/2, step].
        let step = Duration::from_millis(800);
        let delays: std::collections::BTreeSet<Duration> = (0..20)
            .map(|_| Backoff::new(step, step).next_delay())
            .collect();
        assert!(delays.len() >= 15, "delays bunch up: {delays:?}");
        assert!(delays.iter().all(|d| *d >= step / 2 && *d <= step));
        let (lo, hi) = (*delays.first().unwrap(), *delays.last().unwrap());
        assert!(hi - lo >= step / 8, "spread only {:?}", hi - lo);
        // And one client's delays at a capped step vary from one attempt to the next.
        let mut b = Backoff::new(step, step);
        let one: std::collections::BTreeSet<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(one.len() >= 15, "{one:?}");
    }
}
