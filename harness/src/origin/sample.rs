//! A leaked thread's current stack, taken by a signal (Linux; failure path only).
//!
//! To say where a leaked thread is stuck, the report needs its stack now, not where it was
//! created. No cooperation from the thread is asked: the requester sends it `SIGURG` with
//! `rt_tgsigqueueinfo` (a `tgkill` that carries a value: a tag and a sequence number, so that
//! the handler tells a request of ours from anyone else's `SIGURG`), and the handler, running
//! on that thread, walks its own stack with `backtrace::trace_unsynchronized` into a static
//! buffer and flags completion. The requester waits for the flag with a deadline; a thread
//! that does not answer (signals blocked, gone, stopped) keeps what `/proc` says of it.
//!
//! What the sampled thread sees:
//! - SIGURG's default action is to ignore it, so a request that reaches a thread before the
//!   handler is installed, or one that arrives late, does nothing.
//! - The handler is installed with `SA_RESTART`: the kernel restarts `read`, `accept`,
//!   `recv` and untimed futex waits (std's locks, channels and `park`) as if nothing happened.
//!   Calls with a timeout or a sleep (`nanosleep`, a timed futex wait) and `epoll_wait`,
//!   `poll` and `select` return `EINTR` whatever the flags (the kernel restarts them only when
//!   no handler ran): std's `sleep` resumes with the time left, std's timed futex waits and
//!   parking_lot's retry with their deadline, and mio and tokio take `EINTR` from
//!   `epoll_wait` as a spurious wake-up. Code that handles `EINTR` as std does sees nothing.
//!   `errno` is saved and restored around the handler.
//! - A handler the program had for SIGURG is kept: installing ours returns it, and ours calls
//!   it for every SIGURG that is not one of our requests. If the program installs its own
//!   after ours, the next sample finds that out and installs ours again, chaining theirs.
//!
//! What the handler does and does not touch, so that it cannot deadlock with the thread it
//! interrupted (which may hold the allocator's lock, or the dynamic loader's):
//! - it allocates nothing: the frames go into a static array of atomics;
//! - `trace_unsynchronized` calls the unwinder (`_Unwind_Backtrace` from libgcc_s), which
//!   finds each frame's unwind table with glibc's `_dl_find_object` (glibc 2.35 and later,
//!   lock-free and async-signal-safe by its documentation) where libgcc was built against a
//!   glibc that has it (libgcc 12 on Debian 12: `libgcc_s.so.1` imports
//!   `_dl_find_object@GLIBC_2.35`). An older libgcc falls back to `dl_iterate_phdr`, which
//!   takes the loader's lock: a thread sampled while inside `dlopen` would then deadlock its
//!   own handler, so the requester's deadline is what bounds that case (the thread stays
//!   stuck in its handler, as it was stuck in `dlopen`; the report says it was not sampled).
//! - Rust binaries are linked with `-z now`, so no lazy symbol binding (which could take the
//!   loader's lock) happens in the handler; the requester also walks its own stack once before
//!   the first signal, so that anything the unwinder sets up once is set up outside a handler.
//!
//! One sample runs at a time (a lock on the requester's side); each takes about 20 µs plus
//! the thread's wake-up.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// The signal: ignored by default, and used by nothing else in std or tokio.
const SIGNAL: libc::c_int = libc::SIGURG;

/// Return addresses kept per sample.
pub(crate) const FRAMES: usize = 64;

/// How long a thread has to answer.
const DEADLINE: Duration = Duration::from_millis(100);

/// The high bits of a request's value: `LKSAMPLE`, then the sequence number.
const TAG: u64 = 0x4c4b_0000_0000_0000;
const TAG_MASK: u64 = 0xffff_0000_0000_0000;

// `STATE` is `seq << 2 | phase`.
const IDLE: u64 = 0;
const REQUESTED: u64 = 1;
const WRITING: u64 = 2;
const DONE: u64 = 3;

