//! The watcher's metrics in Prometheus form: a [`prometheus_client`] collector that reads the
//! watcher's own counters ([`crate::metrics`]) at scrape time, and one that reads the process's
//! figures from `/proc`.
//!
//! Why collectors and not prometheus-client's own `Counter`s: the counters already exist, and
//! [`Watcher::metrics`](crate::Watcher::metrics) reads them; keeping a second set in step would
//! count every event twice. A scrape takes the same snapshot `metrics()` returns and encodes it.
//!
//! The names are a contract:
//!
//! | name | type | from |
//! |---|---|---|
//! | `watcher_files_processed_total` | counter | [`Metrics::processed`] |
//! | `watcher_files_failed_total` | counter | [`Metrics::failed`] |
//! | `watcher_files_retried_total` | counter | [`Metrics::retried`] |
//! | `watcher_queue_depth` | gauge | [`Metrics::queue_depth`] |
//! | `watcher_files_in_flight` | gauge | [`Metrics::active_workers`] (files a worker holds now) |
//! | `watcher_processing_seconds` | histogram | [`Metrics::latency`] |
//! | `watcher_background_tasks_active{task="cleanup"}` | gauge | 1 while the ledger cleanup task is alive, else 0 |
//! | `watcher_background_tasks_active{task="file_state_cleanup"}` | gauge | the same for the debounce-state cleanup |
//! | `watcher_tasks_alive` | gauge | the runtime's alive tokio tasks (`RuntimeMetrics::num_alive_tasks`) |
//!
//! and, from [`ProcessCollector`] (Linux; the names Prometheus clients export by convention):
//! `process_threads`, `process_open_fds`, `process_max_fds`, `process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, `process_start_time_seconds`.
//!
//! [`Metrics::processed`]: crate::Metrics::processed
//! [`Metrics::failed`]: crate::Metrics::failed
//! [`Metrics::retried`]: crate::Metrics::retried
//! [`Metrics::queue_depth`]: crate::Metrics::queue_depth
//! [`Metrics::active_workers`]: crate::Metrics::active_workers
//! [`Metrics::latency`]: crate::Metrics::latency

use std::fmt;

/// The Prometheus client the watcher's collectors are written for: register them in a
/// [`prometheus_client::registry::Registry`] of this version.
pub use prometheus_client;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::runtime::Handle;

use crate::report::metrics::{Histogram, Metrics, LATENCY_BOUNDS};

/// The watcher's metrics, read at scrape time: the snapshot
/// [`Watcher::metrics`](crate::Watcher::metrics) returns (the counters and the queue's depth,
/// which the engine reads for it), and the runtime's alive tasks. Registered by
/// [`Watcher::register_metrics`](crate::Watcher::register_metrics).
pub(crate) struct WatcherCollector {
    snapshot: Box<dyn Fn() -> Metrics + Send + Sync>,
    rt: Handle,
}

impl fmt::Debug for WatcherCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatcherCollector").finish_non_exhaustive()
    }
}

impl WatcherCollector {
    pub(crate) fn new(snapshot: impl Fn() -> Metrics + Send + Sync + 'static, rt: Handle) -> Self {
        WatcherCollector {
            snapshot: Box::new(snapshot),
            rt,
        }
    }

