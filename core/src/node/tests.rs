//! A small in-crate harness that steps a few nodes in virtual time over an
//! in-memory network, in the manner of quinn-proto's `Pair`. The simulator
//! in `keel-sim` does the same with faults; these tests pin single behaviours.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use super::*;
use crate::client::{Consistency, Context, Delete, Get, Put, Replaced, Replaces, Request};
use crate::disk::{Faults, MemDisk};
use crate::ring::Member;
use crate::version::CausalContext;

struct Cluster {
    nodes: Vec<Node>,
    disks: Vec<MemDisk>,
    now: Instant,
    network: VecDeque<(NodeId, NodeId, Message)>,
    replies: Vec<(RequestId, Reply)>,
    /// Nodes whose messages in both directions are dropped.
    isolated: BTreeSet<NodeId>,
    /// The kind of every message dropped on its way to an isolated node.
    dropped_to_isolated: Vec<&'static str>,
    /// When false, syncs are held in `held_syncs` instead of completing.
    syncs_complete: bool,
    held_syncs: Vec<(usize, SyncRequest)>,
    next_request: u64,
}

fn at(now: Instant) -> Now {
    Now::new(now, 1_700_000_000_000 + now.as_nanos() / 1_000_000)
}

impl Cluster {
    fn new(size: u64, replicas: u8) -> Cluster {
        let mut config = Config::default();
        config.ring.replicas = replicas;
        Cluster::with_config(size, config)
    }

    /// `size` nodes on `config`, with its members replaced by nodes 1..=size.
    fn with_config(size: u64, mut config: Config) -> Cluster {
        config.members = (1..=size).map(|id| Member::new(NodeId(id))).collect();
        let disks: Vec<MemDisk> = (1..=size).map(MemDisk::new).collect();
        let nodes = (1..=size)
            .map(|id| {
                let disk = Box::new(disks[id as usize - 1].clone());
                Node::open(config.clone(), NodeId(id), id, disk, at(Instant::ZERO)).unwrap()
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            disks,
            now: Instant::ZERO,
            network: VecDeque::new(),
            replies: Vec::new(),
            isolated: BTreeSet::new(),
            dropped_to_isolated: Vec::new(),
            syncs_complete: true,
            held_syncs: Vec::new(),
            next_request: 0,
        };
        cluster.settle();
        cluster
    }

    fn index(id: NodeId) -> usize {
        id.0 as usize - 1
    }

    fn drain(&mut self, index: usize) {
        while let Some(output) = self.nodes[index].poll_output() {
            match output {
                Output::Send { to, message } => self.network.push_back((self.nodes[index].id(), to, message)),
                Output::Reply { id, reply } => self.replies.push((id, reply)),
                Output::Sync(request) => {
                    if self.syncs_complete {
                        let result = request.run(&self.disks[index]);
                        self.nodes[index].handle_input(at(self.now), Input::Synced { request, result });
                    } else {
                        self.held_syncs.push((index, request));
                    }
                }
                Output::Job(job) => {
                    let done = job.run(&self.disks[index]);
                    self.nodes[index].handle_input(at(self.now), Input::JobDone(done));
                }
                Output::Event(_) => {}
            }
        }
        assert_eq!(self.nodes[index].invariants(), Ok(()));
    }

    /// Delivers messages until the network is quiet.
    fn settle(&mut self) {
        loop {
            for index in 0..self.nodes.len() {
                self.drain(index);
            }
            let Some((from, to, message)) = self.network.pop_front() else { break };
            if self.isolated.contains(&to) {
                self.dropped_to_isolated.push(message.kind());
            }
            if self.isolated.contains(&from) || self.isolated.contains(&to) {
                continue;
            }
            self.nodes[Self::index(to)].handle_input(at(self.now), Input::Message { from, message });
        }
    }

    /// Advances virtual time, firing timers and settling after each step.
    fn advance(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.now = (self.now + Duration::from_millis(50)).min(end);
            for node in &mut self.nodes {
                if node.poll_timeout().is_some_and(|due| due <= self.now) {
                    node.handle_timeout(at(self.now));
                }
            }
            self.settle();
        }
    }

    fn request(&mut self, via: u64, request: Request) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.nodes[via as usize - 1].handle_input(at(self.now), Input::Client { id, request });
        self.settle();
        id
    }

    fn take_reply(&mut self, id: RequestId) -> Option<Reply> {
        let position = self.replies.iter().position(|(reply_id, _)| *reply_id == id)?;
        Some(self.replies.remove(position).1)
    }

    fn call(&mut self, via: u64, request: Request) -> Reply {
        let id = self.request(via, request);
        for _ in 0..100 {
            if let Some(reply) = self.take_reply(id) {
                return reply;
            }
            self.advance(Duration::from_millis(50));
        }
        panic!("no reply to {id:?}");
    }

    fn put(
        &mut self,
        via: u64,
        key: &str,
        value: &str,
        context: Option<Context>,
        write: Consistency,
    ) -> Reply {
        self.call(via, put(key, value, context, write))
    }

    fn get(&mut self, via: u64, key: &str, read: Consistency) -> Reply {
        self.call(via, get(key, read))
    }
}

/// A put replacing what `context` covers, or what the primary holds.
fn put(key: &str, value: &str, context: Option<Context>, write: Consistency) -> Request {
    let replaces = context.map_or(Replaces::Held, Replaces::Context);
    Request::Put(Put { key: key.into(), value: value.into(), replaces, write, strict: false })
}

