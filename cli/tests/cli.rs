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
    assert!(err.contains("bit rot and wipes need two replicas"), "{err}");
    let (code, _, err) = keel(&["sim", "--seed", "1", "--fsync", "periodic", "--faults", "sync-failure"]);
    assert_eq!(code, 2);
    assert!(err.contains("sync failures cannot be simulated with --fsync periodic"), "{err}");
    let (code, _, err) = keel(&["sim", "--seed", "1", "--nodes", "3", "--replicas", "4"]);
    assert_eq!(code, 2);
    assert!(err.contains("--replicas 4 needs at least 4 nodes"), "{err}");
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

/// Runs `keel node` with `args` and `env` where a started node would harm
/// nothing (a scratch directory, ephemeral ports), and kills it if it is
/// still running after 10 s: the settings were then accepted.
fn node_refusing(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = std::env::temp_dir().join(format!("keel-cli-node-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("node")
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "--listen-peer",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
            "--listen-redis",
            "127.0.0.1:0",
        ])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keel node");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait for keel node").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keel node {args:?} {env:?} started instead of refusing its settings");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("keel node's output");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_node_with_zero_replicas_exits_with_two_and_names_the_setting() {
    let (code, err) = node_refusing(&["--replicas", "0"], &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim(), "keel node: --replicas (or KEEL_REPLICAS) is 0; it must be within 1..=16");
}

/// The same rules hold for values from the environment as for flags
/// (flags and the file are covered by the unit tests of `Settings`).
#[test]
fn bad_values_from_the_environment_are_refused_naming_the_variable() {
    let cases = [
        ("KEEL_NODE", "0", "at least 1"),
        ("KEEL_REPLICAS", "0", "within 1..=16"),
        ("KEEL_KEY_BYTES_MAX", "0", "within 1..=65535"),
        ("KEEL_VALUE_BYTES_MAX", "0", "within 1..=67043328"),
        ("KEEL_CONNECTIONS_MAX", "0", "within 1..=1000000"),
        ("KEEL_WORKER_THREADS", "0", "within 1..=1024"),
        ("KEEL_REQUEST_TIMEOUT_MS", "600001", "within 10..=600000"),
        ("KEEL_FSYNC_INTERVAL_MS", "0", "within 1..=600000"),
        ("KEEL_MEMTABLE_BYTES_MAX", "1024", "within 65536..=68719476736"),
        ("KEEL_BLOCK_CACHE_BYTES_MAX", "1099511627777", "within 0..=1099511627776"),
        ("KEEL_CLUSTER", "   ", "printable and not blank"),
        ("KEEL_LOG", "keel=loud", "a log filter"),
    ];
    for (variable, value, rule) in cases {
        let (code, err) = node_refusing(&[], &[(variable, value)]);
        assert_eq!(code, 2, "{variable}={value}: {err}");
        assert!(err.contains(&format!("(or {variable}) is ")), "{variable}={value}: {err}");
        assert!(err.contains(rule), "{variable}={value}: {err}");
    }
}
