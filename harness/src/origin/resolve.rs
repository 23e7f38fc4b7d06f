//! Return addresses to a report's words: the one resolver for every kind of recorded creation
//! (threads, fds, child processes, and whatever else records addresses).
//!
//! Resolving costs 20–300 µs per backtrace and loads the binary's debug info the first time,
//! so it runs on the failure path only, for the items a report names, and each distinct list
//! of addresses is resolved once per process: items made by the same code have the same
//! addresses.

use std::collections::HashMap;
use std::sync::Mutex;

use super::frames::{self, Frame, Site};

/// The symbols this crate defines to interpose on creations. Their frames (and the frames
/// inside them: the unwinder's) are the recording, not the creation: a site is picked from the
/// frames outside the outermost of them.
pub(crate) const HOOKS: &[&str] = &[
    "pthread_create",
    "open",
    "open64",
    "openat",
    "openat64",
    "creat",
    "creat64",
    "opendir",
    "socket",
    "socketpair",
    "accept",
    "accept4",
    "pipe",
    "pipe2",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fcntl64",
    "eventfd",
    "epoll_create",
    "epoll_create1",
    "inotify_init",
    "inotify_init1",
    "memfd_create",
    "timerfd_create",
    "signalfd",
    "posix_spawn",
    "posix_spawnp",
    "fork",
];

/// A creation's backtrace, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The frames a report names (the user's line, the library that made the item).
    pub(crate) site: Site,
    /// Every resolved frame, innermost first (an inlined call is a frame of its own).
    pub(crate) frames: Vec<Frame>,
}

impl Resolved {
    /// Every frame as `function at file:line` (paths shortened), innermost first: the full
    /// stack a report shows with `.backtraces(true)`.
    pub(crate) fn backtrace(&self) -> Vec<String> {
        self.frames
            .iter()
            .map(|f| {
                let name = f.name.as_deref().unwrap_or("<unknown>");
                match (&f.file, f.line) {
                    (Some(file), Some(line)) => format!(
                        "{name} at {}:{line}",
                        frames::short_path(file, frames::source_root())
                    ),
                    _ => name.to_owned(),
                }
            })
            .collect()
    }

    /// The site in a report's words for a creation of this kind: `spawned at src/a.rs:9`
    /// (threads, children), `opened at src/a.rs:9` (fds), with the library that made it
    /// (`via …`) where there is one.
    pub(crate) fn describe(&self, verb: Verb) -> String {
        let text = self.site.to_string();
        match verb {
            Verb::Spawned => text,
            Verb::Opened => {
                if let Some(rest) = text.strip_prefix("spawned ") {
                    format!("opened {rest}")
                } else if let Some(rest) = text.strip_prefix("spawn site ") {
                    format!("open site {rest}")
                } else {
                    text
                }
            }
        }
    }
}

/// How a report says an item was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    /// Threads and child processes: `spawned at`.
    Spawned,
    /// File descriptors: `opened at`.
    Opened,
}

/// Resolves a creation's return addresses (innermost first) and picks its site; each distinct
/// list is resolved once per process.
pub(crate) fn resolve(ips: &[usize]) -> Resolved {
    static CACHE: Mutex<Option<HashMap<Vec<usize>, Resolved>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(known) = cache.get(ips) {
        return known.clone();
    }
    let frames = symbolize(ips);
    let outside = frames
        .iter()
        .rposition(|f| f.name.as_deref().is_some_and(|n| HOOKS.contains(&n)))
        .map_or(0, |hook| hook + 1);
    let resolved = Resolved {
        site: Site::pick(&frames[outside..]),
        frames,
    };
    cache.insert(ips.to_vec(), resolved.clone());
    resolved
}

/// Resolves return addresses to frames (several per address where calls were inlined).
fn symbolize(ips: &[usize]) -> Vec<Frame> {
    let mut out = Vec::new();
    for &ip in ips {
        backtrace::resolve(ip as *mut std::ffi::c_void, |sym| {
            out.push(Frame {
                name: sym.name().map(|n| format!("{n:#}")),
                file: sym.filename().map(|p| p.to_string_lossy().into_owned()),
                line: sym.lineno(),
            });
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn here() -> (Vec<usize>, u32) {
        let mut ips = Vec::new();
        let line = line!() + 1;
        backtrace::trace(|frame| {
            ips.push(frame.ip() as usize);
            true
        });
        (ips, line)
    }

    #[test]
    fn a_backtrace_resolves_to_its_line_once() {
        let (ips, line) = here();
        let first = resolve(&ips);
        assert_eq!(
            first.describe(Verb::Spawned),
            format!("spawned at {}:{line}", file!())
        );
        assert_eq!(
            first.describe(Verb::Opened),
            format!("opened at {}:{line}", file!())
        );
        assert!(first.backtrace().iter().any(|f| f.contains("::here at")));
        assert_eq!(resolve(&ips), first, "the cached resolution");
    }

    #[test]
    fn nothing_resolved_says_so() {
        let empty = resolve(&[]);
        assert_eq!(
            empty.describe(Verb::Spawned),
            "spawn site not in the debug info"
        );
        assert_eq!(
            empty.describe(Verb::Opened),
            "open site not in the debug info"
        );
    }
}
