//! The checkers' own preference lists, computed from the configuration the
//! way DESIGN.md defines placement, not with `keel_core::ring`: each node
//! has vnodes at SipHash-1-3 tokens of its id and vnode index, a key sits at
//! the SipHash-1-3 of its bytes, and its replicas are the first N distinct
//! nodes met walking clockwise from there. A simple walk over a sorted list,
//! with none of the ring's precomputed tables.

use core::hash::Hasher;

use keel_core::NodeId;
use siphasher::sip::SipHasher13;

/// The SipHash keys of vnode tokens and of key positions: part of keel's
/// data format, so restated here rather than imported.
const TOKEN_KEYS: (&[u8; 8], &[u8; 8]) = (b"keel-rin", b"g-token1");
const KEY_KEYS: (&[u8; 8], &[u8; 8]) = (b"keel-rin", b"g-keypos");

fn sip(keys: (&[u8; 8], &[u8; 8]), bytes: &[u8]) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(u64::from_le_bytes(*keys.0), u64::from_le_bytes(*keys.1));
    hasher.write(bytes);
    hasher.finish()
}

/// Every vnode of a cluster of equally weighted nodes, in token order.
pub struct Placement {
    vnodes: Vec<(u64, NodeId)>,
    replicas: usize,
}

impl Placement {
    pub fn new(nodes: &[NodeId], vnodes_per_node: u32, replicas: u8) -> Placement {
        let mut vnodes = Vec::new();
        for &node in nodes {
            for vnode in 0..vnodes_per_node {
                let mut bytes = [0; 12];
                bytes[..8].copy_from_slice(&node.0.to_le_bytes());
                bytes[8..].copy_from_slice(&vnode.to_le_bytes());
                vnodes.push((sip(TOKEN_KEYS, &bytes), node));
            }
        }
        vnodes.sort();
        Placement { vnodes, replicas: usize::from(replicas).min(nodes.len()) }
    }

    /// The replicas of `key`, primary first.
    pub fn replicas(&self, key: &[u8]) -> Vec<NodeId> {
        let position = sip(KEY_KEYS, key);
        let start = self.vnodes.iter().position(|&(token, _)| token >= position).unwrap_or(0);
        let mut replicas = Vec::with_capacity(self.replicas);
        for step in 0..self.vnodes.len() {
            let node = self.vnodes[(start + step) % self.vnodes.len()].1;
            if !replicas.contains(&node) {
                replicas.push(node);
                if replicas.len() == self.replicas {
                    break;
                }
            }
        }
        replicas
    }
}

#[cfg(test)]
mod tests {
    use keel_core::ring::{Member, Ring, RingConfig};

    use super::*;

    /// The node's ring must place keys as the definition does; if they ever
    /// disagree, one of the two is wrong and the simulator's checks with it.
    #[test]
    fn agrees_with_the_ring_on_every_key() {
        for (count, replicas) in [(1u64, 1u8), (3, 2), (5, 3), (7, 5)] {
            let nodes: Vec<NodeId> = (1..=count).map(NodeId).collect();
            let placement = Placement::new(&nodes, 16, replicas);
            let members = nodes.iter().map(|&node| Member::new(node)).collect();
            let ring = Ring::new(members, RingConfig { replicas, vnodes_per_weight: 16 }).unwrap();
            for key in 0..2_000u32 {
                let key = format!("k{key}");
                assert_eq!(placement.replicas(key.as_bytes()), ring.preference_list(key.as_bytes()));
            }
        }
    }
}
