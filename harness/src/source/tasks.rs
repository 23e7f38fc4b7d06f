//! Alive tasks of a tokio runtime: a count (`RuntimeMetrics::num_alive_tasks`), and where the
//! runtime was built with `leakcheck::instrument` (`--cfg tokio_unstable`), each leaked task's
//! spawn site.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::resource::Resource;
use crate::source::{Item, Lingering, Reading, Source};

/// The alive tasks of one runtime (`RuntimeMetrics::num_alive_tasks`, stable since tokio 1.39).
pub(crate) struct Tasks {
    handle: tokio::runtime::Handle,
    /// Set when tasks leaked and the runtime gave no spawn sites: the report says how to get
    /// them.
    hint: AtomicBool,
    /// Whether waiting could let the leaked tasks go, found with the items: `Never` once a
    /// task's await point shows a wait no timer ends.
    lingering: Mutex<Lingering>,
}

impl Tasks {
    pub(crate) fn new(handle: tokio::runtime::Handle) -> Self {
        Tasks {
            handle,
            hint: AtomicBool::new(false),
            lingering: Mutex::new(Lingering::Unknown),
        }
    }
}

/// The one-line hint after a task leak on a runtime that records no spawn sites.
/// An async `#[leakcheck::test]` instruments its own runtime under the cfg, so there the cfg is
/// all it takes.
pub(crate) const HINT: &str = if cfg!(tokio_unstable) {
    "to see where the leaked tasks were spawned, build the runtime with \
     `leakcheck::instrument(&mut builder)`"
} else {
    "to see where the leaked tasks were spawned, build with RUSTFLAGS=\"--cfg tokio_unstable\" \
     (an async #[leakcheck::test] then instruments its own runtime; elsewhere, build the runtime \
     with `leakcheck::instrument(&mut builder)`)"
};

impl Source for Tasks {
    fn resource(&self) -> Resource {
        Resource::Tasks
    }

    fn read(&self) -> Reading {
        let count = self.handle.metrics().num_alive_tasks();
        #[cfg(tokio_unstable)]
        {
            Reading::Marked {
                count,
                mark: crate::origin::tasks::watermark(),
            }
        }
        #[cfg(not(tokio_unstable))]
        {
            Reading::Count(count)
        }
    }

    /// The tasks spawned after the baseline and still alive, by spawn site, where the runtime
    /// is instrumented.
    fn items(&self, b0: &Reading, _end: &Reading) -> Vec<Item> {
        #[cfg(tokio_unstable)]
        if let Reading::Marked { mark, .. } = b0 {
            if let Some(tasks) = crate::origin::tasks::spawned_since(&self.handle, *mark) {
                let (sites, lingering) = with_await_points(&self.handle, tasks);
                *self.lingering.lock().unwrap_or_else(|e| e.into_inner()) = lingering;
                return crate::group::exact(sites)
                    .into_iter()
                    .map(|item| Item {
                        label: String::new(),
                        count: item.count,
                        remark: None,
                        origin: Some(item.label),
                    })
                    .collect();
            }
        }
        let _ = b0;
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

    fn lingering(&self) -> Lingering {
        *self.lingering.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Each task's spawn site, followed by its await point where this build takes task dumps
/// (`spawned at src/svc.rs:31, awaiting at src/svc.rs:88 in
/// tokio::sync::mpsc::Receiver::recv`), or by why it was not taken; and `Lingering::Never`
/// when a task awaits only what no timer ends (else `Unknown`: a task's timers are not read).
#[cfg(tokio_unstable)]
fn with_await_points(
    handle: &tokio::runtime::Handle,
    tasks: Vec<(tokio::task::Id, String)>,
) -> (Vec<String>, Lingering) {
    #[cfg(task_dumps)]
    if !tasks.is_empty() {
        let points = crate::origin::dump::await_points(handle);
        let mut lingering = Lingering::Unknown;
        let sites = tasks
            .into_iter()
            .map(|(id, site)| {
                let point = match &points {
                    Ok(points) => match points.get(&id) {
                        Some(point) => {
                            if point.untimed {
                                lingering = Lingering::Never;
                            }
                            point.text.as_str()
                        }
                        None => {
                            "await point not taken: the task was running or scheduled during \
                             the dump"
                        }
                    },
                    Err(why) => why.as_str(),
                };
                format!("{site}, {point}")
            })
            .collect();
        return (sites, lingering);
    }
    let _ = handle;
    let sites = tasks.into_iter().map(|(_, site)| site).collect();
    (sites, Lingering::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LeakCheck;
    use std::time::Duration;

    fn leak_one_task(builder: &mut tokio::runtime::Builder) -> (crate::Report, u32) {
        let rt = builder.enable_all().build().unwrap();
        rt.block_on(async {
            let line = line!() + 5;
            let leak = LeakCheck::new()
                .tasks(&tokio::runtime::Handle::current())
                .settle(Duration::from_millis(50))
                .run_async(|| async {
                    tokio::spawn(std::future::pending::<()>());
                })
                .await
                .unwrap_err();
            (leak.report().clone(), line)
        })
    }

    #[test]
    fn a_task_leak_without_instrumentation_ends_with_the_hint() {
        let (report, _) = leak_one_task(&mut tokio::runtime::Builder::new_current_thread());
        assert_eq!(report.leaked(Resource::Tasks), 1, "{report}");
        assert!(report.notes().iter().any(|n| n == HINT), "{report}");
        assert!(report.to_string().contains("tokio_unstable") || cfg!(tokio_unstable));
        assert!(
            report.to_string().contains("leakcheck::instrument"),
            "{report}"
        );
    }

    #[cfg(tokio_unstable)]
    fn instrumented_task_leak_names_its_line(multi: bool) {
        let mut builder = if multi {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        let (report, line) = leak_one_task(crate::instrument(&mut builder));
        let mut site = format!("spawned at {}:{line}", file!());
        if cfg!(task_dumps) {
            // `std::future::pending` is no tokio resource: a dump sees no await point in it.
            site.push_str(", await point not taken: the task awaits nothing tokio traces");
        }
        assert_eq!(
            report.items(Resource::Tasks),
            &[(site.clone(), 1)],
            "{report}"
        );
        assert!(
            report.to_string().contains(&format!("×1   {site}")),
            "{report}"
        );
        assert!(!report.notes().iter().any(|n| n == HINT), "{report}");
    }

    #[cfg(tokio_unstable)]
    #[test]
    fn an_instrumented_current_thread_runtime_names_a_leaked_tasks_line() {
        instrumented_task_leak_names_its_line(false);
    }

    #[cfg(tokio_unstable)]
    #[test]
    fn an_instrumented_multi_thread_runtime_names_a_leaked_tasks_line() {
        instrumented_task_leak_names_its_line(true);
    }
}
