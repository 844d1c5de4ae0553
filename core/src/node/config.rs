//! A node's configuration, with the defaults a single machine needs.

use core::time::Duration;

use thiserror::Error;

use super::anti_entropy::AntiEntropyConfig;
use super::store::KEY_PREFIX_BYTES;
use crate::lsm::EngineConfig;
use crate::message::KEY_BYTES_MAX;
use crate::ring::{Member, REPLICAS_MAX, RingConfig};
use crate::version::OBJECT_SIBLINGS_MAX;

/// Room an engine value keeps beyond one client value for the rest of its
/// record: format, dot, version vector (an entry per actor that wrote the
/// key, a few dozen bytes each) and epoch. 64 KiB holds a thousand actors.
pub const RECORD_OVERHEAD_BYTES: u32 = 64 << 10;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Replica count N and vnodes per weight.
    pub ring: RingConfig,
    /// The cluster's members. Static until gossip membership lands.
    pub members: Vec<Member>,
    /// How long a coordinator waits for replicas before answering with a
    /// timeout.
    pub request_timeout: Duration,
    /// How often a node tells each peer it is alive.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is believed down. Requests that cannot
    /// reach enough replicas believed up fail at once with `Unavailable`.
    pub failure_timeout: Duration,
    /// Longest client key, 1..=[`Config::key_bytes_limit`].
    pub key_bytes_max: u32,
    /// Longest client value, 1..=[`Config::value_bytes_limit`].
    pub value_bytes_max: u32,
    /// A write that would leave more siblings than this is refused;
    /// 1..=[`SIBLINGS_MAX_LIMIT`].
    pub siblings_max: u32,
    /// Requests this node coordinates at once; beyond it, `Overloaded`.
    pub requests_max: u32,
    /// After a read, send the merged version to replicas that lacked it.
    pub read_repair: bool,
    /// Open even when recovery finds that synced records were lost to
    /// damage and this node is the only replica of its keys, so nothing
    /// can restore them. Without it such a node refuses to start and says
    /// what would be lost; with more replicas it always opens (as a new
    /// incarnation) and is repaired from them.
    pub accept_data_loss: bool,
    /// Assert the node's invariants as it works: pre- and postconditions on
    /// the paths of writes, reads and requests, and `Node::invariants` after
    /// every `handle_*` call. They add about a fifth to a put's CPU time;
    /// the simulator turns them on, and so do debug builds by default.
    pub check_invariants: bool,
    /// Hinted handoff: what a fallback node keeps for replicas that are down.
    pub hints: HintConfig,
    /// Merkle trees and the exchanges that compare them.
    pub anti_entropy: AntiEntropyConfig,
    pub engine: EngineConfig,
}

/// Bounds on hinted handoff. A hint past a bound is not kept (counted as
/// dropped), and anti-entropy repairs its key instead; zero counts turn
/// hints off while fallbacks still answer, refusing each hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintConfig {
    /// Hints held at once, for all replicas.
    pub count_max: u64,
    /// Bytes the held hints take, keys and values.
    pub bytes_max: u64,
    /// A hint older than this is dropped instead of handed over: its
    /// replica was down so long that anti-entropy is the better repair.
    pub age_max: Duration,
    /// Hints being handed over at once, to all replicas together: the rate
    /// a returning replica sees is this many writes per round trip.
    pub deliveries_in_flight_max: u32,
}

impl Default for HintConfig {
    fn default() -> HintConfig {
        HintConfig {
            count_max: 100_000,
            bytes_max: 256 << 20,
            age_max: Duration::from_secs(3 * 3600),
            deliveries_in_flight_max: 16,
        }
    }
}

/// The largest `siblings_max`: merged, the copies of the most replicas a key
/// can have still hold no more siblings than any object may.
pub const SIBLINGS_MAX_LIMIT: u32 = (OBJECT_SIBLINGS_MAX / REPLICAS_MAX as usize) as u32;

