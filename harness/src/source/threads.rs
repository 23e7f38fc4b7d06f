//! OS threads of this process (Linux: `/proc/self/task`), named as the kernel shows them, and
//! for a report, by what they are doing and (feature `origins`) where they were created.
//!
//! With creation sites recorded, what a thread's creation says decides how it is counted:
//! - made inside a one-time initializer (a pool in a `OnceLock`, `LazyLock`, `Once`,
//!   `once_cell`, `lazy_static`): a process global, made once per process, so it is not
//!   counted and the report gives it a line of its own (`global: 2 threads created once by
//!   …`). `strict` counts it again, and so does growth of such threads from one half of the
//!   measured cycles to the next (a global cannot grow per cycle: one that does is not one);
//! - made by a function that `ignore_created_by` matches: not counted, as `ignore_thread`
//!   does by name;
//! - still bearing the kernel name it inherited from its creator (Linux copies it to a new
//!   thread; in a test, the test's own name): shown as `unnamed thread created by PATH`.
//!
//! Resolving a creation costs 20–300 µs, and the first one of a process loads the debug info
//! (65 ms to seconds on a loaded machine), so it never happens while settling, where it would
//! eat the budget: settling leaves out only threads already classified, and the settled
//! readings are classified once. A test that makes a global the first time therefore waits out
//! its settle budget once, then passes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::filter::Filter;
use crate::origin::{self, Creation, ThreadOrigin, Timed};
use crate::resource::Resource;
use crate::source::ignored::Ignored;
use crate::source::{added, Item, Lingering, Reading, Source, Style, Uncounted, GONE};
use crate::sys::{self, Listing};

/// Threads by id; labelled with their name (at most 15 bytes), which thread filters match.
pub(crate) struct Threads {
    ignored: Ignored,
    /// `ignore_created_by` globs, matched against the creating function's path.
    created_by: Filter,
    /// Whether threads made by a one-time initializer count as any other.
    strict: bool,
    /// Whether a report shows each group's full creation backtrace.
    backtraces: bool,
    /// Those backtraces, made with the items, for the notes.
    shown: Mutex<Vec<String>>,
    /// The ids of the first reading (sorted): there before the check, never classified.
    first: Vec<u32>,
    /// Per later id: its creation once looked up.
    seen: Mutex<HashMap<u32, Seen>>,
    /// Set when threads made by one-time initializers grew over the measured cycles: they are
    /// counted and listed as any other.
    globals_grew: AtomicBool,
    /// Whether the leaked threads' waits end, found with the items.
    lingering: Mutex<Lingering>,
    /// When judging began, just after the last reading: classifying creations can take long
    /// (the first resolution loads debug info), and a timed wait read after it ends that much
    /// later after the settle than it says.
    judging_from: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Seen {
    /// `Some` once looked up; `Some(None)` where no creation was recorded.
    creation: Option<Option<Creation>>,
}

impl Threads {
    pub(crate) fn new(filter: Filter, created_by: Filter, strict: bool, backtraces: bool) -> Self {
        Threads {
            ignored: Ignored::new(filter),
            created_by,
            strict,
            backtraces,
            shown: Mutex::new(Vec::new()),
            first: Vec::new(),
            seen: Mutex::new(HashMap::new()),
            globals_grew: AtomicBool::new(false),
            lingering: Mutex::new(Lingering::Unknown),
            judging_from: Mutex::new(None),
        }
    }

    /// Whether what a creation says can change a count in this check.
    fn classifies(&self) -> bool {
        cfg!(origins) && (!self.strict || !self.created_by.is_empty())
    }

    /// The recorded creation of `tid`, looked up once per check.
    fn creation(&self, tid: u32) -> Option<Creation> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen.entry(tid).or_default();
        entry
            .creation
            .get_or_insert_with(|| origin::creation(tid))
            .clone()
    }

    /// Whether `tid` is made by a function `ignore_created_by` matches.
    fn ignored_creator(&self, creation: &Creation) -> bool {
        !self.created_by.is_empty()
            && creation
                .created_by
                .as_deref()
                .is_some_and(|by| self.created_by.matches(by))
    }

    /// Whether a thread new since the first reading is left out of the count: made by an
    /// ignored function, or (unless `strict`, or such threads grew) a process global.
    fn uncounted_one(&self, tid: u32, globals_count: bool) -> bool {
        self.creation(tid)
            .is_some_and(|creation| self.uncounted_creation(&creation, globals_count))
    }

