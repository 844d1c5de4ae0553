//! The Redis commands keel knows but does not run, each with the reason.
//!
//! A client that sends `LPUSH` or `INCR` deserves more than Redis's
//! "unknown command": it should learn that keel knows the command and why it
//! refuses it, so its author can decide what to do. Each category below has
//! one reason, written once. Only names that are neither here nor in
//! [`COMMANDS`](super::table::COMMANDS) get Redis's exact "unknown command"
//! wording. `COMMAND` describes the commands keel runs, never these.

use super::Value;

/// Why keel does not run a command. One sentence per category, shown after
/// `ERR keel does not support NAME: `.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Counters,
    Expiry,
    ConditionalWrites,
    PartialValues,
    Lists,
    Hashes,
    Sets,
    SortedSets,
    Collections,
    Geo,
    HyperLogLogs,
    Streams,
    PubSub,
    Scripting,
    Transactions,
    KeyScans,
    Flush,
    MultiKey,
    Internals,
    Persistence,
    Replication,
    Users,
    Administration,
}

impl Reason {
    pub fn text(self) -> &'static str {
        match self {
            Reason::Counters => "counters need CRDT counters, not implemented yet",
            Reason::Expiry => "keys cannot expire yet",
            Reason::ConditionalWrites => {
                "conditional writes need compare-and-set, which keel does not have yet"
            }
            Reason::PartialValues => {
                "keel reads and writes whole values; commands that read or edit part of a value are \
                 not implemented yet"
            }
            Reason::Lists => "keel stores strings; lists are not supported",
            Reason::Hashes => "keel stores strings; hashes are not supported",
            Reason::Sets => "keel stores strings; sets are not supported",
            Reason::SortedSets => "keel stores strings; sorted sets are not supported",
            Reason::Collections => "keel stores strings; lists, sets and sorted sets are not supported",
            Reason::Geo => "keel stores strings; geospatial indexes are not supported",
            Reason::HyperLogLogs => "keel stores strings; HyperLogLogs are not supported",
            Reason::Streams => "keel stores strings; streams are not supported",
            Reason::PubSub => "keel has no publish/subscribe",
            Reason::Scripting => "keel runs no server-side scripts or functions",
            Reason::Transactions => {
                "transactions are not implemented; after MULTI every command up to EXEC or DISCARD is \
                 refused"
            }
            Reason::KeyScans => "key scans are not implemented yet; read keys by name",
            Reason::Flush => "deleting every key of a cluster is not implemented",
            Reason::MultiKey => {
                "moving or copying values between keys needs atomic multi-key writes, which keel does \
                 not have"
            }
            Reason::Internals => {
                "keel has no Redis object internals (encodings, access times, memory accounting)"
            }
            Reason::Persistence => {
                "keel logs and syncs every write before acknowledging it; there are no snapshots or \
                 rewrites to start"
            }
            Reason::Replication => {
                "keel replicates every key to N nodes itself, with a consistency level per request; \
                 Redis replication and cluster commands do not apply"
            }
            Reason::Users => "keel has no users or passwords yet",
            Reason::Administration => {
                "this administration command is not implemented; use the keel CLI and the HTTP \
                 monitoring endpoints"
            }
        }
    }
}

