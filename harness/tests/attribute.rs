//! `#[leakcheck::test]` inside an ordinary, parallel `cargo test`: negative controls of every
//! kind (a parked thread, a forgotten fd, a pending task, a leak per cycle) fail with an exact
//! report while noisy neighbours in this same binary churn threads, fds and runtimes and leak
//! on purpose, unchecked; their clean twins pass.
//!
//! A control is a `#[should_panic(expected = ..)]` test: it passes only when its check fails
//! with the report line it names (the count, per cycle, and the name or target), so a control
//! that stopped catching its leak fails the suite. The neighbours run for as many rounds as it
//! takes the checked tests to finish here (about a second), so that they overlap them.
// Their expected labels are names alone: under `spawn-sites` each label also carries its
// `spawned at` site, so these run in the default build (where sites are recorded and classify
// threads, but labels stay names) and the site labels are tested in `globals` and the lib.
#![cfg(target_os = "linux")]

use std::time::Duration;

mod common;
use common::park_forever;

mod controls {
    use super::*;

    #[leakcheck::test(settle_ms = 100)]
    #[should_panic(expected = "threads  +1\n           ×1   \"parked-leak\" ")]
    fn parked_thread() {
        park_forever("parked-leak");
    }

    #[should_panic(expected = "Cargo.toml opened at harness/tests/attribute.rs:32")]
    #[leakcheck::test(settle_ms = 100)]
    fn forgotten_fd() {
        std::mem::forget(std::fs::File::open("Cargo.toml").unwrap());
    }

    #[leakcheck::test(settle_ms = 100)]
    #[should_panic(expected = "tasks    +1")]
    async fn pending_task() {
        tokio::spawn(std::future::pending::<()>());
    }

    #[leakcheck::test(flavor = "multi_thread", worker_threads = 2, settle_ms = 100)]
    #[should_panic(expected = "tasks    +1")]
    async fn pending_task_multi_thread() {
        tokio::spawn(std::future::pending::<()>());
    }

    #[leakcheck::test(cycles = 10, settle_ms = 100)]
    #[should_panic(expected = "threads  +10 (+1.00/cycle)\n           ×10  \"cycle-leak\" ")]
    fn leak_per_cycle() {
        park_forever("cycle-leak");
    }

    #[leakcheck::test(cycles = 6, settle_ms = 100)]
    #[should_panic(expected = "tasks    +6 (+1.00/cycle)")]
    async fn task_leak_per_cycle() {
        tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
            }
        });
    }

    #[leakcheck::test(settle_ms = 100)]
    #[should_panic(expected = "×1   \"blocked-forever\" ")]
    async fn blocking_task_that_never_returns() {
        // The runtime's own pool thread is not a leak; one held forever is.
        tokio::task::spawn_blocking(|| {
            let name = std::ffi::CString::new("blocked-forever").unwrap();
            // SAFETY: names the calling thread; the string is NUL-terminated and short.
            unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
            loop {
                std::thread::park();
            }
        });
    }

    /// `heap` with no `CountingAlloc` installed in this binary: a misconfiguration, not a pass.
    #[leakcheck::test(heap)]
    #[should_panic(expected = "#[leakcheck::test(heap)] could not count the heap")]
    fn heap_without_the_counting_allocator() {}

    mod nested {
        use super::*;

        #[leakcheck::test(cycles = 4, settle_ms = 100, ignore_thread = "known-*")]
        #[should_panic(expected = "threads  +4 (+1.00/cycle)\n           ×4   \"unknown\" ")]
        fn filters_only_what_they_name() {
            park_forever("known-pool");
            park_forever("unknown");
        }
    }
}

mod clean {
    use super::*;

    #[leakcheck::test]
    fn joined_thread() {
        std::thread::Builder::new()
            .name("joined".into())
            .spawn(|| ())
            .unwrap()
            .join()
            .unwrap();
    }

    #[leakcheck::test]
    fn closed_fd() {
        drop(std::fs::File::open("Cargo.toml").unwrap());
    }

    #[leakcheck::test]
    async fn awaited_task() {
        tokio::spawn(async {}).await.unwrap();
    }

    #[leakcheck::test(flavor = "multi_thread", worker_threads = 2)]
    async fn awaited_task_multi_thread() {
        tokio::spawn(async {}).await.unwrap();
    }

    #[leakcheck::test(cycles = 10)]
    fn joined_thread_per_cycle() {
        std::thread::spawn(|| ()).join().unwrap();
    }

    /// The test's own runtime is not a leak: its blocking pool, on either flavour.
    #[leakcheck::test(cycles = 6)]
    async fn blocking_pool_and_fs_current_thread() {
        tokio::task::spawn_blocking(|| ()).await.unwrap();
        tokio::fs::read("Cargo.toml").await.unwrap();
    }

    #[leakcheck::test(flavor = "multi_thread", worker_threads = 2, cycles = 6)]
    async fn blocking_pool_and_fs_multi_thread() {
        tokio::task::spawn_blocking(|| ()).await.unwrap();
        tokio::fs::read("Cargo.toml").await.unwrap();
    }

    #[leakcheck::test(ignore_thread = "known-*", ignore_fd = "*/Cargo.toml")]
    fn ignored_names_and_targets() {
        park_forever("known-pool");
        std::mem::forget(std::fs::File::open("Cargo.toml").unwrap());
    }
}

/// Neighbours: not checked, noisy, and leaky on purpose.
mod noisy {
    use super::*;

    const ROUNDS: usize = 1000;

    fn rounds(round: impl FnMut(usize)) {
        (0..ROUNDS).for_each(round);
    }

    #[test]
    fn churns_threads_and_leaks_some() {
        rounds(|i| {
            let handles: Vec<_> = (0..4).map(|_| std::thread::spawn(|| ())).collect();
            handles.into_iter().for_each(|h| h.join().unwrap());
            if i % 100 == 0 {
                park_forever("noisy-leak");
            }
        });
    }

    #[test]
    fn churns_fds_and_leaks_some() {
        rounds(|i| {
            let files: Vec<_> = (0..8)
                .map(|_| std::fs::File::open("Cargo.toml").unwrap())
                .collect();
            drop(files);
            if i % 100 == 0 {
                std::mem::forget(std::fs::File::open("Cargo.toml").unwrap());
            }
        });
    }

    #[test]
    fn churns_runtimes_and_leaks_one() {
        rounds(|i| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
            if i == 0 {
                // A runtime never shut down: its workers and driver fds stay.
                std::mem::forget(rt);
            }
        });
    }
}
