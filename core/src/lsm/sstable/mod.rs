//! Sorted string tables: immutable files of sorted entries.
//!
//! Layout: data blocks, then the bloom filter, then the index, then a fixed
//! 56-byte footer. Every block, the filter and the index end in a crc32c; the
//! footer carries its own checksum and a magic number at the very end. The
//! index holds the last key, offset and length of each data block and stays
//! in memory with the filter while the table is open; data blocks go through
//! the block cache.

use std::sync::Arc;

use super::ReadError;
use super::block::{self, Block, BlockError, EntryRef, FLAG_COMPRESSED};
use super::bloom::Bloom;
use super::cache::BlockCache;
use super::memtable::Entry;
use super::wal::to_array;
use crate::disk::Disk;

mod writer;

pub use writer::TableWriter;

pub const FOOTER_BYTES: usize = 56;
const MAGIC: u64 = u64::from_le_bytes(*b"keelsst1");
const FORMAT_VERSION: u32 = 1;

pub fn file_name(id: u64) -> String {
    format!("sst-{id:020}.sst")
}

pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("sst-")?.strip_suffix(".sst")?;
    if digits.len() != 20 {
        return None;
    }
    digits.parse().ok()
}

/// Where the filter and the index are, and what the table holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footer {
    pub bloom_offset: u64,
    pub bloom_len: u32,
    pub index_offset: u64,
    pub index_len: u32,
    pub entries: u64,
    pub tombstones: u64,
}

impl Footer {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.bloom_offset.to_le_bytes());
        out.extend_from_slice(&self.bloom_len.to_le_bytes());
        out.extend_from_slice(&self.index_offset.to_le_bytes());
        out.extend_from_slice(&self.index_len.to_le_bytes());
        out.extend_from_slice(&self.entries.to_le_bytes());
        out.extend_from_slice(&self.tombstones.to_le_bytes());
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        block::seal(out, start);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        assert_eq!(out.len() - start, FOOTER_BYTES);
    }

    pub fn decode(bytes: &[u8]) -> Result<Footer, BlockError> {
        if bytes.len() != FOOTER_BYTES {
            return Err(BlockError::Malformed("footer has the wrong length"));
        }
        let (sealed, magic) = bytes.split_at(FOOTER_BYTES - 8);
        if u64::from_le_bytes(to_array(magic)) != MAGIC {
            return Err(BlockError::Malformed("bad magic number"));
        }
        let payload = block::unseal(sealed)?;
        let u64_at = |at: usize| u64::from_le_bytes(to_array(payload.get(at..at + 8).unwrap_or_default()));
        let u32_at = |at: usize| u32::from_le_bytes(to_array(payload.get(at..at + 4).unwrap_or_default()));
        if u32_at(40) != FORMAT_VERSION {
            return Err(BlockError::Malformed("unknown format version"));
        }
        Ok(Footer {
            bloom_offset: u64_at(0),
            bloom_len: u32_at(8),
            index_offset: u64_at(12),
            index_len: u32_at(20),
            entries: u64_at(24),
            tombstones: u64_at(32),
        })
    }
}

/// Index entry: the last key of a data block and where the block is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub last_key: Vec<u8>,
    pub offset: u64,
    pub len: u32,
}

pub fn encode_index(index: &[IndexEntry], out: &mut Vec<u8>) {
    let start = out.len();
    for entry in index {
        out.extend_from_slice(&u32::try_from(entry.last_key.len()).expect("bounded key").to_le_bytes());
        out.extend_from_slice(&entry.last_key);
        out.extend_from_slice(&entry.offset.to_le_bytes());
        out.extend_from_slice(&entry.len.to_le_bytes());
    }
    out.extend_from_slice(&u32::try_from(index.len()).expect("bounded block count").to_le_bytes());
    block::seal(out, start);
}

