//! The command layer against the in-memory backend: every command's reply.

use keel_core::client::ClientError;

use super::*;
use crate::service::testing::{MemoryBackend, StaticIntrospect};

struct Client {
    shared: Shared,
    session: Session,
}

impl Client {
    fn new() -> Client {
        Client::with_backend(MemoryBackend::new())
    }

    fn with_backend(backend: MemoryBackend) -> Client {
        let handle = backend.spawn(64);
        let introspect = StaticIntrospect::single(Some(backend.clone()));
        let shared = Shared::new(handle, introspect, RespLimits::default(), 6379);
        let session = shared.session(None, None);
        Client { shared, session }
    }

    async fn send(&mut self, line: &str) -> Value {
        let args = parse::split_args(line.as_bytes()).expect("balanced quotes");
        execute(&self.shared, &mut self.session, Command::new(args)).await.value
    }

    async fn send_args(&mut self, args: Vec<Vec<u8>>) -> Value {
        execute(&self.shared, &mut self.session, Command::new(args)).await.value
    }
}

fn bulk(text: &str) -> Value {
    Value::bulk(text)
}

fn error_text(value: &Value) -> &str {
    match value {
        Value::Error(text) => text,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn get_set_del_behave_like_redis() {
    let mut client = Client::new();
    assert_eq!(client.send("GET k").await, Value::Null);
    assert_eq!(client.send("SET k v1").await, Value::ok());
    assert_eq!(client.send("SET k v2").await, Value::ok());
    // SET replaces what is stored instead of adding a sibling.
    assert_eq!(client.send("GET k").await, bulk("v2"));
    assert_eq!(client.send("SET k v3 GET").await, bulk("v2"));
    assert_eq!(client.send("SET new v GET KEEPTTL").await, Value::Null);
    assert_eq!(client.send("DEL k k missing new").await, Value::Integer(2));
    assert_eq!(client.send("GET k").await, Value::Null);
    assert_eq!(client.send("DEL k").await, Value::Integer(0));
}

#[tokio::test]
async fn writes_that_read_first_replace_every_sibling_and_return_the_first() {
    let mut client = Client::new();
    client.send("KEEL.PUT k a CONTEXT \"\"").await;
    client.send("KEEL.PUT k b CONTEXT \"\"").await;
    assert_eq!(client.send("SET k c GET").await, bulk("a"), "the first of the siblings it replaced");
    let Value::Array(read) = client.send("KEEL.GET k").await else { panic!("not an array") };
    assert_eq!(&read[1..], [bulk("c")], "both replaced");
    client.send("KEEL.PUT k d CONTEXT \"\"").await;
    assert_eq!(client.send("DEL k").await, Value::Integer(1), "a key with siblings is one key");
    assert_eq!(client.send("EXISTS k").await, Value::Integer(0));
    client.send("KEEL.PUT k e CONTEXT \"\"").await;
    client.send("KEEL.PUT k f CONTEXT \"\"").await;
    assert_eq!(client.send("GETDEL k").await, bulk("e"));
    assert_eq!(client.send("GET k").await, Value::Null);
}

#[tokio::test]
async fn binary_keys_and_values() {
    let mut client = Client::new();
    let key = vec![0, 255, b'\r', b'\n'];
    let value = vec![0xde, 0xad, 0, 0xbe, 0xef];
    let set = client.send_args(vec![b"SET".to_vec(), key.clone(), value.clone()]).await;
    assert_eq!(set, Value::ok());
    assert_eq!(client.send_args(vec![b"GET".to_vec(), key]).await, Value::Bulk(value));
}

#[tokio::test]
async fn multi_key_commands() {
    let mut client = Client::new();
    assert_eq!(client.send("MSET a 1 b 2 a 3").await, Value::ok());
    let expected = Value::Array(vec![bulk("3"), bulk("2"), Value::Null, bulk("3")]);
    assert_eq!(client.send("MGET a b c a").await, expected);
    assert_eq!(client.send("EXISTS a b c a").await, Value::Integer(3));
    let error = client.send("MSET a 1 b").await;
    assert_eq!(error_text(&error), "ERR wrong number of arguments for 'mset' command");
}

#[tokio::test]
async fn set_options_keel_cannot_honour_are_refused() {
    let mut client = Client::new();
    for (line, option) in
        [("SET k v NX", "NX"), ("SET k v xx", "XX"), ("SET k v EX 10", "EX"), ("SET k v PX 5", "PX")]
    {
        let reply = client.send(line).await;
        let text = error_text(&reply);
        assert!(text.starts_with(&format!("ERR keel does not support SET option {option}: ")), "{text}");
    }
    assert_eq!(error_text(&client.send("SET k v EX").await), "ERR syntax error");
    assert_eq!(error_text(&client.send("SET k v BOGUS").await), "ERR syntax error");
    // Nothing was written by any refused SET.
    assert_eq!(client.send("GET k").await, Value::Null);
}

#[tokio::test]
async fn keel_commands_expose_siblings_and_contexts() {
    let mut client = Client::new();
    let Value::Bulk(first) = client.send("KEEL.PUT k a").await else { panic!("no context") };
    assert!(!first.is_empty());
    // An empty context makes the write a sibling of what is stored.
    client.send("KEEL.PUT k b CONTEXT \"\"").await;
    let Value::Array(reply) = client.send("KEEL.GET k CONSISTENCY one").await else { panic!("not an array") };
    assert_eq!(&reply[1..], &[bulk("a"), bulk("b")]);
    // A plain GET picks the first sibling.
    assert_eq!(client.send("GET k").await, bulk("a"));
    let Value::Bulk(context) = &reply[0] else { panic!("no context") };
    let context = String::from_utf8(context.clone()).expect("base64url is text");
    let written = client.send(&format!("KEEL.PUT k c CONTEXT {context} CONSISTENCY quorum")).await;
    assert!(matches!(written, Value::Bulk(_)));
    let Value::Array(reply) = client.send("KEEL.GET k").await else { panic!("not an array") };
    assert_eq!(&reply[1..], &[bulk("c")]);
    assert!(matches!(client.send("KEEL.DEL k").await, Value::Bulk(_)));
    let Value::Array(reply) = client.send("KEEL.GET k").await else { panic!("not an array") };
    assert_eq!(reply.len(), 1, "only the context is left: {reply:?}");
}

#[tokio::test]
async fn keel_command_options_are_checked() {
    let mut client = Client::new();
    let reply = client.send("KEEL.GET k CONSISTENCY most").await;
    assert!(error_text(&reply).starts_with("ERR consistency must be one, quorum, all"));
    let reply = client.send("KEEL.PUT k v CONTEXT !!!").await;
    assert!(error_text(&reply).starts_with("ERR causal context is not valid: not base64url"));
    assert_eq!(error_text(&client.send("KEEL.GET k CONTEXT AAAAAAAAAAE").await), "ERR syntax error");
    assert_eq!(error_text(&client.send("KEEL.PUT k v CONSISTENCY").await), "ERR syntax error");
    let twice = client.send("KEEL.PUT k v CONSISTENCY one CONSISTENCY all").await;
    assert_eq!(error_text(&twice), "ERR syntax error");
    assert_eq!(error_text(&client.send("KEEL.PUT k v STRICT maybe").await), "ERR STRICT is true or false");
    assert_eq!(error_text(&client.send("KEEL.GET k STRICT true").await), "ERR syntax error");
    assert!(matches!(client.send("KEEL.PUT k v STRICT true CONSISTENCY all").await, Value::Bulk(_)));
    assert!(matches!(client.send("KEEL.DEL k STRICT false").await, Value::Bulk(_)));
}

#[tokio::test]
async fn node_errors_map_to_codes() {
    let backend = MemoryBackend::with_limits(4, 8);
    let mut client = Client::with_backend(backend.clone());
    let reply = client.send("SET toolong v").await;
    assert_eq!(error_text(&reply), "ERR key of 7 bytes exceeds the limit of 4 bytes; nothing was written");
    let reply = client.send("SET k 123456789").await;
    assert!(error_text(&reply).starts_with("ERR value of 9 bytes exceeds the limit of 8 bytes"));
    let cases = [
        (ClientError::Unavailable { needed: 2, reachable: 1 }, "UNAVAILABLE 2 replicas needed"),
        (ClientError::Timeout { acknowledged: 1, needed: 2 }, "TIMEOUT timed out after 1 of 2"),
        (ClientError::CopiesUnreadable { failed: 1, needed: 3 }, "UNAVAILABLE 1 replicas could not read"),
        (ClientError::Overloaded { what: "queue".into(), limit: 3 }, "OVERLOADED node is overloaded"),
        (ClientError::SiblingsTooMany { count: 9, max: 8 }, "ERR key has 9 siblings"),
        (ClientError::StorageFailed { reason: "sync".into() }, "MISCONF node storage failed"),
        (ClientError::Damaged { failed: 2 }, "CORRUPT the key is damaged: 2 of 2 replicas"),
    ];
    for (failure, prefix) in cases {
        backend.fail_with(Some(failure));
        let reply = client.send("GET k").await;
        assert!(error_text(&reply).starts_with(prefix), "{reply:?}");
    }
    let reply = client.send("MSET a 1 b 2").await;
    assert!(error_text(&reply).ends_with("(MSET stored 0 of 2 keys)"), "{reply:?}");
}

#[tokio::test]
async fn unknown_commands_and_arity_use_redis_wording() {
    let mut client = Client::new();
    let reply = client.send("FOO a b").await;
    assert_eq!(error_text(&reply), "ERR unknown command 'FOO', with args beginning with: 'a' 'b' ");
    assert_eq!(error_text(&client.send("GET").await), "ERR wrong number of arguments for 'get' command");
    assert_eq!(error_text(&client.send("GET a b").await), "ERR wrong number of arguments for 'get' command");
    let long = format!("FOO {}", "x".repeat(300));
    let reply = client.send(&long).await;
    assert_eq!(
        error_text(&reply).len(),
        "ERR unknown command 'FOO', with args beginning with: ''".len() + 128 + 1
    );
}

#[tokio::test]
async fn connection_commands() {
    let mut client = Client::new();
    assert_eq!(client.send("PING").await, Value::Simple("PONG".into()));
    assert_eq!(client.send("PING hello").await, bulk("hello"));
    assert_eq!(client.send("ECHO \"a b\"").await, bulk("a b"));
    assert_eq!(client.send("SELECT 0").await, Value::ok());
    assert_eq!(error_text(&client.send("SELECT 1").await), "ERR DB index is out of range");
    assert_eq!(error_text(&client.send("SELECT x").await), "ERR value is not an integer or out of range");
    let quit = execute(&client.shared, &mut client.session, Command::new(vec![b"QUIT".to_vec()])).await;
    assert_eq!(quit, Answer { value: Value::ok(), close: true });
    assert!(error_text(&client.send("AUTH secret").await).starts_with("ERR AUTH <password> called without"));
}

#[tokio::test]
async fn hello_switches_protocol() {
    let mut client = Client::new();
    let Value::Map(fields) = client.send("HELLO 3 SETNAME app").await else { panic!("not a map") };
    assert!(fields.contains(&(bulk("proto"), Value::Integer(3))));
    assert!(fields.contains(&(bulk("server"), bulk("redis"))));
    assert_eq!(client.session.version, Version::Resp3);
    assert_eq!(client.send("CLIENT GETNAME").await, bulk("app"));
    assert_eq!(error_text(&client.send("HELLO 4").await), "NOPROTO unsupported protocol version");
    let auth = client.send("HELLO 3 AUTH default secret").await;
    assert!(error_text(&auth).starts_with("ERR keel does not support AUTH"));
    assert_eq!(client.session.version, Version::Resp3);
    client.send("HELLO 2").await;
    assert_eq!(client.session.version, Version::Resp2);
    assert_eq!(error_text(&client.send("HELLO 3 BOGUS").await), "ERR Syntax error in HELLO option 'BOGUS'");
}

#[tokio::test]
async fn client_subcommands() {
    let mut client = Client::new();
    assert_eq!(client.send("CLIENT GETNAME").await, Value::Null);
    assert_eq!(client.send("CLIENT SETNAME worker-1").await, Value::ok());
    assert_eq!(client.send("CLIENT GETNAME").await, bulk("worker-1"));
    let reply = client.send("CLIENT SETNAME \"a b\"").await;
    assert_eq!(error_text(&reply), "ERR Client names cannot contain spaces, newlines or special characters.");
    assert_eq!(client.send("CLIENT ID").await, Value::Integer(client.session.id as i64));
    assert_eq!(client.send("CLIENT SETINFO lib-name redis-py").await, Value::ok());
    assert_eq!(client.send("CLIENT SETINFO LIB-VER 5.0.1").await, Value::ok());
    assert_eq!(error_text(&client.send("CLIENT SETINFO color red").await), "ERR Unrecognized option 'color'");
    let Value::Verbatim { text, .. } = client.send("CLIENT INFO").await else { panic!("not text") };
    let text = String::from_utf8(text).expect("text");
    assert!(
        text.contains("name=worker-1") && text.contains("lib-name=redis-py") && text.ends_with('\n'),
        "{text}"
    );
    let reply = client.send("CLIENT KILL x").await;
    assert_eq!(error_text(&reply), "ERR unknown subcommand 'KILL'. Try CLIENT HELP.");
    let reply = client.send("CLIENT SETNAME").await;
    assert_eq!(error_text(&reply), "ERR wrong number of arguments for 'client|setname' command");
}

#[tokio::test]
async fn server_description_commands() {
    let mut client = Client::new();
    client.send("SET a 1").await;
    let Value::Verbatim { text, .. } = client.send("INFO").await else { panic!("not text") };
    let text = String::from_utf8(text).expect("text");
    for needle in [
        "# Server\r\n",
        "redis_version:",
        "# Clients\r\n",
        "# Memory\r\n",
        "# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
    let Value::Verbatim { text, .. } = client.send("INFO keyspace").await else { panic!("not text") };
    assert!(!String::from_utf8_lossy(&text).contains("# Server"));
    assert_eq!(client.send("DBSIZE").await, Value::Integer(1));
    let reply = client.send("CONFIG GET save appendonly").await;
    let expected = Value::Map(vec![(bulk("appendonly"), bulk("yes")), (bulk("save"), bulk(""))]);
    assert_eq!(reply, expected);
    let Value::Map(all) = client.send("CONFIG GET *").await else { panic!("not a map") };
    assert!(all.len() > 5);
    assert!(
        error_text(&client.send("CONFIG SET save x").await)
            .starts_with("ERR keel does not support CONFIG SET")
    );
    assert_eq!(client.send("COMMAND COUNT").await, Value::Integer(COMMANDS.len() as i64));
    let Value::Array(infos) = client.send("COMMAND INFO get nosuch lpush").await else {
        panic!("not an array")
    };
    assert_eq!((&infos[1], &infos[2]), (&Value::Null, &Value::Null), "refused commands are not described");
    let Value::Array(get) = &infos[0] else { panic!("not an array") };
    assert_eq!(&get[..2], &[bulk("get"), Value::Integer(2)]);
    let Value::Map(docs) = client.send("COMMAND DOCS").await else { panic!("not a map") };
    assert_eq!(docs.len(), COMMANDS.len());
    let Value::Array(all) = client.send("COMMAND").await else { panic!("not an array") };
    assert_eq!(all.len(), COMMANDS.len());
    // Every command listed runs: none answers with keel's refusal.
    let Value::Array(names) = client.send("COMMAND LIST").await else { panic!("not an array") };
    assert!(names.len() > 20);
    for name in names {
        let Value::Bulk(name) = name else { panic!("not a name") };
        let name = String::from_utf8(name).expect("text");
        let reply = client.send(&format!("{name} k v")).await;
        let refused = matches!(&reply, Value::Error(text) if text.starts_with("ERR keel does not support"));
        assert!(!refused, "{name} is listed but refused: {reply:?}");
        client.session.in_refused_multi = false;
    }
}

#[tokio::test]
async fn known_redis_commands_keel_does_not_run_say_why() {
    let mut client = Client::new();
    for (line, expected) in [
        ("LPUSH k v", "ERR keel does not support LPUSH: keel stores strings; lists are not supported"),
        ("incr k", "ERR keel does not support INCR: counters need CRDT counters, not implemented yet"),
        ("DECRBY k 2", "ERR keel does not support DECRBY: counters need CRDT counters"),
        ("EXPIRE k 10", "ERR keel does not support EXPIRE: keys cannot expire yet"),
        ("SETEX k 10 v", "ERR keel does not support SETEX: keys cannot expire yet"),
        ("TTL k", "ERR keel does not support TTL: keys cannot expire yet"),
        ("SETNX k v", "ERR keel does not support SETNX: conditional writes need compare-and-set"),
        ("APPEND k v", "ERR keel does not support APPEND: keel reads and writes whole values"),
        ("GETRANGE k 0 1", "ERR keel does not support GETRANGE: keel reads and writes whole values"),
        ("HSET k f v", "ERR keel does not support HSET: keel stores strings; hashes are not supported"),
        ("SADD k m", "ERR keel does not support SADD: keel stores strings; sets are not supported"),
        ("ZADD k 1 m", "ERR keel does not support ZADD: keel stores strings; sorted sets are not supported"),
        ("XADD k * f v", "ERR keel does not support XADD: keel stores strings; streams are not supported"),
        ("SUBSCRIBE news", "ERR keel does not support SUBSCRIBE: keel has no publish/subscribe"),
        ("EVAL \"return 1\" 0", "ERR keel does not support EVAL: keel runs no server-side scripts"),
        ("FLUSHALL", "ERR keel does not support FLUSHALL: deleting every key"),
        ("FLUSHDB", "ERR keel does not support FLUSHDB: deleting every key"),
        ("SCAN 0", "ERR keel does not support SCAN: key scans are not implemented yet"),
        ("KEYS *", "ERR keel does not support KEYS: key scans are not implemented yet"),
        ("RENAME a b", "ERR keel does not support RENAME: moving or copying values between keys"),
        ("CLUSTER INFO", "ERR keel does not support CLUSTER: keel replicates every key"),
        ("ACL WHOAMI", "ERR keel does not support ACL: keel has no users or passwords yet"),
        ("WATCH a", "ERR keel does not support WATCH: transactions are not implemented"),
    ] {
        let reply = client.send(line).await;
        assert!(error_text(&reply).starts_with(expected), "{line}: {reply:?}");
    }
    // The arity of a refused command does not matter: it is refused whole.
    assert!(error_text(&client.send("LPUSH").await).starts_with("ERR keel does not support LPUSH"));
    assert_eq!(client.send("GET k").await, Value::Null, "no refused command wrote anything");
}

#[tokio::test]
async fn type_and_strlen_describe_the_value_get_returns() {
    let mut client = Client::new();
    assert_eq!(client.send("TYPE k").await, Value::Simple("none".into()));
    assert_eq!(client.send("STRLEN k").await, Value::Integer(0));
    client.send("SET k hello").await;
    assert_eq!(client.send("TYPE k").await, Value::Simple("string".into()));
    assert_eq!(client.send("STRLEN k").await, Value::Integer(5));
    client.send("SET k \"\"").await;
    assert_eq!(client.send("TYPE k").await, Value::Simple("string".into()), "an empty value is a value");
    assert_eq!(client.send("STRLEN k").await, Value::Integer(0));
    // With siblings, the first: the one GET returns.
    client.send("KEEL.PUT s abc CONTEXT \"\"").await;
    client.send("KEEL.PUT s abcdef CONTEXT \"\"").await;
    let Value::Bulk(first) = client.send("GET s").await else { panic!("no value") };
    assert_eq!(client.send("STRLEN s").await, Value::Integer(first.len() as i64));
    client.send("DEL k").await;
    assert_eq!(client.send("TYPE k").await, Value::Simple("none".into()));
    assert_eq!(error_text(&client.send("TYPE").await), "ERR wrong number of arguments for 'type' command");
}

#[tokio::test]
async fn getset_getdel_and_unlink_are_set_get_and_del() {
    let mut client = Client::new();
    assert_eq!(client.send("GETSET k v1").await, Value::Null);
    assert_eq!(client.send("GETSET k v2").await, bulk("v1"));
    assert_eq!(client.send("GET k").await, bulk("v2"));
    assert_eq!(client.send("GETDEL k").await, bulk("v2"));
    assert_eq!(client.send("GET k").await, Value::Null);
    assert_eq!(client.send("GETDEL k").await, Value::Null);
    client.send("MSET a 1 b 2").await;
    assert_eq!(client.send("UNLINK a b missing").await, Value::Integer(2));
    assert_eq!(client.send("EXISTS a b").await, Value::Integer(0));
}

#[tokio::test]
async fn mget_answers_each_key_on_its_own() {
    let backend = MemoryBackend::new();
    let mut client = Client::with_backend(backend.clone());
    client.send("MSET a 1 damaged x far 3").await;
    backend.fail_key(b"damaged", Some(ClientError::Damaged { failed: 3 }));
    backend.fail_key(b"far", Some(ClientError::Unavailable { needed: 2, reachable: 1 }));
    let Value::Array(reply) = client.send("MGET a damaged missing far a").await else {
        panic!("not an array")
    };
    assert_eq!(reply.len(), 5);
    assert_eq!((&reply[0], &reply[2], &reply[4]), (&bulk("1"), &Value::Null, &bulk("1")));
    assert!(error_text(&reply[1]).starts_with("CORRUPT the key is damaged"), "{reply:?}");
    assert!(error_text(&reply[3]).starts_with("UNAVAILABLE 2 replicas needed"), "{reply:?}");
    // A per-element error is encoded inside the array, as Redis encodes EXEC's.
    let bytes = Value::Array(reply).to_bytes(Version::Resp2);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("*5\r\n$1\r\n1\r\n-CORRUPT "), "{text}");
    // Commands answered with one number still fail whole.
    assert!(error_text(&client.send("EXISTS a damaged").await).starts_with("CORRUPT"));
}

#[tokio::test]
async fn empty_keys_are_refused_by_the_node_rule() {
    let mut client = Client::new();
    let refusal = "ERR the key is empty; keys are 1 to 8192 bytes; nothing was written";
    assert_eq!(error_text(&client.send("SET \"\" v").await), refusal);
    assert_eq!(error_text(&client.send("GET \"\"").await), refusal);
    let Value::Array(reply) = client.send("MGET a \"\"").await else { panic!("not an array") };
    assert_eq!((&reply[0], error_text(&reply[1])), (&Value::Null, refusal));
    let reply = client.send("MSET \"\" v a 1").await;
    assert_eq!(error_text(&reply), format!("{refusal} (MSET stored 1 of 2 keys)"));
    assert_eq!(client.send("GET a").await, bulk("1"));
}

#[tokio::test]
async fn commands_are_counted() {
    let mut client = Client::new();
    client.send("GET a").await;
    client.send("NOPE").await;
    client.send("LPUSH a b").await;
    let text = client.shared.handle.metrics().render();
    assert!(text.contains("keel_resp_commands_total{command=\"lpush\",outcome=\"error\"} 1"), "{text}");
    assert!(text.contains("keel_resp_commands_total{command=\"get\",outcome=\"ok\"} 1"), "{text}");
    assert!(text.contains("keel_resp_commands_total{command=\"unknown\",outcome=\"error\"} 1"));
    assert!(text.contains("keel_requests_total{op=\"get\",outcome=\"not_found\"} 1"));
}

#[tokio::test]
async fn transactions_are_refused_without_running_anything() {
    let mut client = Client::new();
    assert!(error_text(&client.send("MULTI").await).starts_with("ERR keel does not support MULTI"));
    assert!(error_text(&client.send("SET a 1").await).starts_with("ERR not run"));
    assert!(error_text(&client.send("NOSUCH").await).starts_with("ERR not run"));
    let exec = client.send("EXEC").await;
    assert_eq!(error_text(&exec), "EXECABORT Transaction discarded because of previous errors.");
    assert_eq!(client.send("GET a").await, Value::Null);
    client.send("MULTI").await;
    assert_eq!(client.send("DISCARD").await, Value::ok());
    let exec = client.send("EXEC").await;
    assert!(error_text(&exec).starts_with("ERR keel does not support EXEC: transactions"), "{exec:?}");
    assert!(error_text(&client.send("WATCH a").await).starts_with("ERR keel does not support WATCH"));
    assert_eq!(client.send("SET a 2").await, Value::ok(), "outside MULTI, commands run again");
}
