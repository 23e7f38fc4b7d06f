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
//! - a multi-thread runtime is dumped when every worker reaches its next yield point; a worker
//!   blocked in a synchronous call never does. The dump runs on a helper thread and the check
//!   waits at most [`DEADLINE`], then says the runtime did not answer. The helper keeps
//!   awaiting (dropping tokio's dump future part-way would leave the runtime's trace request
//!   set, and its workers would pause at every yield point from then on), and ends when the
//!   runtime answers; meanwhile no second dump of that runtime is started. A check running on
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

/// The runtimes whose dump is still under way after a check stopped waiting.
static PENDING: LazyLock<Mutex<Vec<tokio::runtime::Id>>> = LazyLock::new(Mutex::default);

fn pending() -> std::sync::MutexGuard<'static, Vec<tokio::runtime::Id>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where each idle task of `handle`'s runtime awaits (`awaiting at src/svc.rs:88 in
/// tokio::sync::mpsc::Receiver::recv`), by task id; or why no dump was taken (`await point
/// not taken: the runtime did not answer within 1 s`).
pub(crate) fn await_points(handle: &Handle) -> Result<HashMap<tokio::task::Id, String>, String> {
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
            let id = handle.id();
            {
                let mut pending = pending();
                if pending.contains(&id) {
                    return Err(
                        "await point not taken: an earlier dump of this runtime has \
                                not been answered"
                            .to_owned(),
                    );
                }
                pending.push(id);
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

/// A dump of `handle`'s multi-thread runtime (marked pending by the caller; the mark is
/// cleared once no dump of it is under way), within [`DEADLINE`].
fn dump_multi_thread(handle: &Handle) -> Result<tokio::runtime::Dump, String> {
    let started = Instant::now();
    let id = handle.id();
    let unmark = move || pending().retain(|r| *r != id);
    let not_answered = || {
        format!(
            "await point not taken: the runtime did not answer within {} s",
            DEADLINE.as_secs()
        )
    };
    if !responsive(handle, started + DEADLINE) {
        unmark();
        return Err(not_answered());
    }
    let (tx, rx) = mpsc::channel();
    let target = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("leakcheck-dump".into())
        .spawn(move || {
            let answered = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map(|rt| rt.block_on(answer(&target)));
            unmark();
            let _ = tx.send(answered);
        });
    if let Err(e) = spawned {
        unmark();
        return Err(format!(
            "await point not taken: no thread for the dump: {e}"
        ));
    }
    match rx.recv_timeout(DEADLINE.saturating_sub(started.elapsed())) {
        Ok(Ok(dump)) => Ok(dump),
        Ok(Err(e)) => Err(format!("await point not taken: {e}")),
        // The helper goes on waiting, and clears the pending mark when answered.
        Err(_) => Err(not_answered()),
    }
}

/// True once every worker of `handle`'s multi-thread runtime has been seen parked or making
/// progress (its published counters changed) before `deadline`.
///
/// tokio's dump waits for the workers at a barrier with a 250 ms timeout that does not take a
/// timed-out arrival back out of the count: a dump asked of a runtime with a worker stuck in a
/// poll can leave another worker waiting for ever at the end of the trace (and the runtime's
/// drop with it). So no dump is asked for until every worker looks able to answer. A worker
/// publishes its counters when it parks (its park/unpark count is then odd) and at its
/// periodic maintenance, so a worker stuck in one poll shows the same even count and the same
/// poll count throughout.
fn responsive(handle: &Handle, deadline: Instant) -> bool {
    let metrics = handle.metrics();
    let reading = |w: usize| {
        (
            metrics.worker_park_unpark_count(w),
            metrics.worker_poll_count(w),
            metrics.worker_total_busy_duration(w),
        )
    };
    let first: Vec<_> = (0..metrics.num_workers()).map(reading).collect();
    let mut answered = vec![false; first.len()];
    let mut pause = Duration::from_micros(100);
    loop {
        for (w, seen) in answered.iter_mut().enumerate() {
            let now = reading(w);
            *seen = *seen || now.0 % 2 == 1 || now != first[w];
        }
        if answered.iter().all(|seen| *seen) {
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

/// The await point in a task's trace, as a report shows it.
fn await_point(trace: &tokio::runtime::dump::Trace) -> String {
    let Some(backtrace) = trace.resolve_backtraces().into_iter().next() else {
        return "await point not taken: the task awaits nothing tokio traces".to_owned();
    };
    let frames: Vec<Frame> = backtrace
        .frames()
        .flat_map(|frame| frame.symbols())
        .map(|sym| Frame {
            name: sym.name_demangled().map(without_hash),
            file: sym.filename().map(|p| p.to_string_lossy().into_owned()),
            line: sym.lineno(),
        })
        .collect();
    Waiting::pick(&frames).awaiting().to_string()
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
    fn a_hash_is_dropped_and_a_name_without_one_kept() {
        assert_eq!(without_hash("a::b::h0123456789abcdef"), "a::b");
        assert_eq!(without_hash("a::b::hello"), "a::b::hello");
        assert_eq!(without_hash("a::b"), "a::b");
    }
}
