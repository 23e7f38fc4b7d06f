//! The durable store: what survives a crash. The ledger and its journal, the shared sync of
//! that journal (group commit), the status records and the commit order, the recovery of a
//! crash's in-flight entries at start, the process groups of the commands that are running
//! (for the start after a crash to end them), and the file-system steps they share (atomic
//! write, directory fsync, which file a name stood for).
//!
//! Owns every file the watcher writes in the watched directory but the lock file. It may call
//! only the inbox's file names and the mutex helper (recovery takes the directory and the
//! fsync setting, not the configuration): the workers, the checkpoints, the lifecycle and the
//! reports call it, never the other way round, so the crash-safety argument can be read here
//! alone.

pub(crate) mod disk;
pub(crate) mod group_sync;
pub(crate) mod groups;
pub(crate) mod identity;
pub mod ledger;
pub(crate) mod recovery;
pub mod status;
