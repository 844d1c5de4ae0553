//! Bad input gets a clear error, nothing is half-written, and the node goes
//! on answering.

use std::time::Duration;

use keel_tests::Cluster;
use keel_tests::http::{get, request};
use keel_tests::resp::{command, exchange, pings, redis_cli};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn bad_redis_input_is_refused_and_the_node_stays_up() {
    let cluster = Cluster::start("bad-resp", 1, 1);
    let redis = cluster.nodes[0].redis;
    let wait = Duration::from_millis(500);

    let reply = text(&exchange(redis, b"*abc\r\n", wait));
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
    assert!(pings(redis));

    let reply = text(&exchange(redis, b"*1\r\n$99999999999\r\n", wait));
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
    assert!(pings(redis));

    let reply = text(&exchange(redis, &command(&[b"NOSUCHCOMMAND", b"x"]), wait));
    assert!(reply.starts_with("-ERR unknown command 'NOSUCHCOMMAND'"), "{reply}");
    let reply = text(&exchange(redis, &command(&[b"GET"]), wait));
    assert!(reply.starts_with("-ERR wrong number of arguments for 'get' command"), "{reply}");

    let long_key = vec![b'k'; 9 * 1024];
    let reply = text(&exchange(redis, &command(&[b"SET", &long_key, b"v"]), wait));
    assert!(reply.starts_with('-') && reply.contains("key of 9216 bytes exceeds the limit"), "{reply}");
    let reply = text(&exchange(redis, &command(&[b"SET", b"k", b"v", b"NX"]), wait));
    assert!(reply.contains("does not support SET option NX"), "{reply}");
    assert_eq!(redis_cli(redis, &["GET", "k"]), "", "a refused SET wrote nothing");

    // Random bytes, then a flood of garbage: still answering.
    let _ = exchange(redis, &[0xff, 0x00, 0x13, 0x37, b'\r', b'\n'], wait);
    let _ = exchange(redis, &vec![b'*'; 256 * 1024], wait);
    assert!(pings(redis));
}

#[test]
fn bad_http_input_is_refused_and_the_node_stays_up() {
    let cluster = Cluster::start("bad-http", 1, 1);
    let http = cluster.nodes[0].http;
    let healthy = || request(http, "GET", "/health", &[], b"").is_ok_and(|reply| reply.status == 200);

    let long_key = "k".repeat(9 * 1024);
    let reply = request(http, "PUT", &format!("/v1/kv/{long_key}"), &[], b"v").expect("reply");
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.text().contains("key_too_large"));

    let big = vec![b'v'; 16 * 1024 * 1024 + 1];
    let reply = request(http, "PUT", "/v1/kv/big", &[], &big).expect("reply");
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(get(http, "big", "").status, 404, "an oversize value wrote nothing");

    let reply = request(http, "GET", "/v1/kv/k?r=9", &[], b"").expect("reply");
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("bad_consistency"), "{}", reply.text());
    let reply = request(http, "PUT", "/v1/kv/k", &[("x-keel-context", "***")], b"v").expect("reply");
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("bad_context"), "{}", reply.text());
    assert_eq!(get(http, "k", "").status, 404, "a refused write wrote nothing");

    // Not HTTP at all.
    let _ = keel_tests::resp::exchange(http, b"\x16\x03\x01 hello there\r\n\r\n", Duration::from_millis(500));
    assert!(healthy());
    assert!(pings(cluster.nodes[0].redis));
}
