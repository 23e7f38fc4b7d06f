//! A shared watch service: one inotify instance for many watchers.
//!
//! # Why
//!
//! A [`Watcher`](crate::Watcher) in [`Mode::Watch`](crate::Mode::Watch) normally owns a notify
//! watcher. On Linux that is an inotify instance with its own OS thread and three fds (inotify,
//! epoll, eventfd), and closing it is slow: tearing down an inotify instance that holds a watch
//! took the kernel 0.2–13.5 ms in the runs of `BENCHMARKS.md`, while removing one watch from a
//! live instance (`inotify_rm_watch`) takes a few µs (1.6 µs warm, 8–27 µs right after the
//! thread woke from idle, on the same machine). An instance per watcher also counts against
//! `fs.inotify.max_user_instances` (128 by default).
//!
//! A [`WatchService`] is one inotify instance (one fd) and one task, on the Tokio runtime where
//! it was created, shared by any number of watchers. A watcher configured with
//! [`Builder::watch_service`](crate::Builder::watch_service) subscribes its directory at start
//! (an `inotify_add_watch`) and unsubscribes it at close (an `inotify_rm_watch`), so its close
//! no longer pays for an inotify teardown, and a thousand watchers cost one fd and no thread.
//!
//! The service uses the `inotify` crate directly rather than notify: notify's `watch` and
//! `unwatch` are each a message to notify's own thread and a blocking wait for its reply
//! (measured on a live instance: about 34 µs and 31 µs median), twice per watcher cycle. Here
//! both are direct system calls from the calling thread (about 2 µs each, warm), and no OS
//! thread is needed at all.
//!
//! # How
//!
//! The service reads the inotify fd as a Tokio event stream, in a task, and routes each event
//! by watch descriptor: an event about `DIR/NAME` (or about `DIR` itself) goes to the subscriber
//! of `DIR`, over that subscriber's own bounded channel, as the notify event a watcher's own
//! notify instance would have produced (create, modify, close-after-write; rename into and
//! attribute changes are modifications). The task never waits for a subscriber: when a
//! subscriber's channel is full, the event is dropped and the subscriber is told to rescan its
//! directory instead, so one slow watcher can not stall the others (a watcher with its own
//! notify instance applies backpressure to its thread instead). An inotify queue overflow or a
//! read error asks every subscriber to rescan.
//!
//! Ownership stays exact, as with a watcher's own notify instance:
//!
//! - the routing table holds the only sender of each subscriber's channel, and the task sends
//!   (without waiting) while holding the table's lock. Unsubscribing removes the route (and the
//!   kernel watch) under that lock, so the channel closes right then, and a watcher's close,
//!   which waits for that, returns with its intake task and channel gone.
//! - the task owns the event stream (the fd's registration with the runtime, and one reference
//!   to the fd); the table holds the other, used to add and remove watches.
//!   [`WatchService::close`] drops the table's reference, stops the task and awaits it: when it
//!   returns, the fd is closed and the task is gone.
//!
//! The service lives as long as any handle to it: the one you keep, the clones in [`Config`]s
//! and those held by running watchers. Dropping the last handle stops the task without
//! waiting for it (the fd is closed when the task ends, or when its runtime shuts down);
//! [`WatchService::close`] waits. Closing the service while watchers still use it ends their
//! event streams (they keep running and are closed as usual, but see no new files in Watch
//! mode); close the watchers first.
//!
//! [`Config`]: crate::Config
//!
//! ```
//! use watcher::{processor, ProcessError, WatchService, Watcher};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Inside a Tokio runtime (with IO enabled): the service's task runs on it.
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
//! service.close().await; // ends the service's task and closes its inotify fd
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use inotify::{EventMask, EventOwned, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
use notify::event::{
    AccessKind, AccessMode, CreateKind, DataChange, Flag, MetadataKind, ModifyKind, RenameMode,
};
use notify::{Event, EventKind};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::mutex::lock;

/// What a subscribed directory is watched for: what intake acts on.
const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MODIFY)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB);

/// Bytes read from the inotify fd at once (an event is 16 bytes plus its name).
const READ_BUFFER: usize = 16 * 1024;

/// One subscriber's route: its directory, its channel, and the signal that events were dropped.
struct Route {
    dir: PathBuf,
    tx: mpsc::Sender<Event>,
    rescan: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    /// Adds and removes kernel watches; `None` once the service is closed.
    watches: Option<Watches>,
    /// Routes by watch descriptor, as events name them.
    routes: HashMap<i32, Route>,
    /// The watch descriptor of each subscribed directory.
    dirs: HashMap<PathBuf, WatchDescriptor>,
}

