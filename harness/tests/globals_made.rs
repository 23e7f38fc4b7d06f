//! Process globals among fds and child processes, with creation sites (feature `origins`, on by
//! default; Linux with glibc, x86_64 and aarch64): a file opened and a process spawned inside a
//! `OnceLock` are globals (a `global:` line of their own, not a leak; a leak again under
//! `strict`), the same file or process made outside an initializer is a leak, and an
//! initializer that runs every cycle is no global.
//!
//! Each test runs in a process of its own (`#[leakcheck::isolated]` / `#[leakcheck::test]`): a
//! global made by one test would be there before the next one's check.
#![cfg(all(
    origins,
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;

use leakcheck::{LeakCheck, Resource};

fn check() -> LeakCheck {
    LeakCheck::new().settle(Duration::from_millis(300))
}

/// The report without its first line (which has timings in it).
fn lines(text: &str) -> Vec<&str> {
    text.lines().skip(1).collect()
}

/// A file of this process's own to open, in the temporary directory.
fn path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "leakcheck-globals-made-{name}-{}",
        std::process::id()
    ));
    File::create(&path).unwrap();
    path
}

/// The line that opens the log file in `open_log`.
const OPEN_LINE: u32 = line!() + 4;

/// How a library opens a file it keeps: the call a report names.
fn open_log(path: &PathBuf) -> File {
    File::open(path).unwrap()
}

static LOG: OnceLock<File> = OnceLock::new();

/// A log file opened once per process, as a library keeps one.
fn log_file(path: &PathBuf) -> &'static File {
    LOG.get_or_init(|| open_log(path))
}

/// The line that spawns the helper in `spawn_helper`.
const SPAWN_LINE: u32 = line!() + 4;

/// How a library starts a helper process it keeps.
fn spawn_helper() -> Child {
    Command::new("sleep").arg("1000").spawn().unwrap()
}

static HELPER: OnceLock<Mutex<Child>> = OnceLock::new();

/// A helper process spawned once per process.
fn helper() -> &'static Mutex<Child> {
    HELPER.get_or_init(|| Mutex::new(spawn_helper()))
}

/// Ends the helper, after the check.
fn stop(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[leakcheck::isolated]
fn a_file_opened_in_a_once_lock_is_a_global() {
    let path = path("once-lock");
    let report = check()
        .cycles(4)
        .run(|| {
            log_file(&path);
        })
        .unwrap_or_else(|leak| panic!("{leak}"));
    let text = report.to_string();
    assert_eq!(report.growth(Resource::Fds), 0, "{text}");
    assert_eq!(
        lines(&text),
        ["  global: 1 fd created once by globals_made::log_file"],
        "{text}"
    );
    std::fs::remove_file(path).unwrap();
}

/// The control: the same file opened by the body itself, outside any initializer, leaks, named
/// by the line that opened it.
#[leakcheck::isolated]
fn the_same_file_outside_an_initializer_leaks() {
    let path = path("outside");
    let mut kept = Vec::new();
    let leak = check().run(|| kept.push(open_log(&path))).unwrap_err();
    let report = leak.report();
    let item = format!("{} opened at {}:{OPEN_LINE}", path.display(), file!());
    assert_eq!(report.items(Resource::Fds), &[(item, 1)], "{report}");
    assert!(!report.to_string().contains("global:"), "{report}");
    drop(kept);
    std::fs::remove_file(path).unwrap();
}

#[leakcheck::isolated]
fn strict_counts_a_file_of_an_initializer_as_a_leak() {
    let path = path("strict");
    let leak = check()
        .strict(true)
        .run(|| {
            log_file(&path);
        })
        .unwrap_err();
    let report = leak.report();
    let item = format!("{} opened at {}:{OPEN_LINE}", path.display(), file!());
    assert_eq!(report.items(Resource::Fds), &[(item, 1)], "{report}");
    assert!(report.to_string().contains("\n  fds      +1\n"), "{report}");
    assert!(!report.to_string().contains("global:"), "{report}");
    std::fs::remove_file(path).unwrap();
}

/// A "global" that grows from one half of the cycles to the next is not one: a `Once` per
/// instance, opening a file every cycle.
#[leakcheck::isolated]
fn an_initializer_that_opens_a_file_every_cycle_is_a_leak() {
    let path = path("every-cycle");
    let mut kept = Vec::new();
    let leak = check()
        .cycles(4)
        .run(|| {
            let once = Box::leak(Box::new(Once::new()));
            once.call_once(|| kept.push(open_log(&path)));
        })
        .unwrap_err();
    let text = leak.report().to_string();
    assert!(text.contains("\n  fds      +4 (+1.00/cycle)\n"), "{text}");
    assert!(!text.contains("global:"), "{text}");
    drop(kept);
    std::fs::remove_file(path).unwrap();
}

#[leakcheck::isolated]
fn a_process_spawned_in_a_once_lock_is_a_global() {
    let report = check()
        .cycles(4)
        .run(|| {
            helper();
        })
        .unwrap_or_else(|leak| panic!("{leak}"));
    let text = report.to_string();
    assert_eq!(report.growth(Resource::Children), 0, "{text}");
    assert_eq!(
        lines(&text),
        ["  global: 1 child process created once by globals_made::helper"],
        "{text}"
    );
    stop(&mut helper().lock().unwrap());
}

/// The control: the same process spawned by the body itself leaks, named by its spawn line.
#[leakcheck::isolated]
fn the_same_process_outside_an_initializer_leaks() {
    let mut kept = Vec::new();
    let leak = check().run(|| kept.push(spawn_helper())).unwrap_err();
    let report = leak.report();
    let item = format!("sleep spawned at {}:{SPAWN_LINE}", file!());
    assert_eq!(report.items(Resource::Children), &[(item, 1)], "{report}");
    assert!(!report.to_string().contains("global:"), "{report}");
    kept.iter_mut().for_each(stop);
}

#[leakcheck::isolated]
fn strict_counts_a_process_of_an_initializer_as_a_leak() {
    let leak = check()
        .strict(true)
        .run(|| {
            helper();
        })
        .unwrap_err();
    let report = leak.report();
    let item = format!("sleep spawned at {}:{SPAWN_LINE}", file!());
    assert_eq!(report.items(Resource::Children), &[(item, 1)], "{report}");
    assert!(report.to_string().contains("\n  children +1\n"), "{report}");
    assert!(!report.to_string().contains("global:"), "{report}");
    stop(&mut helper().lock().unwrap());
}

// The attribute, as a converted suite uses it.

static ATTRIBUTE_LOG: OnceLock<File> = OnceLock::new();

fn attribute_log() -> &'static File {
    ATTRIBUTE_LOG.get_or_init(|| File::open("/proc/self/exe").unwrap())
}

#[leakcheck::test(settle_ms = 100)]
fn the_attribute_passes_a_test_that_opens_a_global_file() {
    attribute_log();
}

#[leakcheck::test(strict, settle_ms = 100)]
#[should_panic(expected = "fds      +1")]
fn the_attribute_fails_it_under_strict() {
    attribute_log();
}
