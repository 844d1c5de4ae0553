//! Opening an engine: load the manifest and its tables, replay the WAL files
//! that may hold unflushed writes, then settle: write what was replayed to a
//! table and start a fresh WAL, so the old files are no longer needed.
//!
//! Replay applies records in Lsn order. A torn tail, the normal result of a
//! crash, ends a file. Damage does not: the reader skips to the next record
//! that passes its own checksums, and replay goes on, so one bad record costs
//! that record and not the log after it. Lsns are consecutive, so what is
//! missing is exactly the gaps between the records read (plus, after damage
//! at the very end of the newest file, an unknown number of records). Those
//! are synced writes lost: the report lists them, and an engine told to
//! refuse such a loss fails the open before changing anything on the disk.
//!
//! Every open starts a new file, so a later file overrules the earlier ones:
//! where it begins, an earlier open decided the log ended. Records of an
//! earlier file from that Lsn on are never replayed, even if they read well
//! now (a read corrupted in flight may have cut the earlier replay short);
//! replaying them would put back history the node has since written over.
//!
//! Files with damage are never deleted: settling renames each to
//! `<name>.damaged` before the table that holds its records is installed
//! (replay reads that name too, so a crash in between loses nothing), and
//! keeps the newest `DAMAGED_KEPT_MAX` of them as evidence. After a loss
//! the table waits for the caller (`Engine::finish_recovery`): until then a
//! crash makes the next open find the same loss, so what the caller does
//! about it (the node takes a new incarnation) cannot be skipped.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::cache::BlockCache;
use super::compaction::{self, Choice};
use super::engine::{Counters, Engine, WalWriter};
use super::manifest::{self, LoadError, Manifest};
use super::memtable::Memtable;
use super::sstable::{self, Table};
use super::wal::{self, Reader, WalError};
use super::{EngineConfig, LogDamage, LostRecords, Lsn, OpenError, ReadError, RecoveryReport};
use crate::KeyedHasher;
use crate::disk::{Disk, DiskError};

/// WAL files kept as evidence of damage, at most; older ones are removed.
pub const DAMAGED_KEPT_MAX: usize = 8;

/// What the manifest says about the WAL; stage-independent view used by replay.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LogStart {
    /// WAL files with a lower sequence number hold only flushed writes.
    pub wal_first: u64,
    /// Every write up to this Lsn is in a table.
    pub flushed_lsn: Lsn,
}

pub(super) fn open(
    disk: Box<dyn Disk>,
    config: EngineConfig,
    hasher: KeyedHasher,
) -> Result<Engine, OpenError> {
    let mut recovery = RecoveryReport::default();
    let mut counters = Counters::default();
    let manifest = match Manifest::load(&*disk, &mut counters.corruption_detected) {
        Ok(manifest) => manifest.unwrap_or_default(),
        Err(LoadError::Disk(error)) => return Err(OpenError::Disk(error)),
        Err(LoadError::Corrupt(error)) => {
            return Err(OpenError::Corrupt { file: manifest::FILE.into(), reason: error.to_string() });
        }
    };
    let mut tables = BTreeMap::new();
    for (_, meta) in manifest.tables() {
        let table =
            Table::open(&*disk, meta.id, &mut counters.corruption_detected).map_err(|error| match error {
                ReadError::Disk(error) => OpenError::Disk(error),
                error => OpenError::Corrupt { file: sstable::file_name(meta.id), reason: error.to_string() },
            })?;
        tables.insert(meta.id, Arc::new(table));
    }
    let names = remove_garbage(&*disk, &tables, &mut recovery)?;
    let start = LogStart { wal_first: manifest.wal_first, flushed_lsn: Lsn(manifest.flushed_lsn) };
    let mut memtable = Memtable::new(hasher);
    let replay = replay_wals(&*disk, &config, &names, start, &mut memtable, &mut recovery, &mut counters)?;
    recovery.log_damaged = !recovery.loss.lost.is_empty();
    if recovery.log_damaged && config.refuse_lost_records {
        return Err(OpenError::RecordsLost(recovery.loss));
    }
    // A crashed process may have left appended bytes only in the page cache.
    for (name, _) in &replay.logs {
        disk.sync(name)?;
    }
    let seq = replay.logs.last().map_or(start.wal_first, |(_, seq)| (seq + 1).max(start.wal_first));
    let wal = WalWriter::create(&*disk, seq, &config, 0)?;
    disk.sync_dir()?;
    let compaction_due = compaction::choose(&manifest, &config) != Choice::Nothing;
    let cache = BlockCache::new(config.block_cache_bytes_max);
    let mut engine = Engine {
        disk,
        config,
        memtable,
        wal,
        wal_retired: Vec::new(),
        wal_unsynced: None,
        dir_unsynced: false,
        wal_spare: None,
        preparing: None,
        last_lsn: replay.last_lsn,
        appended_lsn: replay.last_lsn,
        durable_lsn: replay.last_lsn,
        sync_in_flight: None,
        poisoned: false,
        recovery,
        counters,
        manifest,
        tables,
        cache,
        compaction_due,
        unsettled: None,
        frozen: None,
        compacting: None,
        next_table_id: 0,
        job_next: 0,
        obsolete: Vec::new(),
        removing: None,
        manifest_version: 0,
        manifest_stored: 0,
        storing: None,
        after_store: Vec::new(),
        released: Default::default(),
    };
    engine.next_table_id = engine.manifest.next_table_id;
    engine.settle(replay)?;
    Ok(engine)
}

