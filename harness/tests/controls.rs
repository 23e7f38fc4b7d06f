//! The harness's verdicts on planted leaks (negative controls) and on clean components that
//! linger, lazily initialise or grow a bounded pool. Each detector has both: a leak it must
//! catch, counted exactly, and a clean case it must pass.
// Their expected labels are names alone: under `spawn-sites` each label also carries its
// `spawned at` site, so these run in the default build (where sites are recorded and classify
// threads, but labels stay names) and the site labels are tested in `globals` and the lib.
#![cfg(target_os = "linux")]

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use common::{thread_exiting_after, LazyPool, Planted};
use leakcheck::{Guard, LeakCheck, Resource, Verdict};

/// Short budgets keep the leaking cases fast: a leak waits out the budget at B1 and at B2.
const BUDGET: Duration = Duration::from_millis(150);

fn check() -> LeakCheck {
    LeakCheck::new().settle(BUDGET)
}

// ---- negative controls ------------------------------------------------------------------

/// A thread's name in a `Report::items` label, which carries its origin after the name where
/// this build knows one (`forgotten spawned at …, waiting at …`).
fn name_of(label: &str) -> &str {
    [" spawned at ", " waiting at "]
        .iter()
        .filter_map(|sep| label.find(sep))
        .min()
        .map_or(label, |at| &label[..at])
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

#[leakcheck::isolated]
fn parked_thread_per_cycle_is_counted_exactly() {
    let planted = Planted::new();
    let leak = check()
        .cycles(10)
        .run(|| planted.parked_thread("forgotten"))
        .unwrap_err();
    let report = leak.report();
    assert_eq!(report.leaked(Resource::Threads), 10, "{report}");
    assert_eq!(report.per_cycle(Resource::Threads), 1.0);
    let items = report.items(Resource::Threads);
    assert_eq!(items.len(), 1, "{report}");
    assert_eq!((name_of(&items[0].0), items[0].1), ("forgotten", 10));
    assert_eq!(report.leaked(Resource::Fds), 0, "{report}");
    let text = report.to_string();
    assert!(
        text.starts_with("leakcheck: leak after 10 cycles (warm-up 1, "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "threads  +10 (+1.00/cycle){}",
            group(10, "forgotten")
        )),
        "{text}"
    );
}

#[leakcheck::isolated]
fn ticker_thread_per_cycle_is_counted_exactly() {
    let planted = Planted::new();
    let leak = check()
        .cycles(6)
        .run(|| planted.ticker_thread("ticker-24h"))
        .unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Threads), 6, "{leak}");
    let (label, n) = &leak.report().items(Resource::Threads)[0];
    assert_eq!((name_of(label), *n), ("ticker-24h", 6));
}

#[leakcheck::isolated]
fn forgotten_fd_per_cycle_is_counted_exactly_and_only_fds_leak() {
    let planted = Planted::new();
    let leak = check()
        .cycles(8)
        .run(|| planted.forgotten_fd("Cargo.toml"))
        .unwrap_err();
    let report = leak.report();
    assert_eq!(report.leaked(Resource::Fds), 8, "{report}");
    assert_eq!(
        report.verdict(Resource::Threads),
        Some(&Verdict::Clean),
        "{report}"
    );
    assert_eq!(report.leaked(Resource::Threads), 0);
    let (target, n) = &report.items(Resource::Fds)[0];
    // The target, then (feature `origins`) where it was opened: in the planting helper.
    let target = target.split(" opened at ").next().unwrap();
    assert!(target.ends_with("/Cargo.toml"), "{target}");
    assert_eq!(*n, 8);
}

#[leakcheck::isolated]
fn single_cycle_leak_fails_when_end_is_above_start() {
    let planted = Planted::new();
    let leak = check()
        .run(|| planted.parked_thread("one-off"))
        .unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Threads), 1);
    assert!(
        leak.to_string()
            .starts_with("leakcheck: leak after 1 cycle ("),
        "{leak}"
    );
}

#[leakcheck::isolated]
fn explicit_warmup_with_one_cycle_checks_the_cycle_after_it() {
    let planted = Planted::new();
    let leak = check()
        .warmup(2)
        .run(|| planted.parked_thread("after-warmup"))
        .unwrap_err();
    // The two warm-up threads are part of the baseline; only the measured cycle's counts.
    assert_eq!(leak.report().leaked(Resource::Threads), 1, "{leak}");
    assert_eq!(leak.report().warmup(), 2);
}

#[leakcheck::isolated]
fn steady_leak_is_exact_even_when_warmup_leaves_late_exiting_threads() {
    let planted = Planted::new();
    let mut first = true;
    let leak = check()
        .cycles(10)
        .run(|| {
            if first {
                // One-time init that leaves helpers exiting well after the quiet window.
                first = false;
                for _ in 0..3 {
                    thread_exiting_after("init-helper", Duration::from_millis(60));
                }
            }
            planted.parked_thread("steady");
        })
        .unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Threads), 10, "{leak}");
}

