//! The engine: the write path, the read path and the durability handshake.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::cache::BlockCache;
use super::iter::{Iter, Merge};
use super::manifest::Manifest;
use super::memtable::Memtable;
use super::sstable::{Reads, Table};
use super::wal::{self, Record};
use super::{
    EngineConfig, EngineStats, Lsn, OpenError, Pair, ReadError, RecoveryReport, SyncPolicy, SyncRequest,
    WriteError, bloom, prefix_end,
};
use crate::KeyedHasher;
use crate::disk::{Disk, DiskError};

/// A log-structured merge tree over one directory of a [`Disk`].
#[derive(Debug)]
pub struct Engine {
    pub(super) disk: Box<dyn Disk>,
    pub(super) config: EngineConfig,
    pub(super) memtable: Memtable,
    pub(super) wal: WalWriter,
    /// Old WAL files kept only because a sync on them is in flight.
    pub(super) wal_retired: Vec<String>,
    /// The WAL file the log rotated away from, while its last records
    /// (up to the Lsn) are not yet synced. Until they are, nothing is
    /// written to the new file, so what survives a crash is always a prefix
    /// of the log; the next sync is this file's.
    pub(super) wal_unsynced: Option<(String, Lsn)>,
    /// A WAL file was created since the directory's last sync.
    pub(super) dir_unsynced: bool,
    /// The next WAL file, created, zeroed and synced ahead of need by a
    /// job (under `always`, where the log is preallocated), so that
    /// rotating the log writes and syncs nothing on the owner's loop.
    pub(super) wal_spare: Option<SpareLog>,
    /// The job preparing it.
    pub(super) preparing: Option<(super::job::JobId, SpareLog)>,
    pub(super) last_lsn: Lsn,
    /// The newest write handed to the disk (appended to the WAL or flushed).
    pub(super) appended_lsn: Lsn,
    pub(super) durable_lsn: Lsn,
    pub(super) sync_in_flight: Option<SyncRequest>,
    pub(super) poisoned: bool,
    pub(super) recovery: RecoveryReport,
    pub(super) counters: Counters,
    pub(super) manifest: Manifest,
    pub(super) tables: BTreeMap<u64, Arc<Table>>,
    pub(super) cache: BlockCache,
    /// Whether the compaction policy has a step to run; updated with the manifest.
    pub(super) compaction_due: bool,
    /// What opening left to settle after it lost records; see
    /// [`Engine::finish_recovery`].
    pub(super) unsettled: Option<super::recovery::Unsettled>,
    /// The memtable a flush job is writing, newer than every table.
    pub(super) frozen: Option<Frozen>,
    pub(super) compacting: Option<super::maintain::Compacting>,
    /// The next table id to hand out; the manifest records it at each change.
    pub(super) next_table_id: u64,
    pub(super) job_next: u64,
    /// Files no manifest names any more, for the next removal job.
    pub(super) obsolete: Vec<String>,
    pub(super) removing: Option<super::job::JobId>,
    /// Manifest changes made in memory and stored on disk, counted.
    pub(super) manifest_version: u64,
    pub(super) manifest_stored: u64,
    /// The manifest store in flight, and the version it stores.
    pub(super) storing: Option<(super::job::JobId, u64)>,
    /// What waits for a version of the manifest to be stored.
    pub(super) after_store: Vec<AfterStore>,
    /// Flushed memtables and compacted tables, for the next manifest store
    /// job to free.
    pub(super) released: super::job::Released,
}

/// A WAL file made ready before the log rotates to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SpareLog {
    pub seq: u64,
    /// Its length: the header and zeros.
    pub bytes: u64,
}

/// Something that may happen only once the manifest naming its change is
/// stored: before, a crash recovers the tree as it was.
#[derive(Debug)]
pub(super) enum AfterStore {
    /// A flush of every write up to `lsn` into tables, whose WAL files
    /// numbered below `wal_first` may then go.
    Flushed { version: u64, lsn: Lsn, wal_first: u64 },
    /// A compaction's inputs may be removed.
    Compacted { version: u64, inputs: Vec<String> },
}

