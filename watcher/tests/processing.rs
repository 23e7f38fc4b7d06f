//! Processing semantics: modes, retry, faults, exactly-once, crash recovery, close.
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use watcher::ledger::{FileId, Ledger};
use watcher::{Mode, Outcome, Stage, Watcher};

#[tokio::test]
async fn once_mode_processes_present_files_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..20 {
        write(d, &format!("ok{i}.txt"), b"fine");
    }
    write(d, "bad.txt", b"bad stuff");
    write(d, "skip.dat", b"not matching");
    let p = Scripted::default();
    let cfg = builder(d, p.clone())
        .mode(Mode::Once)
        .pattern("*.txt")
        .build()
        .unwrap();
    let (w, report) = run_to_end(cfg).await;
    assert!(report.aborted.is_empty() && report.handed_back.is_empty());
    assert_eq!(
        report.unwatch,
        Duration::ZERO,
        "nothing to unwatch in Once mode"
    );
    let m = w.metrics();
    assert_eq!((m.processed, m.failed), (20, 1));
    assert_eq!(m.latency.total(), 21);
    for i in 0..20 {
        let s = status(d, &format!("ok{i}.txt"));
        assert_eq!(
            (s.outcome, s.attempts, s.interrupted),
            (Outcome::Processed, 1, false)
        );
        assert!(s.error.is_none());
    }
    let s = status(d, "bad.txt");
    assert_eq!(s.outcome, Outcome::Failed);
    assert_eq!(s.error.as_deref(), Some("bad contents"));
    assert!(d.join("skip.dat").exists(), "non-matching file left alone");
    assert_eq!(p.calls("skip.dat"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_processes_existing_and_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "early.txt", b"x");
    let p = Scripted::default();
    let w = Watcher::start(builder(d, p.clone()).build().unwrap())
        .await
        .unwrap();
    assert!(w.wait_for(|m| m.processed == 1, LONG).await);
    for i in 0..10 {
        write(d, &format!("new{i}.txt"), b"y");
    }
    assert!(w.wait_for(|m| m.processed == 11, LONG).await);
    let report = w.close().await;
    assert_eq!(report.stages.len(), 3);
    assert_eq!(report.stages[0].0, Stage::Intake);
    // notify's thread removed the watch and closed its fds within the intake stage.
    assert!(!report.unwatch.is_zero() && report.unwatch <= report.stages[0].1);
    assert!(
        report.to_string().contains("kernel inotify teardown"),
        "{report}"
    );
    assert!(!report.budget_exhausted && report.aborted.is_empty());
    for i in 0..10 {
        assert_eq!(
            status(d, &format!("new{i}.txt")).outcome,
            Outcome::Processed
        );
        assert_eq!(p.calls(&format!("new{i}.txt")), 1);
    }
    assert_eq!(p.calls("early.txt"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_waits_until_a_growing_file_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = Scripted::default();
    let w = Watcher::start(
        builder(d, p.clone())
            .debounce(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    // Written in two parts, well within the debounce window: processed once, whole.
    use std::io::Write;
    let mut f = std::fs::File::create(d.join("grow.txt")).unwrap();
    f.write_all(b"part one ").unwrap();
    f.flush().unwrap();
    f.write_all(b"part two").unwrap();
    drop(f);
    assert!(w.wait_for(|m| m.processed == 1, LONG).await);
    w.close().await;
    assert_eq!(p.calls("grow.txt"), 1);
    assert_eq!(
        std::fs::read(d.join("processed/grow.txt")).unwrap(),
        b"part one part two"
    );
}

#[tokio::test]
async fn poll_mode_finds_files_by_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a.txt", b"x");
    let p = Scripted::default();
    // A debounce longer than the poll period: repeated scans must not postpone a file forever.
    let cfg = builder(d, p.clone())
        .mode(Mode::Poll(Duration::from_millis(100)))
        .debounce(Duration::from_millis(300))
        .build()
        .unwrap();
    let w = Watcher::start(cfg).await.unwrap();
    assert!(w.wait_for(|m| m.processed == 1, LONG).await);
    write(d, "b.txt", b"x");
    assert!(w.wait_for(|m| m.processed == 2, LONG).await);
    w.close().await;
    assert_eq!(status(d, "b.txt").outcome, Outcome::Processed);
    assert_eq!(p.total_calls(), 2);
}

#[tokio::test]
async fn retryable_errors_are_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "flaky.txt", b"flaky");
    write(d, "flaky-too-often.txt", b"flaky");
    let p = Scripted::default();
    // 2 retries: flaky succeeds on the 3rd call.
    let cfg = builder(d, p.clone())
        .mode(Mode::Once)
        .retries(2)
        .build()
        .unwrap();
    let (w, _) = run_to_end(cfg).await;
    let s = status(d, "flaky.txt");
    assert_eq!((s.outcome, s.attempts), (Outcome::Processed, 3));
    assert_eq!(w.metrics().retried, 4);

    // 1 retry: gives up after 2 attempts.
    let dir2 = tempfile::tempdir().unwrap();
    write(dir2.path(), "flaky.txt", b"flaky");
    let cfg = builder(dir2.path(), Scripted::default())
        .mode(Mode::Once)
        .retries(1)
        .build()
        .unwrap();
    run_to_end(cfg).await;
    let s = status(dir2.path(), "flaky.txt");
    assert_eq!((s.outcome, s.attempts), (Outcome::Failed, 2));
    assert_eq!(
        s.error.as_deref(),
        Some("gave up after 2 attempts: flaky attempt 2")
    );
}

#[tokio::test]
async fn oversized_files_fail_without_being_processed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "big.txt", &vec![b'x'; 2048]);
    write(d, "small.txt", b"x");
    let p = Scripted::default();
    let cfg = builder(d, p.clone())
        .mode(Mode::Once)
        .max_file_size(1024)
        .build()
        .unwrap();
    run_to_end(cfg).await;
    let s = status(d, "big.txt");
    assert_eq!((s.outcome, s.attempts), (Outcome::Failed, 0));
    assert_eq!(
        s.error.as_deref(),
        Some("file too large: 2048 bytes exceeds max_file_size of 1024 bytes")
    );
    assert_eq!(p.calls("big.txt"), 0);
    assert_eq!(status(d, "small.txt").outcome, Outcome::Processed);
}

