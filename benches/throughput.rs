//! Files per second through the watcher with an in-process processor that does nothing (the
//! library API, `Mode::Once`, 4 workers, a current-thread runtime, the smallest), fsync on (the
//! default) and off, beside the floors measured in the same run:
//!
//! - `floor/commit_serial`: the file-system steps of one file's commit (the ledger's in-flight,
//!   decided and done records, the status written to a temp file and renamed, the file renamed
//!   into `processed/`, with the same syncs as the watcher's commit order, its checkpoint every
//!   64 files included), done file after file in a plain loop, without the watcher: what the
//!   durable protocol costs by itself;
//! - `floor/fdatasync`: one append and `fdatasync` of a small file (the device's flush);
//! - `floor/create_rename`: a new small file written and renamed, no sync (inode allocation
//!   and two directory updates).
//!
//! Each watcher iteration processes [`FILES`] files made untimed in a fresh directory, timed
//! from `Watcher::start` until `close()` returns. Directories are removed only when the bench
//! ends: on an ext4 without a journal, a new inode skips every inode freed in the last seconds
//! one by one (`recently_deleted`), so removing them as we go would tax the next iteration.
//!
//! `cargo bench --bench throughput` (about a minute); `-- --test` runs each once. Besides
//! criterion's report (`thrpt`, in files per second), prints the median per bench.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use watcher::{processor, Mode, ProcessError, Watcher};

/// Files per watcher iteration.
const FILES: usize = 1000;
/// Workers, as in the CLI measurement (`benches/cli_throughput.sh`).
const WORKERS: usize = 4;

/// Every directory made, kept until the end (see the module docs).
static KEEP: Mutex<Vec<TempDir>> = Mutex::new(Vec::new());
/// Per-iteration samples of each bench, in files per second.
static SAMPLES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(id: &str, files: usize, took: Duration) {
    let rate = files as f64 / took.as_secs_f64();
    SAMPLES
        .lock()
        .unwrap()
        .entry(id.to_string())
        .or_default()
        .push(rate);
}

/// A fresh directory (kept until the end) with `n` small files, written back to disk.
fn inbox(n: usize) -> std::path::PathBuf {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..n {
        std::fs::write(dir.path().join(format!("f{i:05}.txt")), format!("{i}\n")).unwrap();
    }
    File::open(dir.path()).and_then(|d| d.sync_all()).unwrap();
    let path = dir.path().to_path_buf();
    KEEP.lock().unwrap().push(dir);
    path
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One run of the watcher over a fresh inbox of `FILES` files; returns its wall time.
fn watcher_run(rt: &Runtime, fsync: bool) -> Duration {
    let dir = inbox(FILES);
    let config = Watcher::builder(&dir)
        .mode(Mode::Once)
        .workers(WORKERS)
        .fsync(fsync)
        .processor(processor::from_fn(|_, _| async {
            Ok::<(), ProcessError>(())
        }))
        .build()
        .expect("config");
    rt.block_on(async {
        let t0 = Instant::now();
        let w = Watcher::start(config).await.expect("start");
        w.finished().await;
        let report = w.close().await;
        let took = t0.elapsed();
        assert!(report.handed_back.is_empty(), "{report}");
        assert_eq!(w.metrics().processed, FILES as u64);
        took
    })
}

/// The commit's file-system steps for `n` files of `dir`, one after the other, as the
/// watcher's commit order does them (see `watcher::status`), without the watcher: per file the
/// in-flight and decided records, each synced, the status written to a temp file and renamed,
/// the file moved; every 64 files (the watcher's checkpoint) the status files and both
/// directories synced, then the done records.
fn commit_serial(dir: &Path, n: usize, fsync: bool) {
    const BATCH: usize = 64;
    let processed = dir.join("processed");
    std::fs::create_dir_all(&processed).unwrap();
    let mut journal = OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join(".journal"))
        .unwrap();
    let sync_dir = |d: &Path| {
        if fsync {
            File::open(d).and_then(|f| f.sync_all()).unwrap();
        }
    };
    let mut pending = Vec::new();
    for i in 0..n {
        let name = format!("f{i:05}.txt");
        for state in ["in_flight", "decided"] {
            writeln!(
                journal,
                r#"{{"name":"{name}","entry":{{"state":"{state}"}}}}"#
            )
            .unwrap();
            if fsync {
                journal.sync_data().unwrap();
            }
        }
        let tmp = processed.join(format!(".tmp-{name}.status.json"));
        std::fs::write(&tmp, br#"{"file":"x","outcome":"processed"}"#).unwrap();
        let status = processed.join(format!("{name}.status.json"));
        std::fs::rename(&tmp, &status).unwrap();
        std::fs::rename(dir.join(&name), processed.join(&name)).unwrap();
        pending.push((name, status));
        if pending.len() == BATCH || i + 1 == n {
            if fsync {
                for (_, status) in &pending {
                    File::open(status).and_then(|f| f.sync_data()).unwrap();
                }
            }
            sync_dir(&processed);
            sync_dir(dir);
            for (name, _) in pending.drain(..) {
                writeln!(journal, r#"{{"name":"{name}","entry":{{"state":"done"}}}}"#).unwrap();
            }
        }
    }
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("throughput");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(FILES as u64));
    for fsync in [true, false] {
        let id = format!("watcher/fsync_{}", if fsync { "on" } else { "off" });
        g.bench_function(&id, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let took = watcher_run(&rt, fsync);
                        record(&id, FILES, took);
                        took
                    })
                    .sum()
            })
        });
        let id = format!(
            "floor/commit_serial/fsync_{}",
            if fsync { "on" } else { "off" }
        );
        g.bench_function(&id, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let dir = inbox(FILES);
                        let t0 = Instant::now();
                        commit_serial(&dir, FILES, fsync);
                        let took = t0.elapsed();
                        record(&id, FILES, took);
                        took
                    })
                    .sum()
            })
        });
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("floor/fdatasync", |b| {
        let dir = inbox(0);
        let mut f = File::create(dir.join("log")).unwrap();
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                f.write_all(b"{\"name\":\"f00001.txt\",\"entry\":null}\n")
                    .unwrap();
                f.sync_data().unwrap();
            }
            let took = t0.elapsed();
            record("floor/fdatasync", iters as usize, took);
            took
        })
    });
    g.bench_function("floor/create_rename", |b| {
        let dir = inbox(0);
        let mut n = 0u64;
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                n += 1;
                let tmp = dir.join(format!(".tmp-{n}"));
                std::fs::write(&tmp, b"{\"file\":\"x\"}").unwrap();
                std::fs::rename(&tmp, dir.join(format!("s{n}.json"))).unwrap();
            }
            let took = t0.elapsed();
            record("floor/create_rename", iters as usize, took);
            took
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    let samples = SAMPLES.lock().unwrap();
    if !samples.is_empty() {
        println!("\n| bench | median files/s (per iteration) | iterations |");
        println!("|---|---|---|");
        for (id, rates) in samples.iter() {
            let mut v = rates.clone();
            v.sort_by(f64::total_cmp);
            println!("| {id} | {:.0} | {} |", v[v.len() / 2], v.len());
        }
    }
    KEEP.lock().unwrap().clear();
}
