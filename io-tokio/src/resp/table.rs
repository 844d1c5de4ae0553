//! The commands keel answers over RESP: names, arities and key positions.
//!
//! One table serves three purposes: dispatch finds a command here, the arity
//! check uses Redis's convention (a positive arity is exact, a negative one
//! is a minimum, the name counted), and `COMMAND` / `COMMAND DOCS` describe
//! exactly these commands to clients such as redis-cli. Redis commands keel
//! knows but does not run are in `refused`, with their reasons.

/// How a command is described to clients.
#[derive(Debug)]
pub struct Spec {
    /// Lowercase, as Redis reports command names.
    pub name: &'static str,
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    pub group: &'static str,
    pub summary: &'static str,
}

impl Spec {
    /// True when `argc` (name included) fits the arity.
    pub fn accepts(&self, argc: usize) -> bool {
        let argc = argc as i64;
        if self.arity >= 0 { argc == self.arity } else { argc >= -self.arity }
    }
}

const READ: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write", "denyoom"];
const CONNECTION: &[&str] = &["fast", "loading", "stale"];
const SERVER: &[&str] = &["loading", "stale"];
const ADMIN: &[&str] = &["admin", "noscript", "loading", "stale"];

macro_rules! spec {
    ($name:literal, $arity:literal, $flags:expr, [$first:literal, $last:literal, $step:literal], $group:literal, $summary:literal) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $first,
            last_key: $last,
            step: $step,
            group: $group,
            summary: $summary,
        }
    };
}

/// Sorted by name so lookups can search it.
pub const COMMANDS: &[Spec] = &[
    spec!(
        "auth",
        -2,
        CONNECTION,
        [0, 0, 0],
        "connection",
        "Authenticates the connection (keel has no passwords yet)."
    ),
    spec!("client", -2, CONNECTION, [0, 0, 0], "connection", "Names the connection and reports on it."),
    spec!("command", -1, SERVER, [0, 0, 0], "server", "Describes the commands keel supports."),
    spec!("config", -2, ADMIN, [0, 0, 0], "server", "Reads configuration parameters (GET only)."),
    spec!("dbsize", 1, READ, [0, 0, 0], "server", "Estimates the number of keys stored on this node."),
    spec!("del", -2, WRITE, [1, -1, 1], "generic", "Deletes keys; returns how many held a value."),
    spec!("echo", 2, CONNECTION, [0, 0, 0], "connection", "Returns the given string."),
    spec!("exists", -2, READ, [1, -1, 1], "generic", "Counts how many of the given keys hold a value."),
    spec!(
        "get",
        2,
        READ,
        [1, 1, 1],
        "string",
        "Returns a key's value (the first sibling if there are several)."
    ),
    spec!("getdel", 2, WRITE, [1, 1, 1], "string", "Deletes a key and returns the value it deleted."),
    spec!("getset", 3, WRITE, [1, 1, 1], "string", "Sets a key's value and returns the value it replaced."),
    spec!(
        "hello",
        -1,
        CONNECTION,
        [0, 0, 0],
        "connection",
        "Chooses RESP2 or RESP3 and describes the server."
    ),
    spec!("info", -1, SERVER, [0, 0, 0], "server", "Reports on the server, its clients and the cluster."),
    spec!(
        "keel.del",
        -2,
        WRITE,
        [1, 1, 1],
        "keel",
        "Deletes a key with a causal context; returns the new context."
    ),
    spec!("keel.get", -2, READ, [1, 1, 1], "keel", "Returns a key's context and all its siblings."),
    spec!(
        "keel.put",
        -3,
        WRITE,
        [1, 1, 1],
        "keel",
        "Writes a value with a causal context; returns the new context."
    ),
    spec!("mget", -2, READ, [1, -1, 1], "string", "Returns the values of several keys."),
    spec!("mset", -3, WRITE, [1, -1, 2], "string", "Sets several keys (each write is separate, not atomic)."),
    spec!("ping", -1, CONNECTION, [0, 0, 0], "connection", "Answers PONG, or echoes the message."),
    spec!("quit", -1, CONNECTION, [0, 0, 0], "connection", "Closes the connection."),
    spec!("select", 2, CONNECTION, [0, 0, 0], "connection", "Selects database 0, the only one."),
    spec!("set", -3, WRITE, [1, 1, 1], "string", "Sets a key's value, replacing what a read sees."),
    spec!("strlen", 2, READ, [1, 1, 1], "string", "Returns the length of the value GET returns."),
    spec!("type", 2, READ, [1, 1, 1], "generic", "Returns string if the key holds a value, else none."),
    spec!("unlink", -2, WRITE, [1, -1, 1], "generic", "Deletes keys, as DEL does."),
];

/// The command named `name`, compared without regard to ASCII case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    if name.len() > 16 {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    COMMANDS.binary_search_by(|spec| spec.name.as_bytes().cmp(&lower)).ok().map(|index| &COMMANDS[index])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_lookups_ignore_case() {
        assert!(COMMANDS.windows(2).all(|pair| pair[0].name < pair[1].name));
        assert_eq!(lookup(b"GeT").map(|spec| spec.name), Some("get"));
        assert_eq!(lookup(b"KEEL.GET").map(|spec| spec.name), Some("keel.get"));
        assert!(lookup(b"incr").is_none());
        assert!(lookup(b"").is_none());
    }

    #[test]
    fn arity_follows_redis() {
        let get = lookup(b"get").expect("get");
        assert!(get.accepts(2) && !get.accepts(1) && !get.accepts(3));
        let del = lookup(b"del").expect("del");
        assert!(del.accepts(2) && del.accepts(5) && !del.accepts(1));
    }
}
