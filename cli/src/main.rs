//! `keel`: run a node, talk to a cluster, replay simulations.

mod client;
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "keel", version, about = "A Dynamo-style distributed key-value store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the deterministic simulator: one seed, or a range of seeds.
    Sim(sim::SimArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => sim::command(args),
        Command::Client(command) => client::command(command),
    }
}
