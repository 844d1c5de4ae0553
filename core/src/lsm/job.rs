//! Long storage work, done off the owner's event loop.
//!
//! Writing a memtable to a table and merging tables in a compaction take
//! time in proportion to their bytes: seconds, for hundreds of megabytes. The
//! engine does not run them inside a call. It hands out a [`Job`] that holds
//! everything the work needs (a frozen memtable, or shared handles on the
//! input tables) and touches nothing but new files of its own; the owner
//! runs it wherever it likes with [`Job::run`] and gives the [`JobDone`]
//! back to [`super::Engine::finish_job`], which installs the result in
//! memory, without touching the disk. Meanwhile the engine keeps serving:
//! the memtable being written stays readable until its table is installed,
//! and the inputs of a compaction until its outputs replace them.
//!
//! Storing the manifest that names the new tables is a job as well, and so
//! is removing the files it no longer names, which waits until that
//! manifest is stored: until then a crash recovers the old tree, whose
//! files are all still there.
//!
//! At most one job of each kind is in flight. That is enough for
//! correctness without locks: a flush only adds a table to level 0, newest
//! first, and a compaction only replaces its own inputs, so whichever
//! installs first, the other's edit still applies to the manifest it finds;
//! a manifest store writes a copy of the newest manifest.
//! Range scans for anti-entropy and streaming will be jobs of the same kind.

use std::ops::Bound;
use std::sync::Arc;

use super::cache::BlockCache;
use super::iter::Merge;
use super::manifest::{Manifest, TableMeta};
use super::memtable::Memtable;
use super::sstable::{self, Reads, Table, TableWriter};
use super::{EngineConfig, ReadError};
use crate::disk::{Disk, DiskError};

/// Table ids a compaction may use: far more than its outputs could ever
/// need (each is about `table_bytes_target`), so ids stay unique while a
/// flush allocates its own at the same time.
pub(super) const COMPACTION_IDS: u64 = 1 << 16;

/// Identifies a job among those of one engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

/// Work for the owner to run off its event loop, then hand back.
#[derive(Debug)]
pub struct Job {
    pub id: JobId,
    pub(super) work: Work,
    pub(super) config: Arc<EngineConfig>,
    /// Memory the engine no longer reads, freed where the job is dropped.
    pub(super) release: Released,
}

/// A flushed memtable or a compaction's input tables: freeing them (tens of
/// thousands of allocations for a full memtable or a level's worth of table
/// indexes) takes milliseconds the owner's loop should not spend.
#[derive(Debug, Default)]
pub(super) struct Released {
    pub memtables: Vec<Arc<Memtable>>,
    pub tables: Vec<Arc<Table>>,
}

/// One job is equal to itself only: an engine never hands out an id twice.
impl PartialEq for Job {
    fn eq(&self, other: &Job) -> bool {
        self.id == other.id
    }
}

#[derive(Debug)]
pub(super) enum Work {
    /// Write a frozen memtable to table `table`.
    Flush { memtable: Arc<Memtable>, table: u64 },
    /// Merge `inputs` (newest first) into new tables numbered from `first_table`.
    Compact { inputs: Vec<Arc<Table>>, first_table: u64, drop_tombstones: bool },
    /// Remove files no manifest names any more: compaction inputs, old logs.
    Remove { files: Vec<String> },
    /// Store the manifest: two fsyncs, each as slow as the disk is busy.
    StoreManifest { manifest: Box<Manifest> },
    /// Create WAL file `seq` ahead of need, `bytes` long, zeroed and synced,
    /// so the log rotates to it without writing or syncing anything.
    PrepareLog { seq: u64, bytes: u64 },
}

/// What the engine needs to know of the job that did the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    Flush,
    Compaction,
    /// Removing obsolete files: unlinking a large file can take a while too.
    Removal,
    /// Storing a new manifest: what the engine changed in memory becomes
    /// what a crash recovers.
    Manifest,
    /// Preparing the next WAL file.
    Log,
}

/// A job's result, for [`super::Engine::finish_job`].
#[derive(Debug)]
pub struct JobDone {
    pub id: JobId,
    pub(super) outcome: Result<Vec<(TableMeta, Table)>, JobError>,
    /// Reads that failed a checksum once and then read well.
    pub(super) corruption_detected: u64,
    /// Tombstones a compaction left out of its output.
    pub(super) tombstones_dropped: u64,
}

#[derive(Debug)]
pub(super) enum JobError {
    /// An input read corrupt twice: the tree stays as it was.
    Read(ReadError),
    /// Writing failed: the engine can no longer trust its disk.
    Disk(DiskError),
}

impl Job {
    pub fn kind(&self) -> JobKind {
        match self.work {
            Work::Flush { .. } => JobKind::Flush,
            Work::Compact { .. } => JobKind::Compaction,
            Work::Remove { .. } => JobKind::Removal,
            Work::StoreManifest { .. } => JobKind::Manifest,
            Work::PrepareLog { .. } => JobKind::Log,
        }
    }

    /// About how many bytes the job reads and writes: what it costs.
    pub fn bytes(&self) -> u64 {
        match &self.work {
            Work::Flush { memtable, .. } => memtable.bytes(),
            Work::Compact { inputs, .. } => inputs.iter().map(|table| table.file_bytes()).sum(),
            Work::PrepareLog { bytes, .. } => *bytes,
            Work::Remove { .. } | Work::StoreManifest { .. } => 0,
        }
    }

