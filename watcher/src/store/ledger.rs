//! The ledger: what was processed, kept in the watched directory so that a restart neither
//! processes a file twice nor loses one.
//!
//! Two files:
//! - [`SNAPSHOT`] (`.watcher-ledger.json`): the whole ledger, always replaced atomically
//!   (write a temp file, fsync it, rename it over the old one, fsync the directory);
//! - [`JOURNAL`] (`.watcher-ledger.journal`): one JSON record per line, each appended and fsynced
//!   before the step it records goes on. A torn last line (crash mid-append) is ignored.
//!   The workers share those syncs (group commit, `group_sync.rs`): a worker appends its
//!   record, then awaits one `fdatasync` that started after its append, which covers every
//!   record appended before it.
//!
//! Opening replays the journal over the snapshot and compacts (a new snapshot, then an empty
//! journal; replaying a journal twice is harmless, every record sets a state). The journal is
//! also compacted once it holds [`COMPACT_EVERY`] records, by the cleanup routine, and at close,
//! so a burst of many files costs one append per step rather than one full rewrite. A
//! compaction with nothing new writes nothing: starting or closing an idle watcher, and the
//! cleanup routine's ticks, write no record and no snapshot. Opening the ledger also opens (or
//! creates) the journal, so that one this watcher cannot write fails the start, then closes it;
//! the first append opens it again and [`Ledger::close`] closes it: an idle watcher holds no fd
//! for it.
//!
//! Per file, a worker records `in_flight` (durable before the file is read), `decided` with the
//! file's whole status record once it has been processed (durable before the worker's next
//! command starts), and `done` after the status file was written and the file moved out of the
//! inbox (see [`crate::store::status`] for the order). A worker's `done` is not synced on its own: no
//! step follows it, and until it is durable (with the journal's next sync or compaction) a
//! restart reaches the same state from the `decided` entry, without running the file again.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::group_sync::GroupSync;

use crate::store::disk::{at, sync_dir, write_atomic};
pub use crate::store::identity::FileId;
use crate::store::status::{Outcome, Status};

pub use crate::names::{JOURNAL, SNAPSHOT};
/// The journal is compacted into the snapshot after this many records.
pub const COMPACT_EVERY: usize = 4096;

/// The state of one file in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// A worker started processing it and has not finished (or crashed).
    InFlight,
    /// Processed (or failed), its status record in the entry: the status file and the move out
    /// of the inbox may not have happened yet. A restart finishes them without running the
    /// file again.
    Decided,
    /// Processed and moved to `processed/` or `failed/`.
    Done,
}

/// One ledger entry, keyed by file name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// In flight or done.
    pub state: EntryState,
    /// The id of the run (one processing of one file), also written in its status file.
    pub run: u64,
    /// The outcome, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// When the entry was last written, in seconds since the Unix epoch.
    pub at: u64,
    /// The status record, while [`EntryState::Decided`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// While [`EntryState::Decided`], which file the name stood for in the inbox (Unix): a
    /// restart moves the file in the inbox only if it is still that one, not a new file dropped
    /// under the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<FileId>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    name: String,
    entry: Option<Entry>,
}

/// The snapshot format written. Version 2 added `decided` entries; version 1 snapshots are read
/// too. An older watcher refuses a version-2 snapshot rather than misread it (downgrading is not
/// supported).
const VERSION: u32 = 2;
/// The oldest snapshot format read.
const OLDEST_READ: u32 = 1;

#[derive(Deserialize, Default)]
struct Snapshot {
    version: u32,
    entries: BTreeMap<String, Entry>,
}

/// What [`Snapshot`] reads, written without a copy of the entries.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    entries: &'a BTreeMap<String, Entry>,
}

/// The ledger of one watched directory. All public methods are synchronous and short (one
/// append and one fsync, or one snapshot write); they are safe to call from several workers.
/// The watcher's workers append without a sync and await a shared one instead (see the
/// [module docs](self)).
pub struct Ledger {
    dir: PathBuf,
    fsync: bool,
    book: Mutex<Book>,
    /// Group commit of the workers' appends.
    synced: GroupSync,
}

