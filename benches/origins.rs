//! What spawn sites cost: a thread spawn + join through leakcheck's `pthread_create` hook
//! (feature `spawn-sites`) beside the same spawn + join through glibc's `pthread_create`
//! directly, measured in the same run; and what naming leaked threads costs on the failure
//! path.
//!
//! `cargo bench --bench origins`; results and ratios in BENCHMARKS.md.

use std::ffi::c_void;
use std::ptr;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use leakcheck::{LeakCheck, Resource};

type Start = extern "C" fn(*mut c_void) -> *mut c_void;
type Create = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    Start,
    *mut c_void,
) -> libc::c_int;

extern "C" fn nothing(_: *mut c_void) -> *mut c_void {
    ptr::null_mut()
}

/// glibc's own `pthread_create`, past any definition in this executable.
fn glibc_create() -> Create {
    // SAFETY: a NUL-terminated name; the symbol has `Create`'s signature.
    unsafe {
        let f = libc::dlsym(libc::RTLD_NEXT, c"pthread_create".as_ptr());
        assert!(!f.is_null());
        std::mem::transmute::<*mut c_void, Create>(f)
    }
}

fn spawn_join(create: Create) {
    let mut thread: libc::pthread_t = 0;
    // SAFETY: valid out-pointer, default attributes, a start routine that returns at once.
    unsafe {
        assert_eq!(
            create(&mut thread, ptr::null(), nothing, ptr::null_mut()),
            0
        );
        assert_eq!(libc::pthread_join(thread, ptr::null_mut()), 0);
    }
}

fn spawn(c: &mut Criterion) {
    // Any check links the hook in (with the feature); this one also proves it is live.
    leakcheck::LeakCheck::new().run(|| ()).unwrap();
    let hooked: Create = libc::pthread_create;
    let glibc = glibc_create();
    let mut g = c.benchmark_group("thread spawn + join");
    g.bench_function(
        "pthread_create as linked (the hook with spawn-sites)",
        |b| b.iter(|| spawn_join(hooked)),
    );
    g.bench_function("baseline: glibc's pthread_create directly", |b| {
        b.iter(|| spawn_join(glibc))
    });
    g.bench_function("std::thread::spawn + join (as linked)", |b| {
        b.iter(|| std::thread::spawn(|| ()).join().unwrap())
    });
    g.finish();
}

/// `n` threads parked until `stop` is set.
fn park(n: usize, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("leaked".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park();
                    }
                })
                .unwrap()
        })
        .collect()
}

fn release(stop: &AtomicBool, threads: Vec<std::thread::JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    for t in threads {
        t.thread().unpark();
        t.join().unwrap();
    }
}

/// The failure path: a guard's check (settle budget zero: one snapshot) that finds 20 parked
/// threads and names them (name, spawn site resolved, state read), beside the same check
/// finding nothing. The threads are spawned and joined untimed.
fn failing_report(c: &mut Criterion) {
    let check = LeakCheck::new().settle(Duration::ZERO);
    let leaky_check = || {
        let guard = check.guard();
        let stop = Arc::new(AtomicBool::new(false));
        let leaked = park(20, &stop);
        let t = Instant::now();
        let leak = guard.check().unwrap_err();
        let took = t.elapsed();
        assert_eq!(leak.report().leaked(Resource::Threads), 20, "{leak}");
        release(&stop, leaked);
        (took, leak)
    };
    // The first resolution in a process loads the debug info: timed once, apart.
    let (first, leak) = leaky_check();
    eprintln!("first failing report in the process (debug info loaded): {first:?}\n{leak}");

    let mut g = c.benchmark_group("guard check, settle budget 0");
    g.bench_function("20 leaked threads, each named with site and state", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| leaky_check().0).sum())
    });
    g.bench_function("baseline: nothing leaked", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let guard = check.guard();
                let t = Instant::now();
                guard.check().unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = spawn, failing_report
}
criterion_main!(benches);