/// The service itself, behind every [`WatchService`] handle.
struct ServiceCore {
    /// Also serializes subscribe and unsubscribe, so that a route and its kernel watch come
    /// and go together, and no event is routed meanwhile.
    table: Arc<Mutex<Table>>,
    /// Stops the reading task.
    stop: CancellationToken,
    /// The reading task, until [`WatchService::close`] has awaited it.
    reader: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ServiceCore {
    fn drop(&mut self) {
        // The last handle is gone: the task ends (and closes the fd) without being awaited.
        self.stop.cancel();
    }
}

/// One inotify instance (one fd, one task, no thread) shared by many watchers; see the
/// [module documentation](self) for why and how.
///
/// Cheap to clone: clones are handles to the same service.
#[derive(Clone)]
pub struct WatchService {
    core: Arc<ServiceCore>,
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
    /// inotify could not watch the directory.
    Notify(notify::Error),
}

impl WatchService {
    /// Starts the service: creates the inotify instance and spawns the task that reads it on
    /// the current Tokio runtime, which must have IO enabled.
    ///
    /// Fails when called outside a Tokio runtime, or when inotify cannot be initialized, e.g.
    /// when the inotify instance limit is reached.
    pub fn new() -> Result<WatchService, notify::Error> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            notify::Error::generic("WatchService::new must be called within a Tokio runtime")
        })?;
        let inotify = Inotify::init().map_err(notify::Error::io)?;
        let watches = inotify.watches();
        let events = inotify
            .into_event_stream(vec![0u8; READ_BUFFER])
            .map_err(notify::Error::io)?;
        let table = Arc::new(Mutex::new(Table {
            watches: Some(watches),
            ..Table::default()
        }));
        let stop = CancellationToken::new();
        let reader = rt.spawn(read(events, table.clone(), stop.clone()));
        Ok(WatchService {
            core: Arc::new(ServiceCore {
                table,
                stop,
                reader: tokio::sync::Mutex::new(Some(reader)),
            }),
        })
    }

    /// The directories currently subscribed (one per running watcher using the service),
    /// sorted.
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = lock(&self.core.table).dirs.keys().cloned().collect();
        dirs.sort();
        dirs
    }

    /// Whether [`WatchService::close`] has been called.
    pub fn is_closed(&self) -> bool {
        lock(&self.core.table).watches.is_none()
    }

    /// Closes the service: stops its task and returns once it has ended and the inotify fd is
    /// closed (which removes every kernel watch). Watchers still subscribed stop receiving
    /// events; later starts with this service fail with
    /// [`StartError::WatchServiceClosed`](crate::StartError::WatchServiceClosed).
    ///
    /// Idempotent and safe to call concurrently; if a call is cancelled, the next one waits.
    pub async fn close(&self) {
        // The table's reference to the fd; the task holds the other.
        drop(lock(&self.core.table).watches.take());
        self.core.stop.cancel();
        let mut reader = self.core.reader.lock().await;
        if let Some(task) = reader.as_mut() {
            // The task drops the event stream (deregistering and closing the fd) as it ends.
            let _ = task.await;
            *reader = None;
        }
        // Close the channels of watchers still subscribed.
        let mut table = lock(&self.core.table);
        table.routes.clear();
        table.dirs.clear();
    }

    /// Subscribes `dir` (canonical): routes its events to the returned subscription.
    pub(crate) fn subscribe(
        &self,
        dir: &Path,
        capacity: usize,
    ) -> Result<Subscription, SubscribeError> {
        let mut table = lock(&self.core.table);
        let table = &mut *table;
        let watches = table.watches.as_mut().ok_or(SubscribeError::Closed)?;
        if table.dirs.contains_key(dir) {
            return Err(SubscribeError::AlreadyWatched);
        }
        let wd = watches
            .add(dir, MASK)
            .map_err(|e| SubscribeError::Notify(notify_error(e, dir)))?;
        let id = wd.get_watch_descriptor_id();
        if table.routes.contains_key(&id) {
            // The same directory under another path (a bind mount): the kernel gave back the
            // existing watch, which is not ours to remove.
            return Err(SubscribeError::AlreadyWatched);
        }
        let (tx, rx) = mpsc::channel(capacity);
        let rescan = Arc::new(Notify::new());
        let route = Route {
            dir: dir.to_path_buf(),
            tx,
            rescan: rescan.clone(),
        };
        table.routes.insert(id, route);
        table.dirs.insert(dir.to_path_buf(), wd);
        Ok(Subscription {
            unsubscribe: Arc::new(Unsubscribe {
                service: self.clone(),
                dir: dir.to_path_buf(),
                done: AtomicBool::new(false),
            }),
            rx,
            rescan,
        })
    }

    /// Removes the route and the kernel watch of `dir`; returns the time the kernel took.
    fn unsubscribe(&self, dir: &Path) -> Duration {
        let mut table = lock(&self.core.table);
        let Some(wd) = table.dirs.remove(dir) else {
            return Duration::ZERO;
        };
        // Drops the only sender: the subscriber's channel closes now.
        table.routes.remove(&wd.get_watch_descriptor_id());
        let t0 = Instant::now();
        if let Some(w) = table.watches.as_mut() {
            // Fails only if the kernel already dropped the watch (directory deleted).
            let _ = w.remove(wd);
        }
        t0.elapsed()
    }
}

