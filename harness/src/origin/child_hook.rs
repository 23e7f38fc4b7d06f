//! Where each child process was spawned: `posix_spawn`, `posix_spawnp` and `fork`, defined in
//! this crate (see `spawn_hook.rs` for why a definition here interposes).
//!
//! std's `Command::spawn` uses `posix_spawnp` when it can, and `fork` + `exec` otherwise (a
//! `pre_exec` closure, a `uid`, a process group on older glibc…): both are covered. After the
//! real call made a child, the parent records its return addresses under the child's pid in a
//! static table placed by pid (`table.rs`): a pid that maps to an entry of an older child
//! replaces it, and a read for the older pid then finds nothing rather than a wrong site.
//!
//! `vfork` is not interposed: its child runs on the caller's stack until it execs, and a
//! wrapper frame returning in the child would corrupt the parent's. Neither std nor glibc's
//! `posix_spawn` (which clones directly) calls it.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::fd_hook;
use super::table::{self, Table};

/// Entries in the pid table (a pid's entry is at pid % PIDS).
pub(crate) const PIDS: usize = 1024;

static TABLE: Table<PIDS> = Table::new();
/// How many children were recorded.
static SEEN: AtomicU64 = AtomicU64::new(0);
static REAL_SPAWN: AtomicUsize = AtomicUsize::new(0);
static REAL_SPAWNP: AtomicUsize = AtomicUsize::new(0);

type Spawn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    *const *mut c_char,
    *const *mut c_char,
) -> c_int;
type Fork = unsafe extern "C" fn() -> libc::pid_t;

/// Records the caller's backtrace for child `pid`.
#[inline(always)]
fn spawned(pid: libc::pid_t) {
    if pid <= 0 || !table::recording() {
        return;
    }
    let Some(_inside) = table::enter() else {
        return;
    };
    // SAFETY: errno is this thread's; the unwinder may set it.
    let errno = unsafe { *libc::__errno_location() };
    TABLE.record(pid as usize % PIDS, pid as u32, 0);
    SEEN.fetch_add(1, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn real_spawn(cache: &AtomicUsize, name: &std::ffi::CStr) -> Option<Spawn> {
    match table::next_symbol(cache, name) {
        0 => None,
        // SAFETY: glibc's definition of this very function.
        f => Some(unsafe { std::mem::transmute::<usize, Spawn>(f) }),
    }
}

/// Spawns a process (its pid recorded).
///
/// # Safety
/// glibc's `posix_spawn` contract.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    path: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let Some(real) = real_spawn(&REAL_SPAWN, c"posix_spawn") else {
        return libc::ENOSYS;
    };
    let rc = real(pid, path, actions, attr, argv, envp);
    if rc == 0 && !pid.is_null() {
        spawned(*pid);
    }
    rc
}

/// Spawns a process found in `PATH` (its pid recorded). std's `Command::spawn` calls this one
/// when it can.
///
/// # Safety
/// glibc's `posix_spawnp` contract.
#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    file: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let Some(real) = real_spawn(&REAL_SPAWNP, c"posix_spawnp") else {
        return libc::ENOSYS;
    };
    let rc = real(pid, file, actions, attr, argv, envp);
    if rc == 0 && !pid.is_null() {
        spawned(*pid);
    }
    rc
}

/// Forks (the child's pid recorded in the parent). std's `Command::spawn` calls this one when
/// it cannot use `posix_spawnp`.
///
/// # Safety
/// glibc's `fork` contract.
#[no_mangle]
pub unsafe extern "C" fn fork() -> libc::pid_t {
    // Every glibc definition the hooks forward to is looked up before the fork (by
    // `fd_hook::init`): the child never calls `dlsym`.
    match fd_hook::real_fork() {
        0 => {
            *libc::__errno_location() = libc::ENOSYS;
            -1
        }
        f => {
            // SAFETY: glibc's `fork`.
            let pid = std::mem::transmute::<usize, Fork>(f)();
            if pid > 0 {
                spawned(pid);
            }
            pid
        }
    }
}

/// The return addresses recorded when child `pid` was spawned, innermost first.
pub(crate) fn child_ips(pid: u32) -> Option<Vec<usize>> {
    TABLE.get(pid as usize % PIDS, pid, None)
}

/// True once any child was recorded: the hooks are linked in and live.
pub(crate) fn hook_seen() -> bool {
    SEEN.load(Ordering::Relaxed) > 0
}

/// Keeps the hooks in the link (see `spawn_hook::keep_linked`).
#[inline(never)]
pub(crate) fn keep_linked() {
    std::hint::black_box([
        posix_spawn as *const c_void,
        posix_spawnp as *const c_void,
        fork as *const c_void,
    ]);
}
