//! What `#[leakcheck::test]` and `#[leakcheck::isolated]` expand to call. Not a public API:
//! the names here may change with any release.
//!
//! A test runs its body in place when it is alone in its process (see `isolate`), and
//! otherwise in a child process; the parent only relays. In place, a `#[leakcheck::test]`
//! runs the body under a [`LeakCheck`] built from the attribute's arguments over the project
//! file's settings (`config`).
//!
//! An async test's tokio runtime is built by the expansion, in the test crate, from the test
//! crate's own tokio: the harness gets it as closures ([`AsyncRun::run`]), so that leakcheck
//! needs no tokio for it. With leakcheck's `tokio` feature, the runtime's handle is given
//! instead of a bare task count, and under `--cfg tokio_unstable` the runtime is instrumented
//! (`leakcheck::instrument`): a leaked task is reported with the place it was spawned.
//!
//! The test's own runtime is not a leak. Its workers and its driver's fds exist before the
//! baseline. Its blocking pool starts threads during the body (`spawn_blocking`, `tokio::fs`)
//! and keeps an idle one for 10 s by default, which a count would see as `threads +1` on a
//! clean test: the runtime here lets idle blocking threads go after
//! [`BLOCKING_KEEP_ALIVE`], so that they settle like any thread that exits a little late,
//! while a blocking task that never returns still holds its thread and is reported.
//!
//! How a failure reads: it points at the test (`file:line:column` of its name, from the
//! `Location` the expansion takes there), never into the harness, and shows no frames of the
//! harness's own, with `RUST_BACKTRACE=1` too. A leak or a broken run is printed here and
//! raised with `resume_unwind`, which runs no panic hook, so no backtrace follows it; the
//! body's own panic prints its backtrace as on any test, cut at
//! [`__rust_begin_short_backtrace`], the marker std's short backtraces stop at (libtest calls
//! every test through one of the same name). A body that panics and also leaks shows both:
//! its panic, then the report; the test then ends with the body's panic.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe, Location};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{self, Mode, Settings};
use crate::isolate::{self, Outcome, Placement, Reporter};
use crate::warn::{self, Warned};
use crate::LeakCheck;

/// How long the attribute's runtime keeps an idle blocking thread.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_millis(2);
/// How long dropping the attribute's runtime waits for blocking tasks that never return.
pub const SHUTDOWN: Duration = Duration::from_millis(500);

/// The test, as the attribute saw it.
pub struct Test {
    /// `module_path!()` where the test is defined.
    pub module_path: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// Where the function's name is: failures point here.
    pub location: &'static Location<'static>,
    /// The test crate's `CARGO_MANIFEST_DIR` when it was compiled: where the project file is
    /// looked for.
    pub manifest_dir: &'static str,
    /// Whether the test carries `#[should_panic]`.
    pub should_panic: bool,
    /// The attribute's `timeout_ms`.
    pub timeout_ms: Option<u64>,
}

impl Test {
    fn path(&self) -> String {
        isolate::test_path(self.module_path, self.name)
    }
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
    /// `strict`: threads, fds and child processes made by a one-time initializer count as
    /// leaks.
    pub strict: bool,
}

impl Check {
    /// The check: the arguments over the environment over the project file.
    fn leak_check(&self, settings: &Settings) -> LeakCheck {
        let mut check = LeakCheck::new();
        if let Some(n) = self.cycles {
            check = check.cycles(n as usize);
        }
        if let Some(n) = self.warmup {
            check = check.warmup(n as usize);
        }
        let env_settle = std::env::var_os(crate::check::SETTLE_ENV).is_some();
        let file_settle = settings.settle_ms.filter(|_| !env_settle);
        if let Some(ms) = self.settle_ms.or(file_settle) {
            check = check.settle(Duration::from_millis(ms));
        }
        let from_file = settings.ignore_thread.iter().map(String::as_str);
        for glob in from_file.chain(self.ignore_thread.iter().copied()) {
            check = check.ignore_thread(glob);
        }
        let from_file = settings.ignore_fd.iter().map(String::as_str);
        for glob in from_file.chain(self.ignore_fd.iter().copied()) {
            check = check.ignore_fd(glob);
        }
        let from_file = settings.ignore_created_by.iter().map(String::as_str);
        for glob in from_file.chain(self.ignore_created_by.iter().copied()) {
            check = check.ignore_created_by(glob);
        }
        if self.strict || settings.strict == Some(true) {
            check = check.strict(true);
        }
        if self.heap {
            check = check.heap();
        }
        check
    }
}

