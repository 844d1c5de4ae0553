//! Storage jobs (flushes, compactions, manifest stores …) on a few threads
//! of their own, at a lower CPU priority than the threads that serve
//! requests and sync the log: on a busy machine a compaction then takes
//! longer rather than reads waiting behind it.
//!
//! The threads live as long as the driver. A thread per job would cost a
//! stack and a start each time, and its allocator heap would be abandoned
//! at its exit, for the event loop's thread to reclaim.

use std::sync::{Arc, Mutex, mpsc as std_mpsc};

use keel_core::lsm::job::{Job, JobDone, JobKind};
use tokio::sync::mpsc;

use crate::disk::FileDisk;

/// Enough for every kind of job the engine may have in flight at once
/// (a flush, a compaction, a manifest store, a log file, a removal), so
/// that a long compaction never holds a short job up.
pub(super) const THREADS: usize = 5;

/// The nice value of storage job threads: well below the default 0.
#[cfg(target_os = "linux")]
const NICE: i32 = 10;

pub(super) type Done = mpsc::UnboundedSender<(JobKind, JobDone)>;

#[derive(Debug)]
pub(super) struct JobThreads {
    queue: std_mpsc::Sender<(Job, FileDisk)>,
}

impl JobThreads {
    /// Starts the threads; each reports what it did on `done`. They end
    /// when this is dropped and the queue is empty.
    pub fn start(done: &Done) -> std::io::Result<JobThreads> {
        let (queue, jobs) = std_mpsc::channel::<(Job, FileDisk)>();
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..THREADS {
            let jobs = Arc::clone(&jobs);
            let done = done.clone();
            std::thread::Builder::new().name(String::from("keel-storage-job")).spawn(move || {
                lower_priority();
                loop {
                    // One thread at a time waits on the queue; the others on its lock.
                    let next = jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
                    let Ok((job, disk)) = next else { return };
                    run(&job, disk, &done);
                }
            })?;
        }
        Ok(JobThreads { queue })
    }

    /// Queues `job` to run on `disk`.
    pub fn run(&self, job: Job, disk: FileDisk) {
        // The threads outlive the driver's use of this: a send cannot fail.
        let _ = self.queue.send((job, disk));
    }
}

/// Runs `job` and hands its result back, letting go of the data directory
/// first (a driver that stops as soon as it hears must leave it unlocked).
fn run(job: &Job, disk: FileDisk, done: &Done) {
    let started = std::time::Instant::now();
    let result = job.run(&disk);
    drop(disk);
    let elapsed_ms = started.elapsed().as_millis();
    tracing::debug!(kind = ?job.kind(), bytes = job.bytes(), elapsed_ms, "storage job done");
    let _ = done.send((job.kind(), result));
}

/// Best effort: where the call is refused, the jobs run at the usual priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // On Linux the priority is per thread; the thread id names this one.
        let this_thread = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(this_thread), NICE) {
            tracing::debug!(%error, "could not lower a storage job thread's priority");
        }
    }
}