/// Decodes an index, checking that keys increase and blocks follow each other.
pub fn decode_index(bytes: &[u8]) -> Result<Vec<IndexEntry>, BlockError> {
    let payload = block::unseal(bytes)?;
    let split = payload.len().checked_sub(4).ok_or(BlockError::Malformed("index without a count"))?;
    let (mut rest, count) = payload.split_at(split);
    let count = u32::from_le_bytes(to_array(count));
    let mut index: Vec<IndexEntry> = Vec::new();
    let mut next_offset = 0u64;
    while !rest.is_empty() {
        let malformed = BlockError::Malformed("index entry out of bounds");
        let key_len = u32::from_le_bytes(to_array(rest.get(..4).ok_or(malformed.clone())?)) as usize;
        let end = key_len.checked_add(12).ok_or(malformed.clone())?;
        let fields = rest.get(4..4 + end).ok_or(malformed)?;
        let (last_key, location) = fields.split_at(key_len);
        let offset = u64::from_le_bytes(to_array(location.get(..8).unwrap_or_default()));
        let len = u32::from_le_bytes(to_array(location.get(8..).unwrap_or_default()));
        if offset != next_offset || index.last().is_some_and(|last| last.last_key.as_slice() >= last_key) {
            return Err(BlockError::Malformed("index entries out of order"));
        }
        next_offset = offset.saturating_add(u64::from(len));
        index.push(IndexEntry { last_key: last_key.to_vec(), offset, len });
        rest = rest.get(4 + end..).unwrap_or_default();
    }
    if index.len() as u64 != u64::from(count) {
        return Err(BlockError::Malformed("index count does not match its entries"));
    }
    Ok(index)
}

/// Decodes an entry's value: `None` for a tombstone, decompressed if it was compressed.
pub fn decode_value(entry: EntryRef<'_>, value_bytes_max: u32) -> Result<Entry, BlockError> {
    if entry.is_tombstone() {
        return Ok(None);
    }
    if entry.flags & FLAG_COMPRESSED == 0 {
        return Ok(Some(entry.value.to_vec()));
    }
    let (Some(len), Some(frame)) = (entry.value.get(..4), entry.value.get(4..)) else {
        return Err(BlockError::Malformed("compressed value without its length"));
    };
    let len = u32::from_le_bytes(to_array(len));
    if len > value_bytes_max {
        return Err(BlockError::Malformed("compressed value longer than the maximum"));
    }
    match decompress(frame, len as usize) {
        Ok(value) if value.len() == len as usize => Ok(Some(value)),
        _ => Err(BlockError::Malformed("compressed value does not decompress")),
    }
}

thread_local! {
    /// One zstd context per reading thread, made at its first compressed
    /// value and kept: making one probes the CPU's features, which traps to
    /// the hypervisor on a virtual machine and cost more than the reads it
    /// served (a tenth of a loaded node's CPU time, on its event loop).
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn decompress(frame: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match &mut *slot {
            Some(decompressor) => decompressor,
            empty => empty.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.decompress(frame, capacity)
    })
}

/// What reads need besides the table: the disk, the cache and a corruption counter.
#[derive(Debug)]
pub struct Reads<'a> {
    pub disk: &'a dyn Disk,
    pub cache: &'a mut BlockCache,
    pub corruption_detected: &'a mut u64,
    /// Compactions read around the cache so that they do not evict hot blocks.
    pub fill_cache: bool,
}

/// Reads and decodes a checksummed range, reading once more before calling it corrupt.
pub fn read_verified<T>(
    disk: &dyn Disk,
    file: &str,
    offset: u64,
    len: u64,
    corruption_detected: &mut u64,
    decode: impl Fn(Vec<u8>) -> Result<T, BlockError>,
) -> Result<T, ReadError> {
    let mut error = BlockError::Checksum;
    for _attempt in 0..2 {
        match decode(disk.read_at(file, offset, len)?) {
            Ok(value) => return Ok(value),
            Err(failure) => {
                *corruption_detected += 1;
                error = failure;
            }
        }
    }
    Err(ReadError::Corrupt { file: file.to_owned(), offset, reason: error.to_string() })
}

/// An open table: its index and filter in memory.
#[derive(Debug)]
pub struct Table {
    pub id: u64,
    pub file: String,
    pub footer: Footer,
    index: Vec<IndexEntry>,
    bloom: Bloom,
}

