//! Flushes and compaction steps, run inline when the owner calls `maintain`.
//!
//! Both follow one order so that a crash at any point leaves a consistent
//! tree: write and sync the new tables, sync the directory, install the new
//! manifest atomically, and only then remove what it no longer names. Files a
//! crash leaves behind are not in the manifest and are removed at recovery.

use std::sync::Arc;

use super::compaction::{self, Choice};
use super::engine::{Engine, WalWriter};
use super::iter::Merge;
use super::manifest::{Manifest, TableMeta};
use super::memtable::Memtable;
use super::sstable::{Reads, Table, TableWriter};
use super::{MaintainError, MaintenanceReport, ReadError, wal};
use crate::disk::DiskError;

impl Engine {
    /// True when a flush or compaction is due.
    pub fn needs_maintenance(&self) -> bool {
        !self.poisoned && (self.memtable.bytes() >= self.config.memtable_bytes_max || self.compaction_due)
    }

    /// Flushes a full memtable and runs at most one compaction step.
    pub fn maintain(&mut self) -> Result<MaintenanceReport, MaintainError> {
        if self.poisoned {
            return Err(MaintainError::Poisoned);
        }
        let mut report = MaintenanceReport::default();
        if self.memtable.bytes() >= self.config.memtable_bytes_max {
            report.flushed = self.flush()?;
        }
        if self.compaction_due {
            report.compacted = self.compact_step()?;
        }
        Ok(report)
    }

    /// Writes the memtable to a level-0 table and starts a new WAL file.
    /// Returns false if the memtable was empty. A disk error poisons the engine.
    pub fn flush(&mut self) -> Result<bool, MaintainError> {
        if self.poisoned {
            return Err(MaintainError::Poisoned);
        }
        if self.memtable.is_empty() {
            return Ok(false);
        }
        self.flush_inner().map_err(|error| self.poison(error))?;
        self.counters.flushes += 1;
        Ok(true)
    }

    fn flush_inner(&mut self) -> Result<(), DiskError> {
        let seq = self.wal.seq + 1;
        let next_wal = WalWriter::create(&*self.disk, seq, &self.config, 0)?;
        self.write_memtable(seq)?;
        let old = core::mem::replace(&mut self.wal, next_wal);
        self.remove_wals_before(seq, &old.file);
        Ok(())
    }

    /// Writes the memtable (if it holds anything) to a level-0 table and
    /// installs a manifest in which the log starts at WAL file `wal_first`
    /// and every write so far is in a table; the memtable is empty after.
    pub(super) fn write_memtable(&mut self, wal_first: u64) -> Result<(), DiskError> {
        let mut manifest = self.manifest.clone();
        manifest.wal_first = wal_first;
        manifest.flushed_lsn = self.last_lsn.0;
        let mut added = Vec::new();
        if !self.memtable.is_empty() {
            let id = manifest.next_table_id;
            let mut writer = TableWriter::create(&*self.disk, id, &self.config)?;
            for (key, value) in self.memtable.iter() {
                writer.add(&*self.disk, key, value)?;
            }
            manifest.next_table_id = id + 1;
            if let Some((meta, table)) = writer.finish(&*self.disk)? {
                if let Some(level0) = manifest.levels.first_mut() {
                    level0.insert(0, meta);
                }
                added.push(table);
            }
        }
        // The manifest's directory sync also makes the table and the new WAL durable.
        self.install(manifest, added, &[])?;
        self.memtable = Memtable::new(self.memtable.hasher());
        self.durable_lsn = self.last_lsn;
        self.appended_lsn = self.last_lsn;
        Ok(())
    }

    /// Removes WAL files older than `seq`; one with a sync in flight waits for it.
    fn remove_wals_before(&mut self, seq: u64, current_old: &str) {
        let mut names = self.disk.list().unwrap_or_else(|_| vec![current_old.to_owned()]);
        names.retain(|name| wal::parse_file_name(name).is_some_and(|old| old < seq));
        for name in names {
            if self.sync_in_flight.as_ref().is_some_and(|request| request.file == name) {
                self.wal_retired.push(name);
            } else {
                // Leftovers are harmless: recovery skips WAL files below `wal_first`.
                let _ = self.disk.remove(&name);
            }
        }
    }

    /// Stores `manifest`, then swaps the open tables to match it.
    fn install(&mut self, manifest: Manifest, added: Vec<Table>, removed: &[u64]) -> Result<(), DiskError> {
        manifest.store(&*self.disk)?;
        for table in added {
            self.tables.insert(table.id, Arc::new(table));
        }
        for id in removed {
            self.tables.remove(id);
            self.cache.remove_table(*id);
        }
        self.manifest = manifest;
        self.compaction_due = compaction::choose(&self.manifest, &self.config) != Choice::Nothing;
        assert_eq!(self.tables.len(), self.manifest.tables().count(), "open tables match the manifest");
        Ok(())
    }

    fn poison(&mut self, error: DiskError) -> MaintainError {
        self.poisoned = true;
        MaintainError::Disk(error)
    }

