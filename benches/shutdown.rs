//! What the watcher's staged close costs, beside baselines measured in the same run.
//!
//! - close latency of a running watcher (Watch mode, both cleanup routines running, each
//!   having ticked once) for 1, 2 and 8 workers: created untimed, `close()` timed until it
//!   returns, then an untimed wait until the process's thread count is back at its baseline
//!   (notify's thread is gone) so that no two notify instances are ever alive at once
//!   (`fs.inotify.max_user_instances`); the watcher's own share is the close minus the
//!   kernel's inotify teardown it reports (`ShutdownReport::unwatch`); one row closes a warm
//!   watcher right after its start, to tell the code's cost from the idle machine's, and one
//!   awaits `close()` in a task on the runtime instead of in `block_on`;
//! - the full create → close cycle, timed until notify's thread is gone;
//! - baselines: the same two background routines spawned tracked (`TaskTracker` +
//!   `CancellationToken`, cancelled and awaited) and untracked (plain spawn, aborted); the
//!   tracked pair stopped after each has ticked once (the runtime's hand-off floor: one stage of
//!   a close, after the same idle time as a watcher's close); a bare notify watcher created and
//!   dropped, timed until its thread is gone; the kernel's inotify teardown (`inotify_init1` +
//!   `inotify_add_watch` + `close`, `close` alone, `inotify_rm_watch` alone, both).
//!
//! Besides criterion's report, the bench prints per-iteration medians and the ratios to the
//! baselines (a Markdown table, pasted into BENCHMARKS.md).
//!
//! `cargo bench --bench shutdown` (about a minute and a half);
//! `cargo bench --bench shutdown -- --test` runs every bench once.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use notify::{RecursiveMode, Watcher as _};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use watcher::{processor, Mode, ProcessError, WatchService, Watcher};

/// How long an untimed wait for threads may take before the bench gives up.
const DEADLINE: Duration = Duration::from_secs(20);
/// The period of both background routines: short, so that each has run before close.
const ROUTINE_PERIOD: Duration = Duration::from_millis(5);

/// Live OS threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .count()
}

/// Waits (spinning, for precision when timed) until at most `target` threads are alive.
fn until_threads(target: usize) {
    let deadline = Instant::now() + DEADLINE;
    while threads() > target {
        assert!(
            Instant::now() < deadline,
            "threads still above {target} after {DEADLINE:?}: {} alive",
            threads()
        );
        std::thread::yield_now();
    }
}

/// Per-iteration samples of each bench, for the summary (criterion reports per-sample means).
static SAMPLES: Mutex<BTreeMap<String, Vec<Duration>>> = Mutex::new(BTreeMap::new());

fn record(id: &str, d: Duration) {
    SAMPLES
        .lock()
        .unwrap()
        .entry(id.to_string())
        .or_default()
        .push(d);
}

