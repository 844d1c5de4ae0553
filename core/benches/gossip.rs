//! Gossip benchmark: how fast membership news spreads and how often a
//! pause makes nodes accuse healthy members, by cluster size.
//!
//! `cargo bench -p keel-core --bench gossip` runs clusters of 8 to 128
//! nodes on the simulated network of `keel_core::gossip::harness` (a LAN:
//! 0.5 to 5 ms per message, 1% of messages lost) with the default
//! configuration, whose protocol period is one second. For each size and
//! each of several seeds it measures, in protocol periods (rounds):
//!
//! - join: from a new node's start, with one member's address as its seed,
//!   until every node holds it alive;
//! - failure: from killing a node until every other node holds it dead;
//!
//! and then, with loss turned off, pauses a few nodes (n/16, at least one)
//! for 10 seconds, lets them resume, and counts the suspicions raised
//! against members that were never paused: false suspicions, next to
//! log2(n), and healthy members declared dead (summed over seeds). It does
//! the pause twice, with the pause detection on and, for comparison, off (a
//! threshold no call can reach). Last, the messages each node sends per
//! second in a quiet cluster: the protocol's steady cost.
//!
//! The figures are virtual time, so they do not depend on the machine.
//! Environment: `KEEL_BENCH_SEEDS` changes the number of seeds per size
//! (default 10).

use std::collections::BTreeSet;
use std::time::{Duration, Instant as Clock};

use keel_core::NodeId;
use keel_core::gossip::harness::{Network, Sim};
use keel_core::gossip::{Config, Event, State};

const SIZES: [u64; 5] = [8, 16, 32, 64, 128];
const PAUSE: Duration = Duration::from_secs(10);
/// How finely the time a spread took is measured.
const RESOLUTION: Duration = Duration::from_millis(10);
/// A run that takes longer than this has failed.
const LIMIT: Duration = Duration::from_secs(300);

fn network() -> Network {
    Network {
        delay_min: Duration::from_micros(500),
        delay_max: Duration::from_millis(5),
        drop_per_million: 10_000,
    }
}

/// What one seed measured for one cluster size.
struct Run {
    join_rounds: f64,
    failure_rounds: f64,
    false_suspicions: u64,
    false_suspicions_undetected: u64,
    healthy_declared_dead: u64,
    /// Messages each node sends per second in a quiet cluster.
    messages_per_node_second: f64,
}

