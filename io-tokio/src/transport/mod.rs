//! The peer transport: [`Message`]s between keel nodes over TCP.
//!
//! Each node keeps one outbound connection to every peer and sends only on
//! it; it receives only on connections its peers opened to it. Every
//! connection starts with a handshake (magic, protocol version, cluster name,
//! both node ids) and then carries `keel_core::frame`s one way. A failed
//! connection is reopened after an exponential backoff with jitter. The wire
//! format, the limits and the counters are written up in `docs/TRANSPORT.md`.
//!
//! The transport never makes a protocol decision and never blocks its caller:
//! [`Transport::send`] encodes the message into the peer's bounded queue or
//! drops it and counts the drop, as the protocol tolerates lost messages.
//! Socket types appear only in `net.rs`, so the rest can run over any byte
//! stream, such as a simulated network's.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use keel_core::NodeId;
use keel_core::message::{MESSAGE_BYTES_MAX, Message};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

mod backoff;
mod handshake;
mod inbound;
mod net;
mod outbound;
mod peer;
mod stats;

pub use handshake::{CLUSTER_NAME_BYTES_MAX, MAGIC, PROTOCOL_VERSION};
pub use stats::{PeerStats, RefusalCounts, TransportStats};

use peer::Peer;
use stats::GlobalCounters;

/// Inbound connections allowed beyond two per peer (one live, one replacing
/// it), so a peer that restarts is never locked out by its own stale socket.
pub const INBOUND_CONNECTIONS_SLACK: usize = 4;

/// Where a node listens, whom it talks to, and the bounds on both.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub node: NodeId,
    /// Peers that present another cluster name are refused.
    pub cluster: String,
    /// Port 0 picks a free port; [`Transport::local_addr`] tells which.
    pub listen: SocketAddr,
    /// The initial membership; change it later with [`Transport::set_peer`]
    /// and [`Transport::remove_peer`]. An entry for `node` itself is ignored.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Most messages queued for one peer; more are dropped and counted.
    pub send_queue_max: usize,
    /// Most encoded bytes queued for one peer; a message that would go past
    /// it is dropped, unless the queue is empty.
    pub send_queue_bytes_max: u64,
    /// Most received messages waiting for the driver; when full, connections
    /// stop reading and TCP pushes back on the senders.
    pub inbound_queue_max: usize,
    /// Largest frame payload sent or accepted.
    pub frame_bytes_max: u32,
    pub connect_timeout: Duration,
    /// Bounds the whole handshake, on either side.
    pub handshake_timeout: Duration,
    /// A batch not written in this time fails its connection (a stuck peer).
    pub write_timeout: Duration,
    /// The first reconnection delay; it doubles after each failure.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// An outbound connection with nothing to send for this long sends an
    /// empty keepalive frame. Keep it well below the peers' `idle_timeout`.
    pub keepalive_interval: Duration,
    /// An inbound connection silent this long is closed (a dead peer or a
    /// half-open connection).
    pub idle_timeout: Duration,
    /// On shutdown, how long connected peers get to take what is queued.
    pub shutdown_flush_timeout: Duration,
}

impl TransportConfig {
    /// A configuration with the default bounds and no peers.
    pub fn new(node: NodeId, cluster: impl Into<String>, listen: SocketAddr) -> TransportConfig {
        TransportConfig {
            node,
            cluster: cluster.into(),
            listen,
            peers: BTreeMap::new(),
            send_queue_max: 16 * 1024,
            send_queue_bytes_max: 128 * 1024 * 1024,
            inbound_queue_max: 4096,
            frame_bytes_max: MESSAGE_BYTES_MAX,
            connect_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            shutdown_flush_timeout: Duration::from_secs(1),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let cluster_len = self.cluster.len();
        if cluster_len == 0 || cluster_len > CLUSTER_NAME_BYTES_MAX {
            return Err(ConfigError::ClusterName { len: cluster_len, max: CLUSTER_NAME_BYTES_MAX });
        }
        if self.send_queue_max == 0 || self.inbound_queue_max == 0 || self.frame_bytes_max == 0 {
            return Err(ConfigError::ZeroBound);
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return Err(ConfigError::Backoff { min: self.backoff_min, max: self.backoff_max });
        }
        if self.keepalive_interval.is_zero() || self.keepalive_interval >= self.idle_timeout {
            return Err(ConfigError::Keepalive {
                interval: self.keepalive_interval,
                idle_timeout: self.idle_timeout,
            });
        }
        Ok(())
    }
}

/// A configuration [`Transport::start`] refuses.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cluster name of {len} bytes; it must have 1 to {max}")]
    ClusterName { len: usize, max: usize },
    #[error("queue and frame bounds must be at least 1")]
    ZeroBound,
    #[error("backoff from {min:?} to {max:?}: the minimum must be above zero and at most the maximum")]
    Backoff { min: Duration, max: Duration },
    #[error("keepalive every {interval:?} must be above zero and below the idle timeout of {idle_timeout:?}")]
    Keepalive { interval: Duration, idle_timeout: Duration },
}

/// One message received from a peer that passed the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub from: NodeId,
    pub message: Message,
}

