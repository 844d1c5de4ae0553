//! Hints: writes this node keeps for a replica that was down when they were
//! made (sloppy quorum), until it can hand them over.
//!
//! A hint is stored through the same log as records, so it is durable once
//! a sync covers it and survives this node's crash. Its engine key names
//! the replica it is for, then the client key's ring position and the key:
//!
//! ```text
//! 03 | owner node id, u64 big-endian | ring position, u64 big-endian | client key
//!    -> HINT_FORMAT byte, postcard(Hint)
//! ```
//!
//! so one owner's hints are one contiguous scan, and a second hint for the
//! same key and owner merges into the first instead of adding another.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::layout::{HINT_PREFIX, POSITION_BYTES};
use super::{Store, StoreError};
use crate::NodeId;
use crate::lsm::Lsn;
use crate::ring::PlacedKey;
use crate::version::Object;

const HINT_FORMAT: u8 = 1;

/// What an engine key of a hint holds before the client key.
pub(super) const HINT_KEY_HEADER_BYTES: u32 = 1 + 8 + POSITION_BYTES;

/// One stored hint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Hint {
    object: Object,
    /// When the hint was first stored, on this node's wall clock: hints
    /// older than the configured age are dropped rather than handed over.
    stored_ms: u64,
}

/// A hint read back for handing over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredHint {
    pub key: Vec<u8>,
    pub object: Object,
    pub stored_ms: u64,
}

/// The limits on what hints may hold; a hint past one is not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintLimits {
    pub count_max: u64,
    pub bytes_max: u64,
}

/// Why a hint was not stored.
#[derive(Debug, PartialEq, Eq)]
pub enum HintRefused {
    /// Storing it would pass a limit.
    Full,
    Store(StoreError),
}

impl From<StoreError> for HintRefused {
    fn from(error: StoreError) -> HintRefused {
        HintRefused::Store(error)
    }
}

/// How many hints the store holds for each owner and their bytes, counted
/// at open and kept up to date by every change.
#[derive(Debug, Default)]
pub(super) struct HintCounts {
    by_owner: BTreeMap<NodeId, u64>,
    bytes: u64,
}

impl HintCounts {
    fn add(&mut self, owner: NodeId, bytes: u64) {
        *self.by_owner.entry(owner).or_default() += 1;
        self.bytes += bytes;
    }

    fn remove(&mut self, owner: NodeId, bytes: u64) {
        if let Some(count) = self.by_owner.get_mut(&owner) {
            *count -= 1;
            if *count == 0 {
                self.by_owner.remove(&owner);
            }
        }
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    fn count(&self) -> u64 {
        self.by_owner.values().sum()
    }
}

impl Store {
    /// Counts the hints on disk; called once, at open. Counting stops at a
    /// table block that does not read: the hints in it and after it are
    /// not counted against the bounds, and are handed over when they read
    /// again (or repaired by anti-entropy, when they never do). A node opens
    /// with damaged hints; they are never its only copy of anything.
    pub(super) fn count_hints(&mut self) {
        let (start, end) = ([HINT_PREFIX], [HINT_PREFIX + 1]);
        let mut counts = HintCounts::default();
        for pair in self.engine.iter(Bound::Included(&start[..]), Bound::Excluded(&end[..])) {
            let Ok((engine_key, value)) = pair else { break };
            if let Some((owner, _, _)) = decode_hint_key(&engine_key) {
                counts.add(owner, stored_bytes(&engine_key, &value));
            }
        }
        self.hints = counts;
    }

