//! Leveled compaction policy: a pure function from the manifest to one step.
//!
//! Level 0 is compacted into level 1 when it holds `l0_tables_max` tables;
//! all of level 0 goes at once, because its tables overlap and an older one
//! must never be left below a newer one. A deeper level is compacted when it
//! outgrows its target, `level_base_bytes * level_size_ratio^(level - 1)`:
//! the table with the least overlap in the next level moves down, rewritten
//! with the tables it overlaps, or moved as it is when it overlaps none.
//!
//! Tombstones are dropped only when no older version of their key can exist
//! below the output: no deeper level overlaps the step's key range. Level 0
//! is always taken whole, so it never hides an older version either.

use super::EngineConfig;
use super::manifest::{LEVELS, Manifest, TableMeta};

/// One compaction step, for the engine to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    Nothing,
    /// Relink a table one level down without rewriting it.
    Move {
        table: u64,
        from: usize,
    },
    /// Merge `inputs`, newest first, into new tables at level `to`.
    Merge {
        from: usize,
        to: usize,
        inputs: Vec<u64>,
        drop_tombstones: bool,
    },
}

pub fn choose(manifest: &Manifest, config: &EngineConfig) -> Choice {
    let level0 = manifest.levels.first().map_or(&[][..], Vec::as_slice);
    if level0.len() >= config.l0_tables_max as usize {
        return merge_down(manifest, 0, level0);
    }
    let mut best: Option<(f64, usize)> = None;
    for level in 1..LEVELS - 1 {
        let score = manifest.level_bytes(level) as f64 / level_target_bytes(config, level) as f64;
        if score >= 1.0 && best.is_none_or(|(best_score, _)| score > best_score) {
            best = Some((score, level));
        }
    }
    let Some((_, level)) = best else { return Choice::Nothing };
    let tables = manifest.levels.get(level).map_or(&[][..], Vec::as_slice);
    let next = manifest.levels.get(level + 1).map_or(&[][..], Vec::as_slice);
    let least_overlap = tables.iter().min_by_key(|table| (overlap_bytes(next, table), table.id));
    let Some(table) = least_overlap else { return Choice::Nothing };
    if !next.iter().any(|n| n.overlaps(&table.first_key, &table.last_key)) {
        return Choice::Move { table: table.id, from: level };
    }
    merge_down(manifest, level, core::slice::from_ref(table))
}

/// Target size of `level` (1 and deeper).
pub fn level_target_bytes(config: &EngineConfig, level: usize) -> u64 {
    let exponent = u32::try_from(level.saturating_sub(1)).unwrap_or(u32::MAX);
    config.level_base_bytes.saturating_mul(u64::from(config.level_size_ratio).saturating_pow(exponent))
}

fn overlap_bytes(tables: &[TableMeta], table: &TableMeta) -> u64 {
    tables.iter().filter(|t| t.overlaps(&table.first_key, &table.last_key)).map(|t| t.bytes).sum()
}

fn merge_down(manifest: &Manifest, from: usize, upper: &[TableMeta]) -> Choice {
    let to = from + 1;
    let Some((first, last)) = key_range(upper) else { return Choice::Nothing };
    let lower = manifest.levels.get(to).map_or(&[][..], Vec::as_slice);
    let overlapping: Vec<&TableMeta> = lower.iter().filter(|t| t.overlaps(first, last)).collect();
    // The output spans the lower tables too; nothing deeper may hold its keys.
    let all: Vec<&TableMeta> = upper.iter().chain(overlapping.iter().copied()).collect();
    let (first, last) = key_range_of(&all).unwrap_or((first, last));
    let deeper = manifest.levels.iter().skip(to + 1).flatten();
    let drop_tombstones = !deeper.into_iter().any(|t| t.overlaps(first, last));
    let inputs = all.iter().map(|t| t.id).collect();
    Choice::Merge { from, to, inputs, drop_tombstones }
}

fn key_range(tables: &[TableMeta]) -> Option<(&[u8], &[u8])> {
    key_range_of(&tables.iter().collect::<Vec<_>>())
}

fn key_range_of<'a>(tables: &[&'a TableMeta]) -> Option<(&'a [u8], &'a [u8])> {
    let first = tables.iter().map(|t| t.first_key.as_slice()).min()?;
    let last = tables.iter().map(|t| t.last_key.as_slice()).max()?;
    Some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(id: u64, first: &str, last: &str, bytes: u64) -> TableMeta {
        TableMeta { id, bytes, first_key: first.into(), last_key: last.into(), ..TableMeta::default() }
    }

    fn config() -> EngineConfig {
        EngineConfig {
            l0_tables_max: 2,
            level_base_bytes: 100,
            level_size_ratio: 10,
            ..EngineConfig::default()
        }
    }

    #[test]
    fn quiet_tree_needs_nothing() {
        let mut manifest = Manifest::default();
        assert_eq!(choose(&manifest, &config()), Choice::Nothing);
        manifest.levels[0].push(table(1, "a", "b", 10));
        manifest.levels[1].push(table(0, "a", "z", 99));
        assert_eq!(choose(&manifest, &config()), Choice::Nothing);
    }

    #[test]
    fn full_level0_merges_whole_with_overlapping_level1() {
        let mut manifest = Manifest { next_table_id: 10, ..Manifest::default() };
        manifest.levels[0] = vec![table(5, "c", "e", 10), table(4, "a", "b", 10)];
        manifest.levels[1] = vec![table(1, "a", "a", 10), table(2, "d", "d", 10), table(3, "x", "z", 10)];
        manifest.levels[2] = vec![table(0, "y", "z", 10)];
        let expected = Choice::Merge { from: 0, to: 1, inputs: vec![5, 4, 1, 2], drop_tombstones: true };
        assert_eq!(choose(&manifest, &config()), expected);
        manifest.levels[2] = vec![table(0, "e", "f", 10)];
        let Choice::Merge { drop_tombstones, .. } = choose(&manifest, &config()) else { panic!() };
        assert!(!drop_tombstones, "a deeper table overlaps, so tombstones must stay");
    }

    #[test]
    fn oversized_level_moves_or_merges_its_least_overlapping_table() {
        let mut manifest = Manifest { next_table_id: 10, ..Manifest::default() };
        manifest.levels[1] = vec![table(1, "a", "c", 60), table(2, "d", "f", 60)];
        manifest.levels[2] = vec![table(3, "a", "b", 500)];
        assert_eq!(choose(&manifest, &config()), Choice::Move { table: 2, from: 1 });
        manifest.levels[2].push(table(4, "e", "e", 10));
        let expected = Choice::Merge { from: 1, to: 2, inputs: vec![2, 4], drop_tombstones: true };
        assert_eq!(choose(&manifest, &config()), expected);
    }

    #[test]
    fn targets_grow_by_the_ratio() {
        assert_eq!(level_target_bytes(&config(), 1), 100);
        assert_eq!(level_target_bytes(&config(), 3), 10_000);
    }
}
