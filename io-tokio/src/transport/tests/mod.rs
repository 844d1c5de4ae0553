//! Transports talking to each other over loopback: delivery, order,
//! reconnection, readdressing, keepalives, shutdown. Hostile peers are in
//! `hostile.rs`. Every wait is bounded, so a broken transport fails a test
//! instead of hanging it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keel_core::NodeId;
use keel_core::message::{Message, Tag};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;

mod hostile;

const WAIT: Duration = Duration::from_secs(10);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Short timeouts so that failures and reconnections happen within a test.
fn config(node: u64) -> TransportConfig {
    TransportConfig {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(1),
        handshake_timeout: Duration::from_secs(1),
        ..TransportConfig::new(NodeId(node), "test", loopback())
    }
}

struct Running {
    transport: Transport,
    inbound: mpsc::Receiver<Inbound>,
    shutdown: CancellationToken,
}

impl Running {
    async fn start(config: TransportConfig) -> Running {
        let shutdown = CancellationToken::new();
        let (transport, inbound) = Transport::start(config, shutdown.clone()).await.expect("start");
        Running { transport, inbound, shutdown }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.transport.closed()).await.expect("transport closes");
    }

    fn peer(&self, id: u64) -> PeerStats {
        self.transport.stats().peers[&NodeId(id)].clone()
    }

    /// The next `count` messages, or a failure after `WAIT`.
    async fn receive(&mut self, count: usize) -> Vec<Inbound> {
        let mut received = Vec::with_capacity(count);
        while received.len() < count {
            match tokio::time::timeout(WAIT, self.inbound.recv()).await {
                Ok(Some(inbound)) => received.push(inbound),
                Ok(None) => panic!("inbound ended after {} of {count} messages", received.len()),
                Err(_) => panic!("only {} of {count} messages arrived", received.len()),
            }
        }
        received
    }
}

/// `count` transports, each a peer of all the others.
async fn cluster(count: u64, configure: impl Fn(TransportConfig) -> TransportConfig) -> Vec<Running> {
    let mut nodes = Vec::new();
    for id in 1..=count {
        nodes.push(Running::start(configure(config(id))).await);
    }
    let addresses: Vec<(NodeId, SocketAddr)> =
        nodes.iter().map(|node| (node.transport.node(), node.transport.local_addr())).collect();
    for node in &nodes {
        for &(id, address) in &addresses {
            node.transport.set_peer(id, address);
        }
    }
    nodes
}

fn heartbeat(boot: u64) -> Message {
    Message::Heartbeat { boot }
}

