//! Probes: counters of the user's own, judged by the same protocol as the built-in resources.
//! A growing counter is caught and counted exactly; a bounded or stable one, or one that comes
//! back down later, is not; a probe that panics fails the check by name.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leakcheck::{LeakCheck, Resource, Verdict};

const BUDGET: Duration = Duration::from_millis(100);

/// A registry the body adds to; a probe counts its entries.
#[derive(Clone, Default)]
struct Registry(Arc<Mutex<Vec<u32>>>);

impl Registry {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn add(&self, n: u32) {
        self.0.lock().unwrap().push(n);
    }
}

fn check_of(registry: &Registry) -> LeakCheck {
    let r = registry.clone();
    LeakCheck::new()
        .settle(BUDGET)
        .probe("registry", move || r.len())
}

#[leakcheck::isolated]
fn growing_probe_is_counted_exactly() {
    let registry = Registry::default();
    let leak = check_of(&registry)
        .cycles(10)
        .run(|| registry.add(1))
        .unwrap_err();
    let report = leak.report();
    assert_eq!(report.leaked(Resource::Custom("registry")), 10, "{report}");
    assert_eq!(
        report.verdict(Resource::Custom("registry")),
        Some(&Verdict::Leaking)
    );
    assert_eq!(report.leaked(Resource::Threads), 0, "{report}");
    assert!(
        report.to_string().contains("registry +10 (+1.00/cycle)"),
        "{report}"
    );
}

#[leakcheck::isolated]
fn bounded_probe_is_reported_not_failed() {
    let registry = Registry::default();
    let report = check_of(&registry)
        .cycles(12)
        .run(|| {
            if registry.len() < 4 {
                registry.add(1);
            }
        })
        .unwrap();
    assert_eq!(
        report.verdict(Resource::Custom("registry")),
        Some(&Verdict::Bounded),
        "{report}"
    );
    assert_eq!(report.growth(Resource::Custom("registry")), 3);
    assert!(
        report
            .to_string()
            .contains("registry 1→4 (bounded growth +3)"),
        "{report}"
    );
}

#[leakcheck::isolated]
fn stable_probe_is_clean_and_shown_by_name() {
    let registry = Registry::default();
    registry.add(7);
    let report = check_of(&registry)
        .cycles(5)
        .run(|| {
            registry.add(1);
            registry.0.lock().unwrap().pop();
        })
        .unwrap();
    assert_eq!(
        report.verdict(Resource::Custom("registry")),
        Some(&Verdict::Clean)
    );
    assert!(report.to_string().contains("registry 1→1"), "{report}");
}

#[leakcheck::isolated]
fn probe_that_comes_back_down_later_is_clean() {
    // Entries are released by a thread shortly after the body returns.
    let open = Arc::new(AtomicUsize::new(0));
    let counted = open.clone();
    let report = LeakCheck::new()
        .settle(Duration::from_secs(2))
        .cycles(4)
        .probe("connections", move || counted.load(Ordering::SeqCst))
        .run(|| {
            open.fetch_add(1, Ordering::SeqCst);
            let open = open.clone();
            std::thread::spawn(move || {
                std::thread::park_timeout(Duration::from_millis(10));
                open.fetch_sub(1, Ordering::SeqCst);
            });
        })
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

#[leakcheck::isolated]
fn several_probes_are_judged_each_on_its_own() {
    let grows = Registry::default();
    let stays = Registry::default();
    let (g, s) = (grows.clone(), stays.clone());
    let leak = LeakCheck::new()
        .settle(BUDGET)
        .cycles(6)
        .probe("grows", move || g.len())
        .probe("stays", move || s.len())
        .run(|| grows.add(1))
        .unwrap_err();
    assert_eq!(leak.report().leaked(Resource::Custom("grows")), 6);
    assert_eq!(
        leak.report().verdict(Resource::Custom("stays")),
        Some(&Verdict::Clean)
    );
}

#[leakcheck::isolated]
fn panicking_probe_fails_the_check_naming_it() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let leak = LeakCheck::new()
        .settle(BUDGET)
        .cycles(2)
        .probe("flaky-pool", move || {
            if c.fetch_add(1, Ordering::SeqCst) >= 2 {
                panic!("pool lock poisoned");
            }
            3
        })
        .run(|| ())
        .unwrap_err();
    let report = leak.report();
    assert!(!report.is_clean());
    assert!(
        matches!(
            report.verdict(Resource::Custom("flaky-pool")),
            Some(Verdict::Failed(msg)) if msg.contains("probe \"flaky-pool\" panicked: pool lock poisoned")
        ),
        "{report}"
    );
    let text = report.to_string();
    assert!(text.starts_with("leakcheck: check failed"), "{text}");
    assert!(text.contains("flaky-pool"), "{text}");
}
