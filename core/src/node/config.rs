//! A node's configuration, with the defaults a single machine needs.

use core::time::Duration;

use thiserror::Error;

use crate::lsm::EngineConfig;
use crate::ring::{Member, RingConfig};

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
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
    /// A write that would leave more siblings than this is refused.
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
    pub engine: EngineConfig,
}

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
            engine: EngineConfig::default(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{what} is {value}; it must be at least {min}")]
    TooSmall { what: &'static str, value: u64, min: u64 },
    #[error("failure_timeout ({failure_ms} ms) must exceed heartbeat_interval ({heartbeat_ms} ms)")]
    FailureTimeoutTooShort { failure_ms: u64, heartbeat_ms: u64 },
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least = |what: &'static str, value: u64, min: u64| {
            if value < min { Err(ConfigError::TooSmall { what, value, min }) } else { Ok(()) }
        };
        at_least("request_timeout_ms", millis(self.request_timeout), 1)?;
        at_least("heartbeat_interval_ms", millis(self.heartbeat_interval), 1)?;
        at_least("siblings_max", u64::from(self.siblings_max), 1)?;
        at_least("requests_max", u64::from(self.requests_max), 1)?;
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
        let config = Config { siblings_max: 0, ..Config::default() };
        assert_eq!(config.validate(), Err(ConfigError::TooSmall { what: "siblings_max", value: 0, min: 1 }));
        let config = Config { failure_timeout: Duration::from_millis(100), ..Config::default() };
        assert!(matches!(config.validate(), Err(ConfigError::FailureTimeoutTooShort { .. })));
    }
}
