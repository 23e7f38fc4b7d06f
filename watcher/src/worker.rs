//! Workers: take files from the bounded queue, process them (with retries), and commit the
//! result (status, move, ledger) in the crash-safe order described in [`crate::status`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::child::Reaper;
use crate::config::Config;
use crate::file_outcome::FileOutcome;
use crate::files::{sync_dir_grouped, write_atomic, write_atomic_durably};
use crate::group_sync::GroupSync;
use crate::inbox_file;
use crate::ledger::Ledger;
use crate::metrics::Counters;
use crate::processor::{catch_unwind, ErrorKind};
use crate::progress::Progress;
use crate::queue::WorkQueue;
use crate::recovery::Interrupted;
use crate::status::{bound_message, rfc3339, status_path, Outcome, Status, STATUS_SUFFIX};

/// What every worker of one watcher uses; each worker task holds an `Arc` of the one `Crew`.
pub(crate) struct Crew {
    cfg: Arc<Config>,
    queue: Arc<WorkQueue>,
    ledger: Arc<Ledger>,
    counters: Arc<Counters>,
    progress: Arc<Progress>,
    interrupted: Interrupted,
    runs: RunIds,
    reaper: Arc<Reaper>,
    dir_syncs: Arc<DirSyncs>,
}

impl Crew {
    /// The workers of one watcher: they take files from `queue` and commit them.
    pub fn new(
        cfg: Arc<Config>,
        queue: Arc<WorkQueue>,
        ledger: Arc<Ledger>,
        counters: Arc<Counters>,
        progress: Arc<Progress>,
        interrupted: Interrupted,
        reaper: Arc<Reaper>,
    ) -> Self {
        Crew {
            cfg,
            queue,
            ledger,
            counters,
            progress,
            interrupted,
            runs: RunIds::starting_now(),
            reaper,
            dir_syncs: Arc::default(),
        }
    }

    /// The worker task `task_id`: runs until its token is cancelled (it finishes its current
    /// file first) or the queue is closed and empty.
    pub async fn run(self: Arc<Self>, task_id: u64, cancel: CancellationToken) {
        while let Some(path) = self.queue.take(task_id, &cancel).await {
            self.counters.worker_busy();
            self.progress.changed();
            let name = file_name(&path);
            let moved_out = match process_file(&self, &path, &name, &cancel).await {
                Ok(moved_out) => moved_out,
                Err(Abandoned) => {
                    self.queue.hand_back(path.clone());
                    false
                }
            };
            self.queue.done(task_id, &name);
            if moved_out && std::fs::symlink_metadata(&path).is_ok() {
                // Dropped again while claimed: intake ignored it then.
                self.queue.request_rescan();
            }
            self.counters.worker_idle();
            self.progress.changed();
        }
        self.progress.worker_exited();
    }
}

/// The syncs of the directories a commit renames into and out of, shared by the workers
/// (group commit, see [`crate::group_sync`]).
#[derive(Default)]
struct DirSyncs {
    inbox: GroupSync,
    processed: GroupSync,
    failed: GroupSync,
}

impl DirSyncs {
    fn of(&self, outcome: Outcome) -> &GroupSync {
        match outcome {
            Outcome::Processed => &self.processed,
            Outcome::Failed => &self.failed,
        }
    }
}

/// Run ids, unique across restarts: the start time in µs, plus a sequence number.
struct RunIds(AtomicU64);

impl RunIds {
    fn starting_now() -> Self {
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        RunIds(AtomicU64::new(base))
    }

    fn next(&self) -> u64 {
        self.0.fetch_add(1, Relaxed)
    }
}

fn file_name(p: &Path) -> String {
    crate::names::name_of_path(p)
}

/// Close interrupted a retry backoff: the file stays in the inbox for the next run.
struct Abandoned;

struct Decision {
    outcome: Outcome,
    attempts: u32,
    error: Option<String>,
}

impl Decision {
    fn failed(attempts: u32, error: String) -> Self {
        Decision {
            outcome: Outcome::Failed,
            attempts,
            error: Some(error),
        }
    }
}

/// Processes and commits one file; `Ok(true)` when it was moved out of the inbox.
async fn process_file(
    crew: &Crew,
    path: &Path,
    name: &str,
    cancel: &CancellationToken,
) -> Result<bool, Abandoned> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(false); // vanished since it was queued
    }
    let run = crew.runs.next();
    let started = SystemTime::now();
    let t0 = Instant::now();
    if let Err(e) = in_flight(crew, name, run).await {
        eprintln!("watcher: cannot record {name} in the ledger: {e}; leaving it in place");
        return Err(Abandoned);
    }
    let interrupted = crew.interrupted.take(name);
    let decision = match decide(crew, path, cancel).await {
        Ok(d) => d,
        Err(Abandoned) => {
            // Handed back on purpose, not interrupted: the next run starts afresh.
            let _ = crew.ledger.forget(name);
            if interrupted {
                crew.interrupted.put_back(name);
            }
            return Err(Abandoned);
        }
    };
    let outcome = decision.outcome;
    match commit(crew, path, name, run, decision, interrupted, started).await {
        Ok(status) => {
            let took = t0.elapsed();
            crew.counters.committed(outcome, took);
            if let Some(on_file) = &crew.cfg.on_file {
                on_file(&FileOutcome {
                    name: status.file,
                    outcome,
                    attempts: status.attempts,
                    max_attempts: crew.cfg.retries.saturating_add(1),
                    duration: took,
                    error: status.error,
                    moved_to: crew.cfg.dir.join(outcome.dir_name()).join(status.moved_to),
                    interrupted,
                });
            }
            Ok(true)
        }
        Err(e) => {
            // Left in flight: the next start resolves it (see `recovery`).
            eprintln!("watcher: cannot commit {name}: {e}");
            Ok(false)
        }
    }
}

