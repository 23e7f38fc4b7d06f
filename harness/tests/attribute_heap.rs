//! `#[leakcheck::test(heap)]`: live heap blocks counted around the body, with
//! `CountingAlloc` as this binary's global allocator. Under a parallel `cargo test` the other
//! tests here allocate all the time; the checked ones run in processes of their own.

#[global_allocator]
static ALLOC: leakcheck::CountingAlloc = leakcheck::CountingAlloc::new(std::alloc::System);

#[leakcheck::test(heap, cycles = 8, settle_ms = 100)]
#[should_panic(expected = "heap     +8 blocks (+1.0/cycle)")]
fn a_block_leaked_per_cycle_is_counted() {
    Box::leak(Box::new([0u8; 64]));
}

#[leakcheck::test(heap, cycles = 8)]
fn blocks_freed_every_cycle_are_clean() {
    let v: Vec<String> = (0..32).map(|i| i.to_string()).collect();
    drop(v);
}

#[leakcheck::test(heap, cycles = 8, settle_ms = 100)]
#[should_panic(expected = "heap     +8 blocks (+1.0/cycle)")]
async fn a_block_leaked_per_cycle_in_an_async_test_is_counted() {
    tokio::task::yield_now().await;
    Box::leak(Box::new([0u8; 64]));
}

#[test]
fn a_neighbour_that_allocates_and_leaks() {
    for i in 0..20_000 {
        let s = format!("noise {i}");
        if i % 1000 == 0 {
            Box::leak(s.into_boxed_str());
        }
    }
}
