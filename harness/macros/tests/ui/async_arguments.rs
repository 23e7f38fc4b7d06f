#[leakcheck_macros::test(flavor = "multi")]
async fn unknown_flavor() {}

#[leakcheck_macros::test(flavor = "multi_thread")]
fn flavor_on_a_sync_test() {}

#[leakcheck_macros::test(worker_threads = 2)]
async fn workers_on_current_thread() {}

#[leakcheck_macros::test(flavor = "multi_thread", worker_threads = 0)]
async fn zero_workers() {}

#[leakcheck_macros::test(flavor = current_thread)]
async fn flavor_not_a_string() {}

fn main() {}
