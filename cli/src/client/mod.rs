//! The client half of `keel`: `put`, `get`, `delete`, `status`, `ring`,
//! `shell` and `bench`, all over a node's HTTP API (and, for `bench`, the
//! Redis protocol too).
//!
//! Exit codes are a contract with scripts: 0 success; 1 the key was not
//! found or the node said the operation failed; 2 a usage error, a local
//! error (unreadable file), or no usable connection to a keel node. Clap's
//! own usage errors already exit with 2.

use std::io::{self, IsTerminal, Read, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use keel_core::client::Consistency;
use thiserror::Error;

/// The exit codes, as a literal so help texts can `concat!` it.
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0  success
  1  the key was not found, or the node said the operation failed
  2  usage error, or no usable connection to a keel node"
    };
}

mod addr;
mod admin;
mod api;
mod bench;
pub(crate) mod http;
mod kv;
mod shell;
#[cfg(test)]
mod testing;

pub(crate) use addr::ServerAddr;
use http::CallError;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Store a value under a key.
    Put(kv::PutArgs),
    /// Print the value of a key (every sibling if writes were concurrent).
    Get(kv::GetArgs),
    /// Delete a key.
    #[command(after_help = exit_codes!())]
    Delete(kv::DeleteArgs),
    /// Summarise a node's health, membership and storage.
    #[command(after_help = "\
Exit codes:
  0  the node answered and is healthy
  1  the node answered but is not healthy (its storage failed)
  2  usage error, or no usable connection to a keel node")]
    Status(admin::StatusArgs),
    /// Show how the ring divides the key space among nodes.
    Ring(admin::RingArgs),
    /// An interactive shell: get, put, delete, status, ring, switch between nodes.
    #[command(after_help = shell::AFTER_HELP)]
    Shell(shell::ShellArgs),
    /// Load a node with many clients; print throughput and latency percentiles.
    #[command(after_help = bench::AFTER_HELP)]
    Bench(bench::BenchArgs),
}

/// `--server`, shared by every command that talks HTTP.
#[derive(Clone, Debug, Args)]
pub struct ServerArgs {
    /// The node's HTTP address, host:port (port 7420 when left out).
    #[arg(
        long,
        short = 's',
        env = "KEEL_SERVER",
        value_name = "ADDR",
        default_value = addr::HTTP_SERVER_DEFAULT,
        value_parser = addr::parse_http
    )]
    pub server: ServerAddr,
}

/// `--consistency`, shared by the key commands.
#[derive(Clone, Debug, Args)]
pub struct ConsistencyArgs {
    /// How many replicas must answer: one, quorum, all, or a count 1..=N
    /// [default: the node's, quorum].
    #[arg(long, short = 'c', value_name = "LEVEL", value_parser = parse_consistency)]
    pub consistency: Option<Consistency>,
}

fn parse_consistency(text: &str) -> Result<Consistency, String> {
    text.parse().map_err(|error: keel_core::client::ParseConsistencyError| error.to_string())
}

/// Why a client command did not succeed; decides its exit code.
#[derive(Debug, Error)]
pub enum Failure {
    #[error(transparent)]
    Call(#[from] CallError),
    /// The Redis protocol port of `bench` could not be used: exit 2.
    #[error(transparent)]
    Resp(#[from] bench::RespError),
    #[error("key not found")]
    NotFound,
    /// Went wrong on this machine (an unreadable file, a closed output): exit 2.
    #[error("{0}")]
    Local(String),
    /// The command ran but some of its work failed: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Call(error) => error.exit_code(),
            Failure::NotFound | Failure::Failed(_) => 1,
            Failure::Resp(_) | Failure::Local(_) => 2,
        }
    }
}

/// Where a command reads and writes, so tests can capture both.
pub struct Streams<'a> {
    pub input: &'a mut dyn Read,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// Raw values get a final newline only on a terminal, so pipes get exact bytes.
    pub out_is_terminal: bool,
}

/// Runs a client command and turns its outcome into the exit code.
pub fn command(command: ClientCommand) -> ExitCode {
    let name = command.name();
    let result = match command {
        ClientCommand::Shell(args) => shell::command(args),
        ClientCommand::Bench(args) => bench::command(args),
        other => one_shot(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("keel {name}: {}", describe(&failure));
            ExitCode::from(failure.exit_code())
        }
    }
}

/// The message for a failure, with a hint where one helps.
pub fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Call(CallError::Connect { .. } | CallError::ConnectTimeout { .. }) => {
            format!("{failure} (is a keel node running there? pass --server ADDR or set KEEL_SERVER)")
        }
        Failure::Resp(bench::RespError::Connect { .. } | bench::RespError::ConnectTimeout { .. }) => {
            format!("{failure} (is a keel node running there? pass --server ADDR or set KEEL_RESP_SERVER)")
        }
        _ => failure.to_string(),
    }
}

fn one_shot(command: ClientCommand) -> Result<(), Failure> {
    let runtime = runtime()?;
    let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
    let out_is_terminal = stdout.is_terminal();
    let (mut input, mut out, mut err) = (stdin.lock(), stdout.lock(), stderr.lock());
    let mut streams = Streams { input: &mut input, out: &mut out, err: &mut err, out_is_terminal };
    let result = runtime.block_on(execute(command, &mut streams));
    output(streams.out.flush())?;
    result
}

/// Runs one of the single-request commands against `streams`.
pub async fn execute(command: ClientCommand, streams: &mut Streams<'_>) -> Result<(), Failure> {
    match command {
        ClientCommand::Put(args) => kv::put(&args, streams).await,
        ClientCommand::Get(args) => kv::get(&args, streams).await,
        ClientCommand::Delete(args) => kv::delete(&args, streams).await,
        ClientCommand::Status(args) => admin::status(&args, streams).await,
        ClientCommand::Ring(args) => admin::ring(&args, streams).await,
        ClientCommand::Shell(_) | ClientCommand::Bench(_) => {
            Err(Failure::Local("shell and bench run on their own, not as one request".into()))
        }
    }
}

impl ClientCommand {
    fn name(&self) -> &'static str {
        match self {
            ClientCommand::Put(_) => "put",
            ClientCommand::Get(_) => "get",
            ClientCommand::Delete(_) => "delete",
            ClientCommand::Status(_) => "status",
            ClientCommand::Ring(_) => "ring",
            ClientCommand::Shell(_) => "shell",
            ClientCommand::Bench(_) => "bench",
        }
    }
}

/// A single-threaded runtime: one command waits on one connection at a time.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::Local(format!("cannot start the async runtime: {error}")))
}

/// A reader that went away (`keel get k | head -c 10`) is not an error.
fn output(result: io::Result<()>) -> Result<(), Failure> {
    match result {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => {
            Err(Failure::Local(format!("cannot write the output: {error}")))
        }
        _ => Ok(()),
    }
}
