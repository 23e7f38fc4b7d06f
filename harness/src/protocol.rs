//! The cycle protocol: warm-up, then baselines B0, B1, B2, then a verdict.
//!
//! ```text
//! warm-up cycles ─ settle ─ B0 ─ first half ─ settle ─ B1 ─ second half ─ settle ─ B2
//! ```
//!
//! A resource leaks when it keeps growing with cycles (B2 > B1); growth that stopped is
//! bounded. With one measured cycle there is no B1 and the rule is B2 > B0. (That is the
//! default rule; each source judges its own series, see `source`.) The protocol is driven from
//! outside (by the sync and the async check, and by a `Guard`), one stage at a time, so the
//! waiting and the running of the body stay with the caller. It knows no particular kind of
//! resource: it loops over the check's sources.

use std::collections::HashMap;
use std::time::Duration;

use crate::report::{Line, Report, Verdict};
use crate::resource::Resource;
use crate::settle::{self, Settled, Settler, Target};
use crate::source::{added, Lingering, Reading, Series, Snapshot, Source, Sources};

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
    sources: Sources,
    /// Before warm-up.
    start: Snapshot,
    /// Settled references: B0, then B1 (only with more than one cycle).
    references: Vec<Snapshot>,
    /// Per source, the labels, read at B0, of the ids that warm-up added.
    warmup_labels: Vec<HashMap<u32, Option<String>>>,
    /// Per source, its readings after each measured cycle (only for per-cycle sources).
    samples: Vec<Vec<i64>>,
    /// Whether any source is read per cycle.
    sampling: bool,
    end: Option<Snapshot>,
    settled: Duration,
    budget_ran_out: bool,
    snapshots: usize,
}

