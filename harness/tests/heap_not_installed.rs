//! `.heap()` without `CountingAlloc` as the global allocator: the heap is reported as not
//! measured (never as a made-up zero), the check is not failed for it, and the report says how
//! to install it. A `CountingAlloc` that has counted allocations without being the global
//! allocator does not count as installed.

use std::alloc::{GlobalAlloc, Layout, System};

use leakcheck::{CountingAlloc, LeakCheck, Resource, Verdict};

#[leakcheck::isolated]
fn heap_without_the_counting_allocator_is_not_measured_and_says_how_to_install_it() {
    // Used directly, not as the global allocator: it has seen allocations all the same.
    let direct = CountingAlloc::new(System);
    let layout = Layout::new::<[u8; 64]>();
    // SAFETY: a non-zero-sized layout, freed right away with the same layout.
    unsafe {
        let p = direct.alloc(layout);
        assert!(!p.is_null());
        direct.dealloc(p, layout);
    }

    let report = LeakCheck::new()
        .heap()
        .cycles(3)
        .run(|| {
            Box::leak(Box::new([0u8; 64]));
        })
        .expect("an unmeasured heap does not fail the check");
    assert!(
        matches!(report.verdict(Resource::Heap), Some(Verdict::NotMeasured(why)) if why.contains("CountingAlloc")),
        "{report}"
    );
    assert_eq!(report.leaked(Resource::Heap), 0);
    assert_eq!(report.bytes(Resource::Heap), None);
    let text = report.to_string();
    assert!(text.contains("heap not measured"), "{text}");
    assert!(
        text.contains("#[global_allocator] static ALLOC: leakcheck::CountingAlloc"),
        "{text}"
    );
}
