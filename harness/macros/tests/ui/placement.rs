#[leakcheck_macros::test]
struct NotAFunction;

#[leakcheck_macros::test]
fn takes_arguments(n: u32) {}

#[leakcheck_macros::test]
fn generic<T>() {}

#[leakcheck_macros::test]
fn const_generic<const N: usize>() {}

#[leakcheck_macros::test]
#[test]
fn already_a_test() {}

#[leakcheck_macros::test]
#[tokio::test]
async fn already_a_tokio_test() {}

#[leakcheck_macros::test]
unsafe fn unsafe_test() {}

#[leakcheck_macros::test]
extern "C" fn extern_test() {}

fn main() {}
