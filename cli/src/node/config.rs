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

/// Flags of `keel node`; each may also come from the environment variable
/// named beside it, or from the config file.
#[derive(Debug, Default, Args)]
pub struct NodeArgs {
    /// A TOML file with any of the settings below (flag names with `_`).
    #[arg(long, env = "KEEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id, a positive number unique in the cluster [default: 1].
    #[arg(long, env = "KEEL_NODE")]
    pub node: Option<u64>,
    /// Name of the cluster; peers with another name are refused [default: keel].
    #[arg(long, env = "KEEL_CLUSTER")]
    pub cluster: Option<String>,
    /// Where the node keeps its data [default: keel-data/node-<id>].
    #[arg(long, env = "KEEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Replicas per key, N [default: 3; a smaller cluster keeps one per node].
    #[arg(long, env = "KEEL_REPLICAS")]
    pub replicas: Option<u8>,
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
    /// Coordinator deadline for a request, in milliseconds [default: 2000].
    #[arg(long, env = "KEEL_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Largest key, in bytes [default: 8192].
    #[arg(long, env = "KEEL_KEY_BYTES_MAX")]
    pub key_bytes_max: Option<u32>,
    /// Largest value, in bytes [default: 16777216].
    #[arg(long, env = "KEEL_VALUE_BYTES_MAX")]
    pub value_bytes_max: Option<u32>,
    /// Most client connections per protocol [default: 10000].
    #[arg(long, env = "KEEL_CONNECTIONS_MAX")]
    pub connections_max: Option<u32>,
    /// Memtable size that triggers a flush, in bytes [default: 67108864].
    #[arg(long, env = "KEEL_MEMTABLE_BYTES_MAX")]
    pub memtable_bytes_max: Option<u64>,
    /// Block cache budget, in bytes [default: 67108864].
    #[arg(long, env = "KEEL_BLOCK_CACHE_BYTES_MAX")]
    pub block_cache_bytes_max: Option<u64>,
    /// Threads serving clients and peers. The node's state machine runs on
    /// one of them whatever the count; more threads help only when parsing
    /// client requests is the bottleneck [default: 1].
    #[arg(long, env = "KEEL_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// When writes are made durable: `always` acknowledges a write only
    /// after its log record is fsynced (group commit); `periodic` fsyncs
    /// every --fsync-interval-ms and acknowledges at once, so a crash may
    /// lose that interval's writes on this node [default: always].
    #[arg(long, env = "KEEL_FSYNC")]
    pub fsync: Option<FsyncMode>,
    /// With --fsync periodic, the interval between fsyncs [default: 1000].
    #[arg(long, env = "KEEL_FSYNC_INTERVAL_MS")]
    pub fsync_interval_ms: Option<u64>,
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
    replicas: Option<u8>,
    listen_peer: Option<SocketAddr>,
    listen_http: Option<SocketAddr>,
    listen_redis: Option<SocketAddr>,
    #[serde(default)]
    peers: Vec<String>,
    log_format: Option<LogFormat>,
    log: Option<String>,
    request_timeout_ms: Option<u64>,
    key_bytes_max: Option<u32>,
    value_bytes_max: Option<u32>,
    connections_max: Option<u32>,
    memtable_bytes_max: Option<u64>,
    block_cache_bytes_max: Option<u64>,
    worker_threads: Option<usize>,
    fsync: Option<FsyncMode>,
    fsync_interval_ms: Option<u64>,
}

/// Every setting resolved.
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
}