/// How far past its flush size the memtable may grow while the previous one
/// is still being flushed, before writes are refused as `Stalled`: this many
/// times the flush size, and at least `STALL_SLACK_MIN` bytes past it, so
/// small memtables do not stall on one slow flush.
pub(super) const STALL_FACTOR: u64 = 4;
pub(super) const STALL_SLACK_MIN: u64 = 4 << 20;

/// A memtable handed to a flush job, readable until its table is installed.
#[derive(Debug)]
pub(super) struct Frozen {
    pub job: super::job::JobId,
    pub memtable: Arc<Memtable>,
    /// Its newest record.
    pub last_lsn: Lsn,
    /// The WAL file writes went to after it was frozen.
    pub wal_next: u64,
}

/// The WAL file being written and the bytes not yet written to it.
#[derive(Debug)]
pub(super) struct WalWriter {
    pub seq: u64,
    pub file: String,
    pub buffer: Vec<u8>,
    /// Where the next record goes: the end of the log in this file.
    pub end: u64,
    /// The file's length: the log and the zeros preallocated after it.
    pub allocated: u64,
    /// Bytes of this file and of older WAL files still on disk.
    pub disk_bytes: u64,
}

impl WalWriter {
    /// Creates WAL file `seq` with its header and a first chunk of zeros.
    /// Neither is durable before the first sync of the file.
    pub fn create(
        disk: &dyn Disk,
        seq: u64,
        config: &EngineConfig,
        disk_bytes: u64,
    ) -> Result<WalWriter, DiskError> {
        let file = wal::file_name(seq);
        disk.create(&file)?;
        let mut start = wal::file_header().to_vec();
        let chunk = usize::try_from(preallocate_bytes(config)).unwrap_or(usize::MAX);
        start.resize(start.len().saturating_add(chunk), 0);
        disk.append(&file, &start)?;
        let (end, allocated) = (wal::FILE_HEADER_BYTES as u64, start.len() as u64);
        Ok(WalWriter { seq, file, buffer: Vec::new(), end, allocated, disk_bytes: disk_bytes + allocated })
    }

    /// Writes to a spare WAL file, which holds its header and zeros.
    pub fn adopt(spare: SpareLog) -> WalWriter {
        WalWriter {
            seq: spare.seq,
            file: wal::file_name(spare.seq),
            buffer: Vec::new(),
            end: wal::FILE_HEADER_BYTES as u64,
            allocated: spare.bytes,
            disk_bytes: spare.bytes,
        }
    }
}

