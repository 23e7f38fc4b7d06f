//! Orphaned descendants: processes a child left behind (`sh -c 'job &'`), which the kernel
//! would re-parent away from the test, to init or an outer subreaper, where no count of this
//! process's children can see them.
//!
//! While a check runs, the process is a child subreaper (`PR_SET_CHILD_SUBREAPER`, Linux): an
//! orphaned descendant is re-parented to it instead, and the children source counts it like
//! any child. The kernel hands every adopted process to the process's first live thread, the
//! main thread; a child the process made itself is listed under the thread that made it. So,
//! for a check that runs off the main thread (every libtest test does), a new child that shows
//! up under the main thread, and was never seen under another thread, was adopted: the report
//! names it `"sleep" ×4 (orphaned)`.
//!
//! What the user's code sees, and what the harness does to keep it the same:
//!
//! - Only processes that would otherwise have gone to init (or an outer subreaper) are
//!   affected; the user's own children are untouched.
//! - The harness reaps an adopted process once it has exited (else it would stay a zombie of
//!   ours); it never reaps, waits for or kills a child the process made itself.
//! - The setting is the process's: it is turned on by the first check running and back off
//!   when the last one ends. A process that was a subreaper already keeps its setting, and
//!   the harness then neither classifies nor reaps anything (those adoptions are the user's).
//! - Visible differences while a check runs: an orphaned descendant's `getppid()` returns
//!   this process's pid instead of 1 (or the outer subreaper's); a `wait()` for any child in
//!   the user's code can return an adopted process. An adopted process still running when the
//!   check ends stays this process's child (the kernel does not undo a re-parenting); a later
//!   check reaps it once it has exited.
//! - A check on the main thread (a `main` without libtest) cannot tell adoptions from the
//!   main thread's own children, so it does not become a subreaper at all.
//!
//! One case looks like an adoption and is not: a child whose creating thread exited before any
//! reading saw it is also moved to the main thread. Such a child is named `(orphaned)` and,
//! once it has exited, reaped: a later `wait` for it in the user's code then fails with
//! `ECHILD`.

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    struct State {
        /// Checks running that asked for the subreaper.
        users: usize,
        /// Whether this process set the subreaper (it was not one before the first check).
        ours: bool,
        /// Children seen under a thread other than the main one, or present before the
        /// subreaper was turned on: never adopted.
        direct: BTreeSet<u32>,
        /// Children adopted by the subreaper and not yet reaped.
        adopted: BTreeSet<u32>,
    }

    static STATE: Mutex<State> = Mutex::new(State {
        users: 0,
        ours: false,
        direct: BTreeSet::new(),
        adopted: BTreeSet::new(),
    });

    fn state() -> std::sync::MutexGuard<'static, State> {
        STATE.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The process is a child subreaper while one of these lives (see the module docs).
    pub(crate) struct Subreaper {
        active: bool,
    }

    impl Subreaper {
        /// Turns the subreaper on for a check running on this thread, unless this thread is
        /// the main one.
        pub(crate) fn start() -> Self {
            let (main, me) = crate::sys::linux::main_and_current_tids();
            if main == me {
                return Subreaper { active: false };
            }
            let mut s = state();
            if s.users == 0 {
                let mut was: libc::c_int = 0;
                // SAFETY: PR_GET_CHILD_SUBREAPER writes an int through the pointer.
                let got = unsafe {
                    libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut was as *mut libc::c_int)
                };
                // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer argument.
                s.ours = got == 0
                    && was == 0
                    && unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } == 0;
                if s.ours {
                    let (leader, others) = children_by_thread(main);
                    let adopted = s.adopted.clone();
                    s.direct.clear();
                    s.direct.extend(
                        leader
                            .into_iter()
                            .chain(others)
                            .filter(|p| !adopted.contains(p)),
                    );
                }
            }
            s.users += 1;
            Subreaper { active: true }
        }
    }

    impl Drop for Subreaper {
        fn drop(&mut self) {
            if !self.active {
                return;
            }
            let mut s = state();
            s.users -= 1;
            if s.users == 0 && s.ours {
                reap(&mut s);
                // SAFETY: as above.
                unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0) };
                s.ours = false;
                s.direct = BTreeSet::new();
            }
        }
    }

    /// Classifies new children and reaps the adopted ones that have exited. Runs before each
    /// reading of the children, while a check holds the subreaper.
    pub(crate) fn tend() {
        let mut s = state();
        if !s.ours && s.adopted.is_empty() {
            return;
        }
        if crate::sys::linux::has_no_children() {
            s.adopted.clear();
            return;
        }
        if s.ours {
            let (main, _) = crate::sys::linux::main_and_current_tids();
            let (leader, others) = children_by_thread(main);
            for pid in others {
                s.adopted.remove(&pid);
                s.direct.insert(pid);
            }
            for pid in leader {
                if !s.direct.contains(&pid) {
                    s.adopted.insert(pid);
                }
            }
        }
        reap(&mut s);
    }

    /// Whether `pid` was adopted by the subreaper.
    pub(crate) fn adopted(pid: u32) -> bool {
        state().adopted.contains(&pid)
    }

    /// Reaps the adopted processes that have exited.
    fn reap(s: &mut State) {
        s.adopted.retain(|&pid| {
            let Some(stat) = crate::sys::linux::process_stat(pid) else {
                return false;
            };
            if stat.ppid != std::process::id() {
                return false;
            }
            if stat.state != 'Z' {
                return true;
            }
            // SAFETY: `info` is a valid siginfo_t; WNOHANG never blocks, and the pid is a
            // zombie child this process adopted.
            unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG,
                );
            }
            false
        });
    }

    /// The main thread's children, and the other threads' (a thread that exits between the
    /// listing and the read has none left: its children moved to the main thread).
    fn children_by_thread(main: u32) -> (Vec<u32>, Vec<u32>) {
        let read = |tid: u32| -> Vec<u32> {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/children"))
                .map(|t| {
                    t.split_ascii_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut others = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Some(tid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if tid != main {
                    others.extend(read(tid));
                }
            }
        }
        // The main thread last: a child whose thread exited meanwhile is seen under it, but
        // one already seen under its thread stays direct.
        (read(main), others)
    }
}

#[cfg(target_os = "linux")]
pub(crate) use linux::{adopted, tend, Subreaper};

#[cfg(not(target_os = "linux"))]
mod other {
    /// Nothing to adopt where there is no subreaper.
    pub(crate) struct Subreaper;

    impl Subreaper {
        pub(crate) fn start() -> Self {
            Subreaper
        }
    }

    pub(crate) fn tend() {}

    pub(crate) fn adopted(_pid: u32) -> bool {
        false
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) use other::{adopted, tend, Subreaper};
