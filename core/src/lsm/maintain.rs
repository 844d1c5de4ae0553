//! Flushes and compaction steps: handed out as jobs ([`super::job`]) and
//! installed when they come back, or run inline by `maintain` for owners
//! without an event loop.
//!
//! Both follow one order so that a crash at any point leaves a consistent
//! tree: write and sync the new tables, sync the directory (the job does
//! these), install the change in memory, store the new manifest atomically
//! (a job of its own), and only then remove what it no longer names. Files
//! a crash leaves behind are not in the stored manifest and are removed at
//! recovery.

use std::sync::Arc;

use super::compaction::{self, Choice};
use super::engine::{AfterStore, Engine, Frozen, SpareLog, WalWriter, preallocate_bytes};
use super::job::{COMPACTION_IDS, Job, JobDone, JobError, JobId, JobKind, Work, write_table};
use super::manifest::{Manifest, TableMeta};
use super::memtable::Memtable;
use super::sstable::Table;
use super::{MaintainError, MaintenanceReport, wal};
use crate::disk::DiskError;

/// A compaction handed out and not yet installed.
#[derive(Debug)]
pub(super) struct Compacting {
    pub id: JobId,
    pub inputs: Vec<u64>,
    pub to: usize,
}

impl Engine {
    /// True when a flush or compaction is due and none of its kind is in flight.
    pub fn needs_maintenance(&self) -> bool {
        !self.poisoned
            && (self.store_due()
                || self.spare_due()
                || self.flush_due()
                || (self.compaction_due && self.compacting.is_none())
                || (!self.obsolete.is_empty() && self.removing.is_none()))
    }

    /// A full memtable, no flush in flight, and the last rotation's old
    /// WAL file synced (so at most one file waits for a sync).
    fn flush_due(&self) -> bool {
        self.memtable.bytes() >= self.config.memtable_bytes_max
            && self.frozen.is_none()
            && self.wal_unsynced.is_none()
    }

    fn store_due(&self) -> bool {
        self.manifest_version > self.manifest_stored && self.storing.is_none()
    }

    /// Under a preallocated log, the next WAL file is made ready ahead of
    /// need: once the memtable is half full, half a memtable's worth of
    /// writes before the log rotates (a node that writes little never
    /// writes a spare).
    fn spare_due(&self) -> bool {
        preallocate_bytes(&self.config) > 0
            && self.wal_spare.is_none()
            && self.preparing.is_none()
            && self.memtable.bytes() >= self.config.memtable_bytes_max / 2
    }

    /// Hands the preparation of the next WAL file to a job. It is as long
    /// as a full memtable's log with a quarter to spare, so the log seldom
    /// grows on the owner's loop.
    fn begin_prepare(&mut self) -> Job {
        let id = self.next_job_id();
        let chunk = preallocate_bytes(&self.config).max(1);
        let want = self.config.memtable_bytes_max.saturating_add(self.config.memtable_bytes_max / 4);
        let bytes = wal::FILE_HEADER_BYTES as u64 + want.div_ceil(chunk).max(1).saturating_mul(chunk);
        let spare = SpareLog { seq: self.wal.seq + 1, bytes };
        self.preparing = Some((id, spare));
        self.job(id, Work::PrepareLog { seq: spare.seq, bytes })
    }

    /// The next job due, if any: storing a changed manifest first (it is
    /// short, and what waits on it may free disk space), then a flush of a
    /// full memtable, then a compaction step, then removals. At most one of
    /// each kind is in flight. A step that only moves a table down a level
    /// needs no job and is done here. Creating the next WAL file for a
    /// flush may fail: that poisons.
    pub fn next_job(&mut self) -> Result<Option<Job>, MaintainError> {
        if self.poisoned {
            return Err(MaintainError::Poisoned);
        }
        if self.store_due() {
            return Ok(Some(self.begin_store()));
        }
        if self.flush_due() {
            return self.begin_flush().map(Some);
        }
        if self.compaction_due && self.compacting.is_none() {
            if let Some(job) = self.begin_compaction()? {
                return Ok(Some(job));
            }
        }
        if self.spare_due() {
            return Ok(Some(self.begin_prepare()));
        }
        if !self.obsolete.is_empty() && self.removing.is_none() {
            return Ok(Some(self.begin_removal()));
        }
        Ok(None)
    }

