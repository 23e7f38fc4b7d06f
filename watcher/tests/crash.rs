//! A real crash: the CLI is killed with SIGKILL while a file is in flight. On restart that
//! file runs again (its status says the earlier run was interrupted) and every other file has
//! run exactly once.
#![cfg(unix)]

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use watcher::status::Status;

const FILES: [&str; 5] = ["a.txt", "b.txt", "c.txt", "hang.txt", "z.txt"];

/// The per-file command: log the call; with a FIFO, on `hang.txt`, write its pid to `pid`, tell
/// the test it has started (the write blocks until the test reads) and then hang.
fn command(log: &Path, hang: Option<(&Path, &Path)>) -> Vec<String> {
    let mut script = format!(r#"echo "$(basename "$1")" >> '{}'"#, log.display());
    if let Some((fifo, pid)) = hang {
        script += &format!(
            r#"; if [ "$(basename "$1")" = hang.txt ]; then echo $$ > '{}'; echo started > '{}'; exec sleep 600; fi"#,
            pid.display(),
            fifo.display()
        );
    }
    vec!["sh".into(), "-c".into(), script, "sh".into()]
}

fn calls(log: &Path) -> HashMap<String, usize> {
    let mut calls = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *calls.entry(line.to_owned()).or_default() += 1;
    }
    calls
}

#[test]
fn kill_9_mid_file_reruns_only_the_file_in_flight() {
    let inbox = tempfile::tempdir().unwrap();
    let aside = tempfile::tempdir().unwrap();
    let (log, fifo) = (aside.path().join("calls.log"), aside.path().join("started"));
    let hung_pid = aside.path().join("hung.pid");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for f in FILES {
        std::fs::write(inbox.path().join(f), f.as_bytes()).unwrap();
    }

    // First run: one worker, so nothing but the hanging file is in flight when it dies.
    let mut first = Command::new(env!("CARGO_BIN_EXE_watcher"))
        .arg(inbox.path())
        .args(["--workers", "1", "--"])
        .args(command(&log, Some((&fifo, &hung_pid))))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let reader_fifo = fifo.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::fs::File::open(reader_fifo).and_then(|mut f| f.read_to_string(&mut s));
        let _ = tx.send(s);
    });
    let started = rx.recv_timeout(Duration::from_secs(60));
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", first.id())])
        .status()
        .unwrap();
    assert_eq!(
        started.as_deref().map(str::trim),
        Ok("started"),
        "hang.txt never started"
    );
    assert!(killed.success());
    assert!(!first.wait().unwrap().success());
    // The watcher runs each command in a process group of its own, so the kill above does not
    // reach it, and a SIGKILLed watcher can reap nothing: end the hanging command here.
    if let Ok(pid) = std::fs::read_to_string(&hung_pid) {
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
    }
    assert!(
        inbox.path().join("hang.txt").exists(),
        "the file in flight stays in the inbox"
    );

    // Restart: everything left runs, the interrupted file once more.
    let second = Command::new(env!("CARGO_BIN_EXE_watcher"))
        .arg(inbox.path())
        .args(["--once", "--workers", "1", "--"])
        .args(command(&log, None))
        .output()
        .unwrap();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    let calls = calls(&log);
    for f in FILES {
        let status = Status::read(
            &inbox
                .path()
                .join("processed")
                .join(format!("{f}.status.json")),
        )
        .unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!inbox.path().join(f).exists(), "{f} left in the inbox");
        if f == "hang.txt" {
            assert_eq!(calls[f], 2, "the file in flight runs again");
            assert!(status.interrupted, "{status:?}");
        } else {
            assert_eq!(calls[f], 1, "{f} ran once: {calls:?}");
            assert!(!status.interrupted, "{status:?}");
        }
    }
}
