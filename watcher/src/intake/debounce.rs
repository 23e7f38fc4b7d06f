//! Debounce state: files seen but not yet stable. No task per event: the intake task keeps one
//! timer (the earliest deadline) and checks the due entries when it fires.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// What a file looked like when last seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Signature {
    pub len: u64,
    pub modified: Option<SystemTime>,
}

impl Signature {
    pub fn of(path: &Path) -> Option<Signature> {
        let m = std::fs::symlink_metadata(path).ok()?;
        if m.is_dir() {
            return None;
        }
        Some(Signature {
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

#[derive(Debug)]
struct Pending {
    sig: Option<Signature>,
    due: Instant,
}

/// Files waiting until their size and mtime stop changing for `debounce`.
#[derive(Debug)]
pub(crate) struct Debouncer {
    debounce: Duration,
    pending: HashMap<PathBuf, Pending>,
}

impl Debouncer {
    pub fn new(debounce: Duration) -> Self {
        Debouncer {
            debounce,
            pending: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Something happened to `path`: (re)start its quiet period.
    /// A path that does not exist (or is a directory) is forgotten instead.
    pub fn touch(&mut self, path: PathBuf, now: Instant) {
        let Some(sig) = Signature::of(&path) else {
            self.pending.remove(&path);
            return;
        };
        let sig = Some(sig);
        let due = now + self.debounce;
        self.pending
            .entry(path)
            .and_modify(|p| {
                p.sig = sig;
                p.due = due;
            })
            .or_insert(Pending { sig, due });
    }

    /// Seen by a directory scan: added if not pending yet, but an entry already pending keeps
    /// its deadline (scans repeat; only a change, found at the deadline, restarts the wait).
    pub fn observe(&mut self, path: PathBuf, now: Instant) {
        if !self.pending.contains_key(&path) {
            self.touch(path, now);
        }
    }

    /// The earliest deadline, if anything is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.due).min()
    }

    /// Checks every entry due at `now`: returns those whose signature did not change since they
    /// were last seen (removing them), drops those that vanished, and restarts the others.
    pub fn take_stable(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut stable = Vec::new();
        let debounce = self.debounce;
        self.pending.retain(|path, p| {
            if p.due > now {
                return true;
            }
            match Signature::of(path) {
                None => false,
                Some(sig) if Some(sig) == p.sig => {
                    stable.push(path.clone());
                    false
                }
                Some(sig) => {
                    p.sig = Some(sig);
                    p.due = now + debounce;
                    true
                }
            }
        });
        stable.sort();
        stable
    }

    /// Removes entries whose file is gone (deleted or renamed away while debouncing), and
    /// gives back the memory a burst left behind. Returns how many entries were removed.
    /// Entries of existing files are kept however old: no later event may come to bring them
    /// back.
    pub fn prune(&mut self) -> usize {
        let before = self.pending.len();
        self.pending
            .retain(|path, _| std::fs::symlink_metadata(path).is_ok());
        self.pending.shrink_to_fit();
        before - self.pending.len()
    }

    /// Empties the state, returning the pending paths.
    pub fn drain(&mut self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.pending.drain().map(|(p, _)| p).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn stable_after_quiet_period_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"1").unwrap();
        let d = Duration::from_millis(10);
        let mut deb = Debouncer::new(d);
        let t0 = Instant::now();
        deb.touch(p.clone(), t0);
        assert!(deb.take_stable(t0).is_empty(), "not due yet");
        // Grows before it is due: restarted, not taken.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"2")
            .unwrap();
        assert!(deb.take_stable(t0 + d).is_empty());
        assert_eq!(deb.len(), 1);
        assert_eq!(deb.take_stable(t0 + 2 * d), vec![p.clone()]);
        assert_eq!(deb.len(), 0);
        // Vanished files are dropped.
        deb.touch(p.clone(), t0);
        std::fs::remove_file(&p).unwrap();
        assert!(deb.take_stable(t0 + d).is_empty());
        assert_eq!(deb.len(), 0);
    }

    #[test]
    fn repeated_scans_do_not_postpone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"1").unwrap();
        let d = Duration::from_millis(10);
        let mut deb = Debouncer::new(d);
        let t0 = Instant::now();
        deb.observe(p.clone(), t0);
        deb.observe(p.clone(), t0 + d / 2);
        assert_eq!(deb.next_due(), Some(t0 + d));
        assert_eq!(deb.take_stable(t0 + d), vec![p]);
    }

    #[test]
    fn prune_drops_gone_files() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("keep");
        let gone = dir.path().join("gone");
        std::fs::write(&keep, b"x").unwrap();
        std::fs::write(&gone, b"x").unwrap();
        let mut deb = Debouncer::new(Duration::from_millis(10));
        let t0 = Instant::now();
        deb.touch(keep.clone(), t0);
        deb.touch(gone.clone(), t0);
        deb.touch(dir.path().join("never-existed"), t0);
        assert_eq!(deb.len(), 2);
        std::fs::remove_file(&gone).unwrap();
        assert_eq!(deb.prune(), 1);
        assert_eq!(deb.prune(), 0);
        assert_eq!(deb.drain(), vec![keep]);
    }
}
