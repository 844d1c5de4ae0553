//! `keel shell`: a read-eval-print loop over one node's HTTP API.
//!
//! On a terminal it edits lines with rustyline and keeps history in
//! `~/.keel_history`. Otherwise it reads commands line by line from standard
//! input with no prompt and no banner, so `keel shell < script` prints only
//! what the commands print, and it exits 1 if any command failed.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::Args;
use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor};
use tokio::runtime::Runtime;

use super::http::Connection;
use super::{Failure, ServerArgs, runtime};

mod commands;
mod words;

pub use commands::{Flow, Shell, ShellError};

/// Lines kept in the history file.
const HISTORY_LINES_MAX: usize = 1000;
/// Longest line read from a pipe: a value at the node's default limit
/// (16 MiB), written with escapes, fits.
const LINE_BYTES_MAX: u64 = 64 * 1024 * 1024;

pub const AFTER_HELP: &str = "\
Shell commands: get KEY [LEVEL], put KEY VALUE [LEVEL], delete KEY [LEVEL], status,
ring [KEYS], nodes, switch N|NODE|ADDR, context, help, quit. Type help inside for details.

On a terminal, history is kept in ~/.keel_history. With standard input from a
pipe or file, commands are read line by line without prompts:
  printf 'put a 1\\nget a\\n' | keel shell

Exit codes:
  0  the shell ended normally (on a terminal, always)
  1  reading from a pipe or file, at least one command failed
  2  usage error";

#[derive(Debug, Args)]
pub struct ShellArgs {
    #[command(flatten)]
    server: ServerArgs,
}

/// Where the shell's lines come from.
pub trait Lines {
    /// The next line without its end, or `None` at the end of input.
    fn next_line(&mut self, prompt: &str) -> Result<Option<String>, Failure>;
}

/// Lines from a pipe or a file, without prompts.
#[derive(Debug)]
pub struct Piped<R>(pub R);

impl<R: BufRead> Lines for Piped<R> {
    fn next_line(&mut self, _prompt: &str) -> Result<Option<String>, Failure> {
        let mut line = Vec::new();
        let read = <&mut R as Read>::take(&mut self.0, LINE_BYTES_MAX + 1).read_until(b'\n', &mut line);
        match read {
            Ok(0) => return Ok(None),
            Ok(_) if line.len() as u64 > LINE_BYTES_MAX => {
                return Err(Failure::Local(format!("a line is longer than {LINE_BYTES_MAX} bytes")));
            }
            Ok(_) => {}
            Err(error) => return Err(Failure::Local(format!("cannot read standard input: {error}"))),
        }
        while line.last().is_some_and(|&byte| byte == b'\n' || byte == b'\r') {
            line.pop();
        }
        Ok(Some(String::from_utf8_lossy(&line).into_owned()))
    }
}

/// Lines typed on a terminal, with editing and history.
struct Terminal {
    editor: DefaultEditor,
    history: Option<PathBuf>,
}

impl Terminal {
    fn open() -> Result<Terminal, Failure> {
        let config = Config::builder()
            .max_history_size(HISTORY_LINES_MAX)
            .and_then(|builder| builder.history_ignore_dups(true))
            .map(|builder| builder.history_ignore_space(true).auto_add_history(true).build())
            .map_err(|error| Failure::Local(format!("cannot set up line editing: {error}")))?;
        let mut editor = DefaultEditor::with_config(config)
            .map_err(|error| Failure::Local(format!("cannot set up line editing: {error}")))?;
        // Without a home there is nowhere sensible to keep history.
        let history = std::env::var_os("HOME").filter(|home| !home.is_empty()).map(|home| {
            let mut path = PathBuf::from(home);
            path.push(".keel_history");
            path
        });
        if let Some(path) = &history {
            // A first run has no file yet.
            let _ = editor.load_history(path);
        }
        Ok(Terminal { editor, history })
    }

