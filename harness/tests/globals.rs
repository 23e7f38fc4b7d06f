//! Process globals and unnamed threads, with creation sites (feature `origins`, on by default):
//! a pool made inside a `OnceLock`, a `LazyLock` or a `Once` is a global (its own `global:`
//! line, not a leak; a leak again under `strict`), the same pool made outside an initializer is
//! a leak; an unnamed thread is labelled by the function that created it, never by the test's
//! name it inherits, and `ignore_created_by` ignores it by that function.
//!
//! Each test runs in a process of its own (`#[leakcheck::isolated]` / `#[leakcheck::test]`):
//! a global made by one test would be there before the next one's check.
#![cfg(all(origins, target_os = "linux"))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Once, OnceLock};
use std::time::Duration;

use leakcheck::{LeakCheck, Resource};

/// What a library's thread pool looks like to the harness: unnamed threads parked until the
/// pool is dropped (never, for a global).
mod lib_like {
    use super::*;

    pub struct Pool {
        stop: Arc<AtomicBool>,
        threads: Vec<std::thread::JoinHandle<()>>,
    }

    impl Pool {
        pub fn new(n: usize) -> Pool {
            let stop = Arc::new(AtomicBool::new(false));
            let threads = (0..n).map(|_| spawn_worker(stop.clone())).collect();
            Pool { stop, threads }
        }
    }

    impl Drop for Pool {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Release);
            for t in self.threads.drain(..) {
                t.thread().unpark();
                t.join().unwrap();
            }
        }
    }

    /// The line of the spawn in `spawn_worker`.
    pub const SPAWN_LINE: u32 = line!() + 4;

    /// An unnamed thread, as `threadpool::spawn_in_pool` makes them.
    pub fn spawn_worker(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            // The line above is the spawn site: `SPAWN_LINE`.
            while !stop.load(Ordering::Acquire) {
                std::thread::park();
            }
        })
    }
}

use lib_like::Pool;

fn check() -> LeakCheck {
    LeakCheck::new().settle(Duration::from_millis(300))
}

static IN_ONCE_LOCK: OnceLock<Pool> = OnceLock::new();

fn pool_in_once_lock() -> &'static Pool {
    IN_ONCE_LOCK.get_or_init(|| Pool::new(2))
}

static IN_LAZY_LOCK: LazyLock<Pool> = LazyLock::new(|| Pool::new(2));

static ONCE: Once = Once::new();

fn pool_in_once() {
    ONCE.call_once(|| std::mem::forget(Pool::new(2)));
}

/// The report of a check of `body`, which must pass, as text.
fn passes(check: LeakCheck, body: impl FnMut()) -> String {
    let report = check.run(body).unwrap_or_else(|leak| panic!("{leak}"));
    assert_eq!(report.leaked(Resource::Threads), 0, "{report}");
    report.to_string()
}

/// The report of a check of `body`, which must fail, as text.
fn fails(check: LeakCheck, body: impl FnMut()) -> String {
    let leak = check.run(body).expect_err("a leak");
    leak.report().to_string()
}

/// The report without its first line (which has timings in it).
fn lines(text: &str) -> Vec<&str> {
    text.lines().skip(1).collect()
}

#[leakcheck::isolated]
fn a_pool_in_a_once_lock_is_a_global() {
    let text = passes(check(), || {
        pool_in_once_lock();
    });
    assert!(text.starts_with("leakcheck: clean after 1 cycle"), "{text}");
    assert_eq!(
        lines(&text),
        ["  global: 2 threads created once by globals::pool_in_once_lock"],
        "{text}"
    );
}

#[leakcheck::isolated]
fn a_pool_in_a_lazy_lock_is_a_global() {
    let text = passes(check(), || {
        let _ = &*IN_LAZY_LOCK;
    });
    assert_eq!(
        lines(&text),
        ["  global: 2 threads created once by globals::IN_LAZY_LOCK"],
        "{text}"
    );
}

#[leakcheck::isolated]
fn a_pool_in_a_once_is_a_global() {
    let text = passes(check(), pool_in_once);
    assert_eq!(
        lines(&text),
        ["  global: 2 threads created once by globals::pool_in_once"],
        "{text}"
    );
}

/// Made in a warm-up cycle or in the first measured cycle, a global does not grow: clean.
#[leakcheck::isolated]
fn a_global_over_cycles_is_clean() {
    let text = passes(check().cycles(4).warmup(0), || {
        pool_in_once_lock();
    });
    assert_eq!(
        lines(&text),
        ["  global: 2 threads created once by globals::pool_in_once_lock"],
        "{text}"
    );
}

#[leakcheck::isolated]
fn strict_counts_a_global_as_a_leak() {
    let line = lib_like::SPAWN_LINE;
    let text = fails(check().strict(true), || {
        pool_in_once_lock();
    });
    let file = file!();
    let park = line + 3;
    let site = format!(
        "unnamed thread created by globals::lib_like::spawn_worker spawned at {file}:{line}, \
         waiting at {file}:{park} in std::thread::park"
    );
    // (A note on the settle budget may follow: not this test's subject.)
    assert_eq!(
        lines(&text)[..4],
        [
            "  threads  +2".to_owned(),
            format!("           ×2   {site} (blocked in futex)"),
            "  fds      +0".to_owned(),
            "  children +0".to_owned(),
        ],
        "{text}"
    );
}

