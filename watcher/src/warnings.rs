//! Problems the watcher works around on its own, reported as they happen: a ledger record or a
//! commit it could not write (the file is left for the next start to finish), a checkpoint that
//! failed, a compaction or cleanup of the ledger that failed.
//!
//! Why a hook and not a print: an application has its own log, and a CLI that prints one JSON
//! object per line (`--log-format json`) cannot have free text in between. By default, with no
//! hook set ([`Builder::on_warning`](crate::Builder::on_warning)), each goes to stderr as
//! `watcher: MESSAGE`.

use std::fmt::Display;
use std::sync::Arc;

/// The hook of [`Builder::on_warning`](crate::Builder::on_warning).
type OnWarning = Arc<dyn Fn(&str) + Send + Sync>;

/// Where the watcher's warnings go.
#[derive(Clone, Default)]
pub(crate) struct Warnings(Option<OnWarning>);

impl Warnings {
    /// Warnings that go to `f`.
    pub fn to(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Warnings(Some(Arc::new(f)))
    }

    /// Reports `message`.
    pub fn warn(&self, message: impl Display) {
        match &self.0 {
            Some(f) => f(&message.to_string()),
            None => eprintln!("watcher: {message}"),
        }
    }
}
