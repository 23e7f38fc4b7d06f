//! Status records: one JSON file next to each file in `processed/` or `failed/`.
//!
//! For a file `NAME` moved to `processed/DEST`, the status is `processed/DEST.status.json`.
//! `DEST` is `NAME`, or `NAME.<run>` when `NAME` is already taken by an earlier file.
//!
//! Commit order for one file (each step crash-safe; see [`crate::ledger`]):
//! 1. ledger: `in_flight(name, run)` (fsynced);
//! 2. process;
//! 3. status written atomically into the destination directory (records `run`);
//! 4. the file is renamed from the inbox into the destination directory (directories fsynced);
//! 5. ledger: `done(name, run)` (durable with the journal's next sync: nothing follows it, and
//!    until then the restart below reaches the same state from step 3's status).
//!
//! Each step starts only once the syncs of the one before have completed. With fsync on, the
//! syncs run off the runtime thread and the workers share them (group commit, see
//! `group_sync.rs`): one `fdatasync` of the journal, or one `fsync` of a directory, covers every
//! worker's record or rename made before it started.
//!
//! A worker overlaps two files: steps 4-5 of one run while it takes its next file, records it
//! (step 1) and processes it (step 2). Step 3 of a file is durable before the worker's next
//! command starts, so that after a crash the only file of a worker that runs again is the one
//! whose command was running (or whose command was about to start).
//!
//! On restart, an in-flight entry is resolved: if its status (same `run`) exists, the move is
//! finished (2-3 done, 4 not) or just recorded (4 done, 5 not), without running again;
//! otherwise, if the file is still in the inbox, it runs again with `interrupted: true`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Name of the subdirectory for processed files.
pub const PROCESSED_DIR: &str = "processed";
/// Name of the subdirectory for failed files.
pub const FAILED_DIR: &str = "failed";
/// Suffix of status files.
pub const STATUS_SUFFIX: &str = ".status.json";
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
    /// The file's name in the inbox.
    pub file: String,
    /// The file's name in `processed/` or `failed/`.
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
