//! Where each leaked task is stuck: its await point in the user's code, from a dump of its
//! runtime (`Handle::dump`, tokio's `taskdump`; feature `task-dumps` under
//! `--cfg tokio_unstable --cfg tokio_taskdump`, Linux x86_64 and aarch64).
//!
//! A dump re-polls every idle task in a tracing mode in which tokio's leaf futures (channel
//! receives, timers, locks) record a backtrace and return `Pending`; the frames of a task's
//! first backtrace, innermost first, run from the leaf through the futures that await it to
//! the task's root. The innermost frame of the user's code is the await point, and the frame
//! inside it the call awaited: `awaiting at src/svc.rs:88 in
//! tokio::sync::mpsc::Receiver::recv`.
//!
//! Taking one must never hang a check, and tokio's rules shape how:
//! - a current-thread runtime is dumped only from inside the thread that drives it (from
//!   elsewhere tokio returns an empty dump); there the dump runs to completion in one poll, so
//!   it is polled once, in place;
//! - a multi-thread runtime is dumped when every worker reaches tokio's trace barrier. The
//!   barrier (tokio 1.54) waits 250 ms and does not take a timed-out arrival back out of its
//!   count: a worker that arrives late, or one that comes back to the barrier after the dump
//!   (measured: after nearly every dump, as a stale wake-up lets a worker see the request
//!   before it is withdrawn), leaves a count that lets the next dump start without all its
//!   workers, and one worker then waits at the end of the trace for good, and the runtime's
//!   drop with it. So a multi-thread runtime is dumped at most once, and only once
//!   every worker is parked (they all wake on the request and go straight to the barrier); a
//!   later check, or one that runs while another is dumping, says why it takes no dump. The dump runs on a helper thread and the check
//!   waits at most [`DEADLINE`], then says the workers were not idle, or the runtime did not
//!   answer. The helper keeps awaiting (dropping tokio's dump future part-way would leave the
//!   runtime's trace request set, and its workers would pause at every yield point from then
//!   on), and ends when the runtime answers. A check running on
//!   a worker of the runtime it dumps moves out of the worker's seat (`block_in_place`) while
//!   it waits, or the dump would wait for it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{mpsc, LazyLock, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};

use super::frames::{Frame, Waiting};

/// How long a check waits for a multi-thread runtime to answer a dump.
pub(crate) const DEADLINE: Duration = Duration::from_secs(1);

/// The multi-thread runtimes a dump was asked of (or is about to be) in this process, and
/// whether it has answered. tokio's runtime ids come from a counter and are not reused.
static DUMPED: LazyLock<Mutex<HashMap<tokio::runtime::Id, Answered>>> =
    LazyLock::new(Mutex::default);

/// Whether the one dump of a multi-thread runtime has answered yet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Answered {
    No,
    Yes,
}

fn dumped() -> std::sync::MutexGuard<'static, HashMap<tokio::runtime::Id, Answered>> {
    DUMPED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a multi-thread runtime is not dumped a second time.
const ONCE: &str = "await point not taken: this runtime was dumped before, and a second dump \
                    of a multi-thread runtime can stop one of its workers for good";

/// Why a check does not dump a runtime another check is dumping (they would be two dumps).
const IN_PROGRESS: &str = "await point not taken: another check is dumping this runtime now, \
                           and a second dump of a multi-thread runtime can stop one of its \
                           workers for good";

/// Where a task awaits, as a report shows it, and whether a timer could end the wait.
pub(crate) struct AwaitPoint {
    /// `awaiting at src/svc.rs:88 in tokio::sync::mpsc::Receiver::recv`, or why not known.
    pub(crate) text: String,
    /// The task awaits only what tokio traces, and nothing of `tokio::time` (no sleep,
    /// interval or timeout): no settle budget lets it go of itself.
    pub(crate) untimed: bool,
}

/// Where each idle task of `handle`'s runtime awaits (`awaiting at src/svc.rs:88 in
/// tokio::sync::mpsc::Receiver::recv`), by task id; or why no dump was taken (`await point
/// not taken: the runtime's workers were not all idle within 1 s …`).
pub(crate) fn await_points(
    handle: &Handle,
) -> Result<HashMap<tokio::task::Id, AwaitPoint>, String> {
    let dump = dump(handle)?;
    Ok(dump
        .tasks()
        .iter()
        .map(|task| (task.id(), await_point(task.trace())))
        .collect())
}

