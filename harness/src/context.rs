//! Is this check sharing its process with other tests?
//!
//! Threads and fds are process-wide. Under plain `cargo test`, libtest runs the tests of one
//! binary on parallel threads of one process, so another test's threads and fds come and go
//! during a check: one ending hides a leak, one starting makes one up. The harness cannot tell
//! another test's thread from the component's, and `#[serial]` does not help (libtest starts
//! the next test's thread whenever one finishes). Such a check must not pass: it fails, says
//! why, and points to `#[leakcheck::test]`, which runs the test in a process of its own.
//!
//! A check is alone in its process when it does not run on a libtest test thread (a doc
//! test, a bench, an example, a program), when libtest runs one test at a time
//! (`--test-threads=1`, `RUST_TEST_THREADS=1`, or one CPU), or when libtest was told to run
//! exactly this test (`--exact <name>`: cargo nextest runs every test so, and so does the
//! isolated child of a `#[leakcheck::test]`).

use std::sync::OnceLock;

/// Why the threads and fds of a check run here cannot be counted, or `None` when they can.
pub(crate) fn shared_process() -> Option<&'static str> {
    const WHY: &str = "other tests run on parallel threads of this process (libtest), and \
        their threads, fds, child processes and allocations cannot be told from this check's; use #[leakcheck::test] on the \
        test (it runs in a process of its own), or run this binary under `cargo nextest run` \
        or with `--test-threads=1`";
    let me = std::thread::current();
    let args: Vec<String> = std::env::args().collect();
    shares_process(
        test_threads(&args),
        &args,
        me.name(),
        on_libtest_thread(me.name()),
    )
    .then_some(WHY)
}

/// How many tests libtest runs at once in this process: its argument, else its environment
/// variable, else one per CPU (libtest's own default). Read once.
fn test_threads(args: &[String]) -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        let from_args = args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix("--test-threads=")
                .or_else(|| match a.as_str() {
                    "--test-threads" => args.get(i + 1).map(String::as_str),
                    _ => None,
                })
                .and_then(|n| n.parse().ok())
        });
        from_args
            .or_else(|| std::env::var("RUST_TEST_THREADS").ok()?.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// Pure decision, for testing.
fn shares_process(
    test_threads: usize,
    args: &[String],
    thread_name: Option<&str>,
    on_libtest_thread: bool,
) -> bool {
    if !on_libtest_thread || test_threads <= 1 {
        return false;
    }
    let only_this = crate::isolate::only_test(args).is_some_and(|only| Some(only) == thread_name);
    !only_this
}

/// Whether the calling thread is one libtest runs a test on (the process's main thread is then
/// libtest's own).
pub(crate) fn on_a_libtest_thread() -> bool {
    on_libtest_thread(std::thread::current().name())
}

/// libtest runs each test on a thread named after the test, not on the process's main thread.
fn on_libtest_thread(name: Option<&str>) -> bool {
    let named_test = name.is_some_and(|n| n != "main");
    let off_main = crate::sys::main_and_current_tid().is_none_or(|(main, me)| main != me);
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
        let t = Some("m::t");
        assert!(shares_process(2, &args(&["bin"]), t, true));
        // Not a libtest thread: a doc test, a bench, a program.
        assert!(!shares_process(2, &args(&["bin"]), t, false));
        // One test at a time.
        assert!(!shares_process(1, &args(&["bin"]), t, true));
        // Exactly this test (cargo nextest, an isolated child).
        assert!(!shares_process(
            4,
            &args(&["bin", "--exact", "m::t", "--nocapture"]),
            t,
            true
        ));
        // Exactly another test, or a filter that is not exact.
        assert!(shares_process(
            4,
            &args(&["bin", "--exact", "m::u"]),
            t,
            true
        ));
        assert!(shares_process(4, &args(&["bin", "m::t"]), t, true));
    }
}
