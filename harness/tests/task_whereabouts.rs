//! Where leaked tasks were spawned and where they are stuck: a task spawned with
//! `Handle::spawn` from a plain thread is named by its spawn site on both flavours, whether or
//! not a task ended on the runtime before; with task dumps (feature `task-dumps` under
//! `--cfg tokio_unstable --cfg tokio_taskdump`) each leaked task says where it awaits, and a
//! runtime with a worker blocked or busy is not dumped (the report says so) instead of hanging
//! the check or the runtime's shutdown.
//!
//! `RUSTFLAGS="--cfg tokio_unstable --cfg tokio_taskdump" cargo test -p leakcheck
//! --features tokio,task-dumps --test task_whereabouts`
#![cfg(tokio_unstable)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use leakcheck::{LeakCheck, Resource};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc;

/// The line of `serve`'s receive, as it ran.
static RECV_LINE: AtomicU32 = AtomicU32::new(0);

/// A task's body: waits for one message (or for every sender to go).
async fn serve(mut rx: mpsc::Receiver<()>) {
    RECV_LINE.store(line!() + 1, Ordering::Relaxed);
    rx.recv().await;
}

fn runtime(multi: bool) -> Runtime {
    let mut builder = if multi {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    leakcheck::instrument(&mut builder)
        .enable_all()
        .build()
        .unwrap()
}

/// What a report says after a spawn site: where the task awaits in `serve`, where this build
/// takes task dumps; nothing elsewhere.
fn awaiting_in_serve() -> String {
    if cfg!(task_dumps) {
        format!(
            ", awaiting at {}:{} in tokio::sync::mpsc::Receiver::recv",
            file!(),
            RECV_LINE.load(Ordering::Relaxed)
        )
    } else {
        String::new()
    }
}

/// A check of `rt` in its own block_on whose body spawns four `serve` tasks at one line, from
/// the runtime (`outside` false) or from a plain thread with `Handle::spawn`; their senders are
/// dropped (`clean`) or kept. Returns the check's result and the spawn line.
fn check(
    rt: &Runtime,
    outside: bool,
    clean: bool,
) -> (Result<leakcheck::Report, leakcheck::Leak>, u32) {
    let mut senders = Vec::new();
    let mut line = 0;
    let result = rt.block_on(async {
        LeakCheck::new()
            .tasks(&Handle::current())
            .settle(Duration::from_millis(100))
            .run_async(|| {
                let mut txs = Vec::new();
                let mut rxs = Vec::new();
                for _ in 0..4 {
                    let (tx, rx) = mpsc::channel::<()>(1);
                    txs.push(tx);
                    rxs.push(rx);
                }
                if outside {
                    let handle = Handle::current();
                    line = std::thread::spawn(move || {
                        let line = line!() + 2;
                        for rx in rxs {
                            handle.spawn(serve(rx));
                        }
                        line
                    })
                    .join()
                    .unwrap();
                } else {
                    line = line!() + 2;
                    for rx in rxs {
                        tokio::spawn(serve(rx));
                    }
                }
                if !clean {
                    senders.extend(txs);
                }
                async {}
            })
            .await
    });
    (result, line)
}

fn planted(multi: bool, outside: bool, ended_before: bool) {
    let rt = runtime(multi);
    if ended_before {
        rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
        // tokio wakes the joiner before it counts the task gone: wait for that, so that the
        // baseline does not hold it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rt.metrics().num_alive_tasks() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the ended task stays alive"
            );
            std::thread::yield_now();
        }
    }
    let (result, line) = check(&rt, outside, false);
    let leak = result.unwrap_err();
    let report = leak.report();
    assert_eq!(report.leaked(Resource::Tasks), 4, "{report}");
    let label = format!("spawned at {}:{line}{}", file!(), awaiting_in_serve());
    assert_eq!(
        report.items(Resource::Tasks),
        &[(label.clone(), 4)],
        "{report}"
    );
    assert!(
        report.to_string().contains(&format!("×4   {label}")),
        "{report}"
    );
    // Where the await point is known, a channel's receive is a wait no timer ends: no advice
    // to raise the settle budget (elsewhere the budget ran out on tasks that might be slow).
    assert_eq!(
        report.to_string().contains("settle budget"),
        !cfg!(task_dumps),
        "{report}"
    );
}

