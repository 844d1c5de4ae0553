//! Drivers on loopback with real files: the node, the transport and fsync
//! working together.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use keel_core::client::{Consistency, Context, Request};
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

    async fn call(&self, index: usize, request: Request) -> Reply {
        self.handle(index).call(request).await
    }
}

fn put(key: &str, value: &str, context: Option<Context>, write: Consistency) -> Request {
    Request::Put { key: key.into(), value: value.into(), context, write }
}

fn get(key: &str, read: Consistency) -> Request {
    Request::Get { key: key.into(), read }
}

fn values(reply: &Reply) -> Vec<String> {
    match reply {
        Reply::Found { values, .. } => {
            values.iter().map(|value| String::from_utf8_lossy(value).into_owned()).collect()
        }
        Reply::NotFound { .. } => Vec::new(),
        other => panic!("expected a read, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_replicates_and_survives_a_restart() {
    let mut cluster = Cluster::start(3, "three").await;
    let written = cluster.call(0, put("k", "v1", None, Consistency::All)).await;
    assert!(matches!(written, Reply::Written { .. }), "{written:?}");
    assert_eq!(values(&cluster.call(2, get("k", Consistency::All)).await), ["v1"]);

    cluster.stop(1).await;
    // With one node down, quorum writes and reads still succeed.
    let written = cluster.call(0, put("k", "v2", None, Consistency::Quorum)).await;
    assert!(matches!(written, Reply::Written { .. }), "{written:?}");
    assert_eq!(values(&cluster.call(2, get("k", Consistency::Quorum)).await), ["v2"]);

    cluster.restart(1).await;
    // The restarted node kept what it had on disk...
    assert_eq!(values(&cluster.call(1, get("k", Consistency::One)).await).len(), 1);
    // ...and a read at `all` brings every replica up to date.
    let mut latest = Vec::new();
    for _ in 0..50 {
        latest = values(&cluster.call(1, get("k", Consistency::All)).await);
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
    cluster.call(0, put("k", "a", Some(Context::default()), Consistency::One)).await;
    cluster.call(0, put("k", "b", Some(Context::default()), Consistency::One)).await;
    let read = cluster.call(0, get("k", Consistency::One)).await;
    assert_eq!(values(&read), ["a", "b"]);
    let Reply::Found { context, .. } = read else { unreachable!() };
    cluster.call(0, put("k", "c", Some(context), Consistency::One)).await;
    assert_eq!(values(&cluster.call(0, get("k", Consistency::One)).await), ["c"]);
    cluster.stop(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writes_share_syncs_and_all_are_durable() {
    let mut cluster = Cluster::start(1, "group").await;
    let handle = cluster.handle(0);
    let writes = (0..500).map(|i| {
        let handle = handle.clone();
        tokio::spawn(async move { handle.call(put(&format!("k{i}"), "v", None, Consistency::One)).await })
    });
    for write in writes.collect::<Vec<_>>() {
        assert!(matches!(write.await.expect("task"), Reply::Written { .. }));
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
        assert_eq!(values(&cluster.call(0, get(&format!("k{i}"), Consistency::One)).await), ["v"]);
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
    assert_eq!(handle.call(get("k", Consistency::One)).await, Reply::Failed(ClientError::ShuttingDown));
}
