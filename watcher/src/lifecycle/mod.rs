//! The lifecycle of a running watcher: its tasks, stopped in stages (over `watcher-shutdown`'s
//! coordinator) and aborted past the budget; the directory lock and when a dropped watcher may
//! release it; the background routines; and the [`ShutdownReport`](shutdown_report::ShutdownReport)
//! that close returns.
//!
//! Owns the tasks, their stage tokens and trackers, and the lock. It may call every stage it
//! runs (intake's debounce state and unwatcher, the store's ledger, the reports, the work's
//! killed commands); only the engine calls it.

pub(crate) mod background;
pub(crate) mod dirlock;
pub(crate) mod shutdown_report;
pub(crate) mod tasks;
