//! The heap counters behind [`CountingAlloc`](super::CountingAlloc): cheap to bump on every
//! allocation, exact when summed.
//!
//! One shared set of atomic counters costs little on one thread but bounces a cache line
//! between cores when two threads allocate at once (a throwaway prototype measured 1.9× the
//! time of `System` on two threads). So every thread gets a slot of its own, padded to its own
//! cache lines, that only it writes, with plain loads and stores (no locked instruction); a
//! reading sums the slots. No thread-local destructor is involved (registering one allocates,
//! from inside the allocator): a slot whose thread has exited is found by the next thread that
//! needs one, which folds its figures into a shared total and takes it over. When every slot
//! is held by a live thread, further threads share one set of atomic counters: slower, still
//! exact.
//!
//! The harness pauses counting on its own thread while it works ([`pause`]), so that its own
//! snapshots, labels and reports are never counted as the component's heap. Whatever it
//! allocates while paused it also frees while paused.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Threads that can have a slot of their own at the same time.
const SLOTS: usize = 256;

/// One thread's counters, written only by the thread that owns the slot.
#[repr(align(128))]
struct Slot {
    /// The owning thread's id (Linux tid), or 0 when free.
    owner: AtomicU32,
    /// Allocations and frees made, and live bytes; live blocks are allocations − frees.
    counts: Counters,
}

/// Allocations, frees and live bytes.
struct Counters {
    allocs: AtomicU64,
    frees: AtomicU64,
    bytes: AtomicI64,
}

impl Counters {
    const fn new() -> Self {
        Counters {
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            bytes: AtomicI64::new(0),
        }
    }
}

impl Slot {
    const fn new() -> Self {
        Slot {
            owner: AtomicU32::new(0),
            counts: Counters::new(),
        }
    }
}

static SLOTS_: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Threads without a slot of their own, counted with read-modify-writes.
static OVERFLOW: Counters = Counters::new();
/// What the threads of reclaimed slots counted.
static RETIRED: Counters = Counters::new();
/// Odd while a slot is being folded into `RETIRED`; readers retry across a fold.
static FOLDING: AtomicU64 = AtomicU64::new(0);
/// How many slots, from the first, have ever been claimed: readings sum only those.
static CLAIMED: AtomicUsize = AtomicUsize::new(0);

/// Per-thread state. No destructor, so that touching it from the allocator never registers
/// one (which would allocate).
struct Local {
    /// This thread's own counters: null before its first count, `&OVERFLOW` without a slot.
    counts: Cell<*const Counters>,
    /// Nesting depth of [`pause`]: nothing is counted on this thread while above 0.
    paused: Cell<u32>,
    /// Allocations seen while [`installed`] probes.
    probe_hits: Cell<u32>,
    /// Inside [`if_counting`]: an allocation made from there is not recorded again.
    in_site: Cell<bool>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            counts: Cell::new(std::ptr::null()),
            paused: Cell::new(0),
            probe_hits: Cell::new(0),
            in_site: Cell::new(false),
        }
    };
}

/// What one call to the allocator changes.
#[derive(Clone, Copy)]
pub(crate) enum Event {
    Alloc(usize),
    Free(usize),
    Resize { from: usize, to: usize },
}

/// Counts one event on the calling thread's counters.
#[inline]
pub(crate) fn count(event: Event) {
    // A thread past its thread-local storage (rare, at exit) counts into the shared counters.
    let counted = LOCAL.try_with(|l| {
        if l.paused.get() > 0 {
            l.probe_hits.set(l.probe_hits.get().wrapping_add(1));
            return;
        }
        let mut counts = l.counts.get();
        if counts.is_null() {
            counts = claim();
            l.counts.set(counts);
        }
        if std::ptr::eq(counts, &OVERFLOW) {
            shared(&OVERFLOW, event);
        } else {
            // SAFETY: a pointer into `SLOTS_`, a static, set by `claim`.
            owned(unsafe { &*counts }, event);
        }
    });
    if counted.is_err() {
        shared(&OVERFLOW, event);
    }
}

/// Adds to counters only the calling thread writes: a load and a store, no locked instruction.
#[inline]
fn owned(c: &Counters, event: Event) {
    let bump = |a: &AtomicU64| a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let add = |d: i64| {
        c.bytes
            .store(c.bytes.load(Ordering::Relaxed) + d, Ordering::Relaxed)
    };
    match event {
        Event::Alloc(size) => {
            bump(&c.allocs);
            add(size as i64);
        }
        Event::Free(size) => {
            bump(&c.frees);
            add(-(size as i64));
        }
        Event::Resize { from, to } => add(to as i64 - from as i64),
    }
}

