//! Commands on keys: Redis's string commands and keel's own.
//!
//! keel is leaderless and keeps concurrent writes as siblings, so Redis's
//! "last SET wins" is built from keel's primitives. A plain SET replaces what
//! the coordinating replica holds; `SET … GET`, GETSET, DEL and GETDEL ask
//! the node to read first and replace exactly what that read saw, and the
//! node says what that was. A write concurrent with the read is kept as a
//! sibling rather than lost. Reads of a key with siblings return the first
//! sibling in the node's order; `KEEL.GET` returns them all.
//!
//! Multi-key commands send one request per distinct key. MGET answers each
//! key on its own, a failed key as an error element of the array (Redis's
//! convention for per-element errors, as in EXEC replies), because keys
//! live on different replicas and fail independently. Commands whose reply
//! is one number (DEL, EXISTS) or one status (MSET) fail whole.

use std::collections::BTreeMap;

use keel_core::client::{Consistency, Context, Delete, Get, Put, Read, Replaced, Replaces, Written};

use super::Value;
use super::command::{Shared, client_error, syntax_error};
use crate::service::{Handle, decode_context, encode_context, fan_out};

/// GET, SET and DEL use the node's default consistency.
const DEFAULT: Consistency = Consistency::Quorum;

async fn read(handle: &Handle, key: Vec<u8>, consistency: Consistency) -> Result<Read, Value> {
    handle.get(Get { key, read: consistency }).await.map_err(|error| client_error(&error))
}

async fn put(handle: &Handle, request: Put) -> Result<Written, Value> {
    handle.put(request).await.map_err(|error| client_error(&error))
}

/// Writes `value` over what is stored. With `previous`, the node reads
/// first, writes over exactly what that read saw, and the value it
/// replaced (the first sibling) comes back.
async fn overwrite(
    handle: Handle,
    key: Vec<u8>,
    value: Vec<u8>,
    previous: bool,
) -> Result<Option<Vec<u8>>, Value> {
    // Without reading, the write replaces whatever the coordinating replica
    // holds: one round trip, no sibling for a plain SET.
    let replaces = if previous { Replaces::Read } else { Replaces::Held };
    let written = put(&handle, Put { key, value, replaces, write: DEFAULT, strict: false }).await?;
    Ok(first_replaced(written.replaced))
}

/// The value a write replaced, as GETSET and GETDEL return it: the first
/// sibling the node's read saw, none when it saw none or no copy read.
fn first_replaced(replaced: Replaced) -> Option<Vec<u8>> {
    match replaced {
        Replaced::Values(values) => values.into_iter().next(),
        Replaced::NotRead | Replaced::Unreadable => None,
    }
}

/// Deletes what a read at `consistency` sees: what was deleted, and the
/// context of the tombstone (or of the read, when nothing was live and
/// nothing was written).
async fn remove(
    handle: Handle,
    key: Vec<u8>,
    (consistency, strict): (Consistency, bool),
) -> Result<(Removed, Context), Value> {
    let delete = Delete { key, replaces: Replaces::Read, write: consistency, strict };
    let written = handle.delete(delete).await.map_err(|error| client_error(&error))?;
    let removed = match written.replaced {
        Replaced::Values(values) if values.is_empty() => Removed::Nothing,
        Replaced::Values(values) => Removed::Value(values.into_iter().next().unwrap_or_default()),
        // Copies that no longer read were replaced by the tombstone: the
        // key counts as deleted, with no value to return.
        Replaced::NotRead | Replaced::Unreadable => Removed::Unknown,
    };
    Ok((removed, written.context))
}

/// What a delete removed.
enum Removed {
    /// The key held no live value; nothing was written.
    Nothing,
    /// The first sibling of what the read saw.
    Value(Vec<u8>),
    /// Something the node could not read.
    Unknown,
}

fn lost<T>() -> Result<T, Value> {
    Err(Value::error("ERR the request was lost while the server stopped"))
}

/// Distinct keys in first-seen order, and for each argument its key's index.
fn distinct(keys: Vec<Vec<u8>>) -> (Vec<Vec<u8>>, Vec<usize>) {
    let mut index: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut unique = Vec::new();
    let positions = keys
        .into_iter()
        .map(|key| {
            *index.entry(key).or_insert_with_key(|key| {
                unique.push(key.clone());
                unique.len() - 1
            })
        })
        .collect();
    (unique, positions)
}

/// Reads every key, each with its own outcome, in the order of `keys`.
async fn read_each(shared: &Shared, keys: Vec<Vec<u8>>) -> Vec<Result<Read, Value>> {
    let handle = &shared.handle;
    let work = |key| {
        let handle = handle.clone();
        async move { read(&handle, key, DEFAULT).await }
    };
    fan_out(keys, shared.limits.fanout_max as usize, work, lost).await
}

