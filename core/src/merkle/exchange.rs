//! The initiator's side of an exchange: comparing this replica's tree of a
//! range with a peer's, stage by stage, down to the keys that differ.
//!
//! # Stages
//!
//! 1. **Root.** Send this tree's root; the peer answers that it is equal
//!    (the exchange is over: two messages) or with all its branch hashes.
//! 2. **Branches.** Compare them with ours; ask for the segment hashes of at
//!    most `branches_max` differing branches.
//! 3. **Segments.** Compare; ask for the keys and versions of at most
//!    `segments_max` differing segments, and scan our own store for the same.
//! 4. **Keys.** Compare the two lists; at most `keys_max` keys that differ
//!    are candidates.
//! 5. **Confirm.** After `confirm_delay`, read the candidates' versions again
//!    on both sides. A key is reported only if it still differs: a write
//!    that was on its way to one replica at the first comparison has landed
//!    by the second, and is not mistaken for a divergence.
//!
//! What a cap leaves out waits for the next exchange. Where there is more
//! than a cap's worth, which part is taken depends on the `rotation` the
//! caller passes, so a difference that cannot be repaired (a copy that keeps
//! failing) does not keep the others from ever being chosen.
//!
//! # Driving an exchange
//!
//! After [`Exchange::new`] and after every `handle_*` call, drain
//! [`poll_output`](Exchange::poll_output) and carry out each [`Step`]:
//! send a request to the peer and pass its reply to
//! [`handle_reply`](Exchange::handle_reply); scan or read this replica's
//! store and pass the result to [`handle_scanned`](Exchange::handle_scanned)
//! or [`handle_read`](Exchange::handle_read). Then wake the exchange at
//! [`poll_timeout`](Exchange::poll_timeout) with
//! [`handle_timeout`](Exchange::handle_timeout). The last step is
//! [`Step::Done`]. An error ends the exchange: the peer sent what was not
//! asked for, or refused. A caller that hears nothing back drops the exchange.

use core::fmt;
use core::time::Duration;
use std::collections::VecDeque;

use thiserror::Error;

use super::respond::{SegmentScan, VersionRead};
use super::tree::{Arcs, RangeTree};
use super::wire::{
    KEY_LIST_BYTES_MAX, KEYS_PER_REQUEST_MAX, KeyList, KeyVersion, Refusal, Reply, Request,
    SEGMENT_HASHES_PER_REPLY_MAX, SEGMENTS_PER_REQUEST_MAX, TreeId, ring_offset,
};
use super::{TreeHash, VersionHash};
use crate::Instant;
use crate::ring;

/// The caps of one exchange and the delay of its second comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// Differing branches whose segment hashes are fetched.
    pub branches_max: u32,
    /// Differing segments whose keys are listed.
    pub segments_max: u32,
    /// Differing keys confirmed, and so reported for repair.
    pub keys_max: u32,
    /// Bytes of each side's key list (a key's length plus 8 per entry), and
    /// of the keys confirmed, counted the same way.
    pub list_bytes_max: u32,
    /// Time between the two comparisons of a key.
    pub confirm_delay: Duration,
}

impl Default for ExchangeConfig {
    /// An exchange of the default tree moves at most about 2 KiB of branch
    /// hashes, 16 KiB of segment hashes, 1 MiB of keys each way and 1024 keys
    /// to confirm. The delay is twice a request's default deadline: a write
    /// still in flight at the first comparison has landed or failed by the
    /// second.
    fn default() -> ExchangeConfig {
        ExchangeConfig {
            branches_max: 32,
            segments_max: 256,
            keys_max: 1024,
            list_bytes_max: 1 << 20,
            confirm_delay: Duration::from_secs(4),
        }
    }
}

/// What the caller does next for an exchange.
#[derive(Debug)]
pub enum Step {
    /// Send to the peer; its reply goes to [`Exchange::handle_reply`].
    Send(Request),
    /// Scan this replica's store as [`SegmentScan`] says; the list goes to
    /// [`Exchange::handle_scanned`].
    Scan(SegmentScan),
    /// Read the versions of these keys in this replica's store; they go to
    /// [`Exchange::handle_read`].
    Read(VersionRead),
    /// The exchange is over.
    Done(Outcome),
}

