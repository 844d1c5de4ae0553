//! The manifest: which tables are live, at which level, and how much of the
//! WAL they cover.
//!
//! It is one postcard value in a checksummed frame ([`crate::frame`]), in the
//! file `MANIFEST`. A change writes `MANIFEST.tmp`, syncs it, renames it over
//! `MANIFEST` and syncs the directory, so a crash leaves either the old or the
//! new manifest, never a mixture.

use serde::{Deserialize, Serialize};

use crate::disk::{Disk, DiskError};
use crate::frame::{self, FrameError};

pub const FILE: &str = "MANIFEST";
pub const TEMP_FILE: &str = "MANIFEST.tmp";
/// Levels 0 to 6. Level 0 holds flushed tables, newest first, which may
/// overlap; every deeper level is sorted by key and its tables never overlap.
pub const LEVELS: usize = 7;
const MAGIC: u64 = u64::from_le_bytes(*b"keelman1");
const BYTES_MAX: u32 = 256 << 20;

/// One table as the manifest records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMeta {
    pub id: u64,
    pub bytes: u64,
    pub first_key: Vec<u8>,
    pub last_key: Vec<u8>,
    pub entries: u64,
    pub tombstones: u64,
}

impl TableMeta {
    /// True if the table's key range meets `[first, last]`.
    pub fn overlaps(&self, first: &[u8], last: &[u8]) -> bool {
        self.first_key.as_slice() <= last && first <= self.last_key.as_slice()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub magic: u64,
    pub next_table_id: u64,
    /// WAL files numbered below this hold only writes that are in tables.
    pub wal_first: u64,
    /// Every write up to this Lsn is in a table.
    pub flushed_lsn: u64,
    pub levels: Vec<Vec<TableMeta>>,
}

impl Default for Manifest {
    fn default() -> Manifest {
        Manifest {
            magic: MAGIC,
            next_table_id: 0,
            wal_first: 0,
            flushed_lsn: 0,
            levels: vec![Vec::new(); LEVELS],
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("manifest is cut short")]
    Truncated,
    #[error("manifest is malformed: {0}")]
    Malformed(&'static str),
}

impl Manifest {
    pub fn tables(&self) -> impl Iterator<Item = (usize, &TableMeta)> {
        self.levels.iter().enumerate().flat_map(|(level, tables)| tables.iter().map(move |t| (level, t)))
    }

    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels.get(level).map_or(0, |tables| tables.iter().map(|t| t.bytes).sum())
    }

    pub fn encode(&self) -> Vec<u8> {
        frame::to_vec(self, BYTES_MAX).expect("a manifest stays far below its maximum")
    }

    /// Decodes a manifest and checks the invariants the engine relies on.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let (manifest, used): (Manifest, usize) =
            frame::decode(bytes, BYTES_MAX)?.ok_or(ManifestError::Truncated)?;
        if used != bytes.len() {
            return Err(ManifestError::Malformed("bytes after the manifest"));
        }
        if manifest.magic != MAGIC {
            return Err(ManifestError::Malformed("bad magic number"));
        }
        manifest.check().map_err(ManifestError::Malformed)?;
        Ok(manifest)
    }

    /// Level count, key order inside each table and level, and unique table ids.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.levels.len() != LEVELS {
            return Err("wrong number of levels");
        }
        let mut ids: Vec<u64> = self.tables().map(|(_, table)| table.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|pair| pair.first() == pair.get(1)) {
            return Err("a table is listed twice");
        }
        if ids.last().is_some_and(|&max| max >= self.next_table_id) {
            return Err("a table id is not below the next id");
        }
        if self.tables().any(|(_, table)| table.first_key > table.last_key) {
            return Err("a table's first key is after its last");
        }
        for tables in self.levels.iter().skip(1) {
            if tables.windows(2).any(|pair| match pair {
                [left, right] => left.last_key >= right.first_key,
                _ => false,
            }) {
                return Err("tables of a level overlap or are out of order");
            }
        }
        Ok(())
    }

    /// Reads `MANIFEST`, reading it once more if it fails its checksum.
    pub fn load(disk: &dyn Disk, corruption_detected: &mut u64) -> Result<Option<Manifest>, LoadError> {
        if !disk.list()?.iter().any(|name| name == FILE) {
            return Ok(None);
        }
        let mut error = ManifestError::Truncated;
        for _attempt in 0..2 {
            let len = disk.len(FILE)?;
            match Manifest::decode(&disk.read_at(FILE, 0, len)?) {
                Ok(manifest) => return Ok(Some(manifest)),
                Err(failure) => {
                    *corruption_detected += 1;
                    error = failure;
                }
            }
        }
        Err(LoadError::Corrupt(error))
    }

    /// Replaces the manifest on disk atomically.
    pub fn store(&self, disk: &dyn Disk) -> Result<(), DiskError> {
        debug_assert_eq!(self.check(), Ok(()));
        disk.create(TEMP_FILE)?;
        disk.append(TEMP_FILE, &self.encode())?;
        disk.sync(TEMP_FILE)?;
        disk.rename(TEMP_FILE, FILE)?;
        disk.sync_dir()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("manifest is corrupt: {0}")]
    Corrupt(ManifestError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{CrashMode, MemDisk};

    fn sample() -> Manifest {
        let mut manifest =
            Manifest { next_table_id: 3, wal_first: 2, flushed_lsn: 40, ..Manifest::default() };
        manifest.levels[0].push(TableMeta {
            id: 2,
            bytes: 10,
            first_key: b"a".to_vec(),
            last_key: b"z".to_vec(),
            ..TableMeta::default()
        });
        manifest.levels[1].push(TableMeta {
            id: 0,
            bytes: 10,
            first_key: b"a".to_vec(),
            last_key: b"c".to_vec(),
            ..TableMeta::default()
        });
        manifest.levels[1].push(TableMeta {
            id: 1,
            bytes: 10,
            first_key: b"d".to_vec(),
            last_key: b"f".to_vec(),
            ..TableMeta::default()
        });
        manifest
    }

    #[test]
    fn store_and_load_survive_a_crash() {
        let disk = MemDisk::new(1);
        let mut counter = 0;
        assert!(Manifest::load(&disk, &mut counter).unwrap().is_none());
        sample().store(&disk).unwrap();
        disk.crash(CrashMode::TornTail);
        assert_eq!(Manifest::load(&disk, &mut counter).unwrap(), Some(sample()));
        assert_eq!(counter, 0);
    }

    #[test]
    fn decode_rejects_damage_and_broken_invariants() {
        let bytes = sample().encode();
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(Manifest::decode(&damaged).is_err(), "bit {bit}");
        }
        let mut overlapping = sample();
        overlapping.levels[1][1].first_key = b"b".to_vec();
        assert!(Manifest::decode(&overlapping.encode()).is_err());
        let mut stale_id = sample();
        stale_id.next_table_id = 2;
        assert!(Manifest::decode(&stale_id.encode()).is_err());
    }
}
