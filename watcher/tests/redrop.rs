//! A name dropped again the moment its first file leaves the inbox is processed in the same
//! run. The worker still holds the name then (intake ignores it until the worker lets go), so
//! the new file must not be left waiting for the next start.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use notify::Watcher as _;
use watcher::Mode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_dropped_again_as_its_first_file_moves_out_is_processed() {
    let dir = tempfile::tempdir().unwrap();
    let p = common::Scripted::default();
    // fsync on: the ledger's `done` record after the move widens the window in which the
    // worker still holds the name.
    let config = common::builder(dir.path(), p.clone())
        .mode(Mode::Watch)
        .workers(1)
        .fsync(true)
        .build()
        .unwrap();
    let w = watcher::Watcher::start(config).await.unwrap();

    for round in 1..=5u64 {
        // React to the first file's arrival in processed/ by dropping the same name again,
        // from notify's thread, while the worker is still finishing it.
        let (tx, rx) = mpsc::channel();
        let inbox = dir.path().to_owned();
        let mut dropped = false;
        let mut spy = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            // The move into processed/ (`dup.txt`, later `dup.txt.<run>`), not its status.
            let moved_in = ev.paths.iter().any(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with("dup.txt") && !name.ends_with(".status.json")
            });
            if moved_in && !dropped {
                dropped = true;
                let _ = std::fs::write(inbox.join("dup.txt"), format!("again {round}"));
                let _ = tx.send(());
            }
        })
        .unwrap();
        spy.watch(
            &dir.path().join("processed"),
            notify::RecursiveMode::NonRecursive,
        )
        .unwrap();
        std::fs::write(dir.path().join("dup.txt"), format!("first {round}")).unwrap();
        rx.recv_timeout(Duration::from_secs(20))
            .expect("first file moved out");
        drop(spy);

        let expected = 2 * round;
        let done = w
            .wait_for(|m| m.processed >= expected, Duration::from_secs(10))
            .await;
        assert!(
            done,
            "round {round}: the file dropped again was missed: {:?}",
            w.metrics()
        );
    }
    assert_eq!(p.calls("dup.txt"), 10);
    w.close().await;
}