/// The ledger's entries and its journal, behind the ledger's one lock.
struct Book {
    entries: BTreeMap<String, Entry>,
    /// Open from the first append (an idle watcher holds no fd for it) until close.
    journal: Option<Arc<File>>,
    /// Set by [`Ledger::close`]: changes fail from then on.
    closed: bool,
    appended: usize,
    /// The snapshot on disk is behind `entries` (or the journal holds records): a compaction
    /// has something to write. A start or close with nothing new then writes nothing.
    dirty: bool,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Ledger {
    /// Opens (or creates) the ledger of `dir`, replays its journal and compacts it.
    pub fn open(dir: &Path) -> io::Result<Ledger> {
        Self::open_with(dir, true)
    }

    pub(crate) fn open_with(dir: &Path, fsync: bool) -> io::Result<Ledger> {
        let mut entries = read_snapshot(&dir.join(SNAPSHOT))?;
        let (journal, dirty) = replay_journal(dir, &mut entries, fsync)?;
        let ledger = Ledger {
            dir: dir.to_path_buf(),
            fsync,
            synced: GroupSync::default(),
            book: Mutex::new(Book {
                entries,
                journal: Some(Arc::new(journal)),
                closed: false,
                appended: 0,
                dirty,
            }),
        };
        ledger.compact()?;
        ledger.lock().journal = None;
        Ok(ledger)
    }

    /// Records that `name` is being processed by run `run`.
    pub fn mark_in_flight(&self, name: &str, run: u64) -> io::Result<()> {
        self.append(in_flight(name, run), SyncNow(true))
    }

    /// Records that run `run` of `name` is done (the file has been moved).
    pub fn mark_done(&self, name: &str, run: u64, outcome: Outcome) -> io::Result<()> {
        self.append(done(name, run, outcome), SyncNow(true))
    }

    /// Records the result of run `status.run` of `status.file` (`decided`), its status record
    /// with it: a restart writes that status file and moves the file, without running it again.
    /// `file_id`: which file it was in the inbox, when known (see [`Entry::file_id`]).
    pub fn mark_decided(&self, status: &Status, file_id: Option<FileId>) -> io::Result<()> {
        self.append(decided(status, file_id), SyncNow(true))
    }

    /// Removes the entry of `name`.
    pub fn forget(&self, name: &str) -> io::Result<()> {
        self.append(
            Record {
                name: name.to_string(),
                entry: None,
            },
            SyncNow(true),
        )
    }

    /// A worker's [`mark_in_flight`](Self::mark_in_flight): appended now, durable once
    /// [`synced`](Self::synced) returns.
    pub(crate) fn record_in_flight(&self, name: &str, run: u64) -> io::Result<()> {
        self.append(in_flight(name, run), SyncNow(false))
    }

    /// A worker's [`mark_decided`](Self::mark_decided): appended now, durable once
    /// [`synced`](Self::synced) returns.
    pub(crate) fn record_decided(
        &self,
        status: &Status,
        file_id: Option<FileId>,
    ) -> io::Result<()> {
        self.append(decided(status, file_id), SyncNow(false))
    }

    /// A worker's [`mark_done`](Self::mark_done): appended now, durable with the journal's
    /// next sync or compaction (see the [module docs](self) for why that is enough).
    pub(crate) fn record_done(&self, name: &str, run: u64, outcome: Outcome) -> io::Result<()> {
        self.append(done(name, run, outcome), SyncNow(false))
    }

    /// Returns once every record appended before this call is durable (with fsync off, at
    /// once): one `fdatasync` of the journal, shared with the workers that await it at the
    /// same time, run off the runtime thread (`group_sync.rs`).
    pub(crate) async fn synced(&self) -> io::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        // The journal is never replaced while open; once closed (or not open yet), the records
        // are in the snapshot, which compaction synced.
        let journal = self.lock().journal.clone();
        let path = self.dir.join(JOURNAL);
        self.synced
            .sync(move || match journal {
                Some(j) => j.sync_data().map_err(at("sync", &path)),
                None => Ok(()),
            })
            .await
    }

    /// A copy of all entries.
    pub fn entries(&self) -> BTreeMap<String, Entry> {
        self.lock().entries.clone()
    }

    /// The entry of `name`, if any.
    pub fn get(&self, name: &str) -> Option<Entry> {
        self.lock().entries.get(name).cloned()
    }

