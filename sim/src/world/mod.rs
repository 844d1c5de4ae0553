//! The simulated world: nodes with clocks and disks, a network, clients, and
//! one queue of events in simulated time. `run` plays a configuration from
//! its seed, then checks what happened.

mod clients;
mod liveness;
mod storage;

use std::collections::BTreeMap;
use std::time::Duration;

use keel_core::NodeId;
use keel_core::client::{Consistency, RequestId};
use keel_core::disk::{CrashMode, MemDisk};
use keel_core::lsm::job::{Job, JobId};
use keel_core::lsm::{SyncPolicy, SyncRequest};
use keel_core::merkle::{ExchangeConfig, TreeShape};
use keel_core::message::Message;
use keel_core::node::{self, Input, Node, NodeStats, Output};
use keel_core::ring::Member;
use keel_core::version::Dot;

use self::clients::Client;
use self::liveness::Stage;
use crate::check::placement::Placement;
use crate::check::{self, Property, Setting, Violation, model};
use crate::clock::Clock;
use crate::config::{FaultKind, SimConfig};
use crate::faults::{Fault, ScheduledFault};
use crate::history::{Action, History, OpId, Phase};
use crate::network::Network;
use crate::rng::{SimRng, Stream, splitmix};
use crate::trace::Trace;

const MS: u64 = 1_000_000;
/// What a storage job costs in simulated time per byte it reads or writes
/// (about 100 MB/s), on top of one sync.
const JOB_NS_PER_BYTE: u64 = 10;
/// Vnodes of each (equally weighted) node.
const VNODES_PER_NODE: u32 = 16;
/// Time between the starts of two exchanges on a node.
const ANTI_ENTROPY_INTERVAL_MS: u64 = 100;
/// A run that processes more events than this is stuck in a loop.
const EVENTS_MAX: u64 = 50_000_000;

/// What a run did and found.
#[derive(Debug)]
pub struct RunResult {
    pub config: SimConfig,
    pub schedule: Vec<ScheduledFault>,
    pub violations: Vec<Violation>,
    pub trace: u64,
    pub history: History,
    pub stats: RunStats,
    /// Each node at the end of the run.
    pub nodes: Vec<NodeSummary>,
}

/// One node at the end of a run, for reports.
#[derive(Clone, Debug)]
pub struct NodeSummary {
    pub node: NodeId,
    pub up: bool,
    pub poisoned: bool,
    pub incarnation: Option<u32>,
    pub stats: Option<node::NodeStats>,
}

