//! What a team sees when it switches `#[leakcheck::test]` on across a suite: a failure points
//! at the test (`file:line`) with no frames of the harness, a body that panics and leaks shows
//! both, the project file sets defaults and overrides by glob (an argument wins), a bad key or
//! value names the file, the key and what is allowed, and warn mode passes leaking tests while
//! showing their reports and a summary.
//!
//! The `fixtures` are `#[ignore]`d tests that leak, hang or fail on purpose; the tests below run
//! this test binary on them as cargo test does (a name filter: each checked test goes to an
//! isolated child) and as cargo-nextest does (`--exact`: in place), and read its output.
#![cfg(all(feature = "macros", target_os = "linux"))]

use std::path::{Path, PathBuf};
use std::process::Command;

const FILE: &str = "harness/tests/adoption.rs";

fn park_named(name: &str) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(|| loop {
            std::thread::park();
        })
        .unwrap();
}

/// A library's function that starts a thread: `ignore_created_by` names it by its path.
mod spawner {
    pub fn park_one() {
        std::thread::Builder::new()
            .name("created-by-1".into())
            .spawn(|| loop {
                std::thread::park();
            })
            .unwrap();
    }
}

mod fixtures {
    use super::park_named;

    pub const LEAKS_AT: u32 = line!() + 3;
    #[leakcheck::test(settle_ms = 50)]
    #[ignore = "a fixture of adoption.rs"]
    fn leaks() {
        park_named("fixture-leak");
    }

    pub const PANICS_AND_LEAKS_AT: u32 = line!() + 3;
    #[leakcheck::test(settle_ms = 50)]
    #[ignore = "a fixture of adoption.rs"]
    fn panics_and_leaks() {
        park_named("fixture-leak");
        panic!("the body's own panic");
    }
    pub const BODY_PANIC_AT: u32 = PANICS_AND_LEAKS_AT + 2;

    pub const RETURNS_ERR_AT: u32 = line!() + 3;
    #[leakcheck::test]
    #[ignore = "a fixture of adoption.rs"]
    fn returns_err() -> Result<(), String> {
        Err("returned".into())
    }

    /// Run with `LEAKCHECK_CONFIG=tests/fixtures/timeouts.toml`.
    mod config {
        use super::park_named;

        fn hang() {
            loop {
                std::thread::park();
            }
        }

        #[leakcheck::test]
        #[ignore = "a fixture of adoption.rs"]
        fn top_level_hangs() {
            hang();
        }

        #[leakcheck::test]
        #[ignore = "a fixture of adoption.rs"]
        fn by_glob_hangs() {
            hang();
        }

        #[leakcheck::test(timeout_ms = 12000)]
        #[ignore = "a fixture of adoption.rs"]
        fn argument_hangs() {
            hang();
        }

        /// The top level's ignore and the override's both apply.
        #[leakcheck::test(settle_ms = 50)]
        #[ignore = "a fixture of adoption.rs"]
        fn by_glob_ignores() {
            park_named("file-top-1");
            park_named("file-override-1");
            crate::spawner::park_one();
        }

        /// Not matched by the override: its ignore does not apply.
        #[leakcheck::test(settle_ms = 50)]
        #[ignore = "a fixture of adoption.rs"]
        fn top_level_ignores_only_its_own() {
            park_named("file-top-1");
            park_named("file-override-1");
            crate::spawner::park_one();
        }

        #[leakcheck::test(settle_ms = 50)]
        #[ignore = "a fixture of adoption.rs"]
        fn warn_by_file() {
            park_named("warn-file");
        }
    }

    /// Run with `LEAKCHECK=warn`.
    mod warn {
        use super::park_named;

        #[leakcheck::test(settle_ms = 50)]
        #[ignore = "a fixture of adoption.rs"]
        fn leaks_a_thread() {
            park_named("warn-leak");
        }

        #[leakcheck::test(settle_ms = 50)]
        #[ignore = "a fixture of adoption.rs"]
        fn leaks_an_fd() {
            std::mem::forget(std::fs::File::open("Cargo.toml").unwrap());
        }

        #[leakcheck::test(settle_ms = 50)]
        #[ignore = "a fixture of adoption.rs"]
        fn clean() {
            std::thread::spawn(|| ()).join().unwrap();
        }
    }
}

