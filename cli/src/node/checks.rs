//! The values `keel node` accepts, and errors that point at where a bad one
//! was given: a flag or its environment variable, or a key of the config
//! file. Every setting passes through here whatever its source, so the
//! three accept exactly the same values.
//!
//! Each bound is one a working node needs: zero replicas, a zero key or
//! value limit, or zero connections give a node that refuses everything.
//! `--help` and docs/OPERATIONS.md repeat these ranges; a test holds
//! `--help` to them.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::Path;

use keel_core::node;
use keel_core::ring::REPLICAS_MAX;
use keel_io_tokio::transport::CLUSTER_NAME_BYTES_MAX;
use tracing_subscriber::EnvFilter;

pub const NODE: RangeInclusive<u64> = 1..=u64::MAX;
/// The ring places at most this many replicas of a key.
pub const REPLICAS: RangeInclusive<u64> = 1..=REPLICAS_MAX as u64;
/// Below 10 ms a write under `--fsync always` waits longer for its fsync
/// than its deadline on most disks; above 10 minutes a client has long
/// given up.
pub const REQUEST_TIMEOUT_MS: RangeInclusive<u64> = 10..=600_000;
pub const CONNECTIONS_MAX: RangeInclusive<u64> = 1..=1_000_000;
/// RocksDB's floor for its write buffer; a memtable larger than 64 GiB is
/// a WAL that takes minutes to replay.
pub const MEMTABLE_BYTES_MAX: RangeInclusive<u64> = (64 << 10)..=(64 << 30);
/// 0 turns the block cache off.
pub const BLOCK_CACHE_BYTES_MAX: RangeInclusive<u64> = 0..=(1 << 40);
pub const WORKER_THREADS: RangeInclusive<u64> = 1..=1024;
/// Above 10 minutes a machine crash loses too much of this node's history.
pub const FSYNC_INTERVAL_MS: RangeInclusive<u64> = 1..=600_000;
/// 0 keeps no hints: fallbacks refuse them, and anti-entropy repairs.
pub const HINTS_MAX: RangeInclusive<u64> = 0..=100_000_000;
pub const HINT_BYTES_MAX: RangeInclusive<u64> = 0..=(1 << 40);
/// A week: a replica down longer is better rebuilt than handed a backlog.
pub const HINT_AGE_MAX_S: RangeInclusive<u64> = 1..=604_800;
/// From a round every 10 ms (a small cluster converging in seconds) to one
/// an hour.
pub const ANTI_ENTROPY_INTERVAL_MS: RangeInclusive<u64> = 10..=3_600_000;
/// 0 starts no exchanges: peers' are still answered.
pub const ANTI_ENTROPY_EXCHANGES_MAX: RangeInclusive<u64> = 0..=64;
/// The cluster name travels in the peer handshake with a one-byte length.
pub const CLUSTER_BYTES: RangeInclusive<u64> = 1..=CLUSTER_NAME_BYTES_MAX as u64;

/// Up to the longest key the storage engine can hold (64 KiB less the
/// store's namespace byte).
pub fn key_bytes_max() -> RangeInclusive<u64> {
    1..=u64::from(node::Config::default().key_bytes_limit())
}

/// Up to the longest value the storage engine can hold with its record
/// around it (64 MiB less 64 KiB).
pub fn value_bytes_max() -> RangeInclusive<u64> {
    1..=u64::from(node::Config::default().value_bytes_limit())
}

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    /// A flag or its environment variable: clap merges the two.
    Args,
    File(&'a Path),
    Default,
}

/// One setting's value and where it came from. `key` is its name in the
/// config file; the flag and the variable follow from it.
#[derive(Debug)]
pub struct Given<'a, T> {
    pub key: &'static str,
    pub value: T,
    pub origin: Origin<'a>,
}

/// The value of setting `key`: from the flags (or environment), else from
/// the file at `path`, else `default`.
pub fn pick<'a, T>(
    key: &'static str,
    path: &'a Path,
    args: Option<T>,
    file: Option<T>,
    default: T,
) -> Given<'a, T> {
    match (args, file) {
        (Some(value), _) => Given { key, value, origin: Origin::Args },
        (None, Some(value)) => Given { key, value, origin: Origin::File(path) },
        (None, None) => Given { key, value: default, origin: Origin::Default },
    }
}

