//! Unit tests (std). The interleavings are covered by the loom models in `tests/loom.rs`.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use crate::{CloseHooks, Coordinator, Permit, Refused, Stage, Stopper, TaskInfo};

fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut f = pin!(f);
    loop {
        match f.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Records every hook call; `stop` drops the permits parked for that stage (tasks that stop
/// at once); the budget is either already used up or never runs out.
#[derive(Default)]
struct Hooks {
    log: Mutex<Vec<String>>,
    parked: Mutex<Vec<Permit>>,
    budget_gone: bool,
    stopped: [AtomicBool; 3],
}

impl Hooks {
    fn park(&self, permit: Permit) {
        self.parked.lock().unwrap().push(permit);
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    fn stopped(&self, stage: Stage) -> bool {
        self.stopped[stage.index()].load(Ordering::SeqCst)
    }
}

impl CloseHooks for Hooks {
    fn stop(&self, stage: Stage) {
        self.log.lock().unwrap().push(format!("stop {stage:?}"));
        self.stopped[stage.index()].store(true, Ordering::SeqCst);
        let mut parked = self.parked.lock().unwrap();
        parked.retain(|p| p.info().stage != stage);
    }
    fn expired(&self) -> impl Future<Output = ()> {
        let gone = self.budget_gone;
        async move {
            if !gone {
                std::future::pending::<()>().await
            }
        }
    }
    fn abort(&self, task: &TaskInfo) {
        self.log
            .lock()
            .unwrap()
            .push(format!("abort {}", task.name));
    }
}

#[test]
fn register_counts_and_permit_drop_deregisters() {
    let c = Coordinator::new();
    let a = c.register(Stage::Workers, "a").unwrap();
    let b = c.register(Stage::Workers, "b").unwrap();
    let i = c.register(Stage::Intake, "i").unwrap();
    assert_eq!((a.info().id, b.info().id, i.info().id), (0, 1, 2));
    assert_eq!(b.info().stage, Stage::Workers);
    assert_eq!((c.live(Stage::Workers), c.live(Stage::Intake)), (2, 1));
    drop(a);
    assert_eq!(c.live(Stage::Workers), 1);
    drop((b, i));
    assert_eq!(c.live(Stage::Workers) + c.live(Stage::Intake), 0);
    assert!(!c.is_closing());
}

#[test]
fn close_runs_stages_in_order_and_refuses_late_tasks() {
    let c = Coordinator::new();
    let hooks = Hooks::default();
    hooks.park(c.register(Stage::Background, "cleanup").unwrap());
    hooks.park(c.register(Stage::Workers, "worker").unwrap());
    hooks.park(c.register(Stage::Intake, "pump").unwrap());
    let report = block_on(c.close(&hooks));
    let order: Vec<Stage> = report.stages.iter().map(|(s, _)| *s).collect();
    assert_eq!(order, Stage::ALL);
    assert!(!report.budget_exhausted);
    assert!(report.aborted.is_empty());
    assert_eq!(
        hooks.log(),
        ["stop Intake", "stop Workers", "stop Background"]
    );
    assert!(c.is_closing());
    for stage in Stage::ALL {
        assert_eq!(c.register(stage, "late").unwrap_err(), Refused(stage));
        assert_eq!(c.live(stage), 0);
    }
}

#[test]
fn close_waits_for_a_task_on_another_thread() {
    let c = Coordinator::new();
    let hooks = Arc::new(Hooks::default());
    let permit = c.register(Stage::Workers, "worker").unwrap();
    let (h, finished) = (hooks.clone(), Arc::new(AtomicBool::new(false)));
    let f = finished.clone();
    let worker = std::thread::spawn(move || {
        while !h.stopped(Stage::Workers) {
            std::thread::yield_now();
        }
        f.store(true, Ordering::SeqCst);
        drop(permit);
    });
    let report = block_on(c.close(&*hooks));
    assert!(
        finished.load(Ordering::SeqCst),
        "close returned before the task ended"
    );
    assert!(report.aborted.is_empty());
    worker.join().unwrap();
}

#[test]
fn concurrent_and_repeated_close_run_the_stages_once() {
    let c = Coordinator::new();
    let hooks = Arc::new(Hooks::default());
    let permit = c.register(Stage::Workers, "worker").unwrap();
    let h = hooks.clone();
    let worker = std::thread::spawn(move || {
        while !h.stopped(Stage::Workers) {
            std::thread::yield_now();
        }
        drop(permit);
    });
    let closers: Vec<_> = (0..3)
        .map(|_| {
            let (c, h) = (c.clone(), hooks.clone());
            std::thread::spawn(move || {
                let report = block_on(c.close(&*h));
                assert_eq!(c.live(Stage::Workers), 0);
                report
            })
        })
        .collect();
    let reports: Vec<_> = closers.into_iter().map(|t| t.join().unwrap()).collect();
    worker.join().unwrap();
    let again = block_on(c.close(&Hooks::default()));
    assert!(reports.iter().all(|r| *r == again));
    assert_eq!(
        hooks.log().len(),
        3,
        "stages ran more than once: {:?}",
        hooks.log()
    );
}

#[test]
fn budget_expiry_aborts_and_reports_the_stragglers() {
    let c = Coordinator::new();
    let hooks = Hooks {
        budget_gone: true,
        ..Hooks::default()
    };
    hooks.park(c.register(Stage::Intake, "pump").unwrap()); // stops in time
    let stuck = c.register(Stage::Workers, "stuck").unwrap();
    let late = c.register(Stage::Background, "late").unwrap();
    let report = block_on(c.close(&hooks));
    assert!(report.budget_exhausted);
    assert_eq!(report.aborted, [stuck.info().clone(), late.info().clone()]);
    assert_eq!(report.stages.len(), 3);
    assert_eq!(
        hooks.log(),
        [
            "stop Intake",
            "stop Workers",
            "abort stuck",
            "stop Background",
            "abort late"
        ]
    );
    assert_eq!(c.live(Stage::Workers) + c.live(Stage::Background), 0);
    drop((stuck, late)); // released already: harmless
    assert_eq!(block_on(c.close(&hooks)), report);
}

#[test]
fn cancel_all_stops_everything_without_waiting() {
    let c = Coordinator::new();
    let hooks = Hooks::default();
    let running = c.register(Stage::Workers, "worker").unwrap();
    c.cancel_all(&hooks);
    assert!(c.is_closing());
    assert_eq!(
        hooks.log(),
        ["stop Intake", "stop Workers", "stop Background"]
    );
    assert_eq!(c.live(Stage::Workers), 1, "cancel_all does not wait");
    assert!(c.register(Stage::Background, "late").is_err());
    drop(running);
    assert_eq!(c.live(Stage::Workers), 0);
}

#[test]
fn hooks_may_use_the_coordinator() {
    struct Reentrant(Coordinator, Mutex<Option<Permit>>);
    impl CloseHooks for Reentrant {
        fn stop(&self, stage: Stage) {
            assert!(self.0.register(stage, "late").is_err());
            self.1.lock().unwrap().take();
        }
        fn expired(&self) -> impl Future<Output = ()> {
            std::future::pending()
        }
        fn abort(&self, _: &TaskInfo) {}
    }
    let c = Coordinator::new();
    let permit = c.register(Stage::Intake, "pump").unwrap();
    let hooks = Reentrant(c.clone(), Mutex::new(Some(permit)));
    block_on(c.close(&hooks));
    assert_eq!(c.live(Stage::Intake), 0);
}

#[test]
fn a_dropped_leader_hands_over_to_the_next_caller() {
    let c = Coordinator::new();
    let first = Hooks::default();
    let worker = c.register(Stage::Workers, "worker").unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    {
        let mut leading = pin!(c.close(&first));
        assert!(leading.as_mut().poll(&mut cx).is_pending());
        let mut follower = pin!(c.close(&first));
        assert!(follower.as_mut().poll(&mut cx).is_pending());
    } // both dropped: the leader mid-way through Workers
    assert_eq!(first.log(), ["stop Intake", "stop Workers"]);
    let second = Hooks::default();
    second.park(worker);
    let report = block_on(c.close(&second));
    let order: Vec<Stage> = report.stages.iter().map(|(s, _)| *s).collect();
    assert_eq!(order, Stage::ALL);
    assert_eq!(second.log(), ["stop Workers", "stop Background"]);
}

#[test]
fn permit_and_coordinator_debug() {
    let c = Coordinator::new();
    let p = c.register(Stage::Intake, "pump").unwrap();
    assert!(format!("{p:?}").contains("pump"));
    assert!(format!("{c:?}").contains("live: [1, 0, 0]"));
    assert_eq!(
        Refused(Stage::Workers).to_string(),
        "stage Workers is closing: no new tasks"
    );
}

#[test]
fn close_is_send_when_the_hooks_are() {
    fn assert_send<T: Send>(_: &T) {}
    let c = Coordinator::new();
    let hooks = Hooks::default();
    assert_send(&c.close(&hooks));
    assert_send(&c);
    assert_send(&c.register(Stage::Intake, "pump").unwrap());
}

/// Hooks with a [`Stopper`]: every stop, the leader's or a chained one, goes to one log;
/// a stop drops the permits parked for that stage, as `Hooks` does.
#[derive(Clone, Default)]
struct Chained {
    log: Arc<Mutex<Vec<String>>>,
    parked: Arc<Mutex<Vec<Permit>>>,
}

impl Chained {
    fn stop_as(&self, who: &str, stage: Stage) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{who} stops {stage:?}"));
        let stopping: Vec<Permit> = {
            let mut parked = self.parked.lock().unwrap();
            let (stopping, kept) = parked.drain(..).partition(|p| p.info().stage == stage);
            *parked = kept;
            stopping
        };
        drop(stopping); // outside the lock: a drop may chain to the next stop
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl CloseHooks for Chained {
    fn stop(&self, stage: Stage) {
        self.stop_as("close", stage);
    }
    fn expired(&self) -> impl Future<Output = ()> {
        std::future::pending()
    }
    fn abort(&self, _: &TaskInfo) {}
    fn stopper(&self) -> Option<Stopper> {
        let me = self.clone();
        Some(Arc::new(move |stage| me.stop_as("chain", stage)))
    }
}

/// Counts the wake-ups of the close's caller.
#[derive(Default)]
struct CountWakes(AtomicUsize);

impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_stopper_chains_the_stages_and_wakes_the_caller_once() {
    let c = Coordinator::new();
    let hooks = Chained::default();
    let pump = c.register(Stage::Intake, "pump").unwrap();
    let worker = c.register(Stage::Workers, "worker").unwrap();
    let routine = c.register(Stage::Background, "routine").unwrap();
    let wakes = Arc::new(CountWakes::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    let mut close = pin!(c.close(&hooks));
    assert!(close.as_mut().poll(&mut cx).is_pending());
    assert_eq!(hooks.log(), ["close stops Intake"]);

    drop(pump); // the pump's drop stops the workers, without the caller
    assert_eq!(hooks.log(), ["close stops Intake", "chain stops Workers"]);
    assert!(c.register(Stage::Workers, "late").is_err());
    drop(worker);
    drop(routine);
    assert_eq!(
        hooks.log(),
        [
            "close stops Intake",
            "chain stops Workers",
            "chain stops Background"
        ]
    );
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "one wake-up, at the end");
    let Poll::Ready(report) = close.as_mut().poll(&mut cx) else {
        panic!("close not done after its last stage was joined");
    };
    let order: Vec<Stage> = report.stages.iter().map(|(s, _)| *s).collect();
    assert_eq!(order, Stage::ALL);
    assert!(!report.budget_exhausted && report.aborted.is_empty());
    // The stopper is released with the close (it may hold what the hooks hold).
    assert_eq!(Arc::strong_count(&hooks.log), 1);
}

#[test]
fn a_stopper_skips_empty_stages_and_stops_each_stage_once() {
    let c = Coordinator::new();
    let hooks = Chained::default();
    // The pump and the routine stop as soon as they are told; no worker at all.
    hooks.parked.lock().unwrap().extend([
        c.register(Stage::Intake, "pump").unwrap(),
        c.register(Stage::Background, "routine").unwrap(),
    ]);
    let report = block_on(c.close(&hooks));
    assert_eq!(report.stages.len(), 3);
    let stops = hooks.log();
    assert_eq!(stops.len(), 3, "{stops:?}");
    for (stop, stage) in stops.iter().zip(Stage::ALL) {
        assert!(stop.ends_with(&format!("stops {stage:?}")), "{stops:?}");
    }
    assert_eq!(Stage::ALL.map(|s| c.live(s)), [0; 3]);
}

#[test]
fn once_the_budget_is_gone_the_caller_stops_the_stages_itself() {
    struct Expired(Chained);
    impl CloseHooks for Expired {
        fn stop(&self, stage: Stage) {
            self.0.stop(stage)
        }
        fn expired(&self) -> impl Future<Output = ()> {
            std::future::ready(())
        }
        fn abort(&self, task: &TaskInfo) {
            self.0
                .log
                .lock()
                .unwrap()
                .push(format!("abort {}", task.name));
        }
        fn stopper(&self) -> Option<Stopper> {
            self.0.stopper()
        }
    }
    let c = Coordinator::new();
    let hooks = Expired(Chained::default());
    let stuck = c.register(Stage::Intake, "stuck").unwrap();
    hooks
        .0
        .parked
        .lock()
        .unwrap()
        .push(c.register(Stage::Workers, "worker").unwrap());
    let report = block_on(c.close(&hooks));
    assert!(report.budget_exhausted);
    assert_eq!(report.aborted, [stuck.info().clone()]);
    assert_eq!(
        hooks.0.log(),
        [
            "close stops Intake",
            "abort stuck",
            "close stops Workers",
            "close stops Background"
        ]
    );
    drop(stuck); // released already: no chain, no wake
    assert_eq!(Stage::ALL.map(|s| c.live(s)), [0; 3]);
}

#[test]
fn an_aborted_stage_is_timed_to_the_end_of_its_aborts() {
    struct SlowAbort;
    impl CloseHooks for SlowAbort {
        fn stop(&self, _: Stage) {}
        fn expired(&self) -> impl Future<Output = ()> {
            std::future::ready(())
        }
        fn abort(&self, _: &TaskInfo) {
            std::thread::sleep(std::time::Duration::from_millis(20)); // a slow hook, not a wait
        }
    }
    let c = Coordinator::new();
    let stuck = c.register(Stage::Workers, "stuck").unwrap();
    let report = block_on(c.close(&SlowAbort));
    assert_eq!(report.stages[1].0, Stage::Workers);
    assert!(
        report.stages[1].1 >= std::time::Duration::from_millis(20),
        "{:?}",
        report.stages
    );
    drop(stuck);
}

#[test]
fn a_new_leader_lets_a_chained_stop_in_flight_return_instead_of_repeating_it() {
    use std::sync::mpsc;
    /// Chained hooks whose stop of `Workers` blocks until released.
    struct Blocking(
        Chained,
        Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
    );
    impl CloseHooks for Blocking {
        fn stop(&self, stage: Stage) {
            self.0.stop(stage)
        }
        fn expired(&self) -> impl Future<Output = ()> {
            std::future::pending()
        }
        fn abort(&self, _: &TaskInfo) {}
        fn stopper(&self) -> Option<Stopper> {
            let (log, gate) = (self.0.clone(), self.1.lock().unwrap().take());
            let gate = Mutex::new(gate);
            Some(Arc::new(move |stage| {
                if let Some((entered, release)) = gate.lock().unwrap().take() {
                    entered.send(()).unwrap();
                    release.recv().unwrap();
                }
                log.stop_as("chain", stage);
            }))
        }
    }
    let c = Coordinator::new();
    let pump = c.register(Stage::Intake, "pump").unwrap();
    let worker = c.register(Stage::Workers, "worker").unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let first = Blocking(
        Chained::default(),
        Mutex::new(Some((entered_tx, release_rx))),
    );
    let mut cx = Context::from_waker(Waker::noop());
    let dropper = {
        let mut leading = pin!(c.close(&first));
        assert!(leading.as_mut().poll(&mut cx).is_pending());
        let dropper = std::thread::spawn(move || drop(pump)); // chains to Workers' stop
        entered.recv().unwrap(); // that stop is running now
        dropper
    }; // the leader is dropped mid-way
    let second = Hooks::default();
    let mut taking_over = pin!(c.close(&second));
    assert!(taking_over.as_mut().poll(&mut cx).is_pending());
    assert!(
        second.log().is_empty(),
        "Workers stopped twice: {:?}",
        second.log()
    );
    release.send(()).unwrap();
    dropper.join().unwrap();
    drop(worker);
    let Poll::Ready(report) = taking_over.as_mut().poll(&mut cx) else {
        panic!("close not done after every stage emptied");
    };
    assert_eq!(report.stages.len(), 3);
    assert_eq!(first.0.log(), ["close stops Intake", "chain stops Workers"]);
    assert_eq!(second.log(), ["stop Background"]);
}
