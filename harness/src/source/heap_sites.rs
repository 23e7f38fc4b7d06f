//! Where the blocks of a heap leak were allocated: the report's `×8 allocated at
//! src/registry.rs:42 in alloc::boxed::Box::new`.
//!
//! Sites are recorded only after a check has found a heap leak, by a pass of further cycles
//! (`alloc::sites`, driven from `check.rs`): the blocks those cycles allocated and did not
//! free are grouped here by where they were allocated, resolved once per distinct stack
//! (`origin::resolve`). The line a report shows is the innermost frame of the user's code (or,
//! where a dependency allocated on its own, of that dependency) and the call made there, the
//! function that reached the allocator: `Box::new`, `Vec::with_capacity`. A missing piece is
//! said, never guessed: a stack that could not be walked, frames without debug info.

use std::collections::HashMap;

use crate::alloc::sites::{Survivors, SLOTS, SUPPORTED};
use crate::finding::{Item, Sites};

/// A thread whose allocations are not the component's: libtest's main thread, when the check
/// runs on a libtest test thread (it registers and reports tests while this one runs).
pub(crate) fn excluded_thread() -> Option<u32> {
    crate::context::on_a_libtest_thread()
        .then(crate::sys::main_and_current_tid)
        .flatten()
        .map(|(main, _)| main)
}

/// Groups the blocks a recording pass of `cycles` cycles left allocated by site.
pub(crate) fn group(survivors: Survivors, cycles: usize, backtraces: bool) -> Sites {
    let mut notes = Vec::new();
    if !SUPPORTED {
        notes.push("heap: allocation sites need feature `origins` (Linux with glibc)".to_owned());
        return Sites {
            items: Vec::new(),
            notes,
        };
    }
    let groups = by_site(survivors.blocks);
    if groups.is_empty() {
        notes.push(format!(
            "heap: no block allocated in {cycles} further cycles run to record allocation \
             sites stayed: no site to show (the leak did not recur)"
        ));
    }
    if survivors.unrecorded > 0 {
        notes.push(format!(
            "heap: sites not recorded for {} blocks (the site table holds {SLOTS} live blocks)",
            survivors.unrecorded
        ));
    }
    if backtraces {
        for (site, n, bt) in &groups {
            if !bt.is_empty() {
                notes.push(format!(
                    "heap ×{n} {site}, allocated through:\n      {}",
                    bt.join("\n      ")
                ));
            }
        }
    }
    let items = groups
        .into_iter()
        .map(|(site, n, _)| Item {
            label: String::new(),
            count: n,
            remark: None,
            origin: Some(site),
        })
        .collect();
    Sites { items, notes }
}

/// The blocks (each given by the stack that allocated it) grouped by site, each stack
/// resolved once: (site, blocks, the first stack's backtrace), most blocks first.
fn by_site(blocks: Vec<Vec<usize>>) -> Vec<(String, usize, Vec<String>)> {
    let mut by_stack: HashMap<Vec<usize>, usize> = HashMap::new();
    for ips in blocks {
        *by_stack.entry(ips).or_default() += 1;
    }
    // Different stacks can end at the same line (a loop, a call from two places inside it).
    let mut by_site: HashMap<String, (usize, Vec<String>)> = HashMap::new();
    for (ips, n) in by_stack {
        let (site, backtrace) = describe(&ips);
        let group = by_site.entry(site).or_default();
        group.0 += n;
        if group.1.is_empty() {
            group.1 = backtrace;
        }
    }
    let mut groups: Vec<(String, usize, Vec<String>)> = by_site
        .into_iter()
        .map(|(site, (n, bt))| (site, n, bt))
        .collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    groups
}

/// The site of one stack in a report's words, and its full backtrace.
#[cfg(origins)]
fn describe(ips: &[usize]) -> (String, Vec<String>) {
    if ips.is_empty() {
        return (
            "allocation site not recorded: the stack could not be walked".to_owned(),
            Vec::new(),
        );
    }
    let resolved = crate::origin::resolve::resolve(ips);
    let from = past_allocator(&resolved.frames);
    let backtrace = resolved
        .backtrace()
        .get(from..)
        .unwrap_or_default()
        .to_vec();
    (site(&resolved.frames[from..]), backtrace)
}

/// Where the caller's frames begin: past the stack walk, the counting allocator and the
/// `__rust_alloc` shim that `#[global_allocator]` generates (whose debug info points at the
/// `static` that installs the allocator, in the user's file).
#[cfg_attr(not(origins), allow(dead_code))]
fn past_allocator(frames: &[crate::origin::frames::Frame]) -> usize {
    frames
        .iter()
        .position(|f| {
            f.name.as_deref().is_some_and(|name| {
                let last = name.rsplit("::").next().unwrap_or(name);
                last.starts_with("__rust_") || last.starts_with("__rg_")
            })
        })
        .map_or(0, |i| i + 1)
}

#[cfg(not(origins))]
fn describe(_ips: &[usize]) -> (String, Vec<String>) {
    (
        "allocation site not recorded: sites need feature `origins` (Linux with glibc)".to_owned(),
        Vec::new(),
    )
}

