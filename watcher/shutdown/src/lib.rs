//! CONTRACT SKELETON — to be implemented. Signatures below are the contract the watcher codes against.
use std::future::Future;
use std::time::Duration;

pub mod sync;

/// The stages of a close, in the order they are closed and joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Event intake: notify pump, debounce, directory scans.
    Intake,
    /// The worker pool.
    Workers,
    /// Periodic background routines (ledger cleanup, file-state cleanup).
    Background,
}

impl Stage {
    /// All stages in close order.
    pub const ALL: [Stage; 3] = [Stage::Intake, Stage::Workers, Stage::Background];
}

/// A task known to the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: u64,
    pub stage: Stage,
    pub name: String,
}

/// Registration refused: the stage is already closing or closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub Stage);

/// What one close did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReport {
    /// Per stage, in close order, the time from stop to joined (or aborted).
    pub stages: Vec<(Stage, Duration)>,
    /// Whether the budget ran out.
    pub budget_exhausted: bool,
    /// Tasks that had to be aborted, in the order they were aborted.
    pub aborted: Vec<TaskInfo>,
}

/// What the coordinator asks of its owner during close.
pub trait CloseHooks {
    /// Tell every task of `stage` to stop (cancel its token, close its channel...).
    fn stop(&self, stage: Stage);
    /// Resolves when the close budget is used up.
    fn expired(&self) -> impl Future<Output = ()>;
    /// Abort a task that did not finish within the budget.
    fn abort(&self, task: &TaskInfo);
}

/// Shared, cloneable coordinator.
#[derive(Clone)]
pub struct Coordinator {
    _p: (),
}

/// Held by a running task; dropping it deregisters the task and wakes a waiting close.
pub struct Permit {
    _p: (),
}

impl Permit {
    pub fn info(&self) -> &TaskInfo {
        todo!()
    }
}

impl Default for Coordinator {
    fn default() -> Self {
        Self::new()
    }
}

impl Coordinator {
    pub fn new() -> Self {
        todo!()
    }
    /// Register a task in `stage`; refused once that stage is closing or closed.
    pub fn register(&self, _stage: Stage, _name: impl Into<String>) -> Result<Permit, Refused> {
        todo!()
    }
    /// Number of registered (live) tasks in `stage`.
    pub fn live(&self, _stage: Stage) -> usize {
        todo!()
    }
    /// True once a close (or cancel_all) has begun.
    pub fn is_closing(&self) -> bool {
        todo!()
    }
    /// Staged close, run once: for each stage in order, refuse new registrations, `hooks.stop`,
    /// wait until its tasks are gone or the budget expires (then abort and report the rest).
    /// Concurrent and later callers wait for the first close and get the same report.
    pub async fn close<H: CloseHooks>(&self, _hooks: &H) -> CloseReport {
        todo!()
    }
    /// Drop without close: refuse all registrations and tell every stage to stop.
    pub fn cancel_all<H: CloseHooks>(&self, _hooks: &H) {
        todo!()
    }
}
