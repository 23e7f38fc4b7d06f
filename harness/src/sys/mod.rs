//! The platform reads: the process's threads and fds, and what they are.
//!
//! Counting is cheap, reading a name is not (8 µs to count 10 threads, 67 µs to read their
//! names): the listings here return ids only, and names and targets are read one id at a time,
//! for the ids a filter or a report needs. The `source` module builds the resources a
//! check counts on top of these reads.
//!
//! One platform switch: `linux.rs` reads `/proc`; elsewhere `unsupported.rs` says so.

#[cfg(target_os = "linux")]
pub(crate) mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
use unsupported as platform;

pub(crate) use platform::{child, children, fd_target, list, main_and_current_tid, thread_name};

/// Which of the process's directories to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listing {
    /// `/proc/self/task`: thread ids.
    Threads,
    /// `/proc/self/fd`: fd numbers, without the harness's own directory fds.
    Fds,
}

/// Why a listing gave no ids.
pub(crate) enum ListError {
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    Unsupported(&'static str),
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Failed(String),
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A listing's own directory fd is never among its ids. Other tests of this binary list
    /// `/proc` on their threads at the same time, and their open listings are real fds: so an
    /// fd is blamed only if every one of 50 listings shows a `/proc` listing open.
    #[test]
    fn fd_listings_never_show_the_harness_own_reads() {
        let listing_open = || {
            let mut fds = Vec::new();
            list(Listing::Fds, &mut fds).ok().unwrap();
            assert!(!fds.is_empty());
            fds.into_iter().find_map(|fd| {
                let target = fd_target(fd).unwrap_or_default();
                (target.starts_with("/proc/")
                    && (target.ends_with("/fd") || target.ends_with("/task")))
                .then(|| format!("fd {fd} ({target})"))
            })
        };
        let mut seen = Vec::new();
        for _ in 0..50 {
            match listing_open() {
                None => return,
                Some(what) => seen.push(what),
            }
        }
        panic!("every listing showed a /proc listing of its own: {seen:?}");
    }
}
