//! The block cache: decoded data blocks, least recently used evicted first,
//! bounded by a byte budget.
//!
//! Recency is a counter, not a clock: each hit takes the next tick, and the
//! entry with the smallest tick is evicted. A map from tick to key makes that
//! lookup logarithmic. The hash map uses SipHash with fixed keys, so iteration
//! order (never relied on) is the same on every run.

use core::hash::BuildHasherDefault;
use std::collections::BTreeMap;
use std::sync::Arc;

use siphasher::sip::SipHasher13;

use super::block::Block;

/// A block is named by its table and its offset in the table's file.
pub type BlockKey = (u64, u64);

type FixedState = BuildHasherDefault<SipHasher13>;

#[derive(Debug)]
pub struct BlockCache {
    slots: hashbrown::HashMap<BlockKey, Slot, FixedState>,
    by_tick: BTreeMap<u64, BlockKey>,
    tick: u64,
    bytes: u64,
    bytes_max: u64,
    hits: u64,
    misses: u64,
}

#[derive(Debug)]
struct Slot {
    block: Arc<Block>,
    tick: u64,
}

impl BlockCache {
    pub fn new(bytes_max: u64) -> BlockCache {
        BlockCache {
            slots: hashbrown::HashMap::default(),
            by_tick: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            bytes_max,
            hits: 0,
            misses: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn hits(&self) -> u64 {
        self.hits
    }

    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// The cached block, marked most recently used; counts a hit or a miss.
    pub fn get(&mut self, key: BlockKey) -> Option<Arc<Block>> {
        let Some(slot) = self.slots.get_mut(&key) else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        self.tick += 1;
        self.by_tick.remove(&slot.tick);
        slot.tick = self.tick;
        self.by_tick.insert(self.tick, key);
        Some(Arc::clone(&slot.block))
    }

    /// Caches `block`, evicting the least recently used blocks to stay in budget.
    /// A block larger than the whole budget is not cached.
    pub fn insert(&mut self, key: BlockKey, block: Arc<Block>) {
        let charge = block.charge();
        if charge > self.bytes_max {
            return;
        }
        self.remove(key);
        while self.bytes + charge > self.bytes_max {
            let Some((_, oldest)) = self.by_tick.pop_first() else { break };
            if let Some(slot) = self.slots.remove(&oldest) {
                self.bytes -= slot.block.charge();
            }
        }
        self.tick += 1;
        self.by_tick.insert(self.tick, key);
        self.slots.insert(key, Slot { block, tick: self.tick });
        self.bytes += charge;
        assert!(self.bytes <= self.bytes_max);
        assert_eq!(self.slots.len(), self.by_tick.len());
    }

    /// Drops every block of a table that no longer exists.
    pub fn remove_table(&mut self, table: u64) {
        let keys: Vec<BlockKey> = self.by_tick.values().filter(|key| key.0 == table).copied().collect();
        for key in keys {
            self.remove(key);
        }
    }

    fn remove(&mut self, key: BlockKey) {
        if let Some(slot) = self.slots.remove(&key) {
            self.by_tick.remove(&slot.tick);
            self.bytes -= slot.block.charge();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::block::BlockBuilder;

    fn block(value_len: usize) -> Arc<Block> {
        let mut builder = BlockBuilder::default();
        builder.add(b"k", 0, &vec![7; value_len]);
        let mut bytes = Vec::new();
        builder.finish_into(&mut bytes);
        Arc::new(Block::decode(bytes).unwrap())
    }

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let charge = block(100).charge();
        let mut cache = BlockCache::new(charge * 3);
        for offset in 0..3 {
            cache.insert((1, offset), block(100));
        }
        assert!(cache.get((1, 0)).is_some());
        cache.insert((1, 3), block(100));
        assert!(cache.get((1, 1)).is_none(), "the least recently used block goes first");
        assert!(cache.get((1, 0)).is_some());
        assert!(cache.bytes() <= charge * 3);
        assert_eq!((cache.hits(), cache.misses()), (2, 1));
        cache.remove_table(1);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn a_block_over_budget_is_not_cached() {
        let mut cache = BlockCache::new(10);
        cache.insert((1, 0), block(100));
        assert_eq!(cache.bytes(), 0);
        assert!(cache.get((1, 0)).is_none());
    }
}
