//! The watcher's staged-shutdown coordinator.
//!
//! Every task the watcher starts registers in a [`Stage`] and holds the [`Permit`] it gets
//! back for as long as it runs. [`Coordinator::close`] then shuts the stages down in order,
//! [`Stage::Intake`] → [`Stage::Workers`] → [`Stage::Background`]: for each, it refuses new
//! registrations, tells the stage's tasks to stop through [`CloseHooks::stop`], and waits
//! until their permits are all dropped, or until the close budget
//! ([`CloseHooks::expired`]) runs out, in which case the stragglers are aborted
//! ([`CloseHooks::abort`]) and listed in the [`CloseReport`]. With a
//! [`CloseHooks::stopper`], the task whose exit empties a stage stops the next one itself, and
//! the caller of `close` is woken once instead of once per stage.
//!
//! Waiting is plain `Future` polling with wakers kept in the shared state, so the same code
//! runs on tokio in the watcher and under `loom::future::block_on` in the loom models
//! (`tests/loom.rs`); the shared state goes through [`sync`], which swaps in loom's types
//! under `--cfg loom`. There is no runtime dependency.
//!
//! ```
//! use std::future::Future;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//! use watcher_shutdown::{CloseHooks, Coordinator, Stage, TaskInfo};
//!
//! struct Hooks {
//!     stop_workers: Arc<AtomicBool>,
//! }
//!
//! impl CloseHooks for Hooks {
//!     fn stop(&self, stage: Stage) {
//!         if stage == Stage::Workers {
//!             self.stop_workers.store(true, Ordering::SeqCst);
//!         }
//!     }
//!     fn expired(&self) -> impl Future<Output = ()> {
//!         std::future::pending() // no budget in this example
//!     }
//!     fn abort(&self, _task: &TaskInfo) {}
//! }
//!
//! let coordinator = Coordinator::new();
//! let stop_workers = Arc::new(AtomicBool::new(false));
//! let permit = coordinator.register(Stage::Workers, "worker-0").unwrap();
//! let flag = stop_workers.clone();
//! let worker = std::thread::spawn(move || {
//!     let _permit = permit; // dropped when the worker ends
//!     while !flag.load(Ordering::SeqCst) {
//!         std::thread::yield_now();
//!     }
//! });
//!
//! let report = block_on(coordinator.close(&Hooks { stop_workers }));
//! assert_eq!(report.stages.len(), 3);
//! assert!(!report.budget_exhausted && report.aborted.is_empty());
//! assert!(coordinator.register(Stage::Workers, "late").is_err());
//! worker.join().unwrap();
//!
//! // Any executor does; this one parks the thread.
//! fn block_on<F: Future>(f: F) -> F::Output {
//!     use std::task::{Context, Poll, Wake, Waker};
//!     struct Unpark(std::thread::Thread);
//!     impl Wake for Unpark {
//!         fn wake(self: Arc<Self>) {
//!             self.0.unpark();
//!         }
//!     }
//!     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
//!     let mut f = std::pin::pin!(f);
//!     loop {
//!         match f.as_mut().poll(&mut Context::from_waker(&waker)) {
//!             Poll::Ready(out) => return out,
//!             Poll::Pending => std::thread::park(),
//!         }
//!     }
//! }
//! ```
#![warn(missing_docs)]

use std::future::Future;
use std::time::Duration;

mod coordinator;
mod permit;
mod stage;
mod state;
pub mod sync;
#[cfg(test)]
mod tests;

pub use coordinator::Coordinator;
pub use permit::Permit;
pub use stage::{Refused, Stage, TaskInfo};

/// What one close did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReport {
    /// Per stage, in close order, the time from stop to joined (or aborted).
    pub stages: Vec<(Stage, Duration)>,
    /// Whether the budget ran out.
    pub budget_exhausted: bool,
    /// Tasks that had to be aborted, in the order they were aborted.
    pub aborted: Vec<TaskInfo>,
}

/// What the coordinator asks of its owner during close.
///
/// The coordinator never holds its lock while it calls a hook, so hooks may drop permits,
/// register (and be refused), or query the coordinator.
pub trait CloseHooks {
    /// Tell every task of `stage` to stop (cancel its token, close its channel...).
    fn stop(&self, stage: Stage);
    /// Resolves when the close budget is used up.
    ///
    /// Called once per close, by the leading caller; the future is polled while a stage is
    /// being joined, and not after it has resolved.
    fn expired(&self) -> impl Future<Output = ()>;
    /// Abort a task that did not finish within the budget.
    ///
    /// The task is already deregistered when this is called: dropping its permit later is
    /// harmless.
    fn abort(&self, task: &TaskInfo);
    /// Optional: an owned [`Stopper`] that does what [`stop`](Self::stop) does, from any
    /// thread. Called once per close, by the leading caller.
    ///
    /// With one, the stages follow each other without the close's caller: the task that
    /// drops the last permit of a stage stops the next stage itself, in its `Drop`, and the
    /// caller is woken once, when the last stage is joined. Without one (the default), the
    /// caller is woken after each stage and stops the next. The order is the same; what a
    /// stopper saves is a wake-up of the caller per stage, which on a multi-thread runtime
    /// is a round trip between threads. Once the budget has run out, the caller takes over.
    fn stopper(&self) -> Option<Stopper> {
        None
    }
}

/// Stops a stage; see [`CloseHooks::stopper`]. It runs inside a [`Permit`]'s `Drop`, on
/// whatever thread drops it: it should only signal (cancel a token, close a channel), never
/// block.
pub type Stopper = std::sync::Arc<dyn Fn(Stage) + Send + Sync>;
