//! The builder, and the sync and async ways to run a check.

use std::time::Duration;

use crate::alloc;
use crate::filter::Filter;
use crate::guard::Guard;
use crate::protocol::{Plan, Protocol};
use crate::report::{Leak, Report};
use crate::settle;
use crate::source::{self, heap_sites, Source, Sources};

/// The default settle budget, unless `LEAKCHECK_SETTLE_MS` says otherwise.
const DEFAULT_SETTLE: Duration = Duration::from_secs(1);
pub(crate) const SETTLE_ENV: &str = "LEAKCHECK_SETTLE_MS";
const BACKTRACE_ENV: &str = "LEAKCHECK_BACKTRACE";

/// A leak check: which resources to count, how many cycles to run, how long to let lingering
/// resources settle, and what to ignore.
///
/// Counts OS threads, file descriptors and child processes; on request, also the alive tasks
/// of a tokio runtime (`LeakCheck::tasks`, feature `tokio`), live heap blocks
/// ([`LeakCheck::heap`]) and counters of your own ([`LeakCheck::probe`]).
///
/// Child processes include, on Linux, the ones a child leaves behind: a child that starts a
/// daemon and exits (`sh -c 'job &'`) leaks the daemon, which the kernel would re-parent to
/// init. While a check runs on a thread other than the main one (as every libtest test
/// does), the process is a child subreaper (`PR_SET_CHILD_SUBREAPER`): such a daemon is
/// adopted instead, counted, and named `"sleep" ×4 (orphaned)`. This changes only what
/// happens to processes that would have gone to init: the setting is restored when the last
/// check ends (and left alone in a process that was a subreaper already); the harness reaps
/// an adopted process once it exits and never reaps, waits for or kills a child your code
/// made. While a check runs, an adopted daemon's `getppid()` returns this process's pid
/// instead of 1, and a `wait()` for any child can return it.
///
/// ```
/// use leakcheck::LeakCheck;
///
/// // A component that joins its thread on close is clean, cycle after cycle.
/// let report = LeakCheck::new().cycles(10).assert_clean(|| {
///     std::thread::spawn(|| ()).join().unwrap();
/// });
/// assert_eq!(report.cycles(), 10);
/// ```
#[derive(Clone, Debug)]
pub struct LeakCheck {
    cycles: usize,
    warmup: Option<usize>,
    settle: Duration,
    thread_filter: Filter,
    created_by_filter: Filter,
    strict: bool,
    fd_filter: Filter,
    #[cfg(feature = "tokio")]
    tasks: Option<tokio::runtime::Handle>,
    /// Tasks counted through a closure (an async `#[leakcheck::test]` without the feature).
    task_count: Option<source::TaskCount>,
    heap: bool,
    probes: Vec<source::Probe>,
    backtraces: bool,
}

impl Default for LeakCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl LeakCheck {
    /// A check of threads, fds and child processes: one cycle, no warm-up, a settle budget of 1 s (or
    /// `LEAKCHECK_SETTLE_MS`).
    ///
    /// # Panics
    /// If `LEAKCHECK_SETTLE_MS` is set but is not a whole number of milliseconds.
    pub fn new() -> Self {
        crate::origin::keep_linked();
        crate::origin::enable();
        LeakCheck {
            cycles: 1,
            warmup: None,
            settle: settle_from_env(),
            thread_filter: Filter::default(),
            created_by_filter: Filter::default(),
            strict: false,
            fd_filter: Filter::default(),
            #[cfg(feature = "tokio")]
            tasks: None,
            task_count: None,
            heap: false,
            probes: Vec::new(),
            backtraces: backtraces_from_env(),
        }
    }

    /// Whether a failing report also shows, for each group of leaked items whose origin was
    /// recorded, the full backtrace behind it: the creation of a leaked thread, fd or child
    /// process, the allocation of the heap blocks that stayed (feature `origins`). Default off,
    /// or on when `LEAKCHECK_BACKTRACE` is set to anything but `0`. Either way a report shows one
    /// line per group of identical origins, counts first (`×8 allocated at src/registry.rs:42 in
    /// alloc::boxed::Box::new`); the backtraces come after, as notes.
    pub fn backtraces(mut self, on: bool) -> Self {
        self.backtraces = on;
        self
    }

