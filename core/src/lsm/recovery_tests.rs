//! Recovery from a damaged log: what is kept, what is reported lost, what
//! is kept as evidence, and that restarts leave no log files behind.

use super::engine_tests::{key, log_end, open, record_start, small_config};
use super::*;
use crate::disk::{CrashMode, Disk, MemDisk};

/// Ten synced records, `key(i)` at Lsn i + 1, all in WAL file 0.
fn ten_records(seed: u64) -> (MemDisk, String) {
    let disk = MemDisk::new(seed);
    let mut engine = open(&disk);
    for i in 0..10 {
        engine.put(&key(i), b"value").unwrap();
    }
    engine.sync_now().unwrap();
    drop(engine);
    (disk, wal::file_name(0))
}

fn names(disk: &MemDisk) -> Vec<String> {
    disk.list().unwrap()
}

fn refusing(disk: &MemDisk) -> Result<Engine, OpenError> {
    let config = EngineConfig { memtable_bytes_max: 1 << 20, refuse_lost_records: true, ..small_config() };
    Engine::open(Box::new(disk.clone()), config)
}

#[test]
fn a_damaged_record_costs_that_record_and_not_the_log_after_it() {
    let (disk, file) = ten_records(4);
    let fifth = record_start(&disk, &file, 10, 4);
    disk.corrupt_at(&file, fifth + 12, 3).unwrap();
    let mut engine = open(&disk);
    assert_eq!(engine.last_lsn(), Lsn(10));
    for i in (0..10).filter(|&i| i != 4) {
        assert_eq!(engine.get(&key(i)).unwrap(), Some(b"value".to_vec()), "key {i}");
    }
    assert_eq!(engine.get(&key(4)).unwrap(), None);
    let recovery = engine.recovery().clone();
    assert!(recovery.log_damaged, "a synced record is lost");
    assert_eq!(recovery.loss.lost, vec![LostRecords::Range { first: Lsn(5), last: Lsn(5) }]);
    assert_eq!(recovery.loss.damage.len(), 1);
    assert_eq!((recovery.loss.damage[0].offset, recovery.loss.damage[0].records_after), (fifth, 5));
    assert_eq!(recovery.loss.lost_count(), (1, false));
    let evidence = format!("{file}{}", wal::DAMAGED_SUFFIX);
    assert_eq!(recovery.files_kept_damaged, vec![evidence.clone()]);
    assert!(names(&disk).contains(&evidence) && !names(&disk).contains(&file));
    assert!(engine.stats().corruption_detected >= 1);
    // Until the owner has recorded the loss, every open finds it again.
    drop(engine);
    let mut engine = open(&disk);
    assert_eq!(engine.recovery().loss.lost, vec![LostRecords::Range { first: Lsn(5), last: Lsn(5) }]);
    assert_eq!(engine.get(&key(9)).unwrap(), Some(b"value".to_vec()));
    engine.finish_recovery().unwrap();
    // Settled: the next open reads the state from a table and no damage.
    drop(engine);
    let mut engine = open(&disk);
    assert_eq!(engine.get(&key(9)).unwrap(), Some(b"value".to_vec()));
    assert!(!engine.recovery().log_damaged && engine.recovery().loss.damage.is_empty());
    assert!(names(&disk).contains(&evidence), "evidence is kept");
}

#[test]
fn an_engine_told_to_refuse_a_loss_says_what_is_lost_and_changes_nothing() {
    let (disk, file) = ten_records(5);
    disk.corrupt_at(&file, record_start(&disk, &file, 10, 2) + 14, 0).unwrap();
    let before: Vec<(String, Vec<u8>)> = names(&disk)
        .into_iter()
        .map(|name| (name.clone(), disk.read_at(&name, 0, disk.len(&name).unwrap()).unwrap()))
        .collect();
    let Err(OpenError::RecordsLost(loss)) = refusing(&disk) else { panic!("the open must be refused") };
    let message = loss.to_string();
    assert!(message.contains("1 synced records lost") && message.contains("Lsn 3 to 3"), "{message}");
    assert!(message.contains(&file) && message.contains("7 records after it"), "{message}");
    let after: Vec<(String, Vec<u8>)> = names(&disk)
        .into_iter()
        .map(|name| (name.clone(), disk.read_at(&name, 0, disk.len(&name).unwrap()).unwrap()))
        .collect();
    assert_eq!(before, after, "a refused open writes nothing");
    // An undamaged log opens under the same setting.
    let (clean, _) = ten_records(6);
    assert_eq!(refusing(&clean).unwrap().last_lsn(), Lsn(10));
}

