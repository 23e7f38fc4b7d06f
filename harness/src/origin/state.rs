//! What a leaked thread is doing, read from `/proc/self/task/<tid>`.
//!
//! `stat` gives the scheduler state, `syscall` the system call the thread is blocked in with its
//! arguments (the first is the fd of a `read` or an `epoll_wait`, named through
//! `/proc/self/fd`), and `wchan` the kernel function it sleeps in, for when `syscall` cannot
//! be read. Each read costs about 8 µs per file per thread, so this runs only for threads a
//! report names, never on a clean check. Fd targets lose their inode (`socket:[…]`) the way
//! leaked fds are grouped, or identical threads would each form a group of one.
//!
//! A wait with a timeout says when it ends (see [`Timed`]): the timeout is an argument of the
//! call (a timespec's address, or milliseconds), and the timespec lies in this process's own
//! memory. It is read with `process_vm_readv` on our own pid, which fails with `EFAULT` on an
//! address that is no longer mapped instead of faulting: the thread may have returned from the
//! call and reused its stack between the two reads, which at worst gives a wrong figure, never
//! a crash.

use std::fmt;
use std::time::Duration;

use crate::group::without_inode;

/// When a timed wait ends, as far as the thread's own arguments tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timed {
    /// An absolute deadline (std's `park_timeout` and `Condvar::wait_timeout`: a
    /// `FUTEX_WAIT_BITSET` on `CLOCK_MONOTONIC`; an absolute `clock_nanosleep`): this much
    /// time from the reading.
    EndsIn(Duration),
    /// A relative timeout (parking_lot's `FUTEX_WAIT`, `thread::sleep`, an `epoll_wait` with a
    /// timeout): the kernel does not show when the wait began, so only a bound is known.
    Within(Duration),
}

impl Timed {
    /// The longest the wait can still last.
    pub(crate) fn bound(self) -> Duration {
        match self {
            Timed::EndsIn(d) | Timed::Within(d) => d,
        }
    }

    /// The later of two readings of the same kind (a group of threads shows the one that
    /// covers them all); `None` when the kinds differ.
    pub(crate) fn later(self, other: Timed) -> Option<Timed> {
        match (self, other) {
            (Timed::EndsIn(a), Timed::EndsIn(b)) => Some(Timed::EndsIn(a.max(b))),
            (Timed::Within(a), Timed::Within(b)) => Some(Timed::Within(a.max(b))),
            _ => None,
        }
    }

    /// Whether the end is known (an absolute deadline), not only bounded.
    pub(crate) fn is_absolute(self) -> bool {
        matches!(self, Timed::EndsIn(_))
    }
}

/// `timed: ends in 29.6 s`, `timed: ends within 30.0 s`.
impl fmt::Display for Timed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (how, d) = match self {
            Timed::EndsIn(d) => ("in", d),
            Timed::Within(d) => ("within", d),
        };
        write!(f, "timed: ends {how} {:.1} s", d.as_secs_f64())
    }
}

/// What a thread is doing, and when its wait ends if it has a timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ThreadState {
    /// `blocked in futex`, `sleeping in clock_nanosleep`, `running`.
    pub(crate) text: String,
    pub(crate) timed: Option<Timed>,
}

/// What thread `tid` is doing: `blocked in futex`, `sleeping in clock_nanosleep`, `blocked in
/// read on socket:[…] (recvfrom)`, `blocked in epoll_wait on anon_inode:[eventpoll]`,
/// `running`, with the end of a timed wait; `None` when nothing could be read (the thread is
/// gone, or `/proc` is not there).
pub(crate) fn thread_state(tid: u32) -> Option<ThreadState> {
    let read = |file: &str| std::fs::read_to_string(format!("/proc/self/task/{tid}/{file}")).ok();
    let stat = read("stat");
    let syscall = read("syscall");
    // `wchan` only where `syscall` says nothing.
    let wchan = match syscall.as_deref().map(str::trim) {
        Some(s) if s != "running" && !s.starts_with("-1") => None,
        _ => read("wchan"),
    };
    let text = describe(
        stat.as_deref(),
        syscall.as_deref(),
        wchan.as_deref(),
        |fd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        },
    )?;
    let timed = match text.as_str() {
        "running" => None,
        _ => syscall
            .as_deref()
            .and_then(|s| timed_wait(s, read_timespec, clock_now)),
    };
    Some(ThreadState { text, timed })
}

