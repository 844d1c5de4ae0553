//! Opening an engine: load the manifest and its tables, replay the WAL files
//! that may hold unflushed writes, and start a fresh WAL.
//!
//! Replay applies records in Lsn order and stops a file at its first bad
//! record: a torn tail is the normal result of a crash. Records at or below the
//! Lsn already flushed to tables are skipped. A later file must continue the
//! Lsn sequence exactly; a gap means synced records were lost to corruption,
//! so replay stops there, keeping a prefix of the history, and the files past
//! the gap are removed so that new writes never land behind the hole.
//!
//! Every open starts a new file, so a later file overrules the earlier ones:
//! where it begins, an earlier open decided the log ended. Records of an
//! earlier file from that Lsn on are never replayed, even if they read well
//! now (a read corrupted in flight may have cut the earlier replay short);
//! replaying them would put back history the node has since written over.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::cache::BlockCache;
use super::compaction::{self, Choice};
use super::engine::{Counters, Engine, WalWriter};
use super::manifest::{self, LoadError, Manifest};
use super::memtable::Memtable;
use super::sstable::{self, Table};
use super::wal::{self, Reader, WalError};
use super::{EngineConfig, Lsn, OpenError, ReadError, RecoveryReport};
use crate::KeyedHasher;
use crate::disk::{Disk, DiskError};

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
    let seq = replay.seq_max.map_or(start.wal_first, |seq| (seq + 1).max(start.wal_first));
    let wal = WalWriter::create(&*disk, seq, &config, replay.bytes)?;
    disk.sync_dir()?;
    let compaction_due = compaction::choose(&manifest, &config) != Choice::Nothing;
    let cache = BlockCache::new(config.block_cache_bytes_max);
    Ok(Engine {
        disk,
        config,
        memtable,
        wal,
        wal_retired: Vec::new(),
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
    })
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

struct Replay {
    last_lsn: Lsn,
    seq_max: Option<u64>,
    bytes: u64,
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
    let mut replay = Replay { last_lsn: start.flushed_lsn, seq_max: None, bytes: 0 };
    let record_bytes_max = record_bytes_max(config);
    let mut logs = Vec::new();
    for name in names {
        let Some(seq) = wal::parse_file_name(name) else { continue };
        if seq < start.wal_first {
            disk.remove(name)?;
            recovery.files_removed.push(name.clone());
            continue;
        }
        let bytes = read_log(disk, name, record_bytes_max, counters)?;
        let first =
            Reader::new(&bytes, record_bytes_max).next().and_then(Result::ok).map(|record| record.lsn);
        logs.push((name, seq, bytes, first));
    }
    let mut gap = false;
    for (at, (name, seq, bytes, _)) in logs.iter().enumerate() {
        if gap {
            disk.remove(name)?;
            recovery.files_removed.push((*name).clone());
            continue;
        }
        // Where the next file that holds a record begins, this one ends.
        let overruled_from = logs.get(at + 1..).unwrap_or_default().iter().find_map(|log| log.3);
        replay.seq_max = Some(*seq);
        replay.bytes += bytes.len() as u64;
        recovery.wal_files_replayed += 1;
        for result in Reader::new(bytes, record_bytes_max) {
            let record = match result {
                Ok(record) => record,
                Err(error @ WalError::UnknownVersion { .. }) => {
                    return Err(OpenError::Unsupported { file: (*name).clone(), reason: error.to_string() });
                }
                Err(error) => {
                    // A torn tail is a crash's normal footprint; anything else is damage.
                    recovery.log_damaged |= !matches!(error, WalError::Torn { .. });
                    recovery.wal_stops.push(((*name).clone(), error.to_string()));
                    break;
                }
            };
            if overruled_from.is_some_and(|from| record.lsn >= from) {
                break;
            }
            if record.lsn <= replay.last_lsn {
                continue;
            }
            if record.lsn.0 != replay.last_lsn.0 + 1 {
                counters.corruption_detected += 1;
                let reason = format!("gap in the log: Lsn {} follows {}", record.lsn, replay.last_lsn);
                recovery.wal_stops.push(((*name).clone(), reason));
                recovery.log_damaged = true;
                gap = true;
                break;
            }
            memtable.insert(record.key, record.value);
            replay.last_lsn = record.lsn;
            recovery.records_replayed += 1;
        }
        // A crashed process may have left appended bytes only in the page cache.
        disk.sync(name)?;
    }
    if !recovery.files_removed.is_empty() {
        disk.sync_dir()?;
    }
    Ok(replay)
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
