//! Start-up recovery: resolves the ledger's in-flight entries left by a crash (or an abort).

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::sync::Mutex;

use crate::mutex::lock;
use crate::names::{raw_name, status_name, FAILED_DIR, PROCESSED_DIR};
use crate::store::disk::{rename_into_place, sync_dir, write_temp};
use crate::store::identity::move_if_same;
use crate::store::ledger::{EntryState, FileId, Ledger};
use crate::store::status::{status_path, Outcome, Status};

/// For each in-flight entry (name, run):
/// - status of that run found, file still in the inbox → finish the move, record done;
/// - status found, file moved → record done;
/// - no status, file in the inbox → run it again, marked interrupted (returned);
/// - no status, file gone → forget it.
///
/// For each decided entry (its status record in the ledger): write the status file unless it is
/// there, finish the move if the file is still in the inbox, record done. Never run again.
///
/// A move counts as done when its destination exists, or when the file in the inbox under that
/// name is not the one processed (another file, see `file_id.rs`): that file was dropped again since, and is left
/// for this run to process.
///
/// Also removes temp files a crash left behind.
pub(crate) fn recover(dir: &Path, fsync: bool, ledger: &Ledger) -> io::Result<Interrupted> {
    for sub in [
        Path::new(""),
        Path::new(PROCESSED_DIR),
        Path::new(FAILED_DIR),
    ] {
        remove_temp_files(&dir.join(sub));
    }
    let mut interrupted = HashSet::new();
    for (name, entry) in ledger.entries() {
        let inbox = crate::names::inbox_path(dir, &name);
        let in_inbox = std::fs::symlink_metadata(&inbox).is_ok();
        match (entry.state, entry.status) {
            (EntryState::Done, _) => {}
            (EntryState::Decided, Some(status)) => {
                let dest_dir = dir.join(status.outcome.dir_name());
                let dest = dest_dir.join(raw_name(&status.moved_to));
                let written = status_path(&dest);
                if !Status::read(&written).is_ok_and(|s| s == status) {
                    let json = serde_json::to_vec_pretty(&status).map_err(io::Error::other)?;
                    let tmp_name = status_name(&status.moved_to);
                    let tmp = write_temp(&dest_dir, &tmp_name, None, &json, fsync)?;
                    rename_into_place(&tmp, &written)?;
                    if fsync {
                        sync_dir(&dest_dir)?;
                    }
                }
                finish_move(dir, fsync, &inbox, entry.file_id, &dest_dir, &dest)?;
                ledger.mark_done(&name, entry.run, status.outcome)?;
            }
            (EntryState::InFlight | EntryState::Decided, _) => {
                match (find_status(dir, &name, entry.run), in_inbox) {
                    (Some((outcome, dest)), _) => {
                        let dest_dir = dir.join(outcome.dir_name());
                        let dest = dest_dir.join(raw_name(&dest));
                        finish_move(dir, fsync, &inbox, None, &dest_dir, &dest)?;
                        ledger.mark_done(&name, entry.run, outcome)?;
                    }
                    (None, true) => {
                        interrupted.insert(name);
                    }
                    (None, false) => ledger.forget(&name)?,
                }
            }
        }
    }
    Ok(Interrupted(Mutex::new(interrupted)))
}

/// Moves `inbox` to `dest` unless the move already happened (`dest` exists), the file is gone,
/// or the file in the inbox is not the one processed (not `file_id`, when known);
/// with fsync on, both directories are synced before the caller records `done`.
fn finish_move(
    inbox_dir: &Path,
    fsync: bool,
    inbox: &Path,
    file_id: Option<FileId>,
    dest_dir: &Path,
    dest: &Path,
) -> io::Result<()> {
    // A file dropped again since is new, for this run to process.
    let moved = std::fs::symlink_metadata(dest).is_err() && move_if_same(inbox, file_id, dest)?;
    if moved && fsync {
        sync_dir(dest_dir)?;
        sync_dir(inbox_dir)?;
    }
    Ok(())
}

/// The names whose earlier run was interrupted (found in flight at start, file still in the
/// inbox): their next run is marked `interrupted: true` in its status.
pub(crate) struct Interrupted(Mutex<HashSet<String>>);

impl Interrupted {
    /// A run of `name` starts: whether an earlier one was interrupted (then forgotten here).
    pub fn take(&self, name: &str) -> bool {
        lock(&self.0).remove(name)
    }

    /// The run of `name` that [`Interrupted::take`] started was abandoned (handed back at close):
    /// the next run is still the one after an interruption.
    pub fn put_back(&self, name: &str) {
        lock(&self.0).insert(name.to_string());
    }
}

/// The status written by run `run` of `name`, if any: its outcome and destination name.
fn find_status(dir: &Path, name: &str, run: u64) -> Option<(Outcome, String)> {
    for outcome in [Outcome::Processed, Outcome::Failed] {
        for dest in [name.to_string(), format!("{name}.{run}")] {
            let p = status_path(&dir.join(outcome.dir_name()).join(raw_name(&dest)));
            if let Ok(s) = Status::read(&p) {
                if s.run == run && s.file == name {
                    return Some((outcome, dest));
                }
            }
        }
    }
    None
}

fn remove_temp_files(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if crate::names::is_temp(&n) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
