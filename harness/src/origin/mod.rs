//! Origins: where a leaked thread or task was created, and what a leaked thread is doing.
//!
//! A count says that something leaked; an origin says where to look. Everything here runs on
//! the failure path only, for the threads and tasks a report names: a clean check never
//! resolves a symbol or reads a thread's state.
//!
//! - `spawn_hook` (feature `origins`, on by default; Linux with glibc): every thread creation
//!   of the process records its return addresses, unresolved, and its creator's kernel name,
//!   from the moment a check turns recording on ([`enable`]).
//! - `fd_hook`, `child_hook` (the same feature, on x86_64 and aarch64): every fd- and
//!   process-creating call of the C library records its return addresses by fd number / pid,
//!   from the same moment.
//! - `table`: the lock-free static tables those hooks record into, and the switch that turns
//!   recording on.
//! - `frames`: from those, the user's own `file:line`, the library frame that made the
//!   item, the function that created it and whether a one-time initializer did.
//! - `resolve`: addresses to frames and a site, once per distinct backtrace, for every kind.
//! - `state`: what a thread is blocked in, from `/proc/self/task/<tid>`, and when a timed
//!   wait ends.
//! - `sample` (feature `origins`, Linux with glibc): a leaked thread's current stack, taken by
//!   a signal, for where it waits: `waiting at src/pool.rs:52 in
//!   std::sync::mpsc::Receiver::recv`.
//! - `sockets`: a leaked socket fd by protocol, addresses and state (`/proc/net/*`).
//! - `tasks` (`--cfg tokio_unstable`): the spawn site of each live task of an instrumented
//!   runtime, spawned from inside it or from a plain thread.
//! - `dump` (feature `task-dumps` under `--cfg tokio_unstable --cfg tokio_taskdump`, Linux
//!   x86_64 and aarch64): where each leaked task awaits, from a dump of its runtime taken
//!   with a deadline: `awaiting at src/svc.rs:88 in tokio::sync::mpsc::Receiver::recv`.

#[cfg(all(origins, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod child_hook;
#[cfg(task_dumps)]
pub(crate) mod dump;
#[cfg(all(origins, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod fd_hook;
#[cfg_attr(not(origins), allow(dead_code))]
pub(crate) mod frames;
#[cfg(origins)]
pub(crate) mod resolve;
#[cfg(origins)]
mod sample;
#[cfg(target_os = "linux")]
mod sockets;
#[cfg(origins)]
mod spawn_hook;
#[cfg(target_os = "linux")]
mod state;
#[cfg(origins)]
mod table;
#[cfg(all(feature = "tokio", tokio_unstable))]
pub(crate) mod tasks;

#[cfg(all(feature = "tokio", tokio_unstable))]
pub use tasks::{instrument, instrument_with};

#[cfg(task_dumps)]
pub use dump::dump_tasks;

#[cfg(target_os = "linux")]
pub(crate) use state::Timed;
#[cfg(not(target_os = "linux"))]
pub(crate) use timed_elsewhere::Timed;

/// No thread state is read off Linux: a timed wait is never seen.
#[cfg(not(target_os = "linux"))]
mod timed_elsewhere {
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Timed {}
    impl Timed {
        pub(crate) fn bound(self) -> std::time::Duration {
            match self {}
        }
        pub(crate) fn later(self, _: Timed) -> Option<Timed> {
            match self {}
        }
        pub(crate) fn is_absolute(self) -> bool {
            match self {}
        }
    }
    impl std::fmt::Display for Timed {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match *self {}
        }
    }
}

/// Turns creation sites off at run time when set to `0`.
#[cfg_attr(not(origins), allow(dead_code))]
const ORIGINS_ENV: &str = "LEAKCHECK_ORIGINS";

/// Where a thread was created and what it is doing, as far as this build can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ThreadOrigin {
    /// `spawned at tests/a.rs:12`, `spawn site not recorded (…)`; `None` without the
    /// `origins` feature.
    pub(crate) site: Option<String>,
    /// Where it waits now, from a sample of its stack: `waiting at src/pool.rs:52 in
    /// std::sync::mpsc::Receiver::recv`; `None` without the `origins` feature (or off Linux).
    pub(crate) waiting: Option<String>,
    /// `blocked in futex`; `None` where it cannot be read.
    pub(crate) state: Option<String>,
    /// When a timed wait ends (Linux).
    pub(crate) timed: Option<Timed>,
    /// Every resolved frame of the creation (`function at file:line`), innermost first.
    pub(crate) backtrace: Vec<String>,
}

/// What the creation of one live thread says about it, where it was recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Creation {
    /// `spawned at tests/a.rs:12 via …`.
    pub(crate) site: String,
    /// Every resolved frame (`function at file:line`), innermost first.
    pub(crate) backtrace: Vec<String>,
    /// Made inside a one-time initializer: the name of its `global:` line.
    pub(crate) global: Option<String>,
    /// The path of the function that created it.
    pub(crate) created_by: Option<String>,
    /// Its kernel name is still the one it inherited from its creator: it never named itself.
    pub(crate) unnamed: bool,
}

