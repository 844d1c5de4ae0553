//! The driver: one task that owns a `keel_core::node::Node` and carries out
//! everything it asks for. It makes no protocol decision.
//!
//! Inputs come from four places — peer messages from the transport, client
//! calls from the servers' [`Handle`], completed fsyncs from blocking
//! threads, and the node's own timer — and after every one the driver
//! drains the node's outputs: messages to the transport, replies to the
//! waiting callers, syncs to a blocking thread (so a slow fsync never stalls
//! the loop, and the node batches every write that arrives meanwhile into the
//! next sync: group commit), events to the log.

mod clock;
mod jobs;
mod status;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keel_core::client::{ClientError, Context, Read, Reply, Request, RequestId, Written};
use keel_core::disk::{Disk, DiskError};
use keel_core::lsm::SyncRequest;
use keel_core::lsm::job::{Job, JobDone, JobKind};
use keel_core::node::{self, Event, Input, Node, Output};
use keel_core::{NodeId, Now};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::clock::Clock;
pub use self::clock::random_seed;
pub use self::status::NodeIntrospect;
use crate::disk::FileDisk;
use crate::metrics::Metrics;
use crate::service::{Answer, Call, Handle};
use crate::transport::{Inbound, Transport, TransportConfig};

/// Everything needed to run one node.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub node: NodeId,
    pub cluster: String,
    /// The protocol configuration; `members` must list every node, this one
    /// included, identically on every node.
    pub node_config: node::Config,
    pub data_dir: PathBuf,
    /// Where this node listens for peers.
    pub peer_listen: SocketAddr,
    /// Where each other member listens for peers.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Client calls queued for the node; beyond it callers wait briefly,
    /// then are told the node is overloaded.
    pub calls_queue_max: usize,
    /// On shutdown, how long requests in flight get to finish.
    pub shutdown_grace: Duration,
    /// The node's random seed; `None` draws one from the operating system.
    pub seed: Option<u64>,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// Cannot create or lock it; another process may hold it.
    #[error(transparent)]
    DataDir(#[from] crate::disk::OpenError),
    #[error("recovery of {dir} did not finish: {message}")]
    Recovery { dir: PathBuf, message: String },
    #[error("cannot open the node: {0}")]
    Node(#[from] node::OpenError),
    #[error("cannot start the peer transport on {address}: {source}")]
    Transport { address: SocketAddr, source: std::io::Error },
    #[error("cannot start the storage job threads: {0}")]
    Threads(std::io::Error),
}

/// A node being driven.
#[derive(Debug)]
pub struct Running {
    /// For client servers: calls into the node.
    pub handle: Handle,
    /// For client servers: status, ring and metrics.
    pub introspect: NodeIntrospect,
    /// Where the peer transport actually listens (port 0 resolved).
    pub peer_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the driver has stopped: after the shutdown token was
    /// cancelled, requests in flight finished and every write was synced.
    pub async fn stopped(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the node's driver task failed");
        }
    }
}

