#[leakcheck_macros::test]
struct NotAFunction;

#[leakcheck_macros::test]
fn takes_arguments(n: u32) {}

#[leakcheck_macros::test]
fn generic<T>() {}

#[leakcheck_macros::test]
#[test]
fn already_a_test() {}

fn main() {}
