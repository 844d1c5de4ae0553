//! keel's storage engine: a log-structured merge tree over a [`Disk`].
//!
//! Writes go to a write-ahead log buffer and a sorted memtable. The owner
//! drives durability: [`Engine::begin_sync`] appends the buffered log bytes
//! and names the file to fsync, the owner fsyncs it wherever it likes (off its
//! event loop, batching many writes into one sync) and reports back with
//! [`Engine::finish_sync`]. A failed sync, append or flush poisons the engine for writes.
//!
//! The engine never reads a clock or spawns a thread; flushes and compactions
//! run inline when the owner calls [`Engine::maintain`] between events. Bytes
//! read from the disk are never trusted: every record and block carries a
//! crc32c, and a read that fails it is retried once and then reported as
//! [`ReadError::Corrupt`], never returned and never a panic.
//!
//! See `docs/STORAGE.md` for the file formats, recovery and compaction.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use core::fmt;
use std::ops::Bound;

use thiserror::Error;

use crate::disk::DiskError;

pub mod block;
pub mod bloom;
pub mod cache;
pub mod compaction;
mod engine;
#[cfg(test)]
mod engine_tests;
pub mod iter;
pub mod job;
#[cfg(test)]
mod job_tests;
mod maintain;
pub mod manifest;
pub mod memtable;
#[cfg(test)]
mod model_tests;
mod recovery;
#[cfg(test)]
mod recovery_tests;
pub mod sstable;
pub mod wal;

pub use engine::Engine;
pub use iter::Iter;
pub use recovery::DAMAGED_KEPT_MAX;

/// A key and its value, as scans return them.
pub type Pair = (Vec<u8>, Vec<u8>);

/// WAL sequence number: every put and delete gets the next one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// When the owner fsyncs the WAL. The engine only records the choice; the
/// owner enforces it by when it releases acknowledgements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Acknowledge a write only after a sync covering its Lsn (group commit).
    Always,
    /// Acknowledge at once and sync every `interval_ms`: a crash may lose the
    /// writes of the last interval.
    Periodic { interval_ms: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// The memtable is flushed to a table once it holds this many bytes.
    pub memtable_bytes_max: u64,
    /// WAL bytes buffered in memory before they are appended to the file.
    pub wal_buffer_bytes_max: u64,
    /// Under [`SyncPolicy::Always`] the WAL file grows by zero-filled chunks
    /// of this size, written over by records, so that most fsyncs commit data
    /// without a new file size. Periodic syncs keep no write waiting on an
    /// fsync, so there the log is appended to instead: zeros would only
    /// double the bytes written. 0 also appends.
    pub wal_preallocate_bytes: u64,
    /// Target size of an uncompressed data block.
    pub block_bytes: u32,
    /// Budget of the block cache.
    pub block_cache_bytes_max: u64,
    /// Values longer than this are stored zstd-compressed in tables.
    pub compress_values_over_bytes: u32,
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
    /// Level 0 is compacted once it holds this many tables.
    pub l0_tables_max: u32,
    /// Target size of level 1; each deeper level is `level_size_ratio` times larger.
    pub level_base_bytes: u64,
    pub level_size_ratio: u32,
    /// Compaction cuts its output into tables of about this size.
    pub table_bytes_target: u64,
    pub sync_policy: SyncPolicy,
    /// Refuse to open, changing nothing on the disk, when recovery finds
    /// that synced records were lost to damage ([`OpenError::RecordsLost`]).
    /// An owner whose data has no other copy sets it, so that an operator
    /// decides; with replicas to repair from, opening is the right choice.
    pub refuse_lost_records: bool,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            memtable_bytes_max: 64 << 20,
            wal_buffer_bytes_max: 1 << 20,
            wal_preallocate_bytes: 4 << 20,
            block_bytes: 4096,
            block_cache_bytes_max: 64 << 20,
            compress_values_over_bytes: 1024,
            key_bytes_max: 64 << 10,
            value_bytes_max: 64 << 20,
            l0_tables_max: 4,
            level_base_bytes: 256 << 20,
            level_size_ratio: 10,
            table_bytes_target: 32 << 20,
            sync_policy: SyncPolicy::Always,
            refuse_lost_records: false,
        }
    }
}

/// A WAL file to fsync on the engine's behalf; valid until `finish_sync`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    pub file: String,
    /// Sync the directory after the file: a WAL file created since the
    /// last sync needs its name to survive a crash.
    pub dir: bool,
    /// Every write with an Lsn up to this one is durable once the sync succeeds.
    pub through: Lsn,
}

