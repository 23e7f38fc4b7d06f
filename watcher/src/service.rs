//! A shared watch service: one notify instance for many watchers.
//!
//! # Why
//!
//! A [`Watcher`](crate::Watcher) in [`Mode::Watch`](crate::Mode::Watch) normally owns a notify
//! watcher. On Linux that is an inotify instance with its own OS thread and three fds (inotify,
//! epoll, eventfd), and closing it is slow: the kernel takes about 9 ms to tear down an inotify
//! instance, while removing one watch from a live instance (`inotify_rm_watch`) takes about
//! 1.3 µs. An instance per watcher also counts against `fs.inotify.max_user_instances` (128 by
//! default).
//!
//! A [`WatchService`] is one notify instance and one thread shared by any number of watchers.
//! A watcher configured with [`Builder::watch_service`](crate::Builder::watch_service)
//! subscribes its directory at start and unsubscribes it at close (an `unwatch`, i.e. an
//! `inotify_rm_watch`), so its close no longer pays for an inotify teardown, and a thousand
//! watchers cost one thread and three fds.
//!
//! # How
//!
//! notify's event handler routes each event by directory: an event about `DIR/NAME` (or about
//! `DIR` itself) goes to the subscriber of `DIR`, over that subscriber's own bounded channel.
//! The handler never waits for a subscriber: when a subscriber's channel is full, the event is
//! dropped and the subscriber is told to rescan its directory instead, so one slow watcher can
//! not stall the others (a watcher with its own notify instance applies backpressure to its
//! thread instead). Events without a path (an inotify queue overflow, an error) ask every
//! subscriber to rescan.
//!
//! Ownership stays exact, as with a watcher's own notify instance:
//!
//! - the routing table holds the only sender of each subscriber's channel. Unsubscribing removes
//!   it (and the kernel watch); the channel then closes as soon as the handler lets go of a
//!   sender it may be using at that instant, so a watcher's close, which waits for that, returns
//!   with its intake task and channel gone.
//! - notify's handler closure holds the only sender of a "thread ended" channel: it is dropped
//!   when notify's event loop ends, after that loop has closed its fds. [`WatchService::close`]
//!   drops the notify instance and waits for that channel to close.
//!
//! The service lives as long as any handle to it: the one you keep, the clones in [`Config`]s
//! and those held by running watchers. Dropping the last handle stops notify's thread without
//! waiting for it; [`WatchService::close`] waits. Closing the service while watchers still use
//! it ends their event streams (they keep running and are closed as usual, but see no new
//! files in Watch mode); close the watchers first.
//!
//! [`Config`]: crate::Config
//!
//! ```
//! use watcher::{processor, ProcessError, WatchService, Watcher};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = WatchService::new().unwrap();
//! let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
//! let mut watchers = Vec::new();
//! for dir in &dirs {
//!     let config = Watcher::builder(dir.path())
//!         .watch_service(&service)
//!         .processor(processor::from_fn(|_, _| async { Ok::<(), ProcessError>(()) }))
//!         .build()
//!         .unwrap();
//!     watchers.push(Watcher::start(config).await.unwrap());
//! }
//! assert_eq!(service.watched_dirs().len(), 2);
//! for w in &watchers {
//!     w.close().await; // unwatches its directory: microseconds
//! }
//! assert!(service.watched_dirs().is_empty());
//! service.close().await; // ends notify's event loop and releases its fds
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use notify::event::Flag;
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::engine::lock;

/// One subscriber's route: its channel, and the signal that events were dropped.
struct Route {
    tx: mpsc::Sender<Event>,
    rescan: Arc<Notify>,
}

type Routes = Mutex<HashMap<PathBuf, Route>>;

struct Inner {
    /// notify's watcher; `None` once the service is closed. Also serializes subscribe and
    /// unsubscribe, so that a route and its kernel watch come and go together.
    notify: Mutex<Option<notify::RecommendedWatcher>>,
    routes: Arc<Routes>,
    /// Resolves (with an error) when notify's handler is dropped, i.e. its event loop has ended.
    ended: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

/// One notify instance (one OS thread, on Linux one inotify instance) shared by many watchers;
/// see the [module documentation](self) for why and how.
///
/// Cheap to clone: clones are handles to the same service.
#[derive(Clone)]
pub struct WatchService {
    inner: Arc<Inner>,
}

impl fmt::Debug for WatchService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchService")
            .field("closed", &self.is_closed())
            .field("watched_dirs", &self.watched_dirs())
            .finish()
    }
}

/// Why a subscription failed.
pub(crate) enum SubscribeError {
    /// The service was closed.
    Closed,
    /// The directory already has a subscriber.
    AlreadyWatched,
    /// notify could not watch the directory.
    Notify(notify::Error),
}

