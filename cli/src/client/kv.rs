//! `keel put`, `keel get`, `keel delete`: one request each.
//!
//! Values go to standard output as raw bytes so they pipe (`keel get photo >
//! photo.jpg`); everything meant for a person (sibling notes, contexts unless
//! asked for) goes to standard error.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;

use base64::Engine as _;
use clap::Args;
use hyper::body::Bytes;
use serde_json::json;

use super::http::{Connection, Read as Found};
use super::{ConsistencyArgs, Failure, ServerArgs, Streams, output};

/// Most bytes `put` reads from a file or standard input. Nodes refuse values
/// over their own limit (16 MiB by default) anyway; this only stops the
/// client from reading an endless stream into memory first.
const VALUE_READ_BYTES_MAX: u64 = 256 * 1024 * 1024;

#[derive(Debug, Args)]
#[command(after_help = concat!("\
Examples:
  keel put user:42 '{\"name\":\"Ada\"}'
  keel put photo --file photo.jpg --consistency all
  tar c dir | keel put backup -
  ctx=$(keel put k v --print-context); keel put k v2 --context \"$ctx\"", "\n\n", exit_codes!()))]
pub struct PutArgs {
    /// The key (any bytes; put `--` first if it starts with a dash).
    key: OsString,
    /// The value, or `-` to read it from standard input.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    value: Option<OsString>,
    /// Read the value from this file instead.
    #[arg(long, short = 'f', value_name = "PATH")]
    file: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    consistency: ConsistencyArgs,
    /// The context of an earlier read: the value replaces exactly what that
    /// read saw. `--context ""` replaces nothing: the value becomes a sibling.
    /// Without it the value replaces whatever the node holds.
    #[arg(long, value_name = "CTX")]
    context: Option<String>,
    /// Print the new context alone on standard output (instead of on standard error).
    #[arg(long)]
    print_context: bool,
}

#[derive(Debug, Args)]
#[command(after_help = concat!("\
Values are written as raw bytes; a final newline is added only on a terminal.
Siblings (concurrent writes) are each followed by a newline, with a note on
standard error; the exit code is still 0. Use --json to tell them apart exactly.

Examples:
  keel get user:42
  keel get photo > photo.jpg
  keel get k --json --consistency one", "\n\n", exit_codes!()))]
pub struct GetArgs {
    /// The key.
    key: OsString,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    consistency: ConsistencyArgs,
    /// Print {"values":[…],"context":…,"encoding":…} instead of raw bytes.
    /// Values are UTF-8 strings, or base64 (all of them) when any is not UTF-8.
    #[arg(long)]
    json: bool,
    /// Also print the context of the read, on standard error.
    #[arg(long)]
    print_context: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The key.
    key: OsString,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    consistency: ConsistencyArgs,
    /// The context of an earlier read: delete exactly what that read saw.
    /// Without it the node deletes what a read at the same consistency sees;
    /// deleting an absent key succeeds and writes nothing.
    #[arg(long, value_name = "CTX")]
    context: Option<String>,
    /// Print the tombstone's context alone on standard output (instead of on standard error).
    #[arg(long)]
    print_context: bool,
}

pub async fn put(args: &PutArgs, streams: &mut Streams<'_>) -> Result<(), Failure> {
    let value = value_of(args, streams)?;
    let mut connection = Connection::open(&args.server.server).await?;
    let key = args.key.as_encoded_bytes();
    let context = connection
        .put(key, Bytes::from(value), args.context.as_deref(), args.consistency.consistency)
        .await?;
    print_context(streams, &context, args.print_context)
}

pub async fn get(args: &GetArgs, streams: &mut Streams<'_>) -> Result<(), Failure> {
    let mut connection = Connection::open(&args.server.server).await?;
    let found = connection.get(args.key.as_encoded_bytes(), args.consistency.consistency).await?;
    if args.json {
        write_json(streams, &found)?;
    }
    let (values, context) = match found {
        Found::NotFound { context } => {
            if args.print_context {
                output(writeln!(streams.err, "context: {context}"))?;
            }
            return Err(Failure::NotFound);
        }
        Found::Found { values, context } => (values, context),
    };
    if !args.json {
        write_values(streams, &values)?;
    }
    if values.len() > 1 {
        let note = format!(
            "keel get: {} siblings (writes that did not see each other), in the node's order. \
             To resolve them, write one value back with their context: keel put KEY VALUE --context {context}",
            values.len()
        );
        output(writeln!(streams.err, "{note}"))?;
    } else if args.print_context {
        output(writeln!(streams.err, "context: {context}"))?;
    }
    Ok(())
}

