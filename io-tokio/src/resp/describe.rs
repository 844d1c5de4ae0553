//! Commands that describe the server: INFO, CONFIG GET and COMMAND.
//!
//! redis-cli, redis-benchmark and client libraries call these on connect, so
//! they answer in Redis's formats, with keel's own facts.

use std::fmt::Write as _;

use super::Value;
use super::admin::{REDIS_VERSION, help, unknown_subcommand};
use super::command::{Shared, wrong_arity};
use super::table::{COMMANDS, Spec, lookup};
use crate::metrics::Protocol;

const SECTIONS: [&str; 6] = ["server", "clients", "memory", "stats", "keyspace", "keel"];

/// `INFO [section …]`: `# Section` headers and `field:value` lines.
pub(super) fn info(shared: &Shared, args: &[Vec<u8>]) -> Value {
    let asked: Vec<String> =
        args[1..].iter().map(|arg| String::from_utf8_lossy(arg).to_ascii_lowercase()).collect();
    let everything = asked.is_empty()
        || asked.iter().any(|name| matches!(name.as_str(), "all" | "everything" | "default"));
    let status = shared.introspect.status();
    let metrics = shared.handle.metrics();
    let mut out = String::new();
    for section in SECTIONS.iter().filter(|section| everything || asked.iter().any(|name| name == *section)) {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let mut title = section.to_string();
        title[..1].make_ascii_uppercase();
        let _ = write!(out, "# {title}\r\n");
        let mut field = |name: &str, value: &dyn std::fmt::Display| {
            let _ = write!(out, "{name}:{value}\r\n");
        };
        match *section {
            "server" => {
                let uptime = shared.started.elapsed().as_secs();
                field("redis_version", &REDIS_VERSION);
                field("redis_mode", &"standalone");
                field("keel_version", &env!("CARGO_PKG_VERSION"));
                field("arch_bits", &(usize::BITS));
                field("process_id", &std::process::id());
                field("tcp_port", &shared.port);
                field("uptime_in_seconds", &uptime);
                field("uptime_in_days", &(uptime / 86_400));
            }
            "clients" => {
                field("connected_clients", &metrics.connections_open(Protocol::Resp));
                field("maxclients", &shared.limits.connections_max);
                field("blocked_clients", &0);
            }
            // Redis counts its allocator's bytes; keel reports the process's
            // resident memory, which redis-cli --stat shows as `mem`.
            "memory" => {
                if let Some(bytes) = resident_bytes() {
                    field("used_memory", &bytes);
                    field("used_memory_human", &human_bytes(bytes));
                    field("used_memory_rss", &bytes);
                }
            }
            "stats" => {
                field("total_connections_received", &metrics.connections_accepted(Protocol::Resp));
                field("total_commands_processed", &metrics.commands_processed());
                field("rejected_connections", &metrics.connections_refused(Protocol::Resp));
            }
            // The keys this node stores, estimated (`NodeStatus::keys_estimate`).
            "keyspace" => {
                if let Some(keys) = status.keys_estimate {
                    field("db0", &format!("keys={keys},expires=0,avg_ttl=0"));
                }
            }
            _ => {
                field("keel_node", &status.node);
                field("keel_cluster", &status.cluster);
                field("keel_replicas", &status.replicas);
                field("keel_members", &status.members.len());
                let up = status.members.iter().filter(|member| member.state.name() == "up").count();
                field("keel_members_up", &up);
                field("keel_hints_pending", &status.hints_pending);
                field("keel_storage_failed", &u8::from(status.storage_failed));
            }
        }
    }
    Value::text(out)
}

