//! `keel sim`: replay one seed exactly, or sweep a range of seeds.

use std::io::IsTerminal;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use keel_sim::config::PERIODIC_SYNC_MS;
use keel_sim::report::{failure_report, summary_line};
use keel_sim::shrink::shrink;
use keel_sim::{FaultKind, RunResult, RunStats, SimConfig, run};

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["seed", "seeds"]))]
pub struct SimArgs {
    /// Run this one seed and print its result line.
    #[arg(long)]
    seed: Option<u64>,
    /// Run every seed in A..B (B excluded), e.g. 1..1000.
    #[arg(long, value_parser = parse_range)]
    seeds: Option<Range<u64>>,
    /// Pin the number of nodes instead of drawing it from the seed.
    #[arg(long)]
    nodes: Option<u64>,
    /// Pin the replica count N (at most the number of nodes) instead of
    /// drawing it from the seed; 1 runs the single-replica paths, without
    /// bit rot (one copy on a rotting disk cannot be restored).
    #[arg(long)]
    replicas: Option<u8>,
    /// Pin the nodes' fsync policy instead of drawing it from the seed (a
    /// third of seeds draw "periodic"). With "periodic" they sync every 100
    /// simulated ms and acknowledge once the kernel has a write; a crash is
    /// then of the process (the kernel keeps what it was handed) or a power
    /// loss (what was not synced is lost, and writes acknowledged since the
    /// last sync may be lost with it); failed syncs are left out.
    #[arg(long, value_enum)]
    fsync: Option<Fsync>,
    /// Pin the faults: a comma-separated list (drop, duplicate, reorder,
    /// partition, one-way, clog, crash, clock-skew, read-corruption,
    /// bit-rot, sync-failure, pause, wipe), or "none".
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<String>>,
    /// Pin the number of client operations of the safety phase.
    #[arg(long)]
    ops: Option<u32>,
    /// Pin whether the nodes start on the release of storage format 1 and
    /// are upgraded at their first restart, migrating their records
    /// (drawn true in three seeds of ten).
    #[arg(long, value_name = "BOOL")]
    upgrade: Option<bool>,
    /// After a failure, search for a smaller failing fault schedule.
    #[arg(long)]
    shrink: bool,
    /// Worker threads for a range of seeds (default: available cores).
    #[arg(long)]
    jobs: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Fsync {
    Always,
    Periodic,
}

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text.split_once("..").ok_or("expected A..B, e.g. 1..1000")?;
    let start: u64 = start.parse().map_err(|error| format!("bad range start {start:?}: {error}"))?;
    let end: u64 = end.parse().map_err(|error| format!("bad range end {end:?}: {error}"))?;
    if start >= end {
        return Err(format!("empty range {start}..{end}"));
    }
    Ok(start..end)
}

impl SimArgs {
    fn config(&self, seed: u64) -> Result<SimConfig, String> {
        let mut config = SimConfig::drawn(seed);
        if let Some(nodes) = self.nodes {
            config = config.with_nodes(nodes);
        }
        if let Some(ops) = self.ops {
            config = config.with_ops(ops);
        }
        if let Some(upgrade) = self.upgrade {
            config = config.with_format_1_upgrade(upgrade);
        }
        if let Some(names) = &self.faults {
            let kinds = if names.iter().any(|name| name == "none") {
                Vec::new()
            } else {
                names.iter().map(|name| name.parse::<FaultKind>()).collect::<Result<Vec<_>, _>>()?
            };
            let loses_copies = kinds.contains(&FaultKind::BitRot) || kinds.contains(&FaultKind::Wipe);
            if self.replicas.is_some_and(|replicas| replicas < 2) && loses_copies {
                return Err("bit rot and wipes need two replicas or more: one copy on a rotting or \
                            wiped disk cannot be restored, so no property could hold"
                    .into());
            }
            if self.fsync == Some(Fsync::Periodic) && kinds.contains(&FaultKind::SyncFailure) {
                return Err("sync failures cannot be simulated with --fsync periodic: after a failed \
                            fsync the kernel may drop what it was handed, so acknowledged writes may \
                            be lost by design"
                    .into());
            }
            config = config.with_faults_only(&kinds);
            // Asked for by name: a drawn single replica must not drop them.
            if loses_copies && self.replicas.is_none() {
                let replicas = config.replicas.max(2);
                config = config.with_replicas(replicas);
            }
        }
        if let Some(replicas) = self.replicas {
            if let Some(nodes) = self.nodes.filter(|&nodes| u64::from(replicas) > nodes) {
                return Err(format!(
                    "--replicas {replicas} needs at least {replicas} nodes, not --nodes {nodes}"
                ));
            }
            config = config.with_replicas(replicas);
        }
        match self.fsync {
            Some(Fsync::Periodic) => config = config.with_periodic_syncs(PERIODIC_SYNC_MS),
            Some(Fsync::Always) => config = config.with_always_syncs(),
            None => {}
        }
        let config = config.settled();
        config.validate()?;
        Ok(config)
    }
}