/// The runtime the watchers run on: current-thread by default (the smallest);
/// `SHUTDOWN_BENCH_RUNTIME=multi_thread` for a 2-worker one (cross-thread wake-ups cost
/// tens of µs per stage on 2 cores).
fn runtime() -> Runtime {
    let mut builder = match std::env::var("SHUTDOWN_BENCH_RUNTIME").as_deref() {
        Ok("multi_thread") => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    builder.enable_all().build().unwrap()
}

/// How a variant gets its events, and whether it fsyncs.
#[derive(Clone, Copy)]
struct Variant {
    shared: bool,
    fsync: bool,
    /// Closed right after start (its tasks each polled once) instead of after the routines
    /// have ticked: the runtime thread has not gone idle, so its caches are warm.
    warm: bool,
    /// `close()` is awaited in a task on the runtime rather than in `block_on`: on a
    /// multi-thread runtime the close then runs on a worker thread, beside the tasks it stops.
    from_task: bool,
}

impl Variant {
    fn name(self) -> String {
        let mut name = String::from(if self.shared {
            "shared service"
        } else {
            "own notify"
        });
        for (on, what) in [
            (self.fsync, ", fsync on"),
            (self.warm, ", warm"),
            (self.from_task, ", from a task"),
        ] {
            if on {
                name.push_str(what);
            }
        }
        name
    }
}

fn config(
    dir: &Path,
    workers: usize,
    v: Variant,
    service: Option<&WatchService>,
) -> watcher::Config {
    let b = Watcher::builder(dir)
        .mode(Mode::Watch)
        .workers(workers)
        .cleanup_every(ROUTINE_PERIOD)
        .file_state_cleanup_every(ROUTINE_PERIOD)
        .fsync(v.fsync)
        .processor(processor::from_fn(|_, _| async {
            Ok::<(), ProcessError>(())
        }));
    match (v.shared, service) {
        (true, Some(s)) => b.watch_service(s),
        (false, _) => b,
        (true, None) => unreachable!("a shared variant needs the service"),
    }
    .build()
    .unwrap()
}

/// A running watcher whose two background routines have each run at least once (so the
/// runtime thread has been idle for a routine period before close, as in real use), or, for a
/// `warm` variant, whose tasks have each been polled once.
async fn running(
    dir: &Path,
    workers: usize,
    v: Variant,
    service: Option<&WatchService>,
) -> Watcher {
    let w = Watcher::start(config(dir, workers, v, service))
        .await
        .expect("watcher starts");
    if v.warm {
        // Not synchronisation: on a current-thread runtime this lets every task run its first
        // poll, so that close does not time the intake's first scan. On a multi-thread runtime
        // the tasks run elsewhere and may not have been polled yet.
        tokio::task::yield_now().await;
        return w;
    }
    let ran = |m: &watcher::Metrics| m.cleanup_runs >= 1 && m.file_state_runs >= 1;
    assert!(w.wait_for(ran, DEADLINE).await, "{:?}", w.metrics());
    w
}

const OWN: Variant = Variant {
    shared: false,
    fsync: false,
    warm: false,
    from_task: false,
};
const OWN_FSYNC: Variant = Variant { fsync: true, ..OWN };
const SHARED: Variant = Variant {
    shared: true,
    ..OWN
};
const SHARED_WARM: Variant = Variant {
    warm: true,
    ..SHARED
};
const SHARED_FROM_TASK: Variant = Variant {
    from_task: true,
    ..SHARED
};

/// A runtime, a directory to watch, and a shared service created on that runtime (its close
/// awaits there).
fn fixture() -> (Runtime, tempfile::TempDir, WatchService) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let service = rt.block_on(async { WatchService::new().expect("watch service") });
    (rt, dir, service)
}

/// Few, short samples: each iteration waits for notify's thread to go.
fn short<M: criterion::measurement::Measurement>(g: &mut criterion::BenchmarkGroup<'_, M>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
}

/// Close latency: create untimed, time `close()`, wait untimed for notify's thread.
fn close_latency(c: &mut Criterion) {
    let (rt, dir, service) = fixture();
    let mut g = c.benchmark_group("close");
    short(&mut g);
    let variants = [
        (OWN, 1),
        (OWN, 2),
        (OWN, 8),
        (OWN_FSYNC, 2),
        (SHARED, 1),
        (SHARED, 2),
        (SHARED, 8),
        (SHARED_WARM, 2),
        (SHARED_FROM_TASK, 2),
    ];
    for (v, workers) in variants {
        let id = BenchmarkId::new(v.name(), format!("{workers} workers"));
        let key = format!("close/{}/{workers}", v.name());
        g.bench_with_input(id, &workers, |b, &workers| {
            b.iter_custom(|iters| {
                // Per call: criterion's analysis starts a thread pool after the first bench.
                let base = threads();
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let w = running(dir.path(), workers, v, Some(&service)).await;
                        let timed_close = async move {
                            let t = Instant::now();
                            let report = w.close().await;
                            (t.elapsed(), report, w)
                        };
                        let (d, report, w) = if v.from_task {
                            tokio::spawn(timed_close).await.expect("the close task")
                        } else {
                            timed_close.await
                        };
                        assert!(report.aborted.is_empty(), "{report}");
                        total += d;
                        record(&key, d);
                        for (stage, sd) in &report.stages {
                            record(&format!("{key} · {stage:?} stage"), *sd);
                        }
                        // The kernel's inotify teardown, timed by the watcher itself.
                        record(&format!("{key} · kernel teardown"), report.unwatch);
                        record(
                            &format!("{key} · own share"),
                            d.saturating_sub(report.unwatch),
                        );
                        drop(w);
                        until_threads(base);
                    }
                    total
                })
            })
        });
    }
    g.finish();
    rt.block_on(service.close());
}

