//! No command outlives the next start: the CLI is killed with SIGKILL while commands hang (each
//! a `sh` waiting on a `sleep` it forked, so a group of two), on files with odd names. The
//! crash leaves the groups running; the restart ends them (SIGTERM to each group) before their
//! files run again, names them on stderr, and runs each of those files once more, marked
//! `interrupted: true`. The negative control: a record whose pid is alive but belongs to
//! another process (another start time, or another boot) is never signalled, beside a record of
//! the right process, which is.
#![cfg(target_os = "linux")]
mod common;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{cli_on, proc_stat, still_runs, wait_until, BIN};
use watcher::status::{status_path, Status};

/// The records file in the watched directory (see `store/groups.rs`).
const GROUPS_FILE: &str = ".watcher-groups";

/// The files of the crash test: (name, contents); a file's contents name it in the logs, so
/// that the shell never handles the odd names itself.
fn files() -> Vec<(&'static [u8], &'static str)> {
    vec![
        (b"a b.txt", "hang1"),
        (b"new\nline.txt", "hang2"),
        (b"bad\xffname.txt", "hang3"),
        (b"plain.txt", "ok1"),
    ]
}

/// First run's command: log the contents; on a `hang*` file, fork a `sleep`, write both pids
/// (`sh` and `sleep`) to `AS/<contents>.pids` (whole, by a rename), and wait for ever.
fn hanging(aside: &Path) -> String {
    format!(
        r#"c=$(cat "$1"); echo "$c" >> '{a}/run1.log'; case $c in hang*) sleep 1000 & echo "$$ $!" > '{a}/'"$c.tmp" && mv '{a}/'"$c.tmp" '{a}/'"$c.pids"; wait;; esac"#,
        a = aside.display()
    )
}

/// The restart's command: log the contents and the state, now, of the `sh` that hung on the
/// same file in the first run (empty when it is gone, `Z` for a zombie).
fn logging(aside: &Path) -> String {
    format!(
        r#"c=$(cat "$1"); st=; if [ -f '{a}/'"$c.pids" ]; then read sh rest < '{a}/'"$c.pids"; st=$(sed 's/.*) //' /proc/$sh/stat 2>/dev/null | cut -d' ' -f1); fi; echo "$c $st" >> '{a}/run2.log'"#,
        a = aside.display()
    )
}