#[tokio::test]
async fn symlink_pointing_outside_is_refused_inside_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = write(outside.path(), "secret", b"secret");
    std::os::unix::fs::symlink(&secret, d.join("escape.txt")).unwrap();
    write(d, "real.txt", b"x");
    std::os::unix::fs::symlink(d.join("real.txt"), d.join("link.txt")).unwrap();
    let p = Scripted::default();
    let cfg = builder(d, p.clone())
        .mode(Mode::Once)
        .workers(1)
        .pattern("[el]*.txt")
        .build()
        .unwrap();
    run_to_end(cfg).await;
    let s = status(d, "escape.txt");
    assert_eq!(s.outcome, Outcome::Failed);
    let err = s.error.unwrap();
    assert!(
        err.starts_with("refused: symlink points outside the watched directory"),
        "{err}"
    );
    assert_eq!(p.calls("escape.txt"), 0);
    assert!(secret.exists(), "the target is untouched");
    assert_eq!(status(d, "link.txt").outcome, Outcome::Processed);
}

#[tokio::test]
async fn a_panicking_processor_fails_that_file_and_the_watcher_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a-panic.txt", b"panic");
    for i in 0..5 {
        write(d, &format!("b{i}.txt"), b"ok");
    }
    let cfg = builder(d, Scripted::default())
        .mode(Mode::Once)
        .workers(1)
        .build()
        .unwrap();
    let (w, r) = run_to_end(cfg).await;
    assert!(r.aborted.is_empty());
    let s = status(d, "a-panic.txt");
    assert_eq!(s.outcome, Outcome::Failed);
    assert_eq!(
        s.error.as_deref(),
        Some("processor panicked: boom in processor")
    );
    assert_eq!(w.metrics().processed, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_processor_is_aborted_at_close_and_its_file_stays() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "hang.txt", b"hang");
    let p = Scripted::default();
    let cfg = builder(d, p.clone())
        .workers(1)
        .shutdown_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let w = Watcher::start(cfg).await.unwrap();
    assert!(w.wait_for(|m| m.active_workers == 1, LONG).await);
    let r = w.close().await;
    assert!(r.budget_exhausted);
    // The hung worker is named. Once the budget is spent, the coordinator aborts later
    // stages without waiting, so the background routines may be listed after it.
    assert_eq!(r.aborted[0].name, "worker-0", "{r}");
    assert_eq!(r.aborted[0].stage, Stage::Workers);
    assert!(r.aborted[1..].iter().all(|t| t.stage == Stage::Background));
    assert_eq!(r.handed_back, vec![w.dir().join("hang.txt")]);
    assert!(r.total < Duration::from_secs(2));
    assert!(
        d.join("hang.txt").exists(),
        "the file stays for the next run"
    );
    assert!(where_is(d, "hang.txt").is_none());
    drop(w);

    // Next run: it runs again (now it succeeds) and its status says it was interrupted.
    std::fs::write(d.join("hang.txt"), b"fine now").unwrap();
    let cfg = builder(d, p.clone()).mode(Mode::Once).build().unwrap();
    run_to_end(cfg).await;
    let s = status(d, "hang.txt");
    assert_eq!((s.outcome, s.interrupted), (Outcome::Processed, true));
}

