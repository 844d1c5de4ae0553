//! Storage benchmark: keel's engine against fjall, on real files, in one run.
//!
//! `cargo bench -p keel-core --bench storage` writes one million random
//! 16-byte keys with 100-byte values, reads them all back in another random
//! order, and runs ten thousand 100-key range scans from random start keys,
//! through both engines. Durability is the same for both: writes are
//! buffered in the process and fsynced every 100 ms (keel: periodic
//! `sync_now`; fjall: manual journal persistence with `PersistMode::SyncData`),
//! never once per write. Each operation prints its throughput for both and a
//! line `ratio <op> keel/fjall=<x>`; above 1.0 keel is faster.
//!
//! Environment: `KEEL_BENCH_KEYS` changes the key count (default 1000000).
//! keel runs on `FileDisk`, the same source file the node uses, included here
//! because a dev-dependency on keel-io-tokio would build keel-core twice.

#[path = "../../io-tokio/src/disk.rs"]
#[allow(dead_code, unused_imports)]
mod file_disk;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use file_disk::FileDisk;
use keel_core::lsm::{Engine, EngineConfig, SyncPolicy};

const VALUE_BYTES: usize = 100;
const SCANS: usize = 10_000;
const SCAN_LEN: usize = 100;
const SYNC_INTERVAL: Duration = Duration::from_millis(100);
const CACHE_BYTES: u64 = 64 << 20;
const MEMTABLE_BYTES: u64 = 64 << 20;

/// splitmix64: a fixed, dependency-free key generator.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn key(i: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&mix(i).to_be_bytes());
    key[8..].copy_from_slice(&mix(i ^ 0xdead_beef).to_be_bytes());
    key
}

fn value(i: u64) -> [u8; VALUE_BYTES] {
    let mut value = [0; VALUE_BYTES];
    for (n, chunk) in value.chunks_mut(8).enumerate() {
        let word = mix(i.wrapping_mul(31).wrapping_add(n as u64)).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    value
}

/// A permutation of 0..n, different for each `salt`.
fn order(n: u64, salt: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (0..n).collect();
    for i in (1..order.len()).rev() {
        let j = (mix(i as u64 ^ salt) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

struct Figures {
    put: f64,
    get: f64,
    scan: f64,
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn run_keel(dir: &Path, n: u64) -> Figures {
    let disk = FileDisk::open(dir).expect("bench directory");
    let config = EngineConfig {
        memtable_bytes_max: MEMTABLE_BYTES,
        block_cache_bytes_max: CACHE_BYTES,
        sync_policy: SyncPolicy::Periodic { interval_ms: SYNC_INTERVAL.as_millis() as u64 },
        ..EngineConfig::default()
    };
    let mut engine = Engine::open(Box::new(disk), config).expect("open keel");
    let start = Instant::now();
    let mut last_sync = start;
    for (count, i) in order(n, 1).into_iter().enumerate() {
        engine.put(&key(i), &value(i)).expect("put");
        if count % 1024 == 0 {
            while engine.needs_maintenance() {
                engine.maintain().expect("maintain");
            }
            if last_sync.elapsed() >= SYNC_INTERVAL {
                engine.sync_now().expect("sync");
                last_sync = Instant::now();
            }
        }
    }
    engine.sync_now().expect("sync");
    let put = per_second(n as usize, start.elapsed());
    let start = Instant::now();
    for i in order(n, 2) {
        let got = engine.get(&key(i)).expect("get");
        assert_eq!(got.as_deref(), Some(&value(i)[..]));
    }
    let get = per_second(n as usize, start.elapsed());
    let start = Instant::now();
    let mut seen = 0;
    for i in order(n, 3).into_iter().take(SCANS) {
        let from = key(i);
        seen += engine.scan(Bound::Included(&from), Bound::Unbounded, SCAN_LEN).expect("scan").len();
    }
    let scan = per_second(seen, start.elapsed());
    let stats = engine.stats();
    println!(
        "keel   tables per level {:?}, {} MiB on disk, cache {} MiB, {} hits / {} misses",
        stats.tables_per_level,
        stats.disk_bytes >> 20,
        stats.block_cache_bytes >> 20,
        stats.block_cache_hits,
        stats.block_cache_misses
    );
    Figures { put, get, scan }
}

fn run_fjall(dir: &Path, n: u64) -> Figures {
    use fjall::{Database, KeyspaceCreateOptions, PersistMode};
    let db = Database::builder(dir)
        .cache_size(CACHE_BYTES)
        .manual_journal_persist(true)
        .open()
        .expect("open fjall");
    let items = db
        .keyspace("items", || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES))
        .expect("keyspace");
    let start = Instant::now();
    let mut last_sync = start;
    for (count, i) in order(n, 1).into_iter().enumerate() {
        items.insert(key(i), value(i)).expect("insert");
        if count % 1024 == 0 && last_sync.elapsed() >= SYNC_INTERVAL {
            db.persist(PersistMode::SyncData).expect("persist");
            last_sync = Instant::now();
        }
    }
    db.persist(PersistMode::SyncData).expect("persist");
    let put = per_second(n as usize, start.elapsed());
    let start = Instant::now();
    for i in order(n, 2) {
        let got = items.get(key(i)).expect("get");
        assert_eq!(got.as_deref(), Some(&value(i)[..]));
    }
    let get = per_second(n as usize, start.elapsed());
    let start = Instant::now();
    let mut seen = 0;
    for i in order(n, 3).into_iter().take(SCANS) {
        for pair in items.range(key(i)..).take(SCAN_LEN) {
            let (_key, _value) = pair.into_inner().expect("scan");
            seen += 1;
        }
    }
    let scan = per_second(seen, start.elapsed());
    println!("fjall  {} tables, {} MiB on disk", items.table_count(), items.disk_space() >> 20);
    Figures { put, get, scan }
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-bench-storage-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument naming another bench skips this one.
    let n: u64 = std::env::var("KEEL_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    println!("storage: {n} random 16-byte keys, {VALUE_BYTES}-byte values, fsync every {SYNC_INTERVAL:?}");
    let keel_dir = fresh_dir("keel");
    let keel = run_keel(&keel_dir, n);
    let _ = std::fs::remove_dir_all(&keel_dir);
    let fjall_dir = fresh_dir("fjall");
    let fjall = run_fjall(&fjall_dir, n);
    let _ = std::fs::remove_dir_all(&fjall_dir);
    for (op, keel, fjall) in
        [("put", keel.put, fjall.put), ("get", keel.get, fjall.get), ("scan", keel.scan, fjall.scan)]
    {
        println!("{op:<5} keel {keel:>12.0} ops/s   fjall {fjall:>12.0} ops/s");
    }
    for (op, keel, fjall) in
        [("put", keel.put, fjall.put), ("get", keel.get, fjall.get), ("scan", keel.scan, fjall.scan)]
    {
        println!("ratio {op} keel/fjall={:.2}", keel / fjall);
    }
}
