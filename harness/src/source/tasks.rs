//! Alive tasks of a tokio runtime: a bare count (tokio gives a task no identity we can see
//! without `tokio_unstable`).

use crate::resource::Resource;
use crate::source::{Reading, Source};

/// The alive tasks of one runtime (`RuntimeMetrics::num_alive_tasks`, stable since tokio 1.39).
pub(crate) struct Tasks {
    handle: tokio::runtime::Handle,
}

impl Tasks {
    pub(crate) fn new(handle: tokio::runtime::Handle) -> Self {
        Tasks { handle }
    }
}

impl Source for Tasks {
    fn resource(&self) -> Resource {
        Resource::Tasks
    }

    fn read(&self) -> Reading {
        Reading::Count(self.handle.metrics().num_alive_tasks())
    }
}
