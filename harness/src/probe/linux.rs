//! Reading `/proc/self` with as few syscalls as possible.
//!
//! Counting is the hot path of every check, so a listing is one `open`, `getdents64` into a
//! stack buffer until it is drained, and one `close`: no allocation per entry and no `stat`.
//! The fd that lists `/proc/self/fd` shows up in its own listing; it is left out here, so the
//! harness never counts its own reads.

use std::ffi::CStr;
use std::io;

/// Lists the numeric entries of a `/proc` directory into `out` (sorted, deduplicated).
/// Returns the fd used for the listing, which is already closed when this returns.
fn list_numeric(path: &CStr, out: &mut Vec<u32>) -> io::Result<i32> {
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
    // u64 elements keep the buffer aligned for `linux_dirent64`.
    let mut buf = [0u64; 1024];
    let result = loop {
        // SAFETY: the buffer is valid for writes of its full size for the duration of the call.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd,
                buf.as_mut_ptr().cast::<u8>(),
                std::mem::size_of_val(&buf),
            )
        };
        if n < 0 {
            break Err(io::Error::last_os_error());
        }
        if n == 0 {
            break Ok(());
        }
        // SAFETY: the kernel wrote `n` bytes of dirent records into the buffer.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        parse_dirents(bytes, out);
    };
    // SAFETY: `fd` was opened above and is closed exactly once.
    unsafe { libc::close(fd) };
    result?;
    out.sort_unstable();
    out.dedup();
    Ok(fd)
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

pub(crate) const TASK_DIR: &str = "/proc/self/task";
pub(crate) const FD_DIR: &str = "/proc/self/fd";

/// The ids (tids) of the process's live threads.
pub(crate) fn thread_ids(out: &mut Vec<u32>) -> io::Result<()> {
    list_numeric(c"/proc/self/task", out).map(|_| ())
}

/// The process's open fds, without the one used to list them.
pub(crate) fn fd_ids(out: &mut Vec<u32>) -> io::Result<()> {
    let own = list_numeric(c"/proc/self/fd", out)?;
    if let Ok(own) = u32::try_from(own) {
        if let Ok(i) = out.binary_search(&own) {
            out.remove(i);
        }
    }
    Ok(())
}

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

/// The id of the process's main thread, and of the calling thread.
pub(crate) fn main_and_current_tid() -> (u32, u32) {
    // SAFETY: getpid and gettid cannot fail.
    unsafe { (libc::getpid() as u32, libc::gettid() as u32) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_this_thread_and_no_own_fd() {
        let mut tids = Vec::new();
        thread_ids(&mut tids).unwrap();
        let (_, me) = main_and_current_tid();
        assert!(tids.contains(&me));

        let mut fds = Vec::new();
        fd_ids(&mut fds).unwrap();
        assert!(fds.contains(&0) || fds.contains(&1) || fds.contains(&2));
        // No listed fd is the listing directory itself.
        for fd in fds {
            if let Some(t) = fd_target(fd) {
                assert!(!t.ends_with("/fd"), "own listing fd {fd} counted: {t}");
            }
        }
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