/// The size of the zero chunks the WAL grows by; 0 to append instead.
pub(super) fn preallocate_bytes(config: &EngineConfig) -> u64 {
    match config.sync_policy {
        SyncPolicy::Always => config.wal_preallocate_bytes,
        SyncPolicy::Periodic { .. } => 0,
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub flushes: u64,
    pub compactions: u64,
    pub corruption_detected: u64,
    pub tombstones_written: u64,
    pub tombstones_dropped: u64,
}

impl Engine {
    /// Opens the engine on `disk`, recovering tables and replaying the WAL.
    /// The memtable hashes keys under a fixed key: for tests and tools.
    pub fn open(disk: Box<dyn Disk>, config: EngineConfig) -> Result<Engine, OpenError> {
        super::recovery::open(disk, config, KeyedHasher::default())
    }

    /// As [`Engine::open`], with the memtable's index hashing under
    /// `hasher`'s secret key: what a server facing clients uses.
    pub fn open_keyed(
        disk: Box<dyn Disk>,
        config: EngineConfig,
        hasher: KeyedHasher,
    ) -> Result<Engine, OpenError> {
        super::recovery::open(disk, config, hasher)
    }

    /// How the memtable hashes keys.
    pub fn memtable_hasher(&self) -> KeyedHasher {
        self.memtable.hasher()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// What recovery found when the engine was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Stores `value` under `key`. Visible at once; durable after a sync covering the Lsn.
    /// `Err(WriteError::Disk)` poisons the engine and leaves the write indeterminate:
    /// it may be visible now and may survive a restart.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Lsn, WriteError> {
        if value.len() as u64 > u64::from(self.config.value_bytes_max) {
            return Err(WriteError::ValueTooLarge {
                len: value.len() as u64,
                max: self.config.value_bytes_max,
            });
        }
        self.write(key, Some(value))
    }

    /// Deletes `key` by writing a tombstone.
    pub fn delete(&mut self, key: &[u8]) -> Result<Lsn, WriteError> {
        let lsn = self.write(key, None)?;
        self.counters.tombstones_written += 1;
        Ok(lsn)
    }

    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<Lsn, WriteError> {
        if self.poisoned {
            return Err(WriteError::Poisoned);
        }
        if key.len() as u64 > u64::from(self.config.key_bytes_max) {
            return Err(WriteError::KeyTooLarge { len: key.len() as u64, max: self.config.key_bytes_max });
        }
        // An owner that never runs jobs must not grow the memtable without
        // bound: flush inline. Flushing before the write, not after, keeps a
        // write all-or-nothing: an error leaves nothing of it readable. While
        // a flush job is still writing the previous memtable, the new one may
        // grow further (`STALL_FACTOR`); then writes wait.
        if self.memtable.bytes() >= self.config.memtable_bytes_max.saturating_mul(2) {
            let max = self.config.memtable_bytes_max;
            let limit = max.saturating_mul(STALL_FACTOR).max(max.saturating_add(STALL_SLACK_MIN));
            if self.frozen.is_some() {
                if self.memtable.bytes() >= limit {
                    return Err(WriteError::Stalled { limit });
                }
            } else {
                self.flush().map_err(|error| match error {
                    super::MaintainError::Disk(error) => WriteError::Disk(error),
                    _ => WriteError::Poisoned,
                })?;
            }
        }
        let lsn = Lsn(self.last_lsn.0 + 1);
        wal::encode(Record { lsn, key, value }, &mut self.wal.buffer);
        self.last_lsn = lsn;
        // After a rotation the buffer waits for the old file's sync.
        if self.wal.buffer.len() as u64 >= self.config.wal_buffer_bytes_max && self.wal_unsynced.is_none() {
            // Poisoned now; the record may be on disk in part or whole, but
            // it is never read from the memtable.
            self.append_wal().map_err(WriteError::Disk)?;
        }
        self.memtable.insert(key, value);
        Ok(lsn)
    }

    /// Hands the buffered WAL bytes to the disk without syncing them: they
    /// then survive a crash of the process, though not of the machine. On
    /// failure the engine is poisoned, as after any failed append.
    pub fn write_out(&mut self) -> Result<(), DiskError> {
        if self.poisoned {
            return Err(poisoned_error());
        }
        if self.wal_unsynced.is_some() {
            // The new WAL file waits for the old one's sync (see `wal_unsynced`).
            return Ok(());
        }
        self.append_wal()
    }

    /// The log just rotated and the old file's last records wait for a
    /// sync, which should come at once: writes are neither written out nor
    /// synced until it does.
    pub fn rotation_unsynced(&self) -> bool {
        self.wal_unsynced.is_some()
    }

    /// Writes the buffered WAL bytes to the file, over preallocated zeros,
    /// first growing the file by whole chunks if they would run past its end.
    /// A failed write may leave a partial record behind, after which nothing
    /// more may be written: poison.
    pub(super) fn append_wal(&mut self) -> Result<(), DiskError> {
        if self.wal.buffer.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.write_wal_buffer() {
            self.poisoned = true;
            return Err(error);
        }
        self.wal.buffer.clear();
        self.appended_lsn = self.last_lsn;
        Ok(())
    }

    fn write_wal_buffer(&mut self) -> Result<(), DiskError> {
        let wal = &mut self.wal;
        let end = wal.end + wal.buffer.len() as u64;
        let chunk = preallocate_bytes(&self.config);
        if chunk == 0 {
            self.disk.append(&wal.file, &wal.buffer)?;
            (wal.end, wal.allocated) = (end, end);
            wal.disk_bytes += wal.buffer.len() as u64;
            return Ok(());
        }
        if end > wal.allocated {
            let grow = (end - wal.allocated).div_ceil(chunk) * chunk;
            let zeros = vec![0; usize::try_from(grow).unwrap_or(usize::MAX)];
            self.disk.append(&wal.file, &zeros)?;
            wal.allocated += grow;
            wal.disk_bytes += grow;
        }
        self.disk.write_at(&wal.file, wal.end, &wal.buffer)?;
        wal.end = end;
        Ok(())
    }

    /// The newest value of `key`, including writes not yet synced.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.get_borrowed(key)?.map(Cow::into_owned))
    }

    /// As [`Engine::get`], without copying a value that is in the memtable:
    /// most reads of recent writes only decode the value and drop it.
    pub fn get_borrowed(&mut self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, ReadError> {
        if let Some(entry) = self.memtable.get(key) {
            return Ok(entry.map(Cow::Borrowed));
        }
        if let Some(entry) = self.frozen.as_ref().and_then(|frozen| frozen.memtable.get(key)) {
            return Ok(entry.map(Cow::Borrowed));
        }
        let hash = bloom::hash(key);
        let mut reads = Reads {
            disk: &*self.disk,
            cache: &mut self.cache,
            corruption_detected: &mut self.counters.corruption_detected,
            fill_cache: true,
        };
        let value_bytes_max = self.config.value_bytes_max;
        for (level, metas) in self.manifest.levels.iter().enumerate() {
            let candidates = if level == 0 {
                metas.as_slice()
            } else {
                let at = metas.partition_point(|meta| meta.last_key.as_slice() < key);
                metas.get(at..at + 1).unwrap_or_default()
            };
            for meta in candidates {
                if key < meta.first_key.as_slice() || key > meta.last_key.as_slice() {
                    continue;
                }
                let Some(table) = self.tables.get(&meta.id) else { continue };
                if let Some(entry) = table.get(key, hash, value_bytes_max, &mut reads)? {
                    return Ok(entry.map(Cow::Owned));
                }
            }
        }
        Ok(None)
    }

    /// An ordered iterator over the live pairs with keys between `start` and `end`.
    pub fn iter(&mut self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Iter<'_> {
        let mut runs: Vec<Vec<Arc<Table>>> = Vec::new();
        for (level, metas) in self.manifest.levels.iter().enumerate() {
            let tables = metas.iter().filter_map(|meta| self.tables.get(&meta.id)).cloned();
            if level == 0 {
                runs.extend(tables.map(|table| vec![table]));
            } else {
                runs.push(tables.collect());
            }
        }
        let (start, end) = (start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec));
        let mut memtables = vec![&self.memtable];
        memtables.extend(self.frozen.as_ref().map(|frozen| &*frozen.memtable));
        let merge = Merge::new(&memtables, runs, start, end, true);
        let reads = Reads {
            disk: &*self.disk,
            cache: &mut self.cache,
            corruption_detected: &mut self.counters.corruption_detected,
            fill_cache: true,
        };
        Iter { merge, reads, value_bytes_max: self.config.value_bytes_max, failed: false }
    }

    /// Up to `limit` live pairs with keys between `start` and `end`, in key order.
    pub fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Pair>, ReadError> {
        let mut out = Vec::with_capacity(limit.min(1024));
        for pair in self.iter(start, end).take(limit) {
            out.push(pair?);
        }
        Ok(out)
    }

    /// Up to `limit` live pairs whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&mut self, prefix: &[u8], limit: usize) -> Result<Vec<Pair>, ReadError> {
        let end = prefix_end(prefix);
        self.scan(Bound::Included(prefix), end.as_ref().map(Vec::as_slice), limit)
    }

    /// The Lsn of the newest write.
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// The newest write handed to the disk; a process crash (not a power
    /// failure) keeps everything up to here.
    pub fn appended_lsn(&self) -> Lsn {
        self.appended_lsn
    }

    /// Every write up to this Lsn survives a crash.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// Appends buffered WAL bytes and names the file to fsync, or `None` when
    /// everything is durable, a sync is already in flight, or the engine is poisoned.
    pub fn begin_sync(&mut self) -> Option<SyncRequest> {
        if self.poisoned || self.sync_in_flight.is_some() || self.durable_lsn >= self.last_lsn {
            return None;
        }
        let request = match &self.wal_unsynced {
            Some((file, through)) => SyncRequest { file: file.clone(), dir: false, through: *through },
            None => {
                self.append_wal().ok()?;
                let dir = core::mem::take(&mut self.dir_unsynced);
                SyncRequest { file: self.wal.file.clone(), dir, through: self.last_lsn }
            }
        };
        self.sync_in_flight = Some(request.clone());
        Some(request)
    }

    /// Reports the outcome of the fsync named by `request`.
    pub fn finish_sync(&mut self, request: SyncRequest, result: Result<(), DiskError>) {
        assert_eq!(self.sync_in_flight.as_ref(), Some(&request), "finish_sync for a sync not in flight");
        self.sync_in_flight = None;
        match result {
            Ok(()) => {
                self.durable_lsn = self.durable_lsn.max(request.through);
                // A sync begun before the rotation may have missed the old
                // file's last records: then that file's own sync comes next.
                self.wal_unsynced.take_if(|(file, last)| *file == request.file && request.through >= *last);
            }
            Err(_) => self.poisoned = true,
        }
        if let Some(at) = self.wal_retired.iter().position(|file| *file == request.file) {
            // Its contents live in a table now: remove it with the next removal job.
            let file = self.wal_retired.swap_remove(at);
            self.obsolete.push(file);
        }
        assert!(self.durable_lsn <= self.last_lsn);
    }

    /// Runs a whole sync inline: for tests, tools and owners without an event loop.
    pub fn sync_now(&mut self) -> Result<(), DiskError> {
        let Some(request) = self.begin_sync() else {
            return if self.poisoned { Err(poisoned_error()) } else { Ok(()) };
        };
        let result = request.run(&*self.disk);
        self.finish_sync(request, result.clone());
        result
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub fn stats(&self) -> EngineStats {
        let levels = &self.manifest.levels;
        let table_bytes_per_level: Vec<u64> =
            (0..levels.len()).map(|l| self.manifest.level_bytes(l)).collect();
        let table_bytes: u64 = table_bytes_per_level.iter().sum();
        let (table_entries, table_tombstones) =
            self.manifest.tables().fold((0u64, 0u64), |(entries, tombstones), (_, table)| {
                (entries.saturating_add(table.entries), tombstones.saturating_add(table.tombstones))
            });
        // A memtable being flushed still holds memory and entries.
        let frozen = self.frozen.as_ref().map(|frozen| &*frozen.memtable);
        let frozen_sum = |count: &dyn Fn(&Memtable) -> u64| frozen.map_or(0, count);
        let spare = self.wal_spare.iter().chain(self.preparing.iter().map(|(_, spare)| spare));
        let wal_bytes = self.wal.disk_bytes + spare.map(|spare| spare.bytes).sum::<u64>();
        EngineStats {
            memtable_bytes: self.memtable.bytes() + frozen_sum(&|m| m.bytes()),
            memtable_bytes_max: self.config.memtable_bytes_max,
            block_cache_bytes: self.cache.bytes(),
            block_cache_bytes_max: self.config.block_cache_bytes_max,
            block_cache_hits: self.cache.hits(),
            block_cache_misses: self.cache.misses(),
            memtable_entries: (self.memtable.len() as u64) + frozen_sum(&|m| m.len() as u64),
            memtable_tombstones: (self.memtable.tombstones() as u64) + frozen_sum(&|m| m.tombstones() as u64),
            table_entries,
            table_tombstones,
            tables_per_level: levels.iter().map(|tables| tables.len() as u32).collect(),
            table_bytes_per_level,
            table_memory_bytes: self.tables.values().map(|table| table.memory_bytes()).sum(),
            disk_bytes: table_bytes + wal_bytes,
            wal_bytes,
            last_lsn: self.last_lsn.0,
            appended_lsn: self.appended_lsn.0,
            durable_lsn: self.durable_lsn.0,
            flushes: self.counters.flushes,
            compactions: self.counters.compactions,
            corruption_detected: self.counters.corruption_detected,
            tombstones_written: self.counters.tombstones_written,
            tombstones_dropped: self.counters.tombstones_dropped,
            poisoned: self.poisoned,
        }
    }
}

fn poisoned_error() -> DiskError {
    DiskError::Io { name: String::new(), message: String::from("engine poisoned by an earlier failure") }
}
