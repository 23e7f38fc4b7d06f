//! `ARCHITECTURE.md` cannot drift from the harness's tree: every source file of `harness/src`
//! and `harness/macros/src` is named in the harness's code map, every path the map names
//! exists, every unit (a file or folder at the top of `harness/src`) has a row whose "uses"
//! column is exactly the units its code names as `crate::…`, and those arrows point one way
//! (no cycle between units).
//!
//! `cargo test -p leakcheck --test architecture -- --nocapture` prints the arrows drawn from
//! the code. Each check is a plain function of the text it reads, so that a planted error (a
//! file left out, a path that does not exist, an import the table does not show, a cycle) is
//! shown to be caught beside the real tree that passes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Marks the harness's code map in `ARCHITECTURE.md`.
const MAP: (&str, &str) = ("<!-- harness code map -->", "<!-- /harness code map -->");
/// Rows that are not units of the library: the crate root, which declares them all, and the
/// attribute macros' crate, which names no harness module.
const NOT_UNITS: [&str; 2] = ["lib.rs", "macros/"];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// `harness/`.
fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn architecture() -> String {
    std::fs::read_to_string(harness().parent().unwrap().join("ARCHITECTURE.md")).unwrap()
}

/// The text between the two markers.
fn section<'a>(doc: &'a str, (start, end): (&str, &str)) -> &'a str {
    let from = doc.find(start).unwrap_or_else(|| panic!("no {start}")) + start.len();
    let to = doc[from..].find(end).unwrap_or_else(|| panic!("no {end}")) + from;
    &doc[from..to]
}

/// The `.rs` files under `harness/<dir>`, relative to `harness/<dir>`, sorted.
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
    let root = harness().join(dir);
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

/// Every source file as the map names it: relative to `harness/src`, or `macros/src/…`.
fn source_files() -> Vec<String> {
    let mut files = rust_files("src");
    files.extend(
        rust_files("macros/src")
            .into_iter()
            .map(|f| format!("macros/src/{f}")),
    );
    files
}

/// Where a path the map names is: `macros/…` under `harness/`, anything else under
/// `harness/src`.
fn exists(named: &str) -> bool {
    match named.strip_prefix("macros/") {
        Some(_) => harness().join(named).exists(),
        None => harness().join("src").join(named).exists(),
    }
}

/// The backquoted words of `text` that are paths of source files or folders: `check.rs`,
/// `source/threads.rs`, `origin/`, `macros/src/lib.rs` (not `.config/leakcheck.toml`, not
/// `/proc/self/fd`, not code).
fn named_paths(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            w.starts_with(|c: char| c.is_ascii_lowercase())
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_/.".contains(c))
                && (w.ends_with(".rs") || w.ends_with('/'))
        })
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

/// The unit a file of `harness/src` belongs to: its folder, or the top-level module it is.
/// `None` for the crate root.
fn unit_of(rel: &str) -> Option<String> {
    if rel == "lib.rs" {
        return None;
    }
    Some(match rel.split_once('/') {
        Some((folder, _)) => folder.to_owned(),
        None => rel.trim_end_matches(".rs").to_owned(),
    })
}

/// The first segments of the `crate::` paths in the code of `source` (comments left out):
/// `use crate::source::threads::Threads` and `crate::alloc::pause()` give `source` and
/// `alloc`; `use crate::{a, b::{c, d}}`, over one line or several, gives `a` and `b`. Items
/// re-exported at the root (`crate::LeakCheck`) are not modules, and `$crate::` is the path a
/// macro writes in the user's crate: both are left out.
fn crate_imports(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i;
        at = start + "crate::".len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c == '$' || c == '_' || c.is_ascii_alphanumeric()) {
            continue;
        }
        let rest = &code[at..];
        let heads: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => top_level_items(group),
            None => vec![rest],
        };
        for head in heads {
            let ident: String = head
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if ident.starts_with(|c: char| c.is_ascii_lowercase()) {
                out.insert(ident);
            }
        }
    }
    out
}

/// The items of a `{…}` group up to its closing brace (`group` starts after the `{`), split
/// at the commas outside nested groups.
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut depth, mut from, mut items) = (0usize, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[from..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[from..]);
    items
}

/// The arrows between the units: unit → the other units its files import. A lowercase item
/// of the crate root that is not a unit (`crate::instrument`, a function re-exported there)
/// is no arrow.
fn arrows_of(sources: &[(String, String)]) -> Graph {
    let units: BTreeSet<String> = sources.iter().filter_map(|(rel, _)| unit_of(rel)).collect();
    let mut graph = Graph::new();
    for (rel, source) in sources {
        let Some(unit) = unit_of(rel) else { continue };
        let targets = graph.entry(unit.clone()).or_default();
        targets.extend(
            crate_imports(source)
                .into_iter()
                .filter(|t| *t != unit && units.contains(t)),
        );
    }
    graph
}

/// The arrows as the table's rows draw them: the unit of the first path in a row's first
/// column (`check.rs` → `check`, `source/` → `source`) and its "uses" column (`a, b` or `—`).
/// The rows of [`NOT_UNITS`], and the header, are left out.
fn parse_table(map: &str) -> Graph {
    map.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
            let first = cells.first()?.trim();
            let path = first.strip_prefix('`')?.split('`').next()?;
            if NOT_UNITS.contains(&path) || cells.len() < 3 {
                return None;
            }
            let unit = path
                .trim_end_matches('/')
                .trim_end_matches(".rs")
                .to_owned();
            let uses = cells[cells.len() - 1]
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty() && *t != "—")
                .map(str::to_owned)
                .collect();
            Some((unit, uses))
        })
        .collect()
}