impl Settings {
    /// Resolves flags and environment over the file over the defaults.
    pub fn resolve(args: &NodeArgs) -> Result<Settings, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let node = args.node.or(file.node).unwrap_or(1);
        if node == 0 {
            return Err("node ids start at 1".into());
        }
        let peer_specs = if args.peers.is_empty() { &file.peers } else { &args.peers };
        let peers = parse_peers(peer_specs, NodeId(node))?;
        let defaults = node::Config::default();
        Ok(Settings {
            node: NodeId(node),
            cluster: args.cluster.clone().or(file.cluster).unwrap_or_else(|| "keel".into()),
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| format!("keel-data/node-{node}").into()),
            replicas: args.replicas.or(file.replicas).unwrap_or(3),
            listen_peer: args.listen_peer.or(file.listen_peer).unwrap_or(([127, 0, 0, 1], 7410).into()),
            listen_http: args.listen_http.or(file.listen_http).unwrap_or(([127, 0, 0, 1], 7420).into()),
            listen_redis: args.listen_redis.or(file.listen_redis).unwrap_or(([127, 0, 0, 1], 7421).into()),
            peers,
            log_format: args.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            log: args.log.clone().or(file.log).unwrap_or_else(|| "info".into()),
            request_timeout: args
                .request_timeout_ms
                .or(file.request_timeout_ms)
                .map_or(defaults.request_timeout, Duration::from_millis),
            key_bytes_max: args.key_bytes_max.or(file.key_bytes_max).unwrap_or(defaults.key_bytes_max),
            value_bytes_max: args
                .value_bytes_max
                .or(file.value_bytes_max)
                .unwrap_or(defaults.value_bytes_max),
            connections_max: args.connections_max.or(file.connections_max).unwrap_or(10_000),
            memtable_bytes_max: args
                .memtable_bytes_max
                .or(file.memtable_bytes_max)
                .unwrap_or(defaults.engine.memtable_bytes_max),
            block_cache_bytes_max: args
                .block_cache_bytes_max
                .or(file.block_cache_bytes_max)
                .unwrap_or(defaults.engine.block_cache_bytes_max),
            worker_threads: args.worker_threads.or(file.worker_threads).unwrap_or(1).max(1),
            sync_policy: match args.fsync.or(file.fsync).unwrap_or(FsyncMode::Always) {
                FsyncMode::Always => SyncPolicy::Always,
                FsyncMode::Periodic => {
                    let interval_ms = args.fsync_interval_ms.or(file.fsync_interval_ms).unwrap_or(1000);
                    if interval_ms == 0 {
                        return Err("fsync_interval_ms must be at least 1".into());
                    }
                    SyncPolicy::Periodic { interval_ms }
                }
            },
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
            ..node::Config::default()
        };
        config.ring.replicas = self.replicas.min(config.members.len() as u8).max(1);
        config.engine.memtable_bytes_max = self.memtable_bytes_max;
        config.engine.block_cache_bytes_max = self.block_cache_bytes_max;
        config.engine.sync_policy = self.sync_policy;
        config.validate().map_err(|error| error.to_string())?;
        Ok(config)
    }
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
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file_and_no_flags() {
        let settings = Settings::resolve(&NodeArgs::default()).unwrap();
        assert_eq!(settings.node, NodeId(1));
        assert_eq!(settings.data_dir, PathBuf::from("keel-data/node-1"));
        assert_eq!(settings.listen_http, "127.0.0.1:7420".parse().unwrap());
        assert!(settings.peers.is_empty());
        let config = settings.node_config().unwrap();
        assert_eq!(config.ring.replicas, 1, "a single node keeps one replica");
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("keel-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keel.toml");
        std::fs::write(
            &path,
            "node = 2\ncluster = \"prod\"\npeers = [\"1@127.0.0.1:7410\", \"3@127.0.0.1:7610\"]\n",
        )
        .unwrap();
        let args =
            NodeArgs { config: Some(path.clone()), cluster: Some("flag".into()), ..NodeArgs::default() };
        let settings = Settings::resolve(&args).unwrap();
        assert_eq!(settings.node, NodeId(2));
        assert_eq!(settings.cluster, "flag");
        assert_eq!(settings.peers.len(), 2);
        assert_eq!(settings.node_config().unwrap().members.len(), 3);
        std::fs::write(&path, "nodes = 2\n").unwrap();
        let error = Settings::resolve(&NodeArgs { config: Some(path), ..NodeArgs::default() }).unwrap_err();
        assert!(error.contains("unknown field"), "{error}");
    }

    #[test]
    fn bad_peers_are_refused_with_the_expected_form() {
        let this = NodeId(1);
        assert!(parse_peers(&["2@127.0.0.1:7510".into()], this).is_ok());
        let error = parse_peers(&["two@127.0.0.1:7510".into()], this).unwrap_err();
        assert!(error.contains("ID@HOST:PORT"), "{error}");
        assert!(parse_peers(&["2@nowhere".into()], this).is_err());
        let twice = ["2@127.0.0.1:1".to_owned(), "2@127.0.0.1:2".to_owned()];
        assert!(parse_peers(&twice, this).unwrap_err().contains("twice"));
        assert!(parse_peers(&["1@127.0.0.1:1".into()], this).unwrap().is_empty(), "own entry skipped");
    }
}
