//! Real clients against a real node: redis-cli, the Python `redis` package,
//! and curl. The CI script installs redis-tools and the Python package.

use std::process::Command;

use keel_tests::Cluster;
use keel_tests::resp::redis_cli;

#[test]
fn redis_cli_speaks_to_keel() {
    let cluster = Cluster::start("redis-cli", 1, 1);
    let redis = cluster.nodes[0].redis;
    assert_eq!(redis_cli(redis, &["PING"]), "PONG");
    assert_eq!(redis_cli(redis, &["SET", "k", "v1"]), "OK");
    assert_eq!(redis_cli(redis, &["SET", "k", "v2"]), "OK");
    assert_eq!(redis_cli(redis, &["GET", "k"]), "v2", "a plain SET replaces, it adds no sibling");
    assert_eq!(redis_cli(redis, &["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(
        redis_cli(redis, &["MGET", "a", "b", "missing"]),
        "1\n2",
        "the missing key prints as an empty line"
    );
    assert_eq!(redis_cli(redis, &["EXISTS", "a", "b", "missing"]), "2");
    assert_eq!(redis_cli(redis, &["DEL", "a", "missing"]), "1");
    assert_eq!(redis_cli(redis, &["GET", "a"]), "");
    assert_eq!(redis_cli(redis, &["ECHO", "hi"]), "hi");
    assert!(redis_cli(redis, &["INFO", "server"]).contains("keel_version"));
    let keel_get = redis_cli(redis, &["KEEL.GET", "k"]);
    assert!(keel_get.ends_with("\nv2"), "context then the value: {keel_get:?}");
    assert!(redis_cli(redis, &["FLUSHALL"]).contains("keel does not support"));
}

#[test]
fn the_python_redis_client_works_unmodified() {
    let cluster = Cluster::start("redis-py", 1, 1);
    let port = cluster.nodes[0].redis.port();
    let script = format!(
        r#"
import redis
for protocol in (2, 3):
    r = redis.Redis(host="127.0.0.1", port={port}, protocol=protocol)
    assert r.ping()
    assert r.set("py", b"\x00binary\xff")
    assert r.get("py") == b"\x00binary\xff"
    assert r.mset({{"x": "1", "y": "2"}})
    assert r.mget("x", "y", "nope") == [b"1", b"2", None]
    assert r.exists("x", "nope") == 1
    assert r.delete("x") == 1
    assert r.get("x") is None
    p = r.pipeline(transaction=False)
    for i in range(50):
        p.set(f"p{{i}}", i)
    assert all(p.execute())
    assert r.get("p49") == b"49"
print("ok")
"#
    );
    let output = Command::new("python3").args(["-c", &script]).output().expect("python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python redis client failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
}

#[test]
fn curl_reads_and_writes_over_http() {
    let cluster = Cluster::start("curl", 1, 1);
    let base = format!("http://{}", cluster.nodes[0].http);
    let curl = |args: &[&str]| {
        let output = Command::new("curl").args(["-s", "-S"]).args(args).output().expect("curl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "--data-binary",
        "bonjour",
        &format!("{base}/v1/kv/hello"),
    ]);
    assert_eq!(status, "204");
    assert_eq!(curl(&[&format!("{base}/v1/kv/hello")]), "bonjour");
    assert!(curl(&[&format!("{base}/health")]).contains("ok"));
    assert!(curl(&[&format!("{base}/metrics")]).contains("keel_storage_memtable_bytes"));
    assert!(curl(&[&format!("{base}/v1/ring")]).contains("ownership"));
}