/// What an exchange found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Keys that differed in both comparisons, in ring order: merge each
    /// replica's copy into the other's.
    pub repair: Vec<Vec<u8>>,
    pub branches_differing: u32,
    pub segments_differing: u32,
    /// Keys that differed at the first comparison, before the cap.
    pub keys_differing: u32,
    /// A cap or a key list cut short left differences for a later exchange.
    pub capped: bool,
}

/// Which replica a list came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Local,
    Peer,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Local => "local",
            Side::Peer => "peer's",
        })
    }
}

/// Why an exchange ended early.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeError {
    #[error("the peer refused the exchange: {0:?}")]
    Refused(Refusal),
    #[error("a {got} answer where {expected} was due")]
    Unexpected { expected: &'static str, got: &'static str },
    #[error("the {side} {what}: {got} entries where {expected} were due")]
    Count { side: Side, what: &'static str, expected: usize, got: usize },
    #[error("the {side} key list: {problem}")]
    List { side: Side, problem: &'static str },
}

/// One exchange, from this replica's side; see the module documentation.
#[derive(Debug)]
pub struct Exchange {
    tree: TreeId,
    arcs: Arcs,
    config: ExchangeConfig,
    rotation: u64,
    stage: Stage,
    steps: VecDeque<Step>,
    outcome: Outcome,
}

#[derive(Debug)]
enum Stage {
    /// The root was sent.
    Root,
    /// Segment hashes of `branches` were asked for.
    Segments {
        branches: Vec<u32>,
    },
    /// Keys of `segments` were asked for, here and there, from the start
    /// or from just after the key `after`.
    Keys {
        segments: Vec<u32>,
        after: Option<Vec<u8>>,
        peer: Option<Listed>,
        local: Option<Listed>,
    },
    /// `keys` differed once; compare them again at `at`.
    Waiting {
        keys: Vec<Vec<u8>>,
        at: Instant,
    },
    /// Versions of `keys` were asked for, here and there.
    Confirm {
        keys: Vec<Vec<u8>>,
        peer: Option<Vec<Option<VersionHash>>>,
        local: Option<Vec<Option<VersionHash>>>,
    },
    Over,
}

impl Stage {
    /// What the stage waits for, for errors.
    fn expects(&self) -> &'static str {
        match self {
            Stage::Root => "an in-sync or branches reply",
            Stage::Segments { .. } => "a segments reply",
            Stage::Keys { .. } => "key lists",
            Stage::Waiting { .. } => "the confirmation timer",
            Stage::Confirm { .. } => "versions",
            Stage::Over => "nothing (the exchange is over)",
        }
    }
}

/// A key list checked against the segments it answers, with each entry's
/// ring offset (its order within the range).
#[derive(Debug)]
struct Listed {
    offsets: Vec<u64>,
    list: KeyList,
}

impl Exchange {
    /// Starts an exchange of `tree` with a replica of the same range. Caps
    /// beyond the protocol's bounds are lowered to them. `rotation` chooses
    /// which differences a cap keeps; pass a different value each time (a
    /// counter, or a draw from the node's seeded generator).
    pub fn new(tree: &RangeTree, config: ExchangeConfig, rotation: u64) -> Exchange {
        let shape = tree.shape();
        let branches_max = (SEGMENT_HASHES_PER_REPLY_MAX / shape.segments_per_branch()).min(shape.branches());
        let config = ExchangeConfig {
            branches_max: config.branches_max.clamp(1, branches_max),
            segments_max: config.segments_max.clamp(1, SEGMENTS_PER_REQUEST_MAX),
            keys_max: config.keys_max.clamp(1, KEYS_PER_REQUEST_MAX),
            list_bytes_max: config.list_bytes_max.min(KEY_LIST_BYTES_MAX),
            confirm_delay: config.confirm_delay,
        };
        let mut steps = VecDeque::new();
        steps.push_back(Step::Send(Request::Root { tree: tree.id(), root: tree.root() }));
        Exchange {
            tree: tree.id(),
            arcs: tree.arcs(),
            config,
            rotation,
            stage: Stage::Root,
            steps,
            outcome: Outcome::default(),
        }
    }

    pub fn tree(&self) -> TreeId {
        self.tree
    }

