//! SSTable decoding on arbitrary bytes: data blocks, the index, the bloom
//! filter, the footer and compressed values. No decoder may panic, and a data
//! block that decodes must answer lookups consistently with its entries.
//!
//! Inputs whose first byte is odd are a recipe instead: a valid block is
//! built from the rest and must decode to the same entries; then one bit,
//! chosen by the last byte, is flipped and the block must be refused.

#![no_main]

use std::collections::BTreeMap;

use keel_core::lsm::block::{Block, BlockBuilder, FLAG_TOMBSTONE};
use keel_core::lsm::bloom::{self, Bloom};
use keel_core::lsm::sstable::{self, Footer};
use libfuzzer_sys::fuzz_target;

fn check_block(block: &Block) -> Vec<(Vec<u8>, u8, Vec<u8>)> {
    let mut entries: Vec<(Vec<u8>, u8, Vec<u8>)> = Vec::new();
    for i in 0..block.len() {
        let entry = block.entry(i).expect("a decoded block has every entry");
        if let Some((previous, ..)) = entries.last() {
            assert!(previous.as_slice() < entry.key, "keys increase");
        }
        assert_eq!(block.seek(entry.key), i);
        assert_eq!(block.find(entry.key), Some(entry));
        // Decompression is bounded by the maximum given, whatever the bytes claim.
        let _ = sstable::decode_value(entry, 1 << 16);
        entries.push((entry.key.to_vec(), entry.flags, entry.value.to_vec()));
    }
    assert_eq!(block.entry(block.len()), None);
    entries
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, rest)) = bytes.split_first() else { return };
    if mode % 2 == 0 {
        let _ = Footer::decode(rest);
        let _ = sstable::decode_index(rest);
        if let Ok(bloom) = Bloom::decode(rest) {
            let _ = bloom.may_contain(bloom::hash(rest));
        }
        if let Ok(block) = Block::decode(rest.to_vec()) {
            check_block(&block);
        }
        return;
    }
    let Some((&flip, rest)) = rest.split_last() else { return };
    // Entries from a recipe: `[key length][value length, odd for a tombstone]` then the bytes.
    let mut entries = BTreeMap::new();
    let mut input = rest;
    while let [key_len, value_len, tail @ ..] = input {
        let (key, tail) = tail.split_at(usize::from(*key_len % 16).min(tail.len()));
        let (value, tail) = tail.split_at(usize::from(*value_len / 2).min(tail.len()));
        let entry = if value_len % 2 == 1 { (FLAG_TOMBSTONE, Vec::new()) } else { (0, value.to_vec()) };
        entries.insert(key.to_vec(), entry);
        input = tail;
    }
    let mut builder = BlockBuilder::default();
    for (key, (flags, value)) in &entries {
        builder.add(key, *flags, value);
    }
    let mut encoded = Vec::new();
    builder.finish_into(&mut encoded);
    let block = Block::decode(encoded.clone()).expect("a built block decodes");
    let expected: Vec<_> = entries.into_iter().map(|(key, (flags, value))| (key, flags, value)).collect();
    assert_eq!(check_block(&block), expected);
    let bit = usize::from(flip) % (encoded.len() * 8);
    encoded[bit / 8] ^= 1 << (bit % 8);
    assert!(Block::decode(encoded).is_err(), "a flipped bit goes unnoticed");
});
