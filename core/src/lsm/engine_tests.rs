//! Engine tests over a [`MemDisk`]: the write and read paths, the sync
//! handshake, crashes and reopens, poisoning and corruption.

use std::ops::Bound;

use super::*;
use crate::disk::{CrashMode, Disk, Faults, MemDisk};

pub(super) fn small_config() -> EngineConfig {
    EngineConfig {
        memtable_bytes_max: 4 << 10,
        wal_buffer_bytes_max: 256,
        block_bytes: 256,
        block_cache_bytes_max: 8 << 10,
        compress_values_over_bytes: 64,
        wal_preallocate_bytes: 512,
        ..EngineConfig::default()
    }
}

/// Where the records of a preallocated WAL file end: after its last nonzero byte.
pub(super) fn log_end(disk: &MemDisk, file: &str) -> u64 {
    let bytes = disk.read_at(file, 0, disk.len(file).unwrap()).unwrap();
    bytes.iter().rposition(|&byte| byte != 0).map_or(0, |last| last as u64 + 1)
}

/// Where record `n` (from 0) of a WAL file of equally long records starts.
pub(super) fn record_start(disk: &MemDisk, file: &str, records: u64, n: u64) -> u64 {
    let header = wal::FILE_HEADER_BYTES as u64;
    header + (log_end(disk, file) - header) / records * n
}

/// Flushes and compacts after a few KiB.
pub(super) fn open_small(disk: &MemDisk) -> Engine {
    Engine::open(Box::new(disk.clone()), small_config()).unwrap()
}

/// Never flushes on its own in these tests: everything stays in the WAL.
pub(super) fn open(disk: &MemDisk) -> Engine {
    let config = EngineConfig { memtable_bytes_max: 1 << 20, ..small_config() };
    Engine::open(Box::new(disk.clone()), config).unwrap()
}

pub(super) fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