/// A task's body that waits on a timer for ten minutes.
async fn nap() {
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// The control for the advice: a task that awaits a timer may end of itself, so its report
/// keeps the note that the settle budget ran out.
#[leakcheck::isolated]
fn a_task_awaiting_a_timer_keeps_the_note_on_the_settle_budget() {
    let rt = runtime(false);
    let leak = rt.block_on(async {
        LeakCheck::new()
            .tasks(&Handle::current())
            .settle(Duration::from_millis(100))
            .run_async(|| async {
                tokio::spawn(nap());
            })
            .await
            .unwrap_err()
    });
    let text = leak.to_string();
    assert_eq!(leak.report().leaked(Resource::Tasks), 1, "{text}");
    assert!(text.contains("waited the whole settle budget"), "{text}");
}

fn clean(multi: bool, outside: bool) {
    let rt = runtime(multi);
    let (result, _) = check(&rt, outside, true);
    let report = result.unwrap();
    assert_eq!(report.leaked(Resource::Tasks), 0, "{report}");
}

#[leakcheck::isolated]
fn tasks_awaiting_a_channel_on_a_current_thread_runtime_name_both_lines() {
    planted(false, false, false);
}

#[leakcheck::isolated]
fn tasks_awaiting_a_channel_on_a_multi_thread_runtime_name_both_lines() {
    planted(true, false, false);
}

#[leakcheck::isolated]
fn tasks_that_end_on_either_flavour_pass() {
    clean(false, false);
    clean(true, false);
}

#[leakcheck::isolated]
fn handle_spawn_from_a_plain_thread_on_a_current_thread_runtime_is_named() {
    planted(false, true, false);
}

#[leakcheck::isolated]
fn handle_spawn_from_a_plain_thread_on_a_current_thread_runtime_is_named_after_a_task_ended() {
    planted(false, true, true);
}

#[leakcheck::isolated]
fn handle_spawn_from_a_plain_thread_on_a_multi_thread_runtime_is_named() {
    planted(true, true, false);
}

#[leakcheck::isolated]
fn handle_spawn_from_a_plain_thread_on_a_multi_thread_runtime_is_named_after_a_task_ended() {
    planted(true, true, true);
}

#[leakcheck::isolated]
fn tasks_spawned_from_a_plain_thread_that_end_pass() {
    clean(false, true);
    clean(true, true);
}

/// Why a multi-thread runtime with a worker that is not idle is not dumped.
#[cfg(task_dumps)]
const NOT_IDLE: &str = "await point not taken: the runtime's workers were not all idle within \
                        1 s (a dump needs every worker parked)";

/// Why a multi-thread runtime is not dumped a second time.
#[cfg(task_dumps)]
const ONCE: &str = "await point not taken: this runtime was dumped before, and a second dump \
                    of a multi-thread runtime can stop one of its workers for good";

/// A multi-thread runtime whose two workers are both blocked in a synchronous receive, beside
/// one task awaiting a channel: the check does not hang, and says why no await point is shown.
#[cfg(task_dumps)]
fn blocked_runtime(release_in_body: bool) -> Result<leakcheck::Report, leakcheck::Leak> {
    use std::sync::{mpsc as std_mpsc, Arc, Barrier};
    let rt = runtime(true);
    let handle = rt.handle().clone();
    let mut keep = None;
    let mut unblock = Vec::new();
    let mut lines = (0, 0);
    let started = std::time::Instant::now();
    let result = LeakCheck::new()
        .tasks(rt.handle())
        .settle(Duration::from_millis(100))
        .run(|| {
            let (tx, rx) = mpsc::channel::<()>(1);
            let (polled_tx, polled_rx) = std_mpsc::channel();
            lines.0 = line!() + 1;
            handle.spawn(async move {
                polled_tx.send(()).unwrap();
                serve(rx).await
            });
            polled_rx.recv().unwrap();
            // Both workers block: each waits at the barrier, then in a std receive.
            let barrier = Arc::new(Barrier::new(3));
            lines.1 = line!() + 5;
            for _ in 0..2 {
                let (go_tx, go_rx) = std_mpsc::channel::<()>();
                unblock.push(go_tx);
                let barrier = barrier.clone();
                handle.spawn(async move {
                    barrier.wait();
                    go_rx.recv().ok();
                });
            }
            barrier.wait();
            if release_in_body {
                unblock.clear();
                drop(tx);
            } else {
                keep = Some(tx);
            }
        });
    let took = started.elapsed();
    if let Err(leak) = &result {
        let report = leak.report();
        let why = NOT_IDLE;
        assert_eq!(
            report.items(Resource::Tasks),
            &[
                (format!("spawned at {}:{}, {why}", file!(), lines.1), 2),
                (format!("spawned at {}:{}, {why}", file!(), lines.0), 1),
            ],
            "{report}"
        );
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    // Unblocked, the runtime answers a dump (the check asked for none: its workers were
    // blocked).
    unblock.clear();
    drop(keep);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match leakcheck::__private::dump_tasks(rt.handle()) {
            Ok(_) => break,
            Err(_) if std::time::Instant::now() < deadline => std::thread::yield_now(),
            Err(why) => panic!("the runtime never answered again: {why}"),
        }
    }
    result
}

#[cfg(task_dumps)]
#[leakcheck::isolated]
fn a_runtime_whose_workers_are_all_blocked_is_reported_without_hanging() {
    let leak = blocked_runtime(false).unwrap_err();
    assert_eq!(
        leak.report().leaked(Resource::Tasks),
        3,
        "{}",
        leak.report()
    );
}

#[cfg(task_dumps)]
#[leakcheck::isolated]
fn a_runtime_whose_workers_were_blocked_and_released_passes() {
    let report = blocked_runtime(true).unwrap();
    assert_eq!(report.leaked(Resource::Tasks), 0, "{report}");
}

/// A check running in a task on a worker of the multi-thread runtime it dumps: the dump waits
/// for every worker, this one too, which the check lets go of while it waits.
#[cfg(task_dumps)]
#[leakcheck::isolated]
fn a_check_on_a_worker_of_the_runtime_it_dumps_names_the_await_point() {
    let rt = runtime(true);
    let (leak, line) = rt.block_on(async {
        tokio::spawn(async {
            let mut keep = None;
            let mut line = 0;
            let leak = LeakCheck::new()
                .tasks(&Handle::current())
                .settle(Duration::from_millis(100))
                .run_async(|| {
                    let (tx, rx) = mpsc::channel::<()>(1);
                    keep = Some(tx);
                    line = line!() + 1;
                    tokio::spawn(serve(rx));
                    async {}
                })
                .await
                .unwrap_err();
            (leak, line)
        })
        .await
        .unwrap()
    });
    let label = format!("spawned at {}:{line}{}", file!(), awaiting_in_serve());
    assert_eq!(
        leak.report().items(Resource::Tasks),
        &[(label, 1)],
        "{leak}"
    );
}

/// A current-thread runtime checked from outside (no thread drives it): tokio dumps it only
/// from inside, and the report says so.
#[cfg(task_dumps)]
#[leakcheck::isolated]
fn a_current_thread_runtime_checked_from_outside_says_why_no_await_point() {
    let rt = runtime(false);
    // The runtime has run a task inside, so its hooks know it.
    rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    let mut keep = None;
    let mut line = 0;
    let leak = LeakCheck::new()
        .tasks(rt.handle())
        .settle(Duration::from_millis(50))
        .run(|| {
            let (tx, rx) = mpsc::channel::<()>(1);
            keep = Some(tx);
            line = line!() + 1;
            rt.spawn(serve(rx));
        })
        .unwrap_err();
    let label = format!(
        "spawned at {}:{line}, await point not taken: a current-thread runtime is dumped only \
         from the thread that drives it",
        file!()
    );
    assert_eq!(
        leak.report().items(Resource::Tasks),
        &[(label, 1)],
        "{leak}"
    );
}

/// One worker blocked in a synchronous receive, the other idle: the check says the runtime did
/// not answer, and leaves it as it was: once released, it answers a dump and shuts down.
#[cfg(task_dumps)]
#[leakcheck::isolated]
fn a_runtime_with_one_blocked_worker_is_left_able_to_shut_down() {
    use std::sync::mpsc as std_mpsc;
    let rt = runtime(true);
    let (go_tx, go_rx) = std_mpsc::channel::<()>();
    let (blocked_tx, blocked_rx) = std_mpsc::channel();
    rt.spawn(async move {
        blocked_tx.send(()).unwrap();
        go_rx.recv().ok();
    });
    blocked_rx.recv().unwrap();
    let leak = LeakCheck::new()
        .tasks(rt.handle())
        .settle(Duration::from_millis(50))
        .run(|| ())
        .map(|_| ());
    // The blocker was spawned before the baseline: the check passes and takes no dump; ask
    // for one directly.
    assert!(leak.is_ok());
    let why = leakcheck::__private::dump_tasks(rt.handle()).unwrap_err();
    assert_eq!(why, NOT_IDLE);
    drop(go_tx);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while leakcheck::__private::dump_tasks(rt.handle()).is_err() {
        assert!(std::time::Instant::now() < deadline, "never answered");
        std::thread::yield_now();
    }
    let (done_tx, done_rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        drop(rt);
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the runtime's drop hangs");
}

/// One worker busy with blocking polls (20 ms each, yielding between them), the other idle.
/// tokio's dump waits for every worker at a barrier whose 250 ms timeout leaves a timed-out
/// arrival counted: asked now, the idle worker would arrive and time out, the busy one arrive
/// at its next maintenance (every 61 ticks, over a second here) and wait for ever at the end
/// of the trace, and the runtime's drop with it. The check takes no dump of a runtime whose
/// workers are not all idle, says so, and leaves it able to shut down.
#[cfg(task_dumps)]
#[leakcheck::isolated]
fn a_runtime_with_a_busy_worker_is_left_able_to_shut_down() {
    use std::sync::atomic::AtomicBool;
    use std::sync::{mpsc as std_mpsc, Arc};
    let rt = runtime(true);
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = std_mpsc::channel();
    rt.spawn({
        let stop = stop.clone();
        async move {
            started_tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                // The workload: a poll that blocks its worker for a while, as CPU-bound work
                // or a synchronous call in async code does.
                std::thread::sleep(Duration::from_millis(20));
                tokio::task::yield_now().await;
            }
        }
    });
    started_rx.recv().unwrap();
    let why = leakcheck::__private::dump_tasks(rt.handle()).unwrap_err();
    assert_eq!(why, NOT_IDLE);
    stop.store(true, Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while leakcheck::__private::dump_tasks(rt.handle()).is_err() {
        assert!(std::time::Instant::now() < deadline, "never answered");
        std::thread::yield_now();
    }
    // Dumped once, the runtime is not dumped again: a second dump is what leaves a worker
    // waiting for good (measured without this rule: the second dump of an idle two-worker
    // runtime answered after 256 ms, and its workers were never all idle again).
    assert_eq!(
        leakcheck::__private::dump_tasks(rt.handle()).unwrap_err(),
        ONCE
    );
    let (done_tx, done_rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        drop(rt);
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the runtime's drop hangs");
}
