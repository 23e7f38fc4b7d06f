//! The running [`Watcher`]: shared state, start, metrics, close, drop.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::runtime::Handle;
use tokio::sync::{mpsc, Notify, OnceCell};
use tokio_util::sync::CancellationToken;
use watcher_shutdown::Stage;

use crate::config::{Builder, Config, Mode};
use crate::debounce::Debouncer;
use crate::dirlock::{DirLock, Fence, LockError};
use crate::intake::{self, Events, Source, Unwatcher};
use crate::ledger::Ledger;
use crate::metrics::{Counters, Metrics};
#[cfg(any(target_os = "linux", target_os = "android"))]
use crate::service::SubscribeError;
use crate::shutdown::{Hooks, ShutdownReport, Tasks};
use crate::status::{FAILED_DIR, PROCESSED_DIR};
use crate::{background, recovery, worker};

/// Capacity of the channel from notify's thread to the intake task. When it is full, notify's
/// thread waits (and the kernel queues events, or reports an overflow, which triggers a rescan).
const EVENT_CHANNEL: usize = 1024;

/// Why a watcher could not start. Every variant names the directory or file it concerns.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// Another watcher, in this process or another, holds the directory: its lock file
    /// ([`LOCK_FILE`](crate::LOCK_FILE)) is locked until that watcher is closed or dropped.
    DirectoryLocked {
        /// The watched directory.
        dir: PathBuf,
    },
    /// A file-system operation failed: taking the lock, creating `processed/`/`failed/`, or
    /// opening or recovering the ledger.
    Io {
        /// What was being done, e.g. `"create directory"`.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error (for the ledger, its message names the exact file).
        source: std::io::Error,
    },
    /// notify could not watch the directory.
    Notify {
        /// The watched directory.
        dir: PathBuf,
        /// The underlying error.
        source: notify::Error,
    },
    /// The configured [`WatchService`](crate::WatchService) was closed.
    WatchServiceClosed {
        /// The watched directory.
        dir: PathBuf,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::DirectoryLocked { dir } => write!(
                f,
                "cannot start watcher: another watcher holds {} (its lock file {} is locked)",
                dir.display(),
                dir.join(crate::LOCK_FILE).display()
            ),
            StartError::Io { op, path, source } => {
                write!(
                    f,
                    "cannot start watcher: cannot {op} {}: {source}",
                    path.display()
                )
            }
            StartError::Notify { dir, source } => {
                write!(f, "cannot watch directory {}: {source}", dir.display())
            }
            StartError::WatchServiceClosed { dir } => write!(
                f,
                "cannot watch directory {}: the watch service is closed",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Io { source, .. } => Some(source),
            StartError::Notify { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl StartError {
    fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StartError {
        let path = path.to_path_buf();
        move |source| StartError::Io { op, path, source }
    }
}

/// State shared by the watcher and its tasks.
pub(crate) struct Shared {
    pub cfg: Config,
    pub tasks: Tasks,
    pub ledger: Ledger,
    pub counters: Counters,
    /// Names queued or being processed: intake does not queue them again.
    pub claimed: Mutex<HashSet<String>>,
    /// Names whose earlier run was interrupted (found in flight at start).
    pub interrupted: Mutex<HashSet<String>>,
    pub debouncer: Mutex<Debouncer>,
    pub handed_back: Mutex<Vec<PathBuf>>,
    /// Per worker task id, the file it is processing.
    pub in_progress: Mutex<HashMap<u64, PathBuf>>,
    pub queue_rx: tokio::sync::Mutex<mpsc::Receiver<PathBuf>>,
    /// Notified whenever a file finishes or a worker exits.
    pub progress: Notify,
    /// Stops Watch mode's events at their source (and times the kernel's part).
    pub unwatcher: Unwatcher,
    /// Asks intake to scan the directory again (see `worker::run`).
    pub rescan: Notify,
    pub workers_left: AtomicUsize,
    /// Cancelled when every worker has exited.
    pub finished: CancellationToken,
    run_seq: AtomicU64,
    report: OnceCell<ShutdownReport>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Watch mode's events: a notify instance of the watcher's own, or a subscription to the
/// configured shared service; and the [`Unwatcher`] that stops them.
fn watch_events(config: &Config, dir: &Path) -> Result<(Events, Unwatcher), StartError> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(service) = &config.watch_service {
        let sub = service.subscribe(dir, EVENT_CHANNEL).map_err(|e| match e {
            SubscribeError::Closed => StartError::WatchServiceClosed {
                dir: dir.to_path_buf(),
            },
            // Not reachable while the directory lock is held; same meaning.
            SubscribeError::AlreadyWatched => StartError::DirectoryLocked {
                dir: dir.to_path_buf(),
            },
            SubscribeError::Notify(source) => StartError::Notify {
                dir: dir.to_path_buf(),
                source,
            },
        })?;
        let unwatcher = Unwatcher::shared(&sub);
        return Ok((Events::Shared(sub), unwatcher));
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = config;
    let (w, rx) =
        intake::notify_watcher(dir, EVENT_CHANNEL).map_err(|source| StartError::Notify {
            dir: dir.to_path_buf(),
            source,
        })?;
    Ok((Events::Own(rx), Unwatcher::own(w)))
}

impl Shared {
    /// A run id unique across restarts: start time in µs, plus a sequence number.
    pub fn next_run(&self) -> u64 {
        self.run_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub fn claim(&self, name: &str) -> bool {
        lock(&self.claimed).insert(name.to_string())
    }

    pub fn unclaim(&self, name: &str) {
        lock(&self.claimed).remove(name);
    }

    pub fn hand_back(&self, p: PathBuf) {
        lock(&self.handed_back).push(p);
    }
}

/// A running directory watcher. Create it with [`Watcher::builder`], then [`Watcher::start`].
///
/// Close it with [`Watcher::close`]; dropping it without close cancels (and aborts) all its
/// tasks, which is safe (see the crash-recovery notes in [`crate::status`]) but reports nothing.
/// The drop unwatches the directory itself: notify's thread and fds go at once, even if the
/// runtime never polls the aborted tasks again (unless notify's thread is blocked handing an
/// event to a full event channel: only dropping the intake task, which reads it, frees it).
///
/// ```
/// use std::time::Duration;
/// use watcher::{processor, Mode, ProcessError, Watcher};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("a.txt"), b"hello").unwrap();
/// let config = Watcher::builder(dir.path())
///     .mode(Mode::Once)
///     .processor(processor::from_fn(|_, _| async { Ok::<(), ProcessError>(()) }))
///     .build()
///     .unwrap();
/// let watcher = Watcher::start(config).await.unwrap();
/// watcher.finished().await;
/// let report = watcher.close().await;
/// assert!(report.aborted.is_empty());
/// assert_eq!(watcher.metrics().processed, 1);
/// assert!(dir.path().join("processed/a.txt").exists());
/// # }
/// ```
pub struct Watcher {
    shared: Arc<Shared>,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("dir", &self.shared.cfg.dir)
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Starts configuring a watcher of `dir`.
    pub fn builder(dir: impl Into<PathBuf>) -> Builder {
        Builder::new(dir)
    }

    /// Starts the watcher on the current tokio runtime (call it from async code).
    ///
    /// Files already in the directory are processed in every mode. Before anything runs, the
    /// ledger is recovered: files found in flight after a crash run again (with
    /// `interrupted: true` in their status) unless their status shows they had finished.
    ///
    /// Takes the directory's lock first (see the [crate docs](crate)): while another watcher
    /// holds it, fails with [`StartError::DirectoryLocked`]. The one wait: right after a drop
    /// without close, until a poll of the dropped watcher still running on another thread
    /// returns (at most the shutdown budget).
    pub async fn start(config: Config) -> Result<Watcher, StartError> {
        Self::start_on(config, &Handle::current())
    }

    /// Starts the watcher on the given runtime. Every task it spawns runs there; in Watch mode
    /// notify's thread is the only OS thread the watcher creates, and none with a
    /// [`WatchService`](crate::WatchService) (file operations are short and run inline on the
    /// tasks, so they use no blocking-pool thread).
    pub fn start_on(config: Config, rt: &Handle) -> Result<Watcher, StartError> {
        let dir = config.dir.clone();
        // First the lock: nothing below may run twice at once on one directory.
        let dir_lock =
            DirLock::acquire_waiting(&dir, config.shutdown_timeout).map_err(|e| match e {
                LockError::Held => StartError::DirectoryLocked { dir: dir.clone() },
                LockError::Io(e) => StartError::io("lock", &dir)(e),
            })?;
        for sub in [PROCESSED_DIR, FAILED_DIR] {
            let sub = dir.join(sub);
            std::fs::create_dir_all(&sub).map_err(StartError::io("create directory", &sub))?;
        }
        let ledger = Ledger::open_with(&dir, config.fsync)
            .map_err(StartError::io("open the ledger of", &dir))?;
        let interrupted = recovery::recover(&config, &ledger)
            .map_err(StartError::io("recover the ledger of", &dir))?;

        let (source, unwatcher) = match config.mode {
            Mode::Once => (Source::Once, Unwatcher::none()),
            Mode::Poll(period) => (Source::Poll(period), Unwatcher::none()),
            Mode::Watch => {
                let (events, unwatcher) = watch_events(&config, &dir)?;
                (Source::Watch(events), unwatcher)
            }
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let run_base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let workers = config.workers;
        let shared = Arc::new(Shared {
            debouncer: Mutex::new(Debouncer::new(config.debounce)),
            tasks: Tasks::new(rt.clone(), Fence::new(dir_lock, &config.dir)),
            ledger,
            counters: Counters::default(),
            claimed: Mutex::new(HashSet::new()),
            interrupted: Mutex::new(interrupted),
            handed_back: Mutex::new(Vec::new()),
            in_progress: Mutex::new(HashMap::new()),
            queue_rx: tokio::sync::Mutex::new(rx),
            progress: Notify::new(),
            unwatcher,
            rescan: Notify::new(),
            workers_left: AtomicUsize::new(workers),
            finished: CancellationToken::new(),
            run_seq: AtomicU64::new(run_base),
            report: OnceCell::new(),
            cfg: config,
        });

        for i in 0..workers {
            let s = shared.clone();
            let spawned =
                shared
                    .tasks
                    .spawn(Stage::Workers, &format!("worker-{i}"), move |id, token| {
                        worker::run(s, id, token)
                    });
            if !spawned {
                // Not reachable before close, but keep `finished` exact.
                shared.worker_exited();
            }
        }
        let s = shared.clone();
        shared
            .tasks
            .spawn(Stage::Intake, "intake", move |_, token| {
                intake::run(s, tx, source, token)
            });
        background::start(&shared);
        Ok(Watcher { shared })
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    /// The watched directory (canonical path).
    pub fn dir(&self) -> &Path {
        &self.shared.cfg.dir
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.shared.counters.snapshot()
    }

    /// Resolves once every worker has exited: in [`Mode::Once`], when every file present at
    /// start has been processed; in the other modes, only after close (or drop).
    pub async fn finished(&self) {
        self.shared.finished.cancelled().await
    }

    /// Waits until `pred` holds for the metrics, or `timeout` passes; returns whether it
    /// held. Woken whenever a worker starts or finishes a file, a background routine runs, and at
    /// close (no polling).
    pub async fn wait_for(&self, pred: impl Fn(&Metrics) -> bool, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pred(&self.metrics()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return pred(&self.metrics());
            }
        }
    }

    /// Closes the watcher, in stages, within the shutdown budget: stop intake (and wait until
    /// notify's thread has ended and released its fds, or, with a
    /// [`WatchService`](crate::WatchService), until the directory is unwatched and the service
    /// holds nothing of this watcher) → hand back queued work → join the workers (each finishes
    /// its current file) → join the background routines → compact and close the ledger →
    /// release the directory lock. Tasks still running when the budget runs out are aborted and
    /// named in the report. When it returns, every task of the watcher has ended and its own
    /// fds (lock file, ledger journal) are closed; the value can still be queried. (After an
    /// aborted intake, notify's thread may still be ending.)
    ///
    /// Idempotent and safe to call concurrently: every caller gets the same report.
    ///
    /// Where to await it: the stages follow each other on the watcher's own tasks, and the
    /// caller is woken once, when the last one has ended (unless the budget runs out). Awaited
    /// in a task on the watcher's runtime, that wake-up is a push onto the thread's run queue.
    /// Awaited in `block_on` (a `#[tokio::main]` body), it is an eventfd write on a
    /// current-thread runtime and a wake-up of another thread on a multi-thread one, which can
    /// cost more than the close itself (the watcher's own share of a close in `BENCHMARKS.md`,
    /// on a 2-worker runtime: 36–46 µs in a task, 62–115 µs from `block_on`). Spawning a task
    /// only to await `close()` in it gains a `block_on` caller nothing: the spawn and the final
    /// wake-up are then its cost.
    pub async fn close(&self) -> ShutdownReport {
        let shared = self.shared.clone();
        self.shared
            .report
            .get_or_init(|| close_inner(shared))
            .await
            .clone()
    }
}

impl Shared {
    pub fn worker_exited(&self) {
        if self.workers_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finished.cancel();
        }
        self.progress.notify_waiters();
    }
}

async fn close_inner(shared: Arc<Shared>) -> ShutdownReport {
    let t0 = Instant::now();
    let hooks = Hooks {
        tasks: &shared.tasks,
        unwatcher: &shared.unwatcher,
        deadline: tokio::time::Instant::now() + shared.cfg.shutdown_timeout,
    };
    let cr = shared.tasks.coord.close(&hooks).await;
    // Aborted tasks end at their next poll: wait until they are really gone.
    shared.tasks.join_all().await;

    let mut handed_back = std::mem::take(&mut *lock(&shared.handed_back));
    {
        let mut rx = shared.queue_rx.lock().await;
        rx.close();
        while let Ok(p) = rx.try_recv() {
            shared.counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
            handed_back.push(p);
        }
    }
    // Files that aborted workers were processing stay in place (in flight in the ledger).
    handed_back.extend(lock(&shared.in_progress).drain().map(|(_, p)| p));
    handed_back.sort();
    // A file handed back by a worker may have been queued and handed back again (Poll mode).
    handed_back.dedup();
    lock(&shared.claimed).clear();
    if let Err(e) = shared.ledger.close() {
        // Left in the journal: the next start replays it.
        eprintln!("watcher: cannot compact the ledger at close: {e}");
    }
    // Last: every task is gone and the ledger is compacted, so the next watcher may start.
    shared.tasks.fence.release();
    shared.finished.cancel();
    shared.progress.notify_waiters();
    ShutdownReport {
        stages: cr.stages,
        budget_exhausted: cr.budget_exhausted,
        aborted: cr.aborted,
        handed_back,
        unwatch: shared.unwatcher.took(),
        total: t0.elapsed(),
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.shared.report.initialized() {
            return;
        }
        // Stopping intake unwatches the directory now (the aborted intake task may be dropped
        // later); the lock is released once no task of this watcher is running.
        let hooks = Hooks {
            tasks: &self.shared.tasks,
            unwatcher: &self.shared.unwatcher,
            deadline: tokio::time::Instant::now(),
        };
        self.shared.tasks.coord.cancel_all(&hooks);
        self.shared.tasks.abort_all();
        self.shared.tasks.fence.release_when_idle();
        self.shared.finished.cancel();
    }
}
