//! Gossip's timers and limits, with memberlist's LAN defaults, and the
//! timeouts derived from them as the cluster grows.
//!
//! Logarithms are computed in fixed point with integers, so every platform
//! derives the same timeouts and a simulation replays bit for bit.

use core::time::Duration;

use thiserror::Error;

use super::message::UPDATES_PER_MESSAGE_MAX;

/// The most helpers one failed probe may ask.
pub const INDIRECT_PROBES_LIMIT: u32 = 16;
/// The largest local health multiplier.
pub const HEALTH_MAX_LIMIT: u32 = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// One protocol period: a probe of one member. Stretched by the local
    /// health multiplier.
    pub probe_interval: Duration,
    /// How long a direct probe waits for its ack before asking helpers.
    /// Stretched by the local health multiplier; below `probe_interval`.
    pub probe_timeout: Duration,
    /// Helpers asked to probe a member that did not answer (SWIM's k).
    pub indirect_probes: u32,
    /// Each update is sent `⌈retransmit_mult · ln(n + 1)⌉` times (SWIM's
    /// λ log n). memberlist scales by log10 instead, but it also gossips
    /// on a timer of its own; with probes alone to carry updates, log10
    /// left a node of an 8-node cluster unreached in about one join in
    /// five, until push-pull.
    pub retransmit_mult: u32,
    /// The shortest suspicion lasts `suspicion_mult · max(1, log10 n)`
    /// protocol periods; `suspicion_mult - 2` independent confirmations
    /// bring a suspicion down to it.
    pub suspicion_mult: u32,
    /// The longest suspicion, with no confirmation, is this many times the
    /// shortest.
    pub suspicion_max_mult: u32,
    /// How often a node exchanges its whole membership with a random member
    /// (stretched for clusters over 32 members), and tries to reach one
    /// member it holds dead, in case it is in fact alive behind a healed
    /// partition.
    pub push_pull_interval: Duration,
    /// How often a node that knows no live member asks its seeds to join.
    pub join_retry_interval: Duration,
    /// Lifeguard's ceiling on the local health multiplier: probe timeouts
    /// and intervals stretch by up to this factor while this node misses
    /// acks and nacks or has to refute suspicions of itself.
    pub health_max: u32,
    /// Most updates piggybacked on one probe message,
    /// 1..=[`UPDATES_PER_MESSAGE_MAX`].
    pub piggyback_max: u32,
    /// Called this much later than its own `poll_timeout` asked, the node
    /// takes it that it was paused (a stalled process, a stopped VM): the
    /// silence was its own, so it restarts its probe instead of blaming the
    /// member it was probing.
    pub pause_threshold: Duration,
    /// Indirect probes this node runs for others at once; more are ignored.
    pub relays_max: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_mult: 6,
            push_pull_interval: Duration::from_secs(30),
            join_retry_interval: Duration::from_secs(1),
            health_max: 8,
            piggyback_max: 16,
            pause_threshold: Duration::from_millis(250),
            relays_max: 64,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{what} is {value}; it must be within {min}..={max}")]
    OutOfRange { what: &'static str, value: u64, min: u64, max: u64 },
    #[error("probe_timeout ({timeout_ms} ms) must be shorter than probe_interval ({interval_ms} ms)")]
    ProbeTimeoutTooLong { timeout_ms: u64, interval_ms: u64 },
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let within = |what: &'static str, value: u64, min: u64, max: u64| {
            let out = ConfigError::OutOfRange { what, value, min, max };
            if (min..=max).contains(&value) { Ok(()) } else { Err(out) }
        };
        let hour_ms = 3_600_000;
        within("probe_interval_ms", millis(self.probe_interval), 1, hour_ms)?;
        within("probe_timeout_ms", millis(self.probe_timeout), 1, hour_ms)?;
        within("push_pull_interval_ms", millis(self.push_pull_interval), 1, hour_ms)?;
        within("join_retry_interval_ms", millis(self.join_retry_interval), 1, hour_ms)?;
        within("pause_threshold_ms", millis(self.pause_threshold), 1, hour_ms)?;
        within("indirect_probes", u64::from(self.indirect_probes), 0, u64::from(INDIRECT_PROBES_LIMIT))?;
        within("retransmit_mult", u64::from(self.retransmit_mult), 1, 100)?;
        within("suspicion_mult", u64::from(self.suspicion_mult), 1, 100)?;
        within("suspicion_max_mult", u64::from(self.suspicion_max_mult), 1, 100)?;
        within("health_max", u64::from(self.health_max), 1, u64::from(HEALTH_MAX_LIMIT))?;
        within("piggyback_max", u64::from(self.piggyback_max), 1, UPDATES_PER_MESSAGE_MAX as u64)?;
        within("relays_max", u64::from(self.relays_max), 0, 100_000)?;
        if self.probe_timeout >= self.probe_interval {
            return Err(ConfigError::ProbeTimeoutTooLong {
                timeout_ms: millis(self.probe_timeout),
                interval_ms: millis(self.probe_interval),
            });
        }
        Ok(())
    }

    /// How many times each update is sent among `members` live members.
    /// Each node missed by all of them has odds of about e^-limit, so the
    /// limit grows with ln n to keep the odds that any node is missed small.
    pub fn retransmit_limit(&self, members: usize) -> u32 {
        let ln = u128::from(log2_fixed(members as u64 + 1)) * u128::from(LN_2);
        let limit = (u128::from(self.retransmit_mult) * ln).div_ceil(1 << (2 * FRACTION_BITS));
        u32::try_from(limit).unwrap_or(u32::MAX)
    }

    /// The shortest and longest suspicion timeouts among `members` live
    /// members (memberlist's `suspicionTimeout` and its max multiple).
    pub fn suspicion_timeouts(&self, members: usize) -> (Duration, Duration) {
        // max(1, log10 n) in fixed point.
        let scale = (log2_fixed(members.max(1) as u64) << FRACTION_BITS) / log2_fixed(10);
        let scale = scale.max(ONE);
        let nanos = self.probe_interval.as_nanos() * u128::from(self.suspicion_mult) * u128::from(scale);
        let min = duration_from_nanos(nanos >> FRACTION_BITS);
        (min, min * self.suspicion_max_mult)
    }

    /// Independent confirmations that bring a suspicion to its shortest
    /// timeout; none when there are too few other members to give them.
    pub fn suspicion_confirmations(&self, members: usize) -> u32 {
        let k = self.suspicion_mult.saturating_sub(2);
        if (members as u64) < u64::from(k) + 2 { 0 } else { k }
    }

    /// Push-pull grows rarer above 32 members, so the whole cluster's sync
    /// traffic grows with log n rather than n (memberlist's `pushPullScale`).
    pub fn push_pull_interval_for(&self, members: usize) -> Duration {
        const SCALE_THRESHOLD: u64 = 32;
        let members = members as u64;
        if members <= SCALE_THRESHOLD {
            return self.push_pull_interval;
        }
        // ⌈log2 n − log2 32⌉ + 1, in whole steps.
        let excess = log2_fixed(members) - log2_fixed(SCALE_THRESHOLD);
        let steps = excess.div_ceil(ONE) + 1;
        self.push_pull_interval * u32::try_from(steps).unwrap_or(u32::MAX)
    }
}

