//! The node's records on top of the storage engine.
//!
//! The engine stores bytes; this layer gives them meaning. Keys live in
//! namespaces (a one-byte prefix): node metadata, and one record per client
//! key holding its [`Object`] plus what only this node knows about it — the
//! epoch in which this node issues dots for the key. Records are ordered by
//! the ring position of their key ([`layout`]), so a range of the ring is
//! one scan ([`scan`]); a directory of an older layout is migrated when it
//! is opened ([`format`]).

mod format;
mod hints;
mod layout;
mod scan;

use std::borrow::Cow;
use std::collections::VecDeque;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use self::layout::{META_KEY, POSITION_BYTES};
use crate::KeyedHasher;
use crate::disk::Disk;
use crate::lsm::{Engine, EngineConfig, EngineStats, Lsn, OpenError, ReadError, SyncPolicy, WriteError};
use crate::ring::PlacedKey;
use crate::version::Object;

pub use self::format::{Migration, rewrite_as_format_1};
pub use self::hints::{HintLimits, HintRefused};
pub use self::layout::{RECORD_KEY_HEADER_BYTES, STORAGE_FORMAT, encode_record_key};
pub use self::scan::{ScanChunk, ScanCursor, ScanLimit, ScannedRecord};

/// What the engine's key limit counts beyond the client's key: the
/// namespace prefix, as in format 1. The store raises the engine's limit by
/// the ring position's bytes, so client keys keep the limit they had and
/// every record of format 1 fits under its new key.
pub(super) const KEY_PREFIX_BYTES: u32 = RECORD_KEY_HEADER_BYTES - POSITION_BYTES;
/// The encoding of a record's value (not of the directory's layout).
const RECORD_FORMAT: u8 = 2;

/// Records of this format hold the object and an epoch that does not say
/// which incarnation allocated it: they read as records without one.
const RECORD_FORMAT_1: u8 = 1;

/// Epochs are reserved in blocks, one metadata write per block, so starting
/// a fresh epoch for a key is usually free. A crash skips the rest of the
/// block: epochs are never reused, gaps are harmless.
const EPOCH_LEASE: u64 = 1024;

/// A record buffer larger than this (a large value passed through) is
/// freed rather than kept for the next write.
const RECORD_BUFFER_KEPT_MAX: usize = 64 * 1024;

/// One client key's record on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub object: Object,
    /// The epoch in which this node issues dots for this key, set when this
    /// node first coordinates a write for it. It is valid because the record
    /// has existed continuously since: the record has seen every dot issued
    /// in that epoch. A record that is created afresh starts without one.
    pub local_epoch: Option<LocalEpoch>,
}

/// An epoch and the incarnation that allocated it. Only that incarnation
/// issues dots in it: a later one cannot know how far the earlier one's
/// leases went (damage to the log may have taken the last lease and left
/// records that name its epochs), so it starts a fresh epoch for the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEpoch {
    pub incarnation: u32,
    pub epoch: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    incarnation: u32,
    epoch_lease_end: u64,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("record for a key does not decode: {0}")]
    Malformed(String),
}

#[derive(Debug)]
pub struct Store {
    engine: Engine,
    meta: Meta,
    /// Why the stored metadata did not read, when it did not.
    metadata_damage: Option<String>,
    epoch_next: u64,
    /// Keys with writes not yet durable, and the Lsn of their last write.
    /// Only looked up, never iterated, so a hash map; its keys come from
    /// clients, so it hashes under the node's secret key.
    /// Kept only under the `always` policy: under `periodic` what waits,
    /// waits for the write-out of the whole buffered log.
    unsynced: hashbrown::HashMap<Vec<u8>, Lsn, KeyedHasher>,
    /// The same writes in Lsn order, to prune `unsynced` as syncs complete.
    unsynced_order: VecDeque<(Lsn, Vec<u8>)>,
    track_unsynced: bool,
    /// Reused for each record's engine key and encoding: no allocation per write.
    key_buffer: Vec<u8>,
    record_buffer: Vec<u8>,
    /// What opening did to bring an older layout up to date, if anything.
    migration: Option<Migration>,
    hints: hints::HintCounts,
}

