//! The engine: the one place that wires the watcher's parts together. [`Watcher::start_on`]
//! takes the directory lock, recovers the ledger, opens the event source, and hands each task
//! only the parts it uses; [`Watcher::close`] and the drop take them apart again, in order.
//!
//! Every piece of mutable state has one owner module, which alone changes it (see
//! `ARCHITECTURE.md`): the queue, its claims and hand-backs ([`crate::work::queue`]), progress and
//! completion ([`crate::report::progress`]), the counters ([`crate::report::metrics`]), the debounce state
//! ([`crate::intake`]), the event source and its unwatch ([`crate::intake::events`]), the tasks and the
//! directory lock ([`crate::lifecycle::tasks`], [`crate::lifecycle::dirlock`]), the ledger ([`crate::store::ledger`]). No
//! part imports this module.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::OnceCell;
use watcher_shutdown::Stage;

use crate::config::{Builder, Config};
use crate::error::StartError;
use crate::intake::events::{self, Unwatcher};
use crate::intake::{FileState, Intake};
use crate::lifecycle::background::Routines;
use crate::lifecycle::dirlock::{DirLock, Fence, LockError};
use crate::lifecycle::shutdown_report::ShutdownReport;
use crate::lifecycle::tasks::Tasks;
use crate::names::{FAILED_DIR, PROCESSED_DIR};
use crate::report::exposition::{ProcessCollector, WatcherCollector};
use crate::report::http::MetricsServer;
use crate::report::metrics::{Counters, Metrics};
use crate::report::progress::Progress;
use crate::store::groups::{self, GroupRecords, GROUPS_FILE};
use crate::store::ledger::Ledger;
use crate::store::recovery::{self, Interrupted};
use crate::work::child::Reaper;
use crate::work::group_end;
use crate::work::queue::{self, WorkQueue};
use crate::work::worker::Crew;
use prometheus_client::registry::Registry;

/// How long a close waits for the killed commands of aborted workers to be reaped.
const REAP_GRACE: Duration = Duration::from_secs(1);