    /// Hands a copy of the newest manifest to a store job.
    fn begin_store(&mut self) -> Job {
        let id = self.next_job_id();
        self.storing = Some((id, self.manifest_version));
        let manifest = Box::new(self.manifest.clone());
        let mut job = self.job(id, Work::StoreManifest { manifest });
        // A store follows every install: it frees what the install let go of.
        job.release = core::mem::take(&mut self.released);
        job
    }

    /// A manifest version is stored: what waited for it may happen.
    fn stored(&mut self, version: u64) {
        self.manifest_stored = self.manifest_stored.max(version);
        let stored = self.manifest_stored;
        let (due, waiting) =
            core::mem::take(&mut self.after_store).into_iter().partition(|after| match after {
                AfterStore::Flushed { version, .. } | AfterStore::Compacted { version, .. } => {
                    *version <= stored
                }
            });
        self.after_store = waiting;
        for after in due {
            match after {
                AfterStore::Flushed { lsn, wal_first, .. } => {
                    // Every write the old WAL files held is in a table the
                    // stored manifest names: durable, whatever their syncs.
                    self.durable_lsn = self.durable_lsn.max(lsn);
                    self.appended_lsn = self.appended_lsn.max(lsn);
                    self.wal_unsynced
                        .take_if(|(file, _)| wal::parse_file_name(file).is_some_and(|seq| seq < wal_first));
                    self.remove_wals_before(wal_first);
                }
                AfterStore::Compacted { inputs, .. } => self.obsolete.extend(inputs),
            }
        }
    }

    /// Hands the files no manifest names any more to a removal job.
    fn begin_removal(&mut self) -> Job {
        let id = self.next_job_id();
        self.removing = Some(id);
        let files = core::mem::take(&mut self.obsolete);
        self.job(id, Work::Remove { files })
    }

    /// Freezes the memtable for a flush job and starts the next WAL file,
    /// where writes go from now on. The frozen memtable stays readable, and
    /// its records stay in the old WAL files, until its table is installed.
    fn begin_flush(&mut self) -> Result<Job, MaintainError> {
        // The old file gets every record of the frozen memtable. The next
        // sync is its own, and nothing reaches the new file before it (see
        // `wal_unsynced`), so a crash that keeps some unsynced pages and
        // loses others still leaves a prefix of the log. The new file's
        // name is synced with its first records (`SyncRequest::dir`).
        if let Some((file, through)) = self.wal_unsynced.take() {
            // Only an inline flush comes here before the last rotation's sync
            // (`flush_due` waits for it): one file at most may wait.
            self.disk.sync(&file).map_err(|error| self.poison(error))?;
            self.durable_lsn = self.durable_lsn.max(through);
        }
        self.append_wal().map_err(|error| self.poison(error))?;
        let next_wal = match self.wal_spare.take().filter(|spare| spare.seq == self.wal.seq + 1) {
            Some(spare) => WalWriter::adopt(spare),
            None => {
                // No spare ready: create the file here, past the one a job
                // may still be preparing, and sync its name with its first
                // records (`SyncRequest::dir`).
                let mut seq = self.wal.seq + 1;
                if self.preparing.is_some_and(|(_, spare)| spare.seq == seq) {
                    seq += 1;
                }
                self.dir_unsynced = true;
                WalWriter::create(&*self.disk, seq, &self.config, 0).map_err(|error| self.poison(error))?
            }
        };
        let seq = next_wal.seq;
        let old = core::mem::replace(&mut self.wal, next_wal);
        if self.durable_lsn < self.last_lsn {
            self.wal_unsynced = Some((old.file, self.last_lsn));
        }
        let fresh = Memtable::new(self.memtable.hasher());
        let memtable = core::mem::replace(&mut self.memtable, fresh);
        let memtable = Arc::new(memtable);
        let id = self.next_job_id();
        let table = self.next_table_id;
        self.next_table_id += 1;
        self.frozen =
            Some(Frozen { job: id, memtable: Arc::clone(&memtable), last_lsn: self.last_lsn, wal_next: seq });
        Ok(self.job(id, Work::Flush { memtable, table }))
    }