/// Reads a `timespec` at `addr` in this process, or `None` where nothing is mapped there.
fn read_timespec(addr: u64) -> Option<(i64, i64)> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let local = libc::iovec {
        iov_base: (&mut ts as *mut libc::timespec).cast(),
        iov_len: std::mem::size_of::<libc::timespec>(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: std::mem::size_of::<libc::timespec>(),
    };
    // SAFETY: `local` points at our own timespec of the right size; the kernel checks the
    // remote range and fails with EFAULT where it is not mapped, without touching it from
    // this thread. Reading our own pid needs no ptrace permission.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == remote.iov_len as isize).then_some((ts.tv_sec, ts.tv_nsec))
}

/// The time on clock `clock` now, as `(seconds, nanoseconds)`.
fn clock_now(clock: i32) -> Option<(i64, i64)> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill; an unknown clock fails with EINVAL.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    (r == 0).then_some((ts.tv_sec, ts.tv_nsec))
}

/// A timespec as a duration; `None` for a negative or malformed one.
fn span((sec, nsec): (i64, i64)) -> Option<Duration> {
    (sec >= 0 && (0..1_000_000_000).contains(&nsec)).then(|| Duration::new(sec as u64, nsec as u32))
}

/// The end of a timed wait, from a `syscall` line (`nr a0 … a5 sp pc`): the call, where its
/// timeout is and whether it is absolute. `read` reads a timespec of this process, `now` a
/// clock. `None` for an untimed wait (a null timeout, `-1` milliseconds) or one this does not
/// know.
pub(crate) fn timed_wait(
    line: &str,
    read: impl Fn(u64) -> Option<(i64, i64)>,
    now: impl Fn(i32) -> Option<(i64, i64)>,
) -> Option<Timed> {
    let mut fields = line.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    let args: Vec<u64> = fields
        .take(6)
        .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .collect::<Option<_>>()?;
    if args.len() < 6 {
        return None;
    }
    match timeout_of(nr, &args)? {
        Timeout::Relative(0) | Timeout::Absolute(0, _) => None,
        Timeout::Relative(addr) => span(read(addr)?).map(Timed::Within),
        Timeout::Absolute(addr, clock) => {
            let (end, now) = (read(addr)?, now(clock)?);
            let left = (end.0 - now.0) as i128 * 1_000_000_000 + (end.1 - now.1) as i128;
            Some(Timed::EndsIn(Duration::from_nanos(left.max(0) as u64)))
        }
        // An `int` (negative: none).
        Timeout::Millis(arg) => match arg as u32 as i32 {
            ms if ms < 0 => None,
            ms => Some(Timed::Within(Duration::from_millis(ms as u64))),
        },
    }
}

/// Where a blocking call's timeout is, as its arguments give it.
enum Timeout {
    /// The address of a timespec of how long to wait (0: no timeout).
    Relative(u64),
    /// The address of a timespec of when to stop on the clock (0: no timeout).
    Absolute(u64, i32),
    /// Milliseconds.
    Millis(u64),
}

