//! Workers: take files from the bounded queue, process them (with retries), and commit the
//! result (status, move, ledger) in the crash-safe order described in [`crate::store::status`].
//!
//! One word for each step of a file through a worker's hands:
//!
//! - **pick up**: taken from the queue ([`WorkQueue::take`]), counted busy, given a run id;
//! - **decide**: processed with retries, then the result recorded `decided` in the ledger and
//!   synced; the queue then no longer holds it ([`WorkQueue::decided`]);
//! - **finish the commit**: status file and move, then the ledger's `done` (with fsync on, at a
//!   checkpoint), which releases the name's claim ([`WorkQueue::release`]);
//! - **let go**: given up undecided (vanished, not recorded, abandoned, not synced): no longer
//!   held, its claim released ([`WorkQueue::let_go`]); **leave in place** when it could not be
//!   recorded in flight: let go and handed back;
//! - **put down**: out of the worker's hands, either way.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::processor::{catch_unwind, ErrorKind};
use crate::report::metrics::Counters;
use crate::report::on_file::FileOutcome;
use crate::report::progress::Progress;
use crate::store::disk::{rename_into_place, write_temp};
use crate::store::group_sync::off_thread;
use crate::store::identity::{move_if_same, FileId};
use crate::store::ledger::Ledger;
use crate::store::recovery::Interrupted;
use crate::store::status::{bound_message, rfc3339, status_path, Outcome, Status};
use crate::work::checkpoint::{Checkpoints, Moved, BATCH};
use crate::work::child::Reaper;
use crate::work::queue::WorkQueue;
use crate::work::read;

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
    checkpoints: Checkpoints,
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
            checkpoints: Checkpoints::new(cfg.dir.clone(), ledger.clone(), queue.clone()),
            cfg,
            queue,
            ledger,
            counters,
            progress,
            interrupted,
            runs: RunIds::starting_now(),
            reaper,
        }
    }

    /// A worker task: runs until its token is cancelled (it finishes its files first) or the
    /// queue is closed and empty.
    ///
    /// A worker overlaps two files: while it processes one, it finishes the commit of the one
    /// before (the status file and the move out of the inbox, with their syncs). What it never
    /// overlaps is a result and the next command: a file's result is durable in the ledger
    /// before the worker's next command starts, so a crash re-runs only a file whose command was
    /// running (the rest of a commit is finished from the ledger at restart, see
    /// [`crate::store::recovery`]). The next file's in-flight record, when that file is already
    /// queued, shares the sync of that result.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let hands = Hands {
            held: AtomicU32::new(0),
            crew: &self,
        };
        // The previous file's move, driven alongside whatever the worker does next.
        let mut moving: Option<Moving<'_>> = None;
        let mut next = self.next_file(&cancel, &hands).await;
        while let Some(file) = next.take() {
            let decision = alongside(&mut moving, self.decide(&file, &cancel)).await;
            let Ok(d) = decision else {
                self.queue.hand_back(file.path.clone());
                hands.let_go(&file);
                next = alongside(&mut moving, self.next_file(&cancel, &hands)).await;
                continue;
            };
            let status = status_of(&self, &file, d);
            let recorded = self.ledger.record_decided(&status, file.file_id);
            let waiting = match recorded {
                Ok(()) => self.waiting_file(&cancel, &hands),
                Err(_) => None,
            };
            let synced = alongside(&mut moving, self.ledger.synced()).await;
            let decided = recorded.and(synced);
            // At most one move in progress per worker.
            if let Some(previous) = moving.take() {
                previous.await;
            }
            match &decided {
                Ok(()) => {
                    self.queue.decided(&file.path);
                    moving = Some(Box::pin(self.finish_commit(file, status, &hands)));
                }
                Err(e) => {
                    // Whether its `decided` record reached the disk is unknown: the next start
                    // either finishes it from there or runs it again (see `recovery`).
                    let name = &file.name;
                    self.cfg
                        .warnings
                        .warn(format_args!("cannot commit {name}: {e}"));
                    hands.let_go(&file);
                }
            }
            next = match (waiting, decided) {
                (Some(w), Ok(())) => Some(self.recorded(w)),
                (Some(w), Err(e)) => {
                    self.leave_in_place(w, &e, &hands);
                    alongside(&mut moving, self.next_file(&cancel, &hands)).await
                }
                (None, _) => alongside(&mut moving, self.next_file(&cancel, &hands)).await,
            };
        }
        if let Some(last) = moving.take() {
            last.await;
        }
        self.checkpoint().await;
        self.progress.worker_exited();
    }

    /// The next file this worker takes and records in flight; `None` when cancelled or when
    /// the queue is closed and empty. A file that vanished since it was queued, or that cannot
    /// be recorded, is let go on the way.
    async fn next_file(&self, cancel: &CancellationToken, hands: &Hands<'_>) -> Option<InHand> {
        loop {
            if self.queue.is_empty() && self.checkpoints.any_pending() {
                // About to wait for a file: first make the moves so far durable, so that none
                // waits for the next file to arrive (their names stay claimed until then).
                self.checkpoint().await;
            }
            let path = self.queue.take(cancel).await?;
            let Some(file) = self.pick_up(path, hands) else {
                continue;
            };
            if let Err(e) = in_flight(self, &file.name, file.run).await {
                self.leave_in_place(file, &e, hands);
                continue;
            }
            return Some(self.recorded(file));
        }
    }

    /// A file already queued, taken without waiting, its in-flight record appended but not
    /// synced yet.
    fn waiting_file(&self, cancel: &CancellationToken, hands: &Hands<'_>) -> Option<InHand> {
        if cancel.is_cancelled() {
            return None;
        }
        let file = self.pick_up(self.queue.try_take()?, hands)?;
        if let Err(e) = self.ledger.record_in_flight(&file.name, file.run) {
            self.leave_in_place(file, &e, hands);
            return None;
        }
        Some(file)
    }

    /// Picks up `path`, taken from the queue: `None` (let go) when it vanished since it was
    /// queued.
    fn pick_up(&self, path: PathBuf, hands: &Hands<'_>) -> Option<InHand> {
        let name = file_name(&path);
        let mut file = hands.pick_up(path, name);
        match std::fs::symlink_metadata(&file.path) {
            Ok(meta) => {
                file.file_id = FileId::of(&meta);
                Some(file)
            }
            Err(_) => {
                hands.let_go(&file);
                None
            }
        }
    }

    /// `file`, durably in flight: whether an earlier run of it was interrupted.
    fn recorded(&self, file: InHand) -> InHand {
        InHand {
            interrupted: self.interrupted.take(&file.name),
            ..file
        }
    }

    /// `file` could not be recorded in flight: it is let go and stays in the inbox, handed back.
    fn leave_in_place(&self, file: InHand, e: &std::io::Error, hands: &Hands<'_>) {
        let name = &file.name;
        let warnings = &self.cfg.warnings;
        warnings.warn(format_args!(
            "cannot record {name} in the ledger: {e}; leaving it in place"
        ));
        self.queue.hand_back(file.path.clone());
        hands.let_go(&file);
    }

    /// Runs a checkpoint of the files moved so far (see [`crate::work::checkpoint`]).
    async fn checkpoint(&self) {
        if let Err(e) = self.checkpoints.run().await {
            let warnings = &self.cfg.warnings;
            warnings.warn(format_args!(
                "checkpoint failed: {e}; the next start finishes its files (their names wait till then)"
            ));
        }
    }

    /// Decides `file` (processes it, with retries): its outcome, or `Abandoned` when close interrupted a
    /// retry backoff (its ledger entry is then removed: handed back on purpose, the next run
    /// starts afresh).
    async fn decide(
        &self,
        file: &InHand,
        cancel: &CancellationToken,
    ) -> Result<Decision, Abandoned> {
        let decision = process_with_retries(self, &file.path, file.run, cancel).await;
        if decision.is_err() {
            let _ = self.ledger.forget(&file.name);
            if file.interrupted {
                self.interrupted.put_back(&file.name);
            }
        }
        decision
    }

    /// Finishes `file`'s commit, its result durable in the ledger: the status file, the move out
    /// of the inbox and the ledger's `done`; then reports it and puts it down.
    async fn finish_commit(&self, file: InHand, status: Status, hands: &Hands<'_>) {
        let outcome = status.outcome;
        match write_status_and_move(self, &file, status).await {
            Ok(status) => {
                let took = file.t0.elapsed();
                self.counters.committed(outcome, took);
                if let Some(on_file) = &self.cfg.on_file {
                    on_file(&FileOutcome {
                        name: status.file,
                        outcome,
                        attempts: status.attempts,
                        max_attempts: self.cfg.retries.saturating_add(1),
                        duration: took,
                        error: status.error,
                        moved_to: (self.cfg.dir.join(outcome.dir_name()))
                            .join(crate::names::raw_name(&status.moved_to)),
                        interrupted: file.interrupted,
                    });
                }
                hands.put_down();
            }
            Err(e) => {
                // Decided in the ledger: the next start finishes it (see `recovery`). Its name
                // stays claimed, so that this run does not take the file up again.
                let name = &file.name;
                let warnings = &self.cfg.warnings;
                warnings.warn(format_args!(
                    "cannot commit {name}: {e}; the next start finishes it"
                ));
                hands.put_down();
            }
        }
    }
}

