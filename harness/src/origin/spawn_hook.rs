//! Where each thread of the process was created: a `pthread_create` defined in this crate.
//!
//! Rust has no stable hook on thread creation, and `/proc` does not record a thread's creator.
//! But an executable that defines `pthread_create` itself is the first place the dynamic linker
//! looks for it, so std, tokio's pools, notify and any C code in the process call this
//! definition, which forwards to glibc's through `dlsym(RTLD_NEXT)`. On the way it records a
//! bounded list of return addresses (no symbols: resolving them costs 20–300 µs, spent only on
//! threads a report names) and the new thread's tid.
//!
//! What a hook inside every thread creation of a test process must survive:
//! - `fork` while another thread is spawning: the table is lock-free (atomics only), so a
//!   child never waits on a lock held by a thread it does not have; a `pthread_atfork` child
//!   handler drops the entries of the threads the child did not inherit.
//! - threads ended by `pthread_exit`, which never return to the start routine: a
//!   thread-specific-data destructor frees the entry on every way out, so a reused tid never
//!   inherits a dead thread's origin.
//! - a global allocator (a heap counter) or an allocator that starts threads: the hook
//!   never allocates, and a thread-local flag makes a nested creation a plain forward.
//! - threads started before `main` or by code that bypasses this symbol: they simply have no
//!   entry, and a report says so rather than guessing.
//!
//! The table (`table.rs`, claimed entries keyed by tid) holds [`SLOTS`] live threads; beyond
//! that, new threads are created as usual and go unrecorded.
//!
//! Recording is off until a check asks for it (`table::enable`): a test binary that links the
//! hook but runs no check (the parent of isolated tests, a suite's other tests) pays one atomic
//! load per thread creation and nothing else.
//!
//! Each entry also keeps the creating thread's kernel name at the moment of creation: on Linux a
//! new thread inherits it, so a thread whose name still equals it never named itself (an unnamed
//! thread made on a test's thread would otherwise read as the test's name).

use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::table::{self, Table};

/// Live threads the table can hold.
pub(crate) const SLOTS: usize = 4096;

type Start = extern "C" fn(*mut c_void) -> *mut c_void;
type Create = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    Start,
    *mut c_void,
) -> libc::c_int;

/// Threads by tid: an entry is claimed by the creation, published with the tid by the new
/// thread, and freed when that thread exits.
static TABLE: Table<SLOTS> = Table::new();
/// The start routine and argument the caller gave for the thread of each entry.
static STARTS: [(AtomicUsize, AtomicUsize); SLOTS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; SLOTS];
/// The creating thread's kernel name (`comm`, 16 bytes with its NUL) for each entry.
static CREATORS: [[AtomicU64; 2]; SLOTS] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; SLOTS];
/// glibc's `pthread_create`, once looked up.
static REAL: AtomicUsize = AtomicUsize::new(0);
/// The thread-specific-data key whose destructor frees a thread's slot: 0 until made, then
/// key + 1.
static KEY: AtomicUsize = AtomicUsize::new(0);
/// How many creations went through the hook (to tell "not recorded" from "hook not linked").
static SEEN: AtomicU64 = AtomicU64::new(0);

/// Creates a thread: records where it was created, then forwards to glibc's `pthread_create`.
///
/// # Safety
/// The same contract as glibc's `pthread_create`.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: Start,
    arg: *mut c_void,
) -> libc::c_int {
    let Some(real) = real_create() else {
        return libc::EAGAIN;
    };
    let Some(_inside) = table::enter() else {
        // A creation nested inside the hook (from an allocator or the unwinder): forward it.
        return real(thread, attr, start, arg);
    };
    SEEN.fetch_add(1, Ordering::Relaxed);
    match (table::recording() && init_once())
        .then(|| TABLE.claim())
        .flatten()
    {
        None => real(thread, attr, start, arg),
        Some(index) => {
            let entry = TABLE.entry(index);
            entry.capture();
            record_creator(index);
            STARTS[index].0.store(start as usize, Ordering::Relaxed);
            STARTS[index].1.store(arg as usize, Ordering::Relaxed);
            // SAFETY: same calling convention; `trampoline` only unwinds what `start` unwinds.
            let tramp: Start = std::mem::transmute::<
                extern "C-unwind" fn(*mut c_void) -> *mut c_void,
                Start,
            >(trampoline);
            // The entry's index + 1 (never null: a null thread-specific value runs no
            // destructor).
            let rc = real(thread, attr, tramp, (index + 1) as *mut c_void);
            if rc != 0 {
                entry.release();
            }
            rc
        }
    }
}