    /// Whether a thread so created is left out of the count: made by an ignored function, or
    /// (unless `strict`, or `globals_count`) a process global.
    fn uncounted_creation(&self, creation: &Creation, globals_count: bool) -> bool {
        self.ignored_creator(creation)
            || (!self.strict && !globals_count && creation.global.is_some())
    }

    /// The threads new since `b0` and not ignored by name, each with its name and its state
    /// (read now, before any origin is resolved).
    fn leaked_states(&self, b0: &Reading, end: &Reading) -> Vec<(u32, String, Option<State>)> {
        added(b0.ids(), end.ids())
            .filter_map(|tid| {
                let name = self.label(tid).unwrap_or_else(|| GONE.to_owned());
                (!self.ignores(&name)).then(|| (tid, name, origin::thread_state(tid)))
            })
            .collect()
    }

    /// How long after the settle ended the states are read.
    fn late(&self) -> Duration {
        self.judging_from
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Keeps each group's creation backtrace for the notes: `threads "name" spawned at …,
    /// created through:` and the frames.
    fn show_backtraces(&self, items: &[(Item, Vec<String>)]) {
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        *shown = items
            .iter()
            .filter(|(_, bt)| !bt.is_empty())
            .map(|(item, bt)| {
                let at = item.origin.as_deref().unwrap_or_default();
                let name = match item.label.as_str() {
                    "" => String::new(),
                    label => format!("{label:?} "),
                };
                format!(
                    "threads {name}{at}, created through:\n      {}",
                    bt.join("\n      ")
                )
            })
            .collect();
    }

    /// Ids of `reading` new since the first reading, not ignored by name.
    fn new_ids<'a>(&'a self, reading: &'a Reading) -> impl Iterator<Item = u32> + 'a {
        added(&self.first, reading.ids())
            .filter(|&tid| !sys::thread_name(tid).is_some_and(|name| self.ignored.matches(&name)))
    }

    /// The process globals among the new ids of `reading`, by the name of their line.
    fn globals(&self, reading: &Reading) -> Vec<(u32, String)> {
        self.new_ids(reading)
            .filter_map(|tid| {
                let creation = self.creation(tid)?;
                if self.ignored_creator(&creation) {
                    return None;
                }
                Some((tid, creation.global?))
            })
            .collect()
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
        self.first = first.ids().to_vec();
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

    /// Back at the reference, leaving out the threads already known not to be counted
    /// (process globals, ignored creators); nothing is resolved here.
    fn settled(&self, now: &Reading, reference: &Reading) -> bool {
        let (Some(level), Some(target)) = (now.level(), reference.level()) else {
            return true;
        };
        if level <= target || !self.classifies() {
            return level <= target;
        }
        let known: Vec<u32> = {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            added(reference.ids(), now.ids())
                .filter(|tid| seen.get(tid).is_some_and(|s| s.creation.is_some()))
                .collect()
        };
        let left_out = known
            .into_iter()
            .filter(|&tid| self.first.binary_search(&tid).is_err())
            .filter(|&tid| self.uncounted_one(tid, false))
            .count() as i64;
        level - left_out <= target
    }

    fn uncounted(&self, b0: &Reading, b1: Option<&Reading>, end: &Reading) -> Uncounted {
        *self.judging_from.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        if !self.classifies() {
            return Uncounted::default();
        }
        // A global cannot grow per cycle: if the second half of the cycles added such
        // threads, they are not globals, and count.
        let grew = b1.is_some_and(|b1| self.globals(end).len() > self.globals(b1).len());
        self.globals_grew.store(grew, Ordering::Relaxed);
        let count = |r: &Reading| {
            self.new_ids(r)
                .filter(|&tid| self.uncounted_one(tid, grew))
                .count() as i64
        };
        let mut lines = Vec::new();
        if !self.strict && !grew {
            let mut groups: Vec<(String, usize)> = Vec::new();
            for (_, name) in self.globals(end) {
                match groups.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, k)) => *k += 1,
                    None => groups.push((name, 1)),
                }
            }
            groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            for (name, n) in groups {
                let threads = if n == 1 { "thread" } else { "threads" };
                lines.push(format!("global: {n} {threads} created once by {name}"));
            }
        }
        Uncounted {
            b0: count(b0),
            b1: b1.map_or(0, count),
            end: count(end),
            lines,
        }
    }

    /// Grouped by name, spawn site (with `origins`), where each is waiting, and state:
    /// `"audit-flusher" ×20 (blocked in futex)`, or with sites one group per line. A thread that
    /// never named itself reads `unnamed thread created by PATH`. Threads in timed waits group
    /// by the kind of wait, showing the latest end of the group: `"r2d2-worker-0" ×3 (blocked
    /// in futex, timed: ends in 29.6 s)`. Sites are resolved and states read here only, on the
    /// failure path, for the new threads alone.
    fn items(&self, b0: &Reading, end: &Reading) -> Vec<Item> {
        let grew = self.globals_grew.load(Ordering::Relaxed);
        let mut groups: HashMap<GroupKey, Group> = HashMap::new();
        let mut lingering = Lingering::Unknown;
        // Every state first: resolving an origin can take long, and a timed wait's end is
        // counted from its reading.
        let states = self.leaked_states(b0, end);
        let late = self.late();
        for (tid, name, state) in states {
            let creation = if cfg!(origins) {
                self.creation(tid)
            } else {
                None
            };
            if creation
                .as_ref()
                .is_some_and(|c| self.uncounted_creation(c, grew))
            {
                continue;
            }
            let origin = origin::thread_origin_in(tid, state);
            lingering = lingering_with(lingering, &origin, late);
            let kind = origin.timed.map(Timed::is_absolute);
            let (label, site) =
                label_and_site(name, creation.as_ref(), origin.site, origin.waiting);
            let group = groups.entry((label, site, origin.state, kind)).or_default();
            group.count += 1;
            if group.backtrace.is_empty() {
                group.backtrace = origin.backtrace;
            }
            group.timed = match (group.timed, origin.timed) {
                (Some(a), Some(b)) => a.later(b),
                (a, b) => a.or(b),
            };
        }
        *self.lingering.lock().unwrap_or_else(|e| e.into_inner()) = lingering;
        let items = sorted_items(groups);
        if self.backtraces {
            self.show_backtraces(&items);
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

/// What a thread is doing, as `origin::thread_state` reads it, and when a timed wait ends.
type State = (String, Option<Timed>);

/// What leaked threads group by: label, site, state, and whether the wait is timed with an
/// absolute end.
type GroupKey = (String, Option<String>, Option<String>, Option<bool>);

/// A group of leaked threads: how many, the first one's creation backtrace, the latest end of
/// their timed waits.
#[derive(Default)]
struct Group {
    count: usize,
    backtrace: Vec<String>,
    timed: Option<Timed>,
}

/// Whether waiting could let the leaked threads go, with one more thread's `origin`, read
/// `late` after the settle ended: never once a thread waits with no end; else within the
/// latest end of the timed waits.
fn lingering_with(lingering: Lingering, origin: &ThreadOrigin, late: Duration) -> Lingering {
    match (lingering, origin.timed, &origin.state) {
        // A thread whose state could not be read (gone, or not Linux) says nothing.
        (_, _, None) => lingering,
        (Lingering::Never, _, _) | (_, None, Some(_)) => Lingering::Never,
        (Lingering::Unknown, Some(t), _) => Lingering::Within(late + t.bound()),
        (Lingering::Within(d), Some(t), _) => Lingering::Within(d.max(late + t.bound())),
    }
}

/// A leaked thread's label and site: its name and `spawned at src/pool.rs:40, waiting at
/// src/pool.rs:52 in …`; a thread that never named itself has no label, and its site starts
/// `unnamed thread created by PATH`.
fn label_and_site(
    name: String,
    creation: Option<&Creation>,
    site: Option<String>,
    waiting: Option<String>,
) -> (String, Option<String>) {
    let site = match (site, waiting) {
        (Some(site), Some(waiting)) => Some(format!("{site}, {waiting}")),
        (site, waiting) => site.or(waiting),
    };
    match creation {
        Some(c) if c.unnamed => {
            let what = match &c.created_by {
                Some(by) => format!("unnamed thread created by {by}"),
                None => "unnamed thread".to_owned(),
            };
            let site = site.map_or(what.clone(), |s| format!("{what} {s}"));
            (String::new(), Some(site))
        }
        _ => (name, site),
    }
}

/// The groups as report items (state and timed end as the remark), most threads first, each
/// with its backtrace.
fn sorted_items(groups: HashMap<GroupKey, Group>) -> Vec<(Item, Vec<String>)> {
    let mut items: Vec<(Item, Vec<String>)> = groups
        .into_iter()
        .map(|((label, site, state, _), group)| {
            let remark = match (state, group.timed) {
                (Some(state), Some(timed)) => Some(format!("{state}, {timed}")),
                (state, _) => state,
            };
            let item = Item {
                label,
                count: group.count,
                remark,
                origin: site,
            };
            (item, group.backtrace)
        })
        .collect();
    items.sort_by(|(a, _), (b, _)| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.label.cmp(&b.label))
            .then_with(|| a.origin.cmp(&b.origin))
    });
    items
}
