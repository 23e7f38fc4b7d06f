//! Progress and completion: what [`Watcher::wait_for`](crate::Watcher::wait_for) and
//! [`Watcher::finished`](crate::Watcher::finished) wait on.
//!
//! Whoever changes a metric a caller may wait for (a worker starting or finishing a file, a
//! background routine's run, the end of close) says so here; a waiter checks its condition
//! after registering for the next change, so it never misses one and never polls. Completion
//! is one token, cancelled when the last worker has exited, at the end of close, or by a drop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub(crate) struct Progress {
    /// Notified whenever something a waiter may be waiting for has changed.
    changed: Notify,
    workers_left: AtomicUsize,
    /// Cancelled when every worker has exited, or the watcher is closed or dropped.
    finished: CancellationToken,
}

impl Progress {
    /// Progress of a watcher with `workers` workers.
    pub fn new(workers: usize) -> Self {
        Progress {
            changed: Notify::new(),
            workers_left: AtomicUsize::new(workers),
            finished: CancellationToken::new(),
        }
    }

    /// Wakes every waiter to check its condition again.
    pub fn changed(&self) {
        self.changed.notify_waiters();
    }

    /// A worker has exited (or could not be started): the last one completes the watcher.
    pub fn worker_exited(&self) {
        if self.workers_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finished.cancel();
        }
        self.changed();
    }

    /// Completes the watcher (close or drop), whatever its workers are doing.
    pub fn finish(&self) {
        self.finished.cancel();
        self.changed();
    }

    /// Resolves once the watcher is complete.
    pub async fn finished(&self) {
        self.finished.cancelled().await
    }

    /// Waits until `holds()` is true, or `timeout` passes; returns whether it held. Checks it
    /// after each change.
    pub async fn wait_until(&self, holds: impl Fn() -> bool, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if holds() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return holds();
            }
        }
    }
}
