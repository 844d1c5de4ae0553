//! An in-memory stand-in for the node driver, so servers can be tested (and
//! tried with real clients) without a cluster.
//!
//! It keeps the semantics servers depend on: a write without a context
//! replaces what is stored, a write with the empty context becomes a
//! sibling, a write with the context of a read replaces what that read saw,
//! deletes with a context remove what it covers, and the node's key rules
//! (not empty, not over the limit) and value limit are enforced. Versions are a single counter per key, which is exact
//! for one node and nothing more. It does not replicate or persist anything.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use keel_core::client::{ClientError, Context, Reply, Request};
use tokio::sync::mpsc;

use super::{Call, Handle, Introspect, Member, MemberState, NodeStatus, Ownership, RingView, Token};

/// Shared state of the in-memory backend; clones see the same keys.
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    keys: BTreeMap<Vec<u8>, Entry>,
    key_bytes_max: u64,
    value_bytes_max: u64,
    /// When set, every request fails with this error.
    failure: Option<ClientError>,
    /// Requests for these keys fail with the error given, reads and writes
    /// alike, as they would on a node whose replicas of those keys fail.
    key_failures: BTreeMap<Vec<u8>, ClientError>,
}

#[derive(Debug, Default)]
struct Entry {
    /// The highest version ever written to the key.
    counter: u64,
    /// Live values with the version that wrote them, oldest first.
    siblings: Vec<(u64, Vec<u8>)>,
}

impl MemoryBackend {
    /// A backend with keel's default limits: keys up to 8 KiB, values up to 16 MiB.
    pub fn new() -> MemoryBackend {
        MemoryBackend::with_limits(8 * 1024, 16 * 1024 * 1024)
    }

    pub fn with_limits(key_bytes_max: u64, value_bytes_max: u64) -> MemoryBackend {
        let state = State {
            keys: BTreeMap::new(),
            key_bytes_max,
            value_bytes_max,
            failure: None,
            key_failures: BTreeMap::new(),
        };
        MemoryBackend { state: Arc::new(Mutex::new(state)) }
    }

    /// Spawns a task serving a new handle's calls; it stops when every
    /// handle is dropped.
    pub fn spawn(&self, capacity: usize) -> Handle {
        let (handle, receiver) = Handle::channel(capacity);
        tokio::spawn(self.clone().serve(receiver));
        handle
    }

    pub async fn serve(self, mut receiver: mpsc::Receiver<Call>) {
        while let Some(call) = receiver.recv().await {
            let reply = self.apply(call.request);
            let _ = call.reply.send(reply);
        }
    }

    /// Makes every later request fail with `failure`, or succeed again with `None`.
    pub fn fail_with(&self, failure: Option<ClientError>) {
        self.lock().failure = failure;
    }

    /// Makes every later request for `key` fail with `failure`, or succeed
    /// again with `None`.
    pub fn fail_key(&self, key: &[u8], failure: Option<ClientError>) {
        let mut state = self.lock();
        match failure {
            Some(failure) => state.key_failures.insert(key.to_vec(), failure),
            None => state.key_failures.remove(key),
        };
    }

    /// Keys holding at least one live value.
    pub fn live_keys(&self) -> u64 {
        self.lock().keys.values().filter(|entry| !entry.siblings.is_empty()).count() as u64
    }

