//! The heap: live blocks and bytes, counted by [`CountingAlloc`](crate::CountingAlloc).
//!
//! The heap is noisier than a thread count. A cache fills up and then stays flat;
//! epoch-based reclamation frees in batches (a saw-tooth that never trends up); a background
//! thread frees what it is handed a little later. Two settled end points cannot tell these
//! from a leak, so this source reads the heap after every measured cycle too, and judges the
//! trend of the lows: it splits the measured cycles into up to four segments of at least two
//! cycles, and leaks only when the lowest reading of every segment is above the one before (B0
//! first), as CPython's refleak hunter fails only when every run's delta is at least one. A
//! saw-tooth visits its low in every segment; a filled cache stops rising; a leak every other
//! cycle still rises across segments of two. The count itself is exact: blocks at the settled
//! end minus blocks at the settled baseline. Bytes are shown, not judged (a `Vec` grows in
//! bytes only when its capacity doubles).

use crate::alloc;
use crate::resource::Resource;
use crate::source::{halves, Judged, Reading, Series, Source, Unit};

/// Why the heap is not measured, and how to measure it.
const NOT_INSTALLED: &str = "leakcheck::CountingAlloc is not the global allocator";
const INSTALL: &str = "to count the heap, install the counting allocator in the test crate: \
     `#[global_allocator] static ALLOC: leakcheck::CountingAlloc = \
     leakcheck::CountingAlloc::new(std::alloc::System);`";

/// Segments the measured cycles are split into, at most.
const SEGMENTS: usize = 4;

pub(crate) struct Heap {
    /// A thread whose allocations are not the component's: libtest's main thread, when the
    /// check runs on a test thread (it registers and reports tests while this one runs).
    excluded: Option<u32>,
}

impl Heap {
    pub(crate) fn new() -> Self {
        Heap {
            excluded: super::heap_sites::excluded_thread(),
        }
    }
}

impl Source for Heap {
    fn resource(&self) -> Resource {
        Resource::Heap
    }

    fn read(&self) -> Reading {
        if !alloc::installed() {
            return Reading::Unsupported(NOT_INSTALLED);
        }
        let c = alloc::read_without(self.excluded);
        Reading::Heap {
            blocks: c.blocks,
            bytes: c.bytes,
        }
    }

    fn per_cycle(&self) -> bool {
        true
    }

    fn unit(&self) -> Unit {
        Unit::Blocks
    }

    fn notes(&self) -> Vec<String> {
        if alloc::installed() {
            Vec::new()
        } else {
            vec![INSTALL.to_owned()]
        }
    }

    fn judge(&self, series: &Series<'_>) -> Judged {
        trend(series)
    }
}

/// The segment-minima rule (see the module documentation); one cycle falls back to
/// end > base.
pub(crate) fn trend(s: &Series<'_>) -> Judged {
    let n = s.samples.len();
    if s.cycles < 2 || n != s.cycles {
        return halves(s);
    }
    // The settled readings belong to the cycles they ended: they are the lows a background
    // free comes back down to.
    let mut points = s.samples.to_vec();
    if let Some(b1) = s.b1 {
        points[n / 2 - 1] = points[n / 2 - 1].min(b1);
    }
    points[n - 1] = points[n - 1].min(s.end);
    let k = (n / 2).clamp(1, SEGMENTS);
    let lows = (0..k).map(|j| {
        points[j * n / k..(j + 1) * n / k]
            .iter()
            .copied()
            .min()
            .expect("segments are at least 2 cycles long")
    });
    // With one segment, its low is compared with the baseline; with more, the lows with each
    // other (a leak in the second cycle of the first segment leaves its low at the baseline).
    let rising = if k == 1 {
        lows.min().is_some_and(|low| low > s.base)
    } else {
        let lows: Vec<i64> = lows.collect();
        lows.windows(2).all(|w| w[1] > w[0])
    };
    let growth = s.end - s.base;
    Judged::new(rising && growth > 0, growth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Verdict;

    /// Judges per-cycle readings `samples` from baseline `base`, the settled readings being
    /// the samples at their cycles.
    fn judge(base: i64, samples: &[i64]) -> Judged {
        trend(&Series {
            base,
            b1: Some(samples[samples.len() / 2 - 1]),
            end: *samples.last().unwrap(),
            cycles: samples.len(),
            samples,
        })
    }

    #[test]
    fn frees_pending_on_a_background_thread_come_down_at_the_settled_points() {
        // Each cycle's buffer is freed later: up by one per cycle until a settle lets them go.
        let samples: Vec<i64> = (1..=20)
            .map(|c| 100 + if c <= 10 { c } else { c - 10 })
            .collect();
        let clean = trend(&Series {
            base: 100,
            b1: Some(100),
            end: 100,
            cycles: 20,
            samples: &samples,
        });
        assert_eq!(clean.verdict, Verdict::Clean);
        // The same with one block leaked per cycle: caught, counted from the settled points.
        let samples: Vec<i64> = samples.iter().zip(1..).map(|(s, c)| s + c).collect();
        let leak = trend(&Series {
            base: 100,
            b1: Some(110),
            end: 120,
            cycles: 20,
            samples: &samples,
        });
        assert_eq!(
            leak,
            Judged {
                verdict: Verdict::Leaking,
                growth: 20
            }
        );
    }

    #[test]
    fn steady_leak_is_leaking_and_counted_exactly() {
        let samples: Vec<i64> = (1..=20).map(|c| 100 + 3 * c).collect();
        assert_eq!(
            judge(100, &samples),
            Judged {
                verdict: Verdict::Leaking,
                growth: 60
            }
        );
    }

    #[test]
    fn leak_every_other_cycle_is_leaking() {
        for phase in 0..2 {
            let samples: Vec<i64> = (1..=8).map(|c| 100 + (c + phase) / 2).collect();
            assert_eq!(
                judge(100, &samples).verdict,
                Verdict::Leaking,
                "{samples:?}"
            );
        }
    }

    #[test]
    fn cache_that_fills_then_stays_flat_is_bounded() {
        let samples: Vec<i64> = (1..=20).map(|c| 100 + c.min(6)).collect();
        assert_eq!(judge(100, &samples).verdict, Verdict::Bounded);
    }

    #[test]
    fn saw_tooth_is_never_a_leak_at_any_phase() {
        // Grows by 1 per cycle and frees 4 at once every 4 cycles: it ends on a peak at some
        // phases, which two end points would call growth.
        for period in 2..=5 {
            for phase in 0..period {
                let samples: Vec<i64> = (1..=20).map(|c| 100 + (c + phase) % period).collect();
                let j = judge(100, &samples);
                assert_ne!(j.verdict, Verdict::Leaking, "{period} {phase}: {samples:?}");
            }
        }
    }

    #[test]
    fn one_cycle_is_end_above_base() {
        let j = trend(&Series {
            base: 10,
            b1: None,
            end: 11,
            cycles: 1,
            samples: &[11],
        });
        assert_eq!(j.verdict, Verdict::Leaking);
    }
}
