//! The process groups of the commands that are running, on disk: what a start after a crash
//! needs to end the commands the crashed watcher left running (`work/group_end.rs` ends them;
//! `work/child.rs` records and removes them).
//!
//! # What a record holds, and why
//!
//! A command runs as the leader of a process group of its own (see `work/child.rs`), so its
//! group's id is the leader's pid. A pid is reused once its process is reaped (`pid_max` is
//! 32768 on many systems): after a crash, the recorded pid may name an unrelated process. So a
//! record also holds the leader's start time (field 22 of `/proc/<pid>/stat`, clock ticks
//! since boot) and the boot id (`/proc/sys/kernel/random/boot_id`): a process with that pid is
//! the recorded leader only if it started at that tick of that boot. And the run id, which
//! names the ledger entry of the file the command was processing: the record holds no file
//! name, so it never depends on how names are keyed or escaped.
//!
//! # The file: fixed slots
//!
//! `DIR/.watcher-groups` is a text file of fixed-size slots, one line each
//! ([`SLOT_LEN`] bytes with its newline): `PGID START BOOT_ID RUN`, padded with spaces; a free
//! slot is all spaces. A command takes a free slot (or a new one at the end) and writes it with
//! one `pwrite`; when its group is gone the slot is blanked and reused. The file is as long as
//! the most commands that ran at once, never longer: its size and this watcher's memory do not
//! grow with the files processed. It is read at start (the records a crash left) and then
//! emptied; `cat` shows it.
//!
//! # Why no fsync
//!
//! A record matters only while the kernel that ran its command runs: after a power loss or a
//! kernel crash no process of the earlier boot is left, which the boot id makes explicit. And
//! within one boot, a `write` that has returned is seen by every later reader of the file,
//! whatever becomes of the writing process (a `SIGKILL` included): the page cache is the
//! kernel's, not the process's. So a record is durable for every case where it is needed as
//! soon as its `pwrite` returns, and syncing it to the disk would cost a flush per command for
//! nothing (the records are kept out of the ledger's syncs for the same reason).
//!
//! Linux only (it reads `/proc`); elsewhere nothing is recorded.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::mutex::lock;

/// File name of the process-group records in the watched directory (a `.watcher-` name:
/// intake never takes it for work).
pub(crate) const GROUPS_FILE: &str = ".watcher-groups";

/// Bytes per slot, its newline included.
pub(crate) const SLOT_LEN: usize = 96;

