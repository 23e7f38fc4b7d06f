//! Which file a name stood for: a file's inode number and, where the platform records it, its
//! birth time.
//!
//! Why: a name in the inbox can stand for another file by the time the watcher looks again (a
//! producer renames a new file over it, or deletes it and drops a new one). Before a move the
//! watcher checks that the file under the name is still the one it processed, and so does a
//! restart that finishes a commit from the ledger. The inode number alone is not enough: a file
//! system hands a freed inode to the next new file readily; the birth time tells them apart.

use std::fs::Metadata;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The identity of one file: its inode number and, where the file system records it, its birth
/// time. A file system hands a freed inode to the next new file readily; the birth time tells
/// the two apart. A name in the inbox can stand for another file by the time the watcher looks
/// again (a producer renamed a new file over it): the watcher moves a file, and a restart
/// finishes a commit, only if the name still stands for the file processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// The inode number.
    pub inode: u64,
    /// The birth time, in nanoseconds since the Unix epoch, where the file system records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub born_ns: Option<u64>,
}

impl FileId {
    /// The identity of the file `meta` describes (Unix; `None` elsewhere).
    pub fn of(meta: &Metadata) -> Option<FileId> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let born_ns = meta
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| u64::try_from(d.as_nanos()).ok());
            Some(FileId {
                inode: meta.ino(),
                born_ns,
            })
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            None
        }
    }

    /// Whether `meta` describes this file: the same inode, born at the same time where both
    /// birth times are known.
    pub fn matches(&self, meta: &Metadata) -> bool {
        match FileId::of(meta) {
            Some(now) => {
                now.inode == self.inode
                    && (now.born_ns.is_none()
                        || self.born_ns.is_none()
                        || now.born_ns == self.born_ns)
            }
            None => true,
        }
    }
}

/// Renames `from` to `to` if `from` still names the file `id` (any file, when `id` is unknown);
/// false when it is gone or names another file now (that one is left where it is).
pub(crate) fn move_if_same(from: &Path, id: Option<FileId>, to: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(from) {
        Ok(meta) if id.is_none_or(|id| id.matches(&meta)) => {}
        _ => return Ok(false),
    }
    match std::fs::rename(from, to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(crate::store::disk::at("move", from)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file replaced under its name (a new file renamed over it) is another file; the same
    /// file renamed is the same. On a file system that reuses the freed inode at once, the
    /// birth time still tells them apart.
    #[test]
    fn tells_a_replaced_file_from_a_renamed_one() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"first").unwrap();
        let first = FileId::of(&std::fs::metadata(&a).unwrap()).unwrap();
        std::fs::rename(&a, &b).unwrap();
        assert!(first.matches(&std::fs::metadata(&b).unwrap()), "renamed");
        std::fs::write(&a, b"second").unwrap();
        std::fs::rename(&a, &b).unwrap();
        assert!(!first.matches(&std::fs::metadata(&b).unwrap()), "replaced");
        // The same inode number with another birth time: another file.
        let reborn = FileId {
            inode: first.inode,
            born_ns: first.born_ns.map(|t| t + 1),
        };
        std::fs::write(&a, b"third").unwrap();
        let third = FileId::of(&std::fs::metadata(&a).unwrap()).unwrap();
        let same_inode_other_birth = FileId {
            inode: third.inode,
            ..reborn
        };
        if third.born_ns.is_some() {
            assert!(!same_inode_other_birth.matches(&std::fs::metadata(&a).unwrap()));
        }
    }
}
