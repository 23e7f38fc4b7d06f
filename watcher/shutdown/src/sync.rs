//! The one place where loom's types replace std's (`--cfg loom`).
//!
//! Every piece of state shared between tasks goes through these re-exports, so that a loom
//! model sees (and permutes) every access to it.
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
