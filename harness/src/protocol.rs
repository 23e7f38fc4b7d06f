//! The cycle protocol (design.md): warm-up, then baselines B0, B1, B2, then a verdict.
//!
//! ```text
//! warm-up cycles ─ settle ─ B0 ─ first half ─ settle ─ B1 ─ second half ─ settle ─ B2
//! ```
//!
//! A resource leaks when it keeps growing with cycles (B2 > B1); growth that stopped is
//! bounded. With one measured cycle there is no B1 and the rule is B2 > B0. The protocol is
//! driven from outside (by the sync and the async check, and by a `Guard`), one stage at a
//! time, so the waiting and the running of the body stay with the caller.

use std::collections::HashMap;
use std::time::Duration;

use crate::filter::Filter;
use crate::group;
use crate::probe::{self, Prober, Reading, Snapshot};
use crate::report::{Line, Report, Verdict};
use crate::resource::Resource;
use crate::settle::{Settled, Settler, Target};

/// How many cycles to run and how long to let resources settle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) warmup: usize,
    pub(crate) cycles: usize,
    pub(crate) budget: Duration,
}

/// What the caller must do next.
pub(crate) struct Stage {
    /// How many times to run the body before settling.
    pub(crate) runs: usize,
}

pub(crate) struct Protocol {
    plan: Plan,
    prober: Prober,
    /// Before warm-up.
    start: Snapshot,
    /// Settled references: B0, then B1 (only with more than one cycle).
    references: Vec<Snapshot>,
    /// Names and targets, read at B0, of the ids that warm-up added.
    warmup_labels: [HashMap<u32, Option<String>>; 2],
    end: Option<Snapshot>,
    settled: Duration,
    budget_ran_out: bool,
    snapshots: usize,
}

impl Protocol {
    pub(crate) fn new(plan: Plan, mut prober: Prober) -> Self {
        let (start, snapshots) = prober.first();
        let mut references = Vec::with_capacity(2);
        if plan.warmup == 0 {
            // Nothing ran yet: the start is the baseline.
            references.push(start.clone());
        }
        Protocol {
            plan,
            prober,
            start,
            references,
            warmup_labels: Default::default(),
            end: None,
            settled: Duration::ZERO,
            budget_ran_out: false,
            snapshots,
        }
    }

    /// The next stage to run, or `None` when the last snapshot has been taken.
    pub(crate) fn next(&self) -> Option<Stage> {
        if self.end.is_some() {
            return None;
        }
        let half = self.plan.cycles / 2;
        let runs = match (self.references.len(), self.plan.cycles) {
            (0, _) => self.plan.warmup,
            (1, 1) => 1,
            (1, _) => half,
            _ => self.plan.cycles - half,
        };
        Some(Stage { runs })
    }

