//! Configuration: [`Builder`], [`Mode`], [`Config`] and [`ConfigError`].
//!
//! Every value is checked against its allowed range by [`Builder::build`]; a value out of range
//! is an error naming the field, the value and the range. Nothing is silently clamped.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::processor::{DynProcessor, Processor};
use crate::report::on_file::{FileOutcome, OnFile};
#[cfg(any(target_os = "linux", target_os = "android"))]
use crate::service::WatchService;
use crate::warnings::Warnings;

/// How the watcher finds files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Process the files present at start and those notify reports afterwards (inotify on Linux).
    Watch,
    /// Process the files present at start, then stop taking work; see [`crate::Watcher::finished`].
    Once,
    /// Scan the directory every `period` (100 ms ..= 1 h), for filesystems without inotify.
    Poll(Duration),
}

/// A configuration error: a value out of range, a bad pattern, or an unusable directory.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value outside its allowed range.
    OutOfRange {
        /// The builder field, e.g. `"workers"`.
        field: &'static str,
        /// The rejected value, formatted.
        value: String,
        /// The allowed range, formatted.
        allowed: String,
    },
    /// The directory does not exist.
    MissingDirectory(PathBuf),
    /// The path exists but is not a directory.
    NotADirectory(PathBuf),
    /// The directory cannot be read (permissions, I/O error).
    UnreadableDirectory {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file-name pattern is not a valid glob.
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// Why it is invalid.
        message: String,
    },
    /// No processor was configured.
    MissingProcessor,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::OutOfRange {
                field,
                value,
                allowed,
            } => write!(f, "{field} = {value} is out of range (allowed: {allowed})"),
            ConfigError::MissingDirectory(p) => {
                write!(f, "directory {} does not exist", p.display())
            }
            ConfigError::NotADirectory(p) => {
                write!(f, "{} is not a directory", p.display())
            }
            ConfigError::UnreadableDirectory { path, source } => {
                write!(f, "directory {} is not readable: {source}", path.display())
            }
            ConfigError::InvalidPattern { pattern, message } => {
                write!(f, "pattern {pattern:?} is not a valid glob: {message}")
            }
            ConfigError::MissingProcessor => write!(f, "no processor configured"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::UnreadableDirectory { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Allowed ranges, public so that callers (and the CLI) can show them.
pub mod limits {
    use std::time::Duration;

    /// `debounce`: 10 ms ..= 5 s.
    pub const DEBOUNCE: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(5));
    /// `Mode::Poll` period: 100 ms ..= 1 h.
    pub const POLL: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));
    /// `cleanup_after`: 1 h ..= 30 d.
    pub const CLEANUP_AFTER: (Duration, Duration) = (
        Duration::from_secs(3600),
        Duration::from_secs(30 * 24 * 3600),
    );
    /// `cleanup_every`: 1 ms ..= 30 d (short values are for tests).
    pub const CLEANUP_EVERY: (Duration, Duration) = (
        Duration::from_millis(1),
        Duration::from_secs(30 * 24 * 3600),
    );
    /// `file_state_cleanup_every`: 1 ms ..= 1 d (short values are for tests).
    pub const FILE_STATE_CLEANUP_EVERY: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(24 * 3600));
    /// `shutdown_timeout`: 1 ms ..= 10 min.
    pub const SHUTDOWN_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(600));
    /// `max_file_size`: 1 byte ..= 1 GiB.
    pub const MAX_FILE_SIZE: (u64, u64) = (1, 1 << 30);
    /// `retries`: 0 ..= 100.
    pub const RETRIES: (u32, u32) = (0, 100);
    /// `retry_backoff`: 1 ms ..= 60 s.
    pub const RETRY_BACKOFF: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(60));
    /// `queue_capacity`: 1 ..= 65 536.
    pub const QUEUE_CAPACITY: (usize, usize) = (1, 65_536);
}

