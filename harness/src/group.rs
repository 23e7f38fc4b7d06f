//! Grouping leaked items so that a report reads `×20`, not twenty lines that differ by an id.
//!
//! Thread names group as they are. Fd targets carry per-item ids: `socket:[81234]` and
//! `pipe:[81240]` group by kind, and paths that differ only in their directory (a temp dir per
//! cycle) group by file name as `…/NAME`. A path that occurs once is shown whole.

use std::collections::HashMap;

use crate::finding::Item;

/// Groups labels as they are into items, most frequent first, then by label.
pub(crate) fn exact(labels: impl IntoIterator<Item = String>) -> Vec<Item> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for label in labels {
        *counts.entry(label).or_default() += 1;
    }
    sorted(counts)
}

/// Groups fd targets: ids in brackets dropped (`socket:[…]`), paths that differ only by
/// directory merged as `…/NAME`.
pub(crate) fn fd_targets(labels: impl IntoIterator<Item = String>) -> Vec<Item> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for label in labels {
        *counts.entry(without_inode(label)).or_default() += 1;
    }
    sorted(merge_paths_by_name(counts))
}

/// Groups fd targets as [`fd_targets`] does, and within a target by origin (where each fd was
/// opened): one item per (target, origin), most frequent first, then by label and origin.
pub(crate) fn fd_targets_by_origin(
    fds: impl IntoIterator<Item = (String, Option<String>)>,
) -> Vec<Item> {
    let fds: Vec<(String, Option<String>)> = fds
        .into_iter()
        .map(|(label, origin)| (without_inode(label), origin))
        .collect();
    let mut dirs_per_name: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
    for (label, _) in &fds {
        if let Some(name) = path_name(label) {
            dirs_per_name.entry(name).or_default().insert(label);
        }
    }
    let mut counts: HashMap<(String, Option<String>), usize> = HashMap::new();
    for (label, origin) in &fds {
        let key = match path_name(label) {
            Some(name) if dirs_per_name[name].len() > 1 => format!("…/{name}"),
            _ => label.clone(),
        };
        *counts.entry((key, origin.clone())).or_default() += 1;
    }
    let mut items: Vec<Item> = counts
        .into_iter()
        .map(|((label, origin), count)| Item {
            label,
            count,
            remark: None,
            origin,
        })
        .collect();
    items.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.label.cmp(&b.label))
            .then_with(|| a.origin.cmp(&b.origin))
    });
    items
}

/// Most frequent first, then by label.
pub(crate) fn sorted(counts: HashMap<String, usize>) -> Vec<Item> {
    let mut items: Vec<Item> = counts
        .into_iter()
        .map(|(label, n)| Item::new(label, n))
        .collect();
    items.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
    items
}

/// `socket:[81234]` → `socket:[…]`; other targets unchanged.
pub(crate) fn without_inode(target: String) -> String {
    match target.split_once(":[") {
        Some((kind, rest))
            if rest.ends_with(']')
                && rest[..rest.len() - 1].bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{kind}:[…]")
        }
        _ => target,
    }
}

/// Paths whose file name occurs under more than one directory merge into `…/NAME`.
fn merge_paths_by_name(exact: HashMap<String, usize>) -> HashMap<String, usize> {
    let mut dirs_per_name: HashMap<String, usize> = HashMap::new();
    for label in exact.keys() {
        if let Some(name) = path_name(label) {
            *dirs_per_name.entry(name.to_owned()).or_default() += 1;
        }
    }
    let mut merged = HashMap::new();
    for (label, n) in exact {
        let key = match path_name(&label) {
            Some(name) if dirs_per_name[name] > 1 => format!("…/{name}"),
            _ => label,
        };
        *merged.entry(key).or_default() += n;
    }
    merged
}

fn path_name(label: &str) -> Option<&str> {
    if !label.starts_with('/') {
        return None;
    }
    label
        .rsplit_once('/')
        .map(|(_, name)| name)
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(items: Vec<Item>) -> Vec<(String, usize)> {
        items.into_iter().map(|i| (i.label, i.count)).collect()
    }

    #[test]
    fn threads_group_by_exact_name() {
        let g = pairs(exact(labels(&["cleanup", "file-state", "cleanup"])));
        assert_eq!(g, vec![("cleanup".into(), 2), ("file-state".into(), 1)]);
    }

    #[test]
    fn fds_group_by_kind_and_file_name() {
        let g = pairs(fd_targets(labels(&[
            "socket:[81234]",
            "socket:[81240]",
            "anon_inode:inotify",
            "/tmp/a1/.ledger",
            "/tmp/b2/.ledger",
            "/tmp/c3/.ledger",
            "/etc/hosts",
            "pipe:[7]",
        ])));
        assert_eq!(
            g,
            vec![
                ("…/.ledger".into(), 3),
                ("socket:[…]".into(), 2),
                ("/etc/hosts".into(), 1),
                ("anon_inode:inotify".into(), 1),
                ("pipe:[…]".into(), 1),
            ]
        );
    }

    #[test]
    fn fds_group_by_target_and_origin() {
        let at = |l: u32| Some(format!("opened at src/a.rs:{l}"));
        let g: Vec<_> = fd_targets_by_origin(vec![
            ("/tmp/a1/x.log".to_owned(), at(3)),
            ("/tmp/a2/x.log".to_owned(), at(3)),
            ("/tmp/a3/x.log".to_owned(), at(4)),
            ("socket:[1]".to_owned(), at(9)),
            ("socket:[2]".to_owned(), at(9)),
            ("socket:[3]".to_owned(), None),
        ])
        .into_iter()
        .map(|i| (i.label, i.count, i.origin))
        .collect();
        assert_eq!(
            g,
            vec![
                ("socket:[…]".into(), 2, at(9)),
                ("…/x.log".into(), 2, at(3)),
                ("socket:[…]".into(), 1, None),
                ("…/x.log".into(), 1, at(4)),
            ]
        );
    }
}