impl RunResult {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The property of the first violation, if any.
    pub fn failed_property(&self) -> Option<Property> {
        self.violations.first().map(|violation| violation.property)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub events: u64,
    pub sim_ns: u64,
    pub messages_sent: u64,
    pub messages_lost: u64,
    pub syncs: u64,
    /// Flushes and compactions handed out as jobs.
    pub jobs: u64,
    pub crashes: u64,
    /// Crashes that took the machine down under periodic syncs.
    pub power_losses: u64,
    pub pauses: u64,
    pub wipes: u64,
    /// Acknowledged writes that power losses or wipes may have lost, which
    /// the checkers therefore took as indeterminate.
    pub writes_excused: u64,
    pub ops: u64,
    pub ops_failed: u64,
    pub ops_indeterminate: u64,
    pub read_repairs: u64,
    /// Nodes restarted after their storage failed a sync.
    pub storage_restarts: u64,
    /// Disks replaced because they no longer opened.
    pub disks_replaced: u64,
    /// Restarts over a directory rewritten as the format 1 release left it.
    pub upgrades: u64,
    /// Storage work across every node's last life (restarts reset them).
    pub flushes: u64,
    pub compactions: u64,
    pub corruption_detected: u64,
    /// Engine tombstones (records removed outright) that nodes wrote.
    pub tombstones_written: u64,
    /// Engine tombstones (records removed outright) that compactions dropped.
    pub tombstones_dropped: u64,
    /// Hints fallback nodes stored for replicas that were down, handed
    /// over, and dropped (at a bound, too old, or unreadable).
    pub hints_stored: u64,
    pub hints_delivered: u64,
    pub hints_dropped: u64,
    /// Anti-entropy exchanges run to their end, and keys they repaired.
    pub exchanges_completed: u64,
    pub keys_repaired: u64,
    /// Simulated time from the end of the liveness ops until the replicas
    /// agreed and held no hint, when they did.
    pub convergence_ns: Option<u64>,
    /// Disk faults injected across the run.
    pub read_corruptions: u64,
    pub bit_rots: u64,
    pub sync_failures: u64,
    pub torn_tails: u64,
}

/// Storage work of a node's earlier lives (a restart resets its counters).
#[derive(Clone, Copy, Debug, Default)]
struct StorageWork {
    flushes: u64,
    compactions: u64,
    corruption_detected: u64,
    tombstones_written: u64,
    tombstones_dropped: u64,
    hints_stored: u64,
    hints_delivered: u64,
    hints_dropped: u64,
    exchanges_completed: u64,
    keys_repaired: u64,
}

impl StorageWork {
    fn add(&mut self, stats: &NodeStats) {
        let engine = &stats.engine;
        self.flushes += engine.flushes;
        self.compactions += engine.compactions;
        self.corruption_detected += engine.corruption_detected;
        self.tombstones_written += engine.tombstones_written;
        self.tombstones_dropped += engine.tombstones_dropped;
        self.hints_stored += stats.hints_stored;
        self.hints_delivered += stats.hints_delivered;
        self.hints_dropped += stats.hints_dropped;
        self.exchanges_completed += stats.anti_entropy.exchanges_completed;
        self.keys_repaired += stats.anti_entropy.keys_repaired;
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        bytes: Vec<u8>,
    },
    Timer {
        host: usize,
        boot: u32,
    },
    SyncDone {
        host: usize,
        boot: u32,
        request: SyncRequest,
        asked_ns: u64,
    },
    /// A flush or compaction the node handed out is done.
    JobDone {
        host: usize,
        boot: u32,
        job: JobId,
    },
    ClientWake {
        client: usize,
    },
    ClientGiveUp {
        op: OpId,
    },
    FaultStart(usize),
    FaultEnd(usize),
    /// The supervisor restarts a node whose storage failed.
    Restart {
        host: usize,
        boot: u32,
    },
    /// The supervisor tries again to open a node that failed to open.
    Reopen {
        host: usize,
        boot: u32,
    },
    Stage(Stage),
    /// A final read taken again (see `retry_final_read`).
    FinalRead {
        host: usize,
        key: u32,
    },
}

impl Event {
    fn code(&self) -> u64 {
        match self {
            Event::Deliver { .. } => 1,
            Event::Timer { .. } => 2,
            Event::SyncDone { .. } => 3,
            Event::ClientWake { .. } => 4,
            Event::ClientGiveUp { .. } => 5,
            Event::FaultStart(_) => 6,
            Event::FaultEnd(_) => 7,
            Event::Stage(_) => 8,
            Event::Restart { .. } => 9,
            Event::Reopen { .. } => 10,
            Event::JobDone { .. } => 11,
            Event::FinalRead { .. } => 12,
        }
    }
}

#[derive(Debug)]
struct Host {
    id: NodeId,
    node: Option<Node>,
    disk: MemDisk,
    clock: Clock,
    /// Counts restarts, so events meant for an earlier life are ignored.
    boot: u32,
    timer_at: Option<u64>,
    sync_latency_ns: u64,
    /// Disks put in after the original one no longer opened.
    disk_generation: u32,
    /// Failed attempts to open since the last success.
    open_failures: u32,
    /// The disk was replaced since the node's claims were last checked:
    /// the node starts over with nothing it claimed.
    disk_replaced: bool,
    /// Faults that struck this disk up to the last check (bit rots, read
    /// corruptions): what the next check may blame a loss on is the rest.
    faults_checked: u64,
    /// Corrupt copies the node replaced with fresh writes since the last
    /// check, each of which may drop what it had claimed for its key.
    copies_replaced: u64,
    /// The incarnation the node had when it last opened.
    incarnation: u32,
    /// Storage counters of the node's earlier lives.
    engine_totals: StorageWork,
    /// Jobs handed out by the node and not yet done.
    jobs: Vec<Job>,
    /// Under periodic syncs, a crash waits for the node's next input and
    /// strikes right after it, before any timer due at that instant (the
    /// burst's write-out) runs: the moment a reply shown too early is lost.
    crash_after_input: bool,
    /// The node is stopped (a pause fault): what arrives waits in `backlog`.
    paused: bool,
    backlog: Vec<Input>,
    /// When the node last asked for a sync that then succeeded: everything
    /// it wrote before survives a power loss.
    synced_asked_ns: u64,
    /// The node still runs the release of storage format 1: its next
    /// restart upgrades it (see `SimConfig::format_1_upgrade`).
    on_format_1: bool,
}

/// A node lost what it held since `durable_before_ns` (a power loss under
/// periodic syncs, or a wipe): writes it acknowledged since may be lost.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Loss {
    pub node: NodeId,
    pub at_ns: u64,
    pub durable_before_ns: u64,
}

