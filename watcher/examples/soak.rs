//! The soak check: runs the watcher CLI in watch mode with a steady stream of files, scrapes
//! its `/metrics` endpoint every few seconds, and judges whether threads, fds, alive tokio tasks
//! or resident memory trend upward after a warm-up.
//!
//! ```text
//! cargo run --release -p watcher --example soak -- --watcher target/release/watcher \
//!     [--duration 600] [--every-ms 50] [--scrape 5] [--warmup 60] [--csv FILE] [--smoke]
//! ```
//!
//! (`benches/soak.sh` builds both and runs it.) Each series is judged on its own, by the rule
//! leakcheck applies to the heap across cycles: the samples after the warm-up are split into up
//! to four segments of at least two samples, and a series rises only when the lowest sample of
//! every segment is above the one before (with one segment: above the first sample after the
//! warm-up), and the last sample is above that first one. A saw-tooth (a pool thread that comes
//! and goes, an allocator that frees in batches) visits its low in every segment and passes; a
//! steady climb raises every low and fails. Two end points alone would judge noise.
//!
//! Exit status: 0 every series flat; 1 some series rises (each is named); 2 the run itself
//! failed (no endpoint, a scrape failed, the watcher died, files were left unprocessed).
//! `--smoke` runs a few seconds: it checks the mechanics (the endpoint, every scrape, every file
//! processed, a clean exit of the watcher) and prints the verdicts without failing on them, since
//! a few seconds say nothing about a trend.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The series judged, as (column, metric name).
const JUDGED: [(&str, &str); 4] = [
    ("threads", "process_threads"),
    ("fds", "process_open_fds"),
    ("tasks", "watcher_tasks_alive"),
    ("rss_bytes", "process_resident_memory_bytes"),
];

struct Opts {
    watcher: PathBuf,
    duration: Duration,
    every: Duration,
    scrape: Duration,
    warmup: Duration,
    csv: Option<PathBuf>,
    smoke: bool,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: soak --watcher BIN [--duration SECS] [--every-ms MS] [--scrape SECS] \
         [--warmup SECS] [--csv FILE] [--smoke]"
    );
    ExitCode::from(2)
}

fn parse() -> Option<Opts> {
    let mut o = Opts {
        watcher: PathBuf::from("target/release/watcher"),
        duration: Duration::from_secs(600),
        every: Duration::from_millis(50),
        scrape: Duration::from_secs(5),
        warmup: Duration::ZERO,
        csv: None,
        smoke: false,
    };
    let mut warmup = None;
    let mut args = std::env::args().skip(1);
    let secs = |v: Option<String>| Duration::try_from_secs_f64(v?.parse().ok()?).ok();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--watcher" => o.watcher = args.next()?.into(),
            "--duration" => o.duration = secs(args.next())?,
            "--every-ms" => o.every = Duration::from_millis(args.next()?.parse().ok()?),
            "--scrape" => o.scrape = secs(args.next())?,
            "--warmup" => warmup = Some(secs(args.next())?),
            "--csv" => o.csv = Some(args.next()?.into()),
            "--smoke" => {
                o.smoke = true;
                o.duration = Duration::from_secs(4);
                o.scrape = Duration::from_millis(400);
            }
            _ => return None,
        }
    }
    // A tenth of the run by default: the runtime's pools and the allocator's arenas settle.
    o.warmup = warmup.unwrap_or(o.duration / 10);
    Some(o)
}

/// `GET /metrics` over a fresh connection (HTTP/1.1, `Connection: close`); the body's samples
/// without labels, by name.
fn scrape(addr: &str) -> Result<HashMap<String, f64>, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not 200: {head}"));
    }
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_owned(), v.parse().ok()?))
        })
        .collect())
}

