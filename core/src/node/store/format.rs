//! The layout version of a data directory, and the migration from format 1.
//!
//! Format 1 had no version key and stored each record under `01 | client
//! key`. Opening such a directory moves every record to its format 2 key
//! (`super::layout`), then writes the version key. Each step writes the new
//! key before it deletes the old one, and the version key comes last, all
//! through the one log, so a crash anywhere leaves a prefix of those
//! writes: every record is under its old key, its new key, or both (then
//! with the same bytes), and without the version key the next open
//! migrates again what is left. A record already under its new key is kept:
//! it is the same bytes, or newer (the node writes only new keys).
//!
//! A directory whose version is newer than this build's is refused before
//! anything is written to it.

use std::ops::Bound;

use super::META_READS_MAX;
use super::layout::{
    FORMAT_1_RECORD_PREFIX, FORMAT_KEY, POSITION_BYTES, STORAGE_FORMAT, decode_record_key, encode_record_key,
};
use crate::disk::Disk;
use crate::lsm::{Engine, EngineConfig, MaintainError, OpenError, Pair, ReadError, WriteError};
use crate::ring::PlacedKey;

/// Format 1 records moved per step, at most, between which the memtable is
/// flushed when full: a large directory migrates in bounded memory.
const CHUNK_RECORDS_MAX: usize = 4096;
const CHUNK_BYTES_MAX: usize = 16 << 20;

/// What opening found about the directory's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// The version key says this build's format.
    Current,
    /// No version key: a directory of format 1, or a new one.
    Format1,
    /// The version key is stored in a table block that no longer reads. A
    /// lookup fails only on a table whose keys span the version key's, and
    /// only format 2 and later store a key that low, so this is format 2
    /// (a newer build's directory with such damage is beyond telling).
    VersionUnreadable,
}

/// What opening a directory of an older layout did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The layout found.
    pub from: u32,
    /// Records moved to their new keys.
    pub records: u64,
}

/// Reads the directory's layout version; a newer one than this build's is
/// refused.
pub(super) fn read(engine: &mut Engine) -> Result<Layout, OpenError> {
    for _ in 0..META_READS_MAX {
        match engine.get(FORMAT_KEY) {
            Ok(None) => return Ok(Layout::Format1),
            Ok(Some(bytes)) => return parse(&bytes),
            Err(_) => {}
        }
    }
    Ok(Layout::VersionUnreadable)
}

fn parse(bytes: &[u8]) -> Result<Layout, OpenError> {
    let Ok(bytes) = <[u8; 4]>::try_from(bytes) else {
        return Err(OpenError::Corrupt {
            file: "storage format".into(),
            reason: format!("the version is {} bytes long, not 4", bytes.len()),
        });
    };
    match u32::from_le_bytes(bytes) {
        STORAGE_FORMAT => Ok(Layout::Current),
        1 => Ok(Layout::Format1),
        found => Err(OpenError::Unsupported {
            file: "data directory".into(),
            reason: format!(
                "it holds storage format {found}; this build reads format {STORAGE_FORMAT} (and migrates format 1). \
                 Run the release that wrote it"
            ),
        }),
    }
}

/// Brings the directory to the current layout: migrates format 1 records
/// and writes the version key, which is durable with the node's next sync
/// (a crash before it only repeats the migration, which finds what is left).
pub(super) fn settle(engine: &mut Engine, layout: Layout) -> Result<Option<Migration>, OpenError> {
    let migration = match layout {
        Layout::Current => return Ok(None),
        Layout::Format1 => Some(Migration { from: 1, records: migrate(engine)? }),
        Layout::VersionUnreadable => None,
    };
    engine.put(FORMAT_KEY, &STORAGE_FORMAT.to_le_bytes()).map_err(write_failed)?;
    Ok(migration.filter(|migration| migration.records > 0))
}

/// Moves every format 1 record to its format 2 key; returns how many it moved.
fn migrate(engine: &mut Engine) -> Result<u64, OpenError> {
    let (mut after, mut new_key, mut moved) = (None::<Vec<u8>>, Vec::new(), 0);
    loop {
        let chunk = read_chunk(engine, after.as_deref())?;
        for (old_key, value) in &chunk {
            let key = old_key.get(1..).unwrap_or_default();
            encode_record_key(PlacedKey::new(key), &mut new_key);
            if !stored(engine, &new_key) {
                engine.put(&new_key, value).map_err(write_failed)?;
                moved += 1;
            }
            engine.delete(old_key).map_err(write_failed)?;
        }
        let Some((last, _)) = chunk.into_iter().last() else { return Ok(moved) };
        after = Some(last);
        while engine.needs_maintenance() {
            engine.maintain().map_err(maintain_failed)?;
        }
    }
}