impl Protocol {
    pub(crate) fn new(plan: Plan, mut sources: Sources) -> Self {
        let (start, snapshots) = sources.first();
        let mut references = Vec::with_capacity(2);
        if plan.warmup == 0 {
            // Nothing ran yet: the start is the baseline.
            references.push(start.clone());
        }
        let warmup_labels = vec![HashMap::new(); sources.len()];
        // Room for every sample up front: nothing is allocated between cycles.
        let samples = sources
            .iter()
            .map(|s| Vec::with_capacity(if s.per_cycle() { plan.cycles } else { 0 }))
            .collect();
        let sampling = sources.per_cycle().next().is_some();
        Protocol {
            plan,
            sources,
            start,
            references,
            warmup_labels,
            samples,
            sampling,
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

    /// To be called after every run of the body: reads the sources that judge a trend, during
    /// the measured cycles. Does nothing for a check without such sources.
    pub(crate) fn after_cycle(&mut self) {
        if !self.sampling || self.references.is_empty() || self.end.is_some() {
            return;
        }
        for (i, source) in self.sources.per_cycle() {
            if let Some(level) = source.read().level() {
                self.samples[i].push(level);
            }
        }
    }

    /// A settler for the snapshot that ends the current stage.
    pub(crate) fn settler(&self) -> Settler<'_> {
        let target = match self.references.last() {
            None => Target::Baseline {
                before: &self.start,
            },
            Some(reference) => Target::AtMost(reference),
        };
        Settler::new(&self.sources, target, self.plan.budget)
    }

    /// Lets the resources settle towards this stage's target, sleeping in between.
    pub(crate) fn settle_blocking(&self) -> Settled {
        settle::blocking(self.settler(), || self.snapshot())
    }

    /// Lets the resources settle towards this stage's target, with `wait` in between.
    pub(crate) fn settle_waiting(&self, wait: &mut dyn FnMut(std::time::Duration)) -> Settled {
        settle::waiting(self.settler(), || self.snapshot(), wait)
    }

    /// Lets the resources settle, awaiting on the runtime in between.
    #[cfg(feature = "tokio")]
    pub(crate) async fn settle_async(&self) -> Settled {
        settle::awaiting(|| self.settler(), || self.snapshot()).await
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.sources.snapshot()
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
        for (i, source) in self.sources.iter().enumerate() {
            let (before, after) = (self.start.get(i), b0.get(i));
            for id in added(before.ids(), after.ids()) {
                self.warmup_labels[i].insert(id, source.label(id));
            }
        }
    }

    /// Judges every source and builds the report.
    pub(crate) fn finish(self) -> Report {
        let end = self.end.as_ref().expect("finish after the last stage");
        let b0 = &self.references[0];
        let b1 = self.references.get(1);
        let mut lines: Vec<Line> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, source)| self.judge(i, source, b0, b1, end))
            .collect();
        let notes: Vec<String> = self.sources.iter().flat_map(|s| s.notes()).collect();
        // Read after the items (judging made them): a wait without end anywhere outweighs.
        let lingering =
            self.sources
                .iter()
                .map(|s| s.lingering())
                .fold(Lingering::Unknown, |all, one| match (all, one) {
                    (Lingering::Never, _) | (_, Lingering::Never) => Lingering::Never,
                    (Lingering::Within(a), Lingering::Within(b)) => Lingering::Within(a.max(b)),
                    (Lingering::Within(d), Lingering::Unknown)
                    | (Lingering::Unknown, Lingering::Within(d)) => Lingering::Within(d),
                    (Lingering::Unknown, Lingering::Unknown) => Lingering::Unknown,
                });
        if let Some(why) = crate::context::shared_process() {
            // Other tests' threads, fds, children and allocations were counted too: no
            // verdict on them can stand. (Tasks are counted per runtime; a probe counts what
            // its owner chose.)
            for line in &mut lines {
                let process_wide = matches!(
                    line.resource,
                    Resource::Threads | Resource::Fds | Resource::Children | Resource::Heap
                );
                if process_wide && !matches!(line.verdict, Verdict::NotMeasured(_)) {
                    line.verdict = Verdict::Failed(why.to_owned());
                }
            }
        }
        Report {
            cycles: self.plan.cycles,
            warmup: self.plan.warmup,
            settled: self.settled,
            budget: self.plan.budget,
            budget_ran_out: self.budget_ran_out,
            lingering,
            snapshots: self.snapshots,
            lines,
            notes,
        }
    }

    fn judge(
        &self,
        i: usize,
        source: &dyn Source,
        b0: &Snapshot,
        b1: Option<&Snapshot>,
        end: &Snapshot,
    ) -> Line {
        let mut line = Line::new(source.resource(), source.style(), source.unit());
        if let Reading::Unsupported(why) = self.start.get(i) {
            line.verdict = Verdict::NotMeasured((*why).to_owned());
            return line;
        }
        let readings = [
            Some(self.start.get(i)),
            Some(b0.get(i)),
            b1.map(|s| s.get(i)),
            Some(end.get(i)),
        ];
        if let Some(msg) = readings.iter().flatten().find_map(|x| match x {
            Reading::Failed(msg) => Some(msg),
            _ => None,
        }) {
            line.verdict = Verdict::Failed(msg.clone());
            return line;
        }
        let (Some(b0_level), Some(end_level)) = (b0.get(i).level(), end.get(i).level()) else {
            line.verdict = Verdict::Failed(format!(
                "{} disappeared during the check",
                source.resource()
            ));
            return line;
        };
        let transients = self.warmup_transients(i, source, end.get(i)) as i64;
        let uncounted = source.uncounted(b0.get(i), b1.map(|s| s.get(i)), end.get(i));
        let (b0_level, end_level) = (b0_level - uncounted.b0, end_level - uncounted.end);
        let series = Series {
            base: (b0_level - transients).max(0),
            b1: b1.and_then(|s| s.get(i).level()).map(|l| l - uncounted.b1),
            end: end_level,
            cycles: self.plan.cycles,
            samples: &self.samples[i],
        };
        let judged = source.judge(&series);
        line.own_lines = uncounted.lines;
        line.start = b0_level;
        line.end = end_level;
        line.growth = judged.growth;
        line.verdict = judged.verdict;
        if let (Some(b0_bytes), Some(end_bytes)) = (b0.get(i).bytes(), end.get(i).bytes()) {
            line.bytes = Some((b0_bytes, end_bytes));
        }
        if line.growth > 0 {
            line.set_items(source.items(b0.get(i), end.get(i)));
        }
        line
    }

    /// Items warm-up added that were still alive at B0 but have gone (or, for a reused id,
    /// now name something else) by the end: they inflated B0 and must not offset a leak.
    fn warmup_transients(&self, i: usize, source: &dyn Source, end: &Reading) -> usize {
        let end_ids = end.ids();
        self.warmup_labels[i]
            .iter()
            .filter(|(_, label)| !label.as_deref().is_some_and(|l| source.ignores(l)))
            .filter(|(&id, label)| {
                end_ids.binary_search(&id).is_err()
                    || (source.reuses_ids() && source.label(id) != **label)
            })
            .count()
    }
}