    fn begin_compaction(&mut self) -> Result<Option<Job>, MaintainError> {
        match compaction::choose(&self.manifest, &self.config) {
            Choice::Nothing => {
                self.compaction_due = false;
                Ok(None)
            }
            Choice::Move { table, from } => {
                self.move_down(table, from)?;
                Ok(None)
            }
            Choice::Merge { from, to, inputs, drop_tombstones } => {
                debug_assert!(from < to);
                let tables: Vec<Arc<Table>> =
                    inputs.iter().filter_map(|id| self.tables.get(id)).map(Arc::clone).collect();
                assert_eq!(tables.len(), inputs.len(), "compaction inputs are open tables");
                let id = self.next_job_id();
                let first_table = self.next_table_id;
                self.next_table_id += COMPACTION_IDS;
                self.compacting = Some(Compacting { id, inputs, to });
                let work = Work::Compact { inputs: tables, first_table, drop_tombstones };
                Ok(Some(self.job(id, work)))
            }
        }
    }

    fn job(&self, id: JobId, work: Work) -> Job {
        Job { id, work, config: Arc::new(self.config.clone()), release: Default::default() }
    }

    fn next_job_id(&mut self) -> JobId {
        self.job_next += 1;
        JobId(self.job_next)
    }

    /// Relinks a table one level down: a manifest change, no job.
    fn move_down(&mut self, table: u64, from: usize) -> Result<(), MaintainError> {
        let mut manifest = self.manifest.clone();
        let deeper = from + 1 < manifest.levels.len();
        let upper = manifest.levels.get_mut(from).filter(|_| deeper);
        let found =
            upper.and_then(|upper| upper.iter().position(|meta| meta.id == table).map(|at| upper.remove(at)));
        let Some(meta) = found else {
            // The policy named a table that is not there: wait for the tree
            // to change rather than being asked again at once.
            self.compaction_due = false;
            return Ok(());
        };
        insert_sorted(&mut manifest, from + 1, meta);
        self.install(manifest, Vec::new(), &[]);
        self.counters.compactions += 1;
        Ok(())
    }

    /// Installs what a job wrote: a short step, a manifest store at most.
    /// A job whose work failed leaves the tree as it was: a read that
    /// failed a checksum waits for the tree to change before compacting
    /// again; a disk failure poisons the engine.
    pub fn finish_job(&mut self, done: JobDone) -> Result<JobKind, MaintainError> {
        self.counters.corruption_detected += done.corruption_detected;
        if done.outcome.is_ok() {
            self.counters.tombstones_dropped += done.tombstones_dropped;
        }
        let kind = if self.frozen.as_ref().is_some_and(|frozen| frozen.job == done.id) {
            JobKind::Flush
        } else if self.compacting.as_ref().is_some_and(|compacting| compacting.id == done.id) {
            JobKind::Compaction
        } else if self.removing == Some(done.id) {
            self.removing = None;
            return Ok(JobKind::Removal);
        } else if let Some((_, spare)) = self.preparing.filter(|(id, _)| *id == done.id) {
            self.preparing = None;
            self.outcome_of_writing(done.outcome)?;
            if spare.seq == self.wal.seq + 1 {
                self.wal_spare = Some(spare);
            } else {
                // The log rotated past it meanwhile: it holds nothing.
                self.obsolete.push(wal::file_name(spare.seq));
            }
            return Ok(JobKind::Log);
        } else if let Some((_, version)) = self.storing.filter(|(id, _)| *id == done.id) {
            self.storing = None;
            self.outcome_of_writing(done.outcome)?;
            self.stored(version);
            return Ok(JobKind::Manifest);
        } else {
            panic!("finish_job for a job not in flight: {:?}", done.id);
        };
        // A memtable whose flush failed stays frozen and readable: its
        // records are in the synced log, and reads must still see them.
        let outputs = match done.outcome {
            _ if self.poisoned => {
                // The engine no longer writes; its state is whatever recovery makes of the disk.
                self.compacting.take_if(|_| kind == JobKind::Compaction);
                return Err(MaintainError::Poisoned);
            }
            Ok(outputs) => outputs,
            Err(JobError::Disk(error)) => {
                self.compacting.take_if(|_| kind == JobKind::Compaction);
                return Err(self.poison(error));
            }
            Err(JobError::Read(error)) => {
                self.compacting = None;
                // Retrying would read the same bad block; wait for the tree to change.
                self.compaction_due = false;
                return Err(MaintainError::Corrupt(error));
            }
        };
        match kind {
            JobKind::Flush => self.install_flush(outputs)?,
            JobKind::Compaction => self.install_compaction(outputs)?,
            JobKind::Removal | JobKind::Manifest | JobKind::Log => {}
        }
        Ok(kind)
    }

