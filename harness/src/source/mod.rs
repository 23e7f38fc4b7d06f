//! Sources: the one mechanism behind every kind of resource a check counts.
//!
//! A check counts several kinds of thing a component can leave behind: OS threads, fds, tokio
//! tasks, and more. They differ in three ways only, and a [`Source`] says all three for one
//! kind:
//!
//! - **counting**: [`Source::read`] takes a cheap reading (ids, or a bare count) in every
//!   snapshot of the settle loop;
//! - **identifying**: [`Source::label`] names one id (a thread's name, an fd's target), and
//!   [`Source::items`] says what the report shows of what is new since the baseline, grouped;
//! - **judging**: [`Source::settled`] says when a reading has come back to its reference, and
//!   [`Source::judge`] turns a series of readings into a verdict and a growth.
//!
//! The protocol, the settle loop and the report know no particular kind: they loop over the
//! check's sources. Knowledge of a kind lives in its own file here, so a kind added later
//! either implements each decision or takes a documented default; it cannot be read from the
//! wrong place through a catch-all match arm, and no array assumes a fixed set of kinds.
//! Defaults fit a quiet integer count (threads, fds): settled when at or below the reference,
//! leaking when the second half of the cycles adds to the first. A noisier kind says otherwise
//! for itself.

mod children;
mod fds;
mod heap;
pub(crate) mod heap_sites;
mod ignored;
mod once_made;
mod orphans;
mod probe;
mod task_count;
#[cfg(feature = "tokio")]
mod tasks;
mod threads;

pub(crate) use children::Children;
pub(crate) use fds::Fds;
pub(crate) use heap::Heap;
pub(crate) use probe::Probe;
pub(crate) use task_count::TaskCount;
#[cfg(feature = "tokio")]
pub(crate) use tasks::Tasks;
pub(crate) use threads::Threads;

pub(crate) use crate::finding::{Item, Lingering, Style, Unit, Verdict};
use crate::group;
use crate::resource::Resource;

/// One kind of resource: how to count it, what to call what is new, and how to judge it.
/// See the module documentation for why this is one trait.
pub(crate) trait Source: Send + Sync {
    /// The resource this source counts: the key of its line in the report.
    fn resource(&self) -> Resource;

    /// Counts now. Runs in every snapshot of the settle loop, so it reads ids or a count,
    /// never names.
    fn read(&self) -> Reading;

    /// Sees the first reading of a check before any other. A source with ignore filters reads
    /// the names of the ids alive now, once, so that later readings need not. Returns true
    /// when what it learned changes its count, so that the first reading must be taken again.
    fn learn(&mut self, first: &Reading) -> bool {
        let _ = first;
        false
    }

    /// The name of one id as filters match it and, by default, as the report groups it (a
    /// thread's name, an fd's target); `None` if it is gone or the platform cannot tell.
    fn label(&self, id: u32) -> Option<String> {
        let _ = id;
        None
    }

    /// Whether the user's ignore filters leave out an item with this label.
    fn ignores(&self, label: &str) -> bool {
        let _ = label;
        false
    }

    /// Whether an id may name a different item soon after its item went. Fd numbers are
    /// reused at once (so a warm-up fd that closed and whose number now points elsewhere is
    /// gone); thread and process ids are not.
    fn reuses_ids(&self) -> bool {
        false
    }

    /// What the report shows of the items alive at `end` that were not at `b0`, grouped,
    /// most frequent first. This is the place to say more about a leaked item (where it was
    /// spawned, what it is doing). The default labels the new ids, leaves out ignored ones and
    /// groups equal labels; a count-only source shows nothing unless it overrides this.
    fn items(&self, b0: &Reading, end: &Reading) -> Vec<Item> {
        group::exact(new_labels(self, b0, end))
    }

    /// How the report prints an item's label.
    fn style(&self) -> Style {
        Style::Plain
    }

    /// What the report counts this resource in.
    fn unit(&self) -> Unit {
        Unit::Items
    }

    /// Remarks for the report (how to measure what was not measured).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// After `items`: whether waiting could let the leaked items go of themselves, and for how
    /// long. `Unknown` where this source cannot tell (the report then gives its generic note
    /// when the settle budget ran out); `Never` when some item waits with no end (threads in
    /// an untimed wait: no settle budget helps); `Within(d)` when every item is in a wait that
    /// ends within `d` of the end of the settle.
    fn lingering(&self) -> Lingering {
        Lingering::Unknown
    }

