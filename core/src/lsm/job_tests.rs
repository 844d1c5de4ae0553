//! Flushes and compactions as jobs: the engine serves while they run, they
//! finish in either order, and a crash in the middle loses nothing synced.

use super::engine_tests::{key, open_small, small_config};
use super::job::{Job, JobKind};
use super::wal;
use super::*;
use std::ops::Bound;

use crate::disk::{CrashMode, Disk, MemDisk};

/// Writes until a flush is due, with values that name their round.
fn fill(engine: &mut Engine, round: u32) {
    let mut i = 0;
    while engine.memtable.bytes() < engine.config().memtable_bytes_max {
        engine.put(&key(i), format!("round {round}").as_bytes()).unwrap();
        i += 1;
    }
}

/// The next flush or compaction. What comes before it is done on the way:
/// manifest stores, removals, and the sync of the log's last rotation.
fn next(engine: &mut Engine) -> Job {
    loop {
        let Some(job) = engine.next_job().unwrap() else {
            assert!(engine.rotation_unsynced(), "a job is due");
            engine.sync_now().unwrap();
            continue;
        };
        if matches!(job.kind(), JobKind::Flush | JobKind::Compaction) {
            return job;
        }
        let done = job.run(&*engine.disk);
        engine.finish_job(done).unwrap();
    }
}

/// Runs the jobs due other than flushes and compactions.
fn run_side_jobs(engine: &mut Engine) {
    while let Some(job) = engine.next_job().unwrap() {
        assert!(
            matches!(job.kind(), JobKind::Manifest | JobKind::Log | JobKind::Removal),
            "{:?}",
            job.kind()
        );
        let done = job.run(&*engine.disk);
        engine.finish_job(done).unwrap();
    }
}

/// Runs every job due and syncs: what an idle owner ends up with.
fn settle(engine: &mut Engine) {
    while let Some(job) = engine.next_job().unwrap() {
        let done = job.run(&*engine.disk);
        engine.finish_job(done).unwrap();
    }
    engine.sync_now().unwrap();
    engine.sync_now().unwrap();
}

/// An engine with two flushed tables in level 0, which makes a compaction due.
fn due_for_compaction(seed: u64) -> (MemDisk, EngineConfig, Engine) {
    let disk = MemDisk::new(seed);
    let config = EngineConfig { l0_tables_max: 2, ..small_config() };
    let mut engine = Engine::open(Box::new(disk.clone()), config.clone()).unwrap();
    for round in 1..=2 {
        fill(&mut engine, round);
        let flush = next(&mut engine);
        let done = flush.run(&disk);
        engine.finish_job(done).unwrap();
    }
    (disk, config, engine)
}

#[test]
fn a_memtable_being_flushed_stays_readable_and_writes_go_on() {
    let disk = MemDisk::new(1);
    let mut engine = open_small(&disk);
    fill(&mut engine, 1);
    let flush = next(&mut engine);
    assert_eq!(flush.kind(), JobKind::Flush);
    assert!(flush.bytes() > 0);
    run_side_jobs(&mut engine);
    assert!(!engine.needs_maintenance(), "one flush at a time");
    // While the job runs: the frozen memtable answers, newer writes win.
    assert_eq!(engine.get(&key(0)).unwrap(), Some(b"round 1".to_vec()));
    engine.put(&key(0), b"newer").unwrap();
    engine.delete(&key(1)).unwrap();
    assert_eq!(engine.get(&key(0)).unwrap(), Some(b"newer".to_vec()));
    assert_eq!(engine.get(&key(1)).unwrap(), None);
    let scan = engine.scan(Bound::Unbounded, Bound::Unbounded, 3).unwrap();
    assert_eq!(scan[0], (key(0), b"newer".to_vec()));
    assert_eq!(scan[1].0, key(2), "the delete hides the frozen value");
    let done = flush.run(&disk);
    assert_eq!(engine.finish_job(done).unwrap(), JobKind::Flush);
    assert_eq!(engine.stats().flushes, 1);
    assert_eq!(engine.stats().tables_per_level[0], 1);
    assert_eq!(engine.get(&key(0)).unwrap(), Some(b"newer".to_vec()));
    assert_eq!(engine.get(&key(2)).unwrap(), Some(b"round 1".to_vec()));
}

