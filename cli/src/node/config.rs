//! Where a node's settings come from, in order of precedence: command-line
//! flags, then `KEEL_*` environment variables (clap reads both), then the
//! TOML file given with `--config`, then the defaults embedded here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use keel_core::NodeId;
use keel_core::lsm::SyncPolicy;
use keel_core::node;
use keel_core::ring::Member;
use serde::Deserialize;

use super::checks::{self, Given, pick, ranged};

/// Flags of `keel node`; each may also come from the environment variable
/// named beside it, or from the config file. Out-of-range values are
/// refused, whichever of the three gives them.
#[derive(Debug, Default, Args)]
pub struct NodeArgs {
    /// A TOML file with any of the settings below (flag names with `_`).
    #[arg(long, env = "KEEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id, at least 1, unique in the cluster [default: 1].
    #[arg(long, env = "KEEL_NODE")]
    pub node: Option<u64>,
    /// Name of the cluster, 1..=255 printable bytes; peers with another
    /// name are refused [default: keel].
    #[arg(long, env = "KEEL_CLUSTER")]
    pub cluster: Option<String>,
    /// Where the node keeps its data; the node locks it and writes its pid
    /// to LOCK there, and refuses to start while another process holds it
    /// [default: keel-data/node-<id>].
    #[arg(long, env = "KEEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Replicas per key, N, within 1..=16 [default: 3; a smaller cluster
    /// keeps one per node].
    #[arg(long, env = "KEEL_REPLICAS")]
    pub replicas: Option<u64>,
    /// Address for other nodes [default: 127.0.0.1:7410].
    #[arg(long, env = "KEEL_LISTEN_PEER")]
    pub listen_peer: Option<SocketAddr>,
    /// Address of the HTTP API [default: 127.0.0.1:7420].
    #[arg(long, env = "KEEL_LISTEN_HTTP")]
    pub listen_http: Option<SocketAddr>,
    /// Address of the Redis protocol [default: 127.0.0.1:7421].
    #[arg(long, env = "KEEL_LISTEN_REDIS")]
    pub listen_redis: Option<SocketAddr>,
    /// Another member of the cluster, as ID@HOST:PORT (its peer address);
    /// repeat, or separate with commas. Every node must list the same
    /// members: membership is static until gossip arrives.
    #[arg(long = "peer", env = "KEEL_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "KEEL_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. info or keel_io_tokio=debug [default: info].
    #[arg(long, env = "KEEL_LOG")]
    pub log: Option<String>,
    /// Coordinator deadline for a request, in milliseconds, within
    /// 10..=600000 [default: 2000].
    #[arg(long, env = "KEEL_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Largest key, in bytes, within 1..=65535 [default: 8192].
    #[arg(long, env = "KEEL_KEY_BYTES_MAX")]
    pub key_bytes_max: Option<u64>,
    /// Largest value, in bytes, within 1..=67043328 (64 MiB less 64 KiB for
    /// the version kept with it) [default: 16777216].
    #[arg(long, env = "KEEL_VALUE_BYTES_MAX")]
    pub value_bytes_max: Option<u64>,
    /// Most client connections per protocol, within 1..=1000000
    /// [default: 10000].
    #[arg(long, env = "KEEL_CONNECTIONS_MAX")]
    pub connections_max: Option<u64>,
    /// Memtable size that triggers a flush, in bytes, within
    /// 65536..=68719476736 (64 KiB to 64 GiB) [default: 67108864].
    #[arg(long, env = "KEEL_MEMTABLE_BYTES_MAX")]
    pub memtable_bytes_max: Option<u64>,
    /// Block cache budget, in bytes, within 0..=1099511627776 (0 to 1 TiB;
    /// 0 turns the cache off) [default: 67108864].
    #[arg(long, env = "KEEL_BLOCK_CACHE_BYTES_MAX")]
    pub block_cache_bytes_max: Option<u64>,
    /// Threads serving clients and peers, within 1..=1024. The node's state
    /// machine runs on one of them whatever the count; more threads help
    /// only when parsing client requests is the bottleneck [default: 1].
    #[arg(long, env = "KEEL_WORKER_THREADS")]
    pub worker_threads: Option<u64>,
    /// When writes are made durable: `always` acknowledges a write only
    /// after its log record is fsynced (group commit); `periodic` fsyncs
    /// every --fsync-interval-ms and acknowledges at once, so a crash may
    /// lose that interval's writes on this node [default: always].
    #[arg(long, env = "KEEL_FSYNC")]
    pub fsync: Option<FsyncMode>,
    /// With --fsync periodic, the interval between fsyncs, within
    /// 1..=600000 [default: 1000].
    #[arg(long, env = "KEEL_FSYNC_INTERVAL_MS")]
    pub fsync_interval_ms: Option<u64>,
    /// Hints a node keeps at most for replicas that are down (sloppy
    /// quorum), within 0..=100000000; 0 keeps none, leaving repair to
    /// anti-entropy [default: 100000].
    #[arg(long, env = "KEEL_HINTS_MAX")]
    pub hints_max: Option<u64>,
    /// Bytes those hints take at most, within 0..=1099511627776
    /// [default: 268435456].
    #[arg(long, env = "KEEL_HINT_BYTES_MAX")]
    pub hint_bytes_max: Option<u64>,
    /// Age, in seconds, past which a hint is dropped rather than handed
    /// over, within 1..=604800 [default: 10800].
    #[arg(long, env = "KEEL_HINT_AGE_MAX_S")]
    pub hint_age_max_s: Option<u64>,
    /// Milliseconds between two rounds of anti-entropy exchanges, within
    /// 10..=3600000 [default: 250].
    #[arg(long, env = "KEEL_ANTI_ENTROPY_INTERVAL_MS")]
    pub anti_entropy_interval_ms: Option<u64>,
    /// Anti-entropy exchanges this node runs at once as initiator, within
    /// 0..=64; 0 starts none (the node still answers its peers')
    /// [default: 4].
    #[arg(long, env = "KEEL_ANTI_ENTROPY_EXCHANGES_MAX")]
    pub anti_entropy_exchanges_max: Option<u64>,
    /// Open even when recovery finds synced records lost to damage and this
    /// node is the only replica of its keys (otherwise such a node refuses
    /// to start and prints what would be lost) [default: false].
    #[arg(
        long,
        env = "KEEL_ACCEPT_DATA_LOSS",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub accept_data_loss: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    Always,
    Periodic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The config file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    node: Option<u64>,
    cluster: Option<String>,
    data_dir: Option<PathBuf>,
    replicas: Option<u64>,
    listen_peer: Option<SocketAddr>,
    listen_http: Option<SocketAddr>,
    listen_redis: Option<SocketAddr>,
    #[serde(default)]
    peers: Vec<String>,
    log_format: Option<LogFormat>,
    log: Option<String>,
    request_timeout_ms: Option<u64>,
    key_bytes_max: Option<u64>,
    value_bytes_max: Option<u64>,
    connections_max: Option<u64>,
    memtable_bytes_max: Option<u64>,
    block_cache_bytes_max: Option<u64>,
    worker_threads: Option<u64>,
    fsync: Option<FsyncMode>,
    fsync_interval_ms: Option<u64>,
    hints_max: Option<u64>,
    hint_bytes_max: Option<u64>,
    hint_age_max_s: Option<u64>,
    anti_entropy_interval_ms: Option<u64>,
    anti_entropy_exchanges_max: Option<u64>,
    accept_data_loss: Option<bool>,
}