#[test]
fn damage_at_the_end_of_the_newest_log_loses_an_unknown_number_of_records() {
    let (disk, file) = ten_records(7);
    disk.corrupt_at(&file, record_start(&disk, &file, 10, 9) + 2, 5).unwrap();
    let engine = open(&disk);
    assert_eq!(engine.last_lsn(), Lsn(9));
    assert_eq!(engine.recovery().loss.lost, vec![LostRecords::After(Lsn(9))]);
    assert_eq!(engine.recovery().loss.lost_count(), (0, true));
    assert!(engine.recovery().log_damaged);
}

#[test]
fn damage_that_hides_no_record_loses_nothing() {
    let (disk, file) = ten_records(8);
    // The format version in the file header: every record still reads.
    disk.corrupt_at(&file, 9, 1).unwrap();
    let engine = refusing(&disk).expect("nothing is lost, so nothing to refuse");
    assert_eq!(engine.last_lsn(), Lsn(10));
    assert!(!engine.recovery().log_damaged);
    assert_eq!(engine.recovery().loss.damage.len(), 1, "still reported");
    assert_eq!(engine.recovery().files_kept_damaged.len(), 1, "and kept");
}

#[test]
fn a_file_kept_as_evidence_before_a_crash_is_still_replayed() {
    let (disk, file) = ten_records(9);
    // What a crash between the rename and the new manifest leaves.
    disk.rename(&file, &format!("{file}{}", wal::DAMAGED_SUFFIX)).unwrap();
    disk.sync_dir().unwrap();
    let mut engine = open(&disk);
    assert_eq!(engine.last_lsn(), Lsn(10));
    assert_eq!(engine.get(&key(7)).unwrap(), Some(b"value".to_vec()));
}

#[test]
fn restarts_leave_one_log_file_and_evidence_is_bounded() {
    let disk = MemDisk::new(10);
    for round in 0..12u32 {
        let mut engine = open(&disk);
        engine.finish_recovery().unwrap();
        // The previous round's write, unless its log was damaged.
        let kept = round > 0 && round - 1 < 3;
        assert_eq!(engine.get(&key(round.saturating_sub(1))).unwrap().is_some(), kept, "round {round}");
        engine.put(&key(round), b"value").unwrap();
        engine.sync_now().unwrap();
        drop(engine);
        let logs: Vec<String> = names(&disk).into_iter().filter(|name| name.ends_with(".log")).collect();
        assert_eq!(logs.len(), 1, "round {round}: {logs:?}");
        // Damage each round's log: its record is lost, its file is kept.
        if round >= 3 {
            let end = log_end(&disk, &logs[0]);
            disk.corrupt_at(&logs[0], end - 3, 0).unwrap();
        }
    }
    let mut engine = open(&disk);
    engine.finish_recovery().unwrap();
    let kept = names(&disk).into_iter().filter(|name| name.ends_with(wal::DAMAGED_SUFFIX)).count();
    assert_eq!(kept, DAMAGED_KEPT_MAX);
    assert!(engine.stats().wal_bytes <= small_config().wal_preallocate_bytes + 64);
}

/// An earlier build stopped replay at damage and wrote on from there in a
/// new file. That file overrules the old one from its first Lsn: records of
/// the old file past the cut, readable or not, would bury what was written
/// since.
#[test]
fn records_past_an_earlier_cut_stay_cut() {
    let disk = MemDisk::new(6);
    let write_log = |seq: u64, records: &[(u64, &[u8], &[u8])]| {
        let mut bytes = wal::file_header().to_vec();
        for &(lsn, key, value) in records {
            wal::encode(wal::Record { lsn: Lsn(lsn), key, value: Some(value) }, &mut bytes);
        }
        let name = wal::file_name(seq);
        disk.create(&name).unwrap();
        disk.append(&name, &bytes).unwrap();
        disk.sync(&name).unwrap();
    };
    let old: Vec<(u64, Vec<u8>)> = (0..10).map(|i| (u64::from(i) + 1, key(i))).collect();
    let old: Vec<(u64, &[u8], &[u8])> =
        old.iter().map(|(lsn, key)| (*lsn, key.as_slice(), &b"old"[..])).collect();
    write_log(0, &old);
    let (k4, k5) = (key(4), key(5));
    write_log(1, &[(5, &k4, b"new"), (6, &k5, b"new")]);
    disk.sync_dir().unwrap();
    disk.crash(CrashMode::DropUnsynced);
    let mut engine = open(&disk);
    assert_eq!(engine.last_lsn(), Lsn(6));
    assert_eq!(engine.get(&key(3)).unwrap(), Some(b"old".to_vec()));
    assert_eq!(engine.get(&key(4)).unwrap(), Some(b"new".to_vec()));
    assert_eq!(engine.get(&key(5)).unwrap(), Some(b"new".to_vec()));
    assert_eq!(engine.get(&key(6)).unwrap(), None, "cut by the earlier open");
    assert!(!engine.recovery().log_damaged, "the log reads cleanly up to where the new file begins");
}