#[tokio::test]
async fn crash_recovery_reruns_in_flight_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A first run processes two files.
    write(d, "done.txt", b"x");
    write(d, "done2.txt", b"x");
    let p = Scripted::default();
    let (w, _) = run_to_end(builder(d, p.clone()).mode(Mode::Once).build().unwrap()).await;
    drop(w);
    // Simulate a kill -9 mid-processing of `inflight.txt`, and one where the status was
    // written but the move did not happen, and an in-flight entry whose file vanished.
    write(d, "inflight.txt", b"x");
    write(d, "committing.txt", b"x");
    write(d, "fresh.txt", b"x");
    {
        let ledger = Ledger::open(d).unwrap();
        ledger.mark_in_flight("inflight.txt", 7).unwrap();
        ledger.mark_in_flight("committing.txt", 8).unwrap();
        ledger.mark_in_flight("vanished.txt", 9).unwrap();
        // A re-marked entry for a file already done and moved: never re-run.
        ledger.mark_in_flight("done.txt", 10).unwrap();
    }
    let st = watcher::Status {
        file: "committing.txt".into(),
        moved_to: "committing.txt".into(),
        outcome: Outcome::Processed,
        attempts: 1,
        error: None,
        interrupted: false,
        run: 8,
        started_at: "2024-01-01T00:00:00Z".into(),
        finished_at: "2024-01-01T00:00:01Z".into(),
    };
    std::fs::write(
        d.join("processed/committing.txt.status.json"),
        serde_json::to_vec(&st).unwrap(),
    )
    .unwrap();

    run_to_end(builder(d, p.clone()).mode(Mode::Once).build().unwrap()).await;
    let s = status(d, "inflight.txt");
    assert_eq!((s.outcome, s.interrupted), (Outcome::Processed, true));
    assert_eq!(p.calls("inflight.txt"), 1);
    // Finished by recovery, without running again.
    assert_eq!(status(d, "committing.txt").run, 8);
    assert_eq!(p.calls("committing.txt"), 0);
    let s = status(d, "fresh.txt");
    assert!(!s.interrupted);
    assert_eq!(p.calls("done.txt"), 1);
    assert_eq!(p.calls("done2.txt"), 1);
    // Every file is finished: the ledger forgets it (the vanished one too).
    let entries = Ledger::open(d).unwrap().entries();
    assert!(entries.is_empty(), "{entries:?}");
}