    pub fn is_over(&self) -> bool {
        matches!(self.stage, Stage::Over)
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Step> {
        self.steps.pop_front()
    }

    /// When to call [`handle_timeout`](Exchange::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.stage {
            Stage::Waiting { at, .. } => Some(at),
            _ => None,
        }
    }

    /// Starts the second comparison once its time has come; otherwise a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        match std::mem::replace(&mut self.stage, Stage::Over) {
            Stage::Waiting { keys, at } if at <= now => {
                self.steps.push_back(Step::Send(Request::Versions { tree: self.tree, keys: keys.clone() }));
                self.steps.push_back(Step::Read(VersionRead { tree: self.tree, keys: keys.clone() }));
                self.stage = Stage::Confirm { keys, peer: None, local: None };
            }
            stage => self.stage = stage,
        }
    }

    /// The peer's reply to the last request sent. `tree` is this replica's
    /// tree of the range as it is now. An error ends the exchange.
    pub fn handle_reply(
        &mut self,
        now: Instant,
        tree: &RangeTree,
        reply: Reply,
    ) -> Result<(), ExchangeError> {
        assert_eq!(tree.id(), self.tree, "compared with this replica's tree of the same range");
        let stage = std::mem::replace(&mut self.stage, Stage::Over);
        let result = match (stage, reply) {
            (_, Reply::Refused(refusal)) => Err(ExchangeError::Refused(refusal)),
            (Stage::Root, Reply::InSync) => {
                self.finish(Vec::new());
                Ok(())
            }
            (Stage::Root, Reply::Branches(hashes)) => self.compare_branches(tree, &hashes),
            (Stage::Segments { branches }, Reply::Segments(hashes)) => {
                self.compare_segments(tree, &branches, &hashes)
            }
            (Stage::Keys { segments, after, peer: None, local }, Reply::Keys(list)) => {
                self.checked(Side::Peer, &segments, after.as_deref(), list).map(|listed| {
                    self.stage = Stage::Keys { segments, after, peer: Some(listed), local };
                    self.compare_keys(now);
                })
            }
            (Stage::Confirm { keys, peer: None, local }, Reply::Versions(versions)) => {
                if versions.len() == keys.len() {
                    self.stage = Stage::Confirm { keys, peer: Some(versions), local };
                    self.confirm();
                    Ok(())
                } else {
                    let (expected, got) = (keys.len(), versions.len());
                    Err(ExchangeError::Count { side: Side::Peer, what: "versions", expected, got })
                }
            }
            (stage, reply) => Err(ExchangeError::Unexpected { expected: stage.expects(), got: reply.kind() }),
        };
        match result {
            Ok(()) => Ok(()),
            Err(error) => self.fail(error),
        }
    }

    /// The list this replica's own scan ([`Step::Scan`]) produced.
    pub fn handle_scanned(&mut self, now: Instant, list: KeyList) -> Result<(), ExchangeError> {
        let stage = std::mem::replace(&mut self.stage, Stage::Over);
        let Stage::Keys { segments, after, peer, local: None } = stage else {
            return self.fail(ExchangeError::Unexpected { expected: stage.expects(), got: "local key list" });
        };
        let listed = match self.checked(Side::Local, &segments, after.as_deref(), list) {
            Ok(listed) => listed,
            Err(error) => return self.fail(error),
        };
        self.stage = Stage::Keys { segments, after, peer, local: Some(listed) };
        self.compare_keys(now);
        Ok(())
    }

    /// The versions this replica's own reads ([`Step::Read`]) found, one per key.
    pub fn handle_read(&mut self, versions: Vec<Option<VersionHash>>) -> Result<(), ExchangeError> {
        let stage = std::mem::replace(&mut self.stage, Stage::Over);
        let Stage::Confirm { keys, peer, local: None } = stage else {
            return self.fail(ExchangeError::Unexpected { expected: stage.expects(), got: "local versions" });
        };
        if versions.len() != keys.len() {
            let (expected, got) = (keys.len(), versions.len());
            return self.fail(ExchangeError::Count { side: Side::Local, what: "versions", expected, got });
        }
        self.stage = Stage::Confirm { keys, peer, local: Some(versions) };
        self.confirm();
        Ok(())
    }

    /// Ends the exchange with `error`.
    fn fail(&mut self, error: ExchangeError) -> Result<(), ExchangeError> {
        self.stage = Stage::Over;
        self.steps.clear();
        Err(error)
    }

    fn compare_branches(&mut self, tree: &RangeTree, hashes: &[TreeHash]) -> Result<(), ExchangeError> {
        let expected = tree.shape().branches() as usize;
        if hashes.len() != expected {
            return Err(ExchangeError::Count {
                side: Side::Peer,
                what: "branch hashes",
                expected,
                got: hashes.len(),
            });
        }
        let differing: Vec<u32> = (0..tree.shape().branches())
            .filter(|&branch| hashes[branch as usize] != tree.branch_hash(branch))
            .collect();
        self.outcome.branches_differing = differing.len() as u32;
        if differing.is_empty() {
            // The trees changed since the roots were compared.
            self.finish(Vec::new());
            return Ok(());
        }
        let branches = self.pick(differing, self.config.branches_max);
        self.steps.push_back(Step::Send(Request::Segments { tree: self.tree, branches: branches.clone() }));
        self.stage = Stage::Segments { branches };
        Ok(())
    }

    fn compare_segments(
        &mut self,
        tree: &RangeTree,
        branches: &[u32],
        hashes: &[TreeHash],
    ) -> Result<(), ExchangeError> {
        let per_branch = tree.shape().segments_per_branch();
        let expected = branches.len() * per_branch as usize;
        if hashes.len() != expected {
            let got = hashes.len();
            return Err(ExchangeError::Count { side: Side::Peer, what: "segment hashes", expected, got });
        }
        let segments = branches.iter().flat_map(|&branch| branch * per_branch..(branch + 1) * per_branch);
        let differing: Vec<u32> = segments
            .zip(hashes)
            .filter(|&(segment, hash)| *hash != tree.segment_hash(segment))
            .map(|(s, _)| s)
            .collect();
        self.outcome.segments_differing = differing.len() as u32;
        if differing.is_empty() {
            self.finish(Vec::new());
            return Ok(());
        }
        let segments = self.pick(differing, self.config.segments_max);
        self.list_keys(segments, None);
        Ok(())
    }

    /// Asks both sides for the keys of `segments`, from just after `after`.
    fn list_keys(&mut self, segments: Vec<u32>, after: Option<Vec<u8>>) {
        let (tree, arcs, bytes_max) = (self.tree, self.arcs, self.config.list_bytes_max);
        let request = Request::Keys { tree, segments: segments.clone(), after: after.clone() };
        self.steps.push_back(Step::Send(request));
        self.steps.push_back(Step::Scan(SegmentScan::new(
            tree,
            arcs,
            segments.clone(),
            after.clone(),
            bytes_max,
        )));
        self.stage = Stage::Keys { segments, after, peer: None, local: None };
    }

    /// Once both lists are in: the keys that differ become candidates. When
    /// none do up to where a list was cut short, both sides list on from
    /// there: a segment too large for one list is still compared whole,
    /// a list at a time, rather than never past its start.
    fn compare_keys(&mut self, now: Instant) {
        let Stage::Keys { segments, peer: Some(peer), local: Some(local), .. } = &self.stage else { return };
        let cut =
            [local, peer].into_iter().filter(|listed| !listed.list.complete).filter_map(Listed::last).min();
        let differing = differing_keys(local, peer, cut);
        let cut = cut.map(|(_, key)| key.to_vec());
        self.outcome.keys_differing += differing.len() as u32;
        if differing.is_empty() {
            match cut {
                Some(key) => {
                    let segment = self.arcs.segment_of(ring::position(&key));
                    let rest = segments.iter().copied().filter(|&later| later >= segment).collect();
                    self.list_keys(rest, Some(key));
                }
                None => self.finish(Vec::new()),
            }
            return;
        }
        self.outcome.capped |= cut.is_some();
        let mut keys = self.pick(differing, self.config.keys_max);
        // The confirmation names the keys again: they fit in a list's bytes.
        let mut bytes = 0;
        let fit = keys.iter().take_while(|key| {
            bytes += KeyVersion::list_bytes(key);
            bytes <= u64::from(self.config.list_bytes_max)
        });
        let fit = fit.count().max(1);
        if fit < keys.len() {
            keys.truncate(fit);
            self.outcome.capped = true;
        }
        self.stage = Stage::Waiting { keys, at: now + self.config.confirm_delay };
    }

    /// Once both sides' versions are in: the keys that still differ are the outcome.
    fn confirm(&mut self) {
        let Stage::Confirm { keys, peer: Some(peer), local: Some(local) } = &mut self.stage else { return };
        let keys = std::mem::take(keys);
        let still: Vec<bool> = peer.iter().zip(local.iter()).map(|(peer, local)| peer != local).collect();
        let repair =
            keys.into_iter().zip(still).filter(|&(_, differs)| differs).map(|(key, _)| key).collect();
        self.finish(repair);
    }

    fn finish(&mut self, repair: Vec<Vec<u8>>) {
        let outcome = Outcome { repair, ..std::mem::take(&mut self.outcome) };
        self.steps.push_back(Step::Done(outcome));
        self.stage = Stage::Over;
    }

    /// At most `max` of `items`, keeping their order: a run of them,
    /// wrapping around, that starts where the rotation says.
    fn pick<T>(&mut self, items: Vec<T>, max: u32) -> Vec<T> {
        let (len, max) = (items.len(), max as usize);
        if len <= max {
            return items;
        }
        self.outcome.capped = true;
        let start = (self.rotation % len as u64) as usize;
        let end = start + max;
        let picked: Vec<T> = items
            .into_iter()
            .enumerate()
            .filter(|&(index, _)| (start..end).contains(&index) || index + len < end)
            .map(|(_, item)| item)
            .collect();
        debug_assert_eq!(picked.len(), max);
        picked
    }

    /// `list`, if every entry lies in one of `segments`, after `after`, in
    /// ring order.
    fn checked(
        &self,
        side: Side,
        segments: &[u32],
        after: Option<&[u8]>,
        list: KeyList,
    ) -> Result<Listed, ExchangeError> {
        let problem = |problem| ExchangeError::List { side, problem };
        if !list.complete && list.entries.is_empty() {
            return Err(problem("cut short without an entry"));
        }
        let range = self.arcs.range();
        let mut offsets = Vec::with_capacity(list.entries.len());
        let mut previous = after.map(|key| (ring_offset(range, ring::position(key)), key));
        for entry in &list.entries {
            let position = ring::position(&entry.key);
            if !range.contains(position) || segments.binary_search(&self.arcs.segment_of(position)).is_err() {
                return Err(problem("a key outside the segments asked for"));
            }
            let at = (ring_offset(range, position), entry.key.as_slice());
            if previous.is_some_and(|previous| previous >= at) {
                return Err(problem("keys out of ring order"));
            }
            previous = Some(at);
            offsets.push(at.0);
        }
        Ok(Listed { offsets, list })
    }
}

