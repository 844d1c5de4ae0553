//! Storage benchmark: keel's engine against fjall, on real files, in one run.
//!
//! `cargo bench -p keel-core --bench storage` writes one million random
//! 16-byte keys with 100-byte values, reads them all back in another random
//! order, and runs ten thousand 100-key range scans from random start keys,
//! through both engines. keel stores each key under the engine key the node
//! builds for a record (`node::encode_record_key`: a prefix, the key's ring
//! position, the key), and pays for hashing the key as the node does; fjall
//! stores the key as it is. Scans go through each engine's iterator
//! (`Engine::iter`, fjall's `range`) and consume the pairs the same way; a
//! scan that reaches the last key goes on from the first, as a range of the
//! ring wraps, so both read the same number of pairs.
//! Durability is the same for both: writes are buffered in the process and
//! fsynced every 100 ms (keel: periodic `sync_now`; fjall: manual journal
//! persistence with `PersistMode::SyncData`), never once per write. Each
//! operation prints its throughput for both and a
//! line `ratio <op> keel/fjall=<x>`; above 1.0 keel is faster.
//!
//! Both engines are open at once. Puts run whole, keel first; gets and scans
//! run in twenty slices that alternate between the engines (and which goes
//! first), so a change in load from other processes falls on both alike.
//!
//! Environment: `KEEL_BENCH_KEYS` changes the key count (default 1000000).
//! keel runs on `FileDisk`, the same source file the node uses, included here
//! because a dev-dependency on keel-io-tokio would build keel-core twice.

mod common;

#[path = "../../io-tokio/src/disk.rs"]
#[allow(dead_code, unused_imports)]
mod file_disk;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mix;
use file_disk::FileDisk;
use keel_core::lsm::{Engine, EngineConfig, SyncPolicy};
use keel_core::node::encode_record_key;
use keel_core::ring::PlacedKey;

const VALUE_BYTES: usize = 100;
const SCANS: usize = 10_000;
const SCAN_LEN: usize = 100;
const SYNC_INTERVAL: Duration = Duration::from_millis(100);
const CACHE_BYTES: u64 = 64 << 20;
const MEMTABLE_BYTES: u64 = 64 << 20;

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

/// One engine under test. Reads run in slices that alternate between the
/// engines, so a swing in load from other processes hits both alike.
trait Subject {
    fn put_all(&mut self, order: &[u64]);
    fn get_slice(&mut self, keys: &[u64]);
    /// Returns the number of pairs read.
    fn scan_slice(&mut self, starts: &[u64]) -> usize;
    fn describe(&self) -> String;
}

struct Keel {
    engine: Engine,
    /// The engine key of the record being read or written.
    record_key: Vec<u8>,
}

impl Keel {
    fn open(dir: &Path) -> Keel {
        let disk = FileDisk::open(dir).expect("bench directory");
        let config = EngineConfig {
            memtable_bytes_max: MEMTABLE_BYTES,
            block_cache_bytes_max: CACHE_BYTES,
            sync_policy: SyncPolicy::Periodic { interval_ms: SYNC_INTERVAL.as_millis() as u64 },
            ..EngineConfig::default()
        };
        Keel { engine: Engine::open(Box::new(disk), config).expect("open keel"), record_key: Vec::new() }
    }

    /// Sets `record_key` to the engine key the node stores client key `i` under.
    fn set_record_key(&mut self, i: u64) {
        encode_record_key(PlacedKey::new(&key(i)), &mut self.record_key);
    }
}

impl Subject for Keel {
    fn put_all(&mut self, order: &[u64]) {
        let mut last_sync = Instant::now();
        for (count, &i) in order.iter().enumerate() {
            self.set_record_key(i);
            self.engine.put(&self.record_key, &value(i)).expect("put");
            if count % 1024 == 0 {
                while self.engine.needs_maintenance() {
                    self.engine.maintain().expect("maintain");
                }
                if last_sync.elapsed() >= SYNC_INTERVAL {
                    self.engine.sync_now().expect("sync");
                    last_sync = Instant::now();
                }
            }
        }
        self.engine.sync_now().expect("sync");
    }

    fn get_slice(&mut self, keys: &[u64]) {
        for &i in keys {
            self.set_record_key(i);
            let got = self.engine.get(&self.record_key).expect("get");
            assert_eq!(got.as_deref(), Some(&value(i)[..]));
        }
    }

    fn scan_slice(&mut self, starts: &[u64]) -> usize {
        let mut seen = 0;
        for &i in starts {
            self.set_record_key(i);
            let from = self.record_key.as_slice();
            let mut read = 0;
            for pair in self.engine.iter(Bound::Included(from), Bound::Unbounded).take(SCAN_LEN) {
                let (_key, _value) = pair.expect("scan");
                read += 1;
            }
            if read < SCAN_LEN {
                let rest = SCAN_LEN - read;
                for pair in self.engine.iter(Bound::Unbounded, Bound::Excluded(from)).take(rest) {
                    let (_key, _value) = pair.expect("scan");
                    read += 1;
                }
            }
            seen += read;
        }
        seen
    }