impl Store {
    /// Opens the engine and this node's metadata; a disk without metadata
    /// is a new incarnation with a random identity. A directory of an older
    /// layout is migrated to the current one; one of a newer layout is
    /// refused before the store writes anything.
    pub fn open(disk: Box<dyn Disk>, config: EngineConfig, rng: &mut ChaCha8Rng) -> Result<Store, OpenError> {
        // From a stream of its own: the draws below stay what they were.
        let mut keys = rng.clone();
        keys.set_stream(HASH_KEY_STREAM);
        let hasher = KeyedHasher::new(keys.next_u64(), keys.next_u64());
        // The longest engine key is a hint's (`hints`), longer than a record's.
        let config = EngineConfig {
            key_bytes_max: config.key_bytes_max.saturating_add(hints::HINT_KEY_HEADER_BYTES),
            ..config
        };
        let mut engine = Engine::open_keyed(disk, config, hasher)?;
        let layout = format::read(&mut engine)?;
        // Metadata that no longer reads (a rotted table block) is as good as
        // none: the node comes back as a new actor, which is always safe.
        let mut metadata_damage = None;
        let mut stored = None;
        for _ in 0..META_READS_MAX {
            match engine.get(META_KEY) {
                Ok(bytes) => {
                    stored = bytes.and_then(|bytes| postcard::from_bytes::<Meta>(&bytes).ok());
                    metadata_damage = None;
                    break;
                }
                Err(error) => metadata_damage = Some(error.to_string()),
            }
        }
        // Without metadata, or with synced records lost to damage, this node
        // no longer knows every dot it issued: it becomes a new actor.
        // With periodic syncs a crash may have lost writes whose dots were
        // already seen by others: never trust the history to be complete.
        // A new incarnation counts its epochs from the start: records keep
        // the epochs of the old one, but name it (`LocalEpoch`).
        let periodic = matches!(engine.config().sync_policy, SyncPolicy::Periodic { .. });
        let fresh = stored.is_none() || engine.recovery().log_damaged || periodic;
        let meta = match stored {
            Some(meta) if !fresh => meta,
            Some(meta) => Meta { incarnation: new_incarnation(rng, meta.incarnation), epoch_lease_end: 1 },
            None => Meta { incarnation: rng.next_u32(), epoch_lease_end: 1 },
        };
        let mut store = Store {
            engine,
            meta,
            metadata_damage,
            epoch_next: meta.epoch_lease_end,
            unsynced: hashbrown::HashMap::with_hasher(hasher),
            unsynced_order: VecDeque::new(),
            track_unsynced: !periodic,
            key_buffer: Vec::new(),
            record_buffer: Vec::new(),
            migration: None,
            hints: hints::HintCounts::default(),
        };
        if fresh {
            // Recorded before any dot of this incarnation can leave the node:
            // every dot waits for a sync that covers this earlier write.
            store.write_meta().map_err(|error| OpenError::Corrupt {
                file: "node metadata".into(),
                reason: error.to_string(),
            })?;
        }
        // A loss is settled only now, with the new incarnation in the same
        // table: a crash before this finds the loss again, never a node that
        // lost records under its old identity.
        store.engine.finish_recovery()?;
        // After the loss is settled, so that migrating (which may flush)
        // runs on an engine in its normal state.
        store.migration = format::settle(&mut store.engine, layout)?;
        store.count_hints();
        Ok(store)
    }

    pub fn incarnation(&self) -> u32 {
        self.meta.incarnation
    }

    /// Why the node's metadata did not read at open (it then took a new
    /// incarnation), if it did not.
    pub fn metadata_damage(&self) -> Option<&str> {
        self.metadata_damage.as_deref()
    }

    /// The records opening moved from an older layout, if it found one.
    pub fn migration(&self) -> Option<Migration> {
        self.migration
    }

