//! The Prometheus metrics of the library: served over HTTP (`Builder::metrics_addr`) and
//! registered in an application's registry (`Watcher::register_metrics`), scraped by a real
//! client and parsed by an independent parser; every name of the contract, the counters after a
//! known set of files, the routines' gauges before and after close, port 0, a taken address.
#![cfg(target_os = "linux")]

mod scrape;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use prometheus_parse::Value;
use scrape::{declared_type, parse, sample, value, Conn, CONTRACT};
use watcher::{processor, ProcessError, StartError, Watcher};

const ANY_PORT: &str = "127.0.0.1:0";

/// `good*` files succeed, `bad*` fail, `retry*` fail once with a retryable error, then succeed.
fn builder(dir: &Path) -> watcher::Builder {
    let retried = Arc::new(AtomicBool::new(false));
    Watcher::builder(dir)
        .workers(2)
        .debounce(Duration::from_millis(10))
        .retry_backoff(Duration::from_millis(1))
        .fsync(false)
        .processor(processor::from_fn(move |path: std::path::PathBuf, _| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let retried = retried.clone();
            async move {
                if name.starts_with("bad") {
                    Err(ProcessError::permanent("bad"))
                } else if name.starts_with("retry") && !retried.swap(true, Ordering::SeqCst) {
                    Err(ProcessError::retryable("later"))
                } else {
                    Ok(())
                }
            }
        }))
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_is_served_and_the_counters_count_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let w = Watcher::start(
        builder(dir.path())
            .metrics_addr(ANY_PORT.parse().unwrap())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    // Port 0 picked a free port, which the watcher reports.
    let addr = w.metrics_addr().expect("the endpoint is on");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    let mut registry = Registry::default();
    w.register_metrics(&mut registry);

    for name in ["good1", "good2", "good3", "bad1", "retry1"] {
        std::fs::write(dir.path().join(format!("{name}.txt")), b"x").unwrap();
    }
    assert!(
        w.wait_for(|m| m.finished() == 5, Duration::from_secs(20))
            .await,
        "{:?}",
        w.metrics()
    );

    let mut conn = Conn::open(addr).await.unwrap();
    let res = conn.get("/metrics").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.content_type, "text/plain; version=0.0.4; charset=utf-8");
    for (name, kind) in CONTRACT {
        assert_eq!(
            declared_type(&res.body, name).as_deref(),
            Some(kind),
            "{name}: {}",
            res.body
        );
    }
    let s = parse(&res.body);
    assert_eq!(value(&s, "watcher_files_processed_total", &[]), 4.0);
    assert_eq!(value(&s, "watcher_files_failed_total", &[]), 1.0);
    assert_eq!(value(&s, "watcher_files_retried_total", &[]), 1.0);
    assert_eq!(value(&s, "watcher_queue_depth", &[]), 0.0);
    assert_eq!(value(&s, "watcher_files_in_flight", &[]), 0.0);
    let Value::Histogram(buckets) = &sample(&s, "watcher_processing_seconds", &[]).value else {
        panic!("watcher_processing_seconds is a histogram");
    };
    assert_eq!(buckets.last().unwrap().count, 5.0, "{buckets:?}"); // le="+Inf"
    assert!(res.body.contains("\nwatcher_processing_seconds_count 5\n"));
    for task in ["cleanup", "file_state_cleanup"] {
        assert_eq!(
            value(&s, "watcher_background_tasks_active", &[("task", task)]),
            1.0,
            "{task} runs"
        );
    }
    // Two workers, intake, two routines, the server and this connection at least.
    assert!(value(&s, "watcher_tasks_alive", &[]) >= 7.0);
    assert!(value(&s, "process_threads", &[]) >= 3.0);
    let (open, max) = (
        value(&s, "process_open_fds", &[]),
        value(&s, "process_max_fds", &[]),
    );
    assert!(open >= 4.0 && open < max, "{open} of {max}");
    assert!(value(&s, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&s, "process_cpu_seconds_total", &[]) >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value(&s, "process_start_time_seconds", &[]);
    assert!(started <= now + 1.0 && started > now - 3600.0, "{started}");
    // Only /metrics is served.
    assert_eq!(conn.get("/").await.status, 404);

    // The application's registry reads the same counters; the process metrics are not in it.
    let text = encode(&registry);
    assert!(
        text.contains("\nwatcher_files_processed_total 4\n"),
        "{text}"
    );
    assert!(!text.contains("process_threads"), "{text}");

    // Close, with the keep-alive connection still open: the server closes it and the
    // listener, and the close is not held up by it.
    let report = w.close().await;
    assert!(
        report.aborted.is_empty() && !report.budget_exhausted,
        "{report}"
    );
    assert!(conn.closed_by_server(Duration::from_secs(5)).await);
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "still listening after close");
    // The routines have ended: their gauges read 0.
    let after = parse(&encode(&registry).replace("# EOF\n", ""));
    for task in ["cleanup", "file_state_cleanup"] {
        assert_eq!(
            value(&after, "watcher_background_tasks_active", &[("task", task)]),
            0.0,
            "{task} ended"
        );
    }
}

/// The negative twin: routines that outlive the close (the leaky test fixture) keep their
/// gauges at 1, which is the leak signal the gauges exist for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routines_leaked_by_a_close_stay_active() {
    let dir = tempfile::tempdir().unwrap();
    let config = builder(dir.path())
        .cleanup_every(Duration::from_millis(5))
        .file_state_cleanup_every(Duration::from_millis(5))
        .leaky_background_routines_for_tests(true)
        .build()
        .unwrap();
    let w = Watcher::start(config).await.unwrap();
    let mut registry = Registry::default();
    w.register_metrics(&mut registry);
    let ran = |m: &watcher::Metrics| m.cleanup_runs >= 1 && m.file_state_runs >= 1;
    assert!(w.wait_for(ran, Duration::from_secs(20)).await);
    w.close().await;
    let after = parse(&encode(&registry).replace("# EOF\n", ""));
    for task in ["cleanup", "file_state_cleanup"] {
        assert_eq!(
            value(&after, "watcher_background_tasks_active", &[("task", task)]),
            1.0,
            "{task} leaked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_address_fails_the_start_and_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind(ANY_PORT).unwrap();
    let addr: SocketAddr = taken.local_addr().unwrap();
    let err = Watcher::start(builder(dir.path()).metrics_addr(addr).build().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StartError::MetricsAddr { addr: a, .. } if *a == addr),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("cannot serve metrics on {addr}: ")),
        "{err}"
    );
    // Nothing was taken: the directory starts at once without the endpoint.
    let w = Watcher::start(builder(dir.path()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(w.metrics_addr(), None);
    w.close().await;
}