#[leakcheck::isolated]
fn leak_verdict_arrives_within_twice_the_budget() {
    let planted = Planted::new();
    let leak = check()
        .cycles(4)
        .run(|| planted.parked_thread("slow-verdict"))
        .unwrap_err();
    let settled = leak.report().settled();
    assert!(
        settled <= 2 * BUDGET + Duration::from_millis(100),
        "settling took {settled:?} for a budget of {BUDGET:?}"
    );
    // Parked threads wait with no end: no settle budget would help, and none is advised.
    let text = leak.to_string();
    assert!(!text.contains("settle budget"), "{text}");
    assert!(!text.contains("settle_ms"), "{text}");
}

#[leakcheck::isolated]
fn a_leak_whose_end_cannot_be_told_names_the_budget_that_ran_out() {
    let planted = Planted::new();
    let dir = std::env::temp_dir().join(format!("leakcheck-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kept.log");
    std::fs::write(&path, b"").unwrap();
    let path = path.to_str().unwrap();
    let leak = check().run(|| planted.forgotten_fd(path)).unwrap_err();
    assert!(
        leak.to_string().contains("waited the whole settle budget"),
        "{leak}"
    );
    drop(planted);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- clean cases ------------------------------------------------------------------------

#[leakcheck::isolated]
fn joined_threads_are_clean_with_one_snapshot_per_baseline() {
    let report = check()
        .run(|| {
            let handles: Vec<_> = (0..4).map(|_| std::thread::spawn(|| ())).collect();
            handles.into_iter().for_each(|h| h.join().unwrap());
        })
        .unwrap();
    assert!(report.is_clean());
    // Nothing lingered: one snapshot before, one after, no waiting.
    assert_eq!(report.snapshots(), 2, "{report}");
    assert!(
        report
            .to_string()
            .starts_with("leakcheck: clean after 1 cycle"),
        "{report}"
    );
}

#[leakcheck::isolated]
fn thread_exiting_20ms_after_the_body_is_clean() {
    let report = check()
        .cycles(3)
        .run(|| thread_exiting_after("lingering", Duration::from_millis(20)))
        .unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(
        report.snapshots() > 3,
        "it had to wait for the lingering threads"
    );
}

#[leakcheck::isolated]
fn lazily_created_global_pool_is_absorbed_by_warmup() {
    static POOL: LazyPool = LazyPool::new("global-pool", 3);
    let report = check().cycles(10).run(|| POOL.fill()).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.verdict(Resource::Threads), Some(&Verdict::Clean));
    // Negative control: without warm-up, one cycle sees the pool appear.
    static FRESH: LazyPool = LazyPool::new("fresh-pool", 2);
    let leak = check().run(|| FRESH.fill()).unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Threads), 2);
}

#[leakcheck::isolated]
fn pool_that_grows_to_four_then_stops_is_bounded_not_leaking() {
    static POOL: LazyPool = LazyPool::new("growing-pool", 4);
    let report = check().cycles(20).run(|| POOL.grow_one()).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.verdict(Resource::Threads), Some(&Verdict::Bounded));
    // Warm-up made the first thread; the measured cycles added the other three.
    assert_eq!(report.growth(Resource::Threads), 3);
    assert_eq!(report.leaked(Resource::Threads), 0);
    assert!(report.to_string().contains("bounded growth +3"), "{report}");
}

#[leakcheck::isolated]
fn tokio_runtime_created_and_dropped_per_cycle_is_clean() {
    let report = check()
        .cycles(6)
        .run(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { tokio::spawn(async { 7 }).await.unwrap() });
            rt.spawn_blocking(|| ());
            drop(rt);
        })
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

#[leakcheck::isolated]
fn notify_watchers_created_and_dropped_are_clean() {
    use notify::Watcher as _;
    let dir = tempfile::tempdir().unwrap();
    let report = check()
        .cycles(20)
        .run(|| {
            let mut w = notify::recommended_watcher(|_: notify::Result<notify::Event>| {}).unwrap();
            w.watch(dir.path(), notify::RecursiveMode::NonRecursive)
                .unwrap();
            drop(w); // notify's thread exits a few ms later
        })
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

// ---- filters ----------------------------------------------------------------------------

#[leakcheck::isolated]
fn ignored_thread_names_and_fd_targets_do_not_count() {
    let planted = Planted::new();
    let report = check()
        .cycles(4)
        .ignore_thread("bg-*")
        .ignore_fd("*/Cargo.toml")
        .run(|| {
            planted.parked_thread("bg-known");
            planted.forgotten_fd("Cargo.toml");
        })
        .unwrap();
    assert!(report.is_clean(), "{report}");
    // Negative control: the same leak with a filter that does not match.
    let planted = Planted::new();
    let leak = check()
        .cycles(4)
        .ignore_thread("other-*")
        .run(|| planted.parked_thread("bg-known"))
        .unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Threads), 4);
}