fn main() {
    let seeds: u64 = std::env::var("KEEL_BENCH_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let config = Config::default();
    let period = config.probe_interval;
    println!(
        "gossip: SWIM + Lifeguard, protocol period {period:?}, LAN of 0.5-5 ms with 1% loss (none in the pause runs), {seeds} seeds per size"
    );
    println!("rounds are protocol periods; false suspicions count accusations of never-paused members");
    println!(
        "after {}s pauses of n/16 nodes (at least one), with pause detection on | off\n",
        PAUSE.as_secs()
    );
    println!(
        "{:>5} {:>7} {:>17} {:>17} {:>6} {:>17} {:>17} {:>13} {:>12}",
        "nodes",
        "log2 n",
        "join mean (max)",
        "dead mean (max)",
        "paused",
        "false susp. on",
        "false susp. off",
        "wrongly dead",
        "msgs/node/s"
    );
    let started = Clock::now();
    for size in SIZES {
        let runs: Vec<Run> = (0..seeds).map(|seed| run(size, seed, &config)).collect();
        let mean = |f: fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
        let max = |f: fn(&Run) -> f64| runs.iter().map(f).fold(0.0, f64::max);
        let cell = |f: fn(&Run) -> f64, digits: usize| format!("{:.digits$} ({:.digits$})", mean(f), max(f));
        println!(
            "{size:>5} {:>7.1} {:>17} {:>17} {:>6} {:>17} {:>17} {:>13} {:>12.2}",
            (size as f64).log2(),
            cell(|r| r.join_rounds, 1),
            cell(|r| r.failure_rounds, 1),
            paused_count(size),
            cell(|r| r.false_suspicions as f64, 1),
            cell(|r| r.false_suspicions_undetected as f64, 1),
            runs.iter().map(|r| r.healthy_declared_dead).sum::<u64>(),
            mean(|r| r.messages_per_node_second),
        );
    }
    println!(
        "\n(means over seeds, maxima in parentheses; {:.1} s of wall time)",
        started.elapsed().as_secs_f64()
    );
}

fn paused_count(size: u64) -> u64 {
    (size / 16).max(1)
}

fn run(size: u64, seed: u64, config: &Config) -> Run {
    let period = config.probe_interval.as_secs_f64();
    let mut sim = Sim::new(config.clone(), network(), seed);
    sim.check_invariants = false;
    sim.start_cluster(size, LIMIT);

    // A new member, joining through one member's address.
    let newcomer = NodeId(size + 1);
    let start = sim.now();
    sim.add_node(newcomer, &[NodeId(1 + seed % size)]);
    let joined = sim.run_until(start + LIMIT, RESOLUTION, |sim| sim.all_see(newcomer, State::Alive));
    let join_rounds = joined.expect("the join converges").saturating_since(start).as_secs_f64() / period;

    // A member killed.
    let killed = NodeId(1 + (seed + size / 2) % size);
    sim.kill(killed);
    let start = sim.now();
    let dead = sim.run_until(start + LIMIT, RESOLUTION, |sim| sim.all_see(killed, State::Dead));
    let failure_rounds =
        dead.expect("the failure is detected").saturating_since(start).as_secs_f64() / period;

    let quiet = Duration::from_secs(30);
    let sent_before = sim.messages_sent;
    sim.run_for(quiet);
    let live = sim.ids().count() as f64;
    let messages_per_node_second = (sim.messages_sent - sent_before) as f64 / live / quiet.as_secs_f64();
    let (false_suspicions, healthy_declared_dead) = pauses(sim, size, seed, killed);
    // The same cluster history again, with pause detection out of reach.
    let undetected = Config { pause_threshold: Duration::from_secs(3600), ..config.clone() };
    let mut sim = Sim::new(undetected, network(), seed);
    sim.check_invariants = false;
    sim.start_cluster(size, LIMIT);
    sim.add_node(newcomer, &[NodeId(1 + seed % size)]);
    sim.run_for(Duration::from_secs(30));
    sim.kill(killed);
    sim.run_for(Duration::from_secs(60));
    let (false_suspicions_undetected, _) = pauses(sim, size, seed, killed);
    Run {
        join_rounds,
        failure_rounds,
        false_suspicions,
        false_suspicions_undetected,
        healthy_declared_dead,
        messages_per_node_second,
    }
}

/// Pauses a few members at once, runs until well after they resume, and
/// counts accusations of members never paused, and deaths declared of them.
fn pauses(mut sim: Sim, size: u64, seed: u64, killed: NodeId) -> (u64, u64) {
    // Without loss every accusation of a healthy member is the pauses'
    // doing; with it, a probe whose direct and indirect paths all lost a
    // message would count too.
    sim.set_drop_per_million(0);
    sim.run_for(Duration::from_secs(30));
    let live: Vec<NodeId> = sim.ids().filter(|&id| id != killed).collect();
    let count = paused_count(size) as usize;
    let paused: BTreeSet<NodeId> =
        (0..count).map(|i| live[(seed as usize * 7 + i * live.len() / count) % live.len()]).collect();
    let from = sim.events.len();
    for &id in &paused {
        sim.pause(id, PAUSE);
    }
    sim.run_for(PAUSE + Duration::from_secs(60));
    let healthy = |id: &NodeId| !paused.contains(id) && *id != killed;
    let mut false_suspicions = 0;
    let mut declared_dead = 0;
    for (_, _, event) in &sim.events[from..] {
        match event {
            Event::SuspicionRaised { id, .. } if healthy(id) => false_suspicions += 1,
            Event::StateChanged { id, state: State::Dead, .. } if healthy(id) => declared_dead += 1,
            _ => {}
        }
    }
    (false_suspicions, declared_dead)
}