pub fn command(args: SimArgs) -> ExitCode {
    let outcome = match (args.seed, args.seeds.clone()) {
        (Some(seed), _) => one_seed(&args, seed),
        (None, Some(range)) => many_seeds(&args, range),
        (None, None) => Err("give --seed N or --seeds A..B".into()),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("keel sim: {message}");
            ExitCode::from(2)
        }
    }
}

fn one_seed(args: &SimArgs, seed: u64) -> Result<bool, String> {
    let result = run(args.config(seed)?);
    if !result.ok() {
        print!("{}", failure_report(&result));
        println!("{}", stats_line(&result));
        if args.shrink {
            print_shrunk(result_clone_for_shrink(args, seed)?);
        }
    } else {
        println!("config: {}", result.config);
        println!("{}", stats_line(&result));
    }
    println!("{}", summary_line(&result));
    Ok(result.ok())
}

/// Runs the seed again for shrinking, so the original result stays printable.
fn result_clone_for_shrink(args: &SimArgs, seed: u64) -> Result<RunResult, String> {
    Ok(run(args.config(seed)?))
}

fn print_shrunk(failing: RunResult) {
    let shrunk = shrink(failing, 300);
    let result = &shrunk.result;
    println!("shrunk in {} runs to {} scheduled faults:", shrunk.attempts, result.schedule.len());
    println!("  config: {}", result.config);
    for fault in &result.schedule {
        println!("  {fault}");
    }
    if let Some(violation) = result.violations.first() {
        println!("  still fails: {}: {}", violation.property, violation.message);
    }
}

fn stats_line(result: &RunResult) -> String {
    let stats = &result.stats;
    format!(
        "simulated {:.1}s: {} events, {} messages ({} lost), {} syncs, {} crashes ({} power losses), {} pauses, \
         {} wipes, {} ops ({} failed, {} indeterminate, {} acknowledged writes excused by power losses or wipes), \
         {} read repairs\nstorage: {} flushes, {} compactions, {} engine tombstones written, {} dropped, {} corruptions caught; \
         injected {} read corruptions, {} bit rots, {} sync failures, {} torn tails; {} restarts after failed syncs, \
         {} disks replaced, {} upgrades from format 1\nhints: {} stored, {} handed over, {} dropped\n\
         anti-entropy: {} exchanges completed, {} keys repaired; replicas agreed {} after the liveness ops",
        stats.sim_ns as f64 / 1e9,
        stats.events,
        stats.messages_sent,
        stats.messages_lost,
        stats.syncs,
        stats.crashes,
        stats.power_losses,
        stats.pauses,
        stats.wipes,
        stats.ops,
        stats.ops_failed,
        stats.ops_indeterminate,
        stats.writes_excused,
        stats.read_repairs,
        stats.flushes,
        stats.compactions,
        stats.tombstones_written,
        stats.tombstones_dropped,
        stats.corruption_detected,
        stats.read_corruptions,
        stats.bit_rots,
        stats.sync_failures,
        stats.torn_tails,
        stats.storage_restarts,
        stats.disks_replaced,
        stats.upgrades,
        stats.hints_stored,
        stats.hints_delivered,
        stats.hints_dropped,
        stats.exchanges_completed,
        stats.keys_repaired,
        stats.convergence_ns.map_or_else(|| "never".to_owned(), |ns| format!("{} ms", ns / 1_000_000)),
    )
}

