//! An in-memory stand-in for the node driver, so servers can be tested (and
//! tried with real clients) without a cluster.
//!
//! It keeps the semantics servers depend on: a write replacing what is held
//! replaces what is stored, a write with the empty context becomes a
//! sibling, a write with the context of a read replaces what that read saw,
//! a write that reads first replaces what is stored and says what that was
//! (a delete that finds nothing live writes nothing), and the node's key
//! rules (not empty, not over the limit) and value limit are enforced.
//! Versions are a single counter per key, which is exact for one node and
//! nothing more. It does not replicate or persist anything.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use keel_core::client::{
    ClientError, Consistency, Context, Delete, Get, Put, Read, Replaced, Replaces, Written,
};
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
            // A caller that gave up no longer listens; nothing to do.
            let _ = match call {
                Call::Get { request, reply } => reply.send(self.get(request)).map_err(drop),
                Call::LocalCopy { key, reply } => {
                    reply.send(self.get(Get { key, read: Consistency::One })).map_err(drop)
                }
                Call::Put { request, reply } => reply.send(self.put(request)).map_err(drop),
                Call::Delete { request, reply } => reply.send(self.delete(request)).map_err(drop),
            };
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

    pub fn get(&self, request: Get) -> Result<Read, ClientError> {
        let state = self.lock();
        state.check(&request.key, None)?;
        Ok(match state.keys.get(&request.key) {
            Some(entry) => Read {
                values: entry.siblings.iter().map(|(_, value)| value.clone()).collect(),
                context: encode(entry.counter),
            },
            None => Read { values: Vec::new(), context: Context::default() },
        })
    }

    pub fn put(&self, request: Put) -> Result<Written, ClientError> {
        let Put { key, value, replaces, .. } = request;
        let mut state = self.lock();
        state.check(&key, Some(&value))?;
        let entry = state.keys.entry(key).or_default();
        let (covered, replaced) = replaced_by(&replaces, entry)?;
        entry.siblings.retain(|(version, _)| *version > covered);
        entry.counter += 1;
        entry.siblings.push((entry.counter, value));
        Ok(Written { context: encode(entry.counter), replaced, fallbacks: 0 })
    }

    pub fn delete(&self, request: Delete) -> Result<Written, ClientError> {
        let Delete { key, replaces, .. } = request;
        let mut state = self.lock();
        state.check(&key, None)?;
        let entry = state.keys.entry(key).or_default();
        let (covered, replaced) = replaced_by(&replaces, entry)?;
        if replaced == Replaced::Values(Vec::new()) {
            // Read first and nothing live: the node writes nothing.
            return Ok(Written { context: encode(entry.counter), replaced, fallbacks: 0 });
        }
        entry.siblings.retain(|(version, _)| *version > covered);
        entry.counter += 1;
        Ok(Written { context: encode(entry.counter), replaced, fallbacks: 0 })
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
    /// The failure set for `key`, or the node's limits.
    fn check(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), ClientError> {
        if let Some(failure) = self.failure.as_ref().or_else(|| self.key_failures.get(key)) {
            return Err(failure.clone());
        }
        let key_len = key.len() as u64;
        if key_len == 0 {
            return Err(ClientError::KeyEmpty { max: self.key_bytes_max });
        }
        if key_len > self.key_bytes_max {
            return Err(ClientError::KeyTooLarge { len: key_len, max: self.key_bytes_max });
        }
        let len = value.map_or(0, |value| value.len() as u64);
        if len > self.value_bytes_max {
            return Err(ClientError::ValueTooLarge { len, max: self.value_bytes_max });
        }
        Ok(())
    }
}

fn encode(counter: u64) -> Context {
    Context(counter.to_be_bytes().to_vec())
}