/// Every setting resolved and within its range.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub node: NodeId,
    pub cluster: String,
    pub data_dir: PathBuf,
    pub replicas: u8,
    pub listen_peer: SocketAddr,
    pub listen_http: SocketAddr,
    pub listen_redis: SocketAddr,
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub log_format: LogFormat,
    pub log: String,
    pub request_timeout: Duration,
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
    pub connections_max: u32,
    pub memtable_bytes_max: u64,
    pub block_cache_bytes_max: u64,
    pub worker_threads: usize,
    pub sync_policy: SyncPolicy,
    pub hints: node::HintConfig,
    pub anti_entropy: node::AntiEntropyConfig,
    pub accept_data_loss: bool,
}

impl Settings {
    /// Resolves flags and environment over the file over the defaults, and
    /// refuses any value outside its range, naming where it was given.
    pub fn resolve(args: &NodeArgs) -> Result<Settings, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let path = args.config.as_deref().unwrap_or(Path::new("the config file"));
        // The setting's file key is the field's name, and its flag and
        // variable follow from that, so an error cannot name the wrong one.
        macro_rules! given {
            ($key:ident, $default:expr) => {
                pick(stringify!($key), path, args.$key.clone(), file.$key, $default)
            };
        }
        let node: u64 = ranged(given!(node, 1), checks::NODE)?;
        let peer_specs = if args.peers.is_empty() { &file.peers } else { &args.peers };
        let peers = parse_peers(peer_specs, NodeId(node))?;
        let defaults = node::Config::default();
        let timeout_ms = u64::try_from(defaults.request_timeout.as_millis()).unwrap_or(u64::MAX);
        let engine = &defaults.engine;
        Ok(Settings {
            node: NodeId(node),
            cluster: checks::cluster(given!(cluster, "keel".into()))?,
            data_dir: data_dir(given!(data_dir, format!("keel-data/node-{node}").into()))?,
            replicas: ranged(given!(replicas, 3), checks::REPLICAS)?,
            listen_peer: args.listen_peer.or(file.listen_peer).unwrap_or(([127, 0, 0, 1], 7410).into()),
            listen_http: args.listen_http.or(file.listen_http).unwrap_or(([127, 0, 0, 1], 7420).into()),
            listen_redis: args.listen_redis.or(file.listen_redis).unwrap_or(([127, 0, 0, 1], 7421).into()),
            peers,
            log_format: args.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            log: checks::log_filter(given!(log, "info".into()))?,
            request_timeout: Duration::from_millis(ranged(
                given!(request_timeout_ms, timeout_ms),
                checks::REQUEST_TIMEOUT_MS,
            )?),
            key_bytes_max: ranged(
                given!(key_bytes_max, defaults.key_bytes_max.into()),
                checks::key_bytes_max(),
            )?,
            value_bytes_max: ranged(
                given!(value_bytes_max, defaults.value_bytes_max.into()),
                checks::value_bytes_max(),
            )?,
            connections_max: ranged(given!(connections_max, 10_000), checks::CONNECTIONS_MAX)?,
            memtable_bytes_max: ranged(
                given!(memtable_bytes_max, engine.memtable_bytes_max),
                checks::MEMTABLE_BYTES_MAX,
            )?,
            block_cache_bytes_max: ranged(
                given!(block_cache_bytes_max, engine.block_cache_bytes_max),
                checks::BLOCK_CACHE_BYTES_MAX,
            )?,
            worker_threads: ranged(given!(worker_threads, 1), checks::WORKER_THREADS)?,
            sync_policy: sync_policy(
                args.fsync.or(file.fsync).unwrap_or(FsyncMode::Always),
                given!(fsync_interval_ms, 1000),
            )?,
            hints: node::HintConfig {
                count_max: ranged(given!(hints_max, defaults.hints.count_max), checks::HINTS_MAX)?,
                bytes_max: ranged(given!(hint_bytes_max, defaults.hints.bytes_max), checks::HINT_BYTES_MAX)?,
                age_max: Duration::from_secs(ranged(
                    given!(hint_age_max_s, defaults.hints.age_max.as_secs()),
                    checks::HINT_AGE_MAX_S,
                )?),
                ..defaults.hints
            },
            anti_entropy: node::AntiEntropyConfig {
                interval: Duration::from_millis(ranged(
                    given!(
                        anti_entropy_interval_ms,
                        u64::try_from(defaults.anti_entropy.interval.as_millis()).unwrap_or(u64::MAX)
                    ),
                    checks::ANTI_ENTROPY_INTERVAL_MS,
                )?),
                exchanges_in_flight_max: ranged(
                    given!(anti_entropy_exchanges_max, defaults.anti_entropy.exchanges_in_flight_max.into()),
                    checks::ANTI_ENTROPY_EXCHANGES_MAX,
                )?,
                ..defaults.anti_entropy
            },
            accept_data_loss: args.accept_data_loss.or(file.accept_data_loss).unwrap_or(false),
        })
    }

    /// The protocol configuration these settings describe.
    pub fn node_config(&self) -> Result<node::Config, String> {
        let mut members = vec![Member::new(self.node)];
        members.extend(self.peers.keys().map(|&peer| Member::new(peer)));
        let mut config = node::Config {
            members,
            request_timeout: self.request_timeout,
            key_bytes_max: self.key_bytes_max,
            value_bytes_max: self.value_bytes_max,
            accept_data_loss: self.accept_data_loss,
            hints: self.hints,
            anti_entropy: self.anti_entropy,
            ..node::Config::default()
        };
        // N above the member count would place a key on fewer nodes than N.
        config.ring.replicas = self.replicas.min(config.members.len() as u8).max(1);
        config.engine.memtable_bytes_max = self.memtable_bytes_max;
        config.engine.block_cache_bytes_max = self.block_cache_bytes_max;
        config.engine.sync_policy = self.sync_policy;
        config.validate().map_err(|error| error.to_string())?;
        Ok(config)
    }
}