/// Records `name` in flight, durably (the sync shared with the other workers).
async fn in_flight(crew: &Crew, name: &str, run: u64) -> std::io::Result<()> {
    crew.ledger.record_in_flight(name, run)?;
    crew.ledger.synced().await
}

/// Checks, reads and processes the file, with retries.
async fn decide(
    crew: &Crew,
    path: &Path,
    cancel: &CancellationToken,
) -> Result<Decision, Abandoned> {
    let cfg = &crew.cfg;
    let max = cfg.max_file_size;
    let mut attempts = 0u32;
    loop {
        let contents = match inbox_file::read(path, &cfg.dir, max).await {
            Ok(c) => c,
            Err(msg) => return Ok(Decision::failed(attempts, msg)),
        };
        attempts += 1;
        let processing = catch_unwind(cfg.processor.process_dyn(path, contents));
        let result = crew.reaper.scope(path, processing).await;
        let err = match result {
            Ok(Ok(())) => {
                return Ok(Decision {
                    outcome: Outcome::Processed,
                    attempts,
                    error: None,
                })
            }
            Err(panic) => {
                return Ok(Decision::failed(
                    attempts,
                    format!("processor panicked: {panic}"),
                ))
            }
            Ok(Err(e)) => e,
        };
        if err.kind == ErrorKind::Permanent {
            return Ok(Decision::failed(attempts, err.message));
        }
        if attempts > cfg.retries {
            return Ok(Decision::failed(
                attempts,
                format!("gave up after {attempts} attempts: {}", err.message),
            ));
        }
        crew.counters.retried();
        let backoff = backoff(cfg.retry_backoff, attempts);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Abandoned),
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

/// The delay before retry number `attempt` (1-based): base × 2^(attempt-1), at most 60 s.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(Duration::from_secs(60))
}

/// Status (atomic) → move → ledger `done`. See [`crate::status`] for why this order. Returns
/// the status written. With fsync on, the syncs run off the runtime thread and are shared with
/// the other workers' (see [`crate::group_sync`]); every other step runs here, in the worker's
/// task.
async fn commit(
    crew: &Crew,
    path: &Path,
    name: &str,
    run: u64,
    d: Decision,
    interrupted: bool,
    started: SystemTime,
) -> std::io::Result<Status> {
    let cfg = &crew.cfg;
    let dest_dir = cfg.dir.join(d.outcome.dir_name());
    let dest_name = free_name(&dest_dir, name, run);
    let status = Status {
        file: name.to_string(),
        moved_to: dest_name.clone(),
        outcome: d.outcome,
        attempts: d.attempts,
        error: d.error.as_deref().map(bound_message),
        interrupted,
        run,
        started_at: rfc3339(started),
        finished_at: rfc3339(SystemTime::now()),
    };
    let json = serde_json::to_vec_pretty(&status).map_err(std::io::Error::other)?;
    let status_name = format!("{dest_name}{STATUS_SUFFIX}");
    let dest: PathBuf = dest_dir.join(&dest_name);
    if cfg.fsync {
        let dest_sync = crew.dir_syncs.of(d.outcome);
        write_atomic_durably(&dest_dir, &status_name, &json, dest_sync).await?;
        std::fs::rename(path, &dest)?;
        // Both directories at once: neither sync needs the other.
        let (to, from) = tokio::join!(
            sync_dir_grouped(&dest_dir, dest_sync),
            sync_dir_grouped(&cfg.dir, &crew.dir_syncs.inbox),
        );
        to?;
        from?;
    } else {
        write_atomic(&dest_dir, &status_name, &json, false)?;
        std::fs::rename(path, &dest)?;
    }
    crew.ledger.record_done(name, run, d.outcome)?;
    Ok(status)
}

/// The name `name` gets in `dest_dir`: its own, or `NAME.<run>` when an earlier file (or its
/// status) has it already.
fn free_name(dest_dir: &Path, name: &str, run: u64) -> String {
    // PLANTED BUG, for tests only: built with `--cfg watcher_bug="duplicate_overwrites"`, a name
    // dropped again overwrites the earlier file, for tests/watcher_props.rs to find and shrink.
    // Never set otherwise; a `cfg!` rather than a `#[cfg]` so that both paths always compile.
    if cfg!(watcher_bug = "duplicate_overwrites") {
        return name.to_string();
    }
    let taken = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    let dest = dest_dir.join(name);
    if taken(&dest) || taken(&status_path(&dest)) {
        format!("{name}.{run}")
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 1), b);
        assert_eq!(backoff(b, 2), 2 * b);
        assert_eq!(backoff(b, 4), 8 * b);
        assert_eq!(backoff(b, 40), Duration::from_secs(60));
    }
}
