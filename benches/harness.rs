//! What a check costs: a clean single-cycle check, one snapshot with 1000 threads alive, and a
//! clean multi-cycle check of a component with one-time lazy init, each beside a naive
//! baseline measured in the same run (std `read_dir` over `/proc/self`, names read for all).
//!
//! `cargo bench --bench harness`; results and ratios in BENCHMARKS.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use leakcheck::{Guard, LeakCheck};

/// `n` named threads parked until dropped.
struct Parked {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Parked {
    fn new(n: usize, name: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..n)
            .map(|_| {
                let stop = stop.clone();
                thread::Builder::new()
                    .name(name.into())
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        while !stop.load(Ordering::Acquire) {
                            thread::park();
                        }
                    })
                    .unwrap()
            })
            .collect();
        Parked { stop, handles }
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for h in self.handles.drain(..) {
            h.thread().unpark();
            h.join().unwrap();
        }
    }
}

/// The naive snapshot: std `read_dir` counts of both directories.
fn naive_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
        + std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The naive snapshot with identities: every thread name and fd target.
fn naive_named() -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        n += std::fs::read_to_string(e.path().join("comm")).map_or(0, |s| s.len());
    }
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        n += std::fs::read_link(e.path()).map_or(0, |p| p.as_os_str().len());
    }
    n
}

fn clean_check(c: &mut Criterion) {
    // About 10 threads alive: the bench's main thread plus 9.
    let _alive = Parked::new(9, "bench-idle");
    let mut g = c.benchmark_group("clean single-cycle check, ~10 threads");
    g.bench_function("LeakCheck::run(empty body)", |b| {
        let check = LeakCheck::new();
        b.iter(|| check.run(|| ()).unwrap())
    });
    g.bench_function("baseline: 2 naive counts (std read_dir)", |b| {
        b.iter(|| naive_count() + naive_count())
    });
    g.bench_function("baseline: 2 naive snapshots with all names", |b| {
        b.iter(|| naive_named() + naive_named())
    });
    g.finish();
}

fn thousand_threads(c: &mut Criterion) {
    let _alive = Parked::new(1000, "bench-many");
    let mut g = c.benchmark_group("one snapshot, 1000 threads");
    // Guard::new takes exactly one snapshot; its check happens untimed.
    g.bench_function("Guard::new (one snapshot)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let guard = Guard::new();
                total += t.elapsed();
                guard.check().unwrap();
            }
            total
        })
    });
    g.bench_function("baseline: naive count (std read_dir)", |b| {
        b.iter(naive_count)
    });
    g.bench_function("baseline: naive snapshot with all names", |b| {
        b.iter(naive_named)
    });
    g.finish();
}

/// A component whose first use starts a pool that lives on: the lazy init warm-up absorbs.
struct LazyComponent {
    pool: Option<Parked>,
}

impl LazyComponent {
    fn use_once(&mut self) {
        self.pool.get_or_insert_with(|| Parked::new(3, "lazy-pool"));
        thread::spawn(|| ()).join().unwrap();
    }
}

fn lazy_init(c: &mut Criterion) {
    let mut g = c.benchmark_group("clean 10-cycle check of a lazily initialised component");
    g.sample_size(20);
    g.bench_function("default budget", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut component = LazyComponent { pool: None };
                let check = LeakCheck::new().cycles(10);
                let t = Instant::now();
                let report = check.run(|| component.use_once()).unwrap();
                total += t.elapsed();
                assert!(report.is_clean());
                drop(component); // untimed: the pool's threads go before the next sample
                Guard::new().check().unwrap();
            }
            total
        })
    });
    g.finish();
}

/// `n` child processes that sleep until dropped (killed and reaped by the bench, untimed).
struct Children(Vec<std::process::Child>);

impl Children {
    fn new(n: usize) -> Self {
        Children(
            (0..n)
                .map(|_| {
                    std::process::Command::new("sleep")
                        .arg("1000")
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn children_snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("one snapshot (threads, fds, children)");
    for n in [0, 50] {
        let _children = Children::new(n);
        g.bench_function(format!("Guard::new, {n} children"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let guard = Guard::new();
                    total += t.elapsed();
                    guard.check().unwrap();
                }
                total
            })
        });
    }
    g.bench_function("baseline: naive count (std read_dir)", |b| {
        b.iter(naive_count)
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = clean_check, thousand_threads, lazy_init, children_snapshot
}
criterion_main!(benches);