/// Does the series rise? The segment-minima rule (see the module docs).
fn rises(s: &[f64]) -> bool {
    let n = s.len();
    if n < 3 {
        return false;
    }
    let (base, rest) = (s[0], &s[1..]);
    let m = rest.len();
    let k = (m / 2).clamp(1, 4);
    let lows: Vec<f64> = (0..k)
        .map(|j| {
            rest[j * m / k..(j + 1) * m / k]
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let rising = if k == 1 {
        lows[0] > base
    } else {
        lows.windows(2).all(|w| w[1] > w[0])
    };
    rising && rest[m - 1] > base
}

/// The watcher's start line names the endpoint: `... metrics at http://ADDR/metrics; ...`.
fn endpoint(line: &str) -> Option<String> {
    let url = line.split("metrics at http://").nth(1)?;
    Some(url.split("/metrics").next()?.to_owned())
}

/// Writes a file into `dir` every `every` until `stop`; counts them in `made`.
fn produce(dir: PathBuf, every: Duration, stop: Arc<AtomicBool>, made: Arc<AtomicU64>) {
    let t0 = Instant::now();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Written under a temp name (ignored by the watcher), then renamed: one event, whole.
        let tmp = dir.join(format!("f{i:08}.tmp"));
        std::fs::write(&tmp, format!("file {i}\n")).expect("write an inbox file");
        std::fs::rename(&tmp, dir.join(format!("f{i:08}.txt"))).expect("rename");
        i += 1;
        made.store(i, Ordering::Relaxed);
        // A steady rate, however long a write took.
        let next = t0 + every * u32::try_from(i).unwrap_or(u32::MAX);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn stop(child: &mut Child) -> std::io::Result<std::process::ExitStatus> {
    // SAFETY: kill sends a signal to our own child by its pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    child.wait()
}

fn main() -> ExitCode {
    let Some(o) = parse() else {
        return usage();
    };
    match run(&o) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(o: &Opts) -> Result<ExitCode, String> {
    let work = std::env::temp_dir().join(format!("watcher-soak-{}", std::process::id()));
    let inbox = work.join("in");
    std::fs::create_dir_all(&inbox).map_err(|e| e.to_string())?;
    let result = soak(o, &inbox);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn soak(o: &Opts, inbox: &Path) -> Result<ExitCode, String> {
    let mut child = Command::new(&o.watcher)
        .arg(inbox)
        .args(["--metrics-addr", "127.0.0.1:0", "--quiet", "--", "true"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", o.watcher.display()))?;
    // The start line, then the rest of stderr kept for a report.
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20));
    let Some(addr) = first.as_deref().ok().and_then(endpoint) else {
        let _ = stop(&mut child);
        return Err(format!("no metrics endpoint in the start line: {first:?}"));
    };
    println!(
        "soak: {} for {:?}, a file every {:?}, scrape every {:?}, warm-up {:?}, metrics at http://{addr}/metrics",
        o.watcher.display(),
        o.duration,
        o.every,
        o.scrape,
        o.warmup
    );

    let stop_flag = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let producer = {
        let (dir, stop, made) = (inbox.to_owned(), stop_flag.clone(), made.clone());
        let every = o.every;
        std::thread::spawn(move || produce(dir, every, stop, made))
    };

    let columns = [
        "t_s",
        "files",
        "processed",
        "threads",
        "fds",
        "tasks",
        "rss_bytes",
    ];
    let mut rows: Vec<[f64; 7]> = Vec::new();
    let t0 = Instant::now();
    let mut failure = None;
    let mut next = t0;
    while next <= t0 + o.duration {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let m = match scrape(&addr) {
            Ok(m) => m,
            Err(e) => {
                failure = Some(format!("scrape failed: {e}"));
                break;
            }
        };
        let get = |name: &str| m.get(name).copied();
        let row = (|| {
            Some([
                t0.elapsed().as_secs_f64(),
                made.load(Ordering::Relaxed) as f64,
                get("watcher_files_processed_total")?,
                get("process_threads")?,
                get("process_open_fds")?,
                get("watcher_tasks_alive")?,
                get("process_resident_memory_bytes")?,
            ])
        })();
        let Some(row) = row else {
            failure = Some(format!("a metric is missing from the scrape: {m:?}"));
            break;
        };
        rows.push(row);
        next += o.scrape;
    }
    stop_flag.store(true, Ordering::Relaxed);
    producer.join().map_err(|_| "the producer panicked")?;
    let made = made.load(Ordering::Relaxed) as f64;
    // Every file is processed before the stop (a bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut processed = 0.0;
    while failure.is_none() && Instant::now() < deadline {
        processed = scrape(&addr)
            .ok()
            .and_then(|m| m.get("watcher_files_processed_total").copied())
            .unwrap_or(processed);
        if processed >= made {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = stop(&mut child).map_err(|e| e.to_string())?;
    let rest: Vec<String> = rx.try_iter().collect();
    if failure.is_none() && processed < made {
        failure = Some(format!("{processed} of {made} files processed"));
    }
    if failure.is_none() && !status.success() {
        failure = Some(format!("the watcher exited with {status}: {rest:#?}"));
    }

    if let Some(path) = &o.csv {
        let mut text = columns.join(",") + "\n";
        for r in &rows {
            let cells: Vec<String> = r.iter().map(|v| format!("{v}")).collect();
            text += &(cells.join(",") + "\n");
        }
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(f) = failure {
        return Err(f);
    }

    let after: Vec<&[f64; 7]> = rows
        .iter()
        .filter(|r| r[0] >= o.warmup.as_secs_f64())
        .collect();
    println!(
        "soak: {made} files written and processed, {} scrapes ({} after the warm-up); the watcher: {status}",
        rows.len(),
        after.len()
    );
    let mut rising = Vec::new();
    for (name, metric) in JUDGED {
        let col = columns.iter().position(|c| *c == name).expect("a column");
        let s: Vec<f64> = after.iter().map(|r| r[col]).collect();
        let (Some(first), Some(last)) = (s.first(), s.last()) else {
            return Err("no samples after the warm-up: run longer".into());
        };
        let min = s.iter().copied().fold(f64::INFINITY, f64::min);
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let verdict = if rises(&s) { "RISES" } else { "flat" };
        // Growth per processed file over the judged span, for scale.
        let files = after.last().map_or(0.0, |r| r[2]) - after.first().map_or(0.0, |r| r[2]);
        let per_file = if files > 0.0 {
            (last - first) / files
        } else {
            0.0
        };
        println!(
            "  {metric:<30} {verdict:<5}  first {first} last {last} min {min} max {max}  ({per_file:+.3}/file)"
        );
        if verdict == "RISES" {
            rising.push(metric);
        }
    }
    if rising.is_empty() {
        println!("soak: PASS (every series flat after the warm-up)");
        Ok(ExitCode::SUCCESS)
    } else if o.smoke {
        println!(
            "soak: smoke run: the mechanics work; {} rose, which a few seconds cannot judge",
            rising.join(", ")
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("soak: FAIL: {} trend(s) upward", rising.join(", "));
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::rises;

    #[test]
    fn the_segment_minima_rule() {
        // Flat, and a saw-tooth that comes back to its low in every segment: flat.
        assert!(!rises(&[8.0; 20]));
        let saw: Vec<f64> = (0..20).map(|i| 8.0 + (i % 3) as f64).collect();
        assert!(!rises(&saw));
        // A steady climb, and one of a step every other sample: rises.
        let climb: Vec<f64> = (0..20).map(|i| 5e6 + 500.0 * i as f64).collect();
        assert!(rises(&climb));
        let steps: Vec<f64> = (0..20).map(|i| (i / 2) as f64).collect();
        assert!(rises(&steps));
        // A pool that filled up early and then stayed: not a trend.
        let filled: Vec<f64> = (0..20)
            .map(|i| if i < 6 { i as f64 } else { 6.0 })
            .collect();
        assert!(!rises(&filled));
    }
}