/// The full cycle: start, then close, timed until notify's thread is gone.
fn full_cycle(c: &mut Criterion) {
    let (rt, dir, service) = fixture();
    let mut g = c.benchmark_group("create → close");
    short(&mut g);
    for v in [OWN, OWN_FSYNC, SHARED] {
        let name = format!("{}, 2 workers", v.name());
        let key = format!("cycle/{}", v.name());
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let base = threads();
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let w = Watcher::start(config(dir.path(), 2, v, Some(&service)))
                            .await
                            .unwrap();
                        let report = w.close().await;
                        drop(w);
                        until_threads(base);
                        let d = t.elapsed();
                        assert!(report.aborted.is_empty(), "{report}");
                        total += d;
                        record(&key, d);
                    }
                    total
                })
            })
        });
    }
    g.finish();
    rt.block_on(service.close());
}

/// The watcher's two routines, as plain interval loops; `ticked` hears of the first tick.
async fn routine(
    period: Duration,
    token: Option<CancellationToken>,
    ticked: Option<tokio::sync::mpsc::Sender<()>>,
) {
    let mut iv = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticked = ticked;
    let mut tick = async || {
        iv.tick().await;
        if let Some(tx) = ticked.take() {
            let _ = tx.send(()).await;
        }
    };
    match token {
        Some(token) => loop {
            tokio::select! {
                biased;
                _ = token.cancelled() => break,
                _ = tick() => {}
            }
        },
        None => loop {
            tick().await;
        },
    }
}

/// `iters` times: two tracked routines spawned, cancelled and awaited. Timed from the spawn,
/// or, `after_tick`, from the cancel once each routine has ticked (the idle before a close).
async fn tracked_pairs(iters: u64, after_tick: bool) -> Duration {
    let key = if after_tick {
        "baseline/tracked after idle"
    } else {
        "baseline/tracked"
    };
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        // Untimed in both: only the after-tick variant uses it.
        let (ticked, mut ticks) = tokio::sync::mpsc::channel(2);
        let mut t = Instant::now();
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        for _ in 0..2 {
            let ticked = after_tick.then(|| ticked.clone());
            tracker.spawn(routine(ROUTINE_PERIOD, Some(token.clone()), ticked));
        }
        if after_tick {
            for _ in 0..2 {
                ticks.recv().await.expect("a routine ticks");
            }
            t = Instant::now();
        }
        token.cancel();
        tracker.close();
        tracker.wait().await;
        let d = t.elapsed();
        total += d;
        record(key, d);
    }
    total
}

