//! The state every clone of a coordinator shares, behind one mutex.
//!
//! One lock for everything keeps each decision atomic: "is the stage closed?" and "add the
//! task", "is the stage empty?" and "store the waker", "remove the task" and "take the waker".
//! Hooks, stoppers and wakers are never called with the lock held.

use std::collections::BTreeMap;
use std::task::Waker;
use std::time::Instant;

use crate::sync::{Mutex, MutexGuard};
use crate::{CloseReport, Stage, Stopper, TaskInfo};

/// The order in which close runs the stages.
pub(crate) const ORDER: [Stage; 3] = if cfg!(coordinator_bug = "stages_reversed") {
    [Stage::Background, Stage::Workers, Stage::Intake] // deliberate bug
} else {
    Stage::ALL
};

/// The stage a close is joining now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Joining {
    pub(crate) stage: Stage,
    /// When it was told to stop.
    pub(crate) since: Instant,
    /// Its stop call has returned. Until then the stage is not joined even if it is empty,
    /// so that no later stage is told to stop while this one's stop is still running.
    pub(crate) stopped: bool,
    /// Told to stop by the task that emptied the stage before (not by the leader).
    pub(crate) chained: bool,
}

/// What a permit drop does once the lock is released.
pub(crate) enum Next {
    /// Wake the leading close.
    Wake(Waker),
    /// Stop `stage` (the task that emptied the stage before it chains to it).
    Stop(Stopper, Stage),
}

/// The [`State`] behind its one lock, shared by every [`Coordinator`](crate::Coordinator)
/// clone and every [`Permit`](crate::Permit). Holds no reference to itself: nothing here keeps
/// the `Arc` alive.
pub(crate) struct StateLock {
    state: Mutex<State>,
}

pub(crate) struct State {
    pub(crate) next_id: u64,
    /// A close or `cancel_all` has begun.
    pub(crate) closing: bool,
    /// Per stage: registrations are refused.
    pub(crate) closed: [bool; 3],
    /// Per stage: the live tasks, by id (so in registration order).
    pub(crate) live: [BTreeMap<u64, TaskInfo>; 3],
    /// The leader's waker while it waits for a stage to drain.
    pub(crate) join_waker: Option<Waker>,
    /// The stage being joined, once it is being told to stop.
    pub(crate) joining: Option<Joining>,
    /// While a leader runs with a stopper: the task that empties a stage stops the next one.
    pub(crate) chain: Option<Stopper>,
    /// A close future is running the stages right now.
    pub(crate) leader: bool,
    /// What the close has done so far: the stages completed, the tasks aborted.
    pub(crate) progress: CloseReport,
    /// Set once the stages have all run; every later close returns a clone.
    pub(crate) report: Option<CloseReport>,
    /// Close callers waiting for the report (or for the leader to give up), by waiter id.
    pub(crate) followers: BTreeMap<u64, Waker>,
    pub(crate) next_waiter: u64,
    /// Deliberate bug for the loom models: a reference cycle.
    #[cfg(coordinator_bug = "cancel_all_cycle")]
    pub(crate) cycle: Option<crate::sync::Arc<StateLock>>,
}

impl StateLock {
    pub(crate) fn new() -> Self {
        StateLock {
            state: Mutex::new(State {
                next_id: 0,
                closing: false,
                closed: [false; 3],
                live: Default::default(),
                join_waker: None,
                joining: None,
                chain: None,
                leader: false,
                progress: CloseReport {
                    stages: Vec::new(),
                    budget_exhausted: false,
                    aborted: Vec::new(),
                },
                report: None,
                followers: BTreeMap::new(),
                next_waiter: 0,
                #[cfg(coordinator_bug = "cancel_all_cycle")]
                cycle: None,
            }),
        }
    }

    /// Locks the state. A panic elsewhere (in a hook, say) cannot leave it inconsistent, as
    /// every update is done before the lock is released, so a poisoned lock is still used.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Removes a task (if it is still registered); if that empties the stage being joined,
    /// returns what to do next: wake the leader, or stop the next stage.
    pub(crate) fn deregister(&mut self, task: &TaskInfo) -> Option<Next> {
        let live = &mut self.live[task.stage.index()];
        live.remove(&task.id)?;
        if cfg!(coordinator_bug = "skip_wake") {
            return None; // deliberate bug: the leader is never woken
        }
        match self.joining {
            Some(j) if j.stage == task.stage => self.joined(),
            _ => None,
        }
    }

    /// Called when the stage being joined may have become joined: stopped and empty. With a
    /// stopper, records it and moves on to the next stage here, in the task that emptied it,
    /// and wakes the leader only after the last stage; without one (or once the budget has run
    /// out), wakes the leader, which records the stage and stops the next.
    pub(crate) fn joined(&mut self) -> Option<Next> {
        let joining = self.joining.filter(|j| j.stopped)?;
        if !self.live[joining.stage.index()].is_empty() && !cfg!(coordinator_bug = "chain_early") {
            return None;
        }
        let chain = self
            .chain
            .clone()
            .filter(|_| !self.progress.budget_exhausted);
        let Some(stopper) = chain else {
            return self.join_waker.take().map(Next::Wake);
        };
        self.progress
            .stages
            .push((joining.stage, joining.since.elapsed()));
        self.joining = None;
        match ORDER.get(self.progress.stages.len()) {
            Some(&next) => {
                self.closed[next.index()] = true;
                self.joining = Some(Joining {
                    stage: next,
                    since: Instant::now(),
                    stopped: false,
                    chained: true,
                });
                Some(Next::Stop(stopper, next))
            }
            None if cfg!(coordinator_bug = "chain_no_wake") => None, // deliberate bug
            None => self.join_waker.take().map(Next::Wake),
        }
    }

    /// A chained stop of `stage` has returned: the stage may be joined already.
    pub(crate) fn chained_stop_returned(&mut self, stage: Stage) -> Option<Next> {
        match &mut self.joining {
            // The stop this chain started (nothing replaces it while it runs: a caller that
            // takes over waits for it).
            Some(j) if j.stage == stage && j.chained && !j.stopped => j.stopped = true,
            _ => return None,
        }
        if self.progress.budget_exhausted {
            // The caller has taken over and waits for this stop to return.
            return self.join_waker.take().map(Next::Wake);
        }
        self.joined()
    }

    /// Takes every follower's waker, to be woken once the lock is released.
    pub(crate) fn take_followers(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.followers).into_values().collect()
    }
}
