//! Loom models of the shutdown protocol.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p watcher-shutdown --test loom`
//! (`ci/loom.sh` also checks that each model catches the bug it is about, using the
//! deliberately broken coordinators behind `cfg(coordinator_bug = "<name>")`, built with
//! `COORDINATOR_BUG=<name>` in the environment).
//!
//! Tasks are loom threads holding a [`Permit`]; "told to stop" and "aborted" are flags the
//! hooks raise and the tasks wait for on a loom condvar. Each model stays within 4 threads,
//! main included, and relies on `LOOM_MAX_PREEMPTIONS` (read by loom) to bound the search.
#![cfg(loom)]

use std::future::{poll_fn, Future};
use std::task::Poll;

use loom::future::{block_on, AtomicWaker};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use watcher_shutdown::{CloseHooks, Coordinator, Permit, Stage, Stopper, TaskInfo};

/// Runs a model. loom reads `LOOM_MAX_PREEMPTIONS` itself; unset, the search would be
/// unbounded (minutes to hours), so the bound defaults to 3 here.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// One-way flags a thread can wait for (a stage told to stop, a task aborted).
#[derive(Default)]
struct Flags {
    raised: Mutex<u32>,
    changed: Condvar,
}

impl Flags {
    fn raise(&self, bit: usize) {
        *self.raised.lock().unwrap() |= 1 << bit;
        self.changed.notify_all();
    }
    fn wait(&self, bit: usize) {
        let mut raised = self.raised.lock().unwrap();
        while *raised & (1 << bit) == 0 {
            raised = self.changed.wait(raised).unwrap();
        }
    }
}

/// A close budget that a thread of the model uses up.
#[derive(Default)]
struct Budget {
    gone: AtomicBool,
    waker: AtomicWaker,
}

impl Budget {
    fn expire(&self) {
        self.gone.store(true, SeqCst);
        self.waker.wake();
    }
}

/// Hooks that count stops, raise flags for the tasks, and optionally check the stage order.
struct Hooks {
    stops: [AtomicUsize; 3],
    stopped: Flags,
    aborted: Flags,
    budget: Option<Arc<Budget>>,
    /// Set: `stop(s)` checks the stage order against this coordinator.
    order_of: Option<Coordinator>,
    /// A task that stops as soon as its stage is told to (inside the stop call).
    parked: Mutex<Option<Permit>>,
}

impl Hooks {
    fn new() -> Self {
        Hooks {
            stops: Default::default(),
            stopped: Flags::default(),
            aborted: Flags::default(),
            budget: None,
            order_of: None,
            parked: Mutex::new(None),
        }
    }
    fn stops(&self, stage: Stage) -> usize {
        self.stops[stage as usize].load(SeqCst)
    }
    /// A task's body: run until told to stop (or aborted), then release the permit.
    fn run_until_stopped(&self, permit: Permit) {
        self.stopped.wait(permit.info().stage as usize);
        drop(permit);
    }
}

impl CloseHooks for Hooks {
    fn stop(&self, stage: Stage) {
        if let Some(c) = &self.order_of {
            for earlier in Stage::ALL.into_iter().filter(|s| *s < stage) {
                assert_eq!(
                    self.stops(earlier),
                    1,
                    "{stage:?} stopped before {earlier:?}"
                );
                assert_eq!(
                    c.live(earlier),
                    0,
                    "{stage:?} stopped before {earlier:?} joined"
                );
            }
            for later in Stage::ALL.into_iter().filter(|s| *s > stage) {
                assert_eq!(self.stops(later), 0, "{later:?} stopped before {stage:?}");
            }
        }
        self.stops[stage as usize].fetch_add(1, SeqCst);
        self.stopped.raise(stage as usize);
        let mut parked = self.parked.lock().unwrap();
        let stopping = parked.take_if(|p| p.info().stage == stage);
        drop(parked);
        drop(stopping); // outside the lock: the drop may chain to the next stage's stop
    }
    fn expired(&self) -> impl Future<Output = ()> {
        let budget = self.budget.clone();
        poll_fn(move |cx| match &budget {
            None => Poll::Pending, // never runs out
            Some(budget) => {
                budget.waker.register_by_ref(cx.waker());
                match budget.gone.load(SeqCst) {
                    true => Poll::Ready(()),
                    false => Poll::Pending,
                }
            }
        })
    }
    fn abort(&self, task: &TaskInfo) {
        self.aborted.raise(task.id as usize);
    }
}

