//! Building a ring's tables: tokens, owners, and the preference list of every range.
//!
//! Everything here runs once per ring, when membership changes; lookups only read the
//! tables. Walks use "gaps" instead of seen-sets: `gap[j]` is how many vnodes back (clockwise
//! distance) the previous vnode of the same group lies. A walk that started `d` steps before
//! vnode `j` meets that group for the first time at `j` exactly when `gap[j] > d`, so a walk
//! needs no allocation and no clearing between starts.

use siphasher::sip::SipHasher13;

use super::{Member, TOKEN_KEYS};
use crate::id::NodeId;

/// The token of vnode `vnode` of `node`: SipHash-1-3 over the node id then the vnode index,
/// both fixed-width little-endian, so the bytes hashed are the same on every machine.
pub(super) fn token(node: NodeId, vnode: u32) -> u64 {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&node.0.to_le_bytes());
    bytes[8..].copy_from_slice(&vnode.to_le_bytes());
    SipHasher13::new_with_keys(TOKEN_KEYS.0, TOKEN_KEYS.1).hash(&bytes)
}

/// The lookup tables of a ring, derived from its (validated, id-sorted) members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Tables {
    /// Vnode positions, strictly ascending.
    pub tokens: Vec<u64>,
    /// `owners[j]` indexes the member that owns `tokens[j]`.
    pub owners: Vec<u32>,
    /// Distance back to the previous vnode of the same member; `tokens.len()` for a member
    /// with a single vnode.
    pub node_gaps: Vec<u32>,
    /// The preference list of the range ending at `tokens[j]` is
    /// `preferences[j * replica_count..][..replica_count]`.
    pub preferences: Vec<NodeId>,
    /// Members that own at least one vnode.
    pub placed_count: usize,
    /// `min(replicas, placed_count)`: the length of every preference list.
    pub replica_count: usize,
}

/// Builds the tables. `members` must be sorted by id, with weights and vnode total already
/// checked against their bounds.
pub(super) fn tables(members: &[Member], vnodes_per_weight: u32, replicas: usize) -> Tables {
    assert!(!members.is_empty());
    assert!(members.windows(2).all(|pair| pair[0].id < pair[1].id));
    let (tokens, owners) = token_table(members, vnodes_per_weight);
    let vnode_count = tokens.len();
    assert!(vnode_count >= 1);
    assert!(u32::try_from(vnode_count).is_ok());

    let zone_of = zone_indexes(members);
    let zone_owners: Vec<u32> = owners.iter().map(|&owner| zone_of[owner as usize]).collect();
    let zone_total = zone_of.iter().max().map_or(0, |&max| max as usize + 1);
    let node_gaps = gaps(&owners, members.len());
    let zone_gaps = gaps(&zone_owners, zone_total);
    let placed_count = node_gaps.iter().zip(0..).filter(|&(&gap, j)| gap > j).count();
    let zone_count = zone_gaps.iter().zip(0..).filter(|&(&gap, j)| gap > j).count();
    let replica_count = replicas.min(placed_count);
    let walker = Walker {
        members,
        owners: &owners,
        node_gaps: &node_gaps,
        zone_gaps: &zone_gaps,
        replica_count,
        zone_target: replica_count.min(zone_count),
    };

    let mut preferences = Vec::with_capacity(vnode_count * replica_count);
    let mut seen = Vec::with_capacity(members.len());
    for start in 0..vnode_count {
        walker.preference(start, &mut seen, &mut preferences);
        assert_eq!(preferences.len(), (start + 1) * replica_count);
    }
    Tables { tokens, owners, node_gaps, preferences, placed_count, replica_count }
}

