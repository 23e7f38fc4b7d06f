//! The work queue between intake and the workers, and everything whose rule is tied to it: the
//! claims (names queued or being processed), the files handed back unprocessed, the files the
//! workers hold, the queue's depth and its counters, and the workers' request for a rescan.
//!
//! One owner, so that each rule lives in one place: a name is claimed as it is queued and
//! released when its worker is done with it (or when it could not be queued); the depth goes up
//! as a file is queued and down as a worker takes it or close drains it; a file leaves the
//! watcher's hands exactly one way: committed by a worker, or handed back in the
//! [`ShutdownReport`](crate::ShutdownReport).
//!
//! The sending half, an [`Inlet`], belongs to the intake task alone: when intake ends, the
//! queue closes, and the workers leave once they have emptied it ([`Mode::Once`](crate::Mode)).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::mutex::lock;
use crate::report::metrics::Metrics;

/// A bounded queue of `capacity` files: the intake's [`Inlet`], and the shared [`WorkQueue`].
pub(crate) fn bounded(capacity: usize) -> (Inlet, Arc<WorkQueue>) {
    let (tx, rx) = mpsc::channel(capacity);
    let queue = Arc::new(WorkQueue {
        rx: tokio::sync::Mutex::new(rx),
        claimed: Mutex::new(HashSet::new()),
        handed_back: Mutex::new(Vec::new()),
        in_progress: Mutex::new(HashSet::new()),
        rescan: Notify::new(),
        depth: AtomicI64::new(0),
        queued: AtomicU64::new(0),
        backpressure_waits: AtomicU64::new(0),
    });
    let inlet = Inlet {
        tx,
        queue: queue.clone(),
    };
    (inlet, queue)
}

/// The queue and its bookkeeping, shared by intake (through its [`Inlet`]), the workers and
/// close.
pub(crate) struct WorkQueue {
    rx: tokio::sync::Mutex<mpsc::Receiver<PathBuf>>,
    /// Names queued or being processed: intake does not queue them again.
    claimed: Mutex<HashSet<String>>,
    /// Files left unprocessed, for the shutdown report.
    handed_back: Mutex<Vec<PathBuf>>,
    /// The files the workers hold uncommitted, from [`WorkQueue::take`] until their result is
    /// durable ([`WorkQueue::decided`]) or they are let go ([`WorkQueue::let_go`]): up to two
    /// per worker, the one being processed and the next, taken while that result syncs.
    in_progress: Mutex<HashSet<PathBuf>>,
    /// Asks intake to scan the directory again (see [`WorkQueue::request_rescan`]).
    rescan: Notify,
    /// Files in the queue now (signed: a worker may take a file before intake counts it).
    depth: AtomicI64,
    queued: AtomicU64,
    backpressure_waits: AtomicU64,
}

/// The sending half of the queue, owned by the intake task.
pub(crate) struct Inlet {
    tx: mpsc::Sender<PathBuf>,
    queue: Arc<WorkQueue>,
}

impl Inlet {
    /// Claims `name` and queues `path`, waiting for room when the queue is full
    /// (backpressure). Returns false when `path` was not queued: cancelled while waiting (it
    /// is then handed back) or the queue is closed; its claim is released. A name already
    /// claimed is not queued again (returns true).
    pub async fn push(&self, path: PathBuf, name: &str, cancel: &CancellationToken) -> bool {
        let q = &*self.queue;
        if !lock(&q.claimed).insert(name.to_string()) {
            return true;
        }
        q.depth.fetch_add(1, Relaxed);
        let sent = match self.tx.try_send(path) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(path)) => {
                q.backpressure_waits.fetch_add(1, Relaxed);
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {
                        q.hand_back(path);
                        false
                    }
                    r = self.tx.reserve() => match r {
                        Ok(permit) => {
                            permit.send(path);
                            true
                        }
                        Err(_) => false,
                    },
                }
            }
        };
        if sent {
            q.queued.fetch_add(1, Relaxed);
        } else {
            q.depth.fetch_sub(1, Relaxed);
            lock(&q.claimed).remove(name);
        }
        sent
    }

    /// Whether `name` is queued or being processed.
    pub fn is_claimed(&self, name: &str) -> bool {
        lock(&self.queue.claimed).contains(name)
    }

    /// Leaves `path` unprocessed; it is named in the shutdown report.
    pub fn hand_back(&self, path: PathBuf) {
        self.queue.hand_back(path);
    }

    /// Resolves when a worker asks for a rescan ([`WorkQueue::request_rescan`]).
    pub async fn rescan_requested(&self) {
        self.queue.rescan.notified().await
    }
}