    /// How many create/close cycles to measure (default 1). With more than one, a resource
    /// leaks only when it keeps growing: the second half of the cycles adds to the first.
    ///
    /// # Panics
    /// If `n` is 0: a check of no cycles could only ever pass.
    pub fn cycles(mut self, n: usize) -> Self {
        assert!(
            n > 0,
            "leakcheck: cycles(0) measures nothing; use cycles(1) or more"
        );
        self.cycles = n;
        self
    }

    /// Cycles to run before the baseline, to absorb one-time lazy initialisation (a global
    /// pool, a signal pipe). Default: 0 with one cycle, 1 with more.
    pub fn warmup(mut self, n: usize) -> Self {
        self.warmup = Some(n);
        self
    }

    /// The most real time to wait, at each baseline, for lingering threads, fds and tasks to go
    /// (default 1 s, or `LEAKCHECK_SETTLE_MS`). Nothing waits when nothing lingers.
    pub fn settle(mut self, budget: Duration) -> Self {
        self.settle = budget;
        self
    }

    /// Ignores threads whose name matches a glob (`tokio-rt-worker`). Names are matched as
    /// the kernel reports them: Linux keeps only the first 15 bytes of a thread name, so
    /// `"tokio-runtime-worker"` (tokio before 1.54) is seen as `"tokio-runtime-w"`.
    ///
    /// # Panics
    /// If the glob does not parse.
    pub fn ignore_thread(mut self, name_glob: &str) -> Self {
        self.thread_filter.add("thread-name", name_glob);
        self
    }

    /// Ignores threads by the path of the function that created them, as goleak's
    /// `IgnoreCreatedBy` does: `threadpool::spawn_in_pool`, `my_crate::metrics::*`. The path
    /// is the innermost frame of the thread's creation that is not std or the C library (a
    /// thread of a library's pool is created by that library's function), without closure
    /// suffixes; report lines give it (`unnamed thread created by threadpool::spawn_in_pool`).
    /// Needs creation sites (feature `origins`, on by default, Linux with glibc); elsewhere it
    /// ignores nothing. Matching resolves the creation of every thread that outlives the body,
    /// which costs a few milliseconds once per process.
    ///
    /// # Panics
    /// If the glob does not parse.
    pub fn ignore_created_by(mut self, path_glob: &str) -> Self {
        self.created_by_filter.add("created-by", path_glob);
        self
    }

    /// Whether threads, fds and child processes created inside a one-time initializer (std's
    /// `Once`, `OnceLock`, `LazyLock`, `once_cell`, `lazy_static`) count like any other
    /// (default `false`).
    ///
    /// Such a thread is a process global: a pool made on first use and kept for the rest of
    /// the process, once per process, so it cannot grow per test or per cycle. By default it is
    /// not counted, and the report shows it on a line of its own (`global: 2 threads created
    /// once by rayon_core::registry::set_global_registry`); threads of that kind that grow
    /// from one half of the measured cycles to the next count all the same (one that grows is
    /// not a global). The same holds for a log file opened or a helper process spawned in an
    /// initializer (`global: 1 fd created once by …`, `global: 1 child process created once
    /// by …`). `strict(true)` counts them as leaks, for a component that must not leave
    /// even one pool behind. Needs creation sites (feature `origins`, on by default, Linux with
    /// glibc); without them every thread counts.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// Ignores fds whose target matches a glob (`/var/log/*`, `socket:*`, `anon_inode:*`).
    /// Brackets are glob syntax: match a literal `[` with `[[]`, or use `*`.
    ///
    /// # Panics
    /// If the glob does not parse.
    pub fn ignore_fd(mut self, target_glob: &str) -> Self {
        self.fd_filter.add("fd-target", target_glob);
        self
    }

    /// Also counts the alive tasks of the runtime behind `handle`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use leakcheck::{LeakCheck, Resource};
    ///
    /// let check = LeakCheck::new().tasks(&tokio::runtime::Handle::current());
    /// let leak = check
    ///     .settle(std::time::Duration::from_millis(20))
    ///     .run_async(|| async {
    ///         tokio::spawn(std::future::pending::<()>());
    ///     })
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(leak.report().leaked(Resource::Tasks), 1);
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    pub fn tasks(mut self, handle: &tokio::runtime::Handle) -> Self {
        self.tasks = Some(handle.clone());
        self
    }

