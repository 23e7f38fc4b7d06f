//! One watcher per directory: an exclusive advisory lock on [`LOCK_FILE`] inside the watched
//! directory, held from start until close.
//!
//! Two watchers of the same directory would race on the [`crate::store::ledger`] (its temp file and its
//! journal) and could process a file twice. The lock is an `flock(LOCK_EX | LOCK_NB)` on a file
//! in the directory itself, so it holds across processes and within one process alike (each
//! open of the file is a separate open file description). The kernel releases it when the last
//! descriptor of that description is closed, so a crashed watcher never leaves a stale lock;
//! the file itself stays (removing it would open the classic unlink race) and is ignored in the
//! inbox.
//!
//! Release: [`crate::Watcher::close`] releases the lock after its last stage, when every task
//! has ended. A drop without close cannot wait for its tasks, and a restart right after it must
//! still not overlap with them, so the watcher's tasks run behind a [`Fence`]: the drop aborts
//! them, and the lock is released at the first instant no poll of theirs is running. That is at
//! once when none is (always, on a current-thread runtime), otherwise when the running poll
//! returns; an aborted task is never polled again. A start that finds the lock held by such a
//! dropped watcher of this process waits for that instant (within its shutdown budget) instead
//! of failing.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::mutex::lock;
use crate::names::LOCK_FILE;
use crate::store::disk::at;

/// Why the lock could not be taken.
pub(crate) enum LockError {
    /// Another watcher (in this process or another) holds it.
    Held,
    /// Opening or locking the file failed.
    Io(io::Error),
}

/// The held lock; dropping it closes the file, which releases the lock.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
    _path: PathBuf,
}

/// Directories whose lock a dropped watcher of this process still holds, waiting for a running
/// poll to return (count per directory), and the signal that one was released.
static DRAINING: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);
static RELEASED: Condvar = Condvar::new();

fn draining() -> MutexGuard<'static, Option<HashMap<PathBuf, usize>>> {
    lock(&DRAINING)
}

impl DirLock {
    /// Takes the lock of `dir`. When a dropped watcher of this process holds it only until its
    /// running poll returns, waits for that (at most `patience`); otherwise does not wait.
    pub fn acquire_waiting(dir: &Path, patience: Duration) -> Result<DirLock, LockError> {
        let deadline = Instant::now() + patience;
        loop {
            match DirLock::acquire(dir) {
                Err(LockError::Held) => {}
                done => return done,
            }
            let mut g = draining();
            if !g.as_ref().is_some_and(|m| m.contains_key(dir)) {
                drop(g);
                // Released between the attempt and the check, or held by a live watcher.
                return DirLock::acquire(dir);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::Held);
            }
            g = RELEASED
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            drop(g);
        }
    }

    /// Takes the lock of `dir` without waiting.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LockError::Io(at("open lock file", &path)(e)))?;
        try_lock(&file).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                LockError::Held
            } else {
                LockError::Io(at("lock", &path)(e))
            }
        })?;
        Ok(DirLock {
            _file: file,
            _path: path,
        })
    }
}

#[cfg(unix)]
fn try_lock(file: &File) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: `flock` on a descriptor owned by `file`, which outlives the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Without `flock`, the lock is not enforced (the file is still created and held open).
#[cfg(not(unix))]
fn try_lock(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Holds the [`DirLock`] and tracks the polls of the watcher's tasks, so that a drop releases
/// the lock exactly when no task code of that watcher can run any more.
#[derive(Debug)]
pub(crate) struct Fence {
    polling: AtomicUsize,
    dropped: AtomicBool,
    lock: Mutex<Option<DirLock>>,
    dir: PathBuf,
}

/// One poll in progress; its drop ends it.
pub(crate) struct Polling<'a>(&'a Fence);

impl Fence {
    pub fn new(lock: DirLock, dir: &Path) -> Fence {
        Fence {
            polling: AtomicUsize::new(0),
            dropped: AtomicBool::new(false),
            lock: Mutex::new(Some(lock)),
            dir: dir.to_path_buf(),
        }
    }

    /// Called before each poll of a task: `None` once the watcher was dropped (its tasks are
    /// aborted by then: skip the poll, the runtime cancels the task when it returns).
    pub fn enter(&self) -> Option<Polling<'_>> {
        // SeqCst on both sides (here: add, then load `dropped`; in `release_when_idle`:
        // store `dropped`, then load `polling`): at least one side sees the other.
        self.polling.fetch_add(1, SeqCst);
        let guard = Polling(self);
        (!self.dropped.load(SeqCst)).then_some(guard)
    }

    /// Releases the lock now (close: every task has ended). Idempotent.
    pub fn release(&self) {
        let held = lock(&self.lock).take();
        if held.is_some() && self.dropped.load(SeqCst) {
            drop(held);
            let mut g = draining();
            if let Some(m) = g.as_mut() {
                if let Some(n) = m.get_mut(&self.dir) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&self.dir);
                    }
                }
            }
            RELEASED.notify_all();
        }
    }

    /// Drop without close, after aborting the tasks: releases the lock as soon as no poll is
    /// running (now, or when the last running poll returns). Call once.
    pub fn release_when_idle(&self) {
        *draining()
            .get_or_insert_with(HashMap::new)
            .entry(self.dir.clone())
            .or_default() += 1;
        self.dropped.store(true, SeqCst);
        if self.polling.load(SeqCst) == 0 {
            self.release();
        }
    }
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        if self.0.polling.fetch_sub(1, SeqCst) == 1 && self.0.dropped.load(SeqCst) {
            self.0.release();
        }
    }
}
