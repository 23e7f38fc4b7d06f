//! Counters of the user's own ([`LeakCheck::probe`](crate::LeakCheck::probe)): objects in a
//! registry, connections in a pool, entries in a cache, judged like the built-in resources.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::resource::Resource;
use crate::source::{Reading, Source};

/// A named counter. Cloning shares the closure.
#[derive(Clone)]
pub(crate) struct Probe {
    name: &'static str,
    count: Arc<dyn Fn() -> usize + Send + Sync>,
}

impl Probe {
    pub(crate) fn new(name: &'static str, count: Arc<dyn Fn() -> usize + Send + Sync>) -> Self {
        Probe { name, count }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe").field("name", &self.name).finish()
    }
}

impl Source for Probe {
    fn resource(&self) -> Resource {
        Resource::Custom(self.name)
    }

    /// Calls the counter; a panic in it fails the check with a message that names the probe.
    fn read(&self) -> Reading {
        match catch_unwind(AssertUnwindSafe(|| (self.count)())) {
            Ok(n) => Reading::Count(n),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".to_owned());
                Reading::Failed(format!("probe {:?} panicked: {msg}", self.name))
            }
        }
    }
}
