//! The stages of a close, and what the coordinator knows about a task.

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

    /// Position of the stage in [`Stage::ALL`].
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// A task known to the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// Unique within one [`Coordinator`](crate::Coordinator), in registration order.
    pub id: u64,
    /// The stage the task was registered in.
    pub stage: Stage,
    /// A human-readable name, used in reports.
    pub name: String,
}

/// Registration refused: the stage is already closing or closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub Stage);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stage {:?} is closing: no new tasks", self.0)
    }
}

impl std::error::Error for Refused {}
