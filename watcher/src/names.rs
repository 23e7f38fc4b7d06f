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
//! A Unix file name is any bytes but `/` and NUL; the ledger, the queue's claims, status
//! records (JSON), logs and [`FileOutcome`](crate::FileOutcome) need a string. A name's
//! **key** is its escape ([`escape_name`]): each backslash becomes `\\`, each byte that is
//! not part of valid UTF-8 becomes `\xHH`, everything else stays as it is. So a UTF-8 name
//! without a backslash is its own key (`a.txt`), `bad<0xFF>.txt` is `bad\xff.txt`, and a file
//! literally named `bad\xff.txt` is `bad\\xff.txt`: the escape is one-to-one, so no two
//! inbox names share a key, a claim, a ledger entry or a status record.
//! [`unescape_name`] gives the name back, byte for byte.
//!
//! On disk a file keeps its own name: it is moved to `processed/NAME` (or `failed/NAME`, or
//! `NAME.<run>` when that is taken) byte for byte, its status beside it as
//! `NAME.status.json`; [`raw_name`] turns a key into that name. (Before, a name that was not
//! UTF-8 was moved under its escape, and a UTF-8 name holding a backslash was its own key: the
//! ledger's version 3 marks the change, see `store/ledger.rs`.)

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

/// The key of the file name `name` (its escape, see [`escape_name`]).
pub(crate) fn name_of(name: &OsStr) -> String {
    escape_name(name)
}

/// The key of the last component of `path` (empty for a path without one).
pub(crate) fn name_of_path(path: &Path) -> String {
    path.file_name().map(name_of).unwrap_or_default()
}

/// The file name whose key is `key`, byte for byte. A string that is not an escape (no key is
/// one; a key written by a version before the escape was one-to-one is migrated when the
/// ledger is opened) is taken as the name itself.
pub(crate) fn raw_name(key: &str) -> OsString {
    unescape_name(key).unwrap_or_else(|| OsString::from(key))
}

/// The inbox path of the file whose key is `key`.
pub(crate) fn inbox_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(raw_name(key))
}

/// The escape of a file name (or of any path): a backslash becomes `\\`, each byte that is
/// not part of valid UTF-8 becomes `\xHH` (two lower-case hex digits), every other character
/// stays as it is. One-to-one: [`unescape_name`] gives the bytes back. This is how the watcher
/// names a file in its ledger, its status records (`file`, `moved_to`), its logs and
/// [`FileOutcome`](crate::FileOutcome).
///
/// ```
/// use std::ffi::OsStr;
/// use std::os::unix::ffi::OsStrExt;
///
/// assert_eq!(watcher::escape_name(OsStr::new("a.txt")), "a.txt");
/// assert_eq!(watcher::escape_name(OsStr::from_bytes(b"bad\xffname.txt")), r"bad\xffname.txt");
/// // A name that reads like an escape is not one: its backslash is escaped.
/// assert_eq!(watcher::escape_name(OsStr::new(r"bad\xffname.txt")), r"bad\\xffname.txt");
/// ```
pub fn escape_name(name: &OsStr) -> String {
    escape(os_bytes(name))
}

