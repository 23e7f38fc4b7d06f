//! The coordinator: registration, the staged close and its leader, `cancel_all`.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::state::{Joining, StateLock, ORDER};
use crate::sync::Arc;
use crate::{CloseHooks, CloseReport, Permit, Refused, Stage, TaskInfo};

/// Shared, cloneable coordinator.
///
/// Clones share one state: register tasks through any clone, close through any clone. It
/// holds no thread and no task of its own; the state is freed when the last clone and the
/// last [`Permit`] are dropped.
///
/// ```
/// use watcher_shutdown::{Coordinator, Refused, Stage};
///
/// let coordinator = Coordinator::new();
/// let permit = coordinator.register(Stage::Intake, "notify-pump").unwrap();
/// assert!(!coordinator.is_closing());
/// assert_eq!(coordinator.live(Stage::Intake), 1);
/// drop(permit);
/// // After a close (or cancel_all) has begun, registration is refused:
/// # struct H;
/// # impl watcher_shutdown::CloseHooks for H {
/// #     fn stop(&self, _: Stage) {}
/// #     fn expired(&self) -> impl std::future::Future<Output = ()> { std::future::pending() }
/// #     fn abort(&self, _: &watcher_shutdown::TaskInfo) {}
/// # }
/// coordinator.cancel_all(&H);
/// assert_eq!(coordinator.register(Stage::Intake, "late").unwrap_err(), Refused(Stage::Intake));
/// ```
#[derive(Clone)]
pub struct Coordinator {
    state: Arc<StateLock>,
}

impl Default for Coordinator {
    fn default() -> Self {
        Self::new()
    }
}

impl Coordinator {
    /// A coordinator with every stage open and no task.
    pub fn new() -> Self {
        Coordinator {
            state: Arc::new(StateLock::new()),
        }
    }

    /// Register a task in `stage`; refused once that stage is closing or closed.
    ///
    /// The check and the registration are one atomic step, so a task is either refused or
    /// waited for by close, never missed.
    pub fn register(&self, stage: Stage, name: impl Into<String>) -> Result<Permit, Refused> {
        let name = name.into();
        let mut state = self.state.lock();
        if state.closed[stage.index()] && !cfg!(coordinator_bug = "register_ignores_closed") {
            return Err(Refused(stage));
        }
        let info = TaskInfo {
            id: state.next_id,
            stage,
            name,
        };
        state.next_id += 1;
        state.live[stage.index()].insert(info.id, info.clone());
        drop(state);
        Ok(Permit {
            state: self.state.clone(),
            info,
        })
    }

    /// Number of registered (live) tasks in `stage`.
    pub fn live(&self, stage: Stage) -> usize {
        self.state.lock().live[stage.index()].len()
    }

    /// True once a close (or cancel_all) has begun.
    pub fn is_closing(&self) -> bool {
        self.state.lock().closing
    }

    /// Staged close, run once: for each stage in order, refuse new registrations, `hooks.stop`,
    /// wait until its tasks are gone or the budget expires (then abort and report the rest).
    /// Concurrent and later callers wait for the first close and get the same report.
    ///
    /// The first caller leads: it creates the budget future (`hooks.expired()`) once and runs
    /// the stages with its own `hooks`; the others only wait. If the hooks have a
    /// [`stopper`](CloseHooks::stopper), the task that empties a stage after it was told to
    /// stop records it and stops the next stage itself, so that the leader is woken once, at
    /// the end, instead of once per stage. Once the budget has run out,
    /// later stages are still stopped, but whatever is still registered right after the stop
    /// is aborted without waiting. Aborted tasks are deregistered before `hooks.abort` is
    /// called, so their permits may be dropped at any time after.
    ///
    /// Cancel safety: if the leading future is dropped before it is done, the stages it
    /// completed stay done and the next (or a waiting) caller takes over from the stage that
    /// was interrupted, with its own hooks and a new budget.
    ///
    /// Never call it from a task registered in a stage it would wait for: it would wait for
    /// itself until the budget runs out.
    pub async fn close<H: CloseHooks>(&self, hooks: &H) -> CloseReport {
        let turn = WaitTurn {
            state: &self.state,
            waiter: None,
        };
        match turn.await {
            Turn::Report(report) => report,
            Turn::Lead => self.lead(hooks).await,
        }
    }

