//! Strangers, misconfigured peers, corrupt frames, garbage and floods: each
//! is refused or dropped, counted, and never stops the transport.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::transport::backoff::SplitMix64;
use keel_core::frame::FrameError;

/// An address nothing listens on.
async fn nowhere() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(loopback()).await.expect("bind");
    listener.local_addr().expect("address")
}

/// Node 1, whose only peer is node 2; node 2 is played by raw sockets.
async fn lone(configure: impl FnOnce(TransportConfig) -> TransportConfig) -> Running {
    let mut config = configure(config(1));
    config.peers.insert(NodeId(2), nowhere().await);
    Running::start(config).await
}

fn hello(version: u16, cluster: &str, from: u64, to: u64) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.push(cluster.len() as u8);
    out.extend_from_slice(cluster.as_bytes());
    out.extend_from_slice(&from.to_le_bytes());
    out.extend_from_slice(&to.to_le_bytes());
    out
}

/// Sends `bytes` and returns everything received until the transport closed.
async fn exchange(address: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    until_closed(&mut stream).await
}

async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the transport kept the connection open");
    received
}

/// Connects as node 2 and passes the handshake.
async fn as_node_two(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(&hello(PROTOCOL_VERSION, "test", 2, 1)).await.expect("write");
    let mut reply = vec![0u8; hello(PROTOCOL_VERSION, "test", 1, 2).len() + 1];
    tokio::time::timeout(WAIT, stream.read_exact(&mut reply)).await.expect("reply in time").expect("reply");
    assert_eq!(reply, [hello(PROTOCOL_VERSION, "test", 1, 2), vec![0]].concat());
    stream
}

#[tokio::test]
async fn strangers_and_misconfigured_peers_are_refused_and_counted() {
    let node = lone(|config| config).await;
    let address = node.transport.local_addr();
    assert!(exchange(address, b"GET / HTTP/1.1\r\n\r\n").await.is_empty(), "strangers get no answer");
    let verdict = |reply: Vec<u8>| reply.last().copied();
    assert_eq!(verdict(exchange(address, &hello(PROTOCOL_VERSION, "test", 9, 1)).await), Some(3));
    assert_eq!(verdict(exchange(address, &hello(PROTOCOL_VERSION, "test", 1, 1)).await), Some(3));
    assert_eq!(verdict(exchange(address, &hello(PROTOCOL_VERSION, "other", 2, 1)).await), Some(2));
    assert_eq!(verdict(exchange(address, &hello(PROTOCOL_VERSION, "test", 2, 5)).await), Some(4));
    let reply = exchange(address, &hello(PROTOCOL_VERSION + 1, "test", 2, 1)).await;
    assert_eq!(&reply[4..6], &PROTOCOL_VERSION.to_le_bytes(), "says which version it speaks");
    assert_eq!(verdict(reply), Some(1));

    let refused = node.transport.stats().inbound_refused;
    let expected = RefusalCounts {
        bad_magic: 1,
        unknown_node: 2,
        cluster: 1,
        wrong_target: 1,
        version: 1,
        ..Default::default()
    };
    assert_eq!(refused, expected);
    assert_eq!(node.transport.stats().inbound_accepted, 0);
    node.stop().await;
}

