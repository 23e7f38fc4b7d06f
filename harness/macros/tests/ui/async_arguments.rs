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


#[leakcheck_macros::test(start_paused = true)]
fn paused_sync() {}

#[leakcheck_macros::test(start_paused = 1)]
async fn paused_not_a_bool() {}

#[leakcheck_macros::test(crate = "not a path")]
async fn crate_not_a_path() {}

fn main() {}
