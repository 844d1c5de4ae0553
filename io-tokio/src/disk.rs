//! [`FileDisk`]: the core's [`Disk`] on real files in one directory.
//!
//! Open handles are cached, shared, so that an fsync on a blocking thread and
//! writes from the event loop can use the same file at once: the lock guards
//! only the handle table and is never held across I/O. Every read and write
//! is positional, so no shared cursor exists to race on. Files are not opened
//! in append mode: on Linux a positional write to such a file ignores its
//! offset, and the WAL overwrites the zeros it preallocated. A handle keeps
//! the file's length, which only this process changes, so that appends and
//! bounds checks cost no `fstat`.
//!
//! A directory belongs to one `FileDisk` at a time: `open` takes an exclusive
//! advisory lock on its [`LOCK_FILE`] and writes the process id there, so a
//! second node started on the same directory refuses to start (two writers
//! would interleave their logs and reuse each other's version dots) and an
//! operator can find which process holds it. The lock file is not part of the
//! [`Disk`]: `list` leaves it out and no operation may name it.
//!
//! This file uses only std, nix and keel-core, so the storage benchmark in
//! keel-core can include it as it is.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use keel_core::disk::{Disk, DiskError};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A directory of files on the local file system. Clones share handles.
#[derive(Clone, Debug)]
pub struct FileDisk {
    inner: Arc<Inner>,
}

/// The file holding a data directory's lock and the holder's pid.
pub const LOCK_FILE: &str = "LOCK";

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    handles: Mutex<BTreeMap<String, Arc<Handle>>>,
    /// Released when the last clone is dropped, or when the process ends.
    _lock: DirLock,
}

/// Why a directory could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process holds the directory's lock: `pid`, if it has written it yet.
    InUse {
        dir: PathBuf,
        pid: Option<u32>,
    },
    Io {
        dir: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::InUse { dir, pid: Some(pid) } => {
                write!(f, "data directory {} is in use by process {pid}", dir.display())
            }
            OpenError::InUse { dir, pid: None } => {
                write!(f, "data directory {} is in use by another process", dir.display())
            }
            OpenError::Io { dir, source } => {
                write!(f, "cannot open the data directory {}: {source}", dir.display())
            }
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::InUse { .. } => None,
            OpenError::Io { source, .. } => Some(source),
        }
    }
}

/// An exclusive `flock` on [`LOCK_FILE`], which holds the holder's pid.
/// `flock` rather than `fcntl` locks: those are per process, so a second
/// open in the same process would not conflict, and closing any handle of
/// the file would drop them.
#[derive(Debug)]
struct DirLock {
    file: Flock<File>,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, OpenError> {
        let io = |source| OpenError::Io { dir: dir.to_path_buf(), source };
        let path = dir.join(LOCK_FILE);
        // Never truncated before the lock is ours: the holder's pid is in it.
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path);
        let file = match Flock::lock(file.map_err(io)?, FlockArg::LockExclusiveNonblock) {
            Ok(file) => file,
            Err((_, Errno::EWOULDBLOCK)) => {
                let pid = fs::read_to_string(&path).ok().and_then(|text| text.trim().parse().ok());
                return Err(OpenError::InUse { dir: dir.to_path_buf(), pid });
            }
            Err((_, errno)) => return Err(io(io::Error::from(errno))),
        };
        let pid = format!("{}\n", std::process::id());
        file.set_len(0).and_then(|()| file.write_all_at(pid.as_bytes(), 0)).map_err(io)?;
        Ok(DirLock { file })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Emptied while still locked, so the file never names a process that
        // no longer holds the directory (after a clean stop; a killed process
        // leaves its pid, and the lock goes with the process). Removing the
        // file instead would let a waiting opener lock an unlinked inode.
        let _ = self.file.set_len(0);
    }
}

#[derive(Debug)]
struct Handle {
    file: File,
    len: AtomicU64,
}

impl Handle {
    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<(), DiskError> {
        let result = self.file.write_all_at(bytes, offset);
        // After a failed write the length is whatever the file system kept.
        let len = match result {
            Ok(()) => Ok(self.len().max(offset + bytes.len() as u64)),
            Err(_) => self.file.metadata().map(|meta| meta.len()),
        };
        if let Ok(len) = len {
            self.len.store(len, Ordering::Release);
        }
        result.map_err(|e| io_error(name, &e))
    }
}

