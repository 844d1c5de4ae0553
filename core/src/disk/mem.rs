//! An in-memory [`Disk`] with crashes and injected faults, deterministic by seed.
//!
//! Each file is an inode holding its bytes and an undo record for every write
//! since its last sync. The directory exists twice: the current names and the
//! names made durable by the last `sync_dir`. A crash keeps the durable
//! directory and takes back each file's unsynced writes, newest first; in
//! [`CrashMode::TornTail`] it keeps a random prefix of those writes, in the
//! order they were made, the last one kept perhaps cut short.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use super::{Disk, DiskError};

/// Fault probabilities, in events per million operations of the kind named.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// A read returns a buffer with one flipped bit; the stored bytes stay intact.
    pub read_corrupt_per_million: u32,
    /// Before a read, one bit of the file's durable bytes flips for good (bit rot).
    pub bit_rot_per_million: u32,
    /// Bit rots this disk suffers at most (`None`: no bound). Rot comes with
    /// age, not with reading: without a bound, a node that reads more (an
    /// anti-entropy scan, say) would rot its own disk faster.
    pub bit_rots_max: Option<u64>,
    /// `sync` or `sync_dir` fails and makes nothing durable.
    pub sync_fail_per_million: u32,
}

/// How a crash treats bytes that were appended but never synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced byte is lost.
    DropUnsynced,
    /// Each file keeps a random prefix of its unsynced tail: the last write may be torn.
    TornTail,
    /// The process dies, the machine does not: the kernel keeps every byte
    /// written and every name, synced or not.
    ProcessOnly,
}

/// How many faults were injected, for the simulator's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub read_corruptions: u64,
    pub bit_rots: u64,
    pub sync_failures: u64,
    pub crashes: u64,
    /// Files whose unsynced tail was cut at a crash, keeping part of it.
    pub torn_tails: u64,
    pub unsynced_bytes_lost: u64,
}

/// A memory disk. Clones share the same files, faults and generator.
#[derive(Clone, Debug)]
pub struct MemDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    rng: ChaCha8Rng,
    faults: Faults,
    counts: FaultCounts,
    inodes: BTreeMap<u64, Inode>,
    inode_next: u64,
    names: BTreeMap<String, u64>,
    names_durable: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Inode {
    bytes: Vec<u8>,
    /// Writes since the last sync, oldest first: what a crash may take back.
    unsynced: Vec<Undo>,
}

/// What one write changed, so that a crash can take it back.
#[derive(Debug)]
struct Undo {
    offset: usize,
    len: usize,
    /// The file's length before the write.
    old_len: usize,
    /// The bytes the write overwrote: those of its range below `old_len`.
    old: Vec<u8>,
}

impl Inode {
    /// Writes `bytes` at `offset`; false if `offset` is past the end.
    fn write(&mut self, offset: usize, bytes: &[u8]) -> bool {
        let old_len = self.bytes.len();
        if offset > old_len {
            return false;
        }
        let end = offset + bytes.len();
        let old = self.bytes.get(offset..end.min(old_len)).unwrap_or_default().to_vec();
        if end > old_len {
            self.bytes.resize(end, 0);
        }
        if let Some(range) = self.bytes.get_mut(offset..end) {
            range.copy_from_slice(bytes);
        }
        self.unsynced.push(Undo { offset, len: bytes.len(), old_len, old });
        true
    }

    fn unsynced_bytes(&self) -> usize {
        self.unsynced.iter().map(|undo| undo.len).sum()
    }

    /// The bytes no unsynced write touched: the durable prefix.
    fn stable_len(&self) -> usize {
        self.unsynced.iter().map(|undo| undo.offset).min().unwrap_or(usize::MAX).min(self.bytes.len())
    }

    /// Keeps the first `kept` bytes of the unsynced writes, taken in the
    /// order they were made, and takes back the rest, newest first.
    fn crash(&mut self, kept: usize) {
        let mut budget = kept;
        let whole = self
            .unsynced
            .iter()
            .take_while(|undo| {
                let fits = undo.len <= budget;
                if fits {
                    budget -= undo.len;
                }
                fits
            })
            .count();
        while self.unsynced.len() > whole {
            let Some(undo) = self.unsynced.pop() else { break };
            // Only the first write not kept whole keeps a part: `budget` bytes.
            let part = if self.unsynced.len() == whole { budget } else { 0 };
            if let (Some(restore), Some(old)) =
                (self.bytes.get_mut(undo.offset + part..undo.offset + undo.old.len()), undo.old.get(part..))
            {
                restore.copy_from_slice(old);
            }
            self.bytes.truncate(undo.old_len.max(undo.offset + part));
        }
        self.unsynced.clear();
    }
}

