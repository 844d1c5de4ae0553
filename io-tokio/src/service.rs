//! The handle client-facing servers use to reach the node driver.
//!
//! A server turns a client's bytes into a request ([`Get`], [`Put`] or
//! [`Delete`]), sends it as a [`Call`] through a bounded channel, and waits
//! for its answer: a [`Read`] for a get, a [`Written`] for a put or delete,
//! or why it failed. The driver owns the receiving end and the `Node`.
//! Nothing here makes a protocol decision: a full queue, a stopped driver or
//! a lost reply each become a [`ClientError`] the client can act on, never a
//! panic and never a hang.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use keel_core::client::{ClientError, Context, Delete, Get, Put, Read, Written};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::metrics::Metrics;

mod introspect;
pub mod testing;

pub use introspect::{Introspect, Member, MemberState, NodeStatus, Ownership, RingView, Token};

/// Where the answer to one call goes. Dropping it without sending means the
/// outcome is unknown; the server reports it as indeterminate.
pub type Answer<T> = oneshot::Sender<Result<T, ClientError>>;

/// One client request on its way to the driver, with the slot for its
/// answer, whose type is the one its kind of request is answered with.
#[derive(Debug)]
pub enum Call {
    Get {
        request: Get,
        reply: Answer<Read>,
    },
    Put {
        request: Put,
        reply: Answer<Written>,
    },
    Delete {
        request: Delete,
        reply: Answer<Written>,
    },
    /// This node's own stored copy of a key, asking no other replica: for
    /// operators and tests. It may include a write whose sync is under way.
    LocalCopy {
        key: Vec<u8>,
        reply: Answer<Read>,
    },
}

impl Call {
    /// Answers with `error`, without the node: the request never reached it.
    pub fn refuse(self, error: ClientError) {
        // A caller that gave up no longer listens; nothing to do.
        let _ = match self {
            Call::Get { reply, .. } | Call::LocalCopy { reply, .. } => reply.send(Err(error)).map_err(drop),
            Call::Put { reply, .. } | Call::Delete { reply, .. } => reply.send(Err(error)).map_err(drop),
        };
    }
}

/// A cloneable sender of [`Call`]s, shared by every connection of every server.
///
/// The receiving end answers every call or drops its reply slot; the node
/// driver also gives up on a reply it has waited for too long. A caller
/// therefore needs no timer of its own.
#[derive(Clone, Debug)]
pub struct Handle {
    sender: mpsc::Sender<Call>,
    capacity: u64,
    queue_wait_max: Duration,
    metrics: Arc<Metrics>,
}

impl Handle {
    /// How long a call waits for room in a full queue before it is shed.
    pub const QUEUE_WAIT_MAX_DEFAULT: Duration = Duration::from_millis(100);

    /// A handle and the receiver the driver serves, holding at most
    /// `capacity` calls that the driver has not yet taken.
    pub fn channel(capacity: usize) -> (Handle, mpsc::Receiver<Call>) {
        let capacity = capacity.max(1);
        let (sender, receiver) = mpsc::channel(capacity);
        let handle = Handle {
            sender,
            capacity: capacity as u64,
            queue_wait_max: Handle::QUEUE_WAIT_MAX_DEFAULT,
            metrics: Arc::new(Metrics::new()),
        };
        (handle, receiver)
    }

    /// Replaces the default wait for room in a full queue.
    pub fn with_queue_wait(mut self, queue_wait_max: Duration) -> Handle {
        self.queue_wait_max = queue_wait_max;
        self
    }

    /// The metrics every call through this handle (and its clones) records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Reads a key and waits for what the read found.
    pub async fn get(&self, request: Get) -> Result<Read, ClientError> {
        let started = Instant::now();
        let result = self.exchange(|reply| Call::Get { request, reply }, started).await;
        self.metrics.record_request("get", read_outcome(&result), started, Instant::now());
        result
    }

    /// This node's own copy of `key` (see [`Call::LocalCopy`]).
    pub async fn local_copy(&self, key: Vec<u8>) -> Result<Read, ClientError> {
        let started = Instant::now();
        let result = self.exchange(|reply| Call::LocalCopy { key, reply }, started).await;
        self.metrics.record_request("local_get", read_outcome(&result), started, Instant::now());
        result
    }