impl FileDisk {
    /// Uses `dir`, creating it if it does not exist, and locks it until the
    /// last clone is dropped. Fails with [`OpenError::InUse`] while another
    /// `FileDisk`, in this process or another, holds it.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileDisk, OpenError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| OpenError::Io { dir: dir.clone(), source })?;
        let lock = DirLock::acquire(&dir)?;
        Ok(FileDisk { inner: Arc::new(Inner { dir, handles: Mutex::new(BTreeMap::new()), _lock: lock }) })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, DiskError> {
        // Names are flat: a separator or a parent reference would escape the directory.
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(DiskError::Io { name: name.to_owned(), message: String::from("invalid file name") });
        }
        if name == LOCK_FILE {
            let message = String::from("reserved for the directory's lock");
            return Err(DiskError::Io { name: name.to_owned(), message });
        }
        Ok(self.inner.dir.join(name))
    }

    fn handles(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Handle>>> {
        // The table is only inserted into and removed from; a panic elsewhere leaves it valid.
        self.inner.handles.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached handle of `name`, opening the file if needed.
    fn handle(&self, name: &str) -> Result<Arc<Handle>, DiskError> {
        if let Some(handle) = self.handles().get(name) {
            return Ok(Arc::clone(handle));
        }
        let path = self.path(name)?;
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_error(name, &e))?;
        let len = AtomicU64::new(file.metadata().map_err(|e| io_error(name, &e))?.len());
        let handle = Arc::new(Handle { file, len });
        let mut handles = self.handles();
        let cached = handles.entry(name.to_owned()).or_insert_with(|| Arc::clone(&handle));
        Ok(Arc::clone(cached))
    }
}

fn io_error(name: &str, error: &io::Error) -> DiskError {
    if error.kind() == io::ErrorKind::NotFound {
        return DiskError::NotFound { name: name.to_owned() };
    }
    DiskError::Io { name: name.to_owned(), message: error.to_string() }
}

impl Disk for FileDisk {
    fn list(&self) -> Result<Vec<String>, DiskError> {
        let entries = fs::read_dir(&self.inner.dir).map_err(|e| io_error(".", &e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(".", &e))?;
            let is_file = entry.file_type().map(|kind| kind.is_file()).unwrap_or(false);
            match entry.file_name().into_string() {
                Ok(name) if is_file && name != LOCK_FILE => names.push(name),
                _ => {}
            }
        }
        names.sort();
        Ok(names)
    }

    fn create(&self, name: &str) -> Result<(), DiskError> {
        let path = self.path(name)?;
        self.handles().remove(name);
        File::create(&path).map_err(|e| io_error(name, &e))?;
        self.handle(name).map(drop)
    }

    fn append(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        // One thread at a time writes a file (the engine's owner), so its
        // length cannot change between reading it and writing there.
        let handle = self.handle(name)?;
        handle.write_at(name, handle.len(), bytes)
    }

    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<(), DiskError> {
        let handle = self.handle(name)?;
        let file_len = handle.len();
        if offset > file_len {
            let len = bytes.len() as u64;
            return Err(DiskError::OutOfRange { name: name.to_owned(), offset, len, file_len });
        }
        handle.write_at(name, offset, bytes)
    }

