//! What gossip hands its driver: messages to send, events, counters.

use core::time::Duration;

use super::{Address, Message, State};
use crate::NodeId;

/// Something the driver must do for gossip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `message` to member `to` at `address`. `to` is `None` for a
    /// seed, known only by its address until it answers.
    Send { to: Option<NodeId>, address: Address, message: Message },
    /// Something worth logging or counting; needs no action.
    Event(Event),
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// This node learned of a member (`previous` is `None`) or saw its
    /// state change.
    StateChanged { id: NodeId, previous: Option<State>, state: State, incarnation: u64 },
    /// This node's own probe of a member went unanswered, and it accused
    /// the member (a new suspicion, or a confirmation of one).
    SuspicionRaised { id: NodeId, incarnation: u64 },
    /// This node heard a claim about itself above its own (an accusation,
    /// or a claim of an earlier life) and refuted it with a new incarnation.
    Refuted { claim: State, incarnation: u64 },
    /// A member holds a newer layout version than any this node had seen.
    LayoutSeen { version: u64, holder: NodeId },
    /// This node was called `late_by` past the deadline it asked for, and
    /// took it that it was paused.
    PauseDetected { late_by: Duration },
}

/// Counters, ready to be exported as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub probes_sent: u64,
    /// Probes that got no ack, direct or relayed, within their period.
    pub probes_failed: u64,
    /// Helpers asked to probe a member for this node.
    pub indirect_probes_sent: u64,
    /// Probes this node ran as a helper for others.
    pub indirect_probes_relayed: u64,
    /// Nacks a failed probe's helpers should have sent but did not.
    pub nacks_missed: u64,
    /// Accusations this node made after its own probes failed.
    pub suspicions_raised: u64,
    /// Suspicions and death claims of this node that it refuted.
    pub suspicions_refuted: u64,
    pub pauses_detected: u64,
    pub members_alive: u64,
    pub members_suspect: u64,
    pub members_dead: u64,
    pub members_left: u64,
    /// Lifeguard's local health score: timeouts stretch by `health + 1`.
    pub health: u32,
    pub broadcasts_queued: u64,
}
