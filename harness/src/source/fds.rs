//! Open file descriptors (Linux: `/proc/self/fd`), named by target; sockets by what they
//! connect (`/proc/net/*`).

use crate::filter::Filter;
use crate::group;
use crate::resource::Resource;
use crate::source::ignored::Ignored;
use crate::source::{new_labels, Item, Reading, Source};
use crate::sys::{self, Listing};

/// Fds by number; labelled with their target (`anon_inode:inotify`, `socket:[…]`, a path),
/// which fd filters match. The harness's own directory fds are never listed.
pub(crate) struct Fds {
    ignored: Ignored,
}

impl Fds {
    pub(crate) fn new(filter: Filter) -> Self {
        Fds {
            ignored: Ignored::new(filter),
        }
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

    /// Targets carry per-item ids (`socket:[81234]`) and per-cycle directories: they group by
    /// kind and by file name (see `group::fd_targets`). Sockets are shown by protocol,
    /// addresses and state (`tcp 127.0.0.1:8080 LISTEN`); filters still match the target.
    fn items(&self, b0: &Reading, end: &Reading) -> Vec<Item> {
        let labels = crate::origin::name_sockets(new_labels(self, b0, end).collect());
        group::fd_targets(labels)
    }
}
