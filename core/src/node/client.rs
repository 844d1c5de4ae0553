//! Client requests: admission, and each kind to the path that serves it.
//!
//! A get is coordinated here (see `read`). A put or delete starts on a
//! primary (see `write`) once its context is parsed, or, when it replaces
//! what a read sees (`Replaces::Read`), once that read is decided: the read
//! is an ordinary get whose outcome starts the write instead of answering.
//! The client's rule lives here, not in a server, so every interface means
//! the same by it and the simulator's clients exercise it.

use super::Node;
use crate::client::{
    ClientError, Consistency, Context, Delete, Get, Put, Read, Replaced, Replaces, Request, RequestId,
};
use crate::message::{Acknowledged, Write};
use crate::request::{Origin, Seen, WriteAfter};
use crate::version::{CausalContext, Value};

impl Node {
    pub(super) fn on_client(&mut self, id: RequestId, request: Request) {
        let value = match &request {
            Request::Put(put) => Some(put.value.len()),
            Request::Get(_) | Request::Delete(_) => None,
        };
        if let Err(error) = self.admit(request.key(), value) {
            self.stats.rejected += 1;
            return match request {
                Request::Get(_) => self.reply_read(id, Err(error)),
                Request::Put(_) | Request::Delete(_) => self.reply_write(id, Err(error)),
            };
        }
        match request {
            Request::Get(Get { key, read }) => self.coordinate_get(id, key, read, None),
            Request::Put(Put { key, value, replaces, write, strict }) => {
                self.start_client_write(id, key, Value::Live(value), replaces, (write, strict));
            }
            Request::Delete(Delete { key, replaces, write, strict }) => {
                self.start_client_write(id, key, Value::Tombstone, replaces, (write, strict));
            }
        }
    }

    /// Checks limits before any work is done: a refused request writes
    /// nothing. `value` is the length of a put's value.
    pub(super) fn admit(&self, key: &[u8], value: Option<usize>) -> Result<(), ClientError> {
        if key.is_empty() {
            return Err(ClientError::KeyEmpty { max: self.config.key_bytes_max.into() });
        }
        if key.len() > self.config.key_bytes_max as usize {
            return Err(ClientError::KeyTooLarge {
                len: key.len() as u64,
                max: self.config.key_bytes_max.into(),
            });
        }
        if let Some(len) = value.filter(|&len| len > self.config.value_bytes_max as usize) {
            let max = self.config.value_bytes_max.into();
            return Err(ClientError::ValueTooLarge { len: len as u64, max });
        }
        // Answered requests that linger for read repair do not count: a
        // replica that is slow or dead must not turn clients away.
        if self.pending.len() - self.lingering.len() >= self.config.requests_max as usize {
            let limit = self.config.requests_max.into();
            return Err(ClientError::Overloaded { what: "requests in flight".into(), limit });
        }
        Ok(())
    }

    fn start_client_write(
        &mut self,
        id: RequestId,
        key: Vec<u8>,
        value: Value,
        replaces: Replaces,
        (consistency, strict): (Consistency, bool),
    ) {
        let seen = match replaces {
            // Parsed here, at the door: a forward carries a context already well formed.
            Replaces::Context(context) => match CausalContext::from_bytes(&context.0) {
                Ok(seen) => Some(seen),
                Err(error) => {
                    return self.reply_write(id, Err(ClientError::BadContext { reason: error.to_string() }));
                }
            },
            Replaces::Held => None,
            Replaces::Read => {
                let then = WriteAfter { value, consistency, strict };
                return self.coordinate_get(id, key, consistency, Some(then));
            }
        };
        self.start_write(Origin::Client(id), Write { key, value, seen, consistency, strict });
    }

    /// A read was decided: answer the client's get with it, or start the
    /// write that waited for it, over exactly what it saw.
    pub(super) fn read_decided(
        &mut self,
        client: RequestId,
        key: Vec<u8>,
        then: Option<WriteAfter>,
        outcome: Result<Seen, ClientError>,
    ) {
        let Some(WriteAfter { value, consistency, strict }) = then else {
            let read =
                outcome.map(|seen| Read { values: seen.values, context: Context(seen.context.to_bytes()) });
            return self.reply_read(client, read);
        };
        let (seen, replaced) = match outcome {
            // Nothing live to delete: a tombstone would change nothing a
            // read can see, so none is written.
            Ok(Seen { values, context }) if values.is_empty() && value == Value::Tombstone => {
                self.replaced.insert(client, Replaced::Values(values));
                return self.reply_write(client, Ok(Acknowledged { context, fallbacks: 0 }));
            }
            Ok(Seen { values, context }) => (Some(context), Replaced::Values(values)),
            // No copy reads, so none can say what the key holds: the write
            // replaces what the primary holds, and a primary whose copy is
            // damaged replaces it (see `write`), as a blind write would.
            Err(ClientError::Damaged { .. }) => (None, Replaced::Unreadable),
            Err(error) => return self.reply_write(client, Err(error)),
        };
        invariant!(self, !self.replaced.contains_key(&client), "request {client:?} read twice");
        self.replaced.insert(client, replaced);
        self.start_write(Origin::Client(client), Write { key, value, seen, consistency, strict });
    }
}