fn notify_error(e: io::Error, dir: &Path) -> notify::Error {
    let e = match e.raw_os_error() {
        Some(libc::ENOSPC) => notify::Error::new(notify::ErrorKind::MaxFilesWatch),
        Some(libc::ENOENT) => notify::Error::path_not_found(),
        _ => notify::Error::io(e),
    };
    e.add_path(dir.to_path_buf())
}

/// The service's task: reads events until stopped, and routes them.
async fn read(mut events: EventStream<Vec<u8>>, table: Arc<Mutex<Table>>, stop: CancellationToken) {
    loop {
        let ev = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            ev = events.next() => ev,
        };
        match ev {
            Some(ev) => route(&table, ev),
            None => return,
        }
    }
}

/// The notify event kind of an inotify event, if intake acts on it.
fn kind(mask: EventMask) -> Option<EventKind> {
    Some(if mask.contains(EventMask::CREATE) {
        EventKind::Create(if mask.contains(EventMask::ISDIR) {
            CreateKind::Folder
        } else {
            CreateKind::File
        })
    } else if mask.contains(EventMask::CLOSE_WRITE) {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
    } else if mask.contains(EventMask::MODIFY) {
        EventKind::Modify(ModifyKind::Data(DataChange::Any))
    } else if mask.contains(EventMask::MOVED_TO) {
        EventKind::Modify(ModifyKind::Name(RenameMode::To))
    } else if mask.contains(EventMask::ATTRIB) {
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any))
    } else {
        // IN_IGNORED (the watch is gone) and the like.
        return None;
    })
}

/// Routes one event. Never blocks on a subscriber.
fn route(table: &Mutex<Table>, ev: io::Result<EventOwned>) {
    let table = lock(table);
    let ev = match ev {
        Ok(ev) if !ev.mask.contains(EventMask::Q_OVERFLOW) => ev,
        // An overflow or a read error: everyone rescans.
        _ => {
            for r in table.routes.values() {
                r.rescan.notify_one();
            }
            return;
        }
    };
    // No route: an event that was queued before its directory was unwatched.
    let Some(r) = table.routes.get(&ev.wd.get_watch_descriptor_id()) else {
        return;
    };
    let Some(kind) = kind(ev.mask) else {
        return;
    };
    let path = match &ev.name {
        Some(name) => r.dir.join(name),
        None => r.dir.clone(),
    };
    // Full: drop the event, the subscriber rescans. Closed: it is unsubscribing.
    if let Err(mpsc::error::TrySendError::Full(_)) = r.tx.try_send(Event::new(kind).add_path(path))
    {
        r.rescan.notify_one();
    }
}

/// Removes one subscription (its route and its kernel watch), once.
pub(crate) struct Unsubscribe {
    service: WatchService,
    dir: PathBuf,
    done: AtomicBool,
}

impl Unsubscribe {
    /// Unsubscribes, the first time it is called, and returns the time `inotify_rm_watch`
    /// took; later calls return `None`.
    pub fn run(&self) -> Option<Duration> {
        if self.done.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(self.service.unsubscribe(&self.dir))
    }
}

/// A watcher's subscription to a [`WatchService`]: its events, until unsubscribed.
pub(crate) struct Subscription {
    unsubscribe: Arc<Unsubscribe>,
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
    pub fn unsubscribe_handle(&self) -> Arc<Unsubscribe> {
        self.unsubscribe.clone()
    }

    /// Unsubscribes (removing the kernel watch), if that is not done yet, then waits until
    /// the channel is closed: no sender is left anywhere, so nothing of this subscription
    /// remains in the service.
    pub async fn close(mut self) {
        let _ = self.unsubscribe.run();
        while self.rx.recv().await.is_some() {}
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.unsubscribe.run();
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
        // One task delivers in the kernel's order: had an event of A been routed to B, B would
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
        sa.unsubscribe_handle().run();
        std::fs::write(a.join("late"), b"1").unwrap();
        std::fs::write(b.join("y"), b"1").unwrap();
        assert_eq!(next_paths(&mut sb).await.unwrap(), vec![b.join("y")]);
        // A's channel is closed (its route, the only sender, is gone) and holds nothing.
        assert!(sa.recv().await.is_none());
        sb.close().await;
        service.close().await;
    }

    #[tokio::test]
    async fn a_full_channel_turns_into_a_rescan_without_blocking_the_service() {
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
