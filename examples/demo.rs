//! The leakcheck demo: the real watcher, cycled under leakcheck, passes; the same watcher with
//! its two background routines spawned untracked (the classic bug, kept as a fixture) is
//! caught, and the report says how much it leaks per cycle. Last, a hand-written component
//! that forgets a thread and a file per cycle shows how a report names what was left.
//!
//! `cargo run --release --example demo` — exits 0 when all three verdicts are as expected.

use std::path::Path;
use std::time::Duration;

use leakcheck::{LeakCheck, Report, Resource};
use tokio::runtime::Handle;
use watcher::{processor, Mode, ProcessError, Watcher};

const CYCLES: usize = 20;

/// One create/close cycle: start a watcher on `dir`, drop a file in, wait until it is processed
/// and both cleanup routines have run, then close.
async fn cycle(dir: &Path, leaky: bool, n: usize) {
    let config = Watcher::builder(dir)
        .mode(Mode::Watch)
        .workers(2)
        .debounce(Duration::from_millis(10))
        .cleanup_every(Duration::from_millis(20))
        .file_state_cleanup_every(Duration::from_millis(20))
        .fsync(false)
        .processor(processor::from_fn(|_, _| async {
            Ok::<(), ProcessError>(())
        }))
        .leaky_background_routines_for_tests(leaky)
        .build()
        .expect("valid configuration");
    let w = Watcher::start(config).await.expect("watcher starts");
    std::fs::write(dir.join(format!("file-{n}.txt")), b"hello").unwrap();
    let busy =
        |m: &watcher::Metrics| m.processed == 1 && m.cleanup_runs > 0 && m.file_state_runs > 0;
    assert!(
        w.wait_for(busy, Duration::from_secs(10)).await,
        "the watcher got stuck: {:?}",
        w.metrics()
    );
    w.close().await;
}

async fn check(title: &str, root: &Path, leaky: bool) -> Report {
    let mut n = 0;
    let result = LeakCheck::new()
        .cycles(CYCLES)
        .settle(Duration::from_millis(500))
        .tasks(&Handle::current())
        .run_async(|| {
            n += 1;
            // A directory per cycle: a leaked routine keeps working on its own.
            let dir = root.join(format!("{}-{n}", if leaky { "leaky" } else { "clean" }));
            std::fs::create_dir(&dir).unwrap();
            async move { cycle(&dir, leaky, n).await }
        })
        .await;
    let report = match result {
        Ok(report) => report,
        Err(leak) => leak.report().clone(),
    };
    println!("── {title}\n{report}\n");
    report
}

fn main() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    // With `--cfg tokio_unstable`, the runtime records where each task was spawned, and the
    // leaky fixture's report names the lines.
    #[cfg(tokio_unstable)]
    leakcheck::instrument(&mut builder);
    builder.build().unwrap().block_on(demo());
}

async fn demo() {
    println!("leakcheck demo: three components, {CYCLES} create/close cycles each\n");
    // Kept until the end: the leaked routines go on working in their directories.
    let root = tempfile::tempdir().unwrap();
    let clean = check(
        "watcher (every task tracked, staged close)",
        root.path(),
        false,
    )
    .await;
    let leaky = check(
        "leaky fixture (two routines spawned untracked)",
        root.path(),
        true,
    )
    .await;

    let forgetful = forgetful(root.path());

    let expected = clean.is_clean()
        && !leaky.is_clean()
        && leaky.leaked(Resource::Tasks) == 2 * CYCLES
        && forgetful.leaked(Resource::Threads) == CYCLES
        && forgetful.leaked(Resource::Fds) == CYCLES;
    if expected {
        println!("as expected: the clean watcher passes, the leaks are caught and counted.");
    } else {
        println!("UNEXPECTED: the verdicts above are not the expected ones.");
        std::process::exit(1);
    }
}

/// A component that starts a named thread and opens its log on start, and forgets both on
/// close: every cycle leaves a thread and an fd behind.
fn forgetful(root: &Path) -> Report {
    let log = root.join("audit.log");
    std::fs::write(&log, b"").unwrap();
    let result = LeakCheck::new()
        .cycles(CYCLES)
        .settle(Duration::from_millis(200))
        .run(|| {
            let file = std::fs::File::open(&log).unwrap();
            std::mem::forget(file);
            std::thread::Builder::new()
                .name("audit-flusher".into())
                .spawn(|| loop {
                    std::thread::park();
                })
                .unwrap();
        });
    let report = match result {
        Ok(report) => report,
        Err(leak) => leak.report().clone(),
    };
    println!("── hand-written leak (a thread and a file forgotten per cycle)\n{report}\n");
    report
}
