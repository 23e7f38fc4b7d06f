//! Reading `/proc/self` with as few syscalls as possible.
//!
//! Counting is the hot path of every check. The harness opens `/proc/self/task` and
//! `/proc/self/fd` once and lists them by rewinding: one `lseek` and one `getdents64` into a
//! stack buffer, with no allocation per entry and no `stat`. Both directory fds show up in the
//! fd listing; the harness leaves them out, so it never counts its own reads.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{ListError, Listing};

/// Lists the ids of `what` into `out`, sorted and deduplicated.
pub(crate) fn list(what: Listing, out: &mut Vec<u32>) -> Result<(), ListError> {
    Dirs::list(what, out)
}

/// The pids of this process's child processes, running or zombie, sorted.
pub(crate) fn children(out: &mut Vec<u32>) -> Result<(), ListError> {
    if has_no_children() {
        return Ok(());
    }
    let mut tids = Vec::new();
    list(Listing::Threads, &mut tids)?;
    children_of(&tids, out)
        .map_err(|e| ListError::Failed(format!("cannot read the children of /proc/self/task: {e}")))
}

/// A child process's command and state; `None` if it is gone.
pub(crate) fn child(pid: u32) -> Option<(String, char)> {
    process_stat(pid).map(|s| (s.command, s.state))
}

/// The process's main thread id and the caller's.
pub(crate) fn main_and_current_tid() -> Option<(u32, u32)> {
    Some(main_and_current_tids())
}

/// The two directories every snapshot lists, opened once per process and rewound for each
/// listing (the path walk of an `open` costs as much as the listing itself). A
/// fork gets its own: the inherited ones would list the parent.
struct Dirs {
    pid: u32,
    tasks: Result<Dir, String>,
    fds: Result<Dir, String>,
}

impl Dirs {
    fn open(pid: u32) -> Self {
        let open = |path: &std::ffi::CStr| {
            Dir::open(path).map_err(|e| format!("cannot open {}: {e}", path.to_string_lossy()))
        };
        Dirs {
            pid,
            tasks: open(TASK_DIR),
            fds: open(FD_DIR),
        }
    }

