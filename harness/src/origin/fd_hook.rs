//! Where each fd of the process was created: the fd-creating calls of the C library, defined
//! in this crate.
//!
//! As with `pthread_create` (see `spawn_hook.rs`), an executable that defines `open64` or
//! `socket` itself is where the static linker resolves std's (and any statically linked C
//! code's) calls to them; each definition forwards to glibc's through `dlsym(RTLD_NEXT)` and,
//! when the call made an fd, records the caller's return addresses at the fd's number in a
//! static table (`table.rs`). An fd's site is that of the call that last created its number;
//! `close` forgets it, and each record also keeps the fd's identity (device and inode, one
//! `fstat`), so a number reused by a call this module does not see (glibc's own opens, a raw
//! syscall) is never given a stale site.
//!
//! Covered: `open`, `open64`, `openat`, `openat64`, `creat`, `creat64`, `opendir` (std's
//! `read_dir`), `socket`, `socketpair`, `accept`, `accept4`, `pipe`, `pipe2`, `dup`, `dup2`,
//! `dup3`, `fcntl` (`F_DUPFD`, `F_DUPFD_CLOEXEC`: std's `try_clone`), `eventfd`,
//! `epoll_create`, `epoll_create1`, `inotify_init`, `inotify_init1`, `memfd_create`,
//! `timerfd_create`, `signalfd`. Not covered: fds made inside glibc (`fopen`, `getaddrinfo`),
//! by raw syscalls, or by shared libraries' own calls (those bind to glibc at run time).
//!
//! The variadic ones (`open`, `openat`, `fcntl`) are defined with their optional argument as a
//! fixed one: on x86_64 and aarch64 Linux a variadic integer argument travels in the same
//! register as a fixed one, so the definition reads what the caller passed (or an unused
//! register, which glibc then ignores too). The module is built for those two only.
//!
//! Same rules as the thread hook: no allocation and no lock on the way (atomics, the unwinder,
//! one `fstat`), a re-entry flag, `errno` preserved, glibc's definitions looked up once. A
//! process forked without exec (a `pre_exec` child, before its `execve`) records nothing: the
//! child may be in the middle of what its parent's other threads were doing at the fork.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::table::{self, Table};

/// fd numbers the table covers (0..FDS); higher numbers are created as usual, unrecorded.
pub(crate) const FDS: usize = 8192;

static TABLE: Table<FDS> = Table::new();
/// How many fd creations were recorded (to tell "not recorded" from "hooks not linked").
static SEEN: AtomicU64 = AtomicU64::new(0);
/// Set in the child of a `fork` (by a `pthread_atfork` handler): record nothing there.
static FORKED: AtomicBool = AtomicBool::new(false);

/// glibc's definitions, by the index of their name in `NAMES`, looked up together once.
static REAL: [AtomicUsize; NAMES.len()] = [const { AtomicUsize::new(0) }; NAMES.len()];
const NAMES: [&std::ffi::CStr; 27] = [
    c"open",
    c"open64",
    c"openat",
    c"openat64",
    c"creat",
    c"creat64",
    c"opendir",
    c"socket",
    c"socketpair",
    c"accept",
    c"accept4",
    c"pipe",
    c"pipe2",
    c"dup",
    c"dup2",
    c"dup3",
    c"fcntl",
    c"eventfd",
    c"epoll_create",
    c"epoll_create1",
    c"inotify_init",
    c"inotify_init1",
    c"memfd_create",
    c"timerfd_create",
    c"signalfd",
    c"close",
    c"fork",
];

/// Looks up every real definition (and registers the fork handler) once: the first hook call
/// pays it, and a `fork` through this crate's hook makes sure it happened before forking, so a
/// child never calls `dlsym` (which takes the loader's lock).
pub(crate) fn init() {
    static STATE: AtomicU32 = AtomicU32::new(0); // 0 new, 1 in progress, 2 done
    if STATE.load(Ordering::Acquire) == 2 {
        return;
    }
    if STATE
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire)
        .is_ok()
    {
        for (name, cache) in NAMES.iter().zip(&REAL) {
            table::next_symbol(cache, name);
        }
        // SAFETY: registers a handler that stores one atomic.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        STATE.store(2, Ordering::Release);
        return;
    }
    while STATE.load(Ordering::Acquire) != 2 {
        std::hint::spin_loop();
    }
}

extern "C" fn after_fork_in_child() {
    FORKED.store(true, Ordering::Relaxed);
}