    /// Runs the compaction step the policy chooses, if any.
    pub fn compact_step(&mut self) -> Result<bool, MaintainError> {
        if self.poisoned {
            return Err(MaintainError::Poisoned);
        }
        match compaction::choose(&self.manifest, &self.config) {
            Choice::Nothing => Ok(false),
            Choice::Move { table, from } => {
                let mut manifest = self.manifest.clone();
                let (Some(upper), Some(_)) =
                    (manifest.levels.get_mut(from), self.manifest.levels.get(from + 1))
                else {
                    return Ok(false);
                };
                let Some(at) = upper.iter().position(|meta| meta.id == table) else { return Ok(false) };
                let meta = upper.remove(at);
                insert_sorted(&mut manifest, from + 1, meta);
                self.install(manifest, Vec::new(), &[]).map_err(|error| self.poison(error))?;
                self.counters.compactions += 1;
                Ok(true)
            }
            Choice::Merge { from, to, inputs, drop_tombstones } => {
                let result = self.merge_tables(from, to, &inputs, drop_tombstones);
                if let Err(MaintainError::Corrupt(_)) = result {
                    // Retrying would read the same bad block; wait for the tree to change.
                    self.compaction_due = false;
                }
                result?;
                self.counters.compactions += 1;
                Ok(true)
            }
        }
    }

    fn merge_tables(
        &mut self,
        from: usize,
        to: usize,
        inputs: &[u64],
        drop_tombstones: bool,
    ) -> Result<(), MaintainError> {
        debug_assert!(from < to);
        let runs: Vec<Vec<Arc<Table>>> =
            inputs.iter().filter_map(|id| self.tables.get(id)).map(|table| vec![Arc::clone(table)]).collect();
        if runs.len() != inputs.len() {
            return Err(MaintainError::Corrupt(ReadError::Corrupt {
                file: String::from("MANIFEST"),
                offset: 0,
                reason: String::from("compaction input is not open"),
            }));
        }
        let mut merge = Merge::new(None, runs, std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, false);
        let mut outputs: Vec<(TableMeta, Table)> = Vec::new();
        let mut manifest = self.manifest.clone();
        let result = self.write_merged(&mut merge, &mut manifest, drop_tombstones, &mut outputs);
        if let Err(error) = result {
            for (meta, _) in &outputs {
                let _ = self.disk.remove(&super::sstable::file_name(meta.id));
            }
            return Err(match error {
                MergeFailure::Read(error) => MaintainError::Corrupt(error),
                MergeFailure::Disk(error) => self.poison(error),
            });
        }
        for level in &mut manifest.levels {
            level.retain(|meta| !inputs.contains(&meta.id));
        }
        let mut added = Vec::new();
        for (meta, table) in outputs {
            insert_sorted(&mut manifest, to, meta);
            added.push(table);
        }
        self.install(manifest, added, inputs).map_err(|error| self.poison(error))?;
        for id in inputs {
            let _ = self.disk.remove(&super::sstable::file_name(*id));
        }
        Ok(())
    }

    /// Streams the merge into tables of about `table_bytes_target` each.
    fn write_merged(
        &mut self,
        merge: &mut Merge<'_>,
        manifest: &mut Manifest,
        drop_tombstones: bool,
        outputs: &mut Vec<(TableMeta, Table)>,
    ) -> Result<(), MergeFailure> {
        let disk = &*self.disk;
        let mut reads = Reads {
            disk,
            cache: &mut self.cache,
            corruption_detected: &mut self.counters.corruption_detected,
            fill_cache: false,
        };
        let mut writer: Option<TableWriter> = None;
        while let Some(item) = merge.next(&mut reads).map_err(MergeFailure::Read)? {
            if drop_tombstones && item.is_tombstone() {
                continue;
            }
            let current = match &mut writer {
                Some(current) => current,
                None => {
                    let id = manifest.next_table_id;
                    manifest.next_table_id += 1;
                    writer.insert(TableWriter::create(disk, id, &self.config).map_err(MergeFailure::Disk)?)
                }
            };
            current.add_encoded(disk, &item.key, item.flags, &item.value).map_err(MergeFailure::Disk)?;
            if current.bytes() >= self.config.table_bytes_target {
                if let Some(done) = writer.take() {
                    outputs.extend(done.finish(disk).map_err(MergeFailure::Disk)?);
                }
            }
        }
        if let Some(done) = writer.take() {
            outputs.extend(done.finish(disk).map_err(MergeFailure::Disk)?);
        }
        disk.sync_dir().map_err(MergeFailure::Disk)
    }
}

enum MergeFailure {
    Read(ReadError),
    Disk(DiskError),
}

/// Inserts a table into a sorted level (1 and deeper).
fn insert_sorted(manifest: &mut Manifest, level: usize, meta: TableMeta) {
    if let Some(tables) = manifest.levels.get_mut(level) {
        let at = tables.partition_point(|table| table.first_key < meta.first_key);
        tables.insert(at, meta);
    }
}
