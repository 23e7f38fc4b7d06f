//! Where a heap leak's blocks were allocated: planted leaks named by their exact `file:line`
//! and the call made there, beside clean twins that run their body exactly warm-up + cycles
//! times (no recording pass when nothing leaked).
//!
//! The heap is counted process-wide, so this binary installs `CountingAlloc` and each test runs
//! in a process of its own (`#[leakcheck::isolated]`).
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use leakcheck::{CountingAlloc, LeakCheck, Resource};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new(std::alloc::System);

const BUDGET: Duration = Duration::from_millis(150);
const CYCLES: usize = 8;
/// The default warm-up with more than one cycle.
const WARMUP: usize = 1;

fn check() -> LeakCheck {
    LeakCheck::new()
        .heap()
        .cycles(CYCLES)
        .settle(BUDGET)
        .backtraces(false)
}

fn site(line: u32, call: &str) -> String {
    format!("allocated at {}:{line} in {call}", file!())
}

// ---- planted leaks ----------------------------------------------------------------------

#[leakcheck::isolated]
fn box_leak_per_cycle_names_its_line() {
    let calls = AtomicUsize::new(0);
    let line = line!() + 3;
    let leak = check()
        .run(|| {
            Box::leak(Box::new([7u8; 48]));
            calls.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_err();
    let report = leak.report();
    assert_eq!(report.leaked(Resource::Heap), CYCLES, "{report}");
    let at = site(line, "alloc::boxed::Box::new");
    assert_eq!(
        report.items(Resource::Heap),
        [(at.clone(), CYCLES)],
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "heap     +8 blocks (+1.0/cycle), +384 B (+48 B/cycle)\n           ×8   {at}"
        )),
        "{text}"
    );
    // The recording pass ran the body `cycles` more times, after warm-up + cycles.
    assert_eq!(calls.load(Ordering::SeqCst), WARMUP + 2 * CYCLES);
    assert!(!text.contains("allocated through"), "{text}");
}

static REGISTRY: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// The line of `register` that allocates the entry.
const REGISTER_LINE: u32 = line!() + 3;

fn register() {
    let buffer = Vec::with_capacity(64);
    REGISTRY.lock().unwrap().push(buffer);
}

#[leakcheck::isolated]
fn registry_push_per_cycle_names_the_line_that_made_the_entry() {
    let leak = check().run(register).unwrap_err();
    let report = leak.report();
    assert_eq!(report.leaked(Resource::Heap), CYCLES, "{report}");
    // Growing the registry's own vector moves a block; it does not add one.
    assert_eq!(
        report.items(Resource::Heap),
        [(
            site(REGISTER_LINE, "alloc::vec::Vec::with_capacity"),
            CYCLES
        )],
        "{report}"
    );
}

#[leakcheck::isolated]
fn backtraces_show_the_whole_stack_of_each_site() {
    let line = line!() + 4;
    let leak = check()
        .backtraces(true)
        .run(|| {
            Box::leak(Box::new(0u64));
        })
        .unwrap_err();
    let report = leak.report();
    let at = site(line, "alloc::boxed::Box::new");
    assert_eq!(
        report.items(Resource::Heap),
        [(at.clone(), CYCLES)],
        "{report}"
    );
    let text = report.to_string();
    let head = format!("note: heap ×8 {at}, allocated through:\n      ");
    assert!(text.contains(&head), "{text}");
    assert!(
        text.contains(&format!(
            "backtraces_show_the_whole_stack_of_each_site::__leakcheck_body::{{{{closure}}}} \
             at {}:{line}",
            file!()
        )),
        "{text}"
    );
}

#[leakcheck::isolated]
fn a_leak_on_another_thread_is_named_too() {
    let line = line!() + 4;
    let leak = check()
        .run(|| {
            std::thread::spawn(|| {
                Box::leak(Box::new([1u8; 16]));
            })
            .join()
            .unwrap();
        })
        .unwrap_err();
    let report = leak.report();
    assert_eq!(report.leaked(Resource::Heap), CYCLES, "{report}");
    assert_eq!(
        report.items(Resource::Heap),
        [(site(line, "alloc::boxed::Box::new"), CYCLES)],
        "{report}"
    );
}

// ---- clean twins ------------------------------------------------------------------------

#[leakcheck::isolated]
fn clean_box_runs_exactly_warmup_plus_cycles_without_recording() {
    let calls = AtomicUsize::new(0);
    let report = check()
        .run(|| {
            drop(std::hint::black_box(Box::new([7u8; 48])));
            calls.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), WARMUP + CYCLES, "{report}");
    assert!(report.items(Resource::Heap).is_empty(), "{report}");
}

#[leakcheck::isolated]
fn clean_registry_runs_exactly_warmup_plus_cycles() {
    let calls = AtomicUsize::new(0);
    let report = check()
        .run(|| {
            register();
            REGISTRY.lock().unwrap().pop();
            calls.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), WARMUP + CYCLES, "{report}");
    assert!(report.notes().is_empty(), "{report}");
}

#[leakcheck::isolated]
fn a_single_cycle_leak_runs_no_recording_pass() {
    // Sites need at least 2 cycles: with one, the leak is reported by count alone.
    let calls = AtomicUsize::new(0);
    let leak = LeakCheck::new()
        .heap()
        .settle(BUDGET)
        .run(|| {
            Box::leak(Box::new(1u32));
            calls.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(leak.report().items(Resource::Heap).is_empty(), "{leak}");
}

#[leakcheck::isolated]
fn leakcheck_backtrace_in_the_environment_turns_backtraces_on() {
    // An isolated process of its own: no other thread reads the environment meanwhile.
    std::env::set_var("LEAKCHECK_BACKTRACE", "1");
    let line = line!() + 6;
    let leak = LeakCheck::new()
        .heap()
        .cycles(CYCLES)
        .settle(BUDGET)
        .run(|| {
            Box::leak(Box::new(0u16));
        })
        .unwrap_err();
    let at = site(line, "alloc::boxed::Box::new");
    let text = leak.to_string();
    assert!(
        text.contains(&format!("×8   {at}\n")),
        "one line per site first: {text}"
    );
    assert!(
        text.contains(&format!("note: heap ×8 {at}, allocated through:")),
        "{text}"
    );
}
