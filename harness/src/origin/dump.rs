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
use std::time::Duration;

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
                return Err("await point not taken: a current-thread runtime is dumped only \
                            from the thread that drives it"
                    .to_owned());
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
                    return Err("await point not taken: an earlier dump of this runtime has \
                                not been answered"
                        .to_owned());
                }
                pending.push(id);
            }
            let (tx, rx) = mpsc::channel();
            let target = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("leakcheck-dump".into())
                .spawn(move || {
                    let answered = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .map(|rt| rt.block_on(target.dump()));
                    pending().retain(|r| *r != id);
                    let _ = tx.send(answered);
                });
            if let Err(e) = spawned {
                pending().retain(|r| *r != id);
                return Err(format!("await point not taken: no thread for the dump: {e}"));
            }
            let wait = || rx.recv_timeout(DEADLINE);
            // On a worker of a multi-thread runtime, give up the worker's seat while waiting:
            // the dump waits for every worker (this one's included) to reach a yield point.
            let answer = match current.map(|c| c.runtime_flavor()) {
                Some(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
                _ => wait(),
            };
            match answer {
                Ok(Ok(dump)) => Ok(dump),
                Ok(Err(e)) => Err(format!("await point not taken: {e}")),
                Err(_) => Err(format!(
                    "await point not taken: the runtime did not answer within {} s",
                    DEADLINE.as_secs()
                )),
            }
        }
    }
}

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