    /// Records still under a key of format 1 (see `format`).
    pub fn format_1_records(&mut self) -> Result<usize, StoreError> {
        Ok(format::format_1_records(&mut self.engine)?)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Client keys stored on this node, estimated from the engine's counts
    /// ([`EngineStats::keys_estimate`]) less the node's metadata records and
    /// the `hints` it holds.
    /// A deleted client key is a record too (its tombstone is a version), so
    /// it counts until the tombstone is reaped; overwritten keys count once
    /// per table that still holds a copy. It errs high, never low.
    pub fn keys_estimate(engine: &EngineStats, hints: u64) -> u64 {
        engine.keys_estimate().saturating_sub(METADATA_RECORDS + hints)
    }

    pub fn read(&mut self, key: PlacedKey<'_>) -> Result<Option<Record>, StoreError> {
        encode_record_key(key, &mut self.key_buffer);
        // The engine already re-reads a block once; a copy is declared corrupt
        // (and replaced from a replica) only if a second try fails as well.
        match self.engine.get_borrowed(&self.key_buffer) {
            Err(ReadError::Corrupt { .. }) => {}
            found => return decode_found(found?),
        }
        decode_found(self.engine.get_borrowed(&self.key_buffer)?)
    }

    /// Writes `record`; it is durable once a sync covers the returned Lsn.
    pub fn write(&mut self, key: PlacedKey<'_>, record: &Record) -> Result<Lsn, StoreError> {
        let mut bytes = std::mem::take(&mut self.record_buffer);
        bytes.clear();
        bytes.push(RECORD_FORMAT);
        let encoded = postcard::to_extend(record, bytes);
        let bytes = encoded.map_err(|error| StoreError::Malformed(error.to_string()))?;
        encode_record_key(key, &mut self.key_buffer);
        let written = self.engine.put(&self.key_buffer, &bytes);
        if bytes.capacity() <= RECORD_BUFFER_KEPT_MAX {
            self.record_buffer = bytes;
        }
        let lsn = written?;
        if self.track_unsynced {
            self.note_unsynced(key.key(), lsn);
        }
        Ok(lsn)
    }

    /// Removes `key`'s record (an engine tombstone, dropped by compaction);
    /// durable once a sync covers the returned Lsn.
    pub fn remove(&mut self, key: PlacedKey<'_>) -> Result<Lsn, StoreError> {
        encode_record_key(key, &mut self.key_buffer);
        let lsn = self.engine.delete(&self.key_buffer)?;
        if self.track_unsynced {
            self.note_unsynced(key.key(), lsn);
        }
        Ok(lsn)
    }

    /// A new epoch for this node, never handed out before by this incarnation.
    pub fn allocate_epoch(&mut self) -> Result<LocalEpoch, StoreError> {
        if self.epoch_next >= self.meta.epoch_lease_end {
            self.meta.epoch_lease_end = self.epoch_next + EPOCH_LEASE;
            self.write_meta()?;
        }
        let epoch = self.epoch_next;
        self.epoch_next += 1;
        Ok(LocalEpoch { incarnation: self.meta.incarnation, epoch })
    }

    /// The epoch in which this incarnation issues dots for `record`'s key:
    /// the record's own if this incarnation allocated it, else a new one.
    pub fn epoch_for(&mut self, record: &Record) -> Result<LocalEpoch, StoreError> {
        match record.local_epoch {
            Some(local) if local.incarnation == self.meta.incarnation => Ok(local),
            _ => self.allocate_epoch(),
        }
    }

    /// The Lsn that must be safe to show before `key`'s current state may be
    /// shown to anyone, if it is not yet: under `always`, the key's last
    /// unsynced write; under `periodic`, where keys are not tracked, the
    /// last write of all while the log still buffers some, which costs a
    /// wait until the end of the burst at most.
    pub fn pending_lsn(&self, key: &[u8]) -> Option<Lsn> {
        if !self.track_unsynced {
            let last = self.engine.last_lsn();
            return (last > self.engine.appended_lsn()).then_some(last);
        }
        let lsn = *self.unsynced.get(key)?;
        (lsn > self.engine.durable_lsn()).then_some(lsn)
    }

    /// Forgets unsynced marks that the durable point has passed.
    pub fn prune_synced(&mut self) {
        let durable = self.engine.durable_lsn();
        while let Some((lsn, _)) = self.unsynced_order.front() {
            if *lsn > durable {
                break;
            }
            let Some((lsn, key)) = self.unsynced_order.pop_front() else { break };
            if self.unsynced.get(&key) == Some(&lsn) {
                self.unsynced.remove(&key);
            }
        }
    }

    pub fn unsynced_keys(&self) -> usize {
        self.unsynced.len()
    }

    fn note_unsynced(&mut self, key: &[u8], lsn: Lsn) {
        self.unsynced.insert(key.to_vec(), lsn);
        self.unsynced_order.push_back((lsn, key.to_vec()));
    }

    fn write_meta(&mut self) -> Result<Lsn, StoreError> {
        // Serializing two integers into a Vec cannot fail.
        let bytes = postcard::to_allocvec(&self.meta).expect("postcard into a Vec is infallible here");
        Ok(self.engine.put(META_KEY, &bytes)?)
    }
}

/// Reads of a metadata record before it is taken as damaged.
const META_READS_MAX: usize = 4;

/// Engine records that are not client keys': the node's metadata and the
/// layout version.
const METADATA_RECORDS: u64 = 2;

/// The generator stream the node's hash key is drawn from.
const HASH_KEY_STREAM: u64 = 0x6861_7368;

/// A random incarnation other than `old`.
fn new_incarnation(rng: &mut ChaCha8Rng, old: u32) -> u32 {
    loop {
        let incarnation = rng.next_u32();
        if incarnation != old {
            return incarnation;
        }
    }
}

fn decode_found(found: Option<Cow<'_, [u8]>>) -> Result<Option<Record>, StoreError> {
    found.map(|bytes| decode_record(&bytes)).transpose()
}

fn decode_record(bytes: &[u8]) -> Result<Record, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_FORMAT, body)) => postcard::from_bytes(body).map_err(malformed),
        Some((&RECORD_FORMAT_1, body)) => {
            let (object, _epoch): (Object, Option<u64>) = postcard::from_bytes(body).map_err(malformed)?;
            Ok(Record { object, local_epoch: None })
        }
        Some((format, _)) => Err(StoreError::Malformed(format!("unknown record format {format}"))),
        None => Err(StoreError::Malformed("empty record".into())),
    }
}