fn get(key: &str, read: Consistency) -> Request {
    Request::Get(Get { key: key.into(), read })
}

fn delete(key: &str, replaces: Replaces, write: Consistency) -> Request {
    Request::Delete(Delete { key: key.into(), replaces, write, strict: false })
}

fn values(reply: &Reply) -> Vec<String> {
    match reply {
        Reply::Read(Ok(read)) => {
            read.values.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect()
        }
        other => panic!("expected a read result, got {other:?}"),
    }
}

fn context(reply: &Reply) -> Context {
    match reply {
        Reply::Read(Ok(read)) => read.context.clone(),
        Reply::Write(Ok(written)) => written.context.clone(),
        other => panic!("expected a context, got {other:?}"),
    }
}

fn is_written(reply: &Reply) -> bool {
    matches!(reply, Reply::Write(Ok(_)))
}

fn not_found(reply: &Reply) -> bool {
    matches!(reply, Reply::Read(Ok(read)) if !read.is_found())
}

#[test]
fn a_put_is_readable_from_every_node() {
    let mut cluster = Cluster::new(3, 3);
    let written = cluster.put(1, "k", "v1", None, Consistency::Quorum);
    assert!(is_written(&written), "{written:?}");
    for via in 1..=3 {
        assert_eq!(values(&cluster.get(via, "k", Consistency::All)), ["v1"]);
    }
    assert_eq!(values(&cluster.get(2, "missing", Consistency::One)), Vec::<String>::new());
}

#[test]
fn writes_through_a_non_primary_are_forwarded() {
    let mut cluster = Cluster::new(5, 3);
    for i in 0..20 {
        let key = format!("key-{i}");
        assert!(is_written(&cluster.put(1, &key, "v", None, Consistency::All)));
    }
    assert!(cluster.nodes[0].stats().forwarded > 0, "some keys have node 1 outside their replicas");
    assert_eq!(values(&cluster.get(4, "key-7", Consistency::All)), ["v"]);
}

#[test]
fn a_write_is_acknowledged_only_after_its_sync() {
    let mut cluster = Cluster::new(1, 1);
    cluster.syncs_complete = false;
    let id = cluster.request(1, put("k", "v", None, Consistency::One));
    assert_eq!(cluster.take_reply(id), None, "no acknowledgement before the sync");
    assert!(cluster.held_syncs.is_empty(), "the sync waits for inputs already queued");
    cluster.advance(Duration::from_millis(1));
    assert_eq!(cluster.held_syncs.len(), 1);
    assert_eq!(cluster.take_reply(id), None, "no acknowledgement before the sync");
    let (index, request) = cluster.held_syncs.pop().unwrap();
    let result = request.run(&cluster.disks[index]);
    cluster.nodes[index].handle_input(at(cluster.now), Input::Synced { request, result });
    cluster.settle();
    assert!(cluster.take_reply(id).is_some_and(|reply| is_written(&reply)));
}

#[test]
fn a_read_of_a_single_replica_key_waits_only_for_its_own_durability() {
    let mut cluster = Cluster::new(1, 1);
    let missing = cluster.request(1, get("k", Consistency::Quorum));
    assert!(cluster.take_reply(missing).is_some_and(|reply| not_found(&reply)));
    cluster.syncs_complete = false;
    let put = put("k", "v", None, Consistency::One);
    let written = cluster.request(1, put);
    cluster.advance(Duration::from_millis(1));
    // The write is in the memtable but not yet durable: the read waits for the sync.
    let read = cluster.request(1, get("k", Consistency::One));
    assert_eq!(cluster.take_reply(read), None, "nothing shown before it is durable");
    let (index, request) = cluster.held_syncs.pop().unwrap();
    let result = request.run(&cluster.disks[index]);
    cluster.nodes[index].handle_input(at(cluster.now), Input::Synced { request, result });
    cluster.settle();
    let written = cluster.take_reply(written).unwrap();
    let read = cluster.take_reply(read).unwrap();
    assert_eq!(values(&read), ["v"]);
    assert_eq!(context(&read), context(&written), "the read's context covers the write");
    // Durable now: answered at once, the same as the read that waited.
    let again = cluster.request(1, get("k", Consistency::All));
    assert_eq!(cluster.take_reply(again), Some(read));
}

#[test]
fn writes_queued_together_share_one_sync() {
    let mut cluster = Cluster::new(1, 1);
    cluster.syncs_complete = false;
    let now = at(cluster.now);
    for i in 0..10 {
        let request = put(&format!("k{i}"), "v", None, Consistency::One);
        cluster.nodes[0].handle_input(now, Input::Client { id: RequestId(100 + i), request });
    }
    cluster.advance(Duration::from_millis(1));
    assert_eq!(cluster.held_syncs.len(), 1, "one sync for ten writes");
    let (index, request) = cluster.held_syncs.pop().unwrap();
    let result = request.run(&cluster.disks[index]);
    cluster.nodes[index].handle_input(at(cluster.now), Input::Synced { request, result });
    cluster.settle();
    assert_eq!(cluster.replies.iter().filter(|(_, reply)| is_written(reply)).count(), 10);
}

