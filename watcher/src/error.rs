//! [`StartError`]: why [`Watcher::start`](crate::Watcher::start) failed, naming the directory or
//! file concerned.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a watcher could not start. Every variant names the directory or file it concerns.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// Another watcher, in this process or another, holds the directory: its lock file
    /// ([`LOCK_FILE`](crate::LOCK_FILE)) is locked until that watcher is closed or dropped.
    DirectoryLocked {
        /// The watched directory.
        dir: PathBuf,
    },
    /// A file-system operation failed: taking the lock, creating `processed/`/`failed/`, or
    /// opening or recovering the ledger.
    Io {
        /// What was being done, e.g. `"create directory"`.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error (for the ledger, its message names the exact file).
        source: std::io::Error,
    },
    /// notify could not watch the directory.
    Notify {
        /// The watched directory.
        dir: PathBuf,
        /// The underlying error.
        source: notify::Error,
    },
    /// The configured [`WatchService`](crate::WatchService) was closed.
    WatchServiceClosed {
        /// The watched directory.
        dir: PathBuf,
    },
    /// The metrics endpoint ([`Builder::metrics_addr`](crate::Builder::metrics_addr)) could not
    /// listen on its address (taken, or not an address of this host).
    MetricsAddr {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::DirectoryLocked { dir } => write!(
                f,
                "cannot start watcher: another watcher holds {} (its lock file {} is locked)",
                dir.display(),
                dir.join(crate::LOCK_FILE).display()
            ),
            StartError::Io { op, path, source } => {
                write!(
                    f,
                    "cannot start watcher: cannot {op} {}: {source}",
                    path.display()
                )
            }
            StartError::Notify { dir, source } => {
                write!(f, "cannot watch directory {}: {source}", dir.display())
            }
            StartError::WatchServiceClosed { dir } => write!(
                f,
                "cannot watch directory {}: the watch service is closed",
                dir.display()
            ),
            StartError::MetricsAddr { addr, source } => {
                write!(f, "cannot serve metrics on {addr}: {source}")
            }
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Io { source, .. } => Some(source),
            StartError::Notify { source, .. } => Some(source),
            StartError::MetricsAddr { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl StartError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StartError {
        let path = path.to_path_buf();
        move |source| StartError::Io { op, path, source }
    }
}
