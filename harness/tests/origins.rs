//! Origins of leaked threads in a report (feature `spawn-sites`): the exact `file:line` of a
//! planted spawn, the notify frame of a thread notify made, what each thread is doing, and a
//! hook that allocates nothing from the program's global allocator.
//!
//! `cargo test --features spawn-sites --test origins`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leakcheck::{LeakCheck, Resource};

/// Counts the allocations of threads that ask for it, through the program's allocator.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; counting touches only an atomic and a const TLS.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn check() -> LeakCheck {
    LeakCheck::new().settle(Duration::from_millis(200))
}

/// Threads parked until the value is dropped.
struct Parked(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
        for t in self.1.drain(..) {
            t.thread().unpark();
            t.join().unwrap();
        }
    }
}

/// The line of the `park` in `park_until`, where a planted thread waits.
const PARK_LINE: u32 = line!() + 4;

fn park_until(stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        std::thread::park();
    }
}

#[leakcheck::isolated]
fn a_planted_thread_is_named_by_the_line_that_spawned_it() {
    let mut parked = Parked(Arc::new(AtomicBool::new(false)), Vec::new());
    let stop = parked.0.clone();
    let line = line!() + 6;
    let leak = check()
        .cycles(4)
        .run(|| {
            let stop = stop.clone();
            let planted = std::thread::Builder::new().name("planted".into());
            let t = planted.spawn(move || park_until(&stop)).unwrap();
            parked.1.push(t);
        })
        .unwrap_err();
    let report = leak.report();
    let site = format!(
        "spawned at {}:{line}, waiting at {}:{PARK_LINE} in std::thread::park",
        file!(),
        file!()
    );
    assert_eq!(report.leaked(Resource::Threads), 4, "{report}");
    assert_eq!(
        report.items(Resource::Threads),
        &[(format!("planted {site}"), 4)],
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.contains(&format!("×4   \"planted\" {site} (blocked in futex)")),
        "{text}"
    );
}

#[leakcheck::isolated]
fn a_thread_notify_made_names_the_notify_frame_and_the_users_call() {
    use notify::Watcher;
    let dir = tempfile::tempdir().unwrap();
    let mut watchers = Vec::new();
    let line = line!() + 3;
    let leak = check()
        .run(|| {
            let mut w = notify::recommended_watcher(|_| ()).unwrap();
            w.watch(dir.path(), notify::RecursiveMode::NonRecursive)
                .unwrap();
            watchers.push(w);
        })
        .unwrap_err();
    let report = leak.report();
    let (label, n) = &report.items(Resource::Threads)[0];
    assert_eq!(*n, 1, "{report}");
    assert!(
        label.contains(&format!(
            "spawned at {}:{line} via notify::inotify::",
            file!()
        )),
        "{report}"
    );
    // notify's thread waits for events in epoll_wait on its epoll fd.
    assert!(
        report.to_string().contains("on anon_inode:[eventpoll])"),
        "{report}"
    );
    drop(watchers);
}

#[leakcheck::isolated]
fn a_full_backtrace_only_when_asked_for() {
    let mut parked = Parked(Arc::new(AtomicBool::new(false)), Vec::new());
    let stop = parked.0.clone();
    let mut plant = || {
        let stop = stop.clone();
        parked.1.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::park();
            }
        }));
    };
    let short = check().run(&mut plant).unwrap_err().to_string();
    assert!(!short.contains("created through"), "{short}");
    let long = check()
        .backtraces(true)
        .run(&mut plant)
        .unwrap_err()
        .to_string();
    assert!(long.contains("created through:"), "{long}");
    assert!(long.contains("pthread_create"), "{long}");
}

extern "C" fn nothing(_: *mut c_void) -> *mut c_void {
    ptr::null_mut()
}

#[test]
fn the_hook_allocates_nothing_from_the_global_allocator() {
    // A raw create + join goes through the hook (this binary's `pthread_create`) and glibc
    // only: any allocation counted here would be the hook's.
    LeakCheck::new(); // links the hook in
    let mut thread: libc::pthread_t = unsafe {
        // SAFETY: an integer on glibc, a pointer on musl: all-zero is valid for both.
        std::mem::zeroed()
    };
    COUNTING.with(|c| c.set(true));
    // SAFETY: valid out-pointer, default attributes, a start routine that returns.
    unsafe {
        assert_eq!(
            libc::pthread_create(&mut thread, ptr::null(), nothing, ptr::null_mut()),
            0
        );
        libc::pthread_join(thread, ptr::null_mut());
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 0);
}