impl Listed {
    /// Entry `index`'s place in ring order, and its version.
    fn entry(&self, index: usize) -> Option<((u64, &[u8]), VersionHash)> {
        let entry = self.list.entries.get(index)?;
        Some(((self.offsets[index], entry.key.as_slice()), entry.version))
    }

    /// The last entry's place in ring order.
    fn last(&self) -> Option<(u64, &[u8])> {
        self.entry(self.list.entries.len().checked_sub(1)?).map(|(at, _)| at)
    }
}

/// The keys whose versions differ between the two lists, or that only one
/// holds, in ring order, up to `cut` (where the first list cut short ends:
/// neither says anything past it).
fn differing_keys(local: &Listed, peer: &Listed, cut: Option<(u64, &[u8])>) -> Vec<Vec<u8>> {
    let within = |at: (u64, &[u8])| cut.is_none_or(|cut| at <= cut);
    let mut differing = Vec::new();
    let (mut i, mut j) = (0, 0);
    loop {
        let (mine, theirs) = (local.entry(i), peer.entry(j));
        let (at, differs) = match (mine, theirs) {
            (None, None) => break,
            (Some((at, _)), None) => {
                i += 1;
                (at, true)
            }
            (None, Some((at, _))) => {
                j += 1;
                (at, true)
            }
            (Some((a, _)), Some((b, _))) if a < b => {
                i += 1;
                (a, true)
            }
            (Some((a, _)), Some((b, _))) if b < a => {
                j += 1;
                (b, true)
            }
            (Some((at, mine)), Some((_, theirs))) => {
                i += 1;
                j += 1;
                (at, mine != theirs)
            }
        };
        if !within(at) {
            break;
        }
        if differs {
            differing.push(at.1.to_vec());
        }
    }
    differing
}
