//! Child processes that never outlive their watcher: [`GroupChild`] starts a command in a
//! process group of its own and, when it is dropped before the command has exited (its worker
//! was aborted: close ran out of budget, or the watcher was dropped), kills the whole group
//! with `SIGKILL` — the command and everything it forked — and hands the child to its watcher,
//! which reaps it and names it in the [`ShutdownReport`](crate::ShutdownReport). When the
//! command exits on its own, whatever it left running in its group (`sh -c 'job &'`) is killed
//! as it is reaped.
//!
//! Why a group of its own: killing only the command (tokio's `kill_on_drop`) leaves whatever
//! it forked running (`sh -c 'sleep 300; :'` loses its `sh`, keeps its `sleep`), orphaned. A
//! group that the command leads can be killed as one, and cannot be confused with another: the
//! group id is the command's pid, which the kernel does not reuse while the command is
//! unreaped, and that is the case until the watcher reaps it after the kill. The group also
//! takes the command out of the terminal's foreground group: a Ctrl-C reaches the watcher,
//! which closes gracefully, and not the commands in the middle of their files.
//!
//! How the watcher learns of a kill: its workers run the processor inside a task-local scope
//! (`Reaper::scope`); a `GroupChild` dropped inside it (tokio drops an aborted task's future
//! with its task-locals set) hands itself over. Outside a watcher, the kill happens all the
//! same and tokio reaps the child in the background.
//!
//! # Recorded, for the next start after a crash
//!
//! Inside a watcher, each group is also recorded on disk (`store/groups.rs`: the leader's pid,
//! its start time, the boot id, the run of the file), and the record is blanked once the group
//! has been killed after the command's exit, or on a drop. A `SIGKILL` of the watcher kills
//! none of its commands (see `ARCHITECTURE.md` for why `PR_SET_PDEATHSIG` is not used); the
//! next start on the directory ends every recorded group that still runs (`work/group_end.rs`)
//! before any file runs again.
//!
//! When the record is written: right after the spawn, on the thread that spawned, before
//! [`GroupChild::spawn`] returns, so before any await point and before the watcher does
//! anything else with the command. That is not before the command can do anything: the
//! command runs from its `exec` on (`posix_spawn` returns after it), and the record is in the
//! file about 5 µs later (a read of `/proc/<pid>/stat` and one `pwrite`: 4.7 µs median, 62 µs
//! at most in 500 records, `BENCHMARKS.md`; longer if the thread is preempted in between). A
//! watcher killed inside that window leaves that one group unrecorded, and it runs on.
//!
//! Closing the window takes a command that waits until it is released, and std's spawn cannot
//! give one: it returns only once the child has called `exec` (`posix_spawn` suspends the
//! caller until then; the `fork` + `exec` path waits on a pipe for the child's `exec`), so a
//! `pre_exec` hook that blocked until the record is written would wait for a parent that
//! waits for it. It would take a hand-written `fork` (only async-signal-safe calls in the
//! child of a multi-threaded process) or a wrapper process per command (`sh -c 'read _;
//! exec "$@"'`: one more `exec` per file, about what the command `true` itself costs), for a
//! crash that must land in a window of a few µs per command. So the window is kept, and said
//! here; the spawn stays `posix_spawn`.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::mutex::lock;
use crate::store::groups::{GroupRecords, Recorded};

/// A command that was killed because its worker was aborted, as the
/// [`ShutdownReport`](crate::ShutdownReport) names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KilledCommand {
    /// The command, as its processor described it (the CLI: the program and its arguments).
    pub command: String,
    /// Its pid, which is also its process group's id: the whole group was killed.
    pub pid: u32,
    /// The file it was processing.
    pub file: PathBuf,
    /// Whether it had exited and was reaped when the close returned (a process stuck in
    /// uninterruptible I/O can take longer to die; tokio reaps it later).
    pub reaped: bool,
}

