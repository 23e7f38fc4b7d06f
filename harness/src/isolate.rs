//! One test in a process of its own, so that its counts are exact while libtest runs the rest
//! of the suite on parallel threads.
//!
//! Threads and fds are process-wide: under plain `cargo test` every other test of the binary
//! runs on a thread of the same process, and its threads and fds come and go in the middle of
//! a check (a leak hidden by a neighbour's thread ending, or one made up by a neighbour's
//! thread starting). No lock can keep them out: libtest starts the next test whenever one
//! finishes. So a `#[leakcheck::test]` re-executes the test binary for exactly itself:
//!
//! ```text
//! <test binary> --exact <module::path::name> --test-threads=1 --nocapture --include-ignored
//!     LEAKCHECK_ISOLATED="<nonce> <module::path::name>"
//! ```
//!
//! and the parent waits for it, relays its output with `print!` (so that libtest's capture
//! applies as for any test), and passes, fails or panics as the child's test did. Where the
//! test is already alone in its process (the child itself, or cargo nextest, which runs every
//! test as `--exact <name>` in a process of its own) it runs in place.
//!
//! Traps this module handles, each seen in a trial:
//! - `--include-ignored`: an `#[ignore]`d test re-run without it runs *zero* tests and exits 0.
//!   The child brackets the test's run with markers on its stdout; no marker means no test ran,
//!   and the parent fails saying so.
//! - `#[should_panic]`: the child's libtest honours it, so the child's exit status says nothing.
//!   The markers carry the test's own outcome and panic message, and the parent re-raises that
//!   message, so the parent's libtest judges `should_panic(expected = ..)` on it.
//! - a child that crashes (a signal, an exit in the middle of the test) or hangs: the parent
//!   fails with what happened; a hung child is killed with its process group and reaped at the
//!   deadline.
//! - a test that leaves a process behind (the leak the harness reports) hands it the child's
//!   output pipe: the parent waits for the child's exit, not for the end of the output, or it
//!   would wait until the deadline and call a leak a hang.
//! - the name for `--exact` is `module_path!()` without the crate's segment, plus the fn name.

#[cfg(target_os = "linux")]
use std::io::Read;
use std::time::Duration;

/// Set in the child's environment: `"<nonce> <test path>"`.
pub(crate) const ENV: &str = "LEAKCHECK_ISOLATED";
/// Overrides the default deadline of an isolated test, in milliseconds.
pub(crate) const TIMEOUT_ENV: &str = "LEAKCHECK_TIMEOUT_MS";
/// The deadline for an isolated test when neither the attribute nor the environment sets one.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// libtest's name for a test: its module path without the crate's segment, then its name.
pub(crate) fn test_path(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{name}"),
        None => name.to_owned(),
    }
}

/// Where a test runs.
pub(crate) enum Placement {
    /// Here, in this process; `Some` when this process is an isolated child that must report
    /// its outcome to the parent.
    InPlace(Option<Reporter>),
    /// In a child process.
    Child,
}

/// Decides where the test `path` runs. It runs in place when this process is its isolated
/// child, when libtest was told to run exactly this test and nothing else (cargo nextest does
/// that for every test), or when it is not on libtest's thread for it (a harness that runs
/// tests in processes of their own, or a call from elsewhere).
pub(crate) fn placement(path: &str) -> Placement {
    let args: Vec<String> = std::env::args().collect();
    let alone = only_test(&args).is_some_and(|only| only == path);
    if alone {
        return Placement::InPlace(Reporter::from_env(path));
    }
    let on_its_libtest_thread = std::thread::current().name() == Some(path);
    if !on_its_libtest_thread || !cfg!(target_os = "linux") {
        return Placement::InPlace(None);
    }
    Placement::Child
}

/// The one test libtest was told to run, if its arguments say `--exact` with one name (given
/// once or more), and no listing.
pub(crate) fn only_test(args: &[String]) -> Option<&str> {
    // libtest's options that take a separate value.
    const VALUED: &[&str] = &[
        "--test-threads",
        "--skip",
        "--logfile",
        "--format",
        "--color",
        "-Z",
        "--shuffle-seed",
    ];
    let mut exact = false;
    let mut filters = Vec::new();
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--exact" => exact = true,
            "--list" => return None,
            a if VALUED.contains(&a) => {
                rest.next();
            }
            a if a.starts_with('-') => {}
            a => filters.push(a),
        }
    }
    let first = *filters.first()?;
    (exact && filters.iter().all(|f| *f == first)).then_some(first)
}

