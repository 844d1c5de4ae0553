//! The command layer: one parsed command in, one reply out.
//!
//! Dispatch looks the name up in the command table, checks arity the way
//! Redis does, and hands the arguments to the command. A Redis command keel
//! does not run gets its reason from `refused`. Errors keep Redis's wording
//! for what Redis also rejects; keel's own failures get the codes in
//! [`client_error`], documented in `docs/API.md`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use keel_core::client::ClientError;

use super::table::{self, Spec};
use super::{Command, RespLimits, Value, Version, admin, keys, refused};
use crate::service::{Handle, Introspect};

/// What every connection of one server shares.
#[derive(Clone)]
pub struct Shared {
    pub handle: Handle,
    pub introspect: Arc<dyn Introspect>,
    pub limits: RespLimits,
    pub started: Instant,
    /// The port clients connect to, for INFO and CONFIG GET port.
    pub port: u16,
    next_client_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(handle: Handle, introspect: Arc<dyn Introspect>, limits: RespLimits, port: u16) -> Shared {
        let next_client_id = Arc::new(AtomicU64::new(1));
        Shared { handle, introspect, limits, started: Instant::now(), port, next_client_id }
    }

    /// A new session with the next client id.
    pub fn session(&self, peer: Option<SocketAddr>, local: Option<SocketAddr>) -> Session {
        Session {
            id: self.next_client_id.fetch_add(1, Ordering::Relaxed),
            version: Version::Resp2,
            name: Vec::new(),
            lib_name: Vec::new(),
            lib_version: Vec::new(),
            peer,
            local,
            opened: Instant::now(),
            last_command: Instant::now(),
            in_refused_multi: false,
        }
    }
}

/// One connection's state, changed by HELLO and CLIENT.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: u64,
    pub version: Version,
    /// Empty when the client has not named itself.
    pub name: Vec<u8>,
    pub lib_name: Vec<u8>,
    pub lib_version: Vec<u8>,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub opened: Instant,
    pub last_command: Instant,
    /// Inside a MULTI block, which keel refuses: every command up to EXEC or
    /// DISCARD is answered with an error and not run, so a transaction is
    /// never half applied.
    pub in_refused_multi: bool,
}

/// A reply, and whether the connection closes after sending it.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub value: Value,
    pub close: bool,
}

impl From<Value> for Answer {
    fn from(value: Value) -> Answer {
        Answer { value, close: false }
    }
}

/// Runs one command. An empty command gets an error here; servers skip
/// empty requests before calling this, as Redis does.
pub async fn execute(shared: &Shared, session: &mut Session, command: Command) -> Answer {
    session.last_command = Instant::now();
    let args = command.into_args();
    let Some(name) = args.first() else { return Value::error("ERR empty command").into() };
    if session.in_refused_multi {
        return refused_multi(shared, session, name);
    }
    let Some(spec) = table::lookup(name) else {
        return not_run(shared, session, &args).into();
    };
    if !spec.accepts(args.len()) {
        shared.handle.metrics().record_command(spec.name, "error");
        return wrong_arity(spec.name).into();
    }
    let answer = dispatch(shared, session, spec, args).await;
    let outcome = if answer.value.is_error() { "error" } else { "ok" };
    shared.handle.metrics().record_command(spec.name, outcome);
    answer
}

async fn dispatch(shared: &Shared, session: &mut Session, spec: &Spec, args: Vec<Vec<u8>>) -> Answer {
    let value = match spec.name {
        "get" => keys::get(shared, args).await,
        "set" => keys::set(shared, args).await,
        "getset" => keys::getset(shared, args).await,
        "getdel" => keys::getdel(shared, args).await,
        "del" | "unlink" => keys::del(shared, args).await,
        "type" => keys::type_of(shared, args).await,
        "strlen" => keys::strlen(shared, args).await,
        "exists" => keys::exists(shared, args).await,
        "mget" => keys::mget(shared, args).await,
        "mset" => keys::mset(shared, args).await,
        "keel.get" => keys::keel_get(shared, args).await,
        "keel.put" => keys::keel_put(shared, args).await,
        "keel.del" => keys::keel_del(shared, args).await,
        "quit" => return Answer { value: Value::ok(), close: true },
        _ => admin::run(shared, session, spec, args),
    };
    value.into()
}

