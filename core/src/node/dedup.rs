//! Forwarded writes already coordinated, remembered for a while so that a
//! duplicated `Forward` message is not coordinated twice (which would store
//! one client write under two dots).

use std::collections::{BTreeSet, VecDeque};

use crate::NodeId;
use crate::message::Tag;
use crate::time::Instant;

#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    New,
    Duplicate,
    /// Too many forwards are remembered to admit another safely.
    Full,
}

#[derive(Debug, Default)]
pub struct SeenForwards {
    seen: BTreeSet<(NodeId, Tag)>,
    /// When each entry may be forgotten, oldest first.
    expiry: VecDeque<(Instant, NodeId, Tag)>,
}

impl SeenForwards {
    /// Remembers `(from, tag)` for `window`; says whether it is new.
    pub fn admit(
        &mut self,
        from: NodeId,
        tag: Tag,
        now: Instant,
        window: core::time::Duration,
        max: u32,
    ) -> Admission {
        while let Some(&(until, node, old)) = self.expiry.front() {
            if until > now {
                break;
            }
            self.expiry.pop_front();
            self.seen.remove(&(node, old));
        }
        if self.seen.contains(&(from, tag)) {
            return Admission::Duplicate;
        }
        if self.seen.len() >= max as usize {
            return Admission::Full;
        }
        self.seen.insert((from, tag));
        self.expiry.push_back((now + window, from, tag));
        Admission::New
    }
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    use super::*;

    #[test]
    fn duplicates_are_caught_within_the_window_and_memory_is_bounded() {
        let mut seen = SeenForwards::default();
        let tag = |seq| Tag { boot: 1, seq };
        let second = Duration::from_secs(1);
        let at = Instant::from_nanos;
        assert_eq!(seen.admit(NodeId(2), tag(1), at(0), second, 2), Admission::New);
        assert_eq!(seen.admit(NodeId(2), tag(1), at(10), second, 2), Admission::Duplicate);
        assert_eq!(seen.admit(NodeId(3), tag(1), at(10), second, 2), Admission::New);
        assert_eq!(seen.admit(NodeId(2), tag(2), at(20), second, 2), Admission::Full);
        assert_eq!(seen.admit(NodeId(2), tag(2), at(2_000_000_000), second, 2), Admission::New);
    }
}