pub(crate) struct World {
    config: SimConfig,
    node_config: node::Config,
    now: u64,
    queue: BTreeMap<(u64, u64), Event>,
    seq: u64,
    hosts: Vec<Host>,
    network: Network,
    clients: Vec<Client>,
    history: History,
    workload: SimRng,
    node_seeds: SimRng,
    trace: Trace,
    /// Which op each request in flight at a host belongs to.
    owners: BTreeMap<(usize, RequestId), OpId>,
    request_next: u64,
    schedule: Vec<ScheduledFault>,
    /// Every dot seen on the wire and the hash of its value: one dot must
    /// never carry two values.
    dots: BTreeMap<Dot, u64>,
    claims: storage::Claims,
    /// Power losses and wipes: where acknowledged writes may be lost.
    losses: Vec<Loss>,
    /// Each key's replicas, as the checkers compute them.
    placement: Placement,
    /// The safety phase's time is up, but not all its operations have run.
    heal_deferred: bool,
    violations: Vec<Violation>,
    stats: RunStats,
    stage: Stage,
    checks_pending: usize,
    /// When the liveness ops ended (simulated ns).
    converge_since: u64,
    /// Keys whose final read was taken again (see `retry_final_read`).
    final_retried: std::collections::BTreeSet<u32>,
    /// When a node last opened.
    last_open_ns: u64,
    done: bool,
}

/// Runs `config` with the fault schedule its seed draws.
pub fn run(config: SimConfig) -> RunResult {
    let schedule = crate::faults::schedule(&config);
    run_with(config, schedule)
}

/// Runs `config` with an explicit fault schedule (used when shrinking).
pub fn run_with(config: SimConfig, schedule: Vec<ScheduledFault>) -> RunResult {
    let mut world = World::new(config, schedule);
    // A node's assertion that fails ends the run as a violation of its
    // seed, with the history so far, rather than ending the whole sweep.
    let played = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.play()));
    if let Err(panic) = played {
        let text =
            panic.downcast_ref::<String>().map(String::as_str).or(panic.downcast_ref::<&str>().copied());
        let message = format!("a node's assertion failed: {}", text.unwrap_or("(no message)"));
        world.violate(Property::Invariant, message, vec![]);
    }
    world.finish()
}

impl World {
    /// Handles events until the run is done or out of events.
    fn play(&mut self) {
        self.start();
        while !self.done {
            let Some(((at, _), event)) = self.queue.pop_first() else { break };
            self.now = at;
            self.stats.events += 1;
            self.trace.record(&[at, event.code()]);
            self.handle(event);
            if self.stats.events > EVENTS_MAX {
                self.violate(Property::Convergence, "the run did not finish within its event budget", vec![]);
                break;
            }
        }
    }

