//! Checkpoints: the status files and moves of many files made durable at once, then recorded
//! `done` in the ledger.
//!
//! Why: once a file's result is durable in the ledger (`decided`, with its whole status
//! record), its status file and its move out of the inbox can be redone from the ledger after a
//! crash (see [`crate::store::recovery`]), so they need not be durable one file at a time. Synced per
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

use crate::mutex::lock;
use crate::store::disk::{at, sync_dir};
use crate::store::group_sync::off_thread;
use crate::store::ledger::Ledger;
use crate::store::status::Outcome;
use crate::work::queue::WorkQueue;

/// A checkpoint runs once this many files are pending (or when the queue is empty).
pub(crate) const BATCH: usize = 64;

/// A file whose status was written and which was moved, neither synced yet.
pub(crate) struct Moved {
    pub name: String,
    pub run: u64,
    pub outcome: Outcome,
    /// Its status file.
    pub status: PathBuf,
    /// Where it was in the inbox.
    pub path: PathBuf,
}

/// The files moved since the last checkpoint, shared by the workers of one watcher.
pub(crate) struct Checkpoints {
    dir: PathBuf,
    ledger: Arc<Ledger>,
    queue: Arc<WorkQueue>,
    pending: Mutex<Vec<Moved>>,
}

impl Checkpoints {
    /// The checkpoints of the watched directory `dir`, recorded in `ledger`; each file's name
    /// stays claimed in `queue` until its `done` is appended (see [`Checkpoints::run`]).
    pub fn new(dir: PathBuf, ledger: Arc<Ledger>, queue: Arc<WorkQueue>) -> Self {
        Checkpoints {
            dir,
            ledger,
            queue,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Hands over `moved`; returns how many files are pending now.
    pub fn push(&self, moved: Moved) -> usize {
        let mut pending = lock(&self.pending);
        pending.push(moved);
        pending.len()
    }

    /// Whether files are pending.
    pub fn any_pending(&self) -> bool {
        !lock(&self.pending).is_empty()
    }

    /// Makes every pending file durable (its status file, then each directory involved, on the
    /// blocking pool), records it `done`, and only then releases its name: a file dropped
    /// again under that name cannot start a run whose records would interleave with this
    /// one's. On an error the files of the batch are not tried again (a second `fsync` after a
    /// failed one can succeed over lost data): they stay `decided` in the ledger, which the next
    /// start finishes, and their names stay claimed until then.
    pub async fn run(&self) -> io::Result<()> {
        let batch = std::mem::take(&mut *lock(&self.pending));
        if batch.is_empty() {
            return Ok(());
        }
        let dir = self.dir.clone();
        let batch = off_thread(move || sync_all(&dir, &batch).map(|()| batch)).await?;
        for m in batch {
            self.ledger.record_done(&m.name, m.run, m.outcome)?;
            self.queue.release(&m.name);
            if std::fs::symlink_metadata(&m.path).is_ok() {
                // Dropped again while claimed: intake ignored it then.
                self.queue.request_rescan();
            }
        }
        Ok(())
    }
}

/// Syncs the status files of `batch` (a file removed since is skipped: there is nothing of it
/// left to sync), then each directory involved.
fn sync_all(dir: &std::path::Path, batch: &[Moved]) -> io::Result<()> {
    let mut files = Vec::with_capacity(batch.len());
    for m in batch {
        match File::open(&m.status) {
            Ok(f) => files.push((f, &m.status)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(at("open", &m.status)(e)),
        }
    }
    // Start the writes of every file first, so that the device takes them together, then wait
    // for each: one round trip to the disk for the batch, not one per file.
    for (f, _) in &files {
        start_writeback(f);
    }
    for (f, path) in &files {
        f.sync_data().map_err(at("sync", path))?;
    }
    for outcome in [Outcome::Processed, Outcome::Failed] {
        if batch.iter().any(|m| m.outcome == outcome) {
            sync_dir(&dir.join(outcome.dir_name()))?;
        }
    }
    sync_dir(dir)
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
