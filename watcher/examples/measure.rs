//! Rough figures: create→close cycle time and close latency of a Watch-mode watcher, with its
//! own notify instance and with a shared `WatchService`, and the time to process a burst of
//! files.
//!
//! `cargo run --release -p watcher --example measure -- [CYCLES] [BURST]`
use std::path::Path;
use std::time::{Duration, Instant};

use watcher::{processor, Mode, ProcessError, WatchService, Watcher};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

/// `cycles` create→close cycles of a Watch-mode watcher of `dir`; prints cycle and close times.
async fn watch_cycles(label: &str, dir: &Path, service: Option<&WatchService>, cycles: usize) {
    let noop = || processor::from_fn(|_, _| async { Ok::<(), ProcessError>(()) });
    let t_before = threads();
    let (mut cycle, mut close, mut intake) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..cycles {
        let t0 = Instant::now();
        // No fsync: the ledger's fsyncs at close (~15 ms here) would hide the difference.
        let mut b = Watcher::builder(dir).fsync(false).processor(noop());
        if let Some(s) = service {
            b = b.watch_service(s);
        }
        let w = Watcher::start(b.build().unwrap()).await.unwrap();
        let t1 = Instant::now();
        let r = w.close().await;
        assert!(r.aborted.is_empty());
        close.push(t1.elapsed());
        cycle.push(t0.elapsed());
        intake.push(r.stages[0].1);
    }
    println!(
        "watch create->close x{cycles} ({label}, fsync false): cycle p50 {:?} p99 {:?}; close p50 {:?} p99 {:?}; intake stage p50 {:?} p99 {:?}; threads before {t_before} after {}",
        pct(&mut cycle, 0.5),
        pct(&mut cycle, 0.99),
        pct(&mut close, 0.5),
        pct(&mut close, 0.99),
        pct(&mut intake, 0.5),
        pct(&mut intake, 0.99),
        threads()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let cycles: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let burst: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let noop = || processor::from_fn(|_, _| async { Ok::<(), ProcessError>(()) });

    let dir = tempfile::tempdir().unwrap();
    watch_cycles("own notify instance", dir.path(), None, cycles).await;
    let service = WatchService::new().unwrap();
    watch_cycles("shared WatchService", dir.path(), Some(&service), cycles).await;
    let t0 = Instant::now();
    service.close().await;
    println!("WatchService close: {:?}", t0.elapsed());

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
