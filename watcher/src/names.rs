//! File names as the watcher keys them: the ledger, the claims, status files and the names in
//! `processed/` and `failed/` are strings, while a Unix file name is any bytes but `/` and NUL.
//!
//! A name that is UTF-8 is its own key. A name that is not is processed all the same (its
//! processor gets the real path): its key escapes each byte that is not part of valid UTF-8 as
//! `\xNN` and each backslash as `\\`, so `bad<0xFF>.txt` is keyed, and moved to `processed/`,
//! as `bad\xff.txt`; [`inbox_path`] turns the key back into the real name. The one ambiguity
//! left: a UTF-8 name that literally reads like such an escape (`bad\xff.txt` typed with a
//! backslash) has the same key; the two files are then processed one after the other, and the
//! second lands as `NAME.<run>`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

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
