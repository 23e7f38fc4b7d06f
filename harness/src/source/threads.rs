//! OS threads of this process (Linux: `/proc/self/task`), named as the kernel shows them.

use crate::filter::Filter;
use crate::probe::{self, Listing};
use crate::resource::Resource;
use crate::source::ignored::Ignored;
use crate::source::{Reading, Source, Style};

/// Threads by id; labelled with their name (at most 15 bytes), which thread filters match.
pub(crate) struct Threads {
    ignored: Ignored,
}

impl Threads {
    pub(crate) fn new(filter: Filter) -> Self {
        Threads {
            ignored: Ignored::new(filter),
        }
    }
}

impl Source for Threads {
    fn resource(&self) -> Resource {
        Resource::Threads
    }

    fn read(&self) -> Reading {
        self.ignored.read(Listing::Threads, probe::thread_name)
    }

    fn learn(&mut self, first: &Reading) -> bool {
        self.ignored.learn(first, probe::thread_name)
    }

    fn label(&self, tid: u32) -> Option<String> {
        probe::thread_name(tid)
    }

    fn ignores(&self, label: &str) -> bool {
        self.ignored.matches(label)
    }

    fn style(&self) -> Style {
        Style::Quoted
    }
}