/// A worker's `done` record is not synced on its own (it becomes durable with the journal's
/// next sync): after a power loss the ledger may still say in flight for a file that was
/// committed and moved. A restart must finish it from its status, without running it again.
/// Negative control: the same state without the status file (the commit never happened) makes
/// the file run again, so the check can tell the two apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_file_whose_done_record_was_lost_is_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = Scripted::default();
    write(d, "moved.txt", b"x");
    write(d, "never_committed.txt", b"x");
    let (w, _) = run_to_end(builder(d, p.clone()).mode(Mode::Once).build().unwrap()).await;
    drop(w);
    assert_eq!(p.calls("moved.txt"), 1);
    let run = status(d, "moved.txt").run;
    // The state a lost `done` leaves: in flight with the committed run. For the control, a
    // file in the inbox, in flight, without any status.
    write(d, "never_committed.txt", b"x");
    std::fs::remove_file(d.join("processed/never_committed.txt")).unwrap();
    std::fs::remove_file(d.join("processed/never_committed.txt.status.json")).unwrap();
    {
        let ledger = Ledger::open(d).unwrap();
        ledger.mark_in_flight("moved.txt", run).unwrap();
        ledger
            .mark_in_flight("never_committed.txt", run + 1)
            .unwrap();
    }

    run_to_end(builder(d, p.clone()).mode(Mode::Once).build().unwrap()).await;
    assert_eq!(p.calls("moved.txt"), 1, "a committed file ran again");
    assert_eq!(status(d, "moved.txt").run, run);
    let entries = Ledger::open(d).unwrap().entries();
    assert!(!entries.contains_key("moved.txt"), "{entries:?}");
    // The control: no status, so it ran again, marked interrupted.
    assert_eq!(p.calls("never_committed.txt"), 2);
    assert!(status(d, "never_committed.txt").interrupted);
}