pub async fn delete(args: &DeleteArgs, streams: &mut Streams<'_>) -> Result<(), Failure> {
    let mut connection = Connection::open(&args.server.server).await?;
    let key = args.key.as_encoded_bytes();
    let context = connection.delete(key, args.context.as_deref(), args.consistency.consistency).await?;
    print_context(streams, &context, args.print_context)
}

/// The value from the argument, standard input (`-`) or `--file`.
fn value_of(args: &PutArgs, streams: &mut Streams<'_>) -> Result<Vec<u8>, Failure> {
    match (&args.value, &args.file) {
        (Some(value), _) if value != "-" => Ok(value.as_encoded_bytes().to_vec()),
        (Some(_), _) => read_bounded(&mut *streams.input, "standard input"),
        (None, Some(path)) => {
            let mut file = std::fs::File::open(path)
                .map_err(|error| Failure::Local(format!("cannot open {}: {error}", path.display())))?;
            read_bounded(&mut file, &path.display().to_string())
        }
        (None, None) => Err(Failure::Local("give a VALUE, `-` for standard input, or --file PATH".into())),
    }
}

fn read_bounded(source: &mut dyn Read, name: &str) -> Result<Vec<u8>, Failure> {
    let mut value = Vec::new();
    source
        .take(VALUE_READ_BYTES_MAX + 1)
        .read_to_end(&mut value)
        .map_err(|error| Failure::Local(format!("cannot read {name}: {error}")))?;
    if value.len() as u64 > VALUE_READ_BYTES_MAX {
        return Err(Failure::Local(format!(
            "{name} holds more than {VALUE_READ_BYTES_MAX} bytes; nodes refuse values over their limit \
             (16 MiB by default)"
        )));
    }
    Ok(value)
}

fn print_context(streams: &mut Streams<'_>, context: &str, alone: bool) -> Result<(), Failure> {
    match alone {
        true => output(writeln!(streams.out, "{context}")),
        false => output(writeln!(streams.err, "context: {context}")),
    }
}

/// Raw values; siblings each end with a newline, a lone value only on a terminal.
fn write_values(streams: &mut Streams<'_>, values: &[Vec<u8>]) -> Result<(), Failure> {
    for value in values {
        output(streams.out.write_all(value))?;
        let newline = values.len() > 1 || (streams.out_is_terminal && !value.ends_with(b"\n"));
        if newline {
            output(streams.out.write_all(b"\n"))?;
        }
    }
    Ok(())
}

fn write_json(streams: &mut Streams<'_>, found: &Found) -> Result<(), Failure> {
    let (values, context) = match found {
        Found::Found { values, context } => (values.as_slice(), context),
        Found::NotFound { context } => (&[][..], context),
    };
    let text: Option<Vec<&str>> = values.iter().map(|value| std::str::from_utf8(value).ok()).collect();
    let document = match text {
        Some(text) => json!({"values": text, "context": context, "encoding": "utf8"}),
        None => {
            let engine = base64::engine::general_purpose::STANDARD;
            let encoded: Vec<String> = values.iter().map(|value| engine.encode(value)).collect();
            json!({"values": encoded, "context": context, "encoding": "base64"})
        }
    };
    output(writeln!(streams.out, "{document}"))
}

#[cfg(test)]
mod tests {
    use keel_core::client::ClientError;

    use super::super::testing::{TestNode, refused, run};

    #[test]
    fn put_get_delete_round_trip() {
        let node = TestNode::start();
        let server = node.http.to_string();
        let put = run(&["put", "user/42 é", "Ada", "--server", &server], b"");
        assert_eq!(put.code, 0, "{put:?}");
        assert!(put.err.starts_with("context: "), "{put:?}");
        let got = run(&["get", "user/42 é", "-s", &server, "--consistency", "all"], b"");
        assert_eq!((got.code, got.out_text().as_str()), (0, "Ada"));
        let deleted = run(&["delete", "user/42 é", "-s", &server, "-c", "one"], b"");
        assert_eq!(deleted.code, 0, "{deleted:?}");
        let gone = run(&["get", "user/42 é", "-s", &server], b"");
        assert_eq!(gone.code, 1);
        assert!(gone.out.is_empty());
        assert!(gone.err.contains("key not found"), "{gone:?}");
        let again = run(&["delete", "user/42 é", "-s", &server], b"");
        assert_eq!(again.code, 0, "deleting an absent key succeeds: {again:?}");
    }