impl Default for Config {
    fn default() -> Config {
        Config {
            ring: RingConfig::default(),
            members: Vec::new(),
            request_timeout: Duration::from_secs(2),
            heartbeat_interval: Duration::from_millis(250),
            failure_timeout: Duration::from_millis(1500),
            key_bytes_max: 8 * 1024,
            value_bytes_max: 16 * 1024 * 1024,
            siblings_max: 64,
            requests_max: 10_000,
            read_repair: true,
            accept_data_loss: false,
            check_invariants: cfg!(debug_assertions),
            hints: HintConfig::default(),
            anti_entropy: AntiEntropyConfig::default(),
            engine: EngineConfig::default(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{what} is {value}; it must be at least {min}")]
    TooSmall { what: &'static str, value: u64, min: u64 },
    #[error("{what} is {value}; it must be within {min}..={max}")]
    OutOfRange { what: &'static str, value: u64, min: u64, max: u64 },
    #[error("failure_timeout ({failure_ms} ms) must exceed heartbeat_interval ({heartbeat_ms} ms)")]
    FailureTimeoutTooShort { failure_ms: u64, heartbeat_ms: u64 },
}

impl Config {
    /// The longest client key the engine can store (its own limit less the
    /// store's namespace prefix) and a message can name.
    pub fn key_bytes_limit(&self) -> u32 {
        let message_max = u32::try_from(KEY_BYTES_MAX).unwrap_or(u32::MAX);
        self.engine.key_bytes_max.saturating_sub(KEY_PREFIX_BYTES).min(message_max)
    }

    /// The longest client value the engine can store with its record around it.
    pub fn value_bytes_limit(&self) -> u32 {
        self.engine.value_bytes_max.saturating_sub(RECORD_OVERHEAD_BYTES)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least = |what: &'static str, value: u64, min: u64| {
            if value < min { Err(ConfigError::TooSmall { what, value, min }) } else { Ok(()) }
        };
        let within = |what: &'static str, value: u64, max: u64| {
            let min = 1;
            let out = ConfigError::OutOfRange { what, value, min, max };
            if (min..=max).contains(&value) { Ok(()) } else { Err(out) }
        };
        within("replicas", u64::from(self.ring.replicas), u64::from(REPLICAS_MAX))?;
        within("key_bytes_max", u64::from(self.key_bytes_max), u64::from(self.key_bytes_limit()))?;
        within("value_bytes_max", u64::from(self.value_bytes_max), u64::from(self.value_bytes_limit()))?;
        at_least("request_timeout_ms", millis(self.request_timeout), 1)?;
        at_least("heartbeat_interval_ms", millis(self.heartbeat_interval), 1)?;
        within("siblings_max", u64::from(self.siblings_max), u64::from(SIBLINGS_MAX_LIMIT))?;
        at_least("requests_max", u64::from(self.requests_max), 1)?;
        at_least("anti_entropy_interval_ms", millis(self.anti_entropy.interval), 1)?;
        at_least("anti_entropy_request_timeout_ms", millis(self.anti_entropy.request_timeout), 1)?;
        at_least("hint_deliveries_in_flight_max", u64::from(self.hints.deliveries_in_flight_max), 1)?;
        if self.failure_timeout <= self.heartbeat_interval {
            return Err(ConfigError::FailureTimeoutTooShort {
                failure_ms: millis(self.failure_timeout),
                heartbeat_ms: millis(self.heartbeat_interval),
            });
        }
        Ok(())
    }
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
        let siblings = |siblings_max| Config { siblings_max, ..Config::default() }.validate();
        let out = |value| Err(ConfigError::OutOfRange { what: "siblings_max", value, min: 1, max: 256 });
        assert_eq!(siblings(0), out(0));
        assert_eq!(siblings(257), out(257));
        assert_eq!(siblings(256), Ok(()));
        let config = Config { failure_timeout: Duration::from_millis(100), ..Config::default() };
        assert!(matches!(config.validate(), Err(ConfigError::FailureTimeoutTooShort { .. })));
    }

    /// Zero limits make a node that refuses everything; limits past the
    /// engine's accept writes the engine then fails.
    #[test]
    fn replicas_and_limits_are_refused_outside_what_the_engine_can_store() {
        let defaults = Config::default();
        let key_limit = u64::from(defaults.engine.key_bytes_max) - 1;
        let value_limit = u64::from(defaults.engine.value_bytes_max - RECORD_OVERHEAD_BYTES);
        assert_eq!(u64::from(defaults.key_bytes_limit()), key_limit);
        assert_eq!(u64::from(defaults.value_bytes_limit()), value_limit);
        let out = |what, value, max| Err(ConfigError::OutOfRange { what, value, min: 1, max });
        let replicas = |replicas| {
            let mut config = Config::default();
            config.ring.replicas = replicas;
            config.validate()
        };
        assert_eq!(replicas(0), out("replicas", 0, 16));
        assert_eq!(replicas(17), out("replicas", 17, 16));
        assert_eq!(replicas(16), Ok(()));
        let keys = |key_bytes_max| Config { key_bytes_max, ..Config::default() }.validate();
        assert_eq!(keys(0), out("key_bytes_max", 0, key_limit));
        assert_eq!(keys(key_limit as u32 + 1), out("key_bytes_max", key_limit + 1, key_limit));
        assert_eq!(keys(key_limit as u32), Ok(()));
        let values = |value_bytes_max| Config { value_bytes_max, ..Config::default() }.validate();
        assert_eq!(values(0), out("value_bytes_max", 0, value_limit));
        assert_eq!(values(value_limit as u32 + 1), out("value_bytes_max", value_limit + 1, value_limit));
        assert_eq!(values(value_limit as u32), Ok(()));
        let error = values(0).unwrap_err().to_string();
        assert_eq!(error, format!("value_bytes_max is 0; it must be within 1..={value_limit}"));
    }
}