/// glibc's definition of `NAMES[i]`, or 0.
fn real(i: usize) -> usize {
    init();
    REAL[i].load(Ordering::Acquire)
}

/// Calls glibc's definition `$i` as type `$ty`, or fails with `ENOSYS` ($fail) where there is
/// none (a static binary).
macro_rules! forward {
    ($i:expr, $fail:expr, $ty:ty, ($($arg:expr),*)) => {{
        match real($i) {
            0 => {
                *libc::__errno_location() = libc::ENOSYS;
                $fail
            }
            // SAFETY: the address of glibc's definition of this very function.
            f => std::mem::transmute::<usize, $ty>(f)($($arg),*),
        }
    }};
}

type Fn0 = unsafe extern "C" fn() -> c_int;
type Fn1 = unsafe extern "C" fn(c_int) -> c_int;
type Fn2 = unsafe extern "C" fn(c_int, c_int) -> c_int;
type Fn3 = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type Open = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
type OpenAt = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
type Creat = unsafe extern "C" fn(*const c_char, libc::mode_t) -> c_int;
type Accept = unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> c_int;
type Accept4 =
    unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut libc::socklen_t, c_int) -> c_int;
type Pair = unsafe extern "C" fn(c_int, c_int, c_int, *mut c_int) -> c_int;
type Pipe = unsafe extern "C" fn(*mut c_int) -> c_int;
type Pipe2 = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type Fcntl = unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
type EventFd = unsafe extern "C" fn(c_uint, c_int) -> c_int;
type MemFd = unsafe extern "C" fn(*const c_char, c_uint) -> c_int;
type SignalFd = unsafe extern "C" fn(c_int, *const libc::sigset_t, c_int) -> c_int;
type OpenDir = unsafe extern "C" fn(*const c_char) -> *mut libc::DIR;

/// Records the caller's backtrace for a new `fd` (nothing for a failed call).
#[inline(always)]
fn created(fd: c_int) {
    if fd < 0 || fd as usize >= FDS || FORKED.load(Ordering::Relaxed) || !table::recording() {
        return;
    }
    let Some(_inside) = table::enter() else {
        return;
    };
    // SAFETY: errno is this thread's; the unwinder and fstat may set it, the caller must see
    // the real call's.
    let errno = unsafe { *libc::__errno_location() };
    TABLE.record(fd as usize, fd as u32, identity(fd).unwrap_or(0));
    SEEN.fetch_add(1, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// An fd's identity: its device and inode, folded into one number.
fn identity(fd: c_int) -> Option<u64> {
    // SAFETY: an all-zero `stat` is a valid out-buffer; fstat writes it or fails.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer; fstat on any number is safe.
    if unsafe { libc::fstat64(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_ino as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ st.st_dev as u64)
}

/// Opens a file (recorded; see the module docs).
///
/// # Safety
/// glibc's `open` contract (`mode` is read only with `O_CREAT` or `O_TMPFILE`).
#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    let fd = forward!(0, -1, Open, (path, flags, mode));
    created(fd);
    fd
}

/// Opens a file (recorded; see the module docs). std's `File::open` calls this one.
///
/// # Safety
/// glibc's `open64` contract.
#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    let fd = forward!(1, -1, Open, (path, flags, mode));
    created(fd);
    fd
}

/// Opens a file relative to a directory fd (recorded).
///
/// # Safety
/// glibc's `openat` contract.
#[no_mangle]
pub unsafe extern "C" fn openat(
    dir: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    let fd = forward!(2, -1, OpenAt, (dir, path, flags, mode));
    created(fd);
    fd
}

/// Opens a file relative to a directory fd (recorded). std's `remove_dir_all` calls this one.
///
/// # Safety
/// glibc's `openat64` contract.
#[no_mangle]
pub unsafe extern "C" fn openat64(
    dir: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    let fd = forward!(3, -1, OpenAt, (dir, path, flags, mode));
    created(fd);
    fd
}

/// Creates a file (recorded).
///
/// # Safety
/// glibc's `creat` contract.
#[no_mangle]
pub unsafe extern "C" fn creat(path: *const c_char, mode: libc::mode_t) -> c_int {
    let fd = forward!(4, -1, Creat, (path, mode));
    created(fd);
    fd
}

/// Creates a file (recorded).
///
/// # Safety
/// glibc's `creat64` contract.
#[no_mangle]
pub unsafe extern "C" fn creat64(path: *const c_char, mode: libc::mode_t) -> c_int {
    let fd = forward!(5, -1, Creat, (path, mode));
    created(fd);
    fd
}

/// Opens a directory stream (its fd recorded). std's `read_dir` calls this one.
///
/// # Safety
/// glibc's `opendir` contract.
#[no_mangle]
pub unsafe extern "C" fn opendir(path: *const c_char) -> *mut libc::DIR {
    let dir = forward!(6, std::ptr::null_mut(), OpenDir, (path));
    if !dir.is_null() {
        created(libc::dirfd(dir));
    }
    dir
}

/// Creates a socket (recorded).
///
/// # Safety
/// glibc's `socket` contract.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    let fd = forward!(7, -1, Fn3, (domain, ty, protocol));
    created(fd);
    fd
}