impl WatchService {
    /// Starts the service: creates the notify instance (and its thread).
    ///
    /// Fails when notify cannot be initialized, e.g. when the inotify instance limit is
    /// reached.
    pub fn new() -> Result<WatchService, notify::Error> {
        let routes: Arc<Routes> = Arc::default();
        let (ended_tx, ended_rx) = oneshot::channel::<()>();
        let handler_routes = routes.clone();
        let w = notify::recommended_watcher(move |ev: notify::Result<Event>| {
            // Runs on notify's thread. Owning `ended_tx` is the point: it is dropped with this
            // closure, when notify's event loop ends.
            let _owned = &ended_tx;
            route(&handler_routes, ev);
        })?;
        Ok(WatchService {
            inner: Arc::new(Inner {
                notify: Mutex::new(Some(w)),
                routes,
                ended: tokio::sync::Mutex::new(Some(ended_rx)),
            }),
        })
    }

    /// The directories currently subscribed (one per running watcher using the service),
    /// sorted.
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = lock(&self.inner.routes).keys().cloned().collect();
        dirs.sort();
        dirs
    }

    /// Whether [`WatchService::close`] has been called.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.notify).is_none()
    }

    /// Closes the service: stops notify's event loop and returns once it has ended, that is,
    /// once its fds are closed and its handler dropped (the OS thread then only has to exit).
    /// Watchers still subscribed stop receiving events; later starts with this service fail
    /// with [`StartError::WatchServiceClosed`](crate::StartError::WatchServiceClosed).
    ///
    /// Idempotent and safe to call concurrently; if a call is cancelled, the next one waits.
    pub async fn close(&self) {
        // Dropping notify's watcher tells its thread to remove all watches and stop.
        drop(lock(&self.inner.notify).take());
        let mut ended = self.inner.ended.lock().await;
        if let Some(rx) = ended.as_mut() {
            // Never sent to: resolves when the handler (holding the sender) is dropped.
            let _ = rx.await;
            *ended = None;
        }
        // Close the channels of watchers still subscribed.
        lock(&self.inner.routes).clear();
    }

    /// Subscribes `dir` (canonical): routes its events to the returned subscription.
    pub(crate) fn subscribe(
        &self,
        dir: &Path,
        capacity: usize,
    ) -> Result<Subscription, SubscribeError> {
        let mut notify = lock(&self.inner.notify);
        let w = notify.as_mut().ok_or(SubscribeError::Closed)?;
        let (tx, rx) = mpsc::channel(capacity);
        let rescan = Arc::new(Notify::new());
        {
            let mut routes = lock(&self.inner.routes);
            if routes.contains_key(dir) {
                return Err(SubscribeError::AlreadyWatched);
            }
            let route = Route {
                tx,
                rescan: rescan.clone(),
            };
            routes.insert(dir.to_path_buf(), route);
        }
        if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
            lock(&self.inner.routes).remove(dir);
            return Err(SubscribeError::Notify(e));
        }
        Ok(Subscription {
            unwatch: Arc::new(Unwatch {
                service: self.clone(),
                dir: dir.to_path_buf(),
                done: AtomicBool::new(false),
            }),
            rx,
            rescan,
        })
    }

    fn unsubscribe(&self, dir: &Path) {
        let mut notify = lock(&self.inner.notify);
        lock(&self.inner.routes).remove(dir);
        if let Some(w) = notify.as_mut() {
            // Fails only if the kernel already dropped the watch (directory deleted).
            let _ = w.unwatch(dir);
        }
    }
}

/// Routes one event (on notify's thread). Never blocks on a subscriber.
fn route(routes: &Routes, ev: notify::Result<Event>) {
    let ev = match ev {
        Ok(ev) if !ev.need_rescan() && !ev.paths.is_empty() => ev,
        // An overflow, an error, or an event without a path: everyone rescans.
        _ => {
            for r in lock(routes).values() {
                r.rescan.notify_one();
            }
            return;
        }
    };
    // Usually one target; a rename within a directory names it twice.
    let mut targets: Vec<(mpsc::Sender<Event>, Arc<Notify>)> = Vec::with_capacity(1);
    {
        let routes = lock(routes);
        for p in &ev.paths {
            let hit = routes
                .get(p.as_path())
                .or_else(|| p.parent().and_then(|d| routes.get(d)));
            if let Some(r) = hit {
                if !targets.iter().any(|(tx, _)| tx.same_channel(&r.tx)) {
                    targets.push((r.tx.clone(), r.rescan.clone()));
                }
            }
        }
    }
    // Senders are used outside the routing lock, so (un)subscribing never waits for a send.
    let Some((last_tx, last_rescan)) = targets.pop() else {
        return;
    };
    for (tx, rescan) in &targets {
        deliver(tx, rescan, ev.clone());
    }
    deliver(&last_tx, &last_rescan, ev);
}

fn deliver(tx: &mpsc::Sender<Event>, rescan: &Notify, ev: Event) {
    // Full: drop the event, the subscriber rescans. Closed: it is unsubscribing.
    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(ev) {
        rescan.notify_one();
    }
}

/// Removes one subscription (its route and its kernel watch), once.
pub(crate) struct Unwatch {
    service: WatchService,
    dir: PathBuf,
    done: AtomicBool,
}

