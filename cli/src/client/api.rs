//! The JSON bodies a node sends (docs/API.md), as the client reads them.
//!
//! Every field has a default and unknown fields are ignored, so a client
//! keeps working against a node one release newer or older than itself.

use base64::Engine as _;
use serde::Deserialize;

/// `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The body of `300 Multiple Choices`: standard base64 siblings.
#[derive(Debug, Deserialize)]
pub struct SiblingsBody {
    pub siblings: Vec<String>,
    #[serde(default)]
    pub context: String,
}

impl SiblingsBody {
    pub fn decode(&self) -> Result<Vec<Vec<u8>>, String> {
        let engine = base64::engine::general_purpose::STANDARD;
        (self.siblings.iter().enumerate())
            .map(|(index, text)| {
                engine.decode(text).map_err(|error| format!("sibling {index} is not base64: {error}"))
            })
            .collect()
    }
}

/// `GET /health`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Health {
    pub status: String,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    pub version: String,
    pub node: String,
    pub cluster: String,
    pub uptime_seconds: u64,
    pub replicas: u8,
    pub members: Vec<Member>,
    pub keys_estimate: Option<u64>,
    pub hints_pending: u64,
    pub storage_failed: bool,
}

/// One member as the answering node sees it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Member {
    pub node: String,
    /// Where peers reach it; not its HTTP port.
    pub address: String,
    pub state: String,
    /// Hints the answering node holds for it.
    pub hints_pending: u64,
    /// Seconds since the answering node last exchanged anti-entropy trees with it.
    pub last_exchange_seconds_ago: Option<u64>,
    /// Its HTTP address, when the node reports it.
    pub http_address: Option<String>,
}

/// `GET /v1/ring`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RingView {
    pub replicas: u8,
    /// Virtual nodes sorted by position.
    pub tokens: Vec<Token>,
    pub ownership: Vec<Ownership>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Token {
    pub position: u64,
    pub node: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Ownership {
    pub node: String,
    /// From 0 to 1: the share of the key space the node holds as a primary.
    pub fraction: f64,
}

impl RingView {
    /// The primary of a key at `position`: the node of the first token at or
    /// after it, wrapping to the lowest token (the rule in `keel_core::ring`).
    /// `None` for an empty ring.
    pub fn primary_at(&self, position: u64) -> Option<&str> {
        let index = self.tokens.partition_point(|token| token.position < position);
        let token = self.tokens.get(index).or_else(|| self.tokens.first())?;
        Some(token.node.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_and_new_nodes_parse() {
        let status: Status = serde_json::from_str(r#"{"node":"n1","future":1}"#).expect("lenient");
        assert_eq!(status.node, "n1");
        assert!(status.members.is_empty());
        let body: ErrorBody = serde_json::from_str(r#"{"error":{"code":"x"}}"#).expect("no message");
        assert_eq!(body.error.code, "x");
    }

    #[test]
    fn primaries_follow_the_first_token_at_or_after_a_position() {
        let token = |position, node: &str| Token { position, node: node.into() };
        let ring =
            RingView { replicas: 1, tokens: vec![token(10, "a"), token(20, "b")], ownership: Vec::new() };
        assert_eq!(ring.primary_at(0), Some("a"));
        assert_eq!(ring.primary_at(10), Some("a"));
        assert_eq!(ring.primary_at(11), Some("b"));
        assert_eq!(ring.primary_at(21), Some("a"));
        assert_eq!(RingView::default().primary_at(5), None);
    }

    #[test]
    fn siblings_decode_or_say_which_is_bad() {
        let body = SiblingsBody { siblings: vec!["YQ==".into(), "!".into()], context: String::new() };
        let error = body.decode().expect_err("the second sibling is not base64");
        assert!(error.starts_with("sibling 1 is not base64"), "{error}");
    }
}