    /// Stores `object` as a hint for `owner`, merged into the hint already
    /// held for the same key, if any; durable once a sync covers the Lsn.
    pub fn store_hint(
        &mut self,
        owner: NodeId,
        key: PlacedKey<'_>,
        object: &Object,
        now_ms: u64,
        limits: HintLimits,
    ) -> Result<Lsn, HintRefused> {
        let engine_key = encode_hint_key(owner, key);
        let old = self.read_hint_at(&engine_key)?;
        let (hint, old_bytes) = match old {
            Some((mut hint, bytes)) => {
                hint.object.merge(object);
                (hint, Some(bytes))
            }
            None => (Hint { object: object.clone(), stored_ms: now_ms }, None),
        };
        let value = encode_hint(&hint)?;
        let bytes = stored_bytes(&engine_key, &value);
        let count_after = self.hints.count() + u64::from(old_bytes.is_none());
        let bytes_after = self.hints.bytes - old_bytes.unwrap_or(0) + bytes;
        if count_after > limits.count_max || bytes_after > limits.bytes_max {
            return Err(HintRefused::Full);
        }
        let lsn = self.engine.put(&engine_key, &value).map_err(StoreError::from)?;
        if let Some(old_bytes) = old_bytes {
            self.hints.remove(owner, old_bytes);
        }
        self.hints.add(owner, bytes);
        Ok(lsn)
    }

    /// Up to `limit` of `owner`'s hints, in ring order. A hint that does not
    /// decode is removed on the way (what it held is repaired by
    /// anti-entropy); the second number counts those.
    pub fn hints_for(&mut self, owner: NodeId, limit: usize) -> Result<(Vec<StoredHint>, u64), StoreError> {
        let (start, end) = owner_bounds(owner);
        let (mut found, mut undecodable) = (Vec::new(), Vec::new());
        for pair in self.engine.iter(Bound::Included(&start[..]), end.as_ref().map(Vec::as_slice)) {
            let (engine_key, value) = pair?;
            let Some((_, _, key)) = decode_hint_key(&engine_key) else { continue };
            match decode_hint(&value) {
                Ok(hint) => found.push(StoredHint {
                    key: key.to_vec(),
                    object: hint.object,
                    stored_ms: hint.stored_ms,
                }),
                Err(_) => undecodable.push((engine_key.clone(), stored_bytes(&engine_key, &value))),
            }
            if found.len() + undecodable.len() >= limit {
                break;
            }
        }
        let dropped = undecodable.len() as u64;
        for (engine_key, bytes) in undecodable {
            self.engine.delete(&engine_key)?;
            self.hints.remove(owner, bytes);
        }
        Ok((found, dropped))
    }

    /// The object `owner`'s hint for `key` holds now, if there is one.
    pub fn hint(&mut self, owner: NodeId, key: PlacedKey<'_>) -> Result<Option<Object>, StoreError> {
        Ok(self.read_hint_at(&encode_hint_key(owner, key))?.map(|(hint, _)| hint.object))
    }

    /// Removes `owner`'s hint for `key`: handed over, or dropped.
    pub fn remove_hint(&mut self, owner: NodeId, key: PlacedKey<'_>) -> Result<Option<Lsn>, StoreError> {
        let engine_key = encode_hint_key(owner, key);
        let bytes = match self.engine.get_borrowed(&engine_key)? {
            Some(value) => stored_bytes(&engine_key, &value),
            None => return Ok(None),
        };
        let lsn = self.engine.delete(&engine_key)?;
        self.hints.remove(owner, bytes);
        Ok(Some(lsn))
    }

    /// The owners this node holds hints for, and how many for each.
    pub fn hint_owners(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.hints.by_owner.iter().map(|(&owner, &count)| (owner, count))
    }

    /// Hints held, for all owners.
    pub fn hints_pending(&self) -> u64 {
        self.hints.count()
    }

