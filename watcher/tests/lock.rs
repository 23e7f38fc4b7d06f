//! One watcher per directory: the lock taken at start, released at close and after a drop, and
//! start-time errors that name their path.
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use watcher::ledger::JOURNAL;
use watcher::{Mode, StartError, Watcher, LOCK_FILE};

/// The fds of this process that point at `path`.
fn fds_on(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_on_the_same_directory_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = Watcher::start(builder(d, Scripted::default()).build().unwrap())
        .await
        .unwrap();
    for mode in [
        Mode::Watch,
        Mode::Once,
        Mode::Poll(Duration::from_millis(100)),
    ] {
        let cfg = builder(d, Scripted::default()).mode(mode).build().unwrap();
        let err = Watcher::start(cfg).await.unwrap_err();
        assert!(
            matches!(&err, StartError::DirectoryLocked { dir } if dir == first.dir()),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("another watcher holds"), "{msg}");
        assert!(msg.contains(&first.dir().display().to_string()), "{msg}");
    }
    // The refused starts left nothing behind: the first watcher still owns the one lock fd.
    assert_eq!(fds_on(&first.dir().join(LOCK_FILE)), 1);
    assert!(first.close().await.aborted.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_on_one_directory_let_exactly_one_through() {
    let dir = tempfile::tempdir().unwrap();
    let mut starts = Vec::new();
    for _ in 0..8 {
        let cfg = builder(dir.path(), Scripted::default()).build().unwrap();
        starts.push(tokio::spawn(Watcher::start(cfg)));
    }
    let mut running = Vec::new();
    for s in starts {
        match s.await.unwrap() {
            Ok(w) => running.push(w),
            Err(StartError::DirectoryLocked { .. }) => {}
            Err(e) => panic!("unexpected start error: {e}"),
        }
    }
    assert_eq!(running.len(), 1);
    running.pop().unwrap().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_right_after_close_succeeds_and_close_releases_its_fds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lock_path = std::fs::canonicalize(d).unwrap().join(LOCK_FILE);
    let journal_path = std::fs::canonicalize(d).unwrap().join(JOURNAL);
    let p = Scripted::default();
    for i in 0..20 {
        // The ledger is compacted all the time (the case that used to race on its temp file).
        let cfg = builder(d, p.clone())
            .cleanup_every(Duration::from_millis(1))
            .file_state_cleanup_every(Duration::from_millis(1))
            .build()
            .unwrap();
        let w = Watcher::start(cfg)
            .await
            .unwrap_or_else(|e| panic!("start {i}: {e}"));
        assert_eq!(fds_on(&lock_path), 1);
        write(d, &format!("f{i}.txt"), b"x");
        assert!(
            w.wait_for(|m| m.processed == 1 && m.cleanup_runs >= 1, LONG)
                .await
        );
        // Opened by the first record of the ledger.
        assert_eq!(fds_on(&journal_path), 1);
        let r = w.close().await;
        assert!(r.aborted.is_empty(), "{r}");
        assert_eq!(fds_on(&lock_path), 0, "the lock fd outlived close");
        assert_eq!(fds_on(&journal_path), 0, "the journal fd outlived close");
        // Kept alive on purpose: close alone must have released the lock.
        let again = Watcher::start(builder(d, p.clone()).mode(Mode::Once).build().unwrap())
            .await
            .unwrap_or_else(|e| panic!("restart {i} right after close: {e}"));
        again.close().await;
        drop(w);
    }
    assert_eq!(p.total_calls(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_right_after_a_drop_without_close_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rt = tokio::runtime::Handle::current();
    for i in 0..20 {
        // Busy background routines: a drop often lands while one of them is being polled.
        let cfg = builder(d, Scripted::default())
            .cleanup_every(Duration::from_millis(1))
            .file_state_cleanup_every(Duration::from_millis(1))
            .build()
            .unwrap();
        let w = Watcher::start(cfg)
            .await
            .unwrap_or_else(|e| panic!("start {i} right after a drop: {e}"));
        assert!(w.wait_for(|m| m.cleanup_runs >= 1, LONG).await);
        drop(w);
    }
    let w = Watcher::start(builder(d, Scripted::default()).build().unwrap())
        .await
        .unwrap();
    let lock_path = w.dir().join(LOCK_FILE);
    drop(w);
    // Every task ends, and the lock fd with them.
    until("tasks left", || rt.metrics().num_alive_tasks() == 0).await;
    assert_eq!(fds_on(&lock_path), 0);
}

#[tokio::test]
async fn the_lock_file_is_not_processed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a.txt", b"x");
    let p = Scripted::default();
    // A lock file left by an earlier run (it always stays) and the live one.
    for _ in 0..2 {
        run_to_end(builder(d, p.clone()).mode(Mode::Once).build().unwrap()).await;
    }
    assert_eq!(p.total_calls(), 1);
    assert_eq!(p.calls(LOCK_FILE), 0);
    assert!(d.join(LOCK_FILE).exists());
    assert!(!d.join("processed").join(LOCK_FILE).exists());
}

#[tokio::test]
async fn start_errors_name_the_path_they_concern() {
    // `processed` is a file: creating the directory fails.
    let dir = tempfile::tempdir().unwrap();
    let d = std::fs::canonicalize(dir.path()).unwrap();
    write(&d, "processed", b"in the way");
    let err = Watcher::start(builder(&d, Scripted::default()).build().unwrap())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StartError::Io { .. }), "{err:?}");
    assert!(
        msg.contains(&d.join("processed").display().to_string()),
        "{msg}"
    );

    // The journal is a directory: opening the ledger fails, naming the journal.
    let dir = tempfile::tempdir().unwrap();
    let d = std::fs::canonicalize(dir.path()).unwrap();
    let journal = d.join(watcher::ledger::JOURNAL);
    std::fs::create_dir(&journal).unwrap();
    let err = Watcher::start(builder(&d, Scripted::default()).build().unwrap())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("ledger"), "{msg}");
    assert!(msg.contains(&journal.display().to_string()), "{msg}");

    // The journal cannot be created (a dangling symlink, as root cannot be denied access):
    // the start fails naming it, and the file waiting in the inbox is left there.
    let dir = tempfile::tempdir().unwrap();
    let d = std::fs::canonicalize(dir.path()).unwrap();
    let journal = d.join(watcher::ledger::JOURNAL);
    std::os::unix::fs::symlink(d.join("missing/journal"), &journal).unwrap();
    write(&d, "waiting.txt", b"x");
    let p = Scripted::default();
    let err = Watcher::start(builder(&d, p.clone()).mode(Mode::Once).build().unwrap())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StartError::Io { .. }), "{err:?}");
    assert!(msg.contains(&journal.display().to_string()), "{msg}");
    assert!(d.join("waiting.txt").exists());
    assert_eq!(p.total_calls(), 0);

    // A corrupt snapshot.
    let dir = tempfile::tempdir().unwrap();
    let d = std::fs::canonicalize(dir.path()).unwrap();
    let snapshot = d.join(watcher::ledger::SNAPSHOT);
    std::fs::write(&snapshot, b"{not json").unwrap();
    let err = Watcher::start(builder(&d, Scripted::default()).build().unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&snapshot.display().to_string()),
        "{err}"
    );

    // None of these failed starts kept the lock.
    let w = Watcher::start(
        builder(&d, Scripted::default())
            .mode(Mode::Once)
            .build()
            .unwrap(),
    )
    .await;
    assert!(matches!(w, Err(StartError::Io { .. })), "{w:?}");
    std::fs::remove_file(&snapshot).unwrap();
    let w = Watcher::start(builder(&d, Scripted::default()).build().unwrap())
        .await
        .unwrap();
    w.close().await;
}
