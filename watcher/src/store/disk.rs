//! File helpers shared by the ledger, the workers, recovery and the directory lock: an atomic
//! write (temp file, fsync, rename, fsync of the directory), a directory fsync, and I/O errors
//! that name the operation and the path.
//!
//! Why here and not in the ledger: the commit order of one file (see [`crate::store::status`]) uses the
//! same atomic write for its status record as the ledger uses for its snapshot, and every error
//! a user sees must name the file it concerns, whichever module hit it.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `dir/name` atomically: a temp file `dir/.watcher-tmp-<name>.tmp`, fsync, rename,
/// fsync of the directory.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let tmp = write_temp(dir, name, None, bytes, fsync)?;
    rename_into_place(&tmp, &dir.join(name))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The first half of an atomic write of `dir/name`: `bytes` written to a temp file
/// `dir/.watcher-tmp-<name>[.<tag>].tmp` (fsynced when `fsync`), whose path is returned for
/// [`rename_into_place`]. A `tag` (a worker passes its run id) keeps the temp file its own, even
/// beside a write of an aborted run still finishing on the blocking pool. Creating a file
/// allocates an inode, which can be slow (see `BENCHMARKS.md`): a worker runs this off the
/// runtime thread.
pub(crate) fn write_temp(
    dir: &Path,
    name: &str,
    tag: Option<u64>,
    bytes: &[u8],
    fsync: bool,
) -> io::Result<PathBuf> {
    let tmp = dir.join(crate::names::temp_name(name, tag));
    let mut f = File::create(&tmp).map_err(at("create", &tmp))?;
    f.write_all(bytes).map_err(at("write", &tmp))?;
    if fsync {
        f.sync_all().map_err(at("sync", &tmp))?;
    }
    Ok(tmp)
}

/// Renames the temp file `tmp` to `dest`; the error names both.
pub(crate) fn rename_into_place(tmp: &Path, dest: &Path) -> io::Result<()> {
    std::fs::rename(tmp, dest).map_err(|e| {
        let what = format!("rename {} to", tmp.display());
        io::Error::new(e.kind(), PathError::new(what, dest, e))
    })
}

/// fsyncs a directory, making renames in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at("sync directory", dir))
}

/// An I/O error with the operation and the path it concerned (`"{op} {path}: {source}"`).
/// Wrapped in an [`io::Error`] of the same kind, so callers still match on the kind.
#[derive(Debug)]
pub(crate) struct PathError {
    op: String,
    path: PathBuf,
    source: io::Error,
}

impl PathError {
    pub fn new(op: impl Into<String>, path: &Path, source: io::Error) -> Self {
        PathError {
            op: op.into(),
            path: path.to_path_buf(),
            source,
        }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.op,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `map_err` adapter: names `op` and `path` in an I/O error, keeping its kind.
pub(crate) fn at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), PathError::new(op, path, e))
}
