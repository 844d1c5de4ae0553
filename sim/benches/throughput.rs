//! How fast the simulator runs: events per second and simulated seconds per
//! wall-clock second, for a 5-node cluster under client load, with and
//! without faults. Run with `cargo bench -p keel-sim --bench throughput`.

use std::time::Instant;

use keel_sim::{SimConfig, run};

fn measure(label: &str, configs: impl Iterator<Item = SimConfig>) {
    let (mut events, mut sim_ns, mut ops, mut runs) = (0u64, 0u64, 0u64, 0u32);
    let started = Instant::now();
    for config in configs {
        let result = run(config);
        assert!(result.ok(), "seed {} failed", result.config.seed);
        events += result.stats.events;
        sim_ns += result.stats.sim_ns;
        ops += result.stats.ops;
        runs += 1;
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{label}: {runs} runs, {events} events, {ops} client ops, {:.0} simulated s in {wall:.2} wall s",
        sim_ns as f64 / 1e9
    );
    println!(
        "{label}: {:.0} events/s, {:.0} simulated s per wall s",
        events as f64 / wall,
        sim_ns as f64 / 1e9 / wall
    );
}

/// Five nodes, eight clients with short think times: a loaded cluster.
fn loaded(seed: u64) -> SimConfig {
    let mut config = SimConfig::from_seed(seed).with_nodes(5).with_ops(2_000);
    config.replicas = 3;
    config.workload.clients = 8;
    config.workload.think_ms_max = 5;
    config
}

fn main() {
    measure("5 nodes, faults", (0..50).map(loaded));
    measure("5 nodes, no faults", (0..50).map(|seed| loaded(seed).with_faults_only(&[])));
}
