//! The Redis protocol: RESP2, and RESP3 after `HELLO 3`.
//!
//! Layers, each usable alone: [`parse`] turns bytes into a [`Command`];
//! the command layer turns a command into calls on a [`Handle`](crate::service::Handle)
//! and a [`Value`]; [`Value::encode`] writes it for the connection's protocol
//! version; [`serve_resp`] runs connections. Which commands exist and how
//! keel's semantics differ from Redis's is written in `docs/API.md`.

use std::time::Duration;

mod admin;
mod command;
mod describe;
mod keys;
mod parse;
mod refused;
mod server;
mod table;
mod value;

pub use command::{Answer, Session, Shared, client_error, execute};
pub use parse::{Command, Parser, RespError, parse};
pub use server::serve_resp;
pub use table::{COMMANDS, Spec};
pub use value::{Value, Version};

/// Bounds on what one client may send and hold.
#[derive(Clone, Debug)]
pub struct RespLimits {
    /// Longest inline command, and longest length line (`*…` or `$…`) of a
    /// multibulk request. Redis uses 64 KiB.
    pub inline_bytes_max: u32,
    /// Longest bulk string. Above the node's value limit on purpose, so a
    /// value that is only somewhat too large gets the node's precise error
    /// instead of a protocol error that closes the connection.
    pub bulk_bytes_max: u32,
    /// Most arguments in one request, the command name included.
    pub args_max: u32,
    /// Most bytes in one request.
    pub request_bytes_max: u64,
    /// Most open client connections; more are refused as Redis refuses them.
    pub connections_max: u32,
    /// A connection idle this long is closed. `None` keeps idle connections.
    pub idle_timeout: Option<Duration>,
    /// How long a reply may wait for a client that does not read.
    pub write_timeout: Duration,
    /// Most single-key requests one multi-key command keeps in flight.
    pub fanout_max: u32,
}

impl Default for RespLimits {
    fn default() -> RespLimits {
        RespLimits {
            inline_bytes_max: 64 * 1024,
            bulk_bytes_max: 32 * 1024 * 1024,
            args_max: 1024 * 1024,
            request_bytes_max: 64 * 1024 * 1024,
            connections_max: 10_000,
            idle_timeout: Some(Duration::from_secs(300)),
            write_timeout: Duration::from_secs(30),
            fanout_max: 32,
        }
    }
}

#[cfg(test)]
mod tests;
