//! Where each live task of an instrumented tokio runtime was spawned.
//!
//! tokio names no task, but its unstable task hooks (`--cfg tokio_unstable`) tell when a task is
//! spawned, where (`TaskMeta::spawned_at`, tokio 1.46.1 and later), and when it ends.
//! [`instrument`](crate::instrument) sets both hooks on a runtime builder; they keep a table
//! of the live tasks with their spawn site and a sequence number, so that a check can list
//! the tasks spawned after its baseline and still alive at its end, grouped by site.
//!
//! tokio keeps one spawn hook and one terminate hook per builder, with no way to read one
//! back: `instrument` replaces hooks set before it, and hooks set after it replace its own.
//! [`instrument_with`](crate::instrument_with) runs the caller's hooks after its own.
//!
//! A check is given a runtime's `Handle`, and a hook is not told its runtime: each task is
//! tagged with the runtime current where it was spawned (right for `tokio::spawn`, which
//! spawns on the current runtime). A task spawned from outside any runtime (`Handle::spawn`
//! or `Runtime::spawn` on a plain thread) is tagged with its builder's hooks instead, and
//! belongs to the runtimes those hooks have seen from inside: a task spawned or ended there.
//! When a check finds such tasks and its runtime has not been seen yet, it learns which hooks
//! the runtime runs by spawning one empty task on it (failure path only, aborted at once,
//! unrecorded): the hooks see it with the runtime entered.

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

use tokio::runtime::{Builder, Handle, TaskMeta};

/// One live task.
struct Task {
    site: Option<&'static Location<'static>>,
    seq: u64,
    /// The runtime current where it was spawned.
    runtime: Option<tokio::runtime::Id>,
    /// Which `instrument` call's hooks saw it.
    builder: usize,
}

#[derive(Default)]
struct State {
    live: HashMap<tokio::task::Id, Task>,
    /// (builder, runtime) pairs: that builder's hooks saw a task spawned or ended inside that
    /// runtime.
    seen: Vec<(usize, tokio::runtime::Id)>,
}

impl State {
    fn see(&mut self, builder: usize, runtime: Option<tokio::runtime::Id>) {
        if let Some(rt) = runtime {
            if !self.seen.contains(&(builder, rt)) {
                self.seen.push((builder, rt));
            }
        }
    }
}

thread_local! {
    /// Set while `probe` spawns its task: the hooks record the runtime, not the task.
    static PROBING: Cell<bool> = const { Cell::new(false) };
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(Mutex::default);
static SEQ: AtomicU64 = AtomicU64::new(0);
static BUILDERS: AtomicUsize = AtomicUsize::new(0);

fn state() -> MutexGuard<'static, State> {
    // A panic in a user's hook while the lock was held leaves the table intact.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The spawn site where this tokio provides it (1.46.1 and later). Method resolution picks
/// tokio's inherent `TaskMeta::spawned_at` when it exists, this trait's otherwise.
#[allow(dead_code)]
trait SpawnedAtFallback {
    fn spawned_at(&self) -> Option<&'static Location<'static>>;
}

impl SpawnedAtFallback for TaskMeta<'_> {
    fn spawned_at(&self) -> Option<&'static Location<'static>> {
        None
    }
}

fn current_runtime() -> Option<tokio::runtime::Id> {
    Handle::try_current().ok().map(|h| h.id())
}

fn on_spawn(builder: usize, meta: &TaskMeta<'_>) {
    #[allow(clippy::useless_conversion)] // not useless with a tokio before 1.46.1
    let site: Option<&'static Location<'static>> = meta.spawned_at().into();
    let runtime = current_runtime();
    if PROBING.with(Cell::get) {
        state().see(builder, runtime);
        return;
    }
    let task = Task {
        site,
        seq: SEQ.fetch_add(1, Ordering::Relaxed) + 1,
        runtime,
        builder,
    };
    let mut state = state();
    state.see(builder, runtime);
    state.live.insert(meta.id(), task);
}

fn on_terminate(builder: usize, meta: &TaskMeta<'_>) {
    let runtime = current_runtime();
    let mut state = state();
    state.live.remove(&meta.id());
    state.see(builder, runtime);
}

/// Spawns one empty task on `handle`'s runtime with the runtime entered, so that the hooks of
/// the builder that built it (if any) see that runtime; the task is not recorded, and aborted
/// at once (it ends when the runtime next runs).
fn probe(handle: &Handle) {
    spawn_unrecorded(handle).abort();
}