static STATE: AtomicU64 = AtomicU64::new(0);
static SEQ: AtomicU64 = AtomicU64::new(0);
static IPS: [AtomicUsize; FRAMES] = [const { AtomicUsize::new(0) }; FRAMES];
static LEN: AtomicUsize = AtomicUsize::new(0);
/// Where the sampled thread was interrupted (its frames begin there).
static PC: AtomicUsize = AtomicUsize::new(0);
/// The handler the program had for the signal: `SIG_DFL`, `SIG_IGN` or a function, and
/// whether it takes `siginfo`.
static PREVIOUS: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREVIOUS_SIGINFO: AtomicBool = AtomicBool::new(false);
/// Set when a handler never finished writing: the buffer is then never trusted again.
static BROKEN: AtomicBool = AtomicBool::new(false);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Why a thread's stack could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unsampled {
    /// The signal could not be sent: the thread is gone.
    Gone,
    /// No answer within the deadline: the signal is blocked, or the thread is stopped.
    NoAnswer,
    /// The calling thread itself, or an earlier handler that never finished.
    Unavailable,
}

impl std::fmt::Display for Unsampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unsampled::Gone => "stack not sampled: the thread is gone",
            Unsampled::NoAnswer => {
                "stack not sampled: no answer to SIGURG within 100 ms (blocked, or stopped)"
            }
            Unsampled::Unavailable => "stack not sampled",
        })
    }
}

/// The return addresses of thread `tid`'s stack now, innermost first, from the frame it was
/// interrupted in.
pub(crate) fn sample(tid: u32) -> Result<Vec<usize>, Unsampled> {
    // SAFETY: gettid and getpid cannot fail.
    let (me, pid) = unsafe { (libc::gettid() as u32, libc::getpid()) };
    if tid == me {
        return Err(Unsampled::Unavailable);
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if BROKEN.load(Ordering::Acquire) {
        return Err(Unsampled::Unavailable);
    }
    install();
    let seq = (SEQ.fetch_add(1, Ordering::Relaxed) + 1) & !TAG_MASK >> 2;
    STATE.store(seq << 2 | REQUESTED, Ordering::SeqCst);
    let info = QueueInfo::new(pid, TAG | seq);
    // SAFETY: a siginfo of the kernel's size and layout for SI_QUEUE, to a thread of this
    // process; a tid that is gone (or reused by another process's thread: the tgid check
    // refuses it) fails with ESRCH.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            pid,
            tid as libc::pid_t,
            SIGNAL,
            &info as *const QueueInfo,
        )
    };
    if sent != 0 {
        STATE.store(IDLE, Ordering::SeqCst);
        return Err(Unsampled::Gone);
    }
    if !wait_for(seq << 2 | DONE, DEADLINE) {
        // Withdraw the request; a handler that already began writing is waited for.
        if STATE
            .compare_exchange(
                seq << 2 | REQUESTED,
                IDLE,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            return Err(Unsampled::NoAnswer);
        }
        if !wait_for(seq << 2 | DONE, Duration::from_secs(1)) {
            BROKEN.store(true, Ordering::Release);
            return Err(Unsampled::Unavailable);
        }
    }
    let len = LEN.load(Ordering::Acquire).min(FRAMES);
    let ips: Vec<usize> = IPS[..len]
        .iter()
        .map(|ip| ip.load(Ordering::Relaxed))
        .collect();
    let pc = PC.load(Ordering::Relaxed);
    STATE.store(IDLE, Ordering::SeqCst);
    // The handler's own frames and the signal trampoline come first: drop them.
    Ok(match ips.iter().position(|&ip| ip == pc) {
        Some(at) if pc != 0 => ips[at..].to_vec(),
        _ => ips,
    })
}

