//! Status records: one JSON file next to each file in `processed/` or `failed/`.
//!
//! For a file `NAME` moved to `processed/DEST`, the status is `processed/DEST.status.json`.
//! `DEST` is `NAME`, or `NAME.<run>` when `NAME` is already taken by an earlier file; both are
//! the file's own bytes (the record's `file` and `moved_to` hold their escapes, see
//! [`crate::names`]).
//!
//! Commit order for one file (each step crash-safe; see [`crate::store::ledger`]):
//! 1. ledger: `in_flight(name, run)` (fsynced);
//! 2. process;
//! 3. ledger: `decided(name, run)` with the whole status record and the file's inode
//!    (fsynced): from here on the file never runs again;
//! 4. status written atomically into the destination directory (a temp file renamed), then the
//!    file renamed from the inbox into the destination directory;
//! 5. the status file and both directories fsynced, then ledger: `done(name, run)` (durable
//!    with the journal's next sync: nothing follows it, and until then the restart below
//!    reaches the same state from step 3).
//!
//! Each step starts only once the syncs of the one before have completed. With fsync on, the
//! syncs run off the runtime thread and are shared: the workers share the journal's
//! `fdatasync` (group commit, see `group_sync.rs`), and step 5 is a checkpoint of many files at
//! once (see `checkpoint.rs`): it syncs every status file and each directory once, then appends
//! their `done` records.
//!
//! A worker overlaps two files: step 4 of one runs while it processes the next. Step 3 of a
//! file is durable before the worker's next command starts, so that after a crash the only
//! file of a worker that runs again is the one whose command was running; when the next file
//! is already queued, its step 1 shares step 3's sync.
//!
//! On restart, a decided entry is finished from the ledger: its status file written unless it
//! is there, the move done unless its destination exists or the inbox holds another file under
//! that name (see `file_id.rs`), then `done`; never run again. An
//! in-flight entry is resolved: if its status (same `run`) exists (written by an earlier
//! version, which wrote the status before the ledger), the move is finished or just recorded,
//! without running again; otherwise, if the file is still in the inbox, it runs again with
//! `interrupted: true`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use crate::names::{FAILED_DIR, PROCESSED_DIR, STATUS_SUFFIX};
/// Error messages in status files are cut to this many bytes (keeping the tail).
pub const MAX_ERROR_LEN: usize = 4096;

/// How processing ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Moved to `processed/`.
    Processed,
    /// Moved to `failed/`.
    Failed,
}

impl Outcome {
    /// The subdirectory for this outcome.
    pub fn dir_name(self) -> &'static str {
        match self {
            Outcome::Processed => PROCESSED_DIR,
            Outcome::Failed => FAILED_DIR,
        }
    }
}

/// The status record of one processed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The file's name in the inbox, escaped ([`escape_name`](crate::escape_name): one-to-one,
    /// the name itself for UTF-8 without a backslash).
    pub file: String,
    /// The file's name in `processed/` or `failed/`, escaped the same way: the file there has
    /// the name [`unescape_name`](crate::unescape_name) gives back, byte for byte.
    pub moved_to: String,
    /// Processed or failed.
    pub outcome: Outcome,
    /// How many times the processor was called (0 when the file was refused before).
    pub attempts: u32,
    /// Why it failed (at most [`MAX_ERROR_LEN`] bytes).
    pub error: Option<String>,
    /// True when an earlier run of this file was interrupted (crash, abort at close).
    pub interrupted: bool,
    /// The run id, as in the ledger.
    pub run: u64,
    /// When processing started (RFC 3339).
    pub started_at: String,
    /// When processing finished (RFC 3339).
    pub finished_at: String,
}

impl Status {
    /// Reads the status record at `path`.
    pub fn read(path: &Path) -> std::io::Result<Status> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}

/// The status path of a file moved to `dest`.
pub fn status_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(STATUS_SUFFIX);
    PathBuf::from(s)
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Cuts `msg` to at most [`MAX_ERROR_LEN`] bytes, keeping the end (where errors usually are).
pub(crate) fn bound_message(msg: &str) -> String {
    if msg.len() <= MAX_ERROR_LEN {
        return msg.to_string();
    }
    let marker = "[…truncated] ";
    let mut start = msg.len() - (MAX_ERROR_LEN - marker.len());
    while !msg.is_char_boundary(start) {
        start += 1;
    }
    format!("{marker}{}", &msg[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_messages_on_char_boundaries() {
        let long = "é".repeat(5000);
        let b = bound_message(&long);
        assert!(b.len() <= MAX_ERROR_LEN);
        assert!(b.starts_with("[…truncated]"));
        assert_eq!(bound_message("short"), "short");
    }
}
