//! How a `#[leakcheck::test]` behaves in the ways a user meets it: output relayed (and
//! captured like any test's), a panic shown as a panic, a crash, an exit or a hang reported as
//! such, `#[ignore]` with `--ignored` / `--include-ignored`, `#[should_panic]`, `--nocapture`;
//! and a `Guard` without the attribute in a parallel run, which must never pass silently.
//!
//! The tests in `fixture` and `scenario` are the subjects: they are `#[ignore]`d (most of them
//! must fail) and the tests at the bottom run this same binary on them, as `cargo test` would,
//! with several test threads and a filter that is not `--exact`, and read its output.
// Their expected labels are names alone: under `spawn-sites` each label also carries its
// `spawned at` site, so these run in the default build (where sites are recorded and classify
// threads, but labels stay names) and the site labels are tested in `globals` and the lib.
#![cfg(target_os = "linux")]

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::park_forever;

mod fixture {
    use super::*;

    #[leakcheck::test]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn prints() {
        println!("hello from the isolated child");
        eprintln!("and from its stderr");
    }

    #[leakcheck::test]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn shows_its_pid() {
        println!("test pid {}", std::process::id());
    }

    #[leakcheck::test(settle_ms = 50)]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn leaks_a_thread() {
        println!("printed before the leak");
        park_forever("fixture-leak");
    }

    #[leakcheck::test(settle_ms = 50)]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn leaks_and_panics() {
        park_forever("fixture-leak");
        panic!("fixture panic {}", 42);
    }

    #[leakcheck::test]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn aborts() {
        println!("about to abort");
        std::process::abort();
    }

    #[leakcheck::test]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn exits() {
        std::process::exit(0);
    }

    #[leakcheck::test(settle_ms = 50)]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn leaks_a_child_that_holds_its_stdout() {
        // Inherits the isolated process's stdout, the parent's pipe, and outlives the test.
        let sleep = Command::new("sleep").arg("30").spawn().unwrap();
        println!("leaked sleep {}", sleep.id());
        std::mem::forget(sleep);
    }

    // Room for the exec and libtest's start-up of a debug binary on a loaded machine.
    #[leakcheck::test(timeout_ms = 5000)]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn hangs() {
        println!("hanging now");
        loop {
            std::thread::park();
        }
    }

    #[leakcheck::test]
    #[should_panic]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn should_panic_but_is_clean() {}

    #[should_panic]
    #[leakcheck::test]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn should_panic_but_crashes() {
        std::process::abort();
    }

    #[leakcheck::test]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn returns_an_error() -> Result<(), String> {
        Err("fixture error value".into())
    }

    mod deeper {
        #[leakcheck::test(settle_ms = 50)]
        #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
        async fn async_leak_in_a_module() {
            tokio::spawn(std::future::pending::<()>());
        }
    }
}

/// The scenario of a new user: a `Guard` test that leaks a named thread, `#[serial]`, beside
/// two ordinary tests that spawn and join threads; and the same leak under the attribute.
mod scenario {
    use super::*;

    #[test]
    #[serial_test::serial]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn guard_leaks_a_named_thread() {
        let _guard = leakcheck::LeakCheck::new()
            .settle(Duration::from_millis(50))
            .guard();
        park_forever("guard-leak");
    }

    #[test]
    #[serial_test::serial]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn clean_guard() {
        let _guard = leakcheck::Guard::new();
        std::thread::spawn(|| ()).join().unwrap();
    }

    #[leakcheck::test(settle_ms = 50)]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn attribute_leaks_a_named_thread() {
        park_forever("attr-leak");
    }

    fn spawn_and_join() {
        for _ in 0..300 {
            std::thread::spawn(|| ()).join().unwrap();
        }
    }

    #[test]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn spawns_and_joins_a() {
        spawn_and_join();
    }

    #[test]
    #[ignore = "fixture: run by the tests of harness/tests/isolation.rs, which check how it fails"]
    fn spawns_and_joins_b() {
        spawn_and_join();
    }
}

// ---- the tests ----------------------------------------------------------------------------