    fn describe(&self) -> String {
        let stats = self.engine.stats();
        format!(
            "keel   tables per level {:?}, {} MiB on disk, cache {} MiB, {} hits / {} misses",
            stats.tables_per_level,
            stats.disk_bytes >> 20,
            stats.block_cache_bytes >> 20,
            stats.block_cache_hits,
            stats.block_cache_misses
        )
    }
}

struct Fjall {
    db: fjall::Database,
    items: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Fjall {
        let db = fjall::Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .manual_journal_persist(true)
            .open()
            .expect("open fjall");
        let options = || fjall::KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        let items = db.keyspace("items", options).expect("keyspace");
        Fjall { db, items }
    }
}

impl Subject for Fjall {
    fn put_all(&mut self, order: &[u64]) {
        let mut last_sync = Instant::now();
        for (count, &i) in order.iter().enumerate() {
            self.items.insert(key(i), value(i)).expect("insert");
            if count % 1024 == 0 && last_sync.elapsed() >= SYNC_INTERVAL {
                self.db.persist(fjall::PersistMode::SyncData).expect("persist");
                last_sync = Instant::now();
            }
        }
        self.db.persist(fjall::PersistMode::SyncData).expect("persist");
    }

    fn get_slice(&mut self, keys: &[u64]) {
        for &i in keys {
            let got = self.items.get(key(i)).expect("get");
            assert_eq!(got.as_deref(), Some(&value(i)[..]));
        }
    }

    fn scan_slice(&mut self, starts: &[u64]) -> usize {
        let mut seen = 0;
        for &i in starts {
            let from = key(i);
            let mut read = 0;
            for pair in self.items.range(from..).take(SCAN_LEN) {
                let (_key, _value) = pair.into_inner().expect("scan");
                read += 1;
            }
            if read < SCAN_LEN {
                for pair in self.items.range(..from).take(SCAN_LEN - read) {
                    let (_key, _value) = pair.into_inner().expect("scan");
                    read += 1;
                }
            }
            seen += read;
        }
        seen
    }

    fn describe(&self) -> String {
        format!("fjall  {} tables, {} MiB on disk", self.items.table_count(), self.items.disk_space() >> 20)
    }
}

/// Operations per second for each subject, reads in alternating slices.
fn measure(subjects: &mut [&mut dyn Subject; 2], n: u64) -> [[f64; 2]; 3] {
    let mut figures = [[0.0; 2]; 3];
    let puts = order(n, 1);
    for (which, subject) in subjects.iter_mut().enumerate() {
        let start = Instant::now();
        subject.put_all(&puts);
        figures[0][which] = per_second(puts.len(), start.elapsed());
    }
    let gets = order(n, 2);
    let mut elapsed = [Duration::ZERO; 2];
    for (round, slice) in gets.chunks(gets.len().div_ceil(20).max(1)).enumerate() {
        for turn in 0..2 {
            let which = (round + turn) % 2;
            let start = Instant::now();
            subjects[which].get_slice(slice);
            elapsed[which] += start.elapsed();
        }
    }
    for which in 0..2 {
        figures[1][which] = per_second(gets.len(), elapsed[which]);
    }
    let starts: Vec<u64> = order(n, 3).into_iter().take(SCANS).collect();
    let (mut elapsed, mut seen) = ([Duration::ZERO; 2], [0; 2]);
    for (round, slice) in starts.chunks(SCANS / 20).enumerate() {
        for turn in 0..2 {
            let which = (round + turn) % 2;
            let start = Instant::now();
            seen[which] += subjects[which].scan_slice(slice);
            elapsed[which] += start.elapsed();
        }
    }
    assert_eq!(seen[0], seen[1], "both engines scan the same pairs");
    for which in 0..2 {
        figures[2][which] = per_second(seen[which], elapsed[which]);
    }
    figures
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-bench-storage-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn main() {
    let n: u64 = std::env::var("KEEL_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    println!("storage: {n} random 16-byte keys, {VALUE_BYTES}-byte values, fsync every {SYNC_INTERVAL:?}");
    let (keel_dir, fjall_dir) = (fresh_dir("keel"), fresh_dir("fjall"));
    let mut keel = Keel::open(&keel_dir);
    let mut fjall = Fjall::open(&fjall_dir);
    let figures = measure(&mut [&mut keel, &mut fjall], n);
    println!("{}", keel.describe());
    println!("{}", fjall.describe());
    drop((keel, fjall));
    let _ = std::fs::remove_dir_all(&keel_dir);
    let _ = std::fs::remove_dir_all(&fjall_dir);
    let ops = ["put", "get", "scan"];
    for (op, [keel, fjall]) in ops.iter().zip(figures) {
        println!("{op:<5} keel {keel:>12.0} ops/s   fjall {fjall:>12.0} ops/s");
    }
    for (op, [keel, fjall]) in ops.iter().zip(figures) {
        println!("ratio {op} keel/fjall={:.2}", keel / fjall);
    }
}