/// The new thread's first code: publishes its tid, arranges for its entry to be freed on exit
/// (return or `pthread_exit`), and runs the real start routine.
extern "C-unwind" fn trampoline(p: *mut c_void) -> *mut c_void {
    let index = p as usize - 1;
    let start = STARTS[index].0.load(Ordering::Relaxed);
    let arg = STARTS[index].1.load(Ordering::Relaxed) as *mut c_void;
    // SAFETY: gettid cannot fail.
    TABLE.entry(index).publish(unsafe { libc::gettid() } as u32);
    if let Some(key) = key() {
        // SAFETY: the key was created by `init_once`; the value is index + 1, never null.
        unsafe { libc::pthread_setspecific(key, p) };
    }
    // SAFETY: `start` was stored from the `Start` the caller passed to `pthread_create`.
    let start: Start = unsafe { std::mem::transmute::<usize, Start>(start) };
    start(arg)
}

/// Thread-specific-data destructor: the thread is exiting, its entry is free again.
extern "C" fn on_thread_exit(p: *mut c_void) {
    if let Some(index) = (p as usize).checked_sub(1) {
        TABLE.entry(index).release();
    }
}

/// `pthread_atfork` child handler: only the forking thread lives on in the child.
extern "C" fn after_fork_in_child() {
    let own = key()
        // SAFETY: reading this thread's own value of a live key.
        .map(|key| unsafe { libc::pthread_getspecific(key) } as usize)
        .unwrap_or(0);
    for (i, entry) in TABLE.entries().iter().enumerate() {
        if i + 1 == own {
            // SAFETY: gettid cannot fail; the forking thread has a new tid in the child.
            entry.rekey(unsafe { libc::gettid() } as u32);
        } else if entry.in_use() {
            entry.release();
        }
    }
}

fn real_create() -> Option<Create> {
    match table::next_symbol(&REAL, c"pthread_create") {
        0 => None,
        // SAFETY: `f` is glibc's `pthread_create`, whose signature `Create` is.
        f => Some(unsafe { std::mem::transmute::<usize, Create>(f) }),
    }
}

/// Creates the exit key and registers the fork handler, once. False if the key cannot be
/// made (then threads go unrecorded: an entry that is never freed would give a wrong origin).
fn init_once() -> bool {
    static STATE: AtomicU32 = AtomicU32::new(0); // 0 new, 1 in progress, 2 ready, 3 failed
    loop {
        match STATE.compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                let mut key: libc::pthread_key_t = 0;
                // SAFETY: plain libc calls with valid arguments.
                let ok = unsafe {
                    libc::pthread_key_create(&mut key, Some(on_thread_exit)) == 0
                        && libc::pthread_atfork(None, None, Some(after_fork_in_child)) == 0
                };
                if ok {
                    KEY.store(key as usize + 1, Ordering::Release);
                }
                STATE.store(if ok { 2 } else { 3 }, Ordering::Release);
                return ok;
            }
            Err(2) => return true,
            Err(3) => return false,
            // Another thread is initialising (a few µs, once per process).
            Err(_) => std::hint::spin_loop(),
        }
    }
}

fn key() -> Option<libc::pthread_key_t> {
    match KEY.load(Ordering::Acquire) {
        0 => None,
        k => Some((k - 1) as libc::pthread_key_t),
    }
}

/// Stores the calling (creating) thread's kernel name for entry `index`.
fn record_creator(index: usize) {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into the buffer.
    if unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } != 0 {
        name = [0; 16];
    }
    let (lo, hi) = name.split_at(8);
    let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
    CREATORS[index][0].store(word(lo), Ordering::Relaxed);
    CREATORS[index][1].store(word(hi), Ordering::Relaxed);
}

/// What the hook recorded of one thread's creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// Return addresses, innermost first.
    pub(crate) ips: Vec<usize>,
    /// The creating thread's kernel name at the time, without the NUL (empty when unknown).
    pub(crate) creator_name: Vec<u8>,
}

/// What was recorded when thread `tid` was created, or `None` when it has no entry (created
/// before the hook or before recording was enabled, outside `pthread_create`, or the table was
/// full).
pub(crate) fn spawn_record(tid: u32) -> Option<Record> {
    let (index, ips) = TABLE.find_index(tid)?;
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(&CREATORS[index][0].load(Ordering::Relaxed).to_ne_bytes());
    name[8..].copy_from_slice(&CREATORS[index][1].load(Ordering::Relaxed).to_ne_bytes());
    // The name was written before the entry was published; an entry reused since the find
    // would have other addresses or another key.
    if TABLE.get(index, tid, None).as_ref() != Some(&ips) {
        return None;
    }
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(Record {
        ips,
        creator_name: name[..end].to_vec(),
    })
}

/// True once any thread creation went through the hook: the symbol is linked in and live.
pub(crate) fn hook_seen() -> bool {
    SEEN.load(Ordering::Relaxed) > 0
}

