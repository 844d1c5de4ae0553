//! Everything a run does, drawn from its seed (swarm testing): each seed
//! turns some faults off and weights the rest differently, so that rare
//! combinations get their turn.

use core::fmt;
use core::str::FromStr;

use crate::rng::{SimRng, Stream};

/// One kind of fault the simulator can inject.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum FaultKind {
    /// Messages lost in flight.
    Drop,
    /// Messages delivered twice.
    Duplicate,
    /// Messages held back long enough to overtake one another.
    Reorder,
    /// Groups of nodes that cannot reach each other.
    Partition,
    /// Links that work in one direction only.
    OneWay,
    /// Links that deliver, but very slowly.
    Clog,
    /// Nodes that crash, losing unsynced writes, and restart.
    Crash,
    /// Wall clocks that are offset and drift; monotonic clocks that run at
    /// different rates.
    ClockSkew,
    /// Reads that return a flipped bit once; the stored bytes are intact.
    ReadCorruption,
    /// Stored bytes that rot for good, on one disk of the cluster.
    BitRot,
    /// Syncs that fail; the node refuses writes until it is restarted.
    SyncFailure,
    /// Nodes that stop the world for longer than the failure timeout: they
    /// keep their state and resume with stale timers and a backlog.
    Pause,
    /// One node's data lost for good: it restarts on an empty disk under a
    /// new incarnation.
    Wipe,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::Drop,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Clog,
        FaultKind::Crash,
        FaultKind::ClockSkew,
        FaultKind::ReadCorruption,
        FaultKind::BitRot,
        FaultKind::SyncFailure,
        FaultKind::Pause,
        FaultKind::Wipe,
    ];

    /// The faults of the first draw, whose on/off coins come from the
    /// configuration stream in this order.
    const CLASSIC: usize = 11;

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Drop => "drop",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder => "reorder",
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one-way",
            FaultKind::Clog => "clog",
            FaultKind::Crash => "crash",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::ReadCorruption => "read-corruption",
            FaultKind::BitRot => "bit-rot",
            FaultKind::SyncFailure => "sync-failure",
            FaultKind::Pause => "pause",
            FaultKind::Wipe => "wipe",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<FaultKind, String> {
        FaultKind::ALL.into_iter().find(|kind| kind.name() == text).ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|kind| kind.name()).collect();
            format!("unknown fault {text:?}; known faults: {}", names.join(", "))
        })
    }
}

/// Which faults are on, and how often the per-message ones strike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultMix {
    pub enabled: Vec<FaultKind>,
    pub drop_per_million: u32,
    pub duplicate_per_million: u32,
    pub reorder_per_million: u32,
    /// Scheduled link faults (partitions, one-way links, clogs) in the
    /// safety phase.
    pub scheduled_count: u32,
    /// Crashes in the safety phase, when crashes are enabled.
    pub crash_count: u32,
    /// Disk reads returning a flipped bit (transient), per million reads.
    pub read_corrupt_per_million: u32,
    /// Durable bits rotting on the one bad disk, per million reads of it.
    pub bit_rot_per_million: u32,
    /// Failed syncs, per million syncs.
    pub sync_fail_per_million: u32,
    /// Pauses in the safety phase, when pauses are enabled.
    pub pause_count: u32,
    /// Times the wiped node loses its data, when wipes are enabled.
    pub wipe_count: u32,
}

impl FaultMix {
    pub fn has(&self, kind: FaultKind) -> bool {
        self.enabled.contains(&kind)
    }

    pub fn none() -> FaultMix {
        FaultMix {
            enabled: Vec::new(),
            drop_per_million: 0,
            duplicate_per_million: 0,
            reorder_per_million: 0,
            scheduled_count: 0,
            crash_count: 0,
            read_corrupt_per_million: 0,
            bit_rot_per_million: 0,
            sync_fail_per_million: 0,
            pause_count: 0,
            wipe_count: 0,
        }
    }
}

/// How small the nodes' storage engines are: small enough that a short
/// workload flushes tables, compacts them and misses the block cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageMix {
    pub memtable_bytes_max: u64,
    pub block_bytes: u32,
    pub block_cache_bytes_max: u64,
    pub l0_tables_max: u32,
    pub table_bytes_target: u64,
    pub level_base_bytes: u64,
    pub level_size_ratio: u32,
}