/// The file name whose escape ([`escape_name`]) is `escaped`, or `None` when `escaped` is not
/// one (a lone backslash, `\x` without two lower-case hex digits, or `\xHH` standing for a
/// byte that `escape_name` would have written as it is).
///
/// ```
/// use std::ffi::OsStr;
/// use std::os::unix::ffi::OsStrExt;
///
/// let name = watcher::unescape_name(r"bad\xffname.txt").unwrap();
/// assert_eq!(name.as_bytes(), b"bad\xffname.txt");
/// assert_eq!(watcher::unescape_name(r"a\\b").unwrap(), OsStr::new(r"a\b"));
/// assert_eq!(watcher::unescape_name(r"a\b"), None);
/// ```
pub fn unescape_name(escaped: &str) -> Option<OsString> {
    let raw = unescape(escaped)?;
    // Only what `escape` makes: `\x41` for `A` is not an escape of anything.
    (escape(&raw) == escaped).then(|| from_bytes(raw))
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

/// The bytes `escaped` stands for, reading `\\` and `\xHH`; `None` for any other backslash.
fn unescape(escaped: &str) -> Option<Vec<u8>> {
    let b = escaped.as_bytes();
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
                let hex = escaped.get(i + 2..i + 4)?;
                if !hex
                    .bytes()
                    .all(|h| h.is_ascii_digit() || (b'a'..=b'f').contains(&h))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The bytes a key written before version 3 of the ledger stood for: a UTF-8 name was its own
/// key, backslashes and all; a name that was not UTF-8 had the escape above. Where the two
/// read alike (a UTF-8 name that looks like an escape of one that is not), the escape wins, as
/// it did then when no file had the literal name.
pub(crate) fn key_from_v2(old: &str) -> String {
    match unescape(old) {
        Some(raw) if old.contains("\\x") && std::str::from_utf8(&raw).is_err() => escape(&raw),
        _ => escape(old.as_bytes()),
    }
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
    fn utf8_names_without_a_backslash_are_their_own_keys() {
        for n in ["a.txt", "new\nline", "é", "x41"] {
            assert_eq!(name_of(OsStr::new(n)), n);
            assert_eq!(raw_name(n), OsStr::new(n));
        }
    }

    /// Issue 20's pair: a name that is not UTF-8 and the UTF-8 name its old escape read as.
    #[test]
    fn a_name_that_reads_like_an_escape_has_a_key_of_its_own() {
        let raw = OsStr::from_bytes(b"bad\xffname.txt");
        let literal = OsStr::new(r"bad\xffname.txt");
        assert_eq!(name_of(raw), r"bad\xffname.txt");
        assert_eq!(name_of(literal), r"bad\\xffname.txt");
        assert_eq!(raw_name(&name_of(raw)), raw);
        assert_eq!(raw_name(&name_of(literal)), literal);
        assert_eq!(name_of(OsStr::new(r"back\slash")), r"back\\slash");
        assert_eq!(raw_name(r"back\\slash"), OsStr::new(r"back\slash"));
    }

    #[test]
    fn other_names_escape_and_come_back() {
        for raw in [
            &b"bad\xff.txt"[..],
            b"\xfe\xff",
            b"a\\b\x80",
            b"\xc3",
            b"\xe2\x82.1",
        ] {
            let key = name_of(OsStr::from_bytes(raw));
            assert!(key.contains("\\x"), "{key}");
            assert_eq!(unescape_name(&key).unwrap().as_bytes(), raw, "{key}");
        }
        assert_eq!(name_of(OsStr::from_bytes(b"a\\b\x80")), r"a\\b\x80");
        assert_eq!(name_of(OsStr::from_bytes(b"\xe2\x82.1")), r"\xe2\x82.1");
    }

    #[test]
    fn only_what_escape_makes_unescapes() {
        for s in [
            r"a\b",
            r"a\",
            r"\x4",
            r"\xFF",
            r"\x41",
            r"\xc3\xa9",
            r"\xzz",
        ] {
            assert_eq!(unescape_name(s), None, "{s}");
            // Not a key: taken as the name itself.
            assert_eq!(raw_name(s), OsStr::new(s));
        }
    }

    /// Keys of a ledger before version 3: a UTF-8 name was its own key, backslashes and all.
    #[test]
    fn keys_of_version_2_are_migrated() {
        assert_eq!(key_from_v2("a.txt"), "a.txt");
        assert_eq!(key_from_v2(r"back\slash"), r"back\\slash");
        assert_eq!(key_from_v2(r"two\\slashes"), r"two\\\\slashes");
        assert_eq!(key_from_v2(r"bad\xff.txt"), r"bad\xff.txt");
        assert_eq!(key_from_v2(r"a\\b\x80"), r"a\\b\x80");
        // Read as an escape, it would be UTF-8: it was a literal name.
        assert_eq!(key_from_v2(r"\x41"), r"\\x41");
    }

    #[test]
    fn inbox_path_is_the_raw_name() {
        let dir = tempfile::tempdir().unwrap();
        let raw = OsStr::from_bytes(b"bad\xff.txt");
        assert_eq!(inbox_path(dir.path(), &name_of(raw)), dir.path().join(raw));
        assert_eq!(inbox_path(dir.path(), "a.txt"), dir.path().join("a.txt"));
    }

    proptest::proptest! {
        /// Any bytes a file name can hold (mostly ASCII, backslashes, `x` and hex digits, and
        /// bytes that are not UTF-8, so that near-escapes are common) escape to a string that
        /// comes back to them.
        #[test]
        fn escape_round_trips(raw in name_bytes()) {
            let key = escape_name(OsStr::from_bytes(&raw));
            let back = unescape_name(&key);
            proptest::prop_assert_eq!(back.as_ref().map(|b| b.as_bytes()), Some(&raw[..]), "{}", key);
        }

        /// Two different names never share an escape.
        #[test]
        fn escape_is_one_to_one(a in name_bytes(), b in name_bytes()) {
            let (ka, kb) = (escape_name(OsStr::from_bytes(&a)), escape_name(OsStr::from_bytes(&b)));
            proptest::prop_assert_eq!(a == b, ka == kb, "{} {}", ka, kb);
        }

        /// A name and the UTF-8 name its escape reads as never share a key.
        #[test]
        fn a_name_and_its_escape_as_a_name_differ(raw in name_bytes()) {
            let key = escape_name(OsStr::from_bytes(&raw));
            let again = escape_name(OsStr::new(&key));
            proptest::prop_assert_eq!(key == again, !raw.contains(&b'\\') && std::str::from_utf8(&raw).is_ok());
        }
    }

    fn name_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let byte = prop_oneof![
            3 => proptest::sample::select(b"\\xaf0.9 ".to_vec()),
            1 => 0x80u8..=0xff,
            1 => (1u8..=0xff).prop_filter("no slash", |b| *b != b'/'),
        ];
        proptest::collection::vec(byte, 1..12)
    }
}
