//! keel-io-tokio

pub mod metrics;
pub mod resp;
pub mod service;