impl Unwatch {
    /// Unsubscribes, the first time it is called.
    pub fn run(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.service.unsubscribe(&self.dir);
        }
    }
}

/// A watcher's subscription to a [`WatchService`]: its events, until unsubscribed.
pub(crate) struct Subscription {
    unwatch: Arc<Unwatch>,
    rx: mpsc::Receiver<Event>,
    rescan: Arc<Notify>,
}

impl Subscription {
    /// The next event; a rescan event when events were dropped; `None` once the service closed.
    pub async fn recv(&mut self) -> Option<notify::Result<Event>> {
        tokio::select! {
            biased;
            // First: events dropped while the channel was full are found by a rescan.
            _ = self.rescan.notified() => {
                Some(Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan)))
            }
            ev = self.rx.recv() => ev.map(Ok),
        }
    }

    /// A handle that unsubscribes (for a drop of the watcher, which cannot reach this task's
    /// subscription in time).
    pub fn unwatch_handle(&self) -> Arc<Unwatch> {
        self.unwatch.clone()
    }

    /// Unsubscribes (removing the kernel watch), then waits until the channel is closed: no
    /// sender is left anywhere, so nothing of this subscription remains in the service.
    pub async fn close(mut self) {
        self.unwatch.run();
        while self.rx.recv().await.is_some() {}
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.unwatch.run();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LONG: Duration = Duration::from_secs(20);

    fn canonical_tempdir() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = std::fs::canonicalize(t.path()).unwrap();
        (t, p)
    }

    /// The next event of `sub` that names a path (skipping rescans), within `LONG`.
    async fn next_paths(sub: &mut Subscription) -> Option<Vec<PathBuf>> {
        tokio::time::timeout(LONG, async {
            loop {
                match sub.recv().await? {
                    Ok(ev) if !ev.paths.is_empty() => return Some(ev.paths),
                    _ => continue,
                }
            }
        })
        .await
        .expect("no event in time")
    }

    fn subscribe(s: &WatchService, dir: &Path) -> Subscription {
        match s.subscribe(dir, 64) {
            Ok(sub) => sub,
            Err(_) => panic!("cannot subscribe {}", dir.display()),
        }
    }

    #[tokio::test]
    async fn events_are_routed_by_directory() {
        let service = WatchService::new().unwrap();
        let (_ta, a) = canonical_tempdir();
        let (_tb, b) = canonical_tempdir();
        let mut sa = subscribe(&service, &a);
        let mut sb = subscribe(&service, &b);
        std::fs::write(a.join("x"), b"1").unwrap();
        std::fs::write(b.join("y"), b"1").unwrap();
        // One notify thread delivers in order: had an event of A been routed to B, B would
        // see it before its own.
        assert_eq!(next_paths(&mut sb).await.unwrap(), vec![b.join("y")]);
        assert_eq!(next_paths(&mut sa).await.unwrap(), vec![a.join("x")]);
        assert!(matches!(
            service.subscribe(&a, 1),
            Err(SubscribeError::AlreadyWatched)
        ));
        sa.close().await;
        sb.close().await;
        assert!(service.watched_dirs().is_empty());
        service.close().await;
        assert!(matches!(
            service.subscribe(&a, 1),
            Err(SubscribeError::Closed)
        ));
    }

    #[tokio::test]
    async fn no_event_is_delivered_after_unwatch() {
        let service = WatchService::new().unwrap();
        let (_ta, a) = canonical_tempdir();
        let (_tb, b) = canonical_tempdir();
        let mut sa = subscribe(&service, &a);
        let mut sb = subscribe(&service, &b);
        sa.unwatch_handle().run();
        std::fs::write(a.join("late"), b"1").unwrap();
        std::fs::write(b.join("y"), b"1").unwrap();
        assert_eq!(next_paths(&mut sb).await.unwrap(), vec![b.join("y")]);
        // A's channel is closed (its route, the only sender, is gone) and holds nothing.
        assert!(sa.recv().await.is_none());
        sb.close().await;
        service.close().await;
    }

    #[tokio::test]
    async fn a_full_channel_turns_into_a_rescan_without_blocking_notify() {
        let service = WatchService::new().unwrap();
        let (_ta, a) = canonical_tempdir();
        let (_tb, b) = canonical_tempdir();
        let mut sa = match service.subscribe(&a, 1) {
            Ok(s) => s,
            Err(_) => panic!("subscribe"),
        };
        let mut sb = subscribe(&service, &b);
        for i in 0..20 {
            std::fs::write(a.join(format!("f{i}")), b"1").unwrap();
        }
        std::fs::write(b.join("y"), b"1").unwrap();
        // B is served although A reads nothing...
        assert_eq!(next_paths(&mut sb).await.unwrap(), vec![b.join("y")]);
        // ...and A is told to rescan first.
        let ev = sa.recv().await.unwrap().unwrap();
        assert!(ev.need_rescan(), "{ev:?}");
        sa.close().await;
        sb.close().await;
        service.close().await;
    }
}