    /// Also counts a runtime's alive tasks, as `count` returns them: what an async
    /// `#[leakcheck::test]` uses when leakcheck has no tokio of its own.
    pub(crate) fn task_count(
        mut self,
        count: std::sync::Arc<dyn Fn() -> usize + Send + Sync>,
    ) -> Self {
        self.task_count = Some(source::TaskCount::new(count));
        self
    }

    /// Also counts live heap blocks (and bytes), as [`CountingAlloc`](crate::CountingAlloc)
    /// sees them: install it as the test crate's global allocator. Without it, the heap is
    /// reported as not measured (never as a made-up zero), the check is not failed for it, and
    /// the report's note says how to install it.
    ///
    /// The heap is read after every measured cycle too, and judged on the trend of the lows
    /// (a cache that fills up, a batch free, a free on a background thread are not leaks; a
    /// steady leak is counted exactly: `leaked(Resource::Heap)` is k × cycles for k blocks
    /// per cycle). Use 8 or more cycles: with fewer than 4, any growth that does not come back
    /// is a leak. The harness's own allocations during a check are not counted.
    ///
    /// When the heap leaks over 2 or more cycles, the report also says where the blocks that
    /// stayed were allocated, grouped by the line of your code and the call made there:
    ///
    /// ```text
    ///   heap     +8 blocks (+1.0/cycle), +384 B (+48 B/cycle)
    ///            ×8   allocated at src/registry.rs:42 in alloc::boxed::Box::new
    /// ```
    ///
    /// Recording where every block is allocated costs a stack walk per allocation, so the
    /// measured cycles never do it: a clean check runs the body exactly warm-up + cycles times
    /// and records nothing. Only after a leak has been found does the check run the body
    /// `cycles` more times with sites recorded (Linux), and report the sites of the blocks
    /// those cycles left allocated. That relies on the contract every check already has: the
    /// body is one create/close cycle of the component, safe to run again. What cannot be
    /// told is said (`sites not recorded for N blocks` when more blocks stayed than the site
    /// table holds; `allocation site not in the debug info` without line tables), never
    /// guessed. [`LeakCheck::backtraces`] adds the full stack of each site.
    ///
    /// ```
    /// #[global_allocator]
    /// static ALLOC: leakcheck::CountingAlloc = leakcheck::CountingAlloc::new(std::alloc::System);
    ///
    /// use std::collections::HashMap;
    /// // Maps and strings made and dropped every cycle: clean.
    /// let report = leakcheck::LeakCheck::new().heap().cycles(10).assert_clean(|| {
    ///     let mut m: HashMap<String, Vec<u8>> = HashMap::new();
    ///     m.insert("key".repeat(10), vec![1; 100]);
    /// });
    /// assert_eq!(report.leaked(leakcheck::Resource::Heap), 0);
    /// ```
    pub fn heap(mut self) -> Self {
        self.heap = true;
        self
    }

    /// Also counts a counter of your own: objects in a registry, connections in a pool,
    /// entries in a cache. It is judged by the same protocol as the built-in resources
    /// (settled when back at or below its reference; leaking when it keeps growing) and shown
    /// by `name` in the report; `leaked(Resource::Custom(name))` reads it. Add as many as you
    /// like. A `count` that panics fails the check with a message naming the probe.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use leakcheck::{LeakCheck, Resource};
    ///
    /// static OPEN: AtomicUsize = AtomicUsize::new(0);
    /// let leak = LeakCheck::new()
    ///     .probe("connections", || OPEN.load(Ordering::SeqCst))
    ///     .cycles(4)
    ///     .settle(std::time::Duration::from_millis(20))
    ///     .run(|| {
    ///         OPEN.fetch_add(1, Ordering::SeqCst); // opened, never closed
    ///     })
    ///     .unwrap_err();
    /// assert_eq!(leak.report().leaked(Resource::Custom("connections")), 4);
    /// ```
    ///
    /// # Panics
    /// If a probe of the same name was already added: the report could not tell them apart.
    pub fn probe(
        mut self,
        name: &'static str,
        count: impl Fn() -> usize + Send + Sync + 'static,
    ) -> Self {
        assert!(
            self.probes.iter().all(|p| p.name() != name),
            "leakcheck: a probe named {name:?} was already added; give each probe its own name"
        );
        self.probes
            .push(source::Probe::new(name, std::sync::Arc::new(count)));
        self
    }