fn malformed(error: postcard::Error) -> StoreError {
    StoreError::Malformed(error.to_string())
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;
    use crate::NodeId;
    use crate::disk::{CrashMode, Disk, MemDisk};
    use crate::version::{Actor, CausalContext, Value};

    fn open(disk: &MemDisk, seed: u64) -> Store {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Store::open(Box::new(disk.clone()), EngineConfig::default(), &mut rng).unwrap()
    }

    fn sync(store: &mut Store, disk: &MemDisk) {
        let request = store.engine_mut().begin_sync().unwrap();
        let result = request.run(disk);
        store.engine_mut().finish_sync(request, result);
        store.prune_synced();
    }

    #[test]
    fn each_seed_hashes_client_keys_under_its_own_key() {
        let disk = MemDisk::new(1);
        let first = open(&disk, 1).engine().memtable_hasher();
        assert_eq!(open(&MemDisk::new(2), 1).engine().memtable_hasher(), first, "a seed replays");
        assert_ne!(open(&MemDisk::new(3), 2).engine().memtable_hasher(), first);
        assert_ne!(first, KeyedHasher::default(), "not the fixed key tools use");
        // Drawn from a stream of its own: the node's first draw is still its incarnation.
        let store = open(&MemDisk::new(4), 9);
        assert_eq!(store.incarnation(), ChaCha8Rng::seed_from_u64(9).next_u32());
    }

    #[test]
    fn records_round_trip_and_unsynced_keys_are_tracked() {
        let disk = MemDisk::new(1);
        let mut store = open(&disk, 1);
        let mut object = Object::new();
        let actor = Actor { node: NodeId(1), incarnation: store.incarnation(), epoch: 1 };
        object.write(actor, &CausalContext::new(), Value::Live(b"v".to_vec()), 5);
        let record = Record { object, local_epoch: Some(store.allocate_epoch().unwrap()) };
        let lsn = store.write(PlacedKey::new(b"k"), &record).unwrap();
        assert_eq!(store.read(PlacedKey::new(b"k")).unwrap(), Some(record));
        assert_eq!(store.read(PlacedKey::new(b"other")).unwrap(), None);
        assert_eq!(store.pending_lsn(b"k"), Some(lsn));
        sync(&mut store, &disk);
        assert_eq!(store.pending_lsn(b"k"), None);
        assert_eq!(store.unsynced_keys(), 0);
    }

    #[test]
    fn the_key_estimate_leaves_out_the_metadata_record() {
        let disk = MemDisk::new(6);
        let mut store = open(&disk, 6);
        assert_eq!(Store::keys_estimate(&store.engine().stats(), 0), 0, "a new node stores no client key");
        let record = Record { object: Object::new(), local_epoch: None };
        for key in [&b"a"[..], b"b", b"a"] {
            store.write(PlacedKey::new(key), &record).unwrap();
        }
        assert_eq!(Store::keys_estimate(&store.engine().stats(), 0), 2);
    }

    #[test]
    fn epochs_and_incarnation_survive_a_crash_once_synced() {
        let disk = MemDisk::new(2);
        let mut store = open(&disk, 2);
        let incarnation = store.incarnation();
        let first = store.allocate_epoch().unwrap();
        sync(&mut store, &disk);
        drop(store);
        disk.crash(CrashMode::DropUnsynced);
        let mut store = open(&disk, 99);
        assert_eq!(store.incarnation(), incarnation, "a restart is not a new incarnation");
        let next = store.allocate_epoch().unwrap();
        assert_eq!(next.incarnation, incarnation);
        assert!(next.epoch > first.epoch, "epochs are never reused");
    }

    /// Damage to the log that takes the lease write and keeps the record
    /// after it: the record names an epoch the stored metadata never
    /// leased, and the new incarnation, counting from the old lease, would
    /// allocate that epoch again for another key. A dot then carried two
    /// values (found by the simulation fuzz target).
    #[test]
    fn a_new_incarnation_issues_no_dot_in_an_epoch_of_the_old_one() {
        let disk = MemDisk::new(7);
        let mut store = open(&disk, 7);
        let old = store.incarnation();
        let epoch = store.allocate_epoch().unwrap();
        let record = Record { object: Object::new(), local_epoch: Some(epoch) };
        store.write(PlacedKey::new(b"k"), &record).unwrap();
        sync(&mut store, &disk);
        drop(store);
        // The lease write's value: the incarnation, then the lease's end.
        let lease =
            postcard::to_allocvec(&Meta { incarnation: old, epoch_lease_end: epoch.epoch + EPOCH_LEASE })
                .unwrap();
        let wal = disk.list().unwrap().into_iter().find(|name| name.starts_with("wal")).unwrap();
        let bytes = disk.read_at(&wal, 0, disk.len(&wal).unwrap()).unwrap();
        let at = bytes.windows(lease.len()).position(|window| window == lease).unwrap();
        disk.corrupt_at(&wal, at as u64, 1).unwrap();
        let mut store = open(&disk, 8);
        assert_ne!(store.incarnation(), old, "synced records were lost: a new incarnation");
        let survived = store.read(PlacedKey::new(b"k")).unwrap().unwrap();
        assert_eq!(survived.local_epoch, Some(epoch), "the record after the damage survived");
        let issued = [store.epoch_for(&survived).unwrap(), store.allocate_epoch().unwrap()];
        assert!(issued.iter().all(|local| local.incarnation == store.incarnation()));
        assert_ne!(issued[0], issued[1], "the record's key and another key share no epoch");
    }

    #[test]
    fn a_record_of_format_1_reads_without_its_epoch() {
        let disk = MemDisk::new(9);
        let mut store = open(&disk, 9);
        let mut object = Object::new();
        let actor = Actor { node: NodeId(1), incarnation: store.incarnation(), epoch: 3 };
        object.write(actor, &CausalContext::new(), Value::Live(b"v".to_vec()), 5);
        let bytes = postcard::to_extend(&(&object, Some(3u64)), vec![RECORD_FORMAT_1]).unwrap();
        encode_record_key(PlacedKey::new(b"k"), &mut store.key_buffer);
        let key = store.key_buffer.clone();
        store.engine_mut().put(&key, &bytes).unwrap();
        let read = store.read(PlacedKey::new(b"k")).unwrap().unwrap();
        assert_eq!(read, Record { object, local_epoch: None }, "no incarnation says whose epoch 3 was");
    }

    #[test]
    fn losing_synced_records_to_damage_is_a_new_incarnation() {
        let disk = MemDisk::new(5);
        let mut store = open(&disk, 5);
        let incarnation = store.incarnation();
        for epoch in 0..5 {
            let record =
                Record { object: Object::new(), local_epoch: Some(LocalEpoch { incarnation, epoch }) };
            store.write(PlacedKey::new(format!("key-{epoch}").as_bytes()), &record).unwrap();
        }
        sync(&mut store, &disk);
        drop(store);
        let wal = disk.list().unwrap().into_iter().find(|name| name.starts_with("wal")).unwrap();
        // Halfway through the records, not in the zeros preallocated after them.
        let bytes = disk.read_at(&wal, 0, disk.len(&wal).unwrap()).unwrap();
        let middle = bytes.iter().rposition(|&byte| byte != 0).unwrap() / 2;
        disk.corrupt_at(&wal, middle as u64, 1).unwrap();
        let store = open(&disk, 6);
        assert_ne!(store.incarnation(), incarnation);
    }

    #[test]
    fn a_wiped_disk_is_a_new_incarnation() {
        let first = open(&MemDisk::new(3), 3).incarnation();
        let second = open(&MemDisk::new(3), 4).incarnation();
        assert_ne!(first, second);
    }
}
