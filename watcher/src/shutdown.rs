//! Staged close: the [`ShutdownReport`], the hooks the coordinator calls, and task spawning
//! (every task holds a [`watcher_shutdown::Permit`] and lives in its stage's `TaskTracker`).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use watcher_shutdown::{CloseHooks, Coordinator, Stage, Stopper, TaskInfo};

use crate::dirlock::Fence;
use crate::intake::Unwatcher;

/// What [`crate::Watcher::close`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Per stage, in close order (intake, workers, background): time from stop to joined.
    pub stages: Vec<(Stage, Duration)>,
    /// True when the shutdown budget ran out and tasks had to be aborted.
    pub budget_exhausted: bool,
    /// The tasks that were aborted (e.g. a worker whose processor hung).
    pub aborted: Vec<TaskInfo>,
    /// Files left in the directory unprocessed: queued or still debouncing when intake stopped,
    /// or being processed by an aborted worker. The next run processes them.
    pub handed_back: Vec<PathBuf>,
    /// Part of the intake stage spent on the kernel's inotify teardown (Watch mode; zero in
    /// the other modes). Close starts it on its caller's thread as it stops intake, so it
    /// overlaps the intake task's wake-up. With its own notify instance: the wait from
    /// dropping notify's watcher until notify's thread has ended its loop (its
    /// `inotify_rm_watch` and `close`, plus that thread's wake-up; other tasks may run
    /// meanwhile, so this is an upper bound). With a [`WatchService`](crate::WatchService):
    /// the `inotify_rm_watch` call. `total` minus this is, about, the watcher's own share of
    /// the close.
    pub unwatch: Duration,
    /// Total time of the close.
    pub total: Duration,
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "shutdown report ({:?} total)", self.total)?;
        for (stage, d) in &self.stages {
            if *stage == Stage::Intake && !self.unwatch.is_zero() {
                writeln!(
                    f,
                    "  {stage:?}: {d:?} (kernel inotify teardown {:?})",
                    self.unwatch
                )?;
            } else {
                writeln!(f, "  {stage:?}: {d:?}")?;
            }
        }
        if self.budget_exhausted {
            writeln!(f, "  budget exhausted")?;
        }
        for t in &self.aborted {
            writeln!(f, "  aborted: {} ({:?}, task {})", t.name, t.stage, t.id)?;
        }
        if !self.handed_back.is_empty() {
            writeln!(
                f,
                "  handed back unprocessed: {} file(s)",
                self.handed_back.len()
            )?;
            for p in self.handed_back.iter().take(20) {
                writeln!(f, "    {}", p.display())?;
            }
            if self.handed_back.len() > 20 {
                writeln!(f, "    …")?;
            }
        }
        Ok(())
    }
}

pub(crate) fn stage_index(s: Stage) -> usize {
    match s {
        Stage::Intake => 0,
        Stage::Workers => 1,
        Stage::Background => 2,
    }
}

/// Per stage: a tracker (the tokio-side wait group) and a token (the stop signal).
#[derive(Default)]
pub(crate) struct StageCtl {
    pub tracker: TaskTracker,
    pub token: CancellationToken,
}

/// Everything needed to spawn, stop and abort the watcher's tasks.
pub(crate) struct Tasks {
    pub coord: Coordinator,
    pub rt: Handle,
    /// Every task polls behind it; it holds the directory lock.
    pub fence: Arc<Fence>,
    pub stages: [StageCtl; 3],
    handles: Mutex<HashMap<u64, AbortHandle>>,
}

impl Tasks {
    pub fn new(rt: Handle, fence: Fence) -> Self {
        Tasks {
            coord: Coordinator::new(),
            rt,
            fence: Arc::new(fence),
            stages: Default::default(),
            handles: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a task in `stage`, then spawns it (tracked, with its permit). A refused
    /// registration (the stage is closing) spawns nothing and returns false.
    pub fn spawn<F, Fut>(&self, stage: Stage, name: &str, make: F) -> bool
    where
        F: FnOnce(u64, CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Ok(permit) = self.coord.register(stage, name) else {
            return false;
        };
        let id = permit.info().id;
        let ctl = &self.stages[stage_index(stage)];
        let fut = make(id, ctl.token.clone());
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        let fence = self.fence.clone();
        let jh = ctl.tracker.spawn_on(
            async move {
                let _permit = permit;
                let mut fut = std::pin::pin!(fut);
                std::future::poll_fn(|cx| match fence.enter() {
                    Some(_polling) => fut.as_mut().poll(cx),
                    None => Poll::Pending,
                })
                .await;
            },
            &self.rt,
        );
        handles.insert(id, jh.abort_handle());
        true
    }

    pub fn abort(&self, id: u64) {
        let handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = handles.get(&id) {
            h.abort();
        }
    }

    pub fn abort_all(&self) {
        let handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        for h in handles.values() {
            h.abort();
        }
    }

    /// Waits until every tracked task is gone (aborted ones included).
    pub async fn join_all(&self) {
        for ctl in &self.stages {
            ctl.tracker.close();
            ctl.tracker.wait().await;
        }
    }
}

/// The coordinator's view of the watcher during close.
pub(crate) struct Hooks<'a> {
    pub tasks: &'a Tasks,
    pub unwatcher: &'a Unwatcher,
    pub deadline: tokio::time::Instant,
}

impl CloseHooks for Hooks<'_> {
    fn stop(&self, stage: Stage) {
        self.tasks.stages[stage_index(stage)].token.cancel();
        if stage == Stage::Intake {
            // After the cancel: the kernel's teardown runs while the intake task wakes up.
            self.unwatcher.run();
        }
    }

    fn expired(&self) -> impl Future<Output = ()> {
        tokio::time::sleep_until(self.deadline)
    }

    fn abort(&self, task: &TaskInfo) {
        self.tasks.abort(task.id);
    }

    /// Stopping a stage is cancelling its token, which any thread may do: the task that
    /// empties a stage stops the next one, and `close` is woken once, at the end.
    fn stopper(&self) -> Option<Stopper> {
        let tokens = self.tasks.stages.each_ref().map(|ctl| ctl.token.clone());
        Some(Arc::new(move |stage| tokens[stage_index(stage)].cancel()))
    }
}
