//! The HTTP API against the in-memory backend: handlers through the router,
//! limits and shutdown through a real loopback server.

use axum::body::Body;
use axum::http::{Method, Request as HttpRequest, Response};
use base64::Engine as _;
use keel_core::client::ClientError;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt as _;

use super::*;
use crate::service::testing::{MemoryBackend, StaticIntrospect};

struct Api {
    router: Router,
    backend: MemoryBackend,
}

impl Api {
    fn new() -> Api {
        Api::with(MemoryBackend::new(), HttpLimits::default())
    }

    fn with(backend: MemoryBackend, limits: HttpLimits) -> Api {
        let handle = backend.spawn(64);
        let router = router(handle, StaticIntrospect::single(Some(backend.clone())), limits);
        Api { router, backend }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut request = HttpRequest::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.router.clone().oneshot(request.body(body.into()).expect("request")).await;
        Reply::read(response.expect("infallible")).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, &[], Body::empty()).await
    }

    async fn put(&self, uri: &str, body: &'static [u8], context: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> =
            context.map(|context| (CONTEXT_HEADER, context)).into_iter().collect();
        self.send(Method::PUT, uri, &headers, body).await
    }

    async fn post(&self, uri: &str, body: Json) -> Reply {
        let headers = [("content-type", "application/json")];
        self.send(Method::POST, uri, &headers, body.to_string()).await
    }
}

struct Reply {
    status: u16,
    context: Option<String>,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    async fn read(response: Response<Body>) -> Reply {
        let status = response.status().as_u16();
        let header =
            |name: &str| response.headers().get(name).map(|value| value.to_str().expect("ascii").to_owned());
        let context = header(CONTEXT_HEADER);
        let content_type = header("content-type").unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body").to_vec();
        Reply { status, context, content_type, body }
    }

    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().expect("an error code").to_owned()
    }
}

#[tokio::test]
async fn put_get_delete_round_trip() {
    let api = Api::new();
    let missing = api.get("/v1/kv/greeting").await;
    assert_eq!((missing.status, missing.error_code().as_str()), (404, "not_found"));
    assert!(missing.context.is_some());
    let put = api.put("/v1/kv/greeting", b"hello", None).await;
    assert_eq!(put.status, 204);
    let context = put.context.expect("a context");
    let found = api.get("/v1/kv/greeting?r=1").await;
    assert_eq!((found.status, found.body.as_slice()), (200, b"hello".as_slice()));
    assert_eq!(found.content_type, "application/octet-stream");
    assert_eq!(found.context.as_deref(), Some(context.as_str()));
    let deleted = api.send(Method::DELETE, "/v1/kv/greeting?w=all", &[], Body::empty()).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(api.get("/v1/kv/greeting").await.status, 404);
    // Deleting an absent key is not an error.
    assert_eq!(api.send(Method::DELETE, "/v1/kv/greeting", &[], Body::empty()).await.status, 204);
}

#[tokio::test]
async fn siblings_come_back_as_multiple_choices() {
    let api = Api::new();
    // An empty context makes each write a sibling of what is stored.
    api.put("/v1/kv/k", b"a", Some("")).await;
    api.put("/v1/kv/k", &[0xff, 0x00], Some("")).await;
    let reply = api.get("/v1/kv/k").await;
    assert_eq!(reply.status, 300);
    let body = reply.json();
    assert_eq!(body["siblings"], json!(["YQ==", "/wA="]));
    let context = body["context"].as_str().expect("context").to_owned();
    assert_eq!(reply.context.as_deref(), Some(context.as_str()));
    assert_eq!(api.put("/v1/kv/k", b"merged", Some(&context)).await.status, 204);
    let reply = api.get("/v1/kv/k").await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, b"merged".as_slice()));
}

#[tokio::test]
async fn keys_are_percent_decoded_bytes() {
    let api = Api::new();
    assert_eq!(api.put("/v1/kv/a%2Fb%00%FF/c", b"v", None).await.status, 204);
    let raw = api.backend.get(keel_core::client::Get {
        key: b"a/b\x00\xff/c".to_vec(),
        read: keel_core::client::Consistency::One,
    });
    assert!(raw.as_ref().is_ok_and(|read| read.is_found()), "{raw:?}");
    assert_eq!(api.get("/v1/kv/a%2fb%00%ff/c").await.status, 200);
    assert_eq!(api.get("/v1/kv/bad%4").await.error_code(), "bad_key");
}