/// The same hooks, plus a [`Stopper`] that makes the same stop calls.
struct Chained(Arc<Hooks>);

impl CloseHooks for Chained {
    fn stop(&self, stage: Stage) {
        self.0.stop(stage)
    }
    fn expired(&self) -> impl Future<Output = ()> {
        self.0.expired()
    }
    fn abort(&self, task: &TaskInfo) {
        self.0.abort(task)
    }
    fn stopper(&self) -> Option<Stopper> {
        let hooks = self.0.clone();
        Some(std::sync::Arc::new(move |stage| hooks.stop(stage)))
    }
}

/// Hooks whose budget a thread of the model uses up (checking the stage order against
/// `order_of`, if given).
fn hooks_with_budget(order_of: Option<Coordinator>) -> (Arc<Hooks>, Arc<Budget>) {
    let budget = Arc::new(Budget::default());
    let hooks = Arc::new(Hooks {
        budget: Some(budget.clone()),
        order_of,
        ..Hooks::new()
    });
    (hooks, budget)
}

/// A task that ignores stop and ends only once it is aborted.
fn stuck_until_aborted(hooks: &Arc<Hooks>, permit: Permit) -> thread::JoinHandle<()> {
    let hooks = hooks.clone();
    thread::spawn(move || {
        hooks.aborted.wait(permit.info().id as usize);
        drop(permit);
    })
}

fn assert_all_joined(c: &Coordinator) {
    for stage in Stage::ALL {
        assert_eq!(c.live(stage), 0, "{stage:?} still has a task after close");
    }
}

const NOT_YET: usize = 0;
const REFUSED: usize = 1;
const RUNNING: usize = 2;
const FINISHED: usize = 3;

/// 1. close racing spawn: every task is either refused or joined; after close returns, none
///    is running or registered.
#[test]
fn close_racing_register() {
    model(|| {
        let c = Coordinator::new();
        let hooks = Arc::new(Hooks::new());
        let outcome: Arc<[AtomicUsize; 2]> = Arc::default();
        let spawners: Vec<_> = [Stage::Intake, Stage::Workers]
            .into_iter()
            .enumerate()
            .map(|(i, stage)| {
                let (c, hooks, outcome) = (c.clone(), hooks.clone(), outcome.clone());
                thread::spawn(move || match c.register(stage, "task") {
                    Err(_) => outcome[i].store(REFUSED, SeqCst),
                    Ok(permit) => {
                        outcome[i].store(RUNNING, SeqCst);
                        if stage == Stage::Intake {
                            hooks.stopped.wait(stage as usize); // runs until told to stop
                        }
                        outcome[i].store(FINISHED, SeqCst);
                        drop(permit);
                    }
                })
            })
            .collect();
        block_on(c.close(&*hooks));
        assert_all_joined(&c);
        let at_close: Vec<usize> = outcome.iter().map(|o| o.load(SeqCst)).collect();
        assert!(
            !at_close.contains(&RUNNING),
            "a task outlived close: {at_close:?}"
        );
        spawners.into_iter().for_each(|t| t.join().unwrap());
        for (i, before) in at_close.into_iter().enumerate() {
            let after = outcome[i].load(SeqCst);
            let expected = if before == NOT_YET { REFUSED } else { before };
            assert_eq!(
                after, expected,
                "task {i} registered after its stage closed"
            );
        }
        assert_all_joined(&c);
    });
}