/// Keeps the hook in the link: an object file in an rlib is linked only when something
/// references it, and std's own reference to `pthread_create` comes after this crate on the
/// linker's command line. Called from code every check runs.
#[inline(never)]
pub(crate) fn keep_linked() {
    std::hint::black_box(pthread_create as *const () as usize);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;
    use std::time::{Duration, Instant};

    fn gettid() -> u32 {
        // SAFETY: gettid cannot fail.
        unsafe { libc::gettid() as u32 }
    }

    /// Creates a raw thread through the hook (this crate's `pthread_create`) and joins it.
    fn raw_thread(start: Start, arg: *mut c_void) -> *mut c_void {
        let mut thread: libc::pthread_t = 0;
        let mut ret = ptr::null_mut();
        // SAFETY: valid out-pointer, default attributes, a start routine that returns.
        unsafe {
            assert_eq!(pthread_create(&mut thread, ptr::null(), start, arg), 0);
            assert_eq!(libc::pthread_join(thread, &mut ret), 0);
        }
        ret
    }

    extern "C" fn tid_and_ips(out: *mut c_void) -> *mut c_void {
        let tid = gettid();
        let recorded = spawn_record(tid).map_or(0, |r| r.ips.len());
        // SAFETY: `out` points at a (u32, usize) owned by the joining caller.
        unsafe { *(out as *mut (u32, usize)) = (tid, recorded) };
        ptr::null_mut()
    }

    // "C-unwind": pthread_exit unwinds (forced) through the start routine's frame, which a
    // plain "C" Rust function turns into an abort.
    extern "C-unwind" fn exits_early(out: *mut c_void) -> *mut c_void {
        // SAFETY: as in `tid_and_ips`.
        unsafe { *(out as *mut (u32, usize)) = (gettid(), 0) };
        // SAFETY: no Rust frame with a destructor is live on this thread.
        unsafe { libc::pthread_exit(ptr::null_mut()) }
    }

    #[test]
    fn a_thread_is_recorded_while_alive_and_forgotten_when_it_returns() {
        table::enable();
        let mut out = (0u32, 0usize);
        raw_thread(tid_and_ips, &mut out as *mut _ as *mut c_void);
        let (tid, recorded) = out;
        assert!(recorded > 2, "the thread saw {recorded} recorded frames");
        assert_eq!(spawn_record(tid), None, "tid {tid} still has an entry");
    }

    #[test]
    fn a_thread_ended_by_pthread_exit_leaves_no_stale_entry() {
        table::enable();
        let mut out = (0u32, 0usize);
        // SAFETY: same calling convention (see `trampoline`).
        let start = unsafe {
            std::mem::transmute::<extern "C-unwind" fn(*mut c_void) -> *mut c_void, Start>(
                exits_early,
            )
        };
        raw_thread(start, &mut out as *mut _ as *mut c_void);
        assert_ne!(out.0, 0);
        assert_eq!(
            spawn_record(out.0),
            None,
            "a reused tid would inherit this entry"
        );
    }

    /// Forks while other threads keep creating threads, and creates a thread in each child:
    /// a lock held at the moment of the fork by a thread the child does not have would hang
    /// the child.
    #[test]
    fn fork_while_threads_are_being_created_never_hangs_the_child() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let spawners: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::spawn(|| ()).join().unwrap();
                    }
                })
            })
            .collect();
        extern "C" fn nothing(_: *mut c_void) -> *mut c_void {
            ptr::null_mut()
        }
        let mut hung = 0;
        for _ in 0..100 {
            // SAFETY: the child only makes async-signal-safe calls and the hook's own
            // (atomics, dlsym already resolved, the unwinder) before `_exit`.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let mut thread: libc::pthread_t = 0;
                // SAFETY: as in `raw_thread`; `_exit` skips the parent's atexit handlers.
                unsafe {
                    let rc = pthread_create(&mut thread, ptr::null(), nothing, ptr::null_mut());
                    if rc == 0 {
                        libc::pthread_join(thread, ptr::null_mut());
                    }
                    libc::_exit(if rc == 0 { 0 } else { 2 });
                }
            }
            assert!(pid > 0, "fork failed");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut status = 0;
            loop {
                // SAFETY: waiting for our own child.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    // A child killed by a signal has an exit status of 0 too.
                    assert!(
                        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                        "the child could not create a thread (wait status {status:#x})"
                    );
                    break;
                }
                if Instant::now() > deadline {
                    // SAFETY: killing and reaping our own hung child.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, &mut status, 0);
                    }
                    hung += 1;
                    break;
                }
                std::thread::yield_now();
            }
        }
        stop.store(true, Ordering::Relaxed);
        for s in spawners {
            s.join().unwrap();
        }
        assert_eq!(hung, 0, "{hung} of 100 children hung");
    }
}