/// A child process in a process group of its own, killed with its whole group (`SIGKILL`) if
/// dropped before it has exited. See the [module docs](self).
///
/// ```no_run
/// # async fn f(path: &std::path::Path) -> std::io::Result<()> {
/// use watcher::child::GroupChild;
///
/// let mut cmd = tokio::process::Command::new("convert");
/// cmd.arg(path).stderr(std::process::Stdio::piped());
/// let mut child = GroupChild::spawn(&mut cmd, "convert")?;
/// let output = child.wait_with_output().await?; // dropped before this returns: group killed
/// # let _ = output;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct GroupChild {
    child: Option<Child>,
    command: String,
    exited: bool,
    /// Its record, inside a watcher (blanked when dropped: after the group's kill).
    recorded: Option<Recorded>,
}

impl GroupChild {
    /// Spawns `cmd` as the leader of a new process group (`setpgid(0, 0)` in the child; with
    /// `posix_spawn` where the platform has it). `command` describes it in reports. Inside a
    /// watcher's processor, the group is recorded before this returns (see the
    /// [module docs](self)); a group that cannot be recorded is killed, and the error says why.
    pub fn spawn(cmd: &mut Command, command: impl Into<String>) -> io::Result<GroupChild> {
        let records = SCOPE.try_with(Scope::records).ok().flatten();
        GroupChild::spawn_recorded(cmd, command.into(), records)
    }

    fn spawn_recorded(
        cmd: &mut Command,
        command: String,
        records: Option<(Arc<GroupRecords>, u64)>,
    ) -> io::Result<GroupChild> {
        #[cfg(unix)]
        cmd.process_group(0);
        // Also covers a drop outside the runtime, where no `GroupChild::drop` scope applies.
        cmd.kill_on_drop(true);
        let mut child = GroupChild {
            child: Some(cmd.spawn()?),
            command,
            exited: false,
            recorded: None,
        };
        if let (Some((records, run)), Some(pid)) = (records, child.id()) {
            // No await point since the spawn: see the module docs. On an error the child is
            // dropped, which kills its group.
            let recorded = records.record(pid, run).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot record the command's process group: {e}"),
                )
            })?;
            child.recorded = Some(recorded);
        }
        Ok(child)
    }

    /// [`GroupChild::spawn`] run on tokio's blocking pool. Why: starting a process suspends
    /// the thread that starts it until the child has called `exec` (`posix_spawn` shares the
    /// parent's memory until then); on a runtime thread that stalls every other task for the
    /// child's set-up and `exec`, and on a busy machine for as long as the child waits for a
    /// CPU. Dropped before the spawn returns (its worker aborted), the child is killed all the
    /// same, with its group, and reaches the caller's watcher as if dropped in its scope.
    pub async fn spawn_off_thread(
        mut cmd: Command,
        command: impl Into<String>,
    ) -> io::Result<GroupChild> {
        let command = command.into();
        let scope = SCOPE
            .try_with(|s| Scope {
                reaper: s.reaper.clone(),
                file: s.file.clone(),
                run: s.run,
            })
            .ok();
        let records = scope.as_ref().and_then(Scope::records);
        let spawned = tokio::task::spawn_blocking(move || {
            GroupChild::spawn_recorded(&mut cmd, command, records).map(|child| Handoff {
                child: Some(child),
                scope,
            })
        });
        match spawned.await {
            Ok(Ok(mut handoff)) => Ok(handoff.child.take().expect("taken once")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(io::Error::other(format!("spawn task failed: {e}"))),
        }
    }

    /// The command's pid (and process group id), while it has not been waited for.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The tokio child, for its pipes.
    pub fn inner_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("present until drop")
    }

    /// Waits for the command to exit; then kills whatever it left running in its group (`sh -c
    /// 'job &'` leaves `job`): a command is done when it exits, and nothing it started outlives
    /// it. (The group's id cannot have been reused between the reap and the kill: the kernel
    /// hands out pids in a cycle, and this kill follows the reap at once.)
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let pid = self.id();
        let status = self.inner_mut().wait().await?;
        self.exited = true;
        if let Some(pid) = pid {
            kill_group(pid);
        }
        // The group is gone, or killed: its record goes.
        self.recorded = None;
        Ok(status)
    }

    /// Waits for the command to exit, collecting its piped stdout and stderr (as tokio's
    /// `Child::wait_with_output`, without giving the child up). Once the command has exited
    /// (and its group been killed, see [`GroupChild::wait`]) the pipes get [`PIPE_GRACE`] to
    /// reach their end: a process that left the group (`setsid`) may hold them open for as long
    /// as it likes, and the output read by then is what is returned.
    pub async fn wait_with_output(&mut self) -> io::Result<Output> {
        async fn read_all(
            pipe: Option<impl tokio::io::AsyncRead + Unpin>,
            buf: &mut Vec<u8>,
        ) -> io::Result<()> {
            if let Some(mut p) = pipe {
                p.read_to_end(buf).await?;
            }
            Ok(())
        }
        let child = self.inner_mut();
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = {
            // Read while waiting: a command that fills a pipe would block on it otherwise.
            let mut reads = std::pin::pin!(async {
                tokio::try_join!(read_all(out, &mut stdout), read_all(err, &mut stderr))
            });
            let mut read = None;
            let status = loop {
                tokio::select! {
                    status = self.wait() => break status?,
                    r = &mut reads, if read.is_none() => read = Some(r),
                }
            };
            match read {
                Some(r) => {
                    r?;
                }
                None => {
                    if let Ok(r) = tokio::time::timeout(PIPE_GRACE, reads).await {
                        r?;
                    }
                }
            }
            status
        };
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

/// How long [`GroupChild::wait_with_output`] waits for the pipes' end once the command has
/// exited.
pub const PIPE_GRACE: Duration = Duration::from_secs(1);

/// Kills the process group `pgid` with `SIGKILL`; a group that has gone already is fine.
fn kill_group(pgid: u32) {
    #[cfg(unix)]
    // SAFETY: plain syscall; a group that has already gone gives ESRCH, which is fine.
    unsafe {
        libc::killpg(pgid as libc::pid_t, libc::SIGKILL);
    }
    #[cfg(not(unix))]
    let _ = pgid;
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        let Some(child) = self.child.take() else {
            return;
        };
        let Some(pid) = child.id() else {
            return; // already reaped
        };
        // The group is the unreaped child's own pid: no other group can have that id. (Its
        // record is blanked after this, as the field is dropped.)
        kill_group(pid);
        let command = std::mem::take(&mut self.command);
        // Outside a watcher the closure, and `child` with it, is dropped unrun: tokio kills
        // (again) and reaps it in the background.
        let _ = SCOPE.try_with(move |scope| {
            scope.reaper.push(
                KilledCommand {
                    command,
                    pid,
                    file: scope.file.clone(),
                    reaped: false,
                },
                child,
            )
        });
    }
}

