//! The lock-free tables the creation hooks record into: per entry a key, an optional tag and up
//! to [`FRAMES`] unresolved return addresses.
//!
//! Every hook (`pthread_create`, the fd- and process-creating calls) runs inside code it does
//! not control: a global allocator, a thread that is about to `fork`, a signal-free but
//! otherwise arbitrary context. So a table is a static array of atomics: claiming, writing and
//! reading an entry take no lock (a child forked while another thread writes never waits on
//! it) and never allocate (only a reader, on the failure path, copies into a `Vec`).
//!
//! Two ways to place an entry, by what keys it:
//! - [`Table::claim`] + [`Entry::publish`] + [`Table::find`]: a free entry anywhere, found
//!   again by a scan for its key. Threads (keyed by tid) use it: an entry lives exactly as long
//!   as its thread, which frees it on exit.
//! - [`Table::record`] + [`Table::get`]: an entry at a fixed index, overwritten by the next
//!   record there. fds use the fd number itself as the index (an fd's site is that of the call
//!   that last created that number); child processes use the pid modulo the table's size, with
//!   the pid as the key, so a collision replaces an older child's entry and a read for the
//!   older pid finds nothing rather than a wrong site.
//!
//! A reader copies an entry and keeps the copy only if the entry's generation did not move
//! while it copied (a seqlock): a concurrent rewrite is discarded, never mixed in.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Return addresses kept per entry, innermost first (the hook's own frames included).
pub(crate) const FRAMES: usize = 40;

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const LIVE: u32 = 2;

/// One recorded creation.
pub(crate) struct Entry {
    state: AtomicU32,
    key: AtomicU32,
    /// Bumped on every claim (by one) and around every record (odd while being written): a
    /// reader that sees it change while copying discards the copy.
    generation: AtomicU64,
    /// A second identity the reader must match (an fd's inode), 0 where unused.
    tag: AtomicU64,
    len: AtomicUsize,
    ips: [AtomicUsize; FRAMES],
}

impl Entry {
    const fn new() -> Self {
        Entry {
            state: AtomicU32::new(FREE),
            key: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            tag: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            ips: [const { AtomicUsize::new(0) }; FRAMES],
        }
    }

    /// Makes a claimed entry findable under `key`.
    pub(crate) fn publish(&self, key: u32) {
        self.key.store(key, Ordering::Relaxed);
        self.state.store(LIVE, Ordering::Release);
    }

    /// Re-keys a live entry (the forking thread's entry in the child of a `fork`).
    pub(crate) fn rekey(&self, key: u32) {
        self.key.store(key, Ordering::Relaxed);
    }

    /// Frees the entry for the next claim.
    pub(crate) fn release(&self) {
        self.key.store(0, Ordering::Relaxed);
        self.state.store(FREE, Ordering::Release);
    }

    /// True while the entry is claimed or published.
    pub(crate) fn in_use(&self) -> bool {
        self.state.load(Ordering::Relaxed) != FREE
    }

    /// Records the caller's return addresses, innermost first, without resolving them.
    ///
    /// Only from a hook, with the re-entry flag set (see [`enter`]): unsynchronized tracing is
    /// safe as long as no other backtrace call of this thread is in progress.
    pub(crate) fn capture(&self) {
        let mut n = 0;
        // SAFETY: see above; the unwinder takes no lock and allocates nothing, which keeps
        // `fork` and counting allocators safe.
        unsafe {
            backtrace::trace_unsynchronized(|frame| {
                self.ips[n].store(frame.ip() as usize, Ordering::Relaxed);
                n += 1;
                n < FRAMES
            });
        }
        self.len.store(n, Ordering::Relaxed);
    }