#[leakcheck::isolated]
fn thread_names_are_matched_as_the_kernel_truncates_them() {
    let planted = Planted::new();
    // "a-very-long-thread-name" is seen as its first 15 bytes.
    let leak = check()
        .cycles(2)
        .ignore_thread("a-very-long-thread-name")
        .run(|| planted.parked_thread("a-very-long-thread-name"))
        .unwrap_err();
    assert_eq!(
        name_of(&leak.report().items(Resource::Threads)[0].0),
        "a-very-long-thr"
    );
    let report = check()
        .cycles(2)
        .ignore_thread("a-very-long-thr*")
        .run(|| planted.parked_thread("a-very-long-thread-name"))
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

// ---- panics and guards ------------------------------------------------------------------

#[leakcheck::isolated]
fn a_panicking_body_propagates_its_panic() {
    let err = catch_unwind(|| check().run(|| panic!("body failed: 42"))).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"body failed: 42"));
}

#[leakcheck::isolated]
fn assert_clean_panics_with_the_report() {
    let planted = Planted::new();
    let err = catch_unwind(AssertUnwindSafe(|| {
        check()
            .cycles(2)
            .assert_clean(|| planted.parked_thread("asserted"))
    }))
    .unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains(&format!(
            "threads  +2 (+1.00/cycle){}",
            group(2, "asserted")
        )),
        "{msg}"
    );
}

#[leakcheck::isolated]
fn guard_passes_clean_code_and_catches_a_leak() {
    let guard = Guard::new();
    std::thread::spawn(|| ()).join().unwrap();
    assert!(guard.check().unwrap().is_clean());

    let planted = Planted::new();
    let guard = check().guard();
    planted.parked_thread("guarded");
    planted.forgotten_fd("Cargo.toml");
    let leak = guard.check().unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Threads), 1);
    assert_eq!(leak.report().leaked(Resource::Fds), 1);
}

#[leakcheck::isolated]
fn guard_dropped_unchecked_panics_on_a_leak() {
    let planted = Planted::new();
    let err = catch_unwind(AssertUnwindSafe(|| {
        let _guard = check().guard();
        planted.parked_thread("dropped-guard");
    }))
    .unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains(&group(1, "dropped-guard")), "{msg}");
}

#[leakcheck::isolated]
fn guard_never_double_panics() {
    let planted = Planted::new();
    let err = catch_unwind(AssertUnwindSafe(|| {
        let _guard = check().guard();
        planted.parked_thread("leaked-before-panic");
        panic!("the test's own failure");
    }))
    .unwrap_err();
    // The test's own panic survives; the guard stayed quiet instead of aborting the process.
    assert_eq!(err.downcast_ref::<&str>(), Some(&"the test's own failure"));
}

// ---- async ------------------------------------------------------------------------------

async fn leak_one_interval_task() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
        }
    });
}

async fn async_controls() {
    let handle = tokio::runtime::Handle::current();
    let leak = check()
        .cycles(6)
        .tasks(&handle)
        .run_async(leak_one_interval_task)
        .await
        .unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Tasks), 6, "{leak}");
    assert_eq!(leak.report().leaked(Resource::Threads), 0, "{leak}");
    assert!(
        leak.to_string().contains("tasks    +6 (+1.00/cycle)"),
        "{leak}"
    );

    let report = check()
        .cycles(6)
        .tasks(&handle)
        .run_async(|| async {
            let task = tokio::spawn(async {
                tokio::task::yield_now().await;
            });
            task.await.unwrap();
            // A task still finishing when the body returns settles too.
            tokio::spawn(tokio::task::yield_now());
        })
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");

    // The same through a guard checked asynchronously.
    let guard = check().tasks(&handle).guard();
    tokio::spawn(tokio::task::yield_now());
    assert!(guard.check_async().await.unwrap().is_clean());
    let guard = check().tasks(&handle).guard();
    leak_one_interval_task().await;
    let leak = guard.check_async().await.unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Tasks), 1, "{leak}");
}

#[leakcheck::isolated]
async fn tasks_on_a_current_thread_runtime() {
    async_controls().await;
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_a_multi_thread_runtime() {
    async_controls().await;
}

#[leakcheck::isolated]
async fn tasks_with_paused_time() {
    tokio::time::pause();
    async_controls().await;
    // Real time still passes for threads: a thread that lingers 20 ms is waited for.
    let report = check()
        .run_async(|| async { thread_exiting_after("paused-linger", Duration::from_millis(20)) })
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

// ---- shared processes -------------------------------------------------------------------

#[leakcheck::isolated]
fn a_check_alone_in_its_process_counts_as_usual() {
    // Isolated (or under cargo nextest): exactly this test runs here, so the counts stand.
    // A check that shares its process fails instead: harness/tests/isolation.rs shows it.
    let report = check().run(|| ()).unwrap();
    for r in [Resource::Threads, Resource::Fds] {
        assert_eq!(report.verdict(r), Some(&Verdict::Clean), "{report}");
    }
    assert!(!report.to_string().contains("other tests run"), "{report}");
}