/// Creates a pair of connected sockets (both recorded).
///
/// # Safety
/// glibc's `socketpair` contract.
#[no_mangle]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    let rc = forward!(8, -1, Pair, (domain, ty, protocol, sv));
    if rc == 0 {
        created(*sv);
        created(*sv.add(1));
    }
    rc
}

/// Accepts a connection (the new fd recorded).
///
/// # Safety
/// glibc's `accept` contract.
#[no_mangle]
pub unsafe extern "C" fn accept(
    fd: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> c_int {
    let new = forward!(9, -1, Accept, (fd, addr, len));
    created(new);
    new
}

/// Accepts a connection (the new fd recorded). std's `TcpListener::accept` calls this one.
///
/// # Safety
/// glibc's `accept4` contract.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
    flags: c_int,
) -> c_int {
    let new = forward!(10, -1, Accept4, (fd, addr, len, flags));
    created(new);
    new
}

/// Creates a pipe (both ends recorded).
///
/// # Safety
/// glibc's `pipe` contract.
#[no_mangle]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    let rc = forward!(11, -1, Pipe, (fds));
    if rc == 0 {
        created(*fds);
        created(*fds.add(1));
    }
    rc
}

/// Creates a pipe (both ends recorded). std's `io::pipe` and `Command` call this one.
///
/// # Safety
/// glibc's `pipe2` contract.
#[no_mangle]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    let rc = forward!(12, -1, Pipe2, (fds, flags));
    if rc == 0 {
        created(*fds);
        created(*fds.add(1));
    }
    rc
}

/// Duplicates an fd (the copy recorded).
///
/// # Safety
/// glibc's `dup` contract.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let new = forward!(13, -1, Fn1, (fd));
    created(new);
    new
}

/// Duplicates an fd onto a given number (recorded there).
///
/// # Safety
/// glibc's `dup2` contract.
#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    let new = forward!(14, -1, Fn2, (fd, to));
    if new != fd {
        created(new);
    }
    new
}

/// Duplicates an fd onto a given number (recorded there).
///
/// # Safety
/// glibc's `dup3` contract.
#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    let new = forward!(15, -1, Fn3, (fd, to, flags));
    created(new);
    new
}

/// `fcntl`; a duplicate it makes (`F_DUPFD`, `F_DUPFD_CLOEXEC`: std's `try_clone`) is
/// recorded.
///
/// # Safety
/// glibc's `fcntl` contract (`arg` is read only by the commands that take one).
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    let rc = forward!(16, -1, Fcntl, (fd, cmd, arg));
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        created(rc);
    }
    rc
}

/// Creates an eventfd (recorded).
///
/// # Safety
/// glibc's `eventfd` contract.
#[no_mangle]
pub unsafe extern "C" fn eventfd(init: c_uint, flags: c_int) -> c_int {
    let fd = forward!(17, -1, EventFd, (init, flags));
    created(fd);
    fd
}

/// Creates an epoll instance (recorded).
///
/// # Safety
/// glibc's `epoll_create` contract.
#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    let fd = forward!(18, -1, Fn1, (size));
    created(fd);
    fd
}

/// Creates an epoll instance (recorded). mio (tokio's reactor) calls this one.
///
/// # Safety
/// glibc's `epoll_create1` contract.
#[no_mangle]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    let fd = forward!(19, -1, Fn1, (flags));
    created(fd);
    fd
}

/// Creates an inotify instance (recorded).
///
/// # Safety
/// glibc's `inotify_init` contract.
#[no_mangle]
pub unsafe extern "C" fn inotify_init() -> c_int {
    let fd = forward!(20, -1, Fn0, ());
    created(fd);
    fd
}

