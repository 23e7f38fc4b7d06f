//! What a leaked thread is doing, read from `/proc/self/task/<tid>`.
//!
//! `stat` gives the scheduler state, `syscall` the system call the thread is blocked in with its
//! arguments (the first is the fd of a `read` or an `epoll_wait`, named through
//! `/proc/self/fd`), and `wchan` the kernel function it sleeps in, for when `syscall` cannot
//! be read. Each read costs about 8 µs per file per thread, so this runs only for threads a
//! report names, never on a clean check. Fd targets lose their inode (`socket:[…]`) the way
//! leaked fds are grouped, or identical threads would each form a group of one.

use crate::group::without_inode;

/// A short description: `blocked in futex`, `sleeping in clock_nanosleep`, `blocked in read
/// on socket:[…] (recvfrom)`, `blocked in epoll_wait on anon_inode:[eventpoll]`, `running`;
/// `None` when nothing could be read (the thread is gone, or `/proc` is not there).
pub(crate) fn thread_state(tid: u32) -> Option<String> {
    let read = |file: &str| std::fs::read_to_string(format!("/proc/self/task/{tid}/{file}")).ok();
    let stat = read("stat");
    let syscall = read("syscall");
    // `wchan` only where `syscall` says nothing.
    let wchan = match syscall.as_deref().map(str::trim) {
        Some(s) if s != "running" && !s.starts_with("-1") => None,
        _ => read("wchan"),
    };
    describe(
        stat.as_deref(),
        syscall.as_deref(),
        wchan.as_deref(),
        |fd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        },
    )
}

/// The pure decision, from the text of the three files.
pub(crate) fn describe(
    stat: Option<&str>,
    syscall: Option<&str>,
    wchan: Option<&str>,
    fd_target: impl Fn(u64) -> Option<String>,
) -> Option<String> {
    let state = stat.and_then(state_letter);
    if state == Some('R') || syscall.map(str::trim) == Some("running") {
        return Some("running".to_owned());
    }
    if let Some(described) = syscall.and_then(|s| in_syscall(s, &fd_target)) {
        return Some(described);
    }
    let wchan = wchan.map(str::trim).filter(|w| !w.is_empty() && *w != "0");
    match (state, wchan) {
        (Some('D'), Some(w)) => Some(format!("waiting (uninterruptible) in {w}")),
        (_, Some(w)) => Some(format!("sleeping in {w}")),
        (Some(c), None) => Some(
            match c {
                'S' => "sleeping",
                'D' => "waiting (uninterruptible)",
                'T' | 't' => "stopped",
                'Z' => "exited (zombie)",
                'I' => "idle",
                _ => return None,
            }
            .to_owned(),
        ),
        (None, None) => None,
    }
}