#[tokio::test]
async fn transports_of_different_clusters_refuse_each_other() {
    let first = Running::start(config(1)).await;
    let mut second = Running::start(TransportConfig { cluster: "other".into(), ..config(2) }).await;
    first.transport.set_peer(NodeId(2), second.transport.local_addr());
    second.transport.set_peer(NodeId(1), first.transport.local_addr());
    first.transport.send(NodeId(2), &heartbeat(1));
    eventually("both sides refused", || {
        first.peer(2).handshake_failures >= 1 && second.transport.stats().inbound_refused.cluster >= 1
    })
    .await;
    let stats = first.peer(2);
    assert!(!stats.connected && stats.connects == 0, "{stats:?}");
    eventually("what was queued is dropped", || first.peer(2).dropped_unsent == 1).await;
    assert!(second.inbound.try_recv().is_err(), "nothing is delivered");
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_corrupt_or_oversize_frame_closes_the_connection_and_is_counted() {
    let mut node = lone(|config| TransportConfig { frame_bytes_max: 1024, ..config }).await;
    let address = node.transport.local_addr();

    let mut stream = as_node_two(address).await;
    let mut frame = Vec::new();
    heartbeat(5).encode(&mut frame).expect("encode");
    stream.write_all(&frame).await.expect("write");
    assert_eq!(boots(&node.receive(1).await, 2), [5]);
    let last = frame.len() - 1;
    frame[last] ^= 0x10;
    stream.write_all(&frame).await.expect("write");
    until_closed(&mut stream).await;
    eventually("the corrupt frame is counted", || node.peer(2).decode_errors == 1).await;

    let mut stream = as_node_two(address).await;
    let mut header = 1025u32.to_le_bytes().to_vec();
    header.extend_from_slice(&[0; 4]);
    stream.write_all(&header).await.expect("write");
    until_closed(&mut stream).await;
    eventually("the oversize frame is counted", || node.peer(2).decode_errors == 2).await;
    eventually("no inbound connection is left", || !node.peer(2).inbound_connected).await;
    assert_eq!(node.peer(2).messages_received, 1);
    node.stop().await;
}

/// A `Replicate` frame whose checksum holds but whose object has its two
/// siblings in reverse dot order: the two siblings' bytes, swapped.
fn replicate_with_unsorted_siblings() -> Vec<u8> {
    use keel_core::version::{Actor, CausalContext, Object, Value};
    let actor = Actor { node: NodeId(2), incarnation: 7, epoch: 1 };
    let mut object = Object::new();
    object.write(actor, &CausalContext::new(), Value::Live(b"AAAA".to_vec()), 5);
    object.write(actor, &CausalContext::new(), Value::Live(b"BBBB".to_vec()), 5);
    let message = Message::Replicate { tag: Tag { boot: 1, seq: 1 }, key: b"k".to_vec(), object };
    let mut frame = Vec::new();
    message.encode(&mut frame).expect("encode");
    let find = |needle: &[u8]| frame.windows(4).position(|window| window == needle).expect("a value");
    // Equal dots but for the counter, equal timestamps and value lengths:
    // each sibling ends with its value, and both are as long as the gap.
    let (first_end, second_end) = (find(b"AAAA") + 4, find(b"BBBB") + 4);
    let len = second_end - first_end;
    let first: Vec<u8> = frame[first_end - len..first_end].to_vec();
    frame.copy_within(second_end - len..second_end, first_end - len);
    frame[second_end - len..second_end].copy_from_slice(&first);
    let checksum = crc32c::crc32c(&frame[8..]);
    frame[4..8].copy_from_slice(&checksum.to_le_bytes());
    frame
}

#[tokio::test]
async fn a_frame_holding_no_valid_message_is_dropped_and_counted_and_the_connection_stays() {
    let mut node = lone(|config| config).await;
    let mut stream = as_node_two(node.transport.local_addr()).await;
    let bad = replicate_with_unsorted_siblings();
    assert!(matches!(Message::decode(&bad), Err(FrameError::Malformed(_))), "a sound frame, no message");
    let mut wire = Vec::new();
    heartbeat(1).encode(&mut wire).expect("encode");
    wire.extend_from_slice(&bad);
    heartbeat(2).encode(&mut wire).expect("encode");
    stream.write_all(&wire).await.expect("write");
    assert_eq!(boots(&node.receive(2).await, 2), [1, 2], "the frames around it are delivered");
    eventually("the frame is counted", || node.peer(2).messages_rejected == 1).await;
    let peer = node.peer(2);
    assert_eq!((peer.decode_errors, peer.messages_received), (0, 2));
    assert!(peer.inbound_connected, "the connection stays");
    // And it goes on carrying messages.
    let mut more = Vec::new();
    heartbeat(3).encode(&mut more).expect("encode");
    stream.write_all(&more).await.expect("write");
    assert_eq!(boots(&node.receive(1).await, 2), [3]);
    node.stop().await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let node = lone(|config| TransportConfig { send_queue_max: 10, frame_bytes_max: 64, ..config }).await;
    for boot in 0..100 {
        node.transport.send(NodeId(2), &heartbeat(boot));
    }
    node.transport.send(NodeId(2), &Message::Read { tag: Tag { boot: 0, seq: 0 }, key: vec![0; 100] });
    node.transport.send(NodeId(7), &heartbeat(0));
    let stats = node.transport.stats();
    let peer = &stats.peers[&NodeId(2)];
    assert_eq!((peer.queued_messages, peer.dropped_queue_full, peer.dropped_too_large), (10, 91, 0));
    assert_eq!(stats.unknown_destination, 1);
    node.stop().await;

    let node =
        lone(|config| TransportConfig { frame_bytes_max: 64, send_queue_bytes_max: 40, ..config }).await;
    node.transport.send(NodeId(2), &Message::Read { tag: Tag { boot: 0, seq: 0 }, key: vec![0; 100] });
    for boot in 0..10 {
        node.transport.send(NodeId(2), &heartbeat(boot));
    }
    let peer = node.peer(2);
    assert_eq!(peer.dropped_too_large, 1);
    assert!(peer.queued_bytes <= 40 && peer.dropped_queue_full > 0, "{peer:?}");
    assert_eq!(peer.queued_messages + peer.dropped_queue_full, 10);
    node.stop().await;
}

#[tokio::test]
async fn garbage_never_stops_the_listener() {
    let mut nodes = cluster(2, |config| config).await;
    let address = nodes[1].transport.local_addr();
    let mut rng = SplitMix64(42);
    for wave in 0..8u64 {
        let mut clients = Vec::new();
        for client in 0..4u64 {
            let mut garbage: Vec<u8> = (0..64 * 1024).map(|_| rng.next() as u8).collect();
            if (wave + client) % 2 == 0 {
                // Past the magic and the version, into the lengths and ids.
                garbage[..6].copy_from_slice(&hello(PROTOCOL_VERSION, "", 0, 0)[..6]);
            }
            clients.push(tokio::spawn(async move {
                let mut stream = TcpStream::connect(address).await.expect("connect");
                // The transport may close first; that is the expected outcome.
                let _ = stream.write_all(&garbage).await;
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut sink)).await;
            }));
        }
        for client in clients {
            client.await.expect("client");
        }
    }
    eventually("all garbage is refused", || nodes[1].transport.stats().inbound_refused.total() == 32).await;
    for boot in 0..200 {
        nodes[0].transport.send(NodeId(2), &heartbeat(boot));
    }
    assert_eq!(boots(&nodes[1].receive(200).await, 1), (0..200).collect::<Vec<_>>());
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn inbound_connections_over_the_limit_are_refused() {
    let node = Running::start(TransportConfig { handshake_timeout: WAIT, ..config(1) }).await;
    let address = node.transport.local_addr();
    let mut silent = Vec::new();
    for _ in 0..INBOUND_CONNECTIONS_SLACK {
        silent.push(TcpStream::connect(address).await.expect("connect"));
    }
    let mut extra = TcpStream::connect(address).await.expect("connect");
    until_closed(&mut extra).await;
    assert_eq!(node.transport.stats().inbound_refused.over_limit, 1);
    drop(silent);
    eventually("the silent connections are gone", || {
        node.transport.stats().inbound_refused.closed == INBOUND_CONNECTIONS_SLACK as u64
    })
    .await;
    assert!(exchange(address, b"nope").await.is_empty());
    assert_eq!(node.transport.stats().inbound_refused.bad_magic, 1, "a place was free again");
    node.stop().await;
}

#[tokio::test]
async fn a_peer_silent_past_the_idle_timeout_is_closed() {
    let idle = |config: TransportConfig| TransportConfig {
        keepalive_interval: Duration::from_millis(50),
        idle_timeout: Duration::from_millis(200),
        ..config
    };
    let node = lone(idle).await;
    let mut stream = as_node_two(node.transport.local_addr()).await;
    eventually("the connection is accepted", || node.peer(2).inbound_connected).await;
    let started = Instant::now();
    until_closed(&mut stream).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    eventually("the connection is forgotten", || !node.peer(2).inbound_connected).await;
    node.stop().await;
}
