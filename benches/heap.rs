//! What counting the heap costs: allocation + free through `CountingAlloc` (this binary's
//! global allocator) against `System` called directly, on 1 and on 2 threads, in the same run;
//! a clean check with `.heap()` against the same check without it; and a cycle of the
//! recording pass a heap leak triggers (allocation sites recorded) against the same cycle
//! counted only.
//!
//! `cargo bench --bench heap`; results and ratios in BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use leakcheck::{CountingAlloc, LeakCheck};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new(System);

/// Mixed sizes, a few blocks live at a time: closer to real code than one size in a loop.
const SIZES: [usize; 8] = [16, 40, 64, 100, 256, 24, 1024, 48];
const LIVE: usize = 4;

/// A second `CountingAlloc`, called directly: the same counting code and the same call depth
/// as `System` called directly (the global allocator adds the `__rust_alloc` shims to any
/// allocator, counting or not). It counts into the same per-thread counters.
static DIRECT: CountingAlloc = CountingAlloc::new(System);

/// Calls the global allocator (here `ALLOC`, the counting one) through `std::alloc`.
struct Global;

// SAFETY: forwards to the global allocator.
unsafe impl GlobalAlloc for Global {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { std::alloc::alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded.
        unsafe { std::alloc::dealloc(p, l) }
    }
}

/// `n` allocations and frees of mixed sizes through `a`.
#[inline(always)]
fn pairs<A: GlobalAlloc>(n: u64, a: &A) {
    let mut live: [(*mut u8, Layout); LIVE] = [(std::ptr::null_mut(), Layout::new::<u8>()); LIVE];
    for i in 0..n as usize {
        let slot = i % LIVE;
        let (p, layout) = live[slot];
        if !p.is_null() {
            // SAFETY: allocated below with this layout, freed once.
            unsafe { a.dealloc(p, layout) };
        }
        let layout = Layout::from_size_align(SIZES[i % SIZES.len()], 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        live[slot] = (black_box(p), layout);
    }
    for (p, layout) in live {
        if !p.is_null() {
            // SAFETY: as above.
            unsafe { a.dealloc(p, layout) };
        }
    }
}

/// Time per alloc + free pair with `threads` threads each doing `iters` pairs at once.
fn on_threads<A: GlobalAlloc + Sync>(threads: usize, iters: u64, a: &A) -> Duration {
    let start = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    pairs(iters, a);
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        for h in handles {
            h.join().unwrap();
        }
        t.elapsed()
    })
}

fn alloc_free(c: &mut Criterion) {
    for threads in [1, 2] {
        let mut g = c.benchmark_group(format!("alloc + free, mixed sizes, {threads} thread(s)"));
        g.bench_function("CountingAlloc<System>", |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &DIRECT))
        });
        g.bench_function("baseline: System", |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &System))
        });
        g.bench_function(
            "CountingAlloc<System> as the global allocator (std::alloc)",
            |b| b.iter_custom(|iters| on_threads(threads, iters, &Global)),
        );
        g.finish();
    }
}

fn clean_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("clean check, nothing lingering");
    g.bench_function("1 cycle, .heap()", |b| {
        let check = LeakCheck::new().heap();
        b.iter(|| assert_eq!(check.run(|| ()).unwrap().snapshots(), 2))
    });
    g.bench_function("baseline: 1 cycle, without .heap()", |b| {
        let check = LeakCheck::new();
        b.iter(|| assert_eq!(check.run(|| ()).unwrap().snapshots(), 2))
    });
    g.bench_function("10 cycles, .heap()", |b| {
        let check = LeakCheck::new().heap().cycles(10);
        b.iter(|| check.run(|| drop(black_box(vec![0u8; 64]))).unwrap())
    });
    g.bench_function("baseline: 10 cycles, without .heap()", |b| {
        let check = LeakCheck::new().cycles(10);
        b.iter(|| check.run(|| drop(black_box(vec![0u8; 64]))).unwrap())
    });
    g.finish();
}

/// A cycle of a small component: a map of strings and buffers made and dropped, and one block
/// that stays (each kept `Box` is a block of its own, which is the point).
#[allow(clippy::vec_box)]
fn cycle(kept: &mut Vec<Box<[u8; 32]>>) {
    use std::collections::HashMap;
    let mut m: HashMap<String, Vec<u8>> = HashMap::new();
    for i in 0..3 {
        m.insert(format!("key-{i}"), vec![1; 100]);
    }
    black_box(&m);
    kept.push(Box::new([0; 32]));
}

fn sites_pass(c: &mut Criterion) {
    let mut g = c.benchmark_group("heap sites pass, per cycle");
    g.bench_function("recording cycle (sites on)", |b| {
        b.iter_custom(|iters| {
            // Passes of at most 4096 cycles, so that the blocks that stay fit in the site
            // table (8192) as in a check's pass; only the cycles are timed.
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(4096);
                left -= n;
                let mut kept = Vec::with_capacity(n as usize);
                let (t, stayed) = leakcheck::__private::record_while(|| {
                    let t = Instant::now();
                    for _ in 0..n {
                        cycle(&mut kept);
                    }
                    t.elapsed()
                });
                assert!(stayed as u64 >= n, "{stayed} of {n} recorded");
                elapsed += t;
            }
            elapsed
        })
    });
    g.bench_function("baseline: counted cycle (sites off)", |b| {
        b.iter_custom(|iters| {
            let mut kept = Vec::with_capacity(iters as usize);
            let t = Instant::now();
            for _ in 0..iters {
                cycle(&mut kept);
            }
            t.elapsed()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = alloc_free, clean_check, sites_pass
}
criterion_main!(benches);
