//! Real clients against a real node: redis-cli, redis-benchmark, the Python
//! `redis` package, and curl. The CI script installs redis-tools and the
//! Python package.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_tests::resp::redis_cli;
use keel_tests::{Cluster, eventually};

/// Runs `command` to its end, killing it if it runs longer than `limit`:
/// a client that hangs fails the test instead of stalling it.
fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!("{command:?} ran past {limit:?}: {}", String::from_utf8_lossy(&output.stdout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

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
    assert_eq!(redis_cli(redis, &["TYPE", "k"]), "string");
    assert_eq!(redis_cli(redis, &["TYPE", "a"]), "none");
    assert_eq!(redis_cli(redis, &["STRLEN", "k"]), "2");
}

#[test]
fn redis_clients_learn_why_a_command_is_refused() {
    let cluster = Cluster::start("redis-refused", 1, 1);
    let redis = cluster.nodes[0].redis;
    assert_eq!(
        redis_cli(redis, &["LPUSH", "list", "x"]),
        "ERR keel does not support LPUSH: keel stores strings; lists are not supported"
    );
    assert_eq!(
        redis_cli(redis, &["INCR", "counter"]),
        "ERR keel does not support INCR: counters need CRDT counters, not implemented yet"
    );
    assert_eq!(redis_cli(redis, &["GET", "counter"]), "", "a refused INCR wrote nothing");
    assert!(redis_cli(redis, &["NOSUCHCOMMAND"]).starts_with("ERR unknown command 'NOSUCHCOMMAND'"));
    // COMMAND describes only what keel runs.
    let listed = redis_cli(redis, &["COMMAND", "LIST"]);
    assert!(listed.lines().any(|name| name == "get"), "{listed}");
    assert!(!listed.lines().any(|name| name == "lpush" || name == "incr" || name == "scan"), "{listed}");
    // An empty key is refused alone; MGET answers the other keys.
    assert_eq!(redis_cli(redis, &["SET", "a", "1"]), "OK");
    assert!(redis_cli(redis, &["SET", "", "v"]).starts_with("ERR the key is empty"));
    let mget = redis_cli(redis, &["MGET", "a", "", "a"]);
    // redis-cli follows an error element with an empty line.
    let lines: Vec<&str> = mget.lines().filter(|line| !line.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{mget:?}");
    assert_eq!((lines[0], lines[2]), ("1", "1"));
    assert!(lines[1].starts_with("ERR the key is empty"), "{mget:?}");
}

#[test]
fn dbsize_and_info_estimate_the_keys_a_node_stores() {
    let cluster = Cluster::start("redis-dbsize", 1, 1);
    let redis = cluster.nodes[0].redis;
    let dbsize = || redis_cli(redis, &["DBSIZE"]).parse::<u64>();
    let before = dbsize().expect("DBSIZE answers an integer");
    for i in 0..20 {
        assert_eq!(redis_cli(redis, &["SET", &format!("key-{i}"), "v"]), "OK");
    }
    // The node refreshes its status twice a second.
    assert!(
        eventually(Duration::from_secs(5), || dbsize().is_ok_and(|after| after >= before + 20)),
        "DBSIZE went from {before} to {:?}",
        dbsize()
    );
    let after = dbsize().expect("an integer");
    let keyspace = redis_cli(redis, &["INFO", "keyspace"]);
    assert!(keyspace.contains(&format!("db0:keys={after},")), "{keyspace}");
    let status =
        keel_tests::http::request(cluster.nodes[0].http, "GET", "/v1/status", &[], b"").expect("status");
    assert!(status.text().contains(&format!("\"keys_estimate\":{after}")), "{}", status.text());
    assert!(redis_cli(redis, &["INFO", "memory"]).contains("used_memory:"));
    // --bigkeys needs SCAN, which keel lacks: it stops with the reason, it does not hang.
    let port = redis.port().to_string();
    let output =
        run_bounded(Command::new("redis-cli").args(["-p", &port, "--bigkeys"]), Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("keel does not support SCAN: key scans are not implemented yet"), "{stderr}");
}

#[test]
fn redis_benchmark_runs_set_and_get_clean() {
    let cluster = Cluster::start("redis-benchmark", 1, 1);
    let port = cluster.nodes[0].redis.port().to_string();
    let mut benchmark = Command::new("redis-benchmark");
    benchmark.args(["-h", "127.0.0.1", "-p", &port, "-q", "-n", "1000", "-t", "set,get"]);
    let output = run_bounded(&mut benchmark, Duration::from_secs(120));
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("rror") && !stderr.contains("rror"), "{stdout}\n{stderr}");
    for test in ["SET: ", "GET: "] {
        assert!(stdout.contains(test) && stdout.contains("requests per second"), "{test} missing: {stdout}");
    }
    assert_eq!(redis_cli(cluster.nodes[0].redis, &["EXISTS", "key:__rand_int__"]), "1");
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
    values = r.mget("p1", "", "nope")
    assert values[0] == b"1" and values[2] is None, values
    assert isinstance(values[1], redis.ResponseError) and "the key is empty" in str(values[1]), values
    try:
        r.lpush("list", "x")
        raise AssertionError("LPUSH was accepted")
    except redis.ResponseError as error:
        assert "lists are not supported" in str(error), error
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

#[test]
fn curl_expecting_100_continue_gets_413_first_for_an_oversize_body() {
    let cluster = Cluster::start("curl-expect", 1, 1);
    let base = format!("http://{}", cluster.nodes[0].http);
    let body = keel_tests::scratch_dir("curl-expect").join("body");
    std::fs::write(&body, vec![b'v'; 16 * 1024 * 1024 + 1]).expect("write the body");
    let output = Command::new("curl")
        .args(["-s", "-S", "-v", "-X", "PUT", "-H", "Expect: 100-continue", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("{base}/v1/kv/big"))
        .output()
        .expect("curl");
    let trace = String::from_utf8_lossy(&output.stderr);
    assert!(trace.contains("> Expect: 100-continue"), "{trace}");
    let first = trace.lines().find(|line| line.starts_with("< HTTP/")).expect("a response line");
    assert!(first.starts_with("< HTTP/1.1 413"), "first response: {first}\n{trace}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("value_too_large"));
    let after = keel_tests::http::get(cluster.nodes[0].http, "big", "");
    assert_eq!(after.status, 404, "nothing was written");
    let empty = keel_tests::http::request(cluster.nodes[0].http, "PUT", "/v1/kv/", &[], b"v").expect("reply");
    assert_eq!(empty.status, 400);
    assert!(empty.text().contains("\"key_empty\""), "{}", empty.text());
}

/// A delete without a context and `SET … GET` are the node's own rule: it
/// reads first and replaces what that read saw, whichever server asked.
#[test]
fn deletes_and_set_get_replace_what_a_read_sees_through_every_server() {
    let cluster = Cluster::start("read-first", 3, 3);
    let (redis, http) = (cluster.nodes[0].redis, cluster.nodes[1].http);
    // Two blind writes: siblings, through two different nodes.
    let blind = [("x-keel-context", "")];
    for (node, value) in [(0, "a"), (2, "b")] {
        let path = "/v1/kv/k?w=all";
        let put = keel_tests::http::request(cluster.nodes[node].http, "PUT", path, &blind, value.as_bytes());
        assert_eq!(put.expect("reply").status, 204);
    }
    assert_eq!(keel_tests::http::get(http, "k", "?r=all").status, 300, "two siblings");
    // SET … GET returns the first sibling it replaced, and replaces both.
    assert_eq!(redis_cli(redis, &["SET", "k", "c", "GET"]), "a");
    assert_eq!(redis_cli(redis, &["GETSET", "k", "d"]), "c");
    assert_eq!(redis_cli(redis, &["GET", "k"]), "d");
    // A DELETE without a context deletes what a read sees.
    for (node, value) in [(0, "e"), (2, "f")] {
        let put =
            keel_tests::http::request(cluster.nodes[node].http, "PUT", "/v1/kv/k", &blind, value.as_bytes());
        assert_eq!(put.expect("reply").status, 204);
    }
    let deleted = keel_tests::http::request(http, "DELETE", "/v1/kv/k?w=all", &[], b"").expect("reply");
    assert_eq!(deleted.status, 204);
    assert!(deleted.header("x-keel-context").is_some_and(|context| !context.is_empty()));
    assert_eq!(keel_tests::http::get(http, "k", "?r=all").status, 404);
    // DEL counts what its read found; GETDEL returns it.
    assert_eq!(redis_cli(redis, &["SET", "g", "1"]), "OK");
    assert_eq!(redis_cli(redis, &["GETDEL", "g"]), "1");
    assert_eq!(redis_cli(redis, &["GETDEL", "g"]), "");
    assert_eq!(redis_cli(redis, &["SET", "h", "1"]), "OK");
    assert_eq!(redis_cli(redis, &["DEL", "h", "g", "never"]), "1");
    // Each command reached node 0 as one request, not a get and a write:
    // one get (GET), five deletes (GETDEL twice, DEL of three keys).
    let metrics =
        keel_tests::http::request(cluster.nodes[0].http, "GET", "/metrics", &[], b"").expect("metrics");
    let requests = |op: &str| -> u64 {
        let prefix = format!("keel_requests_total{{op=\"{op}\"");
        let lines = metrics
            .text()
            .lines()
            .filter(|line| line.starts_with(&prefix))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        lines.iter().filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok()).sum()
    };
    assert_eq!((requests("get"), requests("delete")), (1, 5), "{}", metrics.text());
}
