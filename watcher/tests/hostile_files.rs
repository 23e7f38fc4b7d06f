//! Files that must not hurt the watcher: FIFOs, sockets, a symlink out of the inbox or to a
//! FIFO, a name that is not UTF-8, a name with a newline, beside ordinary files. Each odd one
//! is processed or failed with a reason, never skipped in silence, never opened in a way that
//! can block; the ordinary ones are processed; everything finishes in seconds.
#![cfg(unix)]
mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use watcher::{Mode, Outcome, Watcher};

/// The one byte that makes `bad\xff.txt` not UTF-8.
const NOT_UTF8: &[u8] = b"bad\xff.txt";

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {p:?}"
    );
}

/// Whether some process has `fifo` open for reading: a non-blocking open for writing
/// succeeds only then (ENXIO otherwise). Closing it again gives a blocked reader EOF.
fn fifo_has_a_reader(fifo: &Path) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .is_ok()
}

/// The odd files and two ordinary ones, in `d`; returns the path a symlink escapes to.
fn plant(d: &Path, outside: &Path) -> PathBuf {
    write(d, "a.txt", b"a");
    write(d, "b.txt", b"b");
    mkfifo(&d.join("pipe"));
    // To a FIFO in a subdirectory, which intake ignores: the link is refused for what it
    // points to, whichever order the workers take them in.
    std::fs::create_dir(d.join("sub")).unwrap();
    mkfifo(&d.join("sub/pipe"));
    symlink(d.join("sub/pipe"), d.join("pipe-link")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    let secret = write(outside, "secret", b"secret");
    symlink(&secret, d.join("escape.lnk")).unwrap();
    std::fs::write(d.join(OsStr::from_bytes(NOT_UTF8)), b"c").unwrap();
    write(d, "new\nline.txt", b"n");
    secret
}

/// The status of `name`, which must have moved from the inbox to `failed/` (read without
/// following the symlinks that moved there).
fn failed_status(d: &Path, name: &str) -> watcher::Status {
    assert!(
        std::fs::symlink_metadata(d.join(name)).is_err(),
        "{name} is still in the inbox"
    );
    assert!(std::fs::symlink_metadata(d.join("failed").join(name)).is_ok());
    watcher::Status::read(&d.join("failed").join(format!("{name}.status.json")))
        .unwrap_or_else(|e| panic!("status of {name}: {e}"))
}

/// The special files fail with a clear reason, without being read.
fn assert_special_files_refused(d: &Path) {
    for (name, kind) in [
        ("pipe", "a FIFO"),
        ("pipe-link", "a FIFO"),
        ("sock", "a socket"),
    ] {
        let s = failed_status(d, name);
        assert_eq!(s.outcome, Outcome::Failed, "{name}: {s:?}");
        assert_eq!(s.attempts, 0, "{name} reached the processor: {s:?}");
        assert_eq!(
            s.error.as_deref(),
            Some(format!("refused: not a regular file ({kind})").as_str()),
            "{name}"
        );
    }
    let s = failed_status(d, "escape.lnk");
    assert_eq!(s.outcome, Outcome::Failed);
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .starts_with("refused: symlink points outside the watched directory"),
        "{s:?}"
    );
}