/// Waits until `STATE` is `want`, or the deadline.
fn wait_for(want: u64, deadline: Duration) -> bool {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if STATE.load(Ordering::Acquire) == want {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        spins += 1;
        if spins < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// Installs the handler, once, and again where the program replaced it since.
fn install() {
    static WARM: Once = Once::new();
    // Whatever the unwinder sets up on first use, it sets up here, outside a handler.
    WARM.call_once(|| {
        // SAFETY: the closure only counts frames.
        unsafe { backtrace::trace_unsynchronized(|_| true) };
    });
    // SAFETY: reading the current disposition into a zeroed sigaction.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    unsafe { libc::sigaction(SIGNAL, std::ptr::null(), &mut current) };
    if current.sa_sigaction == on_signal as *const () as usize {
        return;
    }
    // SAFETY: a zeroed sigaction with our handler, every signal unblocked during it except
    // its own (SA_RESTART: see the module documentation); `previous` receives the one it
    // replaces, which the handler calls for signals not ours.
    unsafe {
        let mut ours: libc::sigaction = std::mem::zeroed();
        ours.sa_sigaction = on_signal as *const () as usize;
        ours.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut ours.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(SIGNAL, &ours, &mut previous) == 0 {
            PREVIOUS_SIGINFO.store(previous.sa_flags & libc::SA_SIGINFO != 0, Ordering::Release);
            PREVIOUS.store(previous.sa_sigaction, Ordering::Release);
        }
    }
}

/// The part of the kernel's `siginfo_t` that `SI_QUEUE` uses, padded to its 128 bytes.
#[repr(C)]
struct Queued {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    /// The kernel's union of fields holds pointers: it starts at 16 on a 64-bit target.
    #[cfg(target_pointer_width = "64")]
    _align: libc::c_int,
    pid: libc::pid_t,
    uid: libc::uid_t,
    value: *mut c_void,
}

#[repr(C)]
union QueueInfo {
    info: std::mem::ManuallyDrop<Queued>,
    size: [u64; 16],
}

impl QueueInfo {
    fn new(pid: libc::pid_t, value: u64) -> QueueInfo {
        let mut out = QueueInfo { size: [0; 16] };
        // SAFETY: getuid cannot fail; `info` overlays the zeroed bytes.
        out.info = std::mem::ManuallyDrop::new(Queued {
            signo: SIGNAL,
            errno: 0,
            code: libc::SI_QUEUE,
            #[cfg(target_pointer_width = "64")]
            _align: 0,
            pid,
            uid: unsafe { libc::getuid() },
            value: value as usize as *mut c_void,
        });
        out
    }
}

// The `pid`, `uid` and `value` of `Queued` are where the kernel's `_rt` fields are: after three
// ints, at the union's pointer alignment.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(
    std::mem::offset_of!(Queued, pid) == 16
        && std::mem::offset_of!(Queued, value) == 24
        && std::mem::size_of::<QueueInfo>() == 128
);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo (SA_SIGINFO); errno is this thread's.
    let errno = unsafe { *libc::__errno_location() };
    let request = unsafe { our_request(info) };
    match request {
        Some(seq) => {
            if STATE
                .compare_exchange(
                    seq << 2 | REQUESTED,
                    seq << 2 | WRITING,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                let mut n = 0;
                // SAFETY: one walk at a time (only the thread that won the exchange above
                // writes); the closure stores into atomics and allocates nothing.
                unsafe {
                    backtrace::trace_unsynchronized(|frame| {
                        IPS[n].store(frame.ip() as usize, Ordering::Relaxed);
                        n += 1;
                        n < FRAMES
                    })
                };
                LEN.store(n, Ordering::Relaxed);
                PC.store(interrupted_pc(ctx), Ordering::Relaxed);
                STATE.store(seq << 2 | DONE, Ordering::Release);
            }
            // A request withdrawn (or stale): nothing to do; it was ours, so no one else's.
        }
        None => chain(sig, info, ctx),
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The sequence number of a request of ours, or `None` for anyone else's signal.
///
/// # Safety
/// `info` is the siginfo the kernel passed to a `SA_SIGINFO` handler.
unsafe fn our_request(info: *const libc::siginfo_t) -> Option<u64> {
    if info.is_null() {
        return None;
    }
    let q = &*(info as *const Queued);
    let value = q.value as usize as u64;
    let ours = q.code == libc::SI_QUEUE && q.pid == libc::getpid() && value & TAG_MASK == TAG;
    ours.then_some(value & !TAG_MASK)
}

/// Runs the handler the program had before ours.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let previous = PREVIOUS.load(Ordering::Acquire);
    if previous == libc::SIG_DFL || previous == libc::SIG_IGN {
        return; // SIGURG's default is to ignore it.
    }
    // SAFETY: `previous` is the handler sigaction returned, of the kind its flags say.
    unsafe {
        if PREVIOUS_SIGINFO.load(Ordering::Acquire) {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                std::mem::transmute(previous);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(previous);
            f(sig);
        }
    }
}

/// The program counter where the signal interrupted the thread, from the handler's context.
fn interrupted_pc(ctx: *mut c_void) -> usize {
    if ctx.is_null() {
        return 0;
    }
    // SAFETY: the kernel passes a valid ucontext to a SA_SIGINFO handler.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] as usize
    }
    #[cfg(target_arch = "aarch64")]
    unsafe {
        (*(ctx as *const libc::ucontext_t)).uc_mcontext.pc as usize
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::super::frames::{frame, Waiting};
    use super::super::waiting;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::{Duration, Instant};

    fn gettid() -> u32 {
        // SAFETY: gettid cannot fail.
        unsafe { libc::gettid() as u32 }
    }

    #[test]
    fn the_user_frame_and_the_call_it_waits_in() {
        let std_file = "/rustc/abc/library/std/src/sync/mpsc.rs";
        let frames = [
            frame("syscall", "syscall.S", 38),
            frame("std::sys::pal::unix::futex::futex_wait", std_file, 70),
            frame("std::sync::mpsc::Receiver<T>::recv", std_file, 800),
            frame(
                "app::pool::worker::{{closure}}",
                "/work/app/src/pool.rs",
                52,
            ),
            frame("std::thread::Builder::spawn", std_file, 10),
        ];
        let picked = Waiting::pick(&frames);
        assert_eq!(
            picked.to_string(),
            "waiting at /work/app/src/pool.rs:52 in std::sync::mpsc::Receiver::recv"
        );
        let lib = [
            frame("std::thread::park", std_file, 9),
            frame(
                "r2d2::Worker<M>::run",
                "/r/.cargo/registry/src/i/r2d2-0.8.10/src/lib.rs",
                88,
            ),
        ];
        assert_eq!(
            Waiting::pick(&lib).to_string(),
            "waiting in r2d2::Worker<M>::run (lib.rs:88)"
        );
        assert_eq!(
            Waiting::pick(&lib[..1]).to_string(),
            "where it waits is not in the debug info"
        );
    }

    /// Runs `body` on a thread that waits in it; samples the thread once it is blocked.
    fn waiting_of(
        body: impl FnOnce() + Send + 'static,
    ) -> (Option<String>, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            body();
        });
        let tid = rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Blocked in its call: `/proc` says it sleeps (`S`).
        while Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
            if stat
                .rsplit_once(')')
                .unwrap()
                .1
                .trim_start()
                .starts_with('S')
            {
                break;
            }
            std::thread::yield_now();
        }
        (waiting(tid), t)
    }

    #[test]
    fn a_thread_waiting_in_recv_is_named_by_its_line_and_the_call() {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let line = line!() + 2;
        let (at, t) = waiting_of(move || {
            let _ = stop_rx.recv();
        });
        drop(stop_tx);
        t.join().unwrap();
        assert_eq!(
            at.unwrap(),
            format!(
                "waiting at {}:{line} in std::sync::mpsc::Receiver::recv",
                file!()
            )
        );
    }

    #[test]
    fn a_thread_waiting_on_a_mutex_is_named_by_its_line() {
        let lock = Arc::new(Mutex::new(()));
        let held = lock.lock().unwrap();
        let theirs = lock.clone();
        let line = line!() + 1;
        let (at, t) = waiting_of(move || drop(theirs.lock()));
        drop(held);
        t.join().unwrap();
        assert_eq!(
            at.unwrap(),
            format!("waiting at {}:{line} in std::sync::Mutex::lock", file!())
        );
    }

    #[test]
    fn a_sleeping_thread_is_named_by_its_line() {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let line = line!() + 3;
        let (at, t) = waiting_of(move || {
            while !flag.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        stop.store(true, Ordering::Release);
        t.join().unwrap();
        assert_eq!(
            at.unwrap(),
            format!("waiting at {}:{line} in std::thread::sleep", file!())
        );
    }

    /// Threads blocked in raw system calls, each sampled many times, then released: each call
    /// returns what it would have without the signals. `read`, `accept` and an untimed futex
    /// wait are restarted by the kernel (SA_RESTART) and never see `EINTR`; `epoll_wait` and
    /// `nanosleep` return `EINTR` whatever the flags, which code that handles it as std does
    /// (retry; resume the sleep with the time left) absorbs.
    #[test]
    fn sampling_does_not_disturb_a_thread_blocked_in_a_system_call() {
        use blocked::*;
        use std::sync::atomic::AtomicU32;
        let interrupted = Arc::new(AtomicU32::new(0));
        let resumed = Arc::new(AtomicU32::new(0));
        let blocked = [
            in_read(),
            in_accept(),
            in_epoll_wait(interrupted.clone()),
            in_nanosleep(resumed.clone()),
            in_futex(),
        ];
        let deadline = Instant::now() + Duration::from_secs(10);
        for b in &blocked {
            while !in_syscall(b.tid) && Instant::now() < deadline {
                std::thread::yield_now();
            }
        }
        for round in 0..20 {
            for b in &blocked {
                let ips = super::sample(b.tid);
                assert!(
                    ips.as_ref().is_ok_and(|ips| !ips.is_empty()),
                    "{} round {round}: {ips:?}",
                    b.name
                );
            }
        }
        let results: Vec<(&str, Result<String, String>)> =
            blocked.into_iter().map(Blocked::release).collect();
        assert_eq!(
            results,
            [
                ("read", Ok("ping".to_owned())),
                ("accept", Ok("accepted".to_owned())),
                ("epoll_wait", Ok("event 7".to_owned())),
                ("nanosleep", Ok("slept".to_owned())),
                ("futex", Ok("woken".to_owned())),
            ]
        );
        // epoll_wait and nanosleep saw the signals as EINTR (and went on): what the module
        // documentation says.
        assert!(interrupted.load(Ordering::Relaxed) > 0);
        assert!(resumed.load(Ordering::Relaxed) > 0);
    }

    /// Threads blocked in one raw system call each, for the test above: each plants a thread,
    /// and [`Blocked::release`] lets it go and returns what its call returned.
    mod blocked {
        use super::gettid;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::{mpsc, Arc};
        use std::time::{Duration, Instant};

        pub(super) struct Blocked {
            pub name: &'static str,
            pub tid: u32,
            thread: std::thread::JoinHandle<Result<String, String>>,
            release: Box<dyn FnOnce()>,
            /// The fds the call and the release use, closed once the thread has ended.
            fds: Vec<OwnedFd>,
        }

        impl Blocked {
            /// Lets the thread's call return; what it returned.
            pub fn release(self) -> (&'static str, Result<String, String>) {
                (self.release)();
                let returned = self.thread.join().unwrap();
                drop(self.fds);
                (self.name, returned)
            }
        }

        fn start(
            name: &'static str,
            call: impl FnOnce() -> Result<String, String> + Send + 'static,
            release: impl FnOnce() + 'static,
            fds: Vec<OwnedFd>,
        ) -> Blocked {
            let (tx, rx) = mpsc::channel();
            let thread = std::thread::spawn(move || {
                tx.send(gettid()).unwrap();
                call()
            });
            let tid = rx.recv().unwrap();
            let release = Box::new(release);
            Blocked {
                name,
                tid,
                thread,
                release,
                fds,
            }
        }

        /// `fd`, owned: closed when the [`Blocked`] that holds it is released.
        fn owned(fd: RawFd) -> OwnedFd {
            assert!(fd >= 0, "no fd: errno {}", errno());
            // SAFETY: a fresh fd, owned by nobody else; the call and the release use it only
            // until the thread is joined, before it is closed.
            unsafe { OwnedFd::from_raw_fd(fd) }
        }

        fn errno() -> i32 {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        }

        /// True while the thread sits in a system call.
        pub fn in_syscall(tid: u32) -> bool {
            let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"));
            s.is_ok_and(|s| !s.starts_with("running") && !s.starts_with("-1"))
        }

        /// `read` on a pipe; released by 4 bytes.
        pub fn in_read() -> Blocked {
            let mut fds = [0; 2];
            // SAFETY: a valid array for two fds.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            let (reader, writer) = (fds[0], fds[1]);
            let call = move || {
                let mut buf = [0u8; 4];
                // SAFETY: a valid buffer of 4 bytes on an open pipe.
                match unsafe { libc::read(reader, buf.as_mut_ptr().cast(), 4) } {
                    4 => Ok(String::from_utf8_lossy(&buf).into_owned()),
                    n => Err(format!("read returned {n}, errno {}", errno())),
                }
            };
            // SAFETY: a write to the pipe's open write end.
            let release = move || {
                assert_eq!(
                    unsafe { libc::write(writer, b"ping".as_ptr().cast(), 4) },
                    4
                )
            };
            start("read", call, release, vec![owned(reader), owned(writer)])
        }

        /// `accept` on a listener; released by a connection.
        pub fn in_accept() -> Blocked {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let call = move || {
                // SAFETY: an open listening socket (the closure owns it); no peer address.
                let fd = unsafe {
                    libc::accept(
                        listener.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
                if fd < 0 {
                    return Err(format!("accept failed, errno {}", errno()));
                }
                // SAFETY: the fd accept returned, closed once.
                unsafe { libc::close(fd) };
                Ok("accepted".to_owned())
            };
            let release = move || drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
            start("accept", call, release, Vec::new())
        }

        /// `epoll_wait` on an eventfd, retried on `EINTR` (counted) as std and mio do; released
        /// by an event.
        pub fn in_epoll_wait(interrupted: Arc<AtomicU32>) -> Blocked {
            // SAFETY: plain fd-creating calls.
            let (epfd, efd) = unsafe {
                (
                    libc::epoll_create1(libc::EPOLL_CLOEXEC),
                    libc::eventfd(0, libc::EFD_CLOEXEC),
                )
            };
            let fds = vec![owned(epfd), owned(efd)];
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 7,
            };
            // SAFETY: both fds are open; `ev` is valid.
            let added = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, efd, &mut ev) };
            assert_eq!(added, 0);
            let call = move || loop {
                let mut out = [libc::epoll_event { events: 0, u64: 0 }];
                // SAFETY: a valid array of one event on an open epoll fd.
                match unsafe { libc::epoll_wait(epfd, out.as_mut_ptr(), 1, -1) } {
                    1 => break Ok(format!("event {}", { out[0].u64 })),
                    -1 if errno() == libc::EINTR => {
                        interrupted.fetch_add(1, Ordering::Relaxed);
                    }
                    n => break Err(format!("epoll_wait returned {n}, errno {}", errno())),
                }
            };
            // SAFETY: a write to the open eventfd.
            let release = move || assert_eq!(unsafe { libc::eventfd_write(efd, 1) }, 0);
            start("epoll_wait", call, release, fds)
        }

        /// `nanosleep` for 600 ms, resumed with the time left on `EINTR` (counted) as std's
        /// `sleep` does; released by the time running out.
        pub fn in_nanosleep(resumed: Arc<AtomicU32>) -> Blocked {
            let call = move || {
                let start = Instant::now();
                let mut req = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 600_000_000,
                };
                loop {
                    let mut left = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    // SAFETY: valid timespecs.
                    match unsafe { libc::nanosleep(&req, &mut left) } {
                        0 if start.elapsed() >= Duration::from_millis(600) => {
                            return Ok("slept".to_owned())
                        }
                        0 => return Err(format!("woke early, after {:?}", start.elapsed())),
                        _ if errno() == libc::EINTR => {
                            resumed.fetch_add(1, Ordering::Relaxed);
                            req = left;
                        }
                        _ => return Err(format!("nanosleep failed, errno {}", errno())),
                    }
                }
            };
            start("nanosleep", call, || (), Vec::new())
        }

        /// A futex wait with no timeout; released by a store and a wake.
        pub fn in_futex() -> Blocked {
            let word = Arc::new(AtomicU32::new(0));
            let waited = word.clone();
            let call = move || loop {
                // SAFETY: a futex word that lives as long as the Arc.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        waited.as_ptr(),
                        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                        0u32,
                        std::ptr::null::<libc::timespec>(),
                    )
                };
                match (r, errno()) {
                    // Woken, or the word had changed: done once it is set.
                    (0, _) | (-1, libc::EAGAIN) if waited.load(Ordering::Acquire) == 1 => {
                        return Ok("woken".to_owned())
                    }
                    (0, _) => continue, // a wake-up with the word unchanged: wait again
                    (_, e) => return Err(format!("futex returned {r}, errno {e}")),
                }
            };
            let release = move || {
                word.store(1, Ordering::Release);
                // SAFETY: wakes the waiter on the same word.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        word.as_ptr(),
                        libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                        1,
                    )
                };
            };
            start("futex", call, release, Vec::new())
        }
    }

    static USER_SAW: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    extern "C" fn users_handler(_: libc::c_int) {
        USER_SAW.fetch_add(1, Ordering::Relaxed);
    }

    /// A SIGURG handler of the program's own keeps getting its signals, and never ours.
    #[test]
    fn a_handler_the_program_had_is_chained() {
        // SAFETY: a handler that only counts.
        unsafe {
            libc::signal(
                libc::SIGURG,
                users_handler as *const () as libc::sighandler_t,
            )
        };
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (tid_tx, tid_rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        for _ in 0..5 {
            super::sample(tid).unwrap();
        }
        assert_eq!(USER_SAW.load(Ordering::Relaxed), 0);
        // SAFETY: a signal to a live thread of this process.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGURG) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while USER_SAW.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        drop(stop_tx);
        t.join().unwrap();
        assert_eq!(USER_SAW.load(Ordering::Relaxed), 1);
    }
}
