//! keel-io-tokio

pub mod http;
pub mod metrics;
pub mod resp;
pub mod service;
