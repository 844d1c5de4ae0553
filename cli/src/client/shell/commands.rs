//! What each shell command does. A command opens a fresh connection to the
//! node it talks to: between two typed lines a kept connection may have been
//! closed by the node's idle timeout, and a handshake costs nothing next to
//! a person's typing.

use std::io::{self, Write};

use keel_core::client::Consistency;
use thiserror::Error;

use super::super::addr::{ServerAddr, parse_http};
use super::super::admin::{Sample, write_members, write_ring, write_status};
use super::super::api::{Member, Status};
use super::super::http::{CallError, Connection, Read};
use super::super::parse_consistency;
use super::words::{quoted, split};

pub const HELP: &str = "\
commands:
  get KEY [LEVEL]          print the value, or every sibling
  put KEY VALUE [LEVEL]    store a value (quote values with spaces: \"a b\")
  delete KEY [LEVEL]       delete a key
  status                   the node's health, membership and storage
  ring [KEYS]              ownership per node; with KEYS, a sample key distribution
  nodes                    cluster members, numbered for switch
  switch N|NODE|ADDR       talk to member N (or node id, or host:port) from now on
  context                  the context of the last get, put or delete
  help                     this list
  quit                     leave (also exit, or Ctrl-D)
LEVEL is one, quorum, all or a replica count; the node's default is quorum.
In double quotes, \\xHH writes any byte. Lines starting with # are ignored.";

/// Whether the loop goes on after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

#[derive(Debug, Error)]
pub enum ShellError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("{0}")]
    Usage(String),
    /// The shell's own output failed; the loop stops.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

/// The shell's state between commands.
#[derive(Debug)]
pub struct Shell {
    server: ServerAddr,
    /// The key and context of the last key command.
    last_context: Option<(Vec<u8>, String)>,
    /// Members as the last `status` or `nodes` listed them, for `switch N`.
    members: Vec<Member>,
}

impl Shell {
    pub fn new(server: ServerAddr) -> Shell {
        Shell { server, last_context: None, members: Vec::new() }
    }

    pub fn server(&self) -> &ServerAddr {
        &self.server
    }

    pub fn prompt(&self) -> String {
        format!("keel {}> ", self.server)
    }

    /// Runs one line.
    pub async fn execute(&mut self, line: &str, out: &mut dyn Write) -> Result<Flow, ShellError> {
        if line.trim_start().starts_with('#') {
            return Ok(Flow::Continue);
        }
        let words = split(line).map_err(ShellError::Usage)?;
        let Some((name, args)) = words.split_first() else { return Ok(Flow::Continue) };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        match (name.as_str(), args) {
            ("get", [key, level @ ..]) if level.len() <= 1 => self.get(key, level, out).await?,
            ("put" | "set", [key, value, level @ ..]) if level.len() <= 1 => {
                self.put(key, value, level, out).await?
            }
            ("delete" | "del", [key, level @ ..]) if level.len() <= 1 => self.delete(key, level, out).await?,
            ("status", []) => self.status(out).await?,
            ("ring", []) => self.ring(None, out).await?,
            ("ring", [count]) => self.ring(Some(count), out).await?,
            ("nodes", []) => self.nodes(out).await?,
            ("switch", [target]) => self.switch(target, out).await?,
            ("switch", []) => writeln!(out, "talking to {}", self.server)?,
            ("context", []) => self.context(out)?,
            ("help" | "?", _) => writeln!(out, "{HELP}")?,
            ("quit" | "exit", []) => return Ok(Flow::Quit),
            ("get" | "put" | "set" | "delete" | "del" | "status" | "ring" | "nodes" | "switch", _) => {
                return Err(ShellError::Usage(format!("wrong arguments for {name}; type help")));
            }
            _ => return Err(ShellError::Usage(format!("unknown command {name:?}; type help"))),
        }
        Ok(Flow::Continue)
    }

    async fn get(&mut self, key: &[u8], level: &[Vec<u8>], out: &mut dyn Write) -> Result<(), ShellError> {
        let consistency = consistency(level)?;
        let read = Connection::open(&self.server).await?.get(key, consistency).await?;
        match read {
            Read::NotFound { context } => {
                writeln!(out, "(not found)")?;
                self.last_context = Some((key.to_vec(), context));
            }
            Read::Found { values, context } if values.len() == 1 => {
                writeln!(out, "{}", quoted(&values[0]))?;
                self.last_context = Some((key.to_vec(), context));
            }
            Read::Found { values, context } => {
                writeln!(
                    out,
                    "({} siblings: writes that did not see each other; a put replaces them)",
                    values.len()
                )?;
                for (index, value) in values.iter().enumerate() {
                    writeln!(out, "{}) {}", index + 1, quoted(value))?;
                }
                self.last_context = Some((key.to_vec(), context));
            }
        }
        Ok(())
    }