/// What a test function may return: `()`, or a `Result` whose error fails the test.
pub trait TestReturn {
    /// `Err` with the failure's message if the test failed.
    fn into_test_result(self) -> Result<(), String>;
}

impl TestReturn for () {
    fn into_test_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<T: TestReturn, E: std::fmt::Debug> TestReturn for Result<T, E> {
    fn into_test_result(self) -> Result<(), String> {
        match self {
            Ok(t) => t.into_test_result(),
            Err(e) => Err(format!("Error: {e:?}")),
        }
    }
}

/// How a run in place ended, when it did not panic.
enum Ended {
    Passed,
    /// It leaked, in warn mode.
    Warned(Warned),
}

/// Runs a sync test.
pub fn run<R: TestReturn>(test: Test, check: Option<Check>, body: fn() -> R) {
    let checked = check.is_some();
    dispatch(&test, checked, |settings| {
        let mut cycle = || returned(&test, __rust_begin_short_backtrace(body));
        match &check {
            None => {
                cycle();
                Ended::Passed
            }
            Some(check) => run_checked(&test, check, settings, None, &mut cycle, &mut |d| {
                std::thread::sleep(d)
            }),
        }
    })
}

/// Runs an async test: `setup` builds the test's runtime and hands it to [`AsyncRun::run`].
pub fn run_async(test: Test, check: Option<Check>, setup: impl FnOnce(AsyncRun<'_>)) {
    let checked = check.is_some();
    dispatch(&test, checked, |settings| {
        let mut ended = Ended::Passed;
        setup(AsyncRun {
            test: &test,
            check: check.as_ref(),
            settings,
            ended: &mut ended,
        });
        ended
    })
}

/// An async test's run, given the runtime the expansion built.
pub struct AsyncRun<'a> {
    test: &'a Test,
    check: Option<&'a Check>,
    settings: &'a Settings,
    ended: &'a mut Ended,
}

impl AsyncRun<'_> {
    /// Runs the test: `cycle` runs the body once on the runtime (`block_on`), `wait` waits
    /// there while resources settle (so that the runtime's tasks run meanwhile), `tasks`
    /// counts its tasks. A panic is handed back in [`Ran`], to be raised once the runtime is
    /// shut down.
    pub fn run<R: TestReturn>(
        self,
        tasks: TaskCounter,
        mut cycle: impl FnMut() -> R,
        mut wait: impl FnMut(Duration),
    ) -> Ran {
        let test = self.test;
        let mut cycle = || returned(test, __rust_begin_short_backtrace(&mut cycle));
        // Tasks that run while the harness waits allocate as the body's tasks.
        let mut wait = |d| {
            let _counting = crate::alloc::resume();
            wait(d)
        };
        let ran = catch_unwind(AssertUnwindSafe(|| match self.check {
            None => {
                cycle();
                Ended::Passed
            }
            Some(check) => run_checked(
                test,
                check,
                self.settings,
                Some(tasks),
                &mut cycle,
                &mut wait,
            ),
        }));
        match ran {
            Ok(ended) => {
                *self.ended = ended;
                Ran(None)
            }
            Err(panic) => Ran(Some(panic)),
        }
    }
}

/// The end of an async test's run, raised by [`Ran::finish`] after the runtime's shutdown.
pub struct Ran(Option<Box<dyn Any + Send>>);

impl Ran {
    /// Raises the test's panic, if it panicked.
    pub fn finish(self) {
        if let Some(panic) = self.0 {
            resume_unwind(panic);
        }
    }
}

/// How an async test's tasks are counted.
pub enum TaskCounter {
    /// Through the runtime's handle: spawn sites under `--cfg tokio_unstable`.
    #[cfg(feature = "tokio")]
    Handle(tokio::runtime::Handle),
    /// Through a closure of the test crate (`handle.metrics().num_alive_tasks()`).
    Count(Arc<dyn Fn() -> usize + Send + Sync>),
}