/// The first sibling of `key`, what GET returns.
async fn first_value(shared: &Shared, args: Vec<Vec<u8>>) -> Result<Option<Vec<u8>>, Value> {
    let key = args.into_iter().nth(1).unwrap_or_default();
    Ok(read(&shared.handle, key, DEFAULT).await?.values.into_iter().next())
}

pub(super) async fn get(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    match first_value(shared, args).await {
        Ok(value) => value.map_or(Value::Null, Value::Bulk),
        Err(error) => error,
    }
}

/// `TYPE key`: keel stores only strings, so `string` when a read finds a
/// live value and `none` otherwise.
pub(super) async fn type_of(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    match first_value(shared, args).await {
        Ok(value) => Value::Simple(if value.is_some() { "string" } else { "none" }.into()),
        Err(error) => error,
    }
}

/// `STRLEN key`: the length of the value GET returns, 0 when there is none.
pub(super) async fn strlen(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    match first_value(shared, args).await {
        Ok(value) => Value::Integer(value.map_or(0, |value| value.len() as i64)),
        Err(error) => error,
    }
}

pub(super) async fn set(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    let mut args = args.into_iter().skip(1);
    let (key, value) = (args.next().unwrap_or_default(), args.next().unwrap_or_default());
    let mut return_previous = false;
    while let Some(option) = args.next() {
        match option.to_ascii_uppercase().as_slice() {
            b"GET" => return_previous = true,
            // No key ever has a TTL, so there is none to keep.
            b"KEEPTTL" => {}
            b"NX" | b"XX" | b"IFEQ" => {
                let name = String::from_utf8_lossy(&option).to_ascii_uppercase();
                return Value::error(format!(
                    "ERR keel does not support SET option {name}: conditional writes need \
                     compare-and-set, which keel does not have yet"
                ));
            }
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                if args.next().is_none() {
                    return syntax_error();
                }
                let name = String::from_utf8_lossy(&option).to_ascii_uppercase();
                return Value::error(format!(
                    "ERR keel does not support SET option {name}: keys cannot expire yet"
                ));
            }
            _ => return syntax_error(),
        }
    }
    match overwrite(shared.handle.clone(), key, value, return_previous).await {
        Ok(previous) if return_previous => previous.map_or(Value::Null, Value::Bulk),
        Ok(_) => Value::ok(),
        Err(error) => error,
    }
}

/// `GETSET key value`: Redis's older spelling of `SET key value GET`.
pub(super) async fn getset(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    let mut args = args.into_iter().skip(1);
    let (key, value) = (args.next().unwrap_or_default(), args.next().unwrap_or_default());
    match overwrite(shared.handle.clone(), key, value, true).await {
        Ok(previous) => previous.map_or(Value::Null, Value::Bulk),
        Err(error) => error,
    }
}

/// `GETDEL key`: deletes what a read sees, as DEL does, and returns the
/// value it deleted (the first sibling), or nil when there was none.
pub(super) async fn getdel(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    let key = args.into_iter().nth(1).unwrap_or_default();
    match remove(shared.handle.clone(), key, (DEFAULT, false)).await {
        Ok((Removed::Value(value), _)) => Value::Bulk(value),
        Ok((Removed::Nothing | Removed::Unknown, _)) => Value::Null,
        Err(error) => error,
    }
}

/// `DEL` and `UNLINK`, which differ in Redis only in when memory is freed.
pub(super) async fn del(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    let (keys, _) = distinct(args.into_iter().skip(1).collect());
    let handle = &shared.handle;
    let work = |key| remove(handle.clone(), key, (DEFAULT, false));
    let results = fan_out(keys, shared.limits.fanout_max as usize, work, lost).await;
    let mut deleted = 0;
    for result in results {
        match result {
            Ok((Removed::Value(_) | Removed::Unknown, _)) => deleted += 1,
            Ok((Removed::Nothing, _)) => {}
            Err(error) => return error,
        }
    }
    Value::Integer(deleted)
}

pub(super) async fn exists(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    let (keys, positions) = distinct(args.into_iter().skip(1).collect());
    let found: Result<Vec<Read>, Value> = read_each(shared, keys).await.into_iter().collect();
    match found {
        // Redis counts a key named twice twice.
        Ok(found) => {
            Value::Integer(positions.iter().filter(|&&at| !found[at].values.is_empty()).count() as i64)
        }
        Err(error) => error,
    }
}

/// Each key's first sibling, nil, or the error that key's read failed with.
pub(super) async fn mget(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    let (keys, positions) = distinct(args.into_iter().skip(1).collect());
    let found = read_each(shared, keys).await;
    let answer = |at: usize| match &found[at] {
        Ok(read) => read.values.first().cloned().map_or(Value::Null, Value::Bulk),
        Err(error) => error.clone(),
    };
    Value::Array(positions.iter().map(|&at| answer(at)).collect())
}

