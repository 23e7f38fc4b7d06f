//! Allocation sites: where the blocks that a leaking heap check left behind were allocated.
//!
//! A heap count says that blocks stayed; a site says which line made them. Recording a site
//! means walking the stack on every allocation, which costs microseconds, so nothing is
//! recorded while a check judges the heap: a clean check never records a site. Only when a
//! check has found a heap leak does it run the body again with recording on (see
//! `LeakCheck::heap`), and only then does [`CountingAlloc`](super::CountingAlloc) pay for it.
//! Outside such a pass, the allocating and freeing paths read one relaxed atomic flag.
//!
//! While recording, each allocation made by a counting thread (not one the harness paused,
//! and not the excluded libtest main thread) stores up to [`DEPTH`] return addresses,
//! unresolved, in a fixed table keyed by the block's address; freeing the block removes its
//! entry, and a `realloc` moves it (the block keeps its site). What is left in the table at the
//! end of the pass is the blocks allocated during the pass that stayed.
//!
//! The table lives inside the allocator, so it never allocates and takes no lock: it is
//! open addressing over atomics, [`SLOTS`] entries, each probe sequence at most [`PROBES`]
//! long. An entry is claimed by a compare-and-swap to a busy marker, filled, then published
//! with its address; a freed entry becomes a tombstone that a later claim reuses. Entries of
//! an earlier pass are told apart by a generation number and count as free. An allocation
//! that finds no free entry within its probes is counted instead
//! (`sites not recorded for N blocks`), never dropped silently. A `fork` cannot leave a child
//! waiting: nothing here blocks.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Return addresses kept per block: the allocator's own frames (about ten in a debug build)
/// and enough of the caller's to reach the user's line.
pub(crate) const DEPTH: usize = 32;
/// Entries in the table: the blocks of one pass that can be live at once with a site.
pub(crate) const SLOTS: usize = 8192;
/// Entries an insertion or a removal looks at, at most.
const PROBES: usize = 64;

/// An entry never used since the table was last cleared: ends a probe sequence.
const EMPTY: usize = 0;
/// An entry whose block was freed: skipped by lookups, reused by insertions.
const GONE: usize = 1;
/// An entry being filled.
const BUSY: usize = usize::MAX;

struct Slot {
    /// The block's address, or one of `EMPTY`, `GONE`, `BUSY`.
    addr: AtomicUsize,
    /// The pass that recorded it.
    generation: AtomicU32,
    len: AtomicUsize,
    ips: [AtomicUsize; DEPTH],
}