#[test]
fn a_failed_sync_fails_the_write_and_poisons_the_node() {
    let mut cluster = Cluster::new(1, 1);
    cluster.disks[0].set_faults(Faults { sync_fail_per_million: 1_000_000, ..Faults::default() });
    let reply = cluster.put(1, "k", "v", None, Consistency::One);
    let Reply::Write(Err(error)) = reply else { panic!("expected failure, got {reply:?}") };
    assert!(error.is_indeterminate(), "the write may be on disk: {error:?}");
    assert!(cluster.nodes[0].is_poisoned());
    let reply = cluster.put(1, "other", "v", None, Consistency::One);
    assert!(matches!(reply, Reply::Write(Err(ClientError::StorageFailed { .. }))), "{reply:?}");
}

#[test]
fn contexts_resolve_siblings() {
    let mut cluster = Cluster::new(3, 3);
    cluster.put(1, "k", "a", Some(Context::default()), Consistency::All);
    cluster.put(2, "k", "b", Some(Context::default()), Consistency::All);
    let read = cluster.get(3, "k", Consistency::All);
    assert_eq!(values(&read), ["a", "b"], "two blind writes are siblings");
    let written = cluster.put(3, "k", "c", Some(context(&read)), Consistency::All);
    assert_eq!(values(&cluster.get(1, "k", Consistency::All)), ["c"]);
    // The write's reply context supersedes exactly that write.
    cluster.put(1, "k", "d", Some(context(&written)), Consistency::All);
    assert_eq!(values(&cluster.get(2, "k", Consistency::All)), ["d"]);
}

#[test]
fn a_put_without_context_replaces_what_the_coordinator_holds() {
    let mut cluster = Cluster::new(3, 3);
    cluster.put(1, "k", "a", None, Consistency::All);
    cluster.put(1, "k", "b", None, Consistency::All);
    assert_eq!(values(&cluster.get(2, "k", Consistency::All)), ["b"]);
}

#[test]
fn deletes_hide_the_value_and_keep_a_context() {
    let mut cluster = Cluster::new(3, 3);
    cluster.put(1, "k", "a", None, Consistency::All);
    assert!(is_written(&cluster.call(2, delete("k", Replaces::Held, Consistency::All))));
    let read = cluster.get(3, "k", Consistency::All);
    assert!(not_found(&read) && !context(&read).is_empty(), "{read:?}");
}

#[test]
fn writes_need_enough_live_replicas_and_say_so() {
    let mut cluster = Cluster::new(3, 3);
    cluster.isolated.insert(NodeId(3));
    cluster.advance(Duration::from_secs(3));
    let reply = cluster.put(1, "k", "v", None, Consistency::All);
    assert_eq!(reply, Reply::Write(Err(ClientError::Unavailable { needed: 3, reachable: 2 })));
    assert!(is_written(&cluster.put(1, "k", "v", None, Consistency::Quorum)));
    cluster.isolated.clear();
    cluster.advance(Duration::from_secs(1));
    // Reading at `all` repairs the replica that missed the write.
    assert_eq!(values(&cluster.get(1, "k", Consistency::All)), ["v"]);
    let repaired = cluster.nodes[2].local_object(b"k").unwrap().unwrap();
    assert_eq!(repaired.live_values().collect::<Vec<_>>(), [b"v".as_slice()]);
}

#[test]
fn a_write_that_reaches_too_few_replicas_times_out_as_indeterminate() {
    let mut cluster = Cluster::new(3, 3);
    // Node 3 is cut off but not yet suspected: the write is attempted.
    cluster.isolated.insert(NodeId(3));
    let reply = cluster.put(1, "k", "v", None, Consistency::All);
    assert_eq!(reply, Reply::Write(Err(ClientError::Timeout { acknowledged: 2, needed: 3 })));
    assert_eq!(cluster.nodes[0].stats().requests_in_flight, 0, "the request is forgotten after its deadline");
}

/// The largest key and value validation allows fit the engine, record and
/// all, even after every node has written the key (one actor each).
#[test]
fn the_largest_key_and_value_the_config_allows_are_stored() {
    let mut config = Config::default();
    config.engine.key_bytes_max = 1024;
    config.engine.value_bytes_max = 256 << 10;
    config.ring.replicas = 3;
    config.key_bytes_max = config.key_bytes_limit();
    config.value_bytes_max = config.value_bytes_limit();
    assert_eq!(config.validate(), Ok(()));
    let mut cluster = Cluster::with_config(3, config.clone());
    let key = vec![b'k'; config.key_bytes_max as usize];
    let mut context = None;
    for via in 1..=3 {
        let value = vec![b'0' + via as u8; config.value_bytes_max as usize];
        let write = Consistency::All;
        let replaces = context.take().map_or(Replaces::Held, Replaces::Context);
        let put =
            Request::Put(Put { key: key.clone(), value: value.clone(), replaces, write, strict: false });
        let reply = cluster.call(via, put);
        assert!(is_written(&reply), "via {via}: {reply:?}");
        match cluster.call(via, Request::Get(Get { key: key.clone(), read: Consistency::All })) {
            Reply::Read(Ok(read)) => {
                assert_eq!(read.values, vec![value], "via {via}");
                context = Some(read.context);
            }
            other => panic!("via {via}: {other:?}"),
        }
    }
    let key = [key, b"k".to_vec()].concat();
    let too_long = Request::Put(Put {
        key,
        value: b"v".to_vec(),
        replaces: Replaces::Held,
        write: Consistency::One,
        strict: false,
    });
    assert!(matches!(cluster.call(1, too_long), Reply::Write(Err(ClientError::KeyTooLarge { .. }))));
}

