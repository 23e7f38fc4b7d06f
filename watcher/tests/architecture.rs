//! `ARCHITECTURE.md` cannot drift from the watcher's tree: every source file of `watcher/src`
//! and `watcher/shutdown/src` is named in its code map, every path the map names exists, the
//! arrows it draws between the watcher's folders are exactly the `crate::` imports of their
//! code, and those arrows point one way (no cycle between folders).
//!
//! `cargo test -p watcher --test architecture -- --nocapture` prints the arrows drawn from the
//! code; a failure prints the block to paste into `ARCHITECTURE.md`. Each check is a plain
//! function of the text it reads, so that a planted error (a file left out, a path that does not
//! exist, an arrow missing, a cycle) is shown to be caught beside the real tree that passes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Marks the watcher's code map in `ARCHITECTURE.md`.
const MAP: (&str, &str) = ("<!-- watcher code map -->", "<!-- /watcher code map -->");
/// Marks the watcher's arrows in `ARCHITECTURE.md`.
const ARROWS: (&str, &str) = ("<!-- watcher arrows -->", "<!-- /watcher arrows -->");
const ARROW: &str = "──▶";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn architecture() -> String {
    std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap()
}

/// The text between the two markers.
fn section<'a>(doc: &'a str, (start, end): (&str, &str)) -> &'a str {
    let from = doc.find(start).unwrap_or_else(|| panic!("no {start}")) + start.len();
    let to = doc[from..].find(end).unwrap_or_else(|| panic!("no {end}")) + from;
    &doc[from..to]
}

/// The `.rs` files under `dir` (relative to the workspace), sorted.
fn rust_files(dir: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let root = workspace();
    let mut out = Vec::new();
    walk(&root, &root.join(dir), &mut out);
    out.sort();
    out
}

/// The backquoted words of `text` that look like paths of the workspace (`watcher/...`).
fn named_paths(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.starts_with("watcher/") && !w.contains(' '))
        .map(str::to_owned)
        .collect()
}

/// What the code map gets wrong: files it does not name, paths it names that do not exist.
fn map_errors(map: &str, files: &[String], exists: impl Fn(&str) -> bool) -> Vec<String> {
    let named = named_paths(map);
    let mut errors: Vec<String> = files
        .iter()
        .filter(|f| !named.contains(*f))
        .map(|f| format!("{f} is not in the code map"))
        .collect();
    errors.extend(
        named
            .iter()
            .filter(|p| !exists(p))
            .map(|p| format!("the code map names {p}, which does not exist")),
    );
    errors
}

/// The unit of the library a file of `watcher/src` belongs to: its folder, or the top-level
/// module it is. `None` for the crate root and the CLI (which uses only the public API).
fn unit_of(rel: &str) -> Option<String> {
    if rel == "lib.rs" || rel.starts_with("bin/") {
        return None;
    }
    Some(match rel.split_once('/') {
        Some((folder, _)) => folder.to_owned(),
        None => rel.trim_end_matches(".rs").to_owned(),
    })
}

/// The first segments of the `crate::` paths in the code of `source` (comments left out):
/// `use crate::work::queue::Inlet` and `crate::names::name_of(..)` give `work` and `names`;
/// `use crate::{a, b::c}` gives `a` and `b`. Items re-exported at the root (`crate::Watcher`)
/// are not modules and are left out.
fn crate_imports(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let heads: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|item| item.trim().split("::").next().unwrap_or(""))
                    .collect(),
                None => vec![rest],
            };
            for head in heads {
                let ident: String = head
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if ident.starts_with(|c: char| c.is_ascii_lowercase()) {
                    out.insert(ident);
                }
            }
        }
    }
    out
}

/// The arrows between the units of the library: unit → the other units its files import.
fn arrows_of(sources: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, source) in sources {
        let Some(unit) = unit_of(rel) else { continue };
        let targets = graph.entry(unit.clone()).or_default();
        targets.extend(crate_imports(source).into_iter().filter(|t| *t != unit));
    }
    graph
}

/// The arrows as `ARCHITECTURE.md` draws them, one unit a line.
fn draw(graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    let width = graph.keys().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for (unit, targets) in graph {
        let to: Vec<&str> = targets.iter().map(String::as_str).collect();
        let to = if to.is_empty() {
            "—".to_owned()
        } else {
            to.join(", ")
        };
        out.push_str(&format!("{unit:width$} {ARROW} {to}\n"));
    }
    out
}

