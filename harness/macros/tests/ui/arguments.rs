#[leakcheck_macros::test(cycle = 3)]
fn unknown() {}

#[leakcheck_macros::test(cycles = "20")]
fn wrong_type() {}

#[leakcheck_macros::test(cycles = 0)]
fn zero_cycles() {}

#[leakcheck_macros::test(settle_ms = -1)]
fn negative_settle() {}

#[leakcheck_macros::test(settle_ms = 3600001)]
fn settle_too_long() {}

#[leakcheck_macros::test(warmup = 1.5)]
fn fractional_warmup() {}

#[leakcheck_macros::test(cycles = 2, cycles = 3)]
fn twice() {}

#[leakcheck_macros::test(ignore_thread = 3)]
fn glob_not_a_string() {}

#[leakcheck_macros::test(ignore_fd = "socket:[")]
fn invalid_glob() {}

#[leakcheck_macros::test(cycles)]
fn no_value() {}

#[leakcheck_macros::test(timeout_ms = 0)]
fn zero_timeout() {}

#[leakcheck_macros::isolated(cycles = 3)]
fn isolated_takes_no_check_arguments() {}

#[leakcheck_macros::test(heap = true)]
fn heap_is_a_flag() {}

#[leakcheck_macros::isolated(heap)]
fn isolated_does_not_count() {}

#[leakcheck_macros::test(strict = true)]
fn strict_is_a_flag() {}

#[leakcheck_macros::test(ignore_created_by = "threadpool::[")]
fn created_by_invalid_glob() {}

fn main() {}
