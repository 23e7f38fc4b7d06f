//! [`CountingAlloc`]: a global allocator wrapper that counts live heap blocks and bytes, so
//! that a check can see memory a component never frees.
//!
//! Threads, fds and tasks can be listed from outside; the heap cannot. Rust's most common real
//! leaks are memory that is never freed (an `Arc` cycle, a forgotten buffer, a global map that
//! grows with every operation), and the only place that sees every allocation is the global
//! allocator. So the test crate installs this wrapper around its allocator, and
//! [`LeakCheck::heap`](crate::LeakCheck::heap) reads its counters. It is plain std: no cargo
//! feature is needed.

mod counters;
pub(crate) mod sites;

use std::alloc::{GlobalAlloc, Layout, System};

pub(crate) use counters::{installed, pause, read, read_without, resume};

/// A global allocator that forwards to `A` and counts live blocks, live bytes and
/// allocations, for [`LeakCheck::heap`](crate::LeakCheck::heap).
///
/// Install it once, in the test crate (an integration test file, or the crate root under
/// `#[cfg(test)]`):
///
/// ```
/// #[global_allocator]
/// static ALLOC: leakcheck::CountingAlloc = leakcheck::CountingAlloc::new(std::alloc::System);
///
/// # #[cfg(target_os = "linux")] {
/// use leakcheck::{LeakCheck, Resource};
/// // A block leaked per cycle is counted exactly.
/// let leak = LeakCheck::new()
///     .heap()
///     .cycles(8)
///     .settle(std::time::Duration::from_millis(20))
///     .run(|| {
///         Box::leak(Box::new([0u8; 48]));
///     })
///     .unwrap_err();
/// assert_eq!(leak.report().leaked(Resource::Heap), 8);
/// # }
/// ```
///
/// It wraps any allocator (`CountingAlloc::new(mimalloc::MiMalloc)`). A `realloc` keeps its
/// block (only its bytes change). Each thread counts into cache-line padded counters of its
/// own, summed when the harness reads them, so threads allocating at once do not slow each
/// other down. Counts are process-wide: use one `CountingAlloc`, as the global allocator, and
/// run heap checks in a process of their own (see the crate documentation on other tests).
pub struct CountingAlloc<A: GlobalAlloc = System> {
    inner: A,
}

impl<A: GlobalAlloc> CountingAlloc<A> {
    /// Wraps `inner`; `const`, so that it can initialise the `#[global_allocator]` static.
    pub const fn new(inner: A) -> Self {
        CountingAlloc { inner }
    }

    /// The process's heap as counted so far: live blocks, live bytes and allocations made.
    /// Blocks the harness allocates while a check runs are not counted.
    pub fn stats(&self) -> HeapStats {
        let c = read();
        HeapStats {
            live_blocks: c.blocks,
            live_bytes: c.bytes,
            allocations: c.allocs,
        }
    }
}

/// Heap figures from [`CountingAlloc::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeapStats {
    /// Blocks allocated and not yet freed.
    pub live_blocks: i64,
    /// Bytes in those blocks (as requested, not as the allocator rounds them).
    pub live_bytes: i64,
    /// Allocations made (a `realloc` is not one).
    pub allocations: u64,
}

// SAFETY: every call forwards to `inner` with the caller's arguments; counting and site
// recording touch only atomics, static tables and a thread-local without a destructor, and
// never allocate.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            counters::count(counters::Event::Alloc(layout.size()));
            if sites::on() {
                sites::record(p);
            }
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            counters::count(counters::Event::Alloc(layout.size()));
            if sites::on() {
                sites::record(p);
            }
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Before the free: once freed, the address can be handed out (and recorded) again.
        if sites::on() {
            sites::forget(ptr);
        }
        // SAFETY: forwarded as received.
        unsafe { self.inner.dealloc(ptr, layout) };
        counters::count(counters::Event::Free(layout.size()));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A block keeps its site when it moves (taken out first, as for a free).
        let site = if sites::on() {
            sites::forget(ptr)
        } else {
            None
        };
        // SAFETY: forwarded as received.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if let Some(site) = &site {
            sites::insert_at(if p.is_null() { ptr } else { p }, site);
        }
        if !p.is_null() {
            counters::count(counters::Event::Resize {
                from: layout.size(),
                to: new_size,
            });
        }
        p
    }
}