/// The client workload's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadMix {
    pub clients: u32,
    pub keys: u32,
    pub ops: u32,
    /// Relative weights of gets, puts and deletes.
    pub weights: [u32; 3],
    /// Percent of writes that pass the context of the client's last read.
    pub context_percent: u32,
    /// Percent of the remaining (blind) writes that send no context at all,
    /// replacing what the coordinator holds; the rest send an empty context
    /// and become siblings of everything stored.
    pub overwrite_percent: u32,
    /// Every request uses R + W > N, and property 7 is checked.
    pub strict: bool,
    pub think_ms_max: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: u64,
    pub replicas: u8,
    pub faults: FaultMix,
    pub workload: WorkloadMix,
    /// Length of the safety phase, in simulated milliseconds.
    pub safety_ms: u64,
    /// The slowest a disk's sync may be, in microseconds; each disk draws
    /// its own latency up to this. Slow disks widen the window in which a
    /// crash loses writes that are not yet durable.
    pub sync_us_max: u64,
    pub storage: StorageMix,
    /// `None`: every write waits for its fsync (`--fsync always`). Some
    /// interval: nodes sync on that timer and acknowledge once the kernel
    /// has a write (`--fsync periodic`); crashes are then of the process
    /// only, since a machine crash loses acknowledged writes by design.
    pub sync_interval_ms: Option<u64>,
    /// The nodes start on the release of storage format 1 and each is
    /// upgraded at its first restart: its directory is rewritten as that
    /// release left it, and opening it migrates every record, deleting each
    /// old key with an engine tombstone.
    pub format_1_upgrade: bool,
    /// How long the healed cluster settles before the liveness phase's
    /// requests, in simulated ms. `None`: a fixed 3 s, enough for every
    /// failure detector to hear every peer and for a node whose reopening
    /// fails to use up its retries. `Some(ms)`: until every node is up and
    /// every message sent before healing has arrived, and then `ms` (more
    /// than a heartbeat interval, so that every node has heard from every
    /// peer since), which ends short runs much sooner.
    pub settle_ms: Option<u64>,
    /// Hints each node keeps at most (`HintConfig::count_max`); `None`:
    /// the node's default, which no run reaches. Small, fallbacks refuse
    /// hints past it and anti-entropy must repair their keys.
    pub hints_max: Option<u64>,
    /// Fold every event and every delivered message into the run's trace
    /// hash (`RunResult::trace`). Off, the hash is the same for every run:
    /// for runs nothing replays or compares, such as the fuzzer's.
    pub trace: bool,
}

/// The sync interval of runs drawn with `--fsync periodic`, in simulated ms.
pub const PERIODIC_SYNC_MS: u64 = 100;

/// The share of seeds whose nodes are upgraded from storage format 1, in percent.
const UPGRADE_PERCENT: u64 = 30;

impl SimConfig {
    /// Draws a whole configuration from `seed`: the classic draw, then the
    /// swarm over everything a deployment chooses (replica count, cluster
    /// size, fsync policy), the storage shape, the run's length and key
    /// space, and the faults added since. Those come from a stream of their
    /// own, so the classic draw stays what it was; whether the nodes are
    /// upgraded from format 1 comes from another, after them.
    pub fn from_seed(seed: u64) -> SimConfig {
        SimConfig::drawn(seed).settled()
    }

