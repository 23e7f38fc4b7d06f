//! The metrics endpoint is one more thing a close must not leak: create/close cycles of a
//! watcher serving `/metrics`, scraped by a client that keeps its connection open across the
//! close, leave no thread, fd (the listener, the accepted socket) or task behind; a drop
//! without close neither. The planted twin leaks one listening socket per cycle, which the
//! check must catch and count.
#![cfg(target_os = "linux")]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use leakcheck::{LeakCheck, Resource, Verdict};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use watcher::{processor, Mode, ProcessError, Watcher};

fn config(dir: &Path) -> watcher::Builder {
    Watcher::builder(dir)
        .mode(Mode::Watch)
        .workers(2)
        .debounce(Duration::from_millis(10))
        .cleanup_every(Duration::from_millis(5))
        .file_state_cleanup_every(Duration::from_millis(5))
        .fsync(false)
        .metrics_addr("127.0.0.1:0".parse().unwrap())
        .processor(processor::from_fn(|_, _| async {
            Ok::<(), ProcessError>(())
        }))
}

/// As in `watcher_leaks.rs`: the runtime's own threads are not the watcher's.
fn check() -> LeakCheck {
    LeakCheck::new()
        .settle(Duration::from_secs(2))
        .ignore_thread("tokio-rt-worker")
        .tasks(&Handle::current())
}

/// A keep-alive connection that has scraped `/metrics` once and stays open.
struct Scraper {
    sender: SendRequest<Empty<Bytes>>,
    driver: JoinHandle<()>,
}

async fn scrape(addr: SocketAddr, processed: u64) -> Scraper {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let line = format!("\nwatcher_files_processed_total {processed}\n");
    assert!(text.contains(&line), "{text}");
    Scraper { sender, driver }
}

impl Scraper {
    /// The server has closed the connection (within a deadline); then this side lets go.
    async fn closed_by_server(self) {
        let closed = tokio::time::timeout(Duration::from_secs(5), self.driver).await;
        assert!(closed.is_ok(), "the endpoint kept a connection open");
        drop(self.sender);
    }
}

/// Start with the endpoint on, process a file, scrape, then close (or drop) with the
/// connection still open.
async fn cycle(dir: &Path, tag: usize, close: bool) {
    let w = Watcher::start(config(dir).build().unwrap()).await.unwrap();
    std::fs::write(dir.join(format!("c{tag}.txt")), b"x").unwrap();
    assert!(
        w.wait_for(|m| m.processed == 1, Duration::from_secs(20))
            .await
    );
    let addr = w.metrics_addr().unwrap();
    let scraper = scrape(addr, 1).await;
    if close {
        let report = w.close().await;
        assert!(
            report.aborted.is_empty() && !report.budget_exhausted,
            "{report}"
        );
    } else {
        drop(w);
    }
    scraper.closed_by_server().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

async fn cycles(
    n: usize,
    close: bool,
    leak_a_listener: bool,
) -> Result<leakcheck::Report, leakcheck::Leak> {
    let dir = tempfile::tempdir().unwrap();
    let mut tag = 0;
    let mut planted = Vec::new();
    let result = check()
        .cycles(n)
        .run_async(|| {
            tag += 1;
            let dir = dir.path().to_owned();
            if leak_a_listener {
                planted.push(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
            }
            async move { cycle(&dir, tag, close).await }
        })
        .await;
    drop(planted);
    result
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn closes_with_the_endpoint_on_leave_nothing_behind() {
    let report = cycles(10, true, false).await.unwrap();
    for r in [Resource::Threads, Resource::Fds, Resource::Tasks] {
        assert_eq!(report.verdict(r), Some(&Verdict::Clean), "{report}");
    }
    assert_eq!(report.cycles(), 10);
}

#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn drops_with_the_endpoint_on_leave_nothing_behind() {
    let report = cycles(5, false, false).await.unwrap();
    assert!(report.is_clean(), "{report}");
}

/// The planted twin: the same cycles, plus one listening socket kept per cycle.
#[leakcheck::isolated(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_listener_is_caught_and_counted() {
    let leak = cycles(6, true, true).await.unwrap_err();
    let report = leak.report();
    assert_eq!(report.leaked(Resource::Fds), 6, "{report}");
    assert_eq!(report.per_cycle(Resource::Fds), 1.0, "{report}");
    // Six listeners on six ports: one name with the port as `*`, and where they were opened.
    let items = report.items(Resource::Fds);
    assert_eq!(items.len(), 1, "{report}");
    assert_eq!(items[0].1, 6, "{report}");
    assert!(items[0].0.starts_with("tcp 127.0.0.1:* LISTEN"), "{report}");
    assert_eq!(
        report.verdict(Resource::Tasks),
        Some(&Verdict::Clean),
        "{report}"
    );
}