/// A running directory watcher. Create it with [`Watcher::builder`], then [`Watcher::start`].
///
/// Close it with [`Watcher::close`]; dropping it without close cancels (and aborts) all its
/// tasks, which is safe (see the crash-recovery notes in [`crate::store::status`]) but reports nothing.
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
    cfg: Arc<Config>,
    tasks: Tasks,
    ledger: Arc<Ledger>,
    /// Reads the counters and the queue: for `metrics()` and the Prometheus registries.
    collector: Arc<WatcherCollector>,
    /// Where the metrics endpoint listens, if it is on.
    metrics_addr: Option<SocketAddr>,
    queue: Arc<WorkQueue>,
    progress: Arc<Progress>,
    unwatcher: Arc<Unwatcher>,
    /// The commands of aborted workers, killed, until close reaps them.
    reaper: Arc<Reaper>,
    report: OnceCell<ShutdownReport>,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("dir", &self.cfg.dir)
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
    /// commands that a crashed (or `SIGKILL`ed) watcher of the directory left running are ended
    /// with their process groups, each named through [`Builder::on_warning`] (see
    /// [`child`](crate::child); this blocks the start for as long as they take to end: at most
    /// the shutdown budget after `SIGTERM`, then `SIGKILL`), and the ledger is recovered: files
    /// found in flight after a crash run again (with `interrupted: true` in their status)
    /// unless their status shows they had finished.
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
    /// [`WatchService`](crate::WatchService). Inbox files are read on that runtime's blocking
    /// pool (so that no file, and no slow filesystem, can block a runtime thread), and so are,
    /// with fsync on, the syncs of a file's commit (which wait for the disk): the runtime
    /// starts a pool thread as a read or sync needs one and ends it after 10 s idle (tokio's
    /// default); a leak check of a single run counts it unless it ignores the runtime's own
    /// threads.
    pub fn start_on(config: Config, rt: &Handle) -> Result<Watcher, StartError> {
        // The metrics endpoint's address first: a bad or taken one fails before anything else.
        let metrics_server = bind_metrics(&config, rt)?;
        let (dir_lock, ledger, interrupted) = open_dir(&config)?;
        let (events, unwatcher) = events::open(&config, &config.dir)?;

        let cfg = Arc::new(config);
        let ledger = Arc::new(ledger);
        let counters = Arc::new(Counters::default());
        let progress = Arc::new(Progress::new(cfg.workers));
        let (inlet, queue) = queue::bounded(cfg.queue_capacity);
        let file_state = FileState::new(cfg.debounce);
        let tasks = Tasks::new(rt.clone(), Fence::new(dir_lock, &cfg.dir));
        let reaper = Arc::new(Reaper::recording(GroupRecords::new(&cfg.dir).map(Arc::new)));
        let collector = Arc::new(collector_of(&counters, &queue, rt));

        let crew = Crew::new(
            cfg.clone(),
            queue.clone(),
            ledger.clone(),
            counters.clone(),
            progress.clone(),
            interrupted,
            reaper.clone(),
        );
        spawn_workers(&tasks, crew, cfg.workers, &progress);
        let intake = Intake::new(cfg.clone(), inlet, file_state.clone(), events);
        tasks.spawn(Stage::Intake, "intake", move |_, token| intake.run(token));
        let routines = Routines {
            ledger: ledger.clone(),
            cleanup_after: cfg.cleanup_after,
            cleanup_every: cfg.cleanup_every,
            file_state,
            file_state_every: cfg.file_state_cleanup_every,
            counters: counters.clone(),
            progress: progress.clone(),
            warnings: cfg.warnings.clone(),
        };
        start_routines(&tasks, routines, cfg.leaky_background);
        let metrics_addr = metrics_server.map(|(addr, server)| {
            serve_metrics(&tasks, server, &collector);
            addr
        });
        Ok(Watcher {
            cfg,
            tasks,
            ledger,
            collector,
            metrics_addr,
            queue,
            progress,
            unwatcher,
            reaper,
            report: OnceCell::new(),
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The watched directory (canonical path).
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.collector.snapshot()
    }

    /// Where the metrics endpoint listens ([`Builder::metrics_addr`], with the port chosen
    /// for port 0), or `None` when it is off. It serves from start until close.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Registers the watcher's metrics (the `watcher_*` names of [`crate::exposition`]) in an
    /// application's own `registry`: each scrape reads the same counters as
    /// [`Watcher::metrics`]. The process metrics are not included (an application usually
    /// exports its own; else add [`ProcessCollector`](crate::exposition::ProcessCollector)).
    /// The registry keeps a handle to the counters, which stay readable after close (the
    /// routines' gauges then read 0). Two watchers in one registry need a label each, e.g.
    /// `registry.sub_registry_with_label(("dir", "inbox".into()))`.
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
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
    /// let mut registry = Registry::with_prefix("app");
    /// watcher.register_metrics(&mut registry);
    /// watcher.finished().await;
    /// watcher.close().await;
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("\napp_watcher_files_processed_total 1\n"), "{text}");
    /// # }
    /// ```
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.collector.clone()));
    }

    /// Resolves once every worker has exited: in [`Mode::Once`](crate::Mode::Once), when every file present at
    /// start has been processed; in the other modes, only after close (or drop).
    pub async fn finished(&self) {
        self.progress.finished().await
    }

    /// Waits until `pred` holds for the metrics, or `timeout` passes; returns whether it
    /// held. Woken whenever a worker starts or finishes a file, a background routine runs, and at
    /// close (no polling).
    pub async fn wait_for(&self, pred: impl Fn(&Metrics) -> bool, timeout: Duration) -> bool {
        self.progress
            .wait_until(|| pred(&self.metrics()), timeout)
            .await
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
        self.report.get_or_init(|| self.close_once()).await.clone()
    }

    /// The close itself, run once: the stages, then the queue's hand-backs, the ledger, the
    /// lock.
    async fn close_once(&self) -> ShutdownReport {
        let t0 = Instant::now();
        let deadline = tokio::time::Instant::now() + self.cfg.shutdown_timeout;
        let closed = self.tasks.close(&self.unwatcher, deadline).await;
        // The aborted workers' commands were killed (their whole process groups) as the
        // aborted tasks were dropped: reap them. SIGKILL takes microseconds unless a process
        // is stuck in uninterruptible I/O; the grace only bounds that case.
        let killed = self.reaper.reap(REAP_GRACE).await;
        self.reaper.close_records();
        let handed_back = self.queue.close().await;
        if let Err(e) = self.ledger.close() {
            // Left in the journal: the next start replays it.
            self.cfg
                .warnings
                .warn(format_args!("cannot compact the ledger at close: {e}"));
        }
        // Last: every task is gone and the ledger is compacted, so the next watcher may start.
        self.tasks.release_lock();
        self.progress.finish();
        ShutdownReport {
            stages: closed.stages,
            budget_exhausted: closed.budget_exhausted,
            aborted: closed.aborted,
            killed,
            handed_back,
            unwatch: self.unwatcher.took(),
            total: t0.elapsed(),
        }
    }
}

