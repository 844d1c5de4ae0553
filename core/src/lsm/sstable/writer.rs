//! Writing a table: entries in key order in, a synced file and its description out.

use super::{Footer, IndexEntry, Table, encode_index, file_name};
use crate::disk::{Disk, DiskError};
use crate::lsm::EngineConfig;
use crate::lsm::block::{BlockBuilder, FLAG_COMPRESSED, FLAG_TOMBSTONE};
use crate::lsm::bloom::{self, Bloom};
use crate::lsm::manifest::TableMeta;

/// Encoded bytes gathered in memory before one append.
const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// A table being written is synced every this many bytes, not only at the
/// end: a large table left dirty in the page cache makes the kernel throttle
/// every writer on the machine, and makes each fsync (the log's too) wait
/// for it, while the node's event loop must keep going.
const SYNC_EVERY_BYTES: u64 = 4 << 20;

/// Writes one table, appending in large chunks; `finish` syncs it.
#[derive(Debug)]
pub struct TableWriter {
    id: u64,
    file: String,
    block: BlockBuilder,
    out: Vec<u8>,
    written: u64,
    index: Vec<IndexEntry>,
    hashes: Vec<u64>,
    first_key: Option<Vec<u8>>,
    tombstones: u64,
    block_bytes: usize,
    compress_over: usize,
    /// Made at the first value worth compressing, then kept for the table:
    /// making a zstd context probes the CPU's features, which traps to the
    /// hypervisor on a virtual machine and costs more than compressing a
    /// value (a quarter of a loaded node's CPU time, before it was kept).
    compressor: Option<Compressor>,
    scratch: Vec<u8>,
}

struct Compressor(zstd::bulk::Compressor<'static>);

impl core::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Compressor")
    }
}

impl TableWriter {
    pub fn create(disk: &dyn Disk, id: u64, config: &EngineConfig) -> Result<TableWriter, DiskError> {
        let file = file_name(id);
        disk.create(&file)?;
        Ok(TableWriter {
            id,
            file,
            block: BlockBuilder::default(),
            out: Vec::new(),
            written: 0,
            index: Vec::new(),
            hashes: Vec::new(),
            first_key: None,
            tombstones: 0,
            block_bytes: config.block_bytes as usize,
            compress_over: config.compress_values_over_bytes as usize,
            compressor: None,
            scratch: Vec::new(),
        })
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Bytes the table takes so far.
    pub fn bytes(&self) -> u64 {
        self.written + self.out.len() as u64 + self.block.bytes() as u64
    }

    /// Adds a value (`Some`) or a tombstone; keys must increase.
    pub fn add(&mut self, disk: &dyn Disk, key: &[u8], value: Option<&[u8]>) -> Result<(), DiskError> {
        let Some(value) = value else {
            return self.add_encoded(disk, key, FLAG_TOMBSTONE, &[]);
        };
        if value.len() <= self.compress_over {
            return self.add_encoded(disk, key, 0, value);
        }
        let mut scratch = core::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(&u32::try_from(value.len()).expect("bounded value").to_le_bytes());
        let compressed = match &mut self.compressor {
            Some(Compressor(compressor)) => compressor.compress(value),
            None => zstd::bulk::Compressor::new(1).and_then(|mut compressor| {
                let compressed = compressor.compress(value);
                self.compressor = Some(Compressor(compressor));
                compressed
            }),
        };
        // A value that does not compress, or a context that could not be
        // made, is stored as it is.
        let result = match compressed {
            Ok(frame) if frame.len() + 4 < value.len() => {
                scratch.extend_from_slice(&frame);
                self.add_encoded(disk, key, FLAG_COMPRESSED, &scratch)
            }
            _ => self.add_encoded(disk, key, 0, value),
        };
        self.scratch = scratch;
        result
    }

    /// Adds an entry already in table encoding (compaction copies values as they are).
    pub fn add_encoded(
        &mut self,
        disk: &dyn Disk,
        key: &[u8],
        flags: u8,
        value: &[u8],
    ) -> Result<(), DiskError> {
        if !self.block.is_empty() && self.block.bytes() + 9 + 4 + key.len() + value.len() > self.block_bytes {
            self.finish_block(disk)?;
        }
        if self.first_key.is_none() {
            self.first_key = Some(key.to_vec());
        }
        self.tombstones += u64::from(flags & FLAG_TOMBSTONE != 0);
        self.hashes.push(bloom::hash(key));
        self.block.add(key, flags, value);
        Ok(())
    }

    fn finish_block(&mut self, disk: &dyn Disk) -> Result<(), DiskError> {
        let offset = self.written + self.out.len() as u64;
        let last_key = self.block.last_key().to_vec();
        let start = self.out.len();
        self.block.finish_into(&mut self.out);
        let len = u32::try_from(self.out.len() - start).expect("blocks stay far below 4 GiB");
        self.index.push(IndexEntry { last_key, offset, len });
        if self.out.len() >= WRITE_CHUNK_BYTES {
            disk.append(&self.file, &self.out)?;
            let before = self.written;
            self.written += self.out.len() as u64;
            self.out.clear();
            if before / SYNC_EVERY_BYTES != self.written / SYNC_EVERY_BYTES {
                disk.sync(&self.file)?;
            }
        }
        Ok(())
    }

    /// Writes the filter, index and footer, syncs the file and describes it.
    /// Returns `None` (and removes the file) if no entry was added.
    pub fn finish(mut self, disk: &dyn Disk) -> Result<Option<(TableMeta, Table)>, DiskError> {
        let Some(first_key) = self.first_key.take() else {
            disk.remove(&self.file)?;
            return Ok(None);
        };
        let last_key = self.block.last_key().to_vec();
        self.finish_block(disk)?;
        let mut footer =
            Footer { tombstones: self.tombstones, entries: self.hashes.len() as u64, ..Footer::default() };
        footer.bloom_offset = self.written + self.out.len() as u64;
        let bloom = Bloom::build(&self.hashes);
        bloom.encode(&mut self.out);
        footer.index_offset = self.written + self.out.len() as u64;
        footer.bloom_len =
            u32::try_from(footer.index_offset - footer.bloom_offset).expect("filter below 4 GiB");
        encode_index(&self.index, &mut self.out);
        let footer_at = self.written + self.out.len() as u64;
        footer.index_len = u32::try_from(footer_at - footer.index_offset).expect("index below 4 GiB");
        footer.encode(&mut self.out);
        disk.append(&self.file, &self.out)?;
        disk.sync(&self.file)?;
        let bytes = self.written + self.out.len() as u64;
        let meta = TableMeta {
            id: self.id,
            bytes,
            first_key,
            last_key,
            entries: footer.entries,
            tombstones: footer.tombstones,
        };
        Ok(Some((meta, Table { id: self.id, file: self.file, footer, index: self.index, bloom })))
    }
}