    /// Whether the protocol should also read this source after every measured cycle, for a
    /// trend (`Series::samples`). Only sources that ask for it are read between settles, so a
    /// check without them pays nothing for it.
    fn per_cycle(&self) -> bool {
        false
    }

    /// Whether `now` is back where it should be, relative to `reference` (a previous
    /// baseline). Default: the count is at or below the reference's.
    fn settled(&self, now: &Reading, reference: &Reading) -> bool {
        match (now.level(), reference.level()) {
            (Some(now), Some(then)) => now <= then,
            _ => true,
        }
    }

    /// What the check leaves out of the counts once the readings are in, decided from what
    /// the items are rather than from their names: how many of the ids of B0, B1 (if any) and
    /// the end are not counted, and the lines of their own the report shows for them (threads
    /// made by a one-time initializer: `global: 2 threads created once by …`). Called once per
    /// check, on the settled readings. Default: nothing is left out.
    fn uncounted(&self, b0: &Reading, b1: Option<&Reading>, end: &Reading) -> Uncounted {
        let _ = (b0, b1, end);
        Uncounted::default()
    }

    /// Turns the settled readings of a check into a verdict and a growth. Default: the
    /// halves rule (see [`halves`]).
    fn judge(&self, series: &Series<'_>) -> Judged {
        halves(series)
    }
}

/// See [`Source::uncounted`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Uncounted {
    /// Ids left out of B0, B1 and the end.
    pub(crate) b0: i64,
    pub(crate) b1: i64,
    pub(crate) end: i64,
    /// Lines of their own for the report, without indentation.
    pub(crate) lines: Vec<String>,
}

/// The label of an item that went away between the listing and the reading of its name.
pub(crate) const GONE: &str = "<gone>";

/// One resource as seen at one moment.
#[derive(Clone, Debug)]
pub(crate) enum Reading {
    /// Live ids (sorted) and how many of them count (ids minus ignored ones).
    Ids { ids: Vec<u32>, count: usize },
    /// A bare count, for what has no identity we can see (tokio tasks, probes).
    Count(usize),
    /// A count with a mark of the moment it was taken: the spawn sequence number of the last
    /// task spawned on an instrumented tokio runtime (tasks spawned later are new).
    #[cfg_attr(not(all(feature = "tokio", tokio_unstable)), allow(dead_code))]
    Marked { count: usize, mark: u64 },
    /// Live heap blocks and bytes (signed: blocks freed by code the harness did not count
    /// can take them below zero).
    Heap { blocks: i64, bytes: i64 },
    /// This platform cannot see the resource.
    Unsupported(&'static str),
    /// Reading failed: the message says what could not be read and why.
    Failed(String),
}

impl Reading {
    /// The figure settling and judging compare, if the reading has one.
    pub(crate) fn level(&self) -> Option<i64> {
        match self {
            Reading::Ids { count, .. } => Some(*count as i64),
            Reading::Count(n) | Reading::Marked { count: n, .. } => Some(*n as i64),
            Reading::Heap { blocks, .. } => Some(*blocks),
            Reading::Unsupported(_) | Reading::Failed(_) => None,
        }
    }

    /// Live bytes, for a reading that has them (the heap).
    pub(crate) fn bytes(&self) -> Option<i64> {
        match self {
            Reading::Heap { bytes, .. } => Some(*bytes),
            Reading::Ids { .. }
            | Reading::Count(_)
            | Reading::Marked { .. }
            | Reading::Unsupported(_)
            | Reading::Failed(_) => None,
        }
    }

    /// The live ids, for a reading that has them.
    pub(crate) fn ids(&self) -> &[u32] {
        match self {
            Reading::Ids { ids, .. } => ids,
            Reading::Count(_)
            | Reading::Marked { .. }
            | Reading::Heap { .. }
            | Reading::Unsupported(_)
            | Reading::Failed(_) => &[],
        }
    }
}

/// The settled figures of one source over a check, for [`Source::judge`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Series<'a> {
    /// B0 without the warm-up's items that were still alive at B0 but have gone by the end
    /// (they inflated B0 and must not offset a leak).
    pub(crate) base: i64,
    /// B1, after the first half of the measured cycles (only with more than one cycle).
    pub(crate) b1: Option<i64>,
    /// The settled end (B2).
    pub(crate) end: i64,
    /// How many cycles were measured.
    pub(crate) cycles: usize,
    /// Readings taken right after each measured cycle (unsettled), for sources that ask for
    /// them ([`Source::per_cycle`]); empty otherwise.
    pub(crate) samples: &'a [i64],
}