/// How many tasks a dump of `handle`'s runtime holds, unresolved, or why none was taken: what
/// a report pays for the dump itself before resolving frames (for the benches).
pub fn dump_tasks(handle: &Handle) -> Result<usize, String> {
    dump(handle).map(|dump| dump.tasks().iter().count())
}

fn dump(handle: &Handle) -> Result<tokio::runtime::Dump, String> {
    let current = Handle::try_current().ok();
    let inside = current.as_ref().is_some_and(|c| c.id() == handle.id());
    match handle.runtime_flavor() {
        RuntimeFlavor::CurrentThread => {
            if !inside {
                return Err(
                    "await point not taken: a current-thread runtime is dumped only \
                            from the thread that drives it"
                        .to_owned(),
                );
            }
            // tokio dumps a current-thread runtime within the first poll.
            let mut dump = std::pin::pin!(handle.dump());
            match dump.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(dump) => Ok(dump),
                Poll::Pending => Err("await point not taken: the dump did not complete".into()),
            }
        }
        _ => {
            {
                let mut dumped = dumped();
                match dumped.get(&handle.id()) {
                    Some(Answered::Yes) => return Err(ONCE.to_owned()),
                    Some(Answered::No) => return Err(IN_PROGRESS.to_owned()),
                    None => dumped.insert(handle.id(), Answered::No),
                };
            }
            // On a worker of a multi-thread runtime, give up the worker's seat while waiting:
            // the dump waits for every worker (this one's included) to reach a yield point.
            let on_worker =
                current.is_some_and(|c| c.runtime_flavor() == RuntimeFlavor::MultiThread);
            if on_worker {
                tokio::task::block_in_place(|| dump_multi_thread(handle))
            } else {
                dump_multi_thread(handle)
            }
        }
    }
}

/// A dump of `handle`'s multi-thread runtime (marked as asked for by the caller; the mark is
/// taken back if no dump was asked for), within [`DEADLINE`].
///
/// A helper thread builds the runtime it awaits on first, then waits until every worker is
/// parked and asks for the dump in the very next poll (see [`all_parked`] for why); the check
/// waits for its answer until the deadline (and a margin for the helper's own answer that the
/// workers were not idle).
fn dump_multi_thread(handle: &Handle) -> Result<tokio::runtime::Dump, String> {
    let deadline = Instant::now() + DEADLINE;
    let id = handle.id();
    let unmark = move || {
        dumped().remove(&id);
    };
    let (tx, rx) = mpsc::channel();
    let target = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("leakcheck-dump".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    unmark();
                    let _ = tx.send(Err(format!(
                        "await point not taken: no runtime to await the dump on: {e}"
                    )));
                    return;
                }
            };
            if !all_parked(&target, deadline) {
                unmark();
                let _ = tx.send(Err(format!(
                    "await point not taken: the runtime's workers were not all idle within \
                     {} s (a dump needs every worker parked)",
                    DEADLINE.as_secs()
                )));
                return;
            }
            // The first poll of `answer` asks for the dump.
            let dump = rt.block_on(answer(&target));
            dumped().insert(id, Answered::Yes);
            let _ = tx.send(Ok(dump));
        });
    if let Err(e) = spawned {
        unmark();
        return Err(format!(
            "await point not taken: no thread for the dump: {e}"
        ));
    }
    let margin = Duration::from_millis(100);
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now()) + margin) {
        Ok(answered) => answered,
        // The helper goes on waiting for the dump it asked for.
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "await point not taken: the runtime did not answer within {} s",
            DEADLINE.as_secs()
        )),
        // The helper panicked: whether it asked for the dump is unknown, so the mark stays.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err("await point not taken: the dump's helper thread failed".to_owned())
        }
    }
}

