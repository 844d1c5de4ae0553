//! One bench client's connection, in either protocol, and how each
//! operation's answer is classified.

use hyper::body::Bytes;

use super::super::Failure;
use super::super::http::{CallError, Connection, Read};
use super::resp::{Reply, RespConnection, RespError};
use super::{Op, Outcome, Plan, Protocol};

/// A failed operation: the label it is counted under, and whether its
/// connection can carry the next one.
#[derive(Debug)]
pub struct OpFailure {
    pub kind: String,
    pub broke_connection: bool,
}

impl From<CallError> for OpFailure {
    fn from(error: CallError) -> OpFailure {
        OpFailure { kind: error.kind(), broke_connection: error.broke_connection() }
    }
}

impl From<RespError> for OpFailure {
    fn from(error: RespError) -> OpFailure {
        // Every RESP transport error leaves the stream out of step.
        OpFailure { kind: error.kind(), broke_connection: true }
    }
}

#[derive(Debug)]
pub enum Client {
    Http(Connection),
    Resp(RespConnection),
}

impl Client {
    pub async fn open(plan: &Plan) -> Result<Client, OpFailure> {
        Ok(match plan.protocol {
            Protocol::Http => Client::Http(Connection::open(&plan.server).await?),
            Protocol::Redis => Client::Resp(RespConnection::open(&plan.server).await?),
        })
    }

    /// Opens a connection and checks that a keel node answers on it, so a
    /// wrong address fails the command at once (exit 2) rather than every op.
    pub async fn probe(plan: &Plan) -> Result<Client, Failure> {
        match plan.protocol {
            Protocol::Http => {
                let mut connection = Connection::open(&plan.server).await?;
                connection.health().await?;
                Ok(Client::Http(connection))
            }
            Protocol::Redis => {
                let mut connection = RespConnection::open(&plan.server).await?;
                match connection.command(&[b"PING"]).await? {
                    Reply::Status(pong) if pong == "PONG" => Ok(Client::Resp(connection)),
                    other => Err(Failure::Local(format!(
                        "{} answered PING with {other:?}; is it a Redis-protocol port?",
                        plan.server
                    ))),
                }
            }
        }
    }

    pub async fn run(
        &mut self,
        plan: &Plan,
        op: Op,
        key: &[u8],
        value: &Bytes,
    ) -> Result<Outcome, OpFailure> {
        match self {
            Client::Http(connection) => http(connection, plan, op, key, value).await,
            Client::Resp(connection) => resp(connection, plan, op, key, value).await,
        }
    }
}

async fn http(
    connection: &mut Connection,
    plan: &Plan,
    op: Op,
    key: &[u8],
    value: &Bytes,
) -> Result<Outcome, OpFailure> {
    match op {
        Op::Get => match connection.get(key, plan.consistency).await? {
            Read::Found { .. } => Ok(Outcome::Found),
            Read::NotFound { .. } => Ok(Outcome::NotFound),
        },
        Op::Put => {
            connection.put(key, value.clone(), None, plan.consistency).await?;
            Ok(Outcome::Written)
        }
    }
}

/// Plain GET and SET, or keel's commands when a consistency is asked for.
async fn resp(
    connection: &mut RespConnection,
    plan: &Plan,
    op: Op,
    key: &[u8],
    value: &[u8],
) -> Result<Outcome, OpFailure> {
    let level = plan.consistency.map(|level| level.to_string());
    let reply = match (op, &level) {
        (Op::Get, None) => connection.command(&[b"GET", key]).await?,
        (Op::Put, None) => connection.command(&[b"SET", key, value]).await?,
        (Op::Get, Some(level)) => {
            connection.command(&[b"KEEL.GET", key, b"CONSISTENCY", level.as_bytes()]).await?
        }
        (Op::Put, Some(level)) => {
            connection.command(&[b"KEEL.PUT", key, value, b"CONSISTENCY", level.as_bytes()]).await?
        }
    };
    match (op, reply) {
        (_, Reply::Error(text)) => {
            // Node errors start with a code: UNAVAILABLE, TIMEOUT, OVERLOADED, ERR…
            let code = text.split_whitespace().next().unwrap_or("ERR");
            Err(OpFailure { kind: format!("redis {code}"), broke_connection: false })
        }
        (Op::Get, Reply::Bulk(Some(_))) => Ok(Outcome::Found),
        (Op::Get, Reply::Bulk(None)) => Ok(Outcome::NotFound),
        // KEEL.GET: the context, then every sibling.
        (Op::Get, Reply::Array(Some(items))) if items.len() > 1 => Ok(Outcome::Found),
        (Op::Get, Reply::Array(Some(_))) => Ok(Outcome::NotFound),
        (Op::Put, Reply::Status(_) | Reply::Bulk(Some(_))) => Ok(Outcome::Written),
        (_, _) => Err(OpFailure { kind: "unexpected reply".into(), broke_connection: false }),
    }
}