/// Runs this binary as `cargo test` would, on the tests `args` select; its exit and output.
fn run(args: &[&str]) -> (bool, String) {
    let threads = match args.iter().any(|a| a.starts_with("--test-threads")) {
        true => None,
        false => Some("--test-threads=4"),
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .args(threads)
        // The subject runs as a plain parallel `cargo test`, whatever runs this test.
        .env_remove("RUST_TEST_THREADS")
        .env_remove("NEXTEST_EXECUTION_MODE")
        .env_remove("LEAKCHECK_ISOLATED")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn fixture(name: &str, extra: &[&str]) -> (bool, String) {
    let filter = format!("fixture::{name}");
    let mut args = vec![filter.as_str(), "--ignored"];
    args.extend_from_slice(extra);
    run(&args)
}

/// How a report shows a group of `n` threads named `name`: inline (`  "name" ×n`), or with
/// origins (Linux, feature `origins`: where each waits), on a line of its own, counts first.
fn group(n: usize, name: &str) -> String {
    if cfg!(all(target_os = "linux", feature = "origins")) {
        format!("\n           ×{n:<3} \"{name}\" ")
    } else {
        format!("  \"{name}\" ×{n}")
    }
}

#[test]
fn output_is_captured_like_any_test_unless_nocapture() {
    let (ok, out) = fixture("prints", &[]);
    assert!(ok && out.contains("test result: ok. 1 passed"), "{out}");
    assert!(!out.contains("hello from the isolated child"), "{out}");

    let (ok, out) = fixture("prints", &["--nocapture"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("hello from the isolated child\nand from its stderr\n"),
        "{out}"
    );
    // libtest's own lines from the child are not relayed: one "running" line, the parent's.
    assert_eq!(out.matches("running 1 test").count(), 1, "{out}");
    assert!(!out.contains("@@leakcheck-isolated"), "{out}");
}

#[test]
fn alone_in_its_process_the_test_runs_in_place_and_otherwise_in_a_child() {
    let pid_of = |args: &[&str]| {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(args)
            .env_remove("LEAKCHECK_ISOLATED")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        let printed: u32 = text
            .lines()
            .find_map(|l| l.strip_prefix("test pid "))
            .unwrap_or_else(|| panic!("{text}"))
            .parse()
            .unwrap();
        (pid, printed)
    };
    // As cargo nextest runs a test: `--exact <name>`. No second process.
    let (pid, printed) = pid_of(&[
        "--exact",
        "fixture::shows_its_pid",
        "--ignored",
        "--nocapture",
    ]);
    assert_eq!(printed, pid);
    // As cargo test runs it, beside others: in a child of its own.
    let (pid, printed) = pid_of(&["fixture::shows_its_pid", "--ignored", "--nocapture"]);
    assert_ne!(printed, pid);
}

#[test]
fn include_ignored_runs_the_ignored_test_too() {
    let (ok, out) = run(&["fixture::prints", "--include-ignored"]);
    assert!(ok && out.contains("test result: ok. 1 passed"), "{out}");
    // And without either flag, an ignored test is not run at all.
    let (ok, out) = run(&["fixture::prints"]);
    assert!(ok && out.contains("0 passed; 0 failed; 1 ignored"), "{out}");
}

#[test]
fn a_leak_fails_with_the_report_and_the_test_output() {
    let (ok, out) = fixture("leaks_a_thread", &[]);
    assert!(
        !ok && out.contains("test result: FAILED. 0 passed; 1 failed"),
        "{out}"
    );
    assert!(
        out.contains("---- fixture::leaks_a_thread stdout ----"),
        "{out}"
    );
    assert!(out.contains("printed before the leak"), "{out}");
    assert!(out.contains("leakcheck: leak after 1 cycle"), "{out}");
    assert!(
        out.contains(&format!("threads  +1{}", group(1, "fixture-leak"))),
        "{out}"
    );
}

#[test]
fn a_leaked_task_in_a_module_is_found_by_its_full_path() {
    let (ok, out) = fixture("deeper::async_leak_in_a_module", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("test fixture::deeper::async_leak_in_a_module ... FAILED"),
        "{out}"
    );
    assert!(out.contains("tasks    +1"), "{out}");
}

#[test]
fn a_panicking_body_that_leaks_shows_its_panic_then_the_report() {
    let (ok, out) = fixture("leaks_and_panics", &[]);
    assert!(!ok, "{out}");
    let panic = out.find("fixture panic 42");
    let report = out.find("leakcheck: leak");
    assert!(
        matches!((panic, report), (Some(p), Some(r)) if p < r),
        "{out}"
    );
}

#[test]
fn an_error_returned_by_the_test_fails_it() {
    let (ok, out) = fixture("returns_an_error", &[]);
    assert!(
        !ok && out.contains("Error: \"fixture error value\""),
        "{out}"
    );
}

#[test]
fn a_crash_is_reported_as_a_crash() {
    let (ok, out) = fixture("aborts", &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("about to abort"), "{out}");
    assert!(
        out.contains("crashed: killed by signal 6 (SIGABRT) while the test ran"),
        "{out}"
    );
}

#[test]
fn an_exit_in_the_middle_of_the_test_is_reported() {
    let (ok, out) = fixture("exits", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("exited with status 0 while the test ran"),
        "{out}"
    );
}

#[test]
fn a_hung_test_is_killed_at_its_deadline() {
    let started = Instant::now();
    let (ok, out) = fixture("hangs", &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("hanging now"), "{out}");
    assert!(
        out.contains("did not finish within 5000 ms; it was killed and reaped"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{out}");
}

#[test]
fn a_leaked_child_holding_the_output_is_reported_as_a_leak_not_a_hang() {
    let started = Instant::now();
    let (ok, out) = fixture("leaks_a_child_that_holds_its_stdout", &[]);
    let elapsed = started.elapsed();
    // The `sleep` the fixture left behind, if it still runs: not left to its 30 s.
    let sleep = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("leaked sleep "))
        .and_then(|pid| pid.parse::<libc::pid_t>().ok());
    if let Some(pid) = sleep {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "sleep" {
            // SAFETY: plain syscall on a pid just checked to be a `sleep`.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    assert!(!ok, "{out}");
    assert!(sleep.is_some(), "{out}");
    assert!(out.contains("children +1"), "{out}");
    assert!(out.contains("\"sleep\""), "{out}");
    assert!(!out.contains("did not finish within"), "{out}");
    // Well under the 60 s deadline it used to wait for, and under the sleep's 30 s.
    assert!(elapsed < Duration::from_secs(25), "{elapsed:?}\n{out}");
}

#[test]
fn should_panic_is_judged_on_the_test_not_on_the_child_process() {
    // A clean test that should panic fails (the child's libtest passed it: a panic was
    // expected, and came from nowhere); so does one that crashes instead of panicking.
    for name in ["should_panic_but_is_clean", "should_panic_but_crashes"] {
        let (ok, out) = fixture(name, &[]);
        assert!(!ok, "{out}");
        assert!(out.contains("did not panic as expected"), "{out}");
    }
}

#[test]
fn a_guard_in_a_parallel_run_never_passes_on_counts_it_cannot_trust() {
    // Repeated: the leak passed 5 of 6 runs before, hidden by the neighbours' threads.
    for _ in 0..6 {
        let (ok, out) = run(&["scenario::", "--ignored"]);
        assert!(!ok, "{out}");
        for failed in [
            "guard_leaks_a_named_thread",
            "clean_guard",
            "attribute_leaks_a_named_thread",
        ] {
            assert!(
                out.contains(&format!("test scenario::{failed} ... FAILED")),
                "{failed}: {out}"
            );
        }
        assert!(
            out.contains("test result: FAILED. 2 passed; 3 failed"),
            "{out}"
        );
        // The guards say why, and what to do: for threads and fds (and what else they count)
        // of each of the two.
        let said = out
            .matches("could not be read: other tests run on parallel threads")
            .count();
        assert!(said >= 4, "{out}");
        assert!(out.contains("use #[leakcheck::test] on the test"), "{out}");
        // The attribute counts exactly, beside the same neighbours.
        assert!(
            out.contains(&format!("threads  +1{}", group(1, "attr-leak"))),
            "{out}"
        );
    }
    // One test at a time: the guard is exact, and catches the leak.
    let (ok, out) = run(&[
        "scenario::guard_leaks_a_named_thread",
        "--ignored",
        "--test-threads=1",
    ]);
    assert!(
        !ok && out.contains(&format!("threads  +1{}", group(1, "guard-leak"))),
        "{out}"
    );
}
