//! `keel`: run a node, talk to a cluster, replay simulations.

mod client;
mod dev_cluster;
mod logging;
mod node;
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "keel", version, about = "A Dynamo-style distributed key-value store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a storage node; with no flags, a single node on embedded defaults.
    Node(Box<node::NodeArgs>),
    /// Start a local cluster of node processes on loopback; Ctrl-C stops it.
    DevCluster(dev_cluster::DevClusterArgs),
    /// Run the deterministic simulator: one seed, or a range of seeds.
    Sim(sim::SimArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(args) => node::command(*args),
        Command::DevCluster(args) => dev_cluster::command(args),
        Command::Sim(args) => sim::command(args),
        Command::Client(command) => client::command(command),
    }
}
