//! What saying where leaked tasks await costs, on the failure path: a dump of a runtime holding
//! 100 idle tasks (each awaiting a channel), taken as a check takes it (a current-thread
//! runtime in place from inside its `block_on`), beside the count a check reads in every
//! snapshot (`num_alive_tasks`), measured in the same run on the same runtime; and a dump of a
//! multi-thread runtime (2 workers) from outside it, as a check on a plain thread takes it: a
//! helper thread waits until every worker is parked, asks for the dump, and hands it back.
//!
//! `RUSTFLAGS="--cfg tokio_unstable --cfg tokio_taskdump" CARGO_TARGET_DIR=target/tokio-unstable
//! cargo bench --features task-dumps --bench task_dump`; results and ratios in BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, Criterion};

#[cfg(all(
    tokio_unstable,
    tokio_taskdump,
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn dump(c: &mut Criterion) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio::runtime::{Builder, Handle, Runtime, RuntimeFlavor};

    const TASKS: usize = 100;

    /// `TASKS` tasks awaiting a channel whose senders are returned, once every task has been
    /// polled (a dump holds idle tasks only) and every worker is parked.
    fn plant(rt: &Runtime) -> Vec<tokio::sync::mpsc::Sender<()>> {
        let polled = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..TASKS)
            .map(|_| {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
                let polled = polled.clone();
                rt.spawn(async move {
                    polled.fetch_add(1, Ordering::Relaxed);
                    rx.recv().await
                });
                tx
            })
            .collect();
        // A current-thread runtime runs its tasks while its block_on yields; a multi-thread
        // one on its workers, which then park (a dump is asked for only then).
        let deadline = Instant::now() + Duration::from_secs(10);
        let metrics = rt.metrics();
        let parked = |w| metrics.worker_park_unpark_count(w) % 2 == 1;
        while polled.load(Ordering::Relaxed) < TASKS
            || (rt.handle().runtime_flavor() == RuntimeFlavor::MultiThread
                && !(0..metrics.num_workers()).all(parked))
        {
            assert!(Instant::now() < deadline, "tasks never idle");
            rt.block_on(tokio::task::yield_now());
        }
        senders
    }

    let mut g = c.benchmark_group("a dump of a runtime with 100 idle tasks");

    let current = Builder::new_current_thread().enable_all().build().unwrap();
    let _senders = plant(&current);
    g.bench_function("current_thread baseline: num_alive_tasks", |b| {
        b.iter(|| current.metrics().num_alive_tasks())
    });
    g.bench_function("current_thread: dump from inside block_on", |b| {
        b.iter(|| current.block_on(async { leakcheck::__private::dump_tasks(&Handle::current()) }))
    });

    // A multi-thread runtime is dumped once (a second dump can stop a worker for good): a new
    // runtime for each dump, built, planted and idle before the clock starts.
    let multi = || {
        let rt = Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let senders = plant(&rt);
        (rt, senders)
    };
    let (baseline, _senders) = multi();
    g.bench_function("multi_thread baseline: num_alive_tasks", |b| {
        b.iter(|| baseline.metrics().num_alive_tasks())
    });
    g.sample_size(20);
    g.bench_function("multi_thread: dump from a plain thread", |b| {
        b.iter_batched(
            multi,
            |(rt, senders)| {
                assert_eq!(leakcheck::__private::dump_tasks(rt.handle()), Ok(TASKS));
                (rt, senders)
            },
            criterion::BatchSize::PerIteration,
        )
    });

    g.finish();
}

/// Without tokio's task dumps (the cfgs above) there is nothing to measure.
#[cfg(not(all(
    tokio_unstable,
    tokio_taskdump,
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn dump(_: &mut Criterion) {
    eprintln!("task_dump: build with RUSTFLAGS=\"--cfg tokio_unstable --cfg tokio_taskdump\"");
}

criterion_group!(benches, dump);
criterion_main!(benches);
