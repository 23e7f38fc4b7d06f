//! Property: for random plans of spawning, joining and leaking threads, fds and tasks across
//! cycles, the harness's verdict and every `leaked()` count equal the plan's ground truth.
//!
//! `PROPTEST_CASES` sets the number of plans (default 24 here; try 500 for a long local run).
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::Planted;
use leakcheck::{LeakCheck, Resource, Verdict};
use proptest::prelude::*;

/// What one cycle does with one resource kind: items made and released within the cycle, and
/// items left behind.
#[derive(Clone, Copy, Debug)]
struct Step {
    joined: u8,
    leaked: u8,
}

#[derive(Clone, Debug)]
struct Plan {
    warmup: usize,
    /// Per cycle (warm-up first): threads, fds, tasks.
    cycles: Vec<[Step; 3]>,
}

fn step() -> impl Strategy<Value = Step> {
    // Leaks are rarer than clean work, so that clean plans come up often too.
    (0u8..3, prop_oneof![3 => Just(0u8), 1 => 1u8..3])
        .prop_map(|(joined, leaked)| Step { joined, leaked })
}

fn plan() -> impl Strategy<Value = Plan> {
    (0usize..3, 1usize..7).prop_flat_map(|(warmup, measured)| {
        prop::collection::vec([step(), step(), step()], warmup + measured)
            .prop_map(move |cycles| Plan { warmup, cycles })
    })
}

/// The protocol's verdict, worked out from the plan alone: a resource leaks when the second
/// half of the measured cycles adds to it (with one cycle, when that cycle does), and then
/// `leaked` is everything the measured cycles left.
fn expected(plan: &Plan, kind: usize) -> (Verdict, usize) {
    let measured: Vec<usize> = plan.cycles[plan.warmup..]
        .iter()
        .map(|c| c[kind].leaked as usize)
        .collect();
    let total: usize = measured.iter().sum();
    let second_half: usize = measured[measured.len() / 2..].iter().sum();
    let leaking = if measured.len() == 1 {
        total > 0
    } else {
        second_half > 0
    };
    match (leaking, total) {
        (true, n) => (Verdict::Leaking, n),
        (false, 0) => (Verdict::Clean, 0),
        (false, _) => (Verdict::Bounded, 0),
    }
}

fn run_plan(plan: &Plan) -> leakcheck::Report {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let planted = Planted::new();
    let mut cycle = 0;
    let check = LeakCheck::new()
        .cycles(plan.cycles.len() - plan.warmup)
        .warmup(plan.warmup)
        .settle(Duration::from_millis(60))
        .tasks(rt.handle());
    let result = check.run(|| {
        let [threads, fds, tasks] = plan.cycles[cycle];
        cycle += 1;
        for _ in 0..threads.joined {
            std::thread::spawn(|| ()).join().unwrap();
        }
        for _ in 0..threads.leaked {
            planted.parked_thread("planned-leak");
        }
        for _ in 0..fds.joined {
            drop(std::fs::File::open("Cargo.toml").unwrap());
        }
        for _ in 0..fds.leaked {
            planted.forgotten_fd("Cargo.toml");
        }
        for _ in 0..tasks.joined {
            rt.block_on(rt.spawn(async {})).unwrap();
        }
        for _ in 0..tasks.leaked {
            rt.spawn(std::future::pending::<()>());
        }
    });
    // Dropping the runtime ends the leaked tasks; dropping `planted` the threads and fds.
    drop(rt);
    match result {
        Ok(report) => report,
        Err(leak) => leak.report().clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[leakcheck::isolated]
    fn verdicts_match_the_plan(plan in plan()) {
        let report = run_plan(&plan);
        for (kind, r) in [Resource::Threads, Resource::Fds, Resource::Tasks].into_iter().enumerate() {
            let (verdict, leaked) = expected(&plan, kind);
            prop_assert_eq!(report.verdict(r), Some(&verdict), "{} in {}", r, report);
            prop_assert_eq!(report.leaked(r), leaked, "{} in {}", r, report);
        }
        let any_leak = (0..3).any(|k| expected(&plan, k).0 == Verdict::Leaking);
        prop_assert_eq!(report.is_clean(), !any_leak, "{}", report);
    }
}
