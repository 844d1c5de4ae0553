//! The merge iterator: one ordered stream out of the memtable and the tables.
//!
//! Sources are ordered newest first (the memtable, level-0 tables newest
//! first, then one source per deeper level). At each step the smallest key
//! wins; among equal keys the newest source wins and the others skip past it.
//! The merge copies only the winning entry. Table sources read blocks through
//! the same [`Reads`] as point lookups, so every block they see is verified.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

use super::block::{Block, FLAG_TOMBSTONE};
use super::memtable::{Entry, Memtable, range_is_empty};
use super::sstable::{Reads, Table};
use super::{Pair, ReadError};

/// Memtable entries are copied out in chunks that start small (short scans
/// are common) and double up to this many.
const MEMTABLE_CHUNK_MAX: usize = 256;
const MEMTABLE_CHUNK_MIN: usize = 16;

/// One merged entry: the key, the table flags and the value as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: Vec<u8>,
    pub flags: u8,
    pub value: Vec<u8>,
}

impl Item {
    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }
}

#[derive(Debug)]
pub struct Merge {
    sources: Vec<Source>,
    skip_tombstones: bool,
    started: bool,
}

#[derive(Debug)]
enum Source {
    Memtable(MemSource),
    Tables(TableSource),
}

#[derive(Debug)]
struct MemSource {
    chunk: VecDeque<(Vec<u8>, Entry)>,
    resume: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    exhausted: bool,
    chunk_len: usize,
}

/// A run of tables with disjoint, increasing key ranges (a level, or one table).
#[derive(Debug)]
struct TableSource {
    tables: Vec<Arc<Table>>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    table_pos: usize,
    block_pos: usize,
    block: Option<Arc<Block>>,
    entry_pos: usize,
}

impl Merge {
    /// A merge over `(start, end)`; `runs` are table runs newest first.
    pub fn new(
        with_memtable: bool,
        runs: Vec<Vec<Arc<Table>>>,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        skip_tombstones: bool,
    ) -> Merge {
        let empty = range_is_empty(start.as_ref().map(Vec::as_slice), end.as_ref().map(Vec::as_slice));
        let mut sources = Vec::new();
        if empty {
            return Merge { sources, skip_tombstones, started: true };
        }
        if with_memtable {
            let (resume, end) = (start.clone(), end.clone());
            sources.push(Source::Memtable(MemSource {
                chunk: VecDeque::new(),
                resume,
                end,
                exhausted: false,
                chunk_len: MEMTABLE_CHUNK_MIN,
            }));
        }
        for tables in runs.into_iter().filter(|tables| !tables.is_empty()) {
            let (start, end) = (start.clone(), end.clone());
            let source =
                TableSource { tables, start, end, table_pos: 0, block_pos: 0, block: None, entry_pos: 0 };
            sources.push(Source::Tables(source));
        }
        Merge { sources, skip_tombstones, started: false }
    }

    /// The next entry in key order, or `None` at the end.
    pub fn next(&mut self, memtable: &Memtable, reads: &mut Reads<'_>) -> Result<Option<Item>, ReadError> {
        if !self.started {
            for source in &mut self.sources {
                source.position(memtable, reads)?;
            }
            self.started = true;
        }
        loop {
            let mut winner: Option<(usize, &[u8])> = None;
            for (i, source) in self.sources.iter().enumerate() {
                if let Some(key) = source.key() {
                    if winner.is_none_or(|(_, best)| key < best) {
                        winner = Some((i, key));
                    }
                }
            }
            let Some((i, _)) = winner else { return Ok(None) };
            let Some(item) = self.sources.get(i).and_then(Source::item) else { return Ok(None) };
            for source in &mut self.sources {
                if source.key() == Some(item.key.as_slice()) {
                    source.advance(memtable, reads)?;
                }
            }
            if !(self.skip_tombstones && item.is_tombstone()) {
                return Ok(Some(item));
            }
        }
    }
}

impl Source {
    fn key(&self) -> Option<&[u8]> {
        match self {
            Source::Memtable(source) => source.chunk.front().map(|(key, _)| key.as_slice()),
            Source::Tables(source) => source.block.as_ref()?.entry(source.entry_pos).map(|entry| entry.key),
        }
    }