/// Sorted tokens and their owners. On the (2^-64 per pair) chance that two vnodes hash to
/// the same token, the member with the lower id keeps it, whatever order members came in.
fn token_table(members: &[Member], vnodes_per_weight: u32) -> (Vec<u64>, Vec<u32>) {
    let mut pairs: Vec<(u64, u32)> = Vec::new();
    for (index, member) in (0u32..).zip(members) {
        // Bounded by the caller's check against VNODES_MAX.
        let vnodes = member.weight * vnodes_per_weight;
        pairs.extend((0..vnodes).map(|vnode| (token(member.id, vnode), index)));
    }
    pairs.sort_unstable();
    pairs.dedup_by_key(|&mut (token, _)| token);
    pairs.into_iter().unzip()
}

/// Each member's zone as a dense index, in zone-name order. Members without a zone share
/// one zone: nothing says they fail independently.
fn zone_indexes(members: &[Member]) -> Vec<u32> {
    let mut names: Vec<Option<&str>> = members.iter().map(|member| member.zone.as_deref()).collect();
    names.sort_unstable();
    names.dedup();
    members
        .iter()
        .map(|member| {
            let found = names.binary_search(&member.zone.as_deref());
            // Every member's zone name was put in `names` just above.
            found.expect("zone name collected from members") as u32
        })
        .collect()
}

/// For each vnode, the clockwise distance back to the previous vnode of the same group.
fn gaps(groups: &[u32], group_total: usize) -> Vec<u32> {
    const NONE: u32 = u32::MAX;
    let vnode_count = groups.len() as u32;
    let mut first = vec![NONE; group_total];
    let mut last = vec![NONE; group_total];
    let mut gaps = vec![0u32; groups.len()];
    for (j, &group) in (0u32..).zip(groups) {
        let group = group as usize;
        if last[group] == NONE {
            first[group] = j;
        } else {
            gaps[j as usize] = j - last[group];
        }
        last[group] = j;
    }
    for (first, last) in first.into_iter().zip(last) {
        if first != NONE {
            // Wraps past the top of the ring back to this group's last vnode; a group with
            // one vnode gets the whole ring.
            gaps[first as usize] = first + vnode_count - last;
        }
    }
    assert!(gaps.iter().all(|&gap| gap >= 1 && gap <= vnode_count));
    gaps
}

/// Computes the preference list of one range.
struct Walker<'a> {
    members: &'a [Member],
    owners: &'a [u32],
    node_gaps: &'a [u32],
    zone_gaps: &'a [u32],
    replica_count: usize,
    /// How many replicas go to distinct zones: `min(replica_count, zones)`.
    zone_target: usize,
}

impl Walker<'_> {
    /// Appends the preference list of the range ending at vnode `start` to `out`.
    ///
    /// Walking clockwise, the first member met in each not yet chosen zone is chosen until
    /// `zone_target` zones have one replica; then the remaining slots go to the members met
    /// first among those not chosen. `seen` is scratch space (distinct members in walk order).
    fn preference(&self, start: usize, seen: &mut Vec<u32>, out: &mut Vec<NodeId>) {
        let vnode_count = self.owners.len();
        let list_start = out.len();
        let mut zones_chosen = 0;
        seen.clear();
        for distance in 0..vnode_count {
            if zones_chosen == self.zone_target && seen.len() >= self.replica_count {
                break;
            }
            let j = if start + distance < vnode_count {
                start + distance
            } else {
                start + distance - vnode_count
            };
            if self.node_gaps[j] as usize <= distance {
                continue; // Member already met on this walk.
            }
            let owner = self.owners[j];
            seen.push(owner);
            if self.zone_gaps[j] as usize > distance && zones_chosen < self.zone_target {
                zones_chosen += 1;
                out.push(self.members[owner as usize].id);
            }
        }
        assert_eq!(zones_chosen, self.zone_target);
        for &owner in seen.iter() {
            if out.len() - list_start == self.replica_count {
                break;
            }
            let id = self.members[owner as usize].id;
            if !out[list_start..].contains(&id) {
                out.push(id);
            }
        }
        assert_eq!(out.len() - list_start, self.replica_count);
    }
}