    /// The outcome of a job that only writes (a manifest store, a spare
    /// log file): a failure to write poisons, as any failed write does.
    fn outcome_of_writing<T>(&mut self, outcome: Result<T, JobError>) -> Result<(), MaintainError> {
        match outcome {
            _ if self.poisoned => Err(MaintainError::Poisoned),
            Ok(_) => Ok(()),
            Err(JobError::Disk(error)) => Err(self.poison(error)),
            Err(JobError::Read(error)) => Err(MaintainError::Corrupt(error)),
        }
    }

    fn install_flush(&mut self, outputs: Vec<(TableMeta, Table)>) -> Result<(), MaintainError> {
        let Some(frozen) = self.frozen.as_ref() else { return Ok(()) };
        let mut manifest = self.manifest.clone();
        manifest.wal_first = frozen.wal_next;
        manifest.flushed_lsn = frozen.last_lsn.0;
        manifest.next_table_id = self.next_table_id;
        let mut added = Vec::new();
        for (meta, table) in outputs {
            if let Some(level0) = manifest.levels.first_mut() {
                level0.insert(0, meta);
            }
            added.push(table);
        }
        self.install(manifest, added, &[]);
        let Some(frozen) = self.frozen.take() else { return Ok(()) };
        self.released.memtables.push(frozen.memtable);
        let version = self.manifest_version;
        self.after_store.push(AfterStore::Flushed {
            version,
            lsn: frozen.last_lsn,
            wal_first: frozen.wal_next,
        });
        self.counters.flushes += 1;
        Ok(())
    }

    fn install_compaction(&mut self, outputs: Vec<(TableMeta, Table)>) -> Result<(), MaintainError> {
        let Some(compacting) = self.compacting.take() else { return Ok(()) };
        let mut manifest = self.manifest.clone();
        for level in &mut manifest.levels {
            level.retain(|meta| !compacting.inputs.contains(&meta.id));
        }
        manifest.next_table_id = self.next_table_id;
        let mut added = Vec::new();
        for (meta, table) in outputs {
            insert_sorted(&mut manifest, compacting.to, meta);
            added.push(table);
        }
        self.install(manifest, added, &compacting.inputs);
        let inputs = compacting.inputs.iter().map(|id| super::sstable::file_name(*id)).collect();
        self.after_store.push(AfterStore::Compacted { version: self.manifest_version, inputs });
        self.counters.compactions += 1;
        Ok(())
    }

    /// Runs a job here and now, then stores the manifest and removes what
    /// it no longer names: for owners without an event loop.
    fn run_inline(&mut self, job: Job) -> Result<JobKind, MaintainError> {
        let done = job.run(&*self.disk);
        let kind = self.finish_job(done)?;
        self.store_manifest_inline()?;
        if self.removing.is_none() && !self.obsolete.is_empty() {
            self.remove_obsolete_inline()?;
        }
        Ok(kind)
    }

    /// Stores a changed manifest here and now, unless a store job is in
    /// flight (its owner then stores the newest version after it).
    fn store_manifest_inline(&mut self) -> Result<(), MaintainError> {
        if !self.store_due() {
            return Ok(());
        }
        let store = self.begin_store();
        let done = store.run(&*self.disk);
        self.finish_job(done).map(|_| ())
    }

    fn remove_obsolete_inline(&mut self) -> Result<(), MaintainError> {
        let removal = self.begin_removal();
        let done = removal.run(&*self.disk);
        self.finish_job(done).map(|_| ())
    }

    /// Flushes a full memtable and runs at most one compaction step, inline.
    pub fn maintain(&mut self) -> Result<MaintenanceReport, MaintainError> {
        if self.poisoned {
            return Err(MaintainError::Poisoned);
        }
        let mut report = MaintenanceReport::default();
        if self.flush_due() && self.frozen.is_none() {
            report.flushed = self.flush()?;
        }
        if self.spare_due() {
            let prepare = self.begin_prepare();
            let done = prepare.run(&*self.disk);
            self.finish_job(done)?;
        }
        if self.compaction_due {
            report.compacted = self.compact_step()?;
        }
        self.store_manifest_inline()?;
        if self.removing.is_none() && !self.obsolete.is_empty() {
            self.remove_obsolete_inline()?;
        }
        Ok(report)
    }