impl SyncRequest {
    /// Does the syncs on `disk`, the file's first.
    pub fn run(&self, disk: &dyn crate::disk::Disk) -> Result<(), DiskError> {
        disk.sync(&self.file)?;
        if self.dir {
            disk.sync_dir()?;
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("disk error while opening: {0}")]
    Disk(#[from] DiskError),
    #[error("{file:?} is corrupt: {reason}")]
    Corrupt { file: String, reason: String },
    #[error("{file:?} cannot be read by this build: {reason}")]
    Unsupported { file: String, reason: String },
    /// Recovery found synced records lost to damage, and the engine was
    /// told to refuse rather than open without them. Nothing was changed.
    #[error("{0}")]
    RecordsLost(LossReport),
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    #[error("the engine is poisoned by an earlier disk failure and refuses writes")]
    Poisoned,
    #[error("key of {len} bytes exceeds the maximum of {max}")]
    KeyTooLarge { len: u64, max: u32 },
    #[error("value of {len} bytes exceeds the maximum of {max}")]
    ValueTooLarge { len: u64, max: u32 },
    #[error("disk error while writing: {0}")]
    Disk(DiskError),
    /// Definite: the memtable reached `limit` bytes, twice its flush size,
    /// while the previous one is still being written to a table. Retry shortly.
    #[error(
        "storage is behind: the memtable is at {limit} bytes while the previous one is still being flushed"
    )]
    Stalled { limit: u64 },
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    #[error("{file:?} is corrupt at offset {offset}: {reason}")]
    Corrupt { file: String, offset: u64, reason: String },
    #[error("disk error while reading: {0}")]
    Disk(#[from] DiskError),
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaintainError {
    #[error("the engine is poisoned by an earlier disk failure")]
    Poisoned,
    #[error("disk error during maintenance: {0}")]
    Disk(DiskError),
    #[error("maintenance read corrupt data: {0}")]
    Corrupt(ReadError),
}

/// What one call of [`Engine::maintain`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub flushed: bool,
    pub compacted: bool,
}

/// What [`Engine::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub wal_files_replayed: u32,
    pub records_replayed: u64,
    /// WAL files whose replay stopped before their end, and why: a torn
    /// tail, or the Lsn where a later file takes over.
    pub wal_stops: Vec<(String, String)>,
    /// Files removed: orphaned tables, WAL files whose records are in tables.
    pub files_removed: Vec<String>,
    /// Where the log is damaged and what was lost there.
    pub loss: LossReport,
    /// WAL files with damage, kept as evidence under `<name>.damaged`.
    pub files_kept_damaged: Vec<String>,
    /// Records that had been synced may be lost (`loss.lost` is not
    /// empty): the owner must not trust its history to be complete (the
    /// node takes a new incarnation).
    pub log_damaged: bool,
}

/// Damage found in the write-ahead log, and the records it cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LossReport {
    pub damage: Vec<LogDamage>,
    /// Lsns no readable record holds: synced writes lost to the damage.
    pub lost: Vec<LostRecords>,
}

/// One bad record in a WAL file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogDamage {
    pub file: String,
    pub offset: u64,
    pub reason: String,
    /// Records after it in the same file that pass their own checksums,
    /// and were replayed.
    pub records_after: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostRecords {
    /// These Lsns are missing between records that were read.
    Range { first: Lsn, last: Lsn },
    /// Damage at the end of the newest log: every record after this Lsn,
    /// however many there were, is lost.
    After(Lsn),
}

impl LossReport {
    /// Records known lost, and whether an unknown number more may be.
    pub fn lost_count(&self) -> (u64, bool) {
        let mut count = 0u64;
        let mut open_ended = false;
        for lost in &self.lost {
            match lost {
                LostRecords::Range { first, last } => count += last.0 - first.0 + 1,
                LostRecords::After(_) => open_ended = true,
            }
        }
        (count, open_ended)
    }
}

impl fmt::Display for LossReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (count, open_ended) = self.lost_count();
        let more = if open_ended { " and every record after the last one read" } else { "" };
        write!(f, "the write-ahead log is damaged: {count} synced records lost{more}")?;
        for lost in &self.lost {
            match lost {
                LostRecords::Range { first, last } => write!(f, "; Lsn {first} to {last} missing")?,
                LostRecords::After(after) => write!(f, "; nothing readable after Lsn {after}")?,
            }
        }
        for damage in &self.damage {
            write!(
                f,
                "; {} at offset {}: {} ({} records after it read back)",
                damage.file, damage.offset, damage.reason, damage.records_after
            )?;
        }
        Ok(())
    }
}

/// Numbers the node shows in its status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub memtable_bytes: u64,
    pub memtable_bytes_max: u64,
    pub block_cache_bytes: u64,
    pub block_cache_bytes_max: u64,
    pub block_cache_hits: u64,
    pub block_cache_misses: u64,
    /// Entries in the memtable, tombstones included.
    pub memtable_entries: u64,
    pub memtable_tombstones: u64,
    /// Entries of every table, tombstones included, as each table's footer
    /// counted them when it was written.
    pub table_entries: u64,
    pub table_tombstones: u64,
    pub tables_per_level: Vec<u32>,
    pub table_bytes_per_level: Vec<u64>,
    /// Memory held by the open tables' indexes and bloom filters.
    pub table_memory_bytes: u64,
    /// Bytes of tables and WAL files.
    pub disk_bytes: u64,
    pub wal_bytes: u64,
    pub last_lsn: u64,
    /// The newest write handed to the disk, synced or not.
    pub appended_lsn: u64,
    pub durable_lsn: u64,
    pub flushes: u64,
    pub compactions: u64,
    /// Checksum failures seen, including transient ones that a re-read cured.
    pub corruption_detected: u64,
    /// Tombstones written by [`Engine::delete`] since the engine opened.
    pub tombstones_written: u64,
    /// Tombstones compactions dropped, having found no older version of
    /// their key below the output level.
    pub tombstones_dropped: u64,
    pub poisoned: bool,
}

impl EngineStats {
    /// Live keys, estimated from counts alone without reading a table: the
    /// values (entries that are not tombstones) in the memtable and in every
    /// table. A key whose value sits in several places (overwritten, not yet
    /// merged by a compaction) counts once per place, and a deleted key
    /// counts while an older value of it is still stored under the
    /// tombstone. It is never below the true count: every live key's newest
    /// entry is a value somewhere.
    pub fn keys_estimate(&self) -> u64 {
        let memtable = self.memtable_entries.saturating_sub(self.memtable_tombstones);
        memtable.saturating_add(self.table_entries.saturating_sub(self.table_tombstones))
    }
}

/// The exclusive upper bound of the keys that start with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_skips_trailing_max_bytes() {
        assert_eq!(prefix_end(b"ab"), Bound::Excluded(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Bound::Excluded(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), Bound::Unbounded);
        assert_eq!(prefix_end(b""), Bound::Unbounded);
    }
}
