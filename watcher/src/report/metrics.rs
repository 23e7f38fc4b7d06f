//! Counters kept by the watcher, and the [`Metrics`] snapshot returned by
//! [`crate::Watcher::metrics`]. They are the one source of truth: the Prometheus exposition
//! ([`crate::exposition`]) reads the same snapshot at scrape time and counts nothing itself.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::store::status::Outcome;

/// Upper bounds of the latency histogram buckets (the last bucket is unbounded).
pub const LATENCY_BOUNDS: [Duration; 12] = [
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(20),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

/// A point-in-time copy of the watcher's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Files handed to the queue.
    pub queued: u64,
    /// Files moved to `processed/`.
    pub processed: u64,
    /// Files moved to `failed/`.
    pub failed: u64,
    /// Retries (attempts after the first).
    pub retried: u64,
    /// Times intake found the queue full and had to wait.
    pub backpressure_waits: u64,
    /// Files in the queue now.
    pub queue_depth: u64,
    /// Workers processing a file now.
    pub active_workers: u64,
    /// Processing latency (ledger `in_flight` to commit) per file.
    pub latency: Histogram,
    /// Runs of the ledger cleanup routine ("cleanup").
    pub cleanup_runs: u64,
    /// Runs of the debounce-state cleanup routine ("file-state").
    pub file_state_runs: u64,
    /// Whether the ledger cleanup routine's task is alive now (spawned and not yet ended).
    pub cleanup_running: bool,
    /// Whether the debounce-state cleanup routine's task is alive now.
    pub file_state_running: bool,
}

impl Metrics {
    /// Files finished (processed or failed).
    pub fn finished(&self) -> u64 {
        self.processed + self.failed
    }
}

/// A latency histogram: `counts[i]` files took at most `LATENCY_BOUNDS[i]` (and more than the
/// previous bound); the last count is for longer ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// One count per bucket: `LATENCY_BOUNDS.len() + 1` of them.
    pub counts: Vec<u64>,
    /// The sum of all samples.
    pub sum: Duration,
}

impl Histogram {
    /// Total number of samples.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
    /// The bucket bound at or under which `q` (0..=1) of the samples lie; `None` if empty or
    /// in the unbounded bucket.
    pub fn quantile_bound(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return LATENCY_BOUNDS.get(i).copied();
            }
        }
        None
    }
}

/// The counters of the workers and the background routines (the queue keeps its own: see
/// [`crate::work::queue`]). Each is changed by one method, named after the event it counts.
#[derive(Default)]
pub(crate) struct Counters {
    processed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    active_workers: AtomicI64,
    cleanup_runs: AtomicU64,
    file_state_runs: AtomicU64,
    cleanup_running: AtomicBool,
    file_state_running: AtomicBool,
    latency: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_nanos: AtomicU64,
}

/// The two background routines, as the running gauges name them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Routine {
    /// "cleanup": compacts the ledger's journal into its snapshot.
    Cleanup,
    /// "file-state": prunes intake's debounce state.
    FileState,
}

/// Held by a routine's task from its spawn until it ends (or is aborted and dropped): the
/// routine counts as running exactly that long.
pub(crate) struct Running {
    counters: Arc<Counters>,
    routine: Routine,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.counters.flag(self.routine).store(false, Relaxed);
    }
}

impl Counters {
    /// A worker took a file.
    pub fn worker_busy(&self) {
        self.active_workers.fetch_add(1, Relaxed);
    }

    /// A worker is done with its file.
    pub fn worker_idle(&self) {
        self.active_workers.fetch_sub(1, Relaxed);
    }

    /// A file was committed with `outcome`, `latency` after it was recorded in flight.
    pub fn committed(&self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Processed => self.processed.fetch_add(1, Relaxed),
            Outcome::Failed => self.failed.fetch_add(1, Relaxed),
        };
        self.record_latency(latency);
    }

    /// A processor call is about to be retried.
    pub fn retried(&self) {
        self.retried.fetch_add(1, Relaxed);
    }

    /// The ledger cleanup routine ran.
    pub fn cleanup_ran(&self) {
        self.cleanup_runs.fetch_add(1, Relaxed);
    }

    /// The debounce-state cleanup routine ran.
    pub fn file_state_ran(&self) {
        self.file_state_runs.fetch_add(1, Relaxed);
    }

    /// `routine`'s task was spawned; it counts as running until the returned guard is dropped.
    pub fn routine_started(self: &Arc<Self>, routine: Routine) -> Running {
        self.flag(routine).store(true, Relaxed);
        Running {
            counters: self.clone(),
            routine,
        }
    }

    fn flag(&self, routine: Routine) -> &AtomicBool {
        match routine {
            Routine::Cleanup => &self.cleanup_running,
            Routine::FileState => &self.file_state_running,
        }
    }

    fn record_latency(&self, d: Duration) {
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| d <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.latency[i].fetch_add(1, Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// A snapshot of these counters; the queue's fields are left at zero (see
    /// [`crate::work::queue::WorkQueue::fill_metrics`]).
    pub fn snapshot(&self) -> Metrics {
        Metrics {
            processed: self.processed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            retried: self.retried.load(Relaxed),
            active_workers: self.active_workers.load(Relaxed).max(0) as u64,
            latency: Histogram {
                counts: self.latency.iter().map(|c| c.load(Relaxed)).collect(),
                sum: Duration::from_nanos(self.latency_sum_nanos.load(Relaxed)),
            },
            cleanup_runs: self.cleanup_runs.load(Relaxed),
            file_state_runs: self.file_state_runs.load(Relaxed),
            cleanup_running: self.cleanup_running.load(Relaxed),
            file_state_running: self.file_state_running.load(Relaxed),
            ..Metrics::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let c = Counters::default();
        c.record_latency(Duration::from_micros(500));
        c.record_latency(Duration::from_millis(3));
        c.record_latency(Duration::from_secs(60));
        let m = c.snapshot();
        assert_eq!(m.latency.total(), 3);
        assert_eq!(m.latency.counts[0], 1);
        assert_eq!(m.latency.counts[2], 1);
        assert_eq!(*m.latency.counts.last().unwrap(), 1);
        assert_eq!(m.latency.sum, Duration::from_micros(60_003_500));
        assert_eq!(
            m.latency.quantile_bound(0.5),
            Some(Duration::from_millis(5))
        );
        assert_eq!(m.latency.quantile_bound(1.0), None);
    }

    #[test]
    fn a_routine_runs_while_its_guard_lives() {
        let c = Arc::new(Counters::default());
        assert!(!c.snapshot().cleanup_running);
        let g = c.routine_started(Routine::Cleanup);
        let m = c.snapshot();
        assert!(m.cleanup_running && !m.file_state_running);
        drop(g);
        assert!(!c.snapshot().cleanup_running);
    }
}
