//! Intake: finds files (notify events, periodic scans, or one scan), debounces them, and feeds
//! the bounded queue, waiting when it is full (backpressure).
//!
//! Memory stays bounded during a burst: intake keeps at most `4 × queue_capacity` files in its
//! debounce state and stops reading events (or pauses its directory scan) while it is full;
//! notify's thread then waits on the bounded event channel and the kernel holds the rest (an
//! overflow is reported by notify as "rescan", which restarts a streaming scan).

use std::fs::ReadDir;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dirlock::LOCK_FILE;
use crate::engine::{lock, Shared};
use crate::ledger::{JOURNAL, SNAPSHOT};
#[cfg(any(target_os = "linux", target_os = "android"))]
use crate::service::Subscription;
use crate::status::STATUS_SUFFIX;

type EventRx = mpsc::Receiver<notify::Result<notify::Event>>;

/// Where intake finds files.
pub(crate) enum Source {
    Once,
    Poll(Duration),
    Watch(Events),
}

/// Where Watch mode gets its notify events.
pub(crate) enum Events {
    /// The channel that the handler of the watcher's own notify instance feeds.
    Own(EventRx),
    /// A subscription to a shared `WatchService`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Shared(Subscription),
}

impl Events {
    async fn recv(&mut self) -> Option<notify::Result<notify::Event>> {
        match self {
            Events::Own(rx) => rx.recv().await,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Events::Shared(sub) => sub.recv().await,
        }
    }

    /// Returns once nothing delivers events any more (call [`Unwatcher::run`] first).
    async fn close(self) {
        match self {
            // The channel closes when notify's thread loop ends and drops the handler: only
            // then are its thread and fds gone. Draining also unblocks a handler waiting for
            // room.
            Events::Own(mut rx) => while rx.recv().await.is_some() {},
            // Waits until the service holds no sender of this watcher's channel.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Events::Shared(sub) => sub.close().await,
        }
    }
}

/// Stops Watch mode's events at their source, once, from whichever thread gets there first:
/// the close (as it stops intake), the intake task, or a drop of the watcher.
///
/// `close` runs it on its caller's thread right after telling the intake task to stop, so
/// that the kernel's inotify teardown overlaps the wake-up of that task instead of following
/// it; the drop of a watcher runs it so that the directory is free at once.
pub(crate) struct Unwatcher {
    source: UnwatchSource,
    /// The kernel's inotify teardown, once known ([`crate::ShutdownReport::unwatch`]).
    took: Mutex<Duration>,
}

enum UnwatchSource {
    /// Once and Poll modes.
    Nothing,
    /// The watcher's own notify instance, until dropped, and when it was dropped.
    Own {
        watcher: Mutex<Option<notify::RecommendedWatcher>>,
        dropped: OnceLock<std::time::Instant>,
    },
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Shared(Arc<crate::service::Unwatch>),
}

impl Unwatcher {
    /// Once and Poll modes: nothing to unwatch.
    pub fn none() -> Self {
        Self::with(UnwatchSource::Nothing)
    }

    /// The watcher's own notify instance, whose event channel intake reads.
    pub fn own(watcher: notify::RecommendedWatcher) -> Self {
        Self::with(UnwatchSource::Own {
            watcher: Mutex::new(Some(watcher)),
            dropped: OnceLock::new(),
        })
    }

    /// A subscription to a shared `WatchService`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn shared(sub: &Subscription) -> Self {
        Self::with(UnwatchSource::Shared(sub.unwatch_handle()))
    }

    fn with(source: UnwatchSource) -> Self {
        Unwatcher {
            source,
            took: Mutex::new(Duration::ZERO),
        }
    }

    /// Starts the teardown: drops the own notify watcher (its thread then removes the watch,
    /// closes its fds and ends), or removes the shared service's route and kernel watch. Later
    /// calls do nothing. Never blocks.
    pub fn run(&self) {
        match &self.source {
            UnwatchSource::Nothing => {}
            UnwatchSource::Own { watcher, dropped } => {
                let w = lock(watcher).take();
                if let Some(w) = w {
                    let _ = dropped.set(std::time::Instant::now());
                    drop(w); // signals notify's thread and returns
                }
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            UnwatchSource::Shared(unwatch) => {
                if let Some(took) = unwatch.run() {
                    *lock(&self.took) = took;
                }
            }
        }
    }

    /// Own notify: the event channel has closed, so notify's thread has ended; the teardown
    /// took from the drop until now.
    fn events_closed(&self) {
        if let UnwatchSource::Own { dropped, .. } = &self.source {
            if let Some(at) = dropped.get() {
                *lock(&self.took) = at.elapsed();
            }
        }
    }

    /// See [`crate::ShutdownReport::unwatch`].
    pub fn took(&self) -> Duration {
        *lock(&self.took)
    }
}

/// Creates notify's watcher for `dir`. The event handler closure owns the only sender of the
/// returned channel, so the channel closes exactly when notify's thread loop ends.
pub(crate) fn notify_watcher(
    dir: &Path,
    capacity: usize,
) -> notify::Result<(notify::RecommendedWatcher, EventRx)> {
    let (tx, rx) = mpsc::channel(capacity);
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // Runs on notify's thread (no runtime there): blocking is fine and is backpressure.
        let _ = tx.blocking_send(ev);
    })?;
    w.watch(dir, RecursiveMode::NonRecursive)?;
    Ok((w, rx))
}