#[test]
fn oversize_input_is_refused_and_nothing_is_written() {
    let mut cluster = Cluster::new(1, 1);
    let key = "k".repeat(9 * 1024);
    let reply = cluster.put(1, &key, "v", None, Consistency::One);
    assert_eq!(reply, Reply::Write(Err(ClientError::KeyTooLarge { len: 9 * 1024, max: 8 * 1024 })));
    let value = vec![0; 16 * 1024 * 1024 + 1];
    let request = Request::Put(Put {
        key: b"k".to_vec(),
        value,
        replaces: Replaces::Held,
        write: Consistency::One,
        strict: false,
    });
    assert!(matches!(cluster.call(1, request), Reply::Write(Err(ClientError::ValueTooLarge { .. }))));
    assert_eq!(cluster.nodes[0].local_object(b"k").unwrap(), None);
    let bad = put("k", "v", None, Consistency::Replicas(2));
    assert!(matches!(cluster.call(1, bad), Reply::Write(Err(ClientError::BadConsistency { .. }))));
    let garbage = Some(Context(vec![1, 0xff, 0xff]));
    let reply = cluster.put(1, "k", "v", garbage, Consistency::One);
    assert!(matches!(reply, Reply::Write(Err(ClientError::BadContext { .. }))), "{reply:?}");
    assert_eq!(cluster.nodes[0].local_object(b"k").unwrap(), None);
}

#[test]
fn data_survives_a_crash_and_restart() {
    let mut cluster = Cluster::new(1, 1);
    cluster.put(1, "k", "v", None, Consistency::One);
    let config = cluster.nodes[0].config().clone();
    let incarnation = cluster.nodes[0].incarnation();
    cluster.disks[0].crash(crate::disk::CrashMode::DropUnsynced);
    let disk = Box::new(cluster.disks[0].clone());
    cluster.nodes[0] = Node::open(config, NodeId(1), 77, disk, at(cluster.now)).unwrap();
    assert_eq!(cluster.nodes[0].incarnation(), incarnation);
    assert_eq!(values(&cluster.get(1, "k", Consistency::One)), ["v"]);
}

#[test]
fn forwards_meant_for_an_earlier_boot_or_seen_before_are_not_coordinated() {
    let mut cluster = Cluster::new(3, 3);
    let write = Write {
        key: b"k".to_vec(),
        value: crate::version::Value::Live(b"v".to_vec()),
        seen: None,
        consistency: Consistency::One,
        strict: false,
    };
    let tag = Tag { boot: 99, seq: 1 };
    let primary = &mut cluster.nodes[0];
    let stale = Message::Forward {
        tag,
        target_boot: primary.boot.wrapping_add(1),
        write: write.clone(),
        replace_unreadable: false,
    };
    primary.handle_input(at(cluster.now), Input::Message { from: NodeId(2), message: stale });
    let replies: Vec<Output> = std::iter::from_fn(|| primary.poll_output()).collect();
    let refused = replies.iter().any(|output| {
        matches!(
            output,
            Output::Send {
                // Refused, but not as definite: a duplicate may have reached the earlier boot.
                message: Message::ForwardReply { result: Err(ClientError::CoordinatorRestarted), .. },
                ..
            }
        )
    });
    assert!(refused, "{replies:?}");
    assert_eq!(primary.local_object(b"k").unwrap(), None, "nothing written for a stale boot");

    let fresh = Message::Forward { tag, target_boot: primary.boot, write, replace_unreadable: false };
    primary.handle_input(at(cluster.now), Input::Message { from: NodeId(2), message: fresh.clone() });
    primary.handle_input(at(cluster.now), Input::Message { from: NodeId(2), message: fresh });
    assert_eq!(primary.stats().puts, 1, "the duplicate is dropped");
}

#[test]
fn with_periodic_syncs_writes_are_acknowledged_once_written_out_and_synced_later() {
    let mut cluster = Cluster::new(1, 1);
    let mut config = cluster.nodes[0].config().clone();
    config.engine.sync_policy = crate::lsm::SyncPolicy::Periodic { interval_ms: 100 };
    let disk = Box::new(cluster.disks[0].clone());
    let incarnation = cluster.nodes[0].incarnation();
    cluster.nodes[0] = Node::open(config.clone(), NodeId(1), 5, disk, at(cluster.now)).unwrap();
    assert_ne!(cluster.nodes[0].incarnation(), incarnation, "a periodic node is a new actor on every open");
    cluster.syncs_complete = false;
    let id = cluster.request(1, put("k", "v", None, Consistency::One));
    assert!(cluster.take_reply(id).is_none(), "not acknowledged while the log only buffers it");
    // Nor shown to a reader in the same burst.
    let read_id = cluster.request(1, get("k", Consistency::One));
    assert!(cluster.take_reply(read_id).is_none(), "not shown while the log only buffers it");
    // The log is handed to the kernel once the burst of inputs is over,
    // unsynced; the acknowledgement and the read follow.
    let before = cluster.nodes[0].stats().engine;
    assert_eq!(cluster.nodes[0].poll_timeout(), Some(cluster.now), "a write-out due now");
    cluster.nodes[0].handle_timeout(at(cluster.now));
    cluster.settle();
    let after = cluster.nodes[0].stats().engine;
    assert!(after.appended_lsn > before.appended_lsn, "{before:?} then {after:?}");
    assert!(after.durable_lsn < after.last_lsn);
    let written = cluster.take_reply(id).expect("acknowledged once written out, before any sync");
    let read = cluster.take_reply(read_id).expect("shown once written out");
    assert!(cluster.held_syncs.is_empty());
    assert_eq!(values(&read), ["v"]);
    assert_eq!(context(&read), context(&written), "the acknowledgement names the write");
    assert!(cluster.nodes[0].poll_output().is_none(), "no sync before the interval");
    // A crash of the process keeps what the kernel holds: the acknowledged
    // write survives it, synced or not.
    let disk = Box::new(cluster.disks[0].clone());
    cluster.nodes[0] = Node::open(config.clone(), NodeId(1), 6, disk, at(cluster.now)).unwrap();
    assert_eq!(values(&cluster.get(1, "k", Consistency::One)), ["v"]);
    cluster.advance(Duration::from_millis(150));
    assert_eq!(cluster.held_syncs.len(), 1, "the interval's sync");
}