impl<T> Given<'_, T> {
    /// The error for this value: where it was given, as what, and `rule`.
    pub fn refuse(&self, shown: impl Display, rule: &str) -> String {
        let key = self.key;
        match self.origin {
            Origin::Args => format!("--{} (or {}) is {shown}; {rule}", flag(key), variable(key)),
            Origin::File(path) => format!("{key} = {shown} in {}; {rule}", path.display()),
            Origin::Default => format!("the default {key} {shown} is invalid; {rule}"),
        }
    }
}

pub fn flag(key: &str) -> String {
    key.replace('_', "-")
}

pub fn variable(key: &str) -> String {
    format!("KEEL_{}", key.to_uppercase())
}

/// A number within `range`, in the type the node keeps it in.
pub fn ranged<T: TryFrom<u64>>(given: Given<'_, u64>, range: RangeInclusive<u64>) -> Result<T, String> {
    let refuse = || given.refuse(given.value, &format!("it must be {}", show(given.key, &range)));
    if !range.contains(&given.value) {
        return Err(refuse());
    }
    T::try_from(given.value).map_err(|_| refuse())
}

/// "within 1..=16", "at least 1"; round byte ranges also in KiB, MiB, GiB.
pub fn show(key: &str, range: &RangeInclusive<u64>) -> String {
    let (min, max) = (*range.start(), *range.end());
    if max == u64::MAX {
        return format!("at least {min}");
    }
    match (key.ends_with("_bytes_max"), bytes(min), bytes(max)) {
        (true, Some(min_unit), Some(max_unit)) => format!("within {min}..={max} ({min_unit} to {max_unit})"),
        _ => format!("within {min}..={max}"),
    }
}

/// `n` bytes in the largest binary unit that divides it, e.g. "64 KiB";
/// `None` when no unit does.
fn bytes(n: u64) -> Option<String> {
    if n == 0 {
        return Some("0".into());
    }
    let units = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    let (size, unit) = units.iter().find(|(size, _)| n % size == 0)?;
    Some(format!("{} {unit}", n / size))
}

/// A cluster name peers can present in the handshake and people can read.
pub fn cluster(given: Given<'_, String>) -> Result<String, String> {
    let name = &given.value;
    let length = name.len() as u64;
    if !CLUSTER_BYTES.contains(&length) {
        let (min, max) = (CLUSTER_BYTES.start(), CLUSTER_BYTES.end());
        let rule = format!("a cluster name must be {min}..={max} bytes long");
        return Err(given.refuse(format!("{length} bytes long"), &rule));
    }
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(given.refuse(format!("{name:?}"), "a cluster name must be printable and not blank"));
    }
    Ok(given.value)
}

/// A `RUST_LOG`-style filter that tracing accepts as it is.
pub fn log_filter(given: Given<'_, String>) -> Result<String, String> {
    match EnvFilter::try_new(&given.value) {
        Ok(_) => Ok(given.value),
        Err(error) => {
            let rule = format!("it must be a log filter such as info or keel_io_tokio=debug ({error})");
            Err(given.refuse(format!("{:?}", given.value), &rule))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_as_people_write_them() {
        assert_eq!(show("replicas", &REPLICAS), "within 1..=16");
        assert_eq!(show("node", &NODE), "at least 1");
        assert_eq!(
            show("memtable_bytes_max", &MEMTABLE_BYTES_MAX),
            "within 65536..=68719476736 (64 KiB to 64 GiB)"
        );
        assert_eq!(show("value_bytes_max", &value_bytes_max()), "within 1..=67043328");
        assert_eq!(
            show("block_cache_bytes_max", &BLOCK_CACHE_BYTES_MAX),
            "within 0..=1099511627776 (0 to 1 TiB)"
        );
        assert_eq!(bytes(3 << 20), Some("3 MiB".into()));
        assert_eq!(bytes(1000), None);
    }

    #[test]
    fn an_error_names_where_the_value_was_given() {
        let path = Path::new("keel.toml");
        let from_args = pick("replicas", path, Some(0), Some(3), 3);
        let error = ranged::<u8>(from_args, REPLICAS).unwrap_err();
        assert_eq!(error, "--replicas (or KEEL_REPLICAS) is 0; it must be within 1..=16");
        let from_file = pick("key_bytes_max", path, None, Some(0), 8192);
        let error = ranged::<u32>(from_file, key_bytes_max()).unwrap_err();
        assert!(error.starts_with("key_bytes_max = 0 in keel.toml; it must be within 1..=65535"), "{error}");
        assert_eq!(ranged::<u8>(pick("replicas", path, None, None, 3), REPLICAS), Ok(3));
    }
}
