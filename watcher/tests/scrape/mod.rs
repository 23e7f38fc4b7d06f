//! A real HTTP client (hyper's) for the metrics endpoint, and an independent parser of what it
//! serves (the `prometheus-parse` crate), for the metrics tests.
#![allow(dead_code)] // each test binary uses a part

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use prometheus_parse::{Sample, Scrape, Value};
use tokio::task::JoinHandle;

/// One response: status, `Content-Type`, body.
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// A keep-alive HTTP/1.1 connection to the endpoint.
pub struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    driver: JoinHandle<()>,
    addr: SocketAddr,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            driver,
            addr,
        })
    }

    pub async fn get(&mut self, path: &str) -> Response {
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .body(Empty::new())
            .unwrap();
        let res = self.sender.send_request(req).await.expect("a response");
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Response {
            status,
            content_type,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// Waits (up to `timeout`) until the server has closed the connection; true if it did.
    pub async fn closed_by_server(self, timeout: Duration) -> bool {
        let Conn { sender, driver, .. } = self;
        // The sender stays: dropping it would close the connection from this side.
        let closed = tokio::time::timeout(timeout, driver).await.is_ok();
        drop(sender);
        closed
    }
}

/// `GET /metrics` on a connection of its own, parsed.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let mut conn = Conn::open(addr).await.expect("connect to the endpoint");
    let res = conn.get("/metrics").await;
    assert_eq!(res.status, 200, "{}", res.body);
    parse(&res.body)
}

pub fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The sample `name` with `labels` (exactly those).
pub fn sample<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Sample {
    s.samples
        .iter()
        .find(|x| {
            x.metric == name
                && x.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

/// The value of a counter, gauge or untyped sample.
pub fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match &sample(s, name, labels).value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name} is not a single value: {other:?}"),
    }
}

/// The metric type `# TYPE` declares for `name`.
pub fn declared_type(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")))
        .map(str::to_owned)
}

/// Every name of the contract, with its type.
pub const CONTRACT: [(&str, &str); 14] = [
    ("watcher_files_processed_total", "counter"),
    ("watcher_files_failed_total", "counter"),
    ("watcher_files_retried_total", "counter"),
    ("watcher_queue_depth", "gauge"),
    ("watcher_files_in_flight", "gauge"),
    ("watcher_processing_seconds", "histogram"),
    ("watcher_background_tasks_active", "gauge"),
    ("watcher_tasks_alive", "gauge"),
    ("process_threads", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_cpu_seconds_total", "counter"),
    ("process_start_time_seconds", "gauge"),
];
