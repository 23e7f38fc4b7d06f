//! The shared [`WatchService`]: routing by directory, unwatch at close, many watchers on one
//! inotify instance, a slow watcher that does not stall the others, and the service's own close.
//!
//! These tests count the process's threads, fds and inotify watches, so each runs in a process
//! of its own (`#[leakcheck::isolated]`: libtest starts and ends other tests' threads at any
//! time, which no lock keeps out of a count), on its own current-thread runtime (no worker
//! threads to count).
#![cfg(target_os = "linux")]
mod common;

use std::collections::HashSet;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use watcher::{processor, Mode, ProcessError, StartError, WatchService, Watcher};

fn run<F: Future>(f: F) -> F::Output {
    // A local, so that the runtime (and its fds) is gone before the next test starts.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(f);
    drop(rt);
    out
}

/// This process's threads.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// notify's event-loop threads ("notify-rs inotify loop", truncated by the kernel): none is
/// expected, the service has no thread.
fn notify_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("notify-rs"))
        })
        .count()
}

/// The targets of this process's fds.
fn fds() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.display().to_string())
        .collect();
    v.sort();
    v
}

/// Waits until no notify thread of an earlier test is left, then takes the fd baseline.
async fn baseline() -> Vec<String> {
    until("earlier notify threads exit", || notify_threads() == 0).await;
    fds()
}

/// Per inotify fd of this process, the inodes it watches (from `/proc/self/fdinfo`).
fn inotify_watches() -> Vec<HashSet<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if !std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new("anon_inode:inotify")) {
            continue;
        }
        let info = std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(e.file_name()))
            .unwrap_or_default();
        let inodes = info
            .lines()
            .filter(|l| l.starts_with("inotify wd:"))
            .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("ino:")))
            .filter_map(|h| u64::from_str_radix(h, 16).ok())
            .collect();
        out.push(inodes);
    }
    out
}

fn ino(dir: &Path) -> u64 {
    std::fs::metadata(dir).unwrap().ino()
}

/// How many inotify watches of this process are on `dir`.
fn watches_on(dir: &Path) -> usize {
    let i = ino(dir);
    inotify_watches().iter().filter(|w| w.contains(&i)).count()
}

fn start_with(
    service: &WatchService,
    dir: &Path,
    p: Scripted,
) -> impl Future<Output = Watcher> + use<> {
    let cfg = builder(dir, p).watch_service(service).build().unwrap();
    async move { Watcher::start(cfg).await.unwrap() }
}

#[leakcheck::isolated]
fn each_watcher_gets_the_files_of_its_directory() {
    run(async {
        let service = WatchService::new().unwrap();
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let procs: Vec<Scripted> = (0..3).map(|_| Scripted::default()).collect();
        let mut ws = Vec::new();
        for (d, p) in dirs.iter().zip(&procs) {
            ws.push(start_with(&service, d.path(), p.clone()).await);
        }
        let mut want: Vec<PathBuf> = ws.iter().map(|w| w.dir().to_path_buf()).collect();
        want.sort();
        assert_eq!(service.watched_dirs(), want);

        for i in 0..3 {
            write(dirs[0].path(), &format!("a{i}.txt"), b"x");
        }
        assert!(ws[0].wait_for(|m| m.processed == 3, LONG).await);
        write(dirs[1].path(), "b.txt", b"x");
        assert!(ws[1].wait_for(|m| m.processed == 1, LONG).await);
        assert_eq!(
            (
                procs[0].total_calls(),
                procs[1].total_calls(),
                procs[2].total_calls()
            ),
            (3, 1, 0)
        );
        for w in &ws {
            assert!(w.close().await.aborted.is_empty());
        }
        service.close().await;
    });
}

#[leakcheck::isolated]
fn a_closed_or_dropped_watcher_is_unwatched_and_gets_nothing_more() {
    run(async {
        let service = WatchService::new().unwrap();
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let pa = Scripted::default();
        let wa = start_with(&service, a.path(), pa.clone()).await;
        let wb = start_with(&service, b.path(), Scripted::default()).await;
        let wc = start_with(&service, c.path(), Scripted::default()).await;
        assert_eq!(watches_on(a.path()), 1);

        let report = wa.close().await;
        // The inotify_rm_watch call, within the intake stage.
        assert!(!report.unwatch.is_zero() && report.unwatch <= report.stages[0].1);
        // Unwatched in the kernel, and no longer routed; B and C are still watched.
        assert_eq!(watches_on(a.path()), 0);
        assert_eq!(service.watched_dirs().len(), 2);
        assert!(!service.watched_dirs().contains(&wa.dir().to_path_buf()));
        assert_eq!(watches_on(b.path()), 1);

        // A drop without close unwatches at once too.
        let c_dir = wc.dir().to_path_buf();
        drop(wc);
        assert_eq!(watches_on(c.path()), 0);
        assert_eq!(service.watched_dirs(), vec![wb.dir().to_path_buf()]);

        // A file in A now is nobody's business; B (on the same service task, after it) works.
        write(a.path(), "late.txt", b"x");
        write(c.path(), "late.txt", b"x");
        write(b.path(), "b.txt", b"x");
        assert!(wb.wait_for(|m| m.processed == 1, LONG).await);
        assert!(a.path().join("late.txt").exists());
        assert_eq!(pa.calls("late.txt"), 0);

        // C's directory is free again right away, through the same service.
        let wc = start_with(&service, &c_dir, Scripted::default()).await;
        assert!(
            wc.wait_for(|m| m.processed == 1, LONG).await,
            "late.txt of C"
        );
        wc.close().await;
        wb.close().await;
        service.close().await;
    });
}