#[test]
fn answered_requests_waiting_for_a_silent_replica_do_not_turn_clients_away() {
    let mut cluster = Cluster::new(3, 3);
    for node in &mut cluster.nodes {
        node.config.requests_max = 4;
    }
    assert!(is_written(&cluster.put(1, "k", "v", None, Consistency::All)));
    // Silent, but not yet believed down: every request asks node 3 and
    // is answered by the other two.
    cluster.isolated.insert(NodeId(3));
    for i in 0..20 {
        assert_eq!(values(&cluster.get(1, "k", Consistency::Quorum)), ["v"], "get {i}");
        let reply = cluster.put(1, &format!("key-{i}"), "v", None, Consistency::Quorum);
        assert!(is_written(&reply), "put {i}: {reply:?}");
    }
    let node = &cluster.nodes[0];
    assert!(node.lingering.len() <= 4, "answered gets linger within the bound");
    assert_eq!(node.pending.len(), node.lingering.len(), "answered puts are forgotten at once");
}

#[test]
fn requests_neither_ask_nor_wait_for_replicas_believed_down() {
    let mut cluster = Cluster::new(3, 3);
    cluster.isolated.insert(NodeId(3));
    cluster.advance(Duration::from_secs(2));
    assert!(!cluster.nodes[0].is_up(NodeId(3)), "silence past the failure timeout");
    cluster.dropped_to_isolated.clear();
    for i in 0..10 {
        let key = format!("key-{i}");
        assert!(is_written(&cluster.put(1, &key, "v", None, Consistency::Quorum)));
        assert_eq!(values(&cluster.get(2, &key, Consistency::Quorum)), ["v"]);
    }
    assert!(cluster.nodes.iter().all(|node| node.pending.is_empty()), "nothing waits for node 3");
    let data: Vec<_> = cluster.dropped_to_isolated.iter().filter(|kind| **kind != "heartbeat").collect();
    assert!(data.is_empty(), "only heartbeats go to a node believed down: {data:?}");
}

/// A single-replica node whose one table holds `keys`, with a bit of its
/// first data block flipped for good.
fn damaged_single_replica(keys: &[&str]) -> Cluster {
    let mut cluster = Cluster::new(1, 1);
    for key in keys {
        assert!(is_written(&cluster.put(1, key, "old", None, Consistency::One)));
    }
    cluster.nodes[0].store.engine_mut().flush().unwrap();
    let disk = &cluster.disks[0];
    let table = disk.list().unwrap().into_iter().find(|name| name.starts_with("sst")).unwrap();
    disk.corrupt_at(&table, 24, 2).unwrap();
    cluster
}

#[test]
fn a_key_whose_only_copy_is_damaged_says_so_and_a_write_replaces_it() {
    let keys = ["blind", "plain", "deleted"];
    let mut cluster = damaged_single_replica(&keys);
    for key in keys {
        let reply = cluster.get(1, key, Consistency::One);
        assert_eq!(reply, Reply::Read(Err(ClientError::Damaged { failed: 1 })), "{key}");
    }
    // Writes need no old value: a blind write, a plain one, a delete.
    let blind = cluster.put(1, "blind", "new", Some(Context::default()), Consistency::One);
    assert!(is_written(&blind), "{blind:?}");
    assert_eq!(values(&cluster.get(1, "blind", Consistency::One)), ["new"]);
    let plain = cluster.put(1, "plain", "new", None, Consistency::One);
    assert!(is_written(&plain), "{plain:?}");
    assert_eq!(values(&cluster.get(1, "plain", Consistency::One)), ["new"]);
    assert!(is_written(&cluster.call(1, delete("deleted", Replaces::Held, Consistency::One))));
    assert!(not_found(&cluster.get(1, "deleted", Consistency::One)));
    assert_eq!(cluster.nodes[0].stats().corrupt_records_replaced, 3);
}

#[test]
fn a_primary_with_a_damaged_copy_hands_the_write_to_one_with_a_readable_copy() {
    let mut cluster = Cluster::new(3, 3);
    let written = cluster.put(1, "k", "old", None, Consistency::All);
    let seen = context(&written);
    cluster.nodes[0].store.engine_mut().flush().unwrap();
    let table = cluster.disks[0].list().unwrap().into_iter().find(|name| name.starts_with("sst")).unwrap();
    cluster.disks[0].corrupt_at(&table, 24, 2).unwrap();
    // Node 1 cannot issue a version from its copy; another primary does,
    // so the write replaces the old value everywhere, without a sibling.
    assert!(is_written(&cluster.put(1, "k", "new", Some(seen), Consistency::All)));
    assert!(cluster.nodes[0].stats().forwarded >= 1);
    for via in 1..=3 {
        assert_eq!(values(&cluster.get(via, "k", Consistency::All)), ["new"]);
    }
}