/// Removes tables the manifest does not name (left by a crash during a flush
/// or compaction, or inputs not yet removed) and a half-written manifest.
fn remove_garbage(
    disk: &dyn Disk,
    tables: &BTreeMap<u64, Arc<Table>>,
    recovery: &mut RecoveryReport,
) -> Result<Vec<String>, OpenError> {
    let mut names = disk.list()?;
    let garbage = |name: &String| {
        name == manifest::TEMP_FILE
            || sstable::parse_file_name(name).is_some_and(|id| !tables.contains_key(&id))
    };
    for name in names.iter().filter(|name| garbage(name)) {
        disk.remove(name)?;
        recovery.files_removed.push(name.clone());
    }
    names.retain(|name| !garbage(name));
    Ok(names)
}

/// What replay read, for `open` to settle once it decides to go on.
struct Replay {
    last_lsn: Lsn,
    /// WAL files at or past `wal_first`, in sequence order.
    logs: Vec<(String, u64)>,
    /// Of those, files with damage not yet renamed as evidence.
    damaged: Vec<String>,
    /// WAL files below `wal_first`: every record of theirs is in a table.
    obsolete: Vec<String>,
    /// Files kept as evidence whose records are all in tables.
    kept_damaged: Vec<(u64, String)>,
}

/// Where replay stands between records, across files.
struct Cursor {
    last_lsn: Lsn,
    /// Damage was seen and no record has been read since: what it hides is
    /// known only from the Lsn of the next record.
    unresolved_damage: bool,
}

fn replay_wals(
    disk: &dyn Disk,
    config: &EngineConfig,
    names: &[String],
    start: LogStart,
    memtable: &mut Memtable,
    recovery: &mut RecoveryReport,
    counters: &mut Counters,
) -> Result<Replay, OpenError> {
    let mut replay = Replay {
        last_lsn: start.flushed_lsn,
        logs: Vec::new(),
        damaged: Vec::new(),
        obsolete: Vec::new(),
        kept_damaged: Vec::new(),
    };
    let record_bytes_max = record_bytes_max(config);
    let mut logs = Vec::new();
    for name in names {
        let Some((seq, evidence)) = wal::parse_any_file_name(name) else { continue };
        if seq < start.wal_first {
            if evidence {
                replay.kept_damaged.push((seq, name.clone()));
            } else {
                replay.obsolete.push(name.clone());
            }
            continue;
        }
        let bytes = read_log(disk, name, record_bytes_max, counters)?;
        let first = first_lsn(&bytes, record_bytes_max);
        logs.push((name, seq, bytes, first, evidence));
    }
    logs.sort_by_key(|log| log.1);
    let mut cursor = Cursor { last_lsn: start.flushed_lsn, unresolved_damage: false };
    for (at, (name, seq, bytes, _, evidence)) in logs.iter().enumerate() {
        // Where the next file that holds a record begins, this one ends.
        let overruled_from = logs.get(at + 1..).unwrap_or_default().iter().find_map(|log| log.3);
        replay.logs.push(((*name).clone(), *seq));
        recovery.wal_files_replayed += 1;
        let damaged = replay_file(
            name,
            bytes,
            record_bytes_max,
            overruled_from,
            &mut cursor,
            memtable,
            recovery,
            counters,
        )?;
        if damaged && !evidence {
            replay.damaged.push((*name).clone());
        }
    }
    if cursor.unresolved_damage {
        recovery.loss.lost.push(LostRecords::After(cursor.last_lsn));
    }
    replay.last_lsn = cursor.last_lsn;
    Ok(replay)
}