impl Table {
    pub fn open(disk: &dyn Disk, id: u64, corruption_detected: &mut u64) -> Result<Table, ReadError> {
        let file = file_name(id);
        let len = disk.len(&file)?;
        let corrupt =
            |reason: &str| ReadError::Corrupt { file: file.clone(), offset: 0, reason: reason.into() };
        let footer_at =
            len.checked_sub(FOOTER_BYTES as u64).ok_or_else(|| corrupt("shorter than a footer"))?;
        let footer = read_verified(disk, &file, footer_at, FOOTER_BYTES as u64, corruption_detected, |b| {
            Footer::decode(&b)
        })?;
        let bloom_end = footer.bloom_offset.checked_add(u64::from(footer.bloom_len));
        let index_end = footer.index_offset.checked_add(u64::from(footer.index_len));
        if bloom_end != Some(footer.index_offset) || index_end != Some(footer_at) {
            return Err(corrupt("footer points outside the file"));
        }
        let (offset, len) = (footer.bloom_offset, u64::from(footer.bloom_len));
        let bloom = read_verified(disk, &file, offset, len, corruption_detected, |b| Bloom::decode(&b))?;
        let (offset, len) = (footer.index_offset, u64::from(footer.index_len));
        let index = read_verified(disk, &file, offset, len, corruption_detected, |b| decode_index(&b))?;
        if index.last().map_or(0, |last| last.offset + u64::from(last.len)) != footer.bloom_offset {
            return Err(corrupt("index does not cover the data blocks"));
        }
        Ok(Table { id, file, footer, index, bloom })
    }

    pub fn block_count(&self) -> usize {
        self.index.len()
    }

    pub fn last_key(&self) -> &[u8] {
        self.index.last().map_or(&[], |entry| entry.last_key.as_slice())
    }

    /// The keys block `i` may hold lie after this one (`None`: from the
    /// table's start) and up to the block's last key.
    pub fn block_keys(&self, i: usize) -> (Option<&[u8]>, Option<&[u8]>) {
        let before = i.checked_sub(1).and_then(|prior| self.index.get(prior));
        let last = self.index.get(i).map(|entry| entry.last_key.as_slice());
        (before.map(|entry| entry.last_key.as_slice()), last)
    }

    /// The first block that may hold `key` or a larger key.
    pub fn block_for(&self, key: &[u8]) -> usize {
        self.index.partition_point(|entry| entry.last_key.as_slice() < key)
    }

    /// The size of the table's file.
    pub fn file_bytes(&self) -> u64 {
        self.footer.index_offset + u64::from(self.footer.index_len) + FOOTER_BYTES as u64
    }

    /// Memory held by the index and the filter.
    pub fn memory_bytes(&self) -> u64 {
        let index: usize = self.index.iter().map(|entry| entry.last_key.len() + 40).sum();
        index as u64 + self.bloom.bytes()
    }

    pub fn load_block(&self, i: usize, reads: &mut Reads<'_>) -> Result<Arc<Block>, ReadError> {
        let Some(entry) = self.index.get(i) else {
            return Err(ReadError::Corrupt {
                file: self.file.clone(),
                offset: 0,
                reason: "no such block".into(),
            });
        };
        let key = (self.id, entry.offset);
        if reads.fill_cache {
            if let Some(block) = reads.cache.get(key) {
                return Ok(block);
            }
        }
        let len = u64::from(entry.len);
        let block = read_verified(
            reads.disk,
            &self.file,
            entry.offset,
            len,
            reads.corruption_detected,
            Block::decode,
        )?;
        let block = Arc::new(block);
        if reads.fill_cache {
            reads.cache.insert(key, Arc::clone(&block));
        }
        Ok(block)
    }

