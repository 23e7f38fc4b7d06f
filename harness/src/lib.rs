//! Find the OS threads, file descriptors and tokio tasks a component leaves behind.
//!
//! Long-lived components start background work: threads, tasks, tickers, fds. One that forgets
//! a piece of it on close leaks it on every create/close cycle, and in a long-running service
//! or a large test suite that number grows without bound. `leakcheck` takes a baseline, runs
//! the component (once, or as repeated create/close cycles after a warm-up), lets lingering
//! resources settle, and fails with a report of what was left behind, how much per cycle, and
//! which threads (by name) and fds (by target) they are.
//!
//! ```
//! use leakcheck::LeakCheck;
//!
//! // Clean: the thread is joined.
//! LeakCheck::new().cycles(5).assert_clean(|| {
//!     std::thread::spawn(|| ()).join().unwrap();
//! });
//!
//! // Leaky: one parked thread per cycle, caught and counted exactly.
//! # #[cfg(target_os = "linux")] {
//! let leak = LeakCheck::new()
//!     .cycles(4)
//!     .settle(std::time::Duration::from_millis(20))
//!     .run(|| {
//!         std::thread::Builder::new()
//!             .name("forgotten".into())
//!             .spawn(|| loop { std::thread::park() })
//!             .unwrap();
//!     })
//!     .unwrap_err();
//! assert_eq!(leak.report().leaked(leakcheck::Resource::Threads), 4);
//! println!("{leak}"); // threads  +4 (+1.00/cycle)  "forgotten" ×4
//! # }
//! ```
//!
//! # How the verdict is reached
//!
//! With one cycle, a resource leaks when it ends above where it started. With more, the
//! protocol is: warm-up, settle, baseline B0; half the cycles, settle, B1; the other half,
//! settle, B2. A resource leaks when it keeps growing (B2 > B1); growth that stopped (a pool
//! that filled up) is reported as bounded, not failed. Settling polls with backoff inside one
//! budget of real time and returns at once when nothing lingers.
//!
//! # In a test suite: `#[leakcheck::test]`
//!
//! Threads and fds are process-wide, and under plain `cargo test` the tests of one binary run
//! on parallel threads of one process. One attribute makes a test's counts exact all the same:
//!
//! ```
//! # #[cfg(any())] // the attribute makes a #[test]: nothing to run in a doc test
//! #[leakcheck::test]                       // threads and fds around the body
//! fn closes_cleanly() {
//!     std::thread::spawn(|| ()).join().unwrap();
//! }
//!
//! # #[cfg(any())]
//! #[leakcheck::test(cycles = 20)]          // the body is one create/close cycle
//! fn no_leak_per_cycle() { /* start and close the component */ }
//!
//! # #[cfg(any())]
//! #[leakcheck::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn no_task_left() {               // a runtime of its own; its tasks are counted too
//!     tokio::spawn(async {}).await.unwrap();
//! }
//! ```
//!
//! Under `cargo test`, such a test re-runs the test binary for itself alone (`--exact`, one
//! test thread) and relays its output; under `cargo nextest run`, which gives every test a
//! process, it runs in place. Arguments: `cycles`, `warmup`, `settle_ms`, `ignore_thread` and
//! `ignore_fd` (both repeatable), `heap` (live heap blocks too; install [`CountingAlloc`] as
//! the test crate's `#[global_allocator]`), `timeout_ms`, the deadline of the isolated process
//! (default 60 s, or `LEAKCHECK_TIMEOUT_MS`), and for an async test `#[tokio::test]`'s own:
//! `flavor` (`"current_thread"`, the default, or `"multi_thread"`), `worker_threads`,
//! `start_paused` and `crate`. An async test's runtime is built from the test crate's own
//! tokio, and its tasks are counted; with the `tokio` feature and `--cfg tokio_unstable` it is
//! instrumented (`leakcheck::instrument`), so a leaked task is reported with its spawn site. A
//! test that drives a `LeakCheck` itself uses `#[leakcheck::isolated]`: the same process of
//! its own, with no check around it.
//!
//! A failure points at the test's own `file:line`, with no frames of the harness. A project
//! file, `.config/leakcheck.toml` at the package or workspace root, sets the arguments'
//! defaults for a whole suite and per test path (`[[overrides]]` with `tests = "GLOB"`), and
//! `LEAKCHECK=warn` (or `mode = "warn"` there) lets leaking tests pass while their reports and
//! a summary are shown: see the README's "Switching it on across an existing suite".
//!
//! A `Guard` or `LeakCheck` used without the attribute in a test that shares its process with
//! other running tests never passes on counts it cannot trust: its threads, fds, children and
//! heap fail with a message that says why (with `--test-threads=1`, under cargo nextest, in a
//! doc test, a bench or a program it is alone and counts as usual).
//!
//! # Platforms
//!
//! Threads, fds and child processes are read from `/proc/self` on Linux. Elsewhere the crate
//! compiles and reports them as not measured, never as a made-up zero. Tokio tasks (an async
//! `#[leakcheck::test]`, or `LeakCheck::tasks` with the `tokio` feature) and the heap (`CountingAlloc`) are counted on every platform.

#![warn(missing_docs)]

mod alloc;
mod attribute;
mod check;
mod config;
mod context;
mod filter;
mod finding;
mod group;
mod guard;
mod isolate;
mod origin;
mod protocol;
mod report;
mod resource;
#[cfg(feature = "serde")]
mod serialize;
mod settle;
mod source;
mod sys;
mod warn;

pub use alloc::{CountingAlloc, HeapStats};

#[doc(hidden)]
pub mod __private {
    //! What the attributes expand to call, and what the benches measure; not a public API.
    pub use crate::alloc::sites::record_while;
    pub use crate::attribute::*;
    #[cfg(task_dumps)]
    pub use crate::origin::dump_tasks;
    #[cfg(origins)]
    pub use crate::origin::sample_frames;
}

/// Marks a test whose body is checked for leaked threads and fds (and, for an async test, the
/// tasks of its runtime), with exact counts under a parallel `cargo test`: see the
/// [crate docs](crate#in-a-test-suite-leakchecktest).
///
/// It makes a `#[test]`, so in a doc test (compiled without `--test`) it compiles to nothing,
/// as `#[test]` does:
///
/// ```
/// #[leakcheck::test(cycles = 5)]
/// fn joins_its_thread() {
///     std::thread::spawn(|| ()).join().unwrap();
/// }
///
/// #[leakcheck::test(flavor = "multi_thread", worker_threads = 2)]
/// async fn awaits_its_task() {
///     tokio::spawn(async {}).await.unwrap();
/// }
/// # fn main() {}
/// ```
#[cfg(feature = "macros")]
pub use leakcheck_macros::test;

/// Marks a test that runs in a process of its own under a parallel `cargo test`, with no
/// check around it: for a test that drives [`LeakCheck`] or [`Guard`] itself. Takes
/// `flavor`, `worker_threads` (async tests) and `timeout_ms`, as `#[leakcheck::test]` does.
#[cfg(feature = "macros")]
pub use leakcheck_macros::isolated;

pub use check::LeakCheck;
pub use guard::Guard;
#[cfg(all(feature = "tokio", tokio_unstable))]
pub use origin::{instrument, instrument_with};
pub use report::{Leak, Report, Verdict};
pub use resource::Resource;
