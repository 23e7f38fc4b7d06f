//! A start after a crash ends the commands the crashed watcher left running, before any file
//! runs again: every process group in the records (`store/groups.rs`) whose leader is still the
//! recorded process gets `SIGTERM`, then, if it has not ended within the grace period, `SIGKILL`.
//!
//! # Which groups are ended
//!
//! Only a group whose leader is identified: a process with the recorded pid, the recorded start
//! time, in the recorded boot (running, or a zombie: exited, not yet reaped by whoever
//! inherited it). A pid that now names another process (reused: another start time), a
//! record of an earlier boot, and a leader that is gone altogether are left alone: a pid is
//! never signalled on the strength of the number alone.
//!
//! Why the leader's identity is enough for the whole group: the kernel does not hand out a pid
//! again while its process is unreaped, nor while a process group with that id has members, so
//! while the identified leader exists no other group can have its id. The one case left
//! alone: a leader that has exited and been reaped while members of its group run on (a
//! command that put a job in the background and exited just as the watcher crashed); their
//! group can no longer be told from one that a later process with the same pid made, and the
//! start says nothing of it. (Between the identity check and the signal, the leader would have
//! to exit, be reaped, and its pid be handed out again and made a group's id: the kernel hands
//! out pids in a cycle of `pid_max`, so that takes thousands of processes in microseconds.)
//!
//! # The wait
//!
//! A group is gone when none of its members runs (a zombie runs no code: the watcher that
//! could reap it is the one that crashed). The start waits on that condition with a deadline,
//! polling `/proc` with a backoff, once for every group at the same time: `SIGTERM` to each, at
//! most the grace period for all, then `SIGKILL` to those still there and at most
//! [`KILL_WAIT`] more. The grace is the watcher's shutdown budget: a command gets as long to
//! end after a crash as it would at a close.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use crate::store::groups::{boot_id, Record, Stat};

/// How long a start waits for a group to be gone after `SIGKILL` (a process in uninterruptible
/// I/O dies only when that returns).
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(2);

/// How a group left running by an earlier watcher was ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum How {
    /// It was gone within the grace period after `SIGTERM`.
    Term,
    /// Still there after the grace period: `SIGKILL`, and then it was gone.
    Kill,
    /// Still there [`KILL_WAIT`] after `SIGKILL`.
    StillRunning,
}

/// A group left running by an earlier watcher, and what ending it took.
#[derive(Clone, Debug)]
pub(crate) struct Ended {
    /// Its record.
    pub record: Record,
    /// The file its command was processing (from the ledger's entry of the record's run), if
    /// the ledger still names it.
    pub file: Option<String>,
    /// How it ended.
    pub how: How,
    /// The grace period it had after `SIGTERM`.
    pub grace: Duration,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.record;
        let pgid = r.leader.pid;
        match self.how {
            How::StillRunning => write!(f, "could not end process group {pgid}")?,
            _ => write!(f, "ended process group {pgid}")?,
        }
        write!(
            f,
            " (leader pid {pgid}, started at tick {}), left running by an earlier watcher",
            r.leader.start
        )?;
        match &self.file {
            Some(file) => write!(f, " on {file:?} (run {})", r.run)?,
            None => write!(f, " (run {})", r.run)?,
        }
        match self.how {
            How::Term => write!(f, ": it exited on SIGTERM"),
            How::Kill => write!(
                f,
                ": still running {:?} after SIGTERM, killed with SIGKILL",
                self.grace
            ),
            How::StillRunning => write!(f, ": still running {KILL_WAIT:?} after SIGKILL"),
        }
    }
}

/// Ends every group of `records` that is still running (see the [module docs](self)), waiting
/// at most `grace` after `SIGTERM`; `file_of` names the file of a run. Returns the groups that
/// were running, in the order of `records`; blocks the calling thread until they are gone (or
/// the deadlines pass). Nothing to end: returns at once, after one read of each leader's
/// `/proc` entry.
pub(crate) fn end_left_running(
    records: &[Record],
    file_of: impl Fn(u64) -> Option<String>,
    grace: Duration,
) -> Vec<Ended> {
    let Some(boot) = boot_id() else {
        return Vec::new();
    };
    // The records whose leader is identified.
    let ours: Vec<&Record> = records
        .iter()
        .filter(|r| r.boot == boot)
        .filter(|r| Stat::of(r.leader.pid).is_some_and(|s| s.start == r.leader.start))
        .collect();
    if ours.is_empty() {
        return Vec::new();
    }
    let pgids: HashSet<u32> = ours.iter().map(|r| r.leader.pid).collect();
    let running = running_groups(&pgids);
    let mut ended: Vec<Ended> = ours
        .into_iter()
        .filter(|r| running.contains(&r.leader.pid))
        .map(|r| Ended {
            record: r.clone(),
            file: file_of(r.run),
            how: How::Term,
            grace,
        })
        .collect();
    let pgids: HashSet<u32> = ended.iter().map(|e| e.record.leader.pid).collect();
    signal(&pgids, Signal::Term);
    let left = wait_gone(pgids, grace);
    signal(&left, Signal::Kill);
    let still = wait_gone(left.clone(), KILL_WAIT);
    for e in &mut ended {
        let pgid = e.record.leader.pid;
        if still.contains(&pgid) {
            e.how = How::StillRunning;
        } else if left.contains(&pgid) {
            e.how = How::Kill;
        }
    }
    ended
}

