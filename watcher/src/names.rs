//! The inbox's file names, all in one place: the names the watcher gives its own files in the
//! watched directory, which intake never takes for work, and the string key of any other name.
//!
//! # Own files
//!
//! The ledger ([`SNAPSHOT`], [`JOURNAL`]), the lock file ([`LOCK_FILE`]), temp files
//! (`.watcher-tmp-NAME[.TAG].tmp`, [`temp_name`]), status files (`NAME`[`STATUS_SUFFIX`]) and
//! the destination directories ([`PROCESSED_DIR`], [`FAILED_DIR`]). [`is_own`] says which
//! names intake leaves alone: these, anything else starting with `.watcher-`, and any `*.tmp`.
//!
//! # Keys
//!
//! The ledger, the claims, status files and the names in `processed/` and `failed/` are
//! strings, while a Unix file name is any bytes but `/` and NUL. A name that is UTF-8 is its own key. A name that is not is processed all the same (its
//! processor gets the real path): its key escapes each byte that is not part of valid UTF-8 as
//! `\xNN` and each backslash as `\\`, so `bad<0xFF>.txt` is keyed, and moved to `processed/`,
//! as `bad\xff.txt`; [`inbox_path`] turns the key back into the real name. The one ambiguity
//! left: a UTF-8 name that literally reads like such an escape (`bad\xff.txt` typed with a
//! backslash) has the same key; the two files are then processed one after the other, and the
//! second lands as `NAME.<run>`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// The prefix of the watcher's own files in the watched directory.
const OWN_PREFIX: &str = ".watcher-";
/// The prefix of the watcher's temp files (see [`temp_name`]).
const TEMP_PREFIX: &str = ".watcher-tmp-";
/// The suffix of temp files: intake ignores every `*.tmp`, the watcher's own or not.
const TEMP_SUFFIX: &str = ".tmp";

/// File name of the ledger snapshot in the watched directory.
pub const SNAPSHOT: &str = ".watcher-ledger.json";
/// File name of the ledger journal in the watched directory.
pub const JOURNAL: &str = ".watcher-ledger.journal";
/// File name of the lock file in the watched directory.
pub const LOCK_FILE: &str = ".watcher.lock";
/// Name of the subdirectory for processed files.
pub const PROCESSED_DIR: &str = "processed";
/// Name of the subdirectory for failed files.
pub const FAILED_DIR: &str = "failed";
/// Suffix of status files.
pub const STATUS_SUFFIX: &str = ".status.json";

/// Whether `name` is one of the watcher's own files (or a temp file), which intake never
/// takes for work.
pub(crate) fn is_own(name: &str) -> bool {
    name.starts_with(OWN_PREFIX)
        || name == SNAPSHOT
        || name == JOURNAL
        || name == LOCK_FILE
        || name.ends_with(TEMP_SUFFIX)
        || name.ends_with(STATUS_SUFFIX)
}

/// The name of the watcher's temp file for a file `name` it is about to write:
/// `.watcher-tmp-<name>[.<tag>].tmp`.
pub(crate) fn temp_name(name: &str, tag: Option<u64>) -> String {
    match tag {
        Some(tag) => format!("{TEMP_PREFIX}{name}.{tag}{TEMP_SUFFIX}"),
        None => format!("{TEMP_PREFIX}{name}{TEMP_SUFFIX}"),
    }
}

