//! What saying where a leaked thread waits costs, on the failure path: a sample of its stack
//! (SIGURG to the thread, its handler walks the stack, the requester waits for it), beside
//! the `/proc` reads a report already makes for each leaked thread (`stat` and `syscall`),
//! measured in the same run on the same parked thread.
//!
//! `cargo bench --bench whereabouts`; results and ratios in BENCHMARKS.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use criterion::{criterion_group, criterion_main, Criterion};

fn sample(c: &mut Criterion) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (tx, rx) = mpsc::channel();
    let parked = std::thread::spawn(move || {
        // SAFETY: gettid cannot fail.
        tx.send(unsafe { libc::gettid() } as u32).unwrap();
        while !flag.load(Ordering::Acquire) {
            std::thread::park();
        }
    });
    let tid = rx.recv().unwrap();
    let mut g = c.benchmark_group("a parked thread's whereabouts");
    g.bench_function("baseline: read /proc/self/task/<tid>/{stat,syscall}", |b| {
        b.iter(|| {
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
            let call = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap();
            stat.len() + call.len()
        })
    });
    g.bench_function("sample its stack (signal + walk, unresolved)", |b| {
        b.iter(|| leakcheck::__private::sample_frames(tid).unwrap())
    });
    g.finish();
    stop.store(true, Ordering::Release);
    parked.thread().unpark();
    parked.join().unwrap();
}

criterion_group!(benches, sample);
criterion_main!(benches);