/// A file whose result the ledger holds (`decided`), in each state a crash can leave its commit
/// in: neither the status file nor the move done, the status written but the file not moved,
/// the file moved but no status. A restart finishes each from the ledger without running it
/// again. A file dropped again under the name of one already moved is a new file: processed,
/// and the moved one left as it is; so is one dropped again after a consumer took the moved
/// one out of `processed/` (told apart by its inode). Negative control: an in-flight entry
/// with its file in the inbox runs again, so the check can tell the two apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_file_is_finished_from_the_ledger_without_running_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("processed")).unwrap();
    let decided = |name: &str, run: u64| watcher::Status {
        file: name.into(),
        moved_to: name.into(),
        outcome: Outcome::Processed,
        attempts: 1,
        error: None,
        interrupted: false,
        run,
        started_at: "2024-01-01T00:00:00Z".into(),
        finished_at: "2024-01-01T00:00:01Z".into(),
    };
    write(d, "nothing_yet.txt", b"x");
    write(d, "status_only.txt", b"x");
    std::fs::write(
        d.join("processed/status_only.txt.status.json"),
        serde_json::to_vec(&decided("status_only.txt", 21)).unwrap(),
    )
    .unwrap();
    std::fs::write(d.join("processed/moved_only.txt"), b"x").unwrap();
    std::fs::write(d.join("processed/again.txt"), b"first").unwrap();
    write(d, "again.txt", b"second");
    write(d, "inflight.txt", b"x");
    // `replaced.txt` was processed (file `first`), moved, taken out of `processed/` by a
    // consumer, and dropped again: a new file (written before the old one goes).
    let id = |name: &str| FileId::of(&std::fs::metadata(d.join(name)).unwrap());
    write(d, "replaced.txt", b"first");
    let first = id("replaced.txt");
    write(d, ".new", b"second");
    std::fs::rename(d.join(".new"), d.join("replaced.txt")).unwrap();
    assert_ne!(id("replaced.txt"), first);
    {
        let ledger = Ledger::open(d).unwrap();
        ledger
            .mark_decided(&decided("replaced.txt", 25), first)
            .unwrap();
        ledger
            .mark_decided(&decided("nothing_yet.txt", 20), id("nothing_yet.txt"))
            .unwrap();
        ledger
            .mark_decided(&decided("status_only.txt", 21), None)
            .unwrap();
        ledger
            .mark_decided(&decided("moved_only.txt", 22), None)
            .unwrap();
        ledger
            .mark_decided(&decided("again.txt", 23), None)
            .unwrap();
        ledger.mark_in_flight("inflight.txt", 24).unwrap();
    }

    let p = Scripted::default();
    run_to_end(builder(d, p.clone()).mode(Mode::Once).build().unwrap()).await;
    for (name, run) in [
        ("nothing_yet.txt", 20),
        ("status_only.txt", 21),
        ("moved_only.txt", 22),
    ] {
        assert_eq!(p.calls(name), 0, "{name} ran again");
        assert_eq!(status(d, name), decided(name, run));
        assert!(d.join("processed").join(name).exists(), "{name} not moved");
        assert!(!d.join(name).exists(), "{name} left in the inbox");
    }
    assert_eq!(status(d, "again.txt"), decided("again.txt", 23));
    assert_eq!(
        std::fs::read(d.join("processed/again.txt")).unwrap(),
        b"first"
    );
    assert_eq!(p.calls("again.txt"), 1, "the file dropped again is new");
    let moved = second_copy(d, "again.txt");
    assert_eq!(std::fs::read(moved).unwrap(), b"second");
    let written = d.join("processed/replaced.txt.status.json");
    assert_eq!(
        watcher::Status::read(&written).unwrap(),
        decided("replaced.txt", 25)
    );
    assert!(
        !d.join("processed/replaced.txt").exists(),
        "the new file moved unprocessed"
    );
    assert_eq!(p.calls("replaced.txt"), 1, "the file dropped again is new");
    let moved = second_copy(d, "replaced.txt");
    assert_eq!(std::fs::read(moved).unwrap(), b"second");
    // The control: no result in the ledger, so it ran again, marked interrupted.
    assert_eq!(p.calls("inflight.txt"), 1);
    assert!(status(d, "inflight.txt").interrupted);
    // Every commit finished: the ledger forgets the files.
    let entries = Ledger::open(d).unwrap().entries();
    assert!(entries.is_empty(), "{entries:?}");
}