/// 2. two threads calling close at once, and close called twice: the stages run once; every
///    caller returns only after everything is joined, and all see the same report.
#[test]
fn concurrent_and_repeated_close() {
    model(|| {
        let c = Coordinator::new();
        let hooks = Arc::new(Hooks::new());
        let finished = Arc::new(AtomicBool::new(false));
        let permit = c.register(Stage::Workers, "worker").unwrap();
        let task = {
            let (hooks, finished) = (hooks.clone(), finished.clone());
            thread::spawn(move || {
                hooks.stopped.wait(Stage::Workers as usize);
                finished.store(true, SeqCst);
                drop(permit);
            })
        };
        let close = {
            let (c, hooks, finished) = (c.clone(), hooks.clone(), finished.clone());
            move || {
                let report = block_on(c.close(&*hooks));
                assert!(
                    finished.load(SeqCst),
                    "close returned before the task ended"
                );
                assert_all_joined(&c);
                report
            }
        };
        let other = thread::spawn(close.clone());
        let mine = close();
        let theirs = other.join().unwrap();
        task.join().unwrap();
        let again = close();
        assert_eq!(mine, theirs);
        assert_eq!(mine, again);
        for stage in Stage::ALL {
            assert_eq!(hooks.stops(stage), 1, "{stage:?} stopped more than once");
        }
    });
}

/// 3. close racing a task that finishes: no lost wake-up (a hang is a loom deadlock).
#[test]
fn close_racing_task_exit() {
    model(|| {
        let c = Coordinator::new();
        let hooks = Arc::new(Hooks::new());
        let worker = c.register(Stage::Workers, "worker").unwrap();
        let pump = c.register(Stage::Intake, "pump").unwrap();
        let exits = thread::spawn(move || drop(worker)); // finishes on its own, any time
        let stops = {
            let hooks = hooks.clone();
            thread::spawn(move || hooks.run_until_stopped(pump))
        };
        let report = block_on(c.close(&*hooks));
        assert!(report.aborted.is_empty());
        assert_all_joined(&c);
        exits.join().unwrap();
        stops.join().unwrap();
    });
}

/// 4. drop without close (cancel_all, then drop everything): every task is told to stop and
///    released; no Arc leaked (loom fails the model if a loom Arc outlives it).
#[test]
fn cancel_all_then_drop() {
    model(|| {
        let c = Coordinator::new();
        let hooks = Arc::new(Hooks::new());
        let tasks: Vec<_> = Stage::ALL
            .into_iter()
            .map(|stage| {
                let (c, hooks) = (c.clone(), hooks.clone());
                thread::spawn(move || {
                    if let Ok(permit) = c.register(stage, "task") {
                        hooks.run_until_stopped(permit);
                    }
                })
            })
            .collect();
        c.cancel_all(&*hooks);
        assert!(c.is_closing());
        tasks.into_iter().for_each(|t| t.join().unwrap());
        assert_all_joined(&c);
        for stage in Stage::ALL {
            assert!(c.register(stage, "late").is_err());
        }
    });
}

/// 5. budget exhausted: a task that never finishes is aborted and reported, and close still
///    returns. The task exits only once its abort hook fires; a second thread uses up the
///    budget; a Background task held by main is not joined in time either.
#[test]
fn budget_exhausted_aborts() {
    model(|| {
        let c = Coordinator::new();
        let (hooks, budget) = hooks_with_budget(None);
        let stuck = c.register(Stage::Workers, "stuck").unwrap();
        let late = c.register(Stage::Background, "late").unwrap();
        let expected = vec![stuck.info().clone(), late.info().clone()];
        let task = stuck_until_aborted(&hooks, stuck);
        let timer = thread::spawn(move || budget.expire());
        let report = block_on(c.close(&*hooks));
        assert!(report.budget_exhausted);
        assert_eq!(report.aborted, expected);
        assert_eq!(report.stages.len(), 3);
        assert_all_joined(&c);
        drop(late); // already released: harmless
        task.join().unwrap();
        timer.join().unwrap();
        assert_all_joined(&c);
    });
}

