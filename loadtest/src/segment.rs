//! Execution segments: one generator's deterministic share of a run, so that several machines
//! run one scenario together without talking to each other during the run.
//!
//! `--segment K/N` makes this process run the K-th of N interleaved slices of every
//! executor's schedule. Arrivals, workers (VUs) and iterations are numbered globally (0, 1,
//! 2, …), and segment K owns exactly the numbers `x` with `x mod N = K − 1`. So:
//!
//! - every arrival keeps its globally intended send time (latency is still measured from it,
//!   and coordinated-omission correction holds across generators); each generator sends
//!   every N-th arrival of the one global curve, never a curve of its own;
//! - the N segments together run every arrival, worker and iteration exactly once (no
//!   rounding: `share` over all segments adds up to the total);
//! - `{{seq}}` and `{{vu}}` are the global numbers, so sequential feeders hand out each row
//!   once across all generators.
//!
//! Interleaving (rather than cutting the schedule into contiguous ranges) keeps each
//! generator's load even over time: a ramp is shared at every moment, not run by the first
//! generator at its low end and the last at its peak.
//!
//! This is what a scheduler runs: a Kubernetes Indexed Job runs `--segment $((INDEX+1))/N`
//! (see `loadtest/examples/k8s-indexed-job.yaml`).

use std::fmt;
use std::str::FromStr;

/// The most segments a run can be split into (more generators than this is not a use case;
/// the bound keeps a typo from creating a slice with no work in it at all).
pub const MAX_SEGMENTS: u64 = 10_000;

/// One of N interleaved slices of a run; [`Segment::WHOLE`] is the run itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// 0-based.
    index: u64,
    count: u64,
}

impl Segment {
    /// The whole run (`1/1`).
    pub const WHOLE: Segment = Segment { index: 0, count: 1 };

    /// Segment `k` (1-based, as written on the command line) of `n`.
    ///
    /// # Errors
    ///
    /// `k` is 0 or above `n`, or `n` is 0 or above [`MAX_SEGMENTS`].
    pub fn new(k: u64, n: u64) -> Result<Segment, String> {
        if n == 0 || n > MAX_SEGMENTS {
            return Err(format!(
                "the segment count must be 1 to {MAX_SEGMENTS}, not {n}"
            ));
        }
        if k == 0 || k > n {
            return Err(format!(
                "segment {k} of {n} does not exist: write 1/{n} to {n}/{n}"
            ));
        }
        Ok(Segment {
            index: k - 1,
            count: n,
        })
    }

    /// Whether this is the whole run.
    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    /// Whether global number `x` (an arrival, a worker, an iteration) is this segment's.
    pub fn owns(self, x: u64) -> bool {
        x % self.count == self.index
    }

    /// The global number of this segment's `j`-th item (0-based), `None` past `u64`.
    pub fn nth(self, j: u64) -> Option<u64> {
        j.checked_mul(self.count)?.checked_add(self.index)
    }

    /// How many of the global numbers `0..total` are this segment's.
    pub fn share(self, total: u64) -> u64 {
        if total <= self.index {
            return 0;
        }
        (total - self.index).div_ceil(self.count)
    }

    /// How many segments the run is split into.
    pub fn count(self) -> u64 {
        self.count
    }

    /// Its number as written, 1 to N.
    pub fn number(self) -> u64 {
        self.index + 1
    }

    /// Its share of `max` workers (`max-in-flight`), at least one: a segment with no worker
    /// could send nothing.
    pub fn workers(self, max: usize) -> usize {
        (self.share(max as u64) as usize).max(1)
    }
}

impl Default for Segment {
    fn default() -> Segment {
        Segment::WHOLE
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}

impl FromStr for Segment {
    type Err = String;

    fn from_str(s: &str) -> Result<Segment, String> {
        let usage = || format!("{s:?} is not a segment: write K/N, e.g. 2/5 (the second fifth)");
        let (k, n) = s.split_once('/').ok_or_else(usage)?;
        let k = k.trim().parse::<u64>().map_err(|_| usage())?;
        let n = n.trim().parse::<u64>().map_err(|_| usage())?;
        Segment::new(k, n)
    }
}

impl serde::Serialize for Segment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(n: u64) -> Vec<Segment> {
        (1..=n).map(|k| Segment::new(k, n).unwrap()).collect()
    }

    #[test]
    fn the_segments_own_every_number_exactly_once() {
        for n in [1, 2, 3, 5, 7, 64] {
            for x in 0..1000 {
                let owners = all(n).into_iter().filter(|s| s.owns(x)).count();
                assert_eq!(owners, 1, "{x} in {n} segments");
            }
        }
    }

    #[test]
    fn shares_add_up_to_the_total_and_match_what_is_owned() {
        for n in [1, 2, 3, 5, 7, 64] {
            for total in [0, 1, 2, 3, 4, 10, 99, 1000, 1001] {
                let mut sum = 0;
                for s in all(n) {
                    let owned = (0..total).filter(|&x| s.owns(x)).count() as u64;
                    assert_eq!(s.share(total), owned, "{s} of {total}");
                    let listed: Vec<u64> = (0..owned).map(|j| s.nth(j).unwrap()).collect();
                    assert!(listed.iter().all(|&x| x < total && s.owns(x)), "{s}");
                    sum += s.share(total);
                }
                assert_eq!(sum, total, "{n} segments of {total}");
            }
        }
        let last = Segment::new(MAX_SEGMENTS, MAX_SEGMENTS).unwrap();
        assert_eq!(last.share(u64::MAX), u64::MAX / MAX_SEGMENTS);
        assert_eq!(last.nth(u64::MAX / 2), None, "past u64 is None, not a wrap");
    }

    #[test]
    fn segments_parse_and_print_as_written_and_nonsense_is_refused() {
        let s: Segment = "2/5".parse().unwrap();
        assert_eq!((s.index, s.count, s.to_string()), (1, 5, "2/5".to_owned()));
        assert_eq!(s.number(), 2);
        // 7 workers over 5: 2, 2, 1, 1, 1; 2 workers over 5: the last three still get one.
        assert_eq!(s.workers(7), 2);
        assert_eq!(Segment::new(5, 5).unwrap().workers(2), 1);
        assert!("1/1".parse::<Segment>().unwrap().is_whole());
        for (bad, want) in [
            ("0/5", "segment 0 of 5 does not exist"),
            ("6/5", "segment 6 of 5 does not exist"),
            ("1/0", "count must be 1 to 10000, not 0"),
            ("1/10001", "not 10001"),
            ("2", "is not a segment: write K/N"),
            ("a/b", "is not a segment"),
            ("-1/3", "is not a segment"),
        ] {
            let e = bad.parse::<Segment>().unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