#[test]
fn a_crash_before_the_flush_is_installed_recovers_from_the_logs() {
    for mode in [CrashMode::DropUnsynced, CrashMode::TornTail] {
        let disk = MemDisk::new(2);
        let mut engine = open_small(&disk);
        fill(&mut engine, 1);
        let flush = next(&mut engine);
        // Freezing rotated the log: the next sync is the old file's, and
        // writes wait for it before they reach the new file.
        let frozen_last = engine.last_lsn();
        assert!(engine.rotation_unsynced());
        engine.put(b"after", b"freeze").unwrap();
        engine.write_out().unwrap();
        assert_eq!(engine.appended_lsn(), frozen_last, "nothing reaches the new file yet");
        engine.sync_now().unwrap();
        assert_eq!(engine.durable_lsn(), frozen_last);
        assert!(!engine.rotation_unsynced());
        engine.sync_now().unwrap();
        assert_eq!(engine.durable_lsn(), Lsn(frozen_last.0 + 1));
        // The job wrote its table, but the node crashed before installing it.
        let _lost = flush.run(&disk);
        drop(engine);
        disk.crash(mode);
        let mut engine = open_small(&disk);
        assert_eq!(engine.last_lsn(), Lsn(frozen_last.0 + 1), "{mode:?}");
        assert_eq!(engine.get(&key(0)).unwrap(), Some(b"round 1".to_vec()));
        assert_eq!(engine.get(b"after").unwrap(), Some(b"freeze".to_vec()));
        assert_eq!(engine.stats().tables_per_level[0], 1, "the open settles the logs into one table");
    }
}

#[test]
fn a_flush_and_a_compaction_finish_in_either_order() {
    for compaction_first in [false, true] {
        let (disk, config, mut engine) = due_for_compaction(3);
        let compaction = next(&mut engine);
        assert_eq!(compaction.kind(), JobKind::Compaction);
        fill(&mut engine, 3);
        let flush = next(&mut engine);
        assert_eq!(flush.kind(), JobKind::Flush);
        let (first, second) = if compaction_first { (compaction, flush) } else { (flush, compaction) };
        let first = first.run(&disk);
        let second = second.run(&disk);
        engine.finish_job(first).unwrap();
        engine.finish_job(second).unwrap();
        settle(&mut engine);
        // The newest round wins in both orders, and after a restart.
        assert_eq!(engine.get(&key(0)).unwrap(), Some(b"round 3".to_vec()), "{compaction_first}");
        assert_eq!(engine.stats().compactions, 1);
        drop(engine);
        disk.crash(CrashMode::DropUnsynced);
        let mut engine = Engine::open(Box::new(disk.clone()), config).unwrap();
        assert_eq!(engine.get(&key(0)).unwrap(), Some(b"round 3".to_vec()), "{compaction_first}");
        let names = disk.list().unwrap();
        let tables = names.iter().filter(|name| sstable::parse_file_name(name).is_some()).count();
        assert_eq!(tables, engine.stats().tables_per_level.iter().sum::<u32>() as usize, "{names:?}");
    }
}

#[test]
fn writes_stall_only_far_past_the_flush_size_while_a_flush_runs() {
    let disk = MemDisk::new(4);
    let config = EngineConfig { memtable_bytes_max: 2 << 20, ..small_config() };
    let mut engine = Engine::open(Box::new(disk.clone()), config).unwrap();
    let value = vec![7; 64 << 10];
    let mut i = 0;
    while engine.memtable.bytes() < engine.config().memtable_bytes_max {
        engine.put(&key(i), &value).unwrap();
        i += 1;
    }
    let flush = next(&mut engine);
    let stalled = loop {
        match engine.put(&key(i), &value) {
            Ok(_) => i += 1,
            Err(error) => break error,
        }
    };
    assert_eq!(stalled, WriteError::Stalled { limit: 8 << 20 });
    assert!(engine.stats().memtable_bytes >= 8 << 20);
    let done = flush.run(&disk);
    engine.finish_job(done).unwrap();
    engine.put(&key(i), &value).expect("the stall ends with the flush");
}

