//! [`ShutdownReport`]: what [`crate::Watcher::close`] did, stage by stage.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use watcher_shutdown::{Stage, TaskInfo};

use crate::work::child::KilledCommand;

/// What [`crate::Watcher::close`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Per stage, in close order (intake, workers, background): time from stop to joined.
    pub stages: Vec<(Stage, Duration)>,
    /// True when the shutdown budget ran out and tasks had to be aborted.
    pub budget_exhausted: bool,
    /// The tasks that were aborted (e.g. a worker whose processor hung).
    pub aborted: Vec<TaskInfo>,
    /// The commands those aborted workers were running ([`GroupChild`](crate::work::child::GroupChild)),
    /// each killed with its whole process group and reaped.
    pub killed: Vec<KilledCommand>,
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
        for k in &self.killed {
            writeln!(
                f,
                "  killed: {} (process group {}) processing {}{}",
                k.command,
                k.pid,
                k.file.display(),
                if k.reaped { "" } else { ", not reaped yet" }
            )?;
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
