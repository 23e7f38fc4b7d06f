//! The watcher, proven leak-free by leakcheck: create/close cycles in every mode leave no
//! thread, fd or task behind, and the deliberately leaky fixture is caught and counted.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::time::Duration;

use leakcheck::{LeakCheck, Resource, Verdict};
use tokio::runtime::Handle;
use watcher::{processor, Mode, ProcessError, Watcher};

fn config(dir: &Path, mode: Mode) -> watcher::Builder {
    Watcher::builder(dir)
        .mode(mode)
        .workers(2)
        .debounce(Duration::from_millis(10))
        .cleanup_every(Duration::from_millis(5))
        .file_state_cleanup_every(Duration::from_millis(5))
        .fsync(false)
        .processor(processor::from_fn(|_, bytes: Vec<u8>| async move {
            if bytes.starts_with(b"invalid") {
                Err(ProcessError::permanent("invalid contents"))
            } else {
                Ok(())
            }
        }))
}

/// A check of threads, fds and the tasks of the current runtime. The runtime's own threads are
/// not the watcher's: its workers, and its blocking pool, which reads inbox files and keeps
/// a thread idle for 10 s after (tokio 1.54 names both `tokio-rt-worker`).
fn check() -> LeakCheck {
    LeakCheck::new()
        .settle(Duration::from_secs(2))
        .ignore_thread("tokio-rt-worker")
        .tasks(&Handle::current())
}

/// One create/close cycle in `mode`, with `files` new files dropped before start.
async fn cycle(dir: &Path, mode: Mode, files: usize, tag: usize) {
    for i in 0..files {
        std::fs::write(dir.join(format!("c{tag}-{i}.txt")), b"payload").unwrap();
    }
    let w = Watcher::start(config(dir, mode).build().unwrap())
        .await
        .expect("watcher starts (EMFILE here would mean notify instances leak)");
    if mode == Mode::Once {
        w.finished().await;
    } else {
        let all = files as u64;
        assert!(
            w.wait_for(|m| m.finished() >= all, Duration::from_secs(20))
                .await
        );
    }
    let report = w.close().await;
    assert!(!report.budget_exhausted, "{report}");
    assert_eq!(w.metrics().processed, files as u64);
}

