//! keel-sim: the seeded deterministic simulator.
//!
//! One seed decides everything: the cluster's size, the workload, the faults
//! (network, crashes, clocks) and when they strike. A run has a safety phase
//! with faults, then a liveness phase that heals the cluster, checks that
//! requests succeed, and drives the replicas to agreement. Checkers then
//! test the consistency properties of DESIGN.md on what clients saw.
//!
//! The simulator drives the same `keel_core::node::Node` the real shell
//! drives; it never reads a real clock or touches the network, so a seed
//! replays bit for bit and its trace hash proves it.

pub mod check;
pub mod clock;
pub mod config;
pub mod faults;
pub mod fuzz_input;
pub mod history;
pub mod network;
pub mod report;
pub mod rng;
pub mod shrink;
pub mod trace;
mod world;

pub use config::{FaultKind, SimConfig};
pub use world::{NodeSummary, RunResult, RunStats, run, run_with};