/// How many records of format 1 the engine holds: none once a migration
/// has finished, unless damage to the log brought back one it had deleted.
pub(super) fn format_1_records(engine: &mut Engine) -> Result<usize, ReadError> {
    Ok(engine.scan_prefix(&[FORMAT_1_RECORD_PREFIX], usize::MAX)?.len())
}

/// Rewrites the data directory on `disk` as the release of format 1 would
/// have left it: the node's metadata, and each record under `01 | client
/// key` with the same bytes, with no version key. Opening it then migrates
/// it, as for a node upgraded from that release: the simulator uses this
/// to upgrade nodes at a restart. `config` is the node's engine
/// configuration.
///
/// Everything is read before anything is written. If opening finds synced
/// records lost (which the node must see for itself, to take a new
/// incarnation) or a read fails, the directory is left as any open leaves
/// it and the error returned. Returns the records the directory holds.
pub fn rewrite_as_format_1<D: Disk + Clone + 'static>(
    disk: &D,
    config: &EngineConfig,
) -> Result<u64, OpenError> {
    let current = EngineConfig {
        key_bytes_max: config.key_bytes_max.saturating_add(POSITION_BYTES),
        refuse_lost_records: true,
        ..config.clone()
    };
    let failed = |reason: String| OpenError::Corrupt { file: "data directory".into(), reason };
    let mut engine = Engine::open(Box::new(disk.clone()), current)?;
    let pairs = engine.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX).map_err(|error| match error {
        ReadError::Disk(error) => OpenError::Disk(error),
        error => failed(error.to_string()),
    })?;
    drop(engine);
    let mut records = 0;
    let mut format_1 = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        if key == FORMAT_KEY {
            continue;
        }
        match decode_record_key(&key) {
            Some((_, client_key)) => {
                let mut old_key = vec![FORMAT_1_RECORD_PREFIX];
                old_key.extend_from_slice(client_key);
                format_1.push((old_key, value));
                records += 1;
            }
            None => format_1.push((key, value)),
        }
    }
    for name in disk.list()? {
        disk.remove(&name)?;
    }
    disk.sync_dir()?;
    let mut engine = Engine::open(Box::new(disk.clone()), config.clone())?;
    for (key, value) in &format_1 {
        engine.put(key, value).map_err(|error| failed(error.to_string()))?;
        while engine.needs_maintenance() {
            engine.maintain().map_err(|error| failed(error.to_string()))?;
        }
    }
    engine.sync_now()?;
    Ok(records)
}

/// Up to a chunk of format 1 records, from after `after` on. A read that
/// fails is tried again (a read corrupted in flight does not repeat); one
/// that keeps failing refuses the open: a record left behind would be lost.
fn read_chunk(engine: &mut Engine, after: Option<&[u8]>) -> Result<Vec<Pair>, OpenError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match read_chunk_once(engine, after) {
            Ok(chunk) => return Ok(chunk),
            Err(error) if attempts >= META_READS_MAX => return Err(read_failed(error)),
            Err(_) => {}
        }
    }
}

fn read_chunk_once(engine: &mut Engine, after: Option<&[u8]>) -> Result<Vec<Pair>, ReadError> {
    let (prefix, end) = ([FORMAT_1_RECORD_PREFIX], [FORMAT_1_RECORD_PREFIX + 1]);
    let start = after.map_or(Bound::Included(&prefix[..]), Bound::Excluded);
    let (mut chunk, mut bytes) = (Vec::new(), 0);
    for pair in engine.iter(start, Bound::Excluded(&end[..])) {
        let pair = pair?;
        bytes += pair.0.len() + pair.1.len();
        chunk.push(pair);
        if chunk.len() >= CHUNK_RECORDS_MAX || bytes >= CHUNK_BYTES_MAX {
            break;
        }
    }
    Ok(chunk)
}

/// Whether a record is stored under `key`. One that keeps failing to read
/// counts as absent: the format 1 copy is then the one worth keeping.
fn stored(engine: &mut Engine, key: &[u8]) -> bool {
    for _ in 0..META_READS_MAX {
        if let Ok(found) = engine.get_borrowed(key) {
            return found.is_some();
        }
    }
    false
}

