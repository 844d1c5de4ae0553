//! Ring analysis: how evenly a ring spreads load, and what a membership change moves.
//!
//! Shares are fractions of the circle, exact sums of range widths converted to `f64` once,
//! so equal rings give equal answers everywhere. A share of the circle is a share of the
//! keys (and, on average, of the bytes) because key positions are uniform.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Ring, arc_width, fraction, position};
use crate::id::NodeId;

/// One member's share of a ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ownership {
    /// Vnodes the member holds (its tokens that did not collide).
    pub vnodes: u32,
    /// Share of the circle for which the member is the primary. Sums to 1 over members.
    pub primary: f64,
    /// Share of the circle the member replicates, primary or not. Sums to the replica
    /// count over members; divided by the replica count it is the member's share of the
    /// stored data.
    pub replica: f64,
}

impl Ring {
    /// Every member's share, members without vnodes included.
    pub fn ownership(&self) -> BTreeMap<NodeId, Ownership> {
        let member_count = self.members.len();
        let mut vnodes = vec![0u32; member_count];
        let mut primary = vec![0u128; member_count];
        let mut replica = vec![0u128; member_count];
        for (range, &owner) in self.ranges().zip(&self.tables.owners) {
            vnodes[owner as usize] += 1;
            let width = range.width();
            for (rank, &id) in range.preference.iter().enumerate() {
                let index = self.member_index(id).expect("preference lists hold members");
                replica[index] += width;
                if rank == 0 {
                    primary[index] += width;
                }
            }
        }
        assert_eq!(primary.iter().sum::<u128>(), 1 << 64);
        assert_eq!(replica.iter().sum::<u128>(), (self.replica_count() as u128) << 64);
        let shares = vnodes.into_iter().zip(primary).zip(replica);
        (self.members.iter().zip(shares))
            .map(|(member, ((vnodes, primary), replica))| {
                (member.id, Ownership { vnodes, primary: fraction(primary), replica: fraction(replica) })
            })
            .collect()
    }

    /// How many of `keys` each member is primary for, members with none included.
    pub fn key_distribution<I>(&self, keys: I) -> BTreeMap<NodeId, u64>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut counts: BTreeMap<NodeId, u64> = self.members.iter().map(|member| (member.id, 0)).collect();
        for key in keys {
            let primary = self.range_at(position(key.as_ref())).preference[0];
            *counts.get_mut(&primary).expect("preference lists hold members") += 1;
        }
        counts
    }
}

/// A stretch of the circle whose preference list differs between two rings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeMove {
    /// Exclusive. The range wraps past `u64::MAX` when `start >= end`, and is the whole
    /// circle when they are equal.
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    pub old: Vec<NodeId>,
    pub new: Vec<NodeId>,
}

impl RangeMove {
    pub fn width(&self) -> u128 {
        arc_width(self.start, self.end)
    }

    pub fn fraction(&self) -> f64 {
        fraction(self.width())
    }

    /// Members that must receive the range's data: replicas in the new ring only.
    pub fn gained(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.new.iter().copied().filter(|id| !self.old.contains(id))
    }

    /// Members that no longer replicate the range: replicas in the old ring only.
    pub fn lost(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.old.iter().copied().filter(|id| !self.new.contains(id))
    }
}

/// One member's data movement, as shares of the circle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    /// Share of the circle the member newly replicates and must fetch.
    pub inbound: f64,
    /// Share of the circle the member stops replicating: it can hand that data off and drop it.
    pub outbound: f64,
}

/// What changes between two rings; see [`moves`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Moves {
    /// Stretches whose preference list changed in content or order, in token order, adjacent
    /// stretches with the same change merged.
    pub ranges: Vec<RangeMove>,
    /// Share of the circle whose replica set changed: its data moves somewhere.
    pub replicas_moved: f64,
    /// Share of the circle whose primary changed.
    pub primary_moved: f64,
    /// Every member of either ring.
    pub transfers: BTreeMap<NodeId, Transfer>,
}

/// Which ranges change hands between `old` and `new`, and how much data each member gains
/// and loses. Rings with different replica counts compare as they are.
pub fn moves(old: &Ring, new: &Ring) -> Moves {
    let mut ranges: Vec<RangeMove> = Vec::new();
    let boundaries = merged(&old.tables.tokens, &new.tables.tokens);
    let mut start = *boundaries.last().expect("rings have at least one vnode");
    for &end in &boundaries {
        let old_list = old.range_at(end).preference;
        let new_list = new.range_at(end).preference;
        if old_list != new_list {
            match ranges.last_mut() {
                Some(last) if last.end == start && last.old == old_list && last.new == new_list => {
                    last.end = end;
                }
                _ => ranges.push(RangeMove { start, end, old: old_list.to_vec(), new: new_list.to_vec() }),
            }
        }
        start = end;
    }
    // The last stretch may continue into the first one across the top of the circle.
    if ranges.len() >= 2 {
        let (first, last) = (&ranges[0], &ranges[ranges.len() - 1]);
        if last.end == first.start && last.old == first.old && last.new == first.new {
            let last = ranges.pop().expect("checked above: at least two ranges");
            ranges[0].start = last.start;
        }
    }
    summarize(old, new, ranges)
}

/// Sorted, deduplicated union of two sorted token lists.
fn merged(left: &[u64], right: &[u64]) -> Vec<u64> {
    let mut all = Vec::with_capacity(left.len() + right.len());
    all.extend_from_slice(left);
    all.extend_from_slice(right);
    all.sort_unstable();
    all.dedup();
    all
}

fn summarize(old: &Ring, new: &Ring, ranges: Vec<RangeMove>) -> Moves {
    let members = old.members.iter().chain(&new.members);
    let mut widths: BTreeMap<NodeId, (u128, u128)> = members.map(|member| (member.id, (0, 0))).collect();
    let (mut replicas_moved, mut primary_moved) = (0u128, 0u128);
    for range in &ranges {
        let width = range.width();
        let mut changed = false;
        for id in range.gained() {
            widths.get_mut(&id).expect("ranges hold members of the rings").0 += width;
            changed = true;
        }
        for id in range.lost() {
            widths.get_mut(&id).expect("ranges hold members of the rings").1 += width;
            changed = true;
        }
        replicas_moved += if changed { width } else { 0 };
        primary_moved += if range.old[0] != range.new[0] { width } else { 0 };
    }
    assert!(replicas_moved <= 1 << 64 && primary_moved <= 1 << 64);
    let transfers = widths
        .into_iter()
        .map(|(id, (inbound, outbound))| {
            (id, Transfer { inbound: fraction(inbound), outbound: fraction(outbound) })
        })
        .collect();
    Moves {
        ranges,
        replicas_moved: fraction(replicas_moved),
        primary_moved: fraction(primary_moved),
        transfers,
    }
}