    /// A consistent copy of the entry's addresses if it is live under `key` (and `tag`, when
    /// given).
    fn read(&self, key: u32, tag: Option<u64>) -> Option<Vec<usize>> {
        if self.state.load(Ordering::Acquire) != LIVE || self.key.load(Ordering::Relaxed) != key {
            return None;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if generation % 2 == 1 {
            return None; // being rewritten
        }
        let entry_tag = self.tag.load(Ordering::Relaxed);
        let len = self.len.load(Ordering::Relaxed).min(FRAMES);
        let ips: Vec<usize> = self.ips[..len]
            .iter()
            .map(|ip| ip.load(Ordering::Relaxed))
            .collect();
        fence(Ordering::Acquire);
        let same = self.generation.load(Ordering::Relaxed) == generation
            && self.state.load(Ordering::Relaxed) == LIVE
            && self.key.load(Ordering::Relaxed) == key
            && tag.is_none_or(|tag| tag == entry_tag);
        same.then_some(ips)
    }
}

/// `N` entries in a static, placed by claim (keyed by scan) or by index (see the module docs).
pub(crate) struct Table<const N: usize> {
    entries: [Entry; N],
    /// Where the next claim starts looking.
    hint: AtomicUsize,
}

impl<const N: usize> Table<N> {
    /// An empty table (for a `static`).
    pub(crate) const fn new() -> Self {
        Table {
            entries: [const { Entry::new() }; N],
            hint: AtomicUsize::new(0),
        }
    }

    /// The entry at `index` (as returned by [`Table::claim`] or given to [`Table::record`]).
    pub(crate) fn entry(&self, index: usize) -> &Entry {
        &self.entries[index]
    }

    /// All entries, for a sweep (the fork handler's).
    pub(crate) fn entries(&self) -> &[Entry; N] {
        &self.entries
    }

    /// Claims a free entry; `None` when all `N` are in use. The caller fills it
    /// ([`Entry::capture`]) and then publishes or releases it.
    pub(crate) fn claim(&self) -> Option<usize> {
        let hint = self.hint.load(Ordering::Relaxed);
        for i in 0..N {
            let idx = (hint + i) % N;
            let entry = &self.entries[idx];
            if entry.state.load(Ordering::Relaxed) == FREE
                && entry
                    .state
                    .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.hint.store(idx + 1, Ordering::Relaxed);
                entry.generation.fetch_add(2, Ordering::AcqRel);
                // The frames are stored with relaxed ordering after this: the fence keeps them
                // from being seen before the new generation on weakly ordered CPUs.
                fence(Ordering::Release);
                return Some(idx);
            }
        }
        None
    }

    /// The addresses of the live entry keyed `key`, found by a scan (claimed entries).
    #[cfg(test)]
    pub(crate) fn find(&self, key: u32) -> Option<Vec<usize>> {
        self.find_index(key).map(|(_, ips)| ips)
    }

    /// The index and addresses of the live entry keyed `key`, found by a scan.
    pub(crate) fn find_index(&self, key: u32) -> Option<(usize, Vec<usize>)> {
        self.entries
            .iter()
            .enumerate()
            .find_map(|(i, entry)| Some((i, entry.read(key, None)?)))
    }

    /// Records the caller's backtrace at `index` under `key` and `tag`, replacing what was
    /// there. False (nothing recorded) when `index` is out of range or another thread is
    /// writing the same entry at this moment.
    pub(crate) fn record(&self, index: usize, key: u32, tag: u64) -> bool {
        let Some(entry) = self.entries.get(index) else {
            return false;
        };
        let generation = entry.generation.load(Ordering::Relaxed);
        if generation % 2 == 1
            || entry
                .generation
                .compare_exchange(
                    generation,
                    generation + 1,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return false;
        }
        fence(Ordering::Release);
        entry.key.store(key, Ordering::Relaxed);
        entry.tag.store(tag, Ordering::Relaxed);
        entry.capture();
        entry.state.store(LIVE, Ordering::Relaxed);
        entry.generation.store(generation + 2, Ordering::Release);
        true
    }