#[leakcheck::isolated]
fn strict_counts_a_lazy_lock_and_a_once_too() {
    let text = fails(check().strict(true), || {
        let _ = &*IN_LAZY_LOCK;
        pool_in_once();
    });
    assert!(text.contains("\n  threads  +4\n"), "{text}");
    assert!(!text.contains("global:"), "{text}");
}

/// The control: the same pool made by the body itself, outside any initializer, leaks.
#[leakcheck::isolated]
fn the_same_pool_outside_an_initializer_leaks() {
    let mut kept = Vec::new();
    let line = lib_like::SPAWN_LINE;
    let text = fails(check(), || kept.push(Pool::new(2)));
    let file = file!();
    let park = line + 3;
    let site = format!(
        "unnamed thread created by globals::lib_like::spawn_worker spawned at {file}:{line}, \
         waiting at {file}:{park} in std::thread::park"
    );
    // (A note on the settle budget may follow: not this test's subject.)
    assert_eq!(
        lines(&text)[..4],
        [
            "  threads  +2".to_owned(),
            format!("           ×2   {site} (blocked in futex)"),
            "  fds      +0".to_owned(),
            "  children +0".to_owned(),
        ],
        "{text}"
    );
    drop(kept);
}

/// A "global" that grows from one half of the cycles to the next is not one: a `Once` per
/// instance, made every cycle.
#[leakcheck::isolated]
fn an_initializer_that_runs_every_cycle_is_a_leak() {
    let mut kept = Vec::new();
    let text = fails(check().cycles(4), || {
        let once = Box::leak(Box::new(Once::new()));
        once.call_once(|| kept.push(Pool::new(1)));
    });
    assert!(text.contains("\n  threads  +4 (+1.00/cycle)\n"), "{text}");
    assert!(!text.contains("global:"), "{text}");
    drop(kept);
}

#[leakcheck::isolated]
fn an_unnamed_thread_is_labelled_by_its_creator() {
    let stop = Arc::new(AtomicBool::new(false));
    let mut kept = Vec::new();
    let leak = check()
        .run(|| kept.push(lib_like::spawn_worker(stop.clone())))
        .unwrap_err();
    let report = leak.report();
    let (label, n) = &report.items(Resource::Threads)[0];
    assert_eq!(*n, 1, "{report}");
    assert!(
        label.starts_with("unnamed thread created by globals::lib_like::spawn_worker"),
        "{report}"
    );
    // Not the name the thread inherited from this test's thread.
    let test_name = std::thread::current().name().unwrap().to_owned();
    assert!(!report.to_string().contains(&test_name[..15]), "{report}");
    stop.store(true, Ordering::Release);
    for t in kept {
        t.thread().unpark();
        t.join().unwrap();
    }
}

#[leakcheck::isolated]
fn ignore_created_by_ignores_it_and_a_glob_that_does_not_match_does_not() {
    let stop = Arc::new(AtomicBool::new(false));
    let mut kept = Vec::new();
    let mut spawn = || kept.push(lib_like::spawn_worker(stop.clone()));
    let report = check()
        .ignore_created_by("globals::lib_like::*")
        .run(&mut spawn)
        .unwrap();
    assert_eq!(report.leaked(Resource::Threads), 0, "{report}");
    assert_eq!(report.growth(Resource::Threads), 0, "{report}");
    let leak = check()
        .ignore_created_by("threadpool::*")
        .ignore_created_by("globals::lib_like::spawn")
        .run(&mut spawn)
        .unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Threads), 1, "{leak}");
    stop.store(true, Ordering::Release);
    for t in kept {
        t.thread().unpark();
        t.join().unwrap();
    }
}

/// A named thread keeps its name.
#[leakcheck::isolated]
fn a_named_thread_is_shown_by_its_name() {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut kept = Vec::new();
    let leak = check()
        .run(|| {
            let flag = flag.clone();
            let t = std::thread::Builder::new().name("named-worker".into());
            kept.push(t.spawn(move || lib_like_park(&flag)).unwrap());
        })
        .unwrap_err();
    let (label, _) = &leak.report().items(Resource::Threads)[0];
    assert!(label.starts_with("named-worker"), "{leak}");
    stop.store(true, Ordering::Release);
    for t in kept {
        t.thread().unpark();
        t.join().unwrap();
    }
}

fn lib_like_park(stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        std::thread::park();
    }
}

// The attribute itself, as a converted suite uses it.

#[leakcheck::test]
fn the_attribute_passes_a_test_that_makes_a_global_pool() {
    pool_in_once_lock();
}

#[leakcheck::test(strict, settle_ms = 100)]
#[should_panic(expected = "threads  +2")]
fn the_attribute_fails_it_under_strict() {
    pool_in_once_lock();
}

#[leakcheck::test(ignore_created_by = "globals::lib_like::*", settle_ms = 100)]
fn the_attribute_ignores_by_creator() {
    std::mem::forget(Pool::new(1));
}

#[leakcheck::test(ignore_created_by = "other::*", settle_ms = 100)]
#[should_panic(expected = "unnamed thread created by globals::lib_like::spawn_worker")]
fn the_attribute_with_a_glob_that_does_not_match_fails() {
    std::mem::forget(Pool::new(1));
}
