//! Snapshots of the resources a check counts.
//!
//! A snapshot holds ids, not names: counting is cheap, reading a name is not (design.md: 8 µs
//! to count 10 threads, 67 µs to read their names). Names and targets are read only for ids
//! that differ from the first snapshot of a check, and only when a filter or a report needs
//! them.

#[cfg(target_os = "linux")]
mod linux;

use std::collections::HashMap;

use crate::filter::Filter;
use crate::resource::Resource;

/// One resource as seen at one moment.
#[derive(Clone, Debug)]
pub(crate) enum Reading {
    /// Live ids (sorted) and how many of them count (ids minus ignored ones).
    Ids { ids: Vec<u32>, count: usize },
    /// A bare count (tokio tasks have no identity we can see).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    Count(usize),
    /// This platform cannot see the resource.
    Unsupported(&'static str),
    /// Reading failed: the message names the path and the OS error.
    Failed(String),
}

impl Reading {
    pub(crate) fn count(&self) -> Option<usize> {
        match self {
            Reading::Ids { count, .. } => Some(*count),
            Reading::Count(n) => Some(*n),
            _ => None,
        }
    }

    pub(crate) fn ids(&self) -> &[u32] {
        match self {
            Reading::Ids { ids, .. } => ids,
            _ => &[],
        }
    }
}

/// The resources of one moment, indexed by [`Resource::index`]; `None` where not requested.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) readings: [Option<Reading>; Resource::COUNT],
}

impl Snapshot {
    pub(crate) fn get(&self, r: Resource) -> Option<&Reading> {
        self.readings[r.index()].as_ref()
    }

    pub(crate) fn count(&self, r: Resource) -> Option<usize> {
        self.get(r).and_then(Reading::count)
    }
}

/// Takes snapshots for one check, remembering which of the first snapshot's ids are ignored.
pub(crate) struct Prober {
    thread_filter: Filter,
    fd_filter: Filter,
    /// For ids of the first snapshot: is it ignored? Filled only when a filter is set.
    known: [HashMap<u32, bool>; 2],
    #[cfg(feature = "tokio")]
    tasks: Option<tokio::runtime::Handle>,
}

impl Prober {
    pub(crate) fn new(
        thread_filter: Filter,
        fd_filter: Filter,
        #[cfg(feature = "tokio")] tasks: Option<tokio::runtime::Handle>,
    ) -> Self {
        Prober {
            thread_filter,
            fd_filter,
            known: [HashMap::new(), HashMap::new()],
            #[cfg(feature = "tokio")]
            tasks,
        }
    }

    /// The first snapshot of a check, and how many it took: with a filter, the names of all
    /// ids are read once and the counts taken again.
    pub(crate) fn first(&mut self) -> (Snapshot, usize) {
        let snap = self.snapshot();
        if self.thread_filter.is_empty() && self.fd_filter.is_empty() {
            return (snap, 1);
        }
        for r in [Resource::Threads, Resource::Fds] {
            if self.filter(r).is_empty() {
                continue;
            }
            if let Some(reading) = snap.get(r) {
                for &id in reading.ids() {
                    let ignored = label(r, id).is_some_and(|l| self.filter(r).matches(&l));
                    self.known[r.index()].insert(id, ignored);
                }
            }
        }
        // Recount now that the first snapshot's names are known.
        (self.snapshot(), 2)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.readings[Resource::Threads.index()] = Some(self.read_ids(Resource::Threads));
        snap.readings[Resource::Fds.index()] = Some(self.read_ids(Resource::Fds));
        #[cfg(feature = "tokio")]
        if let Some(handle) = &self.tasks {
            snap.readings[Resource::Tasks.index()] =
                Some(Reading::Count(handle.metrics().num_alive_tasks()));
        }
        snap
    }

    /// The ignore filter for `r`.
    pub(crate) fn filter(&self, r: Resource) -> &Filter {
        match r {
            Resource::Fds => &self.fd_filter,
            _ => &self.thread_filter,
        }
    }

    fn read_ids(&self, r: Resource) -> Reading {
        let mut ids = Vec::new();
        match Dirs::list(r, &mut ids) {
            Ok(()) => {
                let count = ids.len() - self.ignored(r, &ids);
                Reading::Ids { ids, count }
            }
            Err(ListError::Unsupported(why)) => Reading::Unsupported(why),
            Err(ListError::Failed(msg)) => Reading::Failed(msg),
        }
    }