/// Ends the commands that a watcher of `dir`, killed or crashed, left running (see
/// `work/group_end.rs`), each named in a warning, then empties the records. Blocks for as long
/// as that takes: at most the shutdown budget after `SIGTERM`, and [`group_end::KILL_WAIT`]
/// after `SIGKILL`; nothing when no recorded group runs.
fn end_left_running(dir: &Path, ledger: &Ledger, cfg: &Config) -> Result<(), StartError> {
    let left = groups::left_in(dir).map_err(StartError::io("read the records of", dir))?;
    if left.records.is_empty() && left.unreadable.is_empty() {
        return Ok(());
    }
    for line in &left.unreadable {
        cfg.warnings.warn(format_args!(
            "{GROUPS_FILE}: ignoring a line that is not a record: {line:?}"
        ));
    }
    let runs: std::collections::HashMap<u64, String> = ledger
        .entries()
        .into_iter()
        .map(|(name, entry)| (entry.run, name))
        .collect();
    let ended = group_end::end_left_running(
        &left.records,
        |run| runs.get(&run).cloned(),
        cfg.shutdown_timeout,
    );
    for e in &ended {
        cfg.warnings.warn(e);
    }
    groups::clear(dir).map_err(StartError::io("clear the records of", dir))
}

/// Binds the metrics endpoint's address, if the configuration has one: the server and the
/// address it listens on (the port chosen for port 0).
fn bind_metrics(
    config: &Config,
    rt: &Handle,
) -> Result<Option<(SocketAddr, MetricsServer)>, StartError> {
    let Some(addr) = config.metrics_addr else {
        return Ok(None);
    };
    MetricsServer::bind(addr, rt)
        .and_then(|s| Ok((s.local_addr()?, s)))
        .map(Some)
        .map_err(|source| StartError::MetricsAddr { addr, source })
}

/// Takes the directory's lock (nothing after it may run twice at once on one directory), makes
/// the outcome folders, opens the ledger and recovers what a crash left in flight.
fn open_dir(config: &Config) -> Result<(DirLock, Ledger, Interrupted), StartError> {
    let dir = &config.dir;
    let dir_lock = DirLock::acquire_waiting(dir, config.shutdown_timeout).map_err(|e| match e {
        LockError::Held => StartError::DirectoryLocked { dir: dir.clone() },
        LockError::Io(e) => StartError::io("lock", dir)(e),
    })?;
    for sub in [PROCESSED_DIR, FAILED_DIR] {
        let sub = dir.join(sub);
        std::fs::create_dir_all(&sub).map_err(StartError::io("create directory", &sub))?;
    }
    let ledger =
        Ledger::open_with(dir, config.fsync).map_err(StartError::io("open the ledger of", dir))?;
    // Before recovery, and before any file runs again: the commands a crashed watcher left
    // running are ended (their files are then in flight in the ledger, and run again marked
    // `interrupted`).
    end_left_running(dir, &ledger, config)?;
    let interrupted = recovery::recover(dir, config.fsync, &ledger)
        .map_err(StartError::io("recover the ledger of", dir))?;
    Ok((dir_lock, ledger, interrupted))
}

/// What the metrics read: the counters, with the queue's figures filled in.
fn collector_of(counters: &Arc<Counters>, queue: &Arc<WorkQueue>, rt: &Handle) -> WatcherCollector {
    let (counters, queue) = (counters.clone(), queue.clone());
    WatcherCollector::new(
        move || {
            let mut m = counters.snapshot();
            queue.fill_metrics(&mut m);
            m
        },
        rt.clone(),
    )
}

/// Spawns the `workers` tasks of the crew in the Workers stage.
fn spawn_workers(tasks: &Tasks, crew: Crew, workers: usize, progress: &Progress) {
    let crew = Arc::new(crew);
    for i in 0..workers {
        let crew = crew.clone();
        let spawned = tasks.spawn(Stage::Workers, &format!("worker-{i}"), move |_, token| {
            crew.run(token)
        });
        if !spawned {
            // Not reachable before close, but keep `finished` exact.
            progress.worker_exited();
        }
    }
}

/// Starts the two background routines ("cleanup", "file-state") in the Background stage;
/// `leaky` is the test fixture that leaks them instead (see `Routines::start_leaky`).
fn start_routines(tasks: &Tasks, routines: Routines, leaky: bool) {
    if leaky {
        routines.start_leaky(tasks);
    } else {
        routines.start(tasks);
    }
}

/// Serves the watcher's and the process's metrics at `server` until close (Background stage).
fn serve_metrics(tasks: &Tasks, server: MetricsServer, collector: &Arc<WatcherCollector>) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector.clone()));
    registry.register_collector(Box::new(ProcessCollector));
    tasks.spawn(Stage::Background, "metrics-http", move |_, token| {
        server.run(registry, token)
    });
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.report.initialized() {
            return;
        }
        // Stopping intake unwatches the directory now (the aborted intake task may be dropped
        // later); the lock is released once no task of this watcher is running.
        self.tasks.abandon(&self.unwatcher);
        self.progress.finish();
    }
}
