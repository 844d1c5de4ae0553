//! What servers may ask a node about itself, for INFO, `/v1/status`,
//! `/v1/ring` and `/metrics`.
//!
//! The driver implements [`Introspect`] over a snapshot it refreshes as the
//! node runs; calls must be cheap and must not wait on the node's event loop,
//! because monitoring has to answer while the node is busy.

use std::fmt::Write as _;

use serde::Serialize;

/// A node's view of itself, served to monitoring endpoints.
pub trait Introspect: Send + Sync + 'static {
    fn status(&self) -> NodeStatus;
    fn ring(&self) -> RingView;
    /// Appends node-level metrics (storage, gossip, hints…) in Prometheus
    /// text format after the servers' own metrics.
    fn write_metrics(&self, out: &mut String) {
        let _ = out;
    }
}

/// The node's identity, membership and size, as JSON at `/v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeStatus {
    /// This node's id, as `n<number>`.
    pub node: String,
    pub cluster: String,
    /// Seconds since the node started.
    pub uptime_seconds: u64,
    /// Replicas per key (N).
    pub replicas: u8,
    /// Every node this node knows of, itself included.
    pub members: Vec<Member>,
    /// Client keys stored on this node (its copies as a replica, not the
    /// cluster's total), estimated from storage counts without a scan. It
    /// errs high: a key overwritten since the last compaction counts once
    /// per copy, and a deleted key counts until its tombstone is reaped.
    /// `None` (JSON `null`) when the node has no estimate.
    pub keys_estimate: Option<u64>,
    /// Hints held for unreachable replicas.
    pub hints_pending: u64,
    /// True once the node refuses writes after a write to its disk failed.
    pub storage_failed: bool,
}

/// One cluster member as this node sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Member {
    pub node: String,
    /// Where peers reach it, `host:port`.
    pub address: String,
    pub state: MemberState,
    /// Hints this node holds for the member, to hand over when it is up.
    pub hints_pending: u64,
    /// Seconds since this node last exchanged anti-entropy trees with the
    /// member (either side starting it); `None` (JSON `null`) for itself
    /// and for a member it has not exchanged with since it started.
    pub last_exchange_seconds_ago: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Joining,
    Up,
    Suspect,
    Down,
    Leaving,
}

/// The consistent-hash ring, as JSON at `/v1/ring`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RingView {
    pub replicas: u8,
    /// Every virtual node's position, sorted by position.
    pub tokens: Vec<Token>,
    /// The share of the key space each node holds as a primary.
    pub ownership: Vec<Ownership>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Token {
    pub position: u64,
    pub node: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ownership {
    pub node: String,
    /// From 0 to 1; the fractions of all nodes add up to 1.
    pub fraction: f64,
}

impl NodeStatus {
    /// Prometheus lines for the parts of the status that are numbers.
    pub fn write_metrics(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP keel_node_uptime_seconds Seconds since the node started.");
        let _ = writeln!(out, "# TYPE keel_node_uptime_seconds gauge");
        let _ = writeln!(out, "keel_node_uptime_seconds {}", self.uptime_seconds);
        let _ =
            writeln!(out, "# HELP keel_cluster_members Cluster members by state, as this node sees them.");
        let _ = writeln!(out, "# TYPE keel_cluster_members gauge");
        for state in MemberState::ALL {
            let count = self.members.iter().filter(|member| member.state == state).count();
            let _ = writeln!(out, "keel_cluster_members{{state=\"{}\"}} {count}", state.name());
        }
        let _ = writeln!(out, "# HELP keel_hints_pending Hints held for unreachable replicas.");
        let _ = writeln!(out, "# TYPE keel_hints_pending gauge");
        let _ = writeln!(out, "keel_hints_pending {}", self.hints_pending);
        let _ = writeln!(
            out,
            "# HELP keel_storage_failed 1 when the node refuses writes after a write to its disk failed."
        );
        let _ = writeln!(out, "# TYPE keel_storage_failed gauge");
        let _ = writeln!(out, "keel_storage_failed {}", u8::from(self.storage_failed));
    }
}

impl MemberState {
    pub const ALL: [MemberState; 5] = [
        MemberState::Joining,
        MemberState::Up,
        MemberState::Suspect,
        MemberState::Down,
        MemberState::Leaving,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Up => "up",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Leaving => "leaving",
        }
    }
}
