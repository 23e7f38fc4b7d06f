//! Process globals among fds and child processes: what a one-time initializer made.
//!
//! A log file opened inside a `OnceLock`, a helper process spawned inside a `LazyLock` or a
//! `Once`, is made once per process and lives for the rest of it: it cannot grow per test or
//! per cycle, so it is not a leak. Where its creation was recorded (feature `origins`), a check
//! leaves it out of the count and the report gives it a line of its own (`global: 1 fd created
//! once by …`, `global: 1 child process created once by …`), as threads do (see `threads`).
//! `strict` counts it again, and so does growth of such items from one half of the measured
//! cycles to the next (a global cannot grow per cycle: one that does is not one).
//!
//! Resolving a creation loads debug info (the first time in a process: up to seconds), so it
//! never happens while settling: settling leaves out only items already classified, looked up
//! by their unresolved record (cheap), and the settled readings are classified once. A test
//! that makes a global the first time therefore waits out its settle budget once, then passes.
//!
//! An fd number is reused at once: an item is known by its id together with the record of the
//! call that made it, so a number that now names something else is classified afresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::origin;
use crate::source::{added, Reading, Uncounted};

/// Per id classified: the record it was classified by, and its `global:` name if any.
type Known = HashMap<u32, (Vec<usize>, Option<String>)>;

/// The classifier one source of fds or child processes keeps for one check.
pub(crate) struct OnceMade {
    /// What one item and several are called on a `global:` line.
    nouns: (&'static str, &'static str),
    /// Whether items made by a one-time initializer count as any other.
    strict: bool,
    /// The unresolved record of an id's creation (`origin::fd_record`, `child_record`).
    record: fn(u32) -> Option<Vec<usize>>,
    /// The ids of the first reading (sorted): there before the check, never classified.
    first: Vec<u32>,
    /// What is known of the ids classified.
    known: Mutex<Known>,
    /// Set when the globals grew over the measured cycles: they count as any other item.
    grew: AtomicBool,
}

impl OnceMade {
    pub(crate) fn new(
        nouns: (&'static str, &'static str),
        strict: bool,
        record: fn(u32) -> Option<Vec<usize>>,
    ) -> Self {
        OnceMade {
            nouns,
            strict,
            record,
            first: Vec::new(),
            known: Mutex::new(HashMap::new()),
            grew: AtomicBool::new(false),
        }
    }

    /// Whether what a creation says can change a count in this check.
    fn classifies(&self) -> bool {
        cfg!(origins) && !self.strict
    }

    /// Remembers the first reading's ids: those are never classified.
    pub(crate) fn learn(&mut self, first: &Reading) {
        self.first = first.ids().to_vec();
    }

    /// The `global:` name of `id`, classifying it (resolving its creation) unless it is known
    /// by the same record.
    fn global(&self, id: u32) -> Option<String> {
        let ips = (self.record)(id)?;
        if let Some((known, global)) = self.lock().get(&id) {
            if *known == ips {
                return global.clone();
            }
        }
        let global = origin::once_global(&ips);
        self.lock().insert(id, (ips, global.clone()));
        global
    }

    /// Whether `id` is already known to be a global, by the record it has now; resolves
    /// nothing.
    fn known_global(&self, id: u32) -> bool {
        let Some(ips) = (self.record)(id) else {
            return false;
        };
        self.lock()
            .get(&id)
            .is_some_and(|(known, global)| global.is_some() && *known == ips)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Source::settled` for a source of ids: back at the reference, leaving out the items
    /// already known to be globals; nothing is resolved here.
    pub(crate) fn settled(&self, now: &Reading, reference: &Reading) -> bool {
        let (Some(level), Some(target)) = (now.level(), reference.level()) else {
            return true;
        };
        if level <= target || !self.classifies() {
            return level <= target;
        }
        let left_out = added(reference.ids(), now.ids())
            .filter(|id| self.first.binary_search(id).is_err())
            .filter(|&id| self.known_global(id))
            .count() as i64;
        level - left_out <= target
    }

    /// The globals among the ids of `reading` new since the first reading that `counts`
    /// keeps (not ignored), with their names.
    fn globals(&self, reading: &Reading, counts: &dyn Fn(u32) -> bool) -> Vec<String> {
        added(&self.first, reading.ids())
            .filter(|&id| counts(id))
            .filter_map(|id| self.global(id))
            .collect()
    }

    /// `Source::uncounted` for a source of ids; `counts` says which new ids the source counts
    /// at all (not ignored by a filter, not adopted).
    pub(crate) fn uncounted(
        &self,
        b0: &Reading,
        b1: Option<&Reading>,
        end: &Reading,
        counts: &dyn Fn(u32) -> bool,
    ) -> Uncounted {
        if !self.classifies() {
            return Uncounted::default();
        }
        let at_end = self.globals(end, counts);
        // A global cannot grow per cycle: if the second half of the cycles added such items,
        // they are not globals, and count.
        let grew = b1.is_some_and(|b1| at_end.len() > self.globals(b1, counts).len());
        self.grew.store(grew, Ordering::Relaxed);
        if grew {
            return Uncounted::default();
        }
        let mut groups: Vec<(String, usize)> = Vec::new();
        for name in &at_end {
            match groups.iter_mut().find(|(n, _)| n == name) {
                Some((_, k)) => *k += 1,
                None => groups.push((name.clone(), 1)),
            }
        }
        groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let lines = groups
            .into_iter()
            .map(|(name, n)| {
                let noun = if n == 1 { self.nouns.0 } else { self.nouns.1 };
                format!("global: {n} {noun} created once by {name}")
            })
            .collect();
        Uncounted {
            b0: self.globals(b0, counts).len() as i64,
            b1: b1.map_or(0, |b1| self.globals(b1, counts).len() as i64),
            end: at_end.len() as i64,
            lines,
        }
    }

    /// Whether a report leaves `id` out of its items: a global this check did not count
    /// (after `uncounted`).
    pub(crate) fn left_out(&self, id: u32) -> bool {
        self.classifies() && !self.grew.load(Ordering::Relaxed) && self.known_global(id)
    }
}
