//! The settle loop: the one place in a check that waits.
//!
//! Threads exit, fds close and tasks finish a little after the call that ends them returns.
//! A [`Settler`] decides, snapshot by snapshot, whether the resources have settled or how long
//! to wait before looking again; the sync and async checks only differ in how they wait. When
//! nothing lingers, the first snapshot settles and nothing waits at all.

use std::time::{Duration, Instant};

use crate::alloc;
use crate::source::{Snapshot, Sources};

/// First wait between snapshots; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_micros(20);
const MAX_BACKOFF: Duration = Duration::from_millis(4);
/// How long the counts must stop falling before a baseline with no known target is taken.
pub(crate) const QUIET: Duration = Duration::from_millis(10);

/// What "settled" means for one snapshot. Each source says whether its own reading is back
/// (see `Source::settled`); a snapshot has settled when every source's has.
pub(crate) enum Target<'a> {
    /// Every reading back at its reference (for a count: at or below it).
    AtMost(&'a Snapshot),
    /// A baseline after warm-up: back at or below the figures from before warm-up, or no
    /// count has changed for [`QUIET`] (a lazily created pool never goes away).
    Baseline { before: &'a Snapshot },
}

pub(crate) enum Step {
    Done(Settled),
    Wait(Duration),
}

/// A settled snapshot, with what it took to get there.
pub(crate) struct Settled {
    pub(crate) snap: Snapshot,
    /// Real time spent settling.
    pub(crate) elapsed: Duration,
    /// Snapshots judged, this one included.
    pub(crate) snapshots: usize,
}

pub(crate) struct Settler<'a> {
    sources: &'a Sources,
    target: Target<'a>,
    started: Instant,
    deadline: Instant,
    backoff: Duration,
    last: Option<Vec<Option<i64>>>,
    last_change: Instant,
    snapshots: usize,
}

impl<'a> Settler<'a> {
    pub(crate) fn new(sources: &'a Sources, target: Target<'a>, budget: Duration) -> Self {
        let now = Instant::now();
        Settler {
            sources,
            target,
            started: now,
            deadline: now + budget,
            backoff: FIRST_BACKOFF,
            last: None,
            last_change: now,
            snapshots: 0,
        }
    }

    /// Judges a fresh snapshot: done, or wait this long and take another.
    pub(crate) fn step(&mut self, snap: Snapshot) -> Step {
        let now = Instant::now();
        self.snapshots += 1;
        let settled = match &self.target {
            Target::AtMost(reference) => self.back_at(&snap, reference),
            Target::Baseline { before } => {
                let levels: Vec<Option<i64>> = (0..self.sources.len())
                    .map(|i| snap.get(i).level())
                    .collect();
                if self.last.as_ref() != Some(&levels) {
                    self.last = Some(levels);
                    self.last_change = now;
                }
                self.back_at(&snap, before) || now.duration_since(self.last_change) >= QUIET
            }
        };
        if settled || now >= self.deadline {
            return Step::Done(Settled {
                snap,
                elapsed: self.started.elapsed(),
                snapshots: self.snapshots,
            });
        }
        let wait = self.backoff.min(self.deadline - now);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Step::Wait(wait)
    }
}

impl Settler<'_> {
    /// True when every source says its reading is back at the reference's.
    fn back_at(&self, snap: &Snapshot, reference: &Snapshot) -> bool {
        self.sources
            .iter()
            .enumerate()
            .all(|(i, source)| source.settled(snap.get(i), reference.get(i)))
    }
}

/// Takes snapshots until they settle, sleeping the calling thread in between.
pub(crate) fn blocking(settler: Settler<'_>, snapshot: impl FnMut() -> Snapshot) -> Settled {
    waiting(settler, snapshot, &mut std::thread::sleep)
}

/// Takes snapshots until they settle, with `wait` in between (an async `#[leakcheck::test]`
/// waits on its runtime, so that the runtime's tasks run meanwhile).
pub(crate) fn waiting(
    mut settler: Settler<'_>,
    mut snapshot: impl FnMut() -> Snapshot,
    wait: &mut dyn FnMut(Duration),
) -> Settled {
    loop {
        match settler.step(snapshot()) {
            Step::Done(settled) => return settled,
            Step::Wait(d) => wait(d),
        }
    }
}

