//! `keel status` and `keel ring`: what `/health`, `/v1/status` and `/v1/ring`
//! say, laid out for a person. The shell prints the same tables.

use std::collections::BTreeMap;
use std::io::Write;

use clap::Args;
use keel_core::ring::position;

use super::api::{Health, RingView, Status};
use super::http::Connection;
use super::{Failure, ServerArgs, Streams, output};

/// Most keys `ring --keys` hashes; only counts are kept, so this bounds time.
const SAMPLE_KEYS_MAX: u64 = 100_000_000;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
#[command(after_help = concat!("\
The share column is the node's own figure from /v1/ring. Sample keys are placed
here, with the ring's public key hash and the token list the node serves, so
they show how real keys of that shape spread; only primaries are counted.", "\n\n", exit_codes!()))]
pub struct RingArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Also place N sample keys (PREFIX0, PREFIX1, …) on the ring and count
    /// how many each node is primary for.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=SAMPLE_KEYS_MAX))]
    keys: Option<u64>,
    /// The prefix of the sample keys.
    #[arg(long, value_name = "PREFIX", default_value = "key:", requires = "keys")]
    key_prefix: String,
}

/// Exit 1 when the node answers but is not healthy (storage failed).
pub async fn status(args: &StatusArgs, streams: &mut Streams<'_>) -> Result<(), Failure> {
    let mut connection = Connection::open(&args.server.server).await?;
    let health = connection.health().await?;
    let status = connection.status().await?;
    output(write_status(streams.out, &status, Some(&health)))?;
    if status.storage_failed || health.status != "ok" {
        return Err(Failure::Failed(format!("node {} is not healthy", status.node)));
    }
    Ok(())
}

pub async fn ring(args: &RingArgs, streams: &mut Streams<'_>) -> Result<(), Failure> {
    let mut connection = Connection::open(&args.server.server).await?;
    let ring = connection.ring().await?;
    let sample = args.keys.map(|count| Sample::take(&ring, &args.key_prefix, count));
    output(write_ring(streams.out, &ring, sample.as_ref()))
}

/// A person's summary of a node's status and health.
pub fn write_status(out: &mut dyn Write, status: &Status, health: Option<&Health>) -> std::io::Result<()> {
    let version =
        if status.version.is_empty() { String::new() } else { format!(", keel {}", status.version) };
    writeln!(out, "node      {} (cluster {}{version})", status.node, status.cluster)?;
    if let Some(health) = health {
        writeln!(out, "health    {}", health.status)?;
    }
    writeln!(out, "uptime    {}", duration(status.uptime_seconds))?;
    writeln!(out, "replicas  {} per key", status.replicas)?;
    match status.keys_estimate {
        Some(keys) => writeln!(out, "keys      about {keys} stored on this node")?,
        None => writeln!(out, "keys      no estimate")?,
    }
    writeln!(out, "hints     {} pending", status.hints_pending)?;
    match status.storage_failed {
        true => writeln!(out, "storage   FAILED: the node refuses writes after a write to its disk failed")?,
        false => writeln!(out, "storage   ok")?,
    }
    let mut states: BTreeMap<&str, u32> = BTreeMap::new();
    for member in &status.members {
        *states.entry(member.state.as_str()).or_default() += 1;
    }
    let states: Vec<String> = states.iter().map(|(state, count)| format!("{count} {state}")).collect();
    writeln!(out, "members   {} ({})", status.members.len(), states.join(", "))?;
    write_members(out, status)
}

/// Members numbered from 1, as `switch N` in the shell counts them.
pub fn write_members(out: &mut dyn Write, status: &Status) -> std::io::Result<()> {
    let width = status.members.iter().map(|member| member.node.len()).max().unwrap_or(0);
    for (index, member) in status.members.iter().enumerate() {
        let this = if member.node == status.node { "  (this node)" } else { "" };
        let address = &member.address;
        let state = &member.state;
        let hints = match member.hints_pending {
            0 => String::new(),
            count => format!("  ({count} hints held for it)"),
        };
        let exchanged = match member.last_exchange_seconds_ago {
            Some(seconds) => format!("  (trees compared {seconds} s ago)"),
            None => String::new(),
        };
        writeln!(
            out,
            "  {:>2}) {:<width$}  {address:<21}  {state}{this}{hints}{exchanged}",
            index + 1,
            member.node
        )?;
    }
    Ok(())
}

/// How many of a set of sample keys each node is primary for.
#[derive(Debug)]
pub struct Sample {
    pub count: u64,
    pub prefix: String,
    pub primaries: BTreeMap<String, u64>,
}

