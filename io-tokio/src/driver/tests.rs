//! Drivers on loopback with real files: the node, the transport and fsync
//! working together.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use keel_core::client::{Consistency, Context, Delete, Get, Put, Read, Replaced, Replaces, Written};
use keel_core::ring::Member;

use super::*;

/// A fresh directory under the system's temporary directory.
fn scratch_dir(name: &str) -> PathBuf {
    let unique = format!("keel-driver-{name}-{}-{}", std::process::id(), random_seed());
    let dir = std::env::temp_dir().join(unique);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A port free right now (the test binds it again a moment later).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port")
}

struct Cluster {
    configs: Vec<DriverConfig>,
    nodes: Vec<Option<(Running, CancellationToken)>>,
}

impl Cluster {
    async fn start(size: u64, name: &str) -> Cluster {
        let addresses: BTreeMap<NodeId, SocketAddr> =
            (1..=size).map(|id| (NodeId(id), free_port())).collect();
        let members: Vec<Member> = (1..=size).map(|id| Member::new(NodeId(id))).collect();
        let mut node_config = node::Config { members, ..node::Config::default() };
        node_config.ring.replicas = size.min(3) as u8;
        node_config.request_timeout = Duration::from_secs(1);
        let configs: Vec<DriverConfig> = (1..=size)
            .map(|id| DriverConfig {
                node: NodeId(id),
                cluster: "test".into(),
                node_config: node_config.clone(),
                data_dir: scratch_dir(&format!("{name}-{id}")),
                peer_listen: addresses[&NodeId(id)],
                peers: addresses.iter().filter(|(peer, _)| peer.0 != id).map(|(k, v)| (*k, *v)).collect(),
                calls_queue_max: 1024,
                shutdown_grace: Duration::from_secs(2),
                seed: Some(id),
            })
            .collect();
        let mut cluster = Cluster { nodes: (0..size).map(|_| None).collect(), configs };
        for index in 0..size as usize {
            cluster.restart(index).await;
        }
        cluster
    }

    async fn restart(&mut self, index: usize) {
        let token = CancellationToken::new();
        let running = start(self.configs[index].clone(), token.clone()).await.expect("start");
        self.nodes[index] = Some((running, token));
    }

    async fn stop(&mut self, index: usize) {
        if let Some((running, token)) = self.nodes[index].take() {
            token.cancel();
            running.stopped().await;
        }
    }

    fn handle(&self, index: usize) -> Handle {
        self.nodes[index].as_ref().expect("running").0.handle.clone()
    }

    async fn put(&self, index: usize, request: Put) -> Result<Written, ClientError> {
        self.handle(index).put(request).await
    }

    async fn get(&self, index: usize, request: Get) -> Result<Read, ClientError> {
        self.handle(index).get(request).await
    }
}

fn put(key: &str, value: &str, context: Option<Context>, write: Consistency) -> Put {
    let replaces = context.map_or(Replaces::Held, Replaces::Context);
    Put { key: key.into(), value: value.into(), replaces, write, strict: false }
}

fn get(key: &str, read: Consistency) -> Get {
    Get { key: key.into(), read }
}

