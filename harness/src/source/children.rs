//! Child processes of this process, running or zombie (Linux: `/proc/self/task/*/children`).
//!
//! A component that spawns a process and forgets to wait for it leaves a running child or a
//! zombie behind, cycle after cycle. Children are counted by pid and named by command and
//! state. The harness only looks: it never reaps, waits for or kills anything, so a child that
//! its parent reaps within the settle budget is not a leak, and one that nobody reaps is.
//!
//! Processes a child left behind count too: while a check runs, the process adopts them as a
//! child subreaper (Linux; see `orphans`), and the report names them `(orphaned)`. Those, and
//! only those, the harness reaps once they have exited.
//!
//! A child a one-time initializer spawned (a helper process kept in a `OnceLock`) is a process
//! global (see `once_made`): not counted, shown on a line of its own, unless `strict`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::origin;
use crate::resource::Resource;
use crate::source::once_made::OnceMade;
use crate::source::orphans::{self, Subreaper};
use crate::source::{added, shown_backtraces, Item, Reading, Source, Style, Uncounted, GONE};
use crate::sys::{self, ListError};

/// What an adopted descendant's line says where a child's says where it was spawned.
const ORPHANED: &str = "(orphaned)";

pub(crate) struct Children {
    /// Whether a report shows each group's full creation backtrace.
    backtraces: bool,
    /// Those backtraces, made with the items, for the notes.
    shown: Mutex<Vec<String>>,
    /// Which children one-time initializers spawned.
    globals: OnceMade,
    /// Keeps the process a child subreaper while the check runs.
    _subreaper: Subreaper,
}

impl Children {
    pub(crate) fn new(strict: bool, backtraces: bool) -> Self {
        Children {
            backtraces,
            shown: Mutex::new(Vec::new()),
            globals: OnceMade::new(
                ("child process", "child processes"),
                strict,
                origin::child_record,
            ),
            _subreaper: Subreaper::start(),
        }
    }
}

impl Source for Children {
    fn resource(&self) -> Resource {
        Resource::Children
    }

    fn read(&self) -> Reading {
        orphans::tend();
        let mut ids = Vec::new();
        match sys::children(&mut ids) {
            Ok(()) => Reading::Ids {
                count: ids.len(),
                ids,
            },
            Err(ListError::Unsupported(why)) => Reading::Unsupported(why),
            Err(ListError::Failed(msg)) => Reading::Failed(msg),
        }
    }

    fn learn(&mut self, first: &Reading) -> bool {
        self.globals.learn(first);
        false
    }

    fn label(&self, pid: u32) -> Option<String> {
        sys::child(pid).map(|(command, _)| command)
    }

    /// Back at the reference, leaving out the children already known to be globals; nothing
    /// is resolved here.
    fn settled(&self, now: &Reading, reference: &Reading) -> bool {
        self.globals.settled(now, reference)
    }

    /// Adopted descendants are never globals: their spawn was not recorded here.
    fn uncounted(&self, b0: &Reading, b1: Option<&Reading>, end: &Reading) -> Uncounted {
        self.globals
            .uncounted(b0, b1, end, &|pid| !orphans::adopted(pid))
    }

    fn style(&self) -> Style {
        Style::Quoted
    }

    /// Grouped by command and by where they were spawned (feature `origins`) or that they were
    /// adopted, with how many of each are zombies or stopped: `"sleep" ×8 (zombie ×3)`,
    /// `"sleep" ×4 spawned at src/helper.rs:9`, `"sleep" ×4 (orphaned)`.
    fn items(&self, b0: &Reading, end: &Reading) -> Vec<Item> {
        // (command, site) → (count, state → count)
        type Groups = BTreeMap<(String, Option<String>), (usize, BTreeMap<&'static str, usize>)>;
        let mut groups: Groups = BTreeMap::new();
        let mut backtraces: HashMap<String, Vec<String>> = HashMap::new();
        for pid in added(b0.ids(), end.ids()) {
            if !orphans::adopted(pid) && self.globals.left_out(pid) {
                continue;
            }
            let (command, state) = sys::child(pid).unwrap_or_else(|| (GONE.to_owned(), 'X'));
            let site = if orphans::adopted(pid) {
                Some(ORPHANED.to_owned())
            } else {
                origin::child_origin(pid).map(|made| {
                    backtraces
                        .entry(made.site.clone())
                        .or_insert(made.backtrace);
                    made.site
                })
            };
            let group = groups.entry((command, site)).or_default();
            group.0 += 1;
            if let Some(name) = unusual_state(state) {
                *group.1.entry(name).or_default() += 1;
            }
        }
        let mut items: Vec<Item> = groups
            .into_iter()
            .map(|((command, site), (count, states))| {
                let remark = (!states.is_empty()).then(|| {
                    states
                        .iter()
                        .map(|(state, n)| format!("{state} ×{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                Item {
                    label: command,
                    count,
                    remark,
                    origin: site,
                }
            })
            .collect();
        items.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.label.cmp(&b.label))
                .then_with(|| a.origin.cmp(&b.origin))
        });
        if self.backtraces {
            *self.shown.lock().unwrap_or_else(|e| e.into_inner()) =
                shown_backtraces("children", &items, &backtraces);
        }
        items
    }

    fn notes(&self) -> Vec<String> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The states worth naming in a report (a running or sleeping child is the usual case).
fn unusual_state(state: char) -> Option<&'static str> {
    match state {
        'Z' => Some("zombie"),
        'T' | 't' => Some("stopped"),
        'X' | 'x' => Some("dead"),
        _ => None,
    }
}