/// What this build knows of thread `tid`: the spawn site and where it waits (with `origins`),
/// and the state.
#[allow(dead_code)] // the one-call form, for tests
pub(crate) fn thread_origin(tid: u32) -> ThreadOrigin {
    thread_origin_in(tid, thread_state(tid))
}

/// What thread `tid` is doing (and when a timed wait ends): read for every leaked thread
/// before any origin is resolved, since the first resolution loads debug info (up to seconds)
/// and a timed wait's end is counted from the reading.
pub(crate) fn thread_state(_tid: u32) -> Option<(String, Option<Timed>)> {
    #[cfg(target_os = "linux")]
    {
        state::thread_state(_tid).map(|s| (s.text, s.timed))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// `thread_origin`, with the state already read.
pub(crate) fn thread_origin_in(tid: u32, state: Option<(String, Option<Timed>)>) -> ThreadOrigin {
    let (state, timed) = match state {
        Some((text, timed)) => (Some(text), timed),
        None => (None, None),
    };
    let (site, backtrace) = match spawn_site(tid) {
        Some((site, backtrace)) => (Some(site), backtrace),
        None => (None, Vec::new()),
    };
    ThreadOrigin {
        site,
        waiting: waiting(tid),
        state,
        timed,
        backtrace,
    }
}

/// Where thread `tid` waits now, from a sample of its stack (`waiting at src/pool.rs:52 in
/// std::sync::mpsc::Receiver::recv`), or what kept it from being sampled; `None` for a
/// thread that is gone, or where this build takes no samples.
fn waiting(tid: u32) -> Option<String> {
    #[cfg(origins)]
    {
        let ips = match sample::sample(tid) {
            Ok(ips) => ips,
            Err(sample::Unsampled::Gone) => return None,
            Err(why) => return Some(why.to_string()),
        };
        // `resolve` resolves each distinct list of addresses once per process.
        Some(frames::Waiting::pick(&resolve::resolve(&ips).frames).to_string())
    }
    #[cfg(not(origins))]
    {
        let _ = tid;
        None
    }
}

/// How many frames a sample of thread `tid`'s stack holds, unresolved; `None` when it could
/// not be sampled. For the benches: what a report pays per leaked thread before resolving.
#[cfg(origins)]
pub fn sample_frames(tid: u32) -> Option<usize> {
    sample::sample(tid).ok().map(|ips| ips.len())
}

/// Leaked fd targets with each `socket:[N]` named by protocol, addresses and state where the
/// kernel's tables list it (Linux; elsewhere the labels are returned as they are).
pub(crate) fn name_sockets(labels: Vec<String>) -> Vec<String> {
    #[cfg(target_os = "linux")]
    {
        sockets::name_sockets(labels)
    }
    #[cfg(not(target_os = "linux"))]
    {
        labels
    }
}

/// Starts recording thread, fd and child-process creations, unless `LEAKCHECK_ORIGINS=0` or this build records
/// none. Every check calls it: threads created before the first check of a process have no
/// recorded site.
pub(crate) fn enable() {
    #[cfg(origins)]
    {
        static DECIDED: std::sync::Once = std::sync::Once::new();
        DECIDED.call_once(|| {
            if !origins_off() {
                table::enable();
            }
        });
    }
}

/// The spawn site of thread `tid` and its full resolved backtrace, or `None` where this build
/// records no spawn sites.
fn spawn_site(tid: u32) -> Option<(String, Vec<String>)> {
    #[cfg(origins)]
    {
        if let Some(creation) = creation(tid) {
            return Some((creation.site, creation.backtrace));
        }
        let why = if origins_off() {
            "spawn site not recorded: LEAKCHECK_ORIGINS=0"
        } else if spawn_hook::hook_seen() {
            "spawn site not recorded: started before the first check, not through \
             pthread_create, or beyond the table's live threads"
        } else {
            "spawn site not recorded: the pthread_create hook is not linked in"
        };
        Some((why.to_owned(), Vec::new()))
    }
    #[cfg(not(origins))]
    {
        let _ = tid;
        None
    }
}

/// What the recorded creation of thread `tid` says, or `None` where it was not recorded (or
/// this build records nothing).
pub(crate) fn creation(tid: u32) -> Option<Creation> {
    #[cfg(origins)]
    {
        let record = spawn_hook::spawn_record(tid)?;
        let unnamed = !record.creator_name.is_empty()
            && crate::sys::thread_name(tid).is_some_and(|n| n.as_bytes() == record.creator_name);
        // `resolve` resolves each distinct list of addresses once per process.
        let known = resolve_creation(&record.ips);
        Some(Creation { unnamed, ..known })
    }
    #[cfg(not(origins))]
    {
        let _ = tid;
        None
    }
}

#[cfg(origins)]
fn resolve_creation(ips: &[usize]) -> Creation {
    let resolved = resolve::resolve(ips);
    Creation {
        global: resolved.site.once_global(),
        created_by: resolved.site.created_by().map(str::to_owned),
        site: resolved.describe(resolve::Verb::Spawned),
        backtrace: resolved.backtrace(),
        unnamed: false,
    }
}

/// True where `LEAKCHECK_ORIGINS=0` turned recording off.
#[cfg(origins)]
fn origins_off() -> bool {
    std::env::var_os(ORIGINS_ENV).is_some_and(|v| v == "0")
}

/// Where fd `fd` was created (`opened at src/a.rs:9`), the full resolved backtrace, and the
/// `global:` name where a one-time initializer made it; `None` where this build records no
/// fd sites.
pub(crate) fn fd_origin(_fd: u32) -> Option<Made> {
    #[cfg(all(origins, any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let Some(ips) = fd_hook::fd_ips(_fd) else {
            let why = if origins_off() {
                "open site not recorded: LEAKCHECK_ORIGINS=0"
            } else if fd_hook::hook_seen() {
                "open site not recorded: made by a call the hooks do not see (inside glibc, a \
                 raw syscall, a shared library), before the first check, or numbered beyond \
                 the table"
            } else {
                "open site not recorded: the fd hooks are not linked in"
            };
            return Some(Made::unrecorded(why));
        };
        Some(Made::from(resolve::resolve(&ips), resolve::Verb::Opened))
    }
    #[cfg(not(all(origins, any(target_arch = "x86_64", target_arch = "aarch64"))))]
    None
}