/// Each vnode range a node replicates is one scan of its storage, and the
/// ranges together give back exactly the keys placed on it.
#[test]
fn a_node_reads_each_of_its_ranges_with_one_scan() {
    let mut cluster = Cluster::new(4, 2);
    let keys: Vec<String> = (0..120).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        assert!(matches!(cluster.put(1, key, key, None, Consistency::All), Reply::Write(Ok(_))));
    }
    let limit = crate::node::ScanLimit { records_max: usize::MAX, bytes_max: u64::MAX };
    for node in &mut cluster.nodes {
        let (ring, id) = (node.ring().clone(), node.id());
        let mut expected: Vec<&String> =
            keys.iter().filter(|key| ring.preference_list(key.as_bytes()).contains(&id)).collect();
        expected.sort();
        let mut found = Vec::new();
        for range in ring.ranges().filter(|range| range.preference.contains(&id)) {
            let chunk = node.scan_range(range.positions(), None, limit).unwrap();
            assert_eq!(chunk.resume, None);
            for record in chunk.records {
                assert!(range.contains(record.position), "a record of this range only");
                let key = String::from_utf8(record.key).unwrap();
                let live = record.record.unwrap().object.siblings().len();
                assert_eq!(live, 1, "{key}");
                found.push(key);
            }
        }
        found.sort();
        assert_eq!(found.iter().collect::<Vec<_>>(), expected, "node {id}");
    }
}

fn replaced(reply: &Reply) -> Replaced {
    match reply {
        Reply::Write(Ok(written)) => written.replaced.clone(),
        other => panic!("expected a write, got {other:?}"),
    }
}

fn texts(values: &[&str]) -> Replaced {
    Replaced::Values(values.iter().map(|value| value.as_bytes().to_vec()).collect())
}

#[test]
fn a_delete_that_reads_first_deletes_what_the_read_saw() {
    let mut cluster = Cluster::new(3, 3);
    // Two blind writes through two primaries: siblings.
    cluster.put(1, "k", "a", Some(Context::default()), Consistency::All);
    cluster.put(2, "k", "b", Some(Context::default()), Consistency::All);
    let read = cluster.get(3, "k", Consistency::All);
    let deleted = cluster.call(3, delete("k", Replaces::Read, Consistency::All));
    assert_eq!(replaced(&deleted), texts(&["a", "b"]), "every sibling the read saw");
    assert!(not_found(&cluster.get(1, "k", Consistency::All)));
    // Its context covers what the read saw plus the tombstone.
    let mut seen = CausalContext::from_bytes(&context(&read).0).unwrap();
    let after = CausalContext::from_bytes(&context(&deleted).0).unwrap();
    assert!(after.includes(&seen) && after != seen);
    seen.join(&after);
    assert_eq!(seen, after);
}

#[test]
fn a_delete_that_finds_nothing_live_writes_nothing() {
    let mut cluster = Cluster::new(3, 3);
    let deleted = cluster.call(1, delete("absent", Replaces::Read, Consistency::Quorum));
    assert_eq!(replaced(&deleted), texts(&[]));
    assert!(context(&deleted).0.iter().skip(1).all(|&byte| byte == 0), "the empty context");
    for node in &mut cluster.nodes {
        assert_eq!(node.local_object(b"absent").unwrap(), None, "no tombstone on {}", node.id());
    }
}

#[test]
fn a_put_that_reads_first_returns_what_it_replaced() {
    let mut cluster = Cluster::new(3, 3);
    let set = |value: &str| {
        Request::Put(Put {
            key: b"k".to_vec(),
            value: value.into(),
            replaces: Replaces::Read,
            write: Consistency::Quorum,
            strict: false,
        })
    };
    assert_eq!(replaced(&cluster.call(2, set("first"))), texts(&[]), "nothing before it");
    assert_eq!(replaced(&cluster.call(1, set("second"))), texts(&["first"]));
    cluster.put(3, "k", "beside", Some(Context::default()), Consistency::All);
    assert_eq!(replaced(&cluster.call(1, set("third"))), texts(&["second", "beside"]));
    assert_eq!(values(&cluster.get(2, "k", Consistency::All)), ["third"]);
    // Without reading first, nothing is said of what was replaced.
    assert_eq!(replaced(&cluster.put(1, "k", "plain", None, Consistency::All)), Replaced::NotRead);
}

#[test]
fn a_write_that_reads_first_fails_as_its_read_did_and_writes_nothing() {
    let mut cluster = Cluster::new(3, 3);
    cluster.isolated.insert(NodeId(3));
    cluster.advance(Duration::from_secs(3));
    let reply = cluster.call(1, delete("k", Replaces::Read, Consistency::All));
    assert_eq!(reply, Reply::Write(Err(ClientError::Unavailable { needed: 3, reachable: 2 })));
    let bad = Request::Put(Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        replaces: Replaces::Read,
        write: Consistency::Replicas(4),
        strict: false,
    });
    assert!(matches!(cluster.call(1, bad), Reply::Write(Err(ClientError::BadConsistency { .. }))));
    assert_eq!(cluster.nodes[0].local_object(b"k").unwrap(), None);
    assert!(cluster.nodes.iter().all(|node| node.replaced.is_empty()), "nothing waits for a write");
}