impl TaskCounter {
    fn add_to(self, check: LeakCheck) -> LeakCheck {
        match self {
            #[cfg(feature = "tokio")]
            TaskCounter::Handle(handle) => check.tasks(&handle),
            TaskCounter::Count(count) => check.task_count(count),
        }
    }
}

/// The test's runtime, or a failure that says why it could not be built.
pub fn built<T, E: std::fmt::Display>(runtime: Result<T, E>) -> T {
    runtime.unwrap_or_else(|e| panic!("leakcheck: cannot build the test's tokio runtime: {e}"))
}

/// Waits `d` on the test's runtime: `sleep` makes the runtime's sleep for `d` (made here,
/// inside the runtime's context, where tokio's timer can be found). A paused clock
/// (`start_paused`) returns at once, but threads need real time to exit: then the runtime's
/// tasks get a turn (`yield_now`) and the rest of the wait passes in real time.
pub async fn wait_on_runtime<S, Y>(
    d: Duration,
    sleep: impl FnOnce() -> S,
    yield_now: impl FnOnce() -> Y,
) where
    S: std::future::Future<Output = ()>,
    Y: std::future::Future<Output = ()>,
{
    let before = Instant::now();
    sleep().await;
    let slept = before.elapsed();
    if slept < d {
        yield_now().await;
        std::thread::sleep(d - slept);
    }
}

#[cfg(feature = "tokio")]
#[doc(hidden)]
#[macro_export]
macro_rules! __task_counter {
    ($handle:expr) => {
        $crate::__private::TaskCounter::Handle(::core::clone::Clone::clone(&$handle))
    };
}

#[cfg(not(feature = "tokio"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __task_counter {
    ($handle:expr) => {{
        let handle = ::core::clone::Clone::clone(&$handle);
        $crate::__private::TaskCounter::Count(::std::sync::Arc::new(move || {
            handle.metrics().num_alive_tasks()
        }))
    }};
}

#[cfg(all(feature = "tokio", tokio_unstable))]
#[doc(hidden)]
#[macro_export]
macro_rules! __instrument_runtime {
    ($builder:ident) => {
        $crate::instrument(&mut $builder);
    };
}

#[cfg(not(all(feature = "tokio", tokio_unstable)))]
#[doc(hidden)]
#[macro_export]
macro_rules! __instrument_runtime {
    ($builder:ident) => {};
}

pub use crate::__instrument_runtime as instrument_runtime;
pub use crate::__task_counter as task_counter;

/// Runs the test's body. std's short backtraces (`RUST_BACKTRACE=1`) stop at a frame of this
/// name, so a panic in the body shows the body's frames and none of the harness's.
#[inline(never)]
pub fn __rust_begin_short_backtrace<T>(f: impl FnOnce() -> T) -> T {
    let result = f();
    // Keeps this frame from being a tail call that a backtrace would not see.
    std::hint::black_box(());
    result
}

/// Fails the test if its body returned an error.
fn returned(test: &Test, value: impl TestReturn) {
    if let Err(message) = value.into_test_result() {
        fail(test, message);
    }
}

/// Fails the test at its own location: prints the message as a panic at the test's name
/// reads, then unwinds with it, without the panic hook (so without a backtrace of the
/// harness).
fn fail(test: &Test, message: String) -> ! {
    show_failure(test, &message);
    resume_unwind(Box::new(message))
}

fn show_failure(test: &Test, message: &str) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    eprintln!(
        "\nthread '{name}' panicked at {}:\n{message}",
        test.location
    );
}

/// Runs `cycle` under the check and ends as the test must.
fn run_checked(
    test: &Test,
    check: &Check,
    settings: &Settings,
    tasks: Option<TaskCounter>,
    cycle: &mut dyn FnMut(),
    wait: &mut dyn FnMut(Duration),
) -> Ended {
    let mut leak_check = check.leak_check(settings);
    if let Some(tasks) = tasks {
        leak_check = tasks.add_to(leak_check);
    }
    // A panic in the body ends the cycles (the rest run nothing), and the check still
    // reports what was left behind.
    let mut panicked = None;
    let result = leak_check.run_waiting(
        || {
            if panicked.is_none() {
                panicked = catch_unwind(AssertUnwindSafe(&mut *cycle)).err();
            }
        },
        wait,
    );
    conclude(
        test,
        check,
        settings.mode.unwrap_or_default(),
        result,
        panicked,
    )
}

