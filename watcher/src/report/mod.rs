//! What the watcher tells its user while it runs: the counters and the [`Metrics`](metrics::Metrics)
//! snapshot, progress and completion (what `finished` and `wait_for` wait on), and the
//! [`FileOutcome`](on_file::FileOutcome) handed to the `on_file` callback.
//!
//! Owns the counters and the progress notifications; each changes through one method per event.
//! It may call only the store's status types (a file's outcome); the stages call it.

pub mod exposition;
pub(crate) mod http;
pub mod metrics;
pub(crate) mod on_file;
pub(crate) mod progress;