struct Scope {
    reaper: Arc<Reaper>,
    file: PathBuf,
    /// The run of `file` (the ledger entry its commands' records name).
    run: u64,
}

impl Scope {
    /// Where a command spawned in this scope is recorded, and under which run.
    fn records(&self) -> Option<(Arc<GroupRecords>, u64)> {
        Some((self.reaper.records.clone()?, self.run))
    }
}

/// A child spawned on the blocking pool on its way to its caller. If the caller is gone when it
/// arrives, tokio drops it on the pool thread, outside the caller's task and so outside its
/// scope: it drops the child inside that scope instead.
/// (Left alone: a child that arrives only after its watcher's close has reaped, a close out of
/// budget while the spawn was under way, is killed all the same but missing from that report;
/// it is reaped when the watcher, and its reaper, are dropped.)
struct Handoff {
    child: Option<GroupChild>,
    scope: Option<Scope>,
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if let (Some(child), Some(scope)) = (self.child.take(), self.scope.take()) {
            SCOPE.sync_scope(scope, move || drop(child));
        }
    }
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// One watcher's killed commands, until close reaps them, and where its commands' groups are
/// recorded (owned by the engine, used by the workers).
#[derive(Default)]
pub(crate) struct Reaper {
    killed: Mutex<Vec<(KilledCommand, Child)>>,
    records: Option<Arc<GroupRecords>>,
}

impl Reaper {
    /// A reaper whose scopes record their commands' groups in `records`.
    pub fn recording(records: Option<Arc<GroupRecords>>) -> Self {
        Reaper {
            killed: Mutex::default(),
            records,
        }
    }