impl Sample {
    pub fn take(ring: &RingView, prefix: &str, count: u64) -> Sample {
        let mut primaries: BTreeMap<String, u64> = BTreeMap::new();
        let mut key = prefix.as_bytes().to_vec();
        for index in 0..count {
            key.truncate(prefix.len());
            key.extend_from_slice(index.to_string().as_bytes());
            if let Some(node) = ring.primary_at(position(&key)) {
                *primaries.entry(node.to_owned()).or_default() += 1;
            }
        }
        Sample { count, prefix: prefix.to_owned(), primaries }
    }
}

/// One line per node: vnodes, share of the key space, and sampled keys.
pub fn write_ring(out: &mut dyn Write, ring: &RingView, sample: Option<&Sample>) -> std::io::Result<()> {
    let mut vnodes: BTreeMap<&str, u64> = BTreeMap::new();
    for token in &ring.tokens {
        *vnodes.entry(token.node.as_str()).or_default() += 1;
    }
    let mut nodes: Vec<&str> = vnodes.keys().copied().collect();
    nodes.extend(
        ring.ownership.iter().map(|share| share.node.as_str()).filter(|node| !vnodes.contains_key(node)),
    );
    writeln!(out, "{} nodes, {} vnodes, {} replicas per key", nodes.len(), ring.tokens.len(), ring.replicas)?;
    let width = nodes.iter().map(|node| node.len()).max().unwrap_or(0).max(4);
    let header = match sample {
        Some(sample) => format!("  sample keys ({} x {}N)", sample.count, sample.prefix),
        None => String::new(),
    };
    writeln!(out, "{:<width$}  {:>6}  {:>7}{header}", "node", "vnodes", "share")?;
    for node in nodes {
        let share =
            ring.ownership.iter().find(|share| share.node == node).map_or(0.0, |share| share.fraction);
        let bar = "#".repeat((share * 40.0).round().clamp(0.0, 40.0) as usize);
        let sampled = match sample {
            Some(sample) => {
                let keys = sample.primaries.get(node).copied().unwrap_or(0);
                let percent = if sample.count == 0 { 0.0 } else { keys as f64 * 100.0 / sample.count as f64 };
                format!("  {keys:>10} {percent:>6.2}%")
            }
            None => String::new(),
        };
        let vnode_count = vnodes.get(node).copied().unwrap_or(0);
        writeln!(out, "{node:<width$}  {vnode_count:>6}  {:>6.2}%{sampled}  {bar}", share * 100.0)?;
    }
    Ok(())
}

/// `3d 4h 5m 6s`, leading zero units left out.
fn duration(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{}s", seconds % 60),
        (0, 0, _) => format!("{minutes}m {}s", seconds % 60),
        (0, _, _) => format!("{hours}h {minutes}m {}s", seconds % 60),
        _ => format!("{days}d {hours}h {minutes}m {}s", seconds % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{TestNode, cluster_status, fixed, run, three_node_ring};

    #[test]
    fn status_summarises_health_and_members() {
        let node = TestNode::start();
        let status = run(&["status", "-s", &node.http.to_string()], b"");
        assert_eq!(status.code, 0, "{status:?}");
        let text = status.out_text();
        for line in
            ["node      n1 (cluster test, keel ", "health    ok", "storage   ok", "members   1 (1 up)"]
        {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(text.contains("n1  127.0.0.1:7000         up  (this node)"), "{text}");
    }

    #[test]
    fn a_node_whose_storage_failed_is_reported_and_exits_1() {
        let mut status = cluster_status("n2", &[("n1", 7000), ("n2", 7001)]);
        status.storage_failed = true;
        let node = TestNode::with(|_, _| fixed(status, three_node_ring()));
        let run = run(&["status", "-s", &node.http.to_string()], b"");
        assert_eq!(run.code, 1);
        assert!(run.out_text().contains("FAILED"), "{run:?}");
        assert!(run.out_text().contains("uptime    1h 2m 5s"), "{run:?}");
        assert!(run.err.contains("n2 is not healthy"), "{run:?}");
    }

    #[test]
    fn ring_shows_shares_and_a_sample_of_keys() {
        let node = TestNode::with(|_, _| fixed(cluster_status("n1", &[("n1", 7000)]), three_node_ring()));
        let ring = run(&["ring", "-s", &node.http.to_string(), "--keys", "30000"], b"");
        assert_eq!(ring.code, 0, "{ring:?}");
        let text = ring.out_text();
        assert!(text.starts_with("3 nodes, 6 vnodes, 3 replicas per key\n"), "{text}");
        let rows: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(rows.len(), 3, "{text}");
        let mut total = 0;
        for row in rows {
            let columns: Vec<&str> = row.split_whitespace().collect();
            assert_eq!((columns[1], columns[2]), ("2", "33.33%"), "{row}");
            let keys: u64 = columns[3].parse().expect("a key count");
            assert!(
                (9_000..=11_000).contains(&keys),
                "a sixth of the circle twice holds about a third: {row}"
            );
            total += keys;
        }
        assert_eq!(total, 30_000);
    }
}
