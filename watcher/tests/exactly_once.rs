//! Exactly once under load: 2,000 files dropped while the watcher runs, some invalid for the
//! processor and some oversized, with a close and a restart midway. At the end every file is
//! in exactly one of `processed/` or `failed/` with its status; none is lost, none processed
//! twice.
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serial_test::serial;
use watcher::{processor, Mode, ProcessError, Watcher};

const FILES: usize = 2000;
const MAX_SIZE: u64 = 1024;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Valid,
    Invalid,
    Oversized,
}

fn kind(i: usize) -> Kind {
    match (i % 25, i % 10) {
        (7, _) => Kind::Oversized,
        (_, 3) => Kind::Invalid,
        _ => Kind::Valid,
    }
}

fn name(i: usize) -> String {
    format!("f{i:04}.txt")
}

fn drop_files(dir: &Path, range: std::ops::Range<usize>) {
    for i in range {
        let body: Vec<u8> = match kind(i) {
            Kind::Valid => format!("payload {i}").into_bytes(),
            Kind::Invalid => format!("invalid {i}").into_bytes(),
            Kind::Oversized => vec![b'x'; 2 * MAX_SIZE as usize],
        };
        std::fs::write(dir.join(name(i)), body).unwrap();
    }
}

type Calls = Arc<Mutex<HashMap<String, usize>>>;

fn start_config(dir: &Path, calls: &Calls) -> watcher::Config {
    let calls = calls.clone();
    Watcher::builder(dir)
        .mode(Mode::Watch)
        .workers(4)
        .debounce(Duration::from_millis(20))
        .max_file_size(MAX_SIZE)
        .queue_capacity(64)
        .processor(processor::from_fn(move |path, bytes: Vec<u8>| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            *calls.lock().unwrap().entry(file).or_default() += 1;
            async move {
                if bytes.starts_with(b"invalid") {
                    Err(ProcessError::permanent("invalid contents"))
                } else {
                    Ok(())
                }
            }
        }))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn two_thousand_files_with_a_restart_midway_are_each_handled_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let calls: Calls = Default::default();

    // First run: half the files arrive while it runs; close it while work is still queued.
    let first = Watcher::start(start_config(dir, &calls)).await.unwrap();
    drop_files(dir, 0..FILES / 2);
    assert!(
        first
            .wait_for(|m| m.finished() >= 200, Duration::from_secs(60))
            .await,
        "{:?}",
        first.metrics()
    );
    let shutdown = first.close().await;
    assert!(shutdown.aborted.is_empty(), "{shutdown}");
    let done_first = first.metrics().finished();

    // Second run: picks up what the first handed back, and the rest arrives while it runs.
    let second = Watcher::start(start_config(dir, &calls)).await.unwrap();
    drop_files(dir, FILES / 2..FILES);
    let all = FILES as u64;
    assert!(
        second
            .wait_for(
                |m| done_first + m.finished() >= all,
                Duration::from_secs(120)
            )
            .await,
        "first run finished {done_first}, second {:?}",
        second.metrics()
    );
    second.close().await;
    assert_eq!(
        done_first + second.metrics().finished(),
        all,
        "a file was handled twice"
    );

    let calls = calls.lock().unwrap();
    for i in 0..FILES {
        let n = name(i);
        let processed = dir.join("processed").join(&n);
        let failed = dir.join("failed").join(&n);
        assert!(!dir.join(&n).exists(), "{n} left in the inbox");
        assert!(
            processed.exists() != failed.exists(),
            "{n}: in both or neither"
        );
        let (place, expected_calls) = match kind(i) {
            Kind::Valid => (&processed, 1),
            Kind::Invalid => (&failed, 1),
            Kind::Oversized => (&failed, 0), // refused without being read
        };
        assert!(
            place.exists(),
            "{n} ({:?}) not in {}",
            kind(i),
            place.display()
        );
        let status = place.with_file_name(format!("{n}.status.json"));
        let text = std::fs::read_to_string(&status)
            .unwrap_or_else(|e| panic!("{}: {e}", status.display()));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(json.get("outcome").is_some(), "{text}");
        if kind(i) == Kind::Oversized {
            assert!(text.contains("size"), "{text}");
        }
        assert_eq!(
            calls.get(&n).copied().unwrap_or(0),
            expected_calls,
            "{n} processor calls"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn a_burst_of_ten_thousand_files_goes_through_a_small_queue() {
    const BURST: u64 = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = Watcher::builder(dir)
        .mode(Mode::Watch)
        .workers(2)
        .debounce(Duration::from_millis(10))
        .queue_capacity(8)
        .fsync(false)
        .processor(processor::from_fn(|_, _| async {
            Ok::<(), ProcessError>(())
        }))
        .build()
        .unwrap();
    let w = Watcher::start(config).await.unwrap();
    for i in 0..BURST {
        std::fs::write(dir.join(format!("b{i:05}.txt")), b"x").unwrap();
    }
    // Seen at every start and end of a file: the queue never holds more than its capacity.
    let deepest = std::sync::atomic::AtomicU64::new(0);
    let done = |m: &watcher::Metrics| {
        deepest.fetch_max(m.queue_depth, std::sync::atomic::Ordering::Relaxed);
        m.finished() >= BURST
    };
    assert!(
        w.wait_for(done, Duration::from_secs(300)).await,
        "{:?}",
        w.metrics()
    );
    let m = w.metrics();
    assert_eq!((m.processed, m.failed), (BURST, 0));
    assert!(
        m.backpressure_waits > 0,
        "the queue of 8 never filled: {m:?}"
    );
    // The gauge is updated just after a send and just after a receive, so it can run ahead of
    // the channel by one file per worker (2 here), never more.
    let deepest = deepest.into_inner();
    assert!(
        (1..=8 + 2).contains(&deepest),
        "queue depth reached {deepest}"
    );
    w.close().await;
    assert_eq!(
        std::fs::read_dir(dir.join("processed")).unwrap().count() as u64,
        2 * BURST
    );
}
