//! What a source finds and a report shows: the verdict on a resource and the groups of new
//! items. Both `source` and `report` build on these types, so they live below both.

/// The verdict on one resource.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum Verdict {
    /// Back to the baseline (or below).
    Clean,
    /// Grew, then stopped growing (a pool that filled up): reported, not failed.
    Bounded,
    /// Kept growing with cycles (or, with a single cycle, ended above the start).
    Leaking,
    /// This platform cannot see the resource; no figure is made up for it.
    NotMeasured(String),
    /// Reading the resource failed (the message names the path and the OS error), or its
    /// count could not be trusted (other tests share the process: the message says so).
    Failed(String),
}

/// A group of new items as the report shows it: a label, how many, an optional remark (what
/// state they are in) and an optional origin (where they were created). A report that has
/// origins prints one line per group, and `Report::items` labels carry the origin after the
/// name: `audit-flusher spawned at src/audit.rs:31`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) label: String,
    pub(crate) count: usize,
    pub(crate) remark: Option<String>,
    pub(crate) origin: Option<String>,
}

impl Item {
    pub(crate) fn new(label: String, count: usize) -> Self {
        Item {
            label,
            count,
            remark: None,
            origin: None,
        }
    }
}

/// How a report prints item labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    /// As they are: fd targets, paths.
    Plain,
    /// In quotes, as names are: `"cleanup" ×20`.
    Quoted,
}

/// What a report counts a resource in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Things with an identity or a count: `threads +2`.
    Items,
    /// Heap blocks, with their bytes: `heap +200 blocks (+10.0/cycle), +9.4 KiB`.
    Blocks,
}

/// Whether waiting longer could let leaked items go: a source says so (`Source::lingering`), a
/// report turns it into settle advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lingering {
    Unknown,
    Never,
    Within(std::time::Duration),
}

/// What a report adds for a heap leak: one item per site, most blocks first, and notes (what
/// could not be recorded; full stacks when asked for). `source::heap_sites` finds them.
pub(crate) struct Sites {
    pub(crate) items: Vec<Item>,
    pub(crate) notes: Vec<String>,
}
