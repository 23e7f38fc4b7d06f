//! Helpers shared by the watcher's integration tests: a scripted processor and a builder with
//! short timings, where a file ended up, running the CLI, and waiting on a condition with a
//! deadline (never a sleep).
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use watcher::{Builder, Config, Outcome, ProcessError, Processor, ShutdownReport, Status, Watcher};

/// Behaviour chosen by the file's contents:
/// `bad…` permanent error, `panic…` panics, `hang…` never returns, `flaky…` retryable error on
/// the first two calls, anything else succeeds. Counts calls per file name.
#[derive(Clone, Default)]
pub struct Scripted {
    pub calls: Arc<Mutex<HashMap<String, u32>>>,
}

impl Scripted {
    pub fn calls(&self, name: &str) -> u32 {
        self.calls.lock().unwrap().get(name).copied().unwrap_or(0)
    }
    pub fn total_calls(&self) -> u32 {
        self.calls.lock().unwrap().values().sum()
    }
}

impl Processor for Scripted {
    async fn process(&self, path: &Path, contents: Vec<u8>) -> Result<(), ProcessError> {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let n = {
            let mut c = self.calls.lock().unwrap();
            let n = c.entry(name).or_default();
            *n += 1;
            *n
        };
        if contents.starts_with(b"bad") {
            Err(ProcessError::permanent("bad contents"))
        } else if contents.starts_with(b"panic") {
            panic!("boom in processor");
        } else if contents.starts_with(b"hang") {
            std::future::pending::<()>().await;
            unreachable!()
        } else if contents.starts_with(b"flaky") && n < 3 {
            Err(ProcessError::retryable(format!("flaky attempt {n}")))
        } else {
            Ok(())
        }
    }
}

/// A builder with short, test-friendly timings.
pub fn builder(dir: &Path, p: Scripted) -> Builder {
    Watcher::builder(dir)
        .debounce(Duration::from_millis(20))
        .retry_backoff(Duration::from_millis(1))
        .shutdown_timeout(Duration::from_secs(5))
        .fsync(false)
        .processor(p)
}

pub fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// Where `name` ended up: its outcome and status, asserting it is in exactly one place.
pub fn where_is(dir: &Path, name: &str) -> Option<(Outcome, Status)> {
    let mut found = Vec::new();
    for outcome in [Outcome::Processed, Outcome::Failed] {
        let d = dir.join(outcome.dir_name());
        if d.join(name).exists() {
            let s = Status::read(&watcher::status::status_path(&d.join(name)))
                .unwrap_or_else(|e| panic!("status of {name}: {e}"));
            assert_eq!(s.outcome, outcome);
            found.push((outcome, s));
        }
    }
    assert!(found.len() <= 1, "{name} is in both processed/ and failed/");
    if let Some(f) = found.pop() {
        assert!(!dir.join(name).exists(), "{name} is still in the inbox too");
        return Some(f);
    }
    None
}

pub fn status(dir: &Path, name: &str) -> Status {
    where_is(dir, name)
        .unwrap_or_else(|| panic!("{name} was not processed"))
        .1
}

pub const LONG: Duration = Duration::from_secs(20);

/// The watcher CLI that cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_watcher");

/// A command that runs the CLI with `args`.
pub fn cli_command<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    cmd
}

/// Runs `cmd` to its end: (exit code, stderr).
pub fn code_and_stderr(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI with `args` to its end: (exit code, stderr).
pub fn cli<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> (Option<i32>, String) {
    code_and_stderr(&mut cli_command(args))
}

/// Runs the CLI on `dir` with `args` to its end: (exit code, stderr).
pub fn cli_on<S: AsRef<OsStr>>(
    dir: &Path,
    args: impl IntoIterator<Item = S>,
) -> (Option<i32>, String) {
    code_and_stderr(cli_command([dir]).args(args))
}

/// Starts a watcher on `cfg`, waits (at most [`LONG`]) until it has finished its files, and
/// closes it: the watcher (for its metrics) and its shutdown report.
pub async fn run_to_end(cfg: Config) -> (Watcher, ShutdownReport) {
    let w = Watcher::start(cfg).await.unwrap();
    tokio::time::timeout(LONG, w.finished())
        .await
        .unwrap_or_else(|_| panic!("not finished: {:?}", w.metrics()));
    let report = w.close().await;
    (w, report)
}

/// Polls `cond` on this thread until it holds or `limit` passes (backing off from 50 µs to
/// 20 ms): whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_micros(50);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Yields to the runtime until `cond` holds or `limit` passes: whether it held.
pub async fn yield_until(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::task::yield_now().await;
    }
    true
}

/// Yields to the runtime until `cond` holds; panics after [`LONG`], naming `what`.
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    assert!(yield_until(LONG, cond).await, "timed out: {what}");
}

/// A process as `/proc/PID/stat` shows it: its state letter and start time (field 22), which
/// tells it apart from a later process that reuses the pid.
#[cfg(target_os = "linux")]
pub fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields[0].chars().next()?;
    let start = fields[19].parse().ok()?;
    Some((state, start))
}

/// Whether the process `pid` that started at `start` still runs (a zombie does not).
#[cfg(target_os = "linux")]
pub fn still_runs(pid: u32, start: u64) -> bool {
    matches!(proc_stat(pid), Some((state, s)) if s == start && state != 'Z' && state != 'X')
}
