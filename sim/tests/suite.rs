//! The simulation suite: hundreds of seeds, every fault on in some of them,
//! each run checked for the properties of DESIGN.md.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use keel_core::NodeId;
use keel_sim::faults::{Fault, ScheduledFault};
use keel_sim::history::Phase;
use keel_sim::report::{failure_report, summary_line};
use keel_sim::{FaultKind, RunResult, SimConfig, run, run_with};

/// Seeds run on every `cargo test`.
const SUITE: std::ops::Range<u64> = 1_000..1_400;

/// Seeds that once found a bug, kept so it stays fixed:
/// 4, 8, 24 — a duplicated Forward message was coordinated twice, storing one
/// client write under two dots (antichain).
/// 1313, 1994, 2372 — a write whose forced flush failed stayed readable in the
/// memtable; a poisoned node served it, then reissued its dot (antichain).
/// 3511 — rot in a log record's length read as a torn tail, so recovery lost
/// synced records without noticing (local storage).
/// 6751 — a clean read of a log whose earlier replay was cut short buried the
/// records written since (local storage).
/// 574, 799 — a write forwarded to a primary with a corrupt copy failed
/// instead of going to the next primary (availability).
/// 392, 996 — a read at `all` with one corrupt copy failed as a timeout.
/// 1502, 3689 — the storage check read the disk before asking whether it had
/// been attacked, and its own reads rotted it (a checker bug).
/// 181 — metadata that no longer read gave a new incarnation whose epochs
/// restarted at 1, reusing epochs of records that survived (antichain).
/// 2866 — a corrupt copy whose readable replicas held nothing was never
/// repaired, so every read at `all` failed (availability).
/// 4029 — an open that found a lost record and failed later (a directory
/// sync) left the next open unaware of the loss (local storage).
/// 8783, 15371 — a flush job that failed dropped its frozen memtable, so the
/// poisoned node served older values until restarted (strict quorum).
/// They run the draw they were found with (`SimConfig::classic`).
const REGRESSIONS: &[u64] =
    &[4, 8, 24, 181, 392, 574, 799, 996, 1313, 1502, 1994, 2372, 2866, 3511, 3689, 4029, 6751, 8783, 15371];

/// Seeds that found a bug under the current draw (`SimConfig::from_seed`):
/// 1925 — rot hidden in a block cache through every repair round showed
/// only in a final read, which failed saying to retry (a checker bug: the
/// final read is now taken again once, as a client would).
/// 18397 — a write acknowledged by a node that then lost power before its
/// sync and by the rotting disk was lost with both, which the checkers did
/// not allow for (a checker bug: the rotting disk now counts as a possible
/// loss of every write).
/// 1944 — a quorum read missed a quorum write after one of the write's two
/// acknowledging replicas lost power before its sync; the write survived on
/// the other, but property 7 no longer holds for it (a checker bug: such
/// writes are now left out of property 7).
/// They were found before upgrades from format 1 were drawn, and run
/// without one.
const SWARM_REGRESSIONS: &[u64] = &[1925, 1944, 18397];

/// Seeds whose replicas did not converge by hinted handoff and anti-entropy
/// alone, under the current draw (`SimConfig::from_seed`):
/// 206, 956, 1239 — the rotation over (range, peer) pairs moved past a pair
/// skipped for sharing its range with the one just started, so one peer of
/// a range never exchanged with it again.
/// 277, 352, 851 — a rotted table block hid every record after it from
/// anti-entropy's scans for as long as the table lived; and the memory disk
/// rotted on reads without bound, so a node that scanned more rotted faster
/// (a simulator bug: a disk now rots at most 8 bits).
const CONVERGENCE_REGRESSIONS: &[u64] = &[206, 277, 352, 851, 956, 1239];

/// Runs `seeds` on every core; returns one summary per seed, in seed order.
fn run_all(
    seeds: impl Iterator<Item = u64>,
    inspect: impl Fn(&RunResult) + Sync,
) -> Vec<(u64, bool, String)> {
    run_all_with(seeds, SimConfig::from_seed, inspect)
}