    fn save(&mut self) {
        if let Some(path) = &self.history {
            if let Err(error) = self.editor.save_history(path) {
                eprintln!("keel shell: cannot save history to {}: {error}", path.display());
            }
        }
    }
}

impl Lines for Terminal {
    fn next_line(&mut self, prompt: &str) -> Result<Option<String>, Failure> {
        match self.editor.readline(prompt) {
            Ok(line) => Ok(Some(line)),
            // Ctrl-C abandons the line being typed, as in other shells.
            Err(ReadlineError::Interrupted) => Ok(Some(String::new())),
            Err(ReadlineError::Eof) => Ok(None),
            Err(error) => Err(Failure::Local(format!("cannot read the terminal: {error}"))),
        }
    }
}

pub fn command(args: ShellArgs) -> Result<(), Failure> {
    let runtime = runtime()?;
    let mut shell = Shell::new(args.server.server);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if !io::stdin().is_terminal() {
        let stdin = io::stdin();
        let tally = drive(&runtime, &mut shell, &mut Piped(stdin.lock()), &mut out)?;
        return tally.verdict();
    }
    let mut terminal = Terminal::open()?;
    runtime.block_on(banner(&shell, &mut out)).map_err(|error| Failure::Local(error.to_string()))?;
    let tally = drive(&runtime, &mut shell, &mut terminal, &mut out);
    terminal.save();
    tally.map(|_| ())
}

/// Who the shell talks to, or why it cannot yet.
async fn banner(shell: &Shell, out: &mut dyn Write) -> io::Result<()> {
    let status = match Connection::open(shell.server()).await {
        Ok(mut connection) => connection.status().await,
        Err(error) => Err(error),
    };
    match status {
        Ok(status) => writeln!(
            out,
            "keel shell: node {} of cluster {} at {}; type help for commands",
            status.node,
            status.cluster,
            shell.server()
        ),
        Err(error) => writeln!(
            out,
            "keel shell: {error}\ncommands will fail until a node answers there; `switch ADDR` talks to another"
        ),
    }
}

/// Commands run and commands failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub commands: u64,
    pub failed: u64,
}

impl Tally {
    fn verdict(self) -> Result<(), Failure> {
        match self.failed {
            0 => Ok(()),
            failed => Err(Failure::Failed(format!("{failed} of {} commands failed", self.commands))),
        }
    }
}

