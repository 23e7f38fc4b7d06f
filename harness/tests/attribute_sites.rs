//! With `--cfg tokio_unstable`, an async `#[leakcheck::test]` runs on an instrumented runtime:
//! a leaked task is named by the line that spawned it. (CI's tokio_unstable step runs this.)
//! The expected strings name the lines of the `tokio::spawn` calls below.
#![cfg(all(tokio_unstable, target_os = "linux"))]

#[leakcheck::test(settle_ms = 50)]
#[should_panic(expected = "×1   spawned at harness/tests/attribute_sites.rs:9")]
async fn a_leaked_task_is_named_by_its_spawn_site() {
    tokio::spawn(std::future::pending::<()>());
}

#[leakcheck::test(flavor = "multi_thread", cycles = 4, settle_ms = 50)]
#[should_panic(expected = "×4   spawned at harness/tests/attribute_sites.rs:15")]
async fn a_task_leaked_per_cycle_is_named_on_a_multi_thread_runtime() {
    tokio::spawn(std::future::pending::<()>());
}

#[leakcheck::test]
async fn an_awaited_task_is_clean() {
    tokio::spawn(async {}).await.unwrap();
}