/// Waits (polling `/proc` with a backoff) until none of `groups` has a running member, or
/// `limit` has passed: the groups still running then.
fn wait_gone(mut groups: HashSet<u32>, limit: Duration) -> HashSet<u32> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_micros(100);
    loop {
        groups = running_groups(&groups);
        let now = Instant::now();
        if groups.is_empty() || now >= deadline {
            return groups;
        }
        std::thread::park_timeout(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Which of `groups` have a member that runs (not a zombie): one pass over `/proc`.
fn running_groups(groups: &HashSet<u32>) -> HashSet<u32> {
    let mut running = HashSet::new();
    if groups.is_empty() {
        return running;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return running;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = Stat::of(pid) {
            if groups.contains(&stat.pgrp) && !stat.exited() {
                running.insert(stat.pgrp);
            }
        }
    }
    running
}

enum Signal {
    Term,
    Kill,
}

/// Sends `sig` to each process group of `groups` (one that has gone meanwhile: `ESRCH`, fine).
fn signal(groups: &HashSet<u32>, sig: Signal) {
    #[cfg(unix)]
    for &pgid in groups {
        let sig = match sig {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        };
        // SAFETY: a plain syscall on a group whose leader was identified (see the module docs).
        unsafe {
            libc::killpg(pgid as libc::pid_t, sig);
        }
    }
    #[cfg(not(unix))]
    let _ = (groups, sig);
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::store::groups::ProcessId;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::Command;

    fn group(script: &str) -> std::process::Child {
        Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn record_of(child: &std::process::Child, start_offset: u64) -> Record {
        let pid = child.id();
        Record {
            leader: ProcessId {
                pid,
                start: Stat::of(pid).unwrap().start + start_offset,
            },
            boot: boot_id().unwrap(),
            run: 7,
        }
    }

    /// A group whose leader is identified is ended (on SIGTERM, or with SIGKILL when it ignores
    /// SIGTERM); one whose record has another start time or another boot is not touched.
    #[test]
    fn ends_identified_groups_only() {
        let polite = group("exec sleep 300");
        // The shell says when it ignores SIGTERM (a SIGTERM before the trap would end it).
        let mut stubborn = Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; exec sleep 300"])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(stubborn.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready, "ready\n");
        let other = group("exec sleep 300");
        let other_boot = group("exec sleep 300");
        let mut wrong_boot = record_of(&other_boot, 0);
        wrong_boot.boot = "00000000-0000-0000-0000-000000000000".into();
        let records = [
            record_of(&polite, 0),
            record_of(&stubborn, 0),
            record_of(&other, 1),
            wrong_boot,
        ];
        let ended = end_left_running(
            &records,
            |run| Some(format!("f{run}")),
            Duration::from_millis(200),
        );
        let hows: Vec<(u32, How)> = ended.iter().map(|e| (e.record.leader.pid, e.how)).collect();
        assert_eq!(hows, [(polite.id(), How::Term), (stubborn.id(), How::Kill)]);
        assert!(ended[0].to_string().starts_with(&format!(
            "ended process group {} (leader pid {0}, started at tick ",
            polite.id()
        )));
        assert!(
            ended[1].to_string().ends_with("killed with SIGKILL"),
            "{}",
            ended[1]
        );
        for (mut child, sig) in [(polite, libc::SIGTERM), (stubborn, libc::SIGKILL)] {
            assert_eq!(child.wait().unwrap().signal(), Some(sig));
        }
        for mut child in [other, other_boot] {
            let st = Stat::of(child.id()).unwrap();
            assert!(!st.exited(), "an unidentified group was ended");
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}