    /// Stores a value and waits for the write's acknowledgement.
    pub async fn put(&self, request: Put) -> Result<Written, ClientError> {
        let started = Instant::now();
        let result = self.exchange(|reply| Call::Put { request, reply }, started).await;
        self.metrics.record_request("put", write_outcome(&result), started, Instant::now());
        result
    }

    /// Deletes a key and waits for the write's acknowledgement.
    pub async fn delete(&self, request: Delete) -> Result<Written, ClientError> {
        let started = Instant::now();
        let result = self.exchange(|reply| Call::Delete { request, reply }, started).await;
        self.metrics.record_request("delete", write_outcome(&result), started, Instant::now());
        result
    }

    async fn exchange<T>(
        &self,
        call: impl FnOnce(Answer<T>) -> Call,
        started: Instant,
    ) -> Result<T, ClientError> {
        let (reply_sender, reply_receiver) = oneshot::channel();
        let sent = match self.sender.try_send(call(reply_sender)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(stopped()),
            Err(mpsc::error::TrySendError::Full(call)) => {
                match tokio::time::timeout(self.queue_wait_max, self.sender.send(call)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(stopped()),
                    Err(_) => {
                        Err(ClientError::Overloaded { what: "request queue".into(), limit: self.capacity })
                    }
                }
            }
        };
        sent?;
        match reply_receiver.await {
            Ok(result) => result,
            // The driver took the call, so the request may have reached replicas.
            Err(_) => {
                let waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                Err(ClientError::ReplyLost { waited_ms })
            }
        }
    }
}

/// The driver is gone, so the request never left this process: definite.
fn stopped() -> ClientError {
    ClientError::ShuttingDown
}

/// The label a get's outcome is counted under.
pub fn read_outcome(result: &Result<Read, ClientError>) -> &'static str {
    match result {
        Ok(read) if read.values.len() > 1 => "siblings",
        Ok(read) if read.is_found() => "found",
        Ok(_) => "not_found",
        Err(error) => error_code(error),
    }
}

/// The label a put's or delete's outcome is counted under.
pub fn write_outcome(result: &Result<Written, ClientError>) -> &'static str {
    match result {
        Ok(_) => "written",
        Err(error) => error_code(error),
    }
}

/// A short stable name for an error, shared by HTTP error bodies, metric
/// labels and the documentation.
pub fn error_code(error: &ClientError) -> &'static str {
    match error {
        ClientError::KeyTooLarge { .. } => "key_too_large",
        ClientError::KeyEmpty { .. } => "key_empty",
        ClientError::ValueTooLarge { .. } => "value_too_large",
        ClientError::BadConsistency { .. } => "bad_consistency",
        ClientError::BadContext { .. } => "bad_context",
        ClientError::Unavailable { .. } => "unavailable",
        ClientError::Timeout { .. } => "timeout",
        ClientError::SiblingsTooMany { .. } => "siblings_too_many",
        ClientError::Overloaded { .. } => "overloaded",
        ClientError::StorageFailed { .. } => "storage_failed",
        ClientError::ShuttingDown => "shutting_down",
        ClientError::ReplyLost { .. } => "reply_lost",
        ClientError::CoordinatorRestarted => "coordinator_restarted",
        ClientError::CopiesUnreadable { .. } => "copies_unreadable",
        ClientError::CoordinatorCopyUnreadable { .. } => "coordinator_copy_unreadable",
        ClientError::Damaged { .. } => "damaged",
        _ => "failed",
    }
}

/// Contexts travel as base64url without padding (RFC 4648 §5) in every API,
/// so a context read over HTTP can be passed back over RESP and the reverse.
/// Decoding also accepts padding, which some encoders add unasked.
const CONTEXT_CODEC: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub fn encode_context(context: &Context) -> String {
    CONTEXT_CODEC.encode(&context.0)
}

/// An empty text is the empty context, which covers nothing.
pub fn decode_context(text: &[u8]) -> Result<Context, ClientError> {
    CONTEXT_CODEC
        .decode(text)
        .map(Context)
        .map_err(|error| ClientError::BadContext { reason: format!("not base64url: {error}") })
}