pub(super) async fn mset(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    if args.len() % 2 == 0 {
        return super::command::wrong_arity("mset");
    }
    // A key given twice takes its last value, as in Redis.
    let pairs: BTreeMap<Vec<u8>, Vec<u8>> =
        args[1..].chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
    let total = pairs.len();
    let handle = &shared.handle;
    let work = |(key, value)| overwrite(handle.clone(), key, value, false);
    let results = fan_out(pairs.into_iter().collect(), shared.limits.fanout_max as usize, work, lost).await;
    let stored = results.iter().filter(|result| result.is_ok()).count();
    match results.into_iter().find_map(Result::err) {
        Some(Value::Error(text)) => Value::error(format!("{text} (MSET stored {stored} of {total} keys)")),
        Some(other) => other,
        None => Value::ok(),
    }
}

/// `KEEL.GET key [CONSISTENCY c]`: `[context, sibling…]`.
pub(super) async fn keel_get(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    let mut args = args.into_iter().skip(1);
    let key = args.next().unwrap_or_default();
    let options = match Options::parse(args, false) {
        Ok(options) => options,
        Err(error) => return error,
    };
    match read(&shared.handle, key, options.consistency).await {
        Ok(found) => {
            let context = Value::bulk(encode_context(&found.context));
            Value::Array(std::iter::once(context).chain(found.values.into_iter().map(Value::Bulk)).collect())
        }
        Err(error) => error,
    }
}

/// `KEEL.PUT key value [CONTEXT ctx] [CONSISTENCY c]`: the new context.
pub(super) async fn keel_put(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    let mut args = args.into_iter().skip(1);
    let (key, value) = (args.next().unwrap_or_default(), args.next().unwrap_or_default());
    let options = match Options::parse(args, true) {
        Ok(options) => options,
        Err(error) => return error,
    };
    let replaces = options.context.map_or(Replaces::Held, Replaces::Context);
    let put_request = Put { key, value, replaces, write: options.consistency, strict: options.strict };
    match put(&shared.handle, put_request).await {
        Ok(written) => Value::bulk(encode_context(&written.context)),
        Err(error) => error,
    }
}

/// `KEEL.DEL key [CONTEXT ctx] [CONSISTENCY c]`: the new context. Without a
/// context it deletes what a read at the same consistency sees.
pub(super) async fn keel_del(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    let mut args = args.into_iter().skip(1);
    let key = args.next().unwrap_or_default();
    let options = match Options::parse(args, true) {
        Ok(options) => options,
        Err(error) => return error,
    };
    let result = match options.context {
        Some(context) => {
            let delete = Delete {
                key,
                replaces: Replaces::Context(context),
                write: options.consistency,
                strict: options.strict,
            };
            shared
                .handle
                .delete(delete)
                .await
                .map(|written| written.context)
                .map_err(|error| client_error(&error))
        }
        None => remove(shared.handle.clone(), key, (options.consistency, options.strict))
            .await
            .map(|(_, context)| context),
    };
    match result {
        Ok(context) => Value::bulk(encode_context(&context)),
        Err(error) => error,
    }
}

/// The options of keel's commands, each a name and a value.
struct Options {
    consistency: Consistency,
    /// `None` without `CONTEXT`: the write replaces what the coordinating
    /// replica holds. An empty context makes it a sibling of everything.
    context: Option<Context>,
    /// `STRICT true`: only the key's own replicas count towards the
    /// consistency (no fallback keeps a hint). Writes only.
    strict: bool,
}

impl Options {
    /// `write` allows the options of writes: `CONTEXT` and `STRICT`.
    fn parse(mut args: impl Iterator<Item = Vec<u8>>, write: bool) -> Result<Options, Value> {
        let mut options = Options { consistency: DEFAULT, context: None, strict: false };
        let mut seen = (false, false, false);
        while let Some(name) = args.next() {
            let value = args.next().ok_or_else(syntax_error)?;
            match name.to_ascii_uppercase().as_slice() {
                b"CONSISTENCY" if !seen.0 => {
                    seen.0 = true;
                    let text = String::from_utf8_lossy(&value);
                    options.consistency =
                        text.parse().map_err(|error| Value::error(format!("ERR {error}")))?;
                }
                b"CONTEXT" if write && !seen.1 => {
                    seen.1 = true;
                    let context = decode_context(&value).map_err(|error| client_error(&error))?;
                    options.context = Some(context);
                }
                b"STRICT" if write && !seen.2 => {
                    seen.2 = true;
                    options.strict = match value.to_ascii_lowercase().as_slice() {
                        b"true" => true,
                        b"false" => false,
                        _ => return Err(Value::error("ERR STRICT is true or false")),
                    };
                }
                _ => return Err(syntax_error()),
            }
        }
        Ok(options)
    }
}
