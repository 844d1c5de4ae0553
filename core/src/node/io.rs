//! What goes into a node and what comes out of it.

use crate::NodeId;
use crate::client::{Reply, Request, RequestId};
use crate::disk::DiskError;
use crate::lsm::SyncRequest;
use crate::lsm::job::{Job, JobDone};
use crate::message::Message;

/// An event for the node to handle.
#[derive(Debug)]
pub enum Input {
    /// A message from a peer. The driver vouches for `from` (the transport
    /// authenticated the connection).
    Message { from: NodeId, message: Message },
    /// A client request; the node answers with `Output::Reply` carrying `id`.
    Client { id: RequestId, request: Request },
    /// The outcome of an `Output::Sync` the node asked for.
    Synced { request: SyncRequest, result: Result<(), DiskError> },
    /// A job the node handed out, done (`Job::run`).
    JobDone(JobDone),
}

/// Something the driver must do for the node.
#[derive(Debug, PartialEq)]
pub enum Output {
    Send {
        to: NodeId,
        message: Message,
    },
    Reply {
        id: RequestId,
        reply: Reply,
    },
    /// Make the named file durable (fsync), off the event loop if need be,
    /// then hand the result back as `Input::Synced`. At most one is in flight.
    Sync(SyncRequest),
    /// Long storage work (a flush, a compaction): run it off the event loop
    /// with `Job::run` on the node's disk and hand the result back as
    /// `Input::JobDone`. The node keeps serving meanwhile; a few may be in
    /// flight at once, and they finish in any order.
    Job(Job),
    /// Something worth logging or counting; needs no action.
    Event(Event),
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A write to the disk failed (a sync, a log append, a flush): the node
    /// now refuses writes until it is restarted.
    StorageFailed { reason: String },
    /// A compaction could not read its input (a corrupt table); the engine
    /// keeps serving and tries again later.
    MaintenanceFailed { reason: String },
    /// A read found replicas behind and sent them the merged version.
    ReadRepair { replicas: Vec<NodeId> },
}