    fn list(what: Listing, out: &mut Vec<u32>) -> Result<(), ListError> {
        static DIRS: std::sync::Mutex<Option<Dirs>> = std::sync::Mutex::new(None);
        // A listing rewinds a shared offset: one at a time. A poisoned lock only means a
        // panic elsewhere while listing; the directories are still fine.
        let mut guard = DIRS.lock().unwrap_or_else(|e| e.into_inner());
        let (pid, _) = main_and_current_tids();
        let dirs = match &mut *guard {
            Some(dirs) if dirs.pid == pid => dirs,
            slot => slot.insert(Dirs::open(pid)),
        };
        let (dir, path) = match what {
            Listing::Fds => (&dirs.fds, FD_DIR),
            Listing::Threads => (&dirs.tasks, TASK_DIR),
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

/// An open `/proc` directory, listed again and again by rewinding it: one `lseek` and a
/// `getdents64` per listing, with no path walk.
pub(crate) struct Dir {
    fd: OwnedFd,
}

impl Dir {
    pub(crate) fn open(path: &CStr) -> io::Result<Dir> {
        // SAFETY: `path` is a valid NUL-terminated string; the flags open a directory read-only.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The fd number this directory holds (to leave it out of the fd count).
    pub(crate) fn raw(&self) -> u32 {
        self.fd.as_raw_fd() as u32
    }

    /// Lists the numeric entries into `out`, sorted and deduplicated.
    pub(crate) fn list(&self, out: &mut Vec<u32>) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: `fd` is an open directory owned by `self`.
        if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // u64 elements keep the buffer aligned for `linux_dirent64`; only what the kernel
        // writes is read, so it need not be zeroed first.
        let mut buf = [std::mem::MaybeUninit::<u64>::uninit(); 1024];
        loop {
            // SAFETY: the buffer is valid for writes of its full size during the call.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    fd,
                    buf.as_mut_ptr().cast::<u8>(),
                    std::mem::size_of_val(&buf),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
            // SAFETY: the kernel wrote `n` bytes of dirent records into the buffer.
            let bytes =
                unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
            parse_dirents(bytes, out);
            // procfs fills the buffer until its listing is done; a buffer left half empty
            // means the end was reached, which saves the call that would return 0.
            if (n as usize) < std::mem::size_of_val(&buf) / 2 {
                break;
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(())
    }
}

/// Appends the numeric names found in a buffer of `linux_dirent64` records.
fn parse_dirents(bytes: &[u8], out: &mut Vec<u32>) {
    // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
    const NAME: usize = 19;
    let mut pos = 0;
    while pos + NAME <= bytes.len() {
        let reclen = u16::from_ne_bytes([bytes[pos + 16], bytes[pos + 17]]) as usize;
        if reclen == 0 || pos + reclen > bytes.len() {
            break;
        }
        let name = &bytes[pos + NAME..pos + reclen];
        let mut value: u32 = 0;
        let mut digits = 0;
        for &b in name.iter().take_while(|&&b| b != 0) {
            if !b.is_ascii_digit() {
                digits = 0;
                break;
            }
            value = value.wrapping_mul(10).wrapping_add(u32::from(b - b'0'));
            digits += 1;
        }
        if digits > 0 {
            out.push(value);
        }
        pos += reclen;
    }
}

pub(crate) const TASK_DIR: &CStr = c"/proc/self/task";
pub(crate) const FD_DIR: &CStr = c"/proc/self/fd";

/// The thread's name as the kernel reports it (at most 15 bytes), or `None` if it has exited.
pub(crate) fn thread_name(tid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/self/task/{tid}/comm")).ok()?;
    let text = String::from_utf8_lossy(&raw);
    Some(text.trim_end_matches('\n').to_owned())
}

/// What the fd points at (`anon_inode:inotify`, `socket:[123]`, a path), or `None` if closed.
pub(crate) fn fd_target(fd: u32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    Some(target.to_string_lossy().into_owned())
}

/// Whether this process has no child process at all, running or zombie: one `waitid` that
/// neither waits (`WNOHANG`) nor reaps (`WNOWAIT`), and fails with `ECHILD` when there is no
/// child. The common case costs one syscall instead of a file per thread.
pub(crate) fn has_no_children() -> bool {
    // SAFETY: `info` is a valid siginfo_t to write into; with WNOHANG | WNOWAIT the call
    // neither blocks nor changes any child's state.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED
                | libc::WSTOPPED
                | libc::WCONTINUED
                | libc::WNOHANG
                | libc::WNOWAIT
                | libc::__WALL,
        );
        r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
    }
}

/// The pids of this process's children, from `/proc/self/task/<tid>/children` (a child is
/// listed under the thread that forked it), or, where the kernel has no such file, from a scan
/// of `/proc/*/stat` for processes whose parent is this one. Sorted, deduplicated.
pub(crate) fn children_of(tids: &[u32], out: &mut Vec<u32>) -> io::Result<()> {
    for &tid in tids {
        match std::fs::read_to_string(format!("/proc/self/task/{tid}/children")) {
            Ok(text) => out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            ),
            // No such file: the kernel keeps no `children` files, or the thread has exited
            // since the listing and its children moved to another thread, perhaps one already
            // read (an exiting thread's file can also answer ESRCH). The scan sees them
            // either way.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                out.clear();
                return children_by_scan(out);
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(())
}

/// Every process in `/proc` whose parent is this process.
pub(crate) fn children_by_scan(out: &mut Vec<u32>) -> io::Result<()> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if process_stat(pid).is_some_and(|s| s.ppid == me) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(())
}

/// What `/proc/<pid>/stat` says of a process: its command (as the kernel shows it, at most 15
/// bytes), its state (`R`, `S`, `Z`...) and its parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcessStat {
    pub(crate) command: String,
    pub(crate) state: char,
    pub(crate) ppid: u32,
}

/// `None` if the process is gone.
pub(crate) fn process_stat(pid: u32) -> Option<ProcessStat> {
    let raw = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&String::from_utf8_lossy(&raw))
}

/// `pid (command) state ppid ...`; the command may hold spaces and parentheses, so it ends at
/// the last `)`.
fn parse_stat(text: &str) -> Option<ProcessStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let command = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcessStat {
        command,
        state,
        ppid,
    })
}