impl MemDisk {
    /// An empty disk whose faults are drawn from a generator seeded with `seed`.
    pub fn new(seed: u64) -> MemDisk {
        let state = State {
            rng: ChaCha8Rng::seed_from_u64(seed),
            faults: Faults::default(),
            counts: FaultCounts::default(),
            inodes: BTreeMap::new(),
            inode_next: 0,
            names: BTreeMap::new(),
            names_durable: BTreeMap::new(),
        };
        MemDisk { state: Arc::new(Mutex::new(state)) }
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults
    }

    pub fn fault_counts(&self) -> FaultCounts {
        self.lock().counts
    }

    /// Loses everything that was not durable, as a power failure would;
    /// with [`CrashMode::ProcessOnly`], loses nothing.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = self.lock();
        let state = &mut *state;
        state.counts.crashes += 1;
        if mode == CrashMode::ProcessOnly {
            return;
        }
        state.names = state.names_durable.clone();
        let live: Vec<u64> = state.names.values().copied().collect();
        state.inodes.retain(|id, _| live.contains(id));
        for inode in state.inodes.values_mut() {
            let unsynced = inode.unsynced_bytes();
            let kept = match mode {
                CrashMode::TornTail if unsynced > 0 => {
                    let kept = usize::try_from(state.rng.next_u64() % (unsynced as u64 + 1)).unwrap_or(0);
                    if kept > 0 && kept < unsynced {
                        state.counts.torn_tails += 1;
                    }
                    kept
                }
                _ => 0,
            };
            state.counts.unsynced_bytes_lost += (unsynced - kept) as u64;
            inode.crash(kept);
        }
    }

    /// Flips one bit of `name`'s durable bytes at `offset`, for tests that aim a fault.
    pub fn corrupt_at(&self, name: &str, offset: u64, bit: u8) -> Result<(), DiskError> {
        let mut state = self.lock();
        let id = state.inode_id(name)?;
        let inode = state.inodes.get_mut(&id).ok_or_else(|| not_found(name))?;
        let byte = usize::try_from(offset).ok().and_then(|offset| inode.bytes.get_mut(offset));
        let Some(byte) = byte else {
            return Err(DiskError::OutOfRange {
                name: name.to_owned(),
                offset,
                len: 1,
                file_len: inode.bytes.len() as u64,
            });
        };
        *byte ^= 1 << (bit % 8);
        Ok(())
    }

    /// Total bytes held in live files.
    pub fn bytes_total(&self) -> u64 {
        let state = self.lock();
        state.names.values().filter_map(|id| state.inodes.get(id)).map(|inode| inode.bytes.len() as u64).sum()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn roll(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.rng.next_u32() % 1_000_000 < per_million
    }

    fn inode_id(&self, name: &str) -> Result<u64, DiskError> {
        self.names.get(name).copied().ok_or_else(|| not_found(name))
    }

    fn inode(&mut self, name: &str) -> Result<&mut Inode, DiskError> {
        let id = self.inode_id(name)?;
        self.inodes.get_mut(&id).ok_or_else(|| not_found(name))
    }

    fn rot(&mut self, name: &str) -> Result<(), DiskError> {
        let pick = self.rng.next_u64();
        let inode = self.inode(name)?;
        let stable_len = inode.stable_len();
        if stable_len == 0 {
            return Ok(());
        }
        let bit_index = pick % (stable_len as u64 * 8);
        if let Some(byte) = usize::try_from(bit_index / 8).ok().and_then(|at| inode.bytes.get_mut(at)) {
            *byte ^= 1 << (bit_index % 8);
        }
        self.counts.bit_rots += 1;
        Ok(())
    }

    fn flip_one_bit(&mut self, buffer: &mut [u8]) {
        if buffer.is_empty() {
            return;
        }
        let bit_index = self.rng.next_u64() % (buffer.len() as u64 * 8);
        if let Some(byte) = usize::try_from(bit_index / 8).ok().and_then(|at| buffer.get_mut(at)) {
            *byte ^= 1 << (bit_index % 8);
        }
        self.counts.read_corruptions += 1;
    }
}

fn not_found(name: &str) -> DiskError {
    DiskError::NotFound { name: name.to_owned() }
}

