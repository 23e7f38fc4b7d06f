//! The CLI's `--metrics-addr`: the start line gives the URL, a real client scrapes it while the
//! watcher runs, the endpoint goes with the process; a bad or taken address is exit 2 naming the
//! option.
#![cfg(target_os = "linux")]

mod scrape;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scrape::{declared_type, value, Conn, CONTRACT};

const BIN: &str = env!("CARGO_BIN_EXE_watcher");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn serves_metrics_at_the_url_of_its_start_line_until_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg(dir.path())
        .args(["--metrics-addr", "127.0.0.1:0", "--debounce", "10ms", "--"])
        .args(["sh", "-c", r#"case "$1" in *bad*) exit 3;; esac"#, "sh"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let start = lines.next().unwrap().unwrap();
    let url = start
        .split("; metrics at ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no URL in the start line: {start}"));
    let addr: SocketAddr = url
        .strip_prefix("http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{url}"))
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 0, "port 0 is replaced by the port picked");
    assert!(
        start.ends_with(&format!(
            "; metrics at http://{addr}/metrics; Ctrl-C or SIGTERM stops"
        )),
        "{start}"
    );

    for name in ["a.txt", "b.txt", "bad.txt"] {
        std::fs::write(dir.path().join(name), b"x").unwrap();
    }
    let rt = runtime();
    let body = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut conn = Conn::open(addr).await.unwrap();
            let res = conn.get("/metrics").await;
            let s = scrape::parse(&res.body);
            let done = value(&s, "watcher_files_processed_total", &[])
                + value(&s, "watcher_files_failed_total", &[]);
            if done == 3.0 || Instant::now() > deadline {
                break res.body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    for (name, kind) in CONTRACT {
        assert_eq!(declared_type(&body, name).as_deref(), Some(kind), "{body}");
    }
    let s = scrape::parse(&body);
    assert_eq!(value(&s, "watcher_files_processed_total", &[]), 2.0);
    assert_eq!(value(&s, "watcher_files_failed_total", &[]), 1.0);
    // The endpoint reports the watcher's own process.
    let started = value(&s, "process_start_time_seconds", &[]);
    assert!(started > 0.0);

    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a file failed: exit 1");
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// Runs the CLI with `--metrics-addr ADDR` on an empty directory; its exit code and stderr.
fn with_addr(addr: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg(dir.path())
        .args(["--once", "--metrics-addr", addr, "--", "true"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_or_taken_address_is_exit_2_naming_the_option() {
    for bad in ["nope", "127.0.0.1", "127.0.0.1:99999", "localhost:http-ish"] {
        let (code, err) = with_addr(bad);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(
            err.contains(&format!(
                "invalid value '{bad}' for '--metrics-addr <HOST:PORT>'"
            )),
            "{bad}: {err}"
        );
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (code, err) = with_addr(&addr.to_string());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with(&format!(
            "watcher: --metrics-addr: cannot serve metrics on {addr}: Address already in use"
        )),
        "{err}"
    );
    // Not an address of this host.
    let (code, err) = with_addr("192.0.2.1:9100");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with("watcher: --metrics-addr: cannot serve metrics on 192.0.2.1:9100: "),
        "{err}"
    );
    // And port 0 with --once: served, then gone at the end.
    let (code, err) = with_addr("127.0.0.1:0");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("; metrics at http://127.0.0.1:"), "{err}");
}