/// Creates an inotify instance (recorded). notify calls this one.
///
/// # Safety
/// glibc's `inotify_init1` contract.
#[no_mangle]
pub unsafe extern "C" fn inotify_init1(flags: c_int) -> c_int {
    let fd = forward!(21, -1, Fn1, (flags));
    created(fd);
    fd
}

/// Creates an anonymous memory file (recorded).
///
/// # Safety
/// glibc's `memfd_create` contract.
#[no_mangle]
pub unsafe extern "C" fn memfd_create(name: *const c_char, flags: c_uint) -> c_int {
    let fd = forward!(22, -1, MemFd, (name, flags));
    created(fd);
    fd
}

/// Creates a timerfd (recorded).
///
/// # Safety
/// glibc's `timerfd_create` contract.
#[no_mangle]
pub unsafe extern "C" fn timerfd_create(clock: c_int, flags: c_int) -> c_int {
    let fd = forward!(23, -1, Fn2, (clock, flags));
    created(fd);
    fd
}

/// Creates a signalfd (recorded when `fd` is -1, i.e. a new one is made).
///
/// # Safety
/// glibc's `signalfd` contract.
#[no_mangle]
pub unsafe extern "C" fn signalfd(fd: c_int, mask: *const libc::sigset_t, flags: c_int) -> c_int {
    let new = forward!(24, -1, SignalFd, (fd, mask, flags));
    if fd == -1 {
        created(new);
    }
    new
}

/// Closes an fd, forgetting its recorded site first.
///
/// # Safety
/// glibc's `close` contract.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if fd >= 0 {
        TABLE.clear(fd as usize);
    }
    forward!(25, -1, Fn1, (fd))
}

/// glibc's `fork`, for the child hook (index 26 of `NAMES`), looked up by `init`.
pub(crate) fn real_fork() -> usize {
    real(26)
}

/// The return addresses recorded when `fd` was created, innermost first, if the fd is still
/// the one that call made.
pub(crate) fn fd_ips(fd: u32) -> Option<Vec<usize>> {
    let tag = identity(fd as c_int)?;
    TABLE.get(fd as usize, fd, Some(tag))
}

/// True once any fd creation was recorded: the hooks are linked in and live.
pub(crate) fn hook_seen() -> bool {
    SEEN.load(Ordering::Relaxed) > 0
}

/// Keeps the hooks in the link (see `spawn_hook::keep_linked`).
#[inline(never)]
pub(crate) fn keep_linked() {
    let all: [*const c_void; 26] = [
        open as *const c_void,
        open64 as *const c_void,
        openat as *const c_void,
        openat64 as *const c_void,
        creat as *const c_void,
        creat64 as *const c_void,
        opendir as *const c_void,
        socket as *const c_void,
        socketpair as *const c_void,
        accept as *const c_void,
        accept4 as *const c_void,
        pipe as *const c_void,
        pipe2 as *const c_void,
        dup as *const c_void,
        dup2 as *const c_void,
        dup3 as *const c_void,
        fcntl as *const c_void,
        eventfd as *const c_void,
        epoll_create as *const c_void,
        epoll_create1 as *const c_void,
        inotify_init as *const c_void,
        inotify_init1 as *const c_void,
        memfd_create as *const c_void,
        timerfd_create as *const c_void,
        signalfd as *const c_void,
        close as *const c_void,
    ];
    std::hint::black_box(all);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_is_known_to_the_resolver() {
        // `close` records nothing; every other hook's frame must be skipped when a site is
        // picked, or it would be taken for the user's code.
        for name in NAMES.iter().filter(|n| **n != c"close") {
            let name = name.to_str().unwrap();
            assert!(super::super::resolve::HOOKS.contains(&name), "{name}");
        }
        for name in ["posix_spawn", "posix_spawnp", "fork", "pthread_create"] {
            assert!(super::super::resolve::HOOKS.contains(&name), "{name}");
        }
    }

    #[test]
    fn a_closed_fd_has_no_site() {
        super::super::table::enable();
        // A number no other test of this process uses: dup2 creates it, close ends it.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid out-pointer.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        let n = (limit.rlim_cur as usize).min(FDS) as c_int - 7;
        let file = std::fs::File::open(std::env::temp_dir()).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: duplicating an open fd onto a free number, then closing that number.
        unsafe {
            assert_eq!(libc::dup2(fd, n), n);
            assert!(fd_ips(n as u32).is_some_and(|ips| ips.len() > 3));
            assert_eq!(libc::close(n), 0);
        }
        assert_eq!(fd_ips(n as u32), None);
    }
}