    /// `from_seed` before the draws are reconciled (see `settled`): pins
    /// go in between, so pinning one choice leaves the rest of the draw alone.
    pub fn drawn(seed: u64) -> SimConfig {
        let mut config = SimConfig::classic(seed);
        let mut rng = SimRng::new(seed, Stream::Swarm);
        // N from 1 to 5, each as often as the others.
        config.replicas = rng.between(1, 5) as u8;
        config.nodes = if rng.below(20) == 0 {
            u64::from(config.replicas)
        } else {
            rng.between(u64::from(config.replicas).max(3), 8)
        };
        for kind in [FaultKind::Pause, FaultKind::Wipe] {
            if rng.below(100) < 50 {
                config.faults.enabled.push(kind);
            }
        }
        config.faults.pause_count = rng.between(1, 4) as u32;
        config.faults.wipe_count = rng.between(1, 2) as u32;
        // Mostly tiny, so that flushes and compactions (and crashes in them)
        // happen in most runs; now and then large enough that none does.
        let memtable = *rng.pick(&[1 << 10, 1 << 10, 2 << 10, 2 << 10, 4 << 10, 4 << 10, 8 << 10, 256 << 10]);
        config.storage = StorageMix {
            memtable_bytes_max: memtable,
            block_bytes: *rng.pick(&[128, 256, 1024, 4096]),
            block_cache_bytes_max: *rng.pick(&[0, 8 << 10, 1 << 20]),
            l0_tables_max: rng.between(2, 3) as u32,
            table_bytes_target: memtable.max(4 << 10) * rng.between(1, 2),
            level_base_bytes: memtable * rng.between(2, 8),
            level_size_ratio: rng.between(2, 8) as u32,
        };
        // Most runs are as long as ever; some much shorter, some much longer,
        // with as many more operations and faults.
        config.safety_ms = *rng.pick(&[5_000, 20_000, 20_000, 20_000, 60_000, 120_000]);
        let scale = (config.safety_ms / 20_000).max(1) as u32;
        config.workload.ops = (config.workload.ops * config.safety_ms as u32 / 20_000).max(60);
        config.faults.scheduled_count *= scale;
        config.faults.crash_count *= scale;
        config.faults.pause_count *= scale;
        if rng.below(5) == 0 {
            config.workload.keys = rng.between(30, 300) as u32;
        }
        if rng.below(3) == 0 {
            config.sync_interval_ms = Some(PERIODIC_SYNC_MS);
        }
        let mut rng = SimRng::new(seed, Stream::Upgrade);
        config.format_1_upgrade = rng.below(100) < UPGRADE_PERCENT;
        config
    }

    /// Reconciles the draws and pins: the cluster holds N nodes at least,
    /// and the faults that no property could survive are left out (see
    /// `with_replicas` and `with_periodic_syncs`).
    pub fn settled(mut self) -> SimConfig {
        let replicas = self.replicas;
        self = self.with_replicas(replicas);
        if let Some(interval_ms) = self.sync_interval_ms {
            self = self.with_periodic_syncs(interval_ms);
        }
        self
    }

    /// The draw of earlier releases: three to seven nodes, N mostly 3, every
    /// write synced, one storage shape family and 20 simulated seconds. Kept
    /// so that the seeds that once found a bug run the configuration they
    /// found it in.
    pub fn classic(seed: u64) -> SimConfig {
        let mut rng = SimRng::new(seed, Stream::Config);
        let nodes = rng.between(3, 7);
        let replicas = (*rng.pick(&[2u8, 3, 3, 3, 3, 5])).min(nodes as u8);
        let enabled: Vec<FaultKind> =
            FaultKind::ALL[..FaultKind::CLASSIC].iter().copied().filter(|_| rng.below(100) < 60).collect();
        let per_million = |rng: &mut SimRng, max: u64| rng.between(1_000, max) as u32;
        let faults = FaultMix {
            drop_per_million: per_million(&mut rng, 100_000),
            duplicate_per_million: per_million(&mut rng, 50_000),
            reorder_per_million: per_million(&mut rng, 100_000),
            scheduled_count: rng.between(2, 10) as u32,
            crash_count: rng.between(1, 12) as u32,
            read_corrupt_per_million: rng.between(1_000, 20_000) as u32,
            bit_rot_per_million: rng.between(5_000, 50_000) as u32,
            sync_fail_per_million: rng.between(500, 10_000) as u32,
            pause_count: 0,
            wipe_count: 0,
            enabled,
        };
        let memtable_bytes_max = *rng.pick(&[2 << 10, 4 << 10, 16 << 10, 256 << 10]);
        let storage = StorageMix {
            memtable_bytes_max,
            block_bytes: *rng.pick(&[256, 1024, 4096]),
            block_cache_bytes_max: *rng.pick(&[0, 8 << 10, 1 << 20]),
            l0_tables_max: rng.between(2, 4) as u32,
            table_bytes_target: memtable_bytes_max.max(4 << 10),
            level_base_bytes: memtable_bytes_max * 4,
            level_size_ratio: 4,
        };
        let workload = WorkloadMix {
            clients: rng.between(2, 6) as u32,
            keys: rng.between(2, 12) as u32,
            ops: rng.between(150, 400) as u32,
            weights: [rng.between(2, 6) as u32, rng.between(2, 6) as u32, rng.between(0, 2) as u32],
            context_percent: rng.between(30, 90) as u32,
            overwrite_percent: rng.between(0, 100) as u32,
            strict: rng.coin(),
            think_ms_max: rng.between(5, 60),
        };
        let sync_us_max = *rng.pick(&[1_000, 3_000, 20_000, 100_000]);
        SimConfig {
            seed,
            nodes,
            replicas,
            faults,
            workload,
            safety_ms: 20_000,
            sync_us_max,
            storage,
            sync_interval_ms: None,
            format_1_upgrade: false,
            settle_ms: None,
            hints_max: None,
            trace: true,
        }
    }

