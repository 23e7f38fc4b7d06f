//! Checkpoints: the status files and moves of many files made durable at once, then recorded
//! `done` in the ledger.
//!
//! Why: once a file's result is durable in the ledger (`decided`, with its whole status
//! record), its status file and its move out of the inbox can be redone from the ledger after a
//! crash (see [`crate::recovery`]), so they need not be durable one file at a time. Synced per
//! file they cost three syncs (the status file, its directory, the inbox), which wait for the
//! disk one after another and, on a journaled file system, each force a journal commit that
//! every other sync queues behind (`BENCHMARKS.md`). Here a worker writes the status and moves
//! the file without a sync and hands the file over; once [`BATCH`] files are pending, or when
//! nothing is left in the queue, one checkpoint syncs every pending status file and each
//! directory once, and only then appends their `done` records: a `done` must never be durable
//! before what it says is.
//!
//! With fsync off there is nothing to make durable: the worker records `done` itself.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::files::{at, sync_dir};
use crate::group_sync::off_thread;
use crate::ledger::Ledger;
use crate::mutex::lock;
use crate::status::Outcome;

/// A checkpoint runs once this many files are pending (or when the queue is empty).
pub(crate) const BATCH: usize = 64;

/// A file whose status was written and which was moved, neither synced yet.
pub(crate) struct Moved {
    pub name: String,
    pub run: u64,
    pub outcome: Outcome,
    /// Its status file.
    pub status: PathBuf,
}

/// The files moved since the last checkpoint, shared by the workers of one watcher.
pub(crate) struct Checkpoints {
    dir: PathBuf,
    ledger: Arc<Ledger>,
    pending: Mutex<Vec<Moved>>,
}

impl Checkpoints {
    /// The checkpoints of the watched directory `dir`, recorded in `ledger`.
    pub fn new(dir: PathBuf, ledger: Arc<Ledger>) -> Self {
        Checkpoints {
            dir,
            ledger,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Hands over `moved`; returns how many files are pending now.
    pub fn push(&self, moved: Moved) -> usize {
        let mut pending = lock(&self.pending);
        pending.push(moved);
        pending.len()
    }

    /// Makes every pending file durable (its status file, then each directory involved, on the
    /// blocking pool) and records it `done`. On an error the files stay `decided` in the
    /// ledger: the next start finishes them.
    pub async fn run(&self) -> io::Result<()> {
        let batch = std::mem::take(&mut *lock(&self.pending));
        if batch.is_empty() {
            return Ok(());
        }
        let dir = self.dir.clone();
        let batch = off_thread(move || {
            let files = batch
                .iter()
                .map(|m| File::open(&m.status).map_err(at("open", &m.status)))
                .collect::<io::Result<Vec<_>>>()?;
            // Start the writes of every file first, so that the device takes them together,
            // then wait for each: one round trip to the disk for the batch, not one per file.
            for f in &files {
                start_writeback(f);
            }
            for (f, m) in files.iter().zip(&batch) {
                f.sync_data().map_err(at("sync", &m.status))?;
            }
            for outcome in [Outcome::Processed, Outcome::Failed] {
                if batch.iter().any(|m| m.outcome == outcome) {
                    sync_dir(&dir.join(outcome.dir_name()))?;
                }
            }
            sync_dir(&dir)?;
            Ok(batch)
        })
        .await?;
        for m in batch {
            self.ledger.record_done(&m.name, m.run, m.outcome)?;
        }
        Ok(())
    }
}

/// Starts writing `f`'s dirty pages back without waiting (Linux `sync_file_range`); elsewhere,
/// or if it fails, the `fdatasync` that follows does the whole work.
fn start_writeback(f: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on an open fd; it reads no memory of ours.
        unsafe {
            libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}
