//! keel-io-tokio

pub mod metrics;
pub mod service;
