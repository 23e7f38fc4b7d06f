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
//! # Other tests in the process
//!
//! Threads and fds are process-wide. Under plain `cargo test`, the tests of one binary run on
//! parallel threads of one process, and libtest starts the next test's thread whenever one
//! finishes, even while a `#[serial]` test is counting. Run such binaries with
//! `--test-threads=1` (or `RUST_TEST_THREADS=1`, e.g. in `.cargo/config.toml`'s `[env]`), or
//! use `cargo nextest run`, which gives each test its own process. Mark such tests `#[serial]`
//! (crate `serial_test`) too, so that checks never overlap when tests do share a process. A
//! report says when it could not rule out other tests.
//!
//! # Platforms
//!
//! Threads, fds and child processes are read from `/proc/self` on Linux. Elsewhere the crate
//! compiles and reports them as not measured, never as a made-up zero. Tokio tasks (feature
//! `tokio`, on by default) and the heap (`CountingAlloc`) are counted on every platform.

#![warn(missing_docs)]

mod alloc;
mod check;
mod context;
mod filter;
mod group;
mod guard;
mod probe;
mod protocol;
mod report;
mod resource;
#[cfg(feature = "serde")]
mod serialize;
mod settle;
mod source;

pub use alloc::{CountingAlloc, HeapStats};
pub use check::LeakCheck;
pub use guard::Guard;
pub use report::{Leak, Report, Verdict};
pub use resource::Resource;
