//! Connection and server commands: PING, ECHO, SELECT, HELLO, CLIENT, AUTH
//! and DBSIZE. INFO, CONFIG and COMMAND live in `describe`; the commands keel
//! refuses, with their reasons, in `refused`.

use super::command::{Session, Shared, syntax_error, truncated, wrong_arity};
use super::table::Spec;
use super::{Value, Version, describe};

/// The Redis version whose protocol keel speaks for the commands it has.
/// Clients gate features on it (RESP3, CLIENT SETINFO), so it names a
/// release with everything keel answers.
pub(super) const REDIS_VERSION: &str = "7.2.4";

/// Commands that need no node request. Arity was checked against the table,
/// so the arguments a command requires are present and may be indexed.
pub(super) fn run(shared: &Shared, session: &mut Session, spec: &Spec, args: Vec<Vec<u8>>) -> Value {
    match spec.name {
        "ping" => match args.len() {
            1 => Value::Simple("PONG".into()),
            2 => Value::Bulk(args.into_iter().nth(1).unwrap_or_default()),
            _ => wrong_arity("ping"),
        },
        "echo" => Value::Bulk(args.into_iter().nth(1).unwrap_or_default()),
        "select" => select(&args[1]),
        "hello" => hello(session, args),
        "client" => client(session, args),
        "auth" => Value::error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ),
        // The keys this node stores as a replica, estimated: see `NodeStatus::keys_estimate`.
        "dbsize" => match shared.introspect.status().keys_estimate {
            Some(keys) => Value::Integer(i64::try_from(keys).unwrap_or(i64::MAX)),
            None => Value::error("ERR this node has no estimate of the keys it stores yet"),
        },
        "info" => describe::info(shared, &args),
        "config" => describe::config(shared, args),
        "command" => describe::command(args),
        other => Value::error(format!("ERR command '{other}' is in the table but has no implementation")),
    }
}

fn select(index: &[u8]) -> Value {
    match std::str::from_utf8(index).ok().and_then(|text| text.parse::<i64>().ok()) {
        Some(0) => Value::ok(),
        Some(_) => Value::error("ERR DB index is out of range"),
        None => Value::error("ERR value is not an integer or out of range"),
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`. The reply is already
/// in the protocol version it chooses, as in Redis.
fn hello(session: &mut Session, args: Vec<Vec<u8>>) -> Value {
    let mut args = args.into_iter().skip(1);
    let mut version = session.version;
    if let Some(asked) = args.next() {
        version = match std::str::from_utf8(&asked).ok().and_then(|text| text.parse::<i64>().ok()) {
            Some(2) => Version::Resp2,
            Some(3) => Version::Resp3,
            Some(_) => return Value::error("NOPROTO unsupported protocol version"),
            None => return Value::error("ERR Protocol version is not an integer or out of range"),
        };
    }
    let mut name = None;
    while let Some(option) = args.next() {
        match option.to_ascii_uppercase().as_slice() {
            b"AUTH" => {
                if args.next().and(args.next()).is_none() {
                    return syntax_error();
                }
                return Value::error("ERR keel does not support AUTH yet: it has no users or passwords");
            }
            b"SETNAME" => {
                let Some(asked) = args.next() else { return syntax_error() };
                if !valid_name(&asked) {
                    return invalid_name("Client names");
                }
                name = Some(asked);
            }
            _ => {
                return Value::error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    truncated(&option, 128)
                ));
            }
        }
    }
    session.version = version;
    if let Some(name) = name {
        session.name = name;
    }
    let field = |key: &str, value: Value| (Value::bulk(key), value);
    Value::Map(vec![
        field("server", Value::bulk("redis")),
        field("version", Value::bulk(REDIS_VERSION)),
        field("proto", Value::Integer(version.number())),
        field("id", Value::Integer(session.id as i64)),
        field("mode", Value::bulk("standalone")),
        field("role", Value::bulk("master")),
        field("modules", Value::Array(Vec::new())),
    ])
}

fn client(session: &mut Session, args: Vec<Vec<u8>>) -> Value {
    let subcommand = args[1].to_ascii_lowercase();
    let exact =
        |count: usize, name: &str| (args.len() != count).then(|| wrong_arity(&format!("client|{name}")));
    match subcommand.as_slice() {
        b"setname" => {
            if let Some(error) = exact(3, "setname") {
                return error;
            }
            if !valid_name(&args[2]) {
                return invalid_name("Client names");
            }
            session.name = args[2].clone();
            Value::ok()
        }
        b"getname" => exact(2, "getname").unwrap_or_else(|| {
            Some(session.name.clone()).filter(|name| !name.is_empty()).map_or(Value::Null, Value::Bulk)
        }),
        b"id" => exact(2, "id").unwrap_or(Value::Integer(session.id as i64)),
        b"info" => exact(2, "info").unwrap_or_else(|| Value::text(client_info(session))),
        b"setinfo" => exact(4, "setinfo").unwrap_or_else(|| set_info(session, &args[2], &args[3])),
        b"help" => help(&[
            "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GETNAME, SETNAME <name>, ID, INFO, SETINFO <LIB-NAME|LIB-VER> <value>, HELP",
        ]),
        _ => unknown_subcommand(&args[1], "CLIENT"),
    }
}

fn set_info(session: &mut Session, attribute: &[u8], value: &[u8]) -> Value {
    let slot = match attribute.to_ascii_lowercase().as_slice() {
        b"lib-name" => &mut session.lib_name,
        b"lib-ver" => &mut session.lib_version,
        _ => return Value::error(format!("ERR Unrecognized option '{}'", truncated(attribute, 128))),
    };
    if !valid_name(value) {
        return invalid_name(&String::from_utf8_lossy(attribute).to_ascii_lowercase());
    }
    *slot = value.to_vec();
    Value::ok()
}

/// One line in the format of Redis's `CLIENT INFO`, with the fields keel has.
fn client_info(session: &Session) -> String {
    let address = |addr: Option<std::net::SocketAddr>| addr.map(|addr| addr.to_string()).unwrap_or_default();
    format!(
        "id={} addr={} laddr={} fd=-1 name={} age={} idle=0 flags=N db=0 sub=0 psub=0 multi=-1 \
         cmd=client|info user=default resp={} lib-name={} lib-ver={}\n",
        session.id,
        address(session.peer),
        address(session.local),
        String::from_utf8_lossy(&session.name),
        session.opened.elapsed().as_secs(),
        session.version.number(),
        String::from_utf8_lossy(&session.lib_name),
        String::from_utf8_lossy(&session.lib_version),
    )
}

/// Redis allows names of printable ASCII without spaces, or the empty name.
fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|byte| (b'!'..=b'~').contains(byte))
}

fn invalid_name(what: &str) -> Value {
    Value::error(format!("ERR {what} cannot contain spaces, newlines or special characters."))
}

pub(super) fn unknown_subcommand(subcommand: &[u8], command: &str) -> Value {
    Value::error(format!("ERR unknown subcommand '{}'. Try {command} HELP.", truncated(subcommand, 128)))
}

pub(super) fn help(lines: &[&str]) -> Value {
    Value::Array(lines.iter().map(|line| Value::Simple((*line).into())).collect())
}
