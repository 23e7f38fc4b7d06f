//! Open file descriptors (Linux: `/proc/self/fd`), named by target; sockets by what they
//! connect (`/proc/net/*`). An fd a one-time initializer opened is a process global (see
//! `once_made`): not counted, shown on a line of its own, unless `strict`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::filter::Filter;
use crate::group;
use crate::origin;
use crate::resource::Resource;
use crate::source::ignored::Ignored;
use crate::source::once_made::OnceMade;
use crate::source::{added, shown_backtraces, Item, Reading, Source, Uncounted, GONE};
use crate::sys::{self, Listing};

/// Fds by number; labelled with their target (`anon_inode:inotify`, `socket:[…]`, a path),
/// which fd filters match. The harness's own directory fds are never listed.
pub(crate) struct Fds {
    ignored: Ignored,
    /// Whether a report shows each group's full creation backtrace.
    backtraces: bool,
    /// Those backtraces, made with the items, for the notes.
    shown: Mutex<Vec<String>>,
    /// Which fds one-time initializers opened.
    globals: OnceMade,
}

impl Fds {
    pub(crate) fn new(filter: Filter, strict: bool, backtraces: bool) -> Self {
        Fds {
            ignored: Ignored::new(filter),
            backtraces,
            shown: Mutex::new(Vec::new()),
            globals: OnceMade::new(("fd", "fds"), strict, origin::fd_record),
        }
    }

    /// Whether a new fd counts at all: its target is not ignored.
    fn counts(&self, fd: u32) -> bool {
        !self.label(fd).is_some_and(|label| self.ignores(&label))
    }
}

impl Source for Fds {
    fn resource(&self) -> Resource {
        Resource::Fds
    }

    fn read(&self) -> Reading {
        self.ignored.read(Listing::Fds, sys::fd_target)
    }

    fn learn(&mut self, first: &Reading) -> bool {
        self.globals.learn(first);
        self.ignored.learn(first, sys::fd_target)
    }

    fn label(&self, fd: u32) -> Option<String> {
        sys::fd_target(fd)
    }

    fn ignores(&self, label: &str) -> bool {
        self.ignored.matches(label)
    }

    fn reuses_ids(&self) -> bool {
        true
    }

    /// Back at the reference, leaving out the fds already known to be globals; nothing is
    /// resolved here.
    fn settled(&self, now: &Reading, reference: &Reading) -> bool {
        self.globals.settled(now, reference)
    }

    fn uncounted(&self, b0: &Reading, b1: Option<&Reading>, end: &Reading) -> Uncounted {
        self.globals.uncounted(b0, b1, end, &|fd| self.counts(fd))
    }

    /// Targets carry per-item ids (`socket:[81234]`) and per-cycle directories: they group by
    /// kind and by file name (see `group::fd_targets`). Sockets are shown by protocol,
    /// addresses and state (`tcp 127.0.0.1:8080 LISTEN`); filters still match the target. With
    /// feature `origins`, by where they were opened too: `/tmp/x.log ×4 opened at
    /// src/audit.rs:17`, resolved here only, on the failure path, for the new fds alone.
    fn items(&self, b0: &Reading, end: &Reading) -> Vec<Item> {
        let mut backtraces: HashMap<String, Vec<String>> = HashMap::new();
        let mut fds = Vec::new();
        for fd in added(b0.ids(), end.ids()) {
            let label = self.label(fd).unwrap_or_else(|| GONE.to_owned());
            if self.ignores(&label) || self.globals.left_out(fd) {
                continue;
            }
            let origin = origin::fd_origin(fd).map(|made| {
                backtraces
                    .entry(made.site.clone())
                    .or_insert(made.backtrace);
                made.site
            });
            fds.push((label, origin));
        }
        let (labels, origins): (Vec<String>, Vec<Option<String>>) = fds.into_iter().unzip();
        let fds: Vec<_> = origin::name_sockets(labels)
            .into_iter()
            .zip(origins)
            .collect();
        if fds.iter().all(|(_, origin)| origin.is_none()) {
            return group::fd_targets(fds.into_iter().map(|(label, _)| label));
        }
        let items = group::fd_targets_by_origin(fds);
        if self.backtraces {
            *self.shown.lock().unwrap_or_else(|e| e.into_inner()) =
                shown_backtraces("fds", &items, &backtraces);
        }
        items
    }

    fn notes(&self) -> Vec<String> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
