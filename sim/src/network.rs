//! The simulated network: per-message delay, loss, duplication and
//! reordering, plus links blocked by partitions or slowed by clogs.

use std::collections::BTreeMap;

use keel_core::NodeId;

use crate::config::{FaultKind, FaultMix};
use crate::rng::{SimRng, Stream};

const MS: u64 = 1_000_000;

#[derive(Debug)]
pub struct Network {
    rng: SimRng,
    mix: FaultMix,
    /// Directed links that drop everything, with how many faults block them.
    blocked: BTreeMap<(NodeId, NodeId), u32>,
    /// Directed links that add delay: one entry per active clog.
    clogged: BTreeMap<(NodeId, NodeId), Vec<u64>>,
    /// Once healed, only ordinary delay remains.
    healed: bool,
}

/// The copies of one message that arrive, by their delays: at most two, so
/// no allocation per message.
#[derive(Clone, Copy, Debug)]
pub struct Copies {
    delays: [u64; 2],
    len: usize,
}

impl Copies {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl IntoIterator for Copies {
    type Item = u64;
    type IntoIter = core::iter::Take<core::array::IntoIter<u64, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        self.delays.into_iter().take(self.len)
    }
}

impl Network {
    pub fn new(seed: u64, mix: FaultMix) -> Network {
        Network {
            rng: SimRng::new(seed, Stream::Network),
            mix,
            blocked: BTreeMap::new(),
            clogged: BTreeMap::new(),
            healed: false,
        }
    }

    /// The delays after which copies of a message sent now arrive: none if
    /// it is lost, two if it is duplicated.
    pub fn plan(&mut self, from: NodeId, to: NodeId) -> Copies {
        let mut copies = Copies { delays: [0; 2], len: 0 };
        if self.is_blocked(from, to) {
            return copies;
        }
        let faulty = |kind| !self.healed && self.mix.has(kind);
        if faulty(FaultKind::Drop) && self.rng.chance(self.mix.drop_per_million) {
            return copies;
        }
        copies.len = if faulty(FaultKind::Duplicate) && self.rng.chance(self.mix.duplicate_per_million) {
            2
        } else {
            1
        };
        for copy in 0..copies.len {
            copies.delays[copy] = self.delay(from, to);
        }
        copies
    }

    fn delay(&mut self, from: NodeId, to: NodeId) -> u64 {
        let mut delay = self.rng.between(50_000, 2 * MS);
        if !self.healed && self.mix.has(FaultKind::Reorder) && self.rng.chance(self.mix.reorder_per_million) {
            delay += self.rng.between(5 * MS, 200 * MS);
        }
        if let Some(clogs) = self.clogged.get(&(from, to)) {
            delay += clogs.iter().max().copied().unwrap_or(0) * MS;
        }
        delay
    }

    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.get(&(from, to)).is_some_and(|&count| count > 0)
    }

    /// Blocks every link from a node of `from` to a node of `to`.
    pub fn block(&mut self, from: &[NodeId], to: &[NodeId]) {
        for &a in from {
            for &b in to {
                *self.blocked.entry((a, b)).or_insert(0) += 1;
            }
        }
    }

    pub fn unblock(&mut self, from: &[NodeId], to: &[NodeId]) {
        for &a in from {
            for &b in to {
                if let Some(count) = self.blocked.get_mut(&(a, b)) {
                    *count = count.saturating_sub(1);
                }
            }
        }
        self.blocked.retain(|_, count| *count > 0);
    }

    pub fn clog(&mut self, from: NodeId, to: NodeId, delay_ms: u64) {
        self.clogged.entry((from, to)).or_default().push(delay_ms);
    }

    pub fn unclog(&mut self, from: NodeId, to: NodeId, delay_ms: u64) {
        if let Some(clogs) = self.clogged.get_mut(&(from, to)) {
            if let Some(index) = clogs.iter().position(|&delay| delay == delay_ms) {
                clogs.swap_remove(index);
            }
        }
        self.clogged.retain(|_, clogs| !clogs.is_empty());
    }

    /// Ends every fault: the liveness phase starts from a healthy network.
    pub fn heal(&mut self) {
        self.healed = true;
        self.blocked.clear();
        self.clogged.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(kinds: &[FaultKind]) -> FaultMix {
        FaultMix {
            enabled: kinds.to_vec(),
            drop_per_million: 500_000,
            duplicate_per_million: 500_000,
            ..FaultMix::none()
        }
    }

    #[test]
    fn blocked_links_drop_in_one_direction_only() {
        let mut network = Network::new(1, mix(&[]));
        network.block(&[NodeId(1)], &[NodeId(2)]);
        network.block(&[NodeId(1)], &[NodeId(2)]);
        assert!(network.plan(NodeId(1), NodeId(2)).is_empty());
        assert_eq!(network.plan(NodeId(2), NodeId(1)).len(), 1);
        network.unblock(&[NodeId(1)], &[NodeId(2)]);
        assert!(network.is_blocked(NodeId(1), NodeId(2)), "still blocked by the second fault");
        network.unblock(&[NodeId(1)], &[NodeId(2)]);
        assert_eq!(network.plan(NodeId(1), NodeId(2)).len(), 1);
    }

    #[test]
    fn drops_and_duplicates_happen_only_when_enabled_and_stop_when_healed() {
        let mut calm = Network::new(2, mix(&[]));
        assert!((0..1000).all(|_| calm.plan(NodeId(1), NodeId(2)).len() == 1));
        let mut rough = Network::new(2, mix(&[FaultKind::Drop, FaultKind::Duplicate]));
        let counts: Vec<usize> = (0..1000).map(|_| rough.plan(NodeId(1), NodeId(2)).len()).collect();
        assert!(counts.contains(&0) && counts.contains(&2));
        rough.heal();
        assert!((0..1000).all(|_| rough.plan(NodeId(1), NodeId(2)).len() == 1));
    }
}