    /// Drop without close: refuse all registrations and tell every stage to stop.
    ///
    /// Does not wait: the tasks end on their own and release their permits as they do.
    pub fn cancel_all<H: CloseHooks>(&self, hooks: &H) {
        let stages = if cfg!(coordinator_bug = "cancel_all_skips_stage") {
            &Stage::ALL[..2] // deliberate bug: background routines are never told to stop
        } else {
            &Stage::ALL[..]
        };
        {
            let mut state = self.state.lock();
            state.closing = true;
            for stage in stages {
                state.closed[stage.index()] = true;
            }
            #[cfg(coordinator_bug = "cancel_all_cycle")]
            {
                state.cycle = Some(self.state.clone()); // deliberate bug: the state owns itself
            }
        }
        for &stage in stages {
            hooks.stop(stage);
        }
    }

    /// Runs the stages; only the elected leader calls it.
    async fn lead<H: CloseHooks>(&self, hooks: &H) -> CloseReport {
        let mut handover = Handover {
            state: &self.state,
            done: false,
        };
        let mut budget = pin!(hooks.expired());
        self.state.lock().chain = hooks.stopper();
        if cfg!(coordinator_bug = "stop_all_first") {
            // deliberate bug: one "cancel everything" up front instead of stage by stage
            self.state.lock().closed = [true; 3];
            Stage::ALL.iter().for_each(|&stage| hooks.stop(stage));
        }
        while let Some(Standing {
            done,
            stage,
            exhausted,
            stop,
        }) = self.standing()
        {
            if stop {
                self.stop(hooks, stage);
            }
            // Once the budget has run out its future is done: never poll it again.
            let joined = !exhausted
                && poll_fn(|cx| self.poll_joined(done, stage, budget.as_mut(), cx)).await;
            if !joined {
                self.expire(stage).await;
            }
            let Some((aborted, since)) = self.take_late(done, stage, joined) else {
                continue; // joined and recorded by the task that emptied it
            };
            for task in &aborted {
                hooks.abort(task);
            }
            // Recorded after the aborts: a stage's time includes them, and a hook that panics
            // leaves the stage to the next caller.
            let mut state = self.state.lock();
            state.progress.stages.push((stage, since.elapsed()));
            state.progress.aborted.extend(aborted);
        }
        let (report, followers) = self.publish();
        handover.done = true;
        followers.into_iter().for_each(|waker| waker.wake());
        report
    }

    /// Where the close stands (a stopper may have moved it on since the last look): the next
    /// stage to close, marked closed and joining unless a stopper has stopped it already;
    /// `None` once every stage is done.
    fn standing(&self) -> Option<Standing> {
        let mut state = self.state.lock();
        let done = state.progress.stages.len();
        let &stage = ORDER.get(done)?;
        // A stage that a stopper has stopped (or is stopping) is not stopped again.
        let stop = !matches!(state.joining, Some(j) if j.stage == stage);
        if stop {
            state.closed[stage.index()] = true;
            state.joining = Some(Joining {
                stage,
                since: Instant::now(),
                stopped: false,
                chained: false,
            });
        }
        Some(Standing {
            done,
            stage,
            exhausted: state.progress.budget_exhausted,
            stop,
        })
    }

    /// Tells `stage` to stop, then marks it stopped (if it is still the stage joining).
    fn stop<H: CloseHooks>(&self, hooks: &H, stage: Stage) {
        hooks.stop(stage);
        let mut state = self.state.lock();
        if let Some(j) = state.joining.as_mut().filter(|j| j.stage == stage) {
            j.stopped = true;
        }
    }

    /// The budget ran out while `stage` was joining: no more chaining. The caller no longer
    /// waits for tasks, but a chained stop of this stage that is still running returns first:
    /// only then are the stage's tasks aborted and the next stage stopped.
    async fn expire(&self, stage: Stage) {
        self.state.lock().progress.budget_exhausted = true;
        if !cfg!(coordinator_bug = "abort_during_chained_stop") {
            poll_fn(|cx| self.poll_stop_returned(stage, cx)).await;
        }
    }

    /// Ends the joining of stage number `done` (`stage`): its tasks still registered when it
    /// did not join (deregistered here, to abort), and when it began. `None` if the task that
    /// emptied it has recorded it already.
    fn take_late(
        &self,
        done: usize,
        stage: Stage,
        joined: bool,
    ) -> Option<(Vec<TaskInfo>, Instant)> {
        let mut state = self.state.lock();
        if state.progress.stages.len() > done {
            return None;
        }
        let aborted: Vec<TaskInfo> = if joined || cfg!(coordinator_bug = "no_abort_on_expiry") {
            Vec::new() // (the bug: late tasks are left running)
        } else {
            std::mem::take(&mut state.live[stage.index()])
                .into_values()
                .collect()
        };
        let since = state.joining.take().map_or_else(Instant::now, |j| j.since);
        Some((aborted, since))
    }

