//! Intake, the first stage: finds the inbox's files (notify events, periodic scans, or one
//! scan), waits until each is stable, and feeds the work queue, waiting when it is full.
//!
//! Owns the event source and its teardown ([`events`], over a notify instance of the watcher's
//! own or a subscription to the shared [`service`](crate::service)), and the debounce state
//! ([`FileState`], over [`debounce`]). It may call the work queue's sending half
//! ([`Inlet`](crate::work::queue::Inlet)), the configuration, the shared service and the
//! inbox's file names; it knows nothing of the workers, the store or the close (the
//! [`Unwatcher`](events::Unwatcher) it hands out is run by the lifecycle's tasks).

pub(crate) mod debounce;
pub(crate) mod events;
mod feed;

pub(crate) use feed::{FileState, Intake};