impl Slot {
    const fn new() -> Self {
        Slot {
            addr: AtomicUsize::new(EMPTY),
            generation: AtomicU32::new(0),
            len: AtomicUsize::new(0),
            ips: [const { AtomicUsize::new(0) }; DEPTH],
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Whether a pass is recording: read on every allocation and free, written twice a pass. On
/// a cache line of its own, so that no write nearby makes every allocating core miss.
#[repr(align(128))]
struct Flag(AtomicBool);
static ON: Flag = Flag(AtomicBool::new(false));
/// The current pass.
static GENERATION: AtomicU32 = AtomicU32::new(0);
/// Blocks of this pass whose site did not fit in the table.
static UNRECORDED: AtomicU64 = AtomicU64::new(0);
/// A thread whose allocations are not the component's (0: none).
static EXCLUDED: AtomicU32 = AtomicU32::new(0);
/// Whether any pass has used the table (so that the next one clears it first).
static USED: AtomicBool = AtomicBool::new(false);

/// Whether a pass is recording: the one load the allocator pays outside a pass.
#[inline(always)]
pub(crate) fn on() -> bool {
    ON.0.load(Ordering::Relaxed)
}

/// Return addresses, innermost first.
#[derive(Clone, Copy)]
pub(crate) struct Ips {
    len: usize,
    ips: [usize; DEPTH],
}

impl Ips {
    pub(crate) fn as_slice(&self) -> &[usize] {
        &self.ips[..self.len]
    }
}

/// Records the site of the block at `ptr`, just allocated by the calling thread, unless the
/// thread is paused (the harness's own work), excluded, or already inside a recording.
#[inline(never)]
pub(crate) fn record(ptr: *mut u8) {
    let addr = ptr as usize;
    if addr == GONE || addr == BUSY || excluded() {
        return;
    }
    super::counters::if_counting(|| {
        let ips = capture();
        insert(addr, &ips);
    });
}

/// Forgets the block at `ptr`, about to be freed; returns its site if it had one.
#[inline(never)]
pub(crate) fn forget(ptr: *mut u8) -> Option<Ips> {
    let addr = ptr as usize;
    let generation = GENERATION.load(Ordering::Acquire);
    for slot in probe(addr) {
        let cur = slot.addr.load(Ordering::Acquire);
        if cur == EMPTY {
            return None;
        }
        if cur == addr && slot.generation.load(Ordering::Relaxed) == generation {
            let len = slot.len.load(Ordering::Relaxed).min(DEPTH);
            let mut ips = Ips {
                len,
                ips: [0; DEPTH],
            };
            for (to, from) in ips.ips[..len].iter_mut().zip(&slot.ips) {
                *to = from.load(Ordering::Relaxed);
            }
            slot.addr.store(GONE, Ordering::Release);
            return Some(ips);
        }
    }
    None
}

/// Files `ips` as the site of the block at `ptr` (a block that moved keeps its site).
pub(crate) fn insert_at(ptr: *mut u8, ips: &Ips) {
    insert(ptr as usize, ips);
}

fn insert(addr: usize, ips: &Ips) {
    let generation = GENERATION.load(Ordering::Acquire);
    for slot in probe(addr) {
        let cur = slot.addr.load(Ordering::Acquire);
        let free = cur == EMPTY
            || cur == GONE
            || (cur != BUSY && slot.generation.load(Ordering::Relaxed) != generation);
        if !free
            || slot
                .addr
                .compare_exchange(cur, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        slot.generation.store(generation, Ordering::Relaxed);
        for (to, from) in slot.ips.iter().zip(ips.as_slice()) {
            to.store(*from, Ordering::Relaxed);
        }
        slot.len.store(ips.len, Ordering::Relaxed);
        slot.addr.store(addr, Ordering::Release);
        return;
    }
    UNRECORDED.fetch_add(1, Ordering::Relaxed);
}

/// The entries an address may sit in, in probe order.
fn probe(addr: usize) -> impl Iterator<Item = &'static Slot> {
    // Blocks are at least 8-aligned in practice: drop the low bits, then mix.
    let h = ((addr as u64) >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let start = (h >> 32) as usize;
    (0..PROBES).map(move |k| &TABLE[(start + k) % SLOTS])
}

#[cfg(target_os = "linux")]
fn excluded() -> bool {
    let excluded = EXCLUDED.load(Ordering::Relaxed);
    // SAFETY: gettid cannot fail.
    excluded != 0 && unsafe { libc::gettid() } as u32 == excluded
}

#[cfg(not(target_os = "linux"))]
fn excluded() -> bool {
    false
}

/// The caller's return addresses, innermost first.
#[cfg(origins)]
fn capture() -> Ips {
    let mut ips = Ips {
        len: 0,
        ips: [0; DEPTH],
    };
    // SAFETY: unsynchronized tracing is safe while no other backtrace call of this thread is
    // in progress, which `if_counting`'s re-entry flag guarantees; on Linux it walks the stack
    // with libgcc's unwinder, which takes no lock of the allocator and allocates nothing from
    // the Rust heap.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            ips.ips[ips.len] = frame.ip() as usize;
            ips.len += 1;
            ips.len < DEPTH
        });
    }
    ips
}

#[cfg(not(origins))]
fn capture() -> Ips {
    Ips {
        len: 0,
        ips: [0; DEPTH],
    }
}

/// Whether this build can record allocation sites (feature `origins`: the stack walk and the
/// resolver).
pub(crate) const SUPPORTED: bool = cfg!(origins);

/// A recording pass; ends when [`Pass::finish`] is called or the pass is dropped.
pub(crate) struct Pass(());

/// The blocks a pass recorded that are still allocated: one list of return addresses per
/// block, and how many blocks of the pass had no room in the table.
pub(crate) struct Survivors {
    pub(crate) blocks: Vec<Vec<usize>>,
    pub(crate) unrecorded: u64,
}

/// Starts a pass: every allocation a counting thread other than `excluded` makes from now on
/// records its site. Call it with counting paused; one pass at a time.
pub(crate) fn start(excluded: Option<u32>) -> Pass {
    if USED.swap(true, Ordering::SeqCst) {
        for slot in &TABLE {
            slot.addr.store(EMPTY, Ordering::Relaxed);
        }
    }
    GENERATION.fetch_add(1, Ordering::SeqCst);
    UNRECORDED.store(0, Ordering::SeqCst);
    EXCLUDED.store(excluded.unwrap_or(0), Ordering::SeqCst);
    ON.0.store(true, Ordering::SeqCst);
    Pass(())
}

impl Pass {
    /// Stops recording and lists the blocks of the pass that are still allocated. Call it
    /// with counting paused (the list is the harness's memory).
    pub(crate) fn finish(self) -> Survivors {
        let generation = GENERATION.load(Ordering::SeqCst);
        let mut blocks = Vec::new();
        for slot in &TABLE {
            let addr = slot.addr.load(Ordering::Acquire);
            if matches!(addr, EMPTY | GONE | BUSY)
                || slot.generation.load(Ordering::Relaxed) != generation
            {
                continue;
            }
            let len = slot.len.load(Ordering::Relaxed).min(DEPTH);
            let ips: Vec<usize> = slot.ips[..len]
                .iter()
                .map(|ip| ip.load(Ordering::Relaxed))
                .collect();
            // Freed (and perhaps reused) while being read: not a survivor of this reading.
            if slot.addr.load(Ordering::Acquire) == addr {
                blocks.push(ips);
            }
        }
        let unrecorded = UNRECORDED.load(Ordering::SeqCst);
        drop(self);
        Survivors { blocks, unrecorded }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        ON.0.store(false, Ordering::SeqCst);
    }
}

/// Runs `f` with allocation sites recorded, as a check's recording pass runs its body, and
/// returns what it returned and how many of the blocks it allocated stayed. For the benches:
/// what a recorded cycle costs beside a counted one.
pub fn record_while<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let _paused = super::pause();
    let pass = start(None);
    let counting = super::resume();
    let r = f();
    drop(counting);
    let stayed = pass.finish().blocks.len();
    (r, stayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The unit-test binary's allocator is `System`: these tests drive the table directly.
    // One test, so that no other pass runs meanwhile.
    #[test]
    fn entries_are_kept_until_freed_and_overflow_is_counted() {
        let _paused = super::super::counters::pause();
        let pass = start(None);
        let ips = |n: usize| Ips {
            len: 2,
            ips: {
                let mut a = [0; DEPTH];
                a[0] = n;
                a[1] = n + 1;
                a
            },
        };
        // Addresses that all probe from the same few entries.
        let base = 0x10_0000usize;
        for i in 0..10 {
            insert(base + i * 16, &ips(i));
        }
        assert_eq!(
            forget((base + 3 * 16) as *mut u8).map(|s| s.ips[0]),
            Some(3)
        );
        assert!(forget((base + 3 * 16) as *mut u8).is_none());
        // A moved block keeps its site.
        let moved = forget((base + 4 * 16) as *mut u8).unwrap();
        insert_at(0x20_0000 as *mut u8, &moved);
        let survivors = pass.finish();
        let mut firsts: Vec<usize> = survivors.blocks.iter().map(|b| b[0]).collect();
        firsts.sort_unstable();
        assert_eq!(firsts, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
        assert_eq!(survivors.unrecorded, 0);
        assert!(!on());

        // A new pass forgets the old one's entries; a full table counts what did not fit.
        let pass = start(None);
        for i in 0..(SLOTS + 100) {
            insert(base + i * 8, &ips(i));
        }
        let survivors = pass.finish();
        assert_eq!(
            survivors.blocks.len() as u64 + survivors.unrecorded,
            (SLOTS + 100) as u64
        );
        assert!(survivors.unrecorded >= 100);
    }
}
