//! Origins: where a leaked thread or task was created, and what a leaked thread is doing.
//!
//! A count says that something leaked; an origin says where to look. Everything here runs on
//! the failure path only, for the threads and tasks a report names: a clean check never
//! resolves a symbol or reads a thread's state.
//!
//! - `spawn_hook` (feature `origins`, on by default; Linux with glibc): every thread creation
//!   of the process records its return addresses, unresolved, and its creator's kernel name,
//!   from the moment a check turns recording on ([`enable`]).
//! - `frames`: from those, the user's own `file:line`, the library frame that made the
//!   thread, the function that created it and whether a one-time initializer did.
//! - `state`: what a thread is blocked in, from `/proc/self/task/<tid>`.
//! - `tasks` (`--cfg tokio_unstable`): the spawn site of each live task of an instrumented
//!   runtime.

#[cfg_attr(not(origins), allow(dead_code))]
mod frames;
#[cfg(origins)]
mod spawn_hook;
#[cfg(target_os = "linux")]
mod state;
#[cfg(all(feature = "tokio", tokio_unstable))]
pub(crate) mod tasks;

#[cfg(all(feature = "tokio", tokio_unstable))]
pub use tasks::{instrument, instrument_with};

/// Turns creation sites off at run time when set to `0`.
#[cfg_attr(not(origins), allow(dead_code))]
const ORIGINS_ENV: &str = "LEAKCHECK_ORIGINS";

/// Where a thread was created and what it is doing, as far as this build can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ThreadOrigin {
    /// `spawned at tests/a.rs:12`, `spawn site not recorded (…)`; `None` without the
    /// `origins` feature.
    pub(crate) site: Option<String>,
    /// `blocked in futex`; `None` where it cannot be read.
    pub(crate) state: Option<String>,
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

/// What this build knows of thread `tid`: the spawn site (with `origins`) and the state.
pub(crate) fn thread_origin(tid: u32) -> ThreadOrigin {
    // Without `spawn-sites` the site is recorded and classified but not shown.
    let shown = if cfg!(spawn_sites) {
        spawn_site(tid)
    } else {
        None
    };
    let (site, backtrace) = match shown {
        Some((site, backtrace)) => (Some(site), backtrace),
        None => (None, Vec::new()),
    };
    ThreadOrigin {
        site,
        state: thread_state(tid),
        backtrace,
    }
}

/// Starts recording thread creations, unless `LEAKCHECK_ORIGINS=0` or this build records
/// none. Every check calls it: threads created before the first check of a process have no
/// recorded site.
pub(crate) fn enable() {
    #[cfg(origins)]
    {
        static DECIDED: std::sync::Once = std::sync::Once::new();
        DECIDED.call_once(|| {
            if std::env::var_os(ORIGINS_ENV).is_none_or(|v| v != "0") {
                spawn_hook::enable();
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
        let why = if std::env::var_os(ORIGINS_ENV).is_some_and(|v| v == "0") {
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
/// this build records nothing). Identical creations are resolved once per process.
pub(crate) fn creation(tid: u32) -> Option<Creation> {
    #[cfg(origins)]
    {
        use std::collections::HashMap;
        use std::sync::Mutex;
        // Threads made by the same code have the same addresses: resolve each list once.
        static RESOLVED: Mutex<Option<HashMap<Vec<usize>, Creation>>> = Mutex::new(None);

        let record = spawn_hook::spawn_record(tid)?;
        let unnamed = !record.creator_name.is_empty()
            && crate::sys::thread_name(tid).is_some_and(|n| n.as_bytes() == record.creator_name);
        let mut cache = RESOLVED.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.get_or_insert_with(HashMap::new);
        let known = match cache.get(&record.ips) {
            Some(known) => known.clone(),
            None => {
                let resolved = resolve_creation(&record.ips);
                cache.insert(record.ips, resolved.clone());
                resolved
            }
        };
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
    let frames = resolve(ips);
    let site = frames::Site::pick(&frames);
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
    Creation {
        global: site.once_global(),
        created_by: site.created_by().map(str::to_owned),
        site: site.to_string(),
        backtrace,
        unnamed: false,
    }
}

/// Resolves return addresses to frames (several per address where calls were inlined),
/// with paths shortened for a report.
#[cfg(origins)]
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

/// Keeps the `pthread_create` hook in the link (see `spawn_hook::keep_linked`).
pub(crate) fn keep_linked() {
    #[cfg(origins)]
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
