//! Watch mode's event source: a notify instance of the watcher's own, or a subscription to a
//! shared [`WatchService`](crate::WatchService); and the [`Unwatcher`] that stops it.
//!
//! Two users, and this module is what they share: intake reads the [`Events`] (and, as it ends,
//! waits until nothing can deliver any more), and close (or a drop of the watcher) stops them at
//! their source through the [`Unwatcher`], on its own thread, without waiting for intake. Which
//! of them gets there first does not matter: the teardown runs once.
//!
//! Why close starts the teardown itself: the kernel's part of it (an inotify instance's teardown,
//! or one `inotify_rm_watch`) then overlaps the wake-up of the intake task instead of following
//! it; and a drop of the watcher frees the directory at once, even if the runtime never polls the
//! aborted intake task again.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::config::{Config, Mode};
use crate::error::StartError;
use crate::mutex::lock;
#[cfg(any(target_os = "linux", target_os = "android"))]
use crate::service::{SubscribeError, Subscription, Unsubscribe};

/// Capacity of the channel from notify's thread to the intake task. When it is full, notify's
/// thread waits (and the kernel queues events, or reports an overflow, which triggers a rescan).
const EVENT_CHANNEL: usize = 1024;

type EventRx = mpsc::Receiver<notify::Result<notify::Event>>;

/// Opens the event source `config` asks for: in [`Mode::Watch`], a notify instance of the
/// watcher's own or a subscription to the configured service; in the other modes, none. The
/// [`Unwatcher`] stops it (and does nothing in the other modes).
pub(crate) fn open(
    config: &Config,
    dir: &Path,
) -> Result<(Option<Events>, Arc<Unwatcher>), StartError> {
    if config.mode != Mode::Watch {
        return Ok((None, Arc::new(Unwatcher::with(UnwatchSource::Nothing))));
    }
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
        let unwatcher = Arc::new(Unwatcher::with(UnwatchSource::Service(
            sub.unsubscribe_handle(),
        )));
        let events = Events {
            from: Feed::Service(sub),
            unwatcher: unwatcher.clone(),
        };
        return Ok((Some(events), unwatcher));
    }
    let (w, rx) = notify_watcher(dir, EVENT_CHANNEL).map_err(|source| StartError::Notify {
        dir: dir.to_path_buf(),
        source,
    })?;
    let unwatcher = Arc::new(Unwatcher::with(UnwatchSource::Own {
        watcher: Mutex::new(Some(w)),
        dropped: OnceLock::new(),
    }));
    let events = Events {
        from: Feed::Own(rx),
        unwatcher: unwatcher.clone(),
    };
    Ok((Some(events), unwatcher))
}

/// Watch mode's notify events, as intake reads them.
pub(crate) struct Events {
    from: Feed,
    unwatcher: Arc<Unwatcher>,
}

/// Where the events come from.
enum Feed {
    /// The channel that the handler of the watcher's own notify instance feeds.
    Own(EventRx),
    /// A subscription to a shared `WatchService`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Service(Subscription),
}

impl Events {
    /// The next event; `None` once nothing delivers events any more.
    pub async fn recv(&mut self) -> Option<notify::Result<notify::Event>> {
        match &mut self.from {
            Feed::Own(rx) => rx.recv().await,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Feed::Service(sub) => sub.recv().await,
        }
    }

    /// Stops the events at their source (unless the close did already) and returns once
    /// nothing delivers events any more: notify's thread has ended and released its fds, or
    /// the service holds nothing of this watcher.
    pub async fn close(self) {
        self.unwatcher.run(); // done already if the close got there first
        match self.from {
            // The channel closes when notify's thread loop ends and drops the handler: only
            // then are its thread and fds gone. Draining also unblocks a handler waiting for
            // room.
            Feed::Own(mut rx) => {
                while rx.recv().await.is_some() {}
                self.unwatcher.events_closed();
            }
            // Waits until the service holds no sender of this watcher's channel.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Feed::Service(sub) => sub.close().await,
        }
    }
}

/// Stops Watch mode's events at their source, once, from whichever thread gets there first:
/// the close (as it stops intake), the intake task, or a drop of the watcher. Never blocks.
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
    /// A subscription to a shared `WatchService`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Service(Arc<Unsubscribe>),
}

impl Unwatcher {
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
            UnwatchSource::Service(unsubscribe) => {
                if let Some(took) = unsubscribe.run() {
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
fn notify_watcher(
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
