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
//! - `state`: what a thread is blocked in, from `/proc/self/task/<tid>`.
//! - `tasks` (`--cfg tokio_unstable`): the spawn site of each live task of an instrumented
//!   runtime.

#[cfg_attr(not(spawn_sites), allow(dead_code))]
pub(crate) mod frames;
#[cfg(spawn_sites)]
mod spawn_hook;
#[cfg(target_os = "linux")]
mod state;
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
    let resolved = resolve(&ips);
    let site = frames::Site::pick(&resolved.frames).to_string();
    Some((site, resolved.backtrace))
}

#[cfg(not(spawn_sites))]
fn spawn_site(_tid: u32) -> Option<(String, Vec<String>)> {
    None
}

/// Return addresses resolved: every frame (several per address where calls were inlined),
/// innermost first, and the same as a report prints a full backtrace.
#[cfg(target_os = "linux")]
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) frames: Vec<frames::Frame>,
    /// `function at file:line` per frame, paths shortened.
    pub(crate) backtrace: Vec<String>,
}

/// Resolves return addresses, once per distinct list: threads made by the same code, and
/// blocks allocated by the same line, have the same addresses.
#[cfg(target_os = "linux")]
pub(crate) fn resolve(ips: &[usize]) -> Resolved {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static RESOLVED: Mutex<Option<HashMap<Vec<usize>, Resolved>>> = Mutex::new(None);

    let mut cache = RESOLVED.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(known) = cache.get(ips) {
        return known.clone();
    }
    let frames = resolve_frames(ips);
    let backtrace = frames
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
    let resolved = Resolved { frames, backtrace };
    cache.insert(ips.to_vec(), resolved.clone());
    resolved
}

/// Resolves return addresses to frames (several per address where calls were inlined).
#[cfg(target_os = "linux")]
fn resolve_frames(ips: &[usize]) -> Vec<frames::Frame> {
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

/// Keeps the `pthread_create` hook in the link (see `spawn_hook::keep_linked`).
pub(crate) fn keep_linked() {
    #[cfg(spawn_sites)]
    spawn_hook::keep_linked();
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
