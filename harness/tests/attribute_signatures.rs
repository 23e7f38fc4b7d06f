//! `#[leakcheck::test]` takes every test function `#[test]` and `#[tokio::test]` take, so that
//! a suite converted by a search and replace compiles: lifetime parameters, `Result` returns,
//! `#[should_panic]` and `#[ignore]` before or after it, visibility and docs, and an async test
//! with `#[tokio::test]`'s arguments (`flavor`, `worker_threads`, `start_paused`, `crate`).
//! The refusals, each with what to write instead, are in `harness/macros/tests/ui`.
#![cfg(feature = "macros")]

use std::time::Duration;

/// A lifetime parameter, as in a test that names borrowed types.
#[leakcheck::test]
fn lifetime_parameter<'a>() {
    let s: &'a str = "borrowed";
    assert_eq!(s.len(), 8);
}

#[leakcheck::test]
fn lifetimes_with_bounds<'a, 'b: 'a>()
where
    'a: 'a,
{
    let inner: &'b str = "x";
    let outer: &'a str = inner;
    assert_eq!(outer, "x");
}

#[leakcheck::test]
fn returns_ok() -> Result<(), std::io::Error> {
    std::fs::metadata("Cargo.toml")?;
    Ok(())
}

#[leakcheck::test]
fn returns_a_boxed_error_ok() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = "42".parse()?;
    assert_eq!(n, 42);
    Ok(())
}

#[leakcheck::test]
#[should_panic(expected = "Error: NotFound")]
fn returns_err_fails_with_the_error() -> Result<(), std::io::ErrorKind> {
    Err(std::io::ErrorKind::NotFound)
}

#[should_panic(expected = "boom")]
#[leakcheck::test]
fn should_panic_before_the_attribute() {
    panic!("boom");
}

#[ignore = "runs with --ignored"]
#[leakcheck::test]
fn ignored_before_the_attribute() {}

#[leakcheck::test]
#[ignore]
fn ignored_after_the_attribute() {}

/// Visibility and a doc comment stay.
#[leakcheck::test]
pub(crate) fn with_visibility() {}

#[leakcheck::test]
const fn a_const_fn() {}

#[leakcheck::test]
#[allow(clippy::extra_unused_lifetimes)]
async fn async_returns_ok<'a>() -> Result<(), String> {
    let s: &'a str = "x";
    tokio::spawn(async {}).await.map_err(|e| e.to_string())?;
    assert_eq!(s, "x");
    Ok(())
}

#[leakcheck::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_with_workers() {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    assert_eq!(workers, 2);
}

/// The clock starts paused and auto-advances, as under `#[tokio::test(start_paused = true)]`.
#[leakcheck::test(start_paused = true)]
async fn start_paused() {
    let real = std::time::Instant::now();
    let virtual_start = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(virtual_start.elapsed() >= Duration::from_secs(3600));
    assert!(real.elapsed() < Duration::from_secs(60));
}

#[leakcheck::isolated(flavor = "multi_thread")]
async fn isolated_async() {
    tokio::spawn(async {}).await.unwrap();
}

mod renamed {
    use tokio as my_tokio;

    /// tokio under another name: `crate = ".."`, as `#[tokio::test]` takes it.
    #[leakcheck::test(crate = "my_tokio")]
    async fn crate_argument() {
        my_tokio::spawn(async {}).await.unwrap();
    }
}
