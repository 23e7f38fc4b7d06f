//! `CountingAlloc` wraps any allocator, and counts what the program holds, not what the
//! allocator keeps: here the inner allocator caches freed blocks instead of returning them
//! (as per-thread allocator caches do), and that is never a leak; a block the program leaks
//! still is, counted exactly.
#![cfg(target_os = "linux")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use leakcheck::{CountingAlloc, LeakCheck, Resource, Verdict};

/// Keeps up to 64 freed blocks of 64 bytes (align ≤ 16) for reuse instead of freeing them.
struct Caching {
    lock: AtomicBool,
    free: std::cell::UnsafeCell<[*mut u8; 64]>,
    len: std::cell::UnsafeCell<usize>,
}

// SAFETY: the cache is only touched under `lock`.
unsafe impl Sync for Caching {}

impl Caching {
    const fn new() -> Self {
        Caching {
            lock: AtomicBool::new(false),
            free: std::cell::UnsafeCell::new([std::ptr::null_mut(); 64]),
            len: std::cell::UnsafeCell::new(0),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut [*mut u8; 64], &mut usize) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        // SAFETY: exclusive under the lock.
        let r = unsafe { f(&mut *self.free.get(), &mut *self.len.get()) };
        self.lock.store(false, Ordering::Release);
        r
    }

    fn cached(layout: Layout) -> bool {
        layout.size() == 64 && layout.align() <= 16
    }
}

// SAFETY: blocks come from System with a layout of the same size and alignment class.
unsafe impl GlobalAlloc for Caching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::cached(layout) {
            let reused = self.with(|free, len| {
                (*len > 0).then(|| {
                    *len -= 1;
                    free[*len]
                })
            });
            if let Some(p) = reused {
                return p;
            }
            // SAFETY: a valid layout, rounded up to the class's alignment.
            return unsafe { System.alloc(Layout::from_size_align_unchecked(64, 16)) };
        }
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::cached(layout) {
            let kept = self.with(|free, len| {
                (*len < free.len()).then(|| {
                    free[*len] = ptr;
                    *len += 1;
                })
            });
            if kept.is_none() {
                // SAFETY: allocated with this class's layout.
                unsafe { System.dealloc(ptr, Layout::from_size_align_unchecked(64, 16)) };
            }
            return;
        }
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc<Caching> = CountingAlloc::new(Caching::new());

#[leakcheck::isolated]
fn blocks_an_inner_allocator_caches_are_not_a_leak_and_a_leak_is_still_exact() {
    let check = || {
        LeakCheck::new()
            .heap()
            .cycles(10)
            .settle(Duration::from_millis(100))
    };
    let report = check()
        .run(|| {
            let v: Vec<Box<[u8; 64]>> = (0..16).map(|_| Box::new([1; 64])).collect();
            drop(v);
        })
        .unwrap();
    assert_eq!(
        report.verdict(Resource::Heap),
        Some(&Verdict::Clean),
        "{report}"
    );
    let leak = check()
        .run(|| {
            Box::leak(Box::new([2u8; 64]));
        })
        .unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Heap), 10, "{leak}");
    assert!(ALLOC.stats().allocations > 0);
}
