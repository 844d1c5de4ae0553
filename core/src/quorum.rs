//! The pure tally of replica answers for one request.
//!
//! A request asks a fixed set of replicas and needs `needed` successes. The
//! tally ignores answers from nodes it did not ask and counts each node once,
//! so duplicated or stray messages can never inflate a quorum.

use crate::NodeId;

/// Where a request stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// Not enough answers yet, and enough replicas may still succeed.
    Pending,
    /// At least `needed` replicas succeeded.
    Reached,
    /// So many replicas failed that `needed` successes are impossible.
    Unreachable,
}

#[derive(Clone, Debug)]
pub struct Tally {
    needed: usize,
    asked: Vec<NodeId>,
    succeeded: Vec<NodeId>,
    failed: Vec<NodeId>,
}

impl Tally {
    /// A tally over `asked` (distinct nodes) needing `needed` successes.
    pub fn new(asked: Vec<NodeId>, needed: usize) -> Tally {
        assert!(needed >= 1 && needed <= asked.len(), "needed {needed} of {} asked", asked.len());
        debug_assert!(asked.iter().enumerate().all(|(i, node)| !asked[..i].contains(node)), "distinct");
        Tally { needed, asked, succeeded: Vec::new(), failed: Vec::new() }
    }

    /// Records one answer; repeated answers from a node and answers from
    /// nodes never asked change nothing.
    pub fn record(&mut self, from: NodeId, success: bool) -> Outcome {
        let known = self.succeeded.contains(&from) || self.failed.contains(&from);
        if self.asked.contains(&from) && !known {
            if success {
                self.succeeded.push(from);
            } else {
                self.failed.push(from);
            }
        }
        self.outcome()
    }

    pub fn outcome(&self) -> Outcome {
        if self.succeeded.len() >= self.needed {
            Outcome::Reached
        } else if self.asked.len() - self.failed.len() < self.needed {
            Outcome::Unreachable
        } else {
            Outcome::Pending
        }
    }

    pub fn needed(&self) -> usize {
        self.needed
    }

    pub fn asked(&self) -> &[NodeId] {
        &self.asked
    }

    pub fn succeeded(&self) -> &[NodeId] {
        &self.succeeded
    }

    /// True when every node asked has answered.
    pub fn complete(&self) -> bool {
        self.succeeded.len() + self.failed.len() == self.asked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row: nodes asked, needed, answers as (node, success), and the
    /// outcome after each answer.
    type Row = (u64, usize, &'static [(u64, bool)], &'static [Outcome]);

    const TABLE: &[Row] = {
        use Outcome::*;
        &[
            (3, 2, &[(1, true), (2, true)], &[Pending, Reached]),
            (3, 2, &[(1, true), (1, true)], &[Pending, Pending]),
            (3, 2, &[(9, true), (1, true)], &[Pending, Pending]),
            (3, 2, &[(1, false), (2, false)], &[Pending, Unreachable]),
            (3, 2, &[(1, false), (2, true), (3, true)], &[Pending, Pending, Reached]),
            (3, 3, &[(1, true), (2, false)], &[Pending, Unreachable]),
            (3, 1, &[(2, false), (3, false), (1, true)], &[Pending, Pending, Reached]),
            (1, 1, &[(1, false)], &[Unreachable]),
            (
                5,
                3,
                &[(1, true), (2, false), (3, false), (4, true), (5, true)],
                &[Pending, Pending, Pending, Pending, Reached],
            ),
            (5, 3, &[(1, false), (2, false), (3, false)], &[Pending, Pending, Unreachable]),
        ]
    };

    #[test]
    fn table() {
        for (row, &(asked, needed, answers, outcomes)) in TABLE.iter().enumerate() {
            let mut tally = Tally::new((1..=asked).map(NodeId).collect(), needed);
            for (step, (&(from, success), &expected)) in answers.iter().zip(outcomes).enumerate() {
                assert_eq!(tally.record(NodeId(from), success), expected, "row {row} step {step}");
            }
        }
    }

    #[test]
    fn success_is_not_revoked_by_a_later_failure_from_the_same_node() {
        let mut tally = Tally::new(vec![NodeId(1), NodeId(2)], 1);
        assert_eq!(tally.record(NodeId(1), true), Outcome::Reached);
        assert_eq!(tally.record(NodeId(1), false), Outcome::Reached);
        assert!(!tally.complete());
        tally.record(NodeId(2), false);
        assert!(tally.complete());
        assert_eq!(tally.succeeded(), &[NodeId(1)]);
    }
}
