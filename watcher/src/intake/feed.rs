//! Intake: finds files (notify events, periodic scans, or one scan), debounces them, and feeds
//! the bounded queue, waiting when it is full (backpressure).
//!
//! Memory stays bounded during a burst: intake keeps at most `4 × queue_capacity` files in its
//! debounce state and stops reading events (or pauses its directory scan) while it is full;
//! notify's thread then waits on the bounded event channel and the kernel holds the rest (an
//! overflow is reported by notify as "rescan", which restarts a streaming scan).

use std::fs::ReadDir;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use notify::EventKind;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Mode};
use crate::intake::debounce::Debouncer;
use crate::intake::events::Events;
use crate::mutex::lock;
use crate::work::queue::Inlet;

/// Intake's debounce state: files seen but not yet stable. Intake alone adds, takes and drains
/// entries; the file-state routine holds a clone only to [`prune`](FileState::prune) it.
#[derive(Clone)]
pub(crate) struct FileState(Arc<Mutex<Debouncer>>);

impl FileState {
    /// Empty state; a file is stable once unchanged for `debounce`.
    pub fn new(debounce: Duration) -> Self {
        FileState(Arc::new(Mutex::new(Debouncer::new(debounce))))
    }

    /// Drops the entries of files that are gone, and gives back memory (see
    /// [`Debouncer::prune`]).
    pub fn prune(&self) -> usize {
        self.lock().prune()
    }

    fn lock(&self) -> MutexGuard<'_, Debouncer> {
        lock(&self.0)
    }
}

/// Whether a directory entry name, keyed `key`, is a candidate for processing. The pattern
/// matches the name itself when it is UTF-8 (a backslash in it is not doubled), else its key.
fn is_candidate(cfg: &Config, name: &std::ffi::OsStr, key: &str) -> bool {
    !crate::names::is_own(key) && cfg.pattern.matches(name.to_str().unwrap_or(key))
}

/// The intake task: what it reads from, and what it feeds.
pub(crate) struct Intake {
    cfg: Arc<Config>,
    inlet: Inlet,
    file_state: FileState,
    /// Watch mode's events (`None` in the other modes).
    events: Option<Events>,
    max_pending: usize,
}

impl Intake {
    /// Intake for `cfg`'s mode, reading `events` in Watch mode, feeding `inlet`.
    pub fn new(
        cfg: Arc<Config>,
        inlet: Inlet,
        file_state: FileState,
        events: Option<Events>,
    ) -> Self {
        let max_pending = cfg.queue_capacity.saturating_mul(4).max(16);
        Intake {
            cfg,
            inlet,
            file_state,
            events,
            max_pending,
        }
    }

    /// Runs until `cancel` (or, in Once mode, until the directory has been read); dropping
    /// the inlet as it returns closes the queue.
    pub async fn run(mut self, cancel: CancellationToken) {
        match self.cfg.mode {
            Mode::Once => self.once(&cancel).await,
            Mode::Poll(period) => self.watch(None, Some(period), &cancel).await,
            Mode::Watch => {
                let events = self.events.take();
                self.watch(events, None, &cancel).await
            }
        }
    }

    fn candidate(&self, path: &Path) -> Option<String> {
        if path.parent() != Some(self.cfg.dir.as_path()) {
            return None;
        }
        let name = path.file_name()?;
        let key = crate::names::name_of(name);
        is_candidate(&self.cfg, name, &key).then_some(key)
    }

    /// Queues `path` (unless it is no candidate, or already queued or in progress). Returns
    /// false when cancelled while waiting for room; the path is then handed back.
    async fn enqueue(&self, path: PathBuf, cancel: &CancellationToken) -> bool {
        let Some(name) = self.candidate(&path) else {
            return true;
        };
        self.inlet.push(path, &name, cancel).await
    }