/// Bits after the point in fixed-point logarithms.
const FRACTION_BITS: u32 = 16;
const ONE: u64 = 1 << FRACTION_BITS;
/// ln 2 in fixed point.
const LN_2: u64 = 45_426;

/// log2(x) for x ≥ 1, with [`FRACTION_BITS`] bits after the point, by
/// repeated squaring of the mantissa.
pub(super) fn log2_fixed(x: u64) -> u64 {
    assert!(x >= 1, "log2 of {x}");
    let whole = u64::from(63 - x.leading_zeros());
    // The mantissa x / 2^whole in [1, 2), with 32 bits after the point.
    let mut mantissa = (u128::from(x) << 32) >> whole;
    let mut fraction = 0;
    for bit in (0..FRACTION_BITS).rev() {
        mantissa = (mantissa * mantissa) >> 32;
        if mantissa >= 2 << 32 {
            mantissa >>= 1;
            fraction |= 1 << bit;
        }
    }
    (whole << FRACTION_BITS) | fraction
}

/// The suspicion timeout after `confirmations` of the `needed` ones
/// (Lifeguard): from `max` down to `min` as log(c + 1) / log(k + 1).
pub(super) fn suspicion_timeout(confirmations: u32, needed: u32, min: Duration, max: Duration) -> Duration {
    if needed == 0 {
        return min;
    }
    let confirmations = confirmations.min(needed);
    let shrink = (max - min).as_nanos() * u128::from(log2_fixed(u64::from(confirmations) + 1))
        / u128::from(log2_fixed(u64::from(needed) + 1));
    let timeout = max - duration_from_nanos(shrink);
    timeout.max(min)
}