    fn read_at(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, DiskError> {
        let handle = self.handle(name)?;
        let file_len = handle.len();
        let out_of_range = DiskError::OutOfRange { name: name.to_owned(), offset, len, file_len };
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(out_of_range);
        }
        let mut buffer = vec![0; usize::try_from(len).map_err(|_| out_of_range.clone())?];
        handle.file.read_exact_at(&mut buffer, offset).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => out_of_range,
            _ => io_error(name, &e),
        })?;
        Ok(buffer)
    }

    fn len(&self, name: &str) -> Result<u64, DiskError> {
        Ok(self.handle(name)?.len())
    }

    fn sync(&self, name: &str) -> Result<(), DiskError> {
        let handle = self.handle(name)?;
        // The handle table's lock is not held here: writes go on during the fsync.
        handle.file.sync_data().map_err(|e| match io_error(name, &e) {
            DiskError::NotFound { name } => DiskError::NotFound { name },
            _ => DiskError::SyncFailed { name: name.to_owned() },
        })
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let (from_path, to_path) = (self.path(from)?, self.path(to)?);
        fs::rename(&from_path, &to_path).map_err(|e| io_error(from, &e))?;
        let mut handles = self.handles();
        handles.remove(to);
        if let Some(file) = handles.remove(from) {
            handles.insert(to.to_owned(), file);
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), DiskError> {
        let path = self.path(name)?;
        self.handles().remove(name);
        fs::remove_file(&path).map_err(|e| io_error(name, &e))
    }

    fn sync_dir(&self) -> Result<(), DiskError> {
        let dir = File::open(&self.inner.dir).map_err(|e| io_error(".", &e))?;
        dir.sync_all().map_err(|_| DiskError::SyncFailed { name: String::from(".") })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use keel_core::disk::MemDisk;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("keel-filedisk-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// The same operations give the same results on real files and in memory.
    fn exercise(disk: &dyn Disk) -> Vec<String> {
        let mut log = Vec::new();
        disk.create("b").unwrap();
        disk.append("b", b"hello ").unwrap();
        disk.append("b", b"world").unwrap();
        disk.sync("b").unwrap();
        log.push(format!("{:?}", disk.read_at("b", 6, 5)));
        log.push(format!("{:?}", disk.read_at("b", 6, 6).is_err()));
        disk.create("a").unwrap();
        disk.append("a", b"x").unwrap();
        disk.write_at("a", 0, b"yz").unwrap();
        log.push(format!("{:?} {:?}", disk.read_at("a", 0, 2), disk.write_at("a", 3, b"hole").is_err()));
        disk.rename("a", "b").unwrap();
        disk.sync_dir().unwrap();
        log.push(format!("{:?} {:?}", disk.list(), disk.len("b")));
        disk.create("b").unwrap();
        log.push(format!("{:?}", disk.len("b")));
        disk.remove("b").unwrap();
        log.push(format!("{:?} {}", disk.list(), disk.len("b").is_err()));
        log
    }

    #[test]
    fn behaves_like_the_memory_disk() {
        let dir = temp_dir("same");
        let disk = FileDisk::open(&dir).unwrap();
        assert_eq!(exercise(&disk), exercise(&MemDisk::new(0)));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_is_open_once_at_a_time_and_names_its_holder() {
        let dir = temp_dir("lock");
        let pid = std::process::id();
        let lock_text = || fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        let first = FileDisk::open(&dir).unwrap();
        assert_eq!(lock_text(), format!("{pid}\n"));
        let error = FileDisk::open(&dir).unwrap_err();
        assert!(matches!(error, OpenError::InUse { pid: Some(holder), .. } if holder == pid), "{error:?}");
        assert_eq!(error.to_string(), format!("data directory {} is in use by process {pid}", dir.display()));
        let clone = first.clone();
        drop(first);
        assert!(FileDisk::open(&dir).is_err(), "a clone keeps the directory locked");
        drop(clone);
        assert_eq!(lock_text(), "", "a released lock names no process");
        let second = FileDisk::open(&dir).unwrap();
        assert_eq!(lock_text(), format!("{pid}\n"));
        // The lock file is the shell's, not the engine's: invisible and untouchable through `Disk`.
        assert_eq!(second.list().unwrap(), Vec::<String>::new());
        assert!(second.create(LOCK_FILE).is_err());
        assert!(second.remove(LOCK_FILE).is_err());
        assert_eq!(lock_text(), format!("{pid}\n"));
        drop(second);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_an_io_error_naming_it() {
        let dir = temp_dir("blocked");
        fs::write(&dir, b"a file where the directory should be").unwrap();
        let error = FileDisk::open(dir.join("data")).unwrap_err();
        assert!(matches!(error, OpenError::Io { .. }), "{error:?}");
        assert!(error.to_string().starts_with("cannot open the data directory"), "{error}");
        assert!(error.to_string().contains(&dir.display().to_string()), "{error}");
        fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn syncs_while_another_thread_appends() {
        let dir = temp_dir("threads");
        let disk = FileDisk::open(&dir).unwrap();
        disk.create("wal").unwrap();
        let writer = {
            let disk = disk.clone();
            std::thread::spawn(move || {
                for _ in 0..1_000 {
                    disk.append("wal", &[7; 100]).unwrap();
                }
            })
        };
        for _ in 0..20 {
            disk.sync("wal").unwrap();
        }
        writer.join().unwrap();
        disk.sync("wal").unwrap();
        assert_eq!(disk.len("wal").unwrap(), 100_000);
        assert!(disk.read_at("wal", 0, 100_000).unwrap().iter().all(|&b| b == 7));
        assert!(disk.read_at("../x", 0, 1).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