    /// Mode Once: queue every candidate present now, then end (closing the queue).
    async fn once(&self, cancel: &CancellationToken) {
        let Ok(rd) = std::fs::read_dir(&self.cfg.dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut rd = rd;
        loop {
            // Read the directory in chunks so that memory is bounded by the queue.
            paths.clear();
            for e in rd.by_ref().take(self.max_pending).flatten() {
                if e.file_type().map(|t| !t.is_dir()).unwrap_or(false) {
                    paths.push(e.path());
                }
            }
            if paths.is_empty() {
                return;
            }
            paths.sort();
            let mut it = paths.drain(..);
            for p in it.by_ref() {
                if !self.enqueue(p, cancel).await {
                    break;
                }
            }
            let rest: Vec<PathBuf> = it.collect();
            if cancel.is_cancelled() {
                for p in rest {
                    if self.candidate(&p).is_some() {
                        self.inlet.hand_back(p);
                    }
                }
                return;
            }
        }
    }

    /// Modes Watch and Poll: an initial scan, then events or periodic scans, debounced.
    async fn watch(
        &self,
        mut notify: Option<Events>,
        poll: Option<Duration>,
        cancel: &CancellationToken,
    ) {
        let mut scan = Scan::of(&self.cfg.dir);
        let mut ticker = poll.map(|p| {
            let mut t = tokio::time::interval_at(Instant::now() + p, p);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        let mut events_open = notify.is_some();
        loop {
            let (room, next_due) = self.read_scan(&mut scan);
            let events = notify.as_mut().filter(|_| events_open && room);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = self.inlet.rescan_requested() => scan.again(),
                ev = next_event(events) => match ev {
                    None => events_open = false,
                    Some(ev) => {
                        if self.on_event(ev) {
                            scan.again();
                        }
                    }
                },
                _ = until(next_due) => {
                    if !self.enqueue_stable(cancel).await {
                        break;
                    }
                }
                _ = next_tick(ticker.as_mut()) => scan.again(),
            }
        }
        self.stop(notify).await;
    }

    /// Goes on with `scan` (if one is under way) while the debounce state has room, observing
    /// each candidate not already claimed. Whether there is room left, and when the next
    /// debounced file is due.
    fn read_scan(&self, scan: &mut Scan) -> (bool, Option<std::time::Instant>) {
        let mut deb = self.file_state.lock();
        if let Some(rd) = scan.entries.as_mut() {
            let now = std::time::Instant::now();
            while deb.len() < self.max_pending {
                match rd.next() {
                    None => {
                        scan.entries = None;
                        break;
                    }
                    Some(Err(_)) => continue,
                    Some(Ok(e)) => {
                        let p = e.path();
                        if let Some(name) = self.candidate(&p) {
                            if !self.inlet.is_claimed(&name) {
                                deb.observe(p, now);
                            }
                        }
                    }
                }
            }
        }
        (deb.len() < self.max_pending, deb.next_due())
    }

    /// Queues the files that are stable now. Returns false when cancelled while waiting for
    /// room: the rest are then handed back.
    async fn enqueue_stable(&self, cancel: &CancellationToken) -> bool {
        let stable = self
            .file_state
            .lock()
            .take_stable(std::time::Instant::now());
        let mut it = stable.into_iter();
        for p in it.by_ref() {
            if !self.enqueue(p, cancel).await {
                for rest in it {
                    self.inlet.hand_back(rest);
                }
                return false;
            }
        }
        true
    }

    /// Stopping: hands back what was still debouncing, then waits for notify's thread.
    async fn stop(&self, notify: Option<Events>) {
        let pending = self.file_state.lock().drain();
        for p in pending {
            self.inlet.hand_back(p);
        }
        if let Some(events) = notify {
            events.close().await;
        }
    }

    /// Handles one notify event; returns true when a rescan is needed.
    fn on_event(&self, ev: notify::Result<notify::Event>) -> bool {
        let ev = match ev {
            Ok(ev) => ev,
            Err(_) => return true,
        };
        if ev.need_rescan() {
            return true;
        }
        let relevant = matches!(
            ev.kind,
            EventKind::Create(_)
                | EventKind::Modify(_)
                | EventKind::Any
                | EventKind::Other
                | EventKind::Access(notify::event::AccessKind::Close(
                    notify::event::AccessMode::Write
                ))
        );
        if !relevant {
            return false;
        }
        let now = std::time::Instant::now();
        for p in ev.paths {
            if let Some(name) = self.candidate(&p) {
                if !self.inlet.is_claimed(&name) {
                    self.file_state.lock().touch(p, now);
                }
            }
        }
        false
    }
}

/// A streaming scan of the inbox, read a little at a time, as intake's debounce state has room.
struct Scan {
    dir: PathBuf,
    /// The scan under way, if any.
    entries: Option<ReadDir>,
}

impl Scan {
    /// A scan of `dir`, started now.
    fn of(dir: &Path) -> Self {
        let mut scan = Scan {
            dir: dir.to_path_buf(),
            entries: None,
        };
        scan.again();
        scan
    }

    /// Starts reading the directory from the start, unless a scan is under way. A directory
    /// that cannot be read is left unscanned until the next request.
    fn again(&mut self) {
        if self.entries.is_none() {
            self.entries = std::fs::read_dir(&self.dir).ok();
        }
    }
}

/// The next notify event from `events`; never, without them.
async fn next_event(events: Option<&mut Events>) -> Option<notify::Result<notify::Event>> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `due`; never, without one.
async fn until(due: Option<std::time::Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// The next tick of the poll `ticker`; never, without one.
async fn next_tick(ticker: Option<&mut tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
