//! Is this check sharing its process with other tests?
//!
//! Threads and fds are process-wide. Under plain `cargo test`, libtest runs the tests of one
//! binary on parallel threads of one process, so another test's threads can come and go during
//! a check. Under cargo nextest each test is its own process. The harness cannot tell another
//! test's thread from the component's, so it says when it could not rule them out.

use std::sync::OnceLock;

/// The note to add to every report when other tests may share the process, else `None`.
pub(crate) fn shared_process_note() -> Option<&'static str> {
    static NOTE: OnceLock<Option<&'static str>> = OnceLock::new();
    *NOTE.get_or_init(|| {
        let env = |k: &str| std::env::var(k).ok();
        let args: Vec<String> = std::env::args().collect();
        shares_process(
            env("NEXTEST_EXECUTION_MODE").as_deref(),
            env("RUST_TEST_THREADS").as_deref(),
            &args,
            on_libtest_thread(),
        )
        .then_some(
            "other tests may run in this process (libtest runs tests on parallel threads); \
             their threads and fds could not be ruled out. Avoid it with \
             `cargo test -- --test-threads=1` (or RUST_TEST_THREADS=1) or `cargo nextest run`; \
             #[serial] keeps other tests idle, but libtest still starts their threads",
        )
    })
}

/// Pure decision, for testing: parallel libtest unless one of the ways out is in force.
fn shares_process(
    nextest_mode: Option<&str>,
    test_threads_env: Option<&str>,
    args: &[String],
    on_libtest_thread: bool,
) -> bool {
    if nextest_mode == Some("process-per-test") || test_threads_env == Some("1") {
        return false;
    }
    let one_thread_arg = args.iter().enumerate().any(|(i, a)| {
        a == "--test-threads=1"
            || (a == "--test-threads" && args.get(i + 1).is_some_and(|n| n == "1"))
    });
    !one_thread_arg && on_libtest_thread
}

/// libtest runs each test on a thread named after the test, not on the process's main thread.
fn on_libtest_thread() -> bool {
    let named_test = std::thread::current().name().is_some_and(|n| n != "main");
    let off_main = crate::probe::main_and_current_tid().is_none_or(|(main, me)| main != me);
    named_test && off_main
}

#[cfg(test)]
mod tests {
    use super::shares_process;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ways_out_of_a_shared_process() {
        assert!(shares_process(None, None, &args(&["t"]), true));
        assert!(!shares_process(None, None, &args(&["t"]), false));
        assert!(!shares_process(Some("process-per-test"), None, &[], true));
        assert!(!shares_process(None, Some("1"), &[], true));
        assert!(shares_process(None, Some("4"), &[], true));
        assert!(!shares_process(
            None,
            None,
            &args(&["t", "--test-threads=1"]),
            true
        ));
        assert!(!shares_process(
            None,
            None,
            &args(&["t", "--test-threads", "1"]),
            true
        ));
        assert!(shares_process(
            None,
            None,
            &args(&["t", "--test-threads", "2"]),
            true
        ));
    }
}