    fn new(config: SimConfig, schedule: Vec<ScheduledFault>) -> World {
        let seed = config.seed;
        let mut node_config = node::Config {
            members: (1..=config.nodes).map(|id| Member::new(NodeId(id))).collect(),
            // Every assertion of the node, in every build: a failed one
            // stops the run at the step that broke it.
            check_invariants: true,
            ..node::Config::default()
        };
        node_config.ring.replicas = config.replicas;
        if let Some(hints_max) = config.hints_max {
            node_config.hints.count_max = hints_max;
        }
        node_config.ring.vnodes_per_weight = VNODES_PER_NODE;
        // Small trees and frequent exchanges: runs hold a few hundred keys
        // and have a minute of simulated time to converge.
        node_config.anti_entropy = node::AntiEntropyConfig {
            interval: Duration::from_millis(ANTI_ENTROPY_INTERVAL_MS),
            exchanges_in_flight_max: 4,
            request_timeout: Duration::from_secs(1),
            // Often enough that a record rotted in the safety phase is
            // found missing within the liveness phase's bound.
            rebuild_interval: Duration::from_secs(10),
            shape: TreeShape::new(8, 4).expect("a valid shape"),
            exchange: ExchangeConfig {
                confirm_delay: Duration::from_millis(300),
                ..ExchangeConfig::default()
            },
            ..node::AntiEntropyConfig::default()
        };
        let storage = &config.storage;
        let engine = &mut node_config.engine;
        engine.memtable_bytes_max = storage.memtable_bytes_max;
        engine.block_bytes = storage.block_bytes;
        engine.block_cache_bytes_max = storage.block_cache_bytes_max;
        // Small chunks, so that runs at `fsync always` cross many of them
        // (periodic runs append); no draw of its own, which would change
        // every seed's run.
        engine.wal_preallocate_bytes = u64::from(storage.block_bytes);
        engine.l0_tables_max = storage.l0_tables_max;
        engine.table_bytes_target = storage.table_bytes_target;
        engine.level_base_bytes = storage.level_base_bytes;
        engine.level_size_ratio = storage.level_size_ratio;
        engine.compress_values_over_bytes = 512;
        if let Some(interval_ms) = config.sync_interval_ms {
            engine.sync_policy = SyncPolicy::Periodic { interval_ms };
        }
        let mut clocks = SimRng::new(seed, Stream::Nodes);
        let hosts: Vec<Host> = (1..=config.nodes)
            .map(|id| Host {
                id: NodeId(id),
                node: None,
                disk: MemDisk::new(splitmix(seed ^ id)),
                clock: if config.faults.has(FaultKind::ClockSkew) {
                    Clock::skewed(&mut clocks)
                } else {
                    Clock::PERFECT
                },
                boot: 0,
                timer_at: None,
                sync_latency_ns: clocks.between(20_000, config.sync_us_max * 1_000),
                disk_generation: 0,
                open_failures: 0,
                disk_replaced: false,
                faults_checked: 0,
                copies_replaced: 0,
                incarnation: 0,
                jobs: Vec::new(),
                engine_totals: StorageWork::default(),
                crash_after_input: false,
                paused: false,
                backlog: Vec::new(),
                synced_asked_ns: 0,
                on_format_1: config.format_1_upgrade,
            })
            .collect::<Vec<Host>>();
        for host in &hosts {
            host.disk.set_faults(storage::disk_faults(&config, host.id));
        }
        let clients = (0..config.workload.clients).map(|_| Client::new()).collect();
        let config_periodic = config.sync_interval_ms.is_some();
        let trace = Trace::new(config.trace);
        let ids: Vec<NodeId> = hosts.iter().map(|host| host.id).collect();
        let placement = Placement::new(&ids, VNODES_PER_NODE, config.replicas);
        World {
            network: Network::new(seed, config.faults.clone()),
            workload: SimRng::new(seed, Stream::Workload),
            node_seeds: SimRng::new(seed, Stream::Disks),
            config,
            node_config,
            now: 0,
            queue: BTreeMap::new(),
            seq: 0,
            hosts,
            clients,
            history: History::default(),
            trace,
            owners: BTreeMap::new(),
            request_next: 0,
            schedule,
            dots: BTreeMap::new(),
            claims: storage::Claims::new(config_periodic),
            losses: Vec::new(),
            placement,
            heal_deferred: false,
            violations: Vec::new(),
            stats: RunStats::default(),
            stage: Stage::Safety,
            checks_pending: 0,
            converge_since: 0,
            final_retried: Default::default(),
            last_open_ns: 0,
            done: false,
        }
    }

    fn start(&mut self) {
        for host in 0..self.hosts.len() {
            self.open_node(host);
        }
        for (index, fault) in self.schedule.clone().iter().enumerate() {
            self.at(fault.at_ms * MS, Event::FaultStart(index));
        }
        for client in 0..self.clients.len() {
            let delay = self.workload.below(20 * MS);
            self.at(delay, Event::ClientWake { client });
        }
        self.at(self.config.safety_ms * MS, Event::Stage(Stage::Heal));
    }

