//! The heap verdict on planted heap leaks (negative controls, counted exactly) and on clean
//! components whose heap is noisy: churn, a bounded cache, frees on another thread or later on
//! a background thread, batch frees, a runtime per cycle.
//!
//! The heap is counted process-wide, so this binary installs `CountingAlloc` and each test runs
//! in a process of its own (`#[leakcheck::isolated]`).
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use leakcheck::{CountingAlloc, LeakCheck, Resource, Verdict};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new(std::alloc::System);

const BUDGET: Duration = Duration::from_millis(150);

fn check(cycles: usize) -> LeakCheck {
    LeakCheck::new().heap().cycles(cycles).settle(BUDGET)
}

fn leaked_heap(check: LeakCheck, body: impl FnMut()) -> leakcheck::Report {
    match check.run(body) {
        Ok(report) => panic!("expected a heap leak:\n{report}"),
        Err(leak) => leak.report().clone(),
    }
}

// ---- negative controls ------------------------------------------------------------------

#[leakcheck::isolated]
fn box_leak_per_cycle_is_counted_exactly() {
    let report = leaked_heap(check(20), || {
        Box::leak(Box::new([7u8; 480]));
    });
    assert_eq!(report.leaked(Resource::Heap), 20, "{report}");
    assert_eq!(report.verdict(Resource::Heap), Some(&Verdict::Leaking));
    assert_eq!(report.bytes(Resource::Heap), Some(20 * 480), "{report}");
    // Only the heap leaked.
    assert_eq!(report.leaked(Resource::Threads), 0, "{report}");
    let text = report.to_string();
    assert!(
        text.contains("heap     +20 blocks (+1.0/cycle), +9.4 KiB (+480 B/cycle)"),
        "{text}"
    );
}

struct Node {
    _payload: Vec<u8>,
    other: Mutex<Option<Arc<Node>>>,
}

#[leakcheck::isolated]
fn arc_cycle_per_cycle_is_counted_exactly() {
    // Two Arcs that point at each other, and a payload each: 4 blocks never freed per cycle.
    let report = leaked_heap(check(12), || {
        let a = Arc::new(Node {
            _payload: vec![1; 32],
            other: Mutex::new(None),
        });
        let b = Arc::new(Node {
            _payload: vec![2; 32],
            other: Mutex::new(Some(a.clone())),
        });
        *a.other.lock().unwrap() = Some(b);
    });
    assert_eq!(report.leaked(Resource::Heap), 4 * 12, "{report}");
}

#[leakcheck::isolated]
fn global_registry_push_per_cycle_is_counted_exactly() {
    static REGISTRY: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut n = 0;
    let report = leaked_heap(check(16), || {
        n += 1;
        // The registry's own buffer grows by realloc (not a new block); each entry is one.
        REGISTRY.lock().unwrap().push(format!("listener-{n}"));
    });
    assert_eq!(report.leaked(Resource::Heap), 16, "{report}");
    REGISTRY.lock().unwrap().clear();
}

#[leakcheck::isolated]
fn leak_on_every_other_cycle_is_counted_exactly() {
    for offset in 0..2 {
        let mut cycle = offset;
        let report = leaked_heap(check(10), || {
            cycle += 1;
            if cycle % 2 == 0 {
                Box::leak(Box::new(cycle));
            }
        });
        assert_eq!(
            report.leaked(Resource::Heap),
            5,
            "offset {offset}: {report}"
        );
    }
}

#[leakcheck::isolated]
fn leak_that_varies_by_a_block_per_cycle_is_counted_exactly() {
    let mut cycle = 0;
    let mut expected = 0;
    let report = leaked_heap(check(9).warmup(1), || {
        cycle += 1;
        let k = 2 + cycle % 2; // 3, 2, 3, 2, ... (the warm-up cycle is the first)
                               // Warm-up, then the 9 measured cycles; the cycles run after them to record allocation
                               // sites are not measured.
        if (2..=10).contains(&cycle) {
            expected += k;
        }
        for _ in 0..k {
            Box::leak(Box::new(0u64));
        }
    });
    assert_eq!(report.leaked(Resource::Heap), expected, "{report}");
}