/// As `run_all`, each seed's configuration made by `config`.
fn run_all_with(
    seeds: impl Iterator<Item = u64>,
    config: impl Fn(u64) -> SimConfig + Sync,
    inspect: impl Fn(&RunResult) + Sync,
) -> Vec<(u64, bool, String)> {
    let seeds: Vec<u64> = seeds.collect();
    let next = AtomicU64::new(0);
    let results = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed) as usize) {
                    let result = run(config(seed));
                    inspect(&result);
                    let text = if result.ok() {
                        summary_line(&result)
                    } else {
                        format!("{}{}", failure_report(&result), summary_line(&result))
                    };
                    results.lock().unwrap().push((seed, result.ok(), text));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(seed, _, _)| *seed);
    results
}

fn assert_all_pass(results: &[(u64, bool, String)]) {
    let failures: Vec<&String> = results.iter().filter(|(_, ok, _)| !ok).map(|(_, _, text)| text).collect();
    assert!(failures.is_empty(), "{} of {} seeds failed:\n{}", failures.len(), results.len(), failures[0]);
}

#[test]
fn simulation_suite_passes_with_every_fault() {
    let injected = Mutex::new(Injected::default());
    let results = run_all(SUITE, |result| injected.lock().unwrap().add(result));
    assert_all_pass(&results);
    let injected = injected.into_inner().unwrap();
    for kind in FaultKind::ALL {
        let seeds = injected.enabled.iter().filter(|enabled| **enabled == kind).count();
        assert!(seeds >= 50, "{kind} was on in only {seeds} seeds");
    }
    assert!(injected.crashes > 100, "only {} crashes", injected.crashes);
    assert!(injected.lost > 1_000, "only {} messages lost", injected.lost);
    assert!(injected.repairs > 100, "only {} read repairs", injected.repairs);
    assert!(injected.failed > 100 && injected.indeterminate > 100, "faults barely touched clients");
    assert!(injected.flushes > 1_000 && injected.compactions > 300, "storage engines barely worked");
    assert!(injected.corruptions_caught > 100, "only {} corruptions caught", injected.corruptions_caught);
    assert!(injected.bit_rots > 10 && injected.sync_failures > 100 && injected.torn_tails > 100);
    assert!(injected.pauses > 100 && injected.wipes > 50 && injected.power_losses > 50);
    for replicas in 1..=5 {
        let seeds = injected.replicas.iter().filter(|&&drawn| drawn == replicas).count();
        assert!(seeds >= 50, "N={replicas} drawn in only {seeds} seeds");
    }
    assert!(injected.periodic >= 80, "periodic syncs drawn in only {} seeds", injected.periodic);
    // Nodes upgraded from format 1 delete each old key with an engine
    // tombstone, which compactions drop once nothing older can lie below.
    let (written, dropped) = (injected.tombstones_written, injected.tombstones_dropped);
    assert!(
        written >= 40 && dropped >= 20,
        "engine tombstones written in {written} seeds, dropped in {dropped}"
    );
}

#[derive(Default)]
struct Injected {
    enabled: Vec<FaultKind>,
    crashes: u64,
    lost: u64,
    repairs: u64,
    failed: u64,
    indeterminate: u64,
    flushes: u64,
    compactions: u64,
    corruptions_caught: u64,
    bit_rots: u64,
    sync_failures: u64,
    torn_tails: u64,
    pauses: u64,
    wipes: u64,
    power_losses: u64,
    replicas: Vec<u8>,
    periodic: u64,
    /// Seeds whose nodes wrote engine tombstones, and whose compactions dropped some.
    tombstones_written: u64,
    tombstones_dropped: u64,
}