    /// A settler for the snapshot that ends the current stage.
    pub(crate) fn settler(&self) -> Settler<'_> {
        let target = match self.references.last() {
            None => Target::Baseline {
                before: &self.start,
            },
            Some(reference) => Target::AtMost(reference),
        };
        Settler::new(target, self.plan.budget)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.prober.snapshot()
    }

    /// Records the settled snapshot that ends the current stage.
    pub(crate) fn record(&mut self, settled: Settled) {
        let Settled {
            snap,
            elapsed,
            snapshots,
        } = settled;
        self.settled += elapsed;
        self.snapshots += snapshots;
        if elapsed >= self.plan.budget {
            self.budget_ran_out = true;
        }
        let final_stage = match self.plan.cycles {
            1 => 1,
            _ => 2,
        };
        if self.references.is_empty() {
            self.remember_warmup_items(&snap);
        }
        if self.references.len() == final_stage {
            self.end = Some(snap);
        } else {
            self.references.push(snap);
        }
    }

    /// Reads the labels of the items warm-up added, so that those which have gone by the end
    /// can be taken out of B0 (a transient alive at B0 must not hide a leaked item).
    fn remember_warmup_items(&mut self, b0: &Snapshot) {
        for r in [Resource::Threads, Resource::Fds] {
            let (Some(before), Some(after)) = (self.start.get(r), b0.get(r)) else {
                continue;
            };
            for id in added(before.ids(), after.ids()) {
                self.warmup_labels[r.index()].insert(id, probe::label(r, id));
            }
        }
    }

    /// Judges every resource and builds the report.
    pub(crate) fn finish(self) -> Report {
        let end = self.end.as_ref().expect("finish after the last stage");
        let b0 = &self.references[0];
        let b1 = self.references.get(1);
        let mut lines = Vec::new();
        for r in Resource::ALL {
            let Some(first) = self.start.get(r) else {
                continue;
            };
            lines.push(self.judge(r, first, b0, b1, end));
        }
        let mut notes = Vec::new();
        if let Some(note) = crate::context::shared_process_note() {
            notes.push(note.to_owned());
        }
        Report {
            cycles: self.plan.cycles,
            warmup: self.plan.warmup,
            settled: self.settled,
            budget: self.plan.budget,
            budget_ran_out: self.budget_ran_out,
            snapshots: self.snapshots,
            lines,
            notes,
        }
    }

    fn judge(
        &self,
        r: Resource,
        first: &Reading,
        b0: &Snapshot,
        b1: Option<&Snapshot>,
        end: &Snapshot,
    ) -> Line {
        let mut line = Line {
            resource: r,
            verdict: Verdict::Clean,
            start: 0,
            end: 0,
            growth: 0,
            items: Vec::new(),
        };
        if let Reading::Unsupported(why) = first {
            line.verdict = Verdict::NotMeasured((*why).to_owned());
            return line;
        }
        let readings = [
            Some(first),
            b0.get(r),
            b1.and_then(|s| s.get(r)),
            end.get(r),
        ];
        if let Some(msg) = readings.iter().flatten().find_map(|x| match x {
            Reading::Failed(msg) => Some(msg),
            _ => None,
        }) {
            line.verdict = Verdict::Failed(msg.clone());
            return line;
        }
        let (Some(b0_count), Some(end_count)) = (b0.count(r), end.count(r)) else {
            line.verdict = Verdict::Failed(format!("{r} disappeared during the check"));
            return line;
        };
        let base = b0_count.saturating_sub(self.warmup_transients(r, end));
        line.start = b0_count;
        line.end = end_count;
        line.growth = end_count as isize - base as isize;
        let leaking = match b1.and_then(|s| s.count(r)) {
            Some(b1_count) => end_count > b1_count,
            None => end_count > base,
        };
        line.verdict = if leaking {
            Verdict::Leaking
        } else if line.growth > 0 {
            Verdict::Bounded
        } else {
            Verdict::Clean
        };
        if line.growth > 0 {
            line.items = self.new_items(r, b0, end);
        }
        line
    }

    /// Items warm-up added that were still alive at B0 but have gone (or, for an fd number,
    /// now point elsewhere) by the end: they inflated B0 and must not offset a leak.
    fn warmup_transients(&self, r: Resource, end: &Snapshot) -> usize {
        let Some(labels) = self.warmup_labels.get(r.index()) else {
            return 0;
        };
        let filter = self.filter(r);
        let end_ids = end.get(r).map(Reading::ids).unwrap_or(&[]);
        labels
            .iter()
            .filter(|(_, label)| !label.as_deref().is_some_and(|l| filter.matches(l)))
            .filter(|(&id, label)| {
                end_ids.binary_search(&id).is_err()
                    || (r == Resource::Fds && probe::label(r, id) != **label)
            })
            .count()
    }

    /// The items alive at the end that were not at B0, grouped by label (see `group`).
    fn new_items(&self, r: Resource, b0: &Snapshot, end: &Snapshot) -> Vec<(String, usize)> {
        let (Some(b0), Some(end)) = (b0.get(r), end.get(r)) else {
            return Vec::new();
        };
        let filter = self.filter(r);
        let labels = added(b0.ids(), end.ids())
            .map(|id| probe::label(r, id).unwrap_or_else(|| "<gone>".to_owned()))
            .filter(|label| !filter.matches(label));
        group::group(r, labels)
    }

    fn filter(&self, r: Resource) -> &Filter {
        self.prober.filter(r)
    }
}

/// Ids in `after` that are not in `before` (both sorted).
fn added<'a>(before: &'a [u32], after: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
    after
        .iter()
        .copied()
        .filter(move |id| before.binary_search(id).is_err())
}
