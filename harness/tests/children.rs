//! Child processes: a running child or a zombie left per cycle is caught and counted exactly,
//! named by command and state; children that are waited for, killed and waited for, or reaped
//! later by a thread are clean. The harness never reaps or kills: each test cleans up its own
//! planted children. Children are process-wide: each test runs in a process of its own.
#![cfg(target_os = "linux")]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leakcheck::{LeakCheck, Resource, Verdict};

const BUDGET: Duration = Duration::from_millis(150);

fn check(cycles: usize) -> LeakCheck {
    LeakCheck::new().cycles(cycles).settle(BUDGET)
}

/// Where `spawn` spawns, as a report says it.
fn site() -> String {
    format!("spawned at {}:{SPAWN_LINE}", file!())
}

/// The line of the spawn in `spawn`.
const SPAWN_LINE: u32 = line!() + 8;

fn spawn(cmd: &str, args: &[&str]) -> Child {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Blocks until `child` has exited, without reaping it: it stays a zombie.
fn until_exited(child: &Child) {
    // SAFETY: `info` is a valid siginfo_t; WNOWAIT leaves the child waitable.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            child.id(),
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

/// Children planted by a test, killed and reaped when it ends.
#[derive(Default)]
struct Planted(Vec<Child>);

impl Drop for Planted {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[leakcheck::isolated]
fn running_child_per_cycle_is_counted_exactly() {
    let mut planted = Planted::default();
    let leak = check(6)
        .run(|| planted.0.push(spawn("sleep", &["1000"])))
        .unwrap_err();
    let report = leak.report();
    assert_eq!(report.leaked(Resource::Children), 6, "{report}");
    assert_eq!(
        report.items(Resource::Children),
        &[(format!("sleep {}", site()), 6)]
    );
    assert_eq!(report.leaked(Resource::Threads), 0, "{report}");
    assert!(
        report.to_string().contains(&format!(
            "children +6 (+1.00/cycle)\n           ×6   \"sleep\" {}",
            site()
        )),
        "{report}"
    );
}

#[leakcheck::isolated]
fn zombie_per_cycle_is_counted_exactly_and_named_as_such() {
    let mut planted = Planted::default();
    let leak = check(4)
        .run(|| {
            let child = spawn("true", &[]);
            until_exited(&child);
            planted.0.push(child);
        })
        .unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Children), 4, "{leak}");
    assert!(
        leak.to_string().contains(&format!(
            "children +4 (+1.00/cycle)\n           ×4   \"true\" {} (zombie ×4)",
            site()
        )),
        "{leak}"
    );
}

#[leakcheck::isolated]
fn running_and_zombie_children_group_by_command() {
    let mut planted = Planted::default();
    let mut cycle = 0;
    let leak = check(8)
        .run(|| {
            cycle += 1;
            let mut child = spawn("sleep", &["1000"]);
            if cycle % 3 == 0 {
                // Killed but never waited for: a zombie.
                child.kill().unwrap();
                until_exited(&child);
            }
            planted.0.push(child);
        })
        .unwrap_err();
    // Warm-up was cycle 1; measured cycles 2..=9 killed cycles 3, 6 and 9.
    assert!(
        leak.to_string().contains(&format!(
            "children +8 (+1.00/cycle)\n           ×8   \"sleep\" {} (zombie ×3)",
            site()
        )),
        "{leak}"
    );
}

#[leakcheck::isolated]
fn waited_child_is_clean() {
    let report = check(5)
        .run(|| {
            let status = Command::new("true").status().unwrap();
            assert!(status.success());
        })
        .unwrap();
    assert_eq!(
        report.verdict(Resource::Children),
        Some(&Verdict::Clean),
        "{report}"
    );
    assert!(report.to_string().contains("children 0→0"), "{report}");
}

#[leakcheck::isolated]
fn child_killed_and_waited_is_clean() {
    let report = check(5)
        .run(|| {
            let mut child = spawn("sleep", &["1000"]);
            child.kill().unwrap();
            child.wait().unwrap();
        })
        .unwrap();
    assert_eq!(
        report.verdict(Resource::Children),
        Some(&Verdict::Clean),
        "{report}"
    );
}

#[leakcheck::isolated]
fn child_reaped_later_by_a_thread_is_clean() {
    // The child runs 20 ms after the body returns; a thread waits for it, then exits.
    let body = || {
        let mut child = spawn("sleep", &["0.02"]);
        std::thread::spawn(move || child.wait().unwrap());
    };
    // Without warm-up the baseline is taken before any child: every cycle's child must be
    // reaped within the budget for the check to settle, and then nothing is left.
    // A generous budget: a clean check returns as soon as the children are reaped.
    let patient = || check(4).settle(Duration::from_secs(2));
    let report = patient().warmup(0).run(body).unwrap();
    assert_eq!(
        report.verdict(Resource::Children),
        Some(&Verdict::Clean),
        "{report}"
    );
    assert!(report.settled() > Duration::ZERO);
    // With warm-up, the baseline can be taken while the warm-up's child still runs (its
    // count has stopped changing): never a leak either.
    let report = patient().run(body).unwrap();
    assert_ne!(
        report.verdict(Resource::Children),
        Some(&Verdict::Leaking),
        "{report}"
    );
}

#[leakcheck::isolated]
fn the_harness_never_reaps_a_zombie() {
    // A zombie left by the body is still there, unreaped, after the check.
    let mut planted = Planted::default();
    let leak = LeakCheck::new()
        .settle(Duration::from_millis(30))
        .run(|| {
            let child = spawn("true", &[]);
            until_exited(&child);
            planted.0.push(child);
        })
        .unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Children), 1);
    let pid = planted.0[0].id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.contains(") Z "), "{stat}");
    // try_wait reaps it here, in the test: proof that it was still waitable.
    assert!(planted.0[0].try_wait().unwrap().is_some());
}