#[leakcheck::isolated]
fn single_cycle_and_guard_catch_one_block() {
    let report = leaked_heap(LeakCheck::new().heap().settle(BUDGET), || {
        Box::leak(Box::new(1u32));
    });
    assert_eq!(report.leaked(Resource::Heap), 1, "{report}");
    let guard = LeakCheck::new().heap().settle(BUDGET).guard();
    Box::leak(Box::new(1u32));
    let leak = guard.check().unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Heap), 1, "{leak}");
}

// ---- clean twins ------------------------------------------------------------------------

#[leakcheck::isolated]
fn churn_of_maps_and_strings_is_clean_without_waiting() {
    let report = check(20)
        .run(|| {
            let mut m: HashMap<String, Vec<String>> = HashMap::new();
            for i in 0..50 {
                m.entry(format!("k{}", i % 7))
                    .or_default()
                    .push("x".repeat(i));
            }
            let joined: String = m.values().flatten().cloned().collect();
            assert!(!joined.is_empty());
        })
        .unwrap();
    assert_eq!(
        report.verdict(Resource::Heap),
        Some(&Verdict::Clean),
        "{report}"
    );
    // Nothing lingered: one snapshot before warm-up, B0, B1, B2; no waiting.
    assert_eq!(report.snapshots(), 4, "{report}");
    assert!(report.to_string().contains("heap "), "{report}");
}

#[leakcheck::isolated]
fn nothing_allocated_is_exactly_zero_growth() {
    // The harness allocates snapshots, labels and a report while it counts: none is counted.
    let report = check(10).run(|| ()).unwrap();
    assert_eq!(report.growth(Resource::Heap), 0, "{report}");
    assert_eq!(report.bytes(Resource::Heap), Some(0), "{report}");
}

#[leakcheck::isolated]
fn bounded_cache_that_fills_during_the_cycles_is_not_a_leak() {
    // An LRU of 6 entries: it fills during the first measured cycles, then evicts.
    let mut cache: Vec<Box<[u8; 64]>> = Vec::with_capacity(8);
    let report = check(20)
        .run(|| {
            if cache.len() == 6 {
                cache.remove(0);
            }
            cache.push(Box::new([0; 64]));
        })
        .unwrap();
    assert_eq!(
        report.verdict(Resource::Heap),
        Some(&Verdict::Bounded),
        "{report}"
    );
    assert_eq!(report.leaked(Resource::Heap), 0);
    // Negative control: the same cache without its bound leaks, one entry per cycle.
    let mut unbounded: Vec<Box<[u8; 64]>> = Vec::with_capacity(64);
    let report = leaked_heap(check(20), || unbounded.push(Box::new([0; 64])));
    assert_eq!(report.leaked(Resource::Heap), 20, "{report}");
}

#[leakcheck::isolated]
fn batch_frees_every_few_cycles_are_not_a_leak() {
    // Epoch-style reclamation: garbage accumulates and is freed in a batch every 3rd cycle,
    // so the settled end points can sit on a peak.
    for phase in 0..3 {
        let mut garbage: Vec<Box<u64>> = Vec::with_capacity(8);
        let mut cycle = phase;
        let report = check(20)
            .run(|| {
                cycle += 1;
                garbage.push(Box::new(cycle as u64));
                if cycle % 3 == 0 {
                    garbage.clear();
                }
            })
            .unwrap();
        assert_ne!(
            report.verdict(Resource::Heap),
            Some(&Verdict::Leaking),
            "phase {phase}: {report}"
        );
    }
}