/// A data directory must be named: an empty path would quietly mean the working directory.
fn data_dir(given: Given<'_, PathBuf>) -> Result<PathBuf, String> {
    if given.value.as_os_str().is_empty() {
        return Err(given.refuse("\"\"", "it must name a directory"));
    }
    Ok(given.value)
}

/// The interval is checked even under `always`, where it is unused, so a
/// bad value is caught before someone switches to `periodic`.
fn sync_policy(mode: FsyncMode, interval: Given<'_, u64>) -> Result<SyncPolicy, String> {
    let interval_ms = ranged(interval, checks::FSYNC_INTERVAL_MS)?;
    Ok(match mode {
        FsyncMode::Always => SyncPolicy::Always,
        FsyncMode::Periodic => SyncPolicy::Periodic { interval_ms },
    })
}

fn read_file(path: &Path) -> Result<FileSettings, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    toml::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))
}

/// Parses `ID@HOST:PORT` entries; this node's own entry is skipped.
fn parse_peers(specs: &[String], this: NodeId) -> Result<BTreeMap<NodeId, SocketAddr>, String> {
    let mut peers = BTreeMap::new();
    for spec in specs.iter().map(|spec| spec.trim()).filter(|spec| !spec.is_empty()) {
        let invalid = || format!("peer {spec:?} is not ID@HOST:PORT (for example 2@127.0.0.1:7510)");
        let (id, address) = spec.split_once('@').ok_or_else(invalid)?;
        let id: u64 = id.parse().map_err(|_| invalid())?;
        let address: SocketAddr = address.parse().map_err(|_| invalid())?;
        if id == 0 {
            return Err(invalid());
        }
        if NodeId(id) != this && peers.insert(NodeId(id), address).is_some() {
            return Err(format!("peer {id} is listed twice"));
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests;