/// Brackets the test's run on the child's stdout so that the parent can tell what the test
/// printed from libtest's own lines, and knows how the test ended.
pub(crate) struct Reporter {
    nonce: String,
}

impl Reporter {
    fn from_env(path: &str) -> Option<Reporter> {
        let value = std::env::var(ENV).ok()?;
        let (nonce, for_path) = value.split_once(' ')?;
        // Inherited from an isolated ancestor by an unrelated process: not ours.
        (for_path == path).then(|| Reporter {
            nonce: nonce.to_owned(),
        })
    }

    pub(crate) fn begin(&self) {
        self.write("begin");
    }

    pub(crate) fn passed(&self) {
        self.write("passed");
    }

    pub(crate) fn panicked(&self, message: &str) {
        self.write(&format!("panicked {}", escape(message)));
    }

    /// It leaked, in warn mode: the parent shows the report past libtest's capture.
    pub(crate) fn warned(&self, warned: &crate::warn::Warned) {
        self.write(&format!("warned {}", escape(&warned.encode())));
    }

    fn write(&self, what: &str) {
        use std::io::Write;
        // Straight to the process's stdout, past any capture, after what the test printed.
        let mut out = std::io::stdout().lock();
        let _ = out.flush();
        let _ = write!(out, "\n{} {what}\n", marker(&self.nonce));
        let _ = out.flush();
    }
}

fn marker(nonce: &str) -> String {
    format!("@@leakcheck-isolated {nonce}")
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// How an isolated test ended, as the parent reports it.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// The test returned.
    Passed,
    /// The test panicked with this message (a leak report, an assertion...).
    Panicked(String),
    /// The test leaked, in warn mode, and passed.
    Warned(crate::warn::Warned),
    /// The test did not end normally: no test ran, the process crashed, exited or hung.
    Broken(String),
}

/// What the parent got back: the test's own output (what it printed between the markers, or
/// everything the child printed when the markers are missing) and how it ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) output: String,
    pub(crate) outcome: Outcome,
}

/// How the child process ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
    /// Still running at the deadline: killed and reaped.
    TimedOut,
}

/// Reads the child's output and exit into an outcome.
pub(crate) fn judge(path: &str, nonce: &str, raw: &str, exit: Exit, timeout: Duration) -> Finished {
    let mark = marker(nonce);
    let begin = format!("\n{mark} begin\n");
    let Some(start) = raw.find(&begin) else {
        return Finished {
            output: raw.to_owned(),
            outcome: Outcome::Broken(not_started(path, exit, timeout)),
        };
    };
    let body = &raw[start + begin.len()..];
    let end_mark = format!("\n{mark} ");
    let (output, end) = match body.find(&end_mark) {
        Some(i) => (&body[..i], Some(&body[i + end_mark.len()..])),
        None => (body, None),
    };
    let ended = end.map(|e| e.split('\n').next().unwrap_or(""));
    let outcome = match (ended, exit) {
        (_, Exit::TimedOut) => Outcome::Broken(timed_out(path, timeout)),
        (Some(_), Exit::Signal(sig)) | (None, Exit::Signal(sig)) => Outcome::Broken(format!(
            "leakcheck: the isolated process for `{path}` crashed: killed by {}{}",
            signal_name(sig),
            if ended.is_some() {
                " after the test ended"
            } else {
                " while the test ran"
            }
        )),
        (Some("passed"), Exit::Code(_)) => Outcome::Passed,
        (Some(e), Exit::Code(_)) if e.starts_with("panicked ") => {
            Outcome::Panicked(unescape(&e["panicked ".len()..]))
        }
        (Some(e), Exit::Code(_)) if e.starts_with("warned ") => {
            match crate::warn::Warned::decode(&unescape(&e["warned ".len()..])) {
                Some(warned) => Outcome::Warned(warned),
                None => Outcome::Broken(format!(
                    "leakcheck: the isolated process for `{path}` sent a warning that does not \
                     parse: {e:?}"
                )),
            }
        }
        (_, Exit::Code(code)) => Outcome::Broken(format!(
            "leakcheck: the isolated process for `{path}` exited with status {code} while the \
             test ran (a `std::process::exit` in the test?)"
        )),
    };
    Finished {
        output: output.to_owned(),
        outcome,
    }
}