/// `cycles` create/close cycles in `mode` under a check, `files` new files each.
async fn cycled(mode: Mode, cycles: usize, files: usize) -> leakcheck::Report {
    let dir = tempfile::tempdir().unwrap();
    let mut tag = 0;
    check()
        .cycles(cycles)
        .run_async(|| {
            tag += 1;
            let dir = dir.path().to_owned();
            async move { cycle(&dir, mode, files, tag).await }
        })
        .await
        .unwrap()
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn once_mode_five_cycles_leave_nothing_behind() {
    let report = cycled(Mode::Once, 5, 3).await;
    for r in [Resource::Threads, Resource::Fds, Resource::Tasks] {
        assert_eq!(report.verdict(r), Some(&Verdict::Clean), "{report}");
    }
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_with_both_routines_closes_back_to_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let report = check()
        .run_async(|| async {
            let w = Watcher::start(config(dir.path(), Mode::Watch).build().unwrap())
                .await
                .unwrap();
            std::fs::write(dir.path().join("one.txt"), b"payload").unwrap();
            // Both cleanup routines have run, and the file went through a worker.
            let busy = |m: &watcher::Metrics| {
                m.processed == 1 && m.cleanup_runs >= 2 && m.file_state_runs >= 2
            };
            assert!(
                w.wait_for(busy, Duration::from_secs(20)).await,
                "{:?}",
                w.metrics()
            );
            let shutdown = w.close().await;
            assert!(shutdown.aborted.is_empty(), "{shutdown}");
        })
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_watcher_without_close_cancels_everything() {
    let dir = tempfile::tempdir().unwrap();
    let report = check()
        .cycles(5)
        .run_async(|| async {
            let w = Watcher::start(config(dir.path(), Mode::Watch).build().unwrap())
                .await
                .unwrap();
            let ran = |m: &watcher::Metrics| m.cleanup_runs >= 1 && m.file_state_runs >= 1;
            assert!(w.wait_for(ran, Duration::from_secs(20)).await);
            drop(w);
        })
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

async fn fifty_cycles(mode: Mode) {
    let report = cycled(mode, 50, 1).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.cycles(), 50);
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_cycles_once() {
    fifty_cycles(Mode::Once).await;
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_cycles_watch() {
    fifty_cycles(Mode::Watch).await;
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_cycles_poll() {
    fifty_cycles(Mode::Poll(Duration::from_millis(100))).await;
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn leaky_fixture_is_caught_and_counted_per_cycle() {
    let tmp = tempfile::tempdir().unwrap();
    let cycles = 6;
    let mut n = 0;
    let leak = check()
        .settle(Duration::from_millis(200))
        .cycles(cycles)
        .run_async(|| {
            // A directory per cycle: the leaked routines of earlier cycles still work on theirs.
            n += 1;
            let dir = tmp.path().join(format!("cycle-{n}"));
            std::fs::create_dir(&dir).unwrap();
            async move {
                let config = config(&dir, Mode::Watch)
                    .leaky_background_routines_for_tests(true)
                    .build()
                    .unwrap();
                let w = Watcher::start(config).await.unwrap();
                let ran = |m: &watcher::Metrics| m.cleanup_runs >= 1 && m.file_state_runs >= 1;
                assert!(w.wait_for(ran, Duration::from_secs(20)).await);
                w.close().await;
            }
        })
        .await
        .unwrap_err();
    let report = leak.report();
    // Its two background routines ("cleanup" and "file-state") outlive every close.
    assert_eq!(report.leaked(Resource::Tasks), 2 * cycles, "{report}");
    assert_eq!(report.per_cycle(Resource::Tasks), 2.0);
    assert_eq!(
        report.verdict(Resource::Threads),
        Some(&Verdict::Clean),
        "{report}"
    );
    assert!(
        report.to_string().contains("tasks    +12 (+2.00/cycle)"),
        "{report}"
    );
    // Where tokio's task hooks are built in, each routine is named by the line of the watcher
    // that spawned it, not by the spawning helper inside `lifecycle/tasks.rs`.
    if cfg!(tokio_unstable) {
        let sites = report.items(Resource::Tasks);
        let background = "spawned at watcher/src/lifecycle/background.rs:";
        assert_eq!(sites.len(), 2, "{report}");
        for (label, count) in sites {
            assert!(label.starts_with(background), "{report}");
            assert_eq!(*count, cycles, "{report}");
        }
    }
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_watchers_on_a_shared_service_leave_nothing_behind() {
    let service = watcher::WatchService::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut tag = 0;
    let report = check()
        .cycles(50)
        .run_async(|| {
            tag += 1;
            let dir = dir.path().to_owned();
            let service = service.clone();
            async move {
                std::fs::write(dir.join(format!("s{tag}.txt")), b"payload").unwrap();
                let config = config(&dir, Mode::Watch).watch_service(&service);
                let w = Watcher::start(config.build().unwrap()).await.unwrap();
                assert!(
                    w.wait_for(|m| m.processed == 1, Duration::from_secs(20))
                        .await
                );
                w.close().await;
            }
        })
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
    service.close().await;
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_service_created_and_closed_per_cycle_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let report = check()
        .cycles(10)
        .run_async(|| {
            let dir = dir.path().to_owned();
            async move {
                let service = watcher::WatchService::new().unwrap();
                let config = config(&dir, Mode::Watch).watch_service(&service);
                let w = Watcher::start(config.build().unwrap()).await.unwrap();
                w.close().await;
                service.close().await;
            }
        })
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

/// A watcher dropped without close, on a runtime that is not driven again: its tasks are
/// aborted but not yet dropped (only the runtime can do that), so what they own is still
/// alive. notify's watcher is not among it: the drop unwatches the directory itself, so
/// notify's thread and its fds go at once, and the lock file is released.
#[leakcheck::isolated]
fn a_dropped_watcher_releases_notify_while_its_runtime_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One cycle, no warm-up: a later cycle's block_on would drop this one's aborted tasks.
    let report = LeakCheck::new()
        .settle(Duration::from_secs(2))
        .warmup(0)
        .cycles(1)
        .run(|| {
            let w = rt.block_on(async {
                let w = Watcher::start(config(dir.path(), Mode::Watch).build().unwrap())
                    .await
                    .unwrap();
                let ran = |m: &watcher::Metrics| m.cleanup_runs >= 1;
                assert!(w.wait_for(ran, Duration::from_secs(20)).await);
                w
            });
            drop(w); // outside the runtime, which runs nothing until the check is done
        })
        .unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(
        rt.metrics().num_alive_tasks() > 0,
        "the aborted tasks were dropped: this test no longer shows that the drop itself unwatches"
    );
}