#[test]
fn a_write_that_reads_first_replaces_a_key_no_copy_of_which_reads() {
    let mut cluster = damaged_single_replica(&["deleted", "set"]);
    let deleted = cluster.call(1, delete("deleted", Replaces::Read, Consistency::One));
    assert_eq!(replaced(&deleted), Replaced::Unreadable);
    assert!(not_found(&cluster.get(1, "deleted", Consistency::One)));
    let set = Request::Put(Put {
        key: b"set".to_vec(),
        value: b"new".to_vec(),
        replaces: Replaces::Read,
        write: Consistency::One,
        strict: false,
    });
    assert_eq!(replaced(&cluster.call(1, set)), Replaced::Unreadable);
    assert_eq!(values(&cluster.get(1, "set", Consistency::One)), ["new"]);
}

/// A record as bytes, laid out as `Record` is but holding an object that
/// was never checked.
#[derive(serde::Serialize)]
struct RawRecord {
    siblings: Vec<crate::version::Sibling>,
    context: CausalContext,
    local_epoch: Option<crate::node::store::LocalEpoch>,
}

#[test]
fn a_stored_record_whose_object_breaks_its_invariants_is_a_corrupt_copy() {
    let mut cluster = Cluster::new(1, 1);
    assert!(is_written(&cluster.put(1, "k", "needle", None, Consistency::One)));
    let engine = cluster.nodes[0].store.engine_mut();
    let pairs = engine.scan(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, 16).unwrap();
    let found = pairs.iter().find(|(_, value)| value.windows(6).any(|window| window == b"needle")).unwrap();
    let stored = cluster.nodes[0].local_object(b"k").unwrap().unwrap();
    // The same siblings, in reverse dot order: well-typed bytes, no object.
    let mut siblings = stored.siblings().to_vec();
    let mut other = siblings[0].clone();
    other.dot.counter += 1;
    siblings.insert(0, other);
    let mut context = stored.context().clone();
    context.insert(siblings[0].dot);
    let raw = RawRecord { siblings, context, local_epoch: None };
    // The record's own format byte, then the record.
    let bytes = postcard::to_extend(&raw, vec![found.1[0]]).unwrap();
    let key = found.0.clone();
    cluster.nodes[0].store.engine_mut().put(&key, &bytes).unwrap();
    let error = cluster.nodes[0].local_object(b"k").unwrap_err();
    assert!(matches!(error, StoreError::Malformed(_)), "{error:?}");
    assert_eq!(cluster.get(1, "k", Consistency::One), Reply::Read(Err(ClientError::Damaged { failed: 1 })));
    // A write needs no old value and replaces the copy.
    assert!(is_written(&cluster.put(1, "k", "new", None, Consistency::One)));
    assert_eq!(values(&cluster.get(1, "k", Consistency::One)), ["new"]);
}

/// Four nodes, N=3, and a key with `down`, not node 1, among its replicas:
/// node 1 coordinates or forwards, and one node is left over to be a
/// fallback.
fn sloppy_cluster(config: Config) -> (Cluster, String, NodeId, NodeId) {
    let cluster = Cluster::with_config(4, config);
    let ring = cluster.nodes[0].ring().clone();
    for i in 0.. {
        let key = format!("key-{i}");
        let primaries = ring.preference_list(key.as_bytes()).to_vec();
        let Some(&down) = primaries.iter().find(|&&node| node != NodeId(1)) else { continue };
        let fallback = ring.walk(key.as_bytes()).find(|node| !primaries.contains(node)).unwrap();
        return (cluster, key, down, fallback);
    }
    unreachable!()
}

fn n3_config() -> Config {
    let mut config = Config::default();
    config.ring.replicas = 3;
    config
}

fn strict_put(key: &str, value: &str, write: Consistency) -> Request {
    Request::Put(Put { key: key.into(), value: value.into(), replaces: Replaces::Held, write, strict: true })
}

#[test]
fn a_fallback_keeps_a_hint_for_a_replica_that_is_down_and_hands_it_over() {
    let (mut cluster, key, down, fallback) = sloppy_cluster(n3_config());
    cluster.isolated.insert(down);
    cluster.advance(Duration::from_secs(3));
    // `all` succeeds through the fallback, and says so.
    match cluster.put(1, &key, "v", None, Consistency::All) {
        Reply::Write(Ok(written)) => assert_eq!(written.fallbacks, 1),
        other => panic!("expected a write, got {other:?}"),
    }
    let holder = &cluster.nodes[Cluster::index(fallback)];
    assert_eq!((holder.stats().hints_stored, holder.stats().hints_pending), (1, 1));
    assert_eq!(
        cluster.nodes[Cluster::index(fallback)].local_object(key.as_bytes()).unwrap(),
        None,
        "a hint is not a copy"
    );
    // Strict: only the key's own replicas count.
    let reply = cluster.call(1, strict_put(&key, "w", Consistency::All));
    assert_eq!(reply, Reply::Write(Err(ClientError::Unavailable { needed: 3, reachable: 2 })));
    // The replica comes back: the hint reaches it, and only then goes.
    cluster.isolated.clear();
    cluster.advance(Duration::from_secs(2));
    let owner = cluster.nodes[Cluster::index(down)].local_object(key.as_bytes()).unwrap().unwrap();
    assert_eq!(owner.live_values().collect::<Vec<_>>(), [b"v".as_slice()]);
    let holder = &cluster.nodes[Cluster::index(fallback)];
    assert_eq!((holder.stats().hints_delivered, holder.stats().hints_pending), (1, 0));
}