/// The state letter of a `stat` line: the field after the last `)` (the name may hold one).
fn state_letter(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// `nr a0 a1 a2 a3 a4 a5 sp pc` → a description; `None` when not blocked in a syscall.
fn in_syscall(line: &str, fd_target: &impl Fn(u64) -> Option<String>) -> Option<String> {
    let mut fields = line.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let arg0 = fields
        .next()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
    let Some((name, kind)) = syscall_name(nr) else {
        return Some(format!("blocked in syscall {nr}"));
    };
    let on_fd = |verb: &str| {
        let target = arg0.and_then(fd_target).map(without_inode);
        match target {
            Some(t) => format!("blocked in {verb} on {t}"),
            None => format!("blocked in {verb}"),
        }
    };
    Some(match kind {
        Kind::Sleep => format!("sleeping in {name}"),
        Kind::Plain => format!("blocked in {name}"),
        Kind::Fd => on_fd(name),
        // A socket read is `recvfrom` or `recvmsg` to the kernel, a read to the reader.
        Kind::Receive => format!("{} ({name})", on_fd("read")),
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Sleep,
    Plain,
    Fd,
    Receive,
}

fn syscall_name(nr: i64) -> Option<(&'static str, Kind)> {
    use libc as c;
    let table: &[(i64, &str, Kind)] = &[
        (c::SYS_futex, "futex", Kind::Plain),
        (c::SYS_clock_nanosleep, "clock_nanosleep", Kind::Sleep),
        (c::SYS_nanosleep, "nanosleep", Kind::Sleep),
        (c::SYS_read, "read", Kind::Fd),
        (c::SYS_readv, "readv", Kind::Fd),
        (c::SYS_pread64, "pread64", Kind::Fd),
        (c::SYS_write, "write", Kind::Fd),
        (c::SYS_writev, "writev", Kind::Fd),
        (c::SYS_recvfrom, "recvfrom", Kind::Receive),
        (c::SYS_recvmsg, "recvmsg", Kind::Receive),
        (c::SYS_sendto, "sendto", Kind::Fd),
        (c::SYS_sendmsg, "sendmsg", Kind::Fd),
        (c::SYS_accept4, "accept4", Kind::Fd),
        (c::SYS_connect, "connect", Kind::Fd),
        (c::SYS_epoll_pwait, "epoll_pwait", Kind::Fd),
        (c::SYS_epoll_pwait2, "epoll_pwait2", Kind::Fd),
        (c::SYS_ppoll, "ppoll", Kind::Plain),
        (c::SYS_pselect6, "pselect6", Kind::Plain),
        (c::SYS_wait4, "wait4", Kind::Plain),
        (c::SYS_waitid, "waitid", Kind::Plain),
        (c::SYS_rt_sigtimedwait, "rt_sigtimedwait", Kind::Plain),
        (c::SYS_io_uring_enter, "io_uring_enter", Kind::Fd),
        #[cfg(target_arch = "x86_64")]
        (c::SYS_epoll_wait, "epoll_wait", Kind::Fd),
        #[cfg(target_arch = "x86_64")]
        (c::SYS_poll, "poll", Kind::Plain),
        #[cfg(target_arch = "x86_64")]
        (c::SYS_select, "select", Kind::Plain),
        #[cfg(target_arch = "x86_64")]
        (c::SYS_accept, "accept", Kind::Fd),
        #[cfg(target_arch = "x86_64")]
        (c::SYS_pause, "pause", Kind::Plain),
    ];
    table
        .iter()
        .find(|(n, _, _)| *n == nr)
        .map(|(_, name, kind)| (*name, *kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_fd(_: u64) -> Option<String> {
        None
    }

    fn syscall_line(nr: i64, arg0: u64) -> String {
        format!("{nr} 0x{arg0:x} 0x80 0x0 0x0 0x0 0x0 0x7ffd1000 0x7f001234")
    }

    #[test]
    fn states_from_the_three_files() {
        let sleeping = Some("1234 (my (odd) name) S 1 2 3");
        let futex = syscall_line(libc::SYS_futex, 0x7f00);
        assert_eq!(
            describe(sleeping, Some(&futex), None, no_fd).unwrap(),
            "blocked in futex"
        );
        let nap = syscall_line(libc::SYS_clock_nanosleep, 0);
        assert_eq!(
            describe(sleeping, Some(&nap), None, no_fd).unwrap(),
            "sleeping in clock_nanosleep"
        );
        let recv = syscall_line(libc::SYS_recvfrom, 5);
        let socket = |fd: u64| (fd == 5).then(|| "socket:[81234]".to_owned());
        assert_eq!(
            describe(sleeping, Some(&recv), None, socket).unwrap(),
            "blocked in read on socket:[…] (recvfrom)"
        );
        let read = syscall_line(libc::SYS_read, 5);
        let pipe = |_: u64| Some("pipe:[77]".to_owned());
        assert_eq!(
            describe(sleeping, Some(&read), None, pipe).unwrap(),
            "blocked in read on pipe:[…]"
        );
        let epoll = syscall_line(libc::SYS_epoll_pwait, 7);
        let ep = |_: u64| Some("anon_inode:[eventpoll]".to_owned());
        assert_eq!(
            describe(sleeping, Some(&epoll), None, ep).unwrap(),
            "blocked in epoll_pwait on anon_inode:[eventpoll]"
        );
        assert_eq!(
            describe(Some("1 (x) R 1"), Some("running"), None, no_fd).unwrap(),
            "running"
        );
    }

    #[test]
    fn falls_back_when_files_say_less() {
        let s = Some("1 (x) S 1");
        // Not in a syscall, or `syscall` unreadable: the kernel function, then the letter.
        assert_eq!(
            describe(s, Some("-1 0x7ffd 0x7f00"), Some("do_epoll_wait"), no_fd).unwrap(),
            "sleeping in do_epoll_wait"
        );
        assert_eq!(describe(s, None, Some("0"), no_fd).unwrap(), "sleeping");
        assert_eq!(
            describe(s, Some(&syscall_line(9999, 0)), None, no_fd).unwrap(),
            "blocked in syscall 9999"
        );
        assert_eq!(describe(None, None, None, no_fd), None);
        assert_eq!(describe(Some("garbage"), Some("x y"), None, no_fd), None);
    }

    /// Live threads, each stopped in one known way and released afterwards (no thread
    /// outlives its test); the state is read until it shows (a thread needs a moment to reach
    /// its blocking call) within a deadline.
    mod live {
        use super::super::thread_state;
        use std::io::Read;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{mpsc, Arc};
        use std::thread::JoinHandle;
        use std::time::{Duration, Instant};

        fn gettid() -> u32 {
            // SAFETY: gettid cannot fail.
            unsafe { libc::gettid() as u32 }
        }

        /// Runs `body` on a thread; returns its state once it satisfies `expect` (or at the
        /// deadline), and the thread to release and join.
        fn state_of(
            body: impl FnOnce() + Send + 'static,
            expect: impl Fn(&str) -> bool,
        ) -> (String, JoinHandle<()>) {
            let (tx, rx) = mpsc::channel();
            let t = std::thread::spawn(move || {
                tx.send(gettid()).unwrap();
                body();
            });
            let tid = rx.recv().unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let state = thread_state(tid).unwrap_or_default();
                if expect(&state) || Instant::now() > deadline {
                    return (state, t);
                }
                std::thread::yield_now();
            }
        }

        fn pipe() -> (std::fs::File, std::fs::File) {
            use std::os::fd::FromRawFd;
            let mut fds = [0; 2];
            // SAFETY: a valid array of two fds, each owned by one `File` from here on.
            unsafe {
                assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
                (
                    std::fs::File::from_raw_fd(fds[0]),
                    std::fs::File::from_raw_fd(fds[1]),
                )
            }
        }

        #[test]
        fn a_parked_thread_is_blocked_in_futex() {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let park = move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::park();
                }
            };
            let (state, t) = state_of(park, |s| s == "blocked in futex");
            stop.store(true, Ordering::Release);
            t.thread().unpark();
            t.join().unwrap();
            assert_eq!(state, "blocked in futex");
        }

        #[test]
        fn a_sleeping_thread_sleeps_in_clock_nanosleep() {
            extern "C" fn wake(_: libc::c_int) {}
            // SAFETY: a handler that does nothing, so that a signal only interrupts the sleep.
            unsafe { libc::signal(libc::SIGUSR2, wake as *const () as libc::sighandler_t) };
            let nap = || {
                let long = libc::timespec {
                    tv_sec: 3600,
                    tv_nsec: 0,
                };
                // SAFETY: valid timespec; returns early (EINTR) when signalled.
                unsafe {
                    libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &long, std::ptr::null_mut())
                };
            };
            let (state, t) = state_of(nap, |s| s.starts_with("sleeping"));
            use std::os::unix::thread::JoinHandleExt;
            while !t.is_finished() {
                // SAFETY: the thread is alive until joined below; SIGUSR2 has a handler.
                unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGUSR2) };
                std::thread::yield_now();
            }
            t.join().unwrap();
            assert_eq!(state, "sleeping in clock_nanosleep");
        }

        #[test]
        fn a_thread_reading_a_socket_is_blocked_in_read_on_it() {
            let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let read = move || {
                let _ = a.read(&mut [0u8; 8]);
            };
            let (state, t) = state_of(read, |s| s.starts_with("blocked in read"));
            drop(b); // the read returns 0
            t.join().unwrap();
            assert_eq!(state, "blocked in read on socket:[…] (recvfrom)");
        }

        #[test]
        fn a_thread_reading_a_pipe_is_blocked_in_read_on_it() {
            let (mut reader, writer) = pipe();
            let read = move || {
                let _ = reader.read(&mut [0u8; 8]);
            };
            let (state, t) = state_of(read, |s| s.starts_with("blocked in read"));
            drop(writer);
            t.join().unwrap();
            assert_eq!(state, "blocked in read on pipe:[…]");
        }

        #[test]
        fn a_spinning_thread_is_running() {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let spin = move || {
                while !flag.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            };
            let (state, t) = state_of(spin, |s| s == "running");
            stop.store(true, Ordering::Relaxed);
            t.join().unwrap();
            assert_eq!(state, "running");
        }

        #[test]
        fn a_thread_that_is_gone_has_no_state() {
            assert_eq!(thread_state(u32::MAX), None);
        }
    }
}