#[tokio::test]
async fn an_empty_key_is_refused_as_on_every_interface() {
    let api = Api::new();
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let reply = api.send(method.clone(), "/v1/kv/", &[], "v").await;
        assert_eq!((reply.status, reply.error_code().as_str()), (400, "key_empty"), "{method}");
        let message = reply.json()["error"]["message"].as_str().expect("message").to_owned();
        assert!(message.starts_with("the key is empty"), "{message}");
    }
    let reply = api
        .post("/v1/batch/put", json!({"items": [{"key": "", "value": "1"}, {"key": "a", "value": "2"}]}))
        .await;
    let results = reply.json()["results"].clone();
    assert_eq!((reply.status, &results[0]["error"]["code"]), (200, &json!("key_empty")));
    assert_eq!(results[1]["status"], "written");
    let reply = api.post("/v1/batch/get", json!({"keys": ["", "YQ=="], "encoding": "base64"})).await;
    let results = reply.json()["results"].clone();
    assert_eq!(results[0]["error"]["code"], "key_empty");
    assert_eq!(results[1]["values"], json!(["Mg=="]));
    assert_eq!(api.backend.live_keys(), 1, "only the non-empty key was written");
}

#[tokio::test]
async fn bad_queries_and_contexts_are_400() {
    let api = Api::new();
    for uri in ["/v1/kv/k?r=most", "/v1/kv/k?w=1", "/v1/kv/k?r=1&consistency=all", "/v1/kv/k?consistancy=one"]
    {
        let reply = api.get(uri).await;
        assert_eq!(reply.status, 400, "{uri}");
    }
    assert_eq!(api.get("/v1/kv/k?r=0").await.error_code(), "bad_consistency");
    let reply = api.put("/v1/kv/k", b"v", Some("not*base64")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "bad_context"));
    let reply = api.put("/v1/kv/k", b"v", Some("AAE")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "bad_context"));
}

#[tokio::test]
async fn strict_applies_to_writes_and_local_to_reads() {
    let api = Api::new();
    for uri in ["/v1/kv/k?strict=true", "/v1/kv/k?local=maybe", "/v1/kv/k?local=true&r=one"] {
        let reply = api.get(uri).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (400, "bad_query"), "{uri}");
    }
    for uri in ["/v1/kv/k?strict=maybe", "/v1/kv/k?local=true"] {
        let reply = api.put(uri, b"v", None).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (400, "bad_query"), "{uri}");
    }
    assert_eq!(api.put("/v1/kv/k?w=all&strict=true", b"v", None).await.status, 204);
    let reply = api.get("/v1/kv/k?local=true").await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, b"v".as_slice()));
}

#[tokio::test]
async fn limits_are_413() {
    let limits = HttpLimits { value_bytes_max: 8, batch_items_max: 2, ..HttpLimits::default() };
    let api = Api::with(MemoryBackend::with_limits(4, 8), limits);
    let reply = api.put("/v1/kv/k", b"123456789", None).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (413, "value_too_large"));
    let reply = api.put("/v1/kv/toolong", b"v", None).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (413, "key_too_large"));
    let reply = api.post("/v1/batch/get", json!({"keys": ["a", "b", "c"]})).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (413, "batch_too_large"));
}

#[tokio::test]
async fn node_errors_map_to_statuses() {
    let api = Api::new();
    let cases = [
        (ClientError::Unavailable { needed: 2, reachable: 1 }, 503, "unavailable"),
        (ClientError::Timeout { acknowledged: 1, needed: 2 }, 504, "timeout"),
        (ClientError::CopiesUnreadable { failed: 1, needed: 3 }, 503, "copies_unreadable"),
        (ClientError::Overloaded { what: "queue".into(), limit: 1 }, 503, "overloaded"),
        (ClientError::StorageFailed { reason: "sync".into() }, 500, "storage_failed"),
        (ClientError::SiblingsTooMany { count: 9, max: 8 }, 409, "siblings_too_many"),
        (ClientError::BadConsistency { asked: 5, replicas: 3 }, 400, "bad_consistency"),
        (ClientError::Damaged { failed: 3 }, 500, "damaged"),
        (ClientError::KeyEmpty { max: 8 }, 400, "key_empty"),
    ];
    for (failure, status, code) in cases {
        api.backend.fail_with(Some(failure));
        let reply = api.get("/v1/kv/k").await;
        assert_eq!((reply.status, reply.error_code().as_str()), (status, code));
        let message = reply.json()["error"]["message"].as_str().expect("message").to_owned();
        assert!(!message.is_empty());
    }
}

