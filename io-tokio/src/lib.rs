//! keel-io-tokio: the real shell around keel's sans-IO core.
//!
//! It runs a [`keel_core::node::Node`] on a tokio runtime with real files,
//! sockets and clocks: the [`driver`] owns the node and carries out its
//! outputs; the [`transport`] connects nodes over TCP; [`disk::FileDisk`]
//! implements the core's `Disk` trait on a directory; [`http`] and [`resp`]
//! serve clients through the [`service::Handle`] the driver exposes, with
//! [`metrics`] for both.
//!
//! What this crate must never do: make a protocol decision (which replica,
//! which version, when to acknowledge — that is the core's), block the
//! driver's loop on a disk sync (fsync runs on a blocking thread), or let any
//! queue, buffer or connection count grow without a bound.

pub mod disk;
pub mod driver;
pub mod http;
pub mod metrics;
pub mod resp;
pub mod service;
pub mod transport;
