//! `watcher DIR [--once] [--poll SECS] [--workers N] [--pattern GLOB] [--debounce DURATION]
//! [--max-file-size SIZE] [--retries N] [--shutdown-timeout DURATION] [--no-fsync] [--quiet]
//! [--log-format text|json] [--metrics-addr HOST:PORT] -- CMD [ARGS...]`
//!
//! Runs `CMD ARGS... FILE` for each file dropped into DIR: exit status 0 moves the file to
//! `processed/`, 75 (EX_TEMPFAIL) runs it again later (up to `--retries` times), anything else
//! moves it to `failed/` (with the tail of the command's stderr in the status). Ctrl-C or SIGTERM closes gracefully and prints the shutdown report. Each command
//! runs in a process group of its own, killed whole if the close runs out of budget. On stderr:
//! a start line, one line per file as it finishes (`--quiet` drops them), the shutdown report
//! and a summary; `--log-format json` makes each of them one JSON object (see `log.rs`).
//!
//! Every option maps to one [`watcher::Builder`] setting and is checked by it: a value out of
//! range exits with status 2 and a message that names the option, the value and the allowed
//! range, the same words the builder uses.
//!
//! Exit codes: 0 all processed, 1 some failed (or, with `--once`, left unprocessed), 2 usage or
//! configuration error.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use watcher::child::GroupChild;
use watcher::{ConfigError, Mode, ProcessError, Processor, Watcher};

mod log;
use log::{Log, LogFormat};

/// The exit status that asks for a retry (`EX_TEMPFAIL` of sysexits.h); any other failure is
/// permanent.
const EX_TEMPFAIL: i32 = 75;

/// Bytes of the command's stderr kept in a failed file's status.
const STDERR_TAIL: usize = 2048;

#[derive(Parser, Debug)]
#[command(
    name = "watcher",
    version,
    about = "Process every file dropped into DIR exactly once by running CMD on it"
)]
struct Args {
    /// The directory to watch.
    dir: PathBuf,
    /// Process the files present now, then exit.
    #[arg(long, conflicts_with = "poll")]
    once: bool,
    /// Scan every SECS seconds instead of using filesystem events.
    #[arg(long, value_name = "SECS")]
    poll: Option<f64>,
    /// Number of workers (default 2).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Glob matched against file names (default `*`).
    #[arg(long, value_name = "GLOB")]
    pattern: Option<String>,
    /// How long a file's size must stay unchanged before it is processed: `250ms`, `2s`, or
    /// seconds as a number (default 100ms; 10ms ..= 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    debounce: Option<Duration>,
    /// Files larger than this fail without being read: bytes, or with a K, M or G suffix
    /// (powers of 1024; default 5M; 1 ..= 1G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_file_size: Option<u64>,
    /// How many times a file is tried again when its command exits with status 75 (EX_TEMPFAIL,
    /// "try again later"), with a backoff from 100ms doubling (default 3; 0 ..= 100). Any
    /// other non-zero exit fails the file at once.
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// How long a graceful stop (Ctrl-C, SIGTERM, the end of `--once`) may take before the
    /// commands still running are killed and their files handed back (default 5s; 1ms ..= 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    shutdown_timeout: Option<Duration>,
    /// Trade durability for speed: no fsync of the ledger, status files and moves. A crash of
    /// the process stays safe; a power loss or kernel crash may forget that recent files were
    /// processed (they then run again) or lose their status files.
    #[arg(long)]
    no_fsync: bool,
    /// No line per file (the start line, the shutdown report and the summary stay).
    #[arg(long, short)]
    quiet: bool,
    /// `text` (default): lines for people; `json`: one JSON object per line (`"event"`:
    /// `start`, `file`, `shutdown`, `summary`), for a log shipper.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics while running (port 0: a free
    /// port; the start line gives the URL).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_socket_addr)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// The command (and its arguments) to run; the file's path is appended.
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<String>,
}

/// Runs the command on each file.
struct Command {
    program: String,
    /// `program` found in `PATH` once, at start: a spawn by name searches `PATH` again each time,
    /// one failed `exec` per directory before the one that holds it.
    found: PathBuf,
    args: Vec<String>,
    /// The program and its arguments, as reports name it.
    shown: String,
}

