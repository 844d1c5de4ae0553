//! The core's one window on storage: a flat directory of files.
//!
//! The storage engine sees files only through [`Disk`]. Real files live in
//! `keel-io-tokio`; [`MemDisk`] keeps everything in memory, can crash (losing
//! what was never synced, possibly tearing the last write) and injects read
//! corruption, bit rot and sync failures, all drawn from a seeded generator.
//!
//! Semantics every implementation keeps:
//! - `append`, `write_at` and `create` change only volatile state; `sync(name)`
//!   makes the file's current contents durable.
//! - Until a sync, a crash keeps each file as it was at the last sync plus
//!   a prefix of the writes since, in the order they were made; the last
//!   one kept may be cut short.
//! - `create`, `rename` and `remove` change the directory; they are durable
//!   only after `sync_dir`.
//! - `rename` atomically replaces the target.

use core::fmt;

use thiserror::Error;

mod mem;

pub use mem::{CrashMode, FaultCounts, Faults, MemDisk};

/// A directory of files. Handles are cheap; clones share the same files.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Names of the files in the directory, sorted.
    fn list(&self) -> Result<Vec<String>, DiskError>;
    /// Creates an empty file, truncating one that exists.
    fn create(&self, name: &str) -> Result<(), DiskError>;
    /// Appends `bytes` at the end of the file.
    fn append(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError>;
    /// Writes `bytes` at `offset`, overwriting what is there and growing the
    /// file if the write runs past its end. An offset past the end is an
    /// error: files never have holes.
    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<(), DiskError>;
    /// Reads exactly `len` bytes at `offset`; a range past the end is an error.
    fn read_at(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, DiskError>;
    /// Current length of the file in bytes.
    fn len(&self, name: &str) -> Result<u64, DiskError>;
    /// Makes the file's current contents durable.
    fn sync(&self, name: &str) -> Result<(), DiskError>;
    /// Renames `from` to `to`, atomically replacing `to`.
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError>;
    /// Removes the file.
    fn remove(&self, name: &str) -> Result<(), DiskError>;
    /// Makes creates, renames and removes durable.
    fn sync_dir(&self) -> Result<(), DiskError>;
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskError {
    #[error("file {name:?} does not exist")]
    NotFound { name: String },
    #[error("{len} bytes at offset {offset} reach past the end of {name:?} ({file_len} bytes)")]
    OutOfRange { name: String, offset: u64, len: u64, file_len: u64 },
    #[error("sync of {name:?} failed")]
    SyncFailed { name: String },
    #[error("I/O error on {name:?}: {message}")]
    Io { name: String, message: String },
}

impl<D: Disk + ?Sized> Disk for Box<D> {
    fn list(&self) -> Result<Vec<String>, DiskError> {
        (**self).list()
    }
    fn create(&self, name: &str) -> Result<(), DiskError> {
        (**self).create(name)
    }
    fn append(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        (**self).append(name, bytes)
    }
    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<(), DiskError> {
        (**self).write_at(name, offset, bytes)
    }
    fn read_at(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, DiskError> {
        (**self).read_at(name, offset, len)
    }
    fn len(&self, name: &str) -> Result<u64, DiskError> {
        (**self).len(name)
    }
    fn sync(&self, name: &str) -> Result<(), DiskError> {
        (**self).sync(name)
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        (**self).rename(from, to)
    }
    fn remove(&self, name: &str) -> Result<(), DiskError> {
        (**self).remove(name)
    }
    fn sync_dir(&self) -> Result<(), DiskError> {
        (**self).sync_dir()
    }
}
