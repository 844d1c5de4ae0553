//! Damage on a real disk, with one replica, so nothing can repair it: a
//! flipped byte in the middle of the write-ahead log, and in a table.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use keel_tests::Cluster;
use keel_tests::http::request;
use keel_tests::resp::{command, redis_cli, redis_cli_pipe};

const KEYS: usize = 2000;

fn key(i: usize) -> String {
    format!("key-{i:04}")
}

/// Writes `key(i) = value-i` for `0..count` through redis-cli.
fn write_keys(cluster: &Cluster, count: usize) {
    let mut commands = Vec::new();
    for i in 0..count {
        commands.extend(command(&[b"SET", key(i).as_bytes(), format!("value-{i}").as_bytes()]));
    }
    let printed = redis_cli_pipe(cluster.nodes[0].redis, &commands);
    assert!(printed.contains(&format!("errors: 0, replies: {count}")), "{printed}");
}

/// How many of the keys read back with their own value, by MGET; any other
/// value would be garbage.
fn present(cluster: &Cluster, count: usize) -> usize {
    read_back(cluster, count).0
}

/// How many of the keys read back with their own value, and which ones
/// said they are damaged.
fn read_back(cluster: &Cluster, count: usize) -> (usize, Vec<usize>) {
    let keys: Vec<String> = (0..count).map(key).collect();
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    let reply = redis_cli(cluster.nodes[0].redis, &args);
    let (mut found, mut damaged, mut lines) = (0, Vec::new(), reply.lines().peekable());
    for i in 0..count {
        let line = lines.next().unwrap_or_default();
        if line == format!("value-{i}") {
            found += 1;
        } else if line.starts_with("CORRUPT") {
            damaged.push(i);
            // redis-cli prints an empty line after an error element.
            lines.next_if(|next| next.is_empty());
        } else {
            assert!(line.is_empty(), "key {i} reads {line:?}");
        }
    }
    (found, damaged)
}

/// Every file of the data directory but its lock, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("the data directory")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.file_name().is_some_and(|name| name != "LOCK"))
        .map(|path| (path.display().to_string(), std::fs::read(&path).expect("read a file")))
        .collect();
    files.sort();
    files
}

/// The one file of `dir` whose name starts with `prefix` and ends with `suffix`.
fn only_file(dir: &Path, prefix: &str, suffix: &str) -> std::path::PathBuf {
    let found: Vec<_> = std::fs::read_dir(dir)
        .expect("the data directory")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| {
            let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// Flips the bits of one byte of `file`.
fn flip_byte(file: &Path, offset: usize) {
    let mut bytes = std::fs::read(file).expect("read the file");
    bytes[offset] ^= 0x5a;
    std::fs::write(file, bytes).expect("write the file");
}

fn wait_exit(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("poll the node").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("the node's output");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_damaged_log_on_the_only_replica_stops_the_node_until_the_loss_is_accepted() {
    let mut cluster = Cluster::start("wal-damage", 1, 1);
    write_keys(&cluster, KEYS);
    assert_eq!(cluster.stop(0), Some(0));
    let dir = cluster.nodes[0].data_dir.clone();
    let log = only_file(&dir, "wal-", ".log");
    let bytes = std::fs::read(&log).expect("the log");
    let end = bytes.iter().rposition(|&byte| byte != 0).expect("records");
    flip_byte(&log, end / 2);
    let before = snapshot(&dir);

    // Refused: it says what is lost and how to go on, and changes nothing.
    let child = cluster.node_command(0).stderr(Stdio::piped()).spawn().expect("start the node");
    let (code, stderr) = wait_exit(child, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("1 synced records lost"), "{stderr}");
    assert!(stderr.contains("--accept-data-loss"), "{stderr}");
    assert_eq!(snapshot(&dir), before, "a refused start changes nothing on the disk");

    // Accepted: every record but the damaged one is back, and the log said
    // loudly where the damage was.
    let mut child = cluster.node_command(0).arg("--accept-data-loss").stderr(Stdio::piped()).spawn().unwrap();
    cluster.wait_healthy(0);
    assert_eq!(present(&cluster, KEYS), KEYS - 1);
    let _ = child.kill();
    let (_, stderr) = wait_exit(child, Duration::from_secs(10));
    assert!(stderr.contains("damaged record in the write-ahead log"), "{stderr}");
    assert!(stderr.contains("records_after="), "{stderr}");

    // Settled: an ordinary start now, with the damaged file kept as evidence.
    cluster.restart(0);
    assert_eq!(present(&cluster, KEYS), KEYS - 1);
    only_file(&dir, "wal-", ".log.damaged");
}

#[test]
fn a_damaged_table_block_fails_its_keys_alone_and_writes_replace_them() {
    let mut cluster = Cluster::start("table-damage", 1, 1);
    let count = 200;
    write_keys(&cluster, count);
    // A restart writes what the log holds to a table.
    assert_eq!(cluster.stop(0), Some(0));
    cluster.restart(0);
    assert_eq!(cluster.stop(0), Some(0));
    let dir = cluster.nodes[0].data_dir.clone();
    flip_byte(&only_file(&dir, "sst-", ".sst"), 100);
    cluster.restart(0);
    let redis = cluster.nodes[0].redis;

    // The first block holds the keys first in ring order: each says it is
    // damaged, alone.
    let (found, damaged) = read_back(&cluster, count);
    assert!(found > count / 2 && found + damaged.len() == count, "{found} of {count} keys read");
    let (first, second) = match damaged[..] {
        [first, second, ..] => (key(first), key(second)),
        _ => panic!("a damaged block holds several keys: {damaged:?}"),
    };
    let reply = redis_cli(redis, &["GET", &first]);
    assert!(reply.starts_with("CORRUPT") && reply.contains("write or delete the key"), "{reply}");
    let http = request(cluster.nodes[0].http, "GET", &format!("/v1/kv/{second}"), &[], b"").unwrap();
    assert_eq!(http.status, 500, "{}", http.text());
    assert!(http.text().contains("\"damaged\""), "{}", http.text());

    // Writes need no old value: SET and DEL replace the damaged copies.
    assert_eq!(redis_cli(redis, &["SET", &first, "again"]), "OK");
    assert_eq!(redis_cli(redis, &["GET", &first]), "again");
    assert_eq!(redis_cli(redis, &["DEL", &second]), "1");
    assert_eq!(redis_cli(redis, &["GET", &second]), "");
}
