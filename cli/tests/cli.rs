//! The `keel` binary's contract with scripts: output lines and exit codes.

use std::process::Command;

fn keel(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_keel")).args(args).output().expect("run keel");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

#[test]
fn sim_ends_with_one_summary_line_and_replays_it_exactly() {
    let (code, first, _) = keel(&["sim", "--seed", "7"]);
    assert_eq!(code, 0, "{first}");
    let last = first.lines().last().expect("a summary line");
    assert!(last.starts_with("seed=7 result=ok trace="), "{last}");
    let trace = last.rsplit('=').next().expect("a trace");
    assert_eq!(trace.len(), 16);
    assert!(trace.chars().all(|c| c.is_ascii_hexdigit()));
    let (_, second, _) = keel(&["sim", "--seed", "7"]);
    assert_eq!(second.lines().last(), Some(last));
}

#[test]
fn sim_sweeps_end_with_a_count_line() {
    let (code, out, _) = keel(&["sim", "--seeds", "1..6", "--jobs", "2"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().last(), Some("seeds=5 failed=0"));
}

#[test]
fn bad_usage_exits_with_two_and_says_why() {
    let (code, _, err) = keel(&["sim", "--seeds", "9..3"]);
    assert_eq!(code, 2);
    assert!(err.contains("empty range"), "{err}");
    let (code, _, err) = keel(&["sim", "--seed", "1", "--faults", "meteor"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown fault"), "{err}");
    let (code, _, err) = keel(&["sim", "--seed", "1", "--replicas", "1", "--faults", "bit-rot"]);
    assert_eq!(code, 2);
    assert!(err.contains("bit rot needs two replicas"), "{err}");
    let (code, _, err) = keel(&["sim", "--seed", "1", "--fsync", "periodic", "--faults", "sync-failure"]);
    assert_eq!(code, 2);
    assert!(err.contains("sync failures cannot be simulated with --fsync periodic"), "{err}");
    let (code, _, err) = keel(&["sim", "--seed", "1", "--nodes", "3", "--replicas", "4"]);
    assert_eq!(code, 2);
    assert!(err.contains("replicas must be 1..=3"), "{err}");
    let (code, _, err) = keel(&["node", "--peer", "not-a-peer"]);
    assert_eq!(code, 2);
    assert!(err.contains("ID@HOST:PORT"), "{err}");
}

#[test]
fn every_command_has_help() {
    for command in ["node", "dev-cluster", "sim"] {
        let (code, out, _) = keel(&[command, "--help"]);
        assert_eq!(code, 0, "{command}");
        assert!(out.contains("Usage:"), "{command}: {out}");
    }
}
