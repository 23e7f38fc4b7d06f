//! The CLI: exit codes, outcome per file, stderr tail in the status, SIGTERM, the progress bar.
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cli, cli_on, status, wait_until, write, BIN};
use watcher::Outcome;

#[test]
fn once_all_processed_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"x");
    write(dir.path(), "b.txt", b"x");
    let (code, err) = cli_on(dir.path(), ["--once", "--workers", "1", "--", "true"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(status(dir.path(), "a.txt").outcome, Outcome::Processed);
    assert!(err.contains("shutdown report"), "{err}");
    assert!(err.contains("processed 2, failed 0"), "{err}");
}

#[test]
fn once_some_failed_exits_1_with_stderr_tail_in_status() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.txt", b"ok");
    write(dir.path(), "bad.txt", b"bad");
    // The command fails (with a message) for files whose contents are "bad".
    let script =
        r#"if grep -q bad "$1"; then echo "cannot handle $(basename "$1")" >&2; exit 3; fi"#;
    let (code, err) = cli_on(
        dir.path(),
        [
            "--once",
            "--pattern",
            "*.txt",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(status(dir.path(), "good.txt").outcome, Outcome::Processed);
    let s = status(dir.path(), "bad.txt");
    assert_eq!(s.outcome, Outcome::Failed);
    assert_eq!(
        s.error.as_deref(),
        Some("sh exited with exit status: 3: cannot handle bad.txt")
    );
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| cli(args);
    let d = dir.path().to_str().unwrap();
    // No command.
    let (code, err) = run(&[d, "--once"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CMD"), "{err}");
    // Out-of-range workers.
    let (code, err) = run(&[d, "--workers", "0", "--", "true"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("workers = 0 is out of range"), "{err}");
    // Poll period out of range.
    let (code, err) = run(&[d, "--poll", "0.01", "--", "true"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("poll = 10ms is out of range (allowed: 100ms ..= 1h)"),
        "{err}"
    );
    let (code, err) = run(&[d, "--poll", "-1", "--", "true"]);
    assert_eq!(code, Some(2), "{err}");
    // Missing directory.
    let missing = dir.path().join("missing");
    let (code, err) = run(&[missing.to_str().unwrap(), "--", "true"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("does not exist"), "{err}");
    // --once and --poll conflict.
    let (code, _) = run(&[d, "--once", "--poll", "1", "--", "true"]);
    assert_eq!(code, Some(2));
}

#[test]
fn sigterm_closes_gracefully_and_prints_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .arg(dir.path())
        .args(["--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the watcher is up (its lock file is the first thing it creates; a file
    // dropped after that is found by its first scan or by its events).
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = wait_until(Duration::from_secs(20), || {
        dir.path().join(watcher::LOCK_FILE).exists()
    });
    assert!(started, "watcher did not start");
    write(dir.path(), "late.txt", b"x");
    // Wait until it has processed the file, then stop it.
    let processed = wait_until(deadline.saturating_duration_since(Instant::now()), || {
        dir.path().join("processed/late.txt").exists()
    });
    assert!(processed, "file not processed");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("shutdown report"), "{err}");
    assert!(err.contains("Intake") && err.contains("Workers") && err.contains("Background"));
    assert!(err.contains("processed 1, failed 0"), "{err}");
}

#[test]
fn unreadable_directory_exits_2_with_the_reason() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Traversable by anyone, so that only the watched directory itself is unreadable.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads a mode-000 directory anyway: run the CLI as an unprivileged user then, from a
    // copy in the traversable temp dir (the checkout may be out of that user's reach).
    // SAFETY: geteuid cannot fail.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let bin = dir.path().join("watcher-bin");
        std::fs::copy(BIN, &bin).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin);
        c
    } else {
        Command::new(BIN)
    };
    let out = cmd
        .arg(&locked)
        .args(["--once", "--", "true"])
        .output()
        .unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "directory {} is not readable: Permission denied",
            locked.display()
        )),
        "{err}"
    );
}

#[test]
fn once_shows_a_progress_bar_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..30 {
        write(dir.path(), &format!("f{i}.txt"), b"x");
    }
    // `script` (util-linux) runs the CLI with a pseudo-terminal as its stderr.
    let shell_quoted = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let cmdline = format!(
        "{} {} --once -- true",
        shell_quoted(BIN),
        shell_quoted(&dir.path().display().to_string())
    );
    let in_pty = |cmdline: &str| {
        Command::new("script")
            .args(["-qec", cmdline, "/dev/null"])
            .stdin(Stdio::null())
            .output()
    };
    // Without util-linux's `script` or a pty to give it, there is nothing to test here.
    match in_pty("true") {
        Ok(out) if out.status.success() => {}
        probe => {
            eprintln!("skipped: `script` cannot run a command on a pseudo-terminal: {probe:?}");
            return;
        }
    }
    let on_tty = in_pty(&cmdline).unwrap();
    let tty = String::from_utf8_lossy(&on_tty.stdout);
    assert_eq!(on_tty.status.code(), Some(0), "{tty}");
    // Drawn (then cleared before the report), in the template's words.
    assert!(
        tty.contains(" files ("),
        "no progress bar on a terminal: {tty}"
    );
    assert!(tty.contains("processed 30, failed 0"), "{tty}");

    // Not on a pipe: only the report.
    for i in 0..30 {
        write(dir.path(), &format!("g{i}.txt"), b"x");
    }
    let (code, err) = cli_on(dir.path(), ["--once", "--", "true"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains(" files ("), "a progress bar on a pipe: {err}");
    assert!(err.contains("processed 30, failed 0"), "{err}");
}