    /// A hint and its stored bytes; one that does not decode reads as none
    /// but keeps its bytes counted until it is removed.
    fn read_hint_at(&mut self, engine_key: &[u8]) -> Result<Option<(Hint, u64)>, StoreError> {
        let Some(value) = self.engine.get_borrowed(engine_key)? else { return Ok(None) };
        let bytes = stored_bytes(engine_key, &value);
        Ok(decode_hint(&value).ok().map(|hint| (hint, bytes)))
    }
}

/// What a hint costs: its engine key and value.
fn stored_bytes(engine_key: &[u8], value: &[u8]) -> u64 {
    (engine_key.len() + value.len()) as u64
}

fn encode_hint_key(owner: NodeId, key: PlacedKey<'_>) -> Vec<u8> {
    let mut engine_key = Vec::with_capacity(HINT_KEY_HEADER_BYTES as usize + key.key().len());
    engine_key.push(HINT_PREFIX);
    engine_key.extend_from_slice(&owner.0.to_be_bytes());
    engine_key.extend_from_slice(&key.position().to_be_bytes());
    engine_key.extend_from_slice(key.key());
    engine_key
}

/// The owner, ring position and client key of a hint's engine key.
fn decode_hint_key(engine_key: &[u8]) -> Option<(NodeId, u64, &[u8])> {
    let (&HINT_PREFIX, rest) = engine_key.split_first()? else { return None };
    let (owner, rest) = rest.split_first_chunk::<8>()?;
    let (position, key) = rest.split_first_chunk::<{ POSITION_BYTES as usize }>()?;
    (!key.is_empty()).then_some((NodeId(u64::from_be_bytes(*owner)), u64::from_be_bytes(*position), key))
}

/// The engine keys of `owner`'s hints: from its prefix to the next owner's
/// (to the end of the namespace for the last possible owner).
fn owner_bounds(owner: NodeId) -> (Vec<u8>, Bound<Vec<u8>>) {
    let start = [&[HINT_PREFIX][..], &owner.0.to_be_bytes()].concat();
    let end = match owner.0.checked_add(1) {
        Some(next) => Bound::Excluded([&[HINT_PREFIX][..], &next.to_be_bytes()].concat()),
        None => Bound::Excluded(vec![HINT_PREFIX + 1]),
    };
    (start, end)
}

fn encode_hint(hint: &Hint) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(hint, vec![HINT_FORMAT]).map_err(|error| StoreError::Malformed(error.to_string()))
}