    fn at(&mut self, time: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((time.max(self.now), self.seq), event);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, bytes } => self.deliver(from, to, &bytes),
            Event::Timer { host, boot } => self.fire_timer(host, boot),
            Event::SyncDone { host, boot, request, asked_ns } => {
                self.complete_sync(host, boot, request, asked_ns)
            }
            Event::JobDone { host, boot, job } => self.complete_job(host, boot, job),
            Event::ClientWake { client } => self.client_wake(client),
            Event::ClientGiveUp { op } => self.client_give_up(op),
            Event::FaultStart(index) => self.fault_start(index),
            Event::FaultEnd(index) => self.fault_end(index),
            Event::Restart { host, boot } => self.restart(host, boot),
            Event::Reopen { host, boot } => {
                if self.hosts[host].boot == boot && self.hosts[host].node.is_none() {
                    self.open_node(host);
                }
            }
            Event::Stage(stage) => self.enter(stage),
            Event::FinalRead { host, key } => {
                let checker = self.clients.len() as u32;
                self.issue(checker, host, Phase::Final, key, Action::Get { read: Consistency::All });
            }
        }
    }

    fn violate(&mut self, property: Property, message: impl Into<String>, ops: Vec<OpId>) {
        self.violations.push(Violation::new(property, message, ops));
    }

    fn open_node(&mut self, host: usize) {
        self.upgrade_from_format_1(host);
        let seed = self.node_seeds.u64();
        let transient = self.transient_disk_faults();
        let disks_max = self.disks_max();
        let state = &mut self.hosts[host];
        let now = state.clock.now(self.now);
        let disk = Box::new(state.disk.clone());
        match Node::open(self.node_config.clone(), state.id, seed, disk, now) {
            Ok(node) => {
                self.last_open_ns = self.now;
                state.node = Some(node);
                state.timer_at = None;
                state.open_failures = 0;
                if state.boot > 0 {
                    self.check_recovered(host);
                }
                let state = &mut self.hosts[host];
                state.incarnation = state.node.as_ref().map_or(0, Node::incarnation);
                self.drain(host);
            }
            // A failed sync or a corrupted read while opening may not happen
            // again: the supervisor tries a few more times.
            Err(node::OpenError::Storage(_) | node::OpenError::RecordsLost(_))
                if transient && state.open_failures < 5 =>
            {
                state.open_failures += 1;
                let boot = state.boot;
                self.at(self.now + 500 * MS, Event::Reopen { host, boot });
            }
            // The bad disk no longer opens: an operator replaces it.
            Err(_) if self.config.bad_disk() == Some(state.id.0) && state.disk_generation < disks_max => {
                self.replace_disk(host);
                self.open_node(host);
            }
            Err(error) => {
                let message = format!("{} failed to open: {error}", state.id);
                self.violate(Property::LocalStorage, message, vec![]);
            }
        }
    }

    /// Hands `input` to the host's node, if it is up, and carries out the
    /// outputs.
    fn input(&mut self, host: usize, input: Input) {
        if self.hosts[host].paused {
            if self.hosts[host].node.is_some() {
                self.hosts[host].backlog.push(input);
            }
            return;
        }
        let now = self.hosts[host].clock.now(self.now);
        let Some(node) = self.hosts[host].node.as_mut() else { return };
        node.handle_input(now, input);
        self.drain(host);
        if std::mem::take(&mut self.hosts[host].crash_after_input) {
            self.crash(host, CrashMode::ProcessOnly);
        }
    }

    fn drain(&mut self, host: usize) {
        loop {
            let Some(node) = self.hosts[host].node.as_mut() else { return };
            let Some(output) = node.poll_output() else { break };
            match output {
                Output::Send { to, message } => {
                    let from = self.hosts[host].id;
                    self.claims.sent(from, to, &message, self.now);
                    self.send(from, to, &message);
                }
                Output::Reply { id, reply } => self.on_reply(host, id, reply),
                Output::Sync(request) => {
                    let state = &self.hosts[host];
                    let (boot, latency) = (state.boot, state.sync_latency_ns);
                    self.stats.syncs += 1;
                    let asked_ns = self.now;
                    self.at(self.now + latency, Event::SyncDone { host, boot, request, asked_ns });
                }
                Output::Job(job) => {
                    // Done after time in proportion to its bytes, while the
                    // node serves; like a sync, it meets the disk's faults
                    // when it completes.
                    let state = &mut self.hosts[host];
                    let (boot, id) = (state.boot, job.id);
                    let cost = state.sync_latency_ns + job.bytes().saturating_mul(JOB_NS_PER_BYTE);
                    state.jobs.push(job);
                    self.stats.jobs += 1;
                    self.at(self.now + cost, Event::JobDone { host, boot, job: id });
                }
                Output::Event(node::Event::ReadRepair { replicas }) => {
                    self.stats.read_repairs += replicas.len() as u64;
                }
                Output::Event(node::Event::StorageFailed { .. }) => {
                    self.stats.storage_restarts += 1;
                    self.supervise(host);
                }
                Output::Event(_) => {}
            }
        }
        self.check_invariants(host);
        self.schedule_timer(host);
    }

    fn check_invariants(&mut self, host: usize) {
        let Some(node) = self.hosts[host].node.as_ref() else { return };
        if let Err(error) = node.invariants() {
            let message = format!("{}: {error}", self.hosts[host].id);
            self.violate(Property::Invariant, message, vec![]);
            self.done = true;
        }
    }

    fn schedule_timer(&mut self, host: usize) {
        let state = &self.hosts[host];
        let Some(deadline) = state.node.as_ref().and_then(Node::poll_timeout) else { return };
        let at = state.clock.sim_time_of(deadline).max(self.now);
        if state.timer_at.is_none_or(|scheduled| at < scheduled) {
            let boot = state.boot;
            self.hosts[host].timer_at = Some(at);
            self.at(at, Event::Timer { host, boot });
        }
    }

    fn fire_timer(&mut self, host: usize, boot: u32) {
        let state = &mut self.hosts[host];
        if state.boot != boot || state.timer_at != Some(self.now) {
            return;
        }
        state.timer_at = None;
        // A stopped node misses its timers; it looks at the time on resuming.
        if state.paused {
            return;
        }
        let now = state.clock.now(self.now);
        if let Some(node) = state.node.as_mut() {
            node.handle_timeout(now);
            self.drain(host);
        }
    }

    fn complete_sync(&mut self, host: usize, boot: u32, request: SyncRequest, asked_ns: u64) {
        if self.hosts[host].boot != boot || self.hosts[host].node.is_none() {
            return;
        }
        let result = request.run(&self.hosts[host].disk);
        self.trace.record(&[u64::from(result.is_ok())]);
        if result.is_ok() {
            let state = &mut self.hosts[host];
            state.synced_asked_ns = state.synced_asked_ns.max(asked_ns);
            self.claims.synced(state.id, asked_ns);
        }
        self.input(host, Input::Synced { request, result });
    }

    fn complete_job(&mut self, host: usize, boot: u32, id: JobId) {
        let state = &mut self.hosts[host];
        if state.boot != boot || state.node.is_none() {
            return;
        }
        let Some(at) = state.jobs.iter().position(|job| job.id == id) else { return };
        let job = state.jobs.swap_remove(at);
        let done = job.run(&state.disk);
        self.input(host, Input::JobDone(done));
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: &Message) {
        self.stats.messages_sent += 1;
        // Room for most messages: grown from empty, the buffer would be
        // reallocated several times per message.
        let mut bytes = Vec::with_capacity(256);
        if let Err(error) = message.encode(&mut bytes) {
            self.violate(Property::Invariant, format!("{from} could not encode a message: {error}"), vec![]);
            return;
        }
        let delays = self.network.plan(from, to);
        if delays.is_empty() {
            self.stats.messages_lost += 1;
        }
        let copies = delays.len();
        for (copy, delay) in delays.into_iter().enumerate() {
            let bytes = if copy + 1 == copies { std::mem::take(&mut bytes) } else { bytes.clone() };
            self.at(self.now + delay, Event::Deliver { from, to, bytes });
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, bytes: &[u8]) {
        self.trace.record_bytes(bytes);
        // A partition that began while the message was in flight stops it too.
        if self.network.is_blocked(from, to) {
            self.stats.messages_lost += 1;
            return;
        }
        let message = match Message::decode(bytes) {
            Ok(Some((message, used))) if used == bytes.len() => message,
            other => {
                let message = format!("a message from {from} to {to} did not decode: {other:?}");
                return self.violate(Property::Invariant, message, vec![]);
            }
        };
        self.register_dots(&message);
        let host = (to.0 - 1) as usize;
        if self.hosts[host].node.is_some() {
            self.claims.delivered(from, to, &message);
        }
        self.input(host, Input::Message { from, message });
    }

    /// Property 2's second half: one dot never names two values, anywhere.
    fn register_dots(&mut self, message: &Message) {
        // Every kind named, so that a new message carrying versions cannot
        // slip past this check unnoticed.
        let object = match message {
            Message::Replicate { object, .. }
            | Message::Repair { object, .. }
            | Message::Hint { object, .. }
            | Message::HintDelivery { object, .. } => object,
            Message::ReadReply { result: Ok(Some(object)), .. } => object,
            Message::ReadReply { result: Ok(None) | Err(_), .. }
            | Message::Heartbeat { .. }
            | Message::Forward { .. }
            | Message::ForwardReply { .. }
            | Message::ReplicateAck { .. }
            | Message::Read { .. }
            // Hashes and keys only: the copies they find go by Repair and ReadReply.
            | Message::TreeRequest { .. }
            | Message::TreeReply { .. } => return,
        };
        for sibling in object.siblings() {
            let hash = model::value_hash(&sibling.value);
            let known = *self.dots.entry(sibling.dot).or_insert(hash);
            if known != hash {
                let message = format!("dot {:?} carries two different values", sibling.dot);
                self.violate(Property::Antichain, message, vec![]);
            }
        }
    }

    fn fault_start(&mut self, index: usize) {
        let fault = self.schedule[index].clone();
        if self.stage != Stage::Safety {
            return;
        }
        match &fault.fault {
            Fault::Partition { side } => {
                let rest = self.others(side);
                self.network.block(side, &rest);
                self.network.block(&rest, side);
            }
            Fault::OneWay { from, to } => self.network.block(from, to),
            Fault::Clog { from, to, delay_ms } => self.network.clog(*from, *to, *delay_ms),
            Fault::Crash { node, power_loss: false, .. } => {
                self.hosts[(node.0 - 1) as usize].crash_after_input = true;
            }
            Fault::Crash { node, torn, power_loss: true } => {
                let host = (node.0 - 1) as usize;
                if self.config.sync_interval_ms.is_some() && self.hosts[host].node.is_some() {
                    let durable_before_ns = self.hosts[host].synced_asked_ns;
                    self.losses.push(Loss { node: *node, at_ns: self.now, durable_before_ns });
                    self.claims.lose_unsynced(*node);
                    self.stats.power_losses += 1;
                }
                let mode = if *torn { CrashMode::TornTail } else { CrashMode::DropUnsynced };
                self.crash(host, mode);
            }
            Fault::Pause { node } => {
                self.hosts[(node.0 - 1) as usize].paused = true;
                self.stats.pauses += 1;
            }
            Fault::Wipe { node } => {
                let host = (node.0 - 1) as usize;
                self.stats.wipes += 1;
                self.losses.push(Loss { node: *node, at_ns: self.now, durable_before_ns: 0 });
                self.crash(host, CrashMode::DropUnsynced);
                self.replace_disk(host);
            }
        }
        self.at(self.now + fault.duration_ms * MS, Event::FaultEnd(index));
    }

    fn fault_end(&mut self, index: usize) {
        if self.stage != Stage::Safety {
            return; // healing already undid every fault
        }
        match self.schedule[index].fault.clone() {
            Fault::Partition { side } => {
                let rest = self.others(&side);
                self.network.unblock(&side, &rest);
                self.network.unblock(&rest, &side);
            }
            Fault::OneWay { from, to } => self.network.unblock(&from, &to),
            Fault::Clog { from, to, delay_ms } => self.network.unclog(from, to, delay_ms),
            Fault::Crash { node, .. } | Fault::Wipe { node } => {
                let host = (node.0 - 1) as usize;
                self.hosts[host].crash_after_input = false;
                if self.hosts[host].node.is_none() {
                    self.open_node(host);
                }
            }
            Fault::Pause { node } => self.resume((node.0 - 1) as usize),
        }
    }

    /// A paused node goes on: it takes in its backlog in arrival order, then
    /// its timers, late.
    pub(super) fn resume(&mut self, host: usize) {
        if !std::mem::take(&mut self.hosts[host].paused) {
            return;
        }
        for input in std::mem::take(&mut self.hosts[host].backlog) {
            self.input(host, input);
        }
        let state = &mut self.hosts[host];
        let now = state.clock.now(self.now);
        if let Some(node) = state.node.as_mut() {
            state.timer_at = None;
            node.handle_timeout(now);
            self.drain(host);
        }
    }

    /// How many disks the bad node may go through: a few for every 20
    /// simulated seconds of rot, and one for each wipe scheduled (a fuzzed
    /// schedule may hold more than the configuration draws).
    fn disks_max(&self) -> u32 {
        let rot_periods = (self.config.safety_ms / 20_000).max(1) as u32;
        let wipes =
            self.schedule.iter().filter(|scheduled| matches!(scheduled.fault, Fault::Wipe { .. })).count();
        3 * rot_periods + u32::try_from(wipes).unwrap_or(u32::MAX)
    }

    /// Whether disk faults that may not repeat are on this run.
    fn transient_disk_faults(&self) -> bool {
        let faults = &self.config.faults;
        faults.has(FaultKind::SyncFailure)
            || faults.has(FaultKind::ReadCorruption)
            || faults.has(FaultKind::BitRot)
    }

    fn others(&self, side: &[NodeId]) -> Vec<NodeId> {
        self.hosts.iter().map(|host| host.id).filter(|id| !side.contains(id)).collect()
    }

    /// What a crash loses: under periodic syncs the machine stays up, so the
    /// kernel keeps what it was handed (a machine crash would lose
    /// acknowledged writes by design, and no property could hold).
    fn crash_mode(&self, machine: CrashMode) -> CrashMode {
        if self.config.sync_interval_ms.is_some() { CrashMode::ProcessOnly } else { machine }
    }

    fn crash(&mut self, host: usize, mode: CrashMode) {
        let Some(node) = self.hosts[host].node.take() else { return };
        let stats = node.stats();
        self.hosts[host].copies_replaced += stats.corrupt_records_replaced;
        self.hosts[host].engine_totals.add(&stats);
        drop(node);
        self.stats.crashes += 1;
        if mode == CrashMode::ProcessOnly {
            self.claims.keep_unsynced(self.hosts[host].id);
        }
        let state = &mut self.hosts[host];
        // Jobs in flight die in the middle: what they wrote stays on the
        // disk, synced or not, for the crash to tear and recovery to remove.
        for job in std::mem::take(&mut state.jobs) {
            let _ = job.run(&state.disk);
        }
        state.boot += 1;
        state.timer_at = None;
        state.paused = false;
        state.backlog.clear();
        state.disk.crash(mode);
        let lost: Vec<(usize, RequestId)> =
            self.owners.keys().filter(|(owner, _)| *owner == host).copied().collect();
        for key in lost {
            if let Some(op) = self.owners.remove(&key) {
                self.complete_indeterminate(op, "the node crashed with the request in flight");
            }
        }
    }

    fn finish(mut self) -> RunResult {
        self.stats.sim_ns = self.now;
        for host in &self.hosts {
            let faults = host.disk.fault_counts();
            self.stats.read_corruptions += faults.read_corruptions;
            self.stats.bit_rots += faults.bit_rots;
            self.stats.sync_failures += faults.sync_failures;
            self.stats.torn_tails += faults.torn_tails;
            let mut work = host.engine_totals;
            if let Some(node) = &host.node {
                work.add(&node.stats());
            }
            self.stats.flushes += work.flushes;
            self.stats.compactions += work.compactions;
            self.stats.corruption_detected += work.corruption_detected;
            self.stats.tombstones_written += work.tombstones_written;
            self.stats.tombstones_dropped += work.tombstones_dropped;
            self.stats.hints_stored += work.hints_stored;
            self.stats.hints_delivered += work.hints_delivered;
            self.stats.hints_dropped += work.hints_dropped;
            self.stats.exchanges_completed += work.exchanges_completed;
            self.stats.keys_repaired += work.keys_repaired;
        }
        self.excuse_lost_acknowledgements();
        self.check_format_1_records();
        let setting = Setting { replicas: self.config.replicas, strict: self.config.strict_checked() };
        let mut violations = self.violations;
        // A run a broken invariant stopped did not finish: its history,
        // cut short, would only add violations of its own.
        if !violations.iter().any(|violation| violation.property == Property::Invariant) {
            violations.extend(check::check(&self.history, setting));
        }
        violations.sort_by_key(|violation| violation.property);
        let phase_ops = self.history.ops.iter().filter(|op| op.phase == Phase::Safety);
        self.stats.ops = phase_ops.count() as u64;
        self.trace.record(&[self.stats.events, violations.len() as u64]);
        let nodes = self
            .hosts
            .iter()
            .map(|host| NodeSummary {
                node: host.id,
                up: host.node.is_some(),
                poisoned: host.node.as_ref().is_some_and(Node::is_poisoned),
                incarnation: host.node.as_ref().map(Node::incarnation),
                stats: host.node.as_ref().map(Node::stats),
            })
            .collect();
        RunResult {
            nodes,
            config: self.config,
            schedule: self.schedule,
            violations,
            trace: self.trace.finish(),
            history: self.history,
            stats: self.stats,
        }
    }
}