    /// Does the work on `disk`: only new table files are written, each
    /// synced, then the directory. What a failure or a crash leaves behind
    /// is not in the manifest; the job removes it, or recovery does.
    pub fn run(&self, disk: &dyn Disk) -> JobDone {
        let mut corruption_detected = 0;
        let mut tombstones_dropped = 0;
        let mut outputs = Vec::new();
        let result = match &self.work {
            Work::Flush { memtable, table } => write_table(disk, &self.config, memtable, *table)
                .map(|written| outputs.extend(written))
                .map_err(JobError::Disk),
            Work::Compact { inputs, first_table, drop_tombstones } => {
                let mut reads = Reads {
                    disk,
                    cache: &mut BlockCache::new(0),
                    corruption_detected: &mut corruption_detected,
                    fill_cache: false,
                };
                let runs = inputs.iter().map(|table| vec![Arc::clone(table)]).collect();
                let mut merge = Merge::new(&[], runs, Bound::Unbounded, Bound::Unbounded, false);
                let ids = *first_table..first_table + COMPACTION_IDS;
                let drop = drop_tombstones.then_some(&mut tombstones_dropped);
                merge_into(disk, &self.config, &mut merge, &mut reads, ids, drop, &mut outputs)
            }
            Work::Remove { files } => {
                // A file left behind is harmless: recovery removes tables the
                // manifest does not name and logs before its first one.
                for file in files {
                    let _ = disk.remove(file);
                }
                return JobDone {
                    id: self.id,
                    outcome: Ok(Vec::new()),
                    corruption_detected,
                    tombstones_dropped,
                };
            }
            Work::StoreManifest { manifest } => {
                let outcome = manifest.store(disk).map(|()| Vec::new()).map_err(JobError::Disk);
                return JobDone { id: self.id, outcome, corruption_detected, tombstones_dropped };
            }
            Work::PrepareLog { seq, bytes } => {
                let outcome = prepare_log(disk, *seq, *bytes).map(|()| Vec::new()).map_err(JobError::Disk);
                return JobDone { id: self.id, outcome, corruption_detected, tombstones_dropped };
            }
        };
        let result = result.and_then(|()| disk.sync_dir().map_err(JobError::Disk));
        if result.is_err() {
            for (meta, _) in &outputs {
                let _ = disk.remove(&sstable::file_name(meta.id));
            }
        }
        JobDone { id: self.id, outcome: result.map(|()| outputs), corruption_detected, tombstones_dropped }
    }
}

/// Creates WAL file `seq`: its header, then zeros up to `bytes`, synced
/// with its name. A file left half-written by a failure or a crash holds no
/// records; recovery removes it with the other old logs.
fn prepare_log(disk: &dyn Disk, seq: u64, bytes: u64) -> Result<(), DiskError> {
    const CHUNK: u64 = 1 << 20;
    let file = super::wal::file_name(seq);
    disk.create(&file)?;
    disk.append(&file, &super::wal::file_header())?;
    let mut left = bytes.saturating_sub(super::wal::FILE_HEADER_BYTES as u64);
    let zeros = vec![0; usize::try_from(left.min(CHUNK)).unwrap_or(0)];
    while left > 0 {
        let now = zeros.get(..usize::try_from(left).unwrap_or(usize::MAX).min(zeros.len())).unwrap_or(&zeros);
        disk.append(&file, now)?;
        left -= now.len() as u64;
    }
    disk.sync(&file)?;
    disk.sync_dir()
}

/// Writes `memtable` to table `id`, synced; `None` when it is empty.
pub(super) fn write_table(
    disk: &dyn Disk,
    config: &EngineConfig,
    memtable: &Memtable,
    id: u64,
) -> Result<Option<(TableMeta, Table)>, DiskError> {
    let mut writer = TableWriter::create(disk, id, config)?;
    for (key, value) in memtable.iter() {
        writer.add(disk, key, value)?;
    }
    writer.finish(disk)
}

/// Streams the merge into tables of about `table_bytes_target` each.
fn merge_into(
    disk: &dyn Disk,
    config: &EngineConfig,
    merge: &mut Merge<'_>,
    reads: &mut Reads<'_>,
    mut ids: std::ops::Range<u64>,
    // Counts the tombstones left out, when they may be.
    mut drop_tombstones: Option<&mut u64>,
    outputs: &mut Vec<(TableMeta, Table)>,
) -> Result<(), JobError> {
    let mut writer: Option<TableWriter> = None;
    while let Some(item) = merge.next(reads).map_err(JobError::Read)? {
        if let Some(dropped) = drop_tombstones.as_deref_mut().filter(|_| item.is_tombstone()) {
            *dropped += 1;
            continue;
        }
        let current = match &mut writer {
            Some(current) => current,
            None => {
                let id = ids.next().ok_or_else(|| {
                    JobError::Disk(DiskError::Io {
                        name: String::from("compaction"),
                        message: format!("more than {COMPACTION_IDS} output tables"),
                    })
                })?;
                writer.insert(TableWriter::create(disk, id, config).map_err(JobError::Disk)?)
            }
        };
        current.add_encoded(disk, &item.key, item.flags, &item.value).map_err(JobError::Disk)?;
        if current.bytes() >= config.table_bytes_target {
            if let Some(done) = writer.take() {
                outputs.extend(done.finish(disk).map_err(JobError::Disk)?);
            }
        }
    }
    if let Some(done) = writer.take() {
        outputs.extend(done.finish(disk).map_err(JobError::Disk)?);
    }
    Ok(())
}