/// A name keel does not run: a Redis command keel knows gets the reason it
/// is refused, anything else Redis's own "unknown command". `MULTI` also
/// starts a refused block, so the transaction's commands are not run one by
/// one.
fn not_run(shared: &Shared, session: &mut Session, args: &[Vec<u8>]) -> Value {
    let Some(refused) = args.first().and_then(|name| refused::lookup(name)) else {
        shared.handle.metrics().record_command("unknown", "error");
        return unknown_command(args);
    };
    // Refused names are a fixed set, so they are safe as metric labels.
    shared.handle.metrics().record_command(refused.name, "error");
    if refused.name == "multi" {
        session.in_refused_multi = true;
    }
    refused.error()
}

/// Inside a refused MULTI block: EXEC aborts as Redis aborts a transaction
/// with a rejected command, DISCARD ends the block, QUIT still closes.
fn refused_multi(shared: &Shared, session: &mut Session, name: &[u8]) -> Answer {
    let label = table::lookup(name)
        .map(|spec| spec.name)
        .or_else(|| refused::lookup(name).map(|refused| refused.name))
        .unwrap_or("unknown");
    shared.handle.metrics().record_command(label, "error");
    match label {
        "exec" => {
            session.in_refused_multi = false;
            Value::error("EXECABORT Transaction discarded because of previous errors.").into()
        }
        "discard" => {
            session.in_refused_multi = false;
            Value::ok().into()
        }
        "quit" => Answer { value: Value::ok(), close: true },
        _ => Value::error("ERR not run: keel does not support MULTI, so commands before EXEC are refused")
            .into(),
    }
}

/// Redis's reply to a name it does not know, quoting up to 128 bytes of arguments.
pub(crate) fn unknown_command(args: &[Vec<u8>]) -> Value {
    let name = truncated(args.first().map(Vec::as_slice).unwrap_or_default(), 128);
    let mut quoted = String::new();
    for arg in args.iter().skip(1) {
        if quoted.len() >= 128 {
            break;
        }
        let room = 128 - quoted.len();
        quoted.push_str(&format!("'{}' ", truncated(arg, room)));
    }
    Value::error(format!("ERR unknown command '{name}', with args beginning with: {quoted}"))
}

pub(crate) fn wrong_arity(name: &str) -> Value {
    Value::error(format!("ERR wrong number of arguments for '{name}' command"))
}

pub(crate) fn syntax_error() -> Value {
    Value::error("ERR syntax error")
}

/// At most `max` bytes of `bytes`, as text.
pub(crate) fn truncated(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

/// The Redis error for a failed request. The code tells a client what to do
/// without parsing the message: `ERR` for a bad request (do not retry as is),
/// `UNAVAILABLE` (too few replicas reachable; nothing written), `TIMEOUT`
/// (indeterminate: a write may still take effect), `OVERLOADED` (retry later),
/// `MISCONF`, Redis's code for a server whose persistence failed and that
/// refuses writes, and `CORRUPT` for a key whose every copy is damaged on
/// disk (a write replaces it).
pub fn client_error(error: &ClientError) -> Value {
    let code = match error {
        ClientError::Unavailable { .. }
        | ClientError::ShuttingDown
        | ClientError::CopiesUnreadable { .. }
        | ClientError::CoordinatorCopyUnreadable { .. } => "UNAVAILABLE",
        ClientError::Timeout { .. } | ClientError::ReplyLost { .. } | ClientError::CoordinatorRestarted => {
            "TIMEOUT"
        }
        ClientError::Overloaded { .. } => "OVERLOADED",
        ClientError::StorageFailed { .. } => "MISCONF",
        ClientError::Damaged { .. } => "CORRUPT",
        _ => "ERR",
    };
    Value::error(format!("{code} {error}"))
}