/// The arrows one unit a line, `unit ──▶ a, b`: what `--nocapture` prints and a failure shows.
fn draw(graph: &Graph) -> String {
    let width = graph.keys().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for (unit, targets) in graph {
        let to: Vec<&str> = targets.iter().map(String::as_str).collect();
        let to = if to.is_empty() {
            "—".to_owned()
        } else {
            to.join(", ")
        };
        out.push_str(&format!("{unit:width$} ──▶ {to}\n"));
    }
    out
}

/// A cycle of `graph`, if it has one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
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

/// The library's sources: (path relative to `harness/src`, contents).
fn library_sources() -> Vec<(String, String)> {
    rust_files("src")
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(harness().join("src").join(&f)).unwrap();
            (f, text)
        })
        .collect()
}

#[test]
fn every_source_file_is_in_the_code_map_and_every_path_it_names_exists() {
    let doc = architecture();
    let map = section(&doc, MAP);
    let files = source_files();
    assert!(files.len() > 40, "{files:?}");
    assert!(
        files.contains(&"macros/src/emit.rs".to_owned()),
        "{files:?}"
    );
    let errors = map_errors(map, &files, exists);
    assert!(errors.is_empty(), "ARCHITECTURE.md: {errors:#?}");

    // Planted: a file the map does not name, and a path it names that is not there.
    let mut planted = files.clone();
    planted.push("source/sockets.rs".to_owned());
    let stale = format!("{map}\n| `probe/` | the platform reads, before `sys/` | — |\n");
    assert_eq!(
        map_errors(&stale, &planted, exists),
        [
            "source/sockets.rs is not in the code map",
            "the code map names probe/, which does not exist",
        ]
    );
}

#[test]
fn the_uses_column_is_the_crate_imports() {
    let graph = arrows_of(&library_sources());
    let drawn = draw(&graph);
    println!("{drawn}");
    assert!(graph.len() > 15, "{drawn}");
    for (unit, targets) in &graph {
        for t in targets {
            assert!(
                graph.contains_key(t),
                "{unit} imports crate::{t}, not a unit"
            );
        }
    }
    let doc = architecture();
    let table = parse_table(section(&doc, MAP));
    assert_eq!(
        table, graph,
        "ARCHITECTURE.md's harness table differs from the imports (rows, or their uses \
         column); the code's arrows:\n{drawn}"
    );

    // Planted: `finding` (below report and source) naming the report, in code and in a
    // comment: the table no longer matches, and only the code counts.
    let mut sources = library_sources();
    sources.push((
        "finding.rs".to_owned(),
        "use crate::report::Report; // crate::check in a comment\n".to_owned(),
    ));
    let planted = arrows_of(&sources);
    assert_ne!(table, planted);
    assert!(planted["finding"].contains("report") && !planted["finding"].contains("check"));
    // A root item named like a module is no arrow.
    sources.push((
        "group.rs".to_owned(),
        "crate::instrument(&mut b);\n".to_owned(),
    ));
    assert!(!arrows_of(&sources)["group"].contains("instrument"));
    // A unit without its row is caught too.
    let mut missing = graph.clone();
    missing.insert("new_unit".to_owned(), BTreeSet::new());
    assert_ne!(table, missing);
}

#[test]
fn the_units_import_one_way() {
    let graph = arrows_of(&library_sources());
    assert_eq!(cycle(&graph), None, "{}", draw(&graph));

    // Planted: the report reaching back into the sources closes a cycle (the one this layout
    // removed: report → source → context → isolate → warn → report).
    let mut planted = graph.clone();
    planted
        .get_mut("report")
        .unwrap()
        .insert("source".to_owned());
    let found = cycle(&planted).expect("the planted cycle");
    assert!(
        found.windows(2).any(|w| w == ["report", "source"]),
        "{found:?}"
    );
}

#[test]
fn imports_are_read_from_code_not_comments() {
    let source = "use crate::a::b;\n\
                  use crate::{c, d::e};\n\
                  use crate::{\n    f::{g, h},\n    i,\n};\n\
                  // crate::j in a comment\n\
                  /// doc: crate::k\n\
                  let x = crate::l::m(crate::LeakCheck); // crate::n\n\
                  $crate::instrument(&mut b); pub(crate) fn o() {}\n";
    let got: Vec<String> = crate_imports(source).into_iter().collect();
    assert_eq!(got, ["a", "c", "d", "f", "i", "l"]);
}

#[test]
fn the_table_is_read_row_by_row() {
    let map = "| module | what it is | uses |\n\
               |---|---|---|\n\
               | `lib.rs` | the root | (the root) |\n\
               | `check.rs` | the builder, `source/mod.rs` named | protocol, source |\n\
               | `sys/` | platform reads | — |\n\
               | `macros/` | `macros/src/lib.rs` | — |\n";
    let table = parse_table(map);
    assert_eq!(
        draw(&table),
        "check ──▶ protocol, source\nsys   ──▶ —\n",
        "{table:?}"
    );
    assert_eq!(
        named_paths(map).into_iter().collect::<Vec<_>>(),
        [
            "check.rs",
            "lib.rs",
            "macros/",
            "macros/src/lib.rs",
            "source/mod.rs",
            "sys/"
        ]
    );
}