/// Opens the node (recovering its data), starts the peer transport, and
/// spawns the driver loop. Cancel `shutdown` to stop it gracefully.
pub async fn start(config: DriverConfig, shutdown: CancellationToken) -> Result<Running, StartError> {
    let clock = Clock::start();
    let dir = config.data_dir.clone();
    let disk = FileDisk::open(&dir)?;
    let seed = config.seed.unwrap_or_else(random_seed);
    let (node_config, id) = (config.node_config.clone(), config.node);
    let boxed: Box<dyn Disk> = Box::new(disk.clone());
    // Recovery reads the whole WAL: keep it off the async threads.
    let opened =
        tokio::task::spawn_blocking(move || Node::open(node_config, id, seed, boxed, clock.now())).await;
    let node = opened.map_err(|error| StartError::Recovery { dir, message: error.to_string() })??;
    log_recovery(node.recovery());
    if let Some(migration) = node.storage_migration() {
        tracing::info!(
            from = migration.from,
            to = keel_core::node::STORAGE_FORMAT,
            records = migration.records,
            "the data directory was migrated to the current storage format"
        );
    }
    if let Some(reason) = node.metadata_damage() {
        tracing::error!(%reason, "the node's metadata is damaged: it starts as a new incarnation");
    }
    // The transport outlives the shutdown signal: requests in flight still
    // need their replicas' answers. The driver stops it when it is done.
    let transport_stop = CancellationToken::new();
    let mut transport_config = TransportConfig::new(config.node, config.cluster.clone(), config.peer_listen);
    transport_config.peers = config.peers.clone();
    let (transport, inbound) = Transport::start(transport_config, transport_stop.clone())
        .await
        .map_err(|source| StartError::Transport { address: config.peer_listen, source })?;
    let peer_addr = transport.local_addr();
    let (handle, calls) = Handle::channel(config.calls_queue_max);
    let introspect = NodeIntrospect::new(clock);
    let mut addresses = config.peers.clone();
    addresses.insert(config.node, peer_addr);
    let (synced_sender, synced) = mpsc::unbounded_channel();
    let (jobs_sender, jobs_done) = mpsc::unbounded_channel();
    let job_threads = jobs::JobThreads::start(&jobs_sender).map_err(StartError::Threads)?;
    let driver = Driver {
        node,
        clock,
        disk,
        transport,
        transport_stop,
        inbound,
        calls,
        synced,
        synced_sender,
        jobs_done,
        job_threads,
        jobs_running: 0,
        metrics: handle.metrics().clone(),
        reads: HashMap::new(),
        writes: HashMap::new(),
        request_next: 0,
        introspect: introspect.clone(),
        cluster: config.cluster,
        addresses,
        shutdown_grace: config.shutdown_grace,
    };
    let task = tokio::spawn(driver.run(shutdown));
    Ok(Running { handle, introspect, peer_addr, task })
}

struct Driver {
    node: Node,
    clock: Clock,
    disk: FileDisk,
    transport: Transport,
    transport_stop: CancellationToken,
    inbound: mpsc::Receiver<Inbound>,
    calls: mpsc::Receiver<Call>,
    synced: mpsc::UnboundedReceiver<(SyncRequest, Result<(), DiskError>)>,
    synced_sender: mpsc::UnboundedSender<(SyncRequest, Result<(), DiskError>)>,
    /// Results of the storage jobs run on the job threads, with their kind.
    jobs_done: mpsc::UnboundedReceiver<(JobKind, JobDone)>,
    job_threads: jobs::JobThreads,
    /// Jobs handed to the threads whose results have not come back.
    jobs_running: usize,
    metrics: Arc<Metrics>,
    /// Callers waiting for the answer to each request handed to the node,
    /// gets apart from puts and deletes: each kind of reply goes to the
    /// callers of its kind. Hash maps: one insert and one removal per
    /// request, cheaper than a tree's; the rare sweep for lost replies
    /// visits them all.
    reads: HashMap<RequestId, Waiting<Read>>,
    writes: HashMap<RequestId, Waiting<Written>>,
    request_next: u64,
    introspect: NodeIntrospect,
    cluster: String,
    addresses: BTreeMap<NodeId, SocketAddr>,
    shutdown_grace: Duration,
}

