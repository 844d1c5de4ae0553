//! What the transport counts, as lock-free counters and as the plain
//! snapshot [`Transport::stats`](super::Transport::stats) returns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use keel_core::NodeId;

/// A counter that only grows. Relaxed: readers want totals, not an order.
#[derive(Debug, Default)]
pub(super) struct Counter(AtomicU64);

impl Counter {
    pub(super) fn add(&self, amount: u64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A snapshot of the whole transport.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    pub peers: BTreeMap<NodeId, PeerStats>,
    /// Inbound connections that passed the handshake.
    pub inbound_accepted: u64,
    /// Inbound connections closed before or during the handshake, by reason.
    pub inbound_refused: RefusalCounts,
    /// Messages given to `send` for a node that is not a peer.
    pub unknown_destination: u64,
}

/// Why inbound connections were refused. Each refusal is also logged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusalCounts {
    /// Already at the limit of inbound connections.
    pub over_limit: u64,
    /// The first bytes were not keel's magic: not a keel node at all.
    pub bad_magic: u64,
    pub version: u64,
    pub cluster: u64,
    /// The sender's node id is not a peer of this node.
    pub unknown_node: u64,
    /// The sender meant to reach another node id at this address.
    pub wrong_target: u64,
    /// The handshake did not finish within the handshake timeout.
    pub timeout: u64,
    /// The connection closed or failed during the handshake.
    pub closed: u64,
}

impl RefusalCounts {
    pub fn total(&self) -> u64 {
        self.over_limit
            + self.bad_magic
            + self.version
            + self.cluster
            + self.unknown_node
            + self.wrong_target
            + self.timeout
            + self.closed
    }
}

/// A snapshot of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    pub address: SocketAddr,
    /// The outbound connection has passed its handshake and is open.
    pub connected: bool,
    /// An inbound connection from the peer has passed its handshake and is open.
    pub inbound_connected: bool,
    /// Messages and bytes waiting in the send queue now.
    pub queued_messages: u64,
    pub queued_bytes: u64,
    /// Messages handed to the socket, and their framed bytes.
    pub messages_sent: u64,
    pub bytes_sent: u64,
    /// Messages decoded from the peer's connections, and their framed bytes.
    pub messages_received: u64,
    pub bytes_received: u64,
    /// Messages refused because the send queue was full.
    pub dropped_queue_full: u64,
    /// Messages over `frame_bytes_max` (or that did not encode).
    pub dropped_too_large: u64,
    /// Messages accepted but never written: lost with a failed connection,
    /// the peer's removal, or shutdown.
    pub dropped_unsent: u64,
    /// Outbound connections that passed the handshake, and those of them
    /// that followed an earlier one.
    pub connects: u64,
    pub reconnects: u64,
    /// Outbound attempts that failed before the handshake (refused, timed out).
    pub connect_failures: u64,
    /// Outbound handshakes that failed or that the peer refused.
    pub handshake_failures: u64,
    /// Inbound connections from this peer closed for a frame whose length
    /// or checksum cannot be trusted (oversize, or the checksum fails).
    pub decode_errors: u64,
    /// Whole frames from this peer, their checksum sound, dropped because
    /// their payload is no valid message: it does not decode, or what it
    /// carries breaks an invariant (an object's siblings out of order, a
    /// key too long…). The connection stays.
    pub messages_rejected: u64,
    /// Empty frames sent to keep an idle connection known to be alive.
    pub keepalives_sent: u64,
}

/// The live counters behind [`PeerStats`].
#[derive(Debug, Default)]
pub(super) struct PeerCounters {
    pub(super) connected: AtomicBool,
    pub(super) messages_sent: Counter,
    pub(super) bytes_sent: Counter,
    pub(super) messages_received: Counter,
    pub(super) bytes_received: Counter,
    pub(super) dropped_queue_full: Counter,
    pub(super) dropped_too_large: Counter,
    pub(super) dropped_unsent: Counter,
    pub(super) connects: Counter,
    pub(super) connect_failures: Counter,
    pub(super) handshake_failures: Counter,
    pub(super) decode_errors: Counter,
    pub(super) messages_rejected: Counter,
    pub(super) keepalives_sent: Counter,
}

/// What a peer knows besides its counters.
pub(super) struct PeerState {
    pub(super) address: SocketAddr,
    pub(super) inbound_connected: bool,
    pub(super) queued_messages: u64,
    pub(super) queued_bytes: u64,
}

impl PeerCounters {
    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self, state: PeerState) -> PeerStats {
        let connects = self.connects.get();
        PeerStats {
            address: state.address,
            connected: self.connected.load(Ordering::Relaxed),
            inbound_connected: state.inbound_connected,
            queued_messages: state.queued_messages,
            queued_bytes: state.queued_bytes,
            messages_sent: self.messages_sent.get(),
            bytes_sent: self.bytes_sent.get(),
            messages_received: self.messages_received.get(),
            bytes_received: self.bytes_received.get(),
            dropped_queue_full: self.dropped_queue_full.get(),
            dropped_too_large: self.dropped_too_large.get(),
            dropped_unsent: self.dropped_unsent.get(),
            connects,
            reconnects: connects.saturating_sub(1),
            connect_failures: self.connect_failures.get(),
            handshake_failures: self.handshake_failures.get(),
            decode_errors: self.decode_errors.get(),
            messages_rejected: self.messages_rejected.get(),
            keepalives_sent: self.keepalives_sent.get(),
        }
    }
}

/// Why an inbound connection was refused; indexes [`GlobalCounters::refused`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    OverLimit,
    BadMagic,
    Version,
    Cluster,
    UnknownNode,
    WrongTarget,
    Timeout,
    Closed,
}

/// Counters that belong to no peer.
#[derive(Debug, Default)]
pub(super) struct GlobalCounters {
    pub(super) inbound_accepted: Counter,
    pub(super) unknown_destination: Counter,
    refused: [Counter; 8],
}

impl GlobalCounters {
    pub(super) fn refused(&self, refusal: Refusal) {
        self.refused[refusal as usize].add(1);
    }

    pub(super) fn snapshot(&self, peers: BTreeMap<NodeId, PeerStats>) -> TransportStats {
        let refused = |refusal: Refusal| self.refused[refusal as usize].get();
        TransportStats {
            peers,
            inbound_accepted: self.inbound_accepted.get(),
            inbound_refused: RefusalCounts {
                over_limit: refused(Refusal::OverLimit),
                bad_magic: refused(Refusal::BadMagic),
                version: refused(Refusal::Version),
                cluster: refused(Refusal::Cluster),
                unknown_node: refused(Refusal::UnknownNode),
                wrong_target: refused(Refusal::WrongTarget),
                timeout: refused(Refusal::Timeout),
                closed: refused(Refusal::Closed),
            },
            unknown_destination: self.unknown_destination.get(),
        }
    }
}