    /// Keeps only the faults in `kinds` (pinning a seed's mix by hand).
    pub fn with_faults_only(mut self, kinds: &[FaultKind]) -> SimConfig {
        self.faults.enabled = kinds.to_vec();
        self
    }

    pub fn with_nodes(mut self, nodes: u64) -> SimConfig {
        self.nodes = nodes;
        self.replicas = self.replicas.min(nodes as u8);
        self
    }

    /// Pins the replica count N, growing the cluster to N nodes if need be.
    /// With one replica, a rotting or wiped disk loses what it acknowledged
    /// and no other copy can restore it, so bit rot and wipes are left out
    /// of such runs: the properties could not hold.
    pub fn with_replicas(mut self, replicas: u8) -> SimConfig {
        self.replicas = replicas;
        self.nodes = self.nodes.max(u64::from(replicas));
        if replicas < 2 {
            self.faults.enabled.retain(|kind| !matches!(kind, FaultKind::BitRot | FaultKind::Wipe));
        }
        self
    }

    /// Nodes sync every `interval_ms` and acknowledge without waiting for
    /// it. Failed syncs are left out of such runs: after a failed fsync the
    /// kernel may drop what it was handed, which loses acknowledged writes
    /// by design, so no property could hold.
    pub fn with_periodic_syncs(mut self, interval_ms: u64) -> SimConfig {
        self.sync_interval_ms = Some(interval_ms.max(1));
        self.faults.enabled.retain(|kind| *kind != FaultKind::SyncFailure);
        self
    }

    /// Every write waits for its fsync.
    pub fn with_always_syncs(mut self) -> SimConfig {
        self.sync_interval_ms = None;
        self
    }

    /// Pins whether the nodes are upgraded from storage format 1.
    pub fn with_format_1_upgrade(mut self, upgrade: bool) -> SimConfig {
        self.format_1_upgrade = upgrade;
        self
    }

    pub fn with_hints_max(mut self, hints_max: u64) -> SimConfig {
        self.hints_max = Some(hints_max);
        self
    }

    pub fn with_ops(mut self, ops: u32) -> SimConfig {
        self.workload.ops = ops;
        self
    }

    /// The one disk that rots, when bit rot is on.
    pub fn bad_disk(&self) -> Option<u64> {
        self.faults.has(FaultKind::BitRot).then(|| self.bad_node())
    }

    /// The one node whose data is wiped, when wipes are on: the same as the
    /// rotting disk's, so that at most one node loses what it acknowledged.
    pub fn wiped_node(&self) -> Option<u64> {
        self.faults.has(FaultKind::Wipe).then(|| self.bad_node())
    }

    fn bad_node(&self) -> u64 {
        self.seed % self.nodes + 1
    }

    /// Whether some node may lose what it acknowledged (a rotting or wiped disk).
    fn loses_acknowledged(&self) -> bool {
        self.faults.has(FaultKind::BitRot) || self.faults.has(FaultKind::Wipe)
    }