impl Injected {
    fn add(&mut self, result: &RunResult) {
        self.enabled.extend(&result.config.faults.enabled);
        self.crashes += result.stats.crashes;
        self.lost += result.stats.messages_lost;
        self.repairs += result.stats.read_repairs;
        self.failed += result.stats.ops_failed;
        self.indeterminate += result.stats.ops_indeterminate;
        self.flushes += result.stats.flushes;
        self.compactions += result.stats.compactions;
        self.corruptions_caught += result.stats.corruption_detected;
        self.bit_rots += result.stats.bit_rots;
        self.sync_failures += result.stats.sync_failures;
        self.torn_tails += result.stats.torn_tails;
        self.pauses += result.stats.pauses;
        self.wipes += result.stats.wipes;
        self.power_losses += result.stats.power_losses;
        self.replicas.push(result.config.replicas);
        self.periodic += u64::from(result.config.sync_interval_ms.is_some());
        self.tombstones_written += u64::from(result.stats.tombstones_written > 0);
        self.tombstones_dropped += u64::from(result.stats.tombstones_dropped > 0);
    }
}

/// N=1: a node that is a key's only replica answers within the call, so
/// operations take no simulated time, and writes still travel by forward to
/// the one primary. Bit rot is left out (`with_replicas`): one copy on a
/// rotting disk cannot be restored. These runs found two checker bugs: a
/// stage ended at the first synchronous answer, and the checkers ordered ops
/// by simulated time alone, which cannot order events of one instant.
#[test]
fn single_replica_runs_pass_with_every_other_fault() {
    let clusters = run_all_with(1..301, |seed| SimConfig::from_seed(seed).with_replicas(1), |_| {});
    assert_all_pass(&clusters);
    let single = |seed| SimConfig::from_seed(seed).with_nodes(1).with_replicas(1);
    assert_all_pass(&run_all_with(1..301, single, |_| {}));
    // Seeds that failed before those fixes.
    let fixed = [645, 1052, 1241, 1364, 1757, 1936, 2065];
    let classic_single = |seed| SimConfig::classic(seed).with_nodes(1).with_replicas(1);
    assert_all_pass(&run_all_with(fixed.into_iter(), classic_single, |_| {}));
    let fixed_cluster = |seed| SimConfig::classic(seed).with_replicas(1);
    assert_all_pass(&run_all_with([1883].into_iter(), fixed_cluster, |_| {}));
}

/// Under periodic syncs a node may show a write once the kernel has it, so
/// a crash of the process must lose nothing shown. Process crashes strike
/// right after an input, before the burst's write-out: a node that answered
/// before its write-out fails hundreds of these seeds. Power losses may lose
/// writes acknowledged since the last sync, and only those: without that
/// allowance 14 of seeds 1..2000 fail, with it none.
#[test]
fn periodic_sync_runs_lose_only_what_a_power_loss_may() {
    let periodic = |seed| SimConfig::from_seed(seed).with_periodic_syncs(100);
    let crashes = AtomicU64::new(0);
    let power_losses = AtomicU64::new(0);
    let count = |result: &RunResult| {
        crashes.fetch_add(result.stats.crashes - result.stats.power_losses, Ordering::Relaxed);
        power_losses.fetch_add(result.stats.power_losses, Ordering::Relaxed);
    };
    assert_all_pass(&run_all_with(1..301, periodic, count));
    assert!(crashes.load(Ordering::Relaxed) > 100, "processes crashed {crashes:?} times");
    assert!(power_losses.load(Ordering::Relaxed) > 100, "power lost {power_losses:?} times");
    let single = |seed| SimConfig::from_seed(seed).with_replicas(1).with_periodic_syncs(100);
    assert_all_pass(&run_all_with(1..301, single, |_| {}));
    // 660: both reads of a log at restart were corrupted in flight, and
    // replay kept the shorter prefix, dropping an acknowledged delete.
    let classic_single = |seed| SimConfig::classic(seed).with_replicas(1).with_periodic_syncs(100);
    assert_all_pass(&run_all_with([660].into_iter(), classic_single, |_| {}));
}

/// `--ops N` runs N operations, however long that takes; the storage shape
/// drawn per seed makes most runs flush and compact.
#[test]
fn runs_do_all_their_operations_and_reach_storage_work() {
    let reached = AtomicU64::new(0);
    let inspect = |result: &RunResult| {
        assert_eq!(result.stats.ops, u64::from(result.config.workload.ops), "seed {}", result.config.seed);
        if result.stats.flushes > 0 && result.stats.compactions > 0 {
            reached.fetch_add(1, Ordering::Relaxed);
        }
    };
    assert_all_pass(&run_all_with(1..201, SimConfig::from_seed, inspect));
    let reached = reached.load(Ordering::Relaxed);
    assert!(reached >= 140, "only {reached} of 200 runs flushed and compacted");
    let long = |seed| SimConfig::from_seed(seed).with_ops(3_000);
    assert_all_pass(&run_all_with(1..5, long, |result| assert_eq!(result.stats.ops, 3_000)));
}