    /// Removes `done` entries written more than `older_than` ago, then compacts. Returns how
    /// many were removed. In-flight and decided entries are never pruned.
    pub fn prune(&self, older_than: Duration) -> io::Result<usize> {
        let cutoff = unix_now().saturating_sub(older_than.as_secs());
        let removed = {
            let mut book = self.lock();
            let before = book.entries.len();
            book.entries
                .retain(|_, e| e.state != EntryState::Done || e.at >= cutoff);
            let removed = before - book.entries.len();
            book.dirty |= removed > 0;
            removed
        };
        self.compact()?;
        Ok(removed)
    }

    /// Compacts, then closes the journal (its fd goes now, not when the ledger is dropped).
    /// Later changes fail; reads still work.
    pub fn close(&self) -> io::Result<()> {
        let compacted = self.compact();
        let mut book = self.lock();
        book.closed = true;
        book.journal = None;
        compacted
    }

    /// Writes a new snapshot atomically and empties the journal; does nothing when nothing
    /// changed since the last compaction.
    pub fn compact(&self) -> io::Result<()> {
        let mut guard = self.lock();
        let book = &mut *guard;
        if !book.dirty {
            return Ok(());
        }
        let journal_path = self.dir.join(JOURNAL);
        if book.closed {
            return Err(closed(&journal_path));
        }
        let bytes = serde_json::to_vec(&SnapshotRef {
            version: VERSION,
            entries: &book.entries,
        })
        .map_err(io::Error::other)?;
        write_atomic(&self.dir, SNAPSHOT, &bytes, self.fsync)?;
        // Not open: nothing was appended since the last compaction, the journal is empty.
        if let Some(journal) = &book.journal {
            journal.set_len(0).map_err(at("truncate", &journal_path))?;
            if self.fsync {
                journal.sync_data().map_err(at("sync", &journal_path))?;
            }
        }
        book.appended = 0;
        book.dirty = false;
        Ok(())
    }

    /// Opens the journal for appending (it exists since the ledger was opened, unless removed
    /// behind the watcher's back: then it is created again).
    fn open_journal(&self) -> io::Result<File> {
        let path = self.dir.join(JOURNAL);
        match OpenOptions::new().append(true).open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_journal(&self.dir, self.fsync),
            opened => opened.map_err(at("open", &path)),
        }
    }

    fn append(&self, rec: Record, sync_now: SyncNow) -> io::Result<()> {
        let mut line = serde_json::to_vec(&rec).map_err(io::Error::other)?;
        line.push(b'\n');
        let compact = {
            let mut guard = self.lock();
            let book = &mut *guard;
            let journal_path = || self.dir.join(JOURNAL);
            if book.closed {
                return Err(closed(&journal_path()));
            }
            let journal = match &mut book.journal {
                Some(journal) => journal,
                slot @ None => slot.insert(Arc::new(self.open_journal()?)),
            };
            let failed = |e| at("append to", &journal_path())(e);
            (&**journal).write_all(&line).map_err(failed)?;
            if self.fsync && sync_now.0 {
                journal.sync_data().map_err(failed)?;
            }
            apply(&mut book.entries, rec);
            book.appended += 1;
            book.dirty = true;
            book.appended >= COMPACT_EVERY
        };
        if compact {
            self.compact()?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        crate::mutex::lock(&self.book)
    }
}

/// Whether an append syncs the journal before it returns (with fsync on).
struct SyncNow(bool);

fn in_flight(name: &str, run: u64) -> Record {
    Record {
        name: name.to_string(),
        entry: Some(Entry {
            state: EntryState::InFlight,
            run,
            outcome: None,
            at: unix_now(),
            status: None,
            file_id: None,
        }),
    }
}

fn decided(status: &Status, file_id: Option<FileId>) -> Record {
    Record {
        name: status.file.clone(),
        entry: Some(Entry {
            state: EntryState::Decided,
            run: status.run,
            outcome: Some(status.outcome),
            at: unix_now(),
            status: Some(status.clone()),
            file_id,
        }),
    }
}

fn done(name: &str, run: u64, outcome: Outcome) -> Record {
    Record {
        name: name.to_string(),
        entry: Some(Entry {
            state: EntryState::Done,
            run,
            outcome: Some(outcome),
            at: unix_now(),
            status: None,
            file_id: None,
        }),
    }
}

