//! OS threads of this process (Linux: `/proc/self/task`), named as the kernel shows them, and
//! for a report, by what they are doing and (feature `spawn-sites`) where they were created.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::filter::Filter;
use crate::origin;
use crate::origin::Timed;
use crate::resource::Resource;
use crate::source::ignored::Ignored;
use crate::source::{added, Item, Lingering, Reading, Source, Style, GONE};
use crate::sys::{self, Listing};

/// Threads by id; labelled with their name (at most 15 bytes), which thread filters match.
pub(crate) struct Threads {
    ignored: Ignored,
    /// Whether a report shows each group's full creation backtrace.
    backtraces: bool,
    /// Those backtraces, made with the items, for the notes.
    shown: Mutex<Vec<String>>,
    /// Whether the leaked threads' waits end, found with the items.
    lingering: Mutex<Lingering>,
}

impl Threads {
    pub(crate) fn new(filter: Filter, backtraces: bool) -> Self {
        Threads {
            ignored: Ignored::new(filter),
            backtraces,
            shown: Mutex::new(Vec::new()),
            lingering: Mutex::new(Lingering::Unknown),
        }
    }
}

impl Source for Threads {
    fn resource(&self) -> Resource {
        Resource::Threads
    }

    fn read(&self) -> Reading {
        self.ignored.read(Listing::Threads, sys::thread_name)
    }

    fn learn(&mut self, first: &Reading) -> bool {
        self.ignored.learn(first, sys::thread_name)
    }

    fn label(&self, tid: u32) -> Option<String> {
        sys::thread_name(tid)
    }

    fn ignores(&self, label: &str) -> bool {
        self.ignored.matches(label)
    }

    fn style(&self) -> Style {
        Style::Quoted
    }

    /// Grouped by name, spawn site (with `spawn-sites`) and state: `"audit-flusher" ×20
    /// (blocked in futex)`, or with sites one group per line. Sites are resolved and states
    /// read here only, on the failure path, for the new threads alone. Threads in timed waits
    /// group by the kind of wait, showing the latest end of the group: `"r2d2-worker-0" ×3
    /// (blocked in futex, timed: ends in 29.6 s)`.
    fn items(&self, b0: &Reading, end: &Reading) -> Vec<Item> {
        /// Name, site, state, and whether the wait is timed with an absolute end.
        type Key = (String, Option<String>, Option<String>, Option<bool>);
        let mut groups: HashMap<Key, (usize, Vec<String>, Option<Timed>)> = HashMap::new();
        let mut lingering = Lingering::Unknown;
        // Every state first: resolving an origin can take long, and a timed wait's end is
        // counted from its reading.
        let states: Vec<_> = added(b0.ids(), end.ids())
            .filter_map(|tid| {
                let name = self.label(tid).unwrap_or_else(|| GONE.to_owned());
                (!self.ignores(&name)).then(|| (tid, name, origin::thread_state(tid)))
            })
            .collect();
        for (tid, name, state) in states {
            let origin = origin::thread_origin_in(tid, state);
            lingering = match (lingering, origin.timed, &origin.state) {
                // A thread whose state could not be read (gone, or not Linux) says nothing.
                (_, _, None) => lingering,
                (Lingering::Never, _, _) | (_, None, Some(_)) => Lingering::Never,
                (Lingering::Unknown, Some(t), _) => Lingering::Within(t.bound()),
                (Lingering::Within(d), Some(t), _) => Lingering::Within(d.max(t.bound())),
            };
            let kind = origin.timed.map(Timed::is_absolute);
            // `spawned at src/pool.rs:40, waiting at src/pool.rs:52 in …`.
            let site = match (origin.site, origin.waiting) {
                (Some(site), Some(waiting)) => Some(format!("{site}, {waiting}")),
                (site, waiting) => site.or(waiting),
            };
            let key = (name, site, origin.state, kind);
            let group = groups.entry(key).or_default();
            group.0 += 1;
            if group.1.is_empty() {
                group.1 = origin.backtrace;
            }
            group.2 = match (group.2, origin.timed) {
                (Some(a), Some(b)) => a.later(b),
                (a, b) => a.or(b),
            };
        }
        *self.lingering.lock().unwrap_or_else(|e| e.into_inner()) = lingering;
        let mut items: Vec<(Item, Vec<String>)> = groups
            .into_iter()
            .map(|((label, site, state, _), (count, backtrace, timed))| {
                let remark = match (state, timed) {
                    (Some(state), Some(timed)) => Some(format!("{state}, {timed}")),
                    (state, _) => state,
                };
                let item = Item {
                    label,
                    count,
                    remark,
                    origin: site,
                };
                (item, backtrace)
            })
            .collect();
        items.sort_by(|(a, _), (b, _)| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.label.cmp(&b.label))
                .then_with(|| a.origin.cmp(&b.origin))
        });
        if self.backtraces {
            let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
            *shown = items
                .iter()
                .filter(|(_, bt)| !bt.is_empty())
                .map(|(item, bt)| {
                    let at = item.origin.as_deref().unwrap_or_default();
                    format!(
                        "threads {:?} {at}, created through:\n      {}",
                        item.label,
                        bt.join("\n      ")
                    )
                })
                .collect();
        }
        items.into_iter().map(|(item, _)| item).collect()
    }

    fn notes(&self) -> Vec<String> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lingering(&self) -> Lingering {
        *self.lingering.lock().unwrap_or_else(|e| e.into_inner())
    }
}
