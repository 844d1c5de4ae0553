//! What the driver publishes about its node for `/v1/status`, `/v1/ring`,
//! `/metrics` and the Redis INFO command, without the servers ever touching
//! the node itself.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::NodeId;
use keel_core::node::{Node, NodeStats};
use keel_core::ring::Ring;

use super::clock::Clock;
use crate::service::{Introspect, Member, MemberState, NodeStatus, Ownership, RingView, Token};
use crate::transport::TransportStats;

/// The latest picture of the node, refreshed by the driver.
#[derive(Debug, Default)]
struct Snapshot {
    status: NodeStatus,
    ring: RingView,
    stats: NodeStats,
    transport: Option<TransportStats>,
}

/// The servers' window on the node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeIntrospect {
    snapshot: Arc<Mutex<Snapshot>>,
    clock: Clock,
}

impl NodeIntrospect {
    pub(super) fn new(clock: Clock) -> NodeIntrospect {
        NodeIntrospect { snapshot: Arc::default(), clock }
    }

    /// Refreshes the snapshot from the node; the ring view is rebuilt only
    /// when it is empty (membership is static for now).
    pub(super) fn refresh(
        &self,
        node: &Node,
        cluster: &str,
        addresses: &BTreeMap<NodeId, SocketAddr>,
        transport: TransportStats,
    ) {
        let up: BTreeMap<NodeId, bool> = node.peer_states().into_iter().collect();
        let hints: BTreeMap<NodeId, u64> = node.hints_by_owner().into_iter().collect();
        let exchanged: BTreeMap<NodeId, Duration> = node.last_exchanges().into_iter().collect();
        let members = node
            .ring()
            .members()
            .iter()
            .map(|member| {
                let state = if member.id == node.id() || up.get(&member.id) == Some(&true) {
                    MemberState::Up
                } else {
                    MemberState::Down
                };
                let address = addresses.get(&member.id).map_or_else(String::new, ToString::to_string);
                let hints_pending = hints.get(&member.id).copied().unwrap_or(0);
                let last_exchange_seconds_ago = exchanged.get(&member.id).map(Duration::as_secs);
                Member {
                    node: member.id.to_string(),
                    address,
                    state,
                    hints_pending,
                    last_exchange_seconds_ago,
                }
            })
            .collect();
        let stats = node.stats();
        let mut snapshot = self.lock();
        snapshot.status = NodeStatus {
            node: node.id().to_string(),
            cluster: cluster.to_owned(),
            uptime_seconds: 0,
            replicas: node.config().ring.replicas,
            members,
            keys_estimate: Some(stats.keys_estimate),
            hints_pending: stats.hints_pending,
            storage_failed: node.is_poisoned(),
        };
        if snapshot.ring.tokens.is_empty() {
            snapshot.ring = ring_view(node.ring());
        }
        snapshot.stats = stats;
        snapshot.transport = Some(transport);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Introspect for NodeIntrospect {
    fn status(&self) -> NodeStatus {
        let mut status = self.lock().status.clone();
        status.uptime_seconds = self.clock.uptime().as_secs();
        status
    }

    fn ring(&self) -> RingView {
        self.lock().ring.clone()
    }

    fn write_metrics(&self, out: &mut String) {
        let snapshot = self.lock();
        write_node_metrics(&snapshot.stats, out);
        if let Some(transport) = &snapshot.transport {
            write_transport_metrics(transport, out);
        }
    }
}

fn ring_view(ring: &Ring) -> RingView {
    let tokens = ring
        .ranges()
        .filter_map(|range| Some(Token { position: range.end, node: range.preference.first()?.to_string() }))
        .collect();
    let ownership = ring
        .ownership()
        .into_iter()
        .map(|(node, owned)| Ownership { node: node.to_string(), fraction: owned.primary })
        .collect();
    RingView { replicas: ring.config().replicas, tokens, ownership }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

fn write_node_metrics(stats: &NodeStats, out: &mut String) {
    let counters = [
        ("keel_node_gets_total", "Gets this node coordinated.", stats.gets),
        ("keel_node_puts_total", "Puts this node coordinated or forwarded.", stats.puts),
        ("keel_node_deletes_total", "Deletes this node coordinated or forwarded.", stats.deletes),
        ("keel_node_forwarded_total", "Writes forwarded to a primary replica.", stats.forwarded),
        ("keel_node_replica_writes_total", "Writes stored for a coordinator.", stats.replica_writes),
        ("keel_node_replica_reads_total", "Reads served for a coordinator.", stats.replica_reads),
        ("keel_node_read_repairs_total", "Replicas sent a merged version after a read.", stats.read_repairs),
        ("keel_node_timeouts_total", "Requests that ran past their deadline.", stats.timeouts),
        ("keel_node_unavailable_total", "Requests refused for want of live replicas.", stats.unavailable),
        ("keel_node_rejected_total", "Requests refused over a limit.", stats.rejected),
        (
            "keel_node_corrupt_records_replaced_total",
            "Unreadable copies rewritten.",
            stats.corrupt_records_replaced,
        ),
        ("keel_hints_stored_total", "Hints stored for replicas that were down.", stats.hints_stored),
        ("keel_hints_delivered_total", "Hints handed over to their replicas.", stats.hints_delivered),
        (
            "keel_hints_dropped_total",
            "Hints not kept (at a bound) or dropped (too old, unreadable); anti-entropy repairs their keys.",
            stats.hints_dropped,
        ),
        (
            "keel_anti_entropy_exchanges_started_total",
            "Anti-entropy exchanges this node started.",
            stats.anti_entropy.exchanges_started,
        ),
        (
            "keel_anti_entropy_exchanges_completed_total",
            "Anti-entropy exchanges that ran to their end.",
            stats.anti_entropy.exchanges_completed,
        ),
        (
            "keel_anti_entropy_exchanges_failed_total",
            "Anti-entropy exchanges refused, timed out, or cut short by a rebuild.",
            stats.anti_entropy.exchanges_failed,
        ),
        (
            "keel_anti_entropy_keys_repaired_total",
            "Keys anti-entropy found different twice and merged both ways.",
            stats.anti_entropy.keys_repaired,
        ),
        (
            "keel_anti_entropy_copies_fetched_total",
            "Peer copies anti-entropy fetched and merged here.",
            stats.anti_entropy.copies_fetched,
        ),
        (
            "keel_anti_entropy_trees_rebuilt_total",
            "Trees built again from the store: by age, or after an unreadable copy was replaced.",
            stats.anti_entropy.trees_rebuilt,
        ),
    ];
    for (name, help, value) in counters {
        metric(out, name, "counter", help, value);
    }
    let engine = &stats.engine;
    let gauges = [
        ("keel_node_requests_in_flight", "Requests this node coordinates now.", stats.requests_in_flight),
        ("keel_node_waiting_for_sync", "Answers held until a sync.", stats.waiting_for_sync),
        (
            "keel_anti_entropy_trees_building",
            "Trees being built, whose ranges take part in no exchange yet.",
            stats.anti_entropy.trees_building,
        ),
        ("keel_storage_memtable_bytes", "Bytes in the memtable.", engine.memtable_bytes),
        (
            "keel_storage_memtable_bytes_max",
            "Memtable size that triggers a flush.",
            engine.memtable_bytes_max,
        ),
        ("keel_storage_block_cache_bytes", "Bytes in the block cache.", engine.block_cache_bytes),
        ("keel_storage_block_cache_bytes_max", "Block cache budget.", engine.block_cache_bytes_max),
        ("keel_storage_disk_bytes", "Bytes of tables and WAL on disk.", engine.disk_bytes),
        ("keel_storage_wal_bytes", "Bytes of WAL on disk.", engine.wal_bytes),
        (
            "keel_storage_poisoned",
            "1 once a write to the disk failed and writes are refused.",
            u64::from(engine.poisoned),
        ),
    ];
    for (name, help, value) in gauges {
        metric(out, name, "gauge", help, value);
    }
    let storage_counters = [
        ("keel_storage_block_cache_hits_total", "Block cache hits.", engine.block_cache_hits),
        ("keel_storage_block_cache_misses_total", "Block cache misses.", engine.block_cache_misses),
        ("keel_storage_flushes_total", "Memtables flushed to tables.", engine.flushes),
        ("keel_storage_compactions_total", "Compactions run.", engine.compactions),
        ("keel_storage_corruption_detected_total", "Checksum failures seen.", engine.corruption_detected),
    ];
    for (name, help, value) in storage_counters {
        metric(out, name, "counter", help, value);
    }
    let _ = writeln!(out, "# HELP keel_storage_tables Tables per level.");
    let _ = writeln!(out, "# TYPE keel_storage_tables gauge");
    for (level, count) in engine.tables_per_level.iter().enumerate() {
        let _ = writeln!(out, "keel_storage_tables{{level=\"{level}\"}} {count}");
    }
}

fn write_transport_metrics(stats: &TransportStats, out: &mut String) {
    type Field = fn(&crate::transport::PeerStats) -> u64;
    let per_peer: [(&str, &str, &str, Field); 7] = [
        ("keel_peer_connected", "gauge", "1 while the outbound connection to a peer is up.", |peer| {
            u64::from(peer.connected)
        }),
        ("keel_peer_queued_messages", "gauge", "Messages waiting to be sent to a peer.", |peer| {
            peer.queued_messages
        }),
        ("keel_peer_messages_sent_total", "counter", "Messages written to a peer.", |peer| {
            peer.messages_sent
        }),
        ("keel_peer_messages_received_total", "counter", "Messages received from a peer.", |peer| {
            peer.messages_received
        }),
        ("keel_peer_bytes_sent_total", "counter", "Framed bytes written to a peer.", |peer| peer.bytes_sent),
        ("keel_peer_dropped_total", "counter", "Messages to a peer dropped unsent.", |peer| {
            peer.dropped_queue_full + peer.dropped_too_large + peer.dropped_unsent
        }),
        (
            "keel_peer_messages_rejected_total",
            "counter",
            "Frames from a peer dropped because they held no valid message.",
            |peer| peer.messages_rejected,
        ),
    ];
    for (name, kind, help, field) in per_peer {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (peer, peer_stats) in &stats.peers {
            let _ = writeln!(out, "{name}{{peer=\"{peer}\"}} {}", field(peer_stats));
        }
    }
}