/// The name that is not UTF-8 is in `processed/` under its own name, byte for byte, with its
/// status beside it; the record names it by its escape.
fn assert_not_utf8_processed(d: &Path) {
    let raw = OsStr::from_bytes(NOT_UTF8);
    assert!(
        !d.join(raw).exists(),
        "the file whose name is not UTF-8 is still in the inbox"
    );
    let moved = d.join("processed").join(raw);
    assert!(moved.exists(), "not in processed/ under its own name");
    let s = watcher::Status::read(&watcher::status::status_path(&moved)).unwrap();
    assert_eq!(s.outcome, Outcome::Processed, "{s:?}");
    assert_eq!(
        (s.file.as_str(), s.moved_to.as_str()),
        (r"bad\xff.txt", r"bad\xff.txt")
    );
    assert!(
        !d.join(r"processed/bad\xff.txt").exists(),
        "moved under its escape"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_watch_mode_refuses_special_files_and_processes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = plant(d, outside.path());
    let p = Scripted::default();
    let w = Watcher::start(builder(d, p.clone()).workers(2).build().unwrap())
        .await
        .unwrap();
    // 5 processed (a, b, newline, not-UTF-8, …) and 4 failed (pipe, pipe-link, sock, escape).
    let all_done = w
        .wait_for(
            |m| m.processed == 4 && m.failed == 4,
            Duration::from_secs(10),
        )
        .await;
    // A wedged worker sits in open(2) on the FIFO: give it EOF so that the test can end.
    let wedged = fifo_has_a_reader(&d.join("pipe"));
    assert!(!wedged, "the watcher opened the FIFO for reading");
    assert!(all_done, "not every file finished: {:?}", w.metrics());
    // More files keep coming through: nothing is stuck.
    write(d, "later.txt", b"l");
    assert!(w.wait_for(|m| m.processed == 5, LONG).await);
    let r = w.close().await;
    assert!(!r.budget_exhausted && r.aborted.is_empty(), "{r}");
    assert_special_files_refused(d);
    assert_not_utf8_processed(d);
    assert_eq!(status(d, "new\nline.txt").outcome, Outcome::Processed);
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    for name in ["pipe", "pipe-link", "sock", "escape.lnk"] {
        assert_eq!(p.calls(name), 0, "{name} reached the processor");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_once_mode_with_one_worker_is_not_wedged_by_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Sorted first, so that the one worker meets the FIFO before the ordinary files.
    mkfifo(&d.join("0-pipe"));
    for i in 0..5 {
        write(d, &format!("f{i}.txt"), b"x");
    }
    let cfg = builder(d, Scripted::default())
        .mode(Mode::Once)
        .workers(1)
        .build()
        .unwrap();
    let w = Watcher::start(cfg).await.unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(10), w.finished()).await;
    let wedged = fifo_has_a_reader(&d.join("0-pipe"));
    assert!(!wedged, "the watcher opened the FIFO for reading");
    assert!(finished.is_ok(), "not finished: {:?}", w.metrics());
    w.close().await;
    assert_eq!((w.metrics().processed, w.metrics().failed), (5, 1));
}

/// Runs the CLI to its end, within `limit`; kills it (SIGKILL) and fails past that.
fn cli_within(limit: Duration, mut cmd: Command) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: our own child, not yet reaped (its waiter thread is still waiting).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "the CLI did not finish within {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn cli_once_over_odd_files_finishes_in_seconds_and_says_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let aside = tempfile::tempdir().unwrap();
    let d = dir.path();
    plant(d, outside.path());
    // The command records the path it was given (raw bytes), one per line.
    let log = aside.path().join("paths");
    let mut cmd = Command::new(BIN);
    cmd.arg(d)
        .args(["--once", "--workers", "1", "--", "sh", "-c"])
        .arg(format!(r#"printf '%s\n' "$1" >> '{}'"#, log.display()))
        .arg("sh");
    let out = cli_within(Duration::from_secs(20), cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    // Some failed: exit 1.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_special_files_refused(d);
    assert_not_utf8_processed(d);
    assert_eq!(status(d, "new\nline.txt").outcome, Outcome::Processed);
    // The command got the real path, bytes and all.
    let logged = std::fs::read(&log).unwrap();
    let mut want = d
        .join(OsStr::from_bytes(NOT_UTF8))
        .into_os_string()
        .into_vec();
    want.push(b'\n');
    assert!(
        logged.windows(want.len()).any(|w| w == want.as_slice()),
        "the command never got the name that is not UTF-8: {}",
        String::from_utf8_lossy(&logged)
    );
    assert!(err.contains("processed 4, failed 4"), "{err}");
}

use std::os::unix::ffi::OsStringExt;