/// Takes snapshots until they settle, awaiting on the runtime in between. Counting is paused
/// while it makes the settler and takes snapshots, not while it awaits.
#[cfg(feature = "tokio")]
pub(crate) async fn awaiting<'a>(
    settler: impl FnOnce() -> Settler<'a>,
    mut snapshot: impl FnMut() -> Snapshot,
) -> Settled {
    let mut settler = {
        let _paused = alloc::pause();
        settler()
    };
    loop {
        let step = {
            let _paused = alloc::pause();
            settler.step(snapshot())
        };
        match step {
            Step::Done(settled) => {
                // The settler's own bookkeeping was allocated while paused: free it so too.
                let _paused = alloc::pause();
                drop(settler);
                return settled;
            }
            Step::Wait(d) => {
                let before = Instant::now();
                tokio::time::sleep(d).await;
                // A paused clock returns at once, but threads need real time to exit: let the
                // runtime's tasks run, then let the rest of the wait pass in real time.
                let slept = before.elapsed();
                if slept < d {
                    tokio::task::yield_now().await;
                    std::thread::sleep(d - slept);
                }
            }
        }
    }
}

/// Decides when the heap has stopped changing after a recording pass (a block freed a little later,
/// on another thread, is not a block that stayed): done when the count has not changed for
/// 10 ms, or when `budget` has passed.
pub(crate) struct Quiet {
    started: Instant,
    budget: Duration,
    last: i64,
    since: Instant,
}

impl Quiet {
    const STILL: Duration = Duration::from_millis(10);
    const POLL: Duration = Duration::from_millis(1);

    pub(crate) fn new(budget: Duration) -> Self {
        let now = Instant::now();
        Quiet {
            started: now,
            budget,
            last: alloc::read().blocks,
            since: now,
        }
    }

    /// How long to wait before the next look, or `None` when quiet.
    pub(crate) fn step(&mut self) -> Option<Duration> {
        let now = alloc::read().blocks;
        if now != self.last {
            self.last = now;
            self.since = Instant::now();
        }
        if self.since.elapsed() >= Self::STILL || self.started.elapsed() >= self.budget {
            return None;
        }
        Some(Self::POLL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Resource;
    use crate::source::{Reading, Source};

    /// A source whose readings the tests make by hand.
    struct Counted;

    impl Source for Counted {
        fn resource(&self) -> Resource {
            Resource::Threads
        }
        fn read(&self) -> Reading {
            unreachable!("the tests make the readings")
        }
    }

    fn sources() -> Sources {
        Sources::new(vec![Box::new(Counted)])
    }

    fn snap(threads: usize) -> Snapshot {
        Snapshot::of(vec![Reading::Count(threads)])
    }

    #[test]
    fn settled_snapshot_needs_no_wait() {
        let sources = sources();
        let reference = snap(3);
        let mut s = Settler::new(&sources, Target::AtMost(&reference), Duration::from_secs(1));
        assert!(matches!(s.step(snap(3)), Step::Done(_)));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let sources = sources();
        let reference = snap(3);
        let mut s = Settler::new(
            &sources,
            Target::AtMost(&reference),
            Duration::from_secs(60),
        );
        let waits: Vec<Duration> = (0..12)
            .map(|_| match s.step(snap(4)) {
                Step::Wait(d) => d,
                Step::Done(_) => panic!("settled while above the reference"),
            })
            .collect();
        assert_eq!(waits[0], FIRST_BACKOFF);
        assert_eq!(waits[1], FIRST_BACKOFF * 2);
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF);
    }

    #[test]
    fn deadline_ends_the_wait() {
        let sources = sources();
        let reference = snap(3);
        let mut s = Settler::new(&sources, Target::AtMost(&reference), Duration::ZERO);
        assert!(matches!(s.step(snap(4)), Step::Done(_)));
    }

    #[test]
    fn baseline_ends_at_the_old_figures_or_when_quiet() {
        let sources = sources();
        let before = snap(3);
        let mut s = Settler::new(
            &sources,
            Target::Baseline { before: &before },
            Duration::from_secs(60),
        );
        assert!(matches!(s.step(snap(3)), Step::Done(_)));

        let mut s = Settler::new(
            &sources,
            Target::Baseline { before: &before },
            Duration::from_secs(60),
        );
        assert!(matches!(s.step(snap(5)), Step::Wait(_)));
        // Counts that keep changing are not quiet.
        s.last_change -= QUIET;
        assert!(matches!(s.step(snap(4)), Step::Wait(_)));
        // Counts that have not changed for QUIET are.
        s.last_change -= QUIET;
        assert!(matches!(s.step(snap(4)), Step::Done(_)));
    }
}
