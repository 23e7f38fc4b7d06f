//! Beyond threads, fds and tasks: a component that keeps every listener it was given in a
//! global registry (a heap leak), one that spawns a helper process and forgets to wait for
//! it (a child per cycle, some of them zombies), and a pool whose connections are counted by a
//! probe of the user's own. Then the same three, fixed, pass.
//!
//! `cargo run --release --example heap_and_more` — exits 0 when every verdict is as expected.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use leakcheck::{CountingAlloc, LeakCheck, Report, Resource};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new(std::alloc::System);

const CYCLES: usize = 20;

/// Listeners registered by every `Bus::subscribe`; a fixed bus removes its own on drop.
static LISTENERS: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());

struct Bus {
    id: u64,
    fixed: bool,
}

impl Bus {
    fn subscribe(id: u64, fixed: bool) -> Bus {
        LISTENERS
            .lock()
            .unwrap()
            .push((id, format!("listener for bus {id}: {}", "·".repeat(8))));
        Bus { id, fixed }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if self.fixed {
            LISTENERS.lock().unwrap().retain(|(id, _)| *id != self.id);
        }
    }
}

/// Connections a pool holds open.
static OPEN: AtomicUsize = AtomicUsize::new(0);

struct Conn;

impl Conn {
    fn open() -> Conn {
        OPEN.fetch_add(1, Ordering::SeqCst);
        Conn
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Children the leaky runs leave, killed and reaped by the example at the end.
static FORGOTTEN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// One create/close cycle of a component that subscribes to a bus, runs a helper process,
/// and takes a connection from a pool.
fn cycle(n: u64, fixed: bool) {
    let bus = Bus::subscribe(n, fixed);
    let mut helper = Command::new("sleep")
        .arg(if n % 3 == 0 { "0" } else { "1000" }) // some helpers end at once
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let conn = Conn::open();
    // ... the component works ...
    drop(bus);
    if fixed {
        let _ = helper.kill();
        helper.wait().unwrap();
        drop(conn);
    } else {
        // The helper is never waited for (those that ended are zombies), the connection is
        // never given back.
        if n % 3 == 0 {
            // The helper has exited: wait until it is a zombie (no reaping) so that the
            // report shows it as one.
            // SAFETY: a valid siginfo_t; WNOWAIT leaves the child as it is.
            unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    helper.id(),
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                );
            }
        }
        FORGOTTEN.lock().unwrap().push(helper);
        std::mem::forget(conn);
    }
}

fn check(title: &str, fixed: bool) -> Report {
    // Bus ids of their own: a fixed bus removes only its own listener.
    let mut n = if fixed { 1_000 } else { 0 };
    let result = LeakCheck::new()
        .heap()
        .probe("connections", || OPEN.load(Ordering::SeqCst))
        .cycles(CYCLES)
        .settle(Duration::from_millis(200))
        .run(|| {
            n += 1;
            cycle(n, fixed);
        });
    let report = match result {
        Ok(report) => report,
        Err(leak) => leak.report().clone(),
    };
    println!("\n── {title}\n{report}");
    report
}

fn main() {
    let leaky = check(
        "leaky: a listener, a helper process and a connection per cycle",
        false,
    );
    for mut child in FORGOTTEN.lock().unwrap().drain(..) {
        let _ = child.kill();
        let _ = child.wait();
    }
    OPEN.store(0, Ordering::SeqCst);
    let fixed = check("fixed: each undone on close", true);
    let as_expected = leaky.leaked(Resource::Heap) == CYCLES
        && leaky.leaked(Resource::Children) == CYCLES
        && leaky.leaked(Resource::Custom("connections")) == CYCLES
        && fixed.is_clean()
        && fixed.leaked(Resource::Heap) == 0;
    if as_expected {
        println!("\nas expected: the leaks are caught and counted, the fixed component passes.");
    } else {
        eprintln!("\nunexpected verdicts (see the reports above)");
        std::process::exit(1);
    }
}