    /// How many of `ids` a filter ignores. Names of ids not in the first snapshot are read
    /// afresh every time: a thread that was just spawned may not have set its name yet.
    fn ignored(&self, r: Resource, ids: &[u32]) -> usize {
        let filter = self.filter(r);
        if filter.is_empty() {
            return 0;
        }
        let known = &self.known[r.index()];
        ids.iter()
            .filter(|id| match known.get(id) {
                Some(&ignored) => ignored,
                None => label(r, **id).is_some_and(|l| filter.matches(&l)),
            })
            .count()
    }
}

enum ListError {
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    Unsupported(&'static str),
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Failed(String),
}

/// The two directories every snapshot lists, opened once per process and rewound for each
/// listing (design.md: the path walk of an `open` costs as much as the listing itself). A
/// fork gets its own: the inherited ones would list the parent.
#[cfg(target_os = "linux")]
struct Dirs {
    pid: u32,
    tasks: Result<linux::Dir, String>,
    fds: Result<linux::Dir, String>,
}

#[cfg(target_os = "linux")]
impl Dirs {
    fn open(pid: u32) -> Self {
        let open = |path: &std::ffi::CStr| {
            linux::Dir::open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.to_string_lossy()))
        };
        Dirs {
            pid,
            tasks: open(linux::TASK_DIR),
            fds: open(linux::FD_DIR),
        }
    }

    fn list(r: Resource, out: &mut Vec<u32>) -> Result<(), ListError> {
        static DIRS: std::sync::Mutex<Option<Dirs>> = std::sync::Mutex::new(None);
        // A listing rewinds a shared offset: one at a time. A poisoned lock only means a
        // panic elsewhere while listing; the directories are still fine.
        let mut guard = DIRS.lock().unwrap_or_else(|e| e.into_inner());
        let (pid, _) = linux::main_and_current_tid();
        let dirs = match &mut *guard {
            Some(dirs) if dirs.pid == pid => dirs,
            slot => slot.insert(Dirs::open(pid)),
        };
        let (dir, path) = match r {
            Resource::Fds => (&dirs.fds, linux::FD_DIR),
            _ => (&dirs.tasks, linux::TASK_DIR),
        };
        let dir = dir.as_ref().map_err(|e| ListError::Failed(e.clone()))?;
        dir.list(out).map_err(|e| {
            ListError::Failed(format!("cannot read {}: {e}", path.to_string_lossy()))
        })?;
        if r == Resource::Fds {
            // The harness's own directories are not the component's fds.
            let own = [&dirs.tasks, &dirs.fds];
            out.retain(|fd| !own.iter().any(|d| d.as_ref().is_ok_and(|d| d.raw() == *fd)));
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
struct Dirs;

#[cfg(not(target_os = "linux"))]
impl Dirs {
    fn list(_: Resource, _: &mut Vec<u32>) -> Result<(), ListError> {
        Err(ListError::Unsupported("not supported on this platform"))
    }
}

/// The name of a thread or the target of an fd; `None` if it is gone.
pub(crate) fn label(r: Resource, id: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        match r {
            Resource::Fds => linux::fd_target(id),
            _ => linux::thread_name(id),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (r, id);
        None
    }
}

/// The process's main thread id and the caller's, where the platform tells.
pub(crate) fn main_and_current_tid() -> Option<(u32, u32)> {
    #[cfg(target_os = "linux")]
    {
        Some(linux::main_and_current_tid())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn snapshots_never_count_the_harness_own_reads() {
        let prober = Prober::new(
            Filter::default(),
            Filter::default(),
            #[cfg(feature = "tokio")]
            None,
        );
        let snap = prober.snapshot();
        let fds = snap.get(Resource::Fds).unwrap().ids();
        assert!(!fds.is_empty());
        for &fd in fds {
            let target = label(Resource::Fds, fd).unwrap_or_default();
            assert!(
                !(target.starts_with("/proc/")
                    && (target.ends_with("/fd") || target.ends_with("/task"))),
                "fd {fd} ({target}) is the harness's own listing"
            );
        }
    }
}