/// The id of the process's main thread, and of the calling thread.
pub(crate) fn main_and_current_tids() -> (u32, u32) {
    // SAFETY: getpid and gettid cannot fail.
    unsafe { (libc::getpid() as u32, libc::gettid() as u32) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_this_thread_and_sees_new_threads_after_a_rewind() {
        let tasks = Dir::open(TASK_DIR).unwrap();
        let mut before = Vec::new();
        tasks.list(&mut before).unwrap();
        let (_, me) = main_and_current_tids();
        assert!(before.contains(&me));

        // Other tests run on parallel threads: look for this one thread, not for a count.
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tid_tx.send(main_and_current_tids().1).unwrap();
            stop_rx.recv().ok()
        });
        let tid = tid_rx.recv().unwrap();
        let mut during = Vec::new();
        tasks.list(&mut during).unwrap();
        assert!(
            !before.contains(&tid) && during.contains(&tid),
            "{tid} in {during:?}"
        );
        drop(stop_tx);
        t.join().unwrap();
    }

    #[test]
    fn fd_listing_shows_its_own_fd() {
        let fds = Dir::open(FD_DIR).unwrap();
        let mut ids = Vec::new();
        fds.list(&mut ids).unwrap();
        assert!(ids.contains(&fds.raw()));
        assert!(fd_target(fds.raw()).unwrap().ends_with("/fd"));
    }

    #[test]
    fn children_are_found_per_thread_and_by_the_fallback_scan() {
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!has_no_children());
        let tasks = Dir::open(TASK_DIR).unwrap();
        let mut tids = Vec::new();
        tasks.list(&mut tids).unwrap();
        let mut per_thread = Vec::new();
        children_of(&tids, &mut per_thread).unwrap();
        let mut scanned = Vec::new();
        children_by_scan(&mut scanned).unwrap();
        let stat = process_stat(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(per_thread.contains(&pid), "{pid} in {per_thread:?}");
        assert!(scanned.contains(&pid), "{pid} in {scanned:?}");
        let stat = stat.unwrap();
        assert_eq!(
            (stat.command.as_str(), stat.ppid),
            ("sleep", std::process::id())
        );
    }

    #[test]
    fn parses_stat_lines_with_odd_commands() {
        assert_eq!(
            parse_stat("4242 (sleep) Z 17 4242 17 0 -1"),
            Some(ProcessStat {
                command: "sleep".into(),
                state: 'Z',
                ppid: 17
            })
        );
        assert_eq!(
            parse_stat("7 (a) b (c)) S 1 7 7").map(|s| (s.command, s.state, s.ppid)),
            Some(("a) b (c)".into(), 'S', 1))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_dirent_records() {
        let rec = |name: &str| {
            let mut r = vec![0u8; 19];
            r.extend_from_slice(name.as_bytes());
            r.push(0);
            while r.len() % 8 != 0 {
                r.push(0);
            }
            let len = r.len() as u16;
            r[16..18].copy_from_slice(&len.to_ne_bytes());
            r
        };
        let bytes: Vec<u8> = [rec("."), rec(".."), rec("12"), rec("x1"), rec("3456789")].concat();
        let mut out = Vec::new();
        parse_dirents(&bytes, &mut out);
        assert_eq!(out, vec![12, 3456789]);
    }
}