    fn item(&self) -> Option<Item> {
        match self {
            Source::Memtable(source) => source.chunk.front().map(|(key, entry)| Item {
                key: key.clone(),
                flags: if entry.is_some() { 0 } else { FLAG_TOMBSTONE },
                value: entry.clone().unwrap_or_default(),
            }),
            Source::Tables(source) => source.block.as_ref()?.entry(source.entry_pos).map(|entry| Item {
                key: entry.key.to_vec(),
                flags: entry.flags,
                value: entry.value.to_vec(),
            }),
        }
    }

    fn position(&mut self, memtable: &Memtable, reads: &mut Reads<'_>) -> Result<(), ReadError> {
        match self {
            Source::Memtable(source) => {
                source.refill(memtable);
                Ok(())
            }
            Source::Tables(source) => source.position(reads),
        }
    }

    fn advance(&mut self, memtable: &Memtable, reads: &mut Reads<'_>) -> Result<(), ReadError> {
        match self {
            Source::Memtable(source) => {
                source.chunk.pop_front();
                if source.chunk.is_empty() {
                    source.refill(memtable);
                }
                Ok(())
            }
            Source::Tables(source) => {
                source.entry_pos += 1;
                source.settle(reads)
            }
        }
    }
}

impl MemSource {
    fn refill(&mut self, memtable: &Memtable) {
        if self.exhausted {
            return;
        }
        let start = self.resume.as_ref().map(Vec::as_slice);
        let chunk = memtable.range_chunk(start, self.end.as_ref().map(Vec::as_slice), self.chunk_len);
        self.exhausted = chunk.len() < self.chunk_len;
        self.chunk_len = (self.chunk_len * 2).min(MEMTABLE_CHUNK_MAX);
        if let Some((last, _)) = chunk.last() {
            self.resume = Bound::Excluded(last.clone());
        }
        self.chunk = chunk.into();
    }
}

impl TableSource {
    fn position(&mut self, reads: &mut Reads<'_>) -> Result<(), ReadError> {
        let start = match &self.start {
            Bound::Included(key) | Bound::Excluded(key) => Some(key.as_slice()),
            Bound::Unbounded => None,
        };
        self.table_pos = start.map_or(0, |key| self.tables.partition_point(|table| table.last_key() < key));
        let Some(table) = self.tables.get(self.table_pos) else { return Ok(()) };
        self.block_pos = start.map_or(0, |key| table.block_for(key));
        if self.block_pos >= table.block_count() {
            return Ok(());
        }
        let block = table.load_block(self.block_pos, reads)?;
        self.entry_pos = start.map_or(0, |key| block.seek(key));
        if let Bound::Excluded(key) = &self.start {
            if block.entry(self.entry_pos).is_some_and(|entry| entry.key == key.as_slice()) {
                self.entry_pos += 1;
            }
        }
        self.block = Some(block);
        self.settle(reads)
    }

    /// Moves to the next entry that exists, loading blocks as needed, and ends
    /// the source once its key passes `end`.
    fn settle(&mut self, reads: &mut Reads<'_>) -> Result<(), ReadError> {
        loop {
            let Some(block) = &self.block else { return Ok(()) };
            if let Some(entry) = block.entry(self.entry_pos) {
                let past_end = match &self.end {
                    Bound::Included(end) => entry.key > end.as_slice(),
                    Bound::Excluded(end) => entry.key >= end.as_slice(),
                    Bound::Unbounded => false,
                };
                if past_end {
                    self.block = None;
                }
                return Ok(());
            }
            self.block = None;
            self.entry_pos = 0;
            self.block_pos += 1;
            let Some(mut table) = self.tables.get(self.table_pos) else { return Ok(()) };
            if self.block_pos >= table.block_count() {
                self.table_pos += 1;
                self.block_pos = 0;
                let Some(next) = self.tables.get(self.table_pos) else { return Ok(()) };
                table = next;
            }
            self.block = Some(table.load_block(self.block_pos, reads)?);
        }
    }
}

/// An ordered iterator over live pairs; borrows the engine while it runs.
#[derive(Debug)]
pub struct Iter<'a> {
    pub(super) engine: &'a mut super::Engine,
    pub(super) merge: Merge,
    pub(super) failed: bool,
}

impl Iterator for Iter<'_> {
    type Item = Result<Pair, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = self.engine.merge_next(&mut self.merge);
        match result {
            Ok(Some(pair)) => Some(Ok(pair)),
            Ok(None) => None,
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}