/// A thread that frees what it is sent, each item `delay` after it arrived.
struct Freer {
    tx: Option<mpsc::Sender<Box<[u8; 128]>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Freer {
    fn new(delay: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<Box<[u8; 128]>>();
        let thread = thread::spawn(move || {
            let mut held: Vec<(Instant, Box<[u8; 128]>)> = Vec::with_capacity(1024);
            loop {
                let next = held.first().map(|(at, _)| *at + delay);
                let got = match next {
                    None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                };
                match got {
                    Ok(item) => held.push((Instant::now(), item)),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let now = Instant::now();
                held.retain(|(at, _)| now < *at + delay);
            }
        });
        Freer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn send(&self, item: Box<[u8; 128]>) {
        self.tx.as_ref().unwrap().send(item).unwrap();
    }
}

impl Drop for Freer {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.thread.take().unwrap().join().unwrap();
    }
}

#[leakcheck::isolated]
fn frees_on_another_thread_are_clean() {
    let freer = Freer::new(Duration::ZERO);
    let report = check(20).run(|| freer.send(Box::new([1; 128]))).unwrap();
    assert_ne!(
        report.verdict(Resource::Heap),
        Some(&Verdict::Leaking),
        "{report}"
    );
    drop(freer);
}

#[leakcheck::isolated]
fn frees_later_on_a_background_thread_are_clean_and_do_not_hide_a_leak() {
    // The background thread lets go of each buffer 5 ms after receiving it: after every cycle
    // the count is up, and comes back down within the settle budget.
    let freer = Freer::new(Duration::from_millis(5));
    let report = check(20).run(|| freer.send(Box::new([1; 128]))).unwrap();
    assert_ne!(
        report.verdict(Resource::Heap),
        Some(&Verdict::Leaking),
        "{report}"
    );
    // Negative control: the same, plus one block leaked per cycle, counted exactly (the
    // warm-up's pending free must not inflate the baseline).
    let report = leaked_heap(check(20), || {
        freer.send(Box::new([1; 128]));
        Box::leak(Box::new(0u16));
    });
    assert_eq!(report.leaked(Resource::Heap), 20, "{report}");
    drop(freer);
}

#[leakcheck::isolated]
fn thread_locals_of_exited_threads_are_clean() {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let report = check(10)
        .run(|| {
            thread::spawn(|| SCRATCH.with(|s| s.borrow_mut().push("per-thread".repeat(4))))
                .join()
                .unwrap();
        })
        .unwrap();
    assert_eq!(
        report.verdict(Resource::Heap),
        Some(&Verdict::Clean),
        "{report}"
    );
}

#[leakcheck::isolated]
fn tokio_runtime_per_cycle_is_clean() {
    let report = check(6)
        .run(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { tokio::spawn(async { vec![1u8; 100].len() }).await.unwrap() });
            drop(rt);
        })
        .unwrap();
    assert_ne!(
        report.verdict(Resource::Heap),
        Some(&Verdict::Leaking),
        "{report}"
    );
}

#[leakcheck::isolated(flavor = "current_thread")]
async fn async_checks_count_the_heap_of_the_body_and_its_tasks() {
    let check = LeakCheck::new()
        .heap()
        .cycles(8)
        .settle(BUDGET)
        .tasks(&tokio::runtime::Handle::current());
    let report = check
        .run_async(|| async {
            let v = tokio::spawn(async { vec![0u8; 256] }).await.unwrap();
            assert_eq!(v.len(), 256);
        })
        .await
        .unwrap();
    assert_ne!(
        report.verdict(Resource::Heap),
        Some(&Verdict::Leaking),
        "{report}"
    );
    // Negative control: a task that leaks a block (allocated while the harness awaits).
    let leak = check
        .run_async(|| async {
            tokio::spawn(async {
                Box::leak(Box::new([0u8; 16]));
            })
            .await
            .unwrap();
        })
        .await
        .unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Heap), 8, "{leak}");
}

#[leakcheck::isolated]
fn a_check_inside_the_body_is_not_the_component_heap() {
    // The inner check's snapshots, report and clone are the harness's memory, freed or not.
    let inner = || LeakCheck::new().settle(BUDGET).cycles(2);
    let report = check(6)
        .run(|| {
            let report = inner().run(|| ()).unwrap();
            let copy = report.clone();
            drop(report);
            std::mem::forget(copy.clone());
        })
        .unwrap();
    assert_eq!(report.growth(Resource::Heap), 0, "{report}");
    // Negative control: a block the inner body leaks is the component's, counted exactly (the
    // inner check runs its body 3 times: a warm-up and 2 cycles).
    let report = leaked_heap(check(6), || {
        let report = inner()
            .run(|| {
                Box::leak(Box::new(1u8));
            })
            .unwrap();
        drop(report);
    });
    assert_eq!(report.leaked(Resource::Heap), 3 * 6, "{report}");
}