/// The one `processed/NAME.<run>` of a file dropped again under `name` (not its status): the
/// ledger forgets a file once committed, so the run is read from the name.
fn second_copy(d: &Path, name: &str) -> PathBuf {
    let prefix = format!("{name}.");
    let copies: Vec<PathBuf> = std::fs::read_dir(d.join("processed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|run| run.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|n| d.join("processed").join(n))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    copies.into_iter().next().unwrap()
}

/// With fsync on, a worker leaves the syncs of a file's status and move, and its `done`, to a
/// checkpoint shared by the workers, run every 64 files, when the queue is empty, and as each
/// worker leaves. After a close every file is done in the ledger with its status on disk, and a
/// restart runs nothing again. 150 files, so that full batches and a last partial one both run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fsync_on_every_file_is_done_after_close_and_nothing_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = 150;
    for i in 0..n {
        write(
            d,
            &format!("f{i:03}.txt"),
            if i % 7 == 0 { b"bad" } else { b"ok" },
        );
    }
    let p = Scripted::default();
    let once = || {
        builder(d, p.clone())
            .mode(Mode::Once)
            .workers(4)
            .fsync(true)
            .build()
            .unwrap()
    };
    let (_, report) = run_to_end(once()).await;
    assert!(report.handed_back.is_empty(), "{report}");
    // Every file done: the ledger forgets it; its status is the record.
    let entries = Ledger::open(d).unwrap().entries();
    assert!(entries.is_empty(), "{entries:?}");
    for i in 0..n {
        let name = format!("f{i:03}.txt");
        let s = status(d, &name);
        assert_eq!(s.outcome == Outcome::Processed, i % 7 != 0, "{name}: {s:?}");
        assert_eq!(p.calls(&name), 1);
    }
    let (w, _) = run_to_end(once()).await;
    assert_eq!(w.metrics().processed + w.metrics().failed, 0);
    for i in 0..n {
        assert_eq!(p.calls(&format!("f{i:03}.txt")), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_close_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = 300;
    let name = |i: usize| format!("f{i:04}.txt");
    for i in 0..n {
        let body: &[u8] = match i % 10 {
            3 => b"bad",
            7 => &[b'z'; 600],
            _ => b"ok",
        };
        write(d, &name(i), body);
    }
    let p = Scripted::default();
    let mk = || {
        builder(d, p.clone())
            .workers(3)
            .queue_capacity(8)
            .max_file_size(512)
            .build()
            .unwrap()
    };
    // First run: close midway.
    let w = Watcher::start(mk()).await.unwrap();
    assert!(w.wait_for(|m| m.finished() >= 50, LONG).await);
    let r1 = w.close().await;
    let first = w.metrics().finished();
    assert!(first < n as u64, "closed midway ({first} done)");
    assert!(r1.aborted.is_empty());
    drop(w);
    // Second run (watch mode too): picks up the rest.
    let w = Watcher::start(mk()).await.unwrap();
    let rest = n as u64 - first;
    assert!(
        w.wait_for(|m| m.finished() == rest, LONG).await,
        "{:?}",
        w.metrics()
    );
    w.close().await;
    for i in 0..n {
        let (outcome, s) = where_is(d, &name(i)).unwrap_or_else(|| panic!("{} lost", name(i)));
        let want = if i % 10 == 3 || i % 10 == 7 {
            Outcome::Failed
        } else {
            Outcome::Processed
        };
        assert_eq!(outcome, want, "{}", name(i));
        assert!(!s.interrupted);
        assert!(p.calls(&name(i)) <= 1, "{} processed twice", name(i));
    }
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| !n.starts_with(".watcher-ledger") && n != watcher::LOCK_FILE)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_is_processed_with_bounded_queue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = Scripted::default();
    let w = Watcher::start(
        builder(d, p.clone())
            .queue_capacity(4)
            .debounce(Duration::from_millis(10))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let n = 1000;
    for i in 0..n {
        write(d, &format!("b{i}"), b"x");
    }
    assert!(
        w.wait_for(|m| m.processed == n, Duration::from_secs(60))
            .await,
        "{:?}",
        w.metrics()
    );
    let m = w.metrics();
    assert!(m.backpressure_waits > 0, "{m:?}");
    assert_eq!(m.queue_depth, 0);
    w.close().await;
    assert_eq!(p.total_calls() as u64, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_idempotent_and_concurrent_and_reports_queued_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a-hang.txt", b"hang");
    for i in 0..5 {
        write(d, &format!("q{i}.txt"), b"ok");
    }
    let cfg = builder(d, Scripted::default())
        .mode(Mode::Once)
        .workers(1)
        .shutdown_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let w = std::sync::Arc::new(Watcher::start(cfg).await.unwrap());
    assert!(w.wait_for(|m| m.active_workers == 1, LONG).await);
    // One close from another task (the close future is Send), one from here.
    let w2 = w.clone();
    let other = tokio::spawn(async move { w2.close().await });
    let a = w.close().await;
    let b = other.await.unwrap();
    assert_eq!(a, b);
    assert_eq!(w.close().await, a);
    assert_eq!(a.aborted[0].name, "worker-0", "{a}");
    // The hung file and the 5 queued ones are handed back, all still in the inbox.
    assert_eq!(a.handed_back.len(), 6, "{a}");
    for p in &a.handed_back {
        assert!(p.exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_without_close_cancels_everything() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "hang.txt", b"hang");
    let rt = tokio::runtime::Handle::current();
    let w = Watcher::start_on(
        builder(d, Scripted::default()).workers(2).build().unwrap(),
        &rt,
    )
    .unwrap();
    assert!(w.wait_for(|m| m.active_workers == 1, LONG).await);
    drop(w);
    // Every task ends: the runtime's alive-task count goes back to 0.
    until("tasks left", || rt.metrics().num_alive_tasks() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_routines_run_and_stop_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rt = tokio::runtime::Handle::current();
    let cfg = builder(d, Scripted::default())
        .cleanup_every(Duration::from_millis(5))
        .file_state_cleanup_every(Duration::from_millis(5))
        .build()
        .unwrap();
    let w = Watcher::start(cfg).await.unwrap();
    assert!(
        w.wait_for(|m| m.cleanup_runs >= 2 && m.file_state_runs >= 2, LONG)
            .await
    );
    let r = w.close().await;
    assert!(r.aborted.is_empty());
    // Every task's future has completed when close returns; on a multi-thread runtime the task
    // itself is released by its worker a moment later.
    until("tasks left after close", || {
        rt.metrics().num_alive_tasks() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaky_fixture_leaves_its_two_routines_running() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Handle::current();
    let cfg = builder(dir.path(), Scripted::default())
        .leaky_background_routines_for_tests(true)
        .build()
        .unwrap();
    let w = Watcher::start(cfg).await.unwrap();
    let r = w.close().await;
    assert!(r.aborted.is_empty());
    // The tracked tasks are released a moment after close (see above); the planted two stay.
    yield_until(LONG, || rt.metrics().num_alive_tasks() <= 2).await;
    assert_eq!(rt.metrics().num_alive_tasks(), 2, "the planted leak");
}

#[test]
fn start_on_a_runtime_handle_from_outside_the_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"x");
    let cfg = builder(dir.path(), Scripted::default())
        .mode(Mode::Once)
        .build()
        .unwrap();
    // Not inside the runtime: start_on spawns on the given handle.
    let w = Watcher::start_on(cfg, rt.handle()).unwrap();
    let r = rt.block_on(async {
        w.finished().await;
        w.close().await
    });
    assert!(r.aborted.is_empty());
    assert_eq!(status(dir.path(), "a.txt").outcome, Outcome::Processed);
    assert_eq!(rt.metrics().num_alive_tasks(), 0);
}

/// A producer replaces a file under its name while the watcher processes it (a new file renamed
/// over it). The processed file is gone: its status is written, and the new file is not moved
/// into `processed/` as if it had been processed; it runs itself, as a file of its own. With
/// fsync off and on (the move, then the checkpoint, release the name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_while_it_is_processed_is_not_moved_in_its_place() {
    for fsync in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (inbox, calls) = (d.clone(), seen.clone());
        let replace_once = watcher::processor::from_fn(move |path, bytes: Vec<u8>| {
            let (inbox, calls) = (inbox.clone(), calls.clone());
            async move {
                let first = calls.lock().unwrap().is_empty();
                calls.lock().unwrap().push(bytes);
                if first {
                    std::fs::write(inbox.join(".new"), b"second").unwrap();
                    std::fs::rename(inbox.join(".new"), path).unwrap();
                }
                Ok::<(), watcher::ProcessError>(())
            }
        });
        write(&d, "a.txt", b"first");
        let cfg = Watcher::builder(&d)
            .debounce(Duration::from_millis(20))
            .fsync(fsync)
            .processor(replace_once)
            .build()
            .unwrap();
        let w = Watcher::start(cfg).await.unwrap();
        assert!(
            w.wait_for(|m| m.processed == 2, LONG).await,
            "fsync {fsync}"
        );
        w.close().await;
        assert_eq!(
            *seen.lock().unwrap(),
            [b"first".to_vec(), b"second".to_vec()]
        );
        let first = watcher::Status::read(&d.join("processed/a.txt.status.json")).unwrap();
        assert!(
            !d.join("processed/a.txt").exists(),
            "the new file moved in its place"
        );
        let moved = second_copy(&d, "a.txt");
        assert_ne!(moved, d.join(format!("processed/a.txt.{}", first.run)));
        assert_eq!(std::fs::read(moved).unwrap(), b"second", "fsync {fsync}");
        assert!(!d.join("a.txt").exists());
    }
}
