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
//!
//! # Bounded by what is in flight
//!
//! A `done` ends its run's entry: the ledger forgets the file (the `done` line stays in the
//! journal until the next compaction, and replaying it forgets the file again). Exactly-once
//! needs nothing more once a file is durably moved: its status file beside it is the record of
//! what became of it, and a file dropped again under that name is a new one. So the entries in
//! memory, and in the snapshot, are the files whose commit is not finished: at most two per
//! worker, plus what a crash left for recovery; memory does not grow with the number of files
//! that went through. (Up to version 2 the ledger kept `done` entries for `cleanup_after`, 7 days
//! by default: about 500 bytes per file processed. Those are dropped when such a ledger is
//! opened.)
//!
//! # Keys
//!
//! Entries are keyed by the file's escaped name ([`crate::names`]), one-to-one since version 3.
//! A ledger written before (a snapshot of version 1 or 2, or a journal beside such a snapshot or
//! with none) keyed a UTF-8 name by itself, backslashes and all: its keys, and the names in its
//! status records, are migrated as it is read (`names::key_from_v2`), and opening it writes a
//! version-3 snapshot at once, before anything is appended, so that a journal is always read
//! with the keys of the snapshot beside it.

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
    /// Processed and moved to `processed/` or `failed/`. Only in ledgers written before version
    /// 3: a `done` record now removes the entry (see the [module docs](self)).
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