fn boots(received: &[Inbound], from: u64) -> Vec<u64> {
    received
        .iter()
        .filter(|inbound| inbound.from == NodeId(from))
        .map(|inbound| match inbound.message {
            Message::Heartbeat { boot } => boot,
            ref other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// Polls `condition` until it holds, or fails after `WAIT`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn two_transports_exchange_in_both_directions_in_order() {
    let mut nodes = cluster(2, |config| config).await;
    for boot in 0..2000 {
        nodes[0].transport.send(NodeId(2), &heartbeat(boot));
        nodes[1].transport.send(NodeId(1), &heartbeat(10_000 + boot));
    }
    let at_two = nodes[1].receive(2000).await;
    let at_one = nodes[0].receive(2000).await;
    assert_eq!(boots(&at_two, 1), (0..2000).collect::<Vec<_>>());
    assert_eq!(boots(&at_one, 2), (10_000..12_000).collect::<Vec<_>>());
    let stats = nodes[0].peer(2);
    assert!(stats.connected && stats.inbound_connected, "{stats:?}");
    assert_eq!((stats.messages_sent, stats.messages_received), (2000, 2000));
    assert_eq!(stats.bytes_sent, nodes[1].peer(1).bytes_received);
    assert_eq!(stats.dropped_queue_full + stats.dropped_unsent + stats.decode_errors, 0);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn three_transports_deliver_in_order_per_peer() {
    let mut nodes = cluster(3, |config| config).await;
    for round in 0..300 {
        for (index, node) in nodes.iter().enumerate() {
            let from = index as u64 + 1;
            for to in (1..=3).filter(|&to| to != from) {
                node.transport.send(NodeId(to), &heartbeat(from * 1_000_000 + to * 1000 + round));
            }
        }
    }
    for (index, node) in nodes.iter_mut().enumerate() {
        let to = index as u64 + 1;
        let received = node.receive(600).await;
        for from in (1..=3).filter(|&from| from != to) {
            let expected: Vec<u64> = (0..300).map(|round| from * 1_000_000 + to * 1000 + round).collect();
            assert_eq!(boots(&received, from), expected, "from n{from} to n{to}");
        }
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn a_restarted_peer_is_reconnected_and_receives_later_messages() {
    let mut nodes = cluster(2, |config| config).await;
    nodes[0].transport.send(NodeId(2), &heartbeat(1));
    assert_eq!(boots(&nodes[1].receive(1).await, 1), [1]);
    let second = nodes.pop().expect("two nodes");
    let address = second.transport.local_addr();
    second.stop().await;

    let mut restarted = Running::start(TransportConfig { listen: address, ..config(2) }).await;
    restarted.transport.set_peer(NodeId(1), nodes[0].transport.local_addr());
    let first = &nodes[0];
    eventually("the restarted peer is reconnected", || {
        first.peer(2).connected && first.peer(2).connects >= 2
    })
    .await;
    for boot in 100..200 {
        first.transport.send(NodeId(2), &heartbeat(boot));
    }
    // Messages sent while the peer was down may arrive first, or be lost.
    let mut later = Vec::new();
    while later.len() < 100 {
        let received = restarted.receive(1).await;
        later.extend(boots(&received, 1).into_iter().filter(|&boot| boot >= 100));
    }
    assert_eq!(later, (100..200).collect::<Vec<_>>());
    assert!(first.peer(2).reconnects >= 1);
    restarted.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn a_peer_that_dials_in_cuts_our_backoff_short() {
    // Node 1 would wait a minute between attempts to reach node 2.
    let patient = |config: TransportConfig| TransportConfig {
        backoff_min: Duration::from_secs(60),
        backoff_max: Duration::from_secs(60),
        ..config
    };
    let mut nodes = cluster(2, patient).await;
    let second = nodes.pop().expect("two nodes");
    let address = second.transport.local_addr();
    second.stop().await;
    let first = &nodes[0];
    eventually("node 1 notices node 2 is gone", || !first.peer(2).connected).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let restarted = Running::start(patient(TransportConfig { listen: address, ..config(2) })).await;
    restarted.transport.set_peer(NodeId(1), first.transport.local_addr());
    eventually("node 1 reconnects as soon as node 2 dials in", || first.peer(2).connected).await;
    restarted.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn what_was_queued_for_an_unreachable_address_is_dropped_and_a_moved_peer_gets_what_follows() {
    let unused = tokio::net::TcpListener::bind(loopback()).await.expect("bind");
    let nowhere = unused.local_addr().expect("address");
    drop(unused);
    let first = Running::start(config(1)).await;
    let mut second = Running::start(config(2)).await;
    second.transport.set_peer(NodeId(1), first.transport.local_addr());
    first.transport.set_peer(NodeId(2), nowhere);
    for boot in 0..10 {
        first.transport.send(NodeId(2), &heartbeat(boot));
    }
    eventually("a connection attempt failed", || first.peer(2).connect_failures >= 1).await;
    eventually("the queue is dropped", || first.peer(2).queued_messages == 0).await;
    assert_eq!(first.peer(2).dropped_unsent, 10, "counted as never sent");
    first.transport.set_peer(NodeId(2), second.transport.local_addr());
    eventually("connected at the new address", || first.peer(2).connected).await;
    for boot in 10..20 {
        first.transport.send(NodeId(2), &heartbeat(boot));
    }
    assert_eq!(boots(&second.receive(10).await, 1), (10..20).collect::<Vec<_>>());
    assert_eq!(first.peer(2).address, second.transport.local_addr());
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn keepalives_hold_a_quiet_connection_open() {
    let nodes = cluster(2, |config| TransportConfig {
        keepalive_interval: Duration::from_millis(20),
        idle_timeout: Duration::from_millis(150),
        ..config
    })
    .await;
    let first = &nodes[0];
    eventually("both directions are connected", || {
        first.peer(2).connected && first.peer(2).inbound_connected
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stats = first.peer(2);
    assert_eq!((stats.connects, nodes[1].peer(1).connects), (1, 1), "{stats:?}");
    assert!(stats.keepalives_sent >= 5, "{stats:?}");
    assert!(stats.connected && stats.inbound_connected);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn shutdown_flushes_the_queue_then_closes_everything() {
    let mut nodes = cluster(2, |config| config).await;
    let second = nodes.pop().expect("two nodes");
    let mut first = nodes.pop().expect("two nodes");
    let mut second = second;
    eventually("connected", || first.peer(2).connected).await;
    for boot in 0..5000 {
        first.transport.send(NodeId(2), &heartbeat(boot));
    }
    first.shutdown.cancel();
    assert_eq!(boots(&second.receive(5000).await, 1), (0..5000).collect::<Vec<_>>());
    tokio::time::timeout(WAIT, first.transport.closed()).await.expect("closes");
    assert!(tokio::time::timeout(WAIT, first.inbound.recv()).await.expect("inbound ends").is_none());
    first.transport.send(NodeId(2), &heartbeat(0));
    assert_eq!(first.peer(2).dropped_unsent, 1);
    tokio::net::TcpListener::bind(first.transport.local_addr()).await.expect("the port is free again");
    eventually("the peer noticed", || !second.peer(1).inbound_connected).await;
    second.stop().await;
}

/// Not a test of speed: prints how many small messages per second one
/// transport moves to another on loopback. Run it in release:
/// `cargo test --release -p keel-io-tokio transport::tests::throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput() {
    const COUNT: u64 = 1_000_000;
    type Make = fn(u64) -> Message;
    let messages: [(&str, Make); 2] = [
        ("heartbeat", |boot| Message::Heartbeat { boot }),
        ("read with a 64-byte key", |seq| Message::Read { tag: Tag { boot: 1, seq }, key: vec![7; 64] }),
    ];
    for (name, make) in messages {
        let mut nodes = cluster(2, |config| TransportConfig { inbound_queue_max: 64 * 1024, ..config }).await;
        eventually("connected", || nodes[0].peer(2).connected).await;
        let mut inbound = std::mem::replace(&mut nodes[1].inbound, mpsc::channel(1).1);
        let receiver = tokio::spawn(async move {
            for _ in 0..COUNT {
                tokio::time::timeout(WAIT, inbound.recv()).await.expect("in time").expect("open");
            }
        });
        let started = Instant::now();
        let mut sent = 0;
        while sent < COUNT {
            // Stay under the queue bound, as a node's loop would by yielding.
            if nodes[0].peer(2).queued_messages > 8 * 1024 {
                tokio::task::yield_now().await;
                continue;
            }
            for _ in 0..1024 {
                nodes[0].transport.send(NodeId(2), &make(sent));
                sent += 1;
            }
        }
        receiver.await.expect("all received");
        let elapsed = started.elapsed();
        let stats = nodes[0].peer(2);
        println!(
            "{name}: {COUNT} messages in {elapsed:.2?}: {:.0} messages/s, {:.1} MB/s framed, {} dropped",
            COUNT as f64 / elapsed.as_secs_f64(),
            stats.bytes_sent as f64 / elapsed.as_secs_f64() / 1e6,
            stats.dropped_queue_full,
        );
        for node in nodes {
            node.stop().await;
        }
    }
}

#[test]
fn configurations_out_of_bounds_are_refused() {
    let good = config(1);
    good.validate().expect("the test configuration is valid");
    let long_name = TransportConfig { cluster: "x".repeat(256), ..config(1) };
    assert!(matches!(long_name.validate(), Err(ConfigError::ClusterName { len: 256, .. })));
    let backoff = TransportConfig { backoff_min: Duration::from_secs(9), ..config(1) };
    assert!(matches!(backoff.validate(), Err(ConfigError::Backoff { .. })));
    let keepalive = TransportConfig { keepalive_interval: Duration::from_secs(60), ..config(1) };
    assert!(matches!(keepalive.validate(), Err(ConfigError::Keepalive { .. })));
}