/// Replays one file into `memtable`; true if it holds damage.
#[allow(clippy::too_many_arguments)]
fn replay_file(
    name: &str,
    bytes: &[u8],
    record_bytes_max: u32,
    overruled_from: Option<Lsn>,
    cursor: &mut Cursor,
    memtable: &mut Memtable,
    recovery: &mut RecoveryReport,
    counters: &mut Counters,
) -> Result<bool, OpenError> {
    let mut reader = Reader::new(bytes, record_bytes_max);
    let mut damage_here: Option<usize> = None;
    while let Some(result) = reader.next() {
        let record = match result {
            Ok(record) => record,
            Err(error @ WalError::UnknownVersion { .. }) => {
                return Err(OpenError::Unsupported { file: name.to_owned(), reason: error.to_string() });
            }
            // A torn tail is a crash's normal footprint.
            Err(error @ WalError::Torn { .. }) => {
                recovery.wal_stops.push((name.to_owned(), error.to_string()));
                break;
            }
            Err(error) => {
                let offset = match error {
                    WalError::Checksum { offset } | WalError::Malformed { offset, .. } => offset,
                    _ => 0,
                };
                damage_here = Some(recovery.loss.damage.len());
                recovery.loss.damage.push(LogDamage {
                    file: name.to_owned(),
                    offset,
                    reason: error.to_string(),
                    records_after: 0,
                });
                cursor.unresolved_damage = true;
                match reader.skip_damage() {
                    Some(_) => continue,
                    None => break,
                }
            }
        };
        if let Some(from) = overruled_from.filter(|&from| record.lsn >= from) {
            recovery.wal_stops.push((name.to_owned(), format!("a later file takes over at Lsn {from}")));
            break;
        }
        if record.lsn <= cursor.last_lsn {
            continue;
        }
        let expected = Lsn(cursor.last_lsn.0 + 1);
        if record.lsn != expected {
            if !cursor.unresolved_damage {
                // A gap nothing on this disk explains: damage all the same.
                counters.corruption_detected += 1;
            }
            recovery.loss.lost.push(LostRecords::Range { first: expected, last: Lsn(record.lsn.0 - 1) });
        }
        cursor.unresolved_damage = false;
        memtable.insert(record.key, record.value);
        cursor.last_lsn = record.lsn;
        recovery.records_replayed += 1;
        if let Some(damage) = damage_here.and_then(|at| recovery.loss.damage.get_mut(at)) {
            damage.records_after += 1;
        }
    }
    Ok(damage_here.is_some())
}

/// The Lsn of the first record of a log that passes its checksums.
fn first_lsn(bytes: &[u8], record_bytes_max: u32) -> Option<Lsn> {
    let mut reader = Reader::new(bytes, record_bytes_max);
    loop {
        match reader.next()? {
            Ok(record) => return Some(record.lsn),
            Err(_) => {
                reader.skip_damage()?;
            }
        }
    }
}

/// The second half of settling, held back while a loss is not yet recorded.
#[derive(Debug)]
pub(super) struct Unsettled {
    /// Log files replayed, by the names they had before settling.
    logs: Vec<String>,
    /// Log files below `wal_first`.
    obsolete: Vec<String>,
    /// Of `logs`, those renamed as evidence in this open.
    damaged: Vec<String>,
    /// Every file kept as evidence, by sequence number.
    kept: Vec<(u64, String)>,
}

impl Engine {
    /// Makes the recovered state durable without the log files it came
    /// from: files with damage are renamed as evidence, the memtable goes
    /// to a table under a manifest that starts the log at the new file, and
    /// the old files are removed. So restarts never pile up log files, and
    /// the next open reads no damage twice.
    ///
    /// After a loss only the renaming happens here; the rest waits for
    /// [`Engine::finish_recovery`], because once the log starts past the
    /// damaged files no later open would see the loss again. The caller
    /// first records what the loss means to it (the node: a new incarnation).
    fn settle(&mut self, replay: Replay) -> Result<(), OpenError> {
        let mut kept = replay.kept_damaged;
        for name in &replay.damaged {
            let evidence = format!("{name}{}", wal::DAMAGED_SUFFIX);
            self.disk.rename(name, &evidence)?;
            if let Some((seq, _)) = wal::parse_any_file_name(name) {
                kept.push((seq, evidence.clone()));
            }
            self.recovery.files_kept_damaged.push(evidence);
        }
        kept.extend(
            replay
                .logs
                .iter()
                .filter(|(name, _)| name.ends_with(wal::DAMAGED_SUFFIX))
                .map(|(name, seq)| (*seq, name.clone())),
        );
        if !replay.damaged.is_empty() {
            self.disk.sync_dir()?;
        }
        if replay.logs.is_empty() && replay.obsolete.is_empty() {
            return Ok(());
        }
        self.unsettled = Some(Unsettled {
            logs: replay.logs.into_iter().map(|(name, _)| name).collect(),
            obsolete: replay.obsolete,
            damaged: replay.damaged,
            kept,
        });
        if self.recovery.log_damaged { Ok(()) } else { self.finish_recovery() }
    }