/// The arrows drawn in `text` (lines `unit ──▶ a, b` or `unit ──▶ —`).
fn parse_arrows(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    text.lines()
        .filter_map(|l| l.split_once(ARROW))
        .map(|(unit, to)| {
            let to = to
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty() && *t != "—")
                .map(str::to_owned)
                .collect();
            (unit.trim().to_owned(), to)
        })
        .collect()
}

/// A cycle of `graph`, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        unit: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|u| u == unit) {
            let mut cycle = path[i..].to_vec();
            cycle.push(unit.to_owned());
            return Some(cycle);
        }
        if !done.insert(unit.to_owned()) {
            return None;
        }
        path.push(unit.to_owned());
        for next in graph.get(unit).into_iter().flatten() {
            if let Some(c) = visit(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|unit| visit(graph, unit, &mut Vec::new(), &mut done))
}

/// The library's sources: (path relative to `watcher/src`, contents).
fn library_sources() -> Vec<(String, String)> {
    rust_files("watcher/src")
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(workspace().join(&f)).unwrap();
            (f["watcher/src/".len()..].to_owned(), text)
        })
        .collect()
}

#[test]
fn every_source_file_is_in_the_code_map_and_every_path_it_names_exists() {
    let doc = architecture();
    let map = section(&doc, MAP);
    let mut files = rust_files("watcher/src");
    files.extend(rust_files("watcher/shutdown/src"));
    assert!(files.len() > 30, "{files:?}");
    let exists = |p: &str| workspace().join(p).exists();
    let errors = map_errors(map, &files, exists);
    assert!(errors.is_empty(), "ARCHITECTURE.md: {errors:#?}");

    // Planted: a file the map does not name, and a path it names that is not there.
    let mut planted = files.clone();
    planted.push("watcher/src/work/new_step.rs".to_owned());
    let stale = format!("{map}\n| `watcher/src/worker.rs` | gone |\n");
    assert_eq!(
        map_errors(&stale, &planted, exists),
        [
            "watcher/src/work/new_step.rs is not in the code map",
            "the code map names watcher/src/worker.rs, which does not exist",
        ]
    );
}

#[test]
fn the_arrows_between_folders_are_the_crate_imports() {
    let graph = arrows_of(&library_sources());
    let drawn = draw(&graph);
    println!("{drawn}");
    let units: BTreeSet<&String> = graph.keys().collect();
    for (unit, targets) in &graph {
        for t in targets {
            assert!(units.contains(t), "{unit} imports crate::{t}, not a unit");
        }
    }
    let doc = architecture();
    assert_eq!(
        parse_arrows(section(&doc, ARROWS)),
        graph,
        "ARCHITECTURE.md's arrows differ from the imports; paste:\n{drawn}"
    );

    // Planted: one more import (a store module calling the work queue) changes the drawing.
    let mut sources = library_sources();
    sources.push((
        "store/planted.rs".to_owned(),
        "use crate::work::queue::WorkQueue; // crate::engine in a comment\n".to_owned(),
    ));
    let planted = arrows_of(&sources);
    assert_ne!(parse_arrows(&drawn), planted);
    assert!(planted["store"].contains("work") && !planted["store"].contains("engine"));
    assert_eq!(parse_arrows(&draw(&planted)), planted);
}

#[test]
fn the_folders_import_one_way() {
    let graph = arrows_of(&library_sources());
    assert_eq!(cycle(&graph), None);

    // Planted: the store calling back into the work path closes a cycle.
    let mut planted = graph.clone();
    planted.get_mut("store").unwrap().insert("work".to_owned());
    let found = cycle(&planted).expect("the planted cycle");
    assert!(
        found.windows(2).any(|w| w == ["store", "work"]),
        "{found:?}"
    );
}

#[test]
fn imports_are_read_from_code_not_comments() {
    let source = "use crate::a::b;\n\
                  use crate::{c, d::e};\n\
                  // crate::f in a comment\n\
                  let x = crate::g::h(crate::Watcher); // crate::i\n";
    let got: Vec<String> = crate_imports(source).into_iter().collect();
    assert_eq!(got, ["a", "c", "d", "g"]);
}