/// Adds to counters any thread may write.
fn shared(c: &Counters, event: Event) {
    match event {
        Event::Alloc(size) => {
            c.allocs.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(size as i64, Ordering::Relaxed);
        }
        Event::Free(size) => {
            c.frees.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_sub(size as i64, Ordering::Relaxed);
        }
        Event::Resize { from, to } => {
            c.bytes
                .fetch_add(to as i64 - from as i64, Ordering::Relaxed);
        }
    }
}

/// Finds a slot for the calling thread: a free one, or one whose thread has exited.
#[cold]
fn claim() -> *const Counters {
    let Some(me) = thread_id() else {
        return &OVERFLOW;
    };
    // Reuse the slot of an exited thread before opening a new one, so that the slots in use
    // stay few and a reading sums few of them. Each claim looks at a handful of claimed slots
    // (a cursor goes round them), so that a new thread costs a few `tgkill` checks at most.
    const LOOKS: usize = 4;
    static CURSOR: AtomicUsize = AtomicUsize::new(0);
    let claimed = CLAIMED.load(Ordering::SeqCst);
    if claimed > 0 {
        for _ in 0..LOOKS.min(claimed) {
            let i = CURSOR.fetch_add(1, Ordering::Relaxed) % claimed;
            if let Some(c) = reclaim(&SLOTS_[i], me) {
                return c;
            }
        }
    }
    for (i, slot) in SLOTS_.iter().enumerate() {
        if slot.owner.load(Ordering::Relaxed) == 0
            && slot
                .owner
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            CLAIMED.fetch_max(i + 1, Ordering::SeqCst);
            return &slot.counts;
        }
    }
    // Every slot has been used: look at all of them for one whose thread has exited.
    SLOTS_
        .iter()
        .find_map(|slot| reclaim(slot, me))
        .unwrap_or(&OVERFLOW)
}

/// Takes over `slot` for thread `me` if its owner has exited, folding the exited thread's
/// figures into `RETIRED` first (it will never write again).
fn reclaim(slot: &Slot, me: u32) -> Option<*const Counters> {
    let owner = slot.owner.load(Ordering::Acquire);
    if owner == 0 || owner == me || thread_alive(owner) {
        return None;
    }
    slot.owner
        .compare_exchange(owner, me, Ordering::Acquire, Ordering::Relaxed)
        .ok()?;
    FOLDING.fetch_add(1, Ordering::SeqCst);
    let c = &slot.counts;
    let r = &RETIRED;
    r.allocs
        .fetch_add(c.allocs.swap(0, Ordering::SeqCst), Ordering::SeqCst);
    r.frees
        .fetch_add(c.frees.swap(0, Ordering::SeqCst), Ordering::SeqCst);
    r.bytes
        .fetch_add(c.bytes.swap(0, Ordering::SeqCst), Ordering::SeqCst);
    FOLDING.fetch_add(1, Ordering::SeqCst);
    Some(&slot.counts)
}

#[cfg(target_os = "linux")]
fn thread_id() -> Option<u32> {
    // SAFETY: gettid cannot fail.
    Some(unsafe { libc::gettid() } as u32)
}

#[cfg(not(target_os = "linux"))]
fn thread_id() -> Option<u32> {
    // Without a way to tell whether a thread has exited, slots are never handed back: every
    // thread counts into the shared counters instead.
    None
}

/// Whether the thread with this id is still alive in this process.
#[cfg(target_os = "linux")]
fn thread_alive(tid: u32) -> bool {
    // SAFETY: signal 0 only checks that the thread exists; nothing is sent.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid as libc::c_int, 0) };
    !(r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH))
}

#[cfg(not(target_os = "linux"))]
fn thread_alive(_: u32) -> bool {
    true
}

/// Live blocks, live bytes and allocations so far, as counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) blocks: i64,
    pub(crate) bytes: i64,
    pub(crate) allocs: u64,
}

/// Sums every slot and the shared counters; never allocates.
pub(crate) fn read() -> Counts {
    read_without(None)
}