    /// Runs a processor's future for `file`, in its run `run`: a [`GroupChild`] spawned inside
    /// it is recorded under that run, and one dropped inside it (an abort) hands its killed
    /// command here.
    pub fn scope<F: Future>(
        self: &Arc<Self>,
        file: &Path,
        run: u64,
        fut: F,
    ) -> impl Future<Output = F::Output> {
        SCOPE.scope(
            Scope {
                reaper: self.clone(),
                file: file.to_path_buf(),
                run,
            },
            fut,
        )
    }

    /// Closes the records file (at close).
    pub fn close_records(&self) {
        if let Some(records) = &self.records {
            records.close();
        }
    }

    fn push(&self, k: KilledCommand, child: Child) {
        lock(&self.killed).push((k, child));
    }

    /// Waits (at most `grace` in all) for every killed command to be reaped; returns them.
    pub async fn reap(&self, grace: Duration) -> Vec<KilledCommand> {
        let killed = std::mem::take(&mut *lock(&self.killed));
        let deadline = tokio::time::Instant::now() + grace;
        let mut out = Vec::with_capacity(killed.len());
        for (mut k, mut child) in killed {
            k.reaped = tokio::time::timeout_at(deadline, child.wait())
                .await
                .is_ok_and(|r| r.is_ok());
            out.push(k);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// `cmd`, made to wait before its `exec` for a byte on the pipe returned (a spawn returns
    /// only after the `exec`, so it cannot finish before the byte is written). Dropping the
    /// writer unwritten lets the child go too: the spawn then fails with `EPIPE`.
    fn gated(mut cmd: Command) -> (Command, std::io::PipeWriter) {
        use std::os::fd::AsRawFd;
        let (gate_rx, gate_tx) = std::io::pipe().unwrap();
        let (gate, writer) = (gate_rx.as_raw_fd(), gate_tx.as_raw_fd());
        // SAFETY: the hook calls only `close` and `read`, which are async-signal-safe, on fds
        // the forked child holds (both are close-on-exec, and this runs before the exec;
        // `gate_rx` lives in the hook). The child closes its copy of the writer first, so the
        // read sees end-of-file once the test's writer is dropped.
        unsafe {
            cmd.pre_exec(move || {
                let _open = &gate_rx;
                libc::close(writer);
                let mut byte = 0u8;
                loop {
                    match libc::read(gate, (&raw mut byte).cast(), 1) {
                        1 => return Ok(()),
                        -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                        // No allocation between fork and exec: an OS error, not a message.
                        _ => return Err(io::Error::from_raw_os_error(libc::EPIPE)),
                    }
                }
            });
        }
        (cmd, gate_tx)
    }

    /// A worker aborted while its command is being spawned on the blocking pool: the child
    /// arrives with nobody waiting for it, and is killed and handed to the watcher all the same.
    /// The control: a child spawned in the same way and awaited is not handed over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_whose_caller_left_during_the_spawn_is_killed_and_handed_over() {
        let reaper = Arc::new(Reaper::default());
        let file = Path::new("inbox/a.txt");
        let sleep = || {
            let mut cmd = Command::new("sleep");
            cmd.arg("300");
            cmd
        };

        let mut awaited = reaper
            .scope(file, 1, GroupChild::spawn_off_thread(sleep(), "sleep 300"))
            .await
            .unwrap();
        assert!(lock(&reaper.killed).is_empty());

        // The second spawn cannot finish before the test lets it go.
        let (gated, mut gate) = gated(sleep());
        // One poll submits the spawn; then the future is dropped, as an abort would; then the
        // child may go on.
        let mut spawn =
            Box::pin(reaper.scope(file, 2, GroupChild::spawn_off_thread(gated, "sleep 300")));
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(spawn.as_mut().poll(cx)));
        assert!(first.await.is_pending(), "the gated spawn finished");
        drop(spawn);
        std::io::Write::write_all(&mut gate, b"1").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while lock(&reaper.killed).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the child never reached the reaper"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let killed = reaper.reap(Duration::from_secs(30)).await;
        assert_eq!(killed.len(), 1, "{killed:?}");
        assert_eq!(killed[0].file, file);
        assert!(killed[0].reaped, "{killed:?}");

        let pid = awaited.id().unwrap();
        drop(awaited.inner_mut().start_kill());
        awaited.wait().await.unwrap();
        assert_ne!(pid, killed[0].pid);
    }
}