#[test]
fn regression_seeds_pass() {
    assert_all_pass(&run_all_with(REGRESSIONS.iter().copied(), SimConfig::classic, |_| {}));
    let before_upgrades = |seed| SimConfig::drawn(seed).with_format_1_upgrade(false).settled();
    assert_all_pass(&run_all_with(SWARM_REGRESSIONS.iter().copied(), before_upgrades, |_| {}));
    assert_all_pass(&run_all_with(CONVERGENCE_REGRESSIONS.iter().copied(), SimConfig::from_seed, |_| {}));
}

#[test]
fn a_seed_replays_exactly() {
    let first = run(SimConfig::from_seed(7));
    let second = run(SimConfig::from_seed(7));
    assert_eq!(summary_line(&first), summary_line(&second));
    assert_eq!(first.stats, second.stats);
    assert_eq!(format!("{:?}", first.history), format!("{:?}", second.history));
    let other = run(SimConfig::from_seed(8));
    assert_ne!(first.trace, other.trace, "different seeds, different runs");
}

#[test]
fn a_run_without_its_trace_is_the_same_run() {
    let traced = run(SimConfig::from_seed(7));
    let untraced = run(SimConfig { trace: false, ..SimConfig::from_seed(7) });
    assert_eq!(traced.stats, untraced.stats);
    assert_eq!(format!("{:?}", traced.history), format!("{:?}", untraced.history));
    assert_eq!(untraced.trace, run(SimConfig { trace: false, ..SimConfig::from_seed(8) }).trace);
}

/// Runs that settle until every node is up (`SimConfig::settle_ms`) pass,
/// and begin the liveness phase long before the fixed three seconds.
#[test]
fn runs_settling_until_every_node_is_up_pass() {
    let quick = |seed| SimConfig { settle_ms: Some(500), ..SimConfig::from_seed(seed) };
    assert_all_pass(&run_all_with(SUITE.take(60), quick, |_| {}));
    let calm = |settle_ms| {
        let config = SimConfig::from_seed(3).with_faults_only(&[]).with_nodes(3);
        run(SimConfig { settle_ms, ..config })
    };
    let (fixed, quick) = (calm(None), calm(Some(500)));
    assert!(quick.ok(), "{}", failure_report(&quick));
    let liveness_ns = |result: &RunResult| {
        result.history.ops.iter().find(|op| op.phase == Phase::Liveness).map(|op| op.invoked_ns)
    };
    // Healing waits for the messages then in flight, a few ms at most here.
    let (quick, fixed) = (liveness_ns(&quick).unwrap(), liveness_ns(&fixed).unwrap());
    assert!(quick + 2_490_000_000 <= fixed, "liveness began at {quick} ns, and at {fixed} ns after 3 s");
}

/// A heartbeat sent before healing over a clogged link arrives late, with a
/// boot of its sender that may no longer be true; settling until every node
/// is up also waits it out, and fresh heartbeats after it.
#[test]
fn settling_waits_out_messages_sent_before_healing() {
    let mut config =
        SimConfig::from_seed(5).with_faults_only(&[FaultKind::Clog]).with_nodes(2).with_replicas(1);
    config.safety_ms = 2_000;
    config.workload.ops = 20;
    config.settle_ms = Some(500);
    let clog = Fault::Clog { from: NodeId(1), to: NodeId(2), delay_ms: 1_500 };
    let result = run_with(config, vec![ScheduledFault { at_ms: 0, duration_ms: 60_000, fault: clog }]);
    assert!(result.ok(), "{}", failure_report(&result));
    let healed_ns = result.history.ops.iter().filter(|op| op.phase == Phase::Safety);
    let healed_ns = healed_ns.filter_map(|op| op.completed_ns).max().unwrap().max(2_000_000_000);
    let liveness = result.history.ops.iter().find(|op| op.phase == Phase::Liveness).unwrap();
    // The last heartbeat sent before healing arrives 1.25 s after it at the
    // earliest, and the cluster settles 0.5 s after that.
    assert!(
        liveness.invoked_ns >= healed_ns + 1_750_000_000,
        "healed at {healed_ns}, liveness began at {}",
        liveness.invoked_ns
    );
}