/// Like [`read`], without what the thread `tid` counted in its own slot (the test harness's
/// main thread, whose bookkeeping is not the component's heap).
pub(crate) fn read_without(tid: Option<u32>) -> Counts {
    loop {
        let before = FOLDING.load(Ordering::SeqCst);
        if before % 2 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let (mut allocs, mut frees, mut bytes) = (0u64, 0u64, 0i64);
        let mut add = |c: &Counters| {
            allocs = allocs.wrapping_add(c.allocs.load(Ordering::SeqCst));
            frees = frees.wrapping_add(c.frees.load(Ordering::SeqCst));
            bytes = bytes.wrapping_add(c.bytes.load(Ordering::SeqCst));
        };
        add(&OVERFLOW);
        add(&RETIRED);
        let claimed = CLAIMED.load(Ordering::SeqCst);
        for s in &SLOTS_[..claimed] {
            if tid.is_some_and(|t| s.owner.load(Ordering::Relaxed) == t) {
                continue;
            }
            add(&s.counts);
        }
        if FOLDING.load(Ordering::SeqCst) == before {
            return Counts {
                blocks: allocs.wrapping_sub(frees) as i64,
                bytes,
                allocs,
            };
        }
    }
}

/// Runs `f` if the calling thread counts (no [`pause`] in force) and is not inside `f`
/// already: the allocation-site recorder's guard against the harness's own work and against
/// re-entry. A thread past its thread-local storage runs nothing.
#[inline]
pub(crate) fn if_counting(f: impl FnOnce()) {
    let entered = LOCAL
        .try_with(|l| {
            if l.paused.get() > 0 || l.in_site.get() {
                return false;
            }
            l.in_site.set(true);
            true
        })
        .unwrap_or(false);
    if entered {
        f();
        let _ = LOCAL.try_with(|l| l.in_site.set(false));
    }
}

/// While alive, nothing the calling thread allocates or frees is counted.
pub(crate) struct Paused(());

/// Pauses counting on the calling thread (nests).
pub(crate) fn pause() -> Paused {
    let _ = LOCAL.try_with(|l| l.paused.set(l.paused.get() + 1));
    Paused(())
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|l| l.paused.set(l.paused.get() - 1));
    }
}

/// While alive, the calling thread counts again, inside a [`pause`] (for the body of a check).
pub(crate) struct Counting {
    depth: u32,
}

/// Lifts any pause on the calling thread until the guard is dropped.
pub(crate) fn resume() -> Counting {
    let depth = LOCAL.try_with(|l| l.paused.replace(0)).unwrap_or(0);
    Counting { depth }
}

impl Drop for Counting {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|l| l.paused.set(self.depth));
    }
}

/// Whether a [`CountingAlloc`](super::CountingAlloc) is the global allocator. Decided by
/// allocating one block through the global allocator and seeing whether it passed through the
/// counters (a counter that has seen allocations does not tell: a `CountingAlloc` used
/// directly, not as the global allocator, sees some). Cached: the global allocator is fixed.
pub(crate) fn installed() -> bool {
    // 0: not probed yet; 1: installed; 2: not installed.
    static INSTALLED: AtomicU8 = AtomicU8::new(0);
    match INSTALLED.load(Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let _paused = pause();
    let hits_before = LOCAL.with(|l| l.probe_hits.get());
    let layout = std::alloc::Layout::new::<u64>();
    // SAFETY: the layout has a non-zero size; the block is freed right away with that layout.
    unsafe {
        let p = std::hint::black_box(std::alloc::alloc(layout));
        if !p.is_null() {
            std::alloc::dealloc(p, layout);
        }
    }
    let seen = LOCAL.with(|l| l.probe_hits.get()) != hits_before;
    INSTALLED.store(if seen { 1 } else { 2 }, Ordering::Relaxed);
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    // The unit-test binary's global allocator is `System`: only these tests feed the counters,
    // by calling `count` themselves. One test, so that nothing else counts meanwhile.
    #[test]
    fn counts_survive_exited_threads_whose_slots_are_reused_and_pauses_are_not_counted() {
        let before = read();
        for _ in 0..300 {
            std::thread::spawn(|| {
                count(Event::Alloc(8));
                count(Event::Alloc(24));
                count(Event::Free(24));
                count(Event::Resize { from: 8, to: 16 });
                let _paused = pause();
                count(Event::Alloc(1000));
            })
            .join()
            .unwrap();
        }
        let after = read();
        assert_eq!(after.blocks - before.blocks, 300);
        assert_eq!(after.bytes - before.bytes, 300 * 16);
        assert_eq!(after.allocs - before.allocs, 600);
        #[cfg(target_os = "linux")]
        assert!(
            CLAIMED.load(Ordering::SeqCst) < 64,
            "{} slots for threads that ran one at a time",
            CLAIMED.load(Ordering::SeqCst)
        );
        // A reading without one thread's slot leaves out what that thread counted.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            count(Event::Alloc(8));
            tx.send(thread_id()).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let with = read();
        let without = read_without(tid);
        drop(done_tx);
        t.join().unwrap();
        if tid.is_some() {
            assert_eq!(with.blocks - without.blocks, 1);
        }
    }
}