/// How the fixtures are run: as `cargo test` runs a binary, or as cargo-nextest runs one test.
#[derive(Clone, Copy, Debug)]
enum Runner {
    CargoTest,
    Nextest,
}

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn both(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn run(runner: Runner, filter: &str, env: &[(&str, &str)]) -> Ran {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("--ignored");
    if let Runner::Nextest = runner {
        cmd.arg("--exact");
    }
    cmd.arg(filter).current_dir(env!("CARGO_MANIFEST_DIR"));
    for var in [
        "LEAKCHECK",
        "LEAKCHECK_CONFIG",
        "LEAKCHECK_SETTLE_MS",
        "LEAKCHECK_TIMEOUT_MS",
        "LEAKCHECK_ISOLATED",
        "RUST_BACKTRACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Output from the harness's own code: a frame or a location in it.
fn harness_frames(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.contains("leakcheck::") || l.contains("harness/src/"))
        .collect()
}

#[test]
fn a_leak_fails_at_the_test_with_no_frames_of_the_harness() {
    for runner in [Runner::CargoTest, Runner::Nextest] {
        let ran = run(runner, "fixtures::leaks", &[("RUST_BACKTRACE", "1")]);
        let out = ran.both();
        assert!(!ran.ok, "{runner:?}: {out}");
        let at = format!(
            "thread 'fixtures::leaks' panicked at {FILE}:{}:8:\nleakcheck: leak after 1 cycle",
            fixtures::LEAKS_AT
        );
        assert!(out.contains(&at), "{runner:?}: no {at:?} in\n{out}");
        assert!(
            out.contains("threads  +1") && out.contains("\"fixture-leak\""),
            "{runner:?}: {out}"
        );
        assert!(!out.contains("stack backtrace"), "{runner:?}: {out}");
        assert_eq!(
            harness_frames(&out),
            Vec::<&str>::new(),
            "{runner:?}: {out}"
        );
    }
}

#[test]
fn a_body_that_panics_and_leaks_shows_the_panic_then_the_report() {
    for runner in [Runner::CargoTest, Runner::Nextest] {
        let ran = run(
            runner,
            "fixtures::panics_and_leaks",
            &[("RUST_BACKTRACE", "1")],
        );
        let out = ran.both();
        assert!(!ran.ok, "{runner:?}: {out}");
        let panic = format!(
            "panicked at {FILE}:{}:9:\nthe body's own panic",
            fixtures::BODY_PANIC_AT
        );
        let report = format!(
            "panicked at {FILE}:{}:8:\nleakcheck: leak after 1 cycle",
            fixtures::PANICS_AND_LEAKS_AT
        );
        let (Some(p), Some(r)) = (out.find(&panic), out.find(&report)) else {
            panic!("{runner:?}: no {panic:?} or {report:?} in\n{out}");
        };
        assert!(
            p < r,
            "{runner:?}: the report came before the panic:\n{out}"
        );
        assert!(
            out.contains("threads  +1") && out.contains("\"fixture-leak\""),
            "{runner:?}: {out}"
        );
        // The body's backtrace is shown, and stops where the harness begins.
        assert!(out.contains("panics_and_leaks::__leakcheck_body"), "{out}");
        assert_eq!(
            harness_frames(&out),
            Vec::<&str>::new(),
            "{runner:?}: {out}"
        );
        // The test ends with the body's panic (what `should_panic(expected)` sees).
        assert_eq!(out.matches("the body's own panic").count(), 1, "{out}");
    }
}

#[test]
fn a_returned_error_fails_at_the_test() {
    for runner in [Runner::CargoTest, Runner::Nextest] {
        let ran = run(runner, "fixtures::returns_err", &[("RUST_BACKTRACE", "1")]);
        let out = ran.both();
        assert!(!ran.ok, "{runner:?}: {out}");
        let at = format!(
            "panicked at {FILE}:{}:8:\nError: \"returned\"",
            fixtures::RETURNS_ERR_AT
        );
        assert!(out.contains(&at), "{runner:?}: no {at:?} in\n{out}");
        assert_eq!(
            harness_frames(&out),
            Vec::<&str>::new(),
            "{runner:?}: {out}"
        );
    }
}

#[test]
fn the_project_file_sets_defaults_overrides_by_glob_and_yields_to_arguments() {
    let config = fixture("timeouts.toml");
    let env = [("LEAKCHECK_CONFIG", config.to_str().unwrap())];
    let ran = run(Runner::CargoTest, "fixtures::config::", &env);
    let out = ran.both();
    let deadline = |test: &str, ms: u32| {
        format!("isolated process for `fixtures::config::{test}` did not finish within {ms} ms")
    };
    // The top level, the first matching override, the test's own argument.
    for (test, ms) in [
        ("top_level_hangs", 8000),
        ("by_glob_hangs", 10000),
        ("argument_hangs", 12000),
    ] {
        assert!(out.contains(&deadline(test, ms)), "{test}: {out}");
    }
    // Ignore lists add up where the override matches, and only there.
    assert!(
        out.contains("test fixtures::config::by_glob_ignores ... ok"),
        "{out}"
    );
    assert!(
        out.contains("test fixtures::config::top_level_ignores_only_its_own ... FAILED"),
        "{out}"
    );
    assert!(out.contains("\"file-override-1\""), "{out}");
    assert!(!out.contains("\"file-top-1\""), "{out}");
    assert!(out.contains("\"created-by-1\""), "{out}");
    // mode = "warn" from an override.
    assert!(
        out.contains("test fixtures::config::warn_by_file ... ok"),
        "{out}"
    );
    assert!(
        ran.stderr
            .contains("leakcheck (warn): `fixtures::config::warn_by_file` at"),
        "{out}"
    );
}

#[test]
fn the_project_file_is_found_from_the_package_up_to_the_workspace_root() {
    let base = std::env::temp_dir().join(format!("leakcheck-adoption-{}", std::process::id()));
    let pkg = base.join("crates/pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::create_dir_all(base.join(".config")).unwrap();
    std::fs::write(base.join("Cargo.toml"), "[workspace]\n").unwrap();
    std::fs::copy(
        fixture("timeouts.toml"),
        base.join(".config/leakcheck.toml"),
    )
    .unwrap();
    // The deadline of the isolated process (cargo test) is the file's, for this test's glob.
    let env = [("CARGO_MANIFEST_DIR", pkg.to_str().unwrap())];
    let ran = run(Runner::CargoTest, "fixtures::config::by_glob_hangs", &env);
    std::fs::remove_dir_all(&base).unwrap();
    let out = ran.both();
    assert!(
        out.contains("`fixtures::config::by_glob_hangs` did not finish within 10000 ms"),
        "{out}"
    );
}

#[test]
fn a_bad_key_or_value_in_the_project_file_fails_the_test_naming_file_key_and_allowed() {
    let cases = [
        (
            "bad_key.toml",
            ":5:1: unknown key `ignore_threads` in an override; allowed: settle_ms, timeout_ms, \
             ignore_thread, ignore_fd, ignore_created_by, strict, mode, tests",
        ),
        (
            "bad_value.toml",
            ":1:13: `settle_ms` takes a whole number of milliseconds from 0 to 3600000, as in \
             `settle_ms = 500` (got \"500ms\")",
        ),
    ];
    for (file, message) in cases {
        let path = fixture(file);
        let expected = format!("leakcheck: {}{message}", path.display());
        for runner in [Runner::CargoTest, Runner::Nextest] {
            let env = [("LEAKCHECK_CONFIG", path.to_str().unwrap())];
            let ran = run(runner, "fixtures::warn::clean", &env);
            let out = ran.both();
            assert!(!ran.ok, "{file} {runner:?}: {out}");
            assert!(
                out.contains(&expected),
                "{file} {runner:?}: no {expected:?} in\n{out}"
            );
            assert!(out.contains(&format!("panicked at {FILE}:")), "{out}");
        }
    }
}

#[test]
fn warn_mode_passes_leaking_tests_shows_their_reports_and_sums_up() {
    let ran = run(
        Runner::CargoTest,
        "fixtures::warn::",
        &[("LEAKCHECK", "warn")],
    );
    let out = ran.both();
    assert!(ran.ok, "{out}");
    assert!(out.contains("test result: ok. 3 passed"), "{out}");
    // On stderr, past libtest's capture of passing tests' output.
    for shown in [
        format!("leakcheck (warn): `fixtures::warn::leaks_a_thread` at {FILE}:"),
        "\"warn-leak\"".to_owned(),
        "leakcheck (warn): `fixtures::warn::leaks_an_fd` at".to_owned(),
        "Cargo.toml opened at ".to_owned(),
        "leakcheck (warn): 2 of 3 checked tests leaked: ".to_owned(),
        "threads +1 in 1 test".to_owned(),
        "fds +1 in 1 test".to_owned(),
    ] {
        assert!(ran.stderr.contains(&shown), "no {shown:?} in\n{out}");
    }
    assert!(!ran.stderr.contains("fixtures::warn::clean"), "{out}");
    // The summary is the last thing the binary prints.
    let last = ran.stderr.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("leakcheck (warn): 2 of 3"), "{out}");

    // nextest: the test's own process shows its report and a one-test summary.
    let ran = run(
        Runner::Nextest,
        "fixtures::warn::leaks_a_thread",
        &[("LEAKCHECK", "warn")],
    );
    let out = ran.both();
    assert!(ran.ok, "{out}");
    assert!(ran.stderr.contains("\"warn-leak\""), "{out}");
    assert!(
        ran.stderr
            .contains("leakcheck (warn): 1 of 1 checked test leaked: threads +1 in 1 test"),
        "{out}"
    );

    // The negative control: without warn mode the same tests fail.
    let ran = run(Runner::CargoTest, "fixtures::warn::", &[]);
    let out = ran.both();
    assert!(!ran.ok, "{out}");
    assert!(
        out.contains("test result: FAILED. 1 passed; 2 failed"),
        "{out}"
    );
    assert!(!ran.stderr.contains("leakcheck (warn)"), "{out}");
}
