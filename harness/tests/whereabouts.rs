//! Where leaked threads are stuck: a thread in a timed wait says when the wait ends, and the
//! report advises a settle budget only where waiting could let the threads go (Linux).
//!
//! `cargo test -p leakcheck --test whereabouts`
#![cfg(all(target_os = "linux", feature = "macros"))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leakcheck::{LeakCheck, Resource};

/// A thread named `name` running `wait` until `stop`; joined by the caller.
fn plant(name: &str, stop: &Arc<AtomicBool>, wait: fn(&AtomicBool)) -> JoinHandle<()> {
    let stop = stop.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || wait(&stop))
        .unwrap()
}

fn release(stop: &AtomicBool, t: JoinHandle<()>) {
    stop.store(true, Ordering::Release);
    t.thread().unpark();
    t.join().unwrap();
}

/// The lines of the waits below.
#[cfg(feature = "origins")]
const PARK_TIMEOUT_LINE: u32 = 39;
#[cfg(feature = "origins")]
const PARK_LINE: u32 = 45;

/// `park_timeout` for 3 s (std: a futex wait with an absolute `CLOCK_MONOTONIC` deadline).
fn three_seconds(stop: &AtomicBool) {
    let end = Instant::now() + Duration::from_secs(3);
    while !stop.load(Ordering::Acquire) && Instant::now() < end {
        std::thread::park_timeout(end.saturating_duration_since(Instant::now()));
    }
}

fn forever(stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        std::thread::park();
    }
}

/// The figure after `prefix` in `text`, up to the next space.
fn figure_after<'a>(text: &'a str, prefix: &str) -> &'a str {
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
        + prefix.len();
    text[at..].split([' ', ')', ';']).next().unwrap()
}

#[leakcheck::isolated]
fn a_thread_in_a_timed_wait_says_when_it_ends_and_what_budget_covers_it() {
    let stop = Arc::new(AtomicBool::new(false));
    let mut planted = None;
    let started = Instant::now();
    let leak = LeakCheck::new()
        .settle(Duration::from_millis(200))
        .run(|| planted = Some(plant("timed", &stop, three_seconds)))
        .unwrap_err();
    let elapsed = started.elapsed();
    let text = leak.to_string();
    let ends: f64 = figure_after(&text, "(blocked in futex, timed: ends in ")
        .parse()
        .unwrap();
    // Read after the check: at most 3 s, and no earlier than the time the check took.
    assert!(ends <= 3.0, "{text}");
    assert!(
        ends + 0.15 >= 3.0 - elapsed.as_secs_f64(),
        "{elapsed:?}: {text}"
    );
    let ms: u64 = figure_after(&text, "settle_ms = ").parse().unwrap();
    // The 200 ms that ran out, the wait's end (shown to a tenth of a second), a quarter of a
    // second to exit, in whole seconds: at most 4 s (3 s left).
    let least = 200.0 + (ends - 0.05) * 1000.0 + 250.0;
    assert!(
        ms % 1000 == 0 && ms as f64 >= least && ms <= 4000,
        "{ms} for {ends} s: {text}"
    );
    assert!(
        text.contains(&format!("LEAKCHECK_SETTLE_MS={ms}")),
        "{text}"
    );
    assert!(!text.contains("waited the whole settle budget"), "{text}");
    #[cfg(feature = "origins")]
    assert!(
        text.contains(&format!(
            "waiting at {}:{} in std::thread::park_timeout (blocked in futex, \
             timed: ends in {ends:.1} s)",
            file!(),
            PARK_TIMEOUT_LINE
        )),
        "{text}"
    );
    release(&stop, planted.unwrap());

    // The figure covers it: with that budget, the same body passes.
    let stop = Arc::new(AtomicBool::new(false));
    let mut planted = None;
    LeakCheck::new()
        .settle(Duration::from_millis(ms))
        .run(|| planted = Some(plant("timed", &stop, three_seconds)))
        .unwrap();
    release(&stop, planted.unwrap());
}

#[leakcheck::isolated]
fn a_thread_in_an_untimed_wait_gets_no_settle_advice() {
    let stop = Arc::new(AtomicBool::new(false));
    let mut planted = None;
    let leak = LeakCheck::new()
        .settle(Duration::from_millis(100))
        .run(|| planted = Some(plant("untimed", &stop, forever)))
        .unwrap_err();
    let text = leak.to_string();
    assert_eq!(leak.report().leaked(Resource::Threads), 1, "{text}");
    #[cfg(feature = "origins")]
    let expected = format!(
        "waiting at {}:{} in std::thread::park (blocked in futex)",
        file!(),
        PARK_LINE
    );
    #[cfg(not(feature = "origins"))]
    let expected = "\"untimed\" ×1 (blocked in futex)";
    assert!(text.contains(&*expected), "{text}");
    assert!(!text.contains("timed:"), "{text}");
    assert!(!text.contains("settle budget"), "{text}");
    assert!(!text.contains("settle_ms"), "{text}");
    release(&stop, planted.unwrap());
}

#[leakcheck::isolated]
fn a_timed_wait_that_ends_inside_the_budget_is_clean() {
    let stop = Arc::new(AtomicBool::new(false));
    let mut planted = None;
    LeakCheck::new()
        .settle(Duration::from_secs(10))
        .run(|| {
            let t = plant("short", &stop, |_| {
                std::thread::park_timeout(Duration::from_millis(50))
            });
            planted = Some(t);
        })
        .unwrap();
    release(&stop, planted.unwrap());
}