/// Spawns an empty task on `handle`'s runtime, with the runtime entered, that the hooks do not
/// record as a task (they note the runtime as seen).
pub(crate) fn spawn_unrecorded(handle: &Handle) -> tokio::task::JoinHandle<()> {
    let _entered = handle.enter();
    PROBING.with(|p| p.set(true));
    let task = handle.spawn(async {});
    PROBING.with(|p| p.set(false));
    task
}

/// Records every task of the runtime this builder builds with its spawn site, so that a leak
/// check of that runtime ([`LeakCheck::tasks`](crate::LeakCheck::tasks)) names each leaked
/// task by where it was spawned:
///
/// ```text
/// tasks    +40 (+2.00/cycle)  spawned at watcher/src/service.rs:31 ×20, …/service.rs:48 ×20
/// ```
///
/// Needs `--cfg tokio_unstable` (tokio's task hooks are unstable), e.g.
/// `RUSTFLAGS="--cfg tokio_unstable" cargo test`, and tokio 1.46.1 or later for the sites
/// themselves (an older tokio has the hooks but not the site: tasks are then counted as
/// before). Costs one lock and a map update per task spawned and per task ended.
///
/// tokio keeps one spawn hook and one terminate hook per builder and cannot hand back one
/// already set: this replaces hooks set before it, and hooks set after it replace these. To
/// keep hooks of your own, use [`instrument_with`].
///
/// ```
/// let runtime = leakcheck::instrument(&mut tokio::runtime::Builder::new_current_thread())
///     .enable_all()
///     .build()
///     .unwrap();
/// let leak = runtime.block_on(async {
///     leakcheck::LeakCheck::new()
///         .tasks(&tokio::runtime::Handle::current())
///         .settle(std::time::Duration::from_millis(20))
///         .run_async(|| async {
///             tokio::spawn(std::future::pending::<()>());
///         })
///         .await
///         .unwrap_err()
/// });
/// assert_eq!(leak.report().leaked(leakcheck::Resource::Tasks), 1);
/// ```
pub fn instrument(builder: &mut Builder) -> &mut Builder {
    instrument_with(builder, |_| (), |_| ())
}

