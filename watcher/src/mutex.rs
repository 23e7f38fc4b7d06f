//! [`lock`]: the one way the watcher takes a `std` mutex.
//!
//! A poisoned mutex is used as it is: every critical section in the watcher completes its update
//! before it can panic (or cannot panic at all), so a panic elsewhere (in a processor, say) never
//! leaves the data behind a lock half-changed, and close must still run after one.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning (see the module docs).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