#[leakcheck::isolated]
fn many_watchers_share_one_fd_and_no_thread_and_close_back_to_baseline() {
    run(async {
        let f0 = baseline().await.len();
        let threads0 = threads();
        let service = WatchService::new().unwrap();
        // One inotify fd, read by a task on this runtime: no thread.
        assert_eq!(fds().len(), f0 + 1, "{:?}", fds());
        assert_eq!(threads(), threads0);

        let n = 40;
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut ws = Vec::new();
        for d in &dirs {
            ws.push(start_with(&service, d.path(), Scripted::default()).await);
        }
        // No thread of the service's own; per idle watcher only its lock file (the ledger's
        // journal is opened by the first file).
        assert_eq!((notify_threads(), fds().len()), (0, f0 + 1 + n));
        let all: HashSet<u64> = dirs.iter().map(|d| ino(d.path())).collect();
        let instances = inotify_watches();
        assert_eq!(
            instances.iter().filter(|w| w.is_superset(&all)).count(),
            1,
            "one inotify instance watches every directory"
        );

        for (i, d) in dirs.iter().enumerate() {
            write(d.path(), &format!("f{i}.txt"), b"x");
        }
        for w in &ws {
            assert!(w.wait_for(|m| m.processed == 1, LONG).await);
        }
        for w in &ws {
            let r = w.close().await;
            assert!(r.aborted.is_empty() && !r.budget_exhausted, "{r}");
        }
        // Exact at return: each close unwatched its directory and closed its lock file and
        // its ledger journal; the watchers are still alive.
        assert!(service.watched_dirs().is_empty());
        assert!(dirs.iter().all(|d| watches_on(d.path()) == 0));
        assert_eq!(fds().len(), f0 + 1, "{:?}", fds());
        drop(ws);

        service.close().await;
        // The service's task has ended and its inotify fd is closed when close returns.
        assert_eq!(fds().len(), f0, "{:?}", fds());
        assert!(service.is_closed());
    });
}

#[leakcheck::isolated]
fn a_slow_watcher_does_not_stall_the_others_and_loses_no_file() {
    run(async {
        let service = WatchService::new().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // A's processor waits on a gate: its queue and debounce state fill up, its intake
        // stops reading, and its event channel overflows.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let cfg = Watcher::builder(a.path())
            .watch_service(&service)
            .workers(1)
            .queue_capacity(1)
            .debounce(Duration::from_millis(10))
            .fsync(false)
            .processor(processor::from_fn(move |_, _| {
                let g = g.clone();
                async move {
                    let _open = g.acquire().await;
                    Ok::<(), ProcessError>(())
                }
            }))
            .build()
            .unwrap();
        let wa = Watcher::start(cfg).await.unwrap();
        let wb = start_with(&service, b.path(), Scripted::default()).await;
        let n = 1500;
        for i in 0..n {
            write(a.path(), &format!("a{i}"), b"x");
        }
        assert!(wa.wait_for(|m| m.active_workers == 1, LONG).await);
        // B is served while A is stuck.
        write(b.path(), "b.txt", b"x");
        assert!(wb.wait_for(|m| m.processed == 1, LONG).await);
        assert_eq!(wa.metrics().processed, 0);

        // Open the gate: every file of A is found (events dropped on overflow became rescans).
        gate.add_permits(1);
        assert!(
            wa.wait_for(|m| m.processed == n, Duration::from_secs(120))
                .await,
            "{:?}",
            wa.metrics()
        );
        wa.close().await;
        wb.close().await;
        service.close().await;
    });
}

#[leakcheck::isolated]
fn closing_the_service_ends_remaining_streams_and_refuses_new_starts() {
    run(async {
        let f0 = baseline().await;
        let service = WatchService::new().unwrap();
        let a = tempfile::tempdir().unwrap();
        let wa = start_with(&service, a.path(), Scripted::default()).await;

        // Concurrent and repeated closes all return once the service's task has ended.
        let other = service.clone();
        tokio::join!(service.close(), other.close());
        service.close().await;
        assert!(service.is_closed() && other.is_closed());
        assert!(service.watched_dirs().is_empty());
        assert_eq!(watches_on(a.path()), 0);

        // The watcher left on it closes as usual.
        let r = wa.close().await;
        assert!(r.aborted.is_empty() && !r.budget_exhausted, "{r}");
        drop(wa);
        assert_eq!(fds(), f0);
        assert_eq!(notify_threads(), 0);

        let b = tempfile::tempdir().unwrap();
        let cfg = builder(b.path(), Scripted::default())
            .watch_service(&service)
            .build()
            .unwrap();
        let err = Watcher::start(cfg).await.unwrap_err();
        assert!(
            matches!(err, StartError::WatchServiceClosed { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("watch service is closed"), "{err}");
        // Other modes do not use it.
        let cfg = builder(b.path(), Scripted::default())
            .watch_service(&service)
            .mode(Mode::Once)
            .build()
            .unwrap();
        Watcher::start(cfg).await.unwrap().close().await;
        drop((service, other));
    });
}

#[leakcheck::isolated]
fn dropping_the_last_handle_stops_the_service_without_close() {
    run(async {
        let f0 = baseline().await;
        let service = WatchService::new().unwrap();
        let a = tempfile::tempdir().unwrap();
        let cfg = builder(a.path(), Scripted::default())
            .watch_service(&service)
            .build()
            .unwrap();
        drop(service);
        // The configuration and then the watcher keep the service alive.
        let w = Watcher::start(cfg).await.unwrap();
        write(a.path(), "x.txt", b"x");
        assert!(w.wait_for(|m| m.processed == 1, LONG).await);
        w.close().await;
        drop(w);
        // The service's task ends and closes its fd soon after (on this runtime).
        until("the service's fd is gone", || fds() == f0).await;
    });
}
