//! The metrics endpoint (`Builder::metrics_addr`): a small HTTP/1 server (hyper) that answers
//! `GET /metrics` with the watcher's registry in the Prometheus text format.
//!
//! It is one more task of the watcher, in the Background stage, so the staged close stops it
//! like the routines: the listener is bound in [`MetricsServer::bind`] (a bad or taken address
//! fails the start), the task closes it as soon as its stage's token is cancelled, asks every
//! open connection to finish (an idle keep-alive connection closes at once, a scrape in progress
//! completes), and ends when the last one has. The connections are tasks of a `JoinSet` the
//! server task owns: reaped as they finish (a long run of scrapes holds nothing), and aborted
//! with it if the close runs out of budget or the watcher is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::report::exposition;

/// How long a client may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound listener of the endpoint.
pub(crate) struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds `addr` (port 0: a free port) on `rt`'s reactor.
    pub(crate) fn bind(addr: SocketAddr, rt: &Handle) -> std::io::Result<Self> {
        // std's listener is close-on-exec: the commands the workers start do not inherit it.
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let _rt = rt.enter();
        Ok(MetricsServer {
            listener: TcpListener::from_std(std_listener)?,
        })
    }

    /// The address it listens on (with the port chosen for port 0).
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `registry` until `token` is cancelled, then closes the listener and ends once
    /// every connection has.
    pub(crate) async fn run(self, registry: Registry, token: CancellationToken) {
        let listener = self.listener;
        let registry = Arc::new(registry);
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = token.cancelled() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(serve(stream, registry.clone(), token.clone()));
                    }
                    // Out of fds (EMFILE) or the like: give the system a moment, then go on.
                    Err(_) => tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    },
                },
            }
        }
        drop(listener); // the port is free from here on
        while conns.join_next().await.is_some() {}
    }
}

/// One connection: requests until the client closes it, or, once `token` is cancelled, a
/// graceful end (the request in progress is answered, then the connection closes).
async fn serve(stream: TcpStream, registry: Arc<Registry>, token: CancellationToken) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let registry = registry.clone();
        async move { Ok::<_, Infallible>(respond(&registry, &req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn respond(registry: &Registry, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, String::new());
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = reply(StatusCode::OK, exposition::encode(registry));
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(exposition::CONTENT_TYPE),
    );
    r
}
