//! A whole simulation run decoded from arbitrary bytes: the form the
//! simulation fuzz target drives, kept here so that a test can replay the
//! inputs the fuzzer found.
//!
//! The first eight bytes seed everything the input does not decide (network
//! delays, the workload, disks). The next bytes pick the cluster (1–5 nodes,
//! N), the fault kinds that act per message or per disk read, the fsync
//! policy and the storage shape. Each further group of six bytes is one
//! scheduled fault: its kind, start, duration and nodes. Runs are short (2 s
//! of faults, a few dozen operations) so that millions of them fit. After
//! healing, a run settles only until every node is up and every message sent
//! under the faults is in, plus two heartbeat intervals, rather than the
//! sweep's fixed 3 s; then come the liveness requests, the wait for
//! the replicas to converge, and final reads, and every check, as in any run.

use keel_core::NodeId;

use crate::config::{FaultKind, PERIODIC_SYNC_MS};
use crate::faults::{Fault, ScheduledFault};
use crate::{RunResult, SimConfig, run_with};

/// At most this many scheduled faults are read from an input.
const FAULTS_MAX: usize = 12;

const SAFETY_MS: u64 = 2_000;
/// How long the healed cluster settles once every node is up (see
/// `SimConfig::settle_ms`): two heartbeat intervals.
const SETTLE_MS: u64 = 500;

/// The fault kinds that are not scheduled but strike per message or read.
const RATES: [FaultKind; 7] = [
    FaultKind::Drop,
    FaultKind::Duplicate,
    FaultKind::Reorder,
    FaultKind::ClockSkew,
    FaultKind::ReadCorruption,
    FaultKind::BitRot,
    FaultKind::SyncFailure,
];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        first
    }
}

fn config(input: &mut Bytes) -> SimConfig {
    let mut seed = [0u8; 8];
    seed.iter_mut().for_each(|byte| *byte = input.byte());
    let mut config = SimConfig::from_seed(u64::from_le_bytes(seed));
    let nodes = u64::from(input.byte() % 5) + 1;
    let replicas = input.byte() % nodes as u8 + 1;
    let rates = input.byte();
    let shape = input.byte();
    config.nodes = nodes;
    config.replicas = replicas;
    config.faults.enabled =
        RATES.iter().enumerate().filter(|(bit, _)| rates & (1 << bit) != 0).map(|(_, kind)| *kind).collect();
    config.sync_interval_ms = (rates & 0x80 != 0).then_some(PERIODIC_SYNC_MS);
    config.storage.memtable_bytes_max = 1 << (10 + u64::from(shape & 3));
    config.storage.l0_tables_max = 2 + u32::from(shape >> 2 & 1);
    config.storage.level_base_bytes = config.storage.memtable_bytes_max * 2;
    config.safety_ms = SAFETY_MS;
    config.settle_ms = Some(SETTLE_MS);
    config.trace = false;
    config.workload.ops = 20 + u32::from(shape >> 3);
    config.workload.keys = 1 + config.workload.keys % 4;
    config
}

/// One scheduled fault from six bytes, or `None` for a kind that the
/// configuration leaves out.
fn fault(config: &SimConfig, bytes: &[u8]) -> Option<ScheduledFault> {
    let node = |byte: u8| NodeId(u64::from(byte) % config.nodes + 1);
    let side = |byte: u8| -> Vec<NodeId> {
        (1..=config.nodes).filter(|id| byte & (1 << (id - 1)) != 0).map(NodeId).collect()
    };
    let at_ms = u64::from(u16::from_le_bytes([bytes[1], bytes[2]])) % SAFETY_MS;
    let duration_ms = 50 + u64::from(bytes[3]) * 32;
    let fault = match bytes[0] % 6 {
        0 => Fault::Partition { side: side(bytes[4]) },
        1 => {
            let from = side(bytes[4]);
            let to = (1..=config.nodes).map(NodeId).filter(|id| !from.contains(id)).collect();
            Fault::OneWay { from, to }
        }
        2 => Fault::Clog { from: node(bytes[4]), to: node(bytes[5]), delay_ms: u64::from(bytes[5]) * 8 },
        3 => Fault::Crash {
            node: node(bytes[4]),
            torn: bytes[5] & 1 != 0,
            power_loss: config.sync_interval_ms.is_none() || bytes[5] & 2 != 0,
        },
        4 => Fault::Pause { node: node(bytes[4]) },
        _ => Fault::Wipe { node: NodeId(config.wiped_node()?) },
    };
    Some(ScheduledFault { at_ms, duration_ms, fault })
}

/// The run `data` describes, or `None` when it describes a configuration
/// the simulator refuses (which the fuzzer then skips).
pub fn run_input(data: &[u8]) -> Option<RunResult> {
    let (config, schedule) = decode(data)?;
    Some(run_with(config, schedule))
}

/// The configuration and fault schedule `data` describes.
pub fn decode(data: &[u8]) -> Option<(SimConfig, Vec<ScheduledFault>)> {
    let mut input = Bytes(data);
    let mut config = config(&mut input);
    // The scheduled faults name their kinds; turn those on, then let the
    // configuration drop what no property could survive (a single replica
    // with a wiped disk, failed syncs under periodic fsync).
    for group in input.0.chunks_exact(6).take(FAULTS_MAX) {
        let kind = [
            FaultKind::Partition,
            FaultKind::OneWay,
            FaultKind::Clog,
            FaultKind::Crash,
            FaultKind::Pause,
            FaultKind::Wipe,
        ][usize::from(group[0] % 6)];
        if !config.faults.enabled.contains(&kind) {
            config.faults.enabled.push(kind);
        }
    }
    let config = config.settled();
    config.validate().ok()?;
    let mut schedule: Vec<ScheduledFault> =
        input.0.chunks_exact(6).take(FAULTS_MAX).filter_map(|group| fault(&config, group)).collect();
    // A partition or one-way link needs both sides non-empty.
    schedule.retain(|scheduled| match &scheduled.fault {
        Fault::Partition { side } | Fault::OneWay { from: side, .. } => {
            !side.is_empty() && side.len() < config.nodes as usize
        }
        Fault::Clog { from, to, .. } => from != to,
        _ => true,
    });
    schedule.sort_by_key(|scheduled| scheduled.at_ms);
    Some((config, schedule))
}