/// Where child process `pid` was spawned (`spawned at src/a.rs:9`), the full resolved
/// backtrace and the `global:` name where a one-time initializer spawned it; `None` where this
/// build records no child sites.
pub(crate) fn child_origin(_pid: u32) -> Option<Made> {
    #[cfg(all(origins, any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let Some(ips) = child_hook::child_ips(_pid) else {
            let why = if origins_off() {
                "spawn site not recorded: LEAKCHECK_ORIGINS=0"
            } else if child_hook::hook_seen() {
                "spawn site not recorded: spawned before the first check, not through \
                 posix_spawn or fork, or its entry was taken by a later child"
            } else {
                "spawn site not recorded: the process hooks are not linked in"
            };
            return Some(Made::unrecorded(why));
        };
        Some(Made::from(resolve::resolve(&ips), resolve::Verb::Spawned))
    }
    #[cfg(not(all(origins, any(target_arch = "x86_64", target_arch = "aarch64"))))]
    None
}

/// The recorded creation of fd `fd`, unresolved: a table lookup and one `fstat`, cheap enough
/// for the settle loop. `None` where it was not recorded or this build records no fd sites.
pub(crate) fn fd_record(_fd: u32) -> Option<Vec<usize>> {
    #[cfg(all(origins, any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        fd_hook::fd_ips(_fd)
    }
    #[cfg(not(all(origins, any(target_arch = "x86_64", target_arch = "aarch64"))))]
    None
}

/// The recorded spawn of child process `pid`, unresolved: a table lookup, cheap enough for the
/// settle loop. `None` where it was not recorded or this build records no child sites.
pub(crate) fn child_record(_pid: u32) -> Option<Vec<usize>> {
    #[cfg(all(origins, any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        child_hook::child_ips(_pid)
    }
    #[cfg(not(all(origins, any(target_arch = "x86_64", target_arch = "aarch64"))))]
    None
}

/// The `global:` name of a recorded creation made inside a one-time initializer, `None` for
/// any other. Resolves the addresses (once per distinct list in the process): never call it
/// while settling.
pub(crate) fn once_global(_ips: &[usize]) -> Option<String> {
    #[cfg(origins)]
    {
        resolve::resolve(_ips).site.once_global()
    }
    #[cfg(not(origins))]
    None
}

/// Where an fd or a child process was made, as a report shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Made {
    /// `opened at src/a.rs:9`, `spawned at …`, or why it is not known.
    pub(crate) site: String,
    /// Every resolved frame (`function at file:line`), innermost first.
    pub(crate) backtrace: Vec<String>,
    /// Made inside a one-time initializer: the name of its `global:` line.
    pub(crate) global: Option<String>,
}

#[cfg_attr(
    not(all(origins, any(target_arch = "x86_64", target_arch = "aarch64"))),
    allow(dead_code)
)]
impl Made {
    fn unrecorded(why: &str) -> Made {
        Made {
            site: why.to_owned(),
            ..Made::default()
        }
    }

    #[cfg(origins)]
    fn from(resolved: resolve::Resolved, verb: resolve::Verb) -> Made {
        Made {
            site: resolved.describe(verb),
            backtrace: resolved.backtrace(),
            global: resolved.site.once_global(),
        }
    }
}

/// Keeps the creation hooks in the link (see `spawn_hook::keep_linked`).
pub(crate) fn keep_linked() {
    #[cfg(origins)]
    spawn_hook::keep_linked();
    #[cfg(all(origins, any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        fd_hook::keep_linked();
        child_hook::keep_linked();
    }
}

#[cfg(all(test, origins))]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn gettid() -> u32 {
        // SAFETY: gettid cannot fail.
        unsafe { libc::gettid() as u32 }
    }

    #[test]
    fn a_planted_thread_is_named_by_its_spawn_line() {
        enable();
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
                "spawn site not recorded: started before the first check, not through \
                 pthread_create, or beyond the table's live threads"
            )
        );
    }
}