/// Runs `work` on every item with at most `concurrency_max` in flight and
/// returns the results in the order of `items`. A task lost to runtime
/// shutdown yields `lost()`.
///
/// Multi-key commands use this so one request cannot flood the driver's
/// queue, and so a slow key does not serialise the others.
pub async fn fan_out<T, R, F, Fut>(
    items: Vec<T>,
    concurrency_max: usize,
    work: F,
    lost: impl Fn() -> R,
) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let count = items.len();
    let mut results: Vec<Option<R>> = Vec::with_capacity(count);
    results.resize_with(count, || None);
    let mut tasks = JoinSet::new();
    let mut pending = items.into_iter().enumerate();
    loop {
        while tasks.len() < concurrency_max.max(1) {
            let Some((index, item)) = pending.next() else { break };
            let future = work(item);
            tasks.spawn(async move { (index, future.await) });
        }
        let Some(joined) = tasks.join_next().await else { break };
        match joined {
            Ok((index, result)) => results[index] = Some(result),
            // A panicking request task is a bug in this crate; surface it.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => {}
        }
    }
    results.into_iter().map(|result| result.unwrap_or_else(&lost)).collect()
}

#[cfg(test)]
mod tests {
    use keel_core::client::Consistency;

    use super::*;

    fn get(key: &str) -> Get {
        Get { key: key.as_bytes().to_vec(), read: Consistency::Quorum }
    }

    #[tokio::test]
    async fn a_stopped_driver_is_an_error_not_a_panic() {
        let (handle, receiver) = Handle::channel(4);
        drop(receiver);
        assert_eq!(handle.get(get("a")).await, Err(ClientError::ShuttingDown));
    }

    #[tokio::test]
    async fn a_full_queue_is_shed_after_the_wait() {
        let (handle, mut receiver) = Handle::channel(1);
        let handle = handle.with_queue_wait(Duration::from_millis(5));
        let first = handle.clone();
        // The first call fills the queue, which nobody serves yet.
        let waiting = tokio::spawn(async move { first.get(get("a")).await });
        tokio::task::yield_now().await;
        let reply = handle.get(get("b")).await;
        assert_eq!(reply, Err(ClientError::Overloaded { what: "request queue".into(), limit: 1 }));
        // Taken, then dropped unanswered: the outcome is unknown.
        drop(receiver.recv().await.expect("the first call"));
        let first_reply = waiting.await.expect("task");
        assert!(matches!(first_reply, Err(ClientError::ReplyLost { .. })));
    }

    #[tokio::test]
    async fn a_dropped_reply_is_indeterminate() {
        let (handle, mut receiver) = Handle::channel(1);
        tokio::spawn(async move {
            while let Some(call) = receiver.recv().await {
                drop(call);
            }
        });
        let delete = Delete {
            key: b"a".to_vec(),
            replaces: keel_core::client::Replaces::Read,
            write: Consistency::One,
            strict: false,
        };
        let Err(error) = handle.delete(delete).await else { panic!("expected a failure") };
        assert!(error.is_indeterminate());
        assert!(handle.metrics().render().contains("op=\"delete\",outcome=\"reply_lost\""));
    }

    #[test]
    fn contexts_round_trip_as_base64url() {
        let context = keel_core::client::Context(vec![0xfb, 0xff, 0x00, 0x10]);
        let text = encode_context(&context);
        assert_eq!(text, "-_8AEA");
        assert_eq!(decode_context(text.as_bytes()), Ok(context.clone()));
        assert_eq!(decode_context(b"-_8AEA=="), Ok(context));
        assert_eq!(decode_context(b""), Ok(keel_core::client::Context::default()));
        assert!(matches!(decode_context(b"a+b/"), Err(ClientError::BadContext { .. })));
    }

    #[tokio::test]
    async fn fan_out_keeps_order_and_bounds_concurrency() {
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let results = fan_out(
            (0..50u64).collect(),
            4,
            |n| {
                let (in_flight, peak) = (in_flight.clone(), peak.clone());
                async move {
                    let now = in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50 - n)).await;
                    in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    n * 2
                }
            },
            || u64::MAX,
        )
        .await;
        assert_eq!(results, (0..50u64).map(|n| n * 2).collect::<Vec<_>>());
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 4);
    }
}