    pub fn apply(&self, request: Request) -> Reply {
        let mut state = self.lock();
        if let Some(failure) = state.failure.as_ref().or_else(|| state.key_failures.get(request.key())) {
            return Reply::Failed(failure.clone());
        }
        if let Err(error) = state.check(&request) {
            return Reply::Failed(error);
        }
        match request {
            Request::Get { key, .. } => match state.keys.get(&key) {
                Some(entry) if !entry.siblings.is_empty() => Reply::Found {
                    values: entry.siblings.iter().map(|(_, value)| value.clone()).collect(),
                    context: encode(entry.counter),
                },
                Some(entry) => Reply::NotFound { context: encode(entry.counter) },
                None => Reply::NotFound { context: Context::default() },
            },
            Request::Put { key, value, context, .. } => {
                let entry = state.keys.entry(key).or_default();
                let covered = match decode(context.as_ref(), entry.counter) {
                    Ok(covered) => covered,
                    Err(error) => return Reply::Failed(error),
                };
                entry.siblings.retain(|(version, _)| *version > covered);
                entry.counter += 1;
                entry.siblings.push((entry.counter, value));
                Reply::Written { context: encode(entry.counter) }
            }
            Request::Delete { key, context, .. } => {
                let entry = state.keys.entry(key).or_default();
                let covered = match decode(context.as_ref(), entry.counter) {
                    Ok(covered) => covered,
                    Err(error) => return Reply::Failed(error),
                };
                entry.siblings.retain(|(version, _)| *version > covered);
                entry.counter += 1;
                Reply::Written { context: encode(entry.counter) }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for MemoryBackend {
    fn default() -> MemoryBackend {
        MemoryBackend::new()
    }
}

impl State {
    fn check(&self, request: &Request) -> Result<(), ClientError> {
        let key_len = request.key().len() as u64;
        if key_len == 0 {
            return Err(ClientError::KeyEmpty { max: self.key_bytes_max });
        }
        if key_len > self.key_bytes_max {
            return Err(ClientError::KeyTooLarge { len: key_len, max: self.key_bytes_max });
        }
        if let Request::Put { value, .. } = request {
            let len = value.len() as u64;
            if len > self.value_bytes_max {
                return Err(ClientError::ValueTooLarge { len, max: self.value_bytes_max });
            }
        }
        Ok(())
    }
}

fn encode(counter: u64) -> Context {
    Context(counter.to_be_bytes().to_vec())
}

/// What a write's context covers. Like the node: no context covers all
/// that is stored (`stored`); an empty one covers nothing.
fn decode(context: Option<&Context>, stored: u64) -> Result<u64, ClientError> {
    let Some(context) = context else { return Ok(stored) };
    if context.is_empty() {
        return Ok(0);
    }
    let bytes: [u8; 8] = context.0.as_slice().try_into().map_err(|_| ClientError::BadContext {
        reason: format!("expected 8 bytes, got {}", context.0.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// A fixed status and ring for tests and examples.
#[derive(Clone, Debug, Default)]
pub struct StaticIntrospect {
    pub status: NodeStatus,
    pub ring: RingView,
}

impl StaticIntrospect {
    /// A one-node cluster named `test`, optionally counting `backend`'s keys.
    pub fn single(backend: Option<MemoryBackend>) -> Arc<dyn Introspect> {
        Arc::new(Single { backend })
    }
}

impl Introspect for StaticIntrospect {
    fn status(&self) -> NodeStatus {
        self.status.clone()
    }

    fn ring(&self) -> RingView {
        self.ring.clone()
    }
}

#[derive(Debug)]
struct Single {
    backend: Option<MemoryBackend>,
}

impl Introspect for Single {
    fn status(&self) -> NodeStatus {
        let member = Member { node: "n1".into(), address: "127.0.0.1:7000".into(), state: MemberState::Up };
        NodeStatus {
            node: "n1".into(),
            cluster: "test".into(),
            uptime_seconds: 1,
            replicas: 1,
            members: vec![member],
            keys_estimate: self.backend.as_ref().map(MemoryBackend::live_keys),
            hints_pending: 0,
            storage_failed: false,
        }
    }

    fn ring(&self) -> RingView {
        RingView {
            replicas: 1,
            tokens: vec![Token { position: 0, node: "n1".into() }],
            ownership: vec![Ownership { node: "n1".into(), fraction: 1.0 }],
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_core::client::Consistency;

    use super::*;

    fn put(key: &str, value: &str, context: Option<Context>) -> Request {
        Request::Put { key: key.into(), value: value.into(), context, write: Consistency::Quorum }
    }

    fn get(key: &str) -> Request {
        Request::Get { key: key.into(), read: Consistency::Quorum }
    }

    #[test]
    fn blind_writes_are_siblings_and_a_context_replaces_them() {
        let backend = MemoryBackend::new();
        backend.apply(put("k", "a", Some(Context::default())));
        backend.apply(put("k", "b", Some(Context::default())));
        let Reply::Found { values, context } = backend.apply(get("k")) else { panic!("not found") };
        assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec()]);
        backend.apply(put("k", "c", Some(context)));
        let Reply::Found { values, context } = backend.apply(get("k")) else { panic!("not found") };
        assert_eq!(values, vec![b"c".to_vec()]);
        let deleted = backend.apply(Request::Delete {
            key: "k".into(),
            context: Some(context),
            write: Consistency::One,
        });
        assert!(matches!(deleted, Reply::Written { .. }));
        assert!(matches!(backend.apply(get("k")), Reply::NotFound { .. }));
        assert_eq!(backend.live_keys(), 0);
    }

    #[test]
    fn limits_and_bad_contexts_are_errors() {
        let backend = MemoryBackend::with_limits(2, 3);
        assert!(matches!(
            backend.apply(get("abc")),
            Reply::Failed(ClientError::KeyTooLarge { len: 3, max: 2 })
        ));
        let reply = backend.apply(put("k", "abcd", None));
        assert!(matches!(reply, Reply::Failed(ClientError::ValueTooLarge { len: 4, max: 3 })));
        let reply = backend.apply(put("k", "a", Some(Context(vec![1]))));
        assert!(matches!(reply, Reply::Failed(ClientError::BadContext { .. })));
        assert!(matches!(backend.apply(get("")), Reply::Failed(ClientError::KeyEmpty { max: 2 })));
    }

    #[test]
    fn a_failing_key_fails_alone() {
        let backend = MemoryBackend::new();
        backend.apply(put("a", "1", None));
        backend.fail_key(b"a", Some(ClientError::Damaged { failed: 2 }));
        assert_eq!(backend.apply(get("a")), Reply::Failed(ClientError::Damaged { failed: 2 }));
        assert!(matches!(backend.apply(get("b")), Reply::NotFound { .. }));
        backend.fail_key(b"a", None);
        assert!(matches!(backend.apply(get("a")), Reply::Found { .. }));
    }
}
