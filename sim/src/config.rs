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
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
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
    ];

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
}

impl SimConfig {
    /// Draws a whole configuration from `seed`.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut rng = SimRng::new(seed, Stream::Config);
        let nodes = rng.between(3, 7);
        let replicas = (*rng.pick(&[2u8, 3, 3, 3, 3, 5])).min(nodes as u8);
        let enabled: Vec<FaultKind> = FaultKind::ALL.into_iter().filter(|_| rng.below(100) < 60).collect();
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
            enabled,
        };
        let storage = StorageMix {
            memtable_bytes_max: *rng.pick(&[2 << 10, 4 << 10, 16 << 10, 256 << 10]),
            block_bytes: *rng.pick(&[256, 1024, 4096]),
            block_cache_bytes_max: *rng.pick(&[0, 8 << 10, 1 << 20]),
            l0_tables_max: rng.between(2, 4) as u32,
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

    /// Pins the replica count N. With one replica a rotting disk loses what
    /// it acknowledged and no other copy can restore it, so bit rot is left
    /// out of such runs: the properties could not hold.
    pub fn with_replicas(mut self, replicas: u8) -> SimConfig {
        self.replicas = replicas;
        if replicas < 2 {
            self.faults.enabled.retain(|kind| *kind != FaultKind::BitRot);
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

    pub fn with_ops(mut self, ops: u32) -> SimConfig {
        self.workload.ops = ops;
        self
    }

    /// The one disk that rots, when bit rot is on.
    pub fn bad_disk(&self) -> Option<u64> {
        self.faults.has(FaultKind::BitRot).then(|| self.seed % self.nodes + 1)
    }

    /// Writes need this many acknowledgements at least. A rotting disk can
    /// lose what it acknowledged, so with bit rot every write must also be
    /// acknowledged by a healthy replica.
    pub fn write_replicas_min(&self) -> u8 {
        if self.faults.has(FaultKind::BitRot) { 2.min(self.replicas) } else { 1 }
    }

    /// Whether property 7 holds for this run: R + W > N everywhere, and no
    /// disk that may lose acknowledged data.
    pub fn strict_checked(&self) -> bool {
        self.workload.strict && !self.faults.has(FaultKind::BitRot)
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
            "nodes={} N={} clients={} keys={} ops={} strict={} sync<={}us faults=[{}]",
            self.nodes,
            self.replicas,
            workload.clients,
            workload.keys,
            workload.ops,
            workload.strict,
            self.sync_us_max,
            faults.join(",")
        )?;
        if let Some(interval_ms) = self.sync_interval_ms {
            write!(f, " fsync=periodic/{interval_ms}ms")?;
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
    fn fault_names_parse() {
        assert_eq!("one-way".parse(), Ok(FaultKind::OneWay));
        assert!("meteor".parse::<FaultKind>().unwrap_err().contains("known faults"));
    }
}