    /// Writes need this many acknowledgements at least. A rotting or wiped
    /// disk loses what it acknowledged, so with either every write must also
    /// be acknowledged by a healthy replica.
    pub fn write_replicas_min(&self) -> u8 {
        if self.loses_acknowledged() { 2.min(self.replicas) } else { 1 }
    }

    /// Whether property 7 holds for this run: R + W > N everywhere, and no
    /// disk that may lose acknowledged data.
    pub fn strict_checked(&self) -> bool {
        self.workload.strict && !self.loses_acknowledged()
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.nodes) {
            return Err(format!("nodes must be 1..=64, not {}", self.nodes));
        }
        if self.replicas == 0 || u64::from(self.replicas) > self.nodes {
            return Err(format!("replicas must be 1..={}, not {}", self.nodes, self.replicas));
        }
        if self.workload.keys == 0 || self.workload.clients == 0 {
            return Err("a workload needs at least one key and one client".into());
        }
        Ok(())
    }
}

impl fmt::Display for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<&str> = self.faults.enabled.iter().map(|kind| kind.name()).collect();
        let workload = &self.workload;
        write!(
            f,
            "nodes={} N={} clients={} keys={} ops={} strict={} run={}s memtable={}B sync<={}us faults=[{}]",
            self.nodes,
            self.replicas,
            workload.clients,
            workload.keys,
            workload.ops,
            workload.strict,
            self.safety_ms / 1000,
            self.storage.memtable_bytes_max,
            self.sync_us_max,
            faults.join(",")
        )?;
        if let Some(interval_ms) = self.sync_interval_ms {
            write!(f, " fsync=periodic/{interval_ms}ms")?;
        }
        if self.format_1_upgrade {
            write!(f, " upgrade=format-1")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_draws_the_same_configuration() {
        assert_eq!(SimConfig::from_seed(11), SimConfig::from_seed(11));
        let distinct =
            (0..50).map(SimConfig::from_seed).filter(|config| config != &SimConfig::from_seed(0)).count();
        assert_eq!(distinct, 49);
        for seed in 0..200 {
            assert_eq!(SimConfig::from_seed(seed).validate(), Ok(()));
        }
    }

    #[test]
    fn every_fault_is_on_in_some_seed_and_off_in_another() {
        for kind in FaultKind::ALL {
            let on = (0..100).filter(|&seed| SimConfig::from_seed(seed).faults.has(kind)).count();
            assert!(on > 20 && on < 90, "{kind} on in {on} of 100 seeds");
        }
    }

    #[test]
    fn the_swarm_draws_every_deployment_choice_and_keeps_runs_possible() {
        let configs: Vec<SimConfig> = (0..1000).map(SimConfig::from_seed).collect();
        for replicas in 1..=5u8 {
            let drawn = configs.iter().filter(|config| config.replicas == replicas).count();
            assert!((150..250).contains(&drawn), "N={replicas} in {drawn} of 1000 seeds");
        }
        let periodic = configs.iter().filter(|config| config.sync_interval_ms.is_some()).count();
        assert!((250..420).contains(&periodic), "periodic syncs in {periodic} of 1000 seeds");
        let upgraded = configs.iter().filter(|config| config.format_1_upgrade).count();
        assert!((220..380).contains(&upgraded), "upgrades from format 1 in {upgraded} of 1000 seeds");
        assert!(configs.iter().any(|config| config.safety_ms > 20_000 && config.workload.ops > 400));
        assert!(configs.iter().any(|config| config.workload.keys > 100));
        for config in &configs {
            assert!(config.nodes >= u64::from(config.replicas));
            if config.replicas < 2 {
                assert!(!config.faults.has(FaultKind::BitRot) && !config.faults.has(FaultKind::Wipe));
            }
            if config.sync_interval_ms.is_some() {
                assert!(!config.faults.has(FaultKind::SyncFailure));
            }
        }
    }

    #[test]
    fn fault_names_parse() {
        assert_eq!("one-way".parse(), Ok(FaultKind::OneWay));
        assert!("meteor".parse::<FaultKind>().unwrap_err().contains("known faults"));
    }
}
