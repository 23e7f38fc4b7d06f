//! The handle a registered task holds while it runs.

use crate::state::{Next, StateLock};
use crate::sync::Arc;
use crate::TaskInfo;

/// Held by a running task; dropping it deregisters the task and wakes a waiting close.
///
/// Obtained from [`Coordinator::register`](crate::Coordinator::register). Move it into the
/// task so that it is dropped when the task ends, however it ends (return, panic, abort).
/// Dropping a permit whose task close already aborted and released is harmless.
///
/// ```
/// use watcher_shutdown::{Coordinator, Stage};
///
/// let coordinator = Coordinator::new();
/// let permit = coordinator.register(Stage::Workers, "worker-0").unwrap();
/// assert_eq!(permit.info().name, "worker-0");
/// assert_eq!(coordinator.live(Stage::Workers), 1);
/// drop(permit);
/// assert_eq!(coordinator.live(Stage::Workers), 0);
/// ```
#[must_use = "the task is deregistered as soon as its permit is dropped"]
pub struct Permit {
    pub(crate) state: Arc<StateLock>,
    pub(crate) info: TaskInfo,
}

impl Permit {
    /// The task this permit stands for.
    pub fn info(&self) -> &TaskInfo {
        &self.info
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Each step runs after the lock is released: the leader re-locks as soon as it runs,
        // and a stopper may drop permits itself.
        let mut next = self.state.lock().deregister(&self.info);
        while let Some(step) = next.take() {
            match step {
                Next::Wake(waker) => waker.wake(),
                Next::Stop(stopper, stage) => {
                    stopper(stage);
                    next = self.state.lock().chained_stop_returned(stage);
                }
            }
        }
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("info", &self.info).finish()
    }
}
