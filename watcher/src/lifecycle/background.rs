//! The two background routines: "cleanup" (compacts the ledger's journal into its snapshot, so
//! that a restart replays little; the ledger holds no `done` entries to prune) and "file-state"
//! (prunes intake's debounce state). Each is one tokio task in the Background stage, and holds
//! a [`Running`] guard from its spawn until it ends: the `watcher_background_tasks_active`
//! gauge reads 1 exactly while the task is alive.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use watcher_shutdown::Stage;

use crate::intake::FileState;
use crate::lifecycle::tasks::Tasks;
use crate::report::metrics::{Counters, Routine, Running};
use crate::report::progress::Progress;
use crate::store::ledger::Ledger;
use crate::warnings::Warnings;

/// What the two routines use, and how often they run.
pub(crate) struct Routines {
    pub ledger: Arc<Ledger>,
    /// Handed to [`Ledger::prune`], which since version 3 of the ledger removes nothing.
    pub cleanup_after: Duration,
    pub cleanup_every: Duration,
    pub file_state: FileState,
    pub file_state_every: Duration,
    pub counters: Arc<Counters>,
    pub progress: Arc<Progress>,
    pub warnings: Warnings,
}

impl Routines {
    /// Spawns both routines as tracked tasks of the Background stage.
    pub fn start(self, tasks: &Tasks) {
        let (cleanup_every, file_state_every) = (self.cleanup_every, self.file_state_every);
        let this = Arc::new(self);
        let r = this.clone();
        tasks.spawn(Stage::Background, "cleanup", move |_, token| {
            let running = r.counters.routine_started(Routine::Cleanup);
            every(cleanup_every, token, running, move || r.cleanup_once())
        });
        let r = this;
        tasks.spawn(Stage::Background, "file-state", move |_, token| {
            let running = r.counters.routine_started(Routine::FileState);
            every(file_state_every, token, running, move || {
                r.file_state_once()
            })
        });
    }

    /// TEST FIXTURE (see `Builder::leaky_background_routines_for_tests`): the classic bug.
    /// Spawned untracked, with no permit and no token, the routines loop until the runtime
    /// itself goes away; every create/close cycle leaks two tasks.
    pub fn start_leaky(self, tasks: &Tasks) {
        let (cleanup_every, file_state_every) = (self.cleanup_every, self.file_state_every);
        let this = Arc::new(self);
        let r = this.clone();
        let running = r.counters.routine_started(Routine::Cleanup);
        tasks.spawn_untracked(async move {
            let _running = running;
            let mut iv = tokio::time::interval(cleanup_every);
            loop {
                iv.tick().await;
                r.cleanup_once();
            }
        });
        let r = this;
        let running = r.counters.routine_started(Routine::FileState);
        tasks.spawn_untracked(async move {
            let _running = running;
            let mut iv = tokio::time::interval(file_state_every);
            loop {
                iv.tick().await;
                r.file_state_once();
            }
        });
    }

    fn cleanup_once(&self) {
        if let Err(e) = self.ledger.prune(self.cleanup_after) {
            self.warnings
                .warn(format_args!("ledger cleanup failed: {e}"));
        }
        self.counters.cleanup_ran();
        self.progress.changed();
    }

    fn file_state_once(&self) {
        self.file_state.prune();
        self.counters.file_state_ran();
        self.progress.changed();
    }
}

/// Runs `f` every `period` until `token` is cancelled; `_running` goes with the task.
async fn every(
    period: Duration,
    token: CancellationToken,
    _running: Running,
    mut f: impl FnMut() + Send + 'static,
) {
    let mut iv = tokio::time::interval_at(Instant::now() + period, period);
    iv.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            _ = iv.tick() => f(),
        }
    }
}