impl Disk for MemDisk {
    fn list(&self) -> Result<Vec<String>, DiskError> {
        Ok(self.lock().names.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        let id = state.inode_next;
        state.inode_next += 1;
        state.inodes.insert(id, Inode::default());
        if let Some(old) = state.names.insert(name.to_owned(), id) {
            if !state.names_durable.values().any(|&durable| durable == old) {
                state.inodes.remove(&old);
            }
        }
        Ok(())
    }

    fn append(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let mut state = self.lock();
        let inode = state.inode(name)?;
        inode.write(inode.bytes.len(), bytes);
        Ok(())
    }

    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<(), DiskError> {
        let mut state = self.lock();
        let inode = state.inode(name)?;
        let file_len = inode.bytes.len() as u64;
        let written = usize::try_from(offset).is_ok_and(|offset| inode.write(offset, bytes));
        if !written {
            return Err(DiskError::OutOfRange {
                name: name.to_owned(),
                offset,
                len: bytes.len() as u64,
                file_len,
            });
        }
        Ok(())
    }

    fn read_at(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, DiskError> {
        let mut state = self.lock();
        let bit_rot = state.faults.bit_rot_per_million;
        let rot_left = state.faults.bit_rots_max.is_none_or(|max| state.counts.bit_rots < max);
        if rot_left && state.roll(bit_rot) {
            state.rot(name)?;
        }
        let inode = state.inode(name)?;
        let file_len = inode.bytes.len() as u64;
        let range = offset.checked_add(len).filter(|&end| end <= file_len).and_then(|end| {
            let start = usize::try_from(offset).ok()?;
            let end = usize::try_from(end).ok()?;
            inode.bytes.get(start..end)
        });
        let Some(slice) = range else {
            return Err(DiskError::OutOfRange { name: name.to_owned(), offset, len, file_len });
        };
        let mut buffer = slice.to_vec();
        let read_corrupt = state.faults.read_corrupt_per_million;
        if state.roll(read_corrupt) {
            state.flip_one_bit(&mut buffer);
        }
        Ok(buffer)
    }

    fn len(&self, name: &str) -> Result<u64, DiskError> {
        Ok(self.lock().inode(name)?.bytes.len() as u64)
    }

    fn sync(&self, name: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        state.inode_id(name)?;
        let sync_fail = state.faults.sync_fail_per_million;
        if state.roll(sync_fail) {
            state.counts.sync_failures += 1;
            return Err(DiskError::SyncFailed { name: name.to_owned() });
        }
        state.inode(name)?.unsynced.clear();
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        let id = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_owned(), id);
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), DiskError> {
        self.lock().names.remove(name).map(drop).ok_or_else(|| not_found(name))
    }

    fn sync_dir(&self) -> Result<(), DiskError> {
        let mut state = self.lock();
        let sync_fail = state.faults.sync_fail_per_million;
        if state.roll(sync_fail) {
            state.counts.sync_failures += 1;
            return Err(DiskError::SyncFailed { name: String::from(".") });
        }
        state.names_durable = state.names.clone();
        let state = &mut *state;
        let names = &state.names;
        state.inodes.retain(|id, _| names.values().any(|live| live == id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(disk: &MemDisk, name: &str) -> Vec<u8> {
        let len = disk.len(name).unwrap();
        disk.read_at(name, 0, len).unwrap()
    }

    #[test]
    fn crash_keeps_only_synced_bytes_and_synced_names() {
        let disk = MemDisk::new(1);
        disk.create("a").unwrap();
        disk.append("a", b"hello").unwrap();
        disk.sync("a").unwrap();
        disk.sync_dir().unwrap();
        disk.append("a", b" world").unwrap();
        disk.create("b").unwrap();
        disk.append("b", b"lost").unwrap();
        disk.sync("b").unwrap();
        disk.crash(CrashMode::DropUnsynced);
        assert_eq!(disk.list().unwrap(), vec![String::from("a")]);
        assert_eq!(read_all(&disk, "a"), b"hello");
        assert_eq!(disk.fault_counts().crashes, 1);
    }

    #[test]
    fn torn_tail_keeps_a_prefix_of_the_unsynced_bytes() {
        for seed in 0..50 {
            let disk = MemDisk::new(seed);
            disk.create("a").unwrap();
            disk.sync_dir().unwrap();
            disk.append("a", b"synced").unwrap();
            disk.sync("a").unwrap();
            disk.append("a", b"-unsynced-tail").unwrap();
            disk.crash(CrashMode::TornTail);
            let bytes = read_all(&disk, "a");
            assert!(b"synced-unsynced-tail".starts_with(&bytes));
            assert!(bytes.len() >= 6);
        }
    }

    #[test]
    fn overwrites_are_taken_back_newest_first_at_a_crash() {
        let disk = MemDisk::new(6);
        disk.create("a").unwrap();
        disk.sync_dir().unwrap();
        disk.append("a", &[0; 8]).unwrap();
        disk.sync("a").unwrap();
        disk.write_at("a", 2, b"xy").unwrap();
        disk.write_at("a", 3, b"zzzzzzz").unwrap();
        assert_eq!(read_all(&disk, "a"), b"\0\0xzzzzzzz");
        disk.crash(CrashMode::DropUnsynced);
        assert_eq!(read_all(&disk, "a"), [0; 8]);
        assert_eq!(disk.fault_counts().unsynced_bytes_lost, 9);
        assert!(matches!(disk.write_at("a", 9, b"hole"), Err(DiskError::OutOfRange { .. })));
    }

    #[test]
    fn torn_tail_keeps_a_prefix_of_the_unsynced_writes_in_order() {
        // Synced: 8 zeros. Then three writes; a crash keeps the first k bytes
        // of "ab" ++ "cdef" ++ "ghij" as they were applied, nothing after.
        let writes: [(u64, &[u8]); 3] = [(1, b"ab"), (2, b"cdef"), (6, b"ghij")];
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let disk = MemDisk::new(seed);
            disk.create("a").unwrap();
            disk.sync_dir().unwrap();
            disk.append("a", &[0; 8]).unwrap();
            disk.sync("a").unwrap();
            for (offset, bytes) in writes {
                disk.write_at("a", offset, bytes).unwrap();
            }
            disk.crash(CrashMode::TornTail);
            let after = read_all(&disk, "a");
            let kept = 10 - disk.fault_counts().unsynced_bytes_lost as usize;
            let mut expected = vec![0u8; 8];
            let mut budget = kept;
            for (offset, bytes) in writes {
                let part = &bytes[..budget.min(bytes.len())];
                let (start, end) = (offset as usize, offset as usize + part.len());
                if end > expected.len() {
                    expected.resize(end, 0);
                }
                expected[start..end].copy_from_slice(part);
                budget -= part.len();
            }
            assert_eq!(after, expected, "seed {seed}, {kept} bytes kept");
            seen.insert(kept);
        }
        assert_eq!(seen.len(), 11, "every cut point occurs: {seen:?}");
    }

    #[test]
    fn rename_is_volatile_until_sync_dir() {
        let disk = MemDisk::new(2);
        for name in ["old", "new"] {
            disk.create(name).unwrap();
            disk.append(name, name.as_bytes()).unwrap();
            disk.sync(name).unwrap();
        }
        disk.sync_dir().unwrap();
        disk.rename("new", "old").unwrap();
        assert_eq!(read_all(&disk, "old"), b"new");
        disk.crash(CrashMode::DropUnsynced);
        assert_eq!(read_all(&disk, "old"), b"old");
        assert_eq!(read_all(&disk, "new"), b"new");
        disk.rename("new", "old").unwrap();
        disk.sync_dir().unwrap();
        disk.crash(CrashMode::DropUnsynced);
        assert_eq!(disk.list().unwrap(), vec![String::from("old")]);
        assert_eq!(read_all(&disk, "old"), b"new");
    }

    #[test]
    fn read_corruption_is_transient_and_bit_rot_persists() {
        let disk = MemDisk::new(3);
        disk.create("a").unwrap();
        disk.append("a", &[0u8; 64]).unwrap();
        disk.sync("a").unwrap();
        disk.set_faults(Faults { read_corrupt_per_million: 1_000_000, ..Faults::default() });
        assert_ne!(read_all(&disk, "a"), vec![0u8; 64]);
        disk.set_faults(Faults::default());
        assert_eq!(read_all(&disk, "a"), vec![0u8; 64]);
        disk.set_faults(Faults { bit_rot_per_million: 1_000_000, ..Faults::default() });
        let _ = read_all(&disk, "a");
        disk.set_faults(Faults::default());
        assert_eq!(read_all(&disk, "a").iter().map(|b| b.count_ones()).sum::<u32>(), 1);
        let counts = disk.fault_counts();
        assert_eq!((counts.read_corruptions, counts.bit_rots), (1, 1));
    }

    #[test]
    fn failed_sync_makes_nothing_durable() {
        let disk = MemDisk::new(4);
        disk.create("a").unwrap();
        disk.sync_dir().unwrap();
        disk.append("a", b"data").unwrap();
        disk.set_faults(Faults { sync_fail_per_million: 1_000_000, ..Faults::default() });
        assert!(matches!(disk.sync("a"), Err(DiskError::SyncFailed { .. })));
        disk.crash(CrashMode::DropUnsynced);
        assert_eq!(disk.len("a").unwrap(), 0);
        assert_eq!(disk.fault_counts().sync_failures, 1);
    }

    #[test]
    fn reads_past_the_end_are_errors() {
        let disk = MemDisk::new(5);
        disk.create("a").unwrap();
        disk.append("a", b"abc").unwrap();
        assert!(matches!(disk.read_at("a", 2, 2), Err(DiskError::OutOfRange { .. })));
        assert!(matches!(disk.read_at("a", u64::MAX, 2), Err(DiskError::OutOfRange { .. })));
        assert!(matches!(disk.read_at("missing", 0, 0), Err(DiskError::NotFound { .. })));
    }
}