/// A validated configuration, produced by [`Builder::build`].
#[derive(Clone)]
pub struct Config {
    pub(crate) dir: PathBuf,
    pub(crate) workers: usize,
    pub(crate) debounce: Duration,
    pub(crate) mode: Mode,
    pub(crate) max_file_size: u64,
    pub(crate) pattern: glob::Pattern,
    pub(crate) cleanup_after: Duration,
    pub(crate) cleanup_every: Duration,
    pub(crate) file_state_cleanup_every: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) fsync: bool,
    pub(crate) leaky_background: bool,
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) watch_service: Option<WatchService>,
    pub(crate) processor: Arc<dyn DynProcessor>,
    pub(crate) on_file: Option<OnFile>,
    pub(crate) warnings: Warnings,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Config");
        #[cfg(any(target_os = "linux", target_os = "android"))]
        d.field("watch_service", &self.watch_service.is_some());
        d.field("dir", &self.dir)
            .field("workers", &self.workers)
            .field("debounce", &self.debounce)
            .field("mode", &self.mode)
            .field("max_file_size", &self.max_file_size)
            .field("pattern", &self.pattern.as_str())
            .field("cleanup_after", &self.cleanup_after)
            .field("cleanup_every", &self.cleanup_every)
            .field("file_state_cleanup_every", &self.file_state_cleanup_every)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("queue_capacity", &self.queue_capacity)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The watched directory (canonicalized).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.workers
    }
    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

/// The number of CPU cores, as used for the `workers` limit (4 × cores).
///
/// Read once per process: `available_parallelism` reads the cgroup files on every call (tens
/// of µs), which would be most of the cost of building a config.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// Configures a [`crate::Watcher`]. Create it with [`crate::Watcher::builder`].
///
/// ```
/// use std::time::Duration;
/// use watcher::{ProcessError, Watcher, processor};
///
/// let dir = tempfile::tempdir().unwrap();
/// let config = Watcher::builder(dir.path())
///     .workers(2)
///     .debounce(Duration::from_millis(50))
///     .pattern("*.txt")
///     .processor(processor::from_fn(|_path, _bytes| async { Ok::<(), ProcessError>(()) }))
///     .build()
///     .unwrap();
/// assert_eq!(config.workers(), 2);
///
/// let err = Watcher::builder(dir.path()).workers(0).build().unwrap_err();
/// assert!(err.to_string().contains("workers = 0"));
/// ```
#[must_use]
pub struct Builder {
    dir: PathBuf,
    workers: usize,
    debounce: Duration,
    mode: Mode,
    max_file_size: u64,
    pattern: String,
    cleanup_after: Duration,
    cleanup_every: Duration,
    file_state_cleanup_every: Duration,
    shutdown_timeout: Duration,
    retries: u32,
    retry_backoff: Duration,
    queue_capacity: usize,
    fsync: bool,
    leaky_background: bool,
    metrics_addr: Option<std::net::SocketAddr>,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    watch_service: Option<WatchService>,
    processor: Option<Arc<dyn DynProcessor>>,
    on_file: Option<OnFile>,
    warnings: Warnings,
}