    /// Finishes settling an open that lost records, once the caller has
    /// recorded what it must: the replayed state goes to a table, the log
    /// starts at the new file, and old log files are removed. Until this
    /// runs every open reports the same loss again. Does nothing otherwise.
    pub fn finish_recovery(&mut self) -> Result<(), OpenError> {
        let Some(unsettled) = self.unsettled.take() else { return Ok(()) };
        let wal_first = self.wal.seq;
        self.write_memtable(wal_first)?;
        let removable =
            |name: &&String| !name.ends_with(wal::DAMAGED_SUFFIX) && !unsettled.damaged.contains(name);
        for name in unsettled.logs.iter().chain(&unsettled.obsolete).filter(removable) {
            self.disk.remove(name)?;
            self.recovery.files_removed.push(name.clone());
        }
        let mut kept = unsettled.kept;
        kept.sort();
        kept.dedup();
        let excess = kept.len().saturating_sub(DAMAGED_KEPT_MAX);
        for (_, name) in kept.iter().take(excess) {
            self.disk.remove(name)?;
            self.recovery.files_removed.push(name.clone());
        }
        self.disk.sync_dir()?;
        Ok(())
    }
}

/// How often a log file that looks damaged is read before replay settles for
/// the longest valid prefix among the reads.
const LOG_READS_MAX: usize = 8;

/// Reads a whole log file. A read whose records stop short of the end may have
/// been corrupted in flight, and replaying less than the disk holds would lose
/// synced writes, so such a file is read again until two reads return the same
/// bytes (what the disk holds: a flip in flight does not repeat) or
/// `LOG_READS_MAX` reads are spent. The read with the longest valid prefix
/// wins; a flipped bit can only shorten it.
fn read_log(
    disk: &dyn Disk,
    name: &str,
    record_bytes_max: u32,
    counters: &mut Counters,
) -> Result<Vec<u8>, DiskError> {
    let len = disk.len(name)?;
    let mut best = disk.read_at(name, 0, len)?;
    let mut best_scan = scan(&best, record_bytes_max);
    if best_scan.1.is_none() {
        return Ok(best);
    }
    // Fingerprints of the reads so far: keeping every read could hold many
    // copies of a large file.
    let mut best_print = fingerprint(&best);
    let mut prints = vec![best_print];
    let mut settled = false;
    while !settled && prints.len() < LOG_READS_MAX {
        let bytes = disk.read_at(name, 0, len)?;
        let (print, read_scan) = (fingerprint(&bytes), scan(&bytes, record_bytes_max));
        settled = read_scan.1.is_none() || prints.contains(&print);
        prints.push(print);
        if read_scan.0 > best_scan.0 || (read_scan.1.is_none() && best_scan.1.is_some()) {
            (best, best_scan, best_print) = (bytes, read_scan, print);
        }
    }
    // Every read that differs from the one kept was corrupted in flight.
    counters.corruption_detected += prints.iter().filter(|&&print| print != best_print).count() as u64;
    // The kept read stops short of the end for good: a torn tail is a crash's
    // normal footprint; anything else is damage on the disk.
    if settled && !matches!(best_scan.1, None | Some(WalError::Torn { .. })) {
        counters.corruption_detected += 1;
    }
    Ok(best)
}

fn fingerprint(bytes: &[u8]) -> u64 {
    siphasher::sip::SipHasher13::new().hash(bytes)
}

fn scan(bytes: &[u8], record_bytes_max: u32) -> (u64, Option<WalError>) {
    let mut reader = Reader::new(bytes, record_bytes_max);
    let error = reader.by_ref().find_map(Result::err);
    (reader.valid_len(), error)
}

pub(super) fn record_bytes_max(config: &EngineConfig) -> u32 {
    (wal::HEADER_BYTES as u32 + 13)
        .saturating_add(config.key_bytes_max)
        .saturating_add(config.value_bytes_max)
}