/// Which of system call `nr`'s arguments `args` is its timeout; `None` for a call with no
/// timeout this knows.
fn timeout_of(nr: i64, args: &[u64]) -> Option<Timeout> {
    use libc as c;
    use Timeout::{Absolute, Millis, Relative};
    const FUTEX_CMD_MASK: u64 = !(c::FUTEX_PRIVATE_FLAG as u64 | c::FUTEX_CLOCK_REALTIME as u64);
    Some(match nr {
        c::SYS_futex => {
            let op = args[1];
            let clock = if op & c::FUTEX_CLOCK_REALTIME as u64 != 0 {
                c::CLOCK_REALTIME
            } else {
                c::CLOCK_MONOTONIC
            };
            match (op & FUTEX_CMD_MASK) as i32 {
                c::FUTEX_WAIT => Relative(args[3]),
                c::FUTEX_WAIT_BITSET | c::FUTEX_WAIT_REQUEUE_PI => Absolute(args[3], clock),
                c::FUTEX_LOCK_PI => Absolute(args[3], c::CLOCK_REALTIME),
                _ => return None,
            }
        }
        c::SYS_clock_nanosleep if args[1] & c::TIMER_ABSTIME as u64 != 0 => {
            Absolute(args[2], args[0] as i32)
        }
        c::SYS_clock_nanosleep => Relative(args[2]),
        c::SYS_nanosleep => Relative(args[0]),
        c::SYS_epoll_pwait => Millis(args[3]),
        c::SYS_epoll_pwait2 => Relative(args[3]),
        c::SYS_ppoll => Relative(args[2]),
        c::SYS_pselect6 => Relative(args[4]),
        c::SYS_rt_sigtimedwait => Relative(args[2]),
        #[cfg(target_arch = "x86_64")]
        c::SYS_epoll_wait => Millis(args[3]),
        #[cfg(target_arch = "x86_64")]
        c::SYS_poll => Millis(args[2]),
        _ => return None,
    })
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

    fn line(nr: i64, args: [u64; 6]) -> String {
        let a: Vec<String> = args.iter().map(|a| format!("0x{a:x}")).collect();
        format!("{nr} {} 0x7ffd1000 0x7f001234", a.join(" "))
    }

    #[test]
    fn the_end_of_a_timed_wait_from_its_arguments() {
        use libc as c;
        let at = 0x7f00_1000u64;
        // The memory holds 30.5 s at `at`; the clocks read 100 s.
        let mem = |addr: u64| (addr == at).then_some((30, 500_000_000));
        let abs = |addr: u64| (addr == at).then_some((129, 600_000_000));
        let now = |_: i32| Some((100, 0));
        let secs = Duration::from_secs_f64;
        let bitset = (c::FUTEX_WAIT_BITSET | c::FUTEX_PRIVATE_FLAG) as u64;
        let std_park = line(c::SYS_futex, [0x55, bitset, 0, at, 0, u32::MAX as u64]);
        assert_eq!(
            timed_wait(&std_park, abs, now),
            Some(Timed::EndsIn(secs(29.6)))
        );
        assert_eq!(
            Timed::EndsIn(secs(29.6)).to_string(),
            "timed: ends in 29.6 s"
        );
        // A deadline already past ends now.
        let past = |_: u64| Some((50, 0));
        assert_eq!(
            timed_wait(&std_park, past, now),
            Some(Timed::EndsIn(Duration::ZERO))
        );
        let parking_lot = line(
            c::SYS_futex,
            [0x55, (c::FUTEX_WAIT | 128) as u64, 0, at, 0, 0],
        );
        assert_eq!(
            timed_wait(&parking_lot, mem, now),
            Some(Timed::Within(secs(30.5)))
        );
        // Untimed: a null timeout.
        let untimed = line(c::SYS_futex, [0x55, bitset, 0, 0, 0, u32::MAX as u64]);
        assert_eq!(timed_wait(&untimed, mem, now), None);
        // A wake is no wait.
        let wake = line(c::SYS_futex, [0x55, c::FUTEX_WAKE as u64, 1, at, 0, 0]);
        assert_eq!(timed_wait(&wake, mem, now), None);
        // A timeout that cannot be read says nothing rather than a made-up figure.
        assert_eq!(timed_wait(&parking_lot, |_| None, now), None);
        let sleep = line(c::SYS_clock_nanosleep, [0, 0, at, at + 16, 0, 0]);
        assert_eq!(
            timed_wait(&sleep, mem, now),
            Some(Timed::Within(secs(30.5)))
        );
        let abs_sleep = line(
            c::SYS_clock_nanosleep,
            [1, c::TIMER_ABSTIME as u64, at, 0, 0, 0],
        );
        assert_eq!(
            timed_wait(&abs_sleep, abs, now),
            Some(Timed::EndsIn(secs(29.6)))
        );
        let epoll = line(c::SYS_epoll_pwait, [3, 0x1000, 64, 2500, 0, 8]);
        assert_eq!(timed_wait(&epoll, mem, now), Some(Timed::Within(secs(2.5))));
        let forever = line(c::SYS_epoll_pwait, [3, 0x1000, 64, 0xffff_ffff, 0, 8]);
        assert_eq!(timed_wait(&forever, mem, now), None);
        assert_eq!(timed_wait("running", mem, now), None);
        assert_eq!(timed_wait("-1 0x7ffd 0x7f00", mem, now), None);
    }

    #[test]
    fn a_group_shows_the_later_end() {
        let s = Duration::from_secs;
        assert_eq!(
            Timed::EndsIn(s(2)).later(Timed::EndsIn(s(5))),
            Some(Timed::EndsIn(s(5)))
        );
        assert_eq!(Timed::EndsIn(s(2)).later(Timed::Within(s(5))), None);
        assert_eq!(Timed::Within(s(7)).bound(), s(7));
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
        use super::super::{thread_state, ThreadState, Timed};
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
            let (state, t) = full_state_of(body, |s| expect(&s.text));
            (state.text, t)
        }

        /// Like `state_of`, with the end of a timed wait.
        fn full_state_of(
            body: impl FnOnce() + Send + 'static,
            expect: impl Fn(&ThreadState) -> bool,
        ) -> (ThreadState, JoinHandle<()>) {
            let (tx, rx) = mpsc::channel();
            let t = std::thread::spawn(move || {
                tx.send(gettid()).unwrap();
                body();
            });
            let tid = rx.recv().unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let state = thread_state(tid).unwrap_or(ThreadState {
                    text: String::new(),
                    timed: None,
                });
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
                unsafe { libc::pthread_kill(t.as_pthread_t() as libc::pthread_t, libc::SIGUSR2) };
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

        /// A thread in std's `park_timeout` (a `FUTEX_WAIT_BITSET` with an absolute
        /// `CLOCK_MONOTONIC` deadline) says when it ends, to within the time the test took.
        #[test]
        fn a_thread_in_park_timeout_says_when_its_wait_ends() {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let start = Instant::now();
            let park = move || {
                let end = start + Duration::from_secs(3);
                while !flag.load(Ordering::Acquire) && Instant::now() < end {
                    std::thread::park_timeout(end.saturating_duration_since(Instant::now()));
                }
            };
            let (state, t) = full_state_of(park, |s| s.timed.is_some());
            let read_at = start.elapsed();
            stop.store(true, Ordering::Release);
            t.thread().unpark();
            t.join().unwrap();
            assert_eq!(state.text, "blocked in futex");
            let Some(Timed::EndsIn(left)) = state.timed else {
                panic!("{state:?}");
            };
            let expected = Duration::from_secs(3).saturating_sub(read_at);
            assert!(
                left <= Duration::from_secs(3) && left + Duration::from_millis(100) >= expected,
                "{left:?} left, {expected:?} expected"
            );
        }

        /// `thread::sleep` is a relative `clock_nanosleep`: only its length is known.
        #[test]
        fn a_sleeping_thread_says_its_wait_ends_within_its_length() {
            extern "C" fn wake(_: libc::c_int) {}
            // SAFETY: a handler that does nothing, so that a signal only interrupts the sleep.
            unsafe { libc::signal(libc::SIGUSR2, wake as *const () as libc::sighandler_t) };
            let nap = || {
                let long = libc::timespec {
                    tv_sec: 30,
                    tv_nsec: 0,
                };
                // SAFETY: valid timespec; returns early (EINTR) when signalled.
                unsafe {
                    libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &long, std::ptr::null_mut())
                };
            };
            let (state, t) = full_state_of(nap, |s| s.timed.is_some());
            use std::os::unix::thread::JoinHandleExt;
            while !t.is_finished() {
                // SAFETY: the thread is alive until joined below; SIGUSR2 has a handler.
                unsafe { libc::pthread_kill(t.as_pthread_t() as libc::pthread_t, libc::SIGUSR2) };
                std::thread::yield_now();
            }
            t.join().unwrap();
            assert_eq!(state.text, "sleeping in clock_nanosleep");
            assert_eq!(state.timed, Some(Timed::Within(Duration::from_secs(30))));
            assert_eq!(
                state.timed.unwrap().to_string(),
                "timed: ends within 30.0 s"
            );
        }

        /// An untimed park has no end.
        #[test]
        fn an_untimed_park_has_no_end() {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let park = move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::park();
                }
            };
            let (state, t) = full_state_of(park, |s| s.text == "blocked in futex");
            stop.store(true, Ordering::Release);
            t.thread().unpark();
            t.join().unwrap();
            assert_eq!(state.text, "blocked in futex");
            assert_eq!(state.timed, None);
        }

        #[test]
        fn a_thread_that_is_gone_has_no_state() {
            assert_eq!(thread_state(u32::MAX), None);
        }
    }
}
