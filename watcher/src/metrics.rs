//! Counters kept by the watcher, and the [`Metrics`] snapshot returned by
//! [`crate::Watcher::metrics`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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

#[derive(Default)]
pub(crate) struct Counters {
    pub queued: AtomicU64,
    pub processed: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub backpressure_waits: AtomicU64,
    pub queue_depth: AtomicI64,
    pub active_workers: AtomicI64,
    pub cleanup_runs: AtomicU64,
    pub file_state_runs: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS.len() + 1],
}

impl Counters {
    pub fn record_latency(&self, d: Duration) {
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| d <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.latency[i].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> Metrics {
        Metrics {
            queued: self.queued.load(Relaxed),
            processed: self.processed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            retried: self.retried.load(Relaxed),
            backpressure_waits: self.backpressure_waits.load(Relaxed),
            queue_depth: self.queue_depth.load(Relaxed).max(0) as u64,
            active_workers: self.active_workers.load(Relaxed).max(0) as u64,
            latency: Histogram {
                counts: self.latency.iter().map(|c| c.load(Relaxed)).collect(),
            },
            cleanup_runs: self.cleanup_runs.load(Relaxed),
            file_state_runs: self.file_state_runs.load(Relaxed),
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
        assert_eq!(
            m.latency.quantile_bound(0.5),
            Some(Duration::from_millis(5))
        );
        assert_eq!(m.latency.quantile_bound(1.0), None);
    }
}
