//! Rough figures: create→close cycle time and close latency of a Watch-mode watcher, and the
//! time to process a burst of files.
//!
//! `cargo run --release -p watcher --example measure -- [CYCLES] [BURST]`
use std::time::{Duration, Instant};

use watcher::{processor, Mode, ProcessError, Watcher};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let cycles: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let burst: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let noop = || processor::from_fn(|_, _| async { Ok::<(), ProcessError>(()) });

    let dir = tempfile::tempdir().unwrap();
    let t_before = threads();
    let (mut cycle, mut close) = (Vec::new(), Vec::new());
    for _ in 0..cycles {
        let t0 = Instant::now();
        let w = Watcher::start(
            Watcher::builder(dir.path())
                .processor(noop())
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
        let t1 = Instant::now();
        let r = w.close().await;
        assert!(r.aborted.is_empty());
        close.push(t1.elapsed());
        cycle.push(t0.elapsed());
    }
    println!(
        "watch create->close x{cycles}: cycle p50 {:?} p99 {:?}; close p50 {:?} p99 {:?}; threads before {t_before} after {}",
        pct(&mut cycle, 0.5),
        pct(&mut cycle, 0.99),
        pct(&mut close, 0.5),
        pct(&mut close, 0.99),
        threads()
    );

    {
        let dir = tempfile::tempdir().unwrap();
        let w = Watcher::start(
            Watcher::builder(dir.path())
                .queue_capacity(64)
                .debounce(Duration::from_millis(10))
                .fsync(false)
                .processor(noop())
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
        let t0 = Instant::now();
        for i in 0..burst {
            std::fs::write(dir.path().join(format!("w{i}")), b"x").unwrap();
        }
        let ok = w
            .wait_for(|m| m.processed == burst as u64, Duration::from_secs(120))
            .await;
        let elapsed = t0.elapsed();
        let r = w.close().await;
        let m = w.metrics();
        println!(
            "watch burst of {burst} (fsync false): all done {ok} in {elapsed:?}, processed {}, backpressure waits {}, close {:?}, handed back {}",
            m.processed, m.backpressure_waits, r.total, r.handed_back.len()
        );
    }
    for fsync in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..burst {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        let t0 = Instant::now();
        let w = Watcher::start(
            Watcher::builder(dir.path())
                .mode(Mode::Once)
                .queue_capacity(64)
                .fsync(fsync)
                .processor(noop())
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
        w.finished().await;
        w.close().await;
        let m = w.metrics();
        println!(
            "once burst of {burst} (fsync {fsync}): {:?}, processed {}, backpressure waits {}, p50 latency <= {:?}",
            t0.elapsed(),
            m.processed,
            m.backpressure_waits,
            m.latency.quantile_bound(0.5)
        );
    }
}