#[test]
fn a_hint_waits_while_its_replica_is_down_and_survives_a_second_write() {
    let (mut cluster, key, down, fallback) = sloppy_cluster(n3_config());
    cluster.isolated.insert(down);
    cluster.advance(Duration::from_secs(3));
    assert!(is_written(&cluster.put(1, &key, "a", None, Consistency::Quorum)));
    assert!(is_written(&cluster.put(1, &key, "b", None, Consistency::Quorum)));
    cluster.advance(Duration::from_secs(2));
    let holder = &cluster.nodes[Cluster::index(fallback)];
    assert_eq!(holder.stats().hints_pending, 1, "the second write merged into the first hint");
    assert_eq!(holder.stats().hints_delivered, 0, "nothing is handed to a replica that is down");
    cluster.isolated.clear();
    cluster.advance(Duration::from_secs(2));
    let owner = cluster.nodes[Cluster::index(down)].local_object(key.as_bytes()).unwrap().unwrap();
    assert_eq!(owner.live_values().collect::<Vec<_>>(), [b"b".as_slice()]);
    assert_eq!(cluster.nodes[Cluster::index(fallback)].stats().hints_pending, 0);
}

#[test]
fn hints_bounded_to_zero_are_dropped_and_counted() {
    let mut config = n3_config();
    config.hints.count_max = 0;
    let (mut cluster, key, down, fallback) = sloppy_cluster(config);
    cluster.isolated.insert(down);
    cluster.advance(Duration::from_secs(3));
    // The fallback refuses the hint: `all` cannot be reached, quorum can.
    let reply = cluster.put(1, &key, "v", None, Consistency::All);
    assert!(matches!(reply, Reply::Write(Err(ClientError::Timeout { needed: 3, .. }))), "{reply:?}");
    match cluster.put(1, &key, "w", None, Consistency::Quorum) {
        Reply::Write(Ok(written)) => assert_eq!(written.fallbacks, 0),
        other => panic!("expected a write, got {other:?}"),
    }
    let holder = &cluster.nodes[Cluster::index(fallback)];
    assert_eq!((holder.stats().hints_dropped, holder.stats().hints_pending), (2, 0));
}

/// Three nodes at N=3 where node 3 missed `keys` quorum writes while cut off.
fn node_3_missed_writes(keys: usize) -> Cluster {
    let mut cluster = Cluster::new(3, 3);
    cluster.isolated.insert(NodeId(3));
    cluster.advance(Duration::from_secs(3));
    for i in 0..keys {
        assert!(is_written(&cluster.put(
            1 + (i as u64 % 2),
            &format!("key-{i}"),
            "v",
            None,
            Consistency::Quorum
        )));
    }
    cluster.isolated.clear();
    cluster
}

/// Whether node 3 holds `key` as node 1 does.
fn node_3_agrees(cluster: &mut Cluster, key: &str) -> bool {
    let theirs = cluster.nodes[0].local_object(key.as_bytes()).unwrap();
    theirs.is_some() && cluster.nodes[2].local_object(key.as_bytes()).unwrap() == theirs
}

#[test]
fn anti_entropy_repairs_a_replica_that_missed_writes_without_any_read() {
    const KEYS: usize = 300;
    let mut cluster = node_3_missed_writes(KEYS);
    assert!(!(0..KEYS).any(|i| node_3_agrees(&mut cluster, &format!("key-{i}"))), "node 3 holds none yet");
    // One round of every (range, peer) pair: 192 ranges, two peers each,
    // four exchanges every 250 ms, plus the second comparison's wait.
    cluster.advance(Duration::from_secs(40));
    let missing: Vec<usize> =
        (0..KEYS).filter(|i| !node_3_agrees(&mut cluster, &format!("key-{i}"))).collect();
    assert!(missing.is_empty(), "{} keys still missing on node 3: {missing:?}", missing.len());
    let repaired: u64 = cluster.nodes.iter().map(|node| node.stats().anti_entropy.keys_repaired).sum();
    assert!(repaired >= KEYS as u64, "{repaired} keys reported repaired");
    for node in &cluster.nodes {
        let peers: Vec<NodeId> = node.last_exchanges().into_iter().map(|(peer, _)| peer).collect();
        assert_eq!(peers.len(), 2, "{:?} compared trees with both others: {peers:?}", node.id());
    }
    let roots: Vec<_> = cluster.nodes.iter().map(Node::tree_roots).collect();
    assert!(roots.windows(2).all(|pair| pair[0] == pair[1]), "every tree agrees once repaired");
}

#[test]
fn anti_entropy_off_leaves_a_replica_behind() {
    let mut config = Config::default();
    config.ring.replicas = 3;
    config.anti_entropy.exchanges_in_flight_max = 0;
    let mut cluster = Cluster::with_config(3, config);
    cluster.isolated.insert(NodeId(3));
    cluster.advance(Duration::from_secs(3));
    assert!(is_written(&cluster.put(1, "key", "v", None, Consistency::Quorum)));
    cluster.isolated.clear();
    cluster.advance(Duration::from_secs(40));
    assert_eq!(cluster.nodes[2].local_object(b"key").unwrap(), None, "nothing started an exchange");
    assert!(cluster.nodes.iter().all(|node| node.stats().anti_entropy.exchanges_started == 0));
}