/// 6. stage order: intake stops before workers are joined, workers before background
///    routines; no task can be registered into a stage that has already been joined. The
///    hooks check, at each stop, that every earlier stage is stopped and empty and no later
///    one is stopped; the worker also tries to start an intake task at any point.
#[test]
fn stage_order() {
    model(|| {
        let c = Coordinator::new();
        let hooks = Arc::new(Hooks {
            order_of: Some(c.clone()),
            ..Hooks::new()
        });
        let pump = c.register(Stage::Intake, "pump").unwrap();
        let worker = c.register(Stage::Workers, "worker").unwrap();
        let pump = {
            let hooks = hooks.clone();
            thread::spawn(move || hooks.run_until_stopped(pump))
        };
        let worker = {
            let (c, hooks) = (c.clone(), hooks.clone());
            thread::spawn(move || {
                if let Ok(late) = c.register(Stage::Intake, "late pump") {
                    hooks.run_until_stopped(late);
                }
                hooks.run_until_stopped(worker);
            })
        };
        block_on(c.close(&*hooks));
        assert_all_joined(&c);
        pump.join().unwrap();
        worker.join().unwrap();
    });
}

/// 7. stages chained by a stopper: the task that empties a stage stops the next one, and the
///    close's caller is woken once, at the end. Two intake tasks end in any order (the stage
///    is joined only when both are gone), a worker ends when told, and the background
///    routine ends inside its stop call (so its drop runs within the chained stop). The hooks
///    check the order at each stop, whoever makes it. (Which stops the stopper makes depends
///    on whether a stage empties before or after its stop call returns; that the caller is
///    woken once when every stage empties after it is told is a unit test.)
#[test]
fn chained_stages() {
    model(|| {
        let c = Coordinator::new();
        let hooks = Arc::new(Hooks {
            order_of: Some(c.clone()),
            ..Hooks::new()
        });
        *hooks.parked.lock().unwrap() = Some(c.register(Stage::Background, "routine").unwrap());
        let tasks: Vec<_> = [
            (Stage::Intake, "pump"),
            (Stage::Intake, "scan"),
            (Stage::Workers, "worker"),
        ]
        .into_iter()
        .map(|(stage, name)| {
            let permit = c.register(stage, name).unwrap();
            let hooks = hooks.clone();
            thread::spawn(move || hooks.run_until_stopped(permit))
        })
        .collect();
        let report = block_on(c.close(&Chained(hooks.clone())));
        assert_all_joined(&c);
        let order: Vec<Stage> = report.stages.iter().map(|(s, _)| *s).collect();
        assert_eq!(order, Stage::ALL);
        assert!(!report.budget_exhausted && report.aborted.is_empty());
        for stage in Stage::ALL {
            assert_eq!(hooks.stops(stage), 1, "{stage:?} stopped more than once");
        }
        tasks.into_iter().for_each(|t| t.join().unwrap());
    });
}

/// 8. a stopper and an expiring budget: the pump's drop chains to the workers' stop while the
///    budget runs out; the stuck worker is aborted, the routine held by main too (and the
///    pump, if the budget ran out before it ended), every stage is stopped exactly once and in
///    order (the caller, taking over, lets a chained stop return before it moves on), and
///    close returns.
#[test]
fn chained_stages_with_budget() {
    model(|| {
        let c = Coordinator::new();
        let (hooks, budget) = hooks_with_budget(Some(c.clone()));
        let pump = c.register(Stage::Intake, "pump").unwrap();
        let stuck = c.register(Stage::Workers, "stuck").unwrap();
        let late = c.register(Stage::Background, "late").unwrap();
        let pump_info = pump.info().clone();
        let expected = vec![stuck.info().clone(), late.info().clone()];
        let pump = {
            let hooks = hooks.clone();
            thread::spawn(move || hooks.run_until_stopped(pump))
        };
        let stuck = stuck_until_aborted(&hooks, stuck);
        let timer = thread::spawn(move || budget.expire());
        let report = block_on(c.close(&Chained(hooks.clone())));
        assert!(report.budget_exhausted);
        let aborted = match report.aborted.first() {
            Some(first) if *first == pump_info => &report.aborted[1..],
            _ => &report.aborted[..],
        };
        assert_eq!(aborted, expected);
        assert_eq!(report.stages.len(), 3);
        drop(late);
        [pump, stuck, timer]
            .into_iter()
            .for_each(|t| t.join().unwrap());
        assert_all_joined(&c);
        for stage in Stage::ALL {
            assert_eq!(hooks.stops(stage), 1, "{stage:?} stopped more than once");
        }
    });
}