fn baselines(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("baseline");
    short(&mut g);

    // The price of tracking: spawn both routines and stop them, tracked (cancel, await) or not
    // (abort, and never know when they are gone).
    g.bench_function("2 routines tracked: spawn, cancel, await", |b| {
        b.iter_custom(|iters| rt.block_on(tracked_pairs(iters, false)))
    });
    // One stage of a close on this runtime, with nothing of the watcher in it: after the same
    // idle time as before a watcher's close (each routine has ticked once), cancel and await.
    g.bench_function(
        "2 routines tracked, after one tick each: cancel, await",
        |b| b.iter_custom(|iters| rt.block_on(tracked_pairs(iters, true))),
    );
    g.bench_function("2 routines untracked: spawn, abort", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let metrics = tokio::runtime::Handle::current().metrics();
                let alive = metrics.num_alive_tasks();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let a = tokio::spawn(routine(ROUTINE_PERIOD, None, None));
                    let b = tokio::spawn(routine(ROUTINE_PERIOD, None, None));
                    a.abort();
                    b.abort();
                    let d = t.elapsed();
                    total += d;
                    record("baseline/untracked", d);
                    // Untimed: let the aborted tasks go before the next iteration.
                    let deadline = Instant::now() + DEADLINE;
                    while metrics.num_alive_tasks() > alive {
                        assert!(Instant::now() < deadline, "aborted tasks linger");
                        tokio::task::yield_now().await;
                    }
                }
                total
            })
        })
    });

    g.bench_function("bare notify: create, watch, drop, thread gone", |b| {
        b.iter_custom(|iters| {
            let base = threads();
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let mut w =
                    notify::recommended_watcher(|_: notify::Result<notify::Event>| {}).unwrap();
                w.watch(dir.path(), RecursiveMode::NonRecursive).unwrap();
                drop(w);
                until_threads(base);
                let d = t.elapsed();
                total += d;
                record("baseline/notify", d);
            }
            total
        })
    });

    let path = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
    let mask = libc::IN_ATTRIB
        | libc::IN_CREATE
        | libc::IN_OPEN
        | libc::IN_DELETE
        | libc::IN_CLOSE_WRITE
        | libc::IN_MODIFY
        | libc::IN_MOVED_FROM
        | libc::IN_MOVED_TO
        | libc::IN_DELETE_SELF
        | libc::IN_MOVE_SELF;
    let inotify = |iters: u64, what: &str| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let t_all = Instant::now();
            // SAFETY: plain syscalls on an fd this loop owns and closes exactly once.
            let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
            assert!(
                fd >= 0,
                "inotify_init1: {}",
                std::io::Error::last_os_error()
            );
            let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) };
            assert!(
                wd >= 0,
                "inotify_add_watch: {}",
                std::io::Error::last_os_error()
            );
            let t_close = Instant::now();
            if what != "close" && what != "all" {
                assert_eq!(unsafe { libc::inotify_rm_watch(fd, wd) }, 0);
            }
            let t_rm = t_close.elapsed();
            assert_eq!(unsafe { libc::close(fd) }, 0);
            let d = match what {
                "all" => t_all.elapsed(),
                "rm_watch" => t_rm,
                _ => t_close.elapsed(),
            };
            total += d;
            record(&format!("baseline/inotify {what}"), d);
        }
        total
    };
    g.bench_function("inotify: init1 + add_watch + close", |b| {
        b.iter_custom(|iters| inotify(iters, "all"))
    });
    g.bench_function("inotify: close with 1 watch", |b| {
        b.iter_custom(|iters| inotify(iters, "close"))
    });
    g.bench_function("inotify: rm_watch (a WatchService's unsubscribe)", |b| {
        b.iter_custom(|iters| inotify(iters, "rm_watch"))
    });
    g.bench_function("inotify: rm_watch + close", |b| {
        b.iter_custom(|iters| inotify(iters, "rm+close"))
    });
    g.finish();
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Per-iteration medians, and the ratios the targets are stated in (Markdown).
fn summary() {
    let samples = SAMPLES.lock().unwrap();
    let med = |k: &str| samples.get(k).map(|v| median(v));
    let ms = |d: Duration| d.as_secs_f64();
    println!("\n| bench | iterations | median per iteration |\n|---|---|---|");
    for (k, v) in samples.iter() {
        println!("| {k} | {} | {} |", v.len(), fmt(median(v)));
    }
    println!();
    // The watcher's own share of a close: everything but the kernel's inotify teardown, which
    // the watcher times itself (`ShutdownReport::unwatch`), per iteration.
    let floor = med("baseline/tracked after idle");
    for (k, _) in samples.iter() {
        if !k.starts_with("close/") || k.contains('·') {
            continue;
        }
        let close = med(k).unwrap();
        let own = med(&format!("{k} · own share")).unwrap();
        let kernel = med(&format!("{k} · kernel teardown")).unwrap();
        let floor = floor.map_or(String::new(), |f| {
            format!(
                "; one stage hand-off with nothing of the watcher in it: {}",
                fmt(f)
            )
        });
        println!(
            "- {k}: {} (kernel inotify teardown {}); own share {} (target ≤ 50 µs: {}){floor}",
            fmt(close),
            fmt(kernel),
            fmt(own),
            verdict(own <= Duration::from_micros(50))
        );
    }
    let notify = med("baseline/notify");
    for (k, _) in samples.iter().filter(|(k, _)| k.starts_with("cycle/")) {
        let cycle = med(k).unwrap();
        if let Some(n) = notify {
            let r = ms(cycle) / ms(n);
            let target = if k.contains("shared") {
                format!(
                    "target ≤ 200 µs: {}",
                    verdict(cycle <= Duration::from_micros(200))
                )
            } else {
                format!("target ≤ 1.2 ×: {}", verdict(r <= 1.2))
            };
            println!(
                "- {k}: {} = {r:.2} × bare notify create + drop {} ({target})",
                fmt(cycle),
                fmt(n)
            );
        }
    }
    if let (Some(t), Some(u)) = (med("baseline/tracked"), med("baseline/untracked")) {
        println!(
            "- tracking: tracked {} vs untracked {} ({:.2} ×)",
            fmt(t),
            fmt(u),
            ms(t) / ms(u)
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    close_latency(&mut c);
    full_cycle(&mut c);
    baselines(&mut c);
    c.final_summary();
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        summary();
    }
}