    #[test]
    fn blind_writes_become_siblings_and_their_context_resolves_them() {
        let node = TestNode::start();
        let server = node.http.to_string();
        for value in ["a", "b"] {
            assert_eq!(run(&["put", "k", value, "-s", &server, "--context", ""], b"").code, 0);
        }
        let got = run(&["get", "k", "-s", &server], b"");
        assert_eq!((got.code, got.out_text().as_str()), (0, "a\nb\n"));
        assert!(got.err.contains("2 siblings"), "{got:?}");
        let json = run(&["get", "k", "-s", &server, "--json"], b"");
        let document: serde_json::Value = serde_json::from_slice(&json.out).expect("json");
        assert_eq!(document["values"], serde_json::json!(["a", "b"]));
        assert_eq!(document["encoding"], "utf8");
        let context = document["context"].as_str().expect("a context").to_owned();
        assert!(!context.is_empty());
        assert_eq!(run(&["put", "k", "ab", "-s", &server, "--context", &context], b"").code, 0);
        let resolved = run(&["get", "k", "-s", &server], b"");
        assert_eq!((resolved.out_text().as_str(), resolved.err.as_str()), ("ab", ""));
    }

    #[test]
    fn values_come_from_stdin_or_a_file_byte_for_byte() {
        let node = TestNode::start();
        let server = node.http.to_string();
        let binary = b"\x00\xffline\n";
        assert_eq!(run(&["put", "bin", "-", "-s", &server], binary).code, 0);
        assert_eq!(run(&["get", "bin", "-s", &server], b"").out, binary);
        let json = run(&["get", "bin", "-s", &server, "--json"], b"");
        let document: serde_json::Value = serde_json::from_slice(&json.out).expect("json");
        assert_eq!(
            (document["values"][0].as_str(), document["encoding"].as_str()),
            (Some("AP9saW5lCg=="), Some("base64"))
        );
        let path = std::env::temp_dir().join(format!("keel-cli-put-{}", std::process::id()));
        std::fs::write(&path, b"from a file").expect("write a temporary file");
        let put = run(&["put", "f", "--file", path.to_str().expect("utf-8 path"), "-s", &server], b"");
        let _ = std::fs::remove_file(&path);
        assert_eq!(put.code, 0, "{put:?}");
        assert_eq!(run(&["get", "f", "-s", &server], b"").out, b"from a file");
        let missing = run(&["put", "f", "--file", "/nonexistent/keel", "-s", &server], b"");
        assert_eq!(missing.code, 2);
        assert!(missing.err.contains("cannot open /nonexistent/keel"), "{missing:?}");
    }

    #[test]
    fn print_context_puts_the_context_where_scripts_want_it() {
        let node = TestNode::start();
        let server = node.http.to_string();
        let put = run(&["put", "k", "v", "-s", &server, "--print-context"], b"");
        let context = put.out_text().trim_end().to_owned();
        assert!(!context.is_empty() && put.err.is_empty(), "{put:?}");
        let got = run(&["get", "k", "-s", &server, "--print-context"], b"");
        assert_eq!(got.err, format!("context: {context}\n"));
        let deleted = run(&["delete", "k", "-s", &server, "--context", &context, "--print-context"], b"");
        assert_eq!(deleted.code, 0, "{deleted:?}");
        assert_eq!(run(&["get", "k", "-s", &server], b"").code, 1);
    }

    #[test]
    fn exit_codes_tell_failures_from_usage_and_connection_errors() {
        let node = TestNode::start();
        let server = node.http.to_string();
        let unreachable = run(&["get", "k", "--server", "127.0.0.1:1"], b"");
        assert_eq!(unreachable.code, 2);
        assert!(unreachable.err.contains("cannot connect to 127.0.0.1:1"), "{unreachable:?}");
        assert!(unreachable.err.contains("KEEL_SERVER"), "{unreachable:?}");
        let bad_context = run(&["put", "k", "v", "-s", &server, "--context", "not a context"], b"");
        assert_eq!(bad_context.code, 2);
        assert!(bad_context.err.contains("not base64url"), "{bad_context:?}");
        let wrong = run(&["put", "k", "v", "-s", &server, "--context", "AAE"], b"");
        assert_eq!(wrong.code, 2, "the node calls the context malformed (400): {wrong:?}");
        node.backend.fail_with(Some(ClientError::Unavailable { needed: 2, reachable: 1 }));
        let failed = run(&["put", "k", "v", "-s", &server], b"");
        assert_eq!(failed.code, 1);
        assert!(failed.err.contains("503 unavailable"), "{failed:?}");
        assert_eq!(refused(&["get", "k", "--server", "https://node:7420"]), 2);
        assert_eq!(refused(&["get", "k", "--consistency", "most"]), 2);
        assert_eq!(refused(&["put", "k"]), 2);
        assert_eq!(refused(&["put", "k", "v", "--file", "f"]), 2);
    }
}