fn read_failed(error: ReadError) -> OpenError {
    let reason = format!("they could not be read to migrate them to format {STORAGE_FORMAT}: {error}");
    match error {
        ReadError::Disk(error) => OpenError::Disk(error),
        ReadError::Corrupt { .. } => {
            OpenError::Corrupt { file: "records of storage format 1".into(), reason }
        }
    }
}

fn write_failed(error: WriteError) -> OpenError {
    match error {
        WriteError::Disk(error) => OpenError::Disk(error),
        error => OpenError::Unsupported {
            file: "records of storage format 1".into(),
            reason: format!("a record could not be migrated to format {STORAGE_FORMAT}: {error}"),
        },
    }
}

fn maintain_failed(error: MaintainError) -> OpenError {
    match error {
        MaintainError::Disk(error) => OpenError::Disk(error),
        MaintainError::Corrupt(error) => read_failed(error),
        MaintainError::Poisoned => write_failed(WriteError::Poisoned),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::SeedableRng;

    use super::super::layout::META_KEY;
    use super::super::{Meta, RECORD_FORMAT, Record, Store};
    use super::*;
    use crate::NodeId;
    use crate::disk::{CrashMode, Disk, DiskError, MemDisk};
    use crate::lsm::EngineConfig;
    use crate::node::store::LocalEpoch;
    use crate::version::{Actor, CausalContext, Object, Value};

    const INCARNATION: u32 = 0x5eed;

    /// Small tables and memtables, so that building and migrating a directory flushes.
    fn config() -> EngineConfig {
        EngineConfig {
            memtable_bytes_max: 4096,
            wal_buffer_bytes_max: 512,
            wal_preallocate_bytes: 4096,
            block_bytes: 256,
            l0_tables_max: 2,
            level_base_bytes: 16 << 10,
            table_bytes_target: 8 << 10,
            key_bytes_max: 64,
            ..EngineConfig::default()
        }
    }

    fn key(i: u32) -> Vec<u8> {
        format!("key-{i:03}").into_bytes()
    }

    fn record(i: u32) -> Record {
        let mut object = Object::new();
        let actor = Actor { node: NodeId(1), incarnation: INCARNATION, epoch: u64::from(i) };
        object.write(actor, &CausalContext::new(), Value::Live(format!("value-{i}").into_bytes()), 7);
        Record { object, local_epoch: Some(LocalEpoch { incarnation: INCARNATION, epoch: u64::from(i) }) }
    }

    /// A directory as the format 1 store left it: metadata, records under
    /// `01 | key` spread over tables and the log, one removed, all synced.
    /// Returns the keys it holds.
    fn format_1_directory(disk: &MemDisk, count: u32) -> Vec<(Vec<u8>, Record)> {
        let mut engine = Engine::open(Box::new(disk.clone()), config()).unwrap();
        let meta = Meta { incarnation: INCARNATION, epoch_lease_end: 5000 };
        engine.put(META_KEY, &postcard::to_allocvec(&meta).unwrap()).unwrap();
        let mut held = Vec::new();
        for i in 0..count {
            let mut value = vec![RECORD_FORMAT];
            value.extend(postcard::to_allocvec(&record(i)).unwrap());
            let mut old_key = vec![FORMAT_1_RECORD_PREFIX];
            old_key.extend(key(i));
            engine.put(&old_key, &value).unwrap();
            if i % 17 == 5 {
                engine.delete(&old_key).unwrap();
            } else {
                held.push((key(i), record(i)));
            }
            while engine.needs_maintenance() {
                engine.maintain().unwrap();
            }
        }
        // The longest key format 1 took: its new key is 8 bytes longer.
        let long = vec![b'x'; config().key_bytes_max as usize - 1];
        let mut old_key = vec![FORMAT_1_RECORD_PREFIX];
        old_key.extend(&long);
        let mut value = vec![RECORD_FORMAT];
        value.extend(postcard::to_allocvec(&record(count)).unwrap());
        engine.put(&old_key, &value).unwrap();
        held.push((long, record(count)));
        engine.sync_now().unwrap();
        assert!(
            engine.stats().flushes > 0 && engine.stats().memtable_entries > 0,
            "tables and log both hold records"
        );
        held
    }

    fn open(disk: Box<dyn Disk>) -> Result<Store, OpenError> {
        Store::open(disk, config(), &mut ChaCha8Rng::seed_from_u64(3))
    }

    /// Every record held reads back, and nothing is left under a format 1 key.
    fn assert_migrated(store: &mut Store, held: &[(Vec<u8>, Record)]) {
        for (key, record) in held {
            let found = store.read(PlacedKey::new(key)).unwrap();
            assert_eq!(found.as_ref(), Some(record), "{:?}", String::from_utf8_lossy(key));
        }
        let prefix = [FORMAT_1_RECORD_PREFIX];
        assert_eq!(
            store.engine_mut().scan_prefix(&prefix, usize::MAX).unwrap(),
            vec![],
            "no format 1 record left"
        );
        assert_eq!(store.engine_mut().get(FORMAT_KEY).unwrap(), Some(STORAGE_FORMAT.to_le_bytes().to_vec()));
        let whole = crate::ring::PositionRange { start: 0, end: 0 };
        let limit = super::super::ScanLimit { records_max: usize::MAX, bytes_max: u64::MAX };
        assert_eq!(store.scan_range(whole, None, limit).unwrap().records.len(), held.len(), "nothing else");
    }

    #[test]
    fn a_format_1_directory_is_migrated_on_open() {
        let disk = MemDisk::new(1);
        let held = format_1_directory(&disk, 120);
        let mut store = open(Box::new(disk.clone())).unwrap();
        assert_eq!(store.migration(), Some(Migration { from: 1, records: held.len() as u64 }));
        assert_eq!(store.incarnation(), INCARNATION, "migrating is not a new identity");
        assert_migrated(&mut store, &held);
        // Durable with the node's next sync; then an open finds format 2.
        store.engine_mut().sync_now().unwrap();
        drop(store);
        disk.crash(CrashMode::DropUnsynced);
        let mut store = open(Box::new(disk)).unwrap();
        assert_eq!(store.migration(), None);
        assert_migrated(&mut store, &held);
    }

    #[test]
    fn a_new_directory_records_its_format() {
        let disk = MemDisk::new(2);
        let mut store = open(Box::new(disk.clone())).unwrap();
        assert_eq!(store.migration(), None, "nothing to move");
        assert_migrated(&mut store, &[]);
    }

    #[test]
    fn a_newer_format_is_refused_untouched() {
        let disk = MemDisk::new(3);
        let mut engine = Engine::open(Box::new(disk.clone()), config()).unwrap();
        engine.put(FORMAT_KEY, &3u32.to_le_bytes()).unwrap();
        engine.sync_now().unwrap();
        drop(engine);
        let error = open(Box::new(disk.clone())).unwrap_err().to_string();
        assert!(error.contains("storage format 3") && error.contains("reads format 2"), "{error}");
        // The engine settled its log as any open does; the store wrote nothing.
        let mut engine = Engine::open(Box::new(disk), config()).unwrap();
        let held = engine.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX).unwrap();
        assert_eq!(held, vec![(FORMAT_KEY.to_vec(), 3u32.to_le_bytes().to_vec())]);
    }

    #[test]
    fn a_directory_rewritten_as_format_1_migrates_back() {
        let disk = MemDisk::new(5);
        let mut store = open(Box::new(disk.clone())).unwrap();
        let incarnation = store.incarnation();
        let mut held = Vec::new();
        for i in 0..90 {
            store.write(PlacedKey::new(&key(i)), &record(i)).unwrap();
            if i % 13 == 4 {
                store.remove(PlacedKey::new(&key(i))).unwrap();
            } else {
                held.push((key(i), record(i)));
            }
            while store.engine().needs_maintenance() {
                store.engine_mut().maintain().unwrap();
            }
        }
        store.engine_mut().sync_now().unwrap();
        assert!(store.engine().stats().flushes > 0, "tables and log both hold records");
        drop(store);
        assert_eq!(rewrite_as_format_1(&disk, &config()).unwrap(), held.len() as u64);
        let mut engine = Engine::open(Box::new(disk.clone()), config()).unwrap();
        assert_eq!(engine.get(FORMAT_KEY).unwrap(), None, "format 1 had no version key");
        let old = engine.scan_prefix(&[FORMAT_1_RECORD_PREFIX], usize::MAX).unwrap();
        assert_eq!(old.len(), held.len());
        drop(engine);
        let mut store = open(Box::new(disk)).unwrap();
        assert_eq!(store.migration(), Some(Migration { from: 1, records: held.len() as u64 }));
        assert_eq!(store.incarnation(), incarnation, "the same node, upgraded");
        assert_eq!(store.engine().stats().tombstones_written, held.len() as u64, "each old key is deleted");
        assert_eq!(store.format_1_records(), Ok(0));
        assert_migrated(&mut store, &held);
    }

    #[test]
    fn a_directory_that_lost_records_is_left_for_the_node_to_find() {
        let disk = MemDisk::new(6);
        let mut store = open(Box::new(disk.clone())).unwrap();
        let incarnation = store.incarnation();
        for i in 0..5 {
            store.write(PlacedKey::new(&key(i)), &record(i)).unwrap();
        }
        store.engine_mut().sync_now().unwrap();
        drop(store);
        let wal = disk.list().unwrap().into_iter().filter(|name| name.starts_with("wal")).max().unwrap();
        let bytes = disk.read_at(&wal, 0, disk.len(&wal).unwrap()).unwrap();
        let middle = bytes.iter().rposition(|&byte| byte != 0).unwrap() / 2;
        disk.corrupt_at(&wal, middle as u64, 1).unwrap();
        let refused = rewrite_as_format_1(&disk, &config());
        assert!(matches!(refused, Err(OpenError::RecordsLost(_))), "{refused:?}");
        let store = open(Box::new(disk)).unwrap();
        assert_ne!(store.incarnation(), incarnation, "the node still sees the loss");
        assert_eq!(store.migration(), None);
    }

    /// A disk whose writes start failing after `budget` of them, as if the
    /// process died there; reads go on.
    #[derive(Debug, Clone)]
    struct Dying {
        disk: MemDisk,
        budget: Arc<AtomicU64>,
    }

    impl Dying {
        fn spend(&self, name: &str) -> Result<(), DiskError> {
            let spent =
                self.budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1));
            spent.map(|_| ()).map_err(|_| DiskError::Io { name: name.into(), message: "died".into() })
        }
    }

    impl Disk for Dying {
        fn list(&self) -> Result<Vec<String>, DiskError> {
            self.disk.list()
        }
        fn create(&self, name: &str) -> Result<(), DiskError> {
            self.spend(name)?;
            self.disk.create(name)
        }
        fn append(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
            self.spend(name)?;
            self.disk.append(name, bytes)
        }
        fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<(), DiskError> {
            self.spend(name)?;
            self.disk.write_at(name, offset, bytes)
        }
        fn read_at(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, DiskError> {
            self.disk.read_at(name, offset, len)
        }
        fn len(&self, name: &str) -> Result<u64, DiskError> {
            self.disk.len(name)
        }
        fn sync(&self, name: &str) -> Result<(), DiskError> {
            self.spend(name)?;
            self.disk.sync(name)
        }
        fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
            self.spend(from)?;
            self.disk.rename(from, to)
        }
        fn remove(&self, name: &str) -> Result<(), DiskError> {
            self.spend(name)?;
            self.disk.remove(name)
        }
        fn sync_dir(&self) -> Result<(), DiskError> {
            self.spend("directory")?;
            self.disk.sync_dir()
        }
    }

    /// A crash at every point of a migration, losing unsynced bytes or
    /// keeping a torn part of them: the next open finishes it, losing nothing.
    #[test]
    fn a_crash_anywhere_in_a_migration_loses_nothing() {
        let count = 80;
        // How many disk writes a whole migrating open makes.
        let disk = MemDisk::new(4);
        format_1_directory(&disk, count);
        let budget = Arc::new(AtomicU64::new(u64::MAX));
        open(Box::new(Dying { disk, budget: budget.clone() })).unwrap();
        let writes = u64::MAX - budget.load(Ordering::SeqCst);
        assert!(writes > 20, "the migration flushes: {writes} disk writes");
        let mut refused = 0;
        for cut in 0..writes {
            let disk = MemDisk::new(4);
            let held = format_1_directory(&disk, count);
            let dying = Dying { disk: disk.clone(), budget: Arc::new(AtomicU64::new(cut)) };
            // Removing obsolete files may fail without failing the open: they are removed later.
            refused += usize::from(open(Box::new(dying)).is_err());
            let mode = if cut % 2 == 0 { CrashMode::DropUnsynced } else { CrashMode::TornTail };
            disk.crash(mode);
            let mut store = open(Box::new(disk.clone())).unwrap();
            assert_eq!(store.incarnation(), INCARNATION, "nothing synced was lost at {cut}");
            assert_migrated(&mut store, &held);
        }
        assert!(refused as u64 > writes * 3 / 4, "most cuts stop the open: {refused} of {writes}");
    }
}