impl WorkQueue {
    /// The next file for a worker, which then holds it (until [`WorkQueue::decided`] or [`WorkQueue::let_go`]); `None` when
    /// cancelled, or once the queue is closed and empty.
    pub async fn take(&self, cancel: &CancellationToken) -> Option<PathBuf> {
        let path = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            p = async { self.rx.lock().await.recv().await } => p,
        }?;
        self.depth.fetch_sub(1, Relaxed);
        lock(&self.in_progress).insert(path.clone());
        Some(path)
    }

    /// The next file for a worker if one is queued now, without waiting (see
    /// [`WorkQueue::take`]).
    pub fn try_take(&self) -> Option<PathBuf> {
        let path = self.rx.try_lock().ok()?.try_recv().ok()?;
        self.depth.fetch_sub(1, Relaxed);
        lock(&self.in_progress).insert(path.clone());
        Some(path)
    }

    /// A worker's file `path` is decided (its result durable in the ledger): no longer held,
    /// not one that close would hand back. Its name stays claimed until [`WorkQueue::release`]
    /// (the ledger's `done`).
    pub fn decided(&self, path: &Path) {
        lock(&self.in_progress).remove(path);
    }

    /// Releases the claim on `name`: intake may queue that name again.
    pub fn release(&self, name: &str) {
        lock(&self.claimed).remove(name);
    }

    /// Whether no file is queued now.
    pub fn is_empty(&self) -> bool {
        self.depth.load(Relaxed) <= 0
    }

    /// A worker lets go of its file `path`, named `name`, undecided (handed back, vanished, not
    /// recorded): no longer held, and intake may queue that name again.
    pub fn let_go(&self, path: &Path, name: &str) {
        lock(&self.in_progress).remove(path);
        self.release(name);
    }

    /// Leaves `path` unprocessed; it is named in the shutdown report.
    pub fn hand_back(&self, path: PathBuf) {
        lock(&self.handed_back).push(path);
    }

    /// Asks intake to scan the directory again: while a name was claimed, intake ignored it,
    /// so a new file dropped under the same name in that window would otherwise wait for the
    /// next start.
    pub fn request_rescan(&self) {
        self.rescan.notify_one();
    }

    /// At close, once every task has ended: closes the queue and returns every file left
    /// unprocessed, sorted, without duplicates: handed back, still queued, or held by an
    /// aborted worker (those stay in place, in flight in the ledger). Releases every claim.
    pub async fn close(&self) -> Vec<PathBuf> {
        let mut handed_back = std::mem::take(&mut *lock(&self.handed_back));
        {
            let mut rx = self.rx.lock().await;
            rx.close();
            while let Ok(p) = rx.try_recv() {
                self.depth.fetch_sub(1, Relaxed);
                handed_back.push(p);
            }
        }
        handed_back.extend(lock(&self.in_progress).drain());
        handed_back.sort();
        // A file handed back by a worker may have been queued and handed back again (Poll mode).
        handed_back.dedup();
        lock(&self.claimed).clear();
        handed_back
    }

    /// Fills in the queue's part of `m`.
    pub fn fill_metrics(&self, m: &mut Metrics) {
        m.queued = self.queued.load(Relaxed);
        m.backpressure_waits = self.backpressure_waits.load(Relaxed);
        m.queue_depth = self.depth.load(Relaxed).max(0) as u64;
    }
}
