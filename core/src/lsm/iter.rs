//! The merge iterator: one ordered stream out of the memtable and the tables.
//!
//! Sources are ordered newest first (the memtable, level-0 tables newest
//! first, then one source per deeper level). At each step the smallest key
//! wins; among equal keys the newest source wins and the others skip past it.
//! The merge copies only the winning entry: the memtable source walks the
//! memtable's own range iterator, and table sources decode entries in place
//! in their cached blocks. Table sources read blocks through the same
//! [`Reads`] as point lookups, so every block they see is verified.

use std::ops::Bound;
use std::sync::Arc;

use super::block::{Block, EntryRef, FLAG_TOMBSTONE};
use super::memtable::{self, Entry, Memtable, range_is_empty};
use super::sstable::{Reads, Table, decode_value};
use super::{Pair, ReadError};

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

/// A merge that borrows its memtables, if it has any, for `'m`.
#[derive(Debug)]
pub struct Merge<'m> {
    sources: Vec<Source<'m>>,
    skip_tombstones: bool,
    started: bool,
    /// Sources tied on the current key; kept to reuse its allocation.
    tied: Vec<usize>,
}

#[derive(Debug)]
enum Source<'m> {
    Memtable(MemSource<'m>),
    Tables(TableSource),
}

#[derive(Debug)]
struct MemSource<'m> {
    range: memtable::Range<'m>,
    current: Option<(&'m [u8], &'m Entry)>,
}

/// A run of tables with disjoint, increasing key ranges (a level, or one table).
#[derive(Debug)]
struct TableSource {
    tables: Vec<Arc<Table>>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    /// Whether a block that does not read is passed over instead of
    /// ending the merge with the error (the read counts the corruption).
    skip_unreadable: bool,
    /// The key ranges of blocks passed over, not yet behind the merge:
    /// after the first key (`None`: from the start), up to the second.
    skipped: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    table_pos: usize,
    block_pos: usize,
    block: Option<Arc<Block>>,
    entry_pos: usize,
}

impl<'m> Merge<'m> {
    /// A merge over `(start, end)` of `memtables` and `runs` of tables, all
    /// newest first.
    pub fn new(
        memtables: &[&'m Memtable],
        runs: Vec<Vec<Arc<Table>>>,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        skip_tombstones: bool,
    ) -> Merge<'m> {
        let empty = range_is_empty(start.as_ref().map(Vec::as_slice), end.as_ref().map(Vec::as_slice));
        let mut sources = Vec::new();
        if empty {
            return Merge { sources, skip_tombstones, started: true, tied: Vec::new() };
        }
        for memtable in memtables {
            let range = memtable.range(start.as_ref().map(Vec::as_slice), end.as_ref().map(Vec::as_slice));
            sources.push(Source::Memtable(MemSource { range, current: None }));
        }
        for tables in runs.into_iter().filter(|tables| !tables.is_empty()) {
            let (start, end) = (start.clone(), end.clone());
            let source = TableSource {
                tables,
                start,
                end,
                skip_unreadable: false,
                skipped: Vec::new(),
                table_pos: 0,
                block_pos: 0,
                block: None,
                entry_pos: 0,
            };
            sources.push(Source::Tables(source));
        }
        Merge { sources, skip_tombstones, started: false, tied: Vec::new() }
    }

    /// The merge passes over table blocks that do not read instead of
    /// failing: their entries are left out, and an older version of a key
    /// one held may show in its place. For readers that repair what they
    /// find missing or different (anti-entropy), not for ones that rewrite
    /// what they read.
    pub fn skipping_unreadable(mut self) -> Self {
        for source in &mut self.sources {
            if let Source::Tables(source) = source {
                source.skip_unreadable = true;
            }
        }
        self
    }

    /// Whether `key` lies in the key range of a block passed over: its
    /// newest version may be in that block, whatever the merge returned.
    /// Asked in key order, for each key the merge returns.
    pub fn in_skipped_block(&mut self, key: &[u8]) -> bool {
        let mut inside = false;
        for source in &mut self.sources {
            let Source::Tables(source) = source else { continue };
            source.skipped.retain(|(_, last)| last.as_slice() >= key);
            inside |=
                source.skipped.iter().any(|(after, _)| after.as_deref().is_none_or(|after| after < key));
        }
        inside
    }

    /// The next entry in key order, or `None` at the end.
    pub fn next(&mut self, reads: &mut Reads<'_>) -> Result<Option<Item>, ReadError> {
        if !self.started {
            for source in &mut self.sources {
                source.advance_or_position(reads, true)?;
            }
            self.started = true;
        }
        loop {
            // One comparison per source finds the smallest key and every source tied on it.
            let mut winner: Option<(usize, &[u8])> = None;
            self.tied.clear();
            for (i, source) in self.sources.iter().enumerate() {
                let Some(key) = source.key() else { continue };
                match winner.map(|(_, best)| key.cmp(best)) {
                    None | Some(core::cmp::Ordering::Less) => {
                        winner = Some((i, key));
                        self.tied.clear();
                    }
                    Some(core::cmp::Ordering::Equal) => self.tied.push(i),
                    Some(core::cmp::Ordering::Greater) => {}
                }
            }
            let Some((i, _)) = winner else { return Ok(None) };
            let Some(source) = self.sources.get_mut(i) else { return Ok(None) };
            let Some(item) = source.take(reads)? else { return Ok(None) };
            for &i in &self.tied {
                if let Some(source) = self.sources.get_mut(i) {
                    source.advance_or_position(reads, false)?;
                }
            }
            if !(self.skip_tombstones && item.is_tombstone()) {
                return Ok(Some(item));
            }
        }
    }
}

