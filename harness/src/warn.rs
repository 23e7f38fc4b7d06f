//! Warn mode (`LEAKCHECK=warn`, or `mode = "warn"` in the project file): a leaking test passes,
//! its report is shown, and the test binary ends with a one-line summary of what leaked. This
//! is how a team surveys an existing suite before it switches checks on.
//!
//! Where the report goes: a passing test's output is captured by libtest and thrown away, so
//! `print!`/`eprint!` would swallow it. The report is written to the process's own stderr
//! (`std::io::stderr()`, which libtest's capture does not reach), in one write, by the
//! process that runs libtest for the whole binary: under a parallel `cargo test` that is the
//! parent, which gets the report from the test's isolated child with its outcome.
//!
//! The summary: the parent counts the checked tests whose outcome came back to it and the
//! ones that leaked, and an `atexit` hook prints the line when the binary exits (after
//! libtest's `test result:` line; libtest ends with `exit` on failure and by returning from
//! `main` on success, and both run `atexit` hooks). Under cargo-nextest every test is a
//! process of its own, so there is no process that sees the others: each test's process prints
//! its report and a one-test summary on its stderr, which nextest shows for passing tests with
//! `--success-output final` (or `immediate`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::panic::Location;
use std::sync::{Mutex, Once};

use crate::report::{Report, Verdict};

/// A leak found in warn mode: what leaked, by resource, and the report.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Warned {
    /// (resource, how many), for each resource that leaked; 0 when it could not be read.
    pub(crate) leaked: Vec<(String, usize)>,
    pub(crate) report: String,
}

impl Warned {
    pub(crate) fn from_report(report: &Report) -> Warned {
        let leaked = report
            .lines
            .iter()
            .filter_map(|l| match &l.verdict {
                Verdict::Leaking => Some((l.resource.to_string(), l.growth.max(0) as usize)),
                Verdict::Failed(_) => Some((format!("{} (unread)", l.resource), 0)),
                _ => None,
            })
            .collect();
        Warned {
            leaked,
            report: report.to_string(),
        }
    }

    /// One line for the isolated child's end marker: `threads=4,fds=1 <report>` (the caller
    /// escapes newlines).
    pub(crate) fn encode(&self) -> String {
        let leaked: Vec<String> = self
            .leaked
            .iter()
            .map(|(r, n)| format!("{}={n}", r.replace([' ', ',', '='], "_")))
            .collect();
        format!("{} {}", leaked.join(","), self.report)
    }

    pub(crate) fn decode(s: &str) -> Option<Warned> {
        let (leaked, report) = s.split_once(' ')?;
        let leaked = leaked
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (r, n) = p.split_once('=')?;
                Some((r.replace('_', " "), n.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Warned {
            leaked,
            report: report.to_owned(),
        })
    }
}

/// The tally of this process's checked tests in warn mode.
#[derive(Default)]
struct Tally {
    checked: usize,
    leaked: usize,
    /// Per resource: total leaked, and in how many tests.
    by_resource: Vec<(String, usize, usize)>,
}

static TALLY: Mutex<Tally> = Mutex::new(Tally {
    checked: 0,
    leaked: 0,
    by_resource: Vec::new(),
});

fn tally() -> std::sync::MutexGuard<'static, Tally> {
    TALLY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a checked test that ran in warn mode, here or in its isolated child.
pub(crate) fn checked() {
    tally().checked += 1;
    at_exit_summary();
}

/// Shows a warn-mode leak past libtest's capture and counts it.
pub(crate) fn show(test_path: &str, location: &Location<'_>, warned: &Warned) {
    let text = format!(
        "\nleakcheck (warn): `{test_path}` at {location} leaks; the test passes in warn mode\n{}\n",
        warned.report.trim_end()
    );
    // One write, so that parallel tests' reports do not interleave.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
    let mut t = tally();
    t.leaked += 1;
    for (resource, n) in &warned.leaked {
        match t.by_resource.iter_mut().find(|(r, _, _)| r == resource) {
            Some((_, total, tests)) => {
                *total += n;
                *tests += 1;
            }
            None => t.by_resource.push((resource.clone(), *n, 1)),
        }
    }
}

/// The summary line: `leakcheck (warn): 2 of 9 checked tests leaked: threads +7 in 2 tests,
/// fds +1 in 1 test`.
fn summary(t: &Tally) -> String {
    let tests = |n: usize| if n == 1 { "test" } else { "tests" };
    let mut line = format!(
        "leakcheck (warn): {} of {} checked {} leaked",
        t.leaked,
        t.checked,
        tests(t.checked)
    );
    for (i, (resource, total, n)) in t.by_resource.iter().enumerate() {
        let sep = if i == 0 { ": " } else { ", " };
        let _ = write!(line, "{sep}{resource} +{total} in {n} {}", tests(*n));
    }
    line.push('\n');
    line
}

/// Prints the summary when the process exits, once.
fn at_exit_summary() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        #[cfg(target_os = "linux")]
        {
            extern "C" fn print_summary() {
                let line = summary(&tally());
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            // SAFETY: registers a plain function; it only formats and writes to stderr.
            unsafe { libc::atexit(print_summary) };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_crosses_the_marker_line_whole() {
        let w = Warned {
            leaked: vec![("threads".into(), 4), ("fds (unread)".into(), 0)],
            report: "leakcheck: leak after 1 cycle\n  threads  +4".into(),
        };
        assert_eq!(Warned::decode(&w.encode()), Some(w));
    }

    #[test]
    fn the_summary_says_how_many_tests_leaked_what() {
        let t = Tally {
            checked: 9,
            leaked: 2,
            by_resource: vec![("threads".into(), 7, 2), ("fds".into(), 1, 1)],
        };
        assert_eq!(
            summary(&t),
            "leakcheck (warn): 2 of 9 checked tests leaked: threads +7 in 2 tests, fds +1 in 1 \
             test\n"
        );
        assert_eq!(
            summary(&Tally {
                checked: 1,
                ..Tally::default()
            }),
            "leakcheck (warn): 0 of 1 checked test leaked\n"
        );
    }
}