/// The snapshot format written. Version 2 added `decided` entries; version 3 made keys one-to-one
/// and holds no `done` entries. Versions 1 and 2 are read (and migrated, see the
/// [module docs](self)). An older watcher refuses a newer snapshot rather than misread it
/// (downgrading is not supported).
const VERSION: u32 = 3;
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
        let (mut entries, read) = read_snapshot(&dir.join(SNAPSHOT))?;
        let old_keys = read < VERSION;
        let (journal, replayed) = replay_journal(dir, &mut entries, fsync, old_keys)?;
        // An older (or no) snapshot is rewritten now, as version 3: from here on the journal
        // holds records with version 3's keys only.
        let dirty = replayed || old_keys;
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

    /// Compacts (the cleanup routine's tick). Returns how many entries were removed: always 0
    /// since version 3, which forgets a file at its `done` (see the [module docs](self));
    /// `older_than` is kept for callers of earlier versions. In-flight and decided entries are
    /// never pruned.
    pub fn prune(&self, older_than: Duration) -> io::Result<usize> {
        let _ = older_than;
        self.compact()?;
        Ok(0)
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
/// The entries of the snapshot at `snapshot` and the version it was written in (none and 0 when
/// there is no snapshot), refusing a corrupt one or one of a version this watcher does not
/// read. Entries of an older version are migrated (see the [module docs](self)).
fn read_snapshot(snapshot: &Path) -> io::Result<(BTreeMap<String, Entry>, u32)> {
    let bytes = match std::fs::read(snapshot) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((BTreeMap::new(), 0)),
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
    if snap.version == VERSION {
        return Ok((snap.entries, VERSION));
    }
    let mut entries = BTreeMap::new();
    for (name, entry) in snap.entries {
        if entry.state != EntryState::Done {
            entries.insert(crate::names::key_from_v2(&name), from_v2(entry));
        }
    }
    Ok((entries, snap.version))
}

/// An entry of a ledger before version 3, with the names in its status record migrated.
fn from_v2(mut entry: Entry) -> Entry {
    if let Some(s) = &mut entry.status {
        s.file = crate::names::key_from_v2(&s.file);
        s.moved_to = crate::names::key_from_v2(&s.moved_to);
    }
    entry
}

/// Replays the journal of `dir` over `entries` (creating the journal if there is none): the
/// open journal, and whether it held records (then the ledger must be compacted). With
/// `old_keys`, the journal was written beside a snapshot before version 3 (or none): its keys
/// are migrated.
///
/// Opened for writing too, so that a journal this watcher cannot write fails the start rather
/// than every file; replayed when the last run left records in it, then emptied by the
/// compaction at open and closed (the first append opens it again).
fn replay_journal(
    dir: &Path,
    entries: &mut BTreeMap<String, Entry>,
    fsync: bool,
    old_keys: bool,
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
                let Ok(mut rec) = serde_json::from_str::<Record>(&line) else {
                    continue;
                };
                if old_keys {
                    rec.name = crate::names::key_from_v2(&rec.name);
                    rec.entry = rec.entry.map(from_v2);
                }
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
        // A `done` ends the run it names only, and the ledger forgets the file (see the
        // module docs): appended late by a checkpoint, it must not end a later run of the
        // same name.
        Some(e) if e.state == EntryState::Done => {
            if entries.get(&rec.name).is_some_and(|old| old.run == e.run) {
                entries.remove(&rec.name);
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
        // The first open writes a (version 3) snapshot, so that its journal's keys are known.
        let written = std::fs::read_to_string(&snapshot).unwrap();
        assert_eq!(written, r#"{"version":3,"entries":{}}"#);
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
        assert_eq!(ledger.get("a"), None, "done: forgotten");
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
    /// of the current run does end it (the file is forgotten).
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
            let a = l.get("a").unwrap();
            assert_eq!((a.state, a.run), (EntryState::InFlight, 2));
            assert_eq!(l.get("b"), None);
        }
    }

    #[test]
    fn refuses_a_snapshot_of_another_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAPSHOT), br#"{"version":4,"entries":{}}"#).unwrap();
        let err = Ledger::open(dir.path()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("has version 4"), "{err}");
        // The version before `decided` entries is read; its `done` entries are dropped.
        std::fs::write(
            dir.path().join(SNAPSHOT),
            br#"{"version":1,"entries":{"a":{"state":"in_flight","run":7,"at":1},"b":{"state":"done","run":8,"outcome":"processed","at":1}}}"#,
        )
        .unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.get("a").unwrap().run, 7);
        assert_eq!(l.get("b"), None);
    }

    /// A ledger of version 2 keyed a UTF-8 name by itself, backslashes and all, and the name
    /// that is not UTF-8 `bad<0xff>.txt` as `bad\xff.txt`; its keys, in the snapshot, in the
    /// journal beside it and in a decided entry's status, are migrated to version 3's
    /// one-to-one escape, and the snapshot is rewritten as version 3 at once (a journal
    /// appended after it has version 3's keys, which must not be migrated twice).
    #[test]
    fn a_version_2_ledger_is_migrated_to_one_to_one_keys() {
        let dir = tempfile::tempdir().unwrap();
        let status = |name: &str| Status {
            file: name.to_string(),
            moved_to: name.to_string(),
            outcome: Outcome::Processed,
            attempts: 1,
            error: None,
            interrupted: false,
            run: 9,
            started_at: String::new(),
            finished_at: String::new(),
        };
        let decided = Entry {
            state: EntryState::Decided,
            run: 9,
            outcome: Some(Outcome::Processed),
            at: 1,
            status: Some(status(r"dec\ided")),
            file_id: None,
        };
        let in_flight = |run| Entry {
            state: EntryState::InFlight,
            run,
            outcome: None,
            at: 1,
            status: None,
            file_id: None,
        };
        let snapshot = serde_json::json!({
            "version": 2,
            "entries": {
                r"back\slash": in_flight(1),
                r"bad\xff.txt": in_flight(2),
                r"dec\ided": decided,
            },
        });
        std::fs::write(dir.path().join(SNAPSHOT), snapshot.to_string()).unwrap();
        let line = serde_json::to_string(&Record {
            name: r"jour\nal".to_string(),
            entry: Some(in_flight(3)),
        })
        .unwrap();
        std::fs::write(dir.path().join(JOURNAL), format!("{line}\n")).unwrap();
        let l = Ledger::open_with(dir.path(), false).unwrap();
        let keys: Vec<String> = l.entries().into_keys().collect();
        assert_eq!(
            keys,
            [r"back\\slash", r"bad\xff.txt", r"dec\\ided", r"jour\\nal"]
        );
        let s = l.get(r"dec\\ided").unwrap().status.unwrap();
        assert_eq!(
            (s.file.as_str(), s.moved_to.as_str()),
            (r"dec\\ided", r"dec\\ided")
        );
        let written = std::fs::read_to_string(dir.path().join(SNAPSHOT)).unwrap();
        assert!(written.starts_with(r#"{"version":3,"#), "{written}");
        // Appended now, replayed later: taken as it is.
        l.mark_in_flight(r"new\\one", 4).unwrap();
        drop(l);
        let l = Ledger::open_with(dir.path(), false).unwrap();
        assert_eq!(l.get(r"new\\one").unwrap().run, 4);
        assert_eq!(l.entries().len(), 5);
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
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(!e.contains_key("a"), "done: forgotten");
        assert_eq!(e["b"].state, EntryState::InFlight);
        // Opening compacted: the journal is empty, the snapshot holds everything.
        assert_eq!(
            std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len(),
            0
        );
        let l2 = Ledger::open(dir.path()).unwrap();
        assert_eq!(l2.entries(), e);
    }

    /// Memory bounded by what is in flight: a thousand files through the ledger leave only
    /// the one still in flight, however old; the control, a run that is not done, stays.
    #[test]
    fn done_files_are_forgotten_and_prune_keeps_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open_with(dir.path(), false).unwrap();
        l.mark_in_flight("busy", 1).unwrap();
        l.lock().entries.get_mut("busy").unwrap().at -= 7200;
        for run in 2..1002 {
            let name = format!("f{run}");
            l.mark_in_flight(&name, run).unwrap();
            let status = Status {
                file: name.clone(),
                moved_to: name.clone(),
                outcome: Outcome::Processed,
                attempts: 1,
                error: None,
                interrupted: false,
                run,
                started_at: String::new(),
                finished_at: String::new(),
            };
            l.mark_decided(&status, None).unwrap();
            l.mark_done(&name, run, Outcome::Processed).unwrap();
        }
        assert_eq!(l.entries().into_keys().collect::<Vec<_>>(), ["busy"]);
        assert_eq!(l.prune(Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(l.get("busy").unwrap().run, 1);
        l.forget("busy").unwrap();
        assert!(l.get("busy").is_none());
    }
}
