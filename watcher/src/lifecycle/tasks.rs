//! The watcher's tasks: spawned tracked, stopped in stages, aborted when the budget runs out.
//!
//! Every task registers with the [`watcher_shutdown::Coordinator`] in its [`Stage`] and holds
//! the [`Permit`](watcher_shutdown::Permit) it gets back for as long as it runs; it lives in its
//! stage's `TaskTracker` (the tokio-side wait group), gets its stage's `CancellationToken` (the
//! stop signal), and polls behind the [`Fence`] that holds the directory lock. [`Tasks`] alone
//! touches those: the engine asks it to spawn, close, abandon (drop without close), and release
//! the lock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use watcher_shutdown::{CloseHooks, CloseReport, Coordinator, Stage, Stopper, TaskInfo};

use crate::intake::events::Unwatcher;
use crate::lifecycle::dirlock::Fence;
use crate::mutex::lock;

fn stage_index(s: Stage) -> usize {
    match s {
        Stage::Intake => 0,
        Stage::Workers => 1,
        Stage::Background => 2,
    }
}

/// Per stage: a tracker (the tokio-side wait group) and a token (the stop signal).
#[derive(Default)]
struct StageCtl {
    tracker: TaskTracker,
    token: CancellationToken,
}

/// Everything needed to spawn, stop and abort the watcher's tasks.
pub(crate) struct Tasks {
    coord: Coordinator,
    rt: Handle,
    /// Every task polls behind it; it holds the directory lock.
    fence: Arc<Fence>,
    stages: [StageCtl; 3],
    handles: Mutex<HashMap<u64, AbortHandle>>,
}

impl Tasks {
    /// Tasks spawned on `rt`, polling behind `fence`.
    pub fn new(rt: Handle, fence: Fence) -> Self {
        Tasks {
            coord: Coordinator::new(),
            rt,
            fence: Arc::new(fence),
            stages: Default::default(),
            handles: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a task in `stage`, then spawns it (tracked, with its permit). `make` gets the
    /// task's id and its stage's stop token. A refused registration (the stage is closing)
    /// spawns nothing and returns false. A task's spawn site (where tokio's task hooks see it
    /// spawned) is the caller's line.
    #[track_caller]
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
        let mut handles = lock(&self.handles);
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

    /// TEST FIXTURE ONLY (`Builder::leaky_background_routines_for_tests`): a plain spawn on the
    /// watcher's runtime, with no permit, no token, no tracker and no fence: nothing stops it.
    /// Its spawn site is the caller's line, as a leak report shows it.
    #[track_caller]
    pub fn spawn_untracked(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.rt.spawn(fut);
    }

    /// The staged close (see [`watcher_shutdown::Coordinator::close`]): stops each stage in
    /// turn, and aborts what is still running at `deadline`. Stopping intake also starts the
    /// unwatch. Then waits until every task is really gone (aborted ones end at their next poll).
    pub async fn close(
        &self,
        unwatcher: &Unwatcher,
        deadline: tokio::time::Instant,
    ) -> CloseReport {
        let hooks = Hooks {
            tasks: self,
            unwatcher,
            deadline,
        };
        let report = self.coord.close(&hooks).await;
        for ctl in &self.stages {
            ctl.tracker.close();
            ctl.tracker.wait().await;
        }
        report
    }

    /// Drop without close: stops every stage and unwatches now, aborts every task, and
    /// releases the directory lock once no poll of a task is running any more.
    pub fn abandon(&self, unwatcher: &Unwatcher) {
        let hooks = Hooks {
            tasks: self,
            unwatcher,
            deadline: tokio::time::Instant::now(),
        };
        self.coord.cancel_all(&hooks);
        for h in lock(&self.handles).values() {
            h.abort();
        }
        self.fence.release_when_idle();
    }

    /// Releases the directory lock (close, once every task has ended). Idempotent.
    pub fn release_lock(&self) {
        self.fence.release();
    }

    fn abort(&self, id: u64) {
        if let Some(h) = lock(&self.handles).get(&id) {
            h.abort();
        }
    }
}

/// The coordinator's view of the watcher during close.
struct Hooks<'a> {
    tasks: &'a Tasks,
    unwatcher: &'a Unwatcher,
    deadline: tokio::time::Instant,
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
