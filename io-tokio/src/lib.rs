//! keel-io-tokio