/// Why no test ran in the child that ended so (no `begin` marker in its output).
fn not_started(path: &str, exit: Exit, timeout: Duration) -> String {
    match exit {
        Exit::TimedOut => timed_out(path, timeout),
        Exit::Signal(sig) => format!(
            "leakcheck: the isolated process for `{path}` was killed by {} before the test \
             started",
            signal_name(sig)
        ),
        Exit::Code(code) => format!(
            "leakcheck: no test ran in the isolated process for `{path}` (it exited with \
             status {code}): libtest found no test of that exact name. The output of \
             `{} --exact {path}` is above.",
            exe_name()
        ),
    }
}

fn timed_out(path: &str, timeout: Duration) -> String {
    format!(
        "leakcheck: the isolated process for `{path}` did not finish within {} ms; it was \
         killed and reaped. Its output so far is above. If the test is only slow, raise the \
         deadline with #[leakcheck::test(timeout_ms = ..)] or {TIMEOUT_ENV}.",
        timeout.as_millis()
    )
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    format!("signal {sig} ({name})")
}

fn exe_name() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "<test binary>".to_owned())
}

/// The deadline: the attribute's, else `LEAKCHECK_TIMEOUT_MS`, else the project file's, else
/// [`DEFAULT_TIMEOUT`].
pub(crate) fn timeout(
    from_attribute: Option<u64>,
    from_file: Option<u64>,
) -> Result<Duration, String> {
    if let Some(ms) = from_attribute {
        return Ok(Duration::from_millis(ms));
    }
    match std::env::var(TIMEOUT_ENV) {
        Err(_) => Ok(from_file.map_or(DEFAULT_TIMEOUT, Duration::from_millis)),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(format!(
                "leakcheck: {TIMEOUT_ENV} must be a whole number of milliseconds (1 or more), \
                 got {v:?}"
            )),
        },
    }
}

/// Runs the test `path` in a child process and waits for it, up to `timeout`.
#[cfg(target_os = "linux")]
pub(crate) fn run_child(path: &str, timeout: Duration) -> Finished {
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            return Finished {
                output: String::new(),
                outcome: Outcome::Broken(format!(
                    "leakcheck: cannot find this test binary to run `{path}` in a process of \
                     its own: {e}"
                )),
            }
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--exact",
        path,
        "--test-threads=1",
        "--nocapture",
        "--include-ignored",
    ])
    .env(ENV, format!("{nonce} {path}"))
    .stdin(std::process::Stdio::null());
    // The test's end is in: no need to wait for the output's EOF, which a process the test
    // left behind (with our pipe as its stdout) can hold off.
    let ended = |raw: &[u8]| has_ended(&String::from_utf8_lossy(raw), &nonce);
    match supervise(cmd, timeout, &ended) {
        Ok((raw, exit)) => judge(path, &nonce, &raw, exit, timeout),
        Err(e) => Finished {
            output: String::new(),
            outcome: Outcome::Broken(format!(
                "leakcheck: cannot start the isolated process for `{path}`: {e}"
            )),
        },
    }
}

/// Whether `raw` holds the whole end marker line of the test run marked with `nonce`.
#[cfg(target_os = "linux")]
fn has_ended(raw: &str, nonce: &str) -> bool {
    let mark = marker(nonce);
    let begin = format!("\n{mark} begin\n");
    let Some(start) = raw.find(&begin) else {
        return false;
    };
    let body = &raw[start + begin.len()..];
    let end_mark = format!("\n{mark} ");
    body.find(&end_mark)
        .is_some_and(|i| body[i + end_mark.len()..].contains('\n'))
}

/// How long the output may take to drain once the child has exited (or was killed): what the
/// child wrote is in the pipe already, but a process it left behind may hold the pipe open, so
/// its EOF may never come.
#[cfg(target_os = "linux")]
const DRAIN: Duration = Duration::from_millis(300);

