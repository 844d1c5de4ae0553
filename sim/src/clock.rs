//! Per-node clocks: a monotonic clock that may run fast or slow, and a wall
//! clock that may be offset and drift.

use keel_core::{Instant, Now};

use crate::rng::SimRng;

/// The wall clock's origin: 2026-01-01T00:00:00Z, so timestamps look real.
const WALL_ORIGIN_MS: i128 = 1_767_225_600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Monotonic rate error, parts per million (+100 runs 0.01% fast).
    mono_rate_ppm: i64,
    wall_offset_ms: i64,
    wall_drift_ppm: i64,
}

impl Clock {
    pub const PERFECT: Clock = Clock { mono_rate_ppm: 0, wall_offset_ms: 0, wall_drift_ppm: 0 };

    pub fn skewed(rng: &mut SimRng) -> Clock {
        let signed = |rng: &mut SimRng, max: u64| rng.between(0, 2 * max) as i64 - max as i64;
        Clock {
            mono_rate_ppm: signed(rng, 20_000),
            wall_offset_ms: signed(rng, 5_000),
            wall_drift_ppm: signed(rng, 50_000),
        }
    }

    /// What the node reads at simulated time `sim_ns`.
    pub fn now(&self, sim_ns: u64) -> Now {
        let mono = i128::from(sim_ns) * (1_000_000 + i128::from(self.mono_rate_ppm)) / 1_000_000;
        let elapsed_ms = i128::from(sim_ns / 1_000_000);
        let wall = WALL_ORIGIN_MS
            + i128::from(self.wall_offset_ms)
            + elapsed_ms * (1_000_000 + i128::from(self.wall_drift_ppm)) / 1_000_000;
        Now::new(Instant::from_nanos(clamp(mono)), clamp(wall))
    }

    /// The earliest simulated time at which this clock reads `mono` or later.
    pub fn sim_time_of(&self, mono: Instant) -> u64 {
        let rate = 1_000_000 + i128::from(self.mono_rate_ppm);
        let scaled = i128::from(mono.as_nanos()) * 1_000_000;
        // Ceiling division, so the node never wakes before its deadline.
        clamp((scaled + rate - 1) / rate)
    }
}

fn clamp(value: i128) -> u64 {
    u64::try_from(value.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    #[test]
    fn waking_at_the_inverse_time_reaches_the_deadline() {
        let mut rng = SimRng::new(3, Stream::Nodes);
        for _ in 0..100 {
            let clock = Clock::skewed(&mut rng);
            for deadline in [0u64, 1, 999, 1_000_000_007, 86_400_000_000_000] {
                let wake = clock.sim_time_of(Instant::from_nanos(deadline));
                assert!(clock.now(wake).mono.as_nanos() >= deadline);
                if wake > 0 {
                    assert!(clock.now(wake - 1).mono.as_nanos() < deadline + 2);
                }
            }
        }
    }

    #[test]
    fn wall_clocks_are_offset_but_monotonic_clocks_never_go_back() {
        let clock = Clock { mono_rate_ppm: -5_000, wall_offset_ms: -3_000, wall_drift_ppm: 10_000 };
        assert!(clock.now(2_000_000).mono > clock.now(1_000_000).mono);
        assert_eq!(Clock::PERFECT.now(0).wall_ms as i128, WALL_ORIGIN_MS);
        assert_eq!(clock.now(0).wall_ms as i128, WALL_ORIGIN_MS - 3_000);
    }
}