impl Driver {
    async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(node = %self.node.id(), incarnation = self.node.incarnation(), "node started");
        self.drain();
        let mut refresh = tokio::time::interval(Duration::from_millis(500));
        let mut stopping: Option<tokio::time::Instant> = None;
        let timer = tokio::time::sleep_until(far_future());
        tokio::pin!(timer);
        let mut armed: Option<tokio::time::Instant> = None;
        // Made once: each new waiter on the token takes its lock twice.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            if let Some(deadline) = stopping {
                let waiting = self.reads.len() + self.writes.len();
                if self.node.is_quiescent() && waiting == 0 {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(waiting, "shutdown grace ran out with requests in flight");
                    break;
                }
            }
            // One timer, moved only when the node's deadline moves: creating a
            // timer entry per loop pass costs as much as a small request.
            let wake = self.node.poll_timeout().map(|at| self.clock.instant_of(at));
            // Inputs come first (below), but never so many that timers starve:
            // a deadline overdue by more than a moment runs now.
            if wake.is_some_and(|at| at + TIMER_LATE_MAX <= tokio::time::Instant::now()) {
                let started = std::time::Instant::now();
                self.node.handle_timeout(self.clock.now());
                self.drain();
                self.turn_done(Woke::Timer.name(), started);
                continue;
            }
            // A deadline already reached waits for no timer: tokio's timers
            // tick in whole milliseconds, longer than a whole group commit.
            let due = wake.is_some_and(|at| at <= tokio::time::Instant::now());
            if wake != armed && !due {
                armed = wake;
                timer.as_mut().reset(wake.unwrap_or_else(far_future));
            }
            // Biased: every input already waiting is handled before a timer
            // fires, so the node's sync timer (due "now") covers them all.
            // Shutdown and the status refresh are rare, so they go first.
            let woke = tokio::select! {
                biased;
                () = &mut cancelled, if stopping.is_none() => {
                    tracing::info!("shutting down: finishing requests in flight and syncing");
                    stopping = Some(tokio::time::Instant::now() + self.shutdown_grace);
                    continue;
                }
                _ = refresh.tick() => Woke::Refresh,
                Some((request, result)) = self.synced.recv() => Woke::Synced(request, result),
                Some((kind, done)) = self.jobs_done.recv() => Woke::JobDone(kind, done),
                Some(inbound) = self.inbound.recv() => Woke::Peer(inbound),
                Some(call) = self.calls.recv() => Woke::Call(call),
                () = std::future::ready(()), if due => Woke::Timer,
                () = &mut timer, if armed.is_some() && !due => {
                    armed = None;
                    Woke::Timer
                }
            };
            // Timed from here: the wait for the wake-up is not the loop's.
            let started = std::time::Instant::now();
            let woken_by = woke.name();
            match woke {
                Woke::Refresh => {
                    self.refresh_status();
                    self.give_up_on_lost_replies();
                }
                Woke::Synced(request, result) => {
                    self.node.handle_input(self.clock.now(), Input::Synced { request, result });
                }
                Woke::JobDone(kind, done) => {
                    self.jobs_running -= 1;
                    self.node.handle_input(self.clock.now(), Input::JobDone(done));
                    let installed = started.elapsed();
                    self.drain();
                    let elapsed = started.elapsed();
                    if elapsed >= INSTALL_SLOW {
                        let (elapsed_ms, install_ms) = (elapsed.as_millis(), installed.as_millis());
                        tracing::warn!(
                            ?kind,
                            elapsed_ms,
                            install_ms,
                            "finishing a storage job held the event loop"
                        );
                    }
                }
                Woke::Peer(inbound) => {
                    let input = Input::Message { from: inbound.from, message: inbound.message };
                    self.node.handle_input(self.clock.now(), input);
                }
                Woke::Call(call) => {
                    // One clock reading for the burst: microseconds apart at most.
                    let now = self.clock.now();
                    self.on_call(call, now, stopping.is_some());
                    // Take every call already queued before anything else:
                    // one wake-up for a burst, and one sync for their writes.
                    for _ in 0..CALLS_PER_PASS_MAX {
                        let Ok(call) = self.calls.try_recv() else { break };
                        self.drain();
                        self.on_call(call, now, stopping.is_some());
                    }
                }
                Woke::Timer => self.node.handle_timeout(self.clock.now()),
            }
            self.drain();
            self.turn_done(woken_by, started);
        }
        self.finish().await;
    }

    /// Counts one turn of the loop, which `woken_by` woke and which began at
    /// `started`; a slow one is logged, for it delayed everything queued.
    fn turn_done(&self, woken_by: &'static str, started: std::time::Instant) {
        let ended = std::time::Instant::now();
        let elapsed = ended.saturating_duration_since(started);
        self.metrics.record_loop_turn(woken_by, elapsed, ended);
        if elapsed >= crate::metrics::LOOP_TURN_SLOW {
            let elapsed_us = elapsed.as_micros();
            tracing::debug!(woken_by, elapsed_us, "a slow turn of the event loop");
        }
    }

    fn on_call(&mut self, call: Call, now: Now, stopping: bool) {
        if stopping {
            call.refuse(ClientError::ShuttingDown);
            return;
        }
        let id = RequestId(self.request_next + 1);
        let since = now.mono;
        let request = match call {
            Call::Get { request, reply } => {
                self.reads.insert(id, Waiting { since, reply });
                Request::Get(request)
            }
            Call::Put { request, reply } => {
                self.writes.insert(id, Waiting { since, reply });
                Request::Put(request)
            }
            Call::Delete { request, reply } => {
                self.writes.insert(id, Waiting { since, reply });
                Request::Delete(request)
            }
            // Answered here: no request of the node's, no id.
            Call::LocalCopy { key, reply } => {
                // A caller that gave up no longer listens; nothing to do.
                let _ = reply.send(self.local_copy(&key));
                return;
            }
        };
        self.request_next += 1;
        self.node.handle_input(now, Input::Client { id, request });
    }

    /// This node's stored copy of `key`, as a read would show it.
    fn local_copy(&mut self, key: &[u8]) -> Result<Read, ClientError> {
        if key.is_empty() || key.len() > self.node.config().key_bytes_max as usize {
            let max = self.node.config().key_bytes_max.into();
            return Err(if key.is_empty() {
                ClientError::KeyEmpty { max }
            } else {
                ClientError::KeyTooLarge { len: key.len() as u64, max }
            });
        }
        match self.node.local_object(key) {
            Ok(Some(object)) => Ok(Read {
                values: object.live_values().map(<[u8]>::to_vec).collect(),
                context: Context(object.context().to_bytes()),
            }),
            Ok(None) => Ok(Read { values: Vec::new(), context: Context::default() }),
            Err(error) => {
                Err(ClientError::StorageFailed { reason: format!("this node's copy does not read: {error}") })
            }
        }
    }

    /// A safety net under the node's own deadlines: a caller the node has
    /// not answered in `REPLY_WAIT_MAX` is told its reply was lost, so a bug
    /// can never hold a client connection forever.
    fn give_up_on_lost_replies(&mut self) {
        let now = self.clock.now().mono;
        give_up_on(&mut self.reads, now);
        give_up_on(&mut self.writes, now);
    }

    /// Carries out everything the node asked for.
    fn drain(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Send { to, message } => self.transport.send(to, &message),
                // A caller that gave up no longer listens; nothing to do.
                Output::Reply { id, reply: Reply::Read(result) } => {
                    if let Some(caller) = self.reads.remove(&id) {
                        let _ = caller.reply.send(result);
                    }
                }
                Output::Reply { id, reply: Reply::Write(result) } => {
                    if let Some(caller) = self.writes.remove(&id) {
                        let _ = caller.reply.send(result);
                    }
                }
                Output::Sync(request) => self.sync(request),
                Output::Job(job) => self.run_job(job),
                Output::Event(event) => log_event(&event),
            }
        }
    }

    /// fsync on a blocking thread; the result comes back as an input.
    fn sync(&self, request: SyncRequest) {
        let disk = self.disk.clone();
        let done = self.synced_sender.clone();
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = request.run(&disk);
            let ended = std::time::Instant::now();
            let elapsed = ended.saturating_duration_since(started);
            metrics.record_sync(elapsed, ended, result.is_ok());
            if elapsed >= SYNC_SLOW {
                // Every write waiting on this sync waited as long: the
                // likeliest cause of write timeouts under `fsync always`.
                let elapsed_ms = elapsed.as_millis();
                tracing::warn!(file = %request.file, elapsed_ms, "slow disk: an fsync took over a second");
            }
            // Let go of the data directory before the node hears of it: a
            // driver that stops as soon as it does must leave it unlocked.
            drop(disk);
            let _ = done.send((request, result));
        });
    }

    /// A storage job on one of the job threads: the event loop keeps
    /// serving while it writes. Its result comes back as an input.
    fn run_job(&mut self, job: Job) {
        self.jobs_running += 1;
        self.job_threads.run(job, self.disk.clone());
    }

    fn refresh_status(&self) {
        self.introspect.refresh(&self.node, &self.cluster, &self.addresses, self.transport.stats());
    }

    async fn finish(mut self) {
        // These reached the node and may have been written: indeterminate.
        let waited_ms = u64::try_from(self.shutdown_grace.as_millis()).unwrap_or(u64::MAX);
        for (_, caller) in std::mem::take(&mut self.reads) {
            let _ = caller.reply.send(Err(ClientError::ReplyLost { waited_ms }));
        }
        for (_, caller) in std::mem::take(&mut self.writes) {
            let _ = caller.reply.send(Err(ClientError::ReplyLost { waited_ms }));
        }
        self.refresh_status();
        self.transport_stop.cancel();
        self.transport.closed().await;
        // A job holds the data directory: wait for those running, so that a
        // node started on it next finds it free. Their results are dropped;
        // recovery makes of the disk what it finds.
        let jobs = async {
            while self.jobs_running > 0 && self.jobs_done.recv().await.is_some() {
                self.jobs_running -= 1;
            }
        };
        if tokio::time::timeout(self.shutdown_grace, jobs).await.is_err() {
            tracing::warn!(running = self.jobs_running, "stopping with storage jobs still running");
        }
        let durable = self.node.is_quiescent();
        tracing::info!(all_writes_durable = durable, "node stopped");
    }
}