    /// Runs `body` as the plan says (warm-up, then the measured cycles), letting resources
    /// settle at each baseline, and judges what was left behind.
    ///
    /// A panic in `body` propagates. Settling blocks the calling thread; inside async code,
    /// use [`LeakCheck::run_async`].
    pub fn run<F: FnMut()>(&self, body: F) -> Result<Report, Leak> {
        self.run_waiting(body, std::thread::sleep)
    }

    /// Like [`LeakCheck::run`], with `wait` doing the waiting between snapshots while
    /// resources settle (an async `#[leakcheck::test]` waits on its runtime, so that the
    /// runtime's tasks run meanwhile).
    pub(crate) fn run_waiting<F: FnMut()>(
        &self,
        mut body: F,
        mut wait: impl FnMut(Duration),
    ) -> Result<Report, Leak> {
        // The harness's own allocations are not the component's heap: counting is paused on
        // this thread except while the body runs.
        let _paused = alloc::pause();
        let mut protocol = self.protocol(self.plan());
        while let Some(stage) = protocol.next() {
            for _ in 0..stage.runs {
                let counting = alloc::resume();
                body();
                drop(counting);
                protocol.after_cycle();
            }
            let settled = protocol.settle_waiting(&mut wait);
            protocol.record(settled);
        }
        let mut report = protocol.finish();
        if self.heap && report.wants_heap_sites() {
            // The heap leaked: run the body again, recording where blocks are allocated, and
            // name the sites of those that stay. A clean check never gets here.
            let pass = alloc::sites::start(heap_sites::excluded_thread());
            for _ in 0..self.cycles {
                let counting = alloc::resume();
                body();
                drop(counting);
            }
            let mut quiet = settle::Quiet::new(self.settle);
            while let Some(d) = quiet.step() {
                wait(d);
            }
            let survivors = pass.finish();
            report.add_heap_sites(heap_sites::group(survivors, self.cycles, self.backtraces));
        }
        report.into_result()
    }

    /// Like [`LeakCheck::run`], and panics with the report if anything leaked.
    ///
    /// ```should_panic
    /// // A thread parked forever on every cycle: caught, and the panic shows the report.
    /// leakcheck::LeakCheck::new()
    ///     .cycles(4)
    ///     .settle(std::time::Duration::from_millis(20))
    ///     .assert_clean(|| {
    ///         std::thread::spawn(|| loop { std::thread::park() });
    ///     });
    /// ```
    #[track_caller]
    pub fn assert_clean<F: FnMut()>(&self, body: F) -> Report {
        match self.run(body) {
            Ok(report) => report,
            Err(leak) => panic!("{leak}"),
        }
    }

