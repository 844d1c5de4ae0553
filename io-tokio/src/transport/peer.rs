//! One peer's shared state: its send queue, its address, and the inbound
//! connection it currently has open to this node.
//!
//! The send queue is one buffer of encoded frames. `send` appends to it
//! under a mutex; the writer swaps it out whole and writes it with one call,
//! so a burst of sends costs one syscall, and the swap leaves the writer's
//! emptied buffer behind for the next burst, so neither side reallocates in
//! a steady state.

use std::net::SocketAddr;

use keel_core::NodeId;
use keel_core::frame;
use keel_core::message::Message;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::stats::{PeerCounters, PeerState, PeerStats};
use super::{TransportConfig, lock};

#[derive(Debug)]
pub(super) struct Peer {
    pub(super) id: NodeId,
    /// The writer watches it to reconnect at once when the address changes.
    pub(super) address: watch::Sender<SocketAddr>,
    queue: std::sync::Mutex<Queue>,
    /// Wakes the writer when the queue goes from empty to not empty.
    pub(super) wake: Notify,
    /// Cuts a reconnection backoff short: the peer just connected to us, so
    /// it is up and we should be able to reach it too.
    pub(super) redial: Notify,
    /// Cancelled when the peer is removed or the transport shuts down.
    pub(super) stop: CancellationToken,
    inbound: std::sync::Mutex<Option<InboundSlot>>,
    pub(super) counters: PeerCounters,
}

#[derive(Debug, Default)]
struct Queue {
    frames: Vec<u8>,
    messages: usize,
}

/// The inbound connection from this peer that is being read.
#[derive(Debug)]
struct InboundSlot {
    serial: u64,
    stop: CancellationToken,
}

impl Peer {
    pub(super) fn new(id: NodeId, address: SocketAddr, stop: CancellationToken) -> Peer {
        Peer {
            id,
            address: watch::Sender::new(address),
            queue: std::sync::Mutex::new(Queue::default()),
            wake: Notify::new(),
            redial: Notify::new(),
            stop,
            inbound: std::sync::Mutex::new(None),
            counters: PeerCounters::default(),
        }
    }

    /// Encodes `message` at the end of the queue, or counts why it could not.
    pub(super) fn enqueue(&self, message: &Message, config: &TransportConfig) {
        let mut queue = lock(&self.queue);
        if queue.messages >= config.send_queue_max {
            drop(queue);
            self.counters.dropped_queue_full.add(1);
            return;
        }
        let start = queue.frames.len();
        if let Err(error) = frame::encode(message, config.frame_bytes_max, &mut queue.frames) {
            if queue.frames.len() < start {
                // A serializer error leaves the buffer empty: what was queued is lost.
                let lost = queue.messages as u64;
                queue.messages = 0;
                queue.frames.clear();
                self.counters.dropped_unsent.add(lost);
            }
            drop(queue);
            self.counters.dropped_too_large.add(1);
            tracing::warn!(peer = %self.id, kind = message.kind(), %error, "dropped a message that does not encode");
            return;
        }
        if start > 0 && queue.frames.len() as u64 > config.send_queue_bytes_max {
            queue.frames.truncate(start);
            drop(queue);
            self.counters.dropped_queue_full.add(1);
            return;
        }
        queue.messages += 1;
        let first = queue.messages == 1;
        drop(queue);
        if first {
            self.wake.notify_one();
        }
    }

    /// Swaps the queued frames into `batch`, which must be empty, and
    /// returns how many messages they hold.
    pub(super) fn take(&self, batch: &mut Vec<u8>) -> usize {
        debug_assert!(batch.is_empty());
        let mut queue = lock(&self.queue);
        std::mem::swap(&mut queue.frames, batch);
        std::mem::take(&mut queue.messages)
    }

    /// Empties the queue and counts its messages as never sent.
    pub(super) fn discard(&self) {
        let mut batch = Vec::new();
        let lost = self.take(&mut batch);
        self.counters.dropped_unsent.add(lost as u64);
    }

    pub(super) fn readdress(&self, address: SocketAddr) {
        self.address.send_if_modified(|current| {
            let changed = *current != address;
            *current = address;
            changed
        });
    }

    /// Makes the connection numbered `serial` the one read from this peer,
    /// closing the one it replaces: a peer opens a new connection only after
    /// giving up its old one, and reading both could reorder its messages.
    pub(super) fn replace_inbound(&self, serial: u64) -> CancellationToken {
        let stop = self.stop.child_token();
        let previous = lock(&self.inbound).replace(InboundSlot { serial, stop: stop.clone() });
        if let Some(previous) = previous {
            previous.stop.cancel();
        }
        stop
    }

    /// Forgets the connection numbered `serial` unless a newer one replaced it.
    pub(super) fn clear_inbound(&self, serial: u64) {
        let mut slot = lock(&self.inbound);
        if slot.as_ref().is_some_and(|current| current.serial == serial) {
            *slot = None;
        }
    }

    pub(super) fn stats(&self) -> PeerStats {
        let (queued_messages, queued_bytes) = {
            let queue = lock(&self.queue);
            (queue.messages as u64, queue.frames.len() as u64)
        };
        self.counters.snapshot(PeerState {
            address: *self.address.borrow(),
            inbound_connected: lock(&self.inbound).is_some(),
            queued_messages,
            queued_bytes,
        })
    }
}