#[test]
fn a_compaction_over_a_corrupt_block_leaves_the_tree_and_waits() {
    let (disk, _, mut engine) = due_for_compaction(5);
    let compaction = next(&mut engine);
    let table = disk.list().unwrap().into_iter().find(|name| name.ends_with(".sst")).unwrap();
    disk.corrupt_at(&table, 20, 1).unwrap();
    let done = compaction.run(&disk);
    assert!(matches!(engine.finish_job(done), Err(MaintainError::Corrupt(_))));
    assert!(!engine.is_poisoned());
    // No retry until the tree changes: at most old logs left to remove.
    while let Some(job) = engine.next_job().unwrap() {
        assert_ne!(job.kind(), JobKind::Compaction, "no retry until the tree changes");
        let done = job.run(&disk);
        engine.finish_job(done).unwrap();
    }
    assert_eq!(engine.stats().tables_per_level[0], 2);
    let tables = disk.list().unwrap().into_iter().filter(|name| name.ends_with(".sst")).count();
    assert_eq!(tables, 2, "the job removed what it wrote");
}

#[test]
fn a_flush_that_fails_poisons_but_its_memtable_stays_readable() {
    let disk = MemDisk::new(6);
    let mut engine = open_small(&disk);
    fill(&mut engine, 1);
    let flush = next(&mut engine);
    engine.put(b"newer", b"value").unwrap();
    disk.set_faults(crate::disk::Faults { sync_fail_per_million: 1_000_000, ..Default::default() });
    let done = flush.run(&disk);
    disk.set_faults(crate::disk::Faults::default());
    assert!(matches!(engine.finish_job(done), Err(MaintainError::Disk(_))));
    assert!(engine.is_poisoned());
    // Reads keep working on everything written, frozen or not.
    assert_eq!(engine.get(&key(0)).unwrap(), Some(b"round 1".to_vec()));
    assert_eq!(engine.get(b"newer").unwrap(), Some(b"value".to_vec()));
}

#[test]
fn the_log_rotates_to_a_spare_file_prepared_ahead() {
    let disk = MemDisk::new(7);
    let mut engine = open_small(&disk);
    assert_eq!(engine.next_job().unwrap(), None, "no spare for an engine that writes little");
    let mut i = 0;
    while engine.memtable.bytes() < engine.config().memtable_bytes_max / 2 {
        engine.put(&key(i), b"half").unwrap();
        i += 1;
    }
    let prepare = engine.next_job().unwrap().expect("the spare is due once the memtable is half full");
    assert_eq!(prepare.kind(), JobKind::Log);
    let spare = wal::file_name(engine.wal.seq + 1);
    let done = prepare.run(&disk);
    engine.finish_job(done).unwrap();
    assert!(disk.list().unwrap().contains(&spare));
    fill(&mut engine, 1);
    let flush = next(&mut engine);
    assert_eq!(engine.wal.file, spare, "the log moved to the spare");
    assert!(!engine.dir_unsynced, "the spare's name was synced with it");
    // Writes to the spare survive a power loss once synced, with no
    // directory sync of their own.
    engine.sync_now().unwrap();
    engine.put(b"in", b"spare").unwrap();
    engine.sync_now().unwrap();
    assert_eq!(engine.durable_lsn(), engine.last_lsn());
    drop(flush);
    drop(engine);
    disk.crash(CrashMode::DropUnsynced);
    let mut engine = open_small(&disk);
    assert_eq!(engine.get(b"in").unwrap(), Some(b"spare".to_vec()));
    assert_eq!(engine.get(&key(0)).unwrap(), Some(b"round 1".to_vec()));
}

#[test]
fn a_crash_before_the_manifest_is_stored_recovers_the_tree_as_it_was() {
    let (disk, config, mut engine) = due_for_compaction(8);
    let compaction = next(&mut engine);
    engine.sync_now().unwrap();
    let inputs: Vec<String> =
        disk.list().unwrap().into_iter().filter(|name| sstable::parse_file_name(name).is_some()).collect();
    let done = compaction.run(&disk);
    assert_eq!(engine.finish_job(done).unwrap(), JobKind::Compaction);
    // Installed in memory only: the inputs stay until the manifest is stored.
    assert_eq!(engine.get(&key(0)).unwrap(), Some(b"round 2".to_vec()));
    let store = engine.next_job().unwrap().expect("the manifest store is due");
    assert_eq!(store.kind(), JobKind::Manifest);
    let names = disk.list().unwrap();
    assert!(inputs.iter().all(|input| names.contains(input)), "{names:?}");
    drop(engine);
    disk.crash(CrashMode::DropUnsynced);
    let mut engine = Engine::open(Box::new(disk.clone()), config).unwrap();
    assert_eq!(engine.get(&key(0)).unwrap(), Some(b"round 2".to_vec()));
    assert_eq!(engine.stats().tables_per_level[0], 2, "the old tree, compaction due again");
}
