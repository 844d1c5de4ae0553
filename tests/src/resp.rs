//! Raw Redis-protocol exchanges for tests that must send what no client
//! library would, and `redis-cli` for tests that use the real client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// Sends `bytes` and returns what arrives until the server closes the
/// connection or `wait` passes without more.
pub fn exchange(address: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).expect("connect");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let _ = stream.write_all(bytes);
    let mut reply = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return reply,
            Ok(read) => reply.extend_from_slice(&buffer[..read]),
        }
    }
}

/// A command as a RESP array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        bytes.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        bytes.extend_from_slice(arg);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes
}

/// True if the server at `address` answers PING with PONG.
pub fn pings(address: SocketAddr) -> bool {
    exchange(address, &command(&[b"PING"]), Duration::from_millis(500)).starts_with(b"+PONG")
}

/// Runs `redis-cli -p PORT args…` and returns its stdout, trimmed.
pub fn redis_cli(address: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", &address.ip().to_string(), "-p", &address.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed (the CI script installs redis-tools)");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Feeds `commands` (RESP) to `redis-cli --pipe` and returns what it printed.
pub fn redis_cli_pipe(address: SocketAddr, commands: &[u8]) -> String {
    use std::process::Stdio;
    let mut child = Command::new("redis-cli")
        .args(["-h", &address.ip().to_string(), "-p", &address.port().to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli is installed (the CI script installs redis-tools)");
    child.stdin.take().expect("stdin").write_all(commands).expect("feed redis-cli");
    let output = child.wait_with_output().expect("redis-cli output");
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}
