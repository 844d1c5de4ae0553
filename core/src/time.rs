//! Time as the core sees it: only what the driver passes in.
//!
//! The core never reads a clock. Monotonic time (`Instant`) orders timers and
//! measures timeouts; wall time (`Now::wall_ms`) is used only where a human
//! timestamp is part of the data (last-write-wins), and may be skewed.

use core::fmt;
use core::ops::{Add, Sub};
use core::time::Duration;

use serde::{Deserialize, Serialize};

/// A point on the driver's monotonic clock, in nanoseconds since an
/// arbitrary origin (the driver's start, or the simulation's zero).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);
    pub const MAX: Instant = Instant(u64::MAX);

    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;

    fn sub(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(nanos))
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0 / 1_000_000;
        let micros = (self.0 / 1_000) % 1_000;
        write!(f, "{millis}.{micros:03}ms")
    }
}

/// The driver's view of time at the moment it calls into the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time; never goes backwards between calls.
    pub mono: Instant,
    /// Wall-clock milliseconds since the Unix epoch. May be skewed or drift
    /// between nodes; never used to order events inside the core.
    pub wall_ms: u64,
}

impl Now {
    pub const fn new(mono: Instant, wall_ms: u64) -> Now {
        Now { mono, wall_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_nanos(5);
        assert_eq!(t - Duration::from_nanos(10), Instant::ZERO);
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO.saturating_since(t), Duration::ZERO);
        assert_eq!(t.saturating_since(Instant::ZERO), Duration::from_nanos(5));
    }

    #[test]
    fn debug_shows_milliseconds() {
        let t = Instant::from_nanos(1_234_567_000);
        assert_eq!(format!("{t:?}"), "1234.567ms");
    }
}
