//! Alive tasks of a tokio runtime counted through a closure the test crate hands over
//! (`move || handle.metrics().num_alive_tasks()`, written by an async `#[leakcheck::test]`
//! against the test crate's own tokio), so that counting them needs no tokio in leakcheck.
//! Where leakcheck has its `tokio` feature, the attribute gives the runtime's handle instead
//! ([`Tasks`](super::Tasks)), which also names spawn sites under `--cfg tokio_unstable`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::resource::Resource;
use crate::source::{Item, Reading, Source};

/// A runtime's alive tasks, by the count the closure returns.
#[derive(Clone)]
pub(crate) struct TaskCount {
    count: Arc<dyn Fn() -> usize + Send + Sync>,
    /// Set when tasks leaked: the report says how to see their spawn sites.
    hint: Arc<AtomicBool>,
}

impl TaskCount {
    pub(crate) fn new(count: Arc<dyn Fn() -> usize + Send + Sync>) -> Self {
        TaskCount {
            count,
            hint: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl fmt::Debug for TaskCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaskCount")
    }
}

/// The hint after a task leak: spawn sites need tokio's unstable hooks, which leakcheck reads
/// only with its `tokio` feature.
pub(crate) const HINT: &str = "to see where the leaked tasks were spawned, enable leakcheck's \
     `tokio` feature and build with RUSTFLAGS=\"--cfg tokio_unstable\"";

impl Source for TaskCount {
    fn resource(&self) -> Resource {
        Resource::Tasks
    }

    fn read(&self) -> Reading {
        Reading::Count((self.count)())
    }

    fn items(&self, _b0: &Reading, _end: &Reading) -> Vec<Item> {
        self.hint.store(true, Ordering::Relaxed);
        Vec::new()
    }

    fn notes(&self) -> Vec<String> {
        if self.hint.load(Ordering::Relaxed) {
            vec![HINT.to_owned()]
        } else {
            Vec::new()
        }
    }
}