/// The highest version a write replacing `replaces` covers, and what it
/// says it replaced. Like the node: what is held or read covers all that is
/// stored; an empty context covers nothing.
fn replaced_by(replaces: &Replaces, entry: &Entry) -> Result<(u64, Replaced), ClientError> {
    let context = match replaces {
        Replaces::Held => return Ok((entry.counter, Replaced::NotRead)),
        Replaces::Read => {
            let values = entry.siblings.iter().map(|(_, value)| value.clone()).collect();
            return Ok((entry.counter, Replaced::Values(values)));
        }
        Replaces::Context(context) if context.is_empty() => return Ok((0, Replaced::NotRead)),
        Replaces::Context(context) => context,
    };
    let bytes: [u8; 8] = context.0.as_slice().try_into().map_err(|_| ClientError::BadContext {
        reason: format!("expected 8 bytes, got {}", context.0.len()),
    })?;
    Ok((u64::from_be_bytes(bytes), Replaced::NotRead))
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
        let member = Member {
            node: "n1".into(),
            address: "127.0.0.1:7000".into(),
            state: MemberState::Up,
            hints_pending: 0,
            last_exchange_seconds_ago: None,
        };
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

    fn put(key: &str, value: &str, replaces: Replaces) -> Put {
        Put { key: key.into(), value: value.into(), replaces, write: Consistency::Quorum, strict: false }
    }

    fn get(key: &str) -> Get {
        Get { key: key.into(), read: Consistency::Quorum }
    }

    #[test]
    fn blind_writes_are_siblings_and_a_context_replaces_them() {
        let backend = MemoryBackend::new();
        backend.put(put("k", "a", Replaces::Context(Context::default()))).unwrap();
        backend.put(put("k", "b", Replaces::Context(Context::default()))).unwrap();
        let Read { values, context } = backend.get(get("k")).unwrap();
        assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec()]);
        backend.put(put("k", "c", Replaces::Context(context))).unwrap();
        let Read { values, context } = backend.get(get("k")).unwrap();
        assert_eq!(values, vec![b"c".to_vec()]);
        let delete = Delete {
            key: "k".into(),
            replaces: Replaces::Context(context),
            write: Consistency::One,
            strict: false,
        };
        assert!(backend.delete(delete).is_ok());
        assert!(!backend.get(get("k")).unwrap().is_found());
        assert_eq!(backend.live_keys(), 0);
    }

    #[test]
    fn writes_that_read_first_say_what_they_replaced() {
        let backend = MemoryBackend::new();
        let first = backend.put(put("k", "a", Replaces::Read)).unwrap();
        assert_eq!(first.replaced, Replaced::Values(Vec::new()));
        let second = backend.put(put("k", "b", Replaces::Read)).unwrap();
        assert_eq!(second.replaced, Replaced::Values(vec![b"a".to_vec()]));
        let delete = |key: &str| Delete {
            key: key.into(),
            replaces: Replaces::Read,
            write: Consistency::One,
            strict: false,
        };
        assert_eq!(backend.delete(delete("k")).unwrap().replaced, Replaced::Values(vec![b"b".to_vec()]));
        let absent = backend.delete(delete("absent")).unwrap();
        assert_eq!((absent.replaced, absent.context), (Replaced::Values(Vec::new()), encode(0)));
    }

    #[test]
    fn limits_and_bad_contexts_are_errors() {
        let backend = MemoryBackend::with_limits(2, 3);
        assert_eq!(backend.get(get("abc")), Err(ClientError::KeyTooLarge { len: 3, max: 2 }));
        let reply = backend.put(put("k", "abcd", Replaces::Held));
        assert_eq!(reply, Err(ClientError::ValueTooLarge { len: 4, max: 3 }));
        let reply = backend.put(put("k", "a", Replaces::Context(Context(vec![1]))));
        assert!(matches!(reply, Err(ClientError::BadContext { .. })));
        assert_eq!(backend.get(get("")), Err(ClientError::KeyEmpty { max: 2 }));
    }

    #[test]
    fn a_failing_key_fails_alone() {
        let backend = MemoryBackend::new();
        backend.put(put("a", "1", Replaces::Held)).unwrap();
        backend.fail_key(b"a", Some(ClientError::Damaged { failed: 2 }));
        assert_eq!(backend.get(get("a")), Err(ClientError::Damaged { failed: 2 }));
        assert!(!backend.get(get("b")).unwrap().is_found());
        backend.fail_key(b"a", None);
        assert!(backend.get(get("a")).unwrap().is_found());
    }
}
