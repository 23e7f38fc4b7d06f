//! The CLI's options that map to builder settings: each bad value exits with status 2 and a
//! message naming the option; good values reach the watcher.
mod common;

use common::{cli_on, status, write};
use watcher::Outcome;

/// Runs the CLI on `dir` with `args` and `-- true`: (exit code, stderr).
fn run(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    cli_on(dir, args.iter().chain(&["--", "true"]))
}

#[test]
fn every_bad_value_exits_2_naming_its_option() {
    let dir = tempfile::tempdir().unwrap();
    // (option, value, what the message must also say). Out-of-range values carry the
    // builder's own words: field, value and allowed range.
    let cases: &[(&str, &str, &str)] = &[
        ("--debounce", "soon", "invalid value"),
        (
            "--debounce",
            "1ms",
            "debounce = 1ms is out of range (allowed: 10ms ..= 5s)",
        ),
        (
            "--debounce",
            "6s",
            "debounce = 6s is out of range (allowed: 10ms ..= 5s)",
        ),
        ("--debounce", "-1", "invalid value"),
        ("--max-file-size", "big", "invalid value"),
        ("--max-file-size", "12X", "invalid value"),
        (
            "--max-file-size",
            "0",
            "max_file_size = 0 bytes is out of range (allowed: 1 bytes ..= 1073741824 bytes)",
        ),
        (
            "--max-file-size",
            "2G",
            "max_file_size = 2147483648 bytes is out of range",
        ),
        ("--retries", "-1", "invalid value"),
        ("--retries", "many", "invalid value"),
        (
            "--retries",
            "101",
            "retries = 101 is out of range (allowed: 0 ..= 100)",
        ),
        ("--shutdown-timeout", "never", "invalid value"),
        (
            "--shutdown-timeout",
            "0s",
            "shutdown_timeout = 0s is out of range (allowed: 1ms ..= 10m)",
        ),
        (
            "--shutdown-timeout",
            "11m",
            "shutdown_timeout = 11m is out of range",
        ),
        ("--workers", "0", "workers = 0 is out of range"),
        ("--no-fsync", "--no-fsync", "cannot be used multiple times"),
    ];
    for (flag, value, says) in cases {
        let arg = format!("{flag}={value}");
        let args: Vec<&str> = if flag == value {
            vec![flag, value]
        } else {
            vec![&arg]
        };
        let (code, err) = run(dir.path(), &args);
        assert_eq!(code, Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(flag),
            "{flag} {value}: the message names no option: {err}"
        );
        assert!(
            err.contains(says),
            "{flag} {value}: expected {says:?} in: {err}"
        );
    }
    // Nothing was started on the directory for any of them.
    assert!(!dir.path().join("processed").exists());
}

#[test]
fn max_file_size_accepts_units_and_reaches_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "small.txt", &[b'x'; 1024]);
    write(dir.path(), "large.txt", &[b'x'; 1025]);
    let (code, err) = run(dir.path(), &["--once", "--max-file-size", "1K"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(status(dir.path(), "small.txt").outcome, Outcome::Processed);
    let s = status(dir.path(), "large.txt");
    assert_eq!(s.outcome, Outcome::Failed);
    assert_eq!(
        s.error.as_deref(),
        Some("file too large: 1025 bytes exceeds max_file_size of 1024 bytes")
    );
}

#[test]
fn good_values_of_every_option_run() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"x");
    let (code, err) = run(
        dir.path(),
        &[
            "--once",
            "--debounce",
            "20ms",
            "--retries",
            "0",
            "--shutdown-timeout",
            "1.5",
            "--no-fsync",
            "--max-file-size",
            "4096",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(status(dir.path(), "a.txt").outcome, Outcome::Processed);
}

/// A command that exits 75 (EX_TEMPFAIL) on its first `fails` runs for a file, then 0; each
/// run appends a line to `<file>.runs` in `aside`.
fn tempfail_script(aside: &std::path::Path, fails: u32) -> String {
    format!(
        r#"log='{}'/$(basename "$1").runs; echo run >> "$log"; [ $(wc -l < "$log") -gt {fails} ] || {{ echo busy >&2; exit 75; }}"#,
        aside.display()
    )
}

#[test]
fn exit_75_is_retried_up_to_retries_times() {
    let dir = tempfile::tempdir().unwrap();
    let aside = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"x");
    // Fails twice, then succeeds: within 3 retries.
    let script = tempfail_script(aside.path(), 2);
    let (code, err) = cli_on(
        dir.path(),
        ["--once", "--retries", "3", "--", "sh", "-c", &script, "sh"],
    );
    assert_eq!(code, Some(0), "{err}");
    let s = status(dir.path(), "a.txt");
    assert_eq!((s.outcome, s.attempts), (Outcome::Processed, 3), "{s:?}");

    // Fails twice, but only one retry is allowed: failed after 2 attempts.
    write(dir.path(), "b.txt", b"x");
    let (code, err) = cli_on(
        dir.path(),
        ["--once", "--retries", "1", "--", "sh", "-c", &script, "sh"],
    );
    assert_eq!(code, Some(1), "{err}");
    let s = status(dir.path(), "b.txt");
    assert_eq!((s.outcome, s.attempts), (Outcome::Failed, 2), "{s:?}");
    assert_eq!(
        s.error.as_deref(),
        Some("gave up after 2 attempts: sh exited with exit status: 75: busy")
    );
    assert!(
        err.lines()
            .any(|l| l == "failed b.txt (attempt 2/2): gave up after 2 attempts: sh exited with exit status: 75: busy"),
        "{err}"
    );
}

/// A command that is not in `PATH` is an error at start (exit 2, naming it), not a failure of
/// every file: nothing is moved. The control: the same inbox with a command that is there runs.
#[test]
fn a_command_not_in_path_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"x");
    let (code, err) = cli_on(
        dir.path(),
        ["--once", "--", "no-such-command-anywhere", "-x"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        "watcher: no-such-command-anywhere: command not found in PATH (a command with a / in it is taken as a path)"
    );
    assert!(dir.path().join("a.txt").exists(), "the file stays");
    assert!(
        !dir.path().join("failed").exists(),
        "nothing ran, nothing failed"
    );
    let (code, err) = run(dir.path(), &["--once"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(status(dir.path(), "a.txt").outcome, Outcome::Processed);
}