/// Every refused command, lowercase, grouped by reason. A name appears once
/// and never in the table of commands keel runs (the tests check both).
const REFUSED: &[(Reason, &[&str])] = &[
    (Reason::Counters, &["decr", "decrby", "incr", "incrby", "incrbyfloat"]),
    (
        Reason::Expiry,
        &[
            "expire",
            "expireat",
            "expiretime",
            "getex",
            "persist",
            "pexpire",
            "pexpireat",
            "pexpiretime",
            "psetex",
            "pttl",
            "setex",
            "ttl",
        ],
    ),
    (Reason::ConditionalWrites, &["msetnx", "setnx"]),
    (
        Reason::PartialValues,
        &[
            "append",
            "bitcount",
            "bitfield",
            "bitfield_ro",
            "bitop",
            "bitpos",
            "getbit",
            "getrange",
            "lcs",
            "setbit",
            "setrange",
            "substr",
        ],
    ),
    (
        Reason::Lists,
        &[
            "blmove",
            "blmpop",
            "blpop",
            "brpop",
            "brpoplpush",
            "lindex",
            "linsert",
            "llen",
            "lmove",
            "lmpop",
            "lpop",
            "lpos",
            "lpush",
            "lpushx",
            "lrange",
            "lrem",
            "lset",
            "ltrim",
            "rpop",
            "rpoplpush",
            "rpush",
            "rpushx",
        ],
    ),
    (
        Reason::Hashes,
        &[
            "hdel",
            "hexists",
            "hexpire",
            "hexpireat",
            "hexpiretime",
            "hget",
            "hgetall",
            "hgetdel",
            "hgetex",
            "hincrby",
            "hincrbyfloat",
            "hkeys",
            "hlen",
            "hmget",
            "hmset",
            "hpersist",
            "hpexpire",
            "hpexpireat",
            "hpexpiretime",
            "hpttl",
            "hrandfield",
            "hscan",
            "hset",
            "hsetex",
            "hsetnx",
            "hstrlen",
            "httl",
            "hvals",
        ],
    ),
    (
        Reason::Sets,
        &[
            "sadd",
            "scard",
            "sdiff",
            "sdiffstore",
            "sinter",
            "sintercard",
            "sinterstore",
            "sismember",
            "smembers",
            "smismember",
            "smove",
            "spop",
            "srandmember",
            "srem",
            "sscan",
            "sunion",
            "sunionstore",
        ],
    ),
    (
        Reason::SortedSets,
        &[
            "bzmpop",
            "bzpopmax",
            "bzpopmin",
            "zadd",
            "zcard",
            "zcount",
            "zdiff",
            "zdiffstore",
            "zincrby",
            "zinter",
            "zintercard",
            "zinterstore",
            "zlexcount",
            "zmpop",
            "zmscore",
            "zpopmax",
            "zpopmin",
            "zrandmember",
            "zrange",
            "zrangebylex",
            "zrangebyscore",
            "zrangestore",
            "zrank",
            "zrem",
            "zremrangebylex",
            "zremrangebyrank",
            "zremrangebyscore",
            "zrevrange",
            "zrevrangebylex",
            "zrevrangebyscore",
            "zrevrank",
            "zscan",
            "zscore",
            "zunion",
            "zunionstore",
        ],
    ),
    (Reason::Collections, &["sort", "sort_ro"]),
    (
        Reason::Geo,
        &[
            "geoadd",
            "geodist",
            "geohash",
            "geopos",
            "georadius",
            "georadius_ro",
            "georadiusbymember",
            "georadiusbymember_ro",
            "geosearch",
            "geosearchstore",
        ],
    ),
    (Reason::HyperLogLogs, &["pfadd", "pfcount", "pfdebug", "pfmerge", "pfselftest"]),
    (
        Reason::Streams,
        &[
            "xack",
            "xadd",
            "xautoclaim",
            "xclaim",
            "xdel",
            "xgroup",
            "xinfo",
            "xlen",
            "xpending",
            "xrange",
            "xread",
            "xreadgroup",
            "xrevrange",
            "xsetid",
            "xtrim",
        ],
    ),
    (
        Reason::PubSub,
        &[
            "psubscribe",
            "publish",
            "pubsub",
            "punsubscribe",
            "spublish",
            "ssubscribe",
            "subscribe",
            "sunsubscribe",
            "unsubscribe",
        ],
    ),
    (
        Reason::Scripting,
        &["eval", "eval_ro", "evalsha", "evalsha_ro", "fcall", "fcall_ro", "function", "script"],
    ),
    (Reason::Transactions, &["discard", "exec", "multi", "unwatch", "watch"]),
    (Reason::KeyScans, &["keys", "randomkey", "scan"]),
    (Reason::Flush, &["flushall", "flushdb"]),
    (Reason::MultiKey, &["copy", "migrate", "move", "rename", "renamenx", "swapdb"]),
    (Reason::Internals, &["debug", "dump", "memory", "object", "restore", "restore-asking", "touch"]),
    (Reason::Persistence, &["bgrewriteaof", "bgsave", "lastsave", "save"]),
    (
        Reason::Replication,
        &[
            "asking",
            "cluster",
            "failover",
            "psync",
            "readonly",
            "readwrite",
            "replconf",
            "replicaof",
            "role",
            "slaveof",
            "sync",
            "wait",
            "waitaof",
        ],
    ),
    (Reason::Users, &["acl"]),
    (
        Reason::Administration,
        &["latency", "lolwut", "module", "monitor", "reset", "shutdown", "slowlog", "time"],
    ),
];

/// A command keel refuses, with its name as listed (lowercase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub name: &'static str,
    pub reason: Reason,
}

impl Refused {
    /// `ERR keel does not support LPUSH: keel stores strings; …`.
    pub fn error(self) -> Value {
        let name = self.name.to_ascii_uppercase();
        Value::error(format!("ERR keel does not support {name}: {}", self.reason.text()))
    }
}

/// The refused command named `name`, compared without regard to ASCII case.
pub fn lookup(name: &[u8]) -> Option<Refused> {
    REFUSED.iter().find_map(|&(reason, names)| {
        let name = names.iter().find(|listed| listed.as_bytes().eq_ignore_ascii_case(name))?;
        Some(Refused { name, reason })
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::table;
    use super::*;

    #[test]
    fn names_are_lowercase_listed_once_and_never_run() {
        let mut seen = BTreeSet::new();
        for (_, names) in REFUSED {
            for name in *names {
                assert_eq!(*name, name.to_ascii_lowercase());
                assert!(seen.insert(*name), "{name} is listed twice");
                assert!(table::lookup(name.as_bytes()).is_none(), "{name} is run and refused");
            }
        }
        // What redis-benchmark's default tests send, besides PING, SET, GET and MSET.
        for name in ["incr", "lpush", "rpush", "lpop", "rpop", "sadd", "hset", "spop", "zadd", "zpopmin"] {
            assert!(seen.contains(name), "{name}");
        }
        assert!(seen.contains("lrange") && seen.contains("xadd"));
    }

    #[test]
    fn lookups_ignore_case_and_name_the_reason() {
        let refused = lookup(b"LPush").expect("lpush");
        assert_eq!(refused, Refused { name: "lpush", reason: Reason::Lists });
        let Value::Error(text) = refused.error() else { panic!("not an error") };
        assert_eq!(text, "ERR keel does not support LPUSH: keel stores strings; lists are not supported");
        assert_eq!(lookup(b"incrbyfloat").map(|refused| refused.reason), Some(Reason::Counters));
        assert!(lookup(b"get").is_none());
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(b"").is_none());
    }
}
