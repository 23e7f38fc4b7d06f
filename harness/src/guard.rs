//! A check scoped to a block: baseline when made, verdict when checked or dropped.

use crate::protocol::Protocol;
use crate::report::{Leak, Report};

/// Takes a baseline when made and checks when [`Guard::check`] is called or when it is
/// dropped: the Rust form of goleak's `defer goleak.VerifyNone(t)`.
///
/// Dropped unchecked, it checks and panics with the report on a leak, unless the thread is
/// already panicking (a failing test keeps its own panic message, and a guard never
/// double-panics).
///
/// ```
/// use leakcheck::Guard;
///
/// let guard = Guard::new();
/// let worker = std::thread::spawn(|| 40 + 2);
/// assert_eq!(worker.join().unwrap(), 42);
/// let report = guard.check().expect("joined threads leave nothing behind");
/// assert!(report.is_clean());
/// ```
#[must_use = "a guard checks when it is dropped; bind it to a variable (`let _guard = ...`)"]
pub struct Guard {
    protocol: Option<Protocol>,
}

impl Guard {
    pub(crate) fn start(protocol: Protocol) -> Self {
        Guard {
            protocol: Some(protocol),
        }
    }

    /// Lets resources settle and judges what is left since the guard was made.
    pub fn check(mut self) -> Result<Report, Leak> {
        let _paused = crate::alloc::pause();
        let protocol = self.protocol.take().expect("a guard is checked once");
        finish(protocol)
    }

    /// Like [`Guard::check`], awaiting instead of blocking while resources settle: use it in
    /// async tests, where a blocked runtime thread would keep tasks from finishing (a guard
    /// dropped unchecked settles by blocking).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let guard = leakcheck::LeakCheck::new()
    ///     .tasks(&tokio::runtime::Handle::current())
    ///     .guard();
    /// tokio::spawn(async {}); // finishes once the check yields to the runtime
    /// assert!(guard.check_async().await.unwrap().is_clean());
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn check_async(mut self) -> Result<Report, Leak> {
        let mut protocol = self.protocol.take().expect("a guard is checked once");
        let settled = protocol.settle_async().await;
        let _paused = crate::alloc::pause();
        protocol.record(settled);
        protocol.finish().into_result()
    }
}

fn finish(mut protocol: Protocol) -> Result<Report, Leak> {
    let settled = protocol.settle_blocking();
    protocol.record(settled);
    protocol.finish().into_result()
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(protocol) = self.protocol.take() else {
            return;
        };
        let _paused = crate::alloc::pause();
        if std::thread::panicking() {
            return;
        }
        if let Err(leak) = finish(protocol) {
            panic!("{leak}");
        }
    }
}
