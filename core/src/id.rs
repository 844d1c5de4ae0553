//! Identifiers shared across the core.

use core::fmt;

use serde::{Deserialize, Serialize};

/// A storage node's stable identity within a cluster. It names the machine's
/// role, not its data: a node that loses its disk keeps its `NodeId` but gets a
/// new incarnation (see `version::Actor`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