/// `allocated at src/registry.rs:42 in alloc::boxed::Box::new` from a stack's frames,
/// innermost first.
#[cfg_attr(not(origins), allow(dead_code))]
fn site(frames: &[crate::origin::frames::Frame]) -> String {
    use crate::origin::frames::{self, Site};
    let picked = Site::pick(frames);
    let Some(at) = picked.user.or(picked.library) else {
        return if frames.iter().any(|f| f.file.is_some()) {
            "allocation site not in the user's code or a dependency".to_owned()
        } else {
            "allocation site not in the debug info (no line tables)".to_owned()
        };
    };
    let location = match (&at.file, at.line) {
        (Some(file), Some(line)) => {
            format!("{}:{line}", frames::short_path(file, frames::source_root()))
        }
        (Some(file), None) => frames::short_path(file, frames::source_root()),
        (None, _) => "<unknown file>".to_owned(),
    };
    // The call made at that line: the frame just inside it, if it is not the harness's own.
    let index = frames.iter().position(|f| *f == at).unwrap_or(0);
    let callee = frames[..index]
        .last()
        .and_then(|f| f.name.as_deref())
        .map(|name| without_generics(frames::function(name)))
        .filter(|name| !name.starts_with("leakcheck::") && !name.contains("CountingAlloc"));
    match callee {
        Some(callee) => format!("allocated at {location} in {callee}"),
        None => format!("allocated at {location}"),
    }
}

/// A path without generic arguments: `alloc::boxed::Box<T>::new` → `alloc::boxed::Box::new`,
/// `<alloc::vec::Vec<u8> as core::clone::Clone>::clone` →
/// `<alloc::vec::Vec as core::clone::Clone>::clone`. A `<` that opens a qualified path (at the
/// start, or after `<`, `(`, ` `) is kept.
fn without_generics(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    // Per open `<`: whether it is dropped (a generic argument list).
    let mut open: Vec<bool> = Vec::new();
    let mut prev: Option<char> = None;
    for c in name.chars() {
        let dropping = open.iter().any(|&d| d);
        match c {
            '<' => {
                let generic = prev.is_some_and(|p| p.is_alphanumeric() || p == '_');
                open.push(generic || dropping);
                if !generic && !dropping {
                    out.push(c);
                }
            }
            '>' if !open.is_empty() => {
                let dropped = open.pop().unwrap_or(false);
                if !dropped {
                    out.push(c);
                }
            }
            _ if dropping => {}
            _ => out.push(c),
        }
        prev = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::frames::{frame, Frame};

    fn allocator_frames() -> Vec<Frame> {
        vec![
            frame(
                "leakcheck::alloc::sites::record",
                "/w/harness/src/alloc/sites.rs",
                90,
            ),
            frame(
                "<leakcheck::alloc::CountingAlloc<A> as core::alloc::global::GlobalAlloc>::alloc",
                "/w/harness/src/alloc/mod.rs",
                95,
            ),
            frame(
                "alloc::alloc::exchange_malloc",
                "/rustc/abc/library/alloc/src/alloc.rs",
                349,
            ),
        ]
    }

    #[test]
    fn a_box_names_the_users_line_and_the_call() {
        let mut frames = allocator_frames();
        frames.insert(2, frame("__rustc::__rust_alloc", "tests/a.rs", 16));
        let from = past_allocator(&frames);
        assert_eq!(from, 3);
        let mut frames = frames.split_off(from);
        frames.push(frame(
            "alloc::boxed::Box<T>::new",
            "/rustc/abc/library/alloc/src/boxed.rs",
            260,
        ));
        frames.push(frame("registry::add::{{closure}}", "src/registry.rs", 42));
        frames.push(frame("registry::main", "src/registry.rs", 9));
        assert_eq!(
            site(&frames),
            "allocated at src/registry.rs:42 in alloc::boxed::Box::new"
        );
    }

    #[test]
    fn missing_pieces_are_said() {
        assert_eq!(
            site(&[frame("main", "", 0), frame("__libc_start_main", "", 0)]),
            "allocation site not in the debug info (no line tables)"
        );
        assert_eq!(
            site(&allocator_frames()),
            "allocation site not in the user's code or a dependency"
        );
        // The user's code calling the allocator itself: no call to name.
        let mut frames = allocator_frames();
        frames.truncate(2);
        frames.push(frame("app::raw", "src/raw.rs", 7));
        assert_eq!(site(&frames), "allocated at src/raw.rs:7");
    }

    #[test]
    fn generic_arguments_are_dropped_and_qualified_paths_kept() {
        assert_eq!(
            without_generics("alloc::boxed::Box<T>::new"),
            "alloc::boxed::Box::new"
        );
        assert_eq!(
            without_generics("<alloc::vec::Vec<u8, A> as core::clone::Clone>::clone"),
            "<alloc::vec::Vec as core::clone::Clone>::clone"
        );
        assert_eq!(
            without_generics("alloc::vec::Vec<Box<dyn Fn()>>::push"),
            "alloc::vec::Vec::push"
        );
    }

    #[test]
    fn blocks_are_grouped_by_site_most_first_with_what_was_not_recorded() {
        let survivors = Survivors {
            blocks: vec![vec![], vec![], vec![]],
            unrecorded: 5,
        };
        let sites = group(survivors, 8, false);
        if SUPPORTED {
            assert_eq!(
                sites.items,
                vec![Item {
                    label: String::new(),
                    count: 3,
                    remark: None,
                    origin: Some(
                        "allocation site not recorded: the stack could not be walked".to_owned()
                    ),
                }]
            );
            assert_eq!(
                sites.notes,
                vec![
                    "heap: sites not recorded for 5 blocks (the site table holds 8192 live blocks)"
                ]
            );
        }
        let none = group(
            Survivors {
                blocks: vec![],
                unrecorded: 0,
            },
            8,
            false,
        );
        assert!(none.items.is_empty());
        if SUPPORTED {
            assert!(
                none.notes[0].contains("the leak did not recur"),
                "{:?}",
                none.notes
            );
        }
    }
}