    /// Publishes the report and steps down as leader: the report, and the followers to wake.
    fn publish(&self) -> (CloseReport, Vec<Waker>) {
        let mut state = self.state.lock();
        let report = state.progress.clone();
        state.report = Some(report.clone());
        state.leader = false;
        state.chain = None;
        (report, state.take_followers())
    }

    /// Ready once no chained stop of `stage` is running.
    fn poll_stop_returned(&self, stage: Stage, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock();
        if matches!(state.joining, Some(j) if j.stage == stage && !j.stopped) {
            // Under the same lock as the check: the stop's return finds the waker.
            state.join_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(())
    }

    /// Ready(true) once the close has got past stage number `done` (`stage`): it is stopped
    /// and has no live task, or a stopper has moved on. Ready(false) once the budget has run
    /// out.
    fn poll_joined(
        &self,
        done: usize,
        stage: Stage,
        budget: Pin<&mut impl Future<Output = ()>>,
        cx: &mut Context<'_>,
    ) -> Poll<bool> {
        {
            let mut state = self.state.lock();
            let stopped = matches!(state.joining, Some(j) if j.stage == stage && j.stopped);
            if state.progress.stages.len() > done
                || (stopped && state.live[stage.index()].is_empty())
            {
                state.join_waker = None;
                return Poll::Ready(true);
            }
            if cfg!(coordinator_bug = "lost_wakeup") {
                // deliberate bug: the last permit can drop between the check and the store
                drop(state);
                state = self.state.lock();
            }
            // Stored under the same lock as the check: a permit dropped after the check
            // finds the waker and wakes it.
            match &state.join_waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.join_waker = Some(cx.waker().clone()),
            }
        }
        if budget.poll(cx).is_ready() {
            self.state.lock().join_waker = None;
            return Poll::Ready(false);
        }
        Poll::Pending
    }
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Coordinator")
            .field("closing", &state.closing)
            .field("closed", &state.closed)
            .field("live", &state.live.each_ref().map(|live| live.len()))
            .field("done", &state.report.is_some())
            .finish()
    }
}

/// Where a close stands, as the leader reads it before each stage.
struct Standing {
    /// How many stages are done: the next one's place in [`ORDER`].
    done: usize,
    stage: Stage,
    /// The budget has run out: later stages are not waited for.
    exhausted: bool,
    /// The leader stops the stage itself (no stopper has).
    stop: bool,
}

/// What a close caller does: return the published report, or lead.
enum Turn {
    Report(CloseReport),
    Lead,
}

/// Elects the leader, or waits until the report is published (or the leader gives up, and
/// this caller may lead instead).
struct WaitTurn<'a> {
    state: &'a StateLock,
    /// Our slot in `followers`, once we have waited.
    waiter: Option<u64>,
}

impl Future for WaitTurn<'_> {
    type Output = Turn;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turn> {
        let this = self.get_mut();
        let mut state = this.state.lock();
        let turn = if let Some(report) = &state.report {
            Turn::Report(report.clone())
        } else if !state.leader {
            if cfg!(coordinator_bug = "racy_leader") {
                // deliberate bug: two callers can both see "no leader" before either sets it
                drop(state);
                state = this.state.lock();
            }
            state.leader = true;
            state.closing = true;
            Turn::Lead
        } else if cfg!(coordinator_bug = "follower_returns_early") {
            Turn::Report(state.progress.clone()) // deliberate bug: a report of work in progress
        } else {
            let id = *this.waiter.get_or_insert_with(|| {
                state.next_waiter += 1;
                state.next_waiter
            });
            match state.followers.get(&id) {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => {
                    state.followers.insert(id, cx.waker().clone());
                }
            }
            return Poll::Pending;
        };
        if let Some(id) = this.waiter.take() {
            state.followers.remove(&id);
        }
        Poll::Ready(turn)
    }
}

impl Drop for WaitTurn<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.waiter {
            self.state.lock().followers.remove(&id);
        }
    }
}

/// Hands leadership over if the leading close future is dropped (or a hook panics) before
/// the report is published, so that the waiting callers do not wait forever.
struct Handover<'a> {
    state: &'a StateLock,
    done: bool,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let followers = {
            let mut state = self.state.lock();
            state.leader = false;
            state.join_waker = None;
            state.chain = None;
            // The next leader stops the interrupted stage again, with its own hooks, unless a
            // chained stop of it is still running: it then waits for that one to return.
            if !matches!(state.joining, Some(j) if j.chained && !j.stopped) {
                state.joining = None;
            }
            state.take_followers()
        };
        followers.into_iter().for_each(|waker| waker.wake());
    }
}