/// Passes, warns or fails on the check's result; a panic of the body is raised last.
fn conclude(
    test: &Test,
    check: &Check,
    mode: Mode,
    result: Result<crate::Report, crate::Leak>,
    panicked: Option<Box<dyn Any + Send>>,
) -> Ended {
    let leak = match result {
        Ok(report) => {
            if let (true, Some(crate::Verdict::NotMeasured(why))) =
                (check.heap, report.verdict(crate::Resource::Heap))
            {
                let why = why.clone();
                fail(
                    test,
                    format!(
                        "leakcheck: #[leakcheck::test(heap)] could not count the heap: \
                         {why}\n{report}"
                    ),
                );
            }
            // Shown with --nocapture (and for a test that fails later for another reason).
            println!("{report}");
            None
        }
        Err(leak) => Some(leak),
    };
    match (leak, panicked) {
        (None, None) => Ended::Passed,
        (None, Some(panic)) => resume_unwind(panic),
        (Some(leak), Some(panic)) => {
            show_failure(test, &leak.to_string());
            resume_unwind(panic)
        }
        (Some(leak), None) if mode == Mode::Warn => {
            Ended::Warned(Warned::from_report(leak.report()))
        }
        (Some(leak), None) => fail(test, leak.to_string()),
    }
}

/// Runs the test in place or in a child process, as `isolate::placement` decides.
fn dispatch(test: &Test, checked: bool, in_place: impl FnOnce(&Settings) -> Ended) {
    let path = test.path();
    let settings = config::for_test(test.manifest_dir, &path).unwrap_or_else(|e| fail(test, e));
    let warn_mode = checked && settings.mode == Some(Mode::Warn);
    match isolate::placement(&path) {
        Placement::InPlace(placed) => {
            // The test's process: record where its threads are created from its start.
            crate::origin::enable();
            match placed {
                None => {
                    let ended = in_place(&settings);
                    if warn_mode {
                        warn::checked();
                    }
                    if let Ended::Warned(warned) = ended {
                        warn::show(&path, test.location, &warned);
                    }
                }
                Some(reporter) => report_to_parent(&reporter, || in_place(&settings)),
            }
        }
        Placement::Child => in_child(test, &path, &settings, warn_mode),
    }
}

/// In the child: runs the test between the markers the parent reads.
fn report_to_parent(reporter: &Reporter, in_place: impl FnOnce() -> Ended) {
    reporter.begin();
    match catch_unwind(AssertUnwindSafe(in_place)) {
        Ok(Ended::Passed) => reporter.passed(),
        Ok(Ended::Warned(warned)) => reporter.warned(&warned),
        Err(panic) => {
            reporter.panicked(&panic_message(&*panic));
            resume_unwind(panic);
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "<a panic whose payload is not a string>".to_owned()
    }
}

/// In the parent: runs the test in a child, relays its output, and ends as it ended.
fn in_child(test: &Test, path: &str, settings: &Settings, warn_mode: bool) {
    let timeout = isolate::timeout(test.timeout_ms, settings.timeout_ms);
    let timeout = timeout.unwrap_or_else(|e| fail(test, e));
    #[cfg(target_os = "linux")]
    let finished = isolate::run_child(path, timeout);
    #[cfg(not(target_os = "linux"))]
    let finished = isolate::Finished {
        output: String::new(),
        outcome: Outcome::Broken(format!(
            "leakcheck: cannot isolate `{path}` on this platform ({} ms)",
            timeout.as_millis()
        )),
    };
    // print!, not a write to fd 1: libtest's capture applies, as for the test's own output.
    print!("{}", finished.output);
    if !finished.output.is_empty() && !finished.output.ends_with('\n') {
        println!();
    }
    if warn_mode {
        warn::checked();
    }
    match finished.outcome {
        Outcome::Passed => {}
        Outcome::Warned(warned) => warn::show(path, test.location, &warned),
        // The test's own panic, re-raised with its message for the parent's libtest (and its
        // `should_panic(expected = ..)`); the child already showed where it panicked.
        Outcome::Panicked(message) => resume_unwind(Box::new(message)),
        Outcome::Broken(why) if test.should_panic => {
            // A crash is not the panic a `should_panic` test expects: fail by not panicking.
            eprintln!("{why}");
        }
        Outcome::Broken(why) => fail(test, why),
    }
}