#[tokio::test]
async fn batches_answer_item_by_item() {
    let api = Api::new();
    let put =
        json!({"items": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}], "consistency": "all"});
    let reply = api.post("/v1/batch/put", put).await;
    assert_eq!(reply.status, 200);
    let results = reply.json()["results"].clone();
    assert_eq!(results[0]["status"], "written");
    assert!(results[1]["context"].is_string());
    let reply = api.post("/v1/batch/get", json!({"keys": ["b", "missing", "a"]})).await;
    let results = reply.json()["results"].clone();
    assert_eq!(
        results[0],
        json!({"key": "b", "status": "found", "values": ["2"], "context": results[0]["context"]})
    );
    assert_eq!(results[1]["status"], "not_found");
    assert_eq!(results[2]["values"], json!(["1"]));
    let binary = base64::engine::general_purpose::STANDARD.encode([0xffu8, 0]);
    let put = json!({"items": [{"key": "AA==", "value": binary}], "encoding": "base64"});
    assert_eq!(api.post("/v1/batch/put", put).await.status, 200);
    let reply = api.post("/v1/batch/get", json!({"keys": ["AA=="], "encoding": "base64"})).await;
    assert_eq!(reply.json()["results"][0]["values"], json!([binary]));
    let reply = api.post("/v1/batch/get", json!({"keys": ["\u{0}"]})).await;
    assert_eq!(reply.json()["results"][0]["error"]["code"], "not_utf8");
}

#[tokio::test]
async fn a_failing_key_fails_only_its_own_item() {
    let api = Api::new();
    let put = json!({"items": [{"key": "a", "value": "1"}, {"key": "bad", "value": "2"}, {"key": "far", "value": "3"}]});
    assert_eq!(api.post("/v1/batch/put", put).await.status, 200);
    api.backend.fail_key(b"bad", Some(ClientError::Damaged { failed: 3 }));
    api.backend.fail_key(b"far", Some(ClientError::Timeout { acknowledged: 1, needed: 2 }));
    let reply = api.post("/v1/batch/get", json!({"keys": ["a", "bad", "missing", "far"]})).await;
    assert_eq!(reply.status, 200);
    let results = reply.json()["results"].clone();
    assert_eq!((&results[0]["status"], &results[0]["values"]), (&json!("found"), &json!(["1"])));
    assert_eq!(results[1]["status"], "error");
    assert_eq!(results[1]["error"]["code"], "damaged");
    assert!(results[1]["error"]["message"].as_str().expect("message").starts_with("the key is damaged"));
    assert!(results[1].get("context").is_none() && results[1].get("values").is_none());
    assert_eq!(results[2]["status"], "not_found");
    assert_eq!(results[3]["error"]["code"], "timeout");
    // A batch put is per item too: the failing key's item, and only it.
    let put = json!({"items": [{"key": "bad", "value": "4"}, {"key": "new", "value": "5"}]});
    let results = api.post("/v1/batch/put", put).await.json()["results"].clone();
    assert_eq!((&results[0]["error"]["code"], &results[1]["status"]), (&json!("damaged"), &json!("written")));
}

#[tokio::test]
async fn malformed_batches_are_400() {
    let api = Api::new();
    let headers = [("content-type", "application/json")];
    for body in
        ["{", "[]", "{\"keys\": [1]}", "{\"keys\": [], \"extra\": 1}", "{\"keys\":[],\"encoding\":\"hex\"}"]
    {
        let reply = api.send(Method::POST, "/v1/batch/get", &headers, body).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (400, "bad_json"), "{body}");
    }
    let reply = api.post("/v1/batch/get", json!({"keys": ["%%%"], "encoding": "base64"})).await;
    assert_eq!(reply.error_code(), "bad_base64");
    let reply =
        api.post("/v1/batch/put", json!({"items": [{"key": "a", "value": "v", "context": "!"}]})).await;
    assert_eq!(reply.error_code(), "bad_context");
    assert_eq!(api.post("/v1/batch/get", json!({"keys": []})).await.json(), json!({"results": []}));
}

#[tokio::test]
async fn monitoring_endpoints() {
    let api = Api::new();
    api.put("/v1/kv/a", b"1", None).await;
    let health = api.get("/health").await;
    assert_eq!((health.status, health.json()), (200, json!({"status": "ok"})));
    let status = api.get("/v1/status").await.json();
    assert_eq!((status["node"].as_str(), status["keys_estimate"].as_u64()), (Some("n1"), Some(1)));
    assert!(status["version"].is_string());
    let ring = api.get("/v1/ring").await.json();
    assert_eq!(ring["ownership"][0]["fraction"], json!(1.0));
    let metrics = api.get("/metrics").await;
    assert!(metrics.content_type.starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(metrics.body).expect("text");
    assert!(text.contains("keel_requests_total{op=\"put\",outcome=\"written\"} 1"), "{text}");
    assert!(text.contains("keel_request_duration_seconds{op=\"put\",quantile=\"0.999\"}"));
    assert!(text.contains("keel_http_responses_total{route=\"kv\",status=\"204\"} 1"));
    assert!(text.contains("keel_cluster_members{state=\"up\"} 1"));
    let reply = api.get("/nowhere").await;
    assert_eq!((reply.status, reply.error_code().as_str()), (404, "no_route"));
    let reply = api.send(Method::POST, "/v1/kv/a", &[], Body::empty()).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (405, "method_not_allowed"));
}