fn duration_from_nanos(nanos: u128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(Config::default().validate(), Ok(()));
        let config = Config { probe_timeout: Duration::from_secs(1), ..Config::default() };
        assert!(matches!(config.validate(), Err(ConfigError::ProbeTimeoutTooLong { .. })));
        let config = Config { piggyback_max: 33, ..Config::default() };
        let out = ConfigError::OutOfRange { what: "piggyback_max", value: 33, min: 1, max: 32 };
        assert_eq!(config.validate(), Err(out));
    }

    #[test]
    fn fixed_point_logarithms_are_close() {
        for x in [1u64, 2, 3, 10, 1000, 123_456_789] {
            let (got, expected) = (log2_fixed(x) as f64 / ONE as f64, (x as f64).log2());
            assert!((got - expected).abs() < 1e-4, "log2({x}) = {got}");
        }
        assert_eq!(log2_fixed(u64::MAX) >> FRACTION_BITS, 63);
        assert!((LN_2 as f64 / ONE as f64 - core::f64::consts::LN_2).abs() < 1e-5);
    }

    /// memberlist's suspicion figures: 4 periods under 10 members, 4·log10 n
    /// above, six times that at most; 2 confirmations once there are 4
    /// members.
    #[test]
    fn derived_timeouts_grow_with_the_cluster() {
        let config = Config::default();
        // ⌈4 ln 9⌉ = ⌈8.79⌉ and ⌈4 ln 129⌉ = ⌈19.44⌉.
        assert_eq!(config.retransmit_limit(8), 9);
        assert_eq!(config.retransmit_limit(128), 20);
        assert_eq!(config.suspicion_timeouts(5), (Duration::from_secs(4), Duration::from_secs(24)));
        let (min, max) = config.suspicion_timeouts(100);
        assert!(min.abs_diff(Duration::from_secs(8)) < Duration::from_millis(1), "{min:?}");
        assert_eq!(max, min * 6);
        assert_eq!(config.suspicion_confirmations(3), 0);
        assert_eq!(config.suspicion_confirmations(4), 2);
        assert_eq!(config.push_pull_interval_for(32), Duration::from_secs(30));
        assert_eq!(config.push_pull_interval_for(64), Duration::from_secs(60));
        assert_eq!(config.push_pull_interval_for(100), Duration::from_secs(90));
    }

    #[test]
    fn confirmations_shrink_the_suspicion_towards_its_minimum() {
        let (min, max) = (Duration::from_secs(4), Duration::from_secs(24));
        assert_eq!(suspicion_timeout(0, 2, min, max), max);
        let one = suspicion_timeout(1, 2, min, max);
        // 24 − 20 · log 2 / log 3 ≈ 11.38 s.
        assert!(one.abs_diff(Duration::from_millis(11_381)) < Duration::from_millis(2), "{one:?}");
        assert_eq!(suspicion_timeout(2, 2, min, max), min);
        assert_eq!(suspicion_timeout(5, 2, min, max), min);
        assert_eq!(suspicion_timeout(0, 0, min, max), min);
    }
}
