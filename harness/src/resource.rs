//! The kinds of resource a check counts.

use std::fmt;

/// A kind of resource that a component can leave behind.
///
/// ```
/// use leakcheck::Resource;
/// assert_eq!(Resource::Threads.to_string(), "threads");
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum Resource {
    /// OS threads of this process (Linux: `/proc/self/task`), shown by name.
    Threads,
    /// Open file descriptors (Linux: `/proc/self/fd`), shown by target.
    Fds,
    /// Alive tasks of a tokio runtime (see `LeakCheck::tasks`).
    Tasks,
    /// Child processes of this process, running or zombie (Linux:
    /// `/proc/self/task/*/children`), shown by command and state. Counted by default.
    Children,
    /// Live heap blocks (see `LeakCheck::heap` and `CountingAlloc`); `leaked` counts blocks,
    /// the report shows bytes too.
    Heap,
    /// A counter of your own, by the name given to `LeakCheck::probe`.
    Custom(&'static str),
}

impl Resource {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Resource::Threads => "threads",
            Resource::Fds => "fds",
            Resource::Tasks => "tasks",
            Resource::Heap => "heap",
            Resource::Children => "children",
            Resource::Custom(name) => name,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
