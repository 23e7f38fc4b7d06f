//! Orphaned descendants: a daemon a child leaves behind is adopted while the check runs and
//! named `(orphaned)`; a child that reaps its own daemon, and a daemon that ends by itself,
//! are clean; the user's own children are never reaped by the harness; the subreaper setting
//! is back as it was after the check.
//!
//! Children are counted process-wide: each test runs in a process of its own.
#![cfg(target_os = "linux")]

use std::process::{Command, Stdio};
use std::time::Duration;

use leakcheck::{LeakCheck, Resource, Verdict};

const BUDGET: Duration = Duration::from_secs(2);

fn sh(script: &str) {
    let status = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn subreaper() -> i32 {
    let mut on: libc::c_int = -1;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes an int through the pointer.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut on) },
        0
    );
    on
}

/// Kills and reaps this process's children running `command` (the adopted daemons a test
/// planted), so that none outlives the test.
fn kill_children(command: &str) -> usize {
    let mut killed = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == command {
                // SAFETY: a child of ours, killed and reaped once.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                killed += 1;
            }
        }
    }
    killed
}

#[leakcheck::isolated]
fn a_daemon_left_by_a_child_is_named_orphaned() {
    let before = subreaper();
    let result = LeakCheck::new()
        .cycles(4)
        .settle(Duration::from_millis(100))
        .run(|| sh("sleep 30 &"));
    // Warm-up and 4 cycles each left one daemon behind.
    assert_eq!(kill_children("sleep"), 5);
    let leak = result.unwrap_err();
    let report = leak.report();
    assert_eq!(report.leaked(Resource::Children), 4, "{report}");
    assert_eq!(
        report.items(Resource::Children),
        [("sleep (orphaned)".to_owned(), 4)],
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.contains("children +4 (+1.00/cycle)\n           ×4   \"sleep\" (orphaned)"),
        "{text}"
    );
    assert_eq!(subreaper(), before);
}

#[leakcheck::isolated]
fn a_child_that_reaps_its_own_daemon_is_clean() {
    let report = LeakCheck::new()
        .cycles(4)
        .settle(BUDGET)
        .run(|| sh("sleep 0.01 & wait"))
        .unwrap();
    assert_eq!(report.verdict(Resource::Children), Some(&Verdict::Clean));
}

#[leakcheck::isolated]
fn a_daemon_that_ends_by_itself_is_adopted_reaped_and_clean() {
    let during = std::sync::atomic::AtomicI32::new(-1);
    let report = LeakCheck::new()
        .cycles(4)
        .settle(BUDGET)
        .run(|| {
            during.store(subreaper(), std::sync::atomic::Ordering::SeqCst);
            sh("true &");
        })
        .unwrap();
    assert_eq!(
        report.verdict(Resource::Children),
        Some(&Verdict::Clean),
        "{report}"
    );
    // The process was a subreaper while the body ran, and is not after.
    assert_eq!(during.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(subreaper(), 0);
    // Nothing adopted is left, not even a zombie: the harness reaped the daemons as they
    // ended.
    assert_eq!(kill_children("true"), 0);
}

#[leakcheck::isolated]
fn the_users_own_children_are_never_reaped() {
    let mut kept = Vec::new();
    let line = line!() + 3;
    let leak = LeakCheck::new()
        .settle(Duration::from_millis(100))
        .run(|| kept.push(Command::new("true").spawn().unwrap()))
        .unwrap_err();
    // An exited child nobody waited for: a leaked zombie, not an orphan (named by where it was
    // spawned, with feature `origins`).
    let site = match cfg!(origins) {
        true => format!(" spawned at {}:{line}", file!()),
        false => String::new(),
    };
    assert_eq!(
        leak.report().items(Resource::Children),
        [(format!("true{site}"), 1)],
        "{leak}"
    );
    // Its exit status is still there for the code that owns it.
    for mut child in kept {
        assert!(child.wait().unwrap().success());
    }
}
