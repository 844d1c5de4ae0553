//! The engine: the write path, the read path and the durability handshake.

use std::ops::Bound;

use super::memtable::{Memtable, range_is_empty};
use super::wal::{self, Record};
use super::{
    EngineConfig, EngineStats, Lsn, MaintainError, MaintenanceReport, OpenError, Pair, ReadError,
    RecoveryReport, SyncRequest, WriteError, prefix_end,
};
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
    pub(super) last_lsn: Lsn,
    pub(super) durable_lsn: Lsn,
    pub(super) sync_in_flight: Option<SyncRequest>,
    pub(super) poisoned: bool,
    pub(super) recovery: RecoveryReport,
    pub(super) counters: Counters,
}

/// The WAL file being written and the bytes not yet appended to it.
#[derive(Debug)]
pub(super) struct WalWriter {
    #[allow(dead_code)] // read by the flush, which lands next
    pub seq: u64,
    pub file: String,
    pub buffer: Vec<u8>,
    /// Bytes of this file and of older WAL files still on disk.
    pub disk_bytes: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub flushes: u64,
    pub compactions: u64,
    pub corruption_detected: u64,
}

impl Engine {
    /// Opens the engine on `disk`, recovering tables and replaying the WAL.
    pub fn open(disk: Box<dyn Disk>, config: EngineConfig) -> Result<Engine, OpenError> {
        super::recovery::open(disk, config)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// What recovery found when the engine was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Stores `value` under `key`. Visible at once; durable after a sync covering the Lsn.
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
        self.write(key, None)
    }

    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<Lsn, WriteError> {
        if self.poisoned {
            return Err(WriteError::Poisoned);
        }
        if key.len() as u64 > u64::from(self.config.key_bytes_max) {
            return Err(WriteError::KeyTooLarge { len: key.len() as u64, max: self.config.key_bytes_max });
        }
        let lsn = Lsn(self.last_lsn.0 + 1);
        wal::encode(Record { lsn, key, value }, &mut self.wal.buffer);
        self.memtable.insert(key, value);
        self.last_lsn = lsn;
        if self.wal.buffer.len() as u64 >= self.config.wal_buffer_bytes_max {
            self.append_wal().map_err(WriteError::Disk)?;
        }
        Ok(lsn)
    }

    /// Appends the buffered WAL bytes to the file. A failed append may leave a
    /// partial record behind, after which nothing more may be appended: poison.
    pub(super) fn append_wal(&mut self) -> Result<(), DiskError> {
        if self.wal.buffer.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.disk.append(&self.wal.file, &self.wal.buffer) {
            self.poisoned = true;
            return Err(error);
        }
        self.wal.disk_bytes += self.wal.buffer.len() as u64;
        self.wal.buffer.clear();
        Ok(())
    }

    /// The newest value of `key`, including writes not yet synced.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        if let Some(entry) = self.memtable.get(key) {
            return Ok(entry.map(<[u8]>::to_vec));
        }
        Ok(None)
    }

    /// Up to `limit` live pairs with keys between `start` and `end`, in key order.
    pub fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Pair>, ReadError> {
        let mut out = Vec::new();
        if range_is_empty(start, end) {
            return Ok(out);
        }
        for (key, entry) in self.memtable.range_chunk(start, end, usize::MAX) {
            if out.len() >= limit {
                break;
            }
            if let Some(value) = entry {
                out.push((key, value));
            }
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
        self.append_wal().ok()?;
        let request = SyncRequest { file: self.wal.file.clone(), through: self.last_lsn };
        self.sync_in_flight = Some(request.clone());
        Some(request)
    }

    /// Reports the outcome of the fsync named by `request`.
    pub fn finish_sync(&mut self, request: SyncRequest, result: Result<(), DiskError>) {
        assert_eq!(self.sync_in_flight.as_ref(), Some(&request), "finish_sync for a sync not in flight");
        self.sync_in_flight = None;
        match result {
            Ok(()) => self.durable_lsn = self.durable_lsn.max(request.through),
            Err(_) => self.poisoned = true,
        }
        if let Some(at) = self.wal_retired.iter().position(|file| *file == request.file) {
            let file = self.wal_retired.swap_remove(at);
            // Its contents live in a table now; a leftover file is skipped at recovery.
            let _ = self.disk.remove(&file);
        }
        assert!(self.durable_lsn <= self.last_lsn);
    }

    /// Runs a whole sync inline: for tests, tools and owners without an event loop.
    pub fn sync_now(&mut self) -> Result<(), DiskError> {
        let Some(request) = self.begin_sync() else {
            return if self.poisoned { Err(poisoned_error()) } else { Ok(()) };
        };
        let result = self.disk.sync(&request.file);
        self.finish_sync(request, result.clone());
        result
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// True when a flush or compaction is due.
    pub fn needs_maintenance(&self) -> bool {
        !self.poisoned && self.memtable.bytes() >= self.config.memtable_bytes_max
    }

    /// Flushes a full memtable and/or runs one compaction step.
    pub fn maintain(&mut self) -> Result<MaintenanceReport, MaintainError> {
        if self.poisoned {
            return Err(MaintainError::Poisoned);
        }
        Ok(MaintenanceReport::default())
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            memtable_bytes: self.memtable.bytes(),
            memtable_bytes_max: self.config.memtable_bytes_max,
            block_cache_bytes_max: self.config.block_cache_bytes_max,
            disk_bytes: self.wal.disk_bytes,
            wal_bytes: self.wal.disk_bytes,
            last_lsn: self.last_lsn.0,
            durable_lsn: self.durable_lsn.0,
            flushes: self.counters.flushes,
            compactions: self.counters.compactions,
            corruption_detected: self.counters.corruption_detected,
            poisoned: self.poisoned,
            ..EngineStats::default()
        }
    }
}

fn poisoned_error() -> DiskError {
    DiskError::Io { name: String::new(), message: String::from("engine poisoned by an earlier failure") }
}