/// A listener and four connections to it, kept past the check: the report names each by
/// protocol, addresses and state, the four connections (each with its own ephemeral port) in
/// one group, and their accepted ends in another.
#[leakcheck::isolated]
fn leaked_sockets_are_named_by_protocol_addresses_and_state() {
    use std::net::{TcpListener, TcpStream, UdpSocket};
    let mut kept: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut port = 0;
    let mut udp_port = 0;
    let (mut bind, mut connect, mut accept, mut udp_bind) = (0, 0, 0, 0);
    let leak = LeakCheck::new()
        .settle(Duration::from_millis(50))
        .run(|| {
            bind = line!() + 1;
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            port = listener.local_addr().unwrap().port();
            for _ in 0..4 {
                (connect, accept) = (line!() + 1, line!() + 2);
                let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let (server, _) = listener.accept().unwrap();
                kept.push(Box::new((client, server)));
            }
            udp_bind = line!() + 1;
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            udp_port = udp.local_addr().unwrap().port();
            kept.push(Box::new((listener, udp)));
        })
        .unwrap_err();
    let report = leak.report();
    let mut items = report.items(Resource::Fds).to_vec();
    items.sort();
    // With creation sites (feature `origins`), each group also says where it was opened.
    let at = |line: u32| match cfg!(origins) {
        true => format!(" opened at {}:{line}", file!()),
        false => String::new(),
    };
    let mut expected = vec![
        (
            format!(
                "tcp 127.0.0.1:* → 127.0.0.1:{port} ESTABLISHED{}",
                at(connect)
            ),
            4,
        ),
        (
            format!(
                "tcp 127.0.0.1:{port} → 127.0.0.1:* ESTABLISHED{}",
                at(accept)
            ),
            4,
        ),
        (format!("tcp 127.0.0.1:{port} LISTEN{}", at(bind)), 1),
        (format!("udp 127.0.0.1:{udp_port}{}", at(udp_bind)), 1),
    ];
    expected.sort();
    assert_eq!(items, expected, "{report}");
    drop(kept);
}

/// A Unix listener at a path, by its path.
#[leakcheck::isolated]
fn a_leaked_unix_listener_is_named_by_its_path() {
    let dir = std::env::temp_dir().join(format!("leakcheck-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.sock");
    let mut kept = None;
    let line = line!() + 3;
    let leak = LeakCheck::new()
        .settle(Duration::from_millis(50))
        .run(|| kept = Some(std::os::unix::net::UnixListener::bind(&path).unwrap()))
        .unwrap_err();
    let at = match cfg!(origins) {
        true => format!(" opened at {}:{line}", file!()),
        false => String::new(),
    };
    assert_eq!(
        leak.report().items(Resource::Fds),
        &[(format!("unix {}{at}", path.display()), 1)],
        "{leak}"
    );
    drop(kept);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The clean twin: the same sockets, closed inside the body.
#[leakcheck::isolated]
fn closed_sockets_are_clean() {
    use std::net::{TcpListener, TcpStream};
    LeakCheck::new()
        .settle(Duration::from_millis(500))
        .cycles(4)
        .run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (server, _) = listener.accept().unwrap();
            drop((client, server, listener));
        })
        .unwrap();
}

/// Four workers waiting in `recv`, one on a `Mutex`, one in `sleep`, leaked: each group is
/// named by the line it waits at and the call it waits in, from a sample of its stack.
#[cfg(feature = "origins")]
#[leakcheck::isolated]
fn leaked_threads_are_named_by_where_they_wait() {
    use std::sync::{mpsc, Mutex};
    let lock = Arc::new(Mutex::new(()));
    let held = lock.lock().unwrap();
    let sleeping = Arc::new(AtomicBool::new(true));
    let mut threads = Vec::new();
    let mut senders = Vec::new();
    let recv_line = line!() + 9;
    let lock_line = line!() + 15;
    let sleep_line = line!() + 23;
    let leak = LeakCheck::new()
        .settle(Duration::from_millis(100))
        .run(|| {
            for _ in 0..4 {
                let (tx, rx) = mpsc::channel::<()>();
                let t = std::thread::Builder::new().name("w-recv".into());
                threads.push(t.spawn(move || assert!(rx.recv().is_err())).unwrap());
                senders.push(tx);
            }
            let lock = lock.clone();
            let t = std::thread::Builder::new().name("w-lock".into());
            threads.push(
                t.spawn(move || {
                    let _guard = lock.lock();
                })
                .unwrap(),
            );
            let flag = sleeping.clone();
            let t = std::thread::Builder::new().name("w-sleep".into());
            threads.push(
                t.spawn(move || {
                    while flag.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_secs(5));
                    }
                })
                .unwrap(),
            );
        })
        .unwrap_err();
    let text = leak.to_string();
    let file = file!();
    for expected in [
        format!(
            "waiting at {file}:{recv_line} in std::sync::mpsc::Receiver::recv \
             (blocked in futex)"
        ),
        format!("waiting at {file}:{lock_line} in std::sync::Mutex::lock (blocked in futex)"),
        format!(
            "waiting at {file}:{sleep_line} in std::thread::sleep (sleeping in \
             clock_nanosleep, timed: ends within 5.0 s)"
        ),
    ] {
        assert!(text.contains(&expected), "{expected}\n{text}");
    }
    assert!(text.contains("×4   \"w-recv\""), "{text}");
    // Release them all.
    drop((held, senders));
    sleeping.store(false, Ordering::Release);
    drop(threads);
}
