//! keel-io-tokio

pub mod disk;
pub mod http;
pub mod metrics;
pub mod resp;
pub mod service;
pub mod transport;
