//! Reconnection delays: exponential, capped, with jitter.
//!
//! The jitter keeps the nodes of a cluster that lost a peer at the same
//! moment from knocking on it in lockstep when it comes back. It needs no
//! cryptographic quality, only a different stream per node and peer, so a
//! SplitMix64 generator seeded from both ids and the wall clock will do, and
//! a test can pin the seed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_core::NodeId;

#[derive(Debug)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    /// The ceiling of the next delay.
    ceiling: Duration,
    rng: SplitMix64,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        debug_assert!(!min.is_zero() && min <= max);
        Backoff { min, max, ceiling: min, rng: SplitMix64(seed) }
    }

    /// A seed that differs between the node's peers and between restarts.
    pub(super) fn seed(node: NodeId, peer: NodeId) -> u64 {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64);
        node.0 ^ peer.0.rotate_left(32) ^ nanos
    }

    /// Back to the shortest delay, after a connection succeeded.
    pub(super) fn reset(&mut self) {
        self.ceiling = self.min;
    }

    /// The next delay, drawn uniformly between half the ceiling and the
    /// ceiling ("equal jitter"); the ceiling then doubles, up to the maximum.
    pub(super) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = ceiling.saturating_mul(2).min(self.max);
        let half = ceiling / 2;
        let span = (ceiling - half).as_nanos() as u64;
        let jitter = if span == 0 { 0 } else { self.rng.next() % (span + 1) };
        half + Duration::from_nanos(jitter)
    }
}

/// Sebastiano Vigna's SplitMix64: tiny, fast, and good enough for jitter.
#[derive(Debug)]
pub(super) struct SplitMix64(pub(super) u64);

impl SplitMix64 {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_their_band() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for seed in 0..50 {
            let mut backoff = Backoff::new(min, max, seed);
            let mut ceiling = min;
            for _ in 0..20 {
                let delay = backoff.next_delay();
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{delay:?} outside its band under {ceiling:?}"
                );
                ceiling = (ceiling * 2).min(max);
            }
            assert!(backoff.next_delay() >= max / 2);
            backoff.reset();
            assert!(backoff.next_delay() <= min);
        }
    }

    #[test]
    fn different_seeds_give_different_delays() {
        let delays = |seed| {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), seed);
            (0..8).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_ne!(delays(1), delays(2));
        assert_eq!(delays(3), delays(3));
    }
}