/// What the relay thread has read so far, and whether it saw the end of the output.
#[cfg(target_os = "linux")]
#[derive(Default)]
struct Relayed {
    out: Vec<u8>,
    eof: bool,
}

/// Starts `cmd` with stdout and stderr on one pipe (so that their order is kept), collects
/// its output, and waits for it to exit, killing its process group and reaping it at the
/// deadline.
///
/// It waits for the child's *exit*, not for the end of its output: a process the child leaves
/// behind (a leaked child process, `sh -c 'sleep 5 &'`) inherits the pipe and holds it open.
/// Once the child has exited, the output is given [`DRAIN`] to arrive, or less once `complete`
/// says that what was read is all that matters; the relay thread is then left to itself.
///
/// The child runs in a process group of its own, so that at the deadline its descendants are
/// killed with it, even those it has already left orphaned. Out of the terminal's foreground
/// group it no longer gets a terminal's Ctrl-C (SIGINT): that kills this process, and the child
/// is then killed by the kernel (`PR_SET_PDEATHSIG`, on the death of the thread that started
/// it, which waits here for as long as the child runs). What the child itself started is not
/// signalled on Ctrl-C: a test's own processes, which its test is to end anyway.
#[cfg(target_os = "linux")]
pub(crate) fn supervise(
    cmd: std::process::Command,
    timeout: Duration,
    complete: &dyn Fn(&[u8]) -> bool,
) -> std::io::Result<(String, Exit)> {
    let deadline = std::time::Instant::now() + timeout;
    let (mut child, read) = spawn_on_one_pipe(cmd)?;
    let relayed = relay(read)?;
    let exit = wait_or_kill(&mut child, deadline)?;
    Ok((drained(&relayed, complete), exit))
}

/// The relay thread's output so far, and the condition it signals when that changes.
#[cfg(target_os = "linux")]
type Relay = std::sync::Arc<(std::sync::Mutex<Relayed>, std::sync::Condvar)>;

/// Starts `cmd` in a process group of its own, killed if this thread dies, with its stdout and
/// stderr on one new pipe; returns the child and the pipe's read end.
#[cfg(target_os = "linux")]
fn spawn_on_one_pipe(
    mut cmd: std::process::Command,
) -> std::io::Result<(std::process::Child, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;

    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds; close-on-exec keeps them out of other children
    // that other tests start meanwhile (the child gets its copies through dup2).
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    cmd.stdout(write.try_clone()?).stderr(write);
    cmd.process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure calls only prctl and getppid, both async-signal-safe, and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // This process died before the prctl: no signal will come.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // The command holds our copies of the write end: drop it, or the reader never sees EOF.
    drop(cmd);
    Ok((spawned?, read))
}

/// Starts the thread that reads the pipe's `read` end until EOF into the returned relay.
#[cfg(target_os = "linux")]
fn relay(read: std::os::fd::OwnedFd) -> std::io::Result<Relay> {
    use std::sync::{Condvar, Mutex};

    let relayed: Relay = std::sync::Arc::new((Mutex::new(Relayed::default()), Condvar::new()));
    let shared = relayed.clone();
    let mut read = std::fs::File::from(read);
    std::thread::Builder::new()
        .name("leakcheck-relay".into())
        .spawn(move || {
            let (state, changed) = &*shared;
            let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
            let mut buf = [0u8; 8192];
            loop {
                match read.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => lock().out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
                changed.notify_all();
            }
            lock().eof = true;
            changed.notify_all();
        })?;
    Ok(relayed)
}

/// Waits for `child` to exit until `deadline`; past it, kills the child's process group (the
/// child is not yet reaped, so the group's id, its pid, is still ours), then reaps the child.
#[cfg(target_os = "linux")]
fn wait_or_kill(
    child: &mut std::process::Child,
    deadline: std::time::Instant,
) -> std::io::Result<Exit> {
    use std::os::unix::process::ExitStatusExt;

    Ok(match wait_until(child, deadline)? {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Code(-1),
        },
        None => {
            // SAFETY: plain syscall; the group id is the unreaped child's pid.
            unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.kill();
            child.wait()?;
            Exit::TimedOut
        }
    })
}