/// A process, as told apart from a later one that reuses its pid: its pid and its start time
/// (clock ticks since boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcessId {
    /// The pid (for a group's leader, also the group's id).
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`.
    pub start: u64,
}

/// What `/proc/<pid>/stat` says of a process: its state letter, its process group and its start
/// time; `None` when there is no such process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// `R`, `S`, `D`, `T`, `Z` (zombie: exited, not yet reaped), ...
    pub state: char,
    /// The process group's id (field 5).
    pub pgrp: u32,
    /// The start time (field 22).
    pub start: u64,
}

impl Stat {
    /// Reads `/proc/<pid>/stat`.
    pub fn of(pid: u32) -> Option<Stat> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Stat::parse(&s)
    }

    fn parse(s: &str) -> Option<Stat> {
        // The name (field 2) is in parentheses and may hold spaces or parentheses: the fields
        // that follow start after the last ')'. Field 3 is then the first.
        let rest = s.get(s.rfind(')')? + 2..)?;
        let fields: Vec<&str> = rest.split(' ').collect();
        Some(Stat {
            state: fields.first()?.chars().next()?,
            pgrp: fields.get(2)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
        })
    }

    /// Whether the process has exited (a zombie, or dead): it runs no code.
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// This boot's id, or `None` where the system does not say (not Linux).
pub(crate) fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_string())
}

/// One record: the group of a command that was running, by its leader, with the boot id and the
/// run id of the file it was processing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// The leader (its pid is the group's id).
    pub leader: ProcessId,
    /// The boot the command ran in.
    pub boot: String,
    /// The run (ledger entry) of the file it was processing.
    pub run: u64,
}

impl Record {
    /// The slot's text: the four fields, padded with spaces to [`SLOT_LEN`], with its newline.
    fn slot(&self) -> Vec<u8> {
        let line = format!(
            "{} {} {} {}",
            self.leader.pid, self.leader.start, self.boot, self.run
        );
        let mut bytes = format!("{line:<width$}\n", width = SLOT_LEN - 1).into_bytes();
        bytes.truncate(SLOT_LEN); // a boot id of absurd length: cut (and then not parsed)
        bytes
    }

    fn parse(line: &str) -> Option<Record> {
        let mut it = line.split_whitespace();
        let record = Record {
            leader: ProcessId {
                pid: it.next()?.parse().ok()?,
                start: it.next()?.parse().ok()?,
            },
            boot: it.next()?.to_string(),
            run: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(record)
    }
}

/// What a start finds in the records file: the records, and the lines it could not read
/// (a file edited by hand; never written so by the watcher).
#[derive(Debug, Default)]
pub(crate) struct Left {
    /// The records of groups that were running when the last watcher on the directory ended.
    pub records: Vec<Record>,
    /// Lines that are neither a record nor a free slot.
    pub unreadable: Vec<String>,
}

/// Reads the records a watcher left in `dir` (none when the file does not exist).
pub(crate) fn left_in(dir: &Path) -> io::Result<Left> {
    let path = dir.join(GROUPS_FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Left::default()),
        Err(e) => return Err(crate::store::disk::at("read", &path)(e)),
    };
    let mut left = Left::default();
    for line in String::from_utf8_lossy(&text).lines() {
        if line.trim().is_empty() {
            continue;
        }
        match Record::parse(line) {
            Some(r) => left.records.push(r),
            None => left.unreadable.push(line.trim_end().to_string()),
        }
    }
    Ok(left)
}

/// Empties the records file of `dir` (at start, once what it held has been dealt with).
pub(crate) fn clear(dir: &Path) -> io::Result<()> {
    let path = dir.join(GROUPS_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(crate::store::disk::at("remove", &path)(e))
        }
        _ => Ok(()),
    }
}

/// The records file of one running watcher: where its commands' groups are recorded while
/// they run. Opened on the first record (a processor that starts no command never creates it)
/// and closed by [`GroupRecords::close`].
pub(crate) struct GroupRecords {
    path: PathBuf,
    boot: String,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    file: Option<File>,
    /// Slots written once and blank now.
    free: Vec<u64>,
    /// Slots in the file.
    len: u64,
    closed: bool,
}

impl GroupRecords {
    /// The records of a watcher of `dir`; `None` where the system gives no boot id (then no
    /// process can be told apart from a later one with its pid, and nothing is recorded).
    pub fn new(dir: &Path) -> Option<GroupRecords> {
        Some(GroupRecords {
            path: dir.join(GROUPS_FILE),
            boot: boot_id()?,
            slots: Mutex::default(),
        })
    }

    /// Records the group led by `pid`, a child of this process that has not been reaped (so
    /// that its pid and its `/proc` entry are still its own), running for `run`. The record is
    /// in the file when this returns; dropping the [`Recorded`] blanks it.
    pub fn record(self: &Arc<Self>, pid: u32, run: u64) -> io::Result<Recorded> {
        let stat = Stat::of(pid).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("/proc/{pid}/stat: the command's process is not there"),
            )
        })?;
        let record = Record {
            leader: ProcessId {
                pid,
                start: stat.start,
            },
            boot: self.boot.clone(),
            run,
        };
        let slot = self.write(None, &record.slot())?;
        Ok(Recorded {
            records: self.clone(),
            slot,
        })
    }

    /// Writes `bytes` into `slot`, or into a free slot (`None`), which is returned.
    fn write(&self, slot: Option<u64>, bytes: &[u8]) -> io::Result<u64> {
        let mut slots = lock(&self.slots);
        if slots.closed {
            return Err(io::Error::other("the watcher is closed"));
        }
        if slots.file.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
                .map_err(crate::store::disk::at("open", &self.path))?;
            slots.file = Some(file);
        }
        let slot = match slot {
            Some(s) => s,
            None => match slots.free.pop() {
                Some(s) => s,
                None => {
                    slots.len += 1;
                    slots.len - 1
                }
            },
        };
        let file = slots.file.as_ref().expect("opened above");
        match write_at(file, bytes, slot * SLOT_LEN as u64) {
            Ok(()) => Ok(slot),
            Err(e) => {
                slots.free.push(slot);
                Err(crate::store::disk::at("write", &self.path)(e))
            }
        }
    }

    /// Blanks `slot` (its group is gone) and makes it free again.
    fn blank(&self, slot: u64) {
        let blank = Record::blank();
        // A slot that cannot be blanked (closed, an I/O error) is left as it is: a record of a
        // group that is gone is told apart by its leader's start time at the next start.
        if self.write(Some(slot), &blank).is_ok() {
            lock(&self.slots).free.push(slot);
        }
    }

    /// Closes the file (at close: the watcher's own fds are closed when `close()` returns).
    /// A command still recorded after that (one whose spawn was under way) keeps its record
    /// until the next start.
    pub fn close(&self) {
        let mut slots = lock(&self.slots);
        slots.closed = true;
        slots.file = None;
    }
}

/// One `pwrite` (a slot is far below a page: a `SIGKILL` cannot tear it).
#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
}

#[cfg(not(unix))]
fn write_at(_: &File, _: &[u8], _: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

impl Record {
    fn blank() -> Vec<u8> {
        let mut b = vec![b' '; SLOT_LEN];
        b[SLOT_LEN - 1] = b'\n';
        b
    }
}

/// A command's group, recorded: dropping this blanks its record. Drop it only once the group is
/// gone or has been sent `SIGKILL`.
pub(crate) struct Recorded {
    records: Arc<GroupRecords>,
    slot: u64,
}

impl std::fmt::Debug for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorded")
            .field("slot", &self.slot)
            .finish()
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.records.blank(self.slot);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn stat_reads_names_with_spaces_and_parentheses() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                state: 'S',
                pgrp: 42,
                start: 123456
            })
        );
        let me = Stat::of(std::process::id()).unwrap();
        assert!(!me.exited());
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(Stat::parse(&own).unwrap().start, me.start);
        assert!(Stat::of(u32::MAX).is_none());
    }

    /// Slots are written, blanked and reused; the file holds what is recorded, and no more
    /// slots than were in use at once.
    #[test]
    fn slots_are_reused_and_the_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let records = Arc::new(GroupRecords::new(dir.path()).unwrap());
        let me = std::process::id();
        let a = records.record(me, 1).unwrap();
        let b = records.record(me, 2).unwrap();
        let start = Stat::of(me).unwrap().start;
        let left = left_in(dir.path()).unwrap();
        assert_eq!(left.records.len(), 2);
        assert_eq!(left.records[0].leader, ProcessId { pid: me, start });
        assert_eq!(left.records[0].boot, boot_id().unwrap());
        assert_eq!((left.records[0].run, left.records[1].run), (1, 2));
        drop(a);
        assert_eq!(
            left_in(dir.path())
                .unwrap()
                .records
                .iter()
                .map(|r| r.run)
                .collect::<Vec<_>>(),
            [2]
        );
        let c = records.record(me, 3).unwrap();
        assert_eq!(c.slot, 0, "the blank slot is reused");
        let len = std::fs::metadata(dir.path().join(GROUPS_FILE))
            .unwrap()
            .len();
        assert_eq!(len, 2 * SLOT_LEN as u64);
        drop((b, c));
        assert!(left_in(dir.path()).unwrap().records.is_empty());

        std::fs::write(dir.path().join(GROUPS_FILE), "12 x\n").unwrap();
        assert_eq!(left_in(dir.path()).unwrap().unreadable, ["12 x"]);
        clear(dir.path()).unwrap();
        assert!(!dir.path().join(GROUPS_FILE).exists());
        clear(dir.path()).unwrap();
    }
}