/// A source's verdict and the growth it reports (`leaked` is the growth when leaking).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Judged {
    pub(crate) verdict: Verdict,
    pub(crate) growth: i64,
}

/// The rule for quiet counts: growth is end − base; a resource leaks when it keeps growing
/// (B2 > B1), or with one cycle when it ends above the base; growth that stopped is bounded.
pub(crate) fn halves(s: &Series<'_>) -> Judged {
    let leaking = match s.b1 {
        Some(b1) => s.end > b1,
        None => s.end > s.base,
    };
    Judged::new(leaking, s.end - s.base)
}

impl Judged {
    /// Leaking when the source's rule says so; otherwise growth that stayed is bounded.
    pub(crate) fn new(leaking: bool, growth: i64) -> Self {
        let verdict = if leaking {
            Verdict::Leaking
        } else if growth > 0 {
            Verdict::Bounded
        } else {
            Verdict::Clean
        };
        Judged { verdict, growth }
    }
}

/// The full creation backtraces of grouped items, for a report's notes (with
/// `.backtraces(true)`): `fds /tmp/x.log opened at src/a.rs:9, created through:` and the
/// frames, one group per note, for the groups whose origin has a backtrace.
pub(crate) fn shown_backtraces(
    what: &str,
    items: &[Item],
    by_origin: &std::collections::HashMap<String, Vec<String>>,
) -> Vec<String> {
    items
        .iter()
        .filter_map(|item| {
            let at = item.origin.as_deref()?;
            let frames = by_origin.get(at).filter(|frames| !frames.is_empty())?;
            Some(format!(
                "{what} {} {at}, created through:\n      {}",
                item.label,
                frames.join("\n      ")
            ))
        })
        .collect()
}

/// The labels of the ids alive at `end` that were not at `b0`, less those the source ignores
/// (`GONE` for an item that went before its label was read).
pub(crate) fn new_labels<'a, S: Source + ?Sized>(
    source: &'a S,
    b0: &'a Reading,
    end: &'a Reading,
) -> impl Iterator<Item = String> + 'a {
    added(b0.ids(), end.ids())
        .map(|id| source.label(id).unwrap_or_else(|| GONE.to_owned()))
        .filter(|label| !source.ignores(label))
}

/// The sources of one check, in report order, and their readings.
pub(crate) struct Sources {
    list: Vec<Box<dyn Source>>,
}

/// The readings of one moment, one per source of the check, in the same order.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    readings: Vec<Reading>,
}

impl Snapshot {
    /// The reading of the check's `i`-th source.
    pub(crate) fn get(&self, i: usize) -> &Reading {
        &self.readings[i]
    }

    #[cfg(test)]
    pub(crate) fn of(readings: Vec<Reading>) -> Self {
        Snapshot { readings }
    }
}

impl Sources {
    pub(crate) fn new(list: Vec<Box<dyn Source>>) -> Self {
        Sources { list }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &dyn Source> + '_ {
        self.list.iter().map(|s| &**s)
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The sources read after every measured cycle.
    pub(crate) fn per_cycle(&self) -> impl Iterator<Item = (usize, &dyn Source)> + '_ {
        self.iter().enumerate().filter(|(_, s)| s.per_cycle())
    }

    /// The first snapshot of a check, and how many it took: a source that learned something
    /// from the first reading (the names of ignored ids) is read again.
    pub(crate) fn first(&mut self) -> (Snapshot, usize) {
        let mut snap = self.snapshot();
        let mut again = false;
        for (source, reading) in self.list.iter_mut().zip(&snap.readings) {
            again |= source.learn(reading);
        }
        if !again {
            return (snap, 1);
        }
        snap = self.snapshot();
        (snap, 2)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            readings: self.list.iter().map(|s| s.read()).collect(),
        }
    }
}

/// Ids in `after` that are not in `before` (both sorted).
pub(crate) fn added<'a>(before: &'a [u32], after: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
    after
        .iter()
        .copied()
        .filter(move |id| before.binary_search(id).is_err())
}
