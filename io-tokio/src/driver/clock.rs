//! The real clocks, read only here and handed to the node as `Now`.

use std::time::{SystemTime, UNIX_EPOCH};

use keel_core::{Instant, Now};

/// Monotonic time counted from the driver's start, plus the wall clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock { origin: std::time::Instant::now() }
    }

    pub fn now(&self) -> Now {
        let mono = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let wall_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64);
        Now::new(Instant::from_nanos(mono), wall_ms)
    }

    /// The tokio instant at which the node's clock reads `deadline`.
    pub fn instant_of(&self, deadline: Instant) -> tokio::time::Instant {
        let at = self.origin + std::time::Duration::from_nanos(deadline.as_nanos());
        tokio::time::Instant::from_std(at)
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.origin.elapsed()
    }
}

/// A seed for the node's generator. The node must be deterministic given
/// its seed; in production the seed itself comes from the operating system.
pub fn random_seed() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes));
    if from_os.is_ok() {
        return u64::from_le_bytes(bytes);
    }
    // No /dev/urandom: the hasher's per-process random keys will do.
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos()));
    hasher.finish()
}