/// A caller waiting for the node's answer, a `T` or why it failed.
struct Waiting<T> {
    since: keel_core::Instant,
    reply: Answer<T>,
}

/// Tells every caller of `waiting` that has waited `REPLY_WAIT_MAX` that its
/// reply was lost.
fn give_up_on<T>(waiting: &mut HashMap<RequestId, Waiting<T>>, now: keel_core::Instant) {
    let waited =
        |caller: &Waiting<T>| Duration::from_nanos(now.as_nanos().saturating_sub(caller.since.as_nanos()));
    let lost: Vec<RequestId> =
        waiting.iter().filter(|(_, caller)| waited(caller) >= REPLY_WAIT_MAX).map(|(&id, _)| id).collect();
    for id in lost {
        let Some(caller) = waiting.remove(&id) else { continue };
        let waited = waited(&caller);
        tracing::error!(request = id.0, ?waited, "the node never answered a request");
        let waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
        let _ = caller.reply.send(Err(ClientError::ReplyLost { waited_ms }));
    }
}

/// How long a caller may wait for the node's reply before it is told the
/// reply was lost: far above every deadline the node keeps itself.
const REPLY_WAIT_MAX: Duration = Duration::from_secs(30);

/// An fsync this long is logged.
const SYNC_SLOW: Duration = Duration::from_secs(1);
/// Finishing a job this long stalled every request waiting behind it.
const INSTALL_SLOW: Duration = Duration::from_millis(20);

