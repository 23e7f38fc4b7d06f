//! A command the watcher started never outlives it: a processor's hung command that forks
//! (`sh` waiting on a background `sleep`), started as a `GroupChild`, is killed with its whole
//! process group when close runs out of budget or the watcher is dropped; its `sh` is reaped
//! (the harness counts this process's children, running or zombie) and its `sleep` is gone
//! (read from /proc). Negative control: the same command spawned the usual way (tokio's
//! `kill_on_drop`) leaves its `sleep` running.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use leakcheck::{LeakCheck, Resource, Verdict};
use tokio::runtime::Handle;
use watcher::child::GroupChild;
use watcher::{processor, Mode, ProcessError, Watcher};

/// The hung command: `sh` starts `sleep` in the background, writes `<file>.pids` ("SH SLEEP",
/// whole, by a rename) next to nothing else, and waits.
fn hung_command(pids: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            r#"sleep 300 & echo "$$ $!" > '{p}.tmp' && mv '{p}.tmp' '{p}'; wait"#,
            p = pids.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// `/proc/PID/stat`: state letter and start time (tells a reused pid apart).
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some((f[0].chars().next()?, f[19].parse().ok()?))
}

fn still_runs(pid: u32, start: u64) -> bool {
    matches!(proc_stat(pid), Some((state, s)) if s == start && state != 'Z' && state != 'X')
}

/// Awaits `cond` until it holds or `limit` passes.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_micros(50);
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    true
}

/// The `sleep` the command started, once it runs: (pid, start time).
async fn started_sleep(pids: &Path) -> (u32, u64) {
    assert!(
        until(Duration::from_secs(20), || pids.exists()).await,
        "the command never started"
    );
    let s = std::fs::read_to_string(pids).unwrap();
    let sleep: u32 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    (sleep, proc_stat(sleep).expect("sleep runs").1)
}

/// A watcher of `dir` (one worker, 200 ms budget) whose processor runs the hung command, as a
/// `GroupChild` or (`grouped` false, the control) with plain `kill_on_drop`.
async fn start(dir: &Path, pids: PathBuf, grouped: bool) -> Watcher {
    let cfg = Watcher::builder(dir)
        .mode(Mode::Watch)
        .workers(1)
        .debounce(Duration::from_millis(10))
        .shutdown_timeout(Duration::from_millis(200))
        .fsync(false)
        .processor(processor::from_fn(move |_, _| {
            let mut cmd = hung_command(&pids);
            async move {
                if grouped {
                    let mut child = GroupChild::spawn(&mut cmd, "sh (hung)").unwrap();
                    child.wait().await.unwrap();
                } else {
                    cmd.kill_on_drop(true).status().await.unwrap();
                }
                Err::<(), _>(ProcessError::permanent("the hung command ended"))
            }
        }))
        .build()
        .unwrap();
    Watcher::start(cfg).await.unwrap()
}

/// One cycle: a hung command, stopped by a close out of budget or by a drop; returns the
/// `sleep` it started.
async fn cycle(close: bool, grouped: bool) -> (u32, u64) {
    let inbox = tempfile::tempdir().unwrap();
    let aside = tempfile::tempdir().unwrap();
    let pids = aside.path().join("pids");
    std::fs::write(inbox.path().join("hang.txt"), b"x").unwrap();
    let w = start(inbox.path(), pids.clone(), grouped).await;
    let sleep = started_sleep(&pids).await;
    if close {
        let r = w.close().await;
        assert!(r.budget_exhausted, "{r}");
        assert_eq!(r.handed_back, vec![w.dir().join("hang.txt")], "{r}");
        if grouped {
            assert_eq!(r.killed.len(), 1, "{r}");
            let k = &r.killed[0];
            assert_eq!(
                (k.command.as_str(), k.file.as_path(), k.reaped),
                ("sh (hung)", w.dir().join("hang.txt").as_path(), true),
                "{r}"
            );
            assert!(r.to_string().contains(&format!(
                "killed: sh (hung) (process group {}) processing {}",
                k.pid,
                w.dir().join("hang.txt").display()
            )));
        } else {
            assert!(r.killed.is_empty(), "{r}");
        }
    } else {
        drop(w);
    }
    sleep
}

/// Children, threads, fds and tasks; the runtime's own threads (its blocking pool reads inbox
/// files) are not the watcher's.
fn check() -> LeakCheck {
    LeakCheck::new()
        .ignore_thread("tokio-rt-worker")
        .warmup(1)
        .cycles(2)
        .settle(Duration::from_secs(2))
        .tasks(&Handle::current())
}

async fn no_process_left(close: bool) {
    let sleeps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let report = check()
        .run_async(|| {
            let sleeps = sleeps.clone();
            async move {
                let sleep = cycle(close, true).await;
                sleeps.lock().unwrap().push(sleep);
            }
        })
        .await
        .unwrap();
    assert_eq!(
        report.verdict(Resource::Children),
        Some(&Verdict::Clean),
        "{report}"
    );
    let sleeps = std::mem::take(&mut *sleeps.lock().unwrap());
    assert_eq!(sleeps.len(), 3, "warm-up and two cycles");
    for (pid, start) in sleeps {
        assert!(
            until(Duration::from_secs(5), || !still_runs(pid, start)).await,
            "the command's sleep (pid {pid}) outlived its watcher"
        );
    }
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn close_out_of_budget_kills_and_reaps_the_commands_group() {
    no_process_left(true).await;
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn drop_without_close_kills_and_reaps_the_commands_group() {
    no_process_left(false).await;
}

/// The control: without a group of its own, only `sh` is killed; its `sleep` lives on (and
/// is ended here).
#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn control_kill_on_drop_alone_leaves_the_sleep_running() {
    let (pid, start) = cycle(true, false).await;
    let outlived = !until(Duration::from_millis(500), || !still_runs(pid, start)).await;
    if still_runs(pid, start) {
        // SAFETY: the `sleep` this test's command started; nothing else has its pid and start.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    assert!(
        outlived,
        "the control's sleep ended: the test could not see a leak"
    );
}