    /// Writes the memtable to a level-0 table inline and starts a new WAL
    /// file. Returns false if the memtable was empty, or a flush job is
    /// already in flight. A disk error poisons the engine.
    pub fn flush(&mut self) -> Result<bool, MaintainError> {
        if self.poisoned {
            return Err(MaintainError::Poisoned);
        }
        if self.memtable.is_empty() || self.frozen.is_some() {
            return Ok(false);
        }
        let job = self.begin_flush()?;
        self.run_inline(job)?;
        Ok(true)
    }

    /// Runs the compaction step the policy chooses, if any, inline; false
    /// when there is none or one is already in flight.
    pub fn compact_step(&mut self) -> Result<bool, MaintainError> {
        if self.poisoned {
            return Err(MaintainError::Poisoned);
        }
        if self.compacting.is_some() {
            return Ok(false);
        }
        let compactions = self.counters.compactions;
        if let Some(job) = self.begin_compaction()? {
            self.run_inline(job)?;
        }
        // A move down a level changed the manifest without a job.
        self.store_manifest_inline()?;
        Ok(self.counters.compactions > compactions)
    }

    /// Writes the memtable (if it holds anything) to a level-0 table and
    /// installs a manifest in which the log starts at WAL file `wal_first`
    /// and every write so far is in a table; the memtable is empty after.
    /// Inline: only opening, which settles what it replayed, uses it.
    pub(super) fn write_memtable(&mut self, wal_first: u64) -> Result<(), DiskError> {
        let mut manifest = self.manifest.clone();
        manifest.wal_first = wal_first;
        manifest.flushed_lsn = self.last_lsn.0;
        let mut added = Vec::new();
        if !self.memtable.is_empty() {
            let id = self.next_table_id;
            self.next_table_id += 1;
            manifest.next_table_id = self.next_table_id;
            if let Some((meta, table)) = write_table(&*self.disk, &self.config, &self.memtable, id)? {
                if let Some(level0) = manifest.levels.first_mut() {
                    level0.insert(0, meta);
                }
                added.push(table);
            }
        }
        // The manifest's directory sync also makes the table and the new WAL durable.
        self.install(manifest, added, &[]);
        // Opening has no job in flight: store at once.
        self.manifest.store(&*self.disk)?;
        self.stored(self.manifest_version);
        self.memtable = Memtable::new(self.memtable.hasher());
        self.durable_lsn = self.last_lsn;
        self.appended_lsn = self.last_lsn;
        Ok(())
    }

    /// Removes WAL files older than `seq`; one with a sync in flight waits
    /// for it. A file a failed listing misses is removed at recovery.
    fn remove_wals_before(&mut self, seq: u64) {
        let mut names = self.disk.list().unwrap_or_default();
        names.retain(|name| wal::parse_file_name(name).is_some_and(|old| old < seq));
        for name in names {
            if self.sync_in_flight.as_ref().is_some_and(|request| request.file == name) {
                self.wal_retired.push(name);
            } else {
                self.obsolete.push(name);
            }
        }
    }

    /// Makes `manifest` the engine's and swaps the open tables to match it,
    /// in memory; a store job makes it what a crash recovers.
    fn install(&mut self, manifest: Manifest, added: Vec<Table>, removed: &[u64]) {
        self.manifest_version += 1;
        for table in added {
            self.tables.insert(table.id, Arc::new(table));
        }
        for id in removed {
            // Freeing a table's index (an entry per block) takes a while for
            // large tables: the next manifest store job does it.
            if let Some(table) = self.tables.remove(id) {
                self.released.tables.push(table);
            }
        }
        // The cache keeps a removed table's blocks until they age out:
        // table ids are never reused, so nothing reads them again, and
        // dropping them here meant a pass over the whole cache on the
        // owner's loop (20–50 ms after large compactions).
        self.manifest = manifest;
        self.compaction_due = compaction::choose(&self.manifest, &self.config) != Choice::Nothing;
        assert_eq!(self.tables.len(), self.manifest.tables().count(), "open tables match the manifest");
    }

    fn poison(&mut self, error: DiskError) -> MaintainError {
        self.poisoned = true;
        MaintainError::Disk(error)
    }
}

/// Inserts a table into a sorted level (1 and deeper).
fn insert_sorted(manifest: &mut Manifest, level: usize, meta: TableMeta) {
    if let Some(tables) = manifest.levels.get_mut(level) {
        let at = tables.partition_point(|table| table.first_key < meta.first_key);
        tables.insert(at, meta);
    }
}