impl Command {
    /// The command `cmd` (program and arguments), its program found in `PATH` once, now.
    fn found_in_path(cmd: &[String]) -> Result<Command, String> {
        let program = cmd.first().cloned().unwrap_or_default();
        Ok(Command {
            found: find_program(&program)?,
            program,
            args: cmd.iter().skip(1).cloned().collect(),
            shown: cmd.join(" "),
        })
    }
}

impl Processor for Command {
    /// The command opens the file itself.
    fn reads_contents(&self) -> bool {
        false
    }

    async fn process(&self, path: &Path, _contents: Vec<u8>) -> Result<(), ProcessError> {
        let mut cmd = tokio::process::Command::new(&self.found);
        cmd.arg0(&self.program);
        cmd.args(&self.args)
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // In a process group of its own, killed whole if this future is dropped (an abort).
        let out = async {
            GroupChild::spawn_off_thread(cmd, &self.shown)
                .await?
                .wait_with_output()
                .await
        }
        .await
        .map_err(|e| ProcessError::permanent(format!("cannot run {}: {e}", self.program)))?;
        if out.status.success() {
            return Ok(());
        }
        let tail = &out.stderr[out.stderr.len().saturating_sub(STDERR_TAIL)..];
        let tail = String::from_utf8_lossy(tail);
        let message = format!(
            "{} exited with {}: {}",
            self.program,
            out.status,
            tail.trim_end()
        );
        // EX_TEMPFAIL (sysexits.h), as mail transfer agents use it: "try again later".
        if out.status.code() == Some(EX_TEMPFAIL) {
            return Err(ProcessError::retryable(message));
        }
        Err(ProcessError::permanent(message))
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // Two runtime threads: the work is mostly in the commands and on the blocking pool, and a
    // second thread keeps signals and a graceful stop going while the first waits in a slow
    // filesystem call (a directory scan, a rename). Measured A/B against a current-thread
    // runtime in `BENCHMARKS.md` (a few per cent faster).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("watcher: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = rt.block_on(run(args));
    // A read stuck on a hung filesystem keeps a blocking-pool thread: do not wait for it.
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}

/// Where `program` is: itself when it names a path (it holds a `/`), else the first executable
/// file of that name in a directory of `PATH` (as the shell and `execvp` look for it).
fn find_program(program: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let Some(path) = std::env::var_os("PATH") else {
        return Ok(PathBuf::from(program)); // let the spawn search its default path
    };
    for dir in std::env::split_paths(&path) {
        // An empty entry is the current directory.
        let candidate = if dir.as_os_str().is_empty() {
            Path::new(".").join(program)
        } else {
            dir.join(program)
        };
        let runnable = std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if runnable {
            return Ok(candidate);
        }
    }
    Err(format!(
        "{program}: command not found in PATH (a command with a / in it is taken as a path)"
    ))
}

/// A duration: `humantime` (`250ms`, `2s`, `1m 30s`) or a number of seconds (`0.5`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s} is not a valid number of seconds"));
    }
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (examples: 250ms, 2s, 1m, or 0.5 for seconds)"))
}

/// `HOST:PORT`, the host a name or an address (`127.0.0.1:9100`, `localhost:0`, `[::1]:9100`).
fn parse_socket_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("{e} (expected HOST:PORT, e.g. 127.0.0.1:9100)"))?
        .next()
        .ok_or_else(|| format!("{s} resolves to no address"))
}

/// A size in bytes: a number, or a number with a K, M or G suffix (powers of 1024; `KiB`,
/// `MB` and the like are read the same way).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 512K, 16M, 1G)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("unknown unit {unit:?} (use K, M or G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s} is too large"))
}

/// The command-line option that sets the builder field `field`.
fn flag_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "workers" => "--workers",
        "poll" => "--poll",
        "debounce" => "--debounce",
        "max_file_size" => "--max-file-size",
        "retries" => "--retries",
        "shutdown_timeout" => "--shutdown-timeout",
        _ => return None,
    })
}

/// A configuration error in the words of the builder, prefixed with the option that set it.
fn config_error(e: &ConfigError) -> String {
    match e {
        ConfigError::OutOfRange { field, .. } => match flag_of(field) {
            Some(flag) => format!("watcher: {flag}: {e}"),
            None => format!("watcher: {e}"),
        },
        ConfigError::InvalidPattern { .. } => format!("watcher: --pattern: {e}"),
        _ => format!("watcher: {e}"),
    }
}

