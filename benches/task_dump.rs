//! What saying where leaked tasks await costs, on the failure path: a dump of a runtime holding
//! 100 idle tasks (each awaiting a channel), taken as a check takes it (a current-thread
//! runtime in place from inside its `block_on`), beside the count a check reads in every
//! snapshot (`num_alive_tasks`), measured in the same run on the same runtime. A multi-thread
//! runtime is not measured in a loop: tokio's dump barrier can leave a worker waiting for ever when a worker arrives more than 250 ms late (see `origin/dump.rs`), which a
//! loaded machine makes likely over many dumps.
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
    use tokio::runtime::{Builder, Handle, Runtime};

    const TASKS: usize = 100;

    /// `TASKS` tasks awaiting a channel whose senders are returned.
    fn plant(rt: &Runtime) -> Vec<tokio::sync::mpsc::Sender<()>> {
        let senders: Vec<_> = (0..TASKS)
            .map(|_| {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
                rt.spawn(async move { rx.recv().await });
                tx
            })
            .collect();
        // A dump holds idle tasks only: let the runtime run them (a current-thread runtime
        // runs its tasks while its block_on yields) until the dump holds them all.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while rt.block_on(async {
            tokio::task::yield_now().await;
            leakcheck::__private::dump_tasks(&Handle::current())
        }) != Ok(TASKS)
        {
            assert!(std::time::Instant::now() < deadline, "tasks never idle");
            std::thread::yield_now();
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
