//! Seeded randomness for the simulator, split into independent streams so
//! that changing one part of a run (say, removing a fault while shrinking)
//! leaves the draws of the others unchanged.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// The streams a run draws from.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Config,
    Faults,
    Network,
    Workload,
    Nodes,
    Disks,
    /// The swarm's draws added after the first (`SimConfig::drawn`).
    Swarm,
    /// Whether a run upgrades its nodes from storage format 1
    /// (`SimConfig::drawn`), drawn after the swarm.
    Upgrade,
}

#[derive(Clone, Debug)]
pub struct SimRng {
    inner: ChaCha8Rng,
}

impl SimRng {
    pub fn new(seed: u64, stream: Stream) -> SimRng {
        // Distinct streams from one seed: mix the stream's number into the key.
        let mixed = splitmix(seed ^ splitmix(stream as u64 + 1));
        SimRng { inner: ChaCha8Rng::seed_from_u64(mixed) }
    }

    pub fn u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        // Rejection sampling keeps the draw uniform.
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let value = self.inner.next_u64();
            if value < zone {
                return value % bound;
            }
        }
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high);
        low + self.below(high - low + 1)
    }

    /// True with probability `per_million / 1e6`.
    pub fn chance(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.below(1_000_000) < u64::from(per_million)
    }

    pub fn coin(&mut self) -> bool {
        self.inner.next_u64() & 1 == 1
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// SplitMix64's finalizer: a fixed, well-mixed 64-bit permutation.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_repeatable_and_distinct() {
        let mut a = SimRng::new(7, Stream::Network);
        let mut b = SimRng::new(7, Stream::Network);
        let mut c = SimRng::new(7, Stream::Workload);
        let xs: Vec<u64> = (0..4).map(|_| a.u64()).collect();
        assert_eq!(xs, (0..4).map(|_| b.u64()).collect::<Vec<_>>());
        assert_ne!(xs, (0..4).map(|_| c.u64()).collect::<Vec<_>>());
        for _ in 0..1000 {
            assert!(a.between(3, 5) >= 3 && a.between(3, 5) <= 5);
        }
    }
}