    /// The snapshot [`crate::Watcher::metrics`] returns.
    pub(crate) fn snapshot(&self) -> Metrics {
        (self.snapshot)()
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn gauge_f64(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// `watcher_processing_seconds`: the latency histogram, its buckets in seconds.
fn latency(e: &mut DescriptorEncoder, latency: &Histogram) -> fmt::Result {
    let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
        .iter()
        .map(|b| b.as_secs_f64())
        .chain([f64::INFINITY])
        .zip(latency.counts.iter().copied())
        .collect();
    e.encode_descriptor(
        "watcher_processing_seconds",
        "Time from a file's in-flight record to its commit.",
        None,
        MetricType::Histogram,
    )?
    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        latency.sum.as_secs_f64(),
        latency.total(),
        &buckets,
        None,
    )
}

/// `watcher_background_tasks_active`, one gauge per routine, labelled by `task`.
fn background_tasks(e: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let mut family = e.encode_descriptor(
        "watcher_background_tasks_active",
        "1 while the background routine's task is alive, 0 once it has ended.",
        None,
        MetricType::Gauge,
    )?;
    for (task, running) in [
        ("cleanup", m.cleanup_running),
        ("file_state_cleanup", m.file_state_running),
    ] {
        let labels = [("task", task)];
        ConstGauge::new(i64::from(running)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for WatcherCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let m = self.snapshot();
        // prometheus-client appends `_total` to a counter's name.
        counter(
            &mut e,
            "watcher_files_processed",
            "Files moved to processed/.",
            m.processed,
        )?;
        counter(
            &mut e,
            "watcher_files_failed",
            "Files moved to failed/.",
            m.failed,
        )?;
        counter(
            &mut e,
            "watcher_files_retried",
            "Retries of a file's processing (attempts after the first).",
            m.retried,
        )?;
        gauge(
            &mut e,
            "watcher_queue_depth",
            "Files waiting in the queue for a worker.",
            int(m.queue_depth),
        )?;
        gauge(
            &mut e,
            "watcher_files_in_flight",
            "Files a worker is processing now.",
            int(m.active_workers),
        )?;
        latency(&mut e, &m.latency)?;
        background_tasks(&mut e, &m)?;
        gauge(
            &mut e,
            "watcher_tasks_alive",
            "Alive tokio tasks of the watcher's runtime (all of them, not only the watcher's).",
            int(self.rt.metrics().num_alive_tasks() as u64),
        )
    }
}

/// The process's own figures, read from `/proc/self` at every scrape (Linux; elsewhere it
/// encodes nothing): `process_threads`, `process_open_fds`, `process_max_fds`,
/// `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_start_time_seconds`,
/// the names Prometheus clients conventionally export.
///
/// The watcher's own endpoint (`Builder::metrics_addr`) includes it. An application that
/// registers the watcher's metrics in its own registry adds it only if nothing else there
/// exports the process metrics already (two would clash):
///
/// ```
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::default();
/// registry.register_collector(Box::new(watcher::exposition::ProcessCollector));
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// # #[cfg(target_os = "linux")]
/// assert!(text.contains("\nprocess_threads "), "{text}");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    #[cfg(target_os = "linux")]
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let Some(p) = proc_self::read() else {
            return Ok(()); // /proc is not mounted: nothing to say
        };
        gauge(
            &mut e,
            "process_threads",
            "OS threads of the process.",
            int(p.threads),
        )?;
        gauge(
            &mut e,
            "process_open_fds",
            "Open file descriptors (not counting the one that lists them).",
            int(p.open_fds),
        )?;
        gauge(
            &mut e,
            "process_max_fds",
            "The soft limit on open file descriptors.",
            int(p.max_fds),
        )?;
        gauge(
            &mut e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            int(p.resident_bytes),
        )?;
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(e.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        gauge_f64(
            &mut e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            p.start_time_seconds,
        )
    }

    #[cfg(not(target_os = "linux"))]
    fn encode(&self, _: DescriptorEncoder) -> fmt::Result {
        Ok(())
    }
}

/// The text of `registry` in the Prometheus text exposition format (version 0.0.4), as the
/// watcher's endpoint serves it (content type [`CONTENT_TYPE`]).
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail, and the collectors above return errors only from it.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, registry);
    text
}

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(target_os = "linux")]
mod proc_self {
    /// One reading of `/proc/self`.
    pub(super) struct ProcSelf {
        pub threads: u64,
        pub open_fds: u64,
        pub max_fds: u64,
        pub resident_bytes: u64,
        pub cpu_seconds: f64,
        pub start_time_seconds: f64,
    }

    pub(super) fn read() -> Option<ProcSelf> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, which is in parentheses and may hold anything.
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // `man 5 proc`: field N (1-based) is f[N - 3].
        let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        // SAFETY: sysconf and getrlimit only read system values into the given places.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
        let page = u64::try_from(page).unwrap_or(4096);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
            let cur = lim.rlim_cur as u64;
            cur
        } else {
            0
        };
        // The directory listing holds an fd of its own while it runs: not counted.
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        Some(ProcSelf {
            threads: field(20)?,
            open_fds: open_fds.saturating_sub(1),
            max_fds,
            resident_bytes: field(24)? * page,
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            start_time_seconds: boot as f64 + field(22)? as f64 / ticks,
        })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn reads_this_process() {
            let p = super::read().expect("/proc/self is readable");
            let tasks = std::fs::read_dir("/proc/self/task").unwrap().count() as u64;
            assert!(p.threads >= 1 && p.threads <= tasks + 8, "{}", p.threads);
            assert!(p.open_fds >= 3 && p.open_fds < p.max_fds);
            assert!(p.resident_bytes > 1 << 20);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0);
        }
    }
}