impl Source<'_> {
    fn key(&self) -> Option<&[u8]> {
        match self {
            Source::Memtable(source) => source.current.map(|(key, _)| key),
            Source::Tables(source) => source.block.as_ref()?.entry(source.entry_pos).map(|entry| entry.key),
        }
    }

    /// The current entry, owned, and the source moved past it.
    fn take(&mut self, reads: &mut Reads<'_>) -> Result<Option<Item>, ReadError> {
        let item = match self {
            Source::Memtable(source) => source.current.map(|(key, entry)| Item {
                key: key.to_vec(),
                flags: if entry.is_some() { 0 } else { FLAG_TOMBSTONE },
                value: entry.clone().unwrap_or_default(),
            }),
            Source::Tables(source) => {
                source.block.as_ref().and_then(|block| block.entry(source.entry_pos)).map(|entry| Item {
                    key: entry.key.to_vec(),
                    flags: entry.flags,
                    value: entry.value.to_vec(),
                })
            }
        };
        self.advance_or_position(reads, false)?;
        Ok(item)
    }

    /// Moves to the first entry in range (`first`) or past the current one.
    fn advance_or_position(&mut self, reads: &mut Reads<'_>, first: bool) -> Result<(), ReadError> {
        match self {
            Source::Memtable(source) => {
                source.current = source.range.next();
                Ok(())
            }
            Source::Tables(source) if first => source.position(reads),
            Source::Tables(source) => {
                source.entry_pos += 1;
                source.settle(reads)
            }
        }
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
        let block = match table.load_block(self.block_pos, reads) {
            Ok(block) => block,
            // The entries after the bad block are all past the start.
            Err(_) if self.skip_unreadable => {
                self.note_skipped();
                self.entry_pos = 0;
                self.next_block(reads)?;
                return self.settle(reads);
            }
            Err(error) => return Err(error),
        };
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
            self.entry_pos = 0;
            self.next_block(reads)?;
        }
    }

    /// Remembers the key range of the current block, which did not read.
    fn note_skipped(&mut self) {
        let Some(table) = self.tables.get(self.table_pos) else { return };
        if let (after, Some(last)) = table.block_keys(self.block_pos) {
            self.skipped.push((after.map(<[u8]>::to_vec), last.to_vec()));
        }
    }

    /// Loads the block after the current one, in this table or the next,
    /// passing over blocks that do not read if the source skips them; no
    /// block is left once the tables are done.
    fn next_block(&mut self, reads: &mut Reads<'_>) -> Result<(), ReadError> {
        self.block = None;
        loop {
            self.block_pos += 1;
            let Some(mut table) = self.tables.get(self.table_pos) else { return Ok(()) };
            if self.block_pos >= table.block_count() {
                self.table_pos += 1;
                self.block_pos = 0;
                let Some(next) = self.tables.get(self.table_pos) else { return Ok(()) };
                table = next;
            }
            match table.load_block(self.block_pos, reads) {
                Ok(block) => {
                    self.block = Some(block);
                    return Ok(());
                }
                Err(_) if self.skip_unreadable => self.note_skipped(),
                Err(error) => return Err(error),
            }
        }
    }
}

/// An ordered iterator over live pairs; borrows the engine while it runs.
#[derive(Debug)]
pub struct Iter<'a> {
    pub(super) merge: Merge<'a>,
    pub(super) reads: Reads<'a>,
    pub(super) value_bytes_max: u32,
    pub(super) failed: bool,
}

impl Iterator for Iter<'_> {
    type Item = Result<Pair, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = match self.merge.next(&mut self.reads) {
            Ok(Some(item)) => self.decode(item),
            Ok(None) => return None,
            Err(error) => Err(error),
        };
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }
}

impl Iter<'_> {
    /// Passes over table blocks that do not read: see [`Merge::skipping_unreadable`].
    pub fn skipping_unreadable(self) -> Self {
        Iter { merge: self.merge.skipping_unreadable(), ..self }
    }

    /// See [`Merge::in_skipped_block`].
    pub fn in_skipped_block(&mut self, key: &[u8]) -> bool {
        self.merge.in_skipped_block(key)
    }

    fn decode(&self, item: Item) -> Result<Pair, ReadError> {
        if item.flags == 0 {
            return Ok((item.key, item.value));
        }
        let entry = EntryRef { key: &item.key, flags: item.flags, value: &item.value };
        match decode_value(entry, self.value_bytes_max) {
            Ok(Some(value)) => Ok((item.key, value)),
            // The merge skips tombstones for scans, so only damage lands here.
            Ok(None) => Err(corrupt("a tombstone reached the scan output")),
            Err(error) => Err(corrupt(&error.to_string())),
        }
    }
}

fn corrupt(reason: &str) -> ReadError {
    ReadError::Corrupt { file: String::from("table"), offset: 0, reason: reason.to_owned() }
}