    /// Like [`LeakCheck::run`] for an async body. Settling awaits on the runtime instead of
    /// blocking it, so the tasks it waits for can finish, on a current-thread runtime too;
    /// budgets are still real time when the runtime's clock is paused. Needs the runtime's
    /// timer (`enable_time`, which `#[tokio::test]` and `#[tokio::main]` turn on).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use leakcheck::LeakCheck;
    ///
    /// let check = LeakCheck::new().cycles(4).tasks(&tokio::runtime::Handle::current());
    /// let report = check
    ///     .run_async(|| async {
    ///         tokio::spawn(async {}).await.unwrap();
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert!(report.is_clean());
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn run_async<F, Fut>(&self, mut body: F) -> Result<Report, Leak>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        // Counting is paused only around the harness's own synchronous steps: other tasks
        // run on this thread while it awaits, and their allocations count.
        let mut protocol = {
            let _paused = alloc::pause();
            self.protocol(self.plan())
        };
        while let Some(stage) = protocol.next() {
            for _ in 0..stage.runs {
                body().await;
                let _paused = alloc::pause();
                protocol.after_cycle();
            }
            let settled = protocol.settle_async().await;
            let _paused = alloc::pause();
            protocol.record(settled);
        }
        let mut report = {
            let _paused = alloc::pause();
            protocol.finish()
        };
        if self.heap && report.wants_heap_sites() {
            // As in `run`: further cycles recording where the blocks that stay are allocated.
            let pass = {
                let _paused = alloc::pause();
                alloc::sites::start(heap_sites::excluded_thread())
            };
            for _ in 0..self.cycles {
                body().await;
            }
            let mut quiet = {
                let _paused = alloc::pause();
                settle::Quiet::new(self.settle)
            };
            loop {
                let step = {
                    let _paused = alloc::pause();
                    quiet.step()
                };
                let Some(wait) = step else { break };
                sleep_async(wait).await;
            }
            let _paused = alloc::pause();
            let survivors = pass.finish();
            report.add_heap_sites(heap_sites::group(survivors, self.cycles, self.backtraces));
        }
        let _paused = alloc::pause();
        report.into_result()
    }

    /// A guard that takes its baseline now and checks when it is checked or dropped: the
    /// one-line form for a test. It uses this check's resources, filters and settle budget;
    /// it is always a single cycle.
    ///
    /// ```
    /// let _guard = leakcheck::LeakCheck::new().ignore_thread("tokio-*").guard();
    /// // ... the test ...
    /// // dropped here: panics with the report if a thread or fd was left behind
    /// ```
    pub fn guard(&self) -> Guard {
        let _paused = alloc::pause();
        Guard::start(self.protocol(Plan {
            warmup: 0,
            cycles: 1,
            budget: self.settle,
        }))
    }

    fn plan(&self) -> Plan {
        let default_warmup = if self.cycles == 1 { 0 } else { 1 };
        Plan {
            warmup: self.warmup.unwrap_or(default_warmup),
            cycles: self.cycles,
            budget: self.settle,
        }
    }

    /// The sources this check counts, in report order.
    fn sources(&self) -> Sources {
        let mut list: Vec<Box<dyn Source>> = vec![
            Box::new(source::Threads::new(
                self.thread_filter.clone(),
                self.created_by_filter.clone(),
                self.strict,
                self.backtraces,
            )),
            Box::new(source::Fds::new(
                self.fd_filter.clone(),
                self.strict,
                self.backtraces,
            )),
            Box::new(source::Children::new(self.strict, self.backtraces)),
        ];
        #[cfg(feature = "tokio")]
        if let Some(handle) = &self.tasks {
            list.push(Box::new(source::Tasks::new(handle.clone())));
        }
        if let Some(count) = &self.task_count {
            list.push(Box::new(count.clone()));
        }
        if self.heap {
            list.push(Box::new(source::Heap::new()));
        }
        for probe in &self.probes {
            list.push(Box::new(probe.clone()));
        }
        Sources::new(list)
    }

    fn protocol(&self, plan: Plan) -> Protocol {
        Protocol::new(plan, self.sources())
    }
}

impl Guard {
    /// A guard with the default check (threads, fds and child processes, settle budget from
    /// `LEAKCHECK_SETTLE_MS` or 1 s). For filters or tasks, use [`LeakCheck::guard`].
    ///
    /// (Defined here, beside the builder whose defaults it takes, so that `guard` needs
    /// nothing from this module.)
    pub fn new() -> Self {
        LeakCheck::new().guard()
    }
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

/// Waits `d` of real time on the runtime.
#[cfg(feature = "tokio")]
async fn sleep_async(d: Duration) {
    let before = std::time::Instant::now();
    tokio::time::sleep(d).await;
    // A paused clock returns at once, but threads need real time to exit: let the runtime's
    // tasks run, then let the rest of the wait pass in real time.
    let slept = before.elapsed();
    if slept < d {
        tokio::task::yield_now().await;
        std::thread::sleep(d - slept);
    }
}

fn backtraces_from_env() -> bool {
    std::env::var_os(BACKTRACE_ENV).is_some_and(|v| v != "0")
}

fn settle_from_env() -> Duration {
    match std::env::var(SETTLE_ENV) {
        Err(_) => DEFAULT_SETTLE,
        Ok(value) => match value.trim().parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => panic!(
                "leakcheck: {SETTLE_ENV} must be a whole number of milliseconds, got {value:?}"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_defaults_follow_cycles() {
        assert_eq!(LeakCheck::new().plan().warmup, 0);
        assert_eq!(LeakCheck::new().cycles(5).plan().warmup, 1);
        assert_eq!(LeakCheck::new().cycles(5).warmup(3).plan().warmup, 3);
        assert_eq!(LeakCheck::new().warmup(2).plan().cycles, 1);
    }

    #[test]
    #[should_panic(expected = "a probe named \"pool\" was already added")]
    fn a_probe_name_used_twice_is_refused() {
        let _ = LeakCheck::new().probe("pool", || 0).probe("pool", || 1);
    }

    #[test]
    #[should_panic(expected = "cycles(0) measures nothing")]
    fn zero_cycles_is_refused() {
        let _ = LeakCheck::new().cycles(0);
    }
}
