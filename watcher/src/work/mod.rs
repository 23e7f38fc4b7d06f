//! Work, the second stage: the bounded queue between intake and the workers, the workers that
//! take a file, process it (with retries) and commit it, and the checkpoints that make many
//! commits durable at once.
//!
//! Owns the queue and its claims ([`queue`]), the files each worker holds ([`worker`]), the
//! files moved but not yet synced ([`checkpoint`]), the reading of one inbox file
//! ([`read`]), the commands killed on an abort until reaped ([`child`]), and the ending, at
//! start, of the commands a crashed watcher left running ([`group_end`]). It may call
//! the durable store (the ledger, status records, recovery's interrupted names), the reports
//! (counters, progress, the `on_file` callback), the configuration, the processor and the
//! inbox's file names; never intake or the lifecycle.

pub(crate) mod checkpoint;
pub mod child;
pub(crate) mod group_end;
pub(crate) mod queue;
pub(crate) mod read;
pub(crate) mod worker;