/// Reads and runs lines until `quit` or the end of input. A failed command
/// is reported as `(error) …` and the loop goes on.
pub fn drive(
    runtime: &Runtime,
    shell: &mut Shell,
    lines: &mut dyn Lines,
    out: &mut dyn Write,
) -> Result<Tally, Failure> {
    let mut tally = Tally::default();
    let write_failed = |error: io::Error| Failure::Local(format!("cannot write the output: {error}"));
    while let Some(line) = lines.next_line(&shell.prompt())? {
        if line.trim().is_empty() {
            continue;
        }
        tally.commands += 1;
        match runtime.block_on(shell.execute(&line, out)) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break,
            Err(ShellError::Output(error)) => return Err(write_failed(error)),
            Err(error) => {
                tally.failed += 1;
                writeln!(out, "(error) {error}").map_err(write_failed)?;
            }
        }
        out.flush().map_err(write_failed)?;
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::super::addr::ServerAddr;
    use super::super::testing::{TestNode, block_on, cluster_status, fixed, three_node_ring};
    use super::*;

    /// Runs `script` as if piped into `keel shell --server server`.
    fn script(server: &ServerAddr, script: &str) -> (String, Tally, ServerAddr) {
        let runtime = runtime().expect("a runtime");
        let mut shell = Shell::new(server.clone());
        let mut out = Vec::new();
        let tally = drive(&runtime, &mut shell, &mut Piped(Cursor::new(script)), &mut out).expect("runs");
        (String::from_utf8(out).expect("utf-8 output"), tally, shell.server().clone())
    }

    #[test]
    fn a_piped_script_runs_line_by_line() {
        let node = TestNode::start();
        let commands = "\
put a 1
get a
# a comment, then a blank line

put 'k 2' \"hello world\" quorum
get \"k 2\" one
get missing
delete a all
get a
context
bogus
get a most
quit
get a
";
        let (out, tally, _) = script(&node.http, commands);
        let expected = "\
OK
\"1\"
OK
\"hello world\"
(not found)
OK
(not found)
";
        assert!(out.starts_with(expected), "{out}");
        assert!(out.contains("  (key \"a\")\n"), "{out}");
        assert!(out.contains("(error) unknown command \"bogus\"; type help\n"), "{out}");
        assert!(out.ends_with("(error) consistency must be one, quorum, all or a replica count from 1 to 255, not \"most\"\n"), "{out}");
        assert_eq!(tally, Tally { commands: 12, failed: 2 });
        assert_eq!(tally.verdict().map_err(|failure| failure.exit_code()), Err(1));
    }

    #[test]
    fn siblings_status_ring_nodes_and_help() {
        let node = TestNode::start();
        block_on(async {
            let mut connection = Connection::open(&node.http).await.expect("connects");
            for value in ["x", "\u{0}y"] {
                connection.put(b"s", value.as_bytes().to_vec().into(), Some(""), None).await.expect("put");
            }
        });
        let (out, tally, _) = script(&node.http, "get s\nstatus\nring 100\nnodes\nhelp\nswitch\n");
        assert_eq!(tally.failed, 0, "{out}");
        assert!(out.starts_with("(2 siblings: "), "{out}");
        assert!(out.contains("\n1) \"x\"\n2) \"\\0y\"\n"), "{out}");
        assert!(out.contains("health    ok\n"), "{out}");
        assert!(out.contains("1 nodes, 1 vnodes, 1 replicas per key\n"), "{out}");
        assert!(out.contains("   1) n1  127.0.0.1:7000"), "{out}");
        assert!(out.contains("switch N|NODE|ADDR"), "{out}");
        assert!(out.ends_with(&format!("talking to {}\n", node.http)), "{out}");
    }

    #[test]
    fn switch_moves_between_members_and_addresses() {
        // Two nodes whose peer ports sit one below their HTTP ports.
        let other = TestNode::with(|http, _| {
            fixed(cluster_status("n2", &[("n1", 1), ("n2", http - 1)]), three_node_ring())
        });
        let other_port = other.http.port();
        let first = TestNode::with(|http, _| {
            fixed(cluster_status("n1", &[("n1", http - 1), ("n2", other_port - 1)]), three_node_ring())
        });
        let (out, tally, server) = script(&first.http, "switch 2\nswitch 7\nswitch n1\n");
        assert!(out.starts_with(&format!("talking to node n2 at {}\n", other.http)), "{out}");
        assert!(out.contains("(error) no member 7; `nodes` lists 2 members\n"), "{out}");
        // n1's peer port in n2's view is 1, so n1's HTTP port is assumed to be 2: checked, refused.
        assert!(out.contains("(error) cannot connect to 127.0.0.1:2"), "{out}");
        assert_eq!((tally.failed, server), (2, other.http.clone()));
        let (out, tally, server) = script(&other.http, &format!("switch {}\nstatus\n", first.http));
        assert_eq!(tally.failed, 0, "{out}");
        assert!(out.starts_with(&format!("talking to node n1 at {}\n", first.http)), "{out}");
        assert!(out.contains("node      n1 (cluster test"), "{out}");
        assert_eq!(server, first.http);
    }

    #[test]
    fn an_unreachable_node_fails_commands_but_not_the_shell() {
        let nowhere = ServerAddr::new("127.0.0.1", 1);
        let (out, tally, _) = script(&nowhere, "get a\nhelp\nswitch not:a:port\n");
        assert!(out.starts_with("(error) cannot connect to 127.0.0.1:1"), "{out}");
        assert!(out.contains("(error) \"not:a:port\": expected host:port"), "{out}");
        assert_eq!(tally, Tally { commands: 3, failed: 2 });
    }
}
