//! Reading the platform: the process's threads and fds, and what they are.
//!
//! Counting is cheap, reading a name is not (8 µs to count 10 threads, 67 µs to read their
//! names): the listings here return ids only, and names and targets are read one id at a time,
//! for the ids a filter or a report needs. The [`crate::source`] module builds the resources a
//! check counts on top of these reads.

#[cfg(target_os = "linux")]
pub(crate) mod linux;

/// Which of the process's directories to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listing {
    /// `/proc/self/task`: thread ids.
    Threads,
    /// `/proc/self/fd`: fd numbers, without the harness's own directory fds.
    Fds,
}

/// Lists the ids of `what` into `out`, sorted and deduplicated.
pub(crate) fn list(what: Listing, out: &mut Vec<u32>) -> Result<(), ListError> {
    Dirs::list(what, out)
}

/// Why a listing gave no ids.
pub(crate) enum ListError {
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    Unsupported(&'static str),
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Failed(String),
}

/// The two directories every snapshot lists, opened once per process and rewound for each
/// listing (the path walk of an `open` costs as much as the listing itself). A
/// fork gets its own: the inherited ones would list the parent.
#[cfg(target_os = "linux")]
struct Dirs {
    pid: u32,
    tasks: Result<linux::Dir, String>,
    fds: Result<linux::Dir, String>,
}

#[cfg(target_os = "linux")]
impl Dirs {
    fn open(pid: u32) -> Self {
        let open = |path: &std::ffi::CStr| {
            linux::Dir::open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.to_string_lossy()))
        };
        Dirs {
            pid,
            tasks: open(linux::TASK_DIR),
            fds: open(linux::FD_DIR),
        }
    }

    fn list(what: Listing, out: &mut Vec<u32>) -> Result<(), ListError> {
        static DIRS: std::sync::Mutex<Option<Dirs>> = std::sync::Mutex::new(None);
        // A listing rewinds a shared offset: one at a time. A poisoned lock only means a
        // panic elsewhere while listing; the directories are still fine.
        let mut guard = DIRS.lock().unwrap_or_else(|e| e.into_inner());
        let (pid, _) = linux::main_and_current_tid();
        let dirs = match &mut *guard {
            Some(dirs) if dirs.pid == pid => dirs,
            slot => slot.insert(Dirs::open(pid)),
        };
        let (dir, path) = match what {
            Listing::Fds => (&dirs.fds, linux::FD_DIR),
            Listing::Threads => (&dirs.tasks, linux::TASK_DIR),
        };
        let dir = dir.as_ref().map_err(|e| ListError::Failed(e.clone()))?;
        dir.list(out).map_err(|e| {
            ListError::Failed(format!("cannot read {}: {e}", path.to_string_lossy()))
        })?;
        if what == Listing::Fds {
            // The harness's own directories are not the component's fds.
            let own = [&dirs.tasks, &dirs.fds];
            out.retain(|fd| !own.iter().any(|d| d.as_ref().is_ok_and(|d| d.raw() == *fd)));
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
struct Dirs;

#[cfg(not(target_os = "linux"))]
impl Dirs {
    fn list(_: Listing, _: &mut Vec<u32>) -> Result<(), ListError> {
        Err(ListError::Unsupported("not supported on this platform"))
    }
}

/// The thread's name as the kernel shows it (at most 15 bytes); `None` if it is gone or the
/// platform cannot tell.
pub(crate) fn thread_name(tid: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        linux::thread_name(tid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        None
    }
}

/// What an fd points at (`anon_inode:inotify`, `socket:[123]`, a path); `None` if it is closed
/// or the platform cannot tell.
pub(crate) fn fd_target(fd: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        linux::fd_target(fd)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        None
    }
}

/// The pids of this process's child processes, running or zombie, sorted.
pub(crate) fn children(out: &mut Vec<u32>) -> Result<(), ListError> {
    #[cfg(target_os = "linux")]
    {
        if linux::has_no_children() {
            return Ok(());
        }
        let mut tids = Vec::new();
        list(Listing::Threads, &mut tids)?;
        linux::children(&tids, out).map_err(|e| {
            ListError::Failed(format!("cannot read the children of /proc/self/task: {e}"))
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = out;
        Err(ListError::Unsupported("not supported on this platform"))
    }
}

/// A child process's command and state; `None` if it is gone or the platform cannot tell.
pub(crate) fn child(pid: u32) -> Option<(String, char)> {
    #[cfg(target_os = "linux")]
    {
        linux::process_stat(pid).map(|s| (s.command, s.state))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// The process's main thread id and the caller's, where the platform tells.
pub(crate) fn main_and_current_tid() -> Option<(u32, u32)> {
    #[cfg(target_os = "linux")]
    {
        Some(linux::main_and_current_tid())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn fd_listings_never_show_the_harness_own_reads() {
        let mut fds = Vec::new();
        list(Listing::Fds, &mut fds).ok().unwrap();
        assert!(!fds.is_empty());
        for &fd in &fds {
            let target = fd_target(fd).unwrap_or_default();
            assert!(
                !(target.starts_with("/proc/")
                    && (target.ends_with("/fd") || target.ends_with("/task"))),
                "fd {fd} ({target}) is the harness's own listing"
            );
        }
    }
}