    async fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        level: &[Vec<u8>],
        out: &mut dyn Write,
    ) -> Result<(), ShellError> {
        let consistency = consistency(level)?;
        let mut connection = Connection::open(&self.server).await?;
        let context = connection.put(key, value.to_vec().into(), None, consistency).await?;
        self.last_context = Some((key.to_vec(), context));
        writeln!(out, "OK")?;
        Ok(())
    }

    async fn delete(&mut self, key: &[u8], level: &[Vec<u8>], out: &mut dyn Write) -> Result<(), ShellError> {
        let consistency = consistency(level)?;
        let context = Connection::open(&self.server).await?.delete(key, None, consistency).await?;
        self.last_context = Some((key.to_vec(), context));
        writeln!(out, "OK")?;
        Ok(())
    }

    async fn status(&mut self, out: &mut dyn Write) -> Result<(), ShellError> {
        let mut connection = Connection::open(&self.server).await?;
        let health = connection.health().await?;
        let status = connection.status().await?;
        write_status(out, &status, Some(&health))?;
        self.members = status.members;
        Ok(())
    }

    async fn ring(&mut self, count: Option<&Vec<u8>>, out: &mut dyn Write) -> Result<(), ShellError> {
        let count = match count {
            None => None,
            Some(text) => match String::from_utf8_lossy(text).parse::<u64>() {
                Ok(count @ 1..=10_000_000) => Some(count),
                _ => return Err(ShellError::Usage("ring KEYS takes a count from 1 to 10000000".into())),
            },
        };
        let ring = Connection::open(&self.server).await?.ring().await?;
        let sample = count.map(|count| Sample::take(&ring, "key:", count));
        write_ring(out, &ring, sample.as_ref())?;
        Ok(())
    }

    async fn nodes(&mut self, out: &mut dyn Write) -> Result<(), ShellError> {
        let status = Connection::open(&self.server).await?.status().await?;
        write_members(out, &status)?;
        self.members = status.members;
        Ok(())
    }

    fn context(&self, out: &mut dyn Write) -> Result<(), ShellError> {
        match &self.last_context {
            Some((key, context)) => writeln!(out, "{context}  (key {})", quoted(key))?,
            None => writeln!(out, "(no context yet: get, put or delete a key first)")?,
        }
        Ok(())
    }

    /// `switch N` and `switch NODE` pick a member; anything else is an address.
    async fn switch(&mut self, target: &[u8], out: &mut dyn Write) -> Result<(), ShellError> {
        let target = String::from_utf8_lossy(target).into_owned();
        // A bare number is a member: no one names a host by digits alone.
        let is_member =
            target.parse::<usize>().is_ok() || self.members.iter().any(|member| member.node == target);
        if !is_member {
            let server = parse_http(&target).map_err(|error| ShellError::Usage(error.to_string()))?;
            self.server = server;
            let status = match Connection::open(&self.server).await {
                Ok(mut connection) => connection.status().await,
                Err(error) => Err(error),
            };
            match status {
                Ok(status) => writeln!(out, "talking to node {} at {}", status.node, self.server)?,
                Err(error) => writeln!(out, "talking to {} (it does not answer yet: {error})", self.server)?,
            }
            return Ok(());
        }
        let (current, members) = self.fresh_members().await?;
        let member = match target.parse::<usize>() {
            Ok(index) => members.get(index.wrapping_sub(1)),
            Err(_) => members.iter().find(|member| member.node == target),
        };
        let Some(member) = member.cloned() else {
            let message = format!("no member {target}; `nodes` lists {} members", members.len());
            return Err(ShellError::Usage(message));
        };
        let server = http_address_of(&member, &current, &self.server)?;
        let status = Connection::open(&server).await?.status().await?;
        if status.node != member.node {
            let message = format!(
                "{server} is node {}, not {}; the node does not report {}'s HTTP address, so use switch ADDR",
                status.node, member.node, member.node
            );
            return Err(ShellError::Usage(message));
        }
        self.server = server;
        self.members = status.members;
        writeln!(out, "talking to node {} at {}", member.node, self.server)?;
        Ok(())
    }

    async fn fresh_members(&mut self) -> Result<(Status, Vec<Member>), ShellError> {
        let status = Connection::open(&self.server).await?.status().await?;
        let members = status.members.clone();
        self.members = members.clone();
        Ok((status, members))
    }
}

/// A member's HTTP address: as the node reports it, or else assumed to sit
/// at the same distance from its peer port as this node's does, which is how
/// a cluster laid out port by port looks. The caller checks the guess.
fn http_address_of(member: &Member, current: &Status, server: &ServerAddr) -> Result<ServerAddr, ShellError> {
    if let Some(address) = &member.http_address {
        return parse_http(address).map_err(|error| ShellError::Usage(error.to_string()));
    }
    let unknown = || ShellError::Usage(format!("{}'s HTTP address is unknown; use switch ADDR", member.node));
    let peer = |node: &str| {
        let member = current.members.iter().find(|member| member.node == node)?;
        ServerAddr::parse(&member.address, 0).ok().filter(|address| address.port() != 0)
    };
    let this_peer = peer(&current.node).ok_or_else(unknown)?;
    let other_peer = peer(&member.node).ok_or_else(unknown)?;
    let offset = i32::from(server.port()) - i32::from(this_peer.port());
    let port = u16::try_from(i32::from(other_peer.port()) + offset).map_err(|_| unknown())?;
    // A node bound to every interface advertises no host worth dialling.
    let host = match other_peer.host() {
        "0.0.0.0" | "::" => server.host(),
        host => host,
    };
    Ok(ServerAddr::new(host, port))
}

fn consistency(level: &[Vec<u8>]) -> Result<Option<Consistency>, ShellError> {
    match level.first() {
        None => Ok(None),
        Some(text) => parse_consistency(&String::from_utf8_lossy(text)).map(Some).map_err(ShellError::Usage),
    }
}