fn decode_hint(bytes: &[u8]) -> Result<Hint, StoreError> {
    match bytes.split_first() {
        Some((&HINT_FORMAT, body)) => {
            let hint: Hint =
                postcard::from_bytes(body).map_err(|error| StoreError::Malformed(error.to_string()))?;
            hint.object.invariants().map_err(|error| StoreError::Malformed(error.to_string()))?;
            Ok(hint)
        }
        Some((format, _)) => Err(StoreError::Malformed(format!("unknown hint format {format}"))),
        None => Err(StoreError::Malformed("empty hint".into())),
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::SeedableRng;

    use super::*;
    use crate::disk::{CrashMode, MemDisk};
    use crate::lsm::EngineConfig;
    use crate::version::{Actor, CausalContext, Value};

    const LIMITS: HintLimits = HintLimits { count_max: 100, bytes_max: 1 << 20 };

    fn open(disk: &MemDisk) -> Store {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        Store::open(Box::new(disk.clone()), EngineConfig::default(), &mut rng).unwrap()
    }

    fn object(value: &str, counter_base: u64) -> Object {
        let mut object = Object::new();
        let actor = Actor { node: NodeId(1), incarnation: 1, epoch: counter_base };
        object.write(actor, &CausalContext::new(), Value::Live(value.as_bytes().to_vec()), 1);
        object
    }

    #[test]
    fn hints_merge_per_key_and_owner_and_survive_a_crash_once_synced() {
        let disk = MemDisk::new(1);
        let mut store = open(&disk);
        let key = PlacedKey::new(b"k");
        store.store_hint(NodeId(2), key, &object("a", 1), 10, LIMITS).unwrap();
        store.store_hint(NodeId(2), key, &object("b", 2), 20, LIMITS).unwrap();
        store.store_hint(NodeId(3), key, &object("c", 3), 30, LIMITS).unwrap();
        assert_eq!(store.hints_pending(), 3 - 1, "one hint per key and owner");
        let (for_2, _) = store.hints_for(NodeId(2), 10).unwrap();
        assert_eq!(for_2.len(), 1);
        assert_eq!(for_2[0].object.live_values().count(), 2, "the second hint merged into the first");
        assert_eq!(for_2[0].stored_ms, 10, "a hint is as old as its first write");
        store.engine_mut().sync_now().unwrap();
        drop(store);
        disk.crash(CrashMode::DropUnsynced);
        let mut store = open(&disk);
        assert_eq!(store.hint_owners().collect::<Vec<_>>(), [(NodeId(2), 1), (NodeId(3), 1)]);
        assert!(store.remove_hint(NodeId(2), key).unwrap().is_some());
        assert_eq!(store.hints_for(NodeId(2), 10).unwrap(), (vec![], 0));
        assert_eq!(store.hints_for(NodeId(3), 10).unwrap().0.len(), 1, "the other owner's hint stays");
        assert_eq!(store.hints_pending(), 1);
    }

    #[test]
    fn a_hint_past_a_limit_is_refused_and_changes_nothing() {
        let disk = MemDisk::new(2);
        let mut store = open(&disk);
        let limits = HintLimits { count_max: 2, bytes_max: 1 << 20 };
        for key in [&b"a"[..], b"b"] {
            store.store_hint(NodeId(2), PlacedKey::new(key), &object("v", 1), 0, limits).unwrap();
        }
        let third = store.store_hint(NodeId(2), PlacedKey::new(b"c"), &object("v", 1), 0, limits);
        assert_eq!(third, Err(HintRefused::Full));
        // Merging into a held hint adds no hint.
        store.store_hint(NodeId(2), PlacedKey::new(b"a"), &object("w", 2), 0, limits).unwrap();
        assert_eq!(store.hints_pending(), 2);
        let tiny = HintLimits { count_max: 100, bytes_max: 10 };
        assert_eq!(
            store.store_hint(NodeId(3), PlacedKey::new(b"d"), &object("v", 1), 0, tiny),
            Err(HintRefused::Full)
        );
        assert_eq!(store.hints_for(NodeId(3), 10).unwrap(), (vec![], 0));
    }

    #[test]
    fn a_hint_that_does_not_decode_is_dropped_when_read() {
        let disk = MemDisk::new(4);
        let mut store = open(&disk);
        store.store_hint(NodeId(2), PlacedKey::new(b"a"), &object("v", 1), 0, LIMITS).unwrap();
        store.store_hint(NodeId(2), PlacedKey::new(b"b"), &object("v", 1), 0, LIMITS).unwrap();
        let bad = encode_hint_key(NodeId(2), PlacedKey::new(b"a"));
        store.engine_mut().put(&bad, &[HINT_FORMAT, 0xff, 0xff]).unwrap();
        let (found, dropped) = store.hints_for(NodeId(2), 10).unwrap();
        assert_eq!((found.len(), dropped), (1, 1));
        assert_eq!(found[0].key, b"b");
        assert_eq!(store.hints_pending(), 1);
    }

    #[test]
    fn hints_are_not_records() {
        let disk = MemDisk::new(3);
        let mut store = open(&disk);
        store.store_hint(NodeId(2), PlacedKey::new(b"k"), &object("v", 1), 0, LIMITS).unwrap();
        assert_eq!(store.read(PlacedKey::new(b"k")).unwrap(), None);
        let all = crate::ring::PositionRange { start: 0, end: 0 };
        let scan =
            store.scan_range(all, None, super::super::ScanLimit { records_max: 10, bytes_max: 1 << 20 });
        assert!(scan.unwrap().records.is_empty());
    }

    #[test]
    fn hint_keys_decode_only_when_whole() {
        let key = encode_hint_key(NodeId(7), PlacedKey::new(b"key"));
        assert_eq!(
            decode_hint_key(&key).map(|(owner, _, key)| (owner, key.to_vec())),
            Some((NodeId(7), b"key".to_vec()))
        );
        assert_eq!(decode_hint_key(&key[..HINT_KEY_HEADER_BYTES as usize]), None);
        assert_eq!(decode_hint_key(&[HINT_PREFIX, 1, 2]), None);
    }
}