    /// `None` if the table has nothing for `key`; otherwise its value or tombstone.
    pub fn get(
        &self,
        key: &[u8],
        hash: u64,
        value_bytes_max: u32,
        reads: &mut Reads<'_>,
    ) -> Result<Option<Entry>, ReadError> {
        if !self.bloom.may_contain(hash) {
            return Ok(None);
        }
        let i = self.block_for(key);
        if i >= self.index.len() {
            return Ok(None);
        }
        let block = self.load_block(i, reads)?;
        let Some(entry) = block.find(key) else { return Ok(None) };
        let offset = self.index.get(i).map_or(0, |entry| entry.offset);
        decode_value(entry, value_bytes_max).map(Some).map_err(|error| ReadError::Corrupt {
            file: self.file.clone(),
            offset,
            reason: error.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use crate::lsm::EngineConfig;
    use crate::lsm::bloom;
    use crate::lsm::manifest::TableMeta;

    fn reads<'a>(disk: &'a MemDisk, cache: &'a mut BlockCache, counter: &'a mut u64) -> Reads<'a> {
        Reads { disk, cache, corruption_detected: counter, fill_cache: true }
    }

    fn write_table(disk: &MemDisk, config: &EngineConfig, count: u32) -> TableMeta {
        let mut writer = TableWriter::create(disk, 7, config).unwrap();
        for i in 0..count {
            let key = format!("key{i:06}");
            let value = if i % 10 == 3 { None } else { Some(vec![(i % 251) as u8; (i % 300) as usize]) };
            writer.add(disk, key.as_bytes(), value.as_deref()).unwrap();
        }
        writer.finish(disk).unwrap().unwrap().0
    }

    #[test]
    fn write_then_read_every_key() {
        let disk = MemDisk::new(1);
        let config =
            EngineConfig { block_bytes: 512, compress_values_over_bytes: 100, ..EngineConfig::default() };
        let meta = write_table(&disk, &config, 2_000);
        assert_eq!((meta.entries, meta.tombstones), (2_000, 200));
        assert_eq!(meta.first_key, b"key000000");
        assert_eq!(meta.bytes, disk.len(&file_name(7)).unwrap());
        let mut counter = 0;
        let table = Table::open(&disk, 7, &mut counter).unwrap();
        assert!(table.block_count() > 100);
        let mut cache = BlockCache::new(1 << 20);
        let mut reads = reads(&disk, &mut cache, &mut counter);
        for i in 0..2_000u32 {
            let key = format!("key{i:06}");
            let got = table.get(key.as_bytes(), bloom::hash(key.as_bytes()), 1 << 20, &mut reads).unwrap();
            let expected = if i % 10 == 3 { None } else { Some(vec![(i % 251) as u8; (i % 300) as usize]) };
            assert_eq!(got, Some(expected), "key {i}");
        }
        let absent = table.get(b"key1", bloom::hash(b"key1"), 1 << 20, &mut reads).unwrap();
        assert_eq!(absent, None);
        assert_eq!(counter, 0);
    }

    #[test]
    fn corrupt_blocks_are_reported_never_returned() {
        let disk = MemDisk::new(2);
        let config = EngineConfig { block_bytes: 512, ..EngineConfig::default() };
        write_table(&disk, &config, 500);
        let mut counter = 0;
        let table = Table::open(&disk, 7, &mut counter).unwrap();
        disk.corrupt_at(&file_name(7), 100, 2).unwrap();
        let mut cache = BlockCache::new(1 << 20);
        let mut reads = reads(&disk, &mut cache, &mut counter);
        let key = b"key000000";
        let error = table.get(key, bloom::hash(key), 1 << 20, &mut reads).unwrap_err();
        assert!(matches!(error, ReadError::Corrupt { .. }));
        assert_eq!(counter, 2, "read twice before giving up");
    }

    #[test]
    fn footer_round_trip_and_rejects_damage() {
        let footer = Footer {
            bloom_offset: 1,
            bloom_len: 2,
            index_offset: 3,
            index_len: 4,
            entries: 5,
            tombstones: 6,
        };
        let mut bytes = Vec::new();
        footer.encode(&mut bytes);
        assert_eq!(Footer::decode(&bytes), Ok(footer));
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(Footer::decode(&damaged).is_err());
        }
    }

    #[test]
    fn index_round_trip() {
        let index = vec![
            IndexEntry { last_key: b"b".to_vec(), offset: 0, len: 10 },
            IndexEntry { last_key: b"d".to_vec(), offset: 10, len: 20 },
        ];
        let mut bytes = Vec::new();
        encode_index(&index, &mut bytes);
        assert_eq!(decode_index(&bytes).unwrap(), index);
        assert!(decode_index(&bytes[1..]).is_err());
    }
}
