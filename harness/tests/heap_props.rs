//! Property: for random plans of heap blocks allocated and freed within a cycle and blocks
//! leaked, across warm-up and measured cycles, the heap verdict and `leaked(Heap)` equal the
//! plan's ground truth. Its own binary: it installs `CountingAlloc`, and counts the whole
//! process's heap (the test runs in a process of its own).
//!
//! `PROPTEST_CASES` sets the number of plans (default 32 here).
#![cfg(target_os = "linux")]

use std::time::Duration;

use leakcheck::{CountingAlloc, LeakCheck, Resource, Verdict};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new(std::alloc::System);

/// What one cycle does: blocks allocated and freed within it (of various sizes), blocks leaked.
#[derive(Clone, Debug)]
struct Step {
    churn: Vec<usize>,
    leaked: u8,
}

#[derive(Clone, Debug)]
struct Plan {
    warmup: usize,
    cycles: Vec<Step>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::collection::vec(1usize..4096, 0..12),
        prop_oneof![2 => Just(0u8), 1 => 1u8..4],
    )
        .prop_map(|(churn, leaked)| Step { churn, leaked })
}

fn plan() -> impl Strategy<Value = Plan> {
    (0usize..3, 1usize..13).prop_flat_map(|(warmup, measured)| {
        prop::collection::vec(step(), warmup + measured)
            .prop_map(move |cycles| Plan { warmup, cycles })
    })
}

/// The verdict worked out from the plan: live blocks after measured cycle c are the blocks
/// leaked by cycles 1..=c over the baseline. Split the measured cycles into k =
/// clamp(cycles / 2, 1, 4) segments (boundaries j × cycles / k); the heap leaks when the
/// lowest level of every segment is above the one before (with one segment: above the
/// baseline) and it ended above the baseline; it grew but did not keep growing: bounded.
fn expected(plan: &Plan) -> (Verdict, usize) {
    let leaks: Vec<usize> = plan.cycles[plan.warmup..]
        .iter()
        .map(|s| s.leaked as usize)
        .collect();
    let n = leaks.len();
    let total: usize = leaks.iter().sum();
    let level: Vec<usize> = leaks
        .iter()
        .scan(0, |acc, l| {
            *acc += l;
            Some(*acc)
        })
        .collect();
    let rising = if n == 1 {
        total > 0
    } else {
        let k = (n / 2).clamp(1, 4);
        let lows: Vec<usize> = (0..k)
            .map(|j| *level[j * n / k..(j + 1) * n / k].iter().min().unwrap())
            .collect();
        if k == 1 {
            lows[0] > 0
        } else {
            lows.windows(2).all(|w| w[1] > w[0])
        }
    };
    match (rising && total > 0, total) {
        (true, n) => (Verdict::Leaking, n),
        (false, 0) => (Verdict::Clean, 0),
        (false, _) => (Verdict::Bounded, 0),
    }
}

fn run_plan(plan: &Plan) -> leakcheck::Report {
    let mut cycle = 0;
    let check = LeakCheck::new()
        .heap()
        .cycles(plan.cycles.len() - plan.warmup)
        .warmup(plan.warmup)
        .settle(Duration::from_millis(30));
    let result = check.run(|| {
        // After a leak the check runs the measured cycles again, recording allocation sites:
        // those runs replay the measured steps.
        let len = plan.cycles.len();
        let i = if cycle < len {
            cycle
        } else {
            plan.warmup + (cycle - len) % (len - plan.warmup)
        };
        let step = &plan.cycles[i];
        cycle += 1;
        let churn: Vec<Vec<u8>> = step.churn.iter().map(|&n| vec![1u8; n]).collect();
        for _ in 0..step.leaked {
            Box::leak(Box::new([0u8; 24]));
        }
        drop(churn);
    });
    match result {
        Ok(report) => report,
        Err(leak) => leak.report().clone(),
    }
}

#[leakcheck::isolated]
fn heap_verdicts_match_the_plan() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    let result = runner.run(&plan(), |plan| {
        let report = run_plan(&plan);
        let (verdict, leaked) = expected(&plan);
        prop_assert_eq!(report.verdict(Resource::Heap), Some(&verdict), "{}", report);
        prop_assert_eq!(report.leaked(Resource::Heap), leaked, "{}", report);
        let measured_leaks: usize = plan.cycles[plan.warmup..]
            .iter()
            .map(|s| s.leaked as usize)
            .sum();
        prop_assert_eq!(
            report.growth(Resource::Heap),
            measured_leaks as isize,
            "{}",
            report
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