/// What woke the event loop, with what it brought.
enum Woke {
    Refresh,
    Synced(SyncRequest, Result<(), DiskError>),
    JobDone(JobKind, JobDone),
    Peer(Inbound),
    Call(Call),
    Timer,
}

impl Woke {
    /// What woke the loop, as the metrics name it.
    fn name(&self) -> &'static str {
        match self {
            Woke::Refresh => "refresh",
            Woke::Synced(..) => "synced",
            Woke::JobDone(..) => "job_done",
            Woke::Peer(_) => "peer",
            Woke::Call(_) => "call",
            Woke::Timer => "timer",
        }
    }
}

/// Calls taken from the queue in one pass of the loop before its other
/// inputs get a turn.
const CALLS_PER_PASS_MAX: usize = 256;

/// How late a due timer may run while inputs keep arriving.
const TIMER_LATE_MAX: Duration = Duration::from_millis(1);

/// A deadline that never comes, for a timer with nothing to wait for.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Damage in the log is said loudly, with where it is and what it cost: a
/// storage engine never loses data silently.
fn log_recovery(report: &keel_core::lsm::RecoveryReport) {
    for damage in &report.loss.damage {
        tracing::error!(
            file = %damage.file,
            offset = damage.offset,
            reason = %damage.reason,
            records_after = damage.records_after,
            "damaged record in the write-ahead log; replay went on with the records after it"
        );
    }
    if report.log_damaged {
        let (lost, open_ended) = report.loss.lost_count();
        tracing::error!(
            lost,
            open_ended,
            loss = %report.loss,
            "synced records were lost to damage: this node starts as a new incarnation and its replicas repair it"
        );
    }
    for file in &report.files_kept_damaged {
        tracing::warn!(%file, "a damaged write-ahead log file is kept as evidence; remove it once inspected");
    }
}

fn log_event(event: &Event) {
    match event {
        Event::StorageFailed { reason } => {
            tracing::error!(%reason, "storage failed: this node refuses writes until it is restarted");
        }
        Event::MaintenanceFailed { reason } => {
            tracing::warn!(%reason, "storage maintenance failed; will retry")
        }
        Event::ReadRepair { replicas } => tracing::debug!(?replicas, "read repair"),
        other => tracing::debug!(?other, "node event"),
    }
}

#[cfg(test)]
mod tests;