/// What the child printed before it ended: waits up to [`DRAIN`] for the output's EOF, or
/// until `complete` says that what was read is all that matters (something the child started
/// may hold the pipe open).
#[cfg(target_os = "linux")]
fn drained(relayed: &Relay, complete: &dyn Fn(&[u8]) -> bool) -> String {
    let (state, changed) = &**relayed;
    let state = state.lock().unwrap_or_else(|e| e.into_inner());
    let state = changed
        .wait_timeout_while(state, DRAIN, |s| !s.eof && !complete(&s.out))
        .map_or_else(|e| e.into_inner().0, |(s, _)| s);
    String::from_utf8_lossy(&state.out).into_owned()
}

/// Waits for `child` to exit until `deadline`, polling with backoff; `None` at the deadline.
#[cfg(target_os = "linux")]
fn wait_until(
    child: &mut std::process::Child,
    deadline: std::time::Instant,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let mut backoff = Duration::from_micros(20);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        std::iter::once("bin")
            .chain(a.iter().copied())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn test_path_drops_the_crate_segment() {
        assert_eq!(test_path("suite", "t"), "t");
        assert_eq!(test_path("suite::a::b", "t"), "a::b::t");
    }

    #[test]
    fn only_test_needs_exact_and_one_name() {
        assert_eq!(only_test(&args(&["--exact", "a::t"])), Some("a::t"));
        assert_eq!(
            only_test(&args(&[
                "a::t",
                "--nocapture",
                "--exact",
                "--test-threads",
                "1"
            ])),
            Some("a::t")
        );
        assert_eq!(
            only_test(&args(&["--exact", "a::t", "--skip", "x", "a::t"])),
            Some("a::t")
        );
        assert_eq!(only_test(&args(&["a::t"])), None);
        assert_eq!(only_test(&args(&["--exact"])), None);
        assert_eq!(only_test(&args(&["--exact", "a::t", "b::t"])), None);
        assert_eq!(only_test(&args(&["--exact", "a::t", "--list"])), None);
        assert_eq!(
            only_test(&args(&["--format", "json", "--exact", "a::t"])),
            Some("a::t")
        );
    }

    #[test]
    fn messages_survive_the_marker_line() {
        let m = "line 1\nline \\2\r\n  \"q\" ×3";
        assert_eq!(unescape(&escape(m)), m);
        assert!(!escape(m).contains('\n'));
    }

    fn raw(nonce: &str, body: &str, end: Option<&str>) -> String {
        let mut s = format!("running 1 test\n\n@@leakcheck-isolated {nonce} begin\n{body}");
        if let Some(end) = end {
            s.push_str(&format!("\n@@leakcheck-isolated {nonce} {end}\n"));
        }
        s.push_str("test a::t ... ok\n\ntest result: ok. 1 passed\n");
        s
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn judges_what_the_markers_say() {
        let f = judge(
            "a::t",
            "n1",
            &raw("n1", "hello", Some("passed")),
            Exit::Code(0),
            T,
        );
        assert_eq!((f.output.as_str(), f.outcome), ("hello", Outcome::Passed));

        // should_panic: the child's libtest passes; the marker carries the panic.
        let end = format!("panicked {}", escape("leak\n  threads +1"));
        let f = judge(
            "a::t",
            "n1",
            &raw("n1", "out", Some(&end)),
            Exit::Code(0),
            T,
        );
        assert_eq!(f.outcome, Outcome::Panicked("leak\n  threads +1".into()));

        // Another nonce's markers are not ours.
        let f = judge(
            "a::t",
            "n2",
            &raw("n1", "x", Some("passed")),
            Exit::Code(0),
            T,
        );
        assert!(matches!(f.outcome, Outcome::Broken(ref m) if m.contains("no test ran")));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_end_marker_is_seen_once_its_line_is_whole() {
        assert!(has_ended(&raw("n1", "x", Some("passed")), "n1"));
        assert!(!has_ended(&raw("n1", "x", Some("passed")), "n2"));
        assert!(!has_ended(&raw("n1", "x", None), "n1"));
        let cut = "\n@@leakcheck-isolated n1 begin\nx\n@@leakcheck-isolated n1 panicked le";
        assert!(!has_ended(cut, "n1"));
        assert!(has_ended(&format!("{cut}ak\n"), "n1"));
    }

    #[test]
    fn judges_a_child_that_did_not_end_normally() {
        let r = raw("n", "partial", None);
        let f = judge("a::t", "n", &r, Exit::Signal(6), T);
        // Everything after the start is relayed: there is no end to cut it at.
        assert!(f.output.starts_with("partialtest a::t"), "{}", f.output);
        let Outcome::Broken(m) = f.outcome else {
            panic!()
        };
        assert!(m.contains("crashed") && m.contains("SIGABRT"), "{m}");

        let f = judge("a::t", "n", &r, Exit::Code(0), T);
        assert!(matches!(f.outcome, Outcome::Broken(ref m) if m.contains("exited with status 0")));

        let f = judge("a::t", "n", &r, Exit::TimedOut, T);
        assert!(
            matches!(f.outcome, Outcome::Broken(ref m) if m.contains("did not finish within 1000 ms"))
        );

        // Zero tests ran: an `#[ignore]`d test re-run without --include-ignored looks so.
        let f = judge("a::t", "n", "running 0 tests\n", Exit::Code(0), T);
        assert_eq!(f.output, "running 0 tests\n");
        assert!(matches!(f.outcome, Outcome::Broken(ref m) if m.contains("no test ran")));
    }

    /// The parent of `pid` and its state, while it exists.
    #[cfg(target_os = "linux")]
    fn parent_and_state(pid: u32) -> Option<(u32, char)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let mut rest = stat.rsplit(')').next()?.split_whitespace();
        let state = rest.next()?.chars().next()?;
        Some((rest.next()?.parse().ok()?, state))
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_child_past_its_deadline_is_killed_with_its_group_and_reaped() {
        let mut cmd = std::process::Command::new("sh");
        // A descendant in the background, beside the child itself.
        cmd.args(["-c", "sleep 60 & echo \"$$ $!\"; wait"]);
        let started = std::time::Instant::now();
        let (out, exit) = supervise(cmd, Duration::from_secs(2), &|_| false).unwrap();
        assert_eq!(exit, Exit::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10));
        let pids: Vec<u32> = out.split_whitespace().map(|p| p.parse().unwrap()).collect();
        let [sh, sleep] = pids[..] else {
            panic!("{out:?}")
        };
        // Reaped: no process (not even a zombie) is left under that pid as our child.
        let ours = parent_and_state(sh).is_some_and(|(ppid, _)| ppid == std::process::id());
        assert!(!ours, "child {sh} still exists");
        // Its descendant was killed with it (by now, or as soon as the kill lands): gone, or a
        // zombie until its new parent reaps it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let dead = || parent_and_state(sleep).is_none_or(|(_, state)| state == 'Z');
        while !dead() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(dead(), "{sleep} still runs: {:?}", parent_and_state(sleep));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_exit_is_judged_without_waiting_for_a_left_behind_holder_of_the_output() {
        let mut cmd = std::process::Command::new("sh");
        // The background sleep keeps the output pipe open after `sh` exits.
        cmd.args(["-c", "sleep 30 & echo \"$!\"; echo done; exit 4"]);
        let started = std::time::Instant::now();
        let complete = |out: &[u8]| out.ends_with(b"done\n");
        let (out, exit) = supervise(cmd, Duration::from_secs(60), &complete).unwrap();
        assert!(started.elapsed() < Duration::from_secs(20), "{out:?}");
        assert_eq!(exit, Exit::Code(4));
        let sleep: u32 = out.lines().next().unwrap().parse().unwrap();
        assert!(out.ends_with("\ndone\n"), "{out:?}");
        // SAFETY: plain syscall; `sleep` is an orphan that holds its pid until reaped.
        unsafe { libc::kill(sleep as libc::pid_t, libc::SIGKILL) };
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_child_output_keeps_its_order_across_stdout_and_stderr() {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo 1; echo 2 >&2; echo 3; exit 3"]);
        let (out, exit) = supervise(cmd, Duration::from_secs(20), &|_| false).unwrap();
        assert_eq!((out.as_str(), exit), ("1\n2\n3\n", Exit::Code(3)));
    }
}
