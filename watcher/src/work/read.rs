//! Reading one inbox file for its processor, so that no file can block the watcher.
//!
//! Anyone who can write to the inbox can drop a FIFO there (opening it for reading blocks until
//! a writer comes), a socket, a device, or a symlink to any of them; and on a slow or hung
//! filesystem even a regular file's `open` or `read` can take as long as it likes. So:
//! - the whole check-and-read runs on tokio's blocking pool, never on a runtime thread: a read
//!   that hangs holds up its own worker only, not intake, the other workers or a close (whose
//!   budget then aborts that worker);
//! - the file type is checked (`stat`, following a symlink that stays inside the inbox) before
//!   anything is opened: what is not a regular file fails with a reason naming what it is, and
//!   is never opened;
//! - the open is non-blocking (`O_NONBLOCK`), and the opened file is checked again (`fstat`),
//!   in case it was swapped for something else between the check and the open.

use std::fs::{File, FileType, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads the inbox file `path` (in the canonical inbox `dir`), refusing a symlink out of `dir`,
/// anything that is not a regular file, and a file over `max` bytes; the error says why.
pub(crate) async fn read(path: &Path, dir: &Path, max: u64) -> Result<Vec<u8>, String> {
    let (path, dir) = (path.to_path_buf(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || read_blocking(&path, &dir, max))
        .await
        .unwrap_or_else(|e| Err(format!("cannot read file: {e}")))
}

/// The checks of [`read`] without the read, from the file's metadata alone (it is not opened,
/// so it cannot block on a FIFO): for a processor that does not read the contents.
pub(crate) fn check(path: &Path, dir: &Path, max: u64) -> Result<(), String> {
    let meta = checked_metadata(path, dir)?;
    if meta.len() > max {
        return Err(too_large(meta.len(), max));
    }
    Ok(())
}

/// The metadata of `path` (of its target, for a symlink that stays inside `dir`), if it is a
/// regular file.
fn checked_metadata(path: &Path, dir: &Path) -> Result<Metadata, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot stat file: {e}"))?;
    let meta = if meta.file_type().is_symlink() {
        let target = inside(path, dir)?;
        std::fs::metadata(&target).map_err(|e| format!("cannot stat file: {e}"))?
    } else {
        meta
    };
    regular(&meta)?;
    Ok(meta)
}

fn read_blocking(path: &Path, dir: &Path, max: u64) -> Result<Vec<u8>, String> {
    checked_metadata(path, dir)?;
    let f = open_nonblocking(path).map_err(|e| format!("cannot open file: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot stat file: {e}"))?;
    regular(&meta)?;
    read_bounded(f, meta.len(), max)
}

/// The target of the symlink `path`, if it stays inside `dir`.
fn inside(path: &Path, dir: &Path) -> Result<PathBuf, String> {
    match std::fs::canonicalize(path) {
        Ok(target) if target.starts_with(dir) => Ok(target),
        Ok(target) => Err(format!(
            "refused: symlink points outside the watched directory (to {})",
            target.display()
        )),
        Err(e) => Err(format!("refused: dangling symlink: {e}")),
    }
}

fn regular(meta: &Metadata) -> Result<(), String> {
    if meta.is_file() {
        return Ok(());
    }
    Err(format!(
        "refused: not a regular file ({})",
        kind(meta.file_type())
    ))
}

/// What a file that is not a regular file is, in words.
fn kind(t: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "an unknown kind of file"
    }
}

fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_NONBLOCK);
    o.open(path)
}

/// Reads `f` (whose size was `len`), refusing, without reading it whole, one over `max` bytes.
fn read_bounded(f: File, len: u64, max: u64) -> Result<Vec<u8>, String> {
    if len > max {
        return Err(too_large(len, max));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read file: {e}"))?;
    if buf.len() as u64 > max {
        return Err(too_large(buf.len() as u64, max));
    }
    Ok(buf)
}

fn too_large(len: u64, max: u64) -> String {
    format!("file too large: {len} bytes exceeds max_file_size of {max} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_tempdir() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let c = std::fs::canonicalize(d.path()).unwrap();
        (d, c)
    }

    #[test]
    fn refuses_big_files() {
        let (_d, dir) = canonical_tempdir();
        let p = dir.join("f");
        std::fs::write(&p, vec![0u8; 100]).unwrap();
        assert_eq!(read_blocking(&p, &dir, 100).unwrap().len(), 100);
        let e = read_blocking(&p, &dir, 99).unwrap_err();
        assert_eq!(
            e,
            "file too large: 100 bytes exceeds max_file_size of 99 bytes"
        );
    }

    /// The check without the read refuses what the read refuses, with the same words, and
    /// passes what it passes.
    #[cfg(unix)]
    #[test]
    fn check_refuses_what_read_refuses_without_opening() {
        let (_d, dir) = canonical_tempdir();
        let (outside_dir, outside) = canonical_tempdir();
        let big = dir.join("big");
        std::fs::write(&big, vec![0u8; 100]).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        std::fs::write(outside.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.join("f"), dir.join("out")).unwrap();
        std::os::unix::fs::symlink(&big, dir.join("in")).unwrap();
        for (p, max) in [
            (&big, 100),
            (&big, 99),
            (&fifo, 100),
            (&dir.join("out"), 100),
        ] {
            let read = read_blocking(p, &dir, max).map(|_| ());
            assert_eq!(check(p, &dir, max), read, "{}", p.display());
        }
        assert_eq!(check(&dir.join("in"), &dir, 100), Ok(()));
        assert!(check(&fifo, &dir, 100).unwrap_err().contains("a FIFO"));
        assert!(check(&big, &dir, 99).unwrap_err().contains("too large"));
        drop(outside_dir);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_special_files_without_opening_them() {
        let (_d, dir) = canonical_tempdir();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // Opening it for reading would block this test forever.
        assert_eq!(
            read_blocking(&fifo, &dir, 100).unwrap_err(),
            "refused: not a regular file (a FIFO)"
        );
        std::os::unix::fs::symlink(&fifo, dir.join("link")).unwrap();
        assert_eq!(
            read_blocking(&dir.join("link"), &dir, 100).unwrap_err(),
            "refused: not a regular file (a FIFO)"
        );
        assert_eq!(
            read_blocking(Path::new("/dev/null"), Path::new("/dev"), 100).unwrap_err(),
            "refused: not a regular file (a character device)"
        );
        std::fs::create_dir(dir.join("sub")).unwrap();
        assert_eq!(
            read_blocking(&dir.join("sub"), &dir, 100).unwrap_err(),
            "refused: not a regular file (a directory)"
        );
    }
}
