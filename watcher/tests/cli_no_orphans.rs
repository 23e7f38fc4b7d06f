//! A command the watcher started never outlives it: a hung command that forks (`sh` running a
//! `sleep` in the background and waiting for it) is killed with its whole process group when
//! a SIGTERM's close runs out of budget, and the shutdown report names it.
#![cfg(target_os = "linux")]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{proc_stat, still_runs, wait_until, write, BIN};

/// The pids the hung command wrote: the `sh` and its background `sleep`.
fn read_pids(p: &Path) -> Option<(u32, u32)> {
    let s = std::fs::read_to_string(p).ok()?;
    let mut it = s.split_whitespace().map(|w| w.parse().unwrap());
    Some((it.next()?, it.next()?))
}

#[test]
fn sigterm_kills_a_hung_forking_command_and_its_children() {
    let inbox = tempfile::tempdir().unwrap();
    let aside = tempfile::tempdir().unwrap();
    write(inbox.path(), "hang.txt", b"x");
    let pids = aside.path().join("pids");
    // `sh` starts `sleep` in the background, says both pids (written whole by a rename), and
    // waits: a command that hangs and forks.
    let script = format!(
        r#"sleep 300 & echo "$$ $!" > '{p}.tmp' && mv '{p}.tmp' '{p}'; wait"#,
        p = pids.display()
    );
    let mut watcher = Command::new(BIN)
        .arg(inbox.path())
        .args(["--workers", "1", "--shutdown-timeout", "300ms", "--"])
        .args(["sh", "-c", &script, "sh"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = wait_until(Duration::from_secs(20), || pids.exists());
    if !started {
        let _ = watcher.kill();
    }
    assert!(started, "the command never started");
    let (sh, sleep) = read_pids(&pids).unwrap();
    let sh_start = proc_stat(sh).expect("sh runs").1;
    let sleep_start = proc_stat(sleep).expect("sleep runs").1;

    // SAFETY: our own child.
    unsafe { libc::kill(watcher.id() as libc::pid_t, libc::SIGTERM) };
    let (tx, rx) = mpsc::channel();
    let stderr = watcher.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
        let _ = tx.send(s);
    });
    let err = rx.recv_timeout(Duration::from_secs(20));
    let exited = wait_until(Duration::from_secs(5), || {
        matches!(watcher.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = watcher.kill();
    }
    let err = err.expect("the watcher's stderr never closed");
    assert!(exited, "the watcher did not exit after SIGTERM: {err}");

    // Nothing the command started is left running.
    let sh_gone = wait_until(Duration::from_secs(5), || !still_runs(sh, sh_start));
    let sleep_gone = wait_until(Duration::from_secs(5), || !still_runs(sleep, sleep_start));
    if !sleep_gone {
        // SAFETY: the leaked `sleep` this test started; end it so that it does not linger.
        unsafe { libc::kill(sleep as libc::pid_t, libc::SIGKILL) };
    }
    assert!(
        sh_gone,
        "the command (sh, pid {sh}) outlived the watcher: {err}"
    );
    assert!(
        sleep_gone,
        "the command's child (sleep, pid {sleep}) outlived the watcher: {err}"
    );

    // The report says which command it killed, and the file stays for the next run.
    assert!(err.contains("budget exhausted"), "{err}");
    assert!(
        err.lines().any(|l| l.contains("killed")
            && l.contains(&format!("process group {sh}"))
            && l.contains("hang.txt")),
        "the report does not name the killed command: {err}"
    );
    assert!(inbox.path().join("hang.txt").exists());
}

/// A command that exits at once but leaves a job running in the background (`sleep 300 &`):
/// the job goes with it (its process group is killed as the command is reaped), and the
/// watcher does not wait on the job's hold of the command's stderr pipe. Before, the job
/// outlived the watcher and each file took as long as the job. Control: the job was running
/// while the command ran (it wrote its pid, and the pid was alive then).
#[test]
fn a_command_that_leaves_a_job_behind_takes_it_along() {
    let inbox = tempfile::tempdir().unwrap();
    let aside = tempfile::tempdir().unwrap();
    let pids = aside.path().join("pids");
    for f in ["a.txt", "b.txt"] {
        write(inbox.path(), f, b"x");
    }
    // Each run starts a background sleep, records its pid and start time, and exits 0.
    let script = format!(
        r#"sleep 300 & p=$!; echo "$p $(cut -d' ' -f22 /proc/$p/stat)" >> '{}'"#,
        pids.display()
    );
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .arg(inbox.path())
        .args(["--once", "--workers", "2", "--", "sh", "-c", &script, "sh"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        let _ = tx.send(s);
    });
    let finished = wait_until(Duration::from_secs(30), || {
        child.try_wait().unwrap().is_some()
    });
    if !finished {
        let _ = child.kill();
    }
    let err = rx.recv().unwrap_or_default();
    assert!(finished, "the watcher waited on the jobs: {err}");
    assert_eq!(child.wait().unwrap().code(), Some(0), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let jobs: Vec<(u32, u64)> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace().map(|w| w.parse::<u64>().unwrap());
            (w.next().unwrap() as u32, w.next().unwrap())
        })
        .collect();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    for (pid, start) in jobs {
        let gone = wait_until(Duration::from_secs(10), || !still_runs(pid, start));
        if !gone {
            // SAFETY: a pid this test's command started; do not leave it behind.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        assert!(gone, "the job {pid} outlived its command and the watcher");
    }
}
