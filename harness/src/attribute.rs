//! What `#[leakcheck::test]` and `#[leakcheck::isolated]` expand to call. Not a public API:
//! the names here may change with any release.
//!
//! A test runs its body in place when it is alone in its process (see `isolate`), and
//! otherwise in a child process; the parent only relays. In place, a `#[leakcheck::test]`
//! runs the body under a [`LeakCheck`] built from the attribute's arguments; an async one
//! first builds the tokio runtime (as `#[tokio::test]` does) and counts that runtime's tasks.
//!
//! Under `--cfg tokio_unstable` the runtime is instrumented (`leakcheck::instrument`): a leaked
//! task is reported with the place it was spawned.
//!
//! The test's own runtime is not a leak. Its workers and its driver's fds exist before the
//! baseline. Its blocking pool starts threads during the body (`spawn_blocking`, `tokio::fs`)
//! and keeps an idle one for 10 s by default, which a count would see as `threads +1` on a
//! clean test: the runtime here lets idle blocking threads go after
//! [`BLOCKING_KEEP_ALIVE`], so that they settle like any thread that exits a little late,
//! while a blocking task that never returns still holds its thread and is reported.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::isolate::{self, Outcome, Placement, Reporter};
use crate::LeakCheck;

/// How long the attribute's runtime keeps an idle blocking thread.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_millis(2);
/// How long dropping the attribute's runtime waits for blocking tasks that never return.
#[cfg(feature = "tokio")]
const SHUTDOWN: Duration = Duration::from_millis(500);

/// The test, as the attribute saw it.
pub struct Test {
    /// `module_path!()` where the test is defined.
    pub module_path: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// Whether the test carries `#[should_panic]`.
    pub should_panic: bool,
    /// The attribute's `timeout_ms`.
    pub timeout_ms: Option<u64>,
}

/// The check the attribute's arguments ask for.
pub struct Check {
    /// `cycles`.
    pub cycles: Option<u64>,
    /// `warmup`.
    pub warmup: Option<u64>,
    /// `settle_ms`.
    pub settle_ms: Option<u64>,
    /// `ignore_thread`, in order.
    pub ignore_thread: &'static [&'static str],
    /// `ignore_fd`, in order.
    pub ignore_fd: &'static [&'static str],
    /// `ignore_created_by`, in order.
    pub ignore_created_by: &'static [&'static str],
    /// `heap`: also count live heap blocks (needs `CountingAlloc` as the global allocator).
    pub heap: bool,
    /// `strict`: threads made by a one-time initializer count as leaks.
    pub strict: bool,
}

impl Check {
    fn leak_check(&self) -> LeakCheck {
        let mut check = LeakCheck::new();
        if let Some(n) = self.cycles {
            check = check.cycles(n as usize);
        }
        if let Some(n) = self.warmup {
            check = check.warmup(n as usize);
        }
        if let Some(ms) = self.settle_ms {
            check = check.settle(Duration::from_millis(ms));
        }
        for glob in self.ignore_thread {
            check = check.ignore_thread(glob);
        }
        for glob in self.ignore_fd {
            check = check.ignore_fd(glob);
        }
        for glob in self.ignore_created_by {
            check = check.ignore_created_by(glob);
        }
        if self.strict {
            check = check.strict(true);
        }
        if self.heap {
            check = check.heap();
        }
        check
    }

    /// Judges a check made from these arguments: a heap that was asked for and could not be
    /// counted fails the test (with the report's word on how to install the allocator).
    #[track_caller]
    fn judge(&self, result: Result<crate::Report, crate::Leak>) {
        if let (true, Ok(report)) = (self.heap, &result) {
            if let Some(crate::Verdict::NotMeasured(why)) = report.verdict(crate::Resource::Heap) {
                panic!(
                    "leakcheck: #[leakcheck::test(heap)] could not count the heap: {why}\n{report}"
                );
            }
        }
        judge(result)
    }
}

/// The runtime an async test gets.
pub enum Flavor {
    /// `flavor = "current_thread"` (the default).
    CurrentThread,
    /// `flavor = "multi_thread"`, with `worker_threads` (default: one per CPU).
    MultiThread {
        /// `worker_threads`.
        worker_threads: Option<usize>,
    },
}

/// What a test function may return: `()` or a `Result` whose error fails the test.
pub trait TestReturn {
    /// Panics if the test failed.
    fn into_test_result(self);
}

impl TestReturn for () {
    fn into_test_result(self) {}
}

impl<E: std::fmt::Debug> TestReturn for Result<(), E> {
    #[track_caller]
    fn into_test_result(self) {
        if let Err(e) = self {
            panic!("Error: {e:?}");
        }
    }
}

