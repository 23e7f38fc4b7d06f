//! A running watcher's memory is bounded by what is in flight, not by how many files have gone
//! through it: the harness counts the live heap blocks of the whole process (`CountingAlloc` is
//! this binary's global allocator) while each cycle drops a batch of files into a watcher
//! started once, in watch mode, and waits until the batch is processed. The heap must be flat
//! across cycles. (Before the ledger dropped its `done` entries from memory, this check failed
//! with about one block per file.)
#![cfg(target_os = "linux")]

#[global_allocator]
static ALLOC: leakcheck::CountingAlloc = leakcheck::CountingAlloc::new(std::alloc::System);

use std::path::Path;
use std::time::Duration;

use leakcheck::{LeakCheck, Resource, Verdict};
use watcher::{processor, Mode, Watcher};

/// Files per cycle: enough that one block per file stands far above any noise.
const BATCH: usize = 64;

fn config(dir: &Path) -> watcher::Builder {
    Watcher::builder(dir)
        .mode(Mode::Watch)
        .workers(2)
        .debounce(Duration::from_millis(10))
        .file_state_cleanup_every(Duration::from_millis(20))
        .fsync(false)
        .processor(processor::from_fn(|_, _: Vec<u8>| async { Ok(()) }))
}

/// Drops `BATCH` files named after `cycle` into `dir` and waits until the watcher has
/// processed them all (`total` files so far).
async fn batch(w: &Watcher, dir: &Path, cycle: usize, total: u64) {
    for i in 0..BATCH {
        let name = format!("c{cycle:03}-{i:03}.txt");
        std::fs::write(dir.join(name), b"payload").unwrap();
    }
    let done = |m: &watcher::Metrics| m.processed >= total;
    assert!(
        w.wait_for(done, Duration::from_secs(30)).await,
        "cycle {cycle}: {:?}",
        w.metrics()
    );
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_heap_is_flat_however_many_files_went_through() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let w = Watcher::start(config(&d).build().unwrap()).await.unwrap();
    let mut cycle = 0;
    let result = LeakCheck::new()
        .heap()
        .cycles(12)
        .warmup(3)
        .settle(Duration::from_secs(2))
        // The runtime's workers and its blocking pool (which reads the inbox files).
        .ignore_thread("tokio-rt-worker")
        .run_async(|| {
            cycle += 1;
            let total = (cycle * BATCH) as u64;
            let (w, d) = (&w, &d);
            async move { batch(w, d, cycle, total).await }
        })
        .await;
    let shutdown = w.close().await;
    assert!(shutdown.aborted.is_empty(), "{shutdown}");
    assert_eq!(w.metrics().processed, (cycle * BATCH) as u64);
    let report = result.unwrap_or_else(|leak| panic!("{leak}"));
    // Flat: back to the baseline, or a block or two above it that stopped growing (a buffer
    // that reached its size), never rising with the files.
    assert!(
        matches!(
            report.verdict(Resource::Heap),
            Some(Verdict::Clean | Verdict::Bounded)
        ),
        "{report}"
    );
}