/// The process's resident set size, where the system reports it (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Bytes as Redis's `used_memory_human` writes them: `1.50M`.
fn human_bytes(bytes: u64) -> String {
    let units = [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    match units.iter().find(|(_, size)| bytes >= *size) {
        Some((unit, size)) => format!("{:.2}{unit}", bytes as f64 / *size as f64),
        None => format!("{bytes}B"),
    }
}

/// `CONFIG GET pattern …`; everything else is configured outside RESP.
pub(super) fn config(shared: &Shared, args: Vec<Vec<u8>>) -> Value {
    let subcommand = args[1].to_ascii_lowercase();
    match subcommand.as_slice() {
        b"get" if args.len() < 3 => wrong_arity("config|get"),
        b"get" => {
            let limits = &shared.limits;
            let idle = limits.idle_timeout.map_or(0, |timeout| timeout.as_secs());
            // Every write is in the write-ahead log and synced before it is
            // acknowledged: append-only with fsync always, no snapshots.
            let parameters: [(&str, String); 9] = [
                ("appendfsync", "always".into()),
                ("appendonly", "yes".into()),
                ("client-query-buffer-limit", limits.request_bytes_max.to_string()),
                ("databases", "1".into()),
                ("maxclients", limits.connections_max.to_string()),
                ("port", shared.port.to_string()),
                ("proto-max-bulk-len", limits.bulk_bytes_max.to_string()),
                ("save", String::new()),
                ("timeout", idle.to_string()),
            ];
            let patterns = &args[2..];
            let pairs = parameters
                .into_iter()
                .filter(|(name, _)| patterns.iter().any(|pattern| glob(pattern, name.as_bytes())))
                .map(|(name, value)| (Value::bulk(name), Value::bulk(value)))
                .collect();
            Value::Map(pairs)
        }
        b"set" | b"resetstat" | b"rewrite" => Value::error(format!(
            "ERR keel does not support CONFIG {}: configure keel with its configuration file, flags \
             or environment",
            String::from_utf8_lossy(&subcommand).to_ascii_uppercase()
        )),
        b"help" => help(&["CONFIG <subcommand> [<arg> ...]. Subcommands are:", "GET <pattern>", "HELP"]),
        _ => unknown_subcommand(&args[1], "CONFIG"),
    }
}

/// `COMMAND [COUNT | INFO name… | DOCS name… | LIST]`.
pub(super) fn command(args: Vec<Vec<u8>>) -> Value {
    let Some(subcommand) = args.get(1).map(|arg| arg.to_ascii_lowercase()) else {
        return Value::Array(COMMANDS.iter().map(command_info).collect());
    };
    let named = &args[2..];
    match subcommand.as_slice() {
        b"count" => Value::Integer(COMMANDS.len() as i64),
        b"list" => Value::Array(COMMANDS.iter().map(|spec| Value::bulk(spec.name)).collect()),
        b"info" if named.is_empty() => Value::Array(COMMANDS.iter().map(command_info).collect()),
        b"info" => {
            Value::Array(named.iter().map(|name| lookup(name).map_or(Value::Null, command_info)).collect())
        }
        b"docs" => {
            let specs: Vec<&Spec> = if named.is_empty() {
                COMMANDS.iter().collect()
            } else {
                named.iter().filter_map(|name| lookup(name)).collect()
            };
            Value::Map(specs.into_iter().map(|spec| (Value::bulk(spec.name), command_docs(spec))).collect())
        }
        b"getkeys" | b"getkeysandflags" => Value::error("ERR keel does not support COMMAND GETKEYS"),
        b"help" => {
            help(&["COMMAND <subcommand> [<arg> ...]. Subcommands are:", "COUNT, DOCS, INFO, LIST, HELP"])
        }
        _ => unknown_subcommand(&args[1], "COMMAND"),
    }
}

/// Redis 7's ten-element command description.
fn command_info(spec: &Spec) -> Value {
    Value::Array(vec![
        Value::bulk(spec.name),
        Value::Integer(spec.arity),
        Value::Set(spec.flags.iter().map(|flag| Value::Simple((*flag).into())).collect()),
        Value::Integer(spec.first_key),
        Value::Integer(spec.last_key),
        Value::Integer(spec.step),
        Value::Set(Vec::new()),
        Value::Array(Vec::new()),
        Value::Array(Vec::new()),
        Value::Array(Vec::new()),
    ])
}

fn command_docs(spec: &Spec) -> Value {
    Value::Map(vec![
        (Value::bulk("summary"), Value::bulk(spec.summary)),
        (Value::bulk("since"), Value::bulk("0.1.0")),
        (Value::bulk("group"), Value::bulk(spec.group)),
    ])
}

/// Redis's glob, without regard to ASCII case: `*`, `?` and literal bytes.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&byte) if byte == b'?' || byte.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&byte| byte == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_written_as_redis_writes_it() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.50K");
        assert_eq!(human_bytes(3 << 20), "3.00M");
        assert_eq!(human_bytes(5 << 30), "5.00G");
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().is_some_and(|bytes| bytes > 0));
        }
    }

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob(b"save", b"save"));
        assert!(glob(b"SAVE", b"save"));
        assert!(glob(b"*", b"appendonly"));
        assert!(glob(b"append*", b"appendonly"));
        assert!(glob(b"*only", b"appendonly"));
        assert!(glob(b"a?pend*ly", b"appendonly"));
        assert!(!glob(b"append", b"appendonly"));
        assert!(!glob(b"x*", b"appendonly"));
        assert!(glob(b"**", b""));
    }
}
