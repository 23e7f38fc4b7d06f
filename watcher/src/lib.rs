//! `watcher`: a directory work queue. Every file dropped into a directory is processed exactly
//! once by a bounded pool of workers, then moved to `processed/` or `failed/` with a status
//! record; a ledger makes a restart idempotent, and close is staged and leaves nothing behind.
//!
//! - configure with [`Watcher::builder`] → [`Builder`] → [`Config`] ([`ConfigError`] names the
//!   field, the value and the allowed range);
//! - implement [`Processor`] (or use [`processor::from_fn`]);
//! - [`Watcher::start`] (current runtime) or [`Watcher::start_on`] (a given runtime handle);
//! - [`Watcher::metrics`], [`Watcher::finished`], [`Watcher::wait_for`]; Prometheus metrics
//!   served by the watcher ([`Builder::metrics_addr`]) or registered in an application's own
//!   registry ([`Watcher::register_metrics`]; names in [`exposition`]);
//! - [`Watcher::close`] → [`ShutdownReport`];
//! - many watchers can share one inotify instance (one fd, one task, no thread):
//!   [`WatchService`] (see [`service`]).
//!
//! Layout of a watched directory `DIR`:
//!
//! | path | what |
//! |---|---|
//! | `DIR/*` | the inbox: files matching the pattern are processed |
//! | `DIR/processed/NAME`, `DIR/processed/NAME.status.json` | processed files (under their own name, byte for byte; `NAME.<run>` when taken) and their status |
//! | `DIR/failed/NAME`, `DIR/failed/NAME.status.json` | failed files and their status |
//! | `DIR/.watcher-ledger.json`, `DIR/.watcher-ledger.journal` | the [`ledger`] |
//! | `DIR/.watcher.lock` | [`LOCK_FILE`]: locked (`flock`) while a watcher runs on `DIR` |
//! | `DIR/.watcher-groups` | the process groups of the commands running (Linux): a start after a crash ends those still running, see [`child`] |
//!
//! Ignored in the inbox: directories, the ledger, the lock file, `.watcher-*` and `*.tmp` temp
//! files, and `*.status.json` files. FIFOs, sockets and devices (and symlinks to them, or out of
//! the inbox) fail with a reason, without being opened; any name is processed, whatever its
//! bytes. Where a name must be a string (the ledger, status records, [`FileOutcome`], logs) it is
//! its [`escape_name`], one-to-one: a backslash is `\\`, a byte that is not UTF-8 `\xHH`
//! (`bad\xff.txt`); [`unescape_name`] gives the bytes back.
//!
//! One watcher per directory: [`Watcher::start`] takes an exclusive advisory lock on
//! [`LOCK_FILE`] and holds it until [`Watcher::close`] returns (or, after a drop without
//! close, until the last of its tasks has ended). A second start on the same directory, in
//! this process or another, fails with [`StartError::DirectoryLocked`].

#![warn(missing_docs)]

// The stages, in the order a file meets them, and what runs them; each folder's `mod.rs` says
// what it owns and what it may call (`ARCHITECTURE.md` draws the arrows).
mod intake;
mod lifecycle;
mod report;
mod store;
mod work;

// Shared by the stages: the wiring, the configuration, the user's processor, the inbox's file
// names, the inotify service shared by many watchers.
pub mod config;
mod engine;
mod error;
mod mutex;
mod names;
pub mod processor;
// The shared service reads inotify directly: Linux only. Elsewhere every watcher has its own
// notify instance.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub mod service;
mod warnings;

pub use report::{exposition, metrics};
pub use store::{ledger, status};
pub use work::child;

pub use config::{Builder, Config, ConfigError, Mode};
pub use engine::Watcher;
pub use error::StartError;
pub use lifecycle::shutdown_report::ShutdownReport;
pub use names::{escape_name, unescape_name, LOCK_FILE};
pub use processor::{ErrorKind, ProcessError, Processor};
pub use report::metrics::{Histogram, Metrics};
pub use report::on_file::FileOutcome;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub use service::WatchService;
pub use store::status::{Outcome, Status};
pub use watcher_shutdown::{Stage, TaskInfo};
pub use work::child::KilledCommand;
