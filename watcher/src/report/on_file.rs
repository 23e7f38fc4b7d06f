//! [`FileOutcome`]: what became of one file, handed to the callback set with
//! [`Builder::on_file`](crate::Builder::on_file) as each file is committed (the CLI logs one
//! line per file from it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::store::status::Outcome;

/// One file, finished: moved to `processed/` or `failed/` with its status written.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileOutcome {
    /// The file's name in the inbox, escaped ([`escape_name`](crate::escape_name): one-to-one;
    /// a name that is not UTF-8 reads `bad\xff.txt`, a backslash is doubled).
    pub name: String,
    /// Processed or failed.
    pub outcome: Outcome,
    /// How many times the processor was called (0 when the file was refused before: a FIFO,
    /// a symlink out of the inbox, a file over `max_file_size`).
    pub attempts: u32,
    /// The most attempts a file gets: 1 + the configured retries.
    pub max_attempts: u32,
    /// From the start of its processing to its commit.
    pub duration: Duration,
    /// Why it failed (as in its status).
    pub error: Option<String>,
    /// Where it is now: `DIR/processed/NAME` or `DIR/failed/NAME` (or `NAME.<run>`), the name
    /// byte for byte as it was in the inbox.
    pub moved_to: PathBuf,
    /// True when an earlier run of this file was interrupted (crash, abort at close).
    pub interrupted: bool,
}

/// The callback of [`Builder::on_file`](crate::Builder::on_file).
pub(crate) type OnFile = Arc<dyn Fn(&FileOutcome) + Send + Sync>;
