//! Settings from flags, the environment and the file: precedence, and the
//! refusal of every value outside its range, named where it was given.

use super::*;

#[test]
fn defaults_need_no_file_and_no_flags() {
    let settings = Settings::resolve(&NodeArgs::default()).unwrap();
    assert_eq!(settings.node, NodeId(1));
    assert_eq!(settings.data_dir, PathBuf::from("keel-data/node-1"));
    assert_eq!(settings.listen_http, "127.0.0.1:7420".parse().unwrap());
    assert!(settings.peers.is_empty());
    let config = settings.node_config().unwrap();
    assert_eq!(config.ring.replicas, 1, "a single node keeps one replica");
}

#[test]
fn flags_override_the_file_which_overrides_defaults() {
    let dir = std::env::temp_dir().join(format!("keel-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keel.toml");
    std::fs::write(
        &path,
        "node = 2\ncluster = \"prod\"\npeers = [\"1@127.0.0.1:7410\", \"3@127.0.0.1:7610\"]\n",
    )
    .unwrap();
    let args = NodeArgs { config: Some(path.clone()), cluster: Some("flag".into()), ..NodeArgs::default() };
    let settings = Settings::resolve(&args).unwrap();
    assert_eq!(settings.node, NodeId(2));
    assert_eq!(settings.cluster, "flag");
    assert_eq!(settings.peers.len(), 2);
    assert_eq!(settings.node_config().unwrap().members.len(), 3);
    std::fs::write(&path, "nodes = 2\n").unwrap();
    let error = Settings::resolve(&NodeArgs { config: Some(path), ..NodeArgs::default() }).unwrap_err();
    assert!(error.contains("unknown field"), "{error}");
}

#[test]
fn bad_peers_are_refused_with_the_expected_form() {
    let this = NodeId(1);
    assert!(parse_peers(&["2@127.0.0.1:7510".into()], this).is_ok());
    let error = parse_peers(&["two@127.0.0.1:7510".into()], this).unwrap_err();
    assert!(error.contains("ID@HOST:PORT"), "{error}");
    assert!(parse_peers(&["2@nowhere".into()], this).is_err());
    let twice = ["2@127.0.0.1:1".to_owned(), "2@127.0.0.1:2".to_owned()];
    assert!(parse_peers(&twice, this).unwrap_err().contains("twice"));
    assert!(parse_peers(&["1@127.0.0.1:1".into()], this).unwrap().is_empty(), "own entry skipped");
}

/// `keel node`'s flags as clap parses them, the environment included.
#[derive(Debug, clap::Parser)]
struct Flags {
    #[command(flatten)]
    args: NodeArgs,
}

fn from_flags(words: &[&str]) -> Result<Settings, String> {
    use clap::Parser;
    let words = std::iter::once("keel-node").chain(words.iter().copied());
    let flags = Flags::try_parse_from(words).map_err(|error| error.to_string())?;
    Settings::resolve(&flags.args)
}

fn from_file(name: &str, text: &str) -> (PathBuf, Result<Settings, String>) {
    let dir = std::env::temp_dir().join(format!("keel-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keel.toml");
    std::fs::write(&path, text).unwrap();
    let settings = Settings::resolve(&NodeArgs { config: Some(path.clone()), ..NodeArgs::default() });
    (path, settings)
}

/// One value a setting refuses: its file key, the value as a flag gives it
/// and as TOML writes it, and what the error must say about the rule.
struct Bad {
    key: &'static str,
    flag: &'static str,
    toml: &'static str,
    rule: &'static str,
}

const fn bad(key: &'static str, flag: &'static str, toml: &'static str, rule: &'static str) -> Bad {
    Bad { key, flag, toml, rule }
}

const BAD: &[Bad] = &[
    bad("node", "0", "0", "it must be at least 1"),
    bad("replicas", "0", "0", "it must be within 1..=16"),
    bad("replicas", "17", "17", "it must be within 1..=16"),
    bad("replicas", "300", "300", "it must be within 1..=16"),
    bad("key_bytes_max", "0", "0", "it must be within 1..=65535"),
    bad("key_bytes_max", "65536", "65536", "it must be within 1..=65535"),
    bad("value_bytes_max", "0", "0", "it must be within 1..=67043328"),
    bad("value_bytes_max", "67043329", "67043329", "it must be within 1..=67043328"),
    bad("connections_max", "0", "0", "it must be within 1..=1000000"),
    bad("connections_max", "1000001", "1000001", "it must be within 1..=1000000"),
    bad("request_timeout_ms", "0", "0", "it must be within 10..=600000"),
    bad("request_timeout_ms", "600001", "600001", "it must be within 10..=600000"),
    bad("fsync_interval_ms", "0", "0", "it must be within 1..=600000"),
    bad("fsync_interval_ms", "600001", "600001", "it must be within 1..=600000"),
    bad("memtable_bytes_max", "0", "0", "within 65536..=68719476736 (64 KiB to 64 GiB)"),
    bad("memtable_bytes_max", "68719476737", "68719476737", "within 65536..=68719476736"),
    bad("block_cache_bytes_max", "1099511627777", "1099511627777", "within 0..=1099511627776 (0 to 1 TiB)"),
    bad("worker_threads", "0", "0", "it must be within 1..=1024"),
    bad("worker_threads", "1025", "1025", "it must be within 1..=1024"),
    bad("cluster", "", "\"\"", "a cluster name must be 1..=255 bytes long"),
    bad("cluster", "   ", "\"   \"", "a cluster name must be printable and not blank"),
    bad("cluster", "a\tb", "\"a\\tb\"", "a cluster name must be printable and not blank"),
    bad("log", "keel=loud", "\"keel=loud\"", "it must be a log filter"),
];

#[test]
fn every_bad_value_is_refused_as_a_flag_naming_the_flag_and_the_variable() {
    for case in BAD {
        let flag = format!("--{}={}", case.key.replace('_', "-"), case.flag);
        let error = from_flags(&[&flag]).expect_err(&flag);
        let named = format!("--{} (or KEEL_{}) is ", case.key.replace('_', "-"), case.key.to_uppercase());
        assert!(error.starts_with(&named), "{flag}: {error}");
        assert!(error.contains(case.rule), "{flag}: {error}");
    }
}

#[test]
fn every_bad_value_is_refused_in_the_file_naming_the_key_and_the_file() {
    for (n, case) in BAD.iter().enumerate() {
        let line = format!("{} = {}", case.key, case.toml);
        let (path, settings) = from_file(&format!("bad-{n}"), &format!("{line}\n"));
        let error = settings.expect_err(&line);
        assert!(error.starts_with(&format!("{} = ", case.key)), "{line}: {error}");
        assert!(error.contains(&format!(" in {};", path.display())), "{line}: {error}");
        assert!(error.contains(case.rule), "{line}: {error}");
    }
}

/// clap refuses an empty path itself (and ignores an empty variable), so
/// only the file can give one.
#[test]
fn an_empty_data_dir_is_refused_whichever_way_it_comes() {
    let error = from_flags(&["--data-dir="]).unwrap_err();
    assert!(error.contains("a value is required for '--data-dir"), "{error}");
    let (path, settings) = from_file("empty-dir", "data_dir = \"\"\n");
    let expected = format!("data_dir = \"\" in {}; it must name a directory", path.display());
    assert_eq!(settings.unwrap_err(), expected);
}

#[test]
fn the_bounds_themselves_are_accepted() {
    let settings = from_flags(&[
        "--replicas=16",
        "--key-bytes-max=65535",
        "--value-bytes-max=67043328",
        "--connections-max=1",
        "--request-timeout-ms=600000",
        "--memtable-bytes-max=65536",
        "--block-cache-bytes-max=0",
        "--worker-threads=1024",
        "--fsync=periodic",
        "--fsync-interval-ms=1",
    ])
    .unwrap();
    assert_eq!(
        (settings.replicas, settings.key_bytes_max, settings.value_bytes_max),
        (16, 65_535, 67_043_328)
    );
    assert_eq!(settings.worker_threads, 1024);
    assert_eq!(settings.sync_policy, SyncPolicy::Periodic { interval_ms: 1 });
    let config = settings.node_config().unwrap();
    assert_eq!((config.key_bytes_max, config.value_bytes_max), (65_535, 67_043_328));
    assert_eq!(config.engine.block_cache_bytes_max, 0);
}

/// A flag (or variable) that is fine wins over a bad file value, and a bad
/// flag is refused even when the file is fine: precedence holds for checks.
#[test]
fn checks_apply_to_the_value_that_wins() {
    let (path, _) = from_file("precedence", "replicas = 0\nworker_threads = 4\n");
    let config = path.to_str().unwrap();
    let settings = from_flags(&["--config", config, "--replicas=2"]).unwrap();
    assert_eq!((settings.replicas, settings.worker_threads), (2, 4));
    let error = from_flags(&["--config", config, "--replicas=2", "--worker-threads=0"]).unwrap_err();
    assert!(error.starts_with("--worker-threads (or KEEL_WORKER_THREADS) is 0"), "{error}");
}

#[test]
fn accept_data_loss_comes_from_the_flag_or_the_file_and_reaches_the_core() {
    assert!(!from_flags(&[]).unwrap().node_config().unwrap().accept_data_loss);
    assert!(from_flags(&["--accept-data-loss"]).unwrap().node_config().unwrap().accept_data_loss);
    assert!(!from_flags(&["--accept-data-loss=false"]).unwrap().accept_data_loss);
    let (path, settings) = from_file("accept", "accept_data_loss = true\n");
    assert!(settings.unwrap().accept_data_loss);
    let config = path.to_str().unwrap();
    assert!(!from_flags(&["--config", config, "--accept-data-loss=false"]).unwrap().accept_data_loss);
    assert!(from_flags(&["--accept-data-loss=maybe"]).is_err());
}

/// `--help` states every range the checks enforce, so it cannot drift.
#[test]
fn help_states_each_range() {
    use clap::CommandFactory;
    let ranges = [
        ("replicas", checks::REPLICAS),
        ("request_timeout_ms", checks::REQUEST_TIMEOUT_MS),
        ("key_bytes_max", checks::key_bytes_max()),
        ("value_bytes_max", checks::value_bytes_max()),
        ("connections_max", checks::CONNECTIONS_MAX),
        ("memtable_bytes_max", checks::MEMTABLE_BYTES_MAX),
        ("block_cache_bytes_max", checks::BLOCK_CACHE_BYTES_MAX),
        ("worker_threads", checks::WORKER_THREADS),
        ("fsync_interval_ms", checks::FSYNC_INTERVAL_MS),
        ("hints_max", checks::HINTS_MAX),
        ("hint_bytes_max", checks::HINT_BYTES_MAX),
        ("hint_age_max_s", checks::HINT_AGE_MAX_S),
        ("anti_entropy_interval_ms", checks::ANTI_ENTROPY_INTERVAL_MS),
        ("anti_entropy_exchanges_max", checks::ANTI_ENTROPY_EXCHANGES_MAX),
        ("cluster", checks::CLUSTER_BYTES),
    ];
    let command = Flags::command();
    for (key, range) in ranges {
        let arg = command.get_arguments().find(|arg| arg.get_id() == key).expect(key);
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let shown = format!("{}..={}", range.start(), range.end());
        assert!(help.contains(&shown), "{key}: {help:?} lacks {shown}");
        assert_eq!(arg.get_env().and_then(|env| env.to_str()), Some(checks::variable(key).as_str()));
        assert_eq!(arg.get_long(), Some(checks::flag(key).as_str()));
    }
}