/// Whether `name` is one of the watcher's temp files (see [`temp_name`]).
pub(crate) fn is_temp(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

/// The name of the status file of a file named `name` in `processed/` or `failed/`.
pub(crate) fn status_name(name: &str) -> String {
    format!("{name}{STATUS_SUFFIX}")
}

/// The key of the file name `name`.
pub(crate) fn name_of(name: &OsStr) -> String {
    if let Some(s) = name.to_str() {
        return s.to_string();
    }
    escape(os_bytes(name))
}

/// The key of the last component of `path` (empty for a path without one).
pub(crate) fn name_of_path(path: &Path) -> String {
    path.file_name().map(name_of).unwrap_or_default()
}

/// The inbox path of the file whose key is `name`: `dir/name`, or, when that does not exist and
/// `name` is an escape of a name that is not UTF-8, `dir/<that name>`.
pub(crate) fn inbox_path(dir: &Path, name: &str) -> PathBuf {
    let plain = dir.join(name);
    if std::fs::symlink_metadata(&plain).is_ok() {
        return plain;
    }
    match unescape(name) {
        Some(raw) => dir.join(raw),
        None => plain,
    }
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The raw name `escape` made `key` from, if `key` is such an escape of a name that is not
/// UTF-8.
fn unescape(key: &str) -> Option<OsString> {
    if !key.contains("\\x") {
        return None;
    }
    let b = key.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = key.get(i + 2..i + 4)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    if std::str::from_utf8(&out).is_ok() {
        return None; // not what `escape` makes: it escapes only names that are not UTF-8
    }
    Some(from_bytes(out))
}

#[cfg(unix)]
fn os_bytes(s: &OsStr) -> &[u8] {
    std::os::unix::ffi::OsStrExt::as_bytes(s)
}

#[cfg(unix)]
fn from_bytes(b: Vec<u8>) -> OsString {
    std::os::unix::ffi::OsStringExt::from_vec(b)
}

#[cfg(not(unix))]
fn os_bytes(s: &OsStr) -> &[u8] {
    s.as_encoded_bytes()
}

#[cfg(not(unix))]
fn from_bytes(b: Vec<u8>) -> OsString {
    String::from_utf8_lossy(&b).into_owned().into()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn own_files_are_never_work() {
        for n in [
            SNAPSHOT,
            JOURNAL,
            LOCK_FILE,
            ".watcher-x",
            "a.tmp",
            "a.status.json",
        ] {
            assert!(is_own(n), "{n}");
        }
        for n in [temp_name("a.txt", None), temp_name("a.txt", Some(7))] {
            assert!(is_own(&n) && is_temp(&n), "{n}");
        }
        assert_eq!(temp_name("a.txt", Some(7)), ".watcher-tmp-a.txt.7.tmp");
        assert_eq!(status_name("a.txt"), "a.txt.status.json");
        for n in ["a.txt", ".watcherx", "watcher-ledger.json", "a.tmp.txt"] {
            assert!(!is_own(n), "{n}");
        }
        assert!(!is_temp("a.tmp"));
    }

    #[test]
    fn utf8_names_are_their_own_keys() {
        for n in ["a.txt", "new\nline", r"back\slash", "é"] {
            assert_eq!(name_of(OsStr::new(n)), n);
            assert_eq!(unescape(n), None, "{n}");
        }
        // The one ambiguity (see the module docs): `inbox_path` prefers the plain name.
        assert_eq!(
            name_of(OsStr::new(r"looks\xffescaped")),
            r"looks\xffescaped"
        );
    }

    #[test]
    fn other_names_escape_and_come_back() {
        for raw in [&b"bad\xff.txt"[..], b"\xfe\xff", b"a\\b\x80", b"\xc3"] {
            let key = name_of(OsStr::from_bytes(raw));
            assert!(key.contains("\\x"), "{key}");
            assert_eq!(unescape(&key).unwrap().as_bytes(), raw, "{key}");
        }
        assert_eq!(name_of(OsStr::from_bytes(b"bad\xff.txt")), r"bad\xff.txt");
        assert_eq!(name_of(OsStr::from_bytes(b"a\\b\x80")), r"a\\b\x80");
    }

    #[test]
    fn inbox_path_finds_the_raw_name() {
        let dir = tempfile::tempdir().unwrap();
        let raw = OsStr::from_bytes(b"bad\xff.txt");
        std::fs::write(dir.path().join(raw), b"x").unwrap();
        assert_eq!(inbox_path(dir.path(), &name_of(raw)), dir.path().join(raw));
        assert_eq!(inbox_path(dir.path(), "a.txt"), dir.path().join("a.txt"));
    }
}