/// Runs a sync test.
#[track_caller]
pub fn run<R: TestReturn>(test: Test, check: Option<Check>, body: fn() -> R) {
    dispatch(&test, || {
        let body = || body().into_test_result();
        match check {
            None => body(),
            Some(check) => check.judge(check.leak_check().run(body)),
        }
    })
}

/// Runs an async test on a runtime of its own.
#[cfg(feature = "tokio")]
#[track_caller]
pub fn run_async<R, F, Fut>(test: Test, check: Option<Check>, flavor: Flavor, body: F)
where
    R: TestReturn,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = R>,
{
    dispatch(&test, || {
        let mut builder = match flavor {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Flavor::MultiThread { worker_threads } => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                if let Some(n) = worker_threads {
                    b.worker_threads(n);
                }
                b
            }
        };
        // With tokio's unstable task hooks, a leaked task is named by its spawn site.
        #[cfg(tokio_unstable)]
        crate::instrument(&mut builder);
        let rt = builder
            .enable_all()
            .thread_keep_alive(BLOCKING_KEEP_ALIVE)
            .build()
            .unwrap_or_else(|e| panic!("leakcheck: cannot build the test's tokio runtime: {e}"));
        let ran = catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(async {
                let body = || async { body().await.into_test_result() };
                match check {
                    None => body().await,
                    Some(check) => {
                        let handle = tokio::runtime::Handle::current();
                        let result = check.leak_check().tasks(&handle).run_async(body).await;
                        check.judge(result)
                    }
                }
            })
        }));
        // A blocking task that never returns would keep a plain drop waiting forever.
        rt.shutdown_timeout(SHUTDOWN);
        if let Err(panic) = ran {
            resume_unwind(panic);
        }
    })
}

#[cfg(not(feature = "tokio"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __require_tokio_for_async_tests {
    () => {
        compile_error!(
            "an async #[leakcheck::test] builds a tokio runtime: enable leakcheck's `tokio` \
             feature"
        );
    };
}

#[cfg(feature = "tokio")]
#[doc(hidden)]
#[macro_export]
macro_rules! __require_tokio_for_async_tests {
    () => {};
}

pub use crate::__require_tokio_for_async_tests as require_tokio_for_async_tests;

#[track_caller]
fn judge(result: Result<crate::Report, crate::Leak>) {
    match result {
        // Shown with --nocapture (and for a test that fails later for another reason).
        Ok(report) => println!("{report}"),
        Err(leak) => panic!("{leak}"),
    }
}

/// Runs the test in place or in a child process, as `isolate::placement` decides.
#[track_caller]
fn dispatch(test: &Test, in_place: impl FnOnce()) {
    let path = isolate::test_path(test.module_path, test.name);
    match isolate::placement(&path) {
        Placement::InPlace(placed) => {
            // The test's process: record where its threads are created from its start.
            crate::origin::enable();
            match placed {
                None => in_place(),
                Some(reporter) => report_to_parent(&reporter, in_place),
            }
        }
        Placement::Child => in_child(test, &path),
    }
}

/// In the child: runs the test between the markers the parent reads.
fn report_to_parent(reporter: &Reporter, in_place: impl FnOnce()) {
    reporter.begin();
    match catch_unwind(AssertUnwindSafe(in_place)) {
        Ok(()) => reporter.passed(),
        Err(panic) => {
            reporter.panicked(&panic_message(&*panic));
            resume_unwind(panic);
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "<a panic whose payload is not a string>".to_owned()
    }
}

/// In the parent: runs the test in a child, relays its output, and ends as it ended.
fn in_child(test: &Test, path: &str) {
    #[cfg(target_os = "linux")]
    let finished = isolate::run_child(path, isolate::timeout(test.timeout_ms));
    #[cfg(not(target_os = "linux"))]
    let finished = isolate::Finished {
        output: String::new(),
        outcome: Outcome::Broken(format!(
            "leakcheck: cannot isolate `{path}` on this platform"
        )),
    };
    // print!, not a write to fd 1: libtest's capture applies, as for the test's own output.
    print!("{}", finished.output);
    if !finished.output.is_empty() && !finished.output.ends_with('\n') {
        println!();
    }
    match finished.outcome {
        Outcome::Passed => {}
        // The test's own panic, re-raised with its message for the parent's libtest (and its
        // `should_panic(expected = ..)`); the child already showed where it panicked.
        Outcome::Panicked(message) => resume_unwind(Box::new(message)),
        Outcome::Broken(why) if test.should_panic => {
            // A crash is not the panic a `should_panic` test expects: fail by not panicking.
            eprintln!("{why}");
        }
        Outcome::Broken(why) => panic!("{why}"),
    }
}