/// True once every worker of `handle`'s multi-thread runtime is seen parked in one reading,
/// before `deadline`.
///
/// A worker that reaches tokio's trace barrier more than 250 ms after another (it was blocked,
/// or busy with long polls between two maintenances) leaves the barrier's count wrong (see the
/// module docs). Parked workers all wake on the request and go to the barrier before they poll
/// anything, so the dump is asked for only right after every worker was seen parked. (What is
/// left: a worker woken by a timer or I/O in the microseconds between the reading and the
/// request, whose first poll then blocks for over 250 ms.) A worker publishes its park/unpark
/// count as it parks (the count is then odd) and as soon as it wakes (even), before it polls.
fn all_parked(handle: &Handle, deadline: Instant) -> bool {
    let metrics = handle.metrics();
    let mut pause = Duration::from_micros(100);
    loop {
        if (0..metrics.num_workers()).all(|w| metrics.worker_park_unpark_count(w) % 2 == 1) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// The dump of `handle`'s multi-thread runtime, nudging its workers until they answer.
///
/// tokio wakes the workers once when a dump is asked for; a worker that does not reach the
/// trace barrier within 250 ms of the others gives up until its next maintenance, and a parked
/// worker has none until something wakes it. So while the dump is pending, every [`NUDGE`] an
/// empty task per worker (unrecorded by the hooks) wakes parked workers to try again.
async fn answer(handle: &Handle) -> tokio::runtime::Dump {
    let mut dump = std::pin::pin!(handle.dump());
    let mut tick = std::pin::pin!(tokio::time::sleep(NUDGE));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(dump) = dump.as_mut().poll(cx) {
            return Poll::Ready(dump);
        }
        while tick.as_mut().poll(cx).is_ready() {
            for _ in 0..handle.metrics().num_workers() {
                drop(super::tasks::spawn_unrecorded(handle));
            }
            tick.as_mut().reset(tokio::time::Instant::now() + NUDGE);
        }
        Poll::Pending
    })
    .await
}

/// How often a pending dump's workers are woken to try again.
const NUDGE: Duration = Duration::from_millis(100);

/// The await point in a task's trace: the first of its backtraces (one per leaf future it
/// awaits), and whether none of them is a timer's.
fn await_point(trace: &tokio::runtime::dump::Trace) -> AwaitPoint {
    let backtraces: Vec<Vec<Frame>> = trace
        .resolve_backtraces()
        .iter()
        .map(|backtrace| {
            backtrace
                .frames()
                .flat_map(|frame| frame.symbols())
                .map(|sym| Frame {
                    name: sym.name_demangled().map(without_hash),
                    file: sym.filename().map(|p| p.to_string_lossy().into_owned()),
                    line: sym.lineno(),
                })
                .collect()
        })
        .collect();
    let Some(first) = backtraces.first() else {
        return AwaitPoint {
            text: "await point not taken: the task awaits nothing tokio traces".to_owned(),
            untimed: false,
        };
    };
    AwaitPoint {
        text: Waiting::pick(first).awaiting().to_string(),
        untimed: !backtraces.iter().any(|frames| awaits_a_timer(frames)),
    }
}

/// Whether a leaf future's backtrace runs through `tokio::time` (`sleep`, `Interval::tick`,
/// `timeout`): a wait that may end of itself.
fn awaits_a_timer(frames: &[Frame]) -> bool {
    frames
        .iter()
        .filter_map(|f| f.name.as_deref())
        .any(|name| name.contains("tokio::time::"))
}

/// A demangled symbol without its trailing hash: `a::b::h0123456789abcdef` → `a::b`.
fn without_hash(name: &str) -> String {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head.to_owned()
        }
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_is_told_by_a_frame_of_tokio_time() {
        let frame = |name: &str| Frame {
            name: Some(name.to_owned()),
            file: None,
            line: None,
        };
        let sleep = [
            frame("tokio::runtime::task::trace::Trace::leaf"),
            frame("<tokio::time::sleep::Sleep as core::future::future::Future>::poll"),
            frame("svc::run::{{closure}}"),
        ];
        let recv = [
            frame("tokio::runtime::task::trace::Trace::leaf"),
            frame("tokio::sync::mpsc::bounded::Receiver<T>::recv::{{closure}}"),
            frame("svc::run::{{closure}}"),
        ];
        assert!(awaits_a_timer(&sleep));
        assert!(!awaits_a_timer(&recv));
    }

    #[test]
    fn a_hash_is_dropped_and_a_name_without_one_kept() {
        assert_eq!(without_hash("a::b::h0123456789abcdef"), "a::b");
        assert_eq!(without_hash("a::b::hello"), "a::b::hello");
        assert_eq!(without_hash("a::b"), "a::b");
    }
}