async fn start(limits: HttpLimits) -> (std::net::SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let backend = MemoryBackend::new();
    let handle = backend.spawn(64);
    let shutdown = CancellationToken::new();
    let introspect = StaticIntrospect::single(None);
    let serve = serve_http(listener, handle, introspect, limits, shutdown.clone());
    let task = tokio::spawn(async move { serve.await.expect("serve") });
    (address, shutdown, task)
}

/// One HTTP/1.1 exchange on a raw socket; the response text up to `close`.
async fn raw(stream: &mut tokio::net::TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    read.expect("closed in time").expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn connections_over_the_limit_get_503_and_shutdown_is_graceful() {
    let (address, shutdown, task) = start(HttpLimits { connections_max: 1, ..HttpLimits::default() }).await;
    let mut first = tokio::net::TcpStream::connect(address).await.expect("connect");
    first.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let mut head = [0u8; 12];
    first.read_exact(&mut head).await.expect("first answered");
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut second = tokio::net::TcpStream::connect(address).await.expect("connect");
    let refused = raw(&mut second, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.ends_with(r#""message":"too many connections to this node; retry later"}}"#),
        "{refused}"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").expect("join");
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}

/// Sends a request head and returns the first response head the server sends.
async fn first_head(stream: &mut tokio::net::TcpStream, head: &str) -> String {
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    while !response.windows(4).any(|window| window == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await;
        match read.expect("an answer in time").expect("read") {
            0 => break,
            count => response.extend_from_slice(&chunk[..count]),
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn a_body_announced_over_the_limit_gets_413_before_100_continue() {
    let limits = HttpLimits { value_bytes_max: 8, batch_bytes_max: 64, ..HttpLimits::default() };
    let (address, shutdown, _task) = start(limits).await;
    let expect = |path: &str, length: usize| {
        format!("PUT {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\nexpect: 100-continue\r\n\r\n")
    };
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = first_head(&mut stream, &expect("/v1/kv/k", 9)).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // Within the limit the client is told to go on, and the write happens.
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = first_head(&mut stream, &expect("/v1/kv/k", 8)).await;
    assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head}");
    let head = first_head(&mut stream, "12345678").await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let batch = expect("/v1/batch/put", 65).replace("PUT", "POST");
    let reply = raw(&mut stream, &batch.replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n")).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"code\":\"batch_too_large\""), "{reply}");
    // Without Expect, too: the announced length is enough to refuse.
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let put = "PUT /v1/kv/k HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 9\r\n\r\n123456789";
    let reply = raw(&mut stream, put).await;
    assert!(reply.starts_with("HTTP/1.1 413") && reply.contains("value_too_large"), "{reply}");
    shutdown.cancel();
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let (address, shutdown, _task) =
        start(HttpLimits { idle_timeout: Duration::from_millis(50), ..HttpLimits::default() }).await;
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut byte = [0u8; 1];
    let read =
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)));
    shutdown.cancel();
}

#[tokio::test]
async fn a_delete_without_a_context_deletes_every_sibling_a_read_sees() {
    let api = Api::new();
    api.put("/v1/kv/k", b"a", Some("")).await;
    api.put("/v1/kv/k", b"b", Some("")).await;
    assert_eq!(api.get("/v1/kv/k").await.status, 300);
    let deleted = api.send(Method::DELETE, "/v1/kv/k", &[], Body::empty()).await;
    assert_eq!(deleted.status, 204);
    let missing = api.get("/v1/kv/k").await;
    assert_eq!(missing.status, 404);
    assert_eq!(deleted.context, missing.context, "the tombstone's context is what a read now sees");
    // With a context, exactly what it covers: a value written after it stays.
    let context = api.put("/v1/kv/k", b"c", None).await.context.expect("a context");
    api.put("/v1/kv/k", b"d", Some("")).await;
    let headers = [(CONTEXT_HEADER, context.as_str())];
    assert_eq!(api.send(Method::DELETE, "/v1/kv/k", &headers, Body::empty()).await.status, 204);
    assert_eq!(api.get("/v1/kv/k").await.body, b"d");
}