#[test]
fn put_get_delete_and_scan() {
    let disk = MemDisk::new(1);
    let mut engine = open(&disk);
    assert_eq!(engine.put(b"a", b"1").unwrap(), Lsn(1));
    assert_eq!(engine.put(b"b", b"2").unwrap(), Lsn(2));
    assert_eq!(engine.put(b"c", b"3").unwrap(), Lsn(3));
    assert_eq!(engine.delete(b"b").unwrap(), Lsn(4));
    assert_eq!(engine.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(engine.get(b"b").unwrap(), None);
    let all = engine.scan(Bound::Unbounded, Bound::Unbounded, 10).unwrap();
    assert_eq!(all, vec![(b"a".to_vec(), b"1".to_vec()), (b"c".to_vec(), b"3".to_vec())]);
    assert_eq!(engine.scan(Bound::Unbounded, Bound::Unbounded, 1).unwrap().len(), 1);
    assert_eq!(engine.scan_prefix(b"c", 10).unwrap().len(), 1);
    assert_eq!(engine.last_lsn(), Lsn(4));
    assert_eq!(engine.durable_lsn(), Lsn(0));
}

#[test]
fn limits_are_enforced() {
    let disk = MemDisk::new(1);
    let mut engine = open(&disk);
    let big_key = vec![0; small_config().key_bytes_max as usize + 1];
    assert!(matches!(engine.put(&big_key, b""), Err(WriteError::KeyTooLarge { .. })));
    assert_eq!(engine.last_lsn(), Lsn(0));
}

#[test]
fn synced_writes_survive_a_crash_and_unsynced_ones_do_not() {
    let disk = MemDisk::new(2);
    let mut engine = open(&disk);
    for i in 0..100 {
        engine.put(&key(i), b"synced").unwrap();
    }
    let request = engine.begin_sync().unwrap();
    assert_eq!(request.through, Lsn(100));
    assert_eq!(engine.begin_sync(), None, "one sync in flight at a time");
    engine.put(&key(1000), b"during the sync").unwrap();
    request.run(&disk).unwrap();
    engine.finish_sync(request, Ok(()));
    assert_eq!(engine.durable_lsn(), Lsn(100));
    for i in 100..200 {
        engine.put(&key(i), b"unsynced").unwrap();
    }
    drop(engine);
    disk.crash(CrashMode::DropUnsynced);
    let mut engine = open(&disk);
    assert_eq!(engine.last_lsn(), Lsn(100));
    assert_eq!(engine.durable_lsn(), Lsn(100));
    for i in 0..100 {
        assert_eq!(engine.get(&key(i)).unwrap(), Some(b"synced".to_vec()));
    }
    assert_eq!(engine.get(&key(150)).unwrap(), None);
    assert_eq!(engine.get(&key(1000)).unwrap(), None);
    // Lsns continue from the recovered point and later crashes keep both files' data.
    assert_eq!(engine.put(b"after", b"x").unwrap(), Lsn(101));
    engine.sync_now().unwrap();
    disk.crash(CrashMode::DropUnsynced);
    let mut engine = open(&disk);
    assert_eq!(engine.last_lsn(), Lsn(101));
    assert_eq!(engine.get(b"after").unwrap(), Some(b"x".to_vec()));
    assert_eq!(engine.get(&key(5)).unwrap(), Some(b"synced".to_vec()));
}

#[test]
fn torn_tail_recovers_a_prefix_between_durable_and_last() {
    for seed in 0..40 {
        let disk = MemDisk::new(seed);
        let mut engine = open(&disk);
        for i in 0..50 {
            engine.put(&key(i), &key(i)).unwrap();
        }
        engine.sync_now().unwrap();
        for i in 50..100 {
            engine.put(&key(i), &key(i)).unwrap();
        }
        engine.begin_sync();
        drop(engine);
        disk.crash(CrashMode::TornTail);
        let mut engine = open(&disk);
        let last = engine.last_lsn().0;
        assert!((50..=100).contains(&last), "seed {seed}: recovered {last}");
        for i in 0..100 {
            let expected = (u64::from(i) < last).then(|| key(i));
            assert_eq!(engine.get(&key(i)).unwrap(), expected, "seed {seed} key {i}");
        }
        assert!(!engine.recovery().log_damaged, "seed {seed}: a torn tail is not damage");
        // The torn file stays valid for the next recovery.
        engine.put(b"next", b"1").unwrap();
        engine.sync_now().unwrap();
        disk.crash(CrashMode::TornTail);
        let engine = open(&disk);
        assert_eq!(engine.last_lsn().0, last + 1, "seed {seed}");
    }
}

#[test]
fn failed_sync_poisons_writes_but_not_reads() {
    let disk = MemDisk::new(3);
    let mut engine = open(&disk);
    engine.put(b"a", b"1").unwrap();
    disk.set_faults(Faults { sync_fail_per_million: 1_000_000, ..Faults::default() });
    assert!(engine.sync_now().is_err());
    assert!(engine.is_poisoned());
    assert_eq!(engine.put(b"b", b"2"), Err(WriteError::Poisoned));
    assert_eq!(engine.delete(b"a"), Err(WriteError::Poisoned));
    assert_eq!(engine.begin_sync(), None);
    assert_eq!(engine.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert!(engine.stats().poisoned);
    assert_eq!(engine.maintain(), Err(MaintainError::Poisoned));
}

/// A write whose forced flush fails must leave nothing of itself readable:
/// its caller was told it failed, so nobody may be shown it as stored.
#[test]
fn a_write_that_fails_is_never_readable() {
    let disk = MemDisk::new(4);
    let mut engine = open_small(&disk);
    let mut i = 0;
    // Fill the memtable to the size at which a write must flush first.
    while engine.stats().memtable_bytes < 2 * engine.config().memtable_bytes_max {
        engine.put(&key(i), b"value").unwrap();
        i += 1;
    }
    disk.set_faults(Faults { sync_fail_per_million: 1_000_000, ..Faults::default() });
    assert!(engine.put(b"late", b"never stored").is_err());
    assert!(engine.is_poisoned());
    assert_eq!(engine.get(b"late").unwrap(), None);
    assert_eq!(engine.get(&key(0)).unwrap(), Some(b"value".to_vec()));
}

#[test]
fn transient_read_corruption_at_recovery_loses_nothing() {
    let mut reads_corrupted = 0;
    for seed in 0..40 {
        let disk = MemDisk::new(seed);
        let mut engine = open(&disk);
        for i in 0..200 {
            engine.put(&key(i), b"value").unwrap();
        }
        engine.sync_now().unwrap();
        drop(engine);
        disk.crash(CrashMode::DropUnsynced);
        disk.set_faults(Faults { read_corrupt_per_million: 300_000, ..Faults::default() });
        let config = EngineConfig { memtable_bytes_max: 1 << 20, ..small_config() };
        let engine = Engine::open(Box::new(disk.clone()), config);
        disk.set_faults(Faults::default());
        // Reads corrupted several times in a row must not cut synced records.
        let engine = engine.unwrap();
        assert_eq!(engine.last_lsn(), Lsn(200), "seed {seed}");
        reads_corrupted += engine.stats().corruption_detected;
    }
    assert!(reads_corrupted > 10, "{reads_corrupted}");
}

/// A WAL file of format version 1 (no header, no preallocation), as an
/// older build left it, cut short by a crash.
fn write_v1_log(disk: &MemDisk, records: u64) {
    let mut log = Vec::new();
    for i in 0..records {
        let value = format!("v1-{i}");
        wal::encode_as(
            wal::Format::V1,
            wal::Record { lsn: Lsn(i + 1), key: &key(i as u32), value: Some(value.as_bytes()) },
            &mut log,
        );
    }
    log.truncate(log.len() - 3);
    let file = wal::file_name(0);
    disk.create(&file).unwrap();
    disk.append(&file, &log).unwrap();
    disk.sync(&file).unwrap();
    disk.sync_dir().unwrap();
}

#[test]
fn a_log_of_the_older_format_replays_and_the_engine_writes_on_in_the_new_one() {
    let disk = MemDisk::new(8);
    write_v1_log(&disk, 20);
    let mut engine = open(&disk);
    assert_eq!(engine.last_lsn(), Lsn(19), "the torn last record is dropped");
    assert!(!engine.recovery().log_damaged);
    assert_eq!(engine.get(&key(18)).unwrap(), Some(b"v1-18".to_vec()));
    engine.put(b"new", b"x").unwrap();
    engine.sync_now().unwrap();
    drop(engine);
    disk.crash(CrashMode::DropUnsynced);
    let mut engine = open(&disk);
    assert_eq!(engine.last_lsn(), Lsn(20));
    assert_eq!(engine.get(&key(0)).unwrap(), Some(b"v1-0".to_vec()));
    assert_eq!(engine.get(b"new").unwrap(), Some(b"x".to_vec()));
    let logs: Vec<String> =
        disk.list().unwrap().into_iter().filter(|name| name.starts_with("wal-")).collect();
    assert_eq!(logs.len(), 1, "the old file's records went to a table: {logs:?}");
    let head = disk.read_at(&logs[0], 0, wal::FILE_HEADER_BYTES as u64).unwrap();
    assert_eq!(head, wal::file_header(), "new files are written in the new format");
}

#[test]
fn a_log_of_an_unknown_format_version_refuses_the_open() {
    let disk = MemDisk::new(9);
    let mut header = wal::file_header();
    header[8] = 7;
    let crc = crc32c::crc32c(&header[..12]);
    header[12..].copy_from_slice(&crc.to_le_bytes());
    let file = wal::file_name(0);
    disk.create(&file).unwrap();
    disk.append(&file, &header).unwrap();
    let error = Engine::open(Box::new(disk.clone()), small_config()).unwrap_err();
    assert!(matches!(error, OpenError::Unsupported { .. }), "{error}");
    assert!(error.to_string().contains("version 7"), "{error}");
    assert_eq!(disk.read_at(&file, 0, 16).unwrap(), header, "the file is left as it was");
}

/// Records are written over zeros preallocated in chunks: a run of writes
/// crosses many chunk ends, and every crash keeps what was synced.
#[test]
fn writes_across_preallocated_chunks_survive_crashes() {
    for seed in 0..20 {
        let disk = MemDisk::new(seed);
        let mut engine = open(&disk);
        let mut synced = 0;
        for round in 0..6u32 {
            for i in 0..40 {
                let value = vec![b'a' + (round as u8); (i * 7 % 90) as usize];
                engine.put(&key(round * 100 + i), &value).unwrap();
            }
            engine.sync_now().unwrap();
            synced = engine.last_lsn().0;
        }
        let file_len = disk.len(&engine.wal.file).unwrap();
        assert_eq!(file_len % 512, wal::FILE_HEADER_BYTES as u64 % 512, "grown by whole chunks");
        assert!(file_len > 4 * 512, "{file_len}");
        engine.put(b"unsynced", b"maybe").unwrap();
        engine.begin_sync();
        drop(engine);
        disk.crash(CrashMode::TornTail);
        let mut engine = open(&disk);
        assert!(engine.last_lsn().0 >= synced, "seed {seed}");
        assert!(!engine.recovery().log_damaged, "seed {seed}");
        assert_eq!(engine.get(&key(503)).unwrap(), Some(vec![b'f'; 21]), "seed {seed}");
    }
}

#[test]
fn with_periodic_syncs_the_log_is_appended_without_zeros() {
    let disk = MemDisk::new(10);
    let config = EngineConfig {
        memtable_bytes_max: 1 << 20,
        sync_policy: SyncPolicy::Periodic { interval_ms: 100 },
        ..small_config()
    };
    let mut engine = Engine::open(Box::new(disk.clone()), config.clone()).unwrap();
    for i in 0..30 {
        engine.put(&key(i), b"value").unwrap();
    }
    engine.sync_now().unwrap();
    let file = engine.wal.file.clone();
    assert_eq!(disk.len(&file).unwrap(), log_end(&disk, &file), "no zeros after the log");
    drop(engine);
    disk.crash(CrashMode::TornTail);
    let engine = Engine::open(Box::new(disk.clone()), config).unwrap();
    assert_eq!(engine.last_lsn(), Lsn(30));
    assert!(!engine.recovery().log_damaged);
}

fn churn(engine: &mut Engine, model: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>, rounds: u32) {
    for i in 0..rounds {
        let k = key((i * 7919) % 500);
        if i % 5 == 4 {
            engine.delete(&k).unwrap();
            model.remove(&k);
        } else {
            let value = format!("value-{i}-{}", "x".repeat((i % 97) as usize)).into_bytes();
            engine.put(&k, &value).unwrap();
            model.insert(k, value);
        }
        while engine.needs_maintenance() {
            engine.maintain().unwrap();
        }
    }
}

fn assert_matches(engine: &mut Engine, model: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>) {
    for i in 0..500 {
        assert_eq!(engine.get(&key(i)).unwrap().as_ref(), model.get(&key(i)), "key {i}");
    }
    let all = engine.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX).unwrap();
    let expected: Vec<Pair> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(all, expected);
    let from = key(100);
    let to = key(200);
    let some = engine.scan(Bound::Excluded(&from), Bound::Included(&to), 30).unwrap();
    let expected: Vec<Pair> = model
        .range::<Vec<u8>, _>((Bound::Excluded(&from), Bound::Included(&to)))
        .take(30)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(some, expected);
}

#[test]
fn flushes_and_compactions_keep_the_newest_values() {
    let disk = MemDisk::new(5);
    let mut engine = open_small(&disk);
    let mut model = std::collections::BTreeMap::new();
    churn(&mut engine, &mut model, 6_000);
    let stats = engine.stats();
    assert!(stats.flushes > 10, "{stats:?}");
    assert!(stats.compactions > 0, "{stats:?}");
    assert!(stats.tables_per_level.iter().skip(1).any(|&n| n > 0), "{stats:?}");
    assert!(stats.block_cache_bytes <= stats.block_cache_bytes_max);
    // An upper bound: every live key's newest entry is a value somewhere.
    assert!(stats.keys_estimate() >= model.len() as u64, "{stats:?}");
    assert_matches(&mut engine, &model);
    assert!(engine.durable_lsn() <= engine.last_lsn());
    engine.sync_now().unwrap();
    drop(engine);
    disk.crash(CrashMode::DropUnsynced);
    let mut engine = open_small(&disk);
    assert_matches(&mut engine, &model);
    assert_eq!(engine.stats().corruption_detected, 0);
}

/// A shell keeps files of its own in the engine's directory (the node's
/// `LOCK`); names that are not the engine's, even close ones, are never read,
/// removed or written over by opens, flushes, compactions or WAL rotation.
#[test]
fn files_the_engine_does_not_name_are_left_alone() {
    let disk = MemDisk::new(11);
    let foreign = ["LOCK", "README", "wal-1.log", "wal-1.log.bak", "sst-.sst", "sst-1.sst~", "MANIFEST.old"];
    for name in foreign {
        disk.create(name).unwrap();
        disk.append(name, name.as_bytes()).unwrap();
        disk.sync(name).unwrap();
    }
    disk.sync_dir().unwrap();
    let mut engine = open_small(&disk);
    assert!(engine.recovery().files_removed.is_empty(), "{:?}", engine.recovery());
    let mut model = std::collections::BTreeMap::new();
    churn(&mut engine, &mut model, 3_000);
    assert!(engine.stats().flushes > 0 && engine.stats().compactions > 0, "{:?}", engine.stats());
    engine.sync_now().unwrap();
    drop(engine);
    disk.crash(CrashMode::DropUnsynced);
    let mut engine = open_small(&disk);
    assert_matches(&mut engine, &model);
    assert!(!engine.recovery().files_removed.iter().any(|name| foreign.contains(&name.as_str())));
    let names = disk.list().unwrap();
    for name in foreign {
        assert!(names.iter().any(|listed| listed == name), "{name} is gone: {names:?}");
        assert_eq!(disk.read_at(name, 0, name.len() as u64).unwrap(), name.as_bytes(), "{name}");
        assert_eq!(disk.len(name).unwrap(), name.len() as u64, "{name}");
    }
}

#[test]
fn flushed_writes_are_durable_without_a_wal_sync() {
    let disk = MemDisk::new(6);
    let mut engine = open_small(&disk);
    engine.put(b"a", b"1").unwrap();
    engine.delete(b"a").unwrap();
    engine.put(b"b", b"2").unwrap();
    assert!(engine.flush().unwrap());
    assert_eq!(engine.durable_lsn(), Lsn(3));
    engine.put(b"c", b"3").unwrap();
    drop(engine);
    disk.crash(CrashMode::DropUnsynced);
    let mut engine = open_small(&disk);
    assert_eq!(engine.last_lsn(), Lsn(3));
    assert_eq!(engine.get(b"a").unwrap(), None);
    assert_eq!(engine.get(b"b").unwrap(), Some(b"2".to_vec()));
    assert_eq!(engine.get(b"c").unwrap(), None);
    assert_eq!(engine.put(b"d", b"4").unwrap(), Lsn(4));
}

#[test]
fn the_key_estimate_counts_values_in_the_memtable_and_the_tables() {
    let disk = MemDisk::new(16);
    let mut engine = open_small(&disk);
    assert_eq!(engine.stats().keys_estimate(), 0);
    for key in [b"a", b"b", b"c"] {
        engine.put(key, b"1").unwrap();
    }
    engine.delete(b"b").unwrap();
    let stats = engine.stats();
    assert_eq!((stats.memtable_entries, stats.memtable_tombstones, stats.keys_estimate()), (3, 1, 2));
    assert!(engine.flush().unwrap());
    let stats = engine.stats();
    assert_eq!((stats.memtable_entries, stats.table_entries, stats.table_tombstones), (0, 3, 1));
    assert_eq!(stats.keys_estimate(), 2);
    // An overwritten key counts in the memtable and in the table until a
    // compaction merges them: the estimate errs high, never low.
    engine.put(b"a", b"2").unwrap();
    assert_eq!(engine.stats().keys_estimate(), 3);
    // The counts come from the manifest, so a reopen keeps them.
    engine.sync_now().unwrap();
    drop(engine);
    assert_eq!(open_small(&disk).stats().keys_estimate(), 3);
}

#[test]
fn a_sync_in_flight_across_a_flush_keeps_its_file() {
    let disk = MemDisk::new(7);
    let mut engine = open_small(&disk);
    engine.put(b"a", b"1").unwrap();
    let request = engine.begin_sync().unwrap();
    engine.flush().unwrap();
    assert!(disk.list().unwrap().contains(&request.file));
    request.run(&disk).unwrap();
    engine.finish_sync(request.clone(), Ok(()));
    assert!(disk.list().unwrap().contains(&request.file), "removed by the next removal job");
    assert_eq!(engine.durable_lsn(), Lsn(1));
    engine.maintain().unwrap();
    assert!(!disk.list().unwrap().contains(&request.file));
}

#[test]
fn corrupt_table_blocks_are_errors_not_values() {
    let disk = MemDisk::new(8);
    let mut engine = open_small(&disk);
    for i in 0..50 {
        engine.put(&key(i), b"value").unwrap();
    }
    engine.flush().unwrap();
    let table = disk.list().unwrap().into_iter().find(|name| name.starts_with("sst-")).unwrap();
    disk.corrupt_at(&table, 20, 0).unwrap();
    let mut engine = open_small(&disk);
    let error = engine.get(&key(0)).unwrap_err();
    assert!(matches!(error, ReadError::Corrupt { .. }), "{error}");
    let scan = engine.scan(Bound::Unbounded, Bound::Unbounded, 100);
    assert!(matches!(scan, Err(ReadError::Corrupt { .. })));
    assert!(engine.stats().corruption_detected >= 2);
}

#[test]
fn transient_read_corruption_is_cured_by_a_reread() {
    let disk = MemDisk::new(9);
    let mut engine = open_small(&disk);
    for i in 0..200 {
        engine.put(&key(i), b"value").unwrap();
    }
    engine.flush().unwrap();
    let mut engine = open_small(&disk);
    disk.set_faults(Faults { read_corrupt_per_million: 100_000, ..Faults::default() });
    let mut ok = 0;
    for i in 0..200 {
        match engine.get(&key(i)) {
            Ok(value) => {
                assert_eq!(value, Some(b"value".to_vec()));
                ok += 1;
            }
            Err(error) => assert!(matches!(error, ReadError::Corrupt { .. })),
        }
    }
    assert!(ok > 190, "{ok}");
}

#[test]
fn compaction_over_a_corrupt_block_fails_once_and_keeps_the_tree() {
    let disk = MemDisk::new(10);
    let config = EngineConfig { l0_tables_max: 2, ..small_config() };
    let mut engine = Engine::open(Box::new(disk.clone()), config).unwrap();
    let mut tables = Vec::new();
    for round in 0..2 {
        for i in 0..20 {
            engine.put(&key(i), format!("round {round}").as_bytes()).unwrap();
        }
        engine.flush().unwrap();
        tables = disk.list().unwrap().into_iter().filter(|name| name.starts_with("sst-")).collect();
    }
    assert!(engine.needs_maintenance(), "two level-0 tables are due for compaction");
    disk.corrupt_at(&tables[0], 30, 1).unwrap();
    assert!(matches!(engine.maintain(), Err(MaintainError::Corrupt(_))));
    assert!(!engine.needs_maintenance());
    assert!(!engine.is_poisoned());
    assert_eq!(engine.get(&key(5)).unwrap(), Some(b"round 1".to_vec()));
    let names = disk.list().unwrap();
    assert_eq!(names.iter().filter(|name| name.starts_with("sst-")).count(), 2, "partial output removed");
}

#[test]
fn under_bit_rot_reads_are_right_or_errors_never_wrong() {
    for seed in 0..5 {
        let disk = MemDisk::new(seed);
        let mut engine = open_small(&disk);
        let mut model = std::collections::BTreeMap::new();
        churn(&mut engine, &mut model, 2_000);
        disk.set_faults(Faults {
            bit_rot_per_million: 20_000,
            read_corrupt_per_million: 50_000,
            ..Faults::default()
        });
        let mut errors = 0;
        for i in 0..500 {
            match engine.get(&key(i)) {
                Ok(value) => assert_eq!(value.as_ref(), model.get(&key(i)), "seed {seed} key {i}"),
                Err(ReadError::Corrupt { .. }) => errors += 1,
                Err(error) => panic!("{error}"),
            }
        }
        for start in (0..500).step_by(50) {
            let from = key(start);
            match engine.scan(Bound::Included(&from), Bound::Unbounded, 40) {
                Ok(pairs) => {
                    let expected: Vec<Pair> = model
                        .range::<Vec<u8>, _>((Bound::Included(&from), Bound::Unbounded))
                        .take(40)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    assert_eq!(pairs, expected, "seed {seed} scan from {start}");
                }
                Err(error) => assert!(matches!(error, ReadError::Corrupt { .. }), "{error}"),
            }
        }
        assert!(engine.stats().corruption_detected >= errors);
    }
}

#[test]
fn an_owner_that_never_maintains_still_gets_bounded_memtables_and_working_scans() {
    let disk = MemDisk::new(11);
    let mut engine = open_small(&disk);
    let mut model = std::collections::BTreeMap::new();
    for i in 0..8_000u32 {
        let k = key(i % 3_000);
        engine.put(&k, &[7; 40]).unwrap();
        model.insert(k, vec![7; 40]);
        assert!(engine.stats().memtable_bytes < 2 * small_config().memtable_bytes_max + 200);
    }
    assert!(engine.stats().tables_per_level[0] > 64, "{:?}", engine.stats().tables_per_level);
    let all = engine.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX).unwrap();
    assert_eq!(all.len(), model.len());
    assert_eq!(engine.get(&key(17)).unwrap(), Some(vec![7; 40]));
}