/// What a sweep adds up over its seeds.
#[derive(Debug, Default)]
struct SweepStats {
    /// Seeds whose nodes wrote engine tombstones, and how many they wrote.
    writing_seeds: u64,
    tombstones_written: u64,
    /// Seeds whose compactions dropped engine tombstones, and how many.
    dropping_seeds: u64,
    tombstones_dropped: u64,
    upgrading_seeds: u64,
    /// Seeds where fallback nodes stored hints, and the hints' fates.
    hinting_seeds: u64,
    hints_stored: u64,
    hints_delivered: u64,
    hints_dropped: u64,
    exchanges_completed: u64,
    keys_repaired: u64,
    /// Time the replicas took to agree after the liveness ops, in
    /// milliseconds: the sum (for the mean) and the longest, over the seeds
    /// that agreed.
    converged_seeds: u64,
    convergence_ms_sum: u64,
    convergence_ms_max: u64,
}

impl SweepStats {
    fn add(&mut self, stats: &RunStats) {
        self.writing_seeds += u64::from(stats.tombstones_written > 0);
        self.tombstones_written += stats.tombstones_written;
        self.dropping_seeds += u64::from(stats.tombstones_dropped > 0);
        self.tombstones_dropped += stats.tombstones_dropped;
        self.upgrading_seeds += u64::from(stats.upgrades > 0);
        self.hinting_seeds += u64::from(stats.hints_stored > 0);
        self.hints_stored += stats.hints_stored;
        self.hints_delivered += stats.hints_delivered;
        self.hints_dropped += stats.hints_dropped;
        self.exchanges_completed += stats.exchanges_completed;
        self.keys_repaired += stats.keys_repaired;
        if let Some(ns) = stats.convergence_ns {
            self.converged_seeds += 1;
            self.convergence_ms_sum += ns / 1_000_000;
            self.convergence_ms_max = self.convergence_ms_max.max(ns / 1_000_000);
        }
    }
}

fn many_seeds(args: &SimArgs, range: Range<u64>) -> Result<bool, String> {
    // Validate the pins once, before spawning workers.
    args.config(range.start)?;
    let total = range.end - range.start;
    let progress =
        if std::io::stderr().is_terminal() { ProgressBar::new(total) } else { ProgressBar::hidden() };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {msg} [{elapsed_precise}, eta {eta}]")
            .expect("the template is valid"),
    );
    let next = AtomicU64::new(range.start);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let sweep: Mutex<SweepStats> = Mutex::new(SweepStats::default());
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= range.end {
                        break;
                    }
                    let Ok(config) = args.config(seed) else { break };
                    let result = run(config);
                    sweep.lock().unwrap_or_else(|poison| poison.into_inner()).add(&result.stats);
                    if !result.ok() {
                        let mut failures = failures.lock().unwrap_or_else(|poison| poison.into_inner());
                        failures.push((seed, summary_line(&result)));
                        progress.set_message(format!("{} failed", failures.len()));
                    }
                    progress.inc(1);
                }
            });
        }
    });
    progress.finish_and_clear();
    let mut failures = failures.into_inner().unwrap_or_else(|poison| poison.into_inner());
    failures.sort();
    for (_, line) in &failures {
        println!("{line}");
    }
    let sweep = sweep.into_inner().unwrap_or_else(|poison| poison.into_inner());
    println!(
        "engine tombstones: written in {} of {total} seeds ({} in all), dropped by compactions in {} ({} in all); \
         nodes upgraded from format 1 in {} seeds",
        sweep.writing_seeds,
        sweep.tombstones_written,
        sweep.dropping_seeds,
        sweep.tombstones_dropped,
        sweep.upgrading_seeds,
    );
    println!(
        "hints: stored in {} of {total} seeds ({} in all), {} handed over, {} dropped",
        sweep.hinting_seeds, sweep.hints_stored, sweep.hints_delivered, sweep.hints_dropped,
    );
    println!(
        "anti-entropy: {} exchanges completed, {} keys repaired; replicas agreed after the liveness ops in \
         {} ms on average, {} ms at most",
        sweep.exchanges_completed,
        sweep.keys_repaired,
        sweep.convergence_ms_sum.checked_div(sweep.converged_seeds).unwrap_or(0),
        sweep.convergence_ms_max,
    );
    let seeds: Vec<String> = failures.iter().map(|(seed, _)| seed.to_string()).collect();
    println!(
        "seeds={total} failed={}{}",
        failures.len(),
        if seeds.is_empty() { String::new() } else { format!(" failing: {}", seeds.join(" ")) }
    );
    Ok(failures.is_empty())
}