impl Builder {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Builder {
            dir: dir.into(),
            workers: 2,
            debounce: Duration::from_millis(100),
            mode: Mode::Watch,
            max_file_size: 5 * 1024 * 1024,
            pattern: "*".into(),
            cleanup_after: Duration::from_secs(7 * 24 * 3600),
            cleanup_every: Duration::from_secs(24 * 3600),
            file_state_cleanup_every: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(5),
            retries: 3,
            retry_backoff: Duration::from_millis(100),
            queue_capacity: 128,
            fsync: true,
            leaky_background: false,
            metrics_addr: None,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            watch_service: None,
            processor: None,
            on_file: None,
            warnings: Warnings::default(),
        }
    }

    /// Number of workers, 1 ..= 4 × cores (default 2).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// How long a file's size must stay unchanged before it is processed, 10 ms ..= 5 s
    /// (default 100 ms).
    pub fn debounce(mut self, d: Duration) -> Self {
        self.debounce = d;
        self
    }
    /// [`Mode::Watch`] (default), [`Mode::Once`] or [`Mode::Poll`].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Files larger than this fail without being read (default 5 MiB, 1 B ..= 1 GiB).
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }
    /// A glob matched against file names (default `*`).
    pub fn pattern(mut self, glob: impl Into<String>) -> Self {
        self.pattern = glob.into();
        self
    }
    /// Kept so that existing callers compile; no effect since the ledger forgets a file once
    /// its commit is finished (its status file is the record; memory no longer grows with the
    /// files processed). Still checked: 1 h ..= 30 d (default 7 d).
    pub fn cleanup_after(mut self, d: Duration) -> Self {
        self.cleanup_after = d;
        self
    }
    /// How often the ledger cleanup routine runs, 1 ms ..= 30 d (default 24 h).
    pub fn cleanup_every(mut self, d: Duration) -> Self {
        self.cleanup_every = d;
        self
    }
    /// How often the debounce-state cleanup routine runs, 1 ms ..= 1 d (default 5 min).
    pub fn file_state_cleanup_every(mut self, d: Duration) -> Self {
        self.file_state_cleanup_every = d;
        self
    }
    /// The budget of [`crate::Watcher::close`], 1 ms ..= 10 min (default 5 s).
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }
    /// How many times a retryable error is retried, 0 ..= 100 (default 3).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }
    /// The first retry delay, doubled on each further retry (capped at 60 s), 1 ms ..= 60 s
    /// (default 100 ms).
    pub fn retry_backoff(mut self, d: Duration) -> Self {
        self.retry_backoff = d;
        self
    }
    /// Capacity of the bounded queue between intake and workers, 1 ..= 65 536 (default 128).
    /// Intake also keeps at most 4 × this many files in its debounce state.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }
    /// Whether ledger, status files and moves are fsynced (default true). Turning it off keeps
    /// atomicity (temp file + rename) but not durability across power loss.
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }
    /// In [`Mode::Watch`], get events from a shared [`WatchService`] instead of a notify
    /// instance of the watcher's own (the default): the watcher subscribes its directory at
    /// start and unwatches it at close, which takes microseconds instead of the milliseconds
    /// of an inotify instance's teardown. Ignored in the other modes. The configuration keeps
    /// a handle to the service.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn watch_service(mut self, service: &WatchService) -> Self {
        self.watch_service = Some(service.clone());
        self
    }
    /// Calls `f` with each file's [`FileOutcome`] as it is committed (moved to `processed/` or
    /// `failed/`, its status written), on the worker that processed it: keep it short (log a
    /// line, send to a channel).
    ///
    /// ```
    /// use watcher::{processor, FileOutcome, ProcessError, Watcher};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = Watcher::builder(dir.path())
    ///     .processor(processor::from_fn(|_, _| async { Ok::<(), ProcessError>(()) }))
    ///     .on_file(|f: &FileOutcome| eprintln!("{:?} {} in {:?}", f.outcome, f.name, f.duration))
    ///     .build()
    ///     .unwrap();
    /// # let _ = config;
    /// ```
    pub fn on_file(mut self, f: impl Fn(&FileOutcome) + Send + Sync + 'static) -> Self {
        self.on_file = Some(Arc::new(f));
        self
    }
    /// Calls `f` with each problem the watcher works around on its own, as it happens: a ledger
    /// record or a commit it could not write (the file is left in place for the next start to
    /// finish), a failed checkpoint, compaction or cleanup of the ledger. Without it, each is
    /// printed to stderr as `watcher: MESSAGE`. Called on the task that met the problem: keep
    /// it short.
    ///
    /// ```
    /// use watcher::{processor, ProcessError, Watcher};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = Watcher::builder(dir.path())
    ///     .processor(processor::from_fn(|_, _| async { Ok::<(), ProcessError>(()) }))
    ///     .on_warning(|message| eprintln!("{{\"warning\": {message:?}}}"))
    ///     .build()
    ///     .unwrap();
    /// # let _ = config;
    /// ```
    pub fn on_warning(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.warnings = Warnings::to(f);
        self
    }
    /// Serve the watcher's metrics ([`crate::exposition`], and the process's own) over HTTP at
    /// `http://ADDR/metrics`, in the Prometheus text format, from start until close (the
    /// server is a task of the Background stage: the staged close stops it and closes its
    /// listener). Port 0 picks a free port: [`Watcher::metrics_addr`](crate::Watcher::metrics_addr)
    /// tells which. A bad or taken address fails the start with [`StartError::MetricsAddr`](crate::StartError::MetricsAddr).
    /// To put the metrics into an application's own registry instead, see
    /// [`Watcher::register_metrics`](crate::Watcher::register_metrics).
    pub fn metrics_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }
    /// The processor that handles each file.
    pub fn processor(mut self, p: impl Processor) -> Self {
        self.processor = Some(Arc::new(p));
        self
    }

    /// TEST FIXTURE — the classic bug, kept on purpose: when on, the two background routines
    /// ("cleanup" and "file-state") are started with a plain `tokio::spawn`, without a permit or
    /// a cancellation token, and loop forever on their interval. `close` does not stop them, so
    /// every create/close cycle leaks two tokio tasks (and the state they hold). Leak tests use it
    /// to prove that they catch such a leak. Never use it otherwise.
    #[doc(hidden)]
    pub fn leaky_background_routines_for_tests(mut self, on: bool) -> Self {
        self.leaky_background = on;
        self
    }

    /// Checks every value and the directory; returns the validated [`Config`].
    pub fn build(self) -> Result<Config, ConfigError> {
        let max_workers = 4 * cores();
        check_range("workers", self.workers, 1, max_workers, |v| v.to_string())?;
        check_dur("debounce", self.debounce, crate::config::limits::DEBOUNCE)?;
        if let Mode::Poll(p) = self.mode {
            check_dur("poll", p, limits::POLL)?;
        }
        let (lo, hi) = limits::MAX_FILE_SIZE;
        check_range("max_file_size", self.max_file_size, lo, hi, |v| {
            format!("{v} bytes")
        })?;
        check_dur("cleanup_after", self.cleanup_after, limits::CLEANUP_AFTER)?;
        check_dur("cleanup_every", self.cleanup_every, limits::CLEANUP_EVERY)?;
        check_dur(
            "file_state_cleanup_every",
            self.file_state_cleanup_every,
            limits::FILE_STATE_CLEANUP_EVERY,
        )?;
        check_dur(
            "shutdown_timeout",
            self.shutdown_timeout,
            limits::SHUTDOWN_TIMEOUT,
        )?;
        let (lo, hi) = limits::RETRIES;
        check_range("retries", self.retries, lo, hi, |v| v.to_string())?;
        check_dur("retry_backoff", self.retry_backoff, limits::RETRY_BACKOFF)?;
        let (lo, hi) = limits::QUEUE_CAPACITY;
        check_range("queue_capacity", self.queue_capacity, lo, hi, |v| {
            v.to_string()
        })?;
        let pattern =
            glob::Pattern::new(&self.pattern).map_err(|e| ConfigError::InvalidPattern {
                pattern: self.pattern.clone(),
                message: e.to_string(),
            })?;
        let dir = check_dir(&self.dir)?;
        let processor = self.processor.ok_or(ConfigError::MissingProcessor)?;
        Ok(Config {
            dir,
            workers: self.workers,
            debounce: self.debounce,
            mode: self.mode,
            max_file_size: self.max_file_size,
            pattern,
            cleanup_after: self.cleanup_after,
            cleanup_every: self.cleanup_every,
            file_state_cleanup_every: self.file_state_cleanup_every,
            shutdown_timeout: self.shutdown_timeout,
            retries: self.retries,
            retry_backoff: self.retry_backoff,
            queue_capacity: self.queue_capacity,
            fsync: self.fsync,
            leaky_background: self.leaky_background,
            metrics_addr: self.metrics_addr,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            watch_service: self.watch_service,
            processor,
            on_file: self.on_file,
            warnings: self.warnings,
        })
    }
}

fn check_range<T: PartialOrd + Copy>(
    field: &'static str,
    v: T,
    lo: T,
    hi: T,
    show: impl Fn(T) -> String,
) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::OutOfRange {
            field,
            value: show(v),
            allowed: format!("{} ..= {}", show(lo), show(hi)),
        });
    }
    Ok(())
}

fn check_dur(
    field: &'static str,
    v: Duration,
    (lo, hi): (Duration, Duration),
) -> Result<(), ConfigError> {
    check_range(field, v, lo, hi, |d| {
        humantime::format_duration(d).to_string()
    })
}

fn check_dir(dir: &Path) -> Result<PathBuf, ConfigError> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::MissingDirectory(dir.to_path_buf()))
        }
        Err(source) => {
            return Err(ConfigError::UnreadableDirectory {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    if !meta.is_dir() {
        return Err(ConfigError::NotADirectory(dir.to_path_buf()));
    }
    let unreadable = |source| ConfigError::UnreadableDirectory {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir).map_err(unreadable)?;
    let canonical = std::fs::canonicalize(dir).map_err(unreadable)?;
    Ok(canonical)
}
