//! The state every clone of a coordinator shares, behind one mutex.
//!
//! One lock for everything keeps each decision atomic: "is the stage closed?" and "add the
//! task", "is the stage empty?" and "store the waker", "remove the task" and "take the waker".
//! Hooks and wakers are never called with the lock held.

use std::collections::BTreeMap;
use std::task::Waker;

use crate::sync::{Mutex, MutexGuard};
use crate::{CloseReport, Stage, TaskInfo};

/// Shared by every [`Coordinator`](crate::Coordinator) clone and every
/// [`Permit`](crate::Permit). Holds no reference to itself: nothing here keeps the `Arc` alive.
pub(crate) struct Shared {
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
    /// The leader's waker while it waits for `stage` to drain.
    pub(crate) join_waker: Option<(Stage, Waker)>,
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
    pub(crate) cycle: Option<crate::sync::Arc<Shared>>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            state: Mutex::new(State {
                next_id: 0,
                closing: false,
                closed: [false; 3],
                live: Default::default(),
                join_waker: None,
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
    /// Removes a task (if it is still registered) and returns the waker to wake if that left
    /// its stage empty while the leader waits for it.
    pub(crate) fn deregister(&mut self, task: &TaskInfo) -> Option<Waker> {
        let live = &mut self.live[task.stage.index()];
        live.remove(&task.id)?;
        if cfg!(coordinator_bug = "skip_wake") {
            return None; // deliberate bug: the leader is never woken
        }
        if live.is_empty() && matches!(self.join_waker, Some((s, _)) if s == task.stage) {
            return self.join_waker.take().map(|(_, w)| w);
        }
        None
    }

    /// Takes every follower's waker, to be woken once the lock is released.
    pub(crate) fn take_followers(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.followers).into_values().collect()
    }
}