/// The move a worker finishes while it goes on with its next file.
type Moving<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Runs `work` to its end while driving `side` (the previous file's move) too; `side` is
/// cleared once it has ended.
async fn alongside<T>(side: &mut Option<Moving<'_>>, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    loop {
        let Some(running) = side.as_mut() else {
            return work.await;
        };
        tokio::select! {
            // The move first: with fsync off it ends in this very poll, so a file's commit
            // ends in the poll that follows its processing, with no await point between.
            biased;
            () = running.as_mut() => *side = None,
            out = &mut work => return out,
        }
    }
}

/// One file in a worker's hands, from its in-flight record to its commit.
struct InHand {
    path: PathBuf,
    name: String,
    run: u64,
    started: SystemTime,
    t0: Instant,
    /// An earlier run of it was interrupted (see [`Interrupted`]).
    interrupted: bool,
    /// Which file the name stood for when taken (Unix), recorded with its result.
    file_id: Option<FileId>,
}

/// The files one worker holds (up to two): it counts as busy while it holds any.
struct Hands<'a> {
    held: AtomicU32,
    crew: &'a Crew,
}

impl Hands<'_> {
    /// Picks up the file `path`, named `name`, with a new run id.
    fn pick_up(&self, path: PathBuf, name: String) -> InHand {
        if self.held.fetch_add(1, Relaxed) == 0 {
            self.crew.counters.worker_busy();
        }
        self.crew.progress.changed();
        InHand {
            path,
            name,
            run: self.crew.runs.next(),
            started: SystemTime::now(),
            t0: Instant::now(),
            interrupted: false,
            file_id: None,
        }
    }

    /// Lets go of `file` undecided (handed back, vanished, not recorded): intake may queue its
    /// name again.
    fn let_go(&self, file: &InHand) {
        self.crew.queue.let_go(&file.path, &file.name);
        self.put_down();
    }

    /// Puts a file down: committed (its name released by the commit, see
    /// [`write_status_and_move`]), left for the next start, or let go.
    fn put_down(&self) {
        if self.held.fetch_sub(1, Relaxed) == 1 {
            self.crew.counters.worker_idle();
        }
        self.crew.progress.changed();
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

/// Records `name` in flight, durably (the sync shared with the other workers).
async fn in_flight(crew: &Crew, name: &str, run: u64) -> std::io::Result<()> {
    crew.ledger.record_in_flight(name, run)?;
    crew.ledger.synced().await
}

/// Checks, reads and processes the file, with retries (its commands recorded under `run`).
async fn process_with_retries(
    crew: &Crew,
    path: &Path,
    run: u64,
    cancel: &CancellationToken,
) -> Result<Decision, Abandoned> {
    let cfg = &crew.cfg;
    let max = cfg.max_file_size;
    let mut attempts = 0u32;
    loop {
        let checked = if cfg.processor.reads_contents_dyn() {
            read::read(path, &cfg.dir, max).await
        } else {
            // From the metadata alone, on this thread: a `stat` cannot block on a FIFO.
            read::check(path, &cfg.dir, max).map(|()| Vec::new())
        };
        let contents = match checked {
            Ok(c) => c,
            Err(msg) => return Ok(Decision::failed(attempts, msg)),
        };
        attempts += 1;
        let processing = catch_unwind(cfg.processor.process_dyn(path, contents));
        let result = crew.reaper.scope(path, run, processing).await;
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

/// The status record of `file`, processed as `d` says, with the name it gets in its
/// destination directory.
fn status_of(crew: &Crew, file: &InHand, d: Decision) -> Status {
    let dest_dir = crew.cfg.dir.join(d.outcome.dir_name());
    Status {
        file: file.name.clone(),
        moved_to: free_name(&dest_dir, &file.name, file.run),
        outcome: d.outcome,
        attempts: d.attempts,
        error: d.error.as_deref().map(bound_message),
        interrupted: file.interrupted,
        run: file.run,
        started_at: rfc3339(file.started),
        finished_at: rfc3339(SystemTime::now()),
    }
}

/// The commit after the ledger's `decided`, in the crash-safe order of [`crate::store::status`]: the
/// status written to a temp file and renamed into place, then the file moved. With fsync on,
/// writing the temp file runs off the runtime thread (creating a file can be slow), and the
/// syncs and the ledger's `done` are left to a checkpoint shared with the other workers (see
/// [`crate::work::checkpoint`]), which this call runs when enough files are pending or nothing is
/// queued. With fsync off the whole commit runs in the poll that ended the processing: a
/// watcher dropped without close never leaves a processed file uncommitted.
async fn write_status_and_move(
    crew: &Crew,
    file: &InHand,
    status: Status,
) -> std::io::Result<Status> {
    let cfg = &crew.cfg;
    let dest_dir = cfg.dir.join(status.outcome.dir_name());
    // The file keeps its own name, byte for byte; its status sits beside it.
    let dest = dest_dir.join(crate::names::raw_name(&status.moved_to));
    let json = serde_json::to_vec_pretty(&status).map_err(std::io::Error::other)?;
    let tmp_name = crate::names::status_name(&status.moved_to);
    let (dir, run, status_file) = (dest_dir.clone(), file.run, status_path(&dest));
    let write = move || {
        let tmp = write_temp(&dir, &tmp_name, Some(run), &json, false)?;
        Ok((tmp, status_file))
    };
    let (tmp, status_path) = if cfg.fsync {
        off_thread(write).await?
    } else {
        write()?
    };
    rename_into_place(&tmp, &status_path)?;
    // Another file that took its name meanwhile is left for intake.
    if !move_if_same(&file.path, file.file_id, &dest)? {
        let name = &file.name;
        cfg.warnings.warn(format_args!(
            "{name} was removed or replaced while it was processed: its status is written, nothing moved"
        ));
    }
    if !cfg.fsync {
        crew.ledger
            .record_done(&file.name, file.run, status.outcome)?;
        crew.queue.release(&file.name);
        if std::fs::symlink_metadata(&file.path).is_ok() {
            // Dropped again while claimed: intake ignored it then.
            crew.queue.request_rescan();
        }
        return Ok(status);
    }
    let pending = crew.checkpoints.push(Moved {
        name: file.name.clone(),
        run: file.run,
        outcome: status.outcome,
        status: status_path,
        path: file.path.clone(),
    });
    if pending >= BATCH || crew.queue.is_empty() {
        crew.checkpoint().await;
    }
    Ok(status)
}

/// The key of the name the file keyed `name` gets in `dest_dir`: its own, or `NAME.<run>` when
/// an earlier file (or its status) has it already. (The key of `NAME.<run>` is `name.<run>`:
/// the escape of ASCII appended to a name is that ASCII appended to its escape.)
fn free_name(dest_dir: &Path, name: &str, run: u64) -> String {
    // PLANTED BUG, for tests only: built with `--cfg watcher_bug="duplicate_overwrites"`, a name
    // dropped again overwrites the earlier file, for tests/watcher_props.rs to find and shrink.
    // Never set otherwise; a `cfg!` rather than a `#[cfg]` so that both paths always compile.
    if cfg!(watcher_bug = "duplicate_overwrites") {
        return name.to_string();
    }
    let taken = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    let dest = dest_dir.join(crate::names::raw_name(name));
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