/// Creates the journal of `dir` for appending; with `fsync`, its name is made durable before
/// any record relies on it.
/// The entries of the snapshot at `snapshot` (none when there is no snapshot), refusing a
/// corrupt one or one of a version this watcher does not read.
fn read_snapshot(snapshot: &Path) -> io::Result<BTreeMap<String, Entry>> {
    let bytes = match std::fs::read(snapshot) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(at("read", snapshot)(e)),
    };
    let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ledger {} is corrupt: {e}", snapshot.display()),
        )
    })?;
    if !(OLDEST_READ..=VERSION).contains(&snap.version) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "ledger {} has version {}; this watcher reads versions {OLDEST_READ} to {VERSION}",
                snapshot.display(),
                snap.version
            ),
        ));
    }
    Ok(snap.entries)
}

/// Replays the journal of `dir` over `entries` (creating the journal if there is none): the
/// open journal, and whether it held records (then the ledger must be compacted).
///
/// Opened for writing too, so that a journal this watcher cannot write fails the start rather
/// than every file; replayed when the last run left records in it, then emptied by the
/// compaction at open and closed (the first append opens it again).
fn replay_journal(
    dir: &Path,
    entries: &mut BTreeMap<String, Entry>,
    fsync: bool,
) -> io::Result<(File, bool)> {
    let journal_path = dir.join(JOURNAL);
    let mut dirty = false;
    let journal = match OpenOptions::new()
        .read(true)
        .write(true)
        .open(&journal_path)
    {
        Ok(f) => {
            for line in BufReader::new(&f).lines() {
                // Even a torn line must be compacted away.
                dirty = true;
                let line = line.map_err(at("read", &journal_path))?;
                // A torn last line (crash mid-append) does not parse: ignore it.
                let Ok(rec) = serde_json::from_str::<Record>(&line) else {
                    continue;
                };
                apply(entries, rec);
            }
            f
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_journal(dir, fsync)?,
        Err(e) => return Err(at("open", &journal_path)(e)),
    };
    Ok((journal, dirty))
}

fn create_journal(dir: &Path, fsync: bool) -> io::Result<File> {
    let path = dir.join(JOURNAL);
    let journal = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(at("create", &path))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(journal)
}

/// The error of a change after [`Ledger::close`].
fn closed(journal: &Path) -> io::Error {
    io::Error::other(format!("ledger journal {} is closed", journal.display()))
}

fn apply(entries: &mut BTreeMap<String, Entry>, rec: Record) {
    match rec.entry {
        // A `done` ends the run it names only: appended late by a checkpoint, it must not end
        // a later run of the same name.
        Some(e) if e.state == EntryState::Done => {
            if entries.get(&rec.name).is_none_or(|old| old.run == e.run) {
                entries.insert(rec.name, e);
            }
        }
        Some(e) => {
            entries.insert(rec.name, e);
        }
        None => {
            entries.remove(&rec.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_writes_only_when_something_changed() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join(SNAPSHOT);
        let ledger = Ledger::open_with(dir.path(), false).unwrap();
        assert!(!snapshot.exists(), "an empty ledger writes no snapshot");
        ledger.mark_in_flight("a", 1).unwrap();
        ledger.compact().unwrap();
        // Mark the snapshot as written long ago: a rewrite would give it a fresh mtime.
        let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(&snapshot)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let mtime = || std::fs::metadata(&snapshot).unwrap().modified().unwrap();
        // Nothing new: neither compaction nor a prune that removes nothing rewrites it.
        ledger.compact().unwrap();
        ledger.prune(Duration::from_secs(3600)).unwrap();
        assert_eq!(mtime(), long_ago);
        drop(ledger);
        // Reopening a compacted ledger writes nothing either.
        let ledger = Ledger::open_with(dir.path(), false).unwrap();
        assert_eq!(mtime(), long_ago);
        // Something new: the next compaction does write.
        ledger.mark_done("a", 1, Outcome::Processed).unwrap();
        ledger.compact().unwrap();
        assert_ne!(mtime(), long_ago);
        assert_eq!(ledger.get("a").unwrap().state, EntryState::Done);
    }

    #[test]
    fn close_compacts_releases_the_journal_and_refuses_changes() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join(JOURNAL);
        // Open fds of this process on the journal (None where /proc is missing).
        let open_on_journal = || {
            let fds = std::fs::read_dir("/proc/self/fd").ok()?;
            let targets = fds
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok());
            Some(targets.filter(|t| *t == journal).count())
        };
        let l = Ledger::open_with(dir.path(), false).unwrap();
        assert!(matches!(open_on_journal(), Some(0) | None), "opened lazily");
        l.mark_in_flight("a", 1).unwrap();
        assert_ne!(open_on_journal(), Some(0));
        l.close().unwrap();
        assert!(matches!(open_on_journal(), Some(0) | None));
        let err = l.mark_done("a", 1, Outcome::Processed).unwrap_err();
        assert!(err.to_string().contains("is closed"), "{err}");
        assert_eq!(l.get("a").unwrap().state, EntryState::InFlight);
        l.close().unwrap();
        // Compacted before closing: the snapshot holds the entry.
        let reopened = Ledger::open_with(dir.path(), false).unwrap();
        assert_eq!(reopened.get("a").unwrap().state, EntryState::InFlight);
    }

    /// A checkpoint appends `done` late: by then a later run of the same name may have started.
    /// That `done` must not end the later run, in memory or on replay. The control: a `done`
    /// of the current run does end it.
    #[test]
    fn a_late_done_does_not_end_a_later_run_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_with(dir.path(), false).unwrap();
        ledger.mark_in_flight("a", 1).unwrap();
        ledger.mark_in_flight("a", 2).unwrap();
        ledger.mark_done("a", 1, Outcome::Processed).unwrap();
        ledger.mark_in_flight("b", 3).unwrap();
        ledger.mark_done("b", 3, Outcome::Failed).unwrap();
        for l in [&ledger, &Ledger::open_with(dir.path(), false).unwrap()] {
            let (a, b) = (l.get("a").unwrap(), l.get("b").unwrap());
            assert_eq!((a.state, a.run), (EntryState::InFlight, 2));
            assert_eq!(
                (b.state, b.outcome),
                (EntryState::Done, Some(Outcome::Failed))
            );
        }
    }

    #[test]
    fn refuses_a_snapshot_of_another_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAPSHOT), br#"{"version":3,"entries":{}}"#).unwrap();
        let err = Ledger::open(dir.path()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("has version 3"), "{err}");
        // The version before `decided` entries is read.
        std::fs::write(
            dir.path().join(SNAPSHOT),
            br#"{"version":1,"entries":{"a":{"state":"done","run":7,"outcome":"processed","at":1}}}"#,
        )
        .unwrap();
        assert_eq!(Ledger::open(dir.path()).unwrap().get("a").unwrap().run, 7);
    }

    #[test]
    fn replays_journal_and_ignores_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let l = Ledger::open(dir.path()).unwrap();
            l.mark_in_flight("a", 1).unwrap();
            l.mark_in_flight("b", 2).unwrap();
            l.mark_done("a", 1, Outcome::Processed).unwrap();
        }
        // A crash mid-append leaves a torn line.
        let mut j = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        j.write_all(b"{\"name\":\"c\",\"ent").unwrap();
        drop(j);
        let l = Ledger::open(dir.path()).unwrap();
        let e = l.entries();
        assert_eq!(e.len(), 2);
        assert_eq!(e["a"].state, EntryState::Done);
        assert_eq!(e["a"].outcome, Some(Outcome::Processed));
        assert_eq!(e["b"].state, EntryState::InFlight);
        // Opening compacted: the journal is empty, the snapshot holds everything.
        assert_eq!(
            std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len(),
            0
        );
        let l2 = Ledger::open(dir.path()).unwrap();
        assert_eq!(l2.entries(), e);
    }

    #[test]
    fn prune_keeps_in_flight_and_recent() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        l.mark_done("old", 1, Outcome::Failed).unwrap();
        l.mark_in_flight("busy", 2).unwrap();
        {
            let mut book = l.lock();
            book.entries.get_mut("old").unwrap().at -= 7200;
            book.entries.get_mut("busy").unwrap().at -= 7200;
        }
        l.mark_done("new", 3, Outcome::Processed).unwrap();
        assert_eq!(l.prune(Duration::from_secs(3600)).unwrap(), 1);
        let e = l.entries();
        assert!(e.contains_key("busy") && e.contains_key("new") && !e.contains_key("old"));
        l.forget("new").unwrap();
        assert!(l.get("new").is_none());
    }
}
