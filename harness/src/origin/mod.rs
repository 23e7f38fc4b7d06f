//! Origins: where a leaked thread or task was created, and what a leaked thread is doing.
//!
//! A count says that something leaked; an origin says where to look. Everything here runs on
//! the failure path only, for the threads and tasks a report names: a clean check never
//! resolves a symbol or reads a thread's state.
//!
//! - `spawn_hook` (feature `spawn-sites`, Linux with glibc): every thread creation of the
//!   process records its return addresses, unresolved.
//! - `table`: the lock-free static tables those hooks record into.
//! - `fd_hook`, `child_hook` (the same feature, on x86_64 and aarch64): every fd- and
//!   process-creating call of the C library records its return addresses by fd number / pid.
//! - `frames`: from those, the user's own `file:line` and the library frame that made the
//!   thread.
//! - `resolve`: addresses to frames and a site, once per distinct backtrace, for every kind.
//! - `state`: what a thread is blocked in, from `/proc/self/task/<tid>`.
//! - `tasks` (`--cfg tokio_unstable`): the spawn site of each live task of an instrumented
//!   runtime.

#[cfg(all(spawn_sites, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod child_hook;
#[cfg(all(spawn_sites, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod fd_hook;
#[cfg_attr(not(spawn_sites), allow(dead_code))]
mod frames;
#[cfg(spawn_sites)]
mod resolve;
#[cfg(spawn_sites)]
mod spawn_hook;
#[cfg(target_os = "linux")]
mod state;
#[cfg(spawn_sites)]
mod table;
#[cfg(all(feature = "tokio", tokio_unstable))]
pub(crate) mod tasks;

#[cfg(all(feature = "tokio", tokio_unstable))]
pub use tasks::{instrument, instrument_with};

/// Where a thread was created and what it is doing, as far as this build can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ThreadOrigin {
    /// `spawned at tests/a.rs:12`, `spawn site not recorded (…)`; `None` without the
    /// `spawn-sites` feature.
    pub(crate) site: Option<String>,
    /// `blocked in futex`; `None` where it cannot be read.
    pub(crate) state: Option<String>,
    /// Every resolved frame of the creation (`function at file:line`), innermost first.
    pub(crate) backtrace: Vec<String>,
}

/// What this build knows of thread `tid`: the spawn site (with `spawn-sites`) and the state.
pub(crate) fn thread_origin(tid: u32) -> ThreadOrigin {
    let (site, backtrace) = match spawn_site(tid) {
        Some((site, backtrace)) => (Some(site), backtrace),
        None => (None, Vec::new()),
    };
    ThreadOrigin {
        site,
        state: thread_state(tid),
        backtrace,
    }
}

/// The spawn site of thread `tid` and its full resolved backtrace, or `None` where this build
/// records no spawn sites.
#[cfg(spawn_sites)]
fn spawn_site(tid: u32) -> Option<(String, Vec<String>)> {
    let Some(ips) = spawn_hook::spawn_ips(tid) else {
        let why = if spawn_hook::hook_seen() {
            "spawn site not recorded: started before the hook, not through pthread_create, \
             or beyond the table's live threads"
        } else {
            "spawn site not recorded: the pthread_create hook is not linked in"
        };
        return Some((why.to_owned(), Vec::new()));
    };
    let resolved = resolve::resolve(&ips);
    Some((
        resolved.describe(resolve::Verb::Spawned),
        resolved.backtrace(),
    ))
}

#[cfg(not(spawn_sites))]
fn spawn_site(_tid: u32) -> Option<(String, Vec<String>)> {
    None
}

/// Where fd `fd` was created (`opened at src/a.rs:9`) and the full resolved backtrace; `None`
/// where this build records no fd sites.
pub(crate) fn fd_origin(_fd: u32) -> Option<(String, Vec<String>)> {
    #[cfg(all(spawn_sites, any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let Some(ips) = fd_hook::fd_ips(_fd) else {
            let why = if fd_hook::hook_seen() {
                "open site not recorded: made by a call the hooks do not see (inside glibc, a \
                 raw syscall, a shared library) or numbered beyond the table"
            } else {
                "open site not recorded: the fd hooks are not linked in"
            };
            return Some((why.to_owned(), Vec::new()));
        };
        let resolved = resolve::resolve(&ips);
        Some((
            resolved.describe(resolve::Verb::Opened),
            resolved.backtrace(),
        ))
    }
    #[cfg(not(all(spawn_sites, any(target_arch = "x86_64", target_arch = "aarch64"))))]
    None
}

/// Where child process `pid` was spawned (`spawned at src/a.rs:9`) and the full resolved
/// backtrace; `None` where this build records no child sites.
pub(crate) fn child_origin(_pid: u32) -> Option<(String, Vec<String>)> {
    #[cfg(all(spawn_sites, any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let Some(ips) = child_hook::child_ips(_pid) else {
            let why = if child_hook::hook_seen() {
                "spawn site not recorded: not spawned through posix_spawn or fork, or its \
                 entry was taken by a later child"
            } else {
                "spawn site not recorded: the process hooks are not linked in"
            };
            return Some((why.to_owned(), Vec::new()));
        };
        let resolved = resolve::resolve(&ips);
        Some((
            resolved.describe(resolve::Verb::Spawned),
            resolved.backtrace(),
        ))
    }
    #[cfg(not(all(spawn_sites, any(target_arch = "x86_64", target_arch = "aarch64"))))]
    None
}

/// Keeps the creation hooks in the link (see `spawn_hook::keep_linked`).
pub(crate) fn keep_linked() {
    #[cfg(spawn_sites)]
    spawn_hook::keep_linked();
    #[cfg(all(spawn_sites, any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        fd_hook::keep_linked();
        child_hook::keep_linked();
    }
}

fn thread_state(_tid: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        state::thread_state(_tid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(all(test, spawn_sites))]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn gettid() -> u32 {
        // SAFETY: gettid cannot fail.
        unsafe { libc::gettid() as u32 }
    }

    #[test]
    fn a_planted_thread_is_named_by_its_spawn_line() {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let line = line!() + 1;
        let t = std::thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            stop_rx.recv().ok();
        });
        let tid = tid_rx.recv().unwrap();
        let origin = thread_origin(tid);
        drop(stop_tx);
        t.join().unwrap();
        assert_eq!(
            origin.site.as_deref(),
            Some(format!("spawned at {}:{line}", file!()).as_str()),
            "{:#?}",
            origin.backtrace
        );
        assert!(
            origin
                .backtrace
                .iter()
                .any(|f| f.contains("pthread_create")),
            "{:#?}",
            origin.backtrace
        );
    }

    #[test]
    fn the_main_thread_has_no_recorded_site() {
        // SAFETY: getpid cannot fail; the main thread's tid is the pid.
        let main = unsafe { libc::getpid() } as u32;
        keep_linked();
        std::thread::spawn(|| ()).join().unwrap(); // the hook has been seen
        assert_eq!(
            thread_origin(main).site.as_deref(),
            Some(
                "spawn site not recorded: started before the hook, not through pthread_create, \
                 or beyond the table's live threads"
            )
        );
    }
}