fn lines(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

fn pids(p: &Path) -> Option<(u32, u32)> {
    let s = std::fs::read_to_string(p).ok()?;
    let mut it = s.split_whitespace().map(|w| w.parse().unwrap());
    Some((it.next()?, it.next()?))
}

/// The records still in `dir`'s records file (blank slots left out).
fn records_in(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(GROUPS_FILE))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn kill_9_during_hung_commands_then_a_restart_ends_their_groups_and_runs_each_file_once() {
    let inbox = tempfile::tempdir().unwrap();
    let aside = tempfile::tempdir().unwrap();
    let (dir, a) = (inbox.path(), aside.path());
    for (name, contents) in files() {
        std::fs::write(dir.join(OsStr::from_bytes(name)), contents).unwrap();
    }
    let hung = ["hang1", "hang2", "hang3"];

    // First run: four workers, so the three hanging files hang at once while the fourth is
    // processed.
    let mut first = Command::new(BIN)
        .arg(dir)
        .args(["--workers", "4", "--"])
        .args(["sh", "-c", &hanging(a), "sh"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let all_hang = wait_until(Duration::from_secs(30), || {
        hung.iter().all(|c| a.join(format!("{c}.pids")).exists())
            && dir.join("processed/plain.txt").exists()
    });
    // SAFETY: our own child: the crash.
    unsafe { libc::kill(first.id() as libc::pid_t, libc::SIGKILL) };
    first.wait().unwrap();
    assert!(
        all_hang,
        "not every command hung: {:?}",
        lines(&a.join("run1.log"))
    );

    // What the crash left running: each `sh` and its `sleep`, with their start times.
    let mut left = HashMap::new();
    for c in hung {
        let (sh, sleep) = pids(&a.join(format!("{c}.pids"))).unwrap();
        let (sh_start, sleep_start) = (proc_stat(sh).unwrap().1, proc_stat(sleep).unwrap().1);
        assert!(still_runs(sh, sh_start) && still_runs(sleep, sleep_start));
        left.insert(c, [(sh, sh_start), (sleep, sleep_start)]);
    }
    assert_eq!(records_in(dir).len(), 3, "one record per hanging command");
    let end_all = |left: &HashMap<&str, [(u32, u64); 2]>| {
        for &(pid, start) in left.values().flatten() {
            if still_runs(pid, start) {
                // SAFETY: a process this test's commands started; end it so it does not linger.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    };

    // The restart.
    let (code, err) = cli_on(
        dir,
        [
            "--once",
            "--workers",
            "3",
            "--shutdown-timeout",
            "5s",
            "--",
            "sh",
            "-c",
            &logging(a),
            "sh",
        ],
    );
    let gone: Vec<_> = left
        .values()
        .flatten()
        .filter(|&&(pid, start)| still_runs(pid, start))
        .collect();
    end_all(&left);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        gone.is_empty(),
        "left running after the restart: {gone:?}\n{err}"
    );
    for c in hung {
        let sh = left[c][0].0;
        assert!(
            err.contains(&format!(
                "ended process group {sh} (leader pid {sh}, started at tick {}), left running by an earlier watcher",
                left[c][0].1
            )),
            "{c}: the group of sh {sh} is not named:\n{err}"
        );
    }
    assert!(err.contains(r#"on "a b.txt" (run "#), "{err}");
    assert_eq!(err.matches("it exited on SIGTERM").count(), 3, "{err}");

    // Each hanging file ran once more, after its old command was gone; the other one ran once.
    assert_eq!(
        lines(&a.join("run1.log")),
        ["hang1", "hang2", "hang3", "ok1"]
    );
    let run2 = lines(&a.join("run2.log"));
    assert_eq!(run2.len(), 3, "{run2:?}");
    for (line, c) in run2.iter().zip(hung) {
        let state = line.strip_prefix(c).map(str::trim);
        assert!(
            matches!(state, Some("" | "Z")),
            "{c} ran again while its old command was there: {line:?}"
        );
    }

    // Every file is in processed/ once, with its status; the hanging ones marked interrupted.
    let processed = dir.join("processed");
    let mut moved = HashMap::new();
    for e in std::fs::read_dir(&processed).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".status.json") {
            continue;
        }
        let contents = std::fs::read_to_string(&p).unwrap();
        let status = Status::read(&status_path(&p)).unwrap();
        assert!(
            moved.insert(contents.clone(), status).is_none(),
            "{contents} twice"
        );
    }
    assert_eq!(moved.len(), files().len(), "{:?}", moved.keys());
    for (name, contents) in files() {
        assert!(
            !dir.join(OsStr::from_bytes(name)).exists(),
            "{contents} left in the inbox"
        );
        let interrupted = moved[contents].interrupted;
        assert_eq!(
            interrupted,
            contents != "ok1",
            "{contents}: {:?}",
            moved[contents]
        );
    }
    assert!(records_in(dir).is_empty(), "{:?}", records_in(dir));
}

/// A process in a group of its own, as a command of the watcher would be.
fn grouped_sleep() -> std::process::Child {
    Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap()
}

#[test]
fn a_recorded_pid_that_is_another_process_now_is_never_signalled() {
    let inbox = tempfile::tempdir().unwrap();
    let dir = inbox.path();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let boot = boot.trim();
    // `unrelated` stands for a process that got a recorded pid after the command that had it
    // was gone: its start time is not the recorded one (and, in a second record, its boot is
    // another). `twin` is recorded as it is: the control, which must be ended.
    let mut unrelated = grouped_sleep();
    let mut twin = grouped_sleep();
    let (u, t) = (unrelated.id(), twin.id());
    let (u_start, t_start) = (proc_stat(u).unwrap().1, proc_stat(t).unwrap().1);
    std::fs::write(
        dir.join(GROUPS_FILE),
        format!(
            "{u} {} {boot} 1\n{u} {u_start} 00000000-0000-0000-0000-000000000000 2\n{t} {t_start} {boot} 3\n",
            u_start + 1
        ),
    )
    .unwrap();

    let (code, err) = cli_on(dir, ["--once", "--shutdown-timeout", "5s", "--", "true"]);
    let twin_ended = wait_until(Duration::from_secs(1), || {
        matches!(twin.try_wait(), Ok(Some(_)))
    });
    let unrelated_runs = still_runs(u, u_start);
    let _ = unrelated.kill();
    let _ = twin.kill();
    let _ = unrelated.wait();
    let twin_status = twin.wait().unwrap();

    assert_eq!(code, Some(0), "{err}");
    assert!(unrelated_runs, "the unrelated process was killed:\n{err}");
    assert!(
        !err.contains(&format!("process group {u} ")),
        "the unrelated process is named:\n{err}"
    );
    assert!(twin_ended, "the recorded group was not ended:\n{err}");
    assert_eq!(twin_status.signal(), Some(libc::SIGTERM), "{err}");
    assert!(
        err.contains(&format!(
            "ended process group {t} (leader pid {t}, started at tick {t_start}), left running by an earlier watcher (run 3): it exited on SIGTERM"
        )),
        "{err}"
    );
    assert!(!dir.join(GROUPS_FILE).exists(), "the records are cleared");

    // Nothing recorded any more: the next start says nothing of groups.
    let (code, err) = cli_on(dir, ["--once", "--", "true"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("process group"), "{err}");
}