    /// Forgets the entry at `index` (its fd was closed): a later read finds nothing.
    pub(crate) fn clear(&self, index: usize) {
        if let Some(entry) = self.entries.get(index) {
            if entry.state.load(Ordering::Relaxed) != FREE {
                entry.state.store(FREE, Ordering::Release);
            }
        }
    }

    /// The addresses recorded at `index` if they are still keyed `key` (and tagged `tag`).
    pub(crate) fn get(&self, index: usize, key: u32, tag: Option<u64>) -> Option<Vec<usize>> {
        self.entries.get(index)?.read(key, tag)
    }
}

/// Whether the hooks record (see [`enable`]).
static RECORDING: AtomicBool = AtomicBool::new(false);

/// Starts recording creations of every kind from now on. Items created before are not
/// recorded (a report says so).
pub(crate) fn enable() {
    RECORDING.store(true, Ordering::Relaxed);
}

/// True once a check has turned recording on: every hook asks before it records.
#[inline(always)]
pub(crate) fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

thread_local! {
    /// Set while this thread is inside a hook: a creation nested in the hook's own work (from
    /// an allocator, the unwinder or `dlsym`) is forwarded without being recorded.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as inside a hook; `None` if it already was (then forward, record
/// nothing). The mark is removed when the guard drops.
pub(crate) fn enter() -> Option<Inside> {
    // `try_with`: a hook may run while the thread's locals are being torn down.
    match INSIDE.try_with(|inside| inside.replace(true)) {
        Ok(false) => Some(Inside(())),
        _ => None,
    }
}

/// Proof that this thread is inside a hook (see [`enter`]).
pub(crate) struct Inside(());

impl Drop for Inside {
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|inside| inside.set(false));
    }
}

/// glibc's definition of a symbol this crate also defines, looked up once through
/// `dlsym(RTLD_NEXT)` and kept in `cache`; 0 where there is none (a static binary).
pub(crate) fn next_symbol(cache: &AtomicUsize, name: &std::ffi::CStr) -> usize {
    let mut f = cache.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: a NUL-terminated name; RTLD_NEXT finds the definition after this object's.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        if f != 0 {
            cache.store(f, Ordering::Release);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn record_here(table: &Table<8>, index: usize, key: u32, tag: u64) -> bool {
        let _inside = enter().expect("not nested");
        table.record(index, key, tag)
    }

    #[test]
    fn a_record_is_read_back_under_its_key_and_tag_only() {
        static T: Table<8> = Table::new();
        assert!(record_here(&T, 3, 42, 7));
        let ips = T.get(3, 42, Some(7)).expect("recorded");
        assert!(ips.len() > 2, "{ips:?}");
        assert_eq!(T.get(3, 42, None), Some(ips));
        assert_eq!(T.get(3, 43, None), None, "another key");
        assert_eq!(T.get(3, 42, Some(8)), None, "another tag");
        assert_eq!(T.get(99, 42, None), None, "out of range");
        assert!(!record_here(&T, 8, 1, 0), "out of range");
        T.clear(3);
        assert_eq!(T.get(3, 42, None), None, "cleared");
    }

    #[test]
    fn claimed_entries_are_found_by_key_until_released() {
        static T: Table<2> = Table::new();
        let a = T.claim().unwrap();
        let b = T.claim().unwrap();
        assert_ne!(a, b);
        assert_eq!(T.claim(), None, "full");
        {
            let _inside = enter().unwrap();
            T.entry(a).capture();
        }
        assert_eq!(T.find(5), None, "not yet published");
        T.entry(a).publish(5);
        assert!(T.find(5).is_some_and(|ips| !ips.is_empty()));
        T.entry(a).release();
        assert_eq!(T.find(5), None);
        assert!(T.claim().is_some(), "a released entry is claimed again");
    }

    #[test]
    fn enter_refuses_nesting() {
        let outer = enter().unwrap();
        assert!(enter().is_none());
        drop(outer);
        assert!(enter().is_some());
    }
}