/// A running transport. Clones share it. It runs until the `shutdown` token
/// given to [`Transport::start`] is cancelled; dropping handles does not stop it.
#[derive(Clone, Debug)]
pub struct Transport {
    shared: Arc<Shared>,
}

/// What every task of one transport reads.
#[derive(Debug)]
struct Shared {
    config: TransportConfig,
    local_addr: SocketAddr,
    peers: RwLock<BTreeMap<NodeId, Arc<Peer>>>,
    counters: GlobalCounters,
    /// Open inbound connections, handshaking ones included.
    inbound_open: AtomicUsize,
    /// Numbers inbound connections, so a closing one can tell whether a newer
    /// connection from the same peer has replaced it.
    inbound_serial: AtomicU64,
    shutdown: CancellationToken,
    tasks: Tasks,
}

impl Transport {
    /// Binds `config.listen`, starts connecting to every peer, and returns the
    /// transport with the receiver of inbound messages. The receiver ends
    /// once the transport has shut down and every connection has closed.
    pub async fn start(
        config: TransportConfig,
        shutdown: CancellationToken,
    ) -> io::Result<(Transport, mpsc::Receiver<Inbound>)> {
        config.validate().map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let listener = net::Listener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let (sender, receiver) = mpsc::channel(config.inbound_queue_max);
        let initial_peers = config.peers.clone();
        let shared = Arc::new(Shared {
            config,
            local_addr,
            peers: RwLock::new(BTreeMap::new()),
            counters: GlobalCounters::default(),
            inbound_open: AtomicUsize::new(0),
            inbound_serial: AtomicU64::new(0),
            shutdown,
            tasks: Tasks::default(),
        });
        let transport = Transport { shared };
        for (id, address) in initial_peers {
            transport.set_peer(id, address);
        }
        let shared = transport.shared.clone();
        transport.shared.tasks.spawn(inbound::accept_loop(shared, listener, sender));
        tracing::info!(node = %transport.node(), address = %local_addr, "peer transport listening");
        Ok((transport, receiver))
    }

    pub fn node(&self) -> NodeId {
        self.shared.config.node
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Queues `message` for `to` without waiting: encoded once, appended to
    /// the peer's queue, or dropped and counted if the queue is full, the
    /// message is too large, the peer is unknown or the transport stopped.
    pub fn send(&self, to: NodeId, message: &Message) {
        let peer = read(&self.shared.peers).get(&to).cloned();
        match peer {
            Some(peer) if !self.shared.shutdown.is_cancelled() => peer.enqueue(message, &self.shared.config),
            Some(peer) => peer.counters.dropped_unsent.add(1),
            None => {
                self.shared.counters.unknown_destination.add(1);
                tracing::debug!(%to, kind = message.kind(), "dropped a message for an unknown peer");
            }
        }
    }

    /// Adds a peer, or moves a known one to a new address: its connection is
    /// then reopened there at once, and what is queued for it is kept.
    pub fn set_peer(&self, id: NodeId, address: SocketAddr) {
        if id == self.node() {
            return;
        }
        let mut peers = write(&self.shared.peers);
        if let Some(peer) = peers.get(&id) {
            peer.readdress(address);
            return;
        }
        let peer = Arc::new(Peer::new(id, address, self.shared.shutdown.child_token()));
        peers.insert(id, peer.clone());
        drop(peers);
        self.shared.tasks.spawn(outbound::run(self.shared.clone(), peer));
    }

    /// Forgets a peer: closes its connections, drops what is queued for it,
    /// and refuses its connections from now on.
    pub fn remove_peer(&self, id: NodeId) {
        if let Some(peer) = write(&self.shared.peers).remove(&id) {
            peer.stop.cancel();
        }
    }

    /// Counters of the whole transport and of each current peer.
    pub fn stats(&self) -> TransportStats {
        let peers = read(&self.shared.peers).iter().map(|(id, peer)| (*id, peer.stats())).collect();
        self.shared.counters.snapshot(peers)
    }

    /// Waits until shutdown was asked for and every task of the transport
    /// has ended, so its port is free again.
    pub async fn closed(&self) {
        self.shared.shutdown.cancelled().await;
        self.shared.tasks.ended().await;
    }
}

impl Shared {
    fn peer(&self, id: NodeId) -> Option<Arc<Peer>> {
        read(&self.peers).get(&id).cloned()
    }

    /// Two inbound connections per peer, plus a few.
    fn inbound_connections_max(&self) -> usize {
        read(&self.peers).len() * 2 + INBOUND_CONNECTIONS_SLACK
    }
}

/// The transport's tasks, so that shutdown can wait for the last of them.
#[derive(Debug)]
struct Tasks {
    /// Every running task holds a receiver; the sender sees when none is left.
    running: watch::Sender<()>,
}

impl Default for Tasks {
    fn default() -> Tasks {
        Tasks { running: watch::Sender::new(()) }
    }
}

impl Tasks {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let running = self.running.subscribe();
        tokio::spawn(async move {
            task.await;
            drop(running);
        });
    }

    /// Returns once no task is running. The accept loop runs until shutdown
    /// and every other task starts while it runs, so after shutdown this
    /// cannot return while a task is still to come.
    async fn ended(&self) {
        self.running.closed().await;
    }
}

/// Every change under these locks is made in one step, so a panic elsewhere
/// cannot leave half of one behind: a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
