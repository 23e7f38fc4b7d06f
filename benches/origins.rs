//! What creation sites cost: a thread spawn + join through leakcheck's `pthread_create` hook
//! (feature `origins`, or its alias `spawn-sites`) beside the same spawn + join through glibc's
//! `pthread_create` directly; `open` + `close`, `socket` + `close` and a child's spawn + wait
//! through the fd and process hooks beside glibc's own calls; all measured in the same run;
//! and what naming leaked threads costs on the failure path.
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

/// glibc's definition of `name`, past any definition in this executable.
fn glibc<T: Copy>(name: &std::ffi::CStr) -> T {
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<usize>());
    // SAFETY: a NUL-terminated name; the caller names the symbol's signature as `T`.
    unsafe {
        let f = libc::dlsym(libc::RTLD_NEXT, name.as_ptr());
        assert!(!f.is_null(), "{name:?}");
        std::mem::transmute_copy::<*mut c_void, T>(&f)
    }
}

type Open = unsafe extern "C" fn(*const libc::c_char, libc::c_int, ...) -> libc::c_int;
type Socket = unsafe extern "C" fn(libc::c_int, libc::c_int, libc::c_int) -> libc::c_int;
type Close = unsafe extern "C" fn(libc::c_int) -> libc::c_int;
type Spawn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const libc::c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    *const *mut libc::c_char,
    *const *mut libc::c_char,
) -> libc::c_int;

/// `open` + `close` and `socket` + `close` through the hooks (as linked) and through glibc's
/// definitions directly.
fn fds(c: &mut Criterion) {
    leakcheck::LeakCheck::new().run(|| ()).unwrap();
    let path = c"/dev/null";
    let open_close = |open: Open, close: Close| {
        // SAFETY: a valid path and flags; the fd is closed at once.
        unsafe {
            let fd = open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            assert!(fd >= 0);
            close(fd);
        }
    };
    let socket_close = |socket: Socket, close: Close| {
        // SAFETY: plain socket creation; the fd is closed at once.
        unsafe {
            let fd = socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            close(fd);
        }
    };
    let (hooked_open, hooked_socket, hooked_close): (Open, Socket, Close) =
        (libc::open64, libc::socket, libc::close);
    let (glibc_open, glibc_socket, glibc_close): (Open, Socket, Close) =
        (glibc(c"open64"), glibc(c"socket"), glibc(c"close"));
    let mut g = c.benchmark_group("fd create + close");
    g.bench_function("open64 + close as linked (the hooks with origins)", |b| {
        b.iter(|| open_close(hooked_open, hooked_close))
    });
    g.bench_function("baseline: glibc's open64 + close directly", |b| {
        b.iter(|| open_close(glibc_open, glibc_close))
    });
    g.bench_function("socket + close as linked (the hooks with origins)", |b| {
        b.iter(|| socket_close(hooked_socket, hooked_close))
    });
    g.bench_function("baseline: glibc's socket + close directly", |b| {
        b.iter(|| socket_close(glibc_socket, glibc_close))
    });
    g.bench_function("std::fs::File::open + drop (as linked)", |b| {
        b.iter(|| drop(std::fs::File::open("/dev/null").unwrap()))
    });
    g.finish();
}

/// A child's spawn (`posix_spawnp` of `true`) + `waitpid` through the hook and through glibc's
/// `posix_spawnp` directly.
fn children(c: &mut Criterion) {
    let argv = [c"true".as_ptr() as *mut libc::c_char, ptr::null_mut()];
    let spawn_wait = |spawn: Spawn| {
        let mut pid: libc::pid_t = 0;
        let mut status = 0;
        // SAFETY: a valid argv and an empty environment; the child is waited for.
        unsafe {
            let env = [ptr::null_mut()];
            let rc = spawn(
                &mut pid,
                argv[0],
                ptr::null(),
                ptr::null(),
                argv.as_ptr(),
                env.as_ptr(),
            );
            assert_eq!(rc, 0);
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        }
    };
    let hooked: Spawn = libc::posix_spawnp;
    let direct: Spawn = glibc(c"posix_spawnp");
    let mut g = c.benchmark_group("child spawn + wait");
    g.bench_function("posix_spawnp as linked (the hook with origins)", |b| {
        b.iter(|| spawn_wait(hooked))
    });
    g.bench_function("baseline: glibc's posix_spawnp directly", |b| {
        b.iter(|| spawn_wait(direct))
    });
    g.bench_function("std::process::Command spawn + wait (as linked)", |b| {
        b.iter(|| {
            std::process::Command::new("true")
                .status()
                .unwrap()
                .success()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = spawn, fds, children, failing_report
}
criterion_main!(benches);