#[test]
fn pinned_runs_without_faults_lose_nothing() {
    let config = SimConfig::from_seed(3).with_faults_only(&[]).with_nodes(5);
    let result = run(config);
    assert!(result.ok(), "{}", failure_report(&result));
    assert_eq!(result.stats.crashes, 0);
    assert_eq!(result.stats.messages_lost, 0);
    assert_eq!(result.stats.ops_indeterminate, 0);
}

/// Found by the `simulation` fuzz target (input `0;`): one node, N=1, no
/// faults, a 1 KiB memtable. A durability barrier kept a write that had
/// already become durable, because an action released by the barrier moved
/// the durable point on (its write filled the memtable, which syncs the log
/// it leaves) after the release had looked (invariant).
#[test]
fn a_barrier_releases_what_its_own_actions_made_durable() {
    let mut config = SimConfig::from_seed(0x3b30).with_faults_only(&[]).with_nodes(1).with_replicas(1);
    config.sync_interval_ms = None;
    config.storage.memtable_bytes_max = 1 << 10;
    config.storage.l0_tables_max = 2;
    config.storage.level_base_bytes = 2 << 10;
    config.safety_ms = 2_000;
    config.workload.ops = 20;
    config.workload.keys = 1 + config.workload.keys % 4;
    let result = keel_sim::run_with(config, Vec::new());
    assert!(result.ok(), "{}", failure_report(&result));
}

/// A replica down for the whole safety phase, with hints bounded low: the
/// fallbacks keep hints for it until the bound, refuse the rest, and once
/// it is back hinted handoff and anti-entropy alone bring it up to date
/// (the liveness phase reads nothing at `all`).
#[test]
fn a_replica_down_for_the_whole_safety_phase_catches_up() {
    let down = NodeId(5);
    let config = |seed| SimConfig::from_seed(seed).with_nodes(5).with_replicas(3).with_hints_max(20);
    let (stored, dropped, delivered) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let seeds: Vec<u64> = (1..81).collect();
    let next = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..std::thread::available_parallelism().map_or(2, |n| n.get()) {
            scope.spawn(|| {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed) as usize) {
                    let config = config(seed);
                    // The seed's own faults, but none of node 5's: it is down throughout.
                    let mut schedule: Vec<ScheduledFault> = keel_sim::faults::schedule(&config)
                        .into_iter()
                        .filter(|scheduled| match &scheduled.fault {
                            Fault::Crash { node, .. } | Fault::Pause { node } | Fault::Wipe { node } => {
                                *node != down
                            }
                            _ => true,
                        })
                        .collect();
                    let outage = Fault::Crash { node: down, torn: false, power_loss: false };
                    schedule.push(ScheduledFault { at_ms: 0, duration_ms: config.safety_ms, fault: outage });
                    let result = run_with(config, schedule);
                    stored.fetch_add(result.stats.hints_stored, Ordering::Relaxed);
                    dropped.fetch_add(result.stats.hints_dropped, Ordering::Relaxed);
                    delivered.fetch_add(result.stats.hints_delivered, Ordering::Relaxed);
                    if !result.ok() {
                        failures.lock().unwrap().push(format!(
                            "{}{}",
                            failure_report(&result),
                            summary_line(&result)
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} of {} seeds failed:\n{}", failures.len(), seeds.len(), failures[0]);
    let (stored, dropped, delivered) = (stored.into_inner(), dropped.into_inner(), delivered.into_inner());
    assert!(stored > 0 && delivered > 0, "hints kept ({stored}) and handed over ({delivered})");
    assert!(dropped > 0, "the bound of 20 hints was reached somewhere");
}
