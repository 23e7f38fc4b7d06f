//! Origins: where a leaked thread or task was created, and what a leaked thread is doing.
//!
//! A count says that something leaked; an origin says where to look. Everything here runs on
//! the failure path only, for the threads and tasks a report names: a clean check never
//! resolves a symbol or reads a thread's state.
//!
//! - `spawn_hook` (feature `spawn-sites`, Linux with glibc): every thread creation of the
//!   process records its return addresses, unresolved.
//! - `frames`: from those, the user's own `file:line` and the library frame that made the
//!   thread.
//! - `state`: what a thread is blocked in, from `/proc/self/task/<tid>`, and when a timed
//!   wait ends.
//! - `sample` (feature `origins`, Linux): a leaked thread's current stack, taken by a signal,
//!   for where it waits: `waiting at src/pool.rs:52 in std::sync::mpsc::Receiver::recv`.
//! - `sockets`: a leaked socket fd by protocol, addresses and state (`/proc/net/*`).
//! - `tasks` (`--cfg tokio_unstable`): the spawn site of each live task of an instrumented
//!   runtime.

#[cfg_attr(not(spawn_sites), allow(dead_code))]
mod frames;
#[cfg(all(target_os = "linux", feature = "origins"))]
mod sample;
#[cfg(target_os = "linux")]
mod sockets;
#[cfg(spawn_sites)]
mod spawn_hook;
#[cfg(target_os = "linux")]
mod state;
#[cfg(all(feature = "tokio", tokio_unstable))]
pub(crate) mod tasks;

#[cfg(all(feature = "tokio", tokio_unstable))]
pub use tasks::{instrument, instrument_with};

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

/// Where a thread was created and what it is doing, as far as this build can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ThreadOrigin {
    /// `spawned at tests/a.rs:12`, `spawn site not recorded (…)`; `None` without the
    /// `spawn-sites` feature.
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

/// What this build knows of thread `tid`: the spawn site (with `spawn-sites`), where it waits
/// (with `origins`) and the state.
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

/// The spawn site of thread `tid` and its full resolved backtrace, or `None` where this build
/// records no spawn sites.
#[cfg(spawn_sites)]
fn spawn_site(tid: u32) -> Option<(String, Vec<String>)> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    /// A spawn site and its full backtrace, by the return addresses they were resolved from.
    type Resolved = HashMap<Vec<usize>, (String, Vec<String>)>;
    // Threads made by the same code have the same addresses: resolve each list once.
    static RESOLVED: Mutex<Option<Resolved>> = Mutex::new(None);

    let Some(ips) = spawn_hook::spawn_ips(tid) else {
        let why = if spawn_hook::hook_seen() {
            "spawn site not recorded: started before the hook, not through pthread_create, \
             or beyond the table's live threads"
        } else {
            "spawn site not recorded: the pthread_create hook is not linked in"
        };
        return Some((why.to_owned(), Vec::new()));
    };
    let mut cache = RESOLVED.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(known) = cache.get(&ips) {
        return Some(known.clone());
    }
    let frames = resolve(&ips);
    let site = frames::Site::pick(&frames).to_string();
    let full = frames
        .iter()
        .map(|f| {
            let name = f.name.as_deref().unwrap_or("<unknown>");
            match (&f.file, f.line) {
                (Some(file), Some(line)) => format!(
                    "{name} at {}:{line}",
                    frames::short_path(file, frames::source_root())
                ),
                _ => name.to_owned(),
            }
        })
        .collect();
    let resolved = (site, full);
    cache.insert(ips, resolved.clone());
    Some(resolved)
}

#[cfg(not(spawn_sites))]
fn spawn_site(_tid: u32) -> Option<(String, Vec<String>)> {
    None
}

/// Where thread `tid` waits now, from a sample of its stack (`waiting at src/pool.rs:52 in
/// std::sync::mpsc::Receiver::recv`), or what kept it from being sampled; `None` for a
/// thread that is gone, or where this build takes no samples.
fn waiting(tid: u32) -> Option<String> {
    #[cfg(all(target_os = "linux", feature = "origins"))]
    {
        use std::collections::HashMap;
        use std::sync::Mutex;
        // Threads stuck in the same place have the same addresses: resolve each list once.
        static RESOLVED: Mutex<Option<HashMap<Vec<usize>, String>>> = Mutex::new(None);
        let ips = match sample::sample(tid) {
            Ok(ips) => ips,
            Err(sample::Unsampled::Gone) => return None,
            Err(why) => return Some(why.to_string()),
        };
        let mut cache = RESOLVED.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.get_or_insert_with(HashMap::new);
        if let Some(known) = cache.get(&ips) {
            return Some(known.clone());
        }
        let waiting = frames::Waiting::pick(&resolve(&ips)).to_string();
        cache.insert(ips, waiting.clone());
        Some(waiting)
    }
    #[cfg(not(all(target_os = "linux", feature = "origins")))]
    {
        let _ = tid;
        None
    }
}

/// How many frames a sample of thread `tid`'s stack holds, unresolved; `None` when it could
/// not be sampled. For the benches: what a report pays per leaked thread before resolving.
#[cfg(all(target_os = "linux", feature = "origins"))]
pub fn sample_frames(tid: u32) -> Option<usize> {
    sample::sample(tid).ok().map(|ips| ips.len())
}

/// Resolves return addresses to frames (several per address where calls were inlined),
/// with paths shortened for a report.
#[cfg(all(target_os = "linux", feature = "origins"))]
fn resolve(ips: &[usize]) -> Vec<frames::Frame> {
    let mut out = Vec::new();
    for &ip in ips {
        backtrace::resolve(ip as *mut std::ffi::c_void, |sym| {
            out.push(frames::Frame {
                name: sym.name().map(|n| format!("{n:#}")),
                file: sym.filename().map(|p| p.to_string_lossy().into_owned()),
                line: sym.lineno(),
            });
        });
    }
    out
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

/// Keeps the `pthread_create` hook in the link (see `spawn_hook::keep_linked`).
pub(crate) fn keep_linked() {
    #[cfg(spawn_sites)]
    spawn_hook::keep_linked();
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