fn values(read: &Result<Read, ClientError>) -> Vec<String> {
    match read {
        Ok(read) => read.values.iter().map(|value| String::from_utf8_lossy(value).into_owned()).collect(),
        Err(error) => panic!("expected a read, got {error:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_replicates_and_survives_a_restart() {
    let mut cluster = Cluster::start(3, "three").await;
    let written = cluster.put(0, put("k", "v1", None, Consistency::All)).await;
    assert!(written.is_ok(), "{written:?}");
    assert_eq!(values(&cluster.get(2, get("k", Consistency::All)).await), ["v1"]);

    cluster.stop(1).await;
    // With one node down, quorum writes and reads still succeed.
    let written = cluster.put(0, put("k", "v2", None, Consistency::Quorum)).await;
    assert!(written.is_ok(), "{written:?}");
    assert_eq!(values(&cluster.get(2, get("k", Consistency::Quorum)).await), ["v2"]);

    cluster.restart(1).await;
    // The restarted node kept what it had on disk...
    assert_eq!(values(&cluster.get(1, get("k", Consistency::One)).await).len(), 1);
    // ...and a read at `all` brings every replica up to date.
    let mut latest = Vec::new();
    for _ in 0..50 {
        latest = values(&cluster.get(1, get("k", Consistency::All)).await);
        if latest == ["v2"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(latest, ["v2"]);
    for index in 0..3 {
        cluster.stop(index).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_become_siblings_and_a_context_resolves_them() {
    let mut cluster = Cluster::start(1, "siblings").await;
    cluster.put(0, put("k", "a", Some(Context::default()), Consistency::One)).await.expect("written");
    cluster.put(0, put("k", "b", Some(Context::default()), Consistency::One)).await.expect("written");
    let read = cluster.get(0, get("k", Consistency::One)).await;
    assert_eq!(values(&read), ["a", "b"]);
    let context = read.expect("read").context;
    cluster.put(0, put("k", "c", Some(context), Consistency::One)).await.expect("written");
    assert_eq!(values(&cluster.get(0, get("k", Consistency::One)).await), ["c"]);
    cluster.stop(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writes_share_syncs_and_all_are_durable() {
    let mut cluster = Cluster::start(1, "group").await;
    let handle = cluster.handle(0);
    let writes = (0..500).map(|i| {
        let handle = handle.clone();
        tokio::spawn(async move { handle.put(put(&format!("k{i}"), "v", None, Consistency::One)).await })
    });
    for write in writes.collect::<Vec<_>>() {
        assert!(write.await.expect("task").is_ok());
    }
    // Every sync is measured, and there were fewer syncs than writes.
    let metrics = handle.metrics().render();
    let syncs: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("keel_disk_sync_duration_seconds_count "))
        .and_then(|count| count.parse().ok())
        .expect("a count of syncs");
    assert!((1..500).contains(&syncs), "{syncs} syncs for 500 writes");
    assert!(metrics.contains("keel_disk_sync_failures_total 0"), "{metrics}");
    cluster.stop(0).await;
    cluster.restart(0).await;
    for i in (0..500).step_by(37) {
        assert_eq!(values(&cluster.get(0, get(&format!("k{i}"), Consistency::One)).await), ["v"]);
    }
    // The status refreshes twice a second; the estimate errs high only by
    // copies of the node's metadata record that a flush left behind.
    let introspect = cluster.nodes[0].as_ref().expect("running").0.introspect.clone();
    let mut estimate = None;
    for _ in 0..40 {
        estimate = crate::service::Introspect::status(&introspect).keys_estimate;
        if estimate.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(estimate.is_some_and(|keys| (500..510).contains(&keys)), "{estimate:?}");
    cluster.stop(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_refuses_new_calls_and_a_stopped_one_says_so() {
    let mut cluster = Cluster::start(1, "stop").await;
    let handle = cluster.handle(0);
    cluster.stop(0).await;
    assert_eq!(handle.get(get("k", Consistency::One)).await, Err(ClientError::ShuttingDown));
}

/// Deletes and `SET … GET` as the servers send them, through real nodes:
/// the node reads first and replaces exactly what its read saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_read_first_replace_what_the_read_saw() {
    let mut cluster = Cluster::start(3, "read-first").await;
    let blind = |value| put("k", value, Some(Context::default()), Consistency::All);
    cluster.put(0, blind("a")).await.expect("written");
    cluster.put(1, blind("b")).await.expect("written");
    let set = Put {
        key: b"k".to_vec(),
        value: b"c".to_vec(),
        replaces: Replaces::Read,
        write: Consistency::All,
        strict: false,
    };
    let written = cluster.put(2, set).await.expect("written");
    assert_eq!(written.replaced, Replaced::Values(vec![b"a".to_vec(), b"b".to_vec()]));
    assert_eq!(values(&cluster.get(0, get("k", Consistency::All)).await), ["c"]);
    let delete = |key: &str| Delete {
        key: key.into(),
        replaces: Replaces::Read,
        write: Consistency::Quorum,
        strict: false,
    };
    let deleted = cluster.handle(1).delete(delete("k")).await.expect("deleted");
    assert_eq!(deleted.replaced, Replaced::Values(vec![b"c".to_vec()]));
    assert!(!cluster.get(2, get("k", Consistency::All)).await.expect("read").is_found());
    let absent = cluster.handle(0).delete(delete("absent")).await.expect("nothing to delete");
    assert_eq!(absent.replaced, Replaced::Values(Vec::new()));
    for index in 0..3 {
        cluster.stop(index).await;
    }
}