/// Whether a directory entry name is a candidate for processing.
pub(crate) fn is_candidate(cfg: &Config, name: &str) -> bool {
    !(name.starts_with(".watcher-")
        || name == SNAPSHOT
        || name == JOURNAL
        || name == LOCK_FILE
        || name.ends_with(".tmp")
        || name.ends_with(STATUS_SUFFIX))
        && cfg.pattern.matches(name)
}

struct Intake {
    shared: Arc<Shared>,
    tx: mpsc::Sender<PathBuf>,
    cancel: CancellationToken,
    max_pending: usize,
}

/// The intake task.
pub(crate) async fn run(
    shared: Arc<Shared>,
    tx: mpsc::Sender<PathBuf>,
    source: Source,
    cancel: CancellationToken,
) {
    let max_pending = shared.cfg.queue_capacity.saturating_mul(4).max(16);
    let intake = Intake {
        shared,
        tx,
        cancel,
        max_pending,
    };
    match source {
        Source::Once => intake.once().await,
        Source::Poll(period) => intake.watch(None, Some(period)).await,
        Source::Watch(events) => intake.watch(Some(events), None).await,
    }
}

impl Intake {
    fn candidate(&self, path: &Path) -> Option<String> {
        if path.parent() != Some(self.shared.cfg.dir.as_path()) {
            return None;
        }
        let name = path.file_name()?.to_str()?;
        is_candidate(&self.shared.cfg, name).then(|| name.to_string())
    }

    /// Queues `path` (unless already queued or in progress). Returns false when cancelled while
    /// waiting for room; the path is then handed back.
    async fn enqueue(&self, path: PathBuf) -> bool {
        let Some(name) = self.candidate(&path) else {
            return true;
        };
        if !self.shared.claim(&name) {
            return true;
        }
        let c = &self.shared.counters;
        c.queue_depth.fetch_add(1, Relaxed);
        let sent = match self.tx.try_send(path) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(path)) => {
                c.backpressure_waits.fetch_add(1, Relaxed);
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => {
                        self.shared.hand_back(path);
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
            c.queued.fetch_add(1, Relaxed);
        } else {
            c.queue_depth.fetch_sub(1, Relaxed);
            self.shared.unclaim(&name);
        }
        sent
    }

    /// Mode Once: queue every candidate present now, then end (closing the queue).
    async fn once(self) {
        let Ok(rd) = std::fs::read_dir(&self.shared.cfg.dir) else {
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
                if !self.enqueue(p).await {
                    break;
                }
            }
            let rest: Vec<PathBuf> = it.collect();
            if self.cancel.is_cancelled() {
                for p in rest {
                    if self.candidate(&p).is_some() {
                        self.shared.hand_back(p);
                    }
                }
                return;
            }
        }
    }

    /// Modes Watch and Poll: an initial scan, then events or periodic scans, debounced.
    async fn watch(self, mut notify: Option<Events>, poll: Option<Duration>) {
        let dir = self.shared.cfg.dir.clone();
        let mut scan: Option<ReadDir> = std::fs::read_dir(&dir).ok();
        let mut ticker = poll.map(|p| {
            let mut t = tokio::time::interval_at(Instant::now() + p, p);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        let mut events_open = notify.is_some();
        'outer: loop {
            let (room, next_due) = {
                let mut deb = lock(&self.shared.debouncer);
                if let Some(rd) = scan.as_mut() {
                    let now = std::time::Instant::now();
                    while deb.len() < self.max_pending {
                        match rd.next() {
                            None => {
                                scan = None;
                                break;
                            }
                            Some(Err(_)) => continue,
                            Some(Ok(e)) => {
                                let p = e.path();
                                if let Some(name) = self.candidate(&p) {
                                    if !lock(&self.shared.claimed).contains(&name) {
                                        deb.observe(p, now);
                                    }
                                }
                            }
                        }
                    }
                }
                (deb.len() < self.max_pending, deb.next_due())
            };
            let recv_events = async {
                match notify.as_mut() {
                    Some(events) if events_open && room => events.recv().await,
                    _ => std::future::pending().await,
                }
            };
            let due = async {
                match next_due {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let tick = async {
                match ticker.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break 'outer,
                _ = self.shared.rescan.notified() => {
                    if scan.is_none() {
                        scan = std::fs::read_dir(&dir).ok();
                    }
                }
                ev = recv_events => match ev {
                    None => events_open = false,
                    Some(ev) => {
                        if self.on_event(ev) && scan.is_none() {
                            scan = std::fs::read_dir(&dir).ok();
                        }
                    }
                },
                _ = due => {
                    let stable = lock(&self.shared.debouncer).take_stable(std::time::Instant::now());
                    let mut it = stable.into_iter();
                    for p in it.by_ref() {
                        if !self.enqueue(p).await {
                            for rest in it {
                                self.shared.hand_back(rest);
                            }
                            break 'outer;
                        }
                    }
                }
                _ = tick => {
                    if scan.is_none() {
                        scan = std::fs::read_dir(&dir).ok();
                    }
                }
            }
        }
        // Stopping: hand back what was still debouncing, then wait for notify's thread.
        let pending = lock(&self.shared.debouncer).drain();
        for p in pending {
            self.shared.hand_back(p);
        }
        if let Some(events) = notify {
            self.shared.unwatcher.run(); // done already if the close got there first
            events.close().await;
            self.shared.unwatcher.events_closed();
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
                if !lock(&self.shared.claimed).contains(&name) {
                    lock(&self.shared.debouncer).touch(p, now);
                }
            }
        }
        false
    }
}