/// Like [`instrument`], and runs `on_spawn` and `on_terminate` after its own hooks: tokio
/// keeps a single hook of each kind per builder, so this is how hooks of your own and
/// leakcheck's run together.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let spawned = Arc::new(AtomicUsize::new(0));
/// let count = spawned.clone();
/// let runtime = leakcheck::instrument_with(
///     &mut tokio::runtime::Builder::new_current_thread(),
///     move |_| {
///         count.fetch_add(1, Ordering::Relaxed);
///     },
///     |_| (),
/// )
/// .build()
/// .unwrap();
/// runtime.block_on(async { tokio::spawn(async {}).await.unwrap() });
/// assert_eq!(spawned.load(Ordering::Relaxed), 1);
/// ```
pub fn instrument_with<S, T>(
    builder: &mut Builder,
    on_spawn_too: S,
    on_terminate_too: T,
) -> &mut Builder
where
    S: Fn(&TaskMeta<'_>) + Send + Sync + 'static,
    T: Fn(&TaskMeta<'_>) + Send + Sync + 'static,
{
    let id = BUILDERS.fetch_add(1, Ordering::Relaxed);
    builder
        .on_task_spawn(move |meta| {
            on_spawn(id, meta);
            on_spawn_too(meta);
        })
        .on_task_terminate(move |meta| {
            on_terminate(id, meta);
            on_terminate_too(meta);
        })
}

/// The sequence number of the last task spawned on any instrumented runtime: the tasks
/// spawned after a baseline are those with a greater one.
pub(crate) fn watermark() -> u64 {
    SEQ.load(Ordering::Relaxed)
}

/// The tasks of `handle`'s runtime spawned after `watermark` and still alive, each with its
/// spawn site (`spawned at src/a.rs:9`), or `None` when the runtime is not instrumented.
pub(crate) fn spawned_since(
    handle: &Handle,
    watermark: u64,
) -> Option<Vec<(tokio::task::Id, String)>> {
    let rt = handle.id();
    // A task spawned from outside any runtime belongs to the runtimes its builder's hooks saw
    // from inside. If such tasks are new and this runtime has not been seen, make its hooks
    // (if it has ours) see it.
    let unseen = {
        let state = state();
        !state.seen.iter().any(|(_, r)| *r == rt)
            && state
                .live
                .values()
                .any(|t| t.seq > watermark && t.runtime.is_none())
    };
    if unseen {
        probe(handle);
    }
    let state = state();
    let builders: Vec<usize> = state
        .seen
        .iter()
        .filter(|(_, r)| *r == rt)
        .map(|(b, _)| *b)
        .collect();
    if builders.is_empty() {
        // Every task spawned inside a runtime marks it seen: none of ours ran here.
        return None;
    }
    let ours = |t: &Task| match t.runtime {
        Some(r) => r == rt,
        None => builders.contains(&t.builder),
    };
    let root = super::frames::source_root();
    Some(
        state
            .live
            .iter()
            .filter(|(_, t)| t.seq > watermark && ours(t))
            .map(|(id, t)| {
                let label = match t.site {
                    Some(at) => format!(
                        "spawned at {}:{}",
                        super::frames::short_path(at.file(), root),
                        at.line()
                    ),
                    None => "spawn site needs tokio 1.46.1 or later".to_owned(),
                };
                (*id, label)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(multi: bool) -> tokio::runtime::Runtime {
        let mut builder = if multi {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        instrument(&mut builder).enable_all().build().unwrap()
    }

    fn labels(tasks: Option<Vec<(tokio::task::Id, String)>>) -> Vec<String> {
        tasks.unwrap().into_iter().map(|(_, label)| label).collect()
    }

    fn sites_of_a_planted_task(multi: bool) {
        let rt = runtime(multi);
        let (mark, planted_line, sites) = rt.block_on(async {
            // A task that ends, so that the runtime is known to the hooks either way.
            tokio::spawn(async {}).await.unwrap();
            let mark = watermark();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let line = line!() + 1;
            let planted = tokio::spawn(async move { rx.await.ok() });
            let sites = labels(spawned_since(&Handle::current(), mark));
            drop(tx);
            planted.await.unwrap();
            (mark, line, sites)
        });
        assert_eq!(
            sites,
            vec![format!("spawned at {}:{planted_line}", file!())],
            "{mark}"
        );
        // Ended tasks are gone from the table once the runtime counts them gone (tokio wakes
        // the awaiting task before it runs the terminate hook).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while rt.metrics().num_alive_tasks() > 0 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(
            labels(spawned_since(rt.handle(), mark)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_planted_task_is_named_by_its_spawn_line_on_a_current_thread_runtime() {
        sites_of_a_planted_task(false);
    }

    #[test]
    fn a_planted_task_is_named_by_its_spawn_line_on_a_multi_thread_runtime() {
        sites_of_a_planted_task(true);
    }

    /// A task spawned with `Handle::spawn` from a plain thread, on a runtime where a task has
    /// ended before (`ended`) or where none ever ran.
    fn a_task_spawned_from_outside(multi: bool, ended: bool) {
        let rt = runtime(multi);
        if ended {
            rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while rt.metrics().num_alive_tasks() > 0 && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
        }
        let mark = watermark();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = rt.handle().clone();
        let (planted, line) = std::thread::spawn(move || {
            let line = line!() + 1;
            let planted = handle.spawn(async move { rx.await.ok() });
            (planted, line)
        })
        .join()
        .unwrap();
        let sites = labels(spawned_since(rt.handle(), mark));
        // Another instrumented runtime (another builder) does not claim it.
        let other = runtime(multi);
        let elsewhere = other.block_on(async { spawned_since(&Handle::current(), mark) });
        drop(tx);
        rt.block_on(planted).unwrap();
        assert_eq!(sites, vec![format!("spawned at {}:{line}", file!())]);
        assert_eq!(labels(elsewhere), Vec::<String>::new());
    }

    #[test]
    fn a_task_spawned_from_outside_a_multi_thread_runtime_is_named_after_a_task_ended() {
        a_task_spawned_from_outside(true, true);
    }

    #[test]
    fn a_task_spawned_from_outside_a_multi_thread_runtime_is_named_before_any_ran() {
        a_task_spawned_from_outside(true, false);
    }

    #[test]
    fn a_task_spawned_from_outside_a_current_thread_runtime_is_named_after_a_task_ended() {
        a_task_spawned_from_outside(false, true);
    }

    #[test]
    fn a_task_spawned_from_outside_a_current_thread_runtime_is_named_before_any_ran() {
        a_task_spawned_from_outside(false, false);
    }

    #[test]
    fn a_runtime_that_is_not_instrumented_says_so() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::spawn(async {}).await.unwrap();
            assert_eq!(spawned_since(&Handle::current(), 0), None);
        });
    }
}