/// The CLI's run: find the command, configure and start the watcher, wait until it is done
/// (`--once`) or told to stop, close it and report; the exit code.
async fn run(args: Args) -> ExitCode {
    let started = std::time::Instant::now();
    let command = match Command::found_in_path(&args.cmd) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("watcher: {e}");
            return ExitCode::from(2);
        }
    };
    let shown = command.shown.clone();
    let bar = (args.once && std::io::stderr().is_terminal()).then(progress_bar);
    let log = Arc::new(Log {
        format: args.log_format,
        quiet: args.quiet,
        bar: bar.clone(),
    });
    let config = match configure(&args, command, &log) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let w = match Watcher::start(config).await {
        Ok(w) => w,
        Err(e @ watcher::StartError::MetricsAddr { .. }) => {
            log.error(&format!("--metrics-addr: {e}"));
            return ExitCode::from(2);
        }
        Err(e) => {
            log.error(&e.to_string());
            return ExitCode::from(2);
        }
    };

    log.start(w.config(), &shown, w.metrics_addr());
    wait_until_done(&w, args.once, bar.as_ref()).await;
    let report = w.close().await;
    let m = w.metrics();
    log.end(&report, &m, started.elapsed());
    exit_code(&m, &report, args.once)
}

/// The `--once` progress bar on stderr.
fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} files ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The watcher's configuration from the options, each mapped to one builder setting and checked
/// by the builder; the message when one is wrong (usage error, exit 2).
fn configure(args: &Args, command: Command, log: &Arc<Log>) -> Result<watcher::Config, String> {
    let (on_file, on_warning) = (log.clone(), log.clone());
    let mut b = Watcher::builder(&args.dir)
        .processor(command)
        .on_file(move |f| on_file.file(f))
        .on_warning(move |m| on_warning.warning(m));
    if let Some(n) = args.workers {
        b = b.workers(n);
    }
    if let Some(p) = &args.pattern {
        b = b.pattern(p.clone());
    }
    if let Some(d) = args.debounce {
        b = b.debounce(d);
    }
    if let Some(n) = args.max_file_size {
        b = b.max_file_size(n);
    }
    if let Some(n) = args.retries {
        b = b.retries(n);
    }
    if let Some(d) = args.shutdown_timeout {
        b = b.shutdown_timeout(d);
    }
    if args.no_fsync {
        b = b.fsync(false);
    }
    if let Some(addr) = args.metrics_addr {
        b = b.metrics_addr(addr);
    }
    if args.once {
        b = b.mode(Mode::Once);
    } else if let Some(secs) = args.poll {
        match Duration::try_from_secs_f64(secs) {
            Ok(d) => b = b.mode(Mode::Poll(d)),
            Err(_) => {
                return Err(format!(
                    "watcher: --poll: {secs} is not a valid number of seconds"
                ))
            }
        }
    }
    b.build().map_err(|e| config_error(&e))
}

/// Waits until the watcher is done with the files present at start (`once`) or a signal asks
/// it to stop, moving the progress bar (if any) as files finish.
async fn wait_until_done(w: &Watcher, once: bool, bar: Option<&indicatif::ProgressBar>) {
    let signal = shutdown_signal();
    tokio::pin!(signal);
    if !once {
        signal.await;
        return;
    }
    let mut seen = u64::MAX;
    loop {
        if let Some(bar) = bar {
            let m = w.metrics();
            bar.set_length(m.queued.max(m.finished()));
            bar.set_position(m.finished());
            bar.set_message(format!("{} failed", m.failed));
        }
        tokio::select! {
            _ = w.finished() => break,
            _ = &mut signal => break,
            _ = w.wait_for(|m| m.finished() != seen, Duration::from_millis(200)) => {}
        }
        seen = w.metrics().finished();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// 1 when a file failed (or, with `--once`, was left unprocessed), else 0.
fn exit_code(m: &watcher::Metrics, report: &watcher::ShutdownReport, once: bool) -> ExitCode {
    if m.failed > 0 || (once && !report.handed_back.is_empty()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
